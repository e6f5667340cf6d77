//! The `kubernetes` backend (SPEC §5) against the fake API server of
//! `support::fake_kubernetes`, reached through a kubeconfig file by the real kube-rs client:
//! end to end through the HTTP API, the backend called directly for resume/abort/blue-green,
//! `check()`, and a SIGKILL of the real `shipmate serve` in the middle of a rollout.

mod support;

use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};
use shipmate::deploy::kubernetes::{KubernetesBackend, KubernetesSettings};
use shipmate::deploy::{Backend, DeployCall, DeployOutcome, DeployRequest, Report, Reporter};
use shipmate::domain::rollout::{Phase, Step};
use support::fake_kubernetes::{self, deployment, FakeKubernetes, TOKEN};
use support::serve::{Bot, Sandbox};
use support::*;
use tempfile::TempDir;

const OLD_IMAGE: &str = "ghcr.io/acme/api:1.4.1";

/// A fake with Deployment prod/api (containers api and sidecar, 3 replicas, rolled out) and a
/// kubeconfig reaching it; the directory holds the kubeconfig.
async fn cluster() -> (FakeKubernetes, TempDir, String) {
    let fake = FakeKubernetes::start().await;
    fake.put(deployment(
        "prod",
        "api",
        3,
        &[("api", OLD_IMAGE), ("sidecar", "envoy:1.30")],
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    (fake, dir, kubeconfig.display().to_string())
}

/// Service `kube`, environment `production`, deploying with a kubernetes backend; `extra` adds
/// keys to the backend table, `strategy` an environment key.
fn kube_service(kubeconfig: &str, extra: &str, strategy: &str) -> String {
    format!(
        r#"
[[service]]
name = "kube"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "kubernetes", namespace = "prod", deployment = "api", container = "api", image = "ghcr.io/acme/api:{{version}}", kubeconfig = "{kubeconfig}", context = "{context}", timeout = "30s", poll_every = "100ms"{extra} }}
  {strategy}
"#,
        context = fake_kubernetes::CONTEXT
    )
}

async fn kube_bot(kubeconfig: &str, extra: &str, strategy: &str) -> TestBot {
    TestBot::with_config(&kube_service(kubeconfig, extra, strategy)).await
}

