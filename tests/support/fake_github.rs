//! A stateful fake of the GitHub REST API parts the `github_actions` backend uses, on loopback
//! (notes/backends.md §4):
//!
//! - `POST /repos/{o}/{r}/actions/workflows/{workflow}/dispatches`: 200 with the run's id
//!   (`return_run_details: true`), 204 ([`Dispatch::NoContent`]: an older GitHub), or GHES
//!   ([`Dispatch::Ghes`]: 422 `"return_run_details" is not a permitted key.` while the key is
//!   there, 204 without); 404 for an unknown workflow, 422 for a workflow without a
//!   `workflow_dispatch` trigger. An accepted dispatch creates a run titled as the workflow's
//!   `run-name: shipmate-${{ inputs.promotion_id }}` would.
//! - `GET …/workflows/{workflow}/runs` with the `event`, `branch` and `created=>=…` filters;
//!   new runs can be held out of the list for a while ([`FakeGithub::hide_runs`]).
//! - `GET /repos/{o}/{r}/actions/runs/{id}`: runs shaped like the OpenAPI example
//!   (tests/fixtures/github/workflow-run.json), whose state the test sets or a script advances
//!   on each poll; `POST …/runs/{id}/cancel` (202, the run ends `cancelled`; 409 once completed).
//! - `GET …/workflows/{workflow}` and `GET /repos/{o}/{r}/contents/{path}?ref=` for `check`.
//! - Bearer token check (401 `Bad credentials`), `X-GitHub-Api-Version` recorded, and rate limits
//!   on demand: 403 with `x-ratelimit-remaining: 0` + `x-ratelimit-reset`, or 429 with
//!   `Retry-After`, each once.
//!
//! Not covered: pagination (`Link`), run attempts/re-runs, jobs and logs, inputs validation
//! against the workflow's declared inputs, the `actor`/`status`/`head_sha` filters.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

pub const TOKEN: &str = "ghp_fake_token_for_tests";
pub const REPO: &str = "acme/api";
pub const WORKFLOW: &str = "deploy.yml";
/// A workflow whose file has no `workflow_dispatch` trigger.
pub const PUSH_ONLY: &str = "push.yml";
const RUN_TEMPLATE: &str = include_str!("../fixtures/github/workflow-run.json");

const DEPLOY_YAML: &str = "name: Deploy\nrun-name: shipmate-${{ inputs.promotion_id }}\non:\n  workflow_dispatch:\n    inputs:\n      version: { required: true }\n      environment: { required: true }\n      promotion_id: { required: true }\n      rollback: { required: true }\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n      - run: ./deploy.sh\n";
const PUSH_YAML: &str = "name: Build\non:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n";

/// How the dispatch endpoint answers an accepted dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// github.com today: 200 with `workflow_run_id` when asked for it, else 204.
    RunDetails,
    /// Always 204.
    NoContent,
    /// GHES ≤ 3.19: refuses the `return_run_details` key with 422, 204 without it.
    Ghes,
}

/// A rate limit the next request gets, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` one second ahead.
    Primary,
    /// 429 with `Retry-After: 1`.
    Secondary,
}

/// A run in the fake.
#[derive(Debug, Clone)]
pub struct FakeRun {
    pub id: u64,
    pub workflow: String,
    pub title: String,
    pub branch: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub created_at: DateTime<Utc>,
    pub inputs: Value,
    /// States the run takes, one per GET of the run.
    pub script: VecDeque<(String, Option<String>)>,
    /// How many runs-list answers still leave it out (runs appear late).
    pub hidden_for: usize,
}

#[derive(Debug)]
struct Workflow {
    id: u64,
    name: String,
    path: String,
    state: String,
    yaml: String,
}

#[derive(Debug)]
struct Inner {
    dispatch: Dispatch,
    workflows: BTreeMap<String, Workflow>,
    runs: BTreeMap<u64, FakeRun>,
    next_run: u64,
    /// Bodies of accepted dispatches.
    dispatches: Vec<Value>,
    /// Bodies of every dispatch request, refused ones too.
    dispatch_requests: Vec<Value>,
    /// `X-GitHub-Api-Version` and `Accept` of every request.
    versions: Vec<Option<String>>,
    accepts: Vec<Option<String>>,
    /// `GET …/runs` query strings.
    list_queries: Vec<BTreeMap<String, String>>,
    limits: VecDeque<Limit>,
    limited: usize,
    unauthorized: usize,
    cancels: Vec<u64>,
    /// The states a new run goes through, one per GET of it.
    script: Vec<(String, Option<String>)>,
    hide_new_runs_for: usize,
    run_gets: usize,
}

