//! `kind = "webhook"` (SPEC §5): one signed `POST` that starts a deployment on the receiver, then,
//! when the receiver answers `202` with a `status_url`, signed `GET`s of that URL every
//! `poll_every` until it says `succeeded` or `failed`.
//!
//! Every send of one call carries the same `Idempotency-Key`, retries and restarts included, so a
//! bot that died between sending the start and storing the handle sends the start again and the
//! receiver tells it is the same deployment. The handle is `{"status_url", "log_seen"}`: where to
//! poll, and how many lines of the deployment's log were already shown. Each answer's `log` is
//! the deployment's log so far (the start answer's lines first); only lines past `log_seen` are
//! shown, so a line is shown once however often it is polled, restarts included.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::time::Instant;

use super::http::{self, Answer, HttpError};
use super::template::substitute;
use super::{Backend, DeployCall, DeployOutcome, DeployRequest};
use crate::domain::rollout::Step;

/// How the receiver is named in reasons.
const WHAT: &str = "the webhook";
/// A cancel or a check is one short try, not a retried call.
const SHORT_CALL: Duration = Duration::from_secs(10);
/// How long `check-backends` keeps retrying a receiver that answers 5xx.
const CHECK_PATIENCE: Duration = Duration::from_secs(30);

/// The settings of one environment's webhook backend.
#[derive(Clone)]
pub struct WebhookSettings {
    /// May hold `{service}`, `{version}`, … placeholders.
    pub url: String,
    /// Signs every request; requests go unsigned without one.
    pub secret: Option<String>,
    pub timeout: Duration,
    pub poll_every: Duration,
    /// The wall clock's Unix seconds, for `X-Shipmate-Timestamp` (the bot passes the system
    /// clock: a receiver checks the timestamp against its own).
    pub unix_now: UnixNow,
}

/// Reads the wall clock as Unix seconds.
pub type UnixNow = Arc<dyn Fn() -> i64 + Send + Sync>;

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("poll_every", &self.poll_every)
            .finish()
    }
}

/// The webhook backend.
#[derive(Debug)]
pub struct WebhookBackend {
    settings: WebhookSettings,
    client: Result<reqwest::Client, String>,
}

impl WebhookBackend {
    pub fn new(settings: WebhookSettings) -> WebhookBackend {
        WebhookBackend {
            settings,
            client: http::client(),
        }
    }

    /// A signed request: `X-Shipmate-Timestamp` now, and `X-Shipmate-Signature` over
    /// `"<timestamp>.<body>"` when a secret is set. Built afresh for each try, so a retry after a
    /// long `Retry-After` carries a fresh timestamp.
    fn signed(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: &str,
        body: &str,
    ) -> RequestBuilder {
        let timestamp = (self.settings.unix_now)().to_string();
        let mut builder = client
            .request(method, url)
            .header("X-Shipmate-Timestamp", &timestamp);
        if let Some(signature) = self.signature(&timestamp, body) {
            builder = builder.header("X-Shipmate-Signature", signature);
        }
        if !body.is_empty() {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        builder
    }

    /// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, or `None` without a secret.
    fn signature(&self, timestamp: &str, body: &str) -> Option<String> {
        let secret = self.settings.secret.as_ref()?;
        Some(sign(secret, timestamp, body))
    }

    /// `{"event":"cancel", …}` once, best effort: a receiver that cannot be reached keeps working
    /// until it finds out by itself.
    async fn cancel(&self, client: &reqwest::Client, url: &str, request: &DeployRequest) {
        let body = event_body("cancel", request).to_string();
        let key = format!("{}-cancel", request.idempotency_key());
        let sent = self
            .signed(client, Method::POST, url, &body)
            .header("Idempotency-Key", key)
            .timeout(SHORT_CALL)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(promotion = request.promotion_id, "webhook cancel sent");
            }
            Ok(response) => tracing::warn!(
                promotion = request.promotion_id,
                status = response.status().as_u16(),
                "the webhook refused the cancel"
            ),
            Err(e) => tracing::warn!(
                promotion = request.promotion_id,
                error = %e.without_url(),
                "the webhook cancel could not be sent"
            ),
        }
    }

    /// The end of a call that `send` gave up on: stopped, refused or out of time.
    async fn ended_by(
        &self,
        error: HttpError,
        call: &DeployCall,
        client: &reqwest::Client,
        url: &str,
    ) -> DeployOutcome {
        match error {
            HttpError::Stopped => self.stopped(call, client, url).await,
            HttpError::GaveUp { .. } => {
                self.cancel(client, url, &call.request).await;
                DeployOutcome::Failed {
                    reason: format!(
                        "timed out after {} ({}); a cancel was sent",
                        humantime::format_duration(self.settings.timeout),
                        error.reason(WHAT)
                    ),
                }
            }
            HttpError::Refused { .. } => DeployOutcome::Failed {
                reason: error.reason(WHAT),
            },
        }
    }

    /// Aborted: cancel on the receiver. Detached: leave it working for the next holder.
    async fn stopped(
        &self,
        call: &DeployCall,
        client: &reqwest::Client,
        url: &str,
    ) -> DeployOutcome {
        if call.abort.is_cancelled() {
            self.cancel(client, url, &call.request).await;
        }
        DeployOutcome::Cancelled
    }

    /// Polls `status_url` until the receiver says how it ended.
    async fn watch(
        &self,
        call: &DeployCall,
        client: &reqwest::Client,
        url: &str,
        status_url: &str,
        mut log_seen: usize,
        deadline: Instant,
    ) -> DeployOutcome {
        call.report
            .status(format!("webhook deployment running: {status_url}"))
            .await;
        loop {
            tokio::select! {
                () = call.stopped() => return self.stopped(call, client, url).await,
                () = tokio::time::sleep_until(deadline) => {
                    self.cancel(client, url, &call.request).await;
                    return DeployOutcome::Failed {
                        reason: format!(
                            "timed out after {} while the webhook's deployment was still running; a cancel was sent",
                            humantime::format_duration(self.settings.timeout)
                        ),
                    };
                }
                () = tokio::time::sleep(self.settings.poll_every) => {}
            }
            let answer = http::send(
                || self.signed(client, Method::GET, status_url, ""),
                &[],
                deadline,
                call.stopped(),
            )
            .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => return self.ended_by(e, call, client, url).await,
            };
            let said = match read(&answer) {
                Ok(said) => said,
                Err(reason) => return DeployOutcome::Failed { reason },
            };
            let fresh: Vec<String> = said.log.iter().skip(log_seen).cloned().collect();
            if !fresh.is_empty() {
                for line in &fresh {
                    call.report.line(line.clone()).await;
                }
                log_seen = said.log.len();
                call.report
                    .handle(json!({"status_url": status_url, "log_seen": log_seen}))
                    .await;
            }
            match said.state {
                Said::Succeeded => return DeployOutcome::Succeeded,
                Said::Failed(reason) => return DeployOutcome::Failed { reason },
                Said::Running(_) => {
                    if let Some(message) = said.message {
                        call.report
                            .status(format!("webhook deployment running: {message}"))
                            .await;
                    }
                }
            }
        }
    }
}