async fn log(bot: &TestBot, id: i64) -> Vec<String> {
    let (status, body) = bot
        .get(&format!("/api/v1/promotions/{id}/log"), CI_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect()
}

async fn card_status(bot: &TestBot, id: i64) -> Option<String> {
    let mut db = bot.raw_connection().await;
    sqlx::query_scalar::<_, Option<String>>(&format!(
        "SELECT call_status FROM rollouts WHERE promotion_id = {id} ORDER BY position LIMIT 1"
    ))
    .fetch_optional(&mut db)
    .await
    .expect("query")
    .flatten()
}

/// Waits until the fake has answered `more` further GETs (the bot polled).
async fn polled(fake: &FakeKubernetes, more: usize) {
    let from = fake.gets();
    let seen = wait_until(Duration::from_secs(10), || async {
        fake.gets() >= from + more
    })
    .await;
    assert!(seen, "the bot stopped polling");
}

/// Whether a promotion's view shows it ended.
fn ended(promotion: &Value) -> bool {
    ["succeeded", "failed", "cancelled", "interrupted"]
        .contains(&promotion["state"].as_str().unwrap_or_default())
}

/// Ticks the controller once per poll of the bot until promotion `id` leaves `deploying`;
/// the state it reached. The bot's last poll may be the one that ends the deploy, so after a
/// tick it waits for the next poll *or* the end.
async fn drive(fake: &FakeKubernetes, bot: &TestBot, id: i64) -> Value {
    for _ in 0..200 {
        let promotion = bot.promotion(id).await;
        if ended(&promotion) {
            return promotion;
        }
        fake.tick();
        let from = fake.gets();
        let moved = wait_until(Duration::from_secs(10), || async {
            fake.gets() > from || ended(&bot.promotion(id).await)
        })
        .await;
        assert!(moved, "the bot stopped polling while #{id} was deploying");
    }
    panic!("#{id} never finished deploying");
}

#[tokio::test]
async fn a_promotion_sets_the_image_waits_as_kubectl_does_and_succeeds() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let bot = kube_bot(&kubeconfig, "", "").await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;

    let patched = wait_until(Duration::from_secs(10), || async {
        !fake.patches("api").is_empty()
    })
    .await;
    assert!(patched, "no PATCH: {:#}", bot.promotion(id).await);
    let patches = fake.patches("api");
    assert_eq!(patches.len(), 1);
    let patch = &patches[0];
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert!(
        patch.query.contains("fieldManager=shipmate"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.body,
        json!({
            "metadata": {"annotations": {
                "shipmate.dev/promotion": id.to_string(),
                "shipmate.dev/version": "2.0.0",
                "shipmate.dev/previous-image": OLD_IMAGE,
            }},
            "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "ghcr.io/acme/api:2.0.0"}]}}},
        })
    );

    // The controller has not observed generation 2: the old rollout's NewReplicaSetAvailable
    // still shows, and must not pass for this one.
    polled(&fake, 3).await;
    assert_eq!(bot.promotion(id).await["state"], "deploying");
    let observing = "deployment prod/api: waiting for the controller to observe generation 2";
    let shown = wait_until(Duration::from_secs(10), || async {
        card_status(&bot, id).await.as_deref() == Some(observing)
    })
    .await;
    assert!(shown, "{:?}", card_status(&bot, id).await);

    // Tick until the new pods are up but not all available: the card says so, and waits.
    let midway = "deployment prod/api: 2 of 3 updated replicas available";
    for _ in 0..40 {
        let status = fake.deployment("prod", "api")["status"].clone();
        if status["availableReplicas"] == 2
            && status["updatedReplicas"] == 3
            && status["replicas"] == 3
        {
            break;
        }
        fake.tick();
    }
    let shown = wait_until(Duration::from_secs(10), || async {
        card_status(&bot, id).await.as_deref() == Some(midway)
    })
    .await;
    assert!(shown, "{:?}", card_status(&bot, id).await);
    polled(&fake, 2).await;
    assert_eq!(bot.promotion(id).await["state"], "deploying");

    let done = drive(&fake, &bot, id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert!(fake.rolled_out("prod", "api"));
    assert_eq!(
        fake.image("prod", "api", "api").as_deref(),
        Some("ghcr.io/acme/api:2.0.0")
    );
    // Merged by name: the sidecar and the ports are untouched.
    assert_eq!(
        fake.image("prod", "api", "sidecar").as_deref(),
        Some("envoy:1.30")
    );
    let d = fake.deployment("prod", "api");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 8080}])
    );
    assert_eq!(
        d["metadata"]["annotations"]["shipmate.dev/promotion"],
        id.to_string()
    );

    let lines = log(&bot, id).await;
    for expected in [
        "deployment prod/api: container api set to ghcr.io/acme/api:2.0.0 (was ghcr.io/acme/api:1.4.1); watching generation 2",
        observing,
        midway,
        "deployment prod/api: rolled out: 3 of 3 replicas available",
    ] {
        assert!(lines.iter().any(|l| l == expected), "{expected:?} not in {lines:#?}");
    }
    // Each change once, not on every poll.
    let waiting = lines
        .iter()
        .filter(|l| l.contains("observe generation"))
        .count();
    assert_eq!(waiting, 1, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains(TOKEN)));

    let mut db = bot.raw_connection().await;
    let handle: Option<String> = sqlx::query_scalar(&format!(
        "SELECT call_handle FROM rollouts WHERE promotion_id = {id}"
    ))
    .fetch_optional(&mut db)
    .await
    .expect("query")
    .flatten();
    // A finished call may have cleared its handle; if kept, it names the generation.
    if let Some(handle) = handle {
        let handle: Value = serde_json::from_str(&handle).expect("json");
        assert_eq!(handle, json!({"deployment": "api", "generation": 2}));
    }
}

