//! The scheduler under failure and daylight-saving time (issue 11, defect 6): one failing
//! occurrence neither aborts the others nor is lost (it is tried again while less than five
//! minutes overdue), and a `[[schedule]]` at a local time that a fall-back repeats runs once.

mod support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

async fn runs(bot: &TestBot, schedule: &str) -> i64 {
    bot.sql_count(&format!(
        "SELECT COUNT(*) FROM schedule_occurrences WHERE name = 'schedule:{schedule}'"
    ))
    .await
}

/// Waits until `schedule` has run `n` times.
async fn until_runs(bot: &TestBot, schedule: &str, n: i64) {
    let ran = wait_until(WAIT, || async { runs(bot, schedule).await >= n }).await;
    assert!(
        ran,
        "{schedule} ran {} times, not {n}",
        runs(bot, schedule).await
    );
}

/// A bot with these `[[schedule]]` tables, on the manual clock.
async fn bot_with(schedules: &str) -> TestBot {
    TestBot::builder()
        .config(schedules)
        .start()
        .await
        .expect("sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_at_a_repeated_fall_back_hour_runs_once() {
    // Berlin falls back at 03:00 CEST on 2026-10-25: 02:30 local is 00:30 UTC and again 01:30 UTC.
    let bot = bot_with(
        r#"
[[schedule]]
name = "night"
cron = "0 30 2 * * *"
timezone = "Europe/Berlin"
command = "status"

[[schedule]]
name = "marker"
cron = "0 32 1 * * *"
timezone = "UTC"
command = "status"
"#,
    )
    .await;
    let utc = |h, m| Utc.with_ymd_and_hms(2026, 10, 25, h, m, 0).unwrap();
    bot.clock.set(utc(0, 31));
    until_runs(&bot, "night", 1).await;
    // A tick at 01:33 UTC looks back to 01:28 UTC: the repeated 02:30 (01:30 UTC) is in reach,
    // and so is the marker at 01:32 UTC, which shows that the tick happened.
    bot.clock.set(utc(1, 33));
    until_runs(&bot, "marker", 1).await;
    assert_eq!(runs(&bot, "night").await, 1, "02:30 local ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_fails_on_the_database_is_retried_and_does_not_hold_up_the_others() {
    let bot = bot_with(
        r#"
[[schedule]]
name = "train"
cron = "0 0 10 * * *"
timezone = "UTC"
command = "promote api latest to staging"
roles = ["deployers"]

[[schedule]]
name = "marker"
cron = "0 0 10 * * *"
timezone = "UTC"
command = "status"
"#,
    )
    .await;
    bot.reach("api", "1.4.2", &["dev"]).await;
    bot.sql(
        "CREATE TRIGGER break_promotions BEFORE INSERT ON promotions \
         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    .await;
    let ten = Utc.with_ymd_and_hms(2026, 11, 17, 10, 0, 0).unwrap();
    bot.clock.set(ten + chrono::Duration::seconds(1));
    // The marker runs in the same tick although the train failed before it.
    until_runs(&bot, "marker", 1).await;
    assert_eq!(
        runs(&bot, "train").await,
        0,
        "a failed run is not recorded as run"
    );

    bot.sql("DROP TRIGGER break_promotions").await;
    bot.clock.set(ten + chrono::Duration::minutes(2));
    until_runs(&bot, "train", 1).await;
    let staged = wait_until(WAIT, || async {
        let (_, history) = bot
            .get("/api/v1/services/api/history?environment=staging", CI_TOKEN)
            .await;
        history[0]["requested_by"] == "schedule:train"
    })
    .await;
    assert!(staged, "the retried train promoted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_more_than_five_minutes_overdue_is_not_made_up() {
    let bot = bot_with(
        r#"
[[schedule]]
name = "train"
cron = "0 0 10 * * *"
timezone = "UTC"
command = "status"

[[schedule]]
name = "marker"
cron = "0 7 10 * * *"
timezone = "UTC"
command = "status"
"#,
    )
    .await;
    let ten = Utc.with_ymd_and_hms(2026, 11, 17, 10, 0, 0).unwrap();
    // The bot was away until 10:08, 8 minutes after the train was due.
    bot.clock.set(ten + chrono::Duration::minutes(8));
    until_runs(&bot, "marker", 1).await;
    assert_eq!(
        runs(&bot, "train").await,
        0,
        "a run 8 minutes late was made up"
    );
}
