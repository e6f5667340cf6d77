//! `kind = "argocd"` (SPEC §5): with `image`, set it as the application's kustomize image
//! override (`PATCH /api/v1/applications/{app}`), then `POST …/sync`, then poll
//! `GET /api/v1/applications/{app}` until the operation **this call started** has succeeded and
//! the application is `Synced` and `Healthy`.
//!
//! "Ours" is told by time: the operation's `startedAt` is at or after the moment the call began
//! (`DeployCall::started_at`, just before it asked for the sync; whole seconds, as Argo CD writes
//! it), and, when it equals the start of the operation
//! shown just before the sync, only once it has been seen running. The first answers after a sync
//! can still show the previous operation, `Succeeded` and `Healthy`; that is not accepted. The
//! handle is `{"sync_requested_at", "previous_started_at"}` (RFC 3339). A resumed call without a handle looks at the
//! application first: an operation started since the call began is ours to watch; otherwise
//! it syncs.
//!
//! Argo CD has no traffic weights: every `deploy` call (each canary step included) sets the image
//! and syncs, which after the first step changes nothing; `switch` and `discard` calls of
//! blue-green have nothing to do on Argo CD and succeed at once, saying so.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::http::{self, HttpError};
use super::template::substitute;
use super::{Backend, DeployCall, DeployOutcome, DeployRequest};
use crate::domain::rollout::Phase;

const WHAT: &str = "Argo CD";
/// A terminate or a check is one short try.
const SHORT_CALL: Duration = Duration::from_secs(10);
const CHECK_PATIENCE: Duration = Duration::from_secs(30);
/// Polls in a row a finished sync may show `Degraded` or `Missing` before that is a failure
/// (health is recomputed a moment after the operation ends).
const UNHEALTHY_POLLS: u32 = 3;

/// The settings of one environment's Argo CD backend.
#[derive(Clone)]
pub struct ArgocdSettings {
    /// The server, e.g. `https://argocd.example.com`.
    pub url: String,
    /// The application; may hold placeholders.
    pub app: String,
    pub token: String,
    /// Set as the kustomize image override before the sync (`ghcr.io/acme/api:{version}`).
    pub image: Option<String>,
    /// The revision to sync; the application's own when `None`.
    pub revision: Option<String>,
    pub timeout: Duration,
    pub poll_every: Duration,
}

impl fmt::Debug for ArgocdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArgocdSettings")
            .field("url", &self.url)
            .field("app", &self.app)
            .field("token", &"<redacted>")
            .field("image", &self.image)
            .field("revision", &self.revision)
            .field("timeout", &self.timeout)
            .field("poll_every", &self.poll_every)
            .finish()
    }
}

#[derive(Debug)]
pub struct ArgocdBackend {
    settings: ArgocdSettings,
    client: Result<reqwest::Client, String>,
}

/// What one `GET` of the application says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppState {
    phase: Option<String>,
    started_at: Option<DateTime<Utc>>,
    message: Option<String>,
    sync: String,
    health: String,
}

impl AppState {
    fn read(app: &Value) -> AppState {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let operation = &app["status"]["operationState"];
        AppState {
            phase: text(&operation["phase"]),
            started_at: operation["startedAt"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            message: text(&operation["message"]).filter(|m| !m.trim().is_empty()),
            sync: text(&app["status"]["sync"]["status"]).unwrap_or_else(|| "Unknown".into()),
            health: text(&app["status"]["health"]["status"]).unwrap_or_else(|| "Unknown".into()),
        }
    }

    /// The operation shown was started at or after `since`.
    fn is_ours(&self, since: DateTime<Utc>) -> bool {
        self.started_at
            .is_some_and(|started| started >= since.trunc_subsecs(0))
    }

    /// Still running (not a finished one).
    fn is_running(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Running" | "Terminating"))
    }
}

/// How to tell the operation a call started from the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ours {
    /// When the call that asked for the sync began (whole seconds).
    since: DateTime<Utc>,
    /// The start of the operation the application showed just before: Argo CD keeps whole
    /// seconds, so an operation that began in the same second as ours shows the same time, and
    /// one with that time is ours only once it has been seen running.
    previous: Option<DateTime<Utc>>,
}

impl Ours {
    fn handle(&self) -> Value {
        json!({
            "sync_requested_at": self.since.to_rfc3339(),
            "previous_started_at": self.previous.map(|p| p.to_rfc3339()),
        })
    }

