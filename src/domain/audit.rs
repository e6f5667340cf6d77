//! The audit trail's vocabulary: what kinds of event it records.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::promotion::PromotionState;

/// What an audit event records. A promotion entering a state is recorded under the state's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    ReleaseCreated,
    /// A release's manifest changed (a new digest, changes, commit time).
    ReleaseUpdated,
    /// A promotion's approvals were cleared (its release's digest changed while it waited).
    ApprovalsCleared,
    /// A promotion was asked for.
    Requested,
    /// One approval counted (`approval 1/2`).
    Approval,
    ApprovalWithdrawn,
    Freeze,
    Unfreeze,
    /// A rollout step began (a backend call of a canary or blue-green strategy).
    Step,
    /// A verification gate ended: its checks passed.
    ChecksPassed,
    Paused,
    Resumed,
    Advanced,
    AbortRequested,
    /// A checklist item was ticked (SPEC §10).
    ChecklistTicked,
    /// The approvers were reminded (80 % of the approval time passed).
    Reminded,
    /// The promotion entered this state.
    Entered(PromotionState),
}

impl AuditKind {
    /// A promotion entering `state` (entering `requested` is its request).
    pub fn entered(state: PromotionState) -> Self {
        match state {
            PromotionState::Requested => AuditKind::Requested,
            other => AuditKind::Entered(other),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ReleaseCreated => "release_created",
            AuditKind::ReleaseUpdated => "release_updated",
            AuditKind::ApprovalsCleared => "approvals_cleared",
            AuditKind::Requested => "requested",
            AuditKind::Approval => "approval",
            AuditKind::ApprovalWithdrawn => "approval_withdrawn",
            AuditKind::Freeze => "freeze",
            AuditKind::Unfreeze => "unfreeze",
            AuditKind::Step => "step",
            AuditKind::ChecksPassed => "checks_passed",
            AuditKind::Paused => "paused",
            AuditKind::Resumed => "resumed",
            AuditKind::Advanced => "advanced",
            AuditKind::AbortRequested => "abort_requested",
            AuditKind::ChecklistTicked => "checklist_ticked",
            AuditKind::Reminded => "reminded",
            AuditKind::Entered(state) => state.as_str(),
        }
    }

    fn all() -> impl Iterator<Item = AuditKind> {
        [
            AuditKind::ReleaseCreated,
            AuditKind::ReleaseUpdated,
            AuditKind::ApprovalsCleared,
            AuditKind::Requested,
            AuditKind::Approval,
            AuditKind::ApprovalWithdrawn,
            AuditKind::Freeze,
            AuditKind::Unfreeze,
            AuditKind::Step,
            AuditKind::ChecksPassed,
            AuditKind::Paused,
            AuditKind::Resumed,
            AuditKind::Advanced,
            AuditKind::AbortRequested,
            AuditKind::ChecklistTicked,
            AuditKind::Reminded,
        ]
        .into_iter()
        .chain(
            PromotionState::ALL
                .into_iter()
                .filter(|state| *state != PromotionState::Requested)
                .map(AuditKind::Entered),
        )
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A "since" of the audit trail (`audit export --since`, `GET /api/v1/audit?since=`): an RFC 3339
/// time, or a date meaning its midnight UTC.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| {
            format!("`{text}` is neither an RFC 3339 time (2026-12-01T09:00:00Z) nor a date (2026-12-01)")
        })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit event kind `{0}`")]
pub struct UnknownAuditKind(pub String);

impl FromStr for AuditKind {
    type Err = UnknownAuditKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AuditKind::all()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownAuditKind(text.to_string()))
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub platform: String,
    pub kind: AuditKind,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_stored_name() {
        let kinds: Vec<AuditKind> = AuditKind::all().collect();
        for kind in &kinds {
            assert_eq!(kind.as_str().parse::<AuditKind>(), Ok(*kind), "{kind}");
        }
        let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len(), "two kinds share a stored name");
        assert!("deployed".parse::<AuditKind>().is_err());
    }

    #[test]
    fn entering_requested_is_the_request() {
        assert_eq!(
            AuditKind::entered(PromotionState::Requested),
            AuditKind::Requested
        );
        assert_eq!(
            AuditKind::entered(PromotionState::RolledBack).as_str(),
            "rolled_back"
        );
    }
}
