//! The `argocd` backend (SPEC §5) against a loopback Argo CD API: image override, sync, waiting
//! for the operation it started (not the stale one still shown), failures, resume and check; and a
//! SIGKILLed `shipmate serve` resuming a running sync.

mod support;

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use shipmate::deploy::argocd::{ArgocdBackend, ArgocdSettings};
use shipmate::deploy::{Backend, DeployCall, DeployOutcome, DeployRequest, Reporter};
use shipmate::domain::rollout::Step;
use support::fake_argocd::{End, FakeArgo, APP, TOKEN};
use support::rollout::{Health, CANARY};
use support::serve::{Bot, Sandbox};
use support::*;

/// Service `argo`, one environment `production` synced through `argo`.
fn argo_service(argo: &FakeArgo, token: &str, app: &str, timeout: &str) -> String {
    format!(
        r#"
[[service]]
name = "argo"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "argocd", url = "{url}", app = "{app}", token = "{token}", image = "ghcr.io/acme/{{service}}:{{version}}", revision = "main", timeout = "{timeout}", poll_every = "100ms" }}
"#,
        url = argo.url
    )
}

#[tokio::test]
async fn sets_the_image_syncs_and_waits_past_the_stale_status_for_its_own_operation() {
    // Two stale answers, then held Running until the test ends it.
    let argo = FakeArgo::start(2, None, End::Healthy).await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "20s")).await;
    let id = bot.promote_id("argo", "1.2.0", Some("production")).await;

    let past_stale = wait_until(Duration::from_secs(20), || async {
        argo.gets_since_sync() >= 4
    })
    .await;
    assert!(past_stale, "{:#?}", argo.received());
    // The previous operation's Succeeded/Healthy was shown first and not taken for ours.
    assert_eq!(bot.promotion(id).await["state"], "deploying");
    argo.finish(End::Healthy);
    bot.wait_for_state(id, "succeeded").await;

    assert_eq!(argo.images(), vec!["ghcr.io/acme/argo:1.2.0".to_string()]);
    let patch = argo
        .received()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(patch.body["patchType"], "merge");
    let inner: Value = serde_json::from_str(patch.body["patch"].as_str().expect("a string"))
        .expect("JSON in the string");
    assert_eq!(
        inner,
        json!({"spec":{"source":{"kustomize":{"images":["ghcr.io/acme/argo:1.2.0"]}}}})
    );
    let sync = argo
        .received()
        .into_iter()
        .find(|r| r.path.ends_with("/sync"))
        .expect("a sync");
    assert_eq!(sync.body, json!({"revision": "main"}));
    assert_eq!(argo.syncs(), 1);
    let log = bot.store.deploy_log(id).await.expect("log");
    assert!(
        log.iter().any(|l| l.contains("operation Running")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_degraded_app_after_the_sync_fails_the_deploy() {
    let argo = FakeArgo::start(1, Some(2), End::Degraded).await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "20s")).await;
    let id = bot.promote_id("argo", "1.3.0", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(reason.contains("health is Degraded"), "{reason}");
    assert!(reason.contains(APP), "{reason}");
}

#[tokio::test]
async fn a_failed_operation_fails_with_its_message() {
    let argo = FakeArgo::start(
        1,
        Some(1),
        End::Failed(
            "one or more objects failed to apply: Deployment.apps \"api\" is invalid".into(),
        ),
    )
    .await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "20s")).await;
    let id = bot.promote_id("argo", "1.4.0", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(reason.contains("ended Failed"), "{reason}");
    assert!(
        reason.contains("one or more objects failed to apply"),
        "{reason}"
    );
}

