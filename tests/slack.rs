//! The Slack adapter end to end: signed slash commands, button clicks and reactions against the
//! real bot, with a stateful fake Slack Web API on loopback receiving the cards.

#[path = "support/fake_slack_socket.rs"]
mod fake_slack_socket;
mod support;

use std::time::Duration;

use serde_json::Value;
use shipmate::engine::Clock;
use support::fake_slack::{reaction_event_body, url_verification_body, Failure};
use support::slack::{block_text, buttons};
use support::*;

const DEV_CHAT: &str = "C0DEVCHAT";

/// api 1.4.2 through dev and staging, then `/release promote api 1.4.2` by a deployer in a
/// chat channel; returns the production promotion id and its card.
async fn awaiting_production(
    bot: &TestBot,
    requester: &str,
) -> (i64, support::fake_slack::Message) {
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let reply = bot.slash(requester, DEV_CHAT, "promote api 1.4.2").await;
    assert!(reply.starts_with("requested: #"), "{reply}");
    let id = promotion_id(&reply);
    let card = bot
        .card_in_state(RELEASES_CHANNEL, id, "awaiting_approval")
        .await;
    (id, card)
}

#[tokio::test]
async fn promote_then_a_button_and_a_reaction_approve_and_the_card_follows_the_deploy() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    assert_eq!(buttons(&card), ["shipmate:approve", "shipmate:reject"]);
    assert!(
        block_text(&card).contains("<@U0DEV>"),
        "requester is mentioned: {}",
        block_text(&card)
    );
    assert!(block_text(&card).contains("0/2"), "{}", block_text(&card));

    bot.click(SLACK_LEAD, RELEASES_CHANNEL, &card.ts, "approve", id)
        .await;
    let approvals = |bot: &TestBot| {
        let message = bot.fake_slack().message(RELEASES_CHANNEL, &card.ts);
        message.map(|m| block_text(&m)).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let text = approvals(&bot);
            async move { text.contains("1/2 (<@U0LEAD1>)") }
        })
        .await,
        "card shows the first approval: {}",
        approvals(&bot)
    );

    let reaction = reaction_event_body(
        "reaction_added",
        "Ev0001",
        SLACK_LEAD2,
        "white_check_mark",
        RELEASES_CHANNEL,
        &card.ts,
    );
    let (status, _) = bot.slack_event(reaction).await;
    assert_eq!(status, 200);

    let done = bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    assert_eq!(
        done.ts, card.ts,
        "one message per promotion, edited in place"
    );
    assert!(buttons(&done).is_empty(), "no buttons once it succeeded");
    assert!(block_text(&done).contains("2/2"), "{}", block_text(&done));
    let thread = bot.fake_slack().thread(RELEASES_CHANNEL, &card.ts);
    let output: String = thread.iter().map(|m| m.text.clone()).collect();
    assert!(
        output.contains("deploying api 1.4.2 to production") && output.contains("done"),
        "{thread:#?}"
    );
    let events = bot.promotion(id).await["events"].clone();
    let actors: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["slack:U0LEAD1", "slack:U0LEAD2"]);
}

#[tokio::test]
async fn self_approval_is_refused_to_the_clicker_only() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_LEAD).await;
    bot.click(SLACK_LEAD, RELEASES_CHANNEL, &card.ts, "approve", id)
        .await;
    let slack = bot.fake_slack();
    let mut notices = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            notices.extend(slack.take_ephemerals(SLACK_LEAD));
            let got = !notices.is_empty();
            async move { got }
        })
        .await
    );
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(
        notices[0].text.contains("you can't approve it yourself"),
        "{notices:#?}"
    );
    assert_eq!(notices[0].channel, RELEASES_CHANNEL);
    assert_eq!(
        bot.promotion(id).await["approvals"],
        serde_json::json!([]),
        "nothing changed"
    );
}

