//! Writing a promotion's moves: the domain decides the next promotion ([`Promotion::apply`]); the
//! ledger stores it with its audit event and the card updates it owes, in the caller's
//! transaction, and wakes the workers once something is owed.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::domain::audit::AuditKind;
use crate::domain::identity::Identity;
use crate::domain::promotion::{Promotion, PromotionEvent, PromotionState};
use crate::metrics::{Metrics, StateLabels};
use crate::store::{Store, StoreError, Tx};

use super::clock::Time;
use super::EngineError;

#[derive(Clone)]
pub(super) struct Ledger {
    store: Store,
    time: Time,
    metrics: Arc<Metrics>,
    /// Without chat platforms there are no cards, and card bookkeeping is skipped (it is one
    /// more statement per state change).
    has_cards: bool,
    /// Wakes the workers when a transaction left them a job.
    jobs_ready: Arc<Notify>,
}

impl Ledger {
    pub fn new(
        store: Store,
        time: Time,
        metrics: Arc<Metrics>,
        has_cards: bool,
        jobs_ready: Arc<Notify>,
    ) -> Self {
        Ledger {
            store,
            time,
            metrics,
            has_cards,
            jobs_ready,
        }
    }

    pub fn wake_workers(&self) {
        self.jobs_ready.notify_one();
    }

    /// Moves `promotion` through `event` inside `tx`, with its audit event. The stored row must
    /// still be in the state we read (a replica or worker may have moved it).
    pub async fn apply(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        event: PromotionEvent,
        actor: &Identity,
        detail: &str,
    ) -> Result<Promotion, EngineError> {
        let now = self.time.now();
        let updated = promotion
            .apply(event, now, detail)
            .map_err(|e| EngineError::conflict(format!("{}: {e}", promotion.describe())))?;
        tx.update_promotion(&updated, promotion.state()).await?;
        tx.audit(
            Some(promotion.id),
            actor,
            AuditKind::entered(updated.state()),
            detail,
            now,
        )
        .await?;
        self.touch_cards(tx, promotion.id).await?;
        if updated.state().is_terminal() && updated.state() != PromotionState::RolledBack {
            self.count_terminal(&updated);
        }
        Ok(updated)
    }

    fn count_terminal(&self, promotion: &Promotion) {
        self.metrics
            .promotions
            .get_or_create(&StateLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                state: promotion.state().as_str().to_string(),
            })
            .inc();
    }

    /// Owes the promotion's cards an update, inside `tx`.
    pub async fn touch_cards(&self, tx: &mut Tx, promotion_id: i64) -> Result<(), StoreError> {
        if !self.has_cards {
            return Ok(());
        }
        tx.touch_cards(promotion_id, self.time.real_now()).await
    }

    /// Deploy output arrived: the card's progress line and thread are owed an update.
    pub async fn progress_changed(&self, promotion_id: i64) {
        if !self.has_cards {
            return;
        }
        match self
            .store
            .touch_cards(promotion_id, self.time.real_now())
            .await
        {
            Ok(()) => self.wake_workers(),
            Err(e) => {
                tracing::warn!(promotion = promotion_id, error = %e, "could not schedule a card update")
            }
        }
    }
}