#[tokio::test]
async fn another_operation_in_progress_fails_naming_it() {
    let argo = FakeArgo::start(0, Some(1), End::Healthy).await;
    argo.refuse_sync(400, "another operation is already in progress");
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "20s")).await;
    let id = bot.promote_id("argo", "1.5.0", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(
        reason.contains("Argo CD answered 400")
            && reason.contains("another operation is already in progress"),
        "{reason}"
    );
    assert_eq!(argo.syncs(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_wrong_token_and_a_missing_app_fail_naming_the_refusal() {
    let argo = FakeArgo::start(0, Some(1), End::Healthy).await;
    let bot = TestBot::with_config(&argo_service(&argo, "stale-token-123", APP, "20s")).await;
    let id = bot.promote_id("argo", "1.6.0", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(reason.contains("answered 401"), "{reason}");
    assert!(!reason.contains("stale-token-123"), "{reason}");

    let argo = FakeArgo::start(0, Some(1), End::Healthy).await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, "api-prdo", "20s")).await;
    let id = bot.promote_id("argo", "1.6.1", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(
        reason.contains("answered 403: permission denied"),
        "{reason}"
    );
    assert!(
        reason.contains("no application api-prdo exists"),
        "{reason}"
    );
    assert_eq!(argo.syncs(), 0);
}

#[tokio::test]
async fn a_timeout_fails_and_terminates_the_operation() {
    let argo = FakeArgo::start(0, None, End::Healthy).await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "1s")).await;
    let id = bot.promote_id("argo", "1.7.0", Some("production")).await;
    let reason = bot.failure_reason(id).await;
    assert!(
        reason.starts_with("timed out after 1s with Argo CD api-prod at sync Running, OutOfSync, health Progressing"),
        "{reason}"
    );
    let terminated = wait_until(Duration::from_secs(10), || async {
        argo.count("DELETE", "/operation") == 1
    })
    .await;
    assert!(terminated, "{:#?}", argo.received());
}

#[tokio::test]
async fn every_canary_step_syncs() {
    let argo = FakeArgo::start(1, Some(1), End::Healthy).await;
    let health = Health::start().await;
    let config = format!(
        r#"
[[service]]
name = "shop"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "argocd", url = "{url}", app = "{APP}", token = "{TOKEN}", image = "ghcr.io/acme/shop:{{version}}", timeout = "20s", poll_every = "100ms" }}
  strategy = {CANARY}
  verify = [ {{ kind = "http", url = "{health}", for = "10m", every = "30s" }} ]
"#,
        url = argo.url,
        health = health.url
    );
    let bot = TestBot::with_config(&config).await;
    support::rollout::walk_canary(&bot, "2.0.0").await;
    assert_eq!(argo.syncs(), 3, "{:#?}", argo.received());
    assert_eq!(argo.count("PATCH", APP), 3);
    assert_eq!(argo.images(), vec!["ghcr.io/acme/shop:2.0.0".to_string()]);
}

// ---- the backend on its own ----

fn backend(argo: &FakeArgo, app: &str) -> ArgocdBackend {
    ArgocdBackend::new(ArgocdSettings {
        url: argo.url.clone(),
        app: app.into(),
        token: TOKEN.into(),
        image: Some("ghcr.io/acme/api:{version}".into()),
        revision: None,
        timeout: Duration::from_secs(20),
        poll_every: Duration::from_millis(100),
    })
}

fn request() -> DeployRequest {
    DeployRequest {
        promotion_id: 5,
        attempt: 1,
        service: "api".into(),
        version: "3.0.0".into(),
        environment: "production".into(),
        previous_version: None,
        requested_by: "api:ci".into(),
        rollback: false,
        commit: None,
        digest: None,
        step: Step::FULL,
    }
}

#[tokio::test]
async fn a_resumed_call_without_a_handle_watches_a_sync_started_since_the_call_began() {
    let argo = FakeArgo::start(0, None, End::Healthy).await;
    let began = Utc::now();
    // The first holder synced and was cut off before its handle was stored.
    let (report, _reports) = Reporter::channel(64);
    let first = DeployCall::new(request(), report, began);
    let detach = first.detach.clone();
    let b = backend(&argo, APP);
    let running = tokio::spawn(async move { b.deploy(first).await });
    let synced = wait_until(Duration::from_secs(10), || async {
        argo.gets_since_sync() >= 1
    })
    .await;
    assert!(synced);
    detach.cancel();
    assert_eq!(running.await.expect("task"), DeployOutcome::Cancelled);
    assert_eq!(
        argo.count("DELETE", "/operation"),
        0,
        "a detach terminates nothing"
    );

    let (report, _reports) = Reporter::channel(64);
    let mut again = DeployCall::new(request(), report, began);
    again.resumed = true;
    let b = backend(&argo, APP);
    let resumed = tokio::spawn(async move { b.deploy(again).await });
    let watching = wait_until(Duration::from_secs(10), || async {
        argo.gets_since_sync() >= 3
    })
    .await;
    assert!(watching);
    argo.finish(End::Healthy);
    assert_eq!(resumed.await.expect("task"), DeployOutcome::Succeeded);
    assert_eq!(argo.syncs(), 1, "the sync was not started again");
}

#[tokio::test]
async fn a_resumed_call_without_a_handle_syncs_when_the_app_shows_only_an_older_operation() {
    let argo = FakeArgo::start(1, Some(1), End::Healthy).await;
    let (report, _reports) = Reporter::channel(64);
    let mut call = DeployCall::new(request(), report, Utc::now());
    call.resumed = true;
    assert_eq!(
        backend(&argo, APP).deploy(call).await,
        DeployOutcome::Succeeded
    );
    assert_eq!(argo.syncs(), 1);
}