#[tokio::test]
async fn a_stalled_rollout_fails_on_its_progress_deadline() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let bot = kube_bot(&kubeconfig, "", "").await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    fake.stall();
    let failed = drive(&fake, &bot, id).await;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(
        failed["reason"],
        "deployment api exceeded its progress deadline (ReplicaSet \"api-7f8b9c\" has timed out progressing.)"
    );
}

#[tokio::test]
async fn a_missing_container_fails_before_any_change_naming_the_containers() {
    let (fake, _dir, kubeconfig) = cluster().await;
    // The same service, but its container is called web.
    let config =
        kube_service(&kubeconfig, "", "").replace("container = \"api\"", "container = \"web\"");
    let bot = TestBot::with_config(&config).await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    assert_eq!(
        bot.failure_reason(id).await,
        "deployment api has no container web; containers: api, sidecar"
    );
    assert!(fake.patches("api").is_empty());
}

#[tokio::test]
async fn forbidden_is_final_and_says_what_the_credentials_may_not_do() {
    let (fake, _dir, kubeconfig) = cluster().await;
    fake.fail_next(Method::PATCH, 403);
    let bot = kube_bot(&kubeconfig, "", "").await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert_eq!(
        reason,
        "Kubernetes answered 403: deployments.apps \"api\" is forbidden: User \"system:serviceaccount:ci:shipmate\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"prod\" (the credentials may not patch deployments in prod)"
    );
    assert!(!reason.contains(TOKEN));
    assert_eq!(fake.patches("api").len(), 1, "a 403 is not retried");
}

#[tokio::test]
async fn a_missing_deployment_is_final() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let config =
        kube_service(&kubeconfig, "", "").replace("deployment = \"api\"", "deployment = \"apj\"");
    let bot = TestBot::with_config(&config).await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    assert_eq!(
        bot.failure_reason(id).await,
        "Kubernetes answered 404: deployments.apps \"apj\" not found (is there a deployment apj in namespace prod?)"
    );
    assert!(fake.changes().is_empty());
}

#[tokio::test]
async fn conflicts_and_server_errors_are_retried() {
    let (fake, _dir, kubeconfig) = cluster().await;
    fake.fail_next(Method::PATCH, 409);
    fake.fail_next(Method::GET, 500);
    fake.fail_next(Method::GET, 429);
    let bot = kube_bot(&kubeconfig, "", "").await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    let done = drive(&fake, &bot, id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(fake.patches("api").len(), 2, "the 409 was sent again");
    assert!(fake.rolled_out("prod", "api"));
}

#[tokio::test]
async fn the_timeout_fails_naming_it() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let bot = TestBot::builder()
        .config(&kube_service(&kubeconfig, "", "").replace("timeout = \"30s\"", "timeout = \"1s\""))
        .start()
        .await
        .expect("sqlite");
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;
    assert_eq!(
        bot.failure_reason(id).await,
        "timed out after 1s (deployment prod/api: waiting for the controller to observe generation 2)"
    );
    assert_eq!(fake.patches("api").len(), 1);
}

