//! The `github_actions` backend (SPEC §5) against the fake GitHub: the dispatch (200 with the
//! run, 204 and the GHES refusal with the run found by its title), polling to each ending,
//! waiting for an environment approval, rate limits, abort/detach/timeout, resuming with and
//! without a stored handle, `check`, and end to end through the bot: a plain deploy, a failed
//! run, a canary passing its steps on, and a bot SIGKILLed mid-run that finishes after restart
//! without dispatching twice.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use shipmate::deploy::github::{
    ContentFile, DispatchResponse, GithubActionsBackend, GithubSettings, Workflow, WorkflowRun,
    WorkflowRuns,
};
use shipmate::deploy::{Backend, DeployCall, DeployOutcome, DeployRequest, Report, Reporter};
use shipmate::domain::rollout::Step;
use support::fake_github::{Dispatch, FakeGithub, Limit, PUSH_ONLY, REPO, TOKEN, WORKFLOW};
use support::serve::{Bot, Sandbox};
use support::{wait_until, TestBot, CI_TOKEN};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(30);

// ---- fixtures ----

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/github/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn githubs_example_payloads_read_into_the_backends_types() {
    let run: WorkflowRun = serde_json::from_str(&fixture("workflow-run")).expect("workflow-run");
    assert_eq!(run.id, 30433642);
    assert_eq!(run.status.as_deref(), Some("queued"));
    assert_eq!(run.conclusion, None);
    assert_eq!(run.display_title.as_deref(), Some("Update README.md"));
    assert_eq!(
        run.html_url,
        "https://github.com/octo-org/octo-repo/actions/runs/30433642"
    );
    assert_eq!(
        run.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "2020-01-22T19:33:08Z"
    );

    let runs: WorkflowRuns =
        serde_json::from_str(&fixture("workflow-run-paginated")).expect("workflow-run-paginated");
    assert_eq!(runs.total_count, 1);
    assert_eq!(runs.workflow_runs.len(), 1);
    assert_eq!(runs.workflow_runs[0].id, 30433642);

    let workflow: Workflow = serde_json::from_str(&fixture("workflow")).expect("workflow");
    assert_eq!(workflow.path, ".github/workflows/blank.yaml");
    assert_eq!(workflow.state, "active");

    let dispatched: DispatchResponse =
        serde_json::from_str(&fixture("workflow-dispatch-response")).expect("dispatch response");
    assert_eq!(dispatched.workflow_run_id, 1);
    assert_eq!(
        dispatched.html_url,
        "https://github.com/octo-org/octo-repo/actions/runs/1"
    );

    let file: ContentFile =
        serde_json::from_str(&fixture("content-file-response-if-content-is-a-file"))
            .expect("content file");
    assert_eq!(file.kind, "file");
    assert_eq!(file.encoding.as_deref(), Some("base64"));
    assert!(file.content.is_some_and(|c| !c.is_empty()));
}

// ---- the backend on its own ----

fn settings(fake: &FakeGithub, workflow: &str) -> GithubSettings {
    GithubSettings {
        repo: REPO.to_string(),
        workflow: workflow.to_string(),
        git_ref: "main".to_string(),
        token: TOKEN.to_string(),
        inputs: BTreeMap::from([
            ("cluster".to_string(), "eu-1".to_string()),
            (
                "image".to_string(),
                "ghcr.io/acme/api:{version}".to_string(),
            ),
        ]),
        api_url: fake.url.clone(),
        poll_every: Duration::from_millis(20),
        timeout: Duration::from_secs(20),
    }
}

fn request(step: Step) -> DeployRequest {
    DeployRequest {
        promotion_id: 42,
        attempt: 1,
        service: "api".to_string(),
        version: "1.4.2".to_string(),
        environment: "production".to_string(),
        previous_version: Some("1.4.1".to_string()),
        requested_by: "slack:U1".to_string(),
        rollback: false,
        commit: None,
        digest: None,
        step,
    }
}

fn fresh_call() -> (DeployCall, mpsc::Receiver<Report>) {
    let (report, reports) = Reporter::channel(1_000);
    (
        DeployCall::new(request(Step::FULL), report, Utc::now()),
        reports,
    )
}

#[derive(Debug, Default)]
struct Seen {
    lines: Vec<String>,
    statuses: Vec<String>,
    handles: Vec<Value>,
}