#[tokio::test]
async fn a_retried_event_takes_effect_once() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    let added = reaction_event_body(
        "reaction_added",
        "Ev0100",
        SLACK_LEAD,
        "+1",
        RELEASES_CHANNEL,
        &card.ts,
    );
    let removed = reaction_event_body(
        "reaction_removed",
        "Ev0101",
        SLACK_LEAD,
        "+1",
        RELEASES_CHANNEL,
        &card.ts,
    );
    assert_eq!(bot.slack_event(added.clone()).await.0, 200);
    assert_eq!(
        bot.promotion(id).await["approvals"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(bot.slack_event(removed).await.0, 200);
    assert_eq!(
        bot.promotion(id).await["approvals"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "withdrawn"
    );
    // Slack retries the first delivery (same event_id): it must not approve again.
    assert_eq!(bot.slack_event(added).await.0, 200);
    let promotion = bot.promotion(id).await;
    assert_eq!(
        promotion["approvals"].as_array().map(Vec::len),
        Some(0),
        "{promotion:#}"
    );
    let kinds: Vec<&str> = promotion["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["requested", "approval", "approval_withdrawn"]);
}

#[tokio::test]
async fn reactions_from_people_who_may_not_approve_get_one_notice_and_change_nothing() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    for event_id in ["Ev0200", "Ev0201"] {
        let body = reaction_event_body(
            "reaction_added",
            event_id,
            SLACK_STRANGER,
            "white_check_mark",
            RELEASES_CHANNEL,
            &card.ts,
        );
        assert_eq!(bot.slack_event(body).await.0, 200);
    }
    let slack = bot.fake_slack();
    let mut notices = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            notices.extend(slack.take_ephemerals(SLACK_STRANGER));
            let got = !notices.is_empty();
            async move { got }
        })
        .await
    );
    assert!(
        notices[0]
            .text
            .contains("only members of `leads` may approve"),
        "{notices:#?}"
    );
    assert_eq!(bot.promotion(id).await["approvals"], serde_json::json!([]));
    // The second reaction was refused too, silently: still exactly one notice.
    let (_, metrics) = bot
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert!(metrics.as_str().unwrap().contains(
        r#"shipmate_chat_events_total{platform="slack",kind="reaction",outcome="refused"} 2"#
    ));
    assert!(slack.take_ephemerals(SLACK_STRANGER).is_empty());
}

#[tokio::test]
async fn unsigned_badly_signed_and_stale_requests_get_401_and_change_nothing() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let body = support::fake_slack::slash_command_body(SLACK_DEV, DEV_CHAT, "promote web 1.0.0");
    let (status, _) = bot
        .slack_post_raw("/slack/commands", FORM, body.clone(), None)
        .await;
    assert_eq!(status, 401, "unsigned");
    let now = support::fake_slack::now_unix();
    let wrong = support::fake_slack::sign("not-the-secret", now, &body);
    let (status, _) = bot
        .slack_post_raw("/slack/commands", FORM, body.clone(), Some((now, wrong)))
        .await;
    assert_eq!(status, 401, "bad signature");
    let (status, _) = bot
        .slack_post("/slack/commands", FORM, body.clone(), 6 * 60)
        .await;
    assert_eq!(status, 401, "older than 5 minutes");
    let tampered = body.replace("1.0.0", "9.9.9");
    let signature = support::fake_slack::sign(SLACK_SIGNING_SECRET, now, &body);
    let (status, _) = bot
        .slack_post_raw("/slack/commands", FORM, tampered, Some((now, signature)))
        .await;
    assert_eq!(status, 401, "signature over another body");
    let (_, history) = bot.get("/api/v1/services/web/history", CI_TOKEN).await;
    assert_eq!(history, serde_json::json!([]), "nothing reached the engine");
    assert_eq!(bot.fake_slack().calls("chat.postMessage"), 0);
}

#[tokio::test]
async fn url_verification_is_answered_with_the_challenge() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (status, body) = bot
        .slack_event(url_verification_body(
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        ))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
}

#[tokio::test]
async fn errors_help_and_status_are_ephemeral_and_cards_go_where_asked_without_a_service_channel() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "promote web 1.4").await;
    assert!(reply.contains("`1.4` is not a version"), "{reply}");
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "help promote").await;
    assert!(
        reply.contains("/release promote &lt;service&gt;"),
        "Slack markup escaped: {reply}"
    );
    let reply = bot
        .slash(SLACK_STRANGER, DEV_CHAT, "promote web 1.0.0")
        .await;
    assert!(reply.contains("you need the `deployers` role"), "{reply}");
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "promote web 1.0.0").await;
    let id = promotion_id(&reply);
    let card = bot.card_in_state(DEV_CHAT, id, "succeeded").await;
    assert!(block_text(&card).contains("web"));
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "status web").await;
    assert!(reply.contains("staging: 1.0.0"), "{reply}");
}

