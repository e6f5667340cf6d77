//! The outbox worker's chat side: card jobs sent through the chat ports with at most one edit per
//! second per card, deploy output posted to the card's thread, announcements posted; platform
//! rate limits obeyed, failures given back to the outbox with a due time.
//!
//! A call the platform refuses for good ([`ChatError::Permanent`]: a message too long, a channel
//! the bot is not in) is logged as an error and given up: retrying it would block the card
//! forever. A refused thread batch is skipped and the card edit still goes out; a refused card
//! post or edit ends that job, and the next change of the promotion is sent again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::card::{Card, RolloutStand};
use super::chat::{ChatError, ChatPlatform, ChatPort};
use super::clock::Time;
use super::governance::asked_of;
use super::signing::Signer;
use super::view::view_of;
use super::EngineError;
use crate::config::Config;
use crate::domain::promotion::{Promotion, PromotionState};
use crate::store::{ChatCardRecord, ClaimedAnnouncement, ClaimedJob, JobKind, Store, StoreError};

/// Cards are edited at most this often (SPEC §3).
pub const MIN_EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// A card job is ours for this long; sends take well under a second.
pub const CARD_LEASE: Duration = Duration::from_secs(30);
const ANNOUNCE_LEASE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest a card post or edit (with its thread output), or an announcement, may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Deploy output posted to a thread in one message at most.
const THREAD_BATCH: usize = 50;

pub(super) struct Outbox {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub chats: HashMap<ChatPlatform, Arc<dyn ChatPort>>,
    pub worker_id: String,
    /// Until when (real time) a platform asked us not to call it (its last HTTP 429): nothing is
    /// claimed for it before then, so one rate limit holds back every card, not just the one
    /// that met it (Slack and Discord limit the bot, not a message).
    pub rate_limited: Mutex<HashMap<ChatPlatform, DateTime<Utc>>>,
    pub signer: Arc<Signer>,
}

impl Outbox {
    /// The card of a promotion as it stands now.
    pub async fn card(&self, promotion_id: i64) -> Result<Card, EngineError> {
        let promotion = self
            .store
            .promotion(promotion_id)
            .await?
            .ok_or_else(|| super::unknown_promotion(promotion_id))?;
        let view = view_of(&self.store, promotion).await?;
        let promotion = &view.promotion;
        let from = self
            .config
            .service(&promotion.service)
            .map(|s| s.pipeline())
            .and_then(|pipeline| {
                let index = pipeline.iter().position(|e| *e == promotion.environment)?;
                index.checked_sub(1).and_then(|i| pipeline.get(i).cloned())
            });
        let progress = self.store.deploy_log(promotion_id).await?.pop();
        let link = self.page_link(promotion_id);
        let stand = self.rollout_stand(promotion).await?;
        let (checklist, approvers) = asked_of(&self.config, &self.store, promotion).await?;
        Ok(Card::build(&view, from, progress, link, self.time.now())
            .with_rollout(stand)
            .with_governance(checklist, approvers))
    }

    /// The promotion's web page with a signed query that opens it without signing in, when the
    /// bot has a public URL.
    fn page_link(&self, promotion_id: i64) -> Option<String> {
        let url = self.config.server.public_url.as_deref()?;
        let expires = self.time.now()
            + chrono::Duration::from_std(self.config.web.link_expiry)
                .unwrap_or(chrono::Duration::days(30));
        let query = self.signer.link_query(promotion_id, expires);
        Some(format!("{url}/ui/promotions/{promotion_id}?{query}"))
    }

    /// Where the promotion's rollout stands, while it deploys or verifies.
    async fn rollout_stand(
        &self,
        promotion: &Promotion,
    ) -> Result<Option<RolloutStand>, EngineError> {
        if !matches!(
            promotion.state(),
            PromotionState::Deploying | PromotionState::Verifying
        ) {
            return Ok(None);
        }
        let Some(environment) = self
            .config
            .service(&promotion.service)
            .and_then(|s| s.environment(&promotion.environment))
        else {
            return Ok(None);
        };
        let Some(row) = self.store.rollout(promotion.id).await? else {
            return Ok(None);
        };
        let plan = environment.plan(promotion.rollback);
        Ok(Some(RolloutStand::of(
            &plan,
            &row,
            &environment.verify,
            self.time.now(),
        )))
    }

    pub fn chat_ports(&self) -> Vec<Arc<dyn ChatPort>> {
        self.chats.values().cloned().collect()
    }

