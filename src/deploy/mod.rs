//! Deployment backends: one trait, one module per backend.
//!
//! Two shapes share the trait. A local backend (`command`) runs a process that streams lines and
//! dies with the bot. A remote backend (webhook, GitHub Actions, Kubernetes, Argo CD) starts work
//! elsewhere once, reports a handle that says how to find it again, and then watches it; the
//! worker stores the handle with the job, so after a restart, or on another replica, the next
//! holder of the job resumes watching instead of starting again.

pub mod argocd;
pub mod command;
pub mod github;
pub mod http;
pub mod kubernetes;
pub mod process;
pub mod template;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::rollout::Step;

/// Everything a backend needs to deploy one promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub promotion_id: i64,
    /// 1 for a promotion, 2 for its first retry, … (the webhook's `attempt`).
    pub attempt: u32,
    pub service: String,
    pub version: String,
    pub environment: String,
    /// What the environment ran before; `None` on a first deploy.
    pub previous_version: Option<String>,
    pub requested_by: String,
    pub rollback: bool,
    pub commit: Option<String>,
    pub digest: Option<String>,
    /// The step of the rollout this call is (§5.2): number, count, weight and phase.
    pub step: Step,
}

impl DeployRequest {
    /// What `check-backends` fills a backend's placeholders from: the service and environment,
    /// no version (nothing is deployed).
    pub fn for_check(service: &str, environment: &str) -> DeployRequest {
        DeployRequest {
            promotion_id: 0,
            attempt: 0,
            service: service.to_string(),
            version: String::new(),
            environment: environment.to_string(),
            previous_version: None,
            requested_by: String::new(),
            rollback: false,
            commit: None,
            digest: None,
            step: Step::FULL,
        }
    }

    /// `shipmate-<promotion_id>-<attempt>-<step>-<phase>`: the same for every send of one call,
    /// across retries and restarts, so a receiver can tell a repeat from new work.
    pub fn idempotency_key(&self) -> String {
        format!(
            "shipmate-{}-{}-{}-{}",
            self.promotion_id, self.attempt, self.step.number, self.step.phase
        )
    }
}

/// How a deployment ended. `reason` is what a person reads on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    Succeeded,
    Failed {
        reason: String,
    },
    /// Stopped from our side before it ended: aborted, or (shutdown, lost lease) left for the
    /// next holder of the job to resume or mark interrupted.
    Cancelled,
}

/// What a backend tells the worker while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A progress line: the deploy log and the card's thread.
    Line(String),
    /// What the work is doing now, one line for the card ("GitHub run 88 in_progress: <url>").
    Status(String),
    /// How to find remote work again; stored with the job in order with the other reports.
    Handle(Value),
    /// A local process group was started (recorded so a later start can kill it should the bot
    /// die before it).
    Group(process::LocalGroup),
}

/// The sending end of a call's reports. Sends never fail the deploy: a listener that went away
/// (the worker stopped) loses the report, not the work.
#[derive(Debug, Clone)]
pub struct Reporter {
    sender: mpsc::Sender<Report>,
}

impl Reporter {
    pub fn channel(capacity: usize) -> (Reporter, mpsc::Receiver<Report>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Reporter { sender }, receiver)
    }

    /// A reporter nobody reads (tests, `check-backends`).
    pub fn discard() -> Reporter {
        Reporter::channel(1).0
    }

    pub async fn line(&self, line: impl Into<String>) {
        let _ = self.sender.send(Report::Line(line.into())).await;
    }

    /// A line without waiting; dropped when the listener is behind (a flood of output).
    pub fn try_line(&self, line: impl Into<String>) {
        let _ = self.sender.try_send(Report::Line(line.into()));
    }

    pub async fn status(&self, status: impl Into<String>) {
        let _ = self.sender.send(Report::Status(status.into())).await;
    }

    pub async fn handle(&self, handle: Value) {
        let _ = self.sender.send(Report::Handle(handle)).await;
    }

    pub async fn group(&self, group: process::LocalGroup) {
        let _ = self.sender.send(Report::Group(group)).await;
    }
}

/// One backend call: a step of a promotion's rollout, started or resumed.
#[derive(Debug, Clone)]
pub struct DeployCall {
    pub request: DeployRequest,
    pub report: Reporter,
    /// Stop the work itself: an abort. A remote backend asks its server to cancel (best effort)
    /// and returns.
    pub abort: CancellationToken,
    /// Stop watching: shutdown or a lost lease. A local backend stops its work too (a script
    /// never outlives the bot); a remote backend leaves it running for the next holder.
    pub detach: CancellationToken,
    /// When this call first started (wall clock): remote work that began before it is not ours.
    pub started_at: DateTime<Utc>,
    /// How much of its timeout earlier holders spent: the timeout runs across restarts.
    pub spent: Duration,
    /// A previous holder ran this call and stopped: its start request may have been sent, so a
    /// remote backend looks for the work before it starts it again.
    pub resumed: bool,
    /// What a previous holder reported with [`Reporter::handle`].
    pub handle: Option<Value>,
}

impl DeployCall {
    /// A fresh call of `request` started at `started_at`, reporting to `report`.
    pub fn new(request: DeployRequest, report: Reporter, started_at: DateTime<Utc>) -> DeployCall {
        DeployCall {
            request,
            report,
            abort: CancellationToken::new(),
            detach: CancellationToken::new(),
            started_at,
            spent: Duration::ZERO,
            resumed: false,
            handle: None,
        }
    }

    /// Either stop: abort or detach.
    pub async fn stopped(&self) {
        tokio::select! {
            () = self.abort.cancelled() => {}
            () = self.detach.cancelled() => {}
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.abort.is_cancelled() || self.detach.is_cancelled()
    }

    /// The instant `timeout` after the call first started (already past when a restart came
    /// too late).
    pub fn deadline(&self, timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + timeout.saturating_sub(self.spent)
    }
}

/// A deployment backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `webhook`, `github_actions`, … as in `bot.toml`.
    fn kind(&self) -> &'static str;

    /// The work lives elsewhere and outlives this process: a call cut short by a restart or a
    /// lost lease is resumed by the next holder of its job, not marked interrupted.
    fn is_remote(&self) -> bool {
        false
    }

    /// Runs (or resumes) one call to its end. Must honour its timeout (a `Failed` naming it),
    /// return `Cancelled` promptly once the call is aborted or detached, and leave no local
    /// process running behind it.
    async fn deploy(&self, call: DeployCall) -> DeployOutcome;

    /// `shipmate check-backends`: credentials and reachability for `service` `environment`,
    /// by a read-only call that deploys nothing. `Ok` says what was seen, `Err` what to fix.
    async fn check(&self, service: &str, environment: &str) -> Result<String, String>;
}

/// api 1.4.2 → production, promotion 7, one step: the request the backend and check tests use.
#[cfg(test)]
pub(crate) fn sample_request(previous_version: Option<&str>) -> DeployRequest {
    DeployRequest {
        promotion_id: 7,
        attempt: 1,
        service: "api".to_string(),
        version: "1.4.2".to_string(),
        environment: "production".to_string(),
        previous_version: previous_version.map(str::to_string),
        requested_by: "slack:U1".to_string(),
        rollback: false,
        commit: None,
        digest: None,
        step: Step::FULL,
    }
}
