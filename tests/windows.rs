//! Release windows, freezes, scheduled commands and announcements, on the manual clock (and one
//! test on the real clock). The clock starts on Tuesday 2026-11-17 09:00 UTC (10:00 in Berlin).

mod support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use support::fake_discord::CHANNEL_ID;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Tuesdays and Thursdays 14:00–16:00 in Berlin, announced 30 minutes ahead.
const PROD_WINDOW: &str = r#"
[[window]]
name = "prod-window"
cron = "0 0 14 * * Tue,Thu"
duration = "2h"
timezone = "Europe/Berlin"
announce_before = ["30m"]
"#;

fn at(hour: u32, minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 17, hour, minute, 0).unwrap()
}

async fn windowed_bot() -> TestBot {
    let bot = TestBot::builder()
        .slack()
        .discord()
        .production_windows(&["prod-window"])
        .config(PROD_WINDOW)
        .start()
        .await
        .expect("sqlite always available");
    bot.discord
        .as_ref()
        .expect("fake Discord")
        .wait_session(WAIT)
        .await;
    bot
}

/// Plain messages (not cards) in the releases channels: (Slack, Discord).
fn announcements(bot: &TestBot) -> (Vec<String>, Vec<String>) {
    let slack = bot
        .fake_slack()
        .messages(RELEASES_CHANNEL)
        .into_iter()
        .filter(|m| m.thread_ts.is_none() && !m.text.starts_with('#'))
        .map(|m| m.text)
        .collect();
    let discord = bot
        .discord
        .as_ref()
        .map(|d| d.messages(CHANNEL_ID))
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.embeds.as_array().is_none_or(Vec::is_empty))
        .map(|m| m.content)
        .collect();
    (slack, discord)
}

/// Waits until both platforms show an announcement containing `needle`; returns it (Slack's).
async fn announced(bot: &TestBot, needle: &str) -> String {
    let found = wait_until(WAIT, || {
        let (slack, discord) = announcements(bot);
        let hit =
            slack.iter().any(|t| t.contains(needle)) && discord.iter().any(|t| t.contains(needle));
        async move { hit }
    })
    .await;
    let (slack, discord) = announcements(bot);
    assert!(
        found,
        "`{needle}` not announced on both platforms: slack {slack:#?} discord {discord:#?}"
    );
    let count = |list: &[String]| list.iter().filter(|t| t.contains(needle)).count();
    assert_eq!(
        (count(&slack), count(&discord)),
        (1, 1),
        "announced once each: {slack:#?} {discord:#?}"
    );
    slack
        .into_iter()
        .find(|t| t.contains(needle))
        .unwrap_or_default()
}

/// Every top-level message text in the Slack releases channel.
fn slack_texts(bot: &TestBot) -> Vec<String> {
    bot.fake_slack()
        .messages(RELEASES_CHANNEL)
        .into_iter()
        .map(|m| m.text)
        .collect()
}

async fn promote_id(bot: &TestBot, token: &str, service: &str, version: &str, env: &str) -> i64 {
    let (status, body) = bot.promote(token, service, version, Some(env)).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_i64().expect("id")
}

