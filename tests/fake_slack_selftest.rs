//! Self-test of the fake Slack (`tests/support/fake_slack.rs`): a real slack-morphism client
//! talks to it, the body builders parse into slack-morphism's inbound types, and signed bodies
//! pass slack-morphism's own axum verifier.

#[path = "support/fake_slack.rs"]
mod fake_slack;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::{Extension, Router};
use fake_slack::*;
use serde_json::{json, Value};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use tokio::sync::mpsc;

const TOKEN: &str = "xoxb-test-token";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The connector the bot would use against a plain-http fake. `hyper_util` is not a direct
/// dependency, so the HTTP connector is built through hyper-rustls's builder (reachable via
/// slack-morphism's public `SlackHyperHttpsConnector` alias) with `https_or_http()`.
fn connector(fake: &FakeSlack) -> SlackClientHyperHttpsConnector {
    let https = SlackHyperHttpsConnector::builder()
        .with_native_roots()
        .expect("native CA roots")
        .https_or_http()
        .enable_http2()
        .build();
    SlackClientHyperConnector::with_connector(https).with_slack_api_url(&fake.api_url())
}

fn client(fake: &FakeSlack) -> SlackHyperClient {
    SlackClient::new(connector(fake))
}

fn content(text: &str) -> SlackMessageContent {
    SlackMessageContent::new().with_text(text.into())
}

fn card(text: &str, release: &str) -> SlackMessageContent {
    let blocks: Vec<SlackBlock> = slack_blocks![
        some_into(SlackSectionBlock::new().with_text(md!("{}", text))),
        some_into(
            SlackActionsBlock::new(vec![
                SlackBlockButtonElement::new(pt!("Approve"))
                    .with_action_id("release_approve".into())
                    .with_value(release.into())
                    .with_style(SlackBlockButtonStyle::Primary)
                    .into(),
                SlackBlockButtonElement::new(pt!("Reject"))
                    .with_action_id("release_reject".into())
                    .with_value(release.into())
                    .with_style(SlackBlockButtonStyle::Danger)
                    .into(),
            ])
            .with_block_id(format!("release_{release}").into())
        )
    ];
    SlackMessageContent::new()
        .with_text(text.into())
        .with_blocks(blocks)
}

fn api_error_code(err: SlackClientError) -> String {
    match err {
        SlackClientError::ApiError(e) => e.code,
        other => panic!("expected an ApiError, got {other:?}"),
    }
}

