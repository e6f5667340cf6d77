//! `github_actions` (SPEC §5): dispatches a workflow, finds its run, and polls the run to its end.
//!
//! Wire (notes/backends.md §4): `POST /repos/{repo}/actions/workflows/{workflow}/dispatches` with
//! `return_run_details: true`; a 200 names the run. A 204 (an older GitHub), or a GHES that refuses
//! the key (`"return_run_details" is not a permitted key.`, then sent again without it), names no
//! run, so the bot looks for it by its title: the workflow sets
//! `run-name: shipmate-${{ inputs.promotion_id }}`. Then `GET /repos/{repo}/actions/runs/{id}` every
//! `poll_every` until `completed`. The handle is `{"run_id", "html_url"}`; a resumed call without
//! one looks for the run before it dispatches again.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::http::{self, Answer, HttpError};
use super::template::substitute;
use super::{Backend, DeployCall, DeployOutcome, DeployRequest};
use crate::domain::rollout::Step;

/// The REST API version every request pins.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub takes at most this many workflow inputs.
pub const MAX_INPUTS: usize = 25;
/// How far back the runs list is asked for, before the call started (`created=>=…`).
const LIST_SINCE: chrono::Duration = chrono::Duration::minutes(2);
/// A run titled as ours counts when created no earlier than this before the call started
/// (GitHub's clock against ours). Canary steps of one promotion share a title; their pauses keep
/// them further apart than this.
const SKEW: chrono::Duration = chrono::Duration::seconds(30);
/// How long after the dispatch a run may take to show in the list.
const FIND_FOR: Duration = Duration::from_secs(60);
/// Between two looks at the runs list.
const FIND_EVERY: Duration = Duration::from_secs(2);
/// A best-effort cancel or a `check-backends` call gives up after this.
const SHORT_CALL: Duration = Duration::from_secs(15);

/// What a `github_actions` backend needs; built by `app` from `bot.toml`.
#[derive(Clone)]
pub struct GithubSettings {
    /// `owner/name`.
    pub repo: String,
    /// File name (`deploy.yml`) or numeric id.
    pub workflow: String,
    pub git_ref: String,
    pub token: String,
    /// Extra inputs; values may hold `{placeholders}`.
    pub inputs: BTreeMap<String, String>,
    /// `https://api.github.com`, or `https://ghes.example.com/api/v3`, without a trailing `/`.
    pub api_url: String,
    pub poll_every: Duration,
    pub timeout: Duration,
}

impl fmt::Debug for GithubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubSettings")
            .field("repo", &self.repo)
            .field("workflow", &self.workflow)
            .field("git_ref", &self.git_ref)
            .field("token", &"***")
            .field("inputs", &self.inputs)
            .field("api_url", &self.api_url)
            .field("poll_every", &self.poll_every)
            .field("timeout", &self.timeout)
            .finish()
    }
}

// ---- GitHub's payloads (the fields the bot reads; tests/fixtures/github holds real examples) ----

/// `workflow-dispatch-response`: the 200 of a dispatch with `return_run_details`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DispatchResponse {
    pub workflow_run_id: u64,
    pub run_url: String,
    pub html_url: String,
}

/// `workflow-run`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_title: Option<String>,
    /// `requested, queued, pending, waiting, in_progress, completed`.
    #[serde(default)]
    pub status: Option<String>,
    /// Set once `completed`: `success, failure, cancelled, timed_out, …`.
    #[serde(default)]
    pub conclusion: Option<String>,
    pub html_url: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub run_attempt: Option<u64>,
}

/// The list of `GET …/workflows/{workflow}/runs`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WorkflowRuns {
    pub total_count: u64,
    pub workflow_runs: Vec<WorkflowRun>,
}

/// `workflow`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Workflow {
    pub id: u64,
    pub name: String,
    /// `.github/workflows/deploy.yml`.
    pub path: String,
    /// `active`, `disabled_manually`, …
    pub state: String,
}

/// `content-file`: a file of the repository, base64 in `content`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContentFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

