//! The SQL behind the web pages' reads: the audit log filtered and paged, and every check tally
//! of a promotion's rollout.

use sqlx::Row;

use crate::domain::audit::AuditEvent;
use crate::domain::verification::Tally;

use chrono::{DateTime, Utc};

use super::records::{millis, AuditRow};
use super::{Store, StoreError};

/// What the audit log is filtered by; an empty field does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub service: String,
    pub environment: String,
    pub actor: String,
    /// Only entries older than this id (the page before ended there).
    pub before: Option<i64>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// One audit event with the promotion it is about, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub promotion_id: Option<i64>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub event: AuditEvent,
    /// Its link in the hash chain (none for events older than the chain).
    pub hash: Option<String>,
}

/// One check's tally in one gate of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyRecord {
    pub position: usize,
    pub check_index: usize,
    pub tally: Tally,
}

impl Store {
    /// The newest audit events matching `filter`, newest first, at most `filter.limit`.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.promotion_id, p.service, p.environment, \
                 a.at, a.actor, a.platform, a.kind, a.detail, a.hash \
             FROM audit_events a LEFT JOIN promotions p ON p.id = a.promotion_id \
             WHERE ($1 = '' OR p.service = $1) AND ($2 = '' OR p.environment = $2) \
               AND ($3 = '' OR a.actor = $3) AND a.id < $4 AND a.at >= $6 \
             ORDER BY a.id DESC LIMIT $5",
        )
        .bind(&filter.service)
        .bind(&filter.environment)
        .bind(&filter.actor)
        .bind(filter.before.unwrap_or(i64::MAX))
        .bind(i64::from(filter.limit))
        .bind(filter.since.map_or(i64::MIN, millis))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                use sqlx::FromRow;
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    promotion_id: row.try_get("promotion_id")?,
                    service: row.try_get("service")?,
                    environment: row.try_get("environment")?,
                    event: AuditRow::from_row(row)?.try_into()?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Every check tally of a promotion's rollout, by gate position and check.
    pub async fn all_tallies(&self, promotion_id: i64) -> Result<Vec<TallyRecord>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT position, check_index, probes, inconclusive_in_row, done, failure \
             FROM check_tallies WHERE promotion_id = $1 ORDER BY position, check_index",
        )
        .bind(promotion_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(position, index, probes, in_row, done, failure)| {
                Some(TallyRecord {
                    position: usize::try_from(position).ok()?,
                    check_index: usize::try_from(index).ok()?,
                    tally: Tally {
                        probes: u32::try_from(probes).unwrap_or(u32::MAX),
                        inconclusive_in_row: u32::try_from(in_row).unwrap_or(u32::MAX),
                        failure,
                        done: done != 0,
                    },
                })
            })
            .collect())
    }
}