#[tokio::test]
async fn slack_morphism_client_round_trip() {
    let fake = FakeSlack::start(TOKEN).await;
    assert!(fake.api_url().starts_with("http://127.0.0.1:"));
    assert!(fake.api_url().ends_with("/api"));
    let client = client(&fake);
    let token = SlackApiToken::new(TOKEN.into());
    let session = client.open_session(&token);

    let posted = session
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            card("*api* `1.4.2` → *production* needs approval", "rel_42"),
        ))
        .await
        .expect("chat.postMessage");
    assert_eq!(posted.channel.0, "C0RELEASES");
    assert_eq!(posted.ts.0, "1700000000.000100");
    assert_eq!(posted.message.origin.ts, posted.ts);
    assert_eq!(posted.message.sender.user, Some(BOT_USER_ID.into()));
    assert_eq!(
        posted.message.content.blocks.as_ref().map(Vec::len),
        Some(2)
    );

    let root = posted.ts.0.clone();
    let reply = session
        .chat_post_message(
            &SlackApiChatPostMessageRequest::new(
                "C0RELEASES".into(),
                content("deploy log: step 1"),
            )
            .with_thread_ts(posted.ts.clone()),
        )
        .await
        .expect("thread reply");
    assert!(reply.ts.0 > root, "ts must increase");
    assert_eq!(reply.message.origin.thread_ts, Some(posted.ts.clone()));

    let updated = session
        .chat_update(&SlackApiChatUpdateRequest::new(
            "C0RELEASES".into(),
            card("*api* `1.4.2` → *production*: approved", "rel_42"),
            posted.ts.clone(),
        ))
        .await
        .expect("chat.update of the card");
    assert_eq!(updated.ts, posted.ts);
    assert_eq!(
        updated.message.content.text.as_deref(),
        Some("*api* `1.4.2` → *production*: approved")
    );
    assert_eq!(
        updated.message.edited.map(|e| e.user.0),
        Some(BOT_USER_ID.to_string())
    );

    session
        .chat_update(&SlackApiChatUpdateRequest::new(
            "C0RELEASES".into(),
            content("deploy log: step 2"),
            reply.ts.clone(),
        ))
        .await
        .expect("chat.update of the thread reply");

    let top = fake.messages("C0RELEASES");
    assert_eq!(top.len(), 1, "the reply is not top-level");
    assert_eq!(top[0].ts, root);
    assert_eq!(top[0].text, "*api* `1.4.2` → *production*: approved");
    assert_eq!(top[0].edits, 1);
    assert_eq!(top[0].blocks[1]["block_id"], "release_rel_42");
    assert_eq!(
        top[0].blocks[1]["elements"][0]["action_id"],
        "release_approve"
    );
    assert_eq!(top[0].blocks[1]["elements"][0]["value"], "rel_42");
    let thread = fake.thread("C0RELEASES", &root);
    assert_eq!(thread.len(), 1);
    assert_eq!(thread[0].text, "deploy log: step 2");
    assert_eq!(thread[0].thread_ts.as_deref(), Some(root.as_str()));
    assert_eq!(thread[0].edits, 1);
    assert_eq!(
        fake.message("C0RELEASES", &reply.ts.0).map(|m| m.text),
        Some("deploy log: step 2".to_string())
    );
    assert!(fake.message("C0OTHER", &root).is_none());
    assert_eq!(fake.updates_of("C0RELEASES", &root).len(), 1);
    assert_eq!(fake.updates_of("C0RELEASES", &reply.ts.0).len(), 1);
    assert!(fake.updates_of("C0RELEASES", "1.2").is_empty());

    session
        .chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
            "C0RELEASES".into(),
            "U0LEAD".into(),
            content("only leads can approve production"),
        ))
        .await
        .expect("chat.postEphemeral");
    assert!(fake.take_ephemerals("U0OTHER").is_empty());
    let ephemerals = fake.take_ephemerals("U0LEAD");
    assert_eq!(
        ephemerals,
        vec![Ephemeral {
            channel: "C0RELEASES".into(),
            user: "U0LEAD".into(),
            text: "only leads can approve production".into(),
            blocks: json!([]),
        }]
    );
    assert!(
        fake.take_ephemerals("U0LEAD").is_empty(),
        "taking marks them read"
    );

    fake.usergroup("S0LEADS", &["U0LEAD", "U0LEAD2"]);
    let group = session
        .usergroups_users_list(&SlackApiUserGroupsUsersListRequest::new("S0LEADS".into()))
        .await
        .expect("usergroups.users.list");
    assert_eq!(group.users, vec!["U0LEAD".into(), "U0LEAD2".into()]);
    let missing = session
        .usergroups_users_list(&SlackApiUserGroupsUsersListRequest::new("S0NOPE".into()))
        .await
        .expect_err("unknown group");
    assert_eq!(api_error_code(missing), "no_such_subteam");
    // slack-morphism sends usergroups.users.list as GET with a query string.
    assert_eq!(
        fake.requests("usergroups.users.list")[0]["usergroup"],
        "S0LEADS"
    );

    assert_eq!(fake.calls("chat.postMessage"), 2);
    assert_eq!(fake.calls("chat.update"), 2);
    assert_eq!(fake.calls("chat.postEphemeral"), 1);
    assert_eq!(fake.calls("usergroups.users.list"), 2);
    assert_eq!(fake.calls("reactions.add"), 0);
    let sent = &fake.requests("chat.postMessage")[0];
    assert_eq!(sent["channel"], "C0RELEASES");
    assert_eq!(sent["blocks"][1]["elements"][1]["style"], "danger");
}

