//! The Slack adapter end to end: signed slash commands, button clicks and reactions against the
//! real bot, with a stateful fake Slack Web API on loopback receiving the cards.

mod support;

use std::time::Duration;

use serde_json::Value;
use shipmate::engine::Clock;
use support::fake_slack::{reaction_event_body, url_verification_body, Failure};
use support::*;

const DEV_CHAT: &str = "C0DEVCHAT";

fn promotion_id(reply: &str) -> i64 {
    let after = reply
        .split('#')
        .nth(1)
        .unwrap_or_else(|| panic!("no #id in {reply}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no #id in {reply}"))
}

fn buttons(message: &support::fake_slack::Message) -> Vec<String> {
    let mut ids = Vec::new();
    for block in message.blocks.as_array().into_iter().flatten() {
        for element in block["elements"].as_array().into_iter().flatten() {
            if let Some(id) = element["action_id"].as_str() {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

fn block_text(message: &support::fake_slack::Message) -> String {
    serde_json::to_string(&message.blocks).unwrap_or_default()
}

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
