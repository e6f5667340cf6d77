//! Commands for a running rollout (SPEC §5.2): pause, resume, advance, abort. Each is stored on
//! the promotion's rollout row with its audit event; the deploy worker running the rollout reads
//! the row (on whatever replica it runs) and acts on it: woken at once in this process.

use std::sync::Arc;

use tokio::sync::Notify;

use super::clock::Time;
use super::ledger::Ledger;
use super::reply::Reply;
use super::view::view_of;
use super::{environment_of, known_service, unknown_promotion, EngineError};
use crate::config::Config;
use crate::domain::audit::AuditKind;
use crate::domain::identity::Actor;
use crate::domain::permission::{authorize, Action as Permission};
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::rollout::{Action, Plan};
use crate::store::{RolloutRecord, Store, Tx};

/// One command for a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Advance,
    Abort { reason: Option<String> },
}

impl Control {
    fn name(&self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Advance => "advance",
            Control::Abort { .. } => "abort",
        }
    }
}

pub(super) struct Controls {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub ledger: Ledger,
    pub controls_changed: Arc<Notify>,
}

impl Controls {
    pub async fn control(
        &self,
        actor: &Actor,
        id: i64,
        control: Control,
    ) -> Result<Reply, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx
            .lock_promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let plan = self.authorize(actor, &promotion)?;
        if !matches!(
            promotion.state(),
            PromotionState::Deploying | PromotionState::Verifying
        ) {
            return Err(EngineError::conflict(format!(
                "{} is {}: {} applies only while it deploys or verifies; `/release status {}` shows what runs and what is active",
                promotion.describe(),
                promotion.state().label(),
                control.name(),
                promotion.service
            )));
        }
        let row = tx.rollout(id).await?.unwrap_or_default();
        let who = actor.identity.to_string();
        let (kind, note) = self
            .store_control(&mut tx, &promotion, &plan, &row, &who, &control)
            .await?;
        tx.audit(Some(id), &actor.identity, kind, &note, self.time.now())
            .await?;
        self.ledger.touch_cards(&mut tx, id).await?;
        tx.commit().await?;
        self.controls_changed.notify_waiters();
        self.ledger.wake_workers();
        Ok(Reply::promotion(
            view_of(&self.store, promotion).await?,
            &note,
        ))
    }

    /// The plan of the promotion's environment, once `actor` may steer it.
    fn authorize(&self, actor: &Actor, promotion: &Promotion) -> Result<Plan, EngineError> {
        let service = known_service(&self.config, &promotion.service)?;
        let environment = environment_of(service, &promotion.environment)?;
        let approvers = environment.approvals.as_ref().map(|p| p.from_role.as_str());
        authorize(
            &self.config.roles,
            actor,
            Permission::SteerRollout {
                requested_by: &promotion.requested_by,
                approvers,
            },
        )
        .map_err(|denied| EngineError::forbidden(denied.to_string()))?;
        Ok(environment.plan(promotion.rollback))
    }

    /// Writes the control to the rollout row, or refuses it with what to do instead.
    async fn store_control(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        plan: &Plan,
        row: &RolloutRecord,
        who: &str,
        control: &Control,
    ) -> Result<(AuditKind, String), EngineError> {
        let id = promotion.id;
        if let Some(by) = &row.abort_by {
            return Err(EngineError::conflict(format!(
                "#{id} is being aborted (asked by {by}); wait for its rollback"
            )));
        }
        match control {
            Control::Pause => {
                if !plan.has_next_step(row.position) {
                    return Err(EngineError::refused(format!(
                        "#{id} has no step left to hold; `/release abort #{id}` stops it and rolls back"
                    )));
                }
                if let Some(by) = &row.paused_by {
                    return Err(EngineError::conflict(format!(
                        "#{id} is already paused (by {by}); `/release resume #{id}` lets it go on"
                    )));
                }
                tx.set_paused_by(id, Some(who)).await?;
                Ok((
                    AuditKind::Paused,
                    format!("paused before its next step by {who}; checks keep running; `/release resume #{id}` goes on"),
                ))
            }
            Control::Resume => {
                if row.paused_by.is_none() {
                    return Err(EngineError::conflict(format!(
                        "#{id} is not paused; `/release pause #{id}` holds it before its next step"
                    )));
                }
                tx.set_paused_by(id, None).await?;
                Ok((AuditKind::Resumed, format!("resumed by {who}")))
            }
            Control::Advance => {
                let in_pause = matches!(
                    plan.action(row.position),
                    Some(Action::Gate {
                        before_next: Some(_),
                        ..
                    })
                ) && !row.calling;
                if !in_pause {
                    return Err(EngineError::refused(format!(
                        "#{id} is not waiting between steps; advance ends a pause between canary or blue-green steps"
                    )));
                }
                tx.request_advance(id).await?;
                Ok((
                    AuditKind::Advanced,
                    format!("next step started now by {who}"),
                ))
            }
            Control::Abort { reason } => {
                tx.request_abort(id, who, reason.as_deref()).await?;
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                Ok((
                    AuditKind::AbortRequested,
                    format!("abort asked by {who}{why}; stopping the deploy and rolling back"),
                ))
            }
        }
    }
}