#[tokio::test]
async fn documented_errors() {
    let fake = FakeSlack::start(TOKEN).await;
    let client = client(&fake);
    let token = SlackApiToken::new(TOKEN.into());
    let session = client.open_session(&token);

    let err = session
        .chat_update(&SlackApiChatUpdateRequest::new(
            "C0RELEASES".into(),
            content("x"),
            "1700000000.999900".into(),
        ))
        .await
        .expect_err("unknown ts");
    assert_eq!(api_error_code(err), "message_not_found");

    let err = session
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "releases".into(),
            content("x"),
        ))
        .await
        .expect_err("channel name instead of id");
    assert_eq!(api_error_code(err), "channel_not_found");

    let err = session
        .chat_post_message(
            &SlackApiChatPostMessageRequest::new("C0RELEASES".into(), content("x"))
                .with_thread_ts("1600000000.000100".into()),
        )
        .await
        .expect_err("unknown thread");
    assert_eq!(api_error_code(err), "thread_not_found");

    let err = session
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            SlackMessageContent::new(),
        ))
        .await
        .expect_err("nothing to say");
    assert_eq!(api_error_code(err), "no_text");

    let wrong = SlackApiToken::new("xoxb-someone-else".into());
    let err = client
        .open_session(&wrong)
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            content("x"),
        ))
        .await
        .expect_err("wrong token");
    assert_eq!(api_error_code(err), "invalid_auth");

    assert!(fake.messages("C0RELEASES").is_empty());
    assert_eq!(fake.calls("chat.postMessage"), 4, "failed calls count too");
    assert_eq!(fake.calls("chat.update"), 1);

    let http = reqwest::Client::new();
    let unknown: Value = http
        .post(format!("{}/reactions.add", fake.api_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "C0RELEASES", "name": "eyes", "timestamp": "1.2"}))
        .send()
        .await
        .expect("reactions.add")
        .json()
        .await
        .expect("json");
    assert_eq!(unknown, json!({"ok": false, "error": "unknown_method"}));
    assert_eq!(fake.calls("reactions.add"), 1);
    assert_eq!(fake.requests("reactions.add")[0]["name"], "eyes");

    let no_auth: Value = http
        .post(format!("{}/chat.postMessage", fake.api_url()))
        .json(&json!({"channel": "C0RELEASES", "text": "x"}))
        .send()
        .await
        .expect("no token")
        .json()
        .await
        .expect("json");
    assert_eq!(no_auth["error"], "not_authed");

    let too_many_blocks: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
    let invalid: Value = http
        .post(format!("{}/chat.postMessage", fake.api_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "C0RELEASES", "text": "x", "blocks": too_many_blocks}))
        .send()
        .await
        .expect("too many blocks")
        .json()
        .await
        .expect("json");
    assert_eq!(invalid["error"], "invalid_blocks");
}