#[tokio::test]
async fn a_rate_limited_edit_is_retried_after_retry_after_and_the_card_ends_right() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    let slack = bot.fake_slack();
    slack.fail_next(
        "chat.update",
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    slack.fail_next("chat.postMessage", 1, Failure::ServerError);
    bot.act(id, "approve", LEAD_TOKEN).await;
    bot.act(id, "approve", LEAD2_TOKEN).await;
    bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    let updates = slack.updates_of(RELEASES_CHANNEL, &card.ts);
    for pair in updates.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(950),
            "edits {gap:?} apart: at most one per second"
        );
    }
    assert!(
        slack.calls("chat.update") > updates.len(),
        "the rate-limited call was made and retried"
    );
    let value: Value = bot.promotion(id).await;
    assert_eq!(value["state"], "succeeded");
}

#[tokio::test]
async fn members_of_a_slack_user_group_in_a_role_may_approve() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    bot.fake_slack()
        .usergroup(SLACK_LEADS_GROUP, &["U0GROUPLEAD"]);
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    bot.click("U0GROUPLEAD", RELEASES_CHANNEL, &card.ts, "approve", id)
        .await;
    let approvals = bot.promotion(id).await["approvals"].clone();
    assert_eq!(approvals[0]["by"], "slack:U0GROUPLEAD", "{approvals:#}");
    assert!(bot.fake_slack().calls("usergroups.users.list") >= 1);
}

/// The card job of promotion `id`: (due time, lease holder), from the outbox table.
async fn card_job(bot: &TestBot, id: i64) -> Option<(i64, Option<String>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&bot.database_url)
        .await
        .expect("raw connect");
    let job = sqlx::query_as(
        "SELECT run_at, lease_owner FROM jobs WHERE kind = 'card:slack' AND promotion_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await
    .expect("read jobs");
    pool.close().await;
    job
}

#[tokio::test]
async fn card_edits_are_paced_on_real_time_not_on_the_rules_clock() {
    let bot = TestBot::builder()
        .slack()
        .manual_real_time()
        .start()
        .await
        .unwrap();
    let real = bot.real_clock.clone().expect("manual real time");
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    let posted_at = real.now();

    bot.click(SLACK_LEAD, RELEASES_CHANNEL, &card.ts, "approve", id)
        .await;
    // The edit is owed, but the card was posted less than a second ago in real time: the job
    // waits for real time to reach one second after the post, however far the rules clock moves.
    bot.clock.advance(Duration::from_secs(3600));
    let due = (posted_at + chrono::Duration::seconds(1)).timestamp_millis();
    let seen = std::sync::Mutex::new(None);
    let paced = wait_until(Duration::from_secs(10), || async {
        let job = card_job(&bot, id).await;
        let waiting = job == Some((due, None));
        *seen.lock().unwrap() = job;
        waiting
    })
    .await;
    assert!(
        paced,
        "card job {:?}, expected due at {due}",
        seen.lock().unwrap()
    );
    let text = block_text(
        &bot.fake_slack()
            .message(RELEASES_CHANNEL, &card.ts)
            .expect("card"),
    );
    assert!(text.contains("0/2"), "edited before its time: {text}");

    real.advance(Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let message = bot.fake_slack().message(RELEASES_CHANNEL, &card.ts);
            let text = message.map(|m| block_text(&m)).unwrap_or_default();
            async move { text.contains("1/2") }
        })
        .await,
        "the card was not edited once real time moved on"
    );
}

/// Fails after twelve lines of 999 `&` each (5,000 characters each once Slack-escaped): a failure
/// reason quoting the last ten lines, and output no single Slack message can hold.
pub const LOUD_FAILURE_SCRIPT: &str = r#"#!/bin/sh
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  head -c 999 /dev/zero | tr '\0' '&'; echo
done
exit 3
"#;