fn drain(reports: &mut mpsc::Receiver<Report>) -> Seen {
    let mut seen = Seen::default();
    while let Ok(report) = reports.try_recv() {
        match report {
            Report::Line(line) => seen.lines.push(line),
            Report::Status(status) => seen.statuses.push(status),
            Report::Handle(handle) => seen.handles.push(handle),
            Report::Group(_) => panic!("a remote backend starts no local process"),
        }
    }
    seen
}

async fn deploy(backend: &GithubActionsBackend, call: DeployCall) -> DeployOutcome {
    tokio::time::timeout(LIMIT, backend.deploy(call))
        .await
        .expect("the deploy ended in time")
}

fn failure(outcome: DeployOutcome) -> String {
    match outcome {
        DeployOutcome::Failed { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn run_url(id: u64) -> String {
    format!("https://github.com/{REPO}/actions/runs/{id}")
}

const TO_SUCCESS: &[(&str, Option<&str>)] = &[
    ("queued", None),
    ("in_progress", None),
    ("completed", Some("success")),
];

#[tokio::test]
async fn a_dispatch_named_run_is_polled_to_success_with_the_pinned_headers_and_string_inputs() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (call, mut reports) = fresh_call();

    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);

    let dispatches = fake.dispatches();
    assert_eq!(dispatches.len(), 1, "{dispatches:#?}");
    assert_eq!(
        dispatches[0],
        json!({
            "ref": "main",
            "inputs": {
                "version": "1.4.2", "environment": "production", "promotion_id": "42",
                "rollback": "false", "cluster": "eu-1", "image": "ghcr.io/acme/api:1.4.2"
            },
            "return_run_details": true
        })
    );
    let run = fake.runs().pop().expect("a run");
    assert_eq!(run.title, "shipmate-42");
    assert!(
        fake.list_queries().is_empty(),
        "a named run is not looked for"
    );
    assert!(fake
        .versions()
        .iter()
        .all(|v| v.as_deref() == Some("2022-11-28")));
    assert!(fake
        .accepts()
        .iter()
        .all(|v| v.as_deref() == Some("application/vnd.github+json")));

    let seen = drain(&mut reports);
    assert_eq!(
        seen.handles,
        vec![json!({"run_id": run.id, "html_url": run_url(run.id)})]
    );
    assert_eq!(
        seen.lines,
        vec![
            format!("GitHub run {}: {}", run.id, run_url(run.id)),
            format!("GitHub run {} queued: {}", run.id, run_url(run.id)),
            format!("GitHub run {} in_progress: {}", run.id, run_url(run.id)),
            format!("GitHub run {} completed: success", run.id),
        ]
    );
    assert_eq!(
        seen.statuses,
        vec![
            format!("GitHub run {} queued: {}", run.id, run_url(run.id)),
            format!("GitHub run {} in_progress: {}", run.id, run_url(run.id)),
        ]
    );
}

#[tokio::test]
async fn a_204_dispatch_finds_its_run_by_title_among_late_and_foreign_runs() {
    let fake = FakeGithub::start(Dispatch::NoContent).await;
    fake.script_runs(TO_SUCCESS);
    // Someone else's run, and ours from another promotion: neither is ours.
    fake.add_run("shipmate-41", Utc::now(), "in_progress");
    fake.add_run("Deploy by hand", Utc::now(), "in_progress");
    fake.hide_runs(2);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (call, mut reports) = fresh_call();
    let started_at = call.started_at;

    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);

    let dispatches = fake.dispatches();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(dispatches[0]["return_run_details"], true);
    let ours = fake
        .runs()
        .into_iter()
        .find(|r| r.title == "shipmate-42")
        .expect("our run");
    let queries = fake.list_queries();
    assert!(
        queries.len() >= 3,
        "looked until the run showed: {queries:#?}"
    );
    let since =
        (started_at - chrono::Duration::minutes(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        queries[0],
        BTreeMap::from([
            ("event".to_string(), "workflow_dispatch".to_string()),
            ("branch".to_string(), "main".to_string()),
            ("created".to_string(), format!(">={since}")),
            ("per_page".to_string(), "20".to_string()),
        ])
    );
    let seen = drain(&mut reports);
    assert_eq!(
        seen.handles,
        vec![json!({"run_id": ours.id, "html_url": run_url(ours.id)})]
    );
    assert_eq!(
        seen.lines[0],
        format!("GitHub run {}: {}", ours.id, run_url(ours.id))
    );
    // The other runs were left alone.
    assert!(fake.cancels().is_empty());
}

#[tokio::test]
async fn ghes_refusing_return_run_details_gets_the_dispatch_again_without_it() {
    let fake = FakeGithub::start(Dispatch::Ghes).await;
    fake.script_runs(TO_SUCCESS);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (call, mut reports) = fresh_call();

    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);

    let sent = fake.dispatch_requests();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0]["return_run_details"], true);
    assert!(sent[1].get("return_run_details").is_none(), "{:#}", sent[1]);
    assert_eq!(sent[0]["inputs"], sent[1]["inputs"]);
    assert_eq!(fake.dispatches().len(), 1, "one run was started");
    let run = fake.runs().pop().expect("a run");
    assert_eq!(drain(&mut reports).handles[0]["run_id"], run.id);
}

