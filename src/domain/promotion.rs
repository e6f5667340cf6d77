//! The promotion lifecycle: the state machine of SPEC §2 as one transition table, and
//! [`Promotion::apply`], which moves a promotion through an event with every field that belongs
//! to the move (start and end times, the reason). States carry their data ([`Stage`]), so a
//! deploying promotion without a start time cannot be built, nor decoded from a row.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::identity::Identity;
use super::version::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PromotionState {
    Requested,
    AwaitingApproval,
    Approved,
    Queued,
    Deploying,
    Verifying,
    Succeeded,
    Failed,
    Rejected,
    Cancelled,
    Expired,
    Interrupted,
    RolledBack,
}

impl PromotionState {
    pub const ALL: [PromotionState; 13] = [
        PromotionState::Requested,
        PromotionState::AwaitingApproval,
        PromotionState::Approved,
        PromotionState::Queued,
        PromotionState::Deploying,
        PromotionState::Verifying,
        PromotionState::Succeeded,
        PromotionState::Failed,
        PromotionState::Rejected,
        PromotionState::Cancelled,
        PromotionState::Expired,
        PromotionState::Interrupted,
        PromotionState::RolledBack,
    ];

    /// The states that hold an environment: at most one such promotion per (service, environment).
    pub const ACTIVE: [PromotionState; 5] = [
        PromotionState::AwaitingApproval,
        PromotionState::Approved,
        PromotionState::Queued,
        PromotionState::Deploying,
        PromotionState::Verifying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromotionState::Requested => "requested",
            PromotionState::AwaitingApproval => "awaiting_approval",
            PromotionState::Approved => "approved",
            PromotionState::Queued => "queued",
            PromotionState::Deploying => "deploying",
            PromotionState::Verifying => "verifying",
            PromotionState::Succeeded => "succeeded",
            PromotionState::Failed => "failed",
            PromotionState::Rejected => "rejected",
            PromotionState::Cancelled => "cancelled",
            PromotionState::Expired => "expired",
            PromotionState::Interrupted => "interrupted",
            PromotionState::RolledBack => "rolled_back",
        }
    }

    /// How a person reads the state: `awaiting approval`.
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// Whether a deploy of this promotion has ended (successfully or not) or will never start.
    pub fn is_terminal(self) -> bool {
        !self.is_active() && self != PromotionState::Requested
    }

    /// Whether `retry` applies: the deploy did not reach its end.
    pub fn is_retryable(self) -> bool {
        matches!(self, PromotionState::Failed | PromotionState::Interrupted)
    }
}

impl fmt::Display for PromotionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown promotion state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for PromotionState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

/// What happens to a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromotionEvent {
    NeedsApproval,
    NoApprovalNeeded,
    EnoughApprovals,
    Reject,
    Cancel,
    ApprovalExpired,
    WaitForWindow,
    StartDeploy,
    /// The backend finished; `verify` decides whether checks follow.
    DeploySucceeded {
        verify: bool,
    },
    VerifySucceeded,
    Fail,
    BotDied,
    ReplacedByRollback,
}

impl PromotionEvent {
    pub const ALL: [PromotionEvent; 14] = [
        PromotionEvent::NeedsApproval,
        PromotionEvent::NoApprovalNeeded,
        PromotionEvent::EnoughApprovals,
        PromotionEvent::Reject,
        PromotionEvent::Cancel,
        PromotionEvent::ApprovalExpired,
        PromotionEvent::WaitForWindow,
        PromotionEvent::StartDeploy,
        PromotionEvent::DeploySucceeded { verify: false },
        PromotionEvent::DeploySucceeded { verify: true },
        PromotionEvent::VerifySucceeded,
        PromotionEvent::Fail,
        PromotionEvent::BotDied,
        PromotionEvent::ReplacedByRollback,
    ];

