//! Verification probes (placeholder until the probes land: the port the engine calls).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::deploy::DeployRequest;
use crate::domain::verification::{CheckSpec, Reading};

/// What a probe needs to know about the promotion being verified.
pub struct ProbeTarget {
    pub request: DeployRequest,
}

#[async_trait]
pub trait Prober: Send + Sync {
    async fn probe(
        &self,
        check: &CheckSpec,
        target: &ProbeTarget,
        cancel: CancellationToken,
    ) -> Reading;
}