#[tokio::test]
async fn a_run_that_ends_otherwise_fails_naming_the_conclusion_and_linking_the_run() {
    for conclusion in ["failure", "cancelled", "timed_out"] {
        let fake = FakeGithub::start(Dispatch::RunDetails).await;
        fake.script_runs(&[
            ("queued", None),
            ("in_progress", None),
            ("completed", Some(conclusion)),
        ]);
        let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
        let (call, _reports) = fresh_call();
        let reason = failure(deploy(&backend, call).await);
        let run = fake.runs().pop().expect("a run");
        assert_eq!(
            reason,
            format!(
                "GitHub run {} of deploy.yml ended {conclusion}: {}",
                run.id,
                run_url(run.id)
            )
        );
    }
}

#[tokio::test]
async fn a_run_waiting_for_an_environment_approval_says_so_on_the_card_once() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(&[("queued", None), ("waiting", None)]);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (call, mut reports) = fresh_call();
    let running = tokio::spawn(async move { backend.deploy(call).await });
    assert!(
        wait_until(LIMIT, || async { fake.run_gets() >= 5 }).await,
        "the run was polled"
    );
    let run = fake.runs().pop().expect("a run");
    assert_eq!(run.status, "waiting");
    fake.set_run(run.id, "completed", Some("success"));
    let outcome = tokio::time::timeout(LIMIT, running)
        .await
        .expect("ended")
        .expect("no panic");
    assert_eq!(outcome, DeployOutcome::Succeeded);
    let waiting = format!(
        "GitHub run {} waiting for a GitHub environment approval: {}",
        run.id,
        run_url(run.id)
    );
    let seen = drain(&mut reports);
    assert_eq!(
        seen.statuses,
        vec![
            format!("GitHub run {} queued: {}", run.id, run_url(run.id)),
            waiting.clone()
        ]
    );
    assert_eq!(
        seen.lines.iter().filter(|l| **l == waiting).count(),
        1,
        "one line per change, not per poll: {:#?}",
        seen.lines
    );
}

#[tokio::test]
async fn refusals_are_sentences_naming_github_and_what_it_said() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;

    let backend = GithubActionsBackend::new(settings(&fake, "missing.yml"));
    let (call, _r) = fresh_call();
    assert_eq!(
        failure(deploy(&backend, call).await),
        "GitHub answered 404: no workflow missing.yml in acme/api, or the token may not see it"
    );

    let backend = GithubActionsBackend::new(settings(&fake, PUSH_ONLY));
    let (call, _r) = fresh_call();
    assert_eq!(
        failure(deploy(&backend, call).await),
        "GitHub answered 422: Workflow does not have 'workflow_dispatch' trigger"
    );

    let mut wrong = settings(&fake, WORKFLOW);
    wrong.token = "ghp_wrong_token_value".to_string();
    let backend = GithubActionsBackend::new(wrong);
    let (call, _r) = fresh_call();
    let reason = failure(deploy(&backend, call).await);
    assert_eq!(reason, "GitHub answered 401: Bad credentials");
    assert!(fake.dispatches().is_empty());
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_the_dispatch_is_sent_once() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    fake.limit_next(&[Limit::Primary, Limit::Secondary]);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (call, _reports) = fresh_call();
    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);
    assert_eq!(fake.limited(), 2);
    assert_eq!(fake.dispatches().len(), 1);
}