    /// The verb a refusal uses: "can't be cancelled".
    fn past_participle(self) -> &'static str {
        match self {
            PromotionEvent::NeedsApproval | PromotionEvent::NoApprovalNeeded => "requested",
            PromotionEvent::EnoughApprovals => "approved",
            PromotionEvent::Reject => "rejected",
            PromotionEvent::Cancel => "cancelled",
            PromotionEvent::ApprovalExpired => "expired",
            PromotionEvent::WaitForWindow => "queued",
            PromotionEvent::StartDeploy => "started",
            PromotionEvent::DeploySucceeded { .. } | PromotionEvent::VerifySucceeded => "completed",
            PromotionEvent::Fail => "failed",
            PromotionEvent::BotDied => "interrupted",
            PromotionEvent::ReplacedByRollback => "rolled back",
        }
    }
}

/// A transition the state machine does not have. Its message lists the states where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it is {} and can't be {} now (only while {})", .from.label(), .event.past_participle(), allowed_states(*.event))]
pub struct TransitionError {
    pub from: PromotionState,
    pub event: PromotionEvent,
}

fn allowed_states(event: PromotionEvent) -> String {
    let labels: Vec<String> = PromotionState::ALL
        .into_iter()
        .filter(|state| transition(*state, event).is_ok())
        .map(PromotionState::label)
        .collect();
    match labels.split_last() {
        None => "never".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The state machine of SPEC §2.
pub fn transition(
    from: PromotionState,
    event: PromotionEvent,
) -> Result<PromotionState, TransitionError> {
    use PromotionEvent as E;
    use PromotionState as S;
    let to = match (from, event) {
        (S::Requested, E::NeedsApproval) => S::AwaitingApproval,
        (S::Requested, E::NoApprovalNeeded) => S::Approved,
        (S::AwaitingApproval, E::EnoughApprovals) => S::Approved,
        (S::AwaitingApproval, E::Reject) => S::Rejected,
        (S::AwaitingApproval, E::ApprovalExpired) => S::Expired,
        (S::AwaitingApproval | S::Approved | S::Queued, E::Cancel) => S::Cancelled,
        (S::Approved, E::WaitForWindow) => S::Queued,
        (S::Approved | S::Queued, E::StartDeploy) => S::Deploying,
        (S::Deploying, E::DeploySucceeded { verify: true }) => S::Verifying,
        (S::Deploying, E::DeploySucceeded { verify: false }) => S::Succeeded,
        (S::Verifying, E::VerifySucceeded) => S::Succeeded,
        (S::Deploying | S::Verifying, E::Fail) => S::Failed,
        (S::Deploying | S::Verifying, E::BotDied) => S::Interrupted,
        (S::Succeeded, E::ReplacedByRollback) => S::RolledBack,
        _ => return Err(TransitionError { from, event }),
    };
    Ok(to)
}

/// A promotion: what was asked for, and the stage it has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub id: i64,
    pub service: String,
    pub version: Version,
    pub environment: String,
    pub requested_by: Identity,
    pub rollback: bool,
    /// What ran in the environment when it was requested.
    pub previous_version: Option<Version>,
    pub required_approvals: u32,
    /// Why an admin overrode windows and freezes (`--force`).
    pub force_reason: Option<String>,
    /// Why it is a hotfix (`--hotfix`): the environment's hotfix approvals, no window wait.
    pub hotfix_reason: Option<String>,
    pub retry_of: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the approval request stops taking votes (set when it had to wait for approval).
    pub expires_at: Option<DateTime<Utc>>,
    pub stage: Stage,
}

/// A state with the data that belongs to it: deploys have started, ends have finished, and
/// whatever stopped short or waits says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Requested,
    AwaitingApproval,
    Approved,
    Queued {
        reason: String,
    },
    Deploying {
        started_at: DateTime<Utc>,
    },
    Verifying {
        started_at: DateTime<Utc>,
    },
    Succeeded {
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    },
    Failed {
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        reason: String,
    },
    Interrupted {
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        reason: String,
    },
    RolledBack {
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        reason: String,
    },
    Rejected {
        finished_at: DateTime<Utc>,
        reason: String,
    },
    Cancelled {
        finished_at: DateTime<Utc>,
        reason: String,
    },
    Expired {
        finished_at: DateTime<Utc>,
        reason: String,
    },
}