impl ContentFile {
    /// The file's text (GitHub wraps its base64 in lines).
    pub fn text(&self) -> Result<String, String> {
        let content = self.content.as_deref().unwrap_or_default();
        let packed: String = content.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(packed.as_bytes())
            .map_err(|e| format!("{} is not base64 as GitHub sends it: {e}", self.path))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The stored handle: which run to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    id: u64,
    html_url: String,
}

impl Run {
    fn from_handle(handle: &Value) -> Option<Run> {
        Some(Run {
            id: handle.get("run_id")?.as_u64()?,
            html_url: handle
                .get("html_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn handle(&self) -> Value {
        json!({ "run_id": self.id, "html_url": self.html_url })
    }
}

/// The workflow inputs of one call: the bot's own four, `inputs` (placeholders filled), and for
/// a rollout step beyond a plain deploy `step`, `steps`, `weight` and `phase`. The bot's own win
/// over a configured input of the same name. All values are strings, as GitHub wants them.
pub fn workflow_inputs(
    configured: &BTreeMap<String, String>,
    request: &DeployRequest,
) -> Map<String, Value> {
    let mut inputs = Map::new();
    for (name, value) in configured {
        inputs.insert(name.clone(), Value::String(substitute(value, request)));
    }
    let mut own = vec![
        ("version", request.version.clone()),
        ("environment", request.environment.clone()),
        ("promotion_id", request.promotion_id.to_string()),
        ("rollback", request.rollback.to_string()),
    ];
    if request.step != Step::FULL {
        own.extend([
            ("step", request.step.number.to_string()),
            ("steps", request.step.of.to_string()),
            ("weight", request.step.weight.to_string()),
            ("phase", request.step.phase.to_string()),
        ]);
    }
    for (name, value) in own {
        inputs.insert(name.to_string(), Value::String(value));
    }
    inputs
}

/// `shipmate-<promotion_id>`: the run-name the workflow gives its runs.
pub fn run_title(promotion_id: i64) -> String {
    format!("shipmate-{promotion_id}")
}

/// The `message` of a GitHub error body, or the start of the body.
fn message_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| http::quote(body))
}

/// How a call goes on after one step of the protocol.
enum Then<T> {
    Go(T),
    End(DeployOutcome),
}

pub struct GithubActionsBackend {
    settings: GithubSettings,
    client: Result<Client, String>,
}

impl fmt::Debug for GithubActionsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubActionsBackend")
            .field("settings", &self.settings)
            .finish()
    }
}

impl GithubActionsBackend {
    pub fn new(settings: GithubSettings) -> GithubActionsBackend {
        GithubActionsBackend {
            settings,
            client: http::client(),
        }
    }

    fn url(&self, rest: &str) -> String {
        format!(
            "{}/repos/{}{rest}",
            self.settings.api_url, self.settings.repo
        )
    }

    fn workflow_url(&self, rest: &str) -> String {
        self.url(&format!(
            "/actions/workflows/{}{rest}",
            self.settings.workflow
        ))
    }

