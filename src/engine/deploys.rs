//! The deploy worker: claims deploy jobs with a lease, runs the backend with a heartbeat, writes
//! its output to the deploy log and its end to the promotion; marks deploys whose process is gone
//! as interrupted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::deploy::{DeployOutcome, DeployRequest};
use crate::domain::promotion::{Promotion, PromotionEvent, PromotionState};
use crate::metrics::{EnvironmentLabels, Metrics, OutcomeLabels};
use crate::store::{ClaimedJob, JobKind, Store, Tx};

use super::calendar::Calendar;
use super::clock::Time;
use super::ledger::Ledger;
use super::outbox::logged;
use super::{bot_identity, Backends, EngineError};

/// A deploy job is ours for this long, renewed by heartbeats. Leases, like all job due times, are
/// real time: they are about processes being alive, whatever the rules clock says.
const LEASE: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(20);
pub(super) const MAX_CONCURRENT_DEPLOYS: usize = 16;
const LOG_BATCH: usize = 100;

pub(super) struct DeployWorker {
    pub store: Store,
    pub time: Time,
    pub metrics: Arc<Metrics>,
    pub ledger: Ledger,
    pub calendar: Arc<Calendar>,
    pub backends: Backends,
    pub worker_id: String,
}

impl DeployWorker {
    /// Start-up recovery: a single-process (SQLite) bot owns every deploy in the database, so any
    /// left deploying or verifying died with the previous process.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let sole_process = self.store.forget_leases_if_embedded().await?;
        self.interrupt_orphans(sole_process).await
    }

    pub async fn interrupt_orphans(&self, all: bool) -> Result<usize, EngineError> {
        let orphans = self
            .store
            .orphaned_deploys(self.time.real_now(), &self.worker_id, all)
            .await?;
        for id in &orphans {
            let mut tx = self.store.begin().await?;
            let running = tx.lock_promotion(*id).await?.filter(|p| {
                matches!(
                    p.state(),
                    PromotionState::Deploying | PromotionState::Verifying
                )
            });
            if let Some(promotion) = running {
                let reason = "the bot stopped while this deploy was running; check the environment, then retry or roll back";
                self.ledger
                    .apply(
                        &mut tx,
                        &promotion,
                        PromotionEvent::BotDied,
                        &bot_identity(),
                        reason,
                    )
                    .await?;
                tx.delete_jobs(JobKind::Deploy, promotion.id).await?;
                tracing::warn!(
                    promotion = promotion.id,
                    "deploy interrupted by a stopped bot"
                );
            }
            tx.commit().await?;
        }
        Ok(orphans.len())
    }

    pub async fn claim_deploys(&self, capacity: usize) -> Vec<ClaimedJob> {
        if capacity == 0 {
            return Vec::new();
        }
        let limit = u32::try_from(capacity).unwrap_or(u32::MAX);
        let now = self.time.real_now();
        let claimed = self
            .store
            .claim_jobs(JobKind::Deploy, &self.worker_id, now, LEASE, limit)
            .await;
        logged(claimed, "deploy jobs")
    }

    pub async fn run_deploy_job(&self, job: ClaimedJob, cancel: CancellationToken) {
        let result = async {
            let Some((promotion, commit)) = self.begin_deploy(&job).await? else {
                return Ok(());
            };
            // A duration, not a time of day: the monotonic clock, immune to clock jumps.
            let started = Instant::now();
            let request = deploy_request(&promotion, commit);
            let outcome = self.deploy_with_heartbeat(&job, request, cancel).await;
            self.end_deploy(&promotion, outcome, started.elapsed())
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(promotion = job.promotion_id, error = %e, "deploy job failed");
        }
    }

    /// approved/queued → deploying, or drops the job when the promotion went elsewhere (cancelled).
    /// Returns the promotion and its release's commit.
    async fn begin_deploy(
        &self,
        job: &ClaimedJob,
    ) -> Result<Option<(Promotion, Option<String>)>, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx.promotion(job.promotion_id).await?;
        let startable = promotion
            .as_ref()
            .filter(|p| matches!(p.state(), PromotionState::Approved | PromotionState::Queued));
        let Some(promotion) = startable else {
            tx.delete_job(job.id).await?;
            tx.commit().await?;
            return Ok(None);
        };
        // A window may have closed or a freeze begun since the job was queued.
        if self.hold_back(&mut tx, promotion).await? {
            tx.delete_jobs(JobKind::Deploy, job.promotion_id).await?;
            tx.commit().await?;
            return Ok(None);
        }
        let detail = format!(
            "deploying {} {} to {}",
            promotion.service, promotion.version, promotion.environment
        );
        let deploying = self
            .ledger
            .apply(
                &mut tx,
                promotion,
                PromotionEvent::StartDeploy,
                &bot_identity(),
                &detail,
            )
            .await?;
        let release = tx.release(&deploying.service, &deploying.version).await?;
        tx.commit().await?;
        self.metrics
            .deploys_started
            .get_or_create(&EnvironmentLabels {
                service: deploying.service.clone(),
                environment: deploying.environment.clone(),
            })
            .inc();
        Ok(Some((deploying, release.and_then(|r| r.commit))))
    }

    /// Sends a promotion whose gate closed back to `queued` (or refreshes why it waits); `true`
    /// when it must wait.
    async fn hold_back(&self, tx: &mut Tx, promotion: &Promotion) -> Result<bool, EngineError> {
        let now = self.time.now();
        let adhoc = tx.active_freezes(now).await?;
        let Some(reason) = self.calendar.must_wait(promotion, &adhoc, now) else {
            return Ok(false);
        };
        if promotion.state() == PromotionState::Approved {
            self.ledger
                .apply(
                    tx,
                    promotion,
                    PromotionEvent::WaitForWindow,
                    &bot_identity(),
                    &reason,
                )
                .await?;
        } else if promotion.reason() != Some(reason.as_str()) {
            tx.set_reason(promotion.id, &reason, now).await?;
            self.ledger.touch_cards(tx, promotion.id).await?;
        }
        Ok(true)
    }

    async fn deploy_with_heartbeat(
        &self,
        job: &ClaimedJob,
        request: DeployRequest,
        cancel: CancellationToken,
    ) -> DeployOutcome {
        let Some(backend) = self.backends.get(&request.service, &request.environment) else {
            return DeployOutcome::Failed {
                reason: format!(
                    "no backend is configured for {} {}",
                    request.service, request.environment
                ),
            };
        };
        let promotion_id = request.promotion_id;
        let (progress, lines) = mpsc::channel(1024);
        let writer = ProgressWriter {
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            time: self.time.clone(),
        };
        let log_writer = tokio::spawn(writer.run(promotion_id, lines));
        let deploy = backend.deploy(request, progress, cancel);
        tokio::pin!(deploy);
        let outcome = loop {
            tokio::select! {
                outcome = &mut deploy => break outcome,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    let until = self.time.real_now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
                    if let Err(e) = self.store.renew_lease(job.id, &self.worker_id, until).await {
                        tracing::warn!(error = %e, "could not renew deploy lease");
                    }
                }
            }
        };
        if log_writer.await.is_err() {
            tracing::error!(promotion = promotion_id, "deploy log writer stopped");
        }
        outcome
    }

    async fn end_deploy(
        &self,
        promotion: &Promotion,
        outcome: DeployOutcome,
        took: Duration,
    ) -> Result<(), EngineError> {
        let (event, detail, label) = match outcome {
            DeployOutcome::Succeeded => (
                PromotionEvent::DeploySucceeded { verify: false },
                format!(
                    "{} {} runs in {}",
                    promotion.service, promotion.version, promotion.environment
                ),
                "succeeded",
            ),
            DeployOutcome::Failed { reason } => (PromotionEvent::Fail, reason, "failed"),
            // Shutdown past the grace period: the next start marks it interrupted.
            DeployOutcome::Cancelled => return Ok(()),
        };
        let mut tx = self.store.begin().await?;
        let replaced = tx
            .current(&promotion.service, &promotion.environment)
            .await?;
        let ended = self
            .ledger
            .apply(&mut tx, promotion, event, &bot_identity(), &detail)
            .await?;
        if ended.state() == PromotionState::Succeeded {
            tx.set_current(&ended).await?;
            if let Some(replaced) =
                replaced.filter(|r| promotion.rollback && r.state() == PromotionState::Succeeded)
            {
                let note = format!("replaced by rollback #{}", promotion.id);
                self.ledger
                    .apply(
                        &mut tx,
                        &replaced,
                        PromotionEvent::ReplacedByRollback,
                        &bot_identity(),
                        &note,
                    )
                    .await?;
            }
        }
        tx.delete_jobs(JobKind::Deploy, promotion.id).await?;
        tx.commit().await?;
        self.observe_deploy(&ended, label, took);
        Ok(())
    }

    fn observe_deploy(&self, promotion: &Promotion, outcome: &str, took: Duration) {
        let metrics = &self.metrics;
        metrics
            .deploy_duration
            .get_or_create(&OutcomeLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
        if promotion.state() == PromotionState::Succeeded {
            let lead = (promotion.updated_at - promotion.created_at)
                .to_std()
                .unwrap_or_default();
            metrics
                .promotion_lead
                .get_or_create(&EnvironmentLabels {
                    service: promotion.service.clone(),
                    environment: promotion.environment.clone(),
                })
                .observe(lead.as_secs_f64());
        }
    }
}

