//! The deploy worker: claims deploy jobs with a lease, runs the backend with a heartbeat, writes
//! its output to the deploy log and its end to the promotion; marks deploys whose process is gone
//! as interrupted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::deploy::process;
use crate::deploy::{DeployCall, DeployOutcome, DeployRequest, Report, Reporter};
use crate::domain::promotion::{Promotion, PromotionEvent, PromotionState};
use crate::metrics::{EnvironmentLabels, Metrics, OutcomeLabels};
use crate::store::{ClaimedJob, JobKind, JobLease, ProcessRecord, Store, StoreError, Tx};

use super::calendar::Calendar;
use super::clock::Time;
use super::ledger::Ledger;
use super::outbox::logged;
use super::promotions::Promotions;
use super::rollout::{CallMark, Rollout, Stops};
use super::{bot_identity, Backends, EngineError, ErrorKind};
use crate::config::Config;
use crate::domain::rollout::Action;
use tokio::sync::Notify;

/// A deploy job is ours for this long, renewed by heartbeats. Leases are measured on the
/// database's clock (the one all replicas share); they are about processes being alive, whatever
/// the rules clock says. A replica that dies frees its deploys after this long (SPEC §8):
/// short enough to take a remote deploy over promptly, three heartbeats long so one slow
/// renewal does not lose it.
const LEASE: Duration = Duration::from_secs(30);
/// Unit tests renew often so a lost lease shows within a test's patience.
pub(super) const HEARTBEAT: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(10)
};
pub(super) const MAX_CONCURRENT_DEPLOYS: usize = 16;
const LOG_BATCH: usize = 100;
/// Secret values shorter than this are not redacted from deploy output.
const MIN_REDACTED: usize = 6;

pub(super) struct DeployWorker {
    pub store: Store,
    pub time: Time,
    pub metrics: Arc<Metrics>,
    pub ledger: Ledger,
    pub calendar: Arc<Calendar>,
    pub backends: Backends,
    pub worker_id: String,
    pub config: Arc<Config>,
    /// Woken when someone pauses, resumes, advances or aborts a rollout in this process.
    pub controls_changed: Arc<Notify>,
    /// Opens the rollbacks a failure or an abort starts.
    pub rollbacks: Arc<Promotions>,
}