    fn signed(&self, builder: RequestBuilder) -> RequestBuilder {
        builder
            .bearer_auth(&self.settings.token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
    }

    /// The sentence for a refused or failed call.
    fn reason(&self, error: &HttpError) -> String {
        match error {
            HttpError::Refused { status: 404, .. } => self.not_found(),
            HttpError::Refused { status, body } => {
                format!("GitHub answered {status}: {}", message_of(body))
            }
            other => other.reason("GitHub"),
        }
    }

    fn not_found(&self) -> String {
        format!(
            "GitHub answered 404: no workflow {} in {}, or the token may not see it",
            self.settings.workflow, self.settings.repo
        )
    }

    /// Sends the dispatch; `Some(run)` when GitHub named it (200), `None` when it accepted
    /// without naming one (204, or the GHES fallback).
    async fn dispatch(
        &self,
        client: &Client,
        call: &DeployCall,
        deadline: Instant,
    ) -> Result<Option<Run>, String> {
        let inputs = workflow_inputs(&self.settings.inputs, &call.request);
        if inputs.len() > MAX_INPUTS {
            return Err(format!(
                "this deploy would send {} workflow inputs, more than GitHub's {MAX_INPUTS}; drop some of the backend's `inputs`",
                inputs.len()
            ));
        }
        let url = self.workflow_url("/dispatches");
        let mut body = json!({
            "ref": self.settings.git_ref,
            "inputs": inputs,
            "return_run_details": true,
        });
        let mut answer = self
            .post_dispatch(client, &url, &body, deadline, call)
            .await?;
        if answer.status.as_u16() == 422 && answer.body.contains("return_run_details") {
            // GHES ≤ 3.19: "\"return_run_details\" is not a permitted key."
            tracing::info!(repo = %self.settings.repo, "GitHub refused return_run_details; dispatching without it");
            if let Some(fields) = body.as_object_mut() {
                fields.remove("return_run_details");
            }
            answer = self
                .post_dispatch(client, &url, &body, deadline, call)
                .await?;
        }
        match answer.status.as_u16() {
            404 => Err(self.not_found()),
            422 => Err(format!("GitHub answered 422: {}", message_of(&answer.body))),
            _ if answer.body.trim().is_empty() => Ok(None),
            _ => {
                let named: DispatchResponse = serde_json::from_str(&answer.body).map_err(|e| {
                    format!(
                        "GitHub answered {} to the dispatch with a body the bot cannot read ({e}): {}",
                        answer.status.as_u16(),
                        http::quote(&answer.body)
                    )
                })?;
                Ok(Some(Run {
                    id: named.workflow_run_id,
                    html_url: named.html_url,
                }))
            }
        }
    }

    async fn post_dispatch(
        &self,
        client: &Client,
        url: &str,
        body: &Value,
        deadline: Instant,
        call: &DeployCall,
    ) -> Result<Answer, String> {
        http::send(
            || self.signed(client.post(url)).json(body),
            &[404, 422],
            deadline,
            call.stopped(),
        )
        .await
        .map_err(|e| self.reason(&e))
    }

    /// One look at the runs list for the run titled `shipmate-<promotion_id>` created since the
    /// call started (less [`SKEW`]); the newest such run.
    async fn look_for_run(
        &self,
        client: &Client,
        call: &DeployCall,
        deadline: Instant,
    ) -> Result<Option<Run>, HttpError> {
        let since = (call.started_at - LIST_SINCE).to_rfc3339_opts(SecondsFormat::Secs, true);
        let created = format!(">={since}");
        let url = self.workflow_url("/runs");
        let answer = http::send(
            || {
                self.signed(client.get(&url)).query(&[
                    ("event", "workflow_dispatch"),
                    ("branch", self.settings.git_ref.as_str()),
                    ("created", created.as_str()),
                    ("per_page", "20"),
                ])
            },
            &[],
            deadline,
            call.stopped(),
        )
        .await?;
        let runs: WorkflowRuns =
            serde_json::from_str(&answer.body).map_err(|e| HttpError::GaveUp {
                last: format!("the runs list is not what GitHub sends ({e})"),
            })?;
        let title = run_title(call.request.promotion_id);
        let earliest = call.started_at - SKEW;
        Ok(runs
            .workflow_runs
            .into_iter()
            .filter(|run| run.display_title.as_deref() == Some(title.as_str()))
            .filter(|run| run.created_at >= earliest)
            .max_by_key(|run| (run.created_at, run.id))
            .map(|run| Run {
                id: run.id,
                html_url: run.html_url,
            }))
    }

    /// Looks for our run until `until` (or the deadline); `None` when it never showed.
    async fn find_run(
        &self,
        client: &Client,
        call: &DeployCall,
        until: Instant,
        deadline: Instant,
    ) -> Result<Option<Run>, HttpError> {
        loop {
            if let Some(run) = self.look_for_run(client, call, deadline).await? {
                return Ok(Some(run));
            }
            if Instant::now() + FIND_EVERY > until.min(deadline) {
                return Ok(None);
            }
            tokio::select! {
                () = call.stopped() => return Err(HttpError::Stopped),
                () = tokio::time::sleep(FIND_EVERY) => {}
            }
        }
    }

    /// Dispatches (or, resumed without a handle, first looks for a run a previous holder may have
    /// dispatched) until the run is known.
    async fn start(&self, client: &Client, call: &DeployCall, deadline: Instant) -> Then<Run> {
        let title = run_title(call.request.promotion_id);
        if call.resumed {
            // The previous holder may have dispatched and died before it stored the run: its run
            // shows up to FIND_FOR after the call started (`spent` ago).
            let until = Instant::now() + FIND_FOR.saturating_sub(call.spent);
            match self.find_run(client, call, until, deadline).await {
                Ok(Some(run)) => {
                    tracing::info!(run = run.id, "found the run a previous holder dispatched");
                    return Then::Go(run);
                }
                Ok(None) => {}
                Err(e) => return Then::End(self.ended_early(call, &e)),
            }
        }
        let named = match self.dispatch(client, call, deadline).await {
            Ok(named) => named,
            Err(_) if call.abort.is_cancelled() || call.detach.is_cancelled() => {
                return Then::End(DeployOutcome::Cancelled)
            }
            Err(reason) => return Then::End(DeployOutcome::Failed { reason }),
        };
        if let Some(run) = named {
            return Then::Go(run);
        }
        call.report
            .status(format!(
                "GitHub accepted the dispatch of {}; looking for run {title}",
                self.settings.workflow
            ))
            .await;
        match self
            .find_run(client, call, Instant::now() + FIND_FOR, deadline)
            .await
        {
            Ok(Some(run)) => Then::Go(run),
            Ok(None) => Then::End(DeployOutcome::Failed {
                reason: format!(
                    "GitHub accepted the dispatch of {} in {} but no run titled {title} on {} appeared within {}s; the workflow must set `run-name: shipmate-${{{{ inputs.promotion_id }}}}`",
                    self.settings.workflow,
                    self.settings.repo,
                    self.settings.git_ref,
                    FIND_FOR.as_secs()
                ),
            }),
            Err(e) => Then::End(self.ended_early(call, &e)),
        }
    }

    /// The outcome when a call to GitHub did not answer: stopped, or a failure.
    fn ended_early(&self, call: &DeployCall, error: &HttpError) -> DeployOutcome {
        if call.is_stopped() || matches!(error, HttpError::Stopped) {
            DeployOutcome::Cancelled
        } else {
            DeployOutcome::Failed {
                reason: self.reason(error),
            }
        }
    }

    /// Asks GitHub to cancel the run (best effort: a failure is logged, not reported).
    async fn cancel(&self, client: &Client, run: &Run) {
        let url = self.url(&format!("/actions/runs/{}/cancel", run.id));
        let deadline = Instant::now() + SHORT_CALL;
        match http::send(
            || self.signed(client.post(&url)),
            &[409],
            deadline,
            std::future::pending(),
        )
        .await
        {
            Ok(answer) => {
                tracing::info!(
                    run = run.id,
                    status = answer.status.as_u16(),
                    "asked GitHub to cancel the run"
                )
            }
            Err(e) => {
                tracing::warn!(run = run.id, error = %self.reason(&e), "could not cancel the GitHub run")
            }
        }
    }

    /// Polls the run until it completes, the call is stopped, or the deadline.
    async fn watch(
        &self,
        client: &Client,
        call: &DeployCall,
        run: &Run,
        deadline: Instant,
    ) -> DeployOutcome {
        let url = self.url(&format!("/actions/runs/{}", run.id));
        let mut html_url = run.html_url.clone();
        let mut last_status: Option<String> = None;
        loop {
            let answer = http::send(
                || self.signed(client.get(&url)),
                &[],
                deadline,
                call.stopped(),
            )
            .await;
            let seen = match answer {
                Ok(answer) => serde_json::from_str::<WorkflowRun>(&answer.body).map_err(|e| {
                    format!(
                        "GitHub's run {} is not what GitHub sends ({e}): {}",
                        run.id,
                        http::quote(&answer.body)
                    )
                }),
                Err(HttpError::Refused { status: 404, .. }) => Err(format!(
                    "GitHub answered 404 for run {} of {} in {}: it was deleted, or the token may not see it",
                    run.id, self.settings.workflow, self.settings.repo
                )),
                Err(HttpError::GaveUp { .. }) if Instant::now() >= deadline => {
                    return self.timed_out(client, call, run, &html_url).await
                }
                Err(e) => return self.ended_early_watching(client, call, run, &e).await,
            };
            let seen = match seen {
                Ok(seen) => seen,
                Err(reason) => return DeployOutcome::Failed { reason },
            };
            if !seen.html_url.is_empty() {
                html_url.clone_from(&seen.html_url);
            }
            let status = seen.status.clone().unwrap_or_else(|| "queued".to_string());
            if status == "completed" {
                let conclusion = seen.conclusion.as_deref().unwrap_or("without a conclusion");
                call.report
                    .line(format!("GitHub run {} completed: {conclusion}", run.id))
                    .await;
                return match conclusion {
                    "success" => DeployOutcome::Succeeded,
                    other => DeployOutcome::Failed {
                        reason: format!(
                            "GitHub run {} of {} ended {other}: {html_url}",
                            run.id, self.settings.workflow
                        ),
                    },
                };
            }
            if last_status.as_deref() != Some(status.as_str()) {
                let text = match status.as_str() {
                    "waiting" => format!(
                        "GitHub run {} waiting for a GitHub environment approval: {html_url}",
                        run.id
                    ),
                    other => format!("GitHub run {} {other}: {html_url}", run.id),
                };
                call.report.status(text.clone()).await;
                call.report.line(text).await;
                last_status = Some(status);
            }
            tokio::select! {
                () = call.abort.cancelled() => {
                    self.cancel(client, run).await;
                    return DeployOutcome::Cancelled;
                }
                () = call.detach.cancelled() => return DeployOutcome::Cancelled,
                () = tokio::time::sleep_until(deadline) => {
                    return self.timed_out(client, call, run, &html_url).await;
                }
                () = tokio::time::sleep(self.settings.poll_every) => {}
            }
        }
    }

    async fn ended_early_watching(
        &self,
        client: &Client,
        call: &DeployCall,
        run: &Run,
        error: &HttpError,
    ) -> DeployOutcome {
        if call.abort.is_cancelled() {
            self.cancel(client, run).await;
        }
        self.ended_early(call, error)
    }

    async fn timed_out(
        &self,
        client: &Client,
        call: &DeployCall,
        run: &Run,
        html_url: &str,
    ) -> DeployOutcome {
        self.cancel(client, run).await;
        call.report
            .line(format!(
                "GitHub run {} cancelled: the deploy timed out",
                run.id
            ))
            .await;
        DeployOutcome::Failed {
            reason: format!(
                "timed out after {}: GitHub run {} of {} had not completed; asked GitHub to cancel it: {html_url}",
                humantime::format_duration(self.settings.timeout),
                run.id,
                self.settings.workflow
            ),
        }
    }
}

#[async_trait]
impl Backend for GithubActionsBackend {
    fn kind(&self) -> &'static str {
        "github_actions"
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn deploy(&self, call: DeployCall) -> DeployOutcome {
        self.for_request(&call.request).run(call).await
    }