#[tokio::test]
async fn canary_steps_scale_the_canary_deployment_and_the_last_updates_the_stable_one() {
    let (fake, _dir, kubeconfig) = cluster().await;
    fake.put(deployment(
        "prod",
        "api",
        4,
        &[("api", OLD_IMAGE), ("sidecar", "envoy:1.30")],
    ));
    fake.put(deployment(
        "prod",
        "api-canary",
        0,
        &[("api", OLD_IMAGE), ("sidecar", "envoy:1.30")],
    ));
    fake.tick_every(Duration::from_millis(30));
    let bot = kube_bot(
        &kubeconfig,
        ", canary_deployment = \"api-canary\"",
        "strategy = { kind = \"canary\", steps = [10, 50, 100], pause = \"5m\" }",
    )
    .await;
    let id = bot.promote_id("kube", "2.0.0", Some("production")).await;

    rollout::wait_for_gate(&bot, id, 1).await;
    let canary = fake.patches("api-canary");
    assert_eq!(canary.len(), 1);
    assert_eq!(canary[0].body["spec"]["replicas"], 1, "ceil(10% of 4)");
    assert_eq!(
        canary[0].body["spec"]["template"]["spec"]["containers"],
        json!([{"name": "api", "image": "ghcr.io/acme/api:2.0.0"}])
    );
    assert!(
        fake.patches("api").is_empty(),
        "the stable one waits for the last step"
    );
    assert!(fake.rolled_out("prod", "api-canary"));
    bot.clock.advance(Duration::from_secs(300));

    rollout::wait_for_gate(&bot, id, 3).await;
    let canary = fake.patches("api-canary");
    assert_eq!(canary.len(), 2);
    assert_eq!(canary[1].body["spec"]["replicas"], 2, "ceil(50% of 4)");
    assert!(fake.patches("api").is_empty());
    bot.clock.advance(Duration::from_secs(300));

    let done = bot.wait_for_state(id, "succeeded").await;
    assert_eq!(done["state"], "succeeded");
    let stable = fake.patches("api");
    assert_eq!(stable.len(), 1);
    assert!(
        stable[0].body["spec"].get("replicas").is_none(),
        "{:#}",
        stable[0].body
    );
    assert_eq!(
        fake.image("prod", "api", "api").as_deref(),
        Some("ghcr.io/acme/api:2.0.0")
    );
    let canary = fake.patches("api-canary");
    assert_eq!(canary.len(), 3);
    assert_eq!(canary[2].body["spec"], json!({"replicas": 0}));
    assert_eq!(fake.deployment("prod", "api-canary")["spec"]["replicas"], 0);
    // The canary is scaled down only once the stable Deployment rolled out.
    let order: Vec<String> = fake
        .changes()
        .iter()
        .map(|c| c.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, ["api-canary", "api-canary", "api", "api-canary"]);
}

// ---- the backend called directly ----

fn settings(kubeconfig: &str) -> KubernetesSettings {
    KubernetesSettings {
        namespace: "prod".into(),
        deployment: "api".into(),
        container: "api".into(),
        image: "ghcr.io/acme/api:{version}".into(),
        kubeconfig: Some(kubeconfig.into()),
        context: Some(fake_kubernetes::CONTEXT.into()),
        canary_deployment: None,
        timeout: Duration::from_secs(30),
        poll_every: Duration::from_millis(100),
    }
}

fn request(version: &str, phase: Phase) -> DeployRequest {
    DeployRequest {
        promotion_id: 7,
        attempt: 1,
        service: "kube".into(),
        version: version.into(),
        environment: "production".into(),
        previous_version: Some("1.4.1".into()),
        requested_by: "api:ci".into(),
        rollback: false,
        commit: None,
        digest: None,
        step: Step {
            number: if phase == Phase::Deploy { 1 } else { 2 },
            of: 2,
            weight: if phase == Phase::Deploy { 0 } else { 100 },
            phase,
        },
    }
}

/// Runs `call` to its end with the controller ticking; the outcome and every report.
async fn run(
    backend: &KubernetesBackend,
    call: DeployCall,
    mut reports: tokio::sync::mpsc::Receiver<Report>,
) -> (DeployOutcome, Vec<Report>) {
    let outcome = backend.deploy(call).await;
    let mut seen = Vec::new();
    while let Ok(report) = reports.try_recv() {
        seen.push(report);
    }
    (outcome, seen)
}

