//! The promotion state machine: one transition function, every rule of SPEC §2 in one table.

use std::fmt;
use std::str::FromStr;

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

/// What a person can do to a promotion from its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardAction {
    Approve,
    Reject,
    Cancel,
    Retry,
    Rollback,
}

impl CardAction {
    pub const ALL: [CardAction; 5] = [
        CardAction::Approve,
        CardAction::Reject,
        CardAction::Cancel,
        CardAction::Retry,
        CardAction::Rollback,
    ];

    /// Stable id carried by buttons (`action_id`, `custom_id`).
    pub fn id(self) -> &'static str {
        match self {
            CardAction::Approve => "approve",
            CardAction::Reject => "reject",
            CardAction::Cancel => "cancel",
            CardAction::Retry => "retry",
            CardAction::Rollback => "rollback",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CardAction::Approve => "Approve",
            CardAction::Reject => "Reject",
            CardAction::Cancel => "Cancel",
            CardAction::Retry => "Retry",
            CardAction::Rollback => "Roll back",
        }
    }

    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The buttons a card shows in `state` (SPEC §3): Approve / Reject while awaiting approval,
    /// Cancel while queued, Retry / Roll back after a failure or interruption.
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
