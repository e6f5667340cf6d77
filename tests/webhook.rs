//! The `webhook` backend (SPEC §5) against a loopback receiver that checks signatures and dedupes
//! by Idempotency-Key: end to end over the HTTP API, the backend on its own for resume and
//! check-backends, and a SIGKILLed `shipmate serve` resuming a running deployment.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use shipmate::deploy::webhook::{WebhookBackend, WebhookSettings};
use shipmate::deploy::{Backend, DeployCall, DeployOutcome, DeployRequest, Reporter};
use shipmate::domain::rollout::Step;
use support::fake_webhook::{FakeWebhook, Mode, SECRET};
use support::rollout::{Health, CANARY};
use support::serve::{Bot, Sandbox};
use support::*;

/// Service `hooked`, one environment `production` deployed through `hook`.
fn hooked(hook: &FakeWebhook, secret: &str, timeout: &str) -> String {
    format!(
        r#"
[[service]]
name = "hooked"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "webhook", url = "{url}", secret = "{secret}", timeout = "{timeout}", poll_every = "100ms" }}
"#,
        url = hook.url
    )
}

fn count(lines: &[String], wanted: &str) -> usize {
    lines.iter().filter(|l| l.contains(wanted)).count()
}

#[tokio::test]
async fn a_signed_deploy_that_succeeds_at_once() {
    let hook = FakeWebhook::start(Mode::Succeed).await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "1.4.2", Some("production")).await;
    bot.wait_for_state(id, "succeeded").await;

    let deploys = hook.events("deploy");
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    let sent = &deploys[0];
    assert!(sent.signed, "signed with the secret");
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some(format!("shipmate-{id}-1-1-deploy").as_str())
    );
    assert_eq!(
        sent.body,
        json!({"event":"deploy","promotion_id":id,"attempt":1,"service":"hooked","version":"1.4.2",
               "environment":"production","previous_version":null,"rollback":false,
               "requested_by":"api:ci","commit":null,"digest":null,"step":1,"steps":1,
               "weight":100,"phase":"deploy"})
    );
    let log = bot.deploy_log(id).await;
    assert_eq!(count(&log, "deployed 1.4.2"), 1, "{log:#?}");

    // The next deploy names the version it replaces; an empty 200 is a success too.
    hook.set_mode(Mode::SucceedEmpty);
    let next = bot.promote_id("hooked", "1.4.3", Some("production")).await;
    bot.wait_for_state(next, "succeeded").await;
    let deploys = hook.events("deploy");
    assert_eq!(deploys[1].body["previous_version"], "1.4.2");
}

#[tokio::test]
async fn a_failed_answer_fails_with_the_receivers_message() {
    let hook = FakeWebhook::start(Mode::Fail("migration 12 failed: table locked".into())).await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "2.0.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.contains("migration 12 failed: table locked"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_running_deployment_is_polled_until_it_succeeds_showing_each_log_line_once() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: Some(4),
        fail: None,
    })
    .await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "3.1.0", Some("production")).await;
    bot.wait_for_state(id, "succeeded").await;

    assert_eq!(hook.deployments().len(), 1);
    let polls: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(polls.len(), 4, "{polls:#?}");
    assert!(polls.iter().all(|p| p.signed), "every poll is signed");
    let log = bot.deploy_log(id).await;
    // Every answer carries the whole log so far; each line shows once.
    assert_eq!(count(&log, "accepted 3.1.0"), 1, "{log:#?}");
    for poll in 1..=4 {
        assert_eq!(count(&log, &format!("poll {poll} of 3.1.0")), 1, "{log:#?}");
    }
}

#[tokio::test]
async fn a_running_deployment_that_fails_fails_with_its_message() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: Some(2),
        fail: Some("pods crash-looping: OOMKilled".into()),
    })
    .await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "3.2.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(reason.contains("pods crash-looping: OOMKilled"), "{reason}");
}