/// The columns a stored stage is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageColumns {
    pub state: PromotionState,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Stored columns that no stage has (a deploying row without a start time, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{state} {problem}")]
pub struct InconsistentStage {
    pub state: PromotionState,
    pub problem: String,
}

impl Stage {
    pub fn state(&self) -> PromotionState {
        use PromotionState as S;
        match self {
            Stage::Requested => S::Requested,
            Stage::AwaitingApproval => S::AwaitingApproval,
            Stage::Approved => S::Approved,
            Stage::Queued { .. } => S::Queued,
            Stage::Deploying { .. } => S::Deploying,
            Stage::Verifying { .. } => S::Verifying,
            Stage::Succeeded { .. } => S::Succeeded,
            Stage::Failed { .. } => S::Failed,
            Stage::Interrupted { .. } => S::Interrupted,
            Stage::RolledBack { .. } => S::RolledBack,
            Stage::Rejected { .. } => S::Rejected,
            Stage::Cancelled { .. } => S::Cancelled,
            Stage::Expired { .. } => S::Expired,
        }
    }

    /// Why it stopped short or waits.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Stage::Queued { reason }
            | Stage::Failed { reason, .. }
            | Stage::Interrupted { reason, .. }
            | Stage::RolledBack { reason, .. }
            | Stage::Rejected { reason, .. }
            | Stage::Cancelled { reason, .. }
            | Stage::Expired { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// When its deploy started.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Stage::Deploying { started_at }
            | Stage::Verifying { started_at }
            | Stage::Succeeded { started_at, .. }
            | Stage::Failed { started_at, .. }
            | Stage::Interrupted { started_at, .. }
            | Stage::RolledBack { started_at, .. } => Some(*started_at),
            _ => None,
        }
    }

    /// When it reached its end.
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Stage::Succeeded { finished_at, .. }
            | Stage::Failed { finished_at, .. }
            | Stage::Interrupted { finished_at, .. }
            | Stage::RolledBack { finished_at, .. }
            | Stage::Rejected { finished_at, .. }
            | Stage::Cancelled { finished_at, .. }
            | Stage::Expired { finished_at, .. } => Some(*finished_at),
            _ => None,
        }
    }

    /// The columns to store.
    pub fn columns(&self) -> StageColumns {
        StageColumns {
            state: self.state(),
            reason: self.reason().map(str::to_string),
            started_at: self.started_at(),
            finished_at: self.finished_at(),
        }
    }

    /// The stage stored columns describe, or what is wrong with them: a field the state needs is
    /// missing, or one it never has is set.
    pub fn from_columns(columns: StageColumns) -> Result<Stage, InconsistentStage> {
        let StageColumns {
            state,
            reason,
            started_at,
            finished_at,
        } = columns;
        let fail = |problem: &str| InconsistentStage {
            state,
            problem: problem.to_string(),
        };
        let needed = |value: Option<DateTime<Utc>>, name: &str| {
            value.ok_or_else(|| fail(&format!("without {name}")))
        };
        let stage = match state {
            PromotionState::Requested => Stage::Requested,
            PromotionState::AwaitingApproval => Stage::AwaitingApproval,
            PromotionState::Approved => Stage::Approved,
            PromotionState::Queued => Stage::Queued {
                reason: reason.clone().ok_or_else(|| fail("without a reason"))?,
            },
            PromotionState::Deploying => Stage::Deploying {
                started_at: needed(started_at, "started_at")?,
            },
            PromotionState::Verifying => Stage::Verifying {
                started_at: needed(started_at, "started_at")?,
            },
            PromotionState::Succeeded => Stage::Succeeded {
                started_at: needed(started_at, "started_at")?,
                finished_at: needed(finished_at, "finished_at")?,
            },
            ended => Stage::ended(
                ended,
                started_at,
                needed(finished_at, "finished_at")?,
                reason.clone().ok_or_else(|| fail("without a reason"))?,
            )
            .ok_or_else(|| fail("without started_at"))?,
        };
        let decoded = stage.columns();
        if decoded.reason.is_none() && reason.is_some() {
            return Err(fail("with a reason"));
        }
        if decoded.started_at.is_none() && started_at.is_some() {
            return Err(fail("with started_at"));
        }
        if decoded.finished_at.is_none() && finished_at.is_some() {
            return Err(fail("with finished_at"));
        }
        Ok(stage)
    }

    /// The stage after `event` at `now`, with the fields the move sets: a deploy's start, an
    /// end's time, the reason of whatever stops short or waits (`note`).
    pub fn apply(
        &self,
        event: PromotionEvent,
        now: DateTime<Utc>,
        note: &str,
    ) -> Result<Stage, TransitionError> {
        let refused = TransitionError {
            from: self.state(),
            event,
        };
        let to = transition(self.state(), event)?;
        let reason = note.to_string();
        let stage = match (to, self.started_at(), self.finished_at()) {
            (PromotionState::AwaitingApproval, ..) => Stage::AwaitingApproval,
            (PromotionState::Approved, ..) => Stage::Approved,
            (PromotionState::Queued, ..) => Stage::Queued { reason },
            (PromotionState::Deploying, ..) => Stage::Deploying { started_at: now },
            (PromotionState::Verifying, Some(started_at), _) => Stage::Verifying { started_at },
            (PromotionState::Succeeded, Some(started_at), _) => Stage::Succeeded {
                started_at,
                finished_at: now,
            },
            // Being rolled back keeps the time the replaced deploy finished.
            (ended, started_at, finished_at) => {
                Stage::ended(ended, started_at, finished_at.unwrap_or(now), reason)
                    .ok_or(refused)?
            }
        };
        Ok(stage)
    }

    /// A stage that ended short of success; `None` when it needs a start time and has none.
    fn ended(
        state: PromotionState,
        started_at: Option<DateTime<Utc>>,
        finished_at: DateTime<Utc>,
        reason: String,
    ) -> Option<Stage> {
        let stage = match state {
            PromotionState::Rejected => Stage::Rejected {
                finished_at,
                reason,
            },
            PromotionState::Cancelled => Stage::Cancelled {
                finished_at,
                reason,
            },
            PromotionState::Expired => Stage::Expired {
                finished_at,
                reason,
            },
            PromotionState::Failed => Stage::Failed {
                started_at: started_at?,
                finished_at,
                reason,
            },
            PromotionState::Interrupted => Stage::Interrupted {
                started_at: started_at?,
                finished_at,
                reason,
            },
            PromotionState::RolledBack => Stage::RolledBack {
                started_at: started_at?,
                finished_at,
                reason,
            },
            _ => return None,
        };
        Some(stage)
    }
}

