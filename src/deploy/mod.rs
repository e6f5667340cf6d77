//! Deployment backends: one trait, one module per backend.

pub mod command;
pub mod process;

use async_trait::async_trait;

use crate::domain::rollout::Step;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a backend needs to deploy one promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub promotion_id: i64,
    pub service: String,
    pub version: String,
    pub environment: String,
    /// What the environment ran before; `None` on a first deploy.
    pub previous_version: Option<String>,
    pub requested_by: String,
    pub rollback: bool,
    pub commit: Option<String>,
    /// The step of the rollout this call is (§5.2): number, count, weight and phase.
    pub step: Step,
}

/// How a deployment ended. `reason` is what a person reads on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    Succeeded,
    Failed {
        reason: String,
    },
    /// Cancelled from our side (shutdown past the grace period); the promotion is left to be
    /// marked interrupted at the next start.
    Cancelled,
}

/// A deployment backend. `deploy` streams progress lines into `progress` and returns when the
/// deployment ends. It must honour its own timeout (reported as `Failed`) and return `Cancelled`
/// promptly once `cancel` fires, leaving nothing running behind it.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn deploy(
        &self,
        request: DeployRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> DeployOutcome;

    /// [`Backend::deploy`], also telling `groups` about each local process group it starts, so
    /// the bot can record it and kill it should the bot die before the group. Backends that run
    /// no local process keep this default.
    async fn deploy_recording(
        &self,
        request: DeployRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
        groups: mpsc::UnboundedSender<process::LocalGroup>,
    ) -> DeployOutcome {
        drop(groups);
        self.deploy(request, progress, cancel).await
    }
}