#[tokio::test]
async fn check_gets_the_app_and_names_a_refusal() {
    let argo = FakeArgo::start(0, None, End::Healthy).await;
    let seen = backend(&argo, APP)
        .check("api", "production")
        .await
        .expect("the app is there");
    assert!(
        seen.contains("api-prod") && seen.contains("Healthy"),
        "{seen}"
    );
    assert_eq!(argo.syncs(), 0, "a check syncs nothing");
    assert_eq!(argo.count("PATCH", APP), 0);

    let refused = backend(&argo, "nope")
        .check("api", "production")
        .await
        .expect_err("no such app");
    assert!(refused.contains("403: permission denied"), "{refused}");
}

// ---- a real `shipmate serve`, SIGKILLed mid-sync ----

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_running_when_the_bot_is_killed_is_watched_to_its_end_not_started_again() {
    let argo = FakeArgo::start(1, None, End::Healthy).await;
    let (sandbox, port) = Sandbox::new(GATED_SCRIPT);
    let mut config = std::fs::read_to_string(sandbox.path("bot.toml")).expect("config");
    config.push_str(&argo_service(&argo, TOKEN, APP, "60s"));
    std::fs::write(sandbox.path("bot.toml"), config).expect("write config");

    let mut bot = Bot::start(&sandbox, port, "first").await;
    let promote = json!({"service": "argo", "version": "4.0.0", "environment": "production"});
    let (status, body) = bot
        .request(reqwest::Method::POST, "/api/v1/promotions", Some(promote))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");
    let running = wait_until(Duration::from_secs(20), || async {
        argo.gets_since_sync() >= 3
    })
    .await;
    assert!(running, "never watched:\n{}", bot.log());

    bot.crash();
    drop(bot);
    let gets_at_crash = argo.gets_since_sync();

    let bot = Bot::start(&sandbox, port, "second").await;
    let watched = wait_until(Duration::from_secs(20), || async {
        argo.gets_since_sync() > gets_at_crash
    })
    .await;
    assert!(watched, "the restarted bot never looked:\n{}", bot.log());
    assert_eq!(bot.promotion(id).await["state"], "deploying");
    argo.finish(End::Healthy);
    bot.wait_for_state(id, "succeeded").await;
    assert_eq!(argo.syncs(), 1, "one sync: {:#?}", argo.received());
    assert_eq!(argo.count("DELETE", "/operation"), 0);
}

#[tokio::test]
async fn an_abort_terminates_the_operation() {
    let argo = FakeArgo::start(0, None, End::Healthy).await;
    let bot = TestBot::with_config(&argo_service(&argo, TOKEN, APP, "20s")).await;
    let id = bot.promote_id("argo", "1.8.0", Some("production")).await;
    let watching = wait_until(Duration::from_secs(20), || async {
        argo.gets_since_sync() >= 1
    })
    .await;
    assert!(watching, "{:#?}", argo.received());
    let (status, reply) = bot.say(CI_TOKEN, &format!("abort {id} wrong image")).await;
    assert_eq!(status, 200, "{reply}");
    let reason = bot.failure_reason(id).await;
    assert!(
        reason.starts_with("aborted by api:ci: wrong image"),
        "{reason}"
    );
    let terminated = wait_until(Duration::from_secs(10), || async {
        argo.count("DELETE", "/operation") == 1
    })
    .await;
    assert!(terminated, "{:#?}", argo.received());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_backends_reports_the_app_and_names_a_missing_one() {
    let argo = FakeArgo::start(0, None, End::Healthy).await;
    let (sandbox, _port) = Sandbox::new(GATED_SCRIPT);
    let mut config = std::fs::read_to_string(sandbox.path("bot.toml")).expect("config");
    config.push_str(&argo_service(&argo, TOKEN, APP, "60s"));
    config.push_str(&argo_service(&argo, TOKEN, "api-prdo", "60s").replace("\"argo\"", "\"typo\""));
    std::fs::write(sandbox.path("bot.toml"), config).expect("write config");

    let out = tokio::process::Command::new(support::serve::BIN)
        .args(["check-backends", "--config", &sandbox.config()])
        .output()
        .await
        .expect("run check-backends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok      argo production (argocd): Argo CD application api-prod: Synced, health Healthy"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("FAILED  typo production (argocd): Argo CD answered 403: permission denied"),
        "{stdout}"
    );
    assert!(!stdout.contains(TOKEN), "{stdout}");
    assert_eq!(argo.syncs(), 0);
}