    pub async fn claim_cards(&self, port: &dyn ChatPort, limit: u32) -> Vec<ClaimedJob> {
        let kind = JobKind::Card(port.platform());
        let now = self.time.real_now();
        if self.held_back(port.platform(), now) {
            return Vec::new();
        }
        let claimed = self
            .store
            .claim_jobs(kind, &self.worker_id, now, CARD_LEASE, limit)
            .await;
        logged(claimed, "card jobs")
    }

    /// Sends one card job; whatever happens, the job is finished or given back with a due time.
    pub async fn run_card_job(&self, port: Arc<dyn ChatPort>, job: ClaimedJob) {
        let platform = port.platform();
        // A hung platform call must not hold a worker slot (or shutdown) hostage.
        let outcome = tokio::time::timeout(
            SEND_TIMEOUT,
            self.send_card(port.as_ref(), job.promotion_id),
        )
        .await
        .unwrap_or_else(|_| Err(CardFailure::Chat(no_answer())));
        let result = match outcome {
            Ok(Sent::Done) => {
                let next = self.time.real_now() + chrono_of(MIN_EDIT_INTERVAL);
                self.store.finish_card_job(job.id, next).await
            }
            Ok(Sent::TooSoon(due)) => self.store.retry_job(job.id, due, "paced").await,
            Err(failure) if failure.is_permanent() => {
                tracing::error!(%platform, promotion = job.promotion_id, error = %failure,
                    "the platform refused this card for good; giving up on it (the next change of the promotion is sent again). Check that the bot is in the channel and may post there");
                let next = self.time.real_now() + chrono_of(MIN_EDIT_INTERVAL);
                self.store.finish_card_job(job.id, next).await
            }
            Err(failure) => {
                tracing::warn!(%platform, promotion = job.promotion_id, error = %failure, "card not sent; will retry");
                let retry_after = match &failure {
                    CardFailure::Chat(error) => error.retry_after(),
                    _ => None,
                };
                self.hold_back(platform, retry_after);
                let note = failure.to_string();
                self.retry_later(job.id, job.attempts, &note, retry_after)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "could not settle card job; its lease will run out");
        }
    }

    /// Whether `platform` rate-limited us until after `now`.
    fn held_back(&self, platform: ChatPlatform, now: DateTime<Utc>) -> bool {
        let limited = self
            .rate_limited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limited.get(&platform).is_some_and(|until| *until > now)
    }

