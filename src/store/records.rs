//! Rows decoded into domain types. An inconsistent row is an error naming what it is, never a
//! silently wrong value.

use chrono::{DateTime, Utc};

use crate::domain::approval::Approval;
use crate::domain::audit::AuditEvent;
use crate::domain::identity::Identity;
use crate::domain::manifest::Manifest;
use crate::domain::promotion::{Promotion, Stage, StageColumns};
use crate::domain::release::Release;

use super::StoreError;

/// Promotion columns qualified with the alias `p`, for queries that join.
pub(super) const PROMOTION_COLUMNS: &str = "p.id, p.service, p.version, p.environment, p.state, \
    p.requested_by, p.is_rollback, p.previous_version, p.required_approvals, p.force_reason, \
    p.hotfix_reason, p.retry_of, p.reason, p.created_at, p.updated_at, p.started_at, p.finished_at, p.expires_at";
/// The same columns unqualified, for RETURNING.
pub(super) const PROMOTION_FIELDS: &str = "id, service, version, environment, state, \
    requested_by, is_rollback, previous_version, required_approvals, force_reason, \
    hotfix_reason, retry_of, reason, created_at, updated_at, started_at, finished_at, expires_at";

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
    hotfix_reason: Option<String>,
    retry_of: Option<i64>,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TryFrom<PromotionRow> for Promotion {
    type Error = StoreError;

    fn try_from(row: PromotionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("promotion #{}: {what}", row.id));
        let stage = Stage::from_columns(StageColumns {
            state: row.state.parse().map_err(|_| corrupt("bad state"))?,
            reason: row.reason,
            started_at: row.started_at.map(time).transpose()?,
            finished_at: row.finished_at.map(time).transpose()?,
        })
        .map_err(|e| corrupt(&e.to_string()))?;
        Ok(Promotion {
            id: row.id,
            version: row.version.parse().map_err(|_| corrupt("bad version"))?,
            stage,
            requested_by: Identity::parse_requester(&row.requested_by)
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
            expires_at: row.expires_at.map(time).transpose()?,
            service: row.service,
            environment: row.environment,
            force_reason: row.force_reason,
            hotfix_reason: row.hotfix_reason,
            retry_of: row.retry_of,
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
    committed_at: Option<i64>,
    digest: Option<String>,
    changes: String,
    changes_note: Option<String>,
}

impl TryFrom<ReleaseRow> for Release {
    type Error = StoreError;

    fn try_from(row: ReleaseRow) -> Result<Self, StoreError> {
        Ok(Release {
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
            manifest: Manifest {
                committed_at: row.committed_at.map(time).transpose()?,
                digest: row
                    .digest
                    .map(|d| d.parse())
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("release {}: {e}", row.id)))?,
                changes: serde_json::from_str(&row.changes).map_err(|e| {
                    StoreError::Corrupt(format!("release {}: changes: {e}", row.id))
                })?,
                changes_note: row.changes_note,
            },
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
            kind: row
                .kind
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("audit event at {}: {e}", row.at)))?,
            actor: row.actor,
            platform: row.platform,
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