/// The fake; cloned handles share its state.
#[derive(Clone)]
pub struct FakeGithub {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn s(text: &str) -> String {
    text.to_string()
}

impl FakeGithub {
    /// Serves on a fresh loopback port with `deploy.yml` (with a `workflow_dispatch` trigger)
    /// and `push.yml` (without) in `acme/api`.
    pub async fn start(dispatch: Dispatch) -> FakeGithub {
        let mut workflows = BTreeMap::new();
        workflows.insert(
            s(WORKFLOW),
            Workflow {
                id: 161_335,
                name: s("Deploy"),
                path: s(".github/workflows/deploy.yml"),
                state: s("active"),
                yaml: s(DEPLOY_YAML),
            },
        );
        workflows.insert(
            s(PUSH_ONLY),
            Workflow {
                id: 161_336,
                name: s("Build"),
                path: s(".github/workflows/push.yml"),
                state: s("active"),
                yaml: s(PUSH_YAML),
            },
        );
        let inner = Arc::new(Mutex::new(Inner {
            dispatch,
            workflows,
            runs: BTreeMap::new(),
            next_run: 30_433_642,
            dispatches: Vec::new(),
            dispatch_requests: Vec::new(),
            versions: Vec::new(),
            accepts: Vec::new(),
            list_queries: Vec::new(),
            limits: VecDeque::new(),
            limited: 0,
            unauthorized: 0,
            cancels: Vec::new(),
            script: Vec::new(),
            hide_new_runs_for: 0,
            run_gets: 0,
        }));
        let app = Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                post(dispatch_handler),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
                get(list_runs),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}",
                get(get_workflow),
            )
            .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
            .route(
                "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
                post(cancel_run),
            )
            .route("/repos/{owner}/{repo}/contents/{*path}", get(get_contents))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitHub");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGithub { url, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every new run goes through `states` (status, conclusion), one per GET of the run; it stays
    /// in the last one.
    pub fn script_runs(&self, states: &[(&str, Option<&str>)]) {
        self.lock().script = states
            .iter()
            .map(|(status, conclusion)| (s(status), conclusion.map(s)))
            .collect();
    }

    /// New runs stay out of the runs list for the next `answers` list answers.
    pub fn hide_runs(&self, answers: usize) {
        self.lock().hide_new_runs_for = answers;
    }

    /// Shows every run in the list from now on.
    pub fn reveal_runs(&self) {
        let mut inner = self.lock();
        inner.hide_new_runs_for = 0;
        for run in inner.runs.values_mut() {
            run.hidden_for = 0;
        }
    }

    /// The next requests get these rate limits, one each.
    pub fn limit_next(&self, limits: &[Limit]) {
        self.lock().limits.extend(limits.iter().copied());
    }

    /// Sets a run's state (and drops its script).
    pub fn set_run(&self, id: u64, status: &str, conclusion: Option<&str>) {
        let mut inner = self.lock();
        let run = inner.runs.get_mut(&id).expect("a run the fake has");
        run.script.clear();
        run.status = s(status);
        run.conclusion = conclusion.map(s);
    }