#[tokio::test]
async fn fault_knobs_surface_as_slack_morphism_errors() {
    let fake = FakeSlack::start(TOKEN).await;
    let client = client(&fake);
    let token = SlackApiToken::new(TOKEN.into());
    let session = client.open_session(&token);
    let post = || SlackApiChatPostMessageRequest::new("C0RELEASES".into(), content("hello"));

    fake.fail_next(
        "chat.postMessage",
        2,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    fake.fail_next("chat.postMessage", 1, Failure::ApiError("not_in_channel"));
    fake.fail_next("chat.postMessage", 1, Failure::ServerError);

    for _ in 0..2 {
        match session.chat_post_message(&post()).await {
            Err(SlackClientError::RateLimitError(e)) => {
                assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
                assert_eq!(e.code.as_deref(), Some("ratelimited"));
            }
            other => panic!("expected RateLimitError, got {other:?}"),
        }
    }
    let err = session
        .chat_post_message(&post())
        .await
        .expect_err("ApiError knob");
    assert_eq!(api_error_code(err), "not_in_channel");
    match session.chat_post_message(&post()).await {
        Err(SlackClientError::HttpError(e)) => assert_eq!(e.status_code.as_u16(), 500),
        other => panic!("expected HttpError 500, got {other:?}"),
    }
    let posted = session
        .chat_post_message(&post())
        .await
        .expect("knobs used up");
    assert_eq!(fake.calls("chat.postMessage"), 5);
    assert_eq!(fake.messages("C0RELEASES").len(), 1);

    // Knobs are per method; a failed chat.update is not recorded as an edit.
    fake.fail_next(
        "chat.update",
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    let update =
        SlackApiChatUpdateRequest::new("C0RELEASES".into(), content("v2"), posted.ts.clone());
    assert!(matches!(
        session.chat_update(&update).await,
        Err(SlackClientError::RateLimitError(_))
    ));
    session.chat_update(&update).await.expect("second try");
    assert_eq!(fake.updates_of("C0RELEASES", &posted.ts.0).len(), 1);
    assert_eq!(fake.calls("chat.update"), 2);
    assert_eq!(fake.messages("C0RELEASES")[0].edits, 1);

    // The raw 429 matches slack_rate_limited_429.http.
    fake.fail_next(
        "chat.update",
        1,
        Failure::RateLimited {
            retry_after_secs: 30,
        },
    );
    let raw = reqwest::Client::new()
        .post(format!("{}/chat.update", fake.api_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "C0RELEASES", "ts": posted.ts.0, "text": "v3"}))
        .send()
        .await
        .expect("429");
    assert_eq!(raw.status().as_u16(), 429);
    assert_eq!(raw.headers()["retry-after"], "30");
    assert_eq!(
        raw.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        raw.json::<Value>().await.expect("json"),
        json!({"ok": false, "error": "ratelimited"})
    );
}

#[tokio::test]
async fn form_and_query_bodies_are_accepted() {
    let fake = FakeSlack::start(TOKEN).await;
    let http = reqwest::Client::new();
    let blocks =
        json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]).to_string();
    let body = format!(
        "channel=C0RELEASES&text={}&blocks={}",
        form_encode("hello & welcome"),
        form_encode(&blocks)
    );
    let posted: Value = http
        .post(format!("{}/chat.postMessage", fake.api_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}&{body}"))
        .send()
        .await
        .expect("form post")
        .json()
        .await
        .expect("json");
    assert_eq!(posted["ok"], true, "{posted}");
    let parsed: SlackApiChatPostMessageResponse =
        serde_json::from_value(posted.clone()).expect("slack-morphism response type");
    assert_eq!(
        parsed.message.content.text.as_deref(),
        Some("hello & welcome")
    );
    let stored = &fake.messages("C0RELEASES")[0];
    assert_eq!(stored.text, "hello & welcome");
    assert_eq!(stored.blocks[0]["text"]["text"], "*hi*");

    let ts = posted["ts"].as_str().expect("ts");
    let updated: Value = http
        .get(format!(
            "{}/chat.update?channel=C0RELEASES&ts={ts}&text=bye",
            fake.api_url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("query update")
        .json()
        .await
        .expect("json");
    let parsed: SlackApiChatUpdateResponse =
        serde_json::from_value(updated).expect("slack-morphism response type");
    assert_eq!(parsed.message.content.text.as_deref(), Some("bye"));
    let stored = &fake.messages("C0RELEASES")[0];
    assert_eq!(stored.text, "bye");
    assert_eq!(
        stored.blocks[0]["text"]["text"], "*hi*",
        "omitted blocks are kept"
    );

    let ephemeral: Value = http
        .post(format!("{}/chat.postEphemeral", fake.api_url()))
        .bearer_auth(TOKEN)
        .form(&[
            ("channel", "C0RELEASES"),
            ("user", "U0LEAD"),
            ("text", "psst"),
        ])
        .send()
        .await
        .expect("ephemeral")
        .json()
        .await
        .expect("json");
    assert!(ephemeral["message_ts"].is_string());
    let _: SlackApiChatPostEphemeralResponse = serde_json::from_value(ephemeral).expect("type");
    assert_eq!(fake.take_ephemerals("U0LEAD")[0].text, "psst");

    assert_eq!(
        parse_form("a=1&b=x+y%2Fz&c=&d"),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "x y/z".into()),
            ("c".into(), String::new()),
            ("d".into(), String::new())
        ]
    );
    assert_eq!(form_decode(&form_encode("ü /%+&=é")), "ü /%+&=é");
}