impl DeployWorker {
    /// Start-up recovery: a single-process (SQLite) bot owns every deploy in the database, so any
    /// left deploying or verifying died with the previous process.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let sole_process = self.store.forget_leases_if_embedded().await?;
        self.interrupt_orphans(sole_process).await
    }

    /// Marks deploys nobody runs any more as interrupted, after killing what is left of their
    /// scripts on this host, so a retry cannot start beside them.
    pub async fn interrupt_orphans(&self, all: bool) -> Result<usize, EngineError> {
        self.kill_stale_groups().await?;
        let orphans = self.store.orphaned_deploys(&self.worker_id, all).await?;
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

    /// Runs one claimed deploy job: starts its promotion's rollout, or resumes one that waits
    /// in a gate. Every write for it is fenced by its lease: once the lease is lost (taken by
    /// another claim or run out) the backend is cancelled and nothing more is written for this
    /// job; the promotion is left to whoever holds the job now, or to the orphan sweep.
    pub async fn run_deploy_job(&self, job: ClaimedJob, stops: Stops) {
        let lease = job.lease(&self.worker_id);
        let result = async {
            let Some(Started {
                promotion,
                request,
                position,
                call_marked,
            }) = self.begin_deploy(&job, &lease).await?
            else {
                return Ok(());
            };
            let Some(environment) = self
                .config
                .service(&promotion.service)
                .and_then(|s| s.environment(&promotion.environment))
                .cloned()
            else {
                let reason = format!(
                    "{} {} is no longer in bot.toml; nothing was deployed",
                    promotion.service, promotion.environment
                );
                let mut tx = self.store.begin().await?;
                fence(&mut tx, &lease).await?;
                let ended = self
                    .ledger
                    .apply(
                        &mut tx,
                        &promotion,
                        PromotionEvent::Fail,
                        &bot_identity(),
                        &reason,
                    )
                    .await?;
                return self.end_job(tx, &ended, "failed").await;
            };
            let plan = environment.plan(promotion.rollback);
            let prober = self
                .backends
                .prober(&promotion.service, &promotion.environment);
            Rollout {
                worker: self,
                lease: lease.clone(),
                request,
                environment,
                plan,
                promotion,
                stops,
                prober,
                call_marked,
            }
            .run(position)
            .await
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::Conflict => tracing::warn!(
                promotion = job.promotion_id,
                attempt = job.attempts,
                error = %e,
                "deploy job stopped"
            ),
            Err(e) => {
                tracing::error!(promotion = job.promotion_id, error = %e, "deploy job failed")
            }
        }
    }

    /// approved/queued → deploying, or a rollout waiting in a gate resumed, or drops the job
    /// when the promotion went elsewhere (cancelled). Returns the promotion, what its backend
    /// calls deploy and the plan position to run from.
    async fn begin_deploy(
        &self,
        job: &ClaimedJob,
        lease: &JobLease,
    ) -> Result<Option<Started>, EngineError> {
        let mut tx = self.store.begin().await?;
        fence(&mut tx, lease).await?;
        let promotion = tx.promotion(job.promotion_id).await?;
        if let Some(resumed) = promotion.as_ref().filter(|p| {
            matches!(
                p.state(),
                PromotionState::Deploying | PromotionState::Verifying
            )
        }) {
            // A gate, or a remote call the next holder watches on; a local call died with its
            // process and is left to the orphan sweep.
            let position = tx
                .rollout(resumed.id)
                .await?
                .filter(|r| !r.calling || r.call_remote);
            if let Some(row) = position {
                let request = deploy_request(&mut tx, resumed).await?;
                tx.commit().await?;
                tracing::info!(
                    promotion = resumed.id,
                    position = row.position,
                    "resuming a rollout"
                );
                return Ok(Some(Started {
                    promotion: resumed.clone(),
                    request,
                    position: row.position,
                    call_marked: false,
                }));
            }
        }
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
        let request = deploy_request(&mut tx, &deploying).await?;
        tx.move_rollout(deploying.id, 0, false, None).await?;
        let first_call = self.first_call(&deploying);
        if let Some(mark) = &first_call {
            mark.write(&mut tx, self, self.time.real_now()).await?;
        }
        tx.commit().await?;
        self.metrics
            .deploys_started
            .get_or_create(&EnvironmentLabels {
                service: deploying.service.clone(),
                environment: deploying.environment.clone(),
            })
            .inc();
        Ok(Some(Started {
            promotion: deploying,
            request,
            position: 0,
            call_marked: first_call.is_some(),
        }))
    }

    /// The backend call a fresh rollout of `promotion` begins with, to mark in the transaction
    /// that starts it; `None` when its environment left bot.toml.
    fn first_call(&self, promotion: &Promotion) -> Option<CallMark> {
        let environment = self
            .config
            .service(&promotion.service)?
            .environment(&promotion.environment)?;
        let plan = environment.plan(promotion.rollback);
        let Some(Action::Call(step)) = plan.action(0) else {
            return None;
        };
        Some(CallMark {
            promotion_id: promotion.id,
            position: 0,
            step,
            remote: self
                .backends
                .is_remote(&promotion.service, &promotion.environment),
            multi_step: plan.is_multi_step(),
        })
    }

    /// Sends a promotion whose gate closed, or whose environment still runs an older deploy,
    /// back to `queued` (or refreshes why it waits); `true` when it must wait.
    async fn hold_back(&self, tx: &mut Tx, promotion: &Promotion) -> Result<bool, EngineError> {
        let now = self.time.now();
        let adhoc = tx.active_freezes(now).await?;
        let gate = self.calendar.must_wait(promotion, &adhoc, now);
        let reason = match gate {
            Some(blocker) => blocker.to_string(),
            None => match older_deploy_running(tx, promotion).await? {
                Some(reason) => reason,
                None => return Ok(false),
            },
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

    /// Runs one backend call with a heartbeat on the lease, storing what the backend reports:
    /// lines to the deploy log, its status and remote handle to the rollout row, its process
    /// groups to the job. Losing the lease detaches the call (nothing more is written for it);
    /// `shutdown`, given for a remote call, detaches it at once, as its work goes on elsewhere.
    pub(super) async fn run_call(
        &self,
        lease: &JobLease,
        call: DeployCall,
        shutdown: Option<&CancellationToken>,
    ) -> DeployOutcome {
        let request = &call.request;
        let Some(backend) = self.backends.get(&request.service, &request.environment) else {
            return DeployOutcome::Failed {
                reason: format!(
                    "no backend is configured for {} {}",
                    request.service, request.environment
                ),
            };
        };
        let promotion_id = request.promotion_id;
        let (lines, lines_received) = mpsc::channel(1024);
        let writer = ProgressWriter {
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            time: self.time.clone(),
            lease: lease.clone(),
        };
        let log_writer = tokio::spawn(writer.run(promotion_id, lines_received));
        let (report, mut reports) = Reporter::channel(1024);
        let detach = call.detach.clone();
        let mut calls = CallReports {
            worker: self,
            lease,
            promotion_id,
            lines,
            recorded: Vec::new(),
            status: None,
            detach: detach.clone(),
        };
        let deploy = backend.deploy(DeployCall { report, ..call });
        tokio::pin!(deploy);
        let mut renewed_at = Instant::now();
        let never = CancellationToken::new();
        let shutdown = shutdown.unwrap_or(&never);
        let outcome = loop {
            tokio::select! {
                outcome = &mut deploy => break outcome,
                Some(report) = reports.recv() => calls.store(report).await,
                () = shutdown.cancelled(), if !detach.is_cancelled() => detach.cancel(),
                _ = tokio::time::sleep(HEARTBEAT), if !detach.is_cancelled() => {
                    if !self.heartbeat(lease, &mut renewed_at).await {
                        detach.cancel();
                    }
                }
            }
        };
        // The backend has returned: what it reported last is still queued.
        while let Some(report) = reports.recv().await {
            calls.store(report).await;
        }
        let recorded = calls.finish();
        let outcome = match outcome {
            DeployOutcome::Failed { reason } => DeployOutcome::Failed {
                reason: self.redact(reason),
            },
            other => other,
        };
        if log_writer.await.is_err() {
            tracing::error!(promotion = promotion_id, "deploy log writer stopped");
        }
        // A backend returns with its groups dead (the trait's promise): forget them.
        for record in &recorded {
            if let Err(e) = self.store.forget_process(record).await {
                tracing::warn!(promotion = promotion_id, error = %e, "could not forget a deploy process group; the next sweep will");
            }
        }
        outcome
    }

    /// `text` without any secret of the configuration: a backend's output or a server's error
    /// may quote one, and it would reach the deploy log, the cards and the thread.
    fn redact(&self, text: String) -> String {
        let mut clean = text;
        for secret in self.config.secret_values() {
            // A very short value would blank out ordinary words; a real token is longer.
            if secret.len() >= MIN_REDACTED && clean.contains(secret) {
                clean = clean.replace(secret, "***");
            }
        }
        clean
    }

    /// Records a started process group with the job; `false` when the lease is lost (stop).
    async fn record_group(&self, lease: &JobLease, record: &ProcessRecord) -> bool {
        match self
            .store
            .record_process(lease, record, self.time.real_now())
            .await
        {
            Ok(()) => true,
            Err(StoreError::LeaseLost) => false,
            Err(e) => {
                // Not fatal: the parent-death signal still reaches the group's leader.
                tracing::warn!(error = %e, pgid = record.pgid, "could not record a deploy process group");
                true
            }
        }
    }

    /// Kills the recorded groups of this host whose deploy nobody runs any more (the bot that
    /// started them died) and forgets them once they are gone.
    async fn kill_stale_groups(&self) -> Result<(), EngineError> {
        let host = process::host_identity();
        for record in self.store.stale_processes(&host, &self.worker_id).await? {
            let group = local_group(&record);
            if process::kill_if_alive(&group) {
                tracing::warn!(
                    promotion = record.promotion_id,
                    pgid = record.pgid,
                    "killed the deploy script a stopped bot left running"
                );
            }
            if wait_gone(&group).await {
                self.store.forget_process(&record).await?;
            }
        }
        Ok(())
    }

    /// Renews the lease; `false` when the deploy must stop: the lease was taken or ran out, or
    /// renewals kept failing until the next one would come too late.
    pub(super) async fn heartbeat(&self, lease: &JobLease, renewed_at: &mut Instant) -> bool {
        match self.store.renew_lease(lease, LEASE).await {
            Ok(true) => {
                *renewed_at = Instant::now();
                true
            }
            Ok(false) => {
                tracing::warn!(
                    job = lease.job_id,
                    attempt = lease.attempt,
                    "deploy lease lost (taken or run out); stopping the deploy"
                );
                false
            }
            Err(e) => {
                // A passing database hiccup is tolerated while the lease surely still runs.
                let in_time = renewed_at.elapsed() + HEARTBEAT < LEASE;
                tracing::warn!(error = %e, in_time, "could not renew deploy lease");
                in_time
            }
        }
    }

    /// The rollout reached its end: the promotion succeeded and runs in its environment now;
    /// a rollback marks the promotion it replaced as rolled back.
    pub(super) async fn finish_success(
        &self,
        lease: &JobLease,
        promotion: &Promotion,
        event: PromotionEvent,
        rollout_end: Option<usize>,
    ) -> Result<(), EngineError> {
        let detail = format!(
            "{} {} runs in {}",
            promotion.service, promotion.version, promotion.environment
        );
        let mut tx = self.store.begin().await?;
        fence(&mut tx, lease).await?;
        if let Some(end) = rollout_end {
            tx.move_rollout(promotion.id, end, false, None).await?;
        }
        let replaced = tx
            .current(&promotion.service, &promotion.environment)
            .await?;
        let ended = self
            .ledger
            .apply(&mut tx, promotion, event, &bot_identity(), &detail)
            .await?;
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
        self.end_job(tx, &ended, "succeeded").await?;
        self.observe_lead(&ended);
        Ok(())
    }

    /// The last write of a deploy job: its job goes, in the transaction that ended the promotion.
    pub(super) async fn end_job(
        &self,
        mut tx: Tx,
        ended: &Promotion,
        outcome: &str,
    ) -> Result<(), EngineError> {
        tx.delete_jobs(JobKind::Deploy, ended.id).await?;
        tx.commit().await?;
        self.ledger.wake_workers();
        self.observe_deploy(ended, outcome);
        Ok(())
    }

    /// The deploy's duration, from its start to its end, by outcome.
    fn observe_deploy(&self, promotion: &Promotion, outcome: &str) {
        let took = match (promotion.started_at(), promotion.finished_at()) {
            (Some(start), Some(end)) => (end - start).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        self.metrics
            .deploy_duration
            .get_or_create(&OutcomeLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    fn observe_lead(&self, promotion: &Promotion) {
        let lead = (promotion.updated_at - promotion.created_at)
            .to_std()
            .unwrap_or_default();
        self.metrics
            .promotion_lead
            .get_or_create(&EnvironmentLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
            })
            .observe(lead.as_secs_f64());
    }
}

/// Where one call's reports go, in the order the backend sent them.
struct CallReports<'a> {
    worker: &'a DeployWorker,
    lease: &'a JobLease,
    promotion_id: i64,
    lines: mpsc::Sender<String>,
    recorded: Vec<ProcessRecord>,
    /// The status last stored, so an unchanged one costs nothing.
    status: Option<String>,
    /// Cancelled when the lease is lost: the call is no longer ours.
    detach: CancellationToken,
}

impl CallReports<'_> {
    async fn store(&mut self, report: Report) {
        let worker = self.worker;
        let id = self.promotion_id;
        match report {
            Report::Line(line) => {
                let _ = self.lines.send(worker.redact(line)).await;
            }
            Report::Group(group) => {
                let record = process_record(id, &group);
                if !worker.record_group(self.lease, &record).await {
                    self.detach.cancel();
                }
                self.recorded.push(record);
            }
            Report::Handle(handle) => {
                let stored = worker
                    .store
                    .save_call_handle(self.lease, id, &handle.to_string())
                    .await;
                self.check(stored, "remote handle");
            }
            Report::Status(status) => {
                let status = worker.redact(status);
                if self.status.as_ref() == Some(&status) {
                    return;
                }
                let stored = worker.store.save_call_status(self.lease, id, &status).await;
                if stored.is_ok() {
                    worker.ledger.progress_changed(id).await;
                }
                self.check(stored, "status");
                self.status = Some(status);
            }
        }
    }

    /// A lost lease detaches the call; another failure is logged (the next report retries).
    fn check(&self, stored: Result<(), StoreError>, what: &str) {
        match stored {
            Ok(()) => {}
            Err(StoreError::LeaseLost) => {
                tracing::warn!(
                    promotion = self.promotion_id,
                    "deploy lease lost; detaching the call"
                );
                self.detach.cancel();
            }
            Err(e) => {
                tracing::warn!(promotion = self.promotion_id, error = %e, "could not store the call's {what}")
            }
        }
    }

    fn finish(self) -> Vec<ProcessRecord> {
        self.recorded
    }
}

/// Why the promotion must not start yet because an older deploy of its environment may still
/// run: another promotion's job still leased, or a recorded script group still alive (or on
/// another host, where only the bot there can see and kill it). Dead local groups are forgotten.
async fn older_deploy_running(
    tx: &mut Tx,
    promotion: &Promotion,
) -> Result<Option<String>, EngineError> {
    let (service, environment) = (&promotion.service, &promotion.environment);
    if let Some(other) = tx
        .other_leased_deploy(service, environment, promotion.id)
        .await?
    {
        return Ok(Some(format!(
            "waiting for the deploy of #{other} to stop; it starts by itself then (cancel or wait for #{other} to go sooner)"
        )));
    }
    let host = process::host_identity();
    for record in tx
        .environment_processes(service, environment, promotion.id)
        .await?
    {
        if record.host != host {
            return Ok(Some(format!(
                "waiting for the deploy script of #{} to stop on {}; restarting shipmate there stops it",
                record.promotion_id, record.host
            )));
        }
        if process::is_alive(&local_group(&record)) {
            return Ok(Some(format!(
                "waiting for the deploy script of #{} (process group {}) to stop; it starts by itself then, or stop it with `kill -- -{}`",
                record.promotion_id, record.pgid, record.pgid
            )));
        }
        tx.forget_process(&record).await?;
    }
    Ok(None)
}

/// Waits briefly for a killed group's members to be gone; whether they are.
async fn wait_gone(group: &process::LocalGroup) -> bool {
    for _ in 0..100 {
        if !process::is_alive(group) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn process_record(promotion_id: i64, group: &process::LocalGroup) -> ProcessRecord {
    ProcessRecord {
        promotion_id,
        host: group.host.clone(),
        pgid: i64::from(group.pgid),
        started: group.started,
    }
}

fn local_group(record: &ProcessRecord) -> process::LocalGroup {
    process::LocalGroup {
        host: record.host.clone(),
        // A pgid that does not fit is no group of this host.
        pgid: i32::try_from(record.pgid).unwrap_or(0),
        started: record.started,
    }
}

/// A deploy job's promotion as the job starts (or resumes) it.
struct Started {
    promotion: Promotion,
    request: DeployRequest,
    /// Where in its plan it runs from.
    position: usize,
    /// The call at `position` is marked running already.
    call_marked: bool,
}

/// The lease check that opens every write transaction for a deploy job.
pub(super) async fn fence(tx: &mut Tx, lease: &JobLease) -> Result<(), EngineError> {
    match tx.hold_lease(lease).await {
        Ok(()) => Ok(()),
        Err(StoreError::LeaseLost) => Err(EngineError::conflict(format!(
            "the lease on deploy job {} (attempt {}) was lost; this worker writes nothing more for it",
            lease.job_id, lease.attempt
        ))),
        Err(e) => Err(e.into()),
    }
}

/// What the backend calls of `promotion` deploy (each call sets its own step).
async fn deploy_request(tx: &mut Tx, promotion: &Promotion) -> Result<DeployRequest, EngineError> {
    let release = tx.release(&promotion.service, &promotion.version).await?;
    Ok(DeployRequest {
        promotion_id: promotion.id,
        attempt: tx.attempt(promotion.id).await?,
        service: promotion.service.clone(),
        version: promotion.version.to_string(),
        environment: promotion.environment.clone(),
        previous_version: promotion.previous_version.as_ref().map(ToString::to_string),
        requested_by: promotion.requested_by.to_string(),
        rollback: promotion.rollback,
        commit: release.and_then(|r| r.commit),
        digest: tx.promotion_digest(promotion.id).await?,
        step: crate::domain::rollout::Step::FULL,
    })
}

/// Stores a running deploy's output lines and owes its cards an update.
struct ProgressWriter {
    store: Store,
    ledger: Ledger,
    time: Time,
    lease: JobLease,
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
                .append_deploy_log(&self.lease, promotion_id, &batch, self.time.now())
                .await
            {
                Ok(()) => self.ledger.progress_changed(promotion_id).await,
                // The job is someone else's now: its output is no longer ours to write.
                Err(StoreError::LeaseLost) => {
                    tracing::warn!(
                        promotion = promotion_id,
                        "deploy lease lost; output dropped"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(promotion = promotion_id, error = %e, "could not store deploy output")
                }
            }
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::identity::Identity;
    use crate::domain::promotion::Stage;
    use crate::domain::version::Version;
    use crate::engine::clock::Time;
    use crate::store::NewPromotion;
    use async_trait::async_trait;
    use tokio::sync::Notify;

    const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "sqlite://unused.db"
[roles]
deployers = ["*"]
[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"] }
  [[service.environment]]
  name = "production"
  backend = { kind = "webhook", url = "http://127.0.0.1:9/hook", secret = "${HOOK_SECRET}" }
"#;

    /// Says a line, reports that it started, waits for `release` (not for cancel: it plays a
    /// backend slow to stop), says a late line and succeeds. Records whether it was cancelled.
    #[derive(Default)]
    struct Stubborn {
        started: Notify,
        release: Notify,
        cancelled: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl crate::deploy::Backend for Stubborn {
        fn kind(&self) -> &'static str {
            "stubborn"
        }

        async fn check(&self, _: &str, _: &str) -> Result<String, String> {
            Ok("always there".to_string())
        }

        async fn deploy(&self, call: DeployCall) -> DeployOutcome {
            call.report.line("early").await;
            self.started.notify_one();
            let wait_cancel = async {
                call.stopped().await;
                self.cancelled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = self.release.notified() => {}
                () = wait_cancel => {}
            }
            call.report.line("late").await;
            DeployOutcome::Succeeded
        }
    }

    /// Remote work that outlives the bot: the first call reports a handle and a status, then
    /// waits until detached; a resumed call records what it was given and succeeds.
    #[derive(Default)]
    struct Remote {
        started: Notify,
        resumed_with: std::sync::Mutex<Option<(bool, Option<serde_json::Value>)>>,
    }

    #[async_trait]
    impl crate::deploy::Backend for Remote {
        fn kind(&self) -> &'static str {
            "remote"
        }

        fn is_remote(&self) -> bool {
            true
        }

        async fn check(&self, _: &str, _: &str) -> Result<String, String> {
            Ok("reachable".to_string())
        }

        async fn deploy(&self, call: DeployCall) -> DeployOutcome {
            if call.resumed {
                *self.resumed_with.lock().expect("lock") = Some((true, call.handle.clone()));
                return DeployOutcome::Succeeded;
            }
            call.report
                .handle(serde_json::json!({ "run": 88, "secret": "hunter2-token" }))
                .await;
            call.report
                .status("run 88 in progress; token hunter2-token")
                .await;
            self.started.notify_one();
            call.detach.cancelled().await;
            DeployOutcome::Cancelled
        }
    }

    async fn deploy_worker(
        dir: &std::path::Path,
        backend: Arc<dyn crate::deploy::Backend>,
    ) -> DeployWorker {
        let url = format!("sqlite://{}", dir.join("bot.db").display());
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let config: Config = crate::config::parse(CONFIG, dir, &|name: &str| {
            (name == "HOOK_SECRET").then(|| "hunter2-token".to_string())
        })
        .expect("test config");
        let config = Arc::new(config);
        let time = Time::system();
        let metrics = Arc::new(Metrics::new());
        let ledger = Ledger::new(
            store.clone(),
            time.clone(),
            metrics.clone(),
            false,
            Arc::new(Notify::new()),
        );
        let backends = Backends::uniform(&config, backend);
        let calendar = Arc::new(Calendar::new(config.clone()));
        let rollbacks = Arc::new(Promotions {
            config: config.clone(),
            store: store.clone(),
            time: time.clone(),
            metrics: metrics.clone(),
            ledger: ledger.clone(),
            calendar: calendar.clone(),
            platforms: Arc::default(),
        });
        DeployWorker {
            store,
            time,
            metrics,
            ledger,
            calendar,
            backends,
            worker_id: "worker-a".to_string(),
            config,
            controls_changed: Arc::new(Notify::new()),
            rollbacks,
        }
    }

    fn stops() -> Stops {
        Stops {
            shutdown: CancellationToken::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Approves a promotion, claims its deploy job and runs it in a task until the backend says
    /// it `started`; the promotion's id and the running task.
    async fn run_first_job(
        worker: &Arc<DeployWorker>,
        started: &Notify,
        stopping: Stops,
    ) -> (i64, tokio::task::JoinHandle<()>) {
        let id = approved(&worker.store).await;
        let jobs = worker.claim_deploys(1).await;
        assert_eq!(jobs.len(), 1);
        let running = tokio::spawn({
            let (worker, job) = (worker.clone(), jobs[0].clone());
            async move { worker.run_deploy_job(job, stopping).await }
        });
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the backend call started");
        (id, running)
    }

    async fn approved(store: &Store) -> i64 {
        let version: Version = "1.0.0".parse().expect("version");
        let who = Identity::new("api", "ci");
        let now = Time::system().real_now();
        let mut tx = store.begin().await.expect("begin");
        let promotion = tx
            .insert_promotion(NewPromotion {
                service: "api",
                version: &version,
                environment: "staging",
                stage: Stage::Approved,
                requested_by: &who,
                rollback: false,
                previous_version: None,
                required_approvals: 0,
                force_reason: None,
                hotfix_reason: None,
                retry_of: None,
                expires_at: None,
                at: now,
                digest: None,
            })
            .await
            .expect("insert");
        tx.enqueue_deploy(promotion.id, now).await.expect("enqueue");
        tx.commit().await.expect("commit");
        promotion.id
    }

    /// A remote call cut short (here: the bot shutting down) keeps its handle and status on the
    /// rollout row, survives the start-up sweep that interrupts local deploys, and the next
    /// holder of the job resumes it with that handle instead of starting again.
    #[tokio::test]
    async fn a_remote_call_is_resumed_from_its_handle_not_interrupted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = Arc::new(Remote::default());
        let worker = Arc::new(deploy_worker(dir.path(), backend.clone()).await);
        let stopping = stops();
        let (id, running) = run_first_job(&worker, &backend.started, stopping.clone()).await;
        let limit = Instant::now() + Duration::from_secs(10);
        let row = loop {
            let row = worker
                .store
                .rollout(id)
                .await
                .expect("row")
                .expect("a rollout");
            if row.call_status.is_some() && row.call_handle.is_some() {
                break row;
            }
            assert!(
                Instant::now() < limit,
                "handle and status never stored: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(row.calling && row.call_remote, "{row:?}");
        assert_eq!(
            row.call_status.as_deref(),
            Some("run 88 in progress; token ***"),
            "the webhook's secret is redacted from what the cards show"
        );
        stopping.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the call detached at once on shutdown")
            .expect("job task");

        assert_eq!(
            worker.recover().await.expect("recover"),
            0,
            "nothing interrupted"
        );
        let promotion = worker
            .store
            .promotion(id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(promotion.state(), PromotionState::Deploying);
        let jobs = worker.claim_deploys(1).await;
        assert_eq!(jobs.len(), 1, "the job is free to be resumed");
        worker.run_deploy_job(jobs[0].clone(), stops()).await;

        let resumed = backend.resumed_with.lock().expect("lock").clone();
        assert_eq!(
            resumed,
            Some((
                true,
                Some(serde_json::json!({ "run": 88, "secret": "hunter2-token" }))
            ))
        );
        let promotion = worker
            .store
            .promotion(id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(promotion.state(), PromotionState::Succeeded);
    }

    /// Another replica takes the job after our lease ran out on the database's clock: our
    /// heartbeat finds it taken and cancels the backend; the backend's late line and success
    /// are refused; the promotion is not ended by us.
    #[tokio::test]
    async fn a_lost_lease_cancels_the_deploy_and_its_late_writes_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = Arc::new(Stubborn::default());
        let worker = Arc::new(deploy_worker(dir.path(), backend.clone()).await);
        let (id, running) = run_first_job(&worker, &backend.started, stops()).await;
        let limit = Instant::now() + Duration::from_secs(10);
        while worker.store.deploy_log(id).await.expect("log") != ["early"] {
            assert!(Instant::now() < limit, "the early line was never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let url = format!("sqlite://{}", dir.path().join("bot.db").display());
        let raw = sqlx::AnyPool::connect(&url).await.expect("raw pool");
        sqlx::query("UPDATE jobs SET lease_until = 0")
            .execute(&raw)
            .await
            .expect("expire the lease");
        let stolen = worker
            .store
            .claim_jobs(
                JobKind::Deploy,
                "worker-b",
                worker.time.real_now(),
                LEASE,
                1,
            )
            .await
            .expect("claim");
        assert_eq!(stolen.len(), 1, "another worker takes the job");

        let limit = Instant::now() + Duration::from_secs(10);
        while !backend.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                Instant::now() < limit,
                "the lost lease did not cancel the deploy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The backend finishes late anyway and reports success.
        backend.release.notify_one();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the job ended")
            .expect("no panic");

        let promotion = worker
            .store
            .promotion(id)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(
            promotion.state(),
            PromotionState::Deploying,
            "not ended by the loser"
        );
        assert_eq!(worker.store.deploy_log(id).await.expect("log"), ["early"]);
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'deploy'")
            .fetch_one(&raw)
            .await
            .expect("count");
        assert_eq!(jobs, 1, "the new holder's job is left alone");

        // The new holder finds the deploy already started elsewhere; once its job is gone the
        // sweep ends the promotion, once.
        let new_holder = DeployWorker {
            worker_id: "worker-b".to_string(),
            ..deploy_worker(dir.path(), backend.clone()).await
        };
        new_holder.run_deploy_job(stolen[0].clone(), stops()).await;
        new_holder.interrupt_orphans(false).await.expect("sweep");
        worker.interrupt_orphans(false).await.expect("sweep again");
        let promotion = worker
            .store
            .promotion(id)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(promotion.state(), PromotionState::Interrupted);
        let ends = worker
            .store
            .events(id)
            .await
            .expect("events")
            .iter()
            .filter(|e| e.kind.as_str() == "interrupted" || e.kind.as_str() == "succeeded")
            .count();
        assert_eq!(ends, 1, "the promotion ends once");
        raw.close().await;
    }

    /// An older deploy of the environment whose script may still run on another host holds a
    /// new one back (a retry never runs beside it), and the card says why.
    #[tokio::test]
    async fn a_deploy_waits_while_an_older_script_of_its_environment_may_still_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = Arc::new(Stubborn::default());
        let worker = deploy_worker(dir.path(), backend).await;
        let old = approved(&worker.store).await;
        let url = format!("sqlite://{}", dir.path().join("bot.db").display());
        let raw = sqlx::AnyPool::connect(&url).await.expect("raw pool");
        for sql in [
            "DELETE FROM jobs",
            "UPDATE promotions SET state = 'interrupted', reason = 'bot stopped', started_at = 0, finished_at = 0",
            "INSERT INTO deploy_processes (promotion_id, host, pgid, started, recorded_at) \
             SELECT id, 'elsewhere/boot', 4242, 1, 0 FROM promotions",
        ] {
            sqlx::query(sql).execute(&raw).await.expect(sql);
        }
        let retry = approved(&worker.store).await;
        assert_ne!(old, retry);

        let jobs = worker.claim_deploys(1).await;
        worker.run_deploy_job(jobs[0].clone(), stops()).await;

        let held = worker
            .store
            .promotion(retry)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(held.state(), PromotionState::Queued);
        let reason = held.reason().unwrap_or_default();
        assert!(
            reason.contains(&format!("#{old}")) && reason.contains("elsewhere/boot"),
            "{reason}"
        );
        raw.close().await;
    }
}