    fn from_handle(handle: &Value) -> Option<Ours> {
        let time = |key: &str| {
            handle[key]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        Some(Ours {
            since: time("sync_requested_at")?,
            previous: time("previous_started_at"),
        })
    }

    /// `state` shows our operation; `seen_running` says ours was already seen running.
    fn owns(&self, state: &AppState, seen_running: bool) -> bool {
        state.is_ours(self.since)
            && (self.previous.is_none()
                || state.started_at != self.previous
                || seen_running
                || state.is_running())
    }
}

impl ArgocdBackend {
    pub fn new(settings: ArgocdSettings) -> ArgocdBackend {
        ArgocdBackend {
            settings,
            client: http::client(),
        }
    }

    fn app_url(&self, app: &str) -> String {
        application_url(&self.settings.url, app)
    }

    fn authed(&self, client: &reqwest::Client, method: Method, url: &str) -> RequestBuilder {
        client
            .request(method, url)
            .bearer_auth(&self.settings.token)
            .header(reqwest::header::ACCEPT, "application/json")
    }

    async fn get_app(
        &self,
        client: &reqwest::Client,
        app_url: &str,
        deadline: Instant,
        call: &DeployCall,
    ) -> Result<AppState, HttpError> {
        let answer = http::send(
            || self.authed(client, Method::GET, app_url),
            &[],
            deadline,
            call.stopped(),
        )
        .await?;
        let body = answer.json().map_err(|e| HttpError::GaveUp {
            last: format!("{WHAT} {e}"),
        })?;
        Ok(AppState::read(&body))
    }