#[tokio::test]
async fn an_abort_cancels_the_run_and_a_detach_leaves_it_running() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(&[("queued", None), ("in_progress", None)]);
    let backend = std::sync::Arc::new(GithubActionsBackend::new(settings(&fake, WORKFLOW)));

    let (aborted, _r) = fresh_call();
    let abort = aborted.abort.clone();
    let running = tokio::spawn({
        let backend = backend.clone();
        async move { backend.deploy(aborted).await }
    });
    assert!(wait_until(LIMIT, || async { fake.run_gets() >= 2 }).await);
    abort.cancel();
    let outcome = tokio::time::timeout(LIMIT, running)
        .await
        .expect("ended")
        .expect("no panic");
    assert_eq!(outcome, DeployOutcome::Cancelled);
    let first = fake.runs().pop().expect("a run");
    assert_eq!(fake.cancels(), vec![first.id]);
    assert_eq!(first.conclusion.as_deref(), Some("cancelled"));

    let (detached, _r) = fresh_call();
    let detach = detached.detach.clone();
    let gets = fake.run_gets();
    let running = tokio::spawn({
        let backend = backend.clone();
        async move { backend.deploy(detached).await }
    });
    assert!(wait_until(LIMIT, || async { fake.run_gets() >= gets + 2 }).await);
    detach.cancel();
    let outcome = tokio::time::timeout(LIMIT, running)
        .await
        .expect("ended")
        .expect("no panic");
    assert_eq!(outcome, DeployOutcome::Cancelled);
    let second = fake.runs().pop().expect("a second run");
    assert_ne!(second.id, first.id);
    assert_eq!(second.status, "in_progress", "left for the next holder");
    assert_eq!(fake.cancels(), vec![first.id]);
}

#[tokio::test]
async fn a_run_past_the_timeout_is_cancelled_and_fails_naming_the_timeout() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let mut short = settings(&fake, WORKFLOW);
    short.timeout = Duration::from_secs(1);
    let backend = GithubActionsBackend::new(short);
    let (call, _r) = fresh_call();
    let reason = failure(deploy(&backend, call).await);
    let run = fake.runs().pop().expect("a run");
    assert_eq!(
        reason,
        format!(
            "timed out after 1s: GitHub run {} of deploy.yml had not completed; asked GitHub to cancel it: {}",
            run.id,
            run_url(run.id)
        )
    );
    assert_eq!(fake.cancels(), vec![run.id]);
}

#[tokio::test]
async fn a_resumed_call_with_a_handle_watches_that_run_and_dispatches_nothing() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let id = fake.add_run("shipmate-42", Utc::now(), "in_progress");
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (mut call, mut reports) = fresh_call();
    call.resumed = true;
    call.handle = Some(json!({"run_id": id, "html_url": run_url(id)}));
    let running = tokio::spawn(async move { backend.deploy(call).await });
    assert!(wait_until(LIMIT, || async { fake.run_gets() >= 1 }).await);
    fake.set_run(id, "completed", Some("success"));
    let outcome = tokio::time::timeout(LIMIT, running)
        .await
        .expect("ended")
        .expect("no panic");
    assert_eq!(outcome, DeployOutcome::Succeeded);
    assert!(fake.dispatch_requests().is_empty());
    assert!(fake.list_queries().is_empty());
    assert!(
        drain(&mut reports).handles.is_empty(),
        "the stored handle stands"
    );
}

#[tokio::test]
async fn a_resumed_call_without_a_handle_finds_the_run_a_previous_holder_dispatched() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let started_at = Utc::now() - chrono::Duration::seconds(5);
    let id = fake.add_run("shipmate-42", started_at, "in_progress");
    fake.set_run(id, "completed", Some("success"));
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (mut call, mut reports) = fresh_call();
    call.resumed = true;
    call.started_at = started_at;
    call.spent = Duration::from_secs(5);
    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);
    assert!(fake.dispatch_requests().is_empty(), "not dispatched again");
    assert_eq!(
        drain(&mut reports).handles,
        vec![json!({"run_id": id, "html_url": run_url(id)})]
    );
}