impl Promotion {
    /// How big a step it is against what the environment ran when it was asked for; none for
    /// rollbacks and re-deploys.
    pub fn release_type(&self) -> Option<super::manifest::ReleaseType> {
        use super::manifest::ReleaseType;
        (!self.rollback)
            .then(|| ReleaseType::between(self.previous_version.as_ref(), &self.version))
            .filter(|kind| *kind != ReleaseType::NotNewer)
    }

    pub fn state(&self) -> PromotionState {
        self.stage.state()
    }

    pub fn reason(&self) -> Option<&str> {
        self.stage.reason()
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.stage.started_at()
    }

    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.stage.finished_at()
    }

    /// The promotion after `event` at `now`. `note` becomes its reason where the new stage has
    /// one (why it waits, failed, was rejected, …); progress notes stay in the audit trail.
    pub fn apply(
        &self,
        event: PromotionEvent,
        now: DateTime<Utc>,
        note: &str,
    ) -> Result<Promotion, TransitionError> {
        Ok(Promotion {
            stage: self.stage.apply(event, now, note)?,
            updated_at: now,
            ..self.clone()
        })
    }

    /// `#41 api 1.4.1 → production`
    pub fn describe(&self) -> String {
        format!(
            "#{} {} {} → {}",
            self.id, self.service, self.version, self.environment
        )
    }
}

