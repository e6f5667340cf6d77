//! The worker loop: wakes when a job becomes claimable — a commit of this process, a `NOTIFY`
//! from another replica, or the due time of the earliest waiting job — and otherwise only every
//! [`SAFETY_NET`]; runs housekeeping (scheduler tick, approval expiry, orphaned deploys) every
//! [`HOUSEKEEPING_EVERY`]; starts claimed deploys and sends due cards and announcements; on
//! shutdown lets running deploys finish for the grace period.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commands::Commands;
use super::deploys::{DeployWorker, MAX_CONCURRENT_DEPLOYS};
use super::outbox::Outbox;
use super::rollout::Stops;
use super::scheduler::Scheduler;
use crate::store::JobKind;

/// Platform delivery ids and fired occurrences are kept this long: far past any platform retry
/// and the scheduler's five-minute look-back.
const RECORD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Time-driven sweeps (the scheduler's tick, approval expiry, orphaned deploys) run this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);
/// Claims also run this often when nothing woke the workers: a lost notification (or a lease
/// that ran out on a dead replica) costs at most this long.
const SAFETY_NET: Duration = Duration::from_secs(5);
/// A job due now that the last claim left (every slot busy, a platform pausing for its rate
/// limit) is looked at again after this long, not in a busy loop.
const RECHECK_DUE: Duration = Duration::from_millis(250);
const MAX_CONCURRENT_SENDS: usize = 16;

pub(super) struct Workers {
    pub deploys: Arc<DeployWorker>,
    pub outbox: Arc<Outbox>,
    pub scheduler: Scheduler,
    /// For the approval expiry sweep.
    pub commands: Arc<Commands>,
    /// When old records were last pruned (through the deploy worker's store and clock).
    pub last_prune: Mutex<Option<DateTime<Utc>>>,
}

impl Workers {
    /// Runs until `shutdown`; then lets running deploys finish for `grace` and leaves the rest to
    /// be marked interrupted at the next start.
    pub async fn run(&self, shutdown: CancellationToken, grace: Duration) {
        let abort_deploys = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut sends = JoinSet::new();
        let jobs_ready = self.deploys.store.jobs_ready();
        let kinds = self.claimed_kinds();
        let mut next_housekeeping = Instant::now();
        let mut claim = true;
        // When claims run next without a wake-up; housekeeping wake-ups must not push it back.
        let mut next_claim = Instant::now();
        loop {
            while running.try_join_next().is_some() {}
            while sends.try_join_next().is_some() {}
            if Instant::now() >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = Instant::now() + HOUSEKEEPING_EVERY;
            }
            if claim {
                self.start_deploys(&mut running, &shutdown, &abort_deploys)
                    .await;
                self.send_cards(&mut sends).await;
                self.send_announcements(&mut sends).await;
            }
            let due = Instant::now() + self.until_next_due(&kinds).await;
            next_claim = if claim { due } else { next_claim.min(due) };
            claim = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = jobs_ready.notified() => true,
                _ = self.deploys.time.real_clock_jumped() => true,
                _ = tokio::time::sleep_until(next_claim.into()) => true,
                _ = tokio::time::sleep_until(next_housekeeping.into()) => false,
                Some(_) = running.join_next(), if !running.is_empty() => true,
                Some(_) = sends.join_next(), if !sends.is_empty() => true,
            };
        }
        // Sends in flight finish (they take well under a second); pending ones wait in the outbox.
        while sends.join_next().await.is_some() {}
        drain(running, grace, abort_deploys).await;
    }

    /// The kinds of job this process works on.
    fn claimed_kinds(&self) -> Vec<JobKind> {
        let mut kinds = vec![JobKind::Deploy];
        for port in self.outbox.chat_ports() {
            kinds.push(JobKind::Card(port.platform()));
            kinds.push(JobKind::Announce(port.platform()));
        }
        kinds
    }

    /// How long until the earliest waiting job is due, between [`RECHECK_DUE`] and
    /// [`SAFETY_NET`].
    async fn until_next_due(&self, kinds: &[JobKind]) -> Duration {
        match self.deploys.store.next_job_due(kinds).await {
            Ok(Some(due)) => (due - self.deploys.time.real_now())
                .to_std()
                .unwrap_or_default()
                .clamp(RECHECK_DUE, SAFETY_NET),
            Ok(None) => SAFETY_NET,
            Err(e) => {
                tracing::warn!(error = %e, "could not read when the next job is due");
                HOUSEKEEPING_EVERY
            }
        }
    }

    /// Claims deploy jobs up to the free slots and starts them.
    async fn start_deploys(
        &self,
        running: &mut JoinSet<()>,
        shutdown: &CancellationToken,
        abort_deploys: &CancellationToken,
    ) {
        let capacity = MAX_CONCURRENT_DEPLOYS.saturating_sub(running.len());
        for job in self.deploys.claim_deploys(capacity).await {
            let deploys = self.deploys.clone();
            let stops = Stops {
                shutdown: shutdown.clone(),
                cancel: abort_deploys.child_token(),
            };
            running.spawn(async move { deploys.run_deploy_job(job, stops).await });
        }
    }

    /// Claims due card jobs for every chat platform and sends them concurrently.
    async fn send_cards(&self, sends: &mut JoinSet<()>) {
        for port in self.outbox.chat_ports() {
            let Some(limit) = free_slots(sends) else {
                return;
            };
            for job in self.outbox.claim_cards(port.as_ref(), limit).await {
                let outbox = self.outbox.clone();
                let port = port.clone();
                sends.spawn(async move { outbox.run_card_job(port, job).await });
            }
        }
    }

    /// Claims due announcements for every chat platform and posts them concurrently.
    async fn send_announcements(&self, sends: &mut JoinSet<()>) {
        for port in self.outbox.chat_ports() {
            let Some(limit) = free_slots(sends) else {
                return;
            };
            for job in self.outbox.claim_announcements(port.as_ref(), limit).await {
                let outbox = self.outbox.clone();
                let port = port.clone();
                sends.spawn(async move { outbox.send_announcement(port, job).await });
            }
        }
    }

    async fn housekeeping(&self) {
        self.scheduler.tick().await;
        if let Err(e) = self.commands.promotions.expire_approvals().await {
            tracing::error!(error = %e, "approval expiry sweep failed");
        }
        if let Err(e) = self.commands.promotions.remind_approvers().await {
            tracing::error!(error = %e, "approval reminder sweep failed");
        }
        if let Err(e) = self.deploys.interrupt_orphans(false).await {
            tracing::error!(error = %e, "orphaned deploy sweep failed");
        }
        self.prune_now_and_then().await;
    }

    /// Whether an hour passed since the last pruning (then it is now).
    fn prune_due(&self, now: DateTime<Utc>) -> bool {
        let mut last = self
            .last_prune
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now - at < chrono::Duration::hours(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Once an hour: delivery ids and fired occurrences older than [`RECORD_RETENTION`] go.
    async fn prune_now_and_then(&self) {
        let now = self.deploys.time.now();
        if !self.prune_due(now) {
            return;
        }
        let cutoff = now - chrono::Duration::from_std(RECORD_RETENTION).unwrap_or_default();
        match self.deploys.store.prune_before(cutoff).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned old delivery and occurrence records"),
            Err(e) => tracing::error!(error = %e, "pruning old records failed"),
        }
    }
}

/// How many more sends may start; `None` when every slot is taken.
fn free_slots(sends: &JoinSet<()>) -> Option<u32> {
    let capacity = MAX_CONCURRENT_SENDS.saturating_sub(sends.len());
    u32::try_from(capacity).ok().filter(|limit| *limit > 0)
}

/// Waits up to `grace` for running deploys, then stops the rest (they show as interrupted).
async fn drain(mut running: JoinSet<()>, grace: Duration, abort: CancellationToken) {
    if running.is_empty() {
        return;
    }
    tracing::info!(running = running.len(), grace = ?grace, "waiting for running deploys");
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over: stopping deploys; they will show as interrupted");
        abort.cancel();
        while running.join_next().await.is_some() {}
    }
}