    /// `DELETE …/operation`, best effort: stops a sync that is still running.
    async fn terminate(&self, client: &reqwest::Client, app_url: &str, app: &str) {
        let sent = self
            .authed(client, Method::DELETE, &format!("{app_url}/operation"))
            .timeout(SHORT_CALL)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(app, "Argo CD operation terminated");
            }
            Ok(response) => tracing::warn!(
                app,
                status = response.status().as_u16(),
                "Argo CD refused to terminate the operation"
            ),
            Err(e) => {
                tracing::warn!(app, error = %e.without_url(), "could not terminate the Argo CD operation")
            }
        }
    }

    /// A reason for an error, with a hint where Argo CD's own words mislead.
    fn reason(&self, error: &HttpError, app: &str) -> String {
        let reason = match error {
            // grpc-gateway's `{"error","code","message"}`: its message is what a person reads.
            HttpError::Refused { status, body } => {
                let said = serde_json::from_str::<Value>(body).ok().and_then(|b| {
                    b["message"]
                        .as_str()
                        .or(b["error"].as_str())
                        .filter(|m| !m.trim().is_empty())
                        .map(str::to_string)
                });
                match said {
                    Some(message) => format!("{WHAT} answered {status}: {message}"),
                    None => error.reason(WHAT),
                }
            }
            _ => error.reason(WHAT),
        };
        match error {
            HttpError::Refused { status: 403, .. } => format!(
                "{reason} (the token may not get or sync {app}, or no application {app} exists)"
            ),
            HttpError::Refused { status: 401, .. } => {
                format!("{reason} (the token is wrong or expired)")
            }
            _ => reason,
        }
    }

    async fn ended_by(
        &self,
        error: HttpError,
        call: &DeployCall,
        client: &reqwest::Client,
        app_url: &str,
        app: &str,
    ) -> DeployOutcome {
        match error {
            HttpError::Stopped => self.stopped(call, client, app_url, app).await,
            HttpError::GaveUp { .. } => {
                self.terminate(client, app_url, app).await;
                DeployOutcome::Failed {
                    reason: format!(
                        "timed out after {} ({}); the operation was terminated",
                        humantime::format_duration(self.settings.timeout),
                        error.reason(WHAT)
                    ),
                }
            }
            HttpError::Refused { .. } => DeployOutcome::Failed {
                reason: self.reason(&error, app),
            },
        }
    }

    async fn stopped(
        &self,
        call: &DeployCall,
        client: &reqwest::Client,
        app_url: &str,
        app: &str,
    ) -> DeployOutcome {
        if call.abort.is_cancelled() {
            self.terminate(client, app_url, app).await;
        }
        DeployOutcome::Cancelled
    }

    /// Sets the image (when configured) and asks for a sync; the moment it asked.
    async fn start(
        &self,
        call: &DeployCall,
        client: &reqwest::Client,
        app_url: &str,
        app: &str,
        deadline: Instant,
    ) -> Result<Ours, HttpError> {
        let before = self.get_app(client, app_url, deadline, call).await?;
        if let Some(image) = &self.settings.image {
            let image = substitute(image, &call.request);
            let patch = json!({"spec": {"source": {"kustomize": {"images": [image]}}}});
            let body = json!({"patch": patch.to_string(), "patchType": "merge"});
            http::send(
                || self.authed(client, Method::PATCH, app_url).json(&body),
                &[],
                deadline,
                call.stopped(),
            )
            .await?;
            call.report
                .line(format!("Argo CD {app}: image set to {image}"))
                .await;
        }
        let mut body = json!({});
        if let Some(revision) = &self.settings.revision {
            body["revision"] = json!(substitute(revision, &call.request));
        }
        // The call began before the sync was asked for, and after any operation not ours.
        let ours = Ours {
            since: call.started_at.trunc_subsecs(0),
            previous: before.started_at,
        };
        http::send(
            || {
                self.authed(client, Method::POST, &format!("{app_url}/sync"))
                    .json(&body)
            },
            &[],
            deadline,
            call.stopped(),
        )
        .await?;
        call.report.handle(ours.handle()).await;
        call.report
            .line(format!("Argo CD {app}: sync requested"))
            .await;
        Ok(ours)
    }

    /// Polls the application until our operation ends.
    async fn watch(
        &self,
        call: &DeployCall,
        client: &reqwest::Client,
        app_url: &str,
        app: &str,
        mine: Ours,
        deadline: Instant,
    ) -> DeployOutcome {
        let mut unhealthy = 0;
        let mut seen_running = false;
        let mut last_phase: Option<String> = None;
        loop {
            let state = match self.get_app(client, app_url, deadline, call).await {
                Ok(state) => state,
                Err(e) => return self.ended_by(e, call, client, app_url, app).await,
            };
            let ours = mine.owns(&state, seen_running);
            seen_running |= ours && state.is_running();
            let phase = if ours {
                state.phase.clone().unwrap_or_else(|| "Unknown".into())
            } else {
                "not started yet".into()
            };
            call.report
                .status(format!(
                    "{WHAT} {app}: sync {phase}, {}, health {}",
                    state.sync, state.health
                ))
                .await;
            if ours && last_phase.as_deref() != Some(phase.as_str()) {
                call.report
                    .line(format!("Argo CD {app}: operation {phase}"))
                    .await;
                last_phase = Some(phase.clone());
            }
            if ours {
                let message = state
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                match phase.as_str() {
                    "Failed" | "Error" => {
                        return DeployOutcome::Failed {
                            reason: format!("{WHAT} sync of {app} ended {phase}{message}"),
                        }
                    }
                    "Succeeded" => {
                        if state.sync == "Synced" && state.health == "Healthy" {
                            return DeployOutcome::Succeeded;
                        }
                        if matches!(state.health.as_str(), "Degraded" | "Missing") {
                            unhealthy += 1;
                            if unhealthy >= UNHEALTHY_POLLS {
                                return DeployOutcome::Failed {
                                    reason: format!(
                                        "{WHAT} synced {app}, but its health is {} (sync {})",
                                        state.health, state.sync
                                    ),
                                };
                            }
                        } else {
                            unhealthy = 0;
                        }
                    }
                    _ => {}
                }
            }
            tokio::select! {
                () = call.stopped() => return self.stopped(call, client, app_url, app).await,
                () = tokio::time::sleep_until(deadline) => {
                    self.terminate(client, app_url, app).await;
                    return DeployOutcome::Failed {
                        reason: format!(
                            "timed out after {} with {WHAT} {app} at sync {phase}, {}, health {}; the operation was terminated",
                            humantime::format_duration(self.settings.timeout),
                            state.sync,
                            state.health
                        ),
                    };
                }
                () = tokio::time::sleep(self.settings.poll_every) => {}
            }
        }
    }
}

/// `base` + `/api/v1/applications/<app>`, `app` encoded as one path segment.
fn application_url(base: &str, app: &str) -> String {
    let mut url = format!("{}/api/v1/applications", base.trim_end_matches('/'));
    if let Ok(mut parsed) = url::Url::parse(&url) {
        if let Ok(mut segments) = parsed.path_segments_mut() {
            segments.push(app);
        }
        url = parsed.into();
    }
    url
}

