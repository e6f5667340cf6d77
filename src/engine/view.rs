//! What front ends read: engine-owned views of promotions, and the read-only queries behind the
//! API, `status` and `history`. Built from domain types; no store record leaves the engine.

use std::sync::Arc;

use crate::config::Config;
use crate::domain::approval::Approval;
use crate::domain::audit::AuditEvent;
use crate::domain::manifest::Manifest;
use crate::domain::promotion::Promotion;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

use super::reply::{self, ServiceStatus};
use super::{environment_of, known_service, unknown_promotion, EngineError};

/// A promotion with what a card or API answer shows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionView {
    pub promotion: Promotion,
    pub approvals: Vec<Approval>,
    /// The release's commit and notes.
    pub commit: Option<String>,
    pub notes: Option<String>,
    /// The release's digest and changes.
    pub manifest: Manifest,
}

/// A promotion with its audit trail, for `GET /api/v1/promotions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionDetail {
    pub view: PromotionView,
    pub events: Vec<AuditEvent>,
    /// What the running backend call says it does, while one runs.
    pub backend_status: Option<String>,
}

/// Adds a promotion's approvals and its release's commit and notes.
pub(super) async fn view_of(
    store: &Store,
    promotion: Promotion,
) -> Result<PromotionView, StoreError> {
    let approvals = store.approvals(promotion.id).await?;
    let release = store
        .release(&promotion.service, &promotion.version)
        .await?;
    let (commit, notes, manifest) = release
        .map(|r| (r.commit, r.notes, r.manifest))
        .unwrap_or_default();
    Ok(PromotionView {
        promotion,
        approvals,
        commit,
        notes,
        manifest,
    })
}

/// The read-only questions: what a promotion is, what runs where, what happened.
#[derive(Clone)]
pub(super) struct Reads {
    pub config: Arc<Config>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

impl Reads {
    pub async fn promotion_view(&self, id: i64) -> Result<PromotionView, EngineError> {
        let promotion = self
            .store
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        Ok(view_of(&self.store, promotion).await?)
    }

    pub async fn promotion_detail(&self, id: i64) -> Result<PromotionDetail, EngineError> {
        let view = self.promotion_view(id).await?;
        let events = self.store.events(id).await?;
        let backend_status = self
            .store
            .rollout(id)
            .await?
            .filter(|row| row.calling)
            .and_then(|row| row.call_status);
        Ok(PromotionDetail {
            view,
            events,
            backend_status,
        })
    }

    pub async fn deploy_log(&self, id: i64) -> Result<Vec<String>, EngineError> {
        self.store
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        Ok(self.store.deploy_log(id).await?)
    }

    /// What runs where, and what is active, for one service or all.
    pub async fn status(&self, service: Option<&str>) -> Result<Vec<ServiceStatus>, EngineError> {
        if let Some(name) = service {
            known_service(&self.config, name)?;
        }
        let rows = self.store.status(service).await?;
        Ok(reply::status_from_rows(&self.config, service, &rows))
    }

    pub async fn history(
        &self,
        service: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Promotion>, EngineError> {
        let config = known_service(&self.config, service)?;
        if let Some(env) = environment {
            environment_of(config, env)?;
        }
        Ok(self
            .store
            .history(service, environment, limit.clamp(1, 100))
            .await?)
    }

    /// Prometheus text for `/metrics`.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let active = self.store.active_counts().await?;
        Ok(self.metrics.render(&active))
    }
}
