//! Running one promotion's rollout (SPEC §5.1, §5.2): walks the plan of backend calls and check
//! gates, storing where it is after every move so another holder of the job (after a restart or
//! on another replica) resumes a gate where it was. Reads the controls people give it (pause,
//! advance, abort) from the rollout row, woken at once in this process and polled across
//! replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::EnvironmentConfig;
use crate::deploy::{DeployCall, DeployOutcome, DeployRequest, Reporter};
use crate::domain::audit::AuditKind;
use crate::domain::duration::format_duration;
use crate::domain::promotion::{Promotion, PromotionEvent, PromotionState, Stage};
use crate::domain::rollout::{Action, GateLength, OnFailure, Plan, Step};
use crate::domain::verification::{failure_reason, judge, CheckSpec, Reading, Tally};
use crate::metrics::CheckLabels;
use crate::store::{JobLease, RolloutRecord, Tx};
use crate::verify::{ProbeTarget, Prober};

use super::deploys::{fence, DeployWorker, HEARTBEAT};
use super::{bot_identity, EngineError};

/// How often a gate looks at its clock, its checks and its controls. Controls given in this
/// process wake it at once; this bounds how late another replica's abort is seen.
const TICK: Duration = if cfg!(test) {
    Duration::from_millis(50)
} else {
    Duration::from_millis(250)
};
/// Cards of a rollout in a gate are refreshed this often for the countdown (the platforms' edit
/// limits make a per-second countdown impossible anyway).
const CARD_REFRESH: Duration = Duration::from_secs(30);

/// What stops a rollout from our side.
#[derive(Clone)]
pub(super) struct Stops {
    /// The bot is shutting down: gates stop at once (to resume at the next start); a running
    /// backend call gets the grace period.
    pub shutdown: CancellationToken,
    /// Stop everything now (the grace period is over, or the lease was lost).
    pub cancel: CancellationToken,
}

/// How one action of the plan (a backend call or a gate) ended.
enum ActionEnd {
    Done,
    Failed(String),
    Aborted,
    /// Shutdown or a lost lease: left for whoever holds the job next.
    Stopped,
}

pub(super) struct Rollout<'a> {
    pub worker: &'a DeployWorker,
    pub lease: JobLease,
    pub environment: EnvironmentConfig,
    pub plan: Plan,
    pub promotion: Promotion,
    pub request: DeployRequest,
    pub stops: Stops,
    pub prober: Option<Arc<dyn Prober>>,
    /// The call at the starting position was marked running in the transaction that started
    /// the deploy (one transaction less per deploy).
    pub call_marked: bool,
}

/// A backend call about to run, as its rollout row and audit trail record it.
pub(super) struct CallMark {
    pub promotion_id: i64,
    pub position: usize,
    pub step: Step,
    pub remote: bool,
    pub multi_step: bool,
}

impl CallMark {
    /// Marks the call running: a bot that dies meanwhile leaves a local call interrupted, while
    /// a remote one is resumed by the next holder of the job.
    pub async fn write(
        &self,
        tx: &mut Tx,
        worker: &DeployWorker,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        tx.start_call(self.promotion_id, self.position, self.remote, now)
            .await?;
        if self.multi_step {
            let detail = format!("{} {}", self.step.phase, self.step.describe());
            tx.audit(
                Some(self.promotion_id),
                &bot_identity(),
                AuditKind::Step,
                &detail,
                worker.time.now(),
            )
            .await?;
            worker.ledger.touch_cards(tx, self.promotion_id).await?;
        }
        Ok(())
    }
}