/// `"<hex HMAC-SHA256(secret, "<timestamp>.<body>")>"` with its `v1=` prefix.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of an event about `request` (SPEC §5): `deploy` or `cancel`.
pub fn event_body(event: &str, request: &DeployRequest) -> Value {
    let Step {
        number,
        of,
        weight,
        phase,
    } = request.step;
    json!({
        "event": event,
        "promotion_id": request.promotion_id,
        "attempt": request.attempt,
        "service": request.service,
        "version": request.version,
        "environment": request.environment,
        "previous_version": request.previous_version,
        "rollback": request.rollback,
        "requested_by": request.requested_by,
        "commit": request.commit,
        "digest": request.digest,
        "step": number,
        "steps": of,
        "weight": weight,
        "phase": phase.as_str(),
    })
}

/// Where a deployment stands by one answer of the receiver.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Succeeded,
    Failed(String),
    /// Running; the status URL when the answer gave one.
    Running(Option<String>),
}

struct Reading {
    state: Said,
    log: Vec<String>,
    message: Option<String>,
}

/// Reads one answer: `{"status": …, "message": …, "status_url": …, "log": […]}`; an empty body
/// of a 200/201 is success.
fn read(answer: &Answer) -> Result<Reading, String> {
    let code = answer.status.as_u16();
    let body = answer.json().map_err(|e| format!("{WHAT} {e}"))?;
    if !(body.is_object() || body.is_null()) {
        return Err(format!(
            "{WHAT} answered {code} with JSON that is not an object: {}",
            http::quote(&answer.body)
        ));
    }
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    let log = body
        .get("log")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .map(|line| match line {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let message = text("message");
    let status = text("status");
    let state = match status.as_deref() {
        Some("succeeded") => Said::Succeeded,
        Some("failed") => Said::Failed(match &message {
            Some(message) if !message.trim().is_empty() => {
                format!("the deployment failed: {message}")
            }
            _ => format!("{WHAT} says the deployment failed (no message)"),
        }),
        Some("running") => Said::Running(text("status_url")),
        None if code == 202 => Said::Running(text("status_url")),
        None => Said::Succeeded,
        Some(other) => {
            return Err(format!(
                "{WHAT} answered {code} with an unknown status {other:?}; expected succeeded, failed or running"
            ))
        }
    };
    Ok(Reading {
        state,
        log,
        message,
    })
}

/// `status_url` as an absolute URL: a relative one is resolved against the webhook's URL.
fn absolute(url: &str, status_url: &str) -> Result<String, String> {
    let base = url::Url::parse(url).map_err(|e| format!("the webhook URL is not a URL: {e}"))?;
    base.join(status_url)
        .map(String::from)
        .map_err(|e| format!("{WHAT} gave a status_url that is not a URL ({e}): {status_url}"))
}

#[async_trait]
impl Backend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn deploy(&self, call: DeployCall) -> DeployOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => return DeployOutcome::Failed { reason: e.clone() },
        };
        let deadline = call.deadline(self.settings.timeout);
        let url = substitute(&self.settings.url, &call.request);

        // A previous holder stored where to poll: go on polling, never start again.
        if let Some(handle) = &call.handle {
            if let Some(status_url) = handle.get("status_url").and_then(Value::as_str) {
                let log_seen = handle
                    .get("log_seen")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0);
                return self
                    .watch(&call, client, &url, status_url, log_seen, deadline)
                    .await;
            }
        }

        // A fresh call, or a resumed one whose start may or may not have arrived: the same
        // Idempotency-Key lets the receiver tell a repeat from new work.
        let body = event_body("deploy", &call.request).to_string();
        let key = call.request.idempotency_key();
        if call.resumed {
            call.report
                .line(format!(
                    "resuming: sending the start again with Idempotency-Key {key}"
                ))
                .await;
        }
        call.report
            .status(format!("webhook: starting ({key})"))
            .await;
        let answer = http::send(
            || {
                self.signed(client, Method::POST, &url, &body)
                    .header("Idempotency-Key", &key)
            },
            &[],
            deadline,
            call.stopped(),
        )
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return self.ended_by(e, &call, client, &url).await,
        };
        let said = match read(&answer) {
            Ok(said) => said,
            Err(reason) => return DeployOutcome::Failed { reason },
        };
        let log_seen = said.log.len();
        for line in said.log {
            call.report.line(line).await;
        }
        match said.state {
            Said::Succeeded => DeployOutcome::Succeeded,
            Said::Failed(reason) => DeployOutcome::Failed { reason },
            Said::Running(None) => DeployOutcome::Failed {
                reason: format!(
                    "{WHAT} answered {} (running) without a status_url to poll: {}",
                    answer.status.as_u16(),
                    http::quote(&answer.body)
                ),
            },
            Said::Running(Some(status_url)) => {
                let status_url = match absolute(&url, &status_url) {
                    Ok(status_url) => status_url,
                    Err(reason) => return DeployOutcome::Failed { reason },
                };
                call.report
                    .handle(json!({"status_url": status_url, "log_seen": log_seen}))
                    .await;
                self.watch(&call, client, &url, &status_url, log_seen, deadline)
                    .await
            }
        }
    }

    async fn check(&self, service: &str, environment: &str) -> Result<String, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let request = DeployRequest::for_check(service, environment);
        let url = substitute(&self.settings.url, &request);
        let body =
            json!({"event": "check", "service": service, "environment": environment}).to_string();
        let answer = http::send(
            || self.signed(client, Method::POST, &url, &body),
            &[],
            Instant::now() + CHECK_PATIENCE,
            std::future::pending(),
        )
        .await
        .map_err(|e| e.reason(WHAT))?;
        if answer.status.is_success() {
            Ok(format!(
                "{WHAT} answered the signed check with {}",
                answer.status.as_u16()
            ))
        } else {
            Err(format!(
                "{WHAT} answered the check with {}, not 2xx: {}",
                answer.status.as_u16(),
                http::quote(&answer.body)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::Phase;

    fn request() -> DeployRequest {
        DeployRequest {
            promotion_id: 42,
            attempt: 1,
            service: "api".into(),
            version: "1.4.2".into(),
            environment: "production".into(),
            previous_version: Some("1.4.1".into()),
            requested_by: "slack:U1".into(),
            rollback: false,
            commit: None,
            digest: None,
            step: Step {
                number: 2,
                of: 3,
                weight: 50,
                phase: Phase::Deploy,
            },
        }
    }

    #[test]
    fn the_body_has_every_field_of_the_spec() {
        let body = event_body("deploy", &request());
        assert_eq!(
            body,
            json!({"event":"deploy","promotion_id":42,"attempt":1,"service":"api","version":"1.4.2",
                   "environment":"production","previous_version":"1.4.1","rollback":false,
                   "requested_by":"slack:U1","commit":null,"digest":null,"step":2,"steps":3,
                   "weight":50,"phase":"deploy"})
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"Jefe", b'1700000000.{"event":"check"}', sha256).
        assert_eq!(
            sign("Jefe", "1700000000", r#"{"event":"check"}"#),
            "v1=2a4832157b018601d549b502ca2a0881c87f82f6be4665fae411caf8253537ba"
        );
    }

    #[test]
    fn the_secret_stays_out_of_debug() {
        let settings = WebhookSettings {
            url: "https://deployer.internal/hooks".into(),
            secret: Some("hunter2-secret".into()),
            timeout: Duration::from_secs(60),
            poll_every: Duration::from_secs(1),
            unix_now: Arc::new(|| 0),
        };
        let shown = format!("{:?}", WebhookBackend::new(settings));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn relative_status_urls_resolve_against_the_webhook() {
        assert_eq!(
            absolute("http://127.0.0.1:9/hooks/deploy", "/status/7").as_deref(),
            Ok("http://127.0.0.1:9/status/7")
        );
        assert_eq!(
            absolute("http://a/hooks", "https://b/s/1").as_deref(),
            Ok("https://b/s/1")
        );
    }
}