#[tokio::test]
async fn response_urls_land_in_the_fake() {
    let fake = FakeSlack::start(TOKEN).await;
    let client = client(&fake);
    let token = SlackApiToken::new(TOKEN.into());
    let posted = client
        .open_session(&token)
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            card("approve?", "rel_7"),
        ))
        .await
        .expect("card");

    // Slash command: the reply through response_url is ephemeral to the caller.
    let command = command_event(&slash_command_body("U0LEAD", "C0RELEASES", "status api"));
    client
        .respond_to_event(
            &command.response_url,
            &SlackApiPostWebhookMessageRequest::new(content("api: 1.4.2 in staging")),
        )
        .await
        .expect("response_url post");
    let ephemerals = fake.take_ephemerals("U0LEAD");
    assert_eq!(ephemerals.len(), 1);
    assert_eq!(ephemerals[0].text, "api: 1.4.2 in staging");
    assert_eq!(ephemerals[0].channel, "C0RELEASES");

    // Button click: replace_original edits the clicked card.
    let body = block_action_body(
        "U0LEAD",
        "C0RELEASES",
        &posted.ts.0,
        "release_approve",
        "rel_7",
    );
    let SlackInteractionEvent::BlockActions(click) = interaction_event(&body) else {
        panic!("expected block_actions");
    };
    let response_url = click.response_url.expect("response_url");
    client
        .respond_to_event(
            &response_url,
            &SlackApiPostWebhookMessageRequest::new(content("approved by <@U0LEAD>"))
                .with_replace_original(true),
        )
        .await
        .expect("replace_original");
    let card = fake
        .message("C0RELEASES", &posted.ts.0)
        .expect("card still there");
    assert_eq!(card.text, "approved by <@U0LEAD>");
    assert_eq!(card.edits, 1);
    assert!(
        fake.updates_of("C0RELEASES", &posted.ts.0).is_empty(),
        "not a chat.update"
    );

    // A response_url serves 5 uses; this is the 2nd to 5th, then the 6th fails.
    for i in 2..=5 {
        client
            .respond_to_event(
                &response_url,
                &SlackApiPostWebhookMessageRequest::new(content(&format!("use {i}"))),
            )
            .await
            .expect("within 5 uses");
    }
    assert_eq!(fake.take_ephemerals("U0LEAD").len(), 4);
    match client
        .respond_to_event(
            &response_url,
            &SlackApiPostWebhookMessageRequest::new(content("6")),
        )
        .await
    {
        Err(SlackClientError::HttpError(e)) => assert_eq!(e.status_code.as_u16(), 404),
        other => panic!("expected 404 on the 6th use, got {other:?}"),
    }
    assert_eq!(fake.calls("response_url"), 7);
    assert_eq!(fake.requests("response_url")[1]["replace_original"], true);

    // delete_original removes the card.
    let body = block_action_body(
        "U0LEAD",
        "C0RELEASES",
        &posted.ts.0,
        "release_reject",
        "rel_7",
    );
    let SlackInteractionEvent::BlockActions(click) = interaction_event(&body) else {
        panic!("expected block_actions");
    };
    client
        .respond_to_event(
            &click.response_url.expect("response_url"),
            &SlackApiPostWebhookMessageRequest::new(SlackMessageContent::new())
                .with_delete_original(true),
        )
        .await
        .expect("delete_original");
    assert!(fake.messages("C0RELEASES").is_empty());
}

fn command_event(body: &str) -> SlackCommandEvent {
    let map: serde_json::Map<String, Value> = parse_form(body)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    serde_json::from_value(Value::Object(map)).expect("SlackCommandEvent")
}

fn interaction_event(body: &str) -> SlackInteractionEvent {
    let form = parse_form(body);
    assert_eq!(form.len(), 1, "a single payload field");
    assert_eq!(form[0].0, "payload");
    serde_json::from_str(&form[0].1).expect("SlackInteractionEvent")
}

#[test]
fn sign_matches_slacks_worked_example() {
    // slack_signing_example.json (docs.slack.dev/authentication/verifying-requests-from-slack).
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        sign(SECRET, 1531420618, body),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    let now = now_unix();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert!((now - wall).abs() <= 1);
}