    /// Remembers a platform's `Retry-After` (when it sent one) for every claim to come.
    fn hold_back(&self, platform: ChatPlatform, retry_after: Option<Duration>) {
        let Some(retry_after) = retry_after else {
            return;
        };
        let until = self.time.real_now() + chrono_of(retry_after);
        let mut limited = self
            .rate_limited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = limited.entry(platform).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Gives a job whose send failed back to the outbox: due when the platform's rate limit
    /// says (`retry_after`), or after a backoff that grows with its attempts.
    async fn retry_later(
        &self,
        job_id: i64,
        attempts: i64,
        note: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let delay = retry_after.unwrap_or_else(|| backoff(attempts));
        let due = self.time.real_now() + chrono_of(delay);
        self.store.retry_job(job_id, due, note).await
    }

    async fn send_card(&self, port: &dyn ChatPort, promotion_id: i64) -> Result<Sent, CardFailure> {
        let platform = port.platform();
        let Some(record) = self.store.chat_card(promotion_id, platform).await? else {
            return Ok(Sent::Done);
        };
        if let Some(due) = next_edit(&record).filter(|due| *due > self.time.real_now()) {
            return Ok(Sent::TooSoon(due));
        }
        let card = self.card(promotion_id).await.map_err(CardFailure::Engine)?;
        match &record.message_id {
            // Output first, then the edit: a card that says "succeeded" has its output below it.
            Some(message_id) => {
                self.post_deploy_output(port, promotion_id, &record, message_id)
                    .await?;
                self.post_thread_notes(port, &card, &record, message_id)
                    .await?;
                port.update_card(&record.channel, message_id, &card).await?;
                self.store
                    .card_sent(promotion_id, platform, message_id, self.time.real_now())
                    .await?;
            }
            None => {
                let message_id = port.post_card(&record.channel, &card).await?;
                // Remembered at once: a failure below must not post the card twice.
                self.store
                    .card_sent(promotion_id, platform, &message_id, self.time.real_now())
                    .await?;
                self.post_deploy_output(port, promotion_id, &record, &message_id)
                    .await?;
                self.post_thread_notes(port, &card, &record, &message_id)
                    .await?;
            }
        }
        Ok(Sent::Done)
    }

    /// The bot's notes for the card's thread (reminders), each once, pinging the approvers when
    /// the note asks to.
    async fn post_thread_notes(
        &self,
        port: &dyn ChatPort,
        card: &Card,
        record: &ChatCardRecord,
        message_id: &str,
    ) -> Result<(), CardFailure> {
        let platform = port.platform();
        let promotion_id = card.promotion_id;
        let cursor = self
            .store
            .thread_note_cursor(promotion_id, platform)
            .await?;
        for note in self.store.thread_notes_since(promotion_id, cursor).await? {
            let mention = if note.mention_approvers {
                card.approvers.as_slice()
            } else {
                &[]
            };
            match port
                .post_thread_note(&record.channel, message_id, &note.text, mention)
                .await
            {
                Ok(()) => {}
                Err(error) if error.is_permanent() => {
                    tracing::error!(%platform, promotion = promotion_id, %error,
                        "the platform refused a note for the card's thread for good; skipping it");
                }
                Err(error) => return Err(error.into()),
            }
            self.store
                .thread_note_posted(promotion_id, platform, note.id)
                .await?;
        }
        Ok(())
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
            .store
            .deploy_log_since(promotion_id, record.thread_log_id)
            .await?;
        for batch in lines.chunks(THREAD_BATCH) {
            let Some((last_id, _)) = batch.last() else {
                continue;
            };
            let text: Vec<String> = batch.iter().map(|(_, line)| line.clone()).collect();
            match port
                .post_to_thread(&record.channel, message_id, &text)
                .await
            {
                Ok(()) => {}
                // Marked posted below all the same: the card edit after it must not wait forever.
                Err(error) if error.is_permanent() => {
                    tracing::error!(platform = %port.platform(), promotion = promotion_id, %error, lines = text.len(),
                        "the platform refused deploy output for the card's thread for good; those lines are only in the deploy log");
                }
                Err(error) => return Err(error.into()),
            }
            self.store
                .thread_posted(promotion_id, port.platform(), *last_id)
                .await?;
        }
        Ok(())
    }

    pub async fn claim_announcements(
        &self,
        port: &dyn ChatPort,
        limit: u32,
    ) -> Vec<ClaimedAnnouncement> {
        let now = self.time.real_now();
        if self.held_back(port.platform(), now) {
            return Vec::new();
        }
        let claimed = self
            .store
            .claim_announcements(port.platform(), &self.worker_id, now, ANNOUNCE_LEASE, limit)
            .await;
        logged(claimed, "announcements")
    }

    /// Posts one announcement; on failure it goes back to the outbox with a due time.
    pub async fn send_announcement(&self, port: Arc<dyn ChatPort>, job: ClaimedAnnouncement) {
        let sent = tokio::time::timeout(SEND_TIMEOUT, port.post_message(&job.channel, &job.text))
            .await
            .unwrap_or_else(|_| Err(no_answer()));
        let settled = match sent {
            Ok(()) => self.store.finish_job(job.id).await,
            Err(error) if error.is_permanent() => {
                tracing::error!(platform = %port.platform(), channel = %job.channel, %error,
                    "the platform refused an announcement for good; it is dropped");
                self.store.finish_job(job.id).await
            }
            Err(error) => {
                self.hold_back(port.platform(), error.retry_after());
                tracing::warn!(platform = %port.platform(), channel = %job.channel, %error, "announcement not sent; will retry");
                let note = error.to_string();
                self.retry_later(job.id, job.attempts, &note, error.retry_after())
                    .await
            }
        };
        if let Err(e) = settled {
            tracing::error!(error = %e, "could not settle an announcement; its lease will run out");
        }
    }
}

/// Claimed jobs, or none (logged) when the claim failed: the next wake-up tries again.
pub(super) fn logged<T>(claimed: Result<Vec<T>, StoreError>, what: &str) -> Vec<T> {
    claimed.unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not claim {what}");
        Vec::new()
    })
}

fn no_answer() -> ChatError {
    ChatError::Unavailable(format!("no answer within {}s", SEND_TIMEOUT.as_secs()))
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

impl CardFailure {
    fn is_permanent(&self) -> bool {
        matches!(self, CardFailure::Chat(error) if error.is_permanent())
    }
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