fn section_texts(message: &support::fake_slack::Message) -> Vec<String> {
    let mut texts = Vec::new();
    for block in message.blocks.as_array().into_iter().flatten() {
        texts.extend(block["text"]["text"].as_str().map(str::to_string));
        for part in ["elements", "fields"] {
            for element in block[part].as_array().into_iter().flatten() {
                texts.extend(element["text"].as_str().map(str::to_string));
            }
        }
    }
    texts
}

#[tokio::test]
async fn long_notes_reason_and_output_are_cut_or_split_to_slacks_limits() {
    let bot = TestBot::builder()
        .slack()
        .script(LOUD_FAILURE_SCRIPT)
        .start()
        .await
        .unwrap();
    let notes = format!("{} END", "n".repeat(5_000));
    let (status, body) = bot
        .post(
            "/api/v1/releases",
            CI_TOKEN,
            serde_json::json!({"service": "api", "version": "6.6.6", "notes": notes}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = bot.promote(CI_TOKEN, "api", "6.6.6", Some("dev")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");
    let card = bot.card_in_state(RELEASES_CHANNEL, id, "failed").await;
    let texts = section_texts(&card);
    let pointer = format!("full text: `GET /api/v1/promotions/{id}`");
    let notes_shown = texts
        .iter()
        .find(|t| t.starts_with("*Notes*"))
        .expect("notes");
    assert!(
        notes_shown.chars().count() <= 3_000,
        "{}",
        notes_shown.len()
    );
    assert!(notes_shown.contains("n…") && notes_shown.ends_with(&format!("{pointer})")));
    let why = texts
        .iter()
        .find(|t| t.starts_with("*Why:*"))
        .expect("reason");
    assert!(why.chars().count() <= 3_000 && why.starts_with("*Why:* exit code 3: &amp;"));
    assert!(why.ends_with(&format!("{pointer})")), "{why}");
    let slack = bot.fake_slack();
    let thread = slack.thread(RELEASES_CHANNEL, &card.ts);
    assert!(
        thread.len() >= 2,
        "60,000 escaped characters need two messages"
    );
    assert!(thread.iter().all(|m| m.text.chars().count() <= 40_000));
    let lines: usize = thread
        .iter()
        .map(|m| m.text.matches(&"&amp;".repeat(999)).count())
        .sum();
    assert_eq!(lines, 12, "every line in the thread, whole");
    assert_eq!(slack.refusals(), vec![], "Slack refused nothing");
}

#[tokio::test]
async fn a_thread_post_refused_for_good_is_dropped_and_the_card_still_ends_right() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    let slack = bot.fake_slack();
    // From now on every chat.postMessage (the thread output) is refused as `not_in_channel`.
    slack.fail_next(
        "chat.postMessage",
        1_000,
        Failure::ApiError("not_in_channel"),
    );
    let posts_before = slack.calls("chat.postMessage");
    bot.act(id, "approve", LEAD_TOKEN).await;
    bot.act(id, "approve", LEAD2_TOKEN).await;
    bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    assert!(slack.thread(RELEASES_CHANNEL, &card.ts).is_empty());
    let thread_posts = slack.calls("chat.postMessage") - posts_before;
    // Three lines of output, in one to three batches: each refused batch was tried once.
    assert!(
        (1..=3).contains(&thread_posts),
        "{thread_posts} thread posts"
    );
}

#[tokio::test]
async fn a_hung_usergroup_lookup_fails_closed_within_slacks_three_seconds() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let slack = bot.fake_slack();
    slack.usergroup(SLACK_LEADS_GROUP, &["U0GROUPLEAD"]);
    // Slack never answers a usergroup lookup, from the first one on (nothing is cached).
    slack.hang("usergroups.users.list", None);
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let (status, body) = bot
        .promote(CI_TOKEN, "api", "1.4.2", Some("production"))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        bot.slash("U0GROUPLEAD", DEV_CHAT, &format!("approve {id}")),
    )
    .await
    .expect("answered within Slack's 3 seconds although Slack never listed the group");
    assert!(started.elapsed() < Duration::from_millis(2_500));
    assert!(reply.contains("leads"), "not eligible: {reply}");
    assert_eq!(slack.held_calls("usergroups.users.list"), 1);
    assert_eq!(bot.promotion(id).await["approvals"], serde_json::json!([]));
}