impl Rollout<'_> {
    /// Runs from `position` to the end of the plan, or to a failure, an abort or a stop.
    pub async fn run(mut self, mut position: usize) -> Result<(), EngineError> {
        loop {
            let Some(action) = self.plan.action(position) else {
                return self.succeed(None).await;
            };
            if self.stops.shutdown.is_cancelled() {
                // No new step while shutting down: the next start resumes from here, so a call
                // marked at the start goes back to not running.
                if std::mem::take(&mut self.call_marked) {
                    self.unmark_call(position).await?;
                }
                self.release_job().await;
                return Ok(());
            }
            let end = match action {
                Action::Call(step) => self.call(position, step).await?,
                Action::Gate { .. } => self.gate(position, action).await?,
            };
            match end {
                // After the last action, the move to the end is written with the success: one
                // transaction less per deploy.
                ActionEnd::Done if self.plan.action(position + 1).is_none() => {
                    return self.succeed(Some(position + 1)).await;
                }
                ActionEnd::Done => position = self.advance_to(position + 1).await?,
                ActionEnd::Failed(reason) => return self.fail(position, reason, false).await,
                ActionEnd::Aborted => {
                    let reason = self.abort_reason().await?;
                    return self.fail(position, reason, true).await;
                }
                ActionEnd::Stopped => return Ok(()),
            }
        }
    }

    /// One backend call, marked as running: a bot that dies meanwhile leaves a local call
    /// interrupted, while a remote one is resumed by the next holder of the job (the row then
    /// already says it runs, with the handle its backend reported).
    async fn call(&mut self, position: usize, step: Step) -> Result<ActionEnd, EngineError> {
        let remote = self
            .worker
            .backends
            .is_remote(&self.promotion.service, &self.promotion.environment);
        let now = self.worker.time.real_now();
        let resumed = if std::mem::take(&mut self.call_marked) {
            // The transaction that started the deploy marked this call already.
            None
        } else {
            let mut tx = self.worker.store.begin().await?;
            fence(&mut tx, &self.lease).await?;
            let resumed = tx
                .rollout(self.promotion.id)
                .await?
                .filter(|row| row.calling && row.call_remote && row.position == position);
            if resumed.is_none() {
                let mark = CallMark {
                    promotion_id: self.promotion.id,
                    position,
                    step,
                    remote,
                    multi_step: self.plan.is_multi_step(),
                };
                mark.write(&mut tx, self.worker, now).await?;
            }
            tx.commit().await?;
            resumed
        };
        let mut call = self.new_call(step);
        if let Some(row) = resumed {
            let started_at = row.call_started_at.unwrap_or(now);
            tracing::info!(
                promotion = self.promotion.id,
                position,
                "resuming a remote backend call"
            );
            call.resumed = true;
            call.started_at = started_at;
            call.spent = (now - started_at).to_std().unwrap_or_default();
            call.handle = row
                .call_handle
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok());
        }
        let watch = self.watch_abort(call.abort.clone());
        let shutdown = remote.then_some(&self.stops.shutdown);
        let outcome = self.worker.run_call(&self.lease, call, shutdown).await;
        let aborted = watch.stop().await;
        Ok(match outcome {
            DeployOutcome::Succeeded => ActionEnd::Done,
            DeployOutcome::Failed { .. } if aborted => ActionEnd::Aborted,
            DeployOutcome::Failed { reason } if self.plan.is_multi_step() => {
                ActionEnd::Failed(format!("{}: {reason}", step.describe()))
            }
            DeployOutcome::Failed { reason } => ActionEnd::Failed(reason),
            DeployOutcome::Cancelled if aborted => ActionEnd::Aborted,
            DeployOutcome::Cancelled => {
                if remote && self.stops.shutdown.is_cancelled() {
                    // Its work goes on elsewhere: let the next start (or replica) watch it now.
                    self.release_job().await;
                }
                ActionEnd::Stopped
            }
        })
    }

    /// A fresh call of `step`: stopped when the bot's grace period ends or the lease is lost.
    fn new_call(&self, step: Step) -> DeployCall {
        let request = DeployRequest {
            step,
            ..self.request.clone()
        };
        // `run_call` gives the call the reporter whose reports it stores.
        let mut call = DeployCall::new(request, Reporter::discard(), self.worker.time.real_now());
        call.detach = self.stops.cancel.child_token();
        call
    }

    /// Watches the rollout row while a backend call runs; cancels the call once an abort is asked.
    fn watch_abort(&self, abort: CancellationToken) -> AbortWatch {
        let store = self.worker.store.clone();
        let controls = self.worker.controls_changed.clone();
        let id = self.promotion.id;
        let done = CancellationToken::new();
        let stop = done.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = controls.notified() => {}
                    () = tokio::time::sleep(TICK) => {}
                }
                if let Ok(Some(row)) = store.rollout(id).await {
                    if row.abort_by.is_some() {
                        abort.cancel();
                        return true;
                    }
                }
            }
        });
        AbortWatch { done, task }
    }

    /// Stores the move to `position`: a gate starts its clock; reaching the verification makes
    /// the promotion `verifying`.
    async fn advance_to(&mut self, position: usize) -> Result<usize, EngineError> {
        let now = self.worker.time.now();
        let gate_start = matches!(self.plan.action(position), Some(Action::Gate { .. }));
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        tx.move_rollout(
            self.promotion.id,
            position,
            false,
            gate_start.then_some(now),
        )
        .await?;
        if self.plan.verifying_from() == Some(position)
            && self.promotion.state() == PromotionState::Deploying
        {
            let detail = format!("deployed; verifying: {}", self.checks_summary());
            self.promotion = self
                .worker
                .ledger
                .apply(
                    &mut tx,
                    &self.promotion,
                    PromotionEvent::DeploySucceeded { verify: true },
                    &bot_identity(),
                    &detail,
                )
                .await?;
        } else {
            self.worker
                .ledger
                .touch_cards(&mut tx, self.promotion.id)
                .await?;
        }
        tx.commit().await?;
        self.worker.ledger.wake_workers();
        Ok(position)
    }

    /// `http check 1 for 2m, command check 2`.
    fn checks_summary(&self) -> String {
        let checks: Vec<String> = self
            .environment
            .verify
            .iter()
            .map(|check| {
                if check.kind.repeats() {
                    format!("{} for {}", check.name, format_duration(check.duration))
                } else {
                    check.name.clone()
                }
            })
            .collect();
        checks.join(", ")
    }

    /// Runs the checks of the gate at `position` until it passes, a check fails, or it is
    /// aborted or stopped.
    async fn gate(&mut self, position: usize, action: Action) -> Result<ActionEnd, EngineError> {
        let Action::Gate {
            after,
            length,
            before_next,
        } = action
        else {
            return Ok(ActionEnd::Done);
        };
        let row = self.row().await?;
        let started = match row.gate_started_at {
            Some(at) => at,
            None => self.start_gate_clock(position).await?,
        };
        let checks = self.environment.verify.clone();
        let mut tallies = vec![Tally::default(); checks.len()];
        for (index, tally) in self
            .worker
            .store
            .tallies(self.promotion.id, position)
            .await?
        {
            if let Some(slot) = tallies.get_mut(index) {
                *slot = tally;
            }
        }
        let mut probing = Probing::new(checks.len(), self.worker.time.now());
        let mut renewed_at = Instant::now();
        let mut refreshed_at = Instant::now();
        loop {
            let now = self.worker.time.now();
            let row = self.row().await?;
            if row.abort_by.is_some() {
                self.count_checks(&checks, &tallies, "stopped");
                return Ok(ActionEnd::Aborted);
            }
            let elapsed = (now - started).to_std().unwrap_or_default();
            if self.gate_done(&checks, &tallies, &row, length, before_next, elapsed) {
                self.count_checks(&checks, &tallies, "passed");
                self.checks_passed(position, after).await?;
                return Ok(ActionEnd::Done);
            }
            probing.start_due(self, &checks, &tallies, now);
            tokio::select! {
                Some((index, reading)) = probing.next(), if !probing.running.is_empty() => {
                    let check = &checks[index];
                    let failure = tallies[index].count(&check.kind, judge(&check.kind, &reading));
                    self.save_tally(position, index, &tallies[index]).await?;
                    if let Some(what) = failure {
                        self.count_check(check, "failed");
                        return Ok(ActionEnd::Failed(failure_reason(check, &what, after, self.plan.is_multi_step())));
                    }
                }
                () = self.worker.controls_changed.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                () = self.stops.shutdown.cancelled() => return self.leave_gate().await,
                () = self.stops.cancel.cancelled() => return self.leave_gate().await,
            }
            if renewed_at.elapsed() >= HEARTBEAT
                && !self.worker.heartbeat(&self.lease, &mut renewed_at).await
            {
                return Ok(ActionEnd::Stopped);
            }
            if refreshed_at.elapsed() >= CARD_REFRESH {
                refreshed_at = Instant::now();
                self.worker.ledger.progress_changed(self.promotion.id).await;
            }
        }
    }

    /// Whether the gate is over: no check failed, and either its pause ran out (or was advanced)
    /// and no hold keeps it, or (the verification) every check passed for its own time.
    fn gate_done(
        &self,
        checks: &[CheckSpec],
        tallies: &[Tally],
        row: &RolloutRecord,
        length: GateLength,
        before_next: Option<Step>,
        elapsed: Duration,
    ) -> bool {
        if before_next.is_some() && row.advance {
            return true;
        }
        if before_next.is_some() && row.paused_by.is_some() {
            return false;
        }
        checks.iter().zip(tallies).all(|(check, tally)| {
            let wanted = match length {
                GateLength::Pause(pause) => pause,
                GateLength::ChecksOwn => check.duration,
            };
            tally.passed(&check.kind, elapsed, wanted)
        }) && match length {
            GateLength::Pause(pause) => elapsed >= pause,
            GateLength::ChecksOwn => true,
        }
    }

    async fn start_gate_clock(&self, position: usize) -> Result<DateTime<Utc>, EngineError> {
        let now = self.worker.time.now();
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        tx.move_rollout(self.promotion.id, position, false, Some(now))
            .await?;
        tx.commit().await?;
        Ok(now)
    }

    /// A gate stopped from our side: its job is released so the next holder resumes it at once.
    async fn leave_gate(&self) -> Result<ActionEnd, EngineError> {
        self.release_job().await;
        Ok(ActionEnd::Stopped)
    }

    async fn unmark_call(&self, position: usize) -> Result<(), EngineError> {
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        tx.move_rollout(self.promotion.id, position, false, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_job(&self) {
        if let Err(e) = self.worker.store.release_lease(&self.lease).await {
            tracing::warn!(promotion = self.promotion.id, error = %e, "could not release the rollout's job; it resumes once its lease runs out");
        }
    }

    async fn checks_passed(&self, position: usize, after: Step) -> Result<(), EngineError> {
        if self.environment.verify.is_empty() {
            return Ok(());
        }
        let detail = if self.plan.is_multi_step() {
            format!("checks passed after {}", after.describe())
        } else {
            "checks passed".to_string()
        };
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        tx.audit(
            Some(self.promotion.id),
            &bot_identity(),
            AuditKind::ChecksPassed,
            &detail,
            self.worker.time.now(),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(promotion = self.promotion.id, position, "{detail}");
        Ok(())
    }

    async fn save_tally(
        &self,
        position: usize,
        index: usize,
        tally: &Tally,
    ) -> Result<(), EngineError> {
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        tx.save_tally(self.promotion.id, position, index, tally)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn row(&self) -> Result<RolloutRecord, EngineError> {
        Ok(self
            .worker
            .store
            .rollout(self.promotion.id)
            .await?
            .unwrap_or_default())
    }

    fn count_checks(&self, checks: &[CheckSpec], tallies: &[Tally], outcome: &str) {
        for (check, tally) in checks.iter().zip(tallies) {
            let outcome = if tally.failure.is_some() {
                "failed"
            } else {
                outcome
            };
            self.count_check(check, outcome);
        }
    }

    fn count_check(&self, check: &CheckSpec, outcome: &str) {
        self.worker
            .metrics
            .verifications
            .get_or_create(&CheckLabels {
                service: self.promotion.service.clone(),
                environment: self.promotion.environment.clone(),
                check: check.name.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// `aborted by @alice: <reason>`.
    async fn abort_reason(&self) -> Result<String, EngineError> {
        let row = self.row().await?;
        let by = row.abort_by.unwrap_or_else(|| "someone".to_string());
        Ok(match row.abort_reason {
            Some(reason) => format!("aborted by {by}: {reason}"),
            None => format!("aborted by {by}"),
        })
    }

    /// Ends the promotion `failed`. Before a blue-green switch the new version is discarded;
    /// otherwise, with `on_failure = "rollback"` or an abort, a rollback starts at once.
    async fn fail(self, position: usize, reason: String, aborted: bool) -> Result<(), EngineError> {
        let mut reason = reason;
        let discard = self.plan.discards_at(position);
        if discard {
            reason.push_str(&self.discard().await);
        }
        let wants_rollback =
            !discard && (aborted || self.environment.on_failure == OnFailure::Rollback);
        let mut tx = self.worker.store.begin().await?;
        fence(&mut tx, &self.lease).await?;
        // Failed first: the environment must be free for the rollback.
        let mut ended = self
            .worker
            .ledger
            .apply(
                &mut tx,
                &self.promotion,
                PromotionEvent::Fail,
                &bot_identity(),
                &reason,
            )
            .await?;
        if wants_rollback {
            let why = format!("automatic rollback of #{}", self.promotion.id);
            let rollback = self
                .worker
                .rollbacks
                .open_automatic_rollback(&mut tx, &ended, &why)
                .await?;
            if let Some(rollback) = rollback {
                tx.set_rolled_back_by(self.promotion.id, rollback.id)
                    .await?;
                ended = note_rollback(&mut tx, ended, &rollback).await?;
                tracing::warn!(
                    promotion = self.promotion.id,
                    rollback = rollback.id,
                    "rolling back a failed deploy"
                );
            }
        }
        self.worker.end_job(tx, &ended, "failed").await
    }

    /// Calls phase `discard` (best effort); what to add to the failure reason.
    async fn discard(&self) -> String {
        let call = self.new_call(Plan::discard_step());
        match self.worker.run_call(&self.lease, call, None).await {
            DeployOutcome::Succeeded => "; the new version was discarded".to_string(),
            DeployOutcome::Failed { reason } => {
                format!("; discarding the new version failed too: {reason}")
            }
            DeployOutcome::Cancelled => "; discarding the new version was cut short".to_string(),
        }
    }

    /// The end of the plan: the promotion succeeded.
    /// Ends the promotion succeeded; `end`: the plan's end, when the rollout row still has to
    /// move there.
    async fn succeed(self, end: Option<usize>) -> Result<(), EngineError> {
        let event = if self.promotion.state() == PromotionState::Verifying {
            PromotionEvent::VerifySucceeded
        } else {
            PromotionEvent::DeploySucceeded { verify: false }
        };
        self.worker
            .finish_success(&self.lease, &self.promotion, event, end)
            .await
    }
}

/// The failed promotion's reason, with the rollback that undoes it: `…; rolled back by #43 (to
/// 1.4.2)`.
async fn note_rollback(
    tx: &mut Tx,
    failed: Promotion,
    rollback: &Promotion,
) -> Result<Promotion, EngineError> {
    let mut noted = failed.clone();
    if let Stage::Failed { reason, .. } = &mut noted.stage {
        reason.push_str(&format!(
            "; rolled back by #{} (to {})",
            rollback.id, rollback.version
        ));
    }
    tx.update_promotion(&noted, failed.state()).await?;
    Ok(noted)
}

/// Which checks are being probed and when each is next due (rules clock).
struct Probing {
    running: JoinSet<Reading>,
    /// The check each running probe task reads.
    tasks: HashMap<tokio::task::Id, usize>,
    in_flight: Vec<bool>,
    next_at: Vec<DateTime<Utc>>,
}

impl Probing {
    fn new(checks: usize, now: DateTime<Utc>) -> Self {
        Probing {
            running: JoinSet::new(),
            tasks: HashMap::new(),
            in_flight: vec![false; checks],
            next_at: vec![now; checks],
        }
    }

    /// Starts every check that is due, not running, and not already decided.
    fn start_due(
        &mut self,
        rollout: &Rollout<'_>,
        checks: &[CheckSpec],
        tallies: &[Tally],
        now: DateTime<Utc>,
    ) {
        for (index, check) in checks.iter().enumerate() {
            let decided = tallies[index].failure.is_some() || tallies[index].done;
            if decided || self.in_flight[index] || now < self.next_at[index] {
                continue;
            }
            self.in_flight[index] = true;
            self.next_at[index] =
                now + chrono::Duration::from_std(check.every).unwrap_or(chrono::Duration::MAX);
            let prober = rollout.prober.clone();
            let check = check.clone();
            let target = ProbeTarget {
                request: rollout.request.clone(),
            };
            let cancel = rollout.stops.cancel.child_token();
            let task = self.running.spawn(async move {
                match prober {
                    Some(prober) => prober.probe(&check, &target, cancel).await,
                    None => {
                        Reading::Broken(
                            "the bot could not set up its verification probes (its log says why); retry once that is fixed"
                                .to_string(),
                        )
                    }
                }
            });
            self.tasks.insert(task.id(), index);
        }
    }

    /// The next probe to end: its check and what it read. A probe task that died reads as
    /// broken, so its check fails rather than waiting forever. Cancel-safe (a `select!` arm).
    async fn next(&mut self) -> Option<(usize, Reading)> {
        let (id, reading) = match self.running.join_next_with_id().await? {
            Ok((id, reading)) => (id, reading),
            Err(e) => (
                e.id(),
                Reading::Broken(
                    "the probe stopped unexpectedly; this is a bug in shipmate".to_string(),
                ),
            ),
        };
        let index = self.tasks.remove(&id)?;
        self.in_flight[index] = false;
        Some((index, reading))
    }
}

/// The watcher of a running call's abort; [`AbortWatch::stop`] says whether it fired.
struct AbortWatch {
    done: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

impl AbortWatch {
    async fn stop(self) -> bool {
        self.done.cancel();
        self.task.await.unwrap_or(false)
    }
}