#[tokio::test]
async fn a_503_is_retried_after_its_retry_after_with_the_same_key() {
    let hook = FakeWebhook::start(Mode::UnavailableOnce).await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "4.0.0", Some("production")).await;
    bot.wait_for_state(id, "succeeded").await;
    let deploys = hook.events("deploy");
    assert_eq!(deploys.len(), 2, "one 503, one success: {deploys:#?}");
    assert_eq!(deploys[0].idempotency_key, deploys[1].idempotency_key);
    assert_eq!(hook.deployments().len(), 1);
}

#[tokio::test]
async fn a_400_fails_naming_the_status_and_the_body() {
    let hook = FakeWebhook::start(Mode::BadRequest).await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "5.0.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(reason.contains("answered 400"), "{reason}");
    assert!(reason.contains("unknown environment"), "{reason}");
    assert_eq!(hook.events("deploy").len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_receiver_and_fails_the_deploy() {
    let hook = FakeWebhook::start(Mode::Succeed).await;
    let bot = TestBot::with_config(&hooked(&hook, "not-the-secret", "20s")).await;
    let id = bot.promote_id("hooked", "5.1.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(reason.contains("answered 401"), "{reason}");
    assert!(!reason.contains("not-the-secret"), "{reason}");
    assert!(hook.deployments().is_empty());
}

#[tokio::test]
async fn a_timeout_fails_and_sends_one_cancel() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: None,
        fail: None,
    })
    .await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "1s")).await;
    let id = bot.promote_id("hooked", "6.0.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("timed out after 1s while the webhook's deployment was still running"),
        "{reason}"
    );
    let cancels = hook.events("cancel");
    assert_eq!(cancels.len(), 1, "{cancels:#?}");
    assert!(cancels[0].signed);
    assert_eq!(cancels[0].body["promotion_id"], id);
    assert!(hook.deployments()[0].cancelled);
}

#[tokio::test]
async fn an_abort_sends_one_cancel() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: None,
        fail: None,
    })
    .await;
    let bot = TestBot::with_config(&hooked(&hook, SECRET, "20s")).await;
    let id = bot.promote_id("hooked", "6.1.0", Some("production")).await;
    let polled = wait_until(Duration::from_secs(20), || async { hook.polls() >= 1 }).await;
    assert!(polled, "the deployment is being polled");
    let (status, reply) = bot.say(CI_TOKEN, &format!("abort {id} wrong build")).await;
    assert_eq!(status, 200, "{reply}");
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("aborted by api:ci: wrong build"),
        "{reason}"
    );
    let cancelled = wait_until(Duration::from_secs(10), || async {
        hook.events("cancel").len() == 1
    })
    .await;
    assert!(cancelled, "{:#?}", hook.events("cancel"));
    assert!(hook.deployments()[0].cancelled);
}

#[tokio::test]
async fn canary_steps_pass_their_step_and_weight_on() {
    let hook = FakeWebhook::start(Mode::Succeed).await;
    let health = Health::start().await;
    let config = format!(
        r#"
[[service]]
name = "shop"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "webhook", url = "{url}", secret = "{SECRET}", timeout = "20s", poll_every = "100ms" }}
  strategy = {CANARY}
  verify = [ {{ kind = "http", url = "{health}", for = "10m", every = "30s" }} ]
"#,
        url = hook.url,
        health = health.url
    );
    let bot = TestBot::with_config(&config).await;
    let id = support::rollout::walk_canary(&bot, "7.0.0").await;
    let steps: Vec<(Value, Value, Value, Value, String)> = hook
        .events("deploy")
        .iter()
        .map(|r| {
            (
                r.body["step"].clone(),
                r.body["steps"].clone(),
                r.body["weight"].clone(),
                r.body["phase"].clone(),
                r.idempotency_key.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                json!(1),
                json!(3),
                json!(10),
                json!("deploy"),
                format!("shipmate-{id}-1-1-deploy")
            ),
            (
                json!(2),
                json!(3),
                json!(50),
                json!("deploy"),
                format!("shipmate-{id}-1-2-deploy")
            ),
            (
                json!(3),
                json!(3),
                json!(100),
                json!("deploy"),
                format!("shipmate-{id}-1-3-deploy")
            ),
        ]
    );
}

// ---- the backend on its own ----