#[tokio::test]
async fn a_resumed_call_without_a_run_dispatches_once_ignoring_older_runs_of_the_same_title() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    // Started two minutes ago (its search window is over) and no run of ours since; one titled
    // as ours from a minute before it started is an earlier call's.
    let started_at = Utc::now() - chrono::Duration::minutes(2);
    let old = fake.add_run(
        "shipmate-42",
        started_at - chrono::Duration::minutes(1),
        "in_progress",
    );
    let mut long = settings(&fake, WORKFLOW);
    long.timeout = Duration::from_secs(600);
    let backend = GithubActionsBackend::new(long);
    let (mut call, mut reports) = fresh_call();
    call.resumed = true;
    call.started_at = started_at;
    call.spent = Duration::from_secs(120);
    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);
    assert_eq!(fake.dispatches().len(), 1);
    assert_eq!(fake.list_queries().len(), 1, "one look, then the dispatch");
    let handle = drain(&mut reports).handles.pop().expect("a handle");
    assert_ne!(handle["run_id"], old);
    assert_eq!(
        fake.run(old).status,
        "in_progress",
        "the old run is not touched"
    );
}

#[tokio::test]
async fn rollout_steps_are_passed_as_inputs() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    let backend = GithubActionsBackend::new(settings(&fake, WORKFLOW));
    let (report, _r) = Reporter::channel(1_000);
    let step = Step {
        number: 2,
        of: 3,
        weight: 50,
        phase: shipmate::domain::rollout::Phase::Deploy,
    };
    let call = DeployCall::new(request(step), report, Utc::now());
    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);
    let inputs = &fake.dispatches()[0]["inputs"];
    assert_eq!(inputs["step"], "2");
    assert_eq!(inputs["steps"], "3");
    assert_eq!(inputs["weight"], "50");
    assert_eq!(inputs["phase"], "deploy");
}

#[tokio::test]
async fn placeholders_in_the_ref_are_filled_per_call() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    let mut tagged = settings(&fake, WORKFLOW);
    tagged.git_ref = "v{version}".to_string();
    let backend = GithubActionsBackend::new(tagged);
    let (call, _r) = fresh_call();
    assert_eq!(deploy(&backend, call).await, DeployOutcome::Succeeded);
    assert_eq!(fake.dispatches()[0]["ref"], "v1.4.2");
    assert_eq!(fake.runs().pop().expect("a run").branch, "v1.4.2");
}

#[tokio::test]
async fn more_inputs_than_github_takes_fail_before_dispatching() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let mut many = settings(&fake, WORKFLOW);
    many.inputs = (0..22)
        .map(|i| (format!("extra_{i}"), "x".to_string()))
        .collect();
    let backend = GithubActionsBackend::new(many);
    let (call, _r) = fresh_call();
    assert_eq!(
        failure(deploy(&backend, call).await),
        "this deploy would send 26 workflow inputs, more than GitHub's 25; drop some of the backend's `inputs`"
    );
    assert!(fake.dispatch_requests().is_empty());
}

#[tokio::test]
async fn check_reads_the_workflow_and_its_file_for_a_workflow_dispatch_trigger() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let ok = GithubActionsBackend::new(settings(&fake, WORKFLOW))
        .check("api", "production")
        .await;
    assert_eq!(
        ok,
        Ok("workflow .github/workflows/deploy.yml (Deploy) in acme/api is active and has a workflow_dispatch trigger on main".to_string())
    );
    let push_only = GithubActionsBackend::new(settings(&fake, PUSH_ONLY))
        .check("api", "production")
        .await;
    assert_eq!(
        push_only,
        Err("workflow .github/workflows/push.yml in acme/api (on main) has no workflow_dispatch trigger; add `on: workflow_dispatch` with the inputs shipmate sends".to_string())
    );
    let missing = GithubActionsBackend::new(settings(&fake, "missing.yml"))
        .check("api", "production")
        .await;
    assert_eq!(
        missing,
        Err(
            "GitHub answered 404: no workflow missing.yml in acme/api, or the token may not see it"
                .to_string()
        )
    );
    fake.disable(WORKFLOW);
    let disabled = GithubActionsBackend::new(settings(&fake, WORKFLOW))
        .check("api", "production")
        .await
        .expect_err("a disabled workflow");
    assert!(disabled.contains("disabled_manually"), "{disabled}");
    assert!(
        fake.dispatch_requests().is_empty(),
        "check dispatches nothing"
    );
}