async fn approve_twice(bot: &TestBot, id: i64) -> Value {
    assert_eq!(bot.act(id, "approve", LEAD_TOKEN).await.0, 200);
    let (status, body) = bot.act(id, "approve", LEAD2_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn events_of(promotion: &Value) -> Vec<(String, String)> {
    promotion["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_promotion_waits_for_the_window_and_starts_when_it_opens() {
    let bot = windowed_bot().await;
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let id = promote_id(&bot, CI_TOKEN, "api", "1.4.2", "production").await;
    let approved = approve_twice(&bot, id).await;
    assert_eq!(approved["state"], "queued", "{approved:#}");
    let reason = approved["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("prod-window opens Tue 2026-11-17 14:00 CET (13:00 UTC)"),
        "{reason}"
    );
    // The card says when.
    let card = bot.card_in_state(RELEASES_CHANNEL, id, "queued").await;
    assert!(
        card.blocks.to_string().contains("14:00 CET"),
        "{:#}",
        card.blocks
    );
    assert!(
        card.blocks.to_string().contains("shipmate:cancel"),
        "queued cards offer Cancel"
    );

    // 30 minutes ahead: "opens in 30m", once, on Slack and Discord.
    bot.clock.set(at(12, 30));
    let soon = announced(&bot, "prod-window opens in 30m").await;
    assert!(
        soon.contains("Tue 2026-11-17 14:00 CET (13:00 UTC)"),
        "{soon}"
    );
    assert_eq!(bot.promotion(id).await["state"], "queued");

    // The window opens: the queue is announced and the promotion starts by itself.
    bot.clock.set(at(13, 0));
    let open = announced(&bot, "prod-window is open until").await;
    assert!(
        open.contains(&format!("#{id} api 1.4.2 → production")),
        "{open}"
    );
    let done = bot.wait_for_state(id, "succeeded").await;
    assert_eq!(done["reason"], Value::Null, "{done:#}");

    bot.clock.set(at(15, 0));
    let closed = announced(&bot, "prod-window is closed").await;
    assert!(
        closed.contains("next opening Thu 2026-11-19 14:00 CET (13:00 UTC)"),
        "{closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_starts_one_per_environment_and_what_misses_the_window_waits_for_the_next() {
    let bot = TestBot::builder()
        .script(GATED_SCRIPT)
        .slack()
        .production_windows(&["prod-window"])
        .config(PROD_WINDOW)
        .start()
        .await
        .expect("sqlite");
    // Gated deploys: release each before its next environment.
    for (service, envs) in [("api", vec!["dev", "staging"]), ("web", vec!["staging"])] {
        for env in envs {
            let id = promote_id(&bot, CI_TOKEN, service, "2.0.0", env).await;
            std::fs::write(bot.path(&format!("release-{id}")), "").expect("gate");
            bot.wait_for_state(id, "succeeded").await;
        }
    }
    let api = promote_id(&bot, CI_TOKEN, "api", "2.0.0", "production").await;
    approve_twice(&bot, api).await;
    let web = promote_id(&bot, CI_TOKEN, "web", "2.0.0", "production").await;
    assert_eq!(bot.promotion(web).await["state"], "queued");

    // At the opening the older request starts; the other waits for the environment.
    bot.clock.set(at(13, 0));
    bot.wait_for_state(api, "deploying").await;
    assert_eq!(bot.promotion(web).await["state"], "queued");

    // The window closes before api's deploy ends: web must not start after the close.
    bot.clock.set(at(15, 0));
    let card_reason = |v: Value| v["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        wait_until(WAIT, || async {
            card_reason(bot.promotion(web).await).contains("Thu 2026-11-19 14:00 CET")
        })
        .await,
        "the queued card never said when the next window opens: {:#}",
        bot.promotion(web).await
    );
    std::fs::write(bot.path(&format!("release-{api}")), "").expect("gate");
    bot.wait_for_state(api, "succeeded").await;
    assert_eq!(bot.promotion(web).await["state"], "queued");

    // Thursday's window starts it.
    bot.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 19, 13, 0, 0).unwrap());
    bot.wait_for_state(web, "deploying").await;
    std::fs::write(bot.path(&format!("release-{web}")), "").expect("gate");
    bot.wait_for_state(web, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_blocks_starts_until_it_ends_and_force_overrides_it_with_an_audit_event() {
    let bot = TestBot::builder().slack().start().await.expect("sqlite");
    // Only admins freeze.
    let (status, body) = bot.say(LEAD_TOKEN, "freeze production for 2h").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = bot
        .say(ADMIN_TOKEN, "freeze production for 2h \"incident 7\"")
        .await;
    assert_eq!(status, 200, "{body}");
    let frozen = bot.fake_slack().messages(RELEASES_CHANNEL);
    assert!(
        wait_until(WAIT, || {
            let texts = slack_texts(&bot);
            async move {
                texts
                    .iter()
                    .any(|t| t.contains("production is frozen for 2h") && t.contains("incident 7"))
            }
        })
        .await,
        "freeze not announced: {frozen:#?}"
    );

    // Staging is not frozen; production waits.
    bot.reach("web", "1.0.0", &["staging"]).await;
    let web = promote_id(&bot, CI_TOKEN, "web", "1.0.0", "production").await;
    let queued = bot.promotion(web).await;
    assert_eq!(queued["state"], "queued");
    assert!(
        queued["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("frozen until Tue 2026-11-17 11:00 UTC (incident 7)"),
        "{queued:#}"
    );

    // --force is for admins, and it is audited.
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let (status, body) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            serde_json::json!({"service": "api", "version": "1.4.2", "force_reason": "hotfix"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = bot
        .post("/api/v1/promotions", ADMIN_TOKEN, serde_json::json!({"service": "api", "version": "1.4.2", "force_reason": "hotfix INC-7"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let forced = body["id"].as_i64().expect("id");
    approve_twice(&bot, forced).await;
    let done = bot.wait_for_state(forced, "succeeded").await;
    assert!(
        events_of(&done)
            .iter()
            .any(|(kind, detail)| kind == "requested" && detail.contains("forced: hotfix INC-7")),
        "{done:#}"
    );
    assert_eq!(bot.promotion(web).await["state"], "queued");

    // The freeze runs out: announced, and the queue moves.
    bot.clock.set(at(11, 0));
    bot.wait_for_state(web, "succeeded").await;
    assert!(
        wait_until(WAIT, || {
            let texts = slack_texts(&bot);
            async move {
                texts
                    .iter()
                    .filter(|t| t.contains("the freeze of production is over"))
                    .count()
                    == 1
            }
        })
        .await,
        "end of freeze not announced once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfreeze_lifts_an_adhoc_freeze_and_says_what_still_holds() {
    let bot = TestBot::builder()
        .config(
            r#"
[[freeze]]
start = "2026-11-17T00:00:00Z"
end = "2026-11-18T00:00:00Z"
environments = ["*"]
reason = "audit week"
"#,
        )
        .start()
        .await
        .expect("sqlite");
    let (status, body) = bot.say(ADMIN_TOKEN, "unfreeze staging").await;
    assert_eq!(status, 409, "nothing ad hoc to lift: {body}");
    bot.say(ADMIN_TOKEN, "freeze staging for 1h").await;
    let (status, body) = bot.say(ADMIN_TOKEN, "unfreeze staging").await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap_or_default();
    assert!(reply.contains("lifted"), "{reply}");
    assert!(
        reply.contains(
            "stays frozen until Wed 2026-11-18 00:00 UTC by a [[freeze]] in bot.toml (audit week)"
        ),
        "{reply}"
    );
    let id = promote_id(&bot, CI_TOKEN, "web", "1.0.0", "staging").await;
    assert_eq!(bot.promotion(id).await["state"], "queued");
    let (_, body) = bot.say(CI_TOKEN, "windows staging").await;
    let report = body["reply"].as_str().unwrap_or_default();
    assert!(
        report.contains("staging: frozen until Wed 2026-11-18 00:00 UTC (audit week)"),
        "{report}"
    );
    assert!(
        report.contains(&format!("queued: #{id} web 1.0.0 → staging")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_command_shows_the_next_openings_in_the_zone_and_in_utc() {
    let bot = TestBot::builder()
        .production_windows(&["prod-window"])
        .config(PROD_WINDOW)
        .start()
        .await
        .expect("sqlite");
    let (status, body) = bot.say(CI_TOKEN, "windows production").await;
    assert_eq!(status, 200, "{body}");
    let report = body["reply"].as_str().unwrap_or_default();
    assert!(report.starts_with("production: closed now"), "{report}");
    assert!(
        report.contains("prod-window (Europe/Berlin, 2h): next Tue 2026-11-17 14:00 CET (13:00 UTC); Thu 2026-11-19 14:00 CET (13:00 UTC); Tue 2026-11-24 14:00 CET (13:00 UTC)"),
        "{report}"
    );
    bot.clock.set(at(13, 30));
    let (_, body) = bot.say(CI_TOKEN, "windows").await;
    let report = body["reply"].as_str().unwrap_or_default();
    assert!(
        report.contains("production: open now, until Tue 2026-11-17 15:00 UTC"),
        "{report}"
    );
    assert!(
        report.contains("dev: open (no release windows)"),
        "{report}"
    );
    let (status, body) = bot.say(CI_TOKEN, "windows moon").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_release_train_promotes_the_latest_version_once() {
    let bot = TestBot::builder()
        .slack()
        .config(&format!(
            r#"
[[schedule]]
name = "morning-train"
cron = "0 0 11 * * Mon-Fri"
timezone = "Europe/Berlin"
command = "promote api latest to staging"
roles = ["deployers"]
channels = {{ slack = "{RELEASES_CHANNEL}" }}
"#
        ))
        .start()
        .await
        .expect("sqlite");
    bot.reach("api", "1.4.2", &["dev"]).await;
    bot.reach("api", "1.5.0", &["dev"]).await;
    // 11:00 Berlin is 10:00 UTC in November.
    bot.clock.set(at(10, 0));
    let staged_history = || async {
        let (_, history) = bot
            .get("/api/v1/services/api/history?environment=staging", CI_TOKEN)
            .await;
        history[0].clone()
    };
    assert!(
        wait_until(WAIT, || async {
            staged_history().await["state"] == "succeeded"
        })
        .await,
        "the train did not run: {:#}",
        staged_history().await
    );
    let staged = staged_history().await;
    assert_eq!(staged["version"], "1.5.0");
    assert_eq!(staged["requested_by"], "schedule:morning-train");
    let reply = bot
        .fake_slack()
        .messages(RELEASES_CHANNEL)
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.starts_with("🗓️ morning-train"))
        .collect::<Vec<_>>();
    assert!(
        wait_until(WAIT, || {
            let n = bot
                .fake_slack()
                .messages(RELEASES_CHANNEL)
                .iter()
                .filter(|m| m.text.starts_with("🗓️ morning-train"))
                .count();
            async move { n == 1 }
        })
        .await,
        "{reply:?}"
    );

    // The occurrence is recorded: a second scheduler (another replica) would not run it again.
    let mut tx = bot.store.begin().await.expect("tx");
    let again = tx
        .record_occurrence("schedule:morning-train", "run", at(10, 0), at(10, 0))
        .await
        .expect("insert");
    assert!(!again, "the 10:00 run was not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires_and_the_card_says_so() {
    let bot = TestBot::builder().slack().start().await.expect("sqlite");
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let id = promote_id(&bot, CI_TOKEN, "api", "1.4.2", "production").await;
    bot.clock.advance(Duration::from_secs(24 * 3600 + 60));
    let expired = bot.wait_for_state(id, "expired").await;
    assert!(
        expired["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("approval deadline"),
        "{expired:#}"
    );
    let card = bot.card_in_state(RELEASES_CHANNEL, id, "expired").await;
    assert!(
        card.blocks.to_string().contains("approval deadline"),
        "{:#}",
        card.blocks
    );
    assert!(
        !card.blocks.to_string().contains("shipmate:approve"),
        "no buttons on an expired card"
    );
}

/// The wiring on the real clock: a window that opens at second 30 of every minute for 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_opening_every_minute_starts_the_queue_on_the_real_clock() {
    let bot = TestBot::builder()
        .real_clock()
        .production_windows(&["every-minute"])
        .config(
            r#"
[[window]]
name = "every-minute"
cron = "30 * * * * *"
duration = "10s"
timezone = "UTC"
"#,
        )
        .start()
        .await
        .expect("sqlite");
    bot.reach("web", "3.0.0", &["staging"]).await;
    // Ask outside the window, so that it has to wait.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            let second = chrono::Timelike::second(&Utc::now());
            !(29..=41).contains(&second)
        })
        .await
    );
    let id = promote_id(&bot, CI_TOKEN, "web", "3.0.0", "production").await;
    assert_eq!(bot.promotion(id).await["state"], "queued");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let done = loop {
        let promotion = bot.promotion(id).await;
        if promotion["state"] == "succeeded" {
            break promotion;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started: {promotion:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let started: chrono::DateTime<Utc> = done["started_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("started_at");
    let second = chrono::Timelike::second(&started);
    assert!(
        (30..40).contains(&second),
        "started at {started}, outside the window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurdly_long_freeze_is_refused_and_changes_nothing() {
    let bot = windowed_bot().await;
    let (status, reply) = bot.say(ADMIN_TOKEN, "freeze all for 300000y").await;
    assert_eq!(status, 400, "{reply:#}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "`300000y` is longer than shipmate allows: at most 366d\nUsage: /release freeze"
        ),
        "{message}"
    );
    let (_, windows) = bot.say(ADMIN_TOKEN, "windows production").await;
    let report = windows["reply"].as_str().unwrap_or_default();
    assert!(!report.contains("frozen"), "{report}");
    let (status, reply) = bot.say(ADMIN_TOKEN, "freeze all for 366d").await;
    assert_eq!(status, 200, "the longest allowed freeze: {reply:#}");
}