fn backend(hook: &FakeWebhook, secret: &str) -> WebhookBackend {
    WebhookBackend::new(WebhookSettings {
        url: hook.url.clone(),
        secret: Some(secret.into()),
        timeout: Duration::from_secs(20),
        poll_every: Duration::from_millis(100),
        unix_now: std::sync::Arc::new(|| Utc::now().timestamp()),
    })
}

fn request() -> DeployRequest {
    DeployRequest {
        promotion_id: 77,
        attempt: 2,
        service: "api".into(),
        version: "8.0.0".into(),
        environment: "production".into(),
        previous_version: Some("7.9.0".into()),
        requested_by: "slack:U1".into(),
        rollback: false,
        commit: Some("abc123".into()),
        digest: None,
        step: Step::FULL,
    }
}

#[tokio::test]
async fn a_resumed_call_without_a_handle_resends_the_same_key_and_the_receiver_starts_nothing_new()
{
    let hook = FakeWebhook::start(Mode::Async {
        polls: None,
        fail: None,
    })
    .await;
    let backend = backend(&hook, SECRET);
    // The first holder sends the start and is cut off (as if it died before storing the handle).
    let (report, _reports) = Reporter::channel(64);
    let first = DeployCall::new(request(), report, Utc::now());
    let detach = first.detach.clone();
    let running = tokio::spawn(async move { backend.deploy(first).await });
    let started = wait_until(Duration::from_secs(10), || async {
        !hook.deployments().is_empty()
    })
    .await;
    assert!(started);
    detach.cancel();
    assert_eq!(running.await.expect("task"), DeployOutcome::Cancelled);
    assert!(hook.events("cancel").is_empty(), "a detach cancels nothing");

    // The next holder has no handle: it sends the start again, then polls what that names.
    let backend = self::backend(&hook, SECRET);
    let (report, mut reports) = Reporter::channel(64);
    let mut again = DeployCall::new(request(), report, Utc::now());
    again.resumed = true;
    let resumed = tokio::spawn(async move { backend.deploy(again).await });
    let polled = wait_until(Duration::from_secs(10), || async { hook.polls() >= 1 }).await;
    assert!(polled);
    hook.finish(None);
    assert_eq!(resumed.await.expect("task"), DeployOutcome::Succeeded);

    let keys: BTreeSet<_> = hook
        .events("deploy")
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(hook.events("deploy").len(), 2);
    assert_eq!(hook.deployments().len(), 1, "the receiver deduped the key");
    let mut handles = Vec::new();
    while let Ok(report) = reports.try_recv() {
        if let shipmate::deploy::Report::Handle(handle) = report {
            handles.push(handle);
        }
    }
    assert!(
        handles.first().is_some_and(|h| h["status_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/status/0"))),
        "{handles:?}"
    );
}

#[tokio::test]
async fn a_resumed_call_with_a_handle_polls_it_without_starting_again_or_repeating_lines() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: Some(3),
        fail: None,
    })
    .await;
    let backend = backend(&hook, SECRET);
    // A deployment some earlier holder started, two lines of whose log it already showed.
    let (report, _reports) = Reporter::channel(64);
    let starter = DeployCall::new(request(), report, Utc::now());
    let detach = starter.detach.clone();
    let first = tokio::spawn(async move { backend.deploy(starter).await });
    let polled = wait_until(Duration::from_secs(10), || async { hook.polls() >= 1 }).await;
    assert!(polled);
    detach.cancel();
    assert_eq!(first.await.expect("task"), DeployOutcome::Cancelled);
    let polls_before = hook.polls();

    let backend = self::backend(&hook, SECRET);
    let (report, mut reports) = Reporter::channel(64);
    let mut call = DeployCall::new(request(), report, Utc::now());
    call.resumed = true;
    call.handle =
        Some(json!({"status_url": hook.url.replace("/hooks/deploy", "/status/0"), "log_seen": 2}));
    assert_eq!(backend.deploy(call).await, DeployOutcome::Succeeded);
    assert_eq!(hook.events("deploy").len(), 1, "never started again");
    assert!(hook.polls() > polls_before);
    let mut lines = Vec::new();
    while let Ok(report) = reports.try_recv() {
        if let shipmate::deploy::Report::Line(line) = report {
            lines.push(line);
        }
    }
    assert!(!lines.iter().any(|l| l == "accepted 8.0.0"), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "poll 1 of 8.0.0"), "{lines:?}");
    assert_eq!(count(&lines, "poll 3 of 8.0.0"), 1, "{lines:?}");
}