    /// A run titled `title` created at `created_at`, as if someone dispatched it.
    pub fn add_run(&self, title: &str, created_at: DateTime<Utc>, status: &str) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_run;
        inner.next_run += 1;
        inner.runs.insert(
            id,
            FakeRun {
                id,
                workflow: s(WORKFLOW),
                title: s(title),
                branch: s("main"),
                status: s(status),
                conclusion: None,
                created_at,
                inputs: json!({}),
                script: VecDeque::new(),
                hidden_for: 0,
            },
        );
        id
    }

    pub fn runs(&self) -> Vec<FakeRun> {
        self.lock().runs.values().cloned().collect()
    }

    pub fn run(&self, id: u64) -> FakeRun {
        self.lock()
            .runs
            .get(&id)
            .cloned()
            .expect("a run the fake has")
    }

    /// Bodies of the dispatches that created a run.
    pub fn dispatches(&self) -> Vec<Value> {
        self.lock().dispatches.clone()
    }

    /// Bodies of every dispatch request, refused ones too.
    pub fn dispatch_requests(&self) -> Vec<Value> {
        self.lock().dispatch_requests.clone()
    }

    pub fn versions(&self) -> Vec<Option<String>> {
        self.lock().versions.clone()
    }

    pub fn accepts(&self) -> Vec<Option<String>> {
        self.lock().accepts.clone()
    }

    pub fn list_queries(&self) -> Vec<BTreeMap<String, String>> {
        self.lock().list_queries.clone()
    }

    pub fn cancels(&self) -> Vec<u64> {
        self.lock().cancels.clone()
    }

    /// Rate-limited answers sent.
    pub fn limited(&self) -> usize {
        self.lock().limited
    }

    pub fn unauthorized(&self) -> usize {
        self.lock().unauthorized
    }

    pub fn run_gets(&self) -> usize {
        self.lock().run_gets
    }

    /// Disables a workflow (`state: disabled_manually`).
    pub fn disable(&self, workflow: &str) {
        let mut inner = self.lock();
        inner
            .workflows
            .get_mut(workflow)
            .expect("a workflow the fake has")
            .state = s("disabled_manually");
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        Json(json!({
            "message": text,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// Records the headers and answers what comes before the endpoint: a wrong token, a rate limit,
/// another repository.
fn gate(inner: &mut Inner, headers: &HeaderMap, owner: &str, repo: &str) -> Option<Response> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    inner.versions.push(text("x-github-api-version"));
    inner.accepts.push(text("accept"));
    if text("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
        inner.unauthorized += 1;
        return Some(message(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if let Some(limit) = inner.limits.pop_front() {
        inner.limited += 1;
        let reset = (Utc::now().timestamp() + 1).to_string();
        return Some(match limit {
            Limit::Primary => (
                StatusCode::FORBIDDEN,
                [
                    ("x-ratelimit-limit", s("5000")),
                    ("x-ratelimit-remaining", s("0")),
                    ("x-ratelimit-reset", reset),
                ],
                Json(json!({"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"})),
            )
                .into_response(),
            Limit::Secondary => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", s("1"))],
                Json(json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."})),
            )
                .into_response(),
        });
    }
    if format!("{owner}/{repo}") != REPO {
        return Some(message(StatusCode::NOT_FOUND, "Not Found"));
    }
    None
}

fn run_json(url: &str, run: &FakeRun) -> Value {
    let mut value: Value = serde_json::from_str(RUN_TEMPLATE).expect("the workflow-run fixture");
    let at = run.created_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let fields = value.as_object_mut().expect("a run is an object");
    fields.insert(s("id"), json!(run.id));
    fields.insert(s("name"), json!("Deploy"));
    fields.insert(s("display_title"), json!(run.title));
    fields.insert(s("status"), json!(run.status));
    fields.insert(s("conclusion"), json!(run.conclusion));
    fields.insert(s("event"), json!("workflow_dispatch"));
    fields.insert(s("head_branch"), json!(run.branch));
    fields.insert(s("created_at"), json!(at));
    fields.insert(s("updated_at"), json!(at));
    fields.insert(s("run_started_at"), json!(at));
    fields.insert(
        s("url"),
        json!(format!("{url}/repos/{REPO}/actions/runs/{}", run.id)),
    );
    fields.insert(
        s("html_url"),
        json!(format!("https://github.com/{REPO}/actions/runs/{}", run.id)),
    );
    value
}

async fn dispatch_handler(
    State(shared): State<Shared>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    inner.dispatch_requests.push(body.clone());
    let Some(flow) = inner.workflows.get(&workflow) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if !flow.yaml.contains("workflow_dispatch") {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Workflow does not have 'workflow_dispatch' trigger",
        );
    }
    let asks = body.get("return_run_details").is_some();
    if inner.dispatch == Dispatch::Ghes && asks {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
        );
    }
    let Some(git_ref) = body.get("ref").and_then(Value::as_str) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        );
    };
    let inputs = body.get("inputs").cloned().unwrap_or_else(|| json!({}));
    if inputs.as_object().is_some_and(|i| i.len() > 25) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "you may only define up to 25 `inputs` for a `workflow_dispatch` event",
        );
    }
    if inputs
        .as_object()
        .is_some_and(|i| i.values().any(|v| !v.is_string()))
    {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\nFor 'properties/inputs', values must be strings.",
        );
    }
    let title = format!(
        "shipmate-{}",
        inputs
            .get("promotion_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let id = inner.next_run;
    inner.next_run += 1;
    let mut script: VecDeque<_> = inner.script.iter().cloned().collect();
    let (status, conclusion) = script.pop_front().unwrap_or_else(|| (s("queued"), None));
    let run = FakeRun {
        id,
        workflow: workflow.clone(),
        title,
        branch: s(git_ref),
        status,
        conclusion,
        created_at: Utc::now(),
        inputs,
        script,
        hidden_for: inner.hide_new_runs_for,
    };
    inner.runs.insert(id, run);
    inner.dispatches.push(body);
    if inner.dispatch == Dispatch::RunDetails && asks {
        return (
            StatusCode::OK,
            Json(json!({
                "workflow_run_id": id,
                "run_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}"),
                "html_url": format!("https://github.com/{REPO}/actions/runs/{id}"),
            })),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_runs(
    State(shared): State<Shared>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let url = {
        // The fake's own URL is only needed for `url` fields; the host header has it.
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(|h| format!("http://{h}"))
            .unwrap_or_default()
    };
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    inner.list_queries.push(query.clone());
    if !inner.workflows.contains_key(&workflow) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let since = match query.get("created").map(|c| c.strip_prefix(">=")) {
        None => None,
        Some(Some(at)) => match DateTime::parse_from_rfc3339(at) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(_) => return message(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"),
        },
        Some(None) => return message(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"),
    };
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let mut shown = Vec::new();
    for run in inner.runs.values_mut().rev() {
        if run.workflow != workflow {
            continue;
        }
        if run.hidden_for > 0 {
            run.hidden_for -= 1;
            continue;
        }
        if query.get("event").is_some_and(|e| e != "workflow_dispatch")
            || query.get("branch").is_some_and(|b| b != &run.branch)
            || since.is_some_and(|since| run.created_at < since)
        {
            continue;
        }
        shown.push(run.clone());
    }
    let total = shown.len();
    let runs: Vec<Value> = shown
        .iter()
        .take(per_page)
        .map(|run| run_json(&url, run))
        .collect();
    Json(json!({"total_count": total, "workflow_runs": runs})).into_response()
}

async fn get_run(
    State(shared): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    inner.run_gets += 1;
    let Some(run) = inner.runs.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let shown = run.clone();
    if let Some((status, conclusion)) = run.script.pop_front() {
        run.status = status;
        run.conclusion = conclusion;
    }
    Json(run_json("", &shown)).into_response()
}

async fn cancel_run(
    State(shared): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    inner.cancels.push(id);
    let Some(run) = inner.runs.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if run.status == "completed" {
        return message(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        );
    }
    run.script.clear();
    run.status = s("completed");
    run.conclusion = Some(s("cancelled"));
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn get_workflow(
    State(shared): State<Shared>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    let found = inner
        .workflows
        .iter()
        .find(|(file, flow)| **file == workflow || flow.id.to_string() == workflow);
    let Some((_, flow)) = found else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    Json(json!({
        "id": flow.id,
        "node_id": "MDg6V29ya2Zsb3cxNjEzMzU=",
        "name": flow.name,
        "path": flow.path,
        "state": flow.state,
        "created_at": "2020-01-08T23:48:37.000-08:00",
        "updated_at": "2020-01-08T23:50:21.000-08:00",
        "url": format!("https://api.github.com/repos/{REPO}/actions/workflows/{}", flow.id),
        "html_url": format!("https://github.com/{REPO}/blob/main/{}", flow.path),
        "badge_url": format!("https://github.com/{REPO}/workflows/{}/badge.svg", flow.name),
    }))
    .into_response()
}

async fn get_contents(
    State(shared): State<Shared>,
    Path((owner, repo, path)): Path<(String, String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    if let Some(answer) = gate(&mut inner, &headers, &owner, &repo) {
        return answer;
    }
    if query.get("ref").is_some_and(|r| r != "main") {
        return message(StatusCode::NOT_FOUND, "No commit found for the ref");
    }
    let Some(flow) = inner.workflows.values().find(|flow| flow.path == path) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    // GitHub wraps the base64 at 60 characters.
    let packed = base64::engine::general_purpose::STANDARD.encode(flow.yaml.as_bytes());
    let wrapped: Vec<String> = packed
        .as_bytes()
        .chunks(60)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    let name = path.rsplit('/').next().unwrap_or_default();
    Json(json!({
        "type": "file",
        "encoding": "base64",
        "size": flow.yaml.len(),
        "name": name,
        "path": path,
        "content": wrapped.join("\n") + "\n",
        "sha": "3d21ec53a331a6f037a91c368710b99387d012c1",
        "url": format!("https://api.github.com/repos/{REPO}/contents/{path}"),
    }))
    .into_response()
}
