//! A platform delivery is seen exactly when its effect is written (issue 11, defect 5): a
//! database failure while acting on it leaves it unseen and answers so that Slack delivers it
//! again, and the redelivery takes effect once.

mod support;

use std::time::Duration;

use support::fake_slack::reaction_event_body;
use support::*;

const DEV_CHAT: &str = "C0DEVCHAT";

/// Makes every new approval fail in the database, as a full disk or a lost connection would.
const BREAK_VOTES: &str = "CREATE TRIGGER break_votes BEFORE INSERT ON approvals \
                           BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END";

async fn awaiting_production(bot: &TestBot) -> (i64, String) {
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let reply = bot.slash(SLACK_DEV, DEV_CHAT, "promote api 1.4.2").await;
    let id = promotion_id(&reply);
    let card = bot
        .card_in_state(RELEASES_CHANNEL, id, "awaiting_approval")
        .await;
    (id, card.ts)
}

#[tokio::test]
async fn an_event_that_fails_on_the_database_is_answered_non_2xx_and_its_redelivery_counts_once() {
    let bot = TestBot::builder().slack().start().await.expect("sqlite");
    let (id, ts) = awaiting_production(&bot).await;
    let approve = || {
        reaction_event_body(
            "reaction_added",
            "Ev0DB1",
            SLACK_LEAD,
            "white_check_mark",
            RELEASES_CHANNEL,
            &ts,
        )
    };

    bot.sql(BREAK_VOTES).await;
    let (status, body) = bot.slack_event(approve()).await;
    assert!(
        (500..600).contains(&status),
        "Slack must retry: {status} {body}"
    );
    assert_eq!(bot.promotion(id).await["approvals"], serde_json::json!([]));

    bot.sql("DROP TRIGGER break_votes").await;
    // Slack's retry carries the same event id.
    let (status, _) = bot.slack_event(approve()).await;
    assert_eq!(status, 200);
    let approvals = bot.promotion(id).await["approvals"].clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
    assert_eq!(approvals[0]["by"], format!("slack:{SLACK_LEAD}"));

    // A third delivery of it is a repeat.
    let (status, _) = bot.slack_event(approve()).await;
    assert_eq!(status, 200);
    let approvals = bot.promotion(id).await["approvals"].clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
}

#[tokio::test]
async fn a_click_that_fails_on_the_database_tells_the_clicker_and_a_second_click_counts() {
    let bot = TestBot::builder().slack().start().await.expect("sqlite");
    let (id, ts) = awaiting_production(&bot).await;

    bot.sql(BREAK_VOTES).await;
    bot.click(SLACK_LEAD, RELEASES_CHANNEL, &ts, "approve", id)
        .await;
    let slack = bot.fake_slack();
    let mut told = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            told.extend(slack.take_ephemerals(SLACK_LEAD));
            let got = !told.is_empty();
            async move { got }
        })
        .await,
        "the clicker hears that nothing happened"
    );
    assert!(told[0].text.contains("nothing was changed"), "{told:#?}");
    assert_eq!(bot.promotion(id).await["approvals"], serde_json::json!([]));

    bot.sql("DROP TRIGGER break_votes").await;
    bot.click(SLACK_LEAD, RELEASES_CHANNEL, &ts, "approve", id)
        .await;
    let counted = wait_until(Duration::from_secs(10), || async {
        bot.promotion(id).await["approvals"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(counted, "{}", bot.promotion(id).await);
}

/// Two deliveries of one event racing: the second to commit finds the first's mark and its whole
/// transaction (its effect) rolls back; on SQLite and PostgreSQL.
#[tokio::test]
async fn the_second_of_two_racing_deliveries_rolls_back_its_effect() {
    use shipmate::store::{DeliveryMark, Store, StoreError};
    let dir = tempfile::tempdir().expect("temp dir");
    for (db, url) in database_urls(dir.path()).await {
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let at = start_time();
        let later = at + chrono::Duration::hours(1);
        let ci = shipmate::domain::identity::Identity::new("api", "ci");
        let first = DeliveryMark::new("slack:event", "Ev0RACE", at);
        let second = DeliveryMark::new("slack:event", "Ev0RACE", at);
        let mut tx = store.recording(first.clone()).begin().await.expect("begin");
        tx.insert_freeze("production", at, later, Some("first"), &ci)
            .await
            .expect("write");
        tx.commit().await.expect("the first commits");
        assert!(!first.seen_before(), "{db:?}");

        let mut tx = store
            .recording(second.clone())
            .begin()
            .await
            .expect("begin");
        tx.insert_freeze("production", at, later, Some("second"), &ci)
            .await
            .expect("write");
        let refused = tx.commit().await;
        assert!(
            matches!(refused, Err(StoreError::Concurrent)),
            "{db:?}: {refused:?}"
        );
        assert!(second.seen_before(), "{db:?}");
        let reasons: Vec<String> = store
            .active_freezes(at)
            .await
            .expect("read")
            .into_iter()
            .filter_map(|f| f.reason)
            .collect();
        assert_eq!(reasons, ["first"], "{db:?}: the second effect rolled back");
        assert!(store
            .seen_inbound("slack:event", "Ev0RACE")
            .await
            .expect("read"));
    }
}