#[tokio::test]
async fn check_sends_a_signed_check_and_names_a_refusal() {
    let hook = FakeWebhook::start(Mode::Succeed).await;
    let seen = backend(&hook, SECRET)
        .check("api", "production")
        .await
        .expect("the check passes");
    assert!(seen.contains("200"), "{seen}");
    let checks = hook.events("check");
    assert_eq!(checks.len(), 1);
    assert!(checks[0].signed);
    assert!(hook.deployments().is_empty(), "a check deploys nothing");

    let refused = backend(&hook, "wrong-secret")
        .check("api", "production")
        .await
        .expect_err("a bad signature is refused");
    assert!(refused.contains("answered 401"), "{refused}");
    assert!(refused.contains("X-Shipmate-Signature"), "{refused}");
    assert!(!refused.contains("wrong-secret"), "{refused}");
}

// ---- a real `shipmate serve`, SIGKILLed mid-deploy ----

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_running_when_the_bot_is_killed_is_resumed_not_restarted() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: None,
        fail: None,
    })
    .await;
    let (sandbox, port) = Sandbox::new(GATED_SCRIPT);
    let mut config = std::fs::read_to_string(sandbox.path("bot.toml")).expect("config");
    config.push_str(&hooked(&hook, SECRET, "60s"));
    std::fs::write(sandbox.path("bot.toml"), config).expect("write config");

    let mut bot = Bot::start(&sandbox, port, "first").await;
    let promote = json!({"service": "hooked", "version": "9.0.0", "environment": "production"});
    let (status, body) = bot
        .request(reqwest::Method::POST, "/api/v1/promotions", Some(promote))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");
    // Polled twice: the start was answered and its handle reported well before.
    let running = wait_until(Duration::from_secs(20), || async { hook.polls() >= 2 }).await;
    assert!(running, "never polled:\n{}", bot.log());

    bot.crash();
    drop(bot);
    let polls_at_crash = hook.polls();

    let bot = Bot::start(&sandbox, port, "second").await;
    let watched = wait_until(Duration::from_secs(20), || async {
        hook.polls() > polls_at_crash
    })
    .await;
    assert!(watched, "the restarted bot never polled:\n{}", bot.log());
    assert_eq!(bot.promotion(id).await["state"], "deploying");
    hook.finish(None);
    bot.wait_for_state(id, "succeeded").await;

    let keys: BTreeSet<_> = hook
        .events("deploy")
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 1, "one distinct key: {keys:?}");
    assert_eq!(hook.deployments().len(), 1, "one deployment started");
    assert!(hook.events("cancel").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_backends_passes_a_good_secret_and_names_a_bad_one() {
    let hook = FakeWebhook::start(Mode::Succeed).await;
    let (sandbox, _port) = Sandbox::new(GATED_SCRIPT);
    let mut config = std::fs::read_to_string(sandbox.path("bot.toml")).expect("config");
    config.push_str(&hooked(&hook, SECRET, "60s"));
    config.push_str(
        &hooked(&hook, "a-wrong-secret", "60s").replace("\"hooked\"", "\"misconfigured\""),
    );
    std::fs::write(sandbox.path("bot.toml"), config).expect("write config");

    let out = tokio::process::Command::new(support::serve::BIN)
        .args(["check-backends", "--config", &sandbox.config()])
        .output()
        .await
        .expect("run check-backends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "ok      hooked production (webhook): the webhook answered the signed check with 200"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED  misconfigured production (webhook): the webhook answered 401"),
        "{stdout}"
    );
    assert!(!stdout.contains("a-wrong-secret"), "{stdout}");
    assert_eq!(hook.events("check").len(), 2);
    assert!(hook.deployments().is_empty());
}