    async fn check(&self, _service: &str, _environment: &str) -> Result<String, String> {
        self.check_workflow().await
    }
}

impl GithubActionsBackend {
    /// This backend with `{placeholders}` in `repo`, `workflow` and `ref` filled for `request`.
    fn for_request(&self, request: &DeployRequest) -> GithubActionsBackend {
        let mut settings = self.settings.clone();
        settings.repo = substitute(&settings.repo, request);
        settings.workflow = substitute(&settings.workflow, request);
        settings.git_ref = substitute(&settings.git_ref, request);
        GithubActionsBackend {
            settings,
            client: self.client.clone(),
        }
    }

    async fn run(&self, call: DeployCall) -> DeployOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => {
                return DeployOutcome::Failed {
                    reason: e.to_string(),
                }
            }
        };
        let deadline = call.deadline(self.settings.timeout);
        let stored = call.handle.as_ref().and_then(Run::from_handle);
        let run = match stored {
            Some(run) => run,
            None => {
                let run = match self.start(client, &call, deadline).await {
                    Then::Go(run) => run,
                    Then::End(outcome) => {
                        if Instant::now() >= deadline {
                            if let DeployOutcome::Failed { reason } = outcome {
                                return DeployOutcome::Failed {
                                    reason: format!(
                                        "timed out after {} before the GitHub run was found: {reason}",
                                        humantime::format_duration(self.settings.timeout)
                                    ),
                                };
                            }
                        }
                        return outcome;
                    }
                };
                call.report.handle(run.handle()).await;
                call.report
                    .line(format!("GitHub run {}: {}", run.id, run.html_url))
                    .await;
                run
            }
        };
        if call.abort.is_cancelled() {
            self.cancel(client, &run).await;
            return DeployOutcome::Cancelled;
        }
        self.watch(client, &call, &run, deadline).await
    }

    /// `check-backends`: the workflow exists, is active, and its file has a `workflow_dispatch`
    /// trigger.
    async fn check_workflow(&self) -> Result<String, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let deadline = Instant::now() + SHORT_CALL;
        let url = self.workflow_url("");
        let answer = http::send(
            || self.signed(client.get(&url)),
            &[],
            deadline,
            std::future::pending(),
        )
        .await
        .map_err(|e| self.reason(&e))?;
        let workflow: Workflow = serde_json::from_str(&answer.body).map_err(|e| {
            format!(
                "GitHub's workflow {} is not what GitHub sends ({e}): {}",
                self.settings.workflow,
                http::quote(&answer.body)
            )
        })?;
        if workflow.state != "active" {
            return Err(format!(
                "workflow {} in {} is {}, not active; enable it in the repository's Actions tab",
                workflow.path, self.settings.repo, workflow.state
            ));
        }
        // The REST API does not say which triggers a workflow has: read its file at `ref` and look
        // for the word (a text check, not a YAML parse).
        let url = self.url(&format!("/contents/{}", workflow.path));
        let answer = http::send(
            || {
                self.signed(client.get(&url))
                    .query(&[("ref", self.settings.git_ref.as_str())])
            },
            &[404],
            deadline,
            std::future::pending(),
        )
        .await
        .map_err(|e| self.reason(&e))?;
        if answer.status.as_u16() == 404 {
            return Err(format!(
                "GitHub answered 404: no file {} on {} in {}; is `ref` right?",
                workflow.path, self.settings.git_ref, self.settings.repo
            ));
        }
        let file: ContentFile = serde_json::from_str(&answer.body).map_err(|e| {
            format!(
                "GitHub's file {} is not what GitHub sends ({e}): {}",
                workflow.path,
                http::quote(&answer.body)
            )
        })?;
        let text = file.text()?;
        if !text.contains("workflow_dispatch") {
            return Err(format!(
                "workflow {} in {} (on {}) has no workflow_dispatch trigger; add `on: workflow_dispatch` with the inputs shipmate sends",
                workflow.path, self.settings.repo, self.settings.git_ref
            ));
        }
        Ok(format!(
            "workflow {} ({}) in {} is active and has a workflow_dispatch trigger on {}",
            workflow.path, workflow.name, self.settings.repo, self.settings.git_ref
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::Phase;

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

    #[test]
    fn inputs_are_strings_with_placeholders_filled_and_steps_only_for_rollouts() {
        let configured = BTreeMap::from([
            ("cluster".to_string(), "eu-1".to_string()),
            ("from".to_string(), "{previous_version}".to_string()),
            ("version".to_string(), "mine".to_string()),
        ]);
        let plain = workflow_inputs(&configured, &request(Step::FULL));
        assert_eq!(
            Value::Object(plain),
            json!({"cluster": "eu-1", "from": "1.4.1", "version": "1.4.2",
                   "environment": "production", "promotion_id": "42", "rollback": "false"})
        );
        let canary = Step {
            number: 2,
            of: 3,
            weight: 50,
            phase: Phase::Deploy,
        };
        let stepped = workflow_inputs(&configured, &request(canary));
        assert_eq!(stepped["step"], "2");
        assert_eq!(stepped["steps"], "3");
        assert_eq!(stepped["weight"], "50");
        assert_eq!(stepped["phase"], "deploy");
        assert_eq!(stepped.len(), 10);
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let settings = GithubSettings {
            repo: "acme/api".to_string(),
            workflow: "deploy.yml".to_string(),
            git_ref: "main".to_string(),
            token: "ghp_secret_value".to_string(),
            inputs: BTreeMap::new(),
            api_url: "https://api.github.com".to_string(),
            poll_every: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        };
        let backend = GithubActionsBackend::new(settings);
        let text = format!("{backend:?}");
        assert!(!text.contains("ghp_secret_value"), "{text}");
        assert!(text.contains("acme/api"), "{text}");
    }

    #[test]
    fn error_messages_are_quoted_from_githubs_json() {
        assert_eq!(
            message_of(
                r#"{"message":"Workflow does not have 'workflow_dispatch' trigger","documentation_url":"x"}"#
            ),
            "Workflow does not have 'workflow_dispatch' trigger"
        );
        assert_eq!(message_of("plain\ntext"), "plain text");
    }

    #[test]
    fn a_handle_round_trips() {
        let run = Run {
            id: 30433642,
            html_url: "https://github.com/acme/api/actions/runs/30433642".to_string(),
        };
        assert_eq!(Run::from_handle(&run.handle()), Some(run));
        assert_eq!(Run::from_handle(&json!({"status_url": "x"})), None);
    }
}
