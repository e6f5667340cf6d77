//! What the store returns: rows decoded into checked records. An inconsistent row is an error,
//! never a silently wrong value.

use chrono::{DateTime, Utc};

use crate::domain::approval::Approval;
use crate::domain::identity::Identity;
use crate::domain::promotion::PromotionState;
use crate::domain::version::Version;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub id: i64,
    pub service: String,
    pub version: Version,
    pub commit: Option<String>,
    pub notes: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRecord {
    pub id: i64,
    pub service: String,
    pub version: Version,
    pub environment: String,
    pub state: PromotionState,
    pub requested_by: Identity,
    pub rollback: bool,
    pub previous_version: Option<Version>,
    pub required_approvals: u32,
    pub force_reason: Option<String>,
    pub retry_of: Option<i64>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub platform: String,
    pub kind: String,
    pub detail: String,
}

/// A promotion with what a card or API answer shows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionView {
    pub promotion: PromotionRecord,
    pub approvals: Vec<Approval>,
    pub commit: Option<String>,
    pub notes: Option<String>,
}

/// Promotion columns qualified with the alias `p`, for queries that join.
pub(super) const PROMOTION_COLUMNS: &str = "p.id, p.service, p.version, p.environment, p.state, \
    p.requested_by, p.is_rollback, p.previous_version, p.required_approvals, p.force_reason, \
    p.retry_of, p.reason, p.created_at, p.updated_at, p.started_at, p.finished_at, p.expires_at";
/// The same columns unqualified, for RETURNING.
pub(super) const PROMOTION_FIELDS: &str = "id, service, version, environment, state, \
    requested_by, is_rollback, previous_version, required_approvals, force_reason, \
    retry_of, reason, created_at, updated_at, started_at, finished_at, expires_at";

#[derive(sqlx::FromRow)]
pub(super) struct PromotionRow {
    id: i64,
    service: String,
    version: String,
    environment: String,
    state: String,
    requested_by: String,
    is_rollback: i64,
    previous_version: Option<String>,
    required_approvals: i64,
    force_reason: Option<String>,
    retry_of: Option<i64>,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TryFrom<PromotionRow> for PromotionRecord {
    type Error = StoreError;

    fn try_from(row: PromotionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("promotion #{}: {what}", row.id));
        Ok(PromotionRecord {
            id: row.id,
            version: row.version.parse().map_err(|_| corrupt("bad version"))?,
            state: row.state.parse().map_err(|_| corrupt("bad state"))?,
            requested_by: Identity::parse(&row.requested_by)
                .ok_or_else(|| corrupt("bad requester"))?,
            rollback: row.is_rollback != 0,
            previous_version: match row.previous_version.as_deref() {
                Some(text) => Some(text.parse().map_err(|_| corrupt("bad previous version"))?),
                None => None,
            },
            required_approvals: u32::try_from(row.required_approvals)
                .map_err(|_| corrupt("bad approval count"))?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            started_at: row.started_at.map(time).transpose()?,
            finished_at: row.finished_at.map(time).transpose()?,
            expires_at: row.expires_at.map(time).transpose()?,
            service: row.service,
            environment: row.environment,
            force_reason: row.force_reason,
            retry_of: row.retry_of,
            reason: row.reason,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReleaseRow {
    id: i64,
    service: String,
    version: String,
    commit_sha: Option<String>,
    notes: Option<String>,
    created_by: String,
    created_at: i64,
}

impl TryFrom<ReleaseRow> for ReleaseRecord {
    type Error = StoreError;

    fn try_from(row: ReleaseRow) -> Result<Self, StoreError> {
        Ok(ReleaseRecord {
            id: row.id,
            version: row
                .version
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("release {}: bad version", row.id)))?,
            service: row.service,
            commit: row.commit_sha,
            notes: row.notes,
            created_by: row.created_by,
            created_at: time(row.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApprovalRow {
    pub voter: String,
    pub at: i64,
}

impl TryFrom<ApprovalRow> for Approval {
    type Error = StoreError;

    fn try_from(row: ApprovalRow) -> Result<Self, StoreError> {
        Ok(Approval {
            by: Identity::parse(&row.voter)
                .ok_or_else(|| StoreError::Corrupt(format!("bad voter {}", row.voter)))?,
            at: time(row.at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    at: i64,
    actor: String,
    platform: String,
    kind: String,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        Ok(AuditEvent {
            at: time(row.at)?,
            actor: row.actor,
            platform: row.platform,
            kind: row.kind,
            detail: row.detail,
        })
    }
}

pub(super) fn time(millis: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("time {millis} out of range")))
}

pub(super) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}