#[tokio::test]
async fn body_builders_parse_into_slack_morphism_types() {
    // Without a fake on this thread, response_url falls back to Slack's host.
    let body = slash_command_body("U0LEAD", "C0RELEASES", "promote api 1.4.2 production");
    assert!(body.contains("command=%2Frelease&text=promote+api+1.4.2+production"));
    assert!(command_event(&body)
        .response_url
        .0
        .as_str()
        .starts_with("https://hooks.slack.com/commands/"));

    let fake = FakeSlack::start(TOKEN).await;
    let body = slash_command_body("U0LEAD", "C0RELEASES", "promote api 1.4.2 production");
    let command = command_event(&body);
    assert_eq!(command.team_id.0, TEAM_ID);
    assert_eq!(command.channel_id.0, "C0RELEASES");
    assert_eq!(command.user_id.0, "U0LEAD");
    assert_eq!(command.command.0, "/release");
    assert_eq!(
        command.text.as_deref(),
        Some("promote api 1.4.2 production")
    );
    assert!(command
        .response_url
        .0
        .as_str()
        .starts_with(&format!("{}/response/", fake.api_url())));
    let again = command_event(&slash_command_body("U0LEAD", "C0RELEASES", "x"));
    assert_ne!(again.trigger_id, command.trigger_id);
    assert_ne!(again.response_url, command.response_url);

    // A click on a message the fake does not hold.
    let body = block_action_body(
        "U0LEAD",
        "C0RELEASES",
        "1700000000.000100",
        "release_approve",
        "rel_42",
    );
    assert!(body.starts_with("payload=%7B"));
    let SlackInteractionEvent::BlockActions(click) = interaction_event(&body) else {
        panic!("expected block_actions");
    };
    assert_eq!(click.user.as_ref().map(|u| u.id.0.as_str()), Some("U0LEAD"));
    assert_eq!(
        click.channel.as_ref().map(|c| c.id.0.as_str()),
        Some("C0RELEASES")
    );
    match &click.container {
        SlackInteractionActionContainer::Message(m) => {
            assert_eq!(m.message_ts.0, "1700000000.000100");
            assert_eq!(
                m.channel_id.as_ref().map(|c| c.0.as_str()),
                Some("C0RELEASES")
            );
            assert_eq!(m.is_ephemeral, Some(false));
        }
        other => panic!("expected a message container, got {other:?}"),
    }
    let action = &click.actions.as_ref().expect("actions")[0];
    assert_eq!(action.action_id.0, "release_approve");
    assert_eq!(action.value.as_deref(), Some("rel_42"));
    assert_eq!(
        click.message.as_ref().map(|m| m.origin.ts.0.as_str()),
        Some("1700000000.000100")
    );

    // A click on a real card carries its blocks and the button's block_id.
    let posted = client(&fake)
        .open_session(&SlackApiToken::new(TOKEN.into()))
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            card("go?", "rel_9"),
        ))
        .await
        .expect("card");
    let body = block_action_body(
        "U0LEAD",
        "C0RELEASES",
        &posted.ts.0,
        "release_reject",
        "rel_9",
    );
    let SlackInteractionEvent::BlockActions(click) = interaction_event(&body) else {
        panic!("expected block_actions");
    };
    let action = &click.actions.as_ref().expect("actions")[0];
    assert_eq!(
        action.block_id.as_ref().map(|b| b.0.as_str()),
        Some("release_rel_9")
    );
    let message = click.message.as_ref().expect("message");
    assert_eq!(message.content.blocks.as_ref().map(Vec::len), Some(2));
    assert_eq!(message.content.text.as_deref(), Some("go?"));

    for event_type in ["reaction_added", "reaction_removed"] {
        let body = reaction_event_body(
            event_type,
            "Ev0001",
            "U0LEAD",
            "white_check_mark",
            "C0RELEASES",
            &posted.ts.0,
        );
        let SlackPushEvent::EventCallback(callback) =
            serde_json::from_str::<SlackPushEvent>(&body).expect("SlackPushEvent")
        else {
            panic!("expected event_callback");
        };
        assert_eq!(callback.event_id.0, "Ev0001");
        assert_eq!(callback.team_id.0, TEAM_ID);
        let (user, reaction, item_user, item) = match callback.event {
            SlackEventCallbackBody::ReactionAdded(e) if event_type == "reaction_added" => {
                (e.user, e.reaction, e.item_user, e.item)
            }
            SlackEventCallbackBody::ReactionRemoved(e) if event_type == "reaction_removed" => {
                (e.user, e.reaction, e.item_user, e.item)
            }
            other => panic!("unexpected event {other:?}"),
        };
        assert_eq!(user.0, "U0LEAD");
        assert_eq!(reaction.0, "white_check_mark");
        assert_eq!(item_user.map(|u| u.0), Some(BOT_USER_ID.to_string()));
        match item {
            SlackReactionsItem::Message(m) => {
                assert_eq!(m.origin.ts, posted.ts);
                assert_eq!(
                    m.origin.channel.map(|c| c.0),
                    Some("C0RELEASES".to_string())
                );
            }
            other => panic!("expected a message item, got {other:?}"),
        }
    }

    match serde_json::from_str::<SlackPushEvent>(&url_verification_body(
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    ))
    .expect("SlackPushEvent")
    {
        SlackPushEvent::UrlVerification(v) => {
            assert_eq!(
                v.challenge,
                "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
            )
        }
        other => panic!("expected url_verification, got {other:?}"),
    }
}

