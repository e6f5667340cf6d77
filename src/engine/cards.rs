//! Keeping promotion cards current: card jobs from the outbox, sent through the chat ports with
//! at most one edit per second per card, platform rate limits obeyed, failures retried.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::card::Card;
use super::chat::{ChatError, ChatPort};
use super::{wall_now, Engine, EngineError};
use crate::store::{ChatCardRecord, ClaimedJob, JobKind, StoreError, Tx};

/// Cards are edited at most this often (SPEC §3).
pub const MIN_EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// A card job is ours for this long; sends take well under a second.
pub const CARD_LEASE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest a card post or edit (with its thread output) may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Deploy output posted to a thread in one message at most.
const THREAD_BATCH: usize = 50;

impl Engine {
    /// The card of a promotion as it stands now.
    pub async fn card(&self, promotion_id: i64) -> Result<Card, EngineError> {
        let view = self
            .store()
            .promotion_view(promotion_id)
            .await?
            .ok_or_else(|| super::unknown_promotion(promotion_id))?;
        let promotion = &view.promotion;
        let from = self
            .config()
            .service(&promotion.service)
            .map(|s| s.pipeline())
            .and_then(|pipeline| {
                let index = pipeline.iter().position(|e| *e == promotion.environment)?;
                index.checked_sub(1).and_then(|i| pipeline.get(i).cloned())
            });
        let progress = self.store().deploy_log(promotion_id).await?.pop();
        let public_url = self.config().server.public_url.as_deref();
        Ok(Card::build(&view, from, progress, public_url, self.now()))
    }

    pub(super) fn chat_ports(&self) -> Vec<Arc<dyn ChatPort>> {
        self.inner.chats.values().cloned().collect()
    }

    pub(super) async fn claim_cards(&self, port: &dyn ChatPort, limit: u32) -> Vec<ClaimedJob> {
        let kind = JobKind::Card(port.platform());
        match self
            .store()
            .claim_jobs(kind, &self.inner.worker_id, wall_now(), CARD_LEASE, limit)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "could not claim card jobs");
                Vec::new()
            }
        }
    }

    /// Sends one card job; whatever happens, the job is finished or given back with a due time.
    pub(super) async fn run_card_job(&self, port: Arc<dyn ChatPort>, job: ClaimedJob) {
        let platform = port.platform();
        // A hung platform call must not hold a worker slot (or shutdown) hostage.
        let outcome = tokio::time::timeout(
            SEND_TIMEOUT,
            self.send_card(port.as_ref(), job.promotion_id),
        )
        .await
        .unwrap_or_else(|_| {
            Err(CardFailure::Chat(ChatError::Unavailable(
                "no answer within 20s".into(),
            )))
        });
        let store = self.store();
        let result = match outcome {
            Ok(Sent::Done) => {
                store
                    .finish_card_job(job.id, wall_now() + chrono_of(MIN_EDIT_INTERVAL))
                    .await
            }
            Ok(Sent::TooSoon(due)) => store.retry_job(job.id, due, "paced").await,
            Err(CardFailure::Chat(ChatError::RateLimited { retry_after })) => {
                tracing::warn!(%platform, promotion = job.promotion_id, ?retry_after, "rate limited");
                store
                    .retry_job(job.id, wall_now() + chrono_of(retry_after), "rate limited")
                    .await
            }
            Err(failure) => {
                let delay = backoff(job.attempts);
                tracing::warn!(%platform, promotion = job.promotion_id, error = %failure, ?delay, "card not sent; will retry");
                store
                    .retry_job(job.id, wall_now() + chrono_of(delay), &failure.to_string())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "could not settle card job; its lease will run out");
        }
    }

    async fn send_card(&self, port: &dyn ChatPort, promotion_id: i64) -> Result<Sent, CardFailure> {
        let platform = port.platform();
        let Some(record) = self.store().chat_card(promotion_id, platform).await? else {
            return Ok(Sent::Done);
        };
        if let Some(due) = next_edit(&record).filter(|due| *due > wall_now()) {
            return Ok(Sent::TooSoon(due));
        }
        let card = self.card(promotion_id).await.map_err(CardFailure::Engine)?;
        match &record.message_id {
            // Output first, then the edit: a card that says "succeeded" has its output below it.
            Some(message_id) => {
                self.post_deploy_output(port, promotion_id, &record, message_id)
                    .await?;
                port.update_card(&record.channel, message_id, &card).await?;
                self.store()
                    .card_sent(promotion_id, platform, message_id, wall_now())
                    .await?;
            }
            None => {
                let message_id = port.post_card(&record.channel, &card).await?;
                // Remembered at once: a failure below must not post the card twice.
                self.store()
                    .card_sent(promotion_id, platform, &message_id, wall_now())
                    .await?;
                self.post_deploy_output(port, promotion_id, &record, &message_id)
                    .await?;
            }
        }
        Ok(Sent::Done)
    }

    /// New deploy output goes to the card's thread, in batches.
    async fn post_deploy_output(
        &self,
        port: &dyn ChatPort,
        promotion_id: i64,
        record: &ChatCardRecord,
        message_id: &str,
    ) -> Result<(), CardFailure> {
        let lines = self
            .store()
            .deploy_log_since(promotion_id, record.thread_log_id)
            .await?;
        for batch in lines.chunks(THREAD_BATCH) {
            let Some((last_id, _)) = batch.last() else {
                continue;
            };
            let text: Vec<String> = batch.iter().map(|(_, line)| line.clone()).collect();
            port.post_to_thread(&record.channel, message_id, &text)
                .await?;
            self.store()
                .thread_posted(promotion_id, port.platform(), *last_id)
                .await?;
        }
        Ok(())
    }

    /// Owes the promotion's cards an update, inside `tx`. Without chat platforms there are no
    /// cards, and the statement is skipped (it is one more round trip per state change).
    pub(super) async fn touch_cards(
        &self,
        tx: &mut Tx,
        promotion_id: i64,
    ) -> Result<(), StoreError> {
        if self.inner.chats.is_empty() {
            return Ok(());
        }
        tx.touch_cards(promotion_id, wall_now()).await
    }

    /// Deploy output arrived: the card's progress line and thread are owed an update.
    pub(super) async fn progress_changed(&self, promotion_id: i64) {
        if self.inner.chats.is_empty() {
            return;
        }
        match self.store().touch_cards(promotion_id, wall_now()).await {
            Ok(()) => self.notify_workers(),
            Err(e) => {
                tracing::warn!(promotion = promotion_id, error = %e, "could not schedule a card update")
            }
        }
    }
}

enum Sent {
    Done,
    /// The card was edited less than a second ago: come back at this time.
    TooSoon(DateTime<Utc>),
}

#[derive(Debug, thiserror::Error)]
enum CardFailure {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(EngineError),
}

fn next_edit(record: &ChatCardRecord) -> Option<DateTime<Utc>> {
    record.sent_at.map(|at| at + chrono_of(MIN_EDIT_INTERVAL))
}

/// 1 s, 2 s, 4 s … up to 5 minutes.
pub(super) fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

pub(super) fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 9, 10, 50].map(|a| backoff(a).as_secs()).to_vec();
        assert_eq!(delays, [1, 2, 4, 256, 300, 300]);
    }
}
