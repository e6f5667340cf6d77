//! Workers: claim outbox jobs with a lease and carry them out; sweep expired approvals and
//! orphaned deploys; recover after a crash.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::deploy::{DeployOutcome, DeployRequest};
use crate::domain::promotion::{PromotionEvent, PromotionState};
use crate::metrics::{EnvironmentLabels, OutcomeLabels};
use crate::store::{ClaimedJob, Dialect, JobKind, PromotionRecord};

use super::{bot_identity, wall_now, Engine, EngineError};

/// How long a claimed job is ours without a heartbeat.
/// A deploy job is ours for this long, renewed by heartbeats. Leases, like all job due times, are
/// real time: they are about processes being alive, whatever the engine's clock says.
const LEASE: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(20);
/// Sweeps and claims also run this often when nothing wakes the workers.
const POLL: Duration = Duration::from_millis(500);
const MAX_CONCURRENT_DEPLOYS: usize = 16;
const MAX_CONCURRENT_CARDS: usize = 16;
const LOG_BATCH: usize = 100;

impl Engine {
    /// Start-up recovery: a single-process (SQLite) bot owns every deploy in the database, so any
    /// left deploying or verifying died with the previous process.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        if self.store().dialect() != Dialect::Sqlite {
            return self.interrupt_orphans(false).await;
        }
        self.store().release_all_leases().await?;
        self.interrupt_orphans(true).await
    }

    async fn interrupt_orphans(&self, all: bool) -> Result<usize, EngineError> {
        let orphans = self
            .store()
            .orphaned_deploys(wall_now(), &self.inner.worker_id, all)
            .await?;
        for id in &orphans {
            self.with_promotion(*id, |engine, tx, promotion| {
                Box::pin(async move {
                    if !matches!(promotion.state, PromotionState::Deploying | PromotionState::Verifying) {
                        return Ok(());
                    }
                    let reason = "the bot stopped while this deploy was running; check the environment, then retry or roll back";
                    engine
                        .apply(tx, &promotion, PromotionEvent::BotDied, &bot_identity(), reason)
                        .await?;
                    tx.delete_jobs(JobKind::Deploy, promotion.id).await?;
                    tracing::warn!(promotion = promotion.id, "deploy interrupted by a stopped bot");
                    Ok(())
                })
            })
            .await?;
        }
        Ok(orphans.len())
    }

    /// Runs the workers until `shutdown`; then lets running deploys finish for `grace` and leaves
    /// the rest to be marked interrupted at the next start.
    pub async fn run_workers(self, shutdown: CancellationToken, grace: Duration) {
        let abort_deploys = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut cards = JoinSet::new();
        let mut last_housekeeping: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.jobs_ready.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                Some(_) = cards.join_next(), if !cards.is_empty() => {}
            }
            while running.try_join_next().is_some() {}
            while cards.try_join_next().is_some() {}
            // Sweeps are cheap but not free: once per poll interval, however often we wake.
            if last_housekeeping.is_none_or(|at| at.elapsed() >= POLL) {
                self.housekeeping().await;
                last_housekeeping = Some(Instant::now());
            }
            let capacity = MAX_CONCURRENT_DEPLOYS.saturating_sub(running.len());
            for job in self.claim_deploys(capacity).await {
                let engine = self.clone();
                let cancel = abort_deploys.child_token();
                running.spawn(async move { engine.run_deploy_job(job, cancel).await });
            }
            self.send_cards(&mut cards).await;
            self.send_announcements(&mut cards).await;
        }
        // Cards in flight finish (they take well under a second); pending ones wait in the outbox.
        while cards.join_next().await.is_some() {}
        if !running.is_empty() {
            tracing::info!(running = running.len(), grace = ?grace, "waiting for running deploys");
            let drained = tokio::time::timeout(grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    "grace period over: stopping deploys; they will show as interrupted"
                );
                abort_deploys.cancel();
                while running.join_next().await.is_some() {}
            }
        }
    }

    /// Claims due card jobs for every chat platform and sends them concurrently.
    async fn send_cards(&self, cards: &mut JoinSet<()>) {
        for port in self.chat_ports() {
            let capacity = MAX_CONCURRENT_CARDS.saturating_sub(cards.len());
            let limit = u32::try_from(capacity).unwrap_or(0);
            if limit == 0 {
                return;
            }
            for job in self.claim_cards(port.as_ref(), limit).await {
                let engine = self.clone();
                let port = port.clone();
                cards.spawn(async move { engine.run_card_job(port, job).await });
            }
        }
    }

    /// Claims due announcements for every chat platform and posts them concurrently.
    async fn send_announcements(&self, sends: &mut JoinSet<()>) {
        for port in self.chat_ports() {
            let capacity = MAX_CONCURRENT_CARDS.saturating_sub(sends.len());
            let limit = u32::try_from(capacity).unwrap_or(0);
            if limit == 0 {
                return;
            }
            for job in self.claim_announcements(port.as_ref(), limit).await {
                let engine = self.clone();
                let port = port.clone();
                sends.spawn(async move { engine.send_announcement(port, job).await });
            }
        }
    }

    async fn housekeeping(&self) {
        self.run_scheduler().await;
        if let Err(e) = self.expire_approvals().await {
            tracing::error!(error = %e, "approval expiry sweep failed");
        }
        if let Err(e) = self.interrupt_orphans(false).await {
            tracing::error!(error = %e, "orphaned deploy sweep failed");
        }
    }

    async fn claim_deploys(&self, capacity: usize) -> Vec<ClaimedJob> {
        if capacity == 0 {
            return Vec::new();
        }
        let limit = u32::try_from(capacity).unwrap_or(u32::MAX);
        match self
            .store()
            .claim_jobs(
                JobKind::Deploy,
                &self.inner.worker_id,
                wall_now(),
                LEASE,
                limit,
            )
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "could not claim deploy jobs");
                Vec::new()
            }
        }
    }

    async fn run_deploy_job(&self, job: ClaimedJob, cancel: CancellationToken) {
        let result = async {
            let Some((promotion, commit)) = self.begin_deploy(&job).await? else {
                return Ok(());
            };
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
    ) -> Result<Option<(PromotionRecord, Option<String>)>, EngineError> {
        let mut tx = self.store().begin().await?;
        let promotion = tx.promotion(job.promotion_id).await?;
        let startable = promotion
            .as_ref()
            .filter(|p| matches!(p.state, PromotionState::Approved | PromotionState::Queued));
        let Some(promotion) = startable else {
            tx.delete_job(job.id).await?;
            tx.commit().await?;
            return Ok(None);
        };
        // A window may have closed or a freeze begun since the job was queued.
        if promotion.force_reason.is_none() {
            let now = self.now();
            let adhoc = tx.active_freezes(now).await?;
            let gate = self.gate(promotion, &adhoc, now);
            if let Some(reason) = self.wait_reason(promotion, &gate) {
                if promotion.state == PromotionState::Approved {
                    self.apply(
                        &mut tx,
                        promotion,
                        PromotionEvent::WaitForWindow,
                        &bot_identity(),
                        &reason,
                    )
                    .await?;
                } else if promotion.reason.as_deref() != Some(reason.as_str()) {
                    tx.set_reason(promotion.id, &reason, now).await?;
                    self.touch_cards(&mut tx, promotion.id).await?;
                }
                tx.delete_jobs(JobKind::Deploy, job.promotion_id).await?;
                tx.commit().await?;
                return Ok(None);
            }
        }
        let detail = format!(
            "deploying {} {} to {}",
            promotion.service, promotion.version, promotion.environment
        );
        let deploying = self
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
        self.metrics()
            .deploys_started
            .get_or_create(&EnvironmentLabels {
                service: deploying.service.clone(),
                environment: deploying.environment.clone(),
            })
            .inc();
        Ok(Some((deploying, release.and_then(|r| r.commit))))
    }

    async fn deploy_with_heartbeat(
        &self,
        job: &ClaimedJob,
        request: DeployRequest,
        cancel: CancellationToken,
    ) -> DeployOutcome {
        let Some(backend) = self
            .inner
            .backends
            .get(&request.service, &request.environment)
        else {
            return DeployOutcome::Failed {
                reason: format!(
                    "no backend is configured for {} {}",
                    request.service, request.environment
                ),
            };
        };
        let promotion_id = request.promotion_id;
        let (progress, lines) = mpsc::channel(1024);
        let log_writer = tokio::spawn(self.clone().write_progress(promotion_id, lines));
        let deploy = backend.deploy(request, progress, cancel);
        tokio::pin!(deploy);
        let outcome = loop {
            tokio::select! {
                outcome = &mut deploy => break outcome,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    let until = wall_now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
                    if let Err(e) = self.store().renew_lease(job.id, &self.inner.worker_id, until).await {
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

    /// Appends progress lines to the deploy log in batches until the backend closes the channel.
    async fn write_progress(self, promotion_id: i64, mut lines: mpsc::Receiver<String>) {
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
                .store()
                .append_deploy_log(promotion_id, &batch, self.now())
                .await
            {
                Ok(()) => self.progress_changed(promotion_id).await,
                Err(e) => {
                    tracing::warn!(promotion = promotion_id, error = %e, "could not store deploy output")
                }
            }
            batch.clear();
        }
    }

    async fn end_deploy(
        &self,
        promotion: &PromotionRecord,
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
        let mut tx = self.store().begin().await?;
        let replaced = tx
            .current(&promotion.service, &promotion.environment)
            .await?;
        let ended = self
            .apply(&mut tx, promotion, event, &bot_identity(), &detail)
            .await?;
        if ended.state == PromotionState::Succeeded {
            tx.set_current(&ended).await?;
            if let Some(replaced) =
                replaced.filter(|r| promotion.rollback && r.state == PromotionState::Succeeded)
            {
                let note = format!("replaced by rollback #{}", promotion.id);
                self.apply(
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

    fn observe_deploy(&self, promotion: &PromotionRecord, outcome: &str, took: Duration) {
        let metrics = self.metrics();
        metrics
            .deploy_duration
            .get_or_create(&OutcomeLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
        if promotion.state == PromotionState::Succeeded {
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

fn deploy_request(promotion: &PromotionRecord, commit: Option<String>) -> DeployRequest {
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