fn lines(reports: &[Report]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Line(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn resumed_without_a_handle_it_applies_the_same_patch_again_and_watches() {
    let (fake, _dir, kubeconfig) = cluster().await;
    fake.tick_every(Duration::from_millis(20));
    let backend = KubernetesBackend::new(settings(&kubeconfig));
    let (reporter, reports) = Reporter::channel(256);
    let call = DeployCall::new(
        request("2.0.0", Phase::Deploy),
        reporter,
        chrono::Utc::now(),
    );
    let (outcome, _) = run(&backend, call, reports).await;
    assert_eq!(outcome, DeployOutcome::Succeeded);
    let generation = fake.deployment("prod", "api")["metadata"]["generation"].clone();
    assert_eq!(generation, 2);

    // The previous holder died before storing the handle.
    let (reporter, reports) = Reporter::channel(256);
    let mut call = DeployCall::new(
        request("2.0.0", Phase::Deploy),
        reporter,
        chrono::Utc::now(),
    );
    call.resumed = true;
    let (outcome, reports) = run(&backend, call, reports).await;
    assert_eq!(outcome, DeployOutcome::Succeeded);
    let patches = fake.patches("api");
    assert_eq!(patches.len(), 2);
    // The same image: no new generation, and the recorded previous image is kept.
    assert_eq!(
        fake.deployment("prod", "api")["metadata"]["generation"],
        generation
    );
    assert!(patches[1].body["metadata"]["annotations"]
        .get("shipmate.dev/previous-image")
        .is_none());
    assert_eq!(
        fake.deployment("prod", "api")["metadata"]["annotations"]["shipmate.dev/previous-image"],
        OLD_IMAGE
    );
    assert!(reports.contains(&Report::Handle(
        json!({"deployment": "api", "generation": 2})
    )));
}

#[tokio::test]
async fn resumed_with_a_handle_it_only_watches() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let backend = KubernetesBackend::new(settings(&kubeconfig));
    let (reporter, reports) = Reporter::channel(256);
    let mut call = DeployCall::new(
        request("2.0.0", Phase::Deploy),
        reporter,
        chrono::Utc::now(),
    );
    call.resumed = true;
    call.handle = Some(json!({"deployment": "api", "generation": 1}));
    fake.tick_every(Duration::from_millis(20));
    let (outcome, reports) = run(&backend, call, reports).await;
    assert_eq!(outcome, DeployOutcome::Succeeded);
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    assert!(
        lines(&reports).contains(&"resumed: watching deployment prod/api generation 1".to_string())
    );
}

#[tokio::test]
async fn an_abort_stops_watching_and_says_there_is_nothing_to_cancel() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let backend = KubernetesBackend::new(settings(&kubeconfig));
    let (reporter, reports) = Reporter::channel(256);
    let call = DeployCall::new(
        request("2.0.0", Phase::Deploy),
        reporter,
        chrono::Utc::now(),
    );
    let abort = call.abort.clone();
    let task = tokio::spawn(async move { run(&backend, call, reports).await });
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !fake.patches("api").is_empty()
        })
        .await
    );
    polled(&fake, 1).await;
    abort.cancel();
    let (outcome, reports) = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .expect("task");
    assert_eq!(outcome, DeployOutcome::Cancelled);
    assert!(
        lines(&reports).iter().any(|l| l.starts_with(
            "aborted: stopped watching deployment prod/api; Kubernetes has no rollout to cancel"
        )),
        "{reports:?}"
    );
}

#[tokio::test]
async fn blue_green_deploys_switches_without_a_change_and_discard_puts_the_old_image_back() {
    let (fake, _dir, kubeconfig) = cluster().await;
    fake.tick_every(Duration::from_millis(20));
    let backend = KubernetesBackend::new(settings(&kubeconfig));

    let (reporter, reports) = Reporter::channel(256);
    let call = DeployCall::new(
        request("2.0.0", Phase::Deploy),
        reporter,
        chrono::Utc::now(),
    );
    assert_eq!(
        run(&backend, call, reports).await.0,
        DeployOutcome::Succeeded
    );
    assert_eq!(
        fake.image("prod", "api", "api").as_deref(),
        Some("ghcr.io/acme/api:2.0.0")
    );

    let (reporter, reports) = Reporter::channel(256);
    let call = DeployCall::new(
        request("2.0.0", Phase::Switch),
        reporter,
        chrono::Utc::now(),
    );
    let (outcome, reports) = run(&backend, call, reports).await;
    assert_eq!(outcome, DeployOutcome::Succeeded);
    assert_eq!(fake.patches("api").len(), 1, "switch changes nothing");
    assert!(lines(&reports)[0].starts_with("switch: deployment prod/api already serves 2.0.0"));

    let (reporter, reports) = Reporter::channel(256);
    let call = DeployCall::new(
        request("2.0.0", Phase::Discard),
        reporter,
        chrono::Utc::now(),
    );
    let (outcome, _) = run(&backend, call, reports).await;
    assert_eq!(outcome, DeployOutcome::Succeeded);
    assert_eq!(fake.image("prod", "api", "api").as_deref(), Some(OLD_IMAGE));
    let patches = fake.patches("api");
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[1].body["metadata"]["annotations"]["shipmate.dev/version"],
        "1.4.1"
    );
    assert!(fake.rolled_out("prod", "api"));
}