/// Signed bodies pass slack-morphism's own axum verifier and extractors.
#[tokio::test]
async fn signed_bodies_pass_slack_morphisms_verifier() {
    let fake = FakeSlack::start(TOKEN).await;
    let client = Arc::new(client(&fake));
    let env: Arc<SlackHyperListenerEnvironment> =
        Arc::new(SlackClientEventsListenerEnvironment::new(client));
    let listener: SlackEventsAxumListener<SlackHyperHttpsConnector> =
        SlackEventsAxumListener::new(env);
    let secret: SlackSigningSecret = SECRET.to_string().into();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (tx1, tx2, tx3) = (tx.clone(), tx.clone(), tx);
    let app = Router::new()
        .route(
            "/slack/commands",
            post(
                move |Extension(event): Extension<SlackCommandEvent>| async move {
                    let _ = tx1.send(format!("command {}", event.text.unwrap_or_default()));
                    ""
                },
            )
            .layer(
                listener
                    .events_layer(&secret)
                    .with_event_extractor(SlackEventsExtractors::command_event()),
            ),
        )
        .route(
            "/slack/interactions",
            post(
                move |Extension(event): Extension<SlackInteractionEvent>| async move {
                    if let SlackInteractionEvent::BlockActions(e) = event {
                        let action = e.actions.unwrap_or_default().into_iter().next();
                        let _ = tx2.send(format!("action {:?}", action.map(|a| a.action_id.0)));
                    }
                    ""
                },
            )
            .layer(
                listener
                    .events_layer(&secret)
                    .with_event_extractor(SlackEventsExtractors::interaction_event()),
            ),
        )
        .route(
            "/slack/events",
            post(
                move |Extension(event): Extension<SlackPushEvent>| async move {
                    match event {
                        SlackPushEvent::UrlVerification(v) => v.challenge,
                        SlackPushEvent::EventCallback(e) => {
                            let _ = tx3.send(format!("event {}", e.event_id.0));
                            String::new()
                        }
                        SlackPushEvent::AppRateLimited(_) => String::new(),
                    }
                },
            )
            .layer(
                listener
                    .events_layer(&secret)
                    .with_event_extractor(SlackEventsExtractors::push_event()),
            ),
        );
    let bot = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bot_url = format!("http://{}", bot.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(bot, app).await });

    let http = reqwest::Client::new();
    let send =
        |path: &str, body: String, content_type: &str, ts: i64, signature: Option<String>| {
            let signature = signature.unwrap_or_else(|| sign(SECRET, ts, &body));
            http.post(format!("{bot_url}{path}"))
                .header("content-type", content_type)
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", signature)
                .body(body)
                .send()
        };
    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json";
    let recv = async |rx: &mut mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("handler ran")
            .expect("channel open")
    };

    let r = send(
        "/slack/commands",
        slash_command_body("U0LEAD", "C0RELEASES", "promote api"),
        FORM,
        now_unix(),
        None,
    )
    .await
    .expect("command");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(recv(&mut rx).await, "command promote api");

    let body = block_action_body(
        "U0LEAD",
        "C0RELEASES",
        "1700000000.000100",
        "release_approve",
        "rel_1",
    );
    let r = send("/slack/interactions", body, FORM, now_unix(), None)
        .await
        .expect("click");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(recv(&mut rx).await, "action Some(\"release_approve\")");

    let body = reaction_event_body(
        "reaction_added",
        "Ev42",
        "U0LEAD",
        "rocket",
        "C0RELEASES",
        "1700000000.000100",
    );
    let r = send("/slack/events", body, JSON, now_unix(), None)
        .await
        .expect("event");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(recv(&mut rx).await, "event Ev42");

    let r = send(
        "/slack/events",
        url_verification_body("chal-123"),
        JSON,
        now_unix(),
        None,
    )
    .await
    .expect("challenge");
    assert_eq!(r.text().await.expect("text"), "chal-123");

    // Bad and stale signatures are refused (slack-morphism's default handler answers 400).
    let body = slash_command_body("U0LEAD", "C0RELEASES", "x");
    let bad = sign("another-secret", now_unix(), &body);
    let r = send("/slack/commands", body, FORM, now_unix(), Some(bad))
        .await
        .expect("bad sig");
    assert_eq!(r.status().as_u16(), 400);
    let stale = now_unix() - 600;
    let r = send(
        "/slack/commands",
        slash_command_body("U0LEAD", "C0RELEASES", "x"),
        FORM,
        stale,
        None,
    )
    .await
    .expect("stale");
    assert_eq!(r.status().as_u16(), 400);
    assert!(rx.try_recv().is_err(), "refused requests reach no handler");
}