#[tokio::test]
async fn a_hung_usergroup_lookup_does_not_stall_the_socket_mode_connection() {
    use fake_slack_socket::{FakeSocketMode, APP_TOKEN};
    let dir = tempfile::tempdir().expect("temp dir");
    let slack = support::fake_slack::FakeSlack::start(SLACK_BOT_TOKEN).await;
    slack.usergroup(SLACK_LEADS_GROUP, &["U0GROUPLEAD"]);
    slack.hang("usergroups.users.list", None);
    let mut socket = FakeSocketMode::start(&slack).await;
    let database_url = format!("sqlite://{}", dir.path().join("bot.db").display());
    let text = test_config_with_slack(&database_url, "./deploy.sh", Some(&socket.api_url()))
        .replacen(
            "[slack]\n",
            &format!("[slack]\napp_token = \"{APP_TOKEN}\"\n"),
            1,
        );
    let config_path = dir.path().join("bot.toml");
    std::fs::write(&config_path, &text).expect("write config");
    let config = shipmate::config::load(&config_path, &|_| None).expect("valid config");
    let bot = shipmate::app::build(config, shipmate::engine::Time::system(), None)
        .await
        .expect("bot builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _server = tokio::spawn(shipmate::app::run(bot, listener, shutdown.clone()));
    let mut connection = socket.next_connection().await;
    connection.hello().await;

    // Each envelope waits for its lookup; the connection reads the next one only after the ack.
    for attempt in 0..2 {
        let started = std::time::Instant::now();
        let ack = tokio::time::timeout(
            Duration::from_secs(3),
            connection.slash("U0GROUPLEAD", DEV_CHAT, "approve 1"),
        )
        .await
        .unwrap_or_else(|_| panic!("envelope {attempt} not acked within 3 s"));
        assert!(started.elapsed() < Duration::from_millis(2_500));
        let reply = ack["payload"]["text"].as_str().unwrap_or_default();
        assert!(!reply.is_empty(), "{ack}");
    }
    assert_eq!(slack.held_calls("usergroups.users.list"), 2);
    shutdown.cancel();
}

/// Pause, Resume and Abort clicks and the rollout commands reach the engine, which refuses them
/// here (nothing is rolling out), to the clicker only; what they do to a running rollout is the
/// controls use case's to test.
#[tokio::test]
async fn rollout_control_buttons_and_commands_reach_the_engine() {
    let bot = TestBot::builder().slack().start().await.unwrap();
    let (id, card) = awaiting_production(&bot, SLACK_DEV).await;
    let slack = bot.fake_slack();
    for action in ["pause", "resume", "abort"] {
        bot.click(SLACK_LEAD, RELEASES_CHANNEL, &card.ts, action, id)
            .await;
        let mut notices = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                notices.extend(slack.take_ephemerals(SLACK_LEAD));
                let got = !notices.is_empty();
                async move { got }
            })
            .await,
            "the {action} click was never answered"
        );
        assert_eq!(notices.len(), 1, "{action}: {notices:#?}");
        assert!(!notices[0].text.trim().is_empty(), "{action}: {notices:#?}");
        assert_eq!(notices[0].channel, RELEASES_CHANNEL);
    }
    for text in [
        format!("pause #{id}"),
        format!("resume {id}"),
        format!("advance #{id}"),
        format!("abort #{id} error rate doubled"),
    ] {
        let reply = bot.slash(SLACK_DEV, DEV_CHAT, &text).await;
        assert!(
            !reply.is_empty() && !reply.contains("Usage:"),
            "{text}: {reply}"
        );
    }
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "abort soon").await;
    assert!(
        reply.contains("`soon` is not a promotion id")
            // Slack's reply text escapes `<` and `>`.
            && reply.contains("Usage: /release abort &lt;#id&gt; [reason...]"),
        "{reply}"
    );
    assert_eq!(bot.promotion(id).await["state"], "awaiting_approval");
}