// ---- check-backends ----

#[tokio::test]
async fn check_reads_the_deployment_and_asks_whether_it_may_patch() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let backend = KubernetesBackend::new(settings(&kubeconfig));
    assert_eq!(
        backend.check("kube", "production").await,
        Ok("deployment prod/api runs ghcr.io/acme/api:1.4.1 in container api; the credentials may patch deployments in prod".to_string())
    );
    let changes = fake.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].body["spec"]["resourceAttributes"],
        json!({"namespace": "prod", "verb": "patch", "group": "apps", "resource": "deployments"})
    );
    assert!(fake.patches("api").is_empty(), "a check deploys nothing");

    fake.allow(false);
    let refused = backend.check("kube", "production").await;
    assert_eq!(
        refused,
        Err("the credentials may not patch deployments in namespace prod".to_string())
    );

    let mut wrong = settings(&kubeconfig);
    wrong.container = "web".into();
    assert_eq!(
        KubernetesBackend::new(wrong)
            .check("kube", "production")
            .await,
        Err("deployment api has no container web; containers: api, sidecar".to_string())
    );

    // Without the context the kubeconfig's current context points at a closed port.
    let mut elsewhere = settings(&kubeconfig);
    elsewhere.context = Some("missing".into());
    let err = KubernetesBackend::new(elsewhere)
        .check("kube", "production")
        .await
        .expect_err("no such context");
    assert!(err.starts_with("could not load the kubeconfig"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}

// ---- a crash in the middle of a rollout ----

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_survives_a_sigkill_of_the_bot_and_is_patched_once() {
    let (fake, _dir, kubeconfig) = cluster().await;
    let service = kube_service(&kubeconfig, "", "");
    let (sandbox, port) = Sandbox::with_config(RECORDING_SCRIPT, |database_url| {
        format!("{}{service}", test_config(database_url, "./deploy.sh"))
    });
    let mut bot = Bot::start(&sandbox, port, "first").await;
    let promote = json!({"service": "kube", "version": "2.0.0", "environment": "production"});
    let (status, body) = bot
        .request(reqwest::Method::POST, "/api/v1/promotions", Some(promote))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");

    // The handle is stored before the line that follows it in the same report stream.
    let watching = wait_until(Duration::from_secs(20), || async {
        let (_, log) = bot
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/promotions/{id}/log"),
                None,
            )
            .await;
        log["lines"].as_array().is_some_and(|ls| {
            ls.iter().any(|l| {
                l.as_str()
                    .is_some_and(|l| l.contains("watching generation 2"))
            })
        })
    })
    .await;
    assert!(watching, "never started watching:\n{}", bot.log());
    assert_eq!(fake.patches("api").len(), 1);

    bot.crash();
    drop(bot);
    let bot = Bot::start(&sandbox, port, "second").await;
    fake.tick_every(Duration::from_millis(30));
    let done = bot.wait_for_state(id, "succeeded").await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(
        fake.patches("api").len(),
        1,
        "the restart watched, it did not patch again"
    );
    assert!(fake.rolled_out("prod", "api"));
    assert_eq!(
        fake.image("prod", "api", "api").as_deref(),
        Some("ghcr.io/acme/api:2.0.0")
    );
    let (_, log) = bot
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/promotions/{id}/log"),
            None,
        )
        .await;
    assert!(
        log["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .any(|l| l == "resumed: watching deployment prod/api generation 2"),
        "{log:#}"
    );
}