// ---- end to end through the bot ----

/// Service `gh` deploying to `staging` with the fake GitHub.
fn gh_service(fake: &FakeGithub, workflow: &str) -> String {
    format!(
        r#"
[[service]]
name = "gh"
  [[service.environment]]
  name = "staging"
  backend = {{ kind = "github_actions", repo = "{REPO}", workflow = "{workflow}", ref = "main", token = "{TOKEN}", inputs = {{ cluster = "eu-1", service = "{{service}}" }}, api_url = "{url}", poll_every = "100ms", timeout = "1m" }}
"#,
        url = fake.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_deploys_through_a_workflow_run_and_logs_it() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    let bot = TestBot::builder()
        .config(&gh_service(&fake, WORKFLOW))
        .start()
        .await
        .expect("bot");
    let id = bot.promote_id("gh", "2.0.0", None).await;
    bot.wait_for_state(id, "succeeded").await;
    let dispatches = fake.dispatches();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(
        dispatches[0]["inputs"],
        json!({"version": "2.0.0", "environment": "staging", "promotion_id": id.to_string(),
               "rollback": "false", "cluster": "eu-1", "service": "gh"})
    );
    let run = fake.runs().pop().expect("a run");
    let (status, log) = bot
        .get(&format!("/api/v1/promotions/{id}/log"), CI_TOKEN)
        .await;
    assert_eq!(status, 200, "{log}");
    let lines: Vec<&str> = log["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let named = format!("GitHub run {}: {}", run.id, run_url(run.id));
    assert!(lines.iter().any(|l| l.contains(&named)), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_or_a_missing_workflow_fails_the_promotion_with_a_reason() {
    let fake = FakeGithub::start(Dispatch::NoContent).await;
    fake.script_runs(&[("queued", None), ("completed", Some("failure"))]);
    let bot = TestBot::builder()
        .config(&gh_service(&fake, WORKFLOW))
        .start()
        .await
        .expect("bot");
    let id = bot.promote_id("gh", "2.0.1", None).await;
    let failed = bot.wait_for_state(id, "failed").await;
    let run = fake.runs().pop().expect("a run");
    assert_eq!(
        failed["reason"],
        format!(
            "GitHub run {} of deploy.yml ended failure: {}",
            run.id,
            run_url(run.id)
        ),
        "{failed:#}"
    );

    let other = FakeGithub::start(Dispatch::RunDetails).await;
    let bot = TestBot::builder()
        .config(&gh_service(&other, "missing.yml"))
        .start()
        .await
        .expect("bot");
    let id = bot.promote_id("gh", "2.0.2", None).await;
    let failed = bot.wait_for_state(id, "failed").await;
    assert_eq!(
        failed["reason"],
        "GitHub answered 404: no workflow missing.yml in acme/api, or the token may not see it",
        "{failed:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aborting_the_promotion_cancels_the_github_run() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let bot = TestBot::builder()
        .config(&gh_service(&fake, WORKFLOW))
        .start()
        .await
        .expect("bot");
    let id = bot.promote_id("gh", "2.1.0", None).await;
    assert!(
        wait_until(LIMIT, || async { fake.run_gets() >= 1 }).await,
        "the run is watched"
    );
    let (status, reply) = bot.say(CI_TOKEN, &format!("abort {id} wrong build")).await;
    assert_eq!(status, 200, "{reply}");
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("aborted by api:ci: wrong build"),
        "{reason}"
    );
    let run = fake.runs().pop().expect("a run");
    assert_eq!(fake.cancels(), vec![run.id]);
    assert_eq!(run.conclusion.as_deref(), Some("cancelled"));
    assert_eq!(fake.dispatches().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_passes_each_step_and_weight_to_the_workflow() {
    use support::rollout::{walk_canary, Health, CANARY};
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    fake.script_runs(TO_SUCCESS);
    let health = Health::start().await;
    let config = format!(
        r#"
[[service]]
name = "shop"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "github_actions", repo = "{REPO}", workflow = "{WORKFLOW}", ref = "main", token = "{TOKEN}", api_url = "{url}", poll_every = "100ms", timeout = "1m" }}
  strategy = {CANARY}
  verify = [ {{ kind = "http", url = "{health}", for = "10m", every = "30s" }} ]
  on_failure = "rollback"
"#,
        url = fake.url,
        health = health.url
    );
    let bot = TestBot::builder()
        .config(&config)
        .start()
        .await
        .expect("bot");
    let id = walk_canary(&bot, "3.0.0").await;
    let steps: Vec<(String, String, String, String, String)> = fake
        .dispatches()
        .iter()
        .map(|d| {
            let i = &d["inputs"];
            let text = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (
                text("promotion_id"),
                text("step"),
                text("steps"),
                text("weight"),
                text("phase"),
            )
        })
        .collect();
    let id = id.to_string();
    let expected: Vec<(String, String, String, String, String)> =
        [("1", "10"), ("2", "50"), ("3", "100")]
            .iter()
            .map(|(step, weight)| {
                (
                    id.clone(),
                    step.to_string(),
                    "3".to_string(),
                    weight.to_string(),
                    "deploy".to_string(),
                )
            })
            .collect();
    assert_eq!(steps, expected);
}

/// `bot.toml` of the sandbox with service `gh` on the fake GitHub.
fn sandbox_with_gh(fake: &FakeGithub) -> (Sandbox, u16) {
    Sandbox::with_config(support::RECORDING_SCRIPT, |database_url| {
        support::test_config(database_url, "./deploy.sh") + &gh_service(fake, WORKFLOW)
    })
}

async fn promote_served(bot: &Bot) -> i64 {
    let (status, body) = bot
        .request(
            reqwest::Method::POST,
            "/api/v1/promotions",
            Some(json!({"service": "gh", "version": "4.0.0"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_i64().expect("id")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_killed_while_a_run_is_going_finishes_it_after_restart_without_dispatching_again() {
    let fake = FakeGithub::start(Dispatch::RunDetails).await;
    let (sandbox, port) = sandbox_with_gh(&fake);
    let mut bot = Bot::start(&sandbox, port, "first").await;
    let id = promote_served(&bot).await;
    // Running: dispatched, and the first holder is watching the run.
    assert!(
        wait_until(LIMIT, || async { fake.run_gets() >= 1 }).await,
        "the run was never watched:\n{}",
        bot.log()
    );
    bot.crash();
    drop(bot);

    let bot = Bot::start(&sandbox, port, "second").await;
    let gets = fake.run_gets();
    assert!(
        wait_until(LIMIT, || async { fake.run_gets() > gets }).await,
        "the restarted bot never watched the run:\n{}",
        bot.log()
    );
    let run = fake.runs().pop().expect("a run");
    fake.set_run(run.id, "completed", Some("success"));
    bot.wait_for_state(id, "succeeded").await;
    assert_eq!(fake.dispatch_requests().len(), 1, "dispatched exactly once");
    assert_eq!(fake.runs().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_killed_before_it_found_its_run_finds_it_after_restart_without_dispatching_again() {
    // A 204 dispatch whose run is slow to show: the first holder dies before it stored a handle.
    let fake = FakeGithub::start(Dispatch::NoContent).await;
    fake.hide_runs(usize::MAX);
    let (sandbox, port) = sandbox_with_gh(&fake);
    let mut bot = Bot::start(&sandbox, port, "first").await;
    let id = promote_served(&bot).await;
    assert!(
        wait_until(LIMIT, || async {
            !fake.dispatches().is_empty() && !fake.list_queries().is_empty()
        })
        .await,
        "never dispatched:\n{}",
        bot.log()
    );
    bot.crash();
    drop(bot);
    assert_eq!(fake.run_gets(), 0, "the run was not found before the crash");

    let bot = Bot::start(&sandbox, port, "second").await;
    fake.reveal_runs();
    assert!(
        wait_until(LIMIT, || async { fake.run_gets() >= 1 }).await,
        "the restarted bot never found the run:\n{}",
        bot.log()
    );
    let run = fake.runs().pop().expect("a run");
    fake.set_run(run.id, "completed", Some("success"));
    bot.wait_for_state(id, "succeeded").await;
    assert_eq!(fake.dispatch_requests().len(), 1, "dispatched exactly once");
}