fn deploy_request(promotion: &Promotion, commit: Option<String>) -> DeployRequest {
    DeployRequest {
        promotion_id: promotion.id,
        service: promotion.service.clone(),
        version: promotion.version.to_string(),
        environment: promotion.environment.clone(),
        previous_version: promotion.previous_version.as_ref().map(ToString::to_string),
        requested_by: promotion.requested_by.to_string(),
        rollback: promotion.rollback,
        commit,
    }
}

/// Stores a running deploy's output lines and owes its cards an update.
struct ProgressWriter {
    store: Store,
    ledger: Ledger,
    time: Time,
}

impl ProgressWriter {
    /// Appends progress lines to the deploy log in batches until the backend closes the channel.
    async fn run(self, promotion_id: i64, mut lines: mpsc::Receiver<String>) {
        let mut batch = Vec::with_capacity(LOG_BATCH);
        while let Some(line) = lines.recv().await {
            batch.push(line);
            while batch.len() < LOG_BATCH {
                match lines.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            match self
                .store
                .append_deploy_log(promotion_id, &batch, self.time.now())
                .await
            {
                Ok(()) => self.ledger.progress_changed(promotion_id).await,
                Err(e) => {
                    tracing::warn!(promotion = promotion_id, error = %e, "could not store deploy output")
                }
            }
            batch.clear();
        }
    }
}
