//! Delivery metrics (issue 15, SPEC §9) from a history the bot really ran: releases created,
//! deploys that succeeded or failed in production, a rollback, each at a time set on the manual
//! clock. The numbers are known in advance; they are checked through `GET /api/v1/dora`, through
//! `/release dora` (the commands endpoint) and through a `[[schedule]]` digest, on SQLite and on
//! PostgreSQL (when SHIPMATE_TEST_POSTGRES_URL is set).

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::*;

/// Fails a production deploy of a version ending in `.13`; everything else succeeds.
const PRODUCTION_UNLUCKY: &str = r#"#!/bin/sh
echo "deploying $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"
case "$SHIPMATE_ENVIRONMENT:$SHIPMATE_VERSION" in production:*.13) echo "smoke test failed" >&2; exit 3;; esac
echo "ok"
"#;

const HOUR: i64 = 3600;

fn hours(h: i64) -> DateTime<Utc> {
    start_time() + chrono::Duration::hours(h)
}

async fn bot_on(db: Db) -> Option<TestBot> {
    TestBot::builder()
        .script(PRODUCTION_UNLUCKY)
        .db(db)
        .start()
        .await
}

/// Waits until promotion `id` has ended (succeeded or failed) and returns its state.
async fn ended(bot: &TestBot, id: i64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = bot.promotion(id).await;
        if let Some(state @ ("succeeded" | "failed")) = last["state"].as_str() {
            return state.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "#{id} never ended: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// At hour `at`: creates `web <version>` and deploys it to staging.
async fn release(bot: &TestBot, version: &str, at: i64) {
    bot.clock.set(hours(at));
    let (status, body) = bot
        .post(
            "/api/v1/releases",
            CI_TOKEN,
            json!({"service": "web", "version": version}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let staging = bot.promote_id("web", version, Some("staging")).await;
    assert_eq!(ended(bot, staging).await, "succeeded");
}

/// At hour `at`: deploys `web <version>` to production; returns how it ended.
async fn production(bot: &TestBot, version: &str, at: i64) -> String {
    bot.clock.set(hours(at));
    let id = bot.promote_id("web", version, Some("production")).await;
    ended(bot, id).await
}

/// web in production, hours after the start:
///
/// | version | released | ended in production           | lead | restore |
/// |---------|----------|-------------------------------|------|---------|
/// | 1.0.0   | 0        | 3 succeeded                   | 3h   |         |
/// | 1.1.0   | 10       | 12 succeeded                  | 2h   |         |
/// | 1.1.13  | 20       | 21 failed                     |      | 3h      |
/// | 1.2.0   | 22       | 24 succeeded                  | 2h   |         |
/// | 1.3.0   | 30       | 31 succeeded, rolled back 32  | 1h   | 1h      |
/// | 1.4.0   | 40       | 50 succeeded                  | 10h  |         |
///
/// 5 deploys (the rollback to 1.2.0 at 32 is none), 6 changes of which 2 failed, lead times
/// 1h 2h 2h 3h 10h (p50 2h, p90 10h), restores 1h and 3h (p50 1h). The clock ends at hour 50.
async fn build_history(bot: &TestBot) {
    for (version, released, deployed) in [("1.0.0", 0, 3), ("1.1.0", 10, 12)] {
        release(bot, version, released).await;
        assert_eq!(production(bot, version, deployed).await, "succeeded");
    }
    release(bot, "1.1.13", 20).await;
    assert_eq!(production(bot, "1.1.13", 21).await, "failed");
    release(bot, "1.2.0", 22).await;
    assert_eq!(production(bot, "1.2.0", 24).await, "succeeded");
    release(bot, "1.3.0", 30).await;
    assert_eq!(production(bot, "1.3.0", 31).await, "succeeded");

    bot.clock.set(hours(32));
    let (status, body) = bot
        .post(
            "/api/v1/rollbacks",
            CI_TOKEN,
            json!({"service": "web", "environment": "production"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let rollback = body["id"].as_i64().expect("rollback id");
    assert_eq!(ended(bot, rollback).await, "succeeded");

    release(bot, "1.4.0", 40).await;
    assert_eq!(production(bot, "1.4.0", 50).await, "succeeded");
}

async fn dora(bot: &TestBot, query: &str) -> (u16, Value) {
    bot.get(&format!("/api/v1/dora{query}"), CI_TOKEN).await
}

async fn dora_ok(bot: &TestBot, query: &str) -> Value {
    let (status, body) = dora(bot, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn command_reply(bot: &TestBot, text: &str) -> String {
    let (status, body) = bot.say(CI_TOKEN, text).await;
    assert_eq!(status, 200, "{text}: {body}");
    body["reply"].as_str().expect("reply").to_string()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn check_the_known_numbers(bot: &TestBot) {
    // The production defaults: environment = the pipeline's last, days = 30.
    for query in [
        "?service=web",
        "?service=web&environment=production&days=30",
    ] {
        let report = dora_ok(bot, query).await;
        assert_eq!(report["service"], "web", "{query}");
        assert_eq!(report["environment"], "production");
        assert_eq!(report["days"], 30);
        assert_eq!(report["deploys"], 5, "{report:#}");
        assert_eq!(report["deployment_frequency_per_day"], json!(5.0 / 30.0));
        assert_eq!(
            report["lead_time_seconds"],
            json!({"p50": (2 * HOUR) as f64, "p90": (10 * HOUR) as f64})
        );
        assert_eq!(report["changes"], 6);
        assert_eq!(report["failed_changes"], 2);
        assert_eq!(report["change_failure_rate"], json!(2.0 / 6.0));
        assert_eq!(report["restores"], 2);
        assert_eq!(
            report["time_to_restore_seconds"],
            json!({"p50": HOUR as f64})
        );
        assert_eq!(report["to"], rfc3339(hours(50)));
        assert_eq!(
            report["from"],
            rfc3339(hours(50) - chrono::Duration::days(30))
        );
    }

    // The last day (hours 26 to 50): 1.3.0 (rolled back, restored in 1h) and 1.4.0.
    let day = dora_ok(bot, "?service=web&days=1").await;
    assert_eq!(
        (&day["deploys"], &day["changes"], &day["failed_changes"]),
        (&json!(2), &json!(2), &json!(1)),
        "{day:#}"
    );
    assert_eq!(day["time_to_restore_seconds"]["p50"], json!(HOUR as f64));

    // Staging: every release succeeded there the hour it was created.
    let staging = dora_ok(bot, "?service=web&environment=staging").await;
    assert_eq!(staging["deploys"], 6, "{staging:#}");
    assert_eq!(staging["change_failure_rate"], json!(0.0));
    assert_eq!(staging["lead_time_seconds"]["p90"], json!(0.0));

    // Every service's production: api has no deploys, so the numbers are web's.
    let all = dora_ok(bot, "").await;
    assert_eq!(all["service"], Value::Null);
    assert_eq!(all["environment"], "production");
    assert_eq!(all["deploys"], 5);
    let everywhere = dora_ok(bot, "?environment=staging&service=").await;
    assert_eq!(everywhere["deploys"], 6);

    // The chat command, through the HTTP commands endpoint.
    assert_eq!(
        command_reply(bot, "dora web production 30").await,
        "web production, 30 days: 5 deploys (0.17/day) · lead time p50 2h p90 10h \
         · change failure 33% · restore p50 1h"
    );
    assert_eq!(
        command_reply(bot, "/release dora web").await,
        "web staging, 30 days: 6 deploys (0.2/day) · lead time p50 0s p90 0s \
         · change failure 0% · restore p50 –\n\
         web production, 30 days: 5 deploys (0.17/day) · lead time p50 2h p90 10h \
         · change failure 33% · restore p50 1h"
    );
    assert_eq!(
        command_reply(bot, "dora production 1").await,
        "api production, 1 day: no deploys\n\
         web production, 1 day: 2 deploys (2/day) · lead time p50 1h p90 10h \
         · change failure 50% · restore p50 1h"
    );

    // The engine's all-in-one read for /ui/dora: every service × environment × window.
    let entries = bot.engine.dora_all(&[7, 30, 90]).await.expect("dora_all");
    let cells: Vec<(String, String, u32, u64)> = entries
        .iter()
        .map(|e| {
            (
                e.service.clone(),
                e.environment.clone(),
                e.days,
                e.report.deploys,
            )
        })
        .collect();
    let expected: Vec<(String, String, u32, u64)> = [
        ("api", "dev", 0),
        ("api", "staging", 0),
        ("api", "production", 0),
        ("web", "staging", 6),
        ("web", "production", 5),
    ]
    .iter()
    .flat_map(|(service, env, deploys)| {
        [7, 30, 90].map(|days| (service.to_string(), env.to_string(), days, *deploys))
    })
    .collect();
    assert_eq!(cells, expected);
    let web_production = entries
        .iter()
        .find(|e| e.service == "web" && e.environment == "production" && e.days == 30)
        .expect("web production 30");
    assert_eq!(
        serde_json::to_value(&web_production.report).expect("json"),
        dora_ok(bot, "?service=web").await,
        "one read for all answers what the API answers"
    );
}

async fn check_an_empty_window(bot: &TestBot) {
    let empty = json!({"p50": null, "p90": null});
    let api = dora_ok(bot, "?service=api").await;
    assert_eq!(api["deploys"], 0, "{api:#}");
    assert_eq!(api["deployment_frequency_per_day"], json!(0.0));
    assert_eq!(api["lead_time_seconds"], empty);
    assert_eq!(api["change_failure_rate"], Value::Null);
    assert_eq!(api["time_to_restore_seconds"], json!({"p50": null}));

    // A hundred days on, web's history has left the 30-day window.
    bot.clock.set(hours(50) + chrono::Duration::days(100));
    let later = dora_ok(bot, "?service=web").await;
    assert_eq!(later["deploys"], 0, "{later:#}");
    assert_eq!(later["lead_time_seconds"], empty);
    assert_eq!(later["change_failure_rate"], Value::Null);
    let year = dora_ok(bot, "?service=web&days=365").await;
    assert_eq!(year["deploys"], 5, "{year:#}");
}

async fn conformance(db: Db) {
    let Some(bot) = bot_on(db).await else {
        return;
    };
    build_history(&bot).await;
    check_the_known_numbers(&bot).await;
    check_an_empty_window(&bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_history_gives_known_metrics_on_sqlite() {
    conformance(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_history_gives_known_metrics_on_postgres() {
    conformance(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_naming_the_parameter() {
    let bot = bot_on(Db::Sqlite).await.expect("sqlite");
    for (query, status, needle) in [
        ("?days=0", 400, "days: `0` is not a number of days"),
        ("?days=366", 400, "from 1 to 365"),
        ("?days=thirty", 400, "days: `thirty`"),
        ("?days=-1", 400, "days: `-1`"),
        (
            "?service=nope",
            404,
            "unknown service `nope`; known services: api, web",
        ),
        (
            "?service=web&environment=dev",
            404,
            "web has no environment `dev`; its pipeline is staging → production",
        ),
        (
            "?environment=qa",
            404,
            "no service has an environment `qa`; environments: dev, staging, production",
        ),
        ("?service=web&env=production", 400, "env"),
    ] {
        let (got, body) = dora(&bot, query).await;
        assert_eq!(got, status, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{query}: {message}");
    }
    let (status, body) = bot
        .request(reqwest::Method::GET, "/api/v1/dora", None, None)
        .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = bot.say(CI_TOKEN, "dora web production 0").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.say(CI_TOKEN, "dora nope").await;
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("known services: api, web"), "{message}");
    let (status, body) = bot.say(CI_TOKEN, "dora web qa").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_digest_is_a_schedule_of_the_dora_command() {
    let schedule = format!(
        r#"
[[schedule]]
name = "weekly-dora"
cron = "0 0 10 * * Tue"
timezone = "UTC"
command = "dora web production 7"
channels = {{ slack = "{RELEASES_CHANNEL}" }}
"#
    );
    let bot = TestBot::builder()
        .script(PRODUCTION_UNLUCKY)
        .config(&schedule)
        .slack()
        .start()
        .await
        .expect("sqlite");
    release(&bot, "1.0.0", 0).await;
    assert_eq!(production(&bot, "1.0.0", 0).await, "succeeded");
    // The start is Tuesday 09:00 UTC: the digest runs at 10:00.
    bot.clock.set(hours(1) + chrono::Duration::seconds(1));
    let expected = "🗓️ weekly-dora: web production, 7 days: 1 deploy (0.14/day) \
                    · lead time p50 0s p90 0s · change failure 0% · restore p50 –";
    let slack = bot.fake_slack();
    let mut seen = Vec::new();
    let posted = wait_until(Duration::from_secs(20), || {
        seen = slack.messages(RELEASES_CHANNEL);
        let hit = seen.iter().any(|m| m.text == expected);
        async move { hit }
    })
    .await;
    assert!(posted, "no digest {expected:?} in {seen:#?}");
}