#[async_trait]
impl Backend for ArgocdBackend {
    fn kind(&self) -> &'static str {
        "argocd"
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn deploy(&self, call: DeployCall) -> DeployOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => return DeployOutcome::Failed { reason: e.clone() },
        };
        let app = substitute(&self.settings.app, &call.request);
        if call.request.step.phase != Phase::Deploy {
            call.report
                .line(format!(
                    "Argo CD {app}: nothing to do for the {} phase (Argo CD has no traffic switch)",
                    call.request.step.phase
                ))
                .await;
            return DeployOutcome::Succeeded;
        }
        let deadline = call.deadline(self.settings.timeout);
        let app_url = self.app_url(&app);

        let stored = call.handle.as_ref().and_then(Ours::from_handle);
        let mine = match stored {
            Some(since) => since,
            None => {
                let mine = if call.resumed {
                    match self.get_app(client, &app_url, deadline, &call).await {
                        Ok(state) => state.is_ours(call.started_at),
                        Err(e) => {
                            return self.ended_by(e, &call, client, &app_url, &app).await;
                        }
                    }
                } else {
                    false
                };
                if mine {
                    call.report
                        .line(format!(
                            "Argo CD {app}: resuming the sync started by an earlier run"
                        ))
                        .await;
                    let ours = Ours {
                        since: call.started_at,
                        previous: None,
                    };
                    call.report.handle(ours.handle()).await;
                    ours
                } else {
                    match self.start(&call, client, &app_url, &app, deadline).await {
                        Ok(at) => at,
                        Err(e) => return self.ended_by(e, &call, client, &app_url, &app).await,
                    }
                }
            }
        };
        self.watch(&call, client, &app_url, &app, mine, deadline)
            .await
    }

    async fn check(&self, service: &str, environment: &str) -> Result<String, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let app = substitute(
            &self.settings.app,
            &DeployRequest::for_check(service, environment),
        );
        let app_url = self.app_url(&app);
        let answer = http::send(
            || self.authed(client, Method::GET, &app_url),
            &[],
            Instant::now() + CHECK_PATIENCE,
            std::future::pending(),
        )
        .await
        .map_err(|e| self.reason(&e, &app))?;
        let body = answer.json().map_err(|e| format!("{WHAT} {e}"))?;
        let state = AppState::read(&body);
        Ok(format!(
            "{WHAT} application {app}: {}, health {}",
            state.sync, state.health
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_ours_from_the_second_we_asked() {
        let since = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.700Z")
            .expect("time")
            .with_timezone(&Utc);
        let at = |t: &str| AppState {
            phase: Some("Succeeded".into()),
            started_at: Some(
                DateTime::parse_from_rfc3339(t)
                    .expect("time")
                    .with_timezone(&Utc),
            ),
            message: None,
            sync: "Synced".into(),
            health: "Healthy".into(),
        };
        assert!(at("2026-12-04T10:00:00Z").is_ours(since));
        assert!(at("2026-12-04T10:00:05Z").is_ours(since));
        assert!(!at("2026-12-04T09:59:59Z").is_ours(since));
        let none = AppState {
            started_at: None,
            ..at("2026-12-04T10:00:00Z")
        };
        assert!(!none.is_ours(since));
    }

    #[test]
    fn an_operation_in_the_same_second_as_the_previous_is_ours_once_seen_running() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let mine = Ours {
            since: t("2026-12-04T10:00:00Z"),
            previous: Some(t("2026-12-04T10:00:00Z")),
        };
        let state = |phase: &str| AppState {
            phase: Some(phase.into()),
            started_at: Some(t("2026-12-04T10:00:00Z")),
            message: None,
            sync: "Synced".into(),
            health: "Healthy".into(),
        };
        assert!(!mine.owns(&state("Succeeded"), false), "the stale one");
        assert!(mine.owns(&state("Running"), false));
        assert!(mine.owns(&state("Succeeded"), true));
        let later = AppState {
            started_at: Some(t("2026-12-04T10:00:01Z")),
            ..state("Succeeded")
        };
        assert!(mine.owns(&later, false));
        assert_eq!(Ours::from_handle(&mine.handle()), Some(mine));
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let settings = ArgocdSettings {
            url: "https://argocd.example.com".into(),
            app: "api-prod".into(),
            token: "eyJhbGciOi-secret".into(),
            image: None,
            revision: None,
            timeout: Duration::from_secs(60),
            poll_every: Duration::from_secs(1),
        };
        let shown = format!("{:?}", ArgocdBackend::new(settings));
        assert!(!shown.contains("eyJhbGciOi"), "{shown}");
    }

    #[test]
    fn app_names_are_one_path_segment() {
        let base = "https://argocd.example.com/";
        assert_eq!(
            application_url(base, "api-prod"),
            "https://argocd.example.com/api/v1/applications/api-prod"
        );
        assert_eq!(
            application_url(base, "a/b c"),
            "https://argocd.example.com/api/v1/applications/a%2Fb%20c"
        );
    }
}