/// What a person can do to a promotion from its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardAction {
    Approve,
    Reject,
    Cancel,
    Retry,
    Rollback,
    /// Hold a rollout before its next step.
    Pause,
    Resume,
    /// Stop the running deploy and roll back.
    Abort,
}

impl CardAction {
    pub const ALL: [CardAction; 8] = [
        CardAction::Approve,
        CardAction::Reject,
        CardAction::Cancel,
        CardAction::Retry,
        CardAction::Rollback,
        CardAction::Pause,
        CardAction::Resume,
        CardAction::Abort,
    ];

    /// Stable id carried by buttons (`action_id`, `custom_id`).
    pub fn id(self) -> &'static str {
        match self {
            CardAction::Approve => "approve",
            CardAction::Reject => "reject",
            CardAction::Cancel => "cancel",
            CardAction::Retry => "retry",
            CardAction::Rollback => "rollback",
            CardAction::Pause => "pause",
            CardAction::Resume => "resume",
            CardAction::Abort => "abort",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CardAction::Approve => "Approve",
            CardAction::Reject => "Reject",
            CardAction::Cancel => "Cancel",
            CardAction::Retry => "Retry",
            CardAction::Rollback => "Roll back",
            CardAction::Pause => "Pause",
            CardAction::Resume => "Resume",
            CardAction::Abort => "Abort",
        }
    }

    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The buttons a card shows in `state` (SPEC §3): Approve / Reject while awaiting approval,
    /// Cancel while queued, Retry / Roll back after a failure or interruption.
    /// The buttons of a rollout that deploys or verifies: Pause (or Resume when paused) while a
    /// step is left to hold before, and Abort.
    pub fn offered_while_rolling(pausable: bool, paused: bool) -> &'static [CardAction] {
        match (pausable, paused) {
            (_, true) => &[CardAction::Resume, CardAction::Abort],
            (true, false) => &[CardAction::Pause, CardAction::Abort],
            (false, false) => &[CardAction::Abort],
        }
    }

    pub fn offered(state: PromotionState) -> &'static [CardAction] {
        match state {
            PromotionState::AwaitingApproval => &[CardAction::Approve, CardAction::Reject],
            PromotionState::Queued => &[CardAction::Cancel],
            PromotionState::Failed | PromotionState::Interrupted => {
                &[CardAction::Retry, CardAction::Rollback]
            }
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PromotionEvent as E;
    use PromotionState as S;

    /// Every (state, event) pair that is allowed, with its target. Everything else is refused.
    const ALLOWED: &[(S, E, S)] = &[
        (S::Requested, E::NeedsApproval, S::AwaitingApproval),
        (S::Requested, E::NoApprovalNeeded, S::Approved),
        (S::AwaitingApproval, E::EnoughApprovals, S::Approved),
        (S::AwaitingApproval, E::Reject, S::Rejected),
        (S::AwaitingApproval, E::Cancel, S::Cancelled),
        (S::AwaitingApproval, E::ApprovalExpired, S::Expired),
        (S::Approved, E::Cancel, S::Cancelled),
        (S::Approved, E::WaitForWindow, S::Queued),
        (S::Approved, E::StartDeploy, S::Deploying),
        (S::Queued, E::Cancel, S::Cancelled),
        (S::Queued, E::StartDeploy, S::Deploying),
        (
            S::Deploying,
            E::DeploySucceeded { verify: true },
            S::Verifying,
        ),
        (
            S::Deploying,
            E::DeploySucceeded { verify: false },
            S::Succeeded,
        ),
        (S::Deploying, E::Fail, S::Failed),
        (S::Deploying, E::BotDied, S::Interrupted),
        (S::Verifying, E::VerifySucceeded, S::Succeeded),
        (S::Verifying, E::Fail, S::Failed),
        (S::Verifying, E::BotDied, S::Interrupted),
        (S::Succeeded, E::ReplacedByRollback, S::RolledBack),
    ];

    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 10, minute, 0).unwrap()
    }

    fn requested() -> Promotion {
        Promotion {
            id: 7,
            service: "api".into(),
            version: "1.4.2".parse().unwrap(),
            environment: "production".into(),
            requested_by: Identity::new("slack", "U1"),
            rollback: false,
            previous_version: None,
            required_approvals: 1,
            force_reason: None,
            hotfix_reason: None,
            retry_of: None,
            created_at: at(0),
            updated_at: at(0),
            expires_at: None,
            stage: Stage::AwaitingApproval,
        }
    }

    /// Runs `events` from awaiting approval, a minute apart.
    fn through(events: &[E]) -> Promotion {
        let mut promotion = requested();
        for (minute, event) in (1..).zip(events) {
            promotion = promotion
                .apply(*event, at(minute), &format!("note {minute}"))
                .unwrap_or_else(|e| panic!("{event:?}: {e}"));
        }
        promotion
    }

    #[test]
    fn apply_sets_the_fields_each_move_owns() {
        let deploying = through(&[E::EnoughApprovals, E::WaitForWindow, E::StartDeploy]);
        assert_eq!(deploying.stage, Stage::Deploying { started_at: at(3) });
        assert_eq!(deploying.reason(), None, "a started deploy no longer waits");
        assert_eq!(deploying.updated_at, at(3));

        let queued = through(&[E::EnoughApprovals, E::WaitForWindow]);
        assert_eq!(queued.reason(), Some("note 2"), "why it waits");

        let succeeded = through(&[
            E::EnoughApprovals,
            E::StartDeploy,
            E::DeploySucceeded { verify: false },
        ]);
        assert_eq!(
            succeeded.stage,
            Stage::Succeeded {
                started_at: at(2),
                finished_at: at(3)
            }
        );
        let rolled_back = succeeded
            .apply(E::ReplacedByRollback, at(9), "replaced by #8")
            .unwrap();
        assert_eq!(
            rolled_back.stage,
            Stage::RolledBack {
                started_at: at(2),
                finished_at: at(3),
                reason: "replaced by #8".into()
            },
            "keeps when its own deploy ended"
        );

        let verified = through(&[
            E::EnoughApprovals,
            E::StartDeploy,
            E::DeploySucceeded { verify: true },
            E::VerifySucceeded,
        ]);
        assert_eq!(verified.started_at(), Some(at(2)));
        assert_eq!(verified.finished_at(), Some(at(4)));

        let rejected = through(&[E::Reject]);
        assert_eq!(
            rejected.stage,
            Stage::Rejected {
                finished_at: at(1),
                reason: "note 1".into()
            }
        );
        assert_eq!(rejected.started_at(), None);
    }

    #[test]
    fn apply_refuses_what_the_table_refuses_and_changes_nothing() {
        let promotion = requested();
        let refused = promotion.apply(E::StartDeploy, at(1), "").unwrap_err();
        assert_eq!(
            refused,
            TransitionError {
                from: S::AwaitingApproval,
                event: E::StartDeploy
            }
        );
        assert_eq!(promotion, requested());
    }

    #[test]
    fn every_reachable_stage_round_trips_through_its_columns() {
        let paths: &[&[E]] = &[
            &[],
            &[E::EnoughApprovals],
            &[E::EnoughApprovals, E::WaitForWindow],
            &[E::EnoughApprovals, E::StartDeploy],
            &[
                E::EnoughApprovals,
                E::StartDeploy,
                E::DeploySucceeded { verify: true },
            ],
            &[
                E::EnoughApprovals,
                E::StartDeploy,
                E::DeploySucceeded { verify: false },
            ],
            &[E::EnoughApprovals, E::StartDeploy, E::Fail],
            &[E::EnoughApprovals, E::StartDeploy, E::BotDied],
            &[
                E::EnoughApprovals,
                E::StartDeploy,
                E::DeploySucceeded { verify: false },
                E::ReplacedByRollback,
            ],
            &[E::Reject],
            &[E::Cancel],
            &[E::ApprovalExpired],
        ];
        let reached: std::collections::BTreeSet<S> =
            paths.iter().map(|path| through(path).state()).collect();
        let stored: std::collections::BTreeSet<S> =
            S::ALL.into_iter().filter(|s| *s != S::Requested).collect();
        assert_eq!(reached, stored, "a path to every state a row can hold");
        for path in paths {
            let stage = through(path).stage;
            assert_eq!(Stage::from_columns(stage.columns()), Ok(stage.clone()));
            for event in E::ALL {
                if let Ok(next) = stage.apply(event, at(30), "why") {
                    assert_eq!(Stage::from_columns(next.columns()), Ok(next), "{event:?}");
                }
            }
        }
    }

    #[test]
    fn inconsistent_columns_are_refused_with_what_is_wrong() {
        let columns = |state, reason: Option<&str>, started: bool, finished: bool| StageColumns {
            state,
            reason: reason.map(str::to_string),
            started_at: started.then(|| at(1)),
            finished_at: finished.then(|| at(2)),
        };
        let cases = [
            (
                columns(S::Deploying, None, false, false),
                "deploying without started_at",
            ),
            (
                columns(S::Queued, None, false, false),
                "queued without a reason",
            ),
            (
                columns(S::Succeeded, None, true, false),
                "succeeded without finished_at",
            ),
            (
                columns(S::Failed, Some("x"), false, true),
                "failed without started_at",
            ),
            (
                columns(S::Approved, Some("x"), false, false),
                "approved with a reason",
            ),
            (
                columns(S::Deploying, None, true, true),
                "deploying with finished_at",
            ),
            (
                columns(S::Cancelled, Some("x"), true, true),
                "cancelled with started_at",
            ),
        ];
        for (columns, message) in cases {
            let error = Stage::from_columns(columns).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
        assert!(Stage::from_columns(columns(S::Cancelled, Some("x"), false, true)).is_ok());
    }

    #[test]
    fn state_by_event_table() {
        for from in S::ALL {
            for event in E::ALL {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event:?}"),
                    (Err(err), None) => assert_eq!(err, TransitionError { from, event }),
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_states_where_the_event_applies() {
        let err = transition(S::Deploying, E::Cancel).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is deploying and can't be cancelled now (only while awaiting approval, approved or queued)"
        );
        let err = transition(S::Succeeded, E::Reject).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is succeeded and can't be rejected now (only while awaiting approval)"
        );
    }

    #[test]
    fn terminal_states_have_no_way_out_but_rollback() {
        for state in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<_> = E::ALL
                .into_iter()
                .filter(|e| transition(state, *e).is_ok())
                .collect();
            let expected: &[E] = if state == S::Succeeded {
                &[E::ReplacedByRollback]
            } else {
                &[]
            };
            assert_eq!(exits, expected, "{state}");
        }
    }

    #[test]
    fn cards_offer_only_what_the_state_allows() {
        for state in S::ALL {
            for action in CardAction::offered(state) {
                let allowed = match action {
                    CardAction::Approve => transition(state, E::EnoughApprovals).is_ok(),
                    CardAction::Reject => transition(state, E::Reject).is_ok(),
                    CardAction::Cancel => transition(state, E::Cancel).is_ok(),
                    CardAction::Retry | CardAction::Rollback => state.is_retryable(),
                    CardAction::Pause | CardAction::Resume | CardAction::Abort => {
                        matches!(state, S::Deploying | S::Verifying)
                    }
                };
                assert!(allowed, "{state} offers {action:?}");
            }
        }
        assert_eq!(CardAction::offered(S::Queued), &[CardAction::Cancel]);
        assert!(CardAction::offered(S::Succeeded).is_empty());
        for action in CardAction::ALL {
            assert_eq!(CardAction::parse(action.id()), Some(action));
        }
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<S>(), Ok(state));
        }
        assert!("deployed".parse::<S>().is_err());
        assert_eq!(
            S::ACTIVE.len(),
            S::ALL.iter().filter(|s| s.is_active()).count()
        );
    }
}