#[tokio::test]
#[should_panic(expected = "unread ephemeral")]
async fn dropping_the_fake_with_unread_ephemerals_panics() {
    let fake = FakeSlack::start(TOKEN).await;
    client(&fake)
        .open_session(&SlackApiToken::new(TOKEN.into()))
        .chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
            "C0RELEASES".into(),
            "U0LEAD".into(),
            content("nobody reads this"),
        ))
        .await
        .expect("ephemeral");
    let clone = fake.clone();
    drop(fake);
    assert_eq!(
        clone.calls("chat.postEphemeral"),
        1,
        "clones keep the fake alive"
    );
}

#[tokio::test]
async fn outages_holds_and_block_kit_limits() {
    let fake = FakeSlack::start(TOKEN).await;
    let client = client(&fake);
    let token = SlackApiToken::new(TOKEN.into());
    let session = client.open_session(&token);
    let post = |text: &str| SlackApiChatPostMessageRequest::new("C0RELEASES".into(), content(text));
    fake.start_outage(vec![
        Failure::ServerError,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    ]);
    assert!(matches!(
        session.chat_post_message(&post("a")).await,
        Err(SlackClientError::HttpError(_))
    ));
    match session.chat_post_message(&post("b")).await {
        Err(SlackClientError::RateLimitError(limit)) => {
            assert_eq!(limit.retry_after, Some(Duration::from_secs(3)))
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    fake.end_outage();
    fake.hang("chat.postMessage", Some(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    session
        .chat_post_message(&post("c"))
        .await
        .expect("late but answered");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(fake.held_calls("chat.postMessage"), 1);

    // A context element over 3,000 characters: invalid_blocks, recorded as a refusal.
    let context = SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new("x".repeat(3_001)),
    )]);
    let blocks = SlackMessageContent::new()
        .with_text("t".into())
        .with_blocks(vec![context.into()]);
    let refused = session
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "C0RELEASES".into(),
            blocks,
        ))
        .await
        .expect_err("too long");
    assert_eq!(api_error_code(refused), "invalid_blocks");
    assert_eq!(
        fake.refusals(),
        vec![("chat.postMessage".to_string(), "invalid_blocks".to_string())]
    );
}
