//! The SQL of windows and freezes: ad-hoc freezes, fired scheduler occurrences, queued promotions,
//! and announcement jobs in the outbox.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Any, Executor};

use crate::domain::identity::Identity;
use crate::domain::platform::ChatPlatform;

use super::queries::JobKind;
use super::records::{millis, time, PromotionRow, PROMOTION_COLUMNS};
use super::{Store, StoreError, Tx};
use crate::domain::promotion::Promotion;

/// An ad-hoc freeze (`/release freeze`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeRecord {
    pub id: i64,
    /// An environment name, or `*`.
    pub environment: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub created_by: String,
}

/// A message for a channel, waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedAnnouncement {
    pub id: i64,
    pub channel: String,
    pub text: String,
    pub attempts: i64,
}

type FreezeRow = (i64, String, i64, i64, Option<String>, String);

const FREEZE_COLUMNS: &str = "id, environment, starts_at, ends_at, reason, created_by";

fn freeze(
    (id, environment, starts_at, ends_at, reason, created_by): FreezeRow,
) -> Result<FreezeRecord, StoreError> {
    Ok(FreezeRecord {
        id,
        environment,
        starts_at: time(starts_at)?,
        ends_at: time(ends_at)?,
        reason,
        created_by,
    })
}

async fn active_freezes<'e, E: Executor<'e, Database = Any>>(
    db: E,
    at: DateTime<Utc>,
) -> Result<Vec<FreezeRecord>, StoreError> {
    let sql = format!(
        "SELECT {FREEZE_COLUMNS} FROM freezes \
         WHERE starts_at <= $1 AND ends_at > $1 AND lifted_at IS NULL ORDER BY id"
    );
    let rows: Vec<FreezeRow> = sqlx::query_as(&sql).bind(millis(at)).fetch_all(db).await?;
    rows.into_iter().map(freeze).collect()
}

async fn queued_promotions<'e, E: Executor<'e, Database = Any>>(
    db: E,
) -> Result<Vec<Promotion>, StoreError> {
    let sql = format!(
        "SELECT {PROMOTION_COLUMNS} FROM promotions p WHERE p.state = 'queued' ORDER BY p.id"
    );
    let rows: Vec<PromotionRow> = sqlx::query_as(&sql).fetch_all(db).await?;
    rows.into_iter().map(Promotion::try_from).collect()
}

impl Store {
    /// Forgets platform deliveries (and told-once notices) received, and occurrences fired,
    /// before `cutoff`: past their retry windows they only grow the database. Answers how many
    /// rows went.
    pub async fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut pruned = 0;
        for sql in [
            "DELETE FROM inbound_events WHERE received_at < $1",
            "DELETE FROM schedule_occurrences WHERE fired_at < $1",
        ] {
            let result = sqlx::query(sql)
                .bind(millis(cutoff))
                .execute(self.writer().await?.db())
                .await?;
            pruned += result.rows_affected();
        }
        Ok(pruned)
    }

    /// Gives back an occurrence whose work failed, so a later tick fires it again.
    pub async fn forget_occurrence(
        &self,
        name: &str,
        event: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM schedule_occurrences WHERE name = $1 AND event = $2 AND at = $3")
            .bind(name)
            .bind(event)
            .bind(millis(at))
            .execute(self.writer().await?.db())
            .await?;
        Ok(())
    }

    /// Ad-hoc freezes in force at `at` (not lifted, not over).
    pub async fn active_freezes(&self, at: DateTime<Utc>) -> Result<Vec<FreezeRecord>, StoreError> {
        active_freezes(&self.read, at).await
    }

    /// Ad-hoc freezes that ran out (were not lifted) in `(after, until]`: their end is announced.
    pub async fn freezes_ended(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<FreezeRecord>, StoreError> {
        let sql = format!(
            "SELECT {FREEZE_COLUMNS} FROM freezes \
             WHERE ends_at > $1 AND ends_at <= $2 AND lifted_at IS NULL ORDER BY id"
        );
        let rows: Vec<FreezeRow> = sqlx::query_as(&sql)
            .bind(millis(after))
            .bind(millis(until))
            .fetch_all(&self.read)
            .await?;
        rows.into_iter().map(freeze).collect()
    }

    /// Queued promotions, oldest request first.
    pub async fn queued_promotions(&self) -> Result<Vec<Promotion>, StoreError> {
        queued_promotions(&self.read).await
    }

    /// Environments (by name, across services) with a deploy running or about to run: the
    /// queue starts one promotion per environment at a time.
    pub async fn busy_environments(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT p.environment FROM promotions p WHERE p.state IN ('deploying', 'verifying') \
                OR (p.state IN ('approved', 'queued') AND EXISTS \
                    (SELECT 1 FROM jobs j WHERE j.kind = 'deploy' AND j.promotion_id = p.id))",
        )
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn claim_announcements(
        &self,
        platform: ChatPlatform,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedAnnouncement>, StoreError> {
        let rows = self
            .claim(JobKind::Announce(platform), worker, now, lease, limit)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let payload: serde_json::Value =
                    serde_json::from_str(&row.payload).unwrap_or_default();
                let field = |name: &str| payload[name].as_str().unwrap_or_default().to_string();
                ClaimedAnnouncement {
                    id: row.id,
                    channel: field("channel"),
                    text: field("text"),
                    attempts: row.attempts,
                }
            })
            .collect())
    }

    pub async fn finish_job(&self, job_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job_id)
            .execute(self.writer().await?.db())
            .await?;
        Ok(())
    }
}

impl Tx {
    pub async fn active_freezes(
        &mut self,
        at: DateTime<Utc>,
    ) -> Result<Vec<FreezeRecord>, StoreError> {
        active_freezes(self.db(), at).await
    }

    pub async fn insert_freeze(
        &mut self,
        environment: &str,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: Option<&str>,
        created_by: &Identity,
    ) -> Result<FreezeRecord, StoreError> {
        let sql = format!(
            "INSERT INTO freezes (environment, starts_at, ends_at, reason, created_by) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {FREEZE_COLUMNS}"
        );
        let row: FreezeRow = sqlx::query_as(&sql)
            .bind(environment)
            .bind(millis(starts_at))
            .bind(millis(ends_at))
            .bind(reason)
            .bind(created_by.as_str())
            .fetch_one(self.db())
            .await?;
        freeze(row)
    }

    /// Lifts the ad-hoc freezes in force for `environment` (`None`: every one); returns them.
    pub async fn lift_freezes(
        &mut self,
        environment: Option<&str>,
        at: DateTime<Utc>,
        by: &Identity,
    ) -> Result<Vec<FreezeRecord>, StoreError> {
        let sql = format!(
            "UPDATE freezes SET lifted_at = $1, lifted_by = $2 \
             WHERE lifted_at IS NULL AND starts_at <= $1 AND ends_at > $1 \
               AND ($3 = '' OR environment = $3) RETURNING {FREEZE_COLUMNS}"
        );
        let rows: Vec<FreezeRow> = sqlx::query_as(&sql)
            .bind(millis(at))
            .bind(by.as_str())
            .bind(environment.unwrap_or(""))
            .fetch_all(self.db())
            .await?;
        let mut lifted = rows
            .into_iter()
            .map(freeze)
            .collect::<Result<Vec<_>, _>>()?;
        lifted.sort_by_key(|f| f.id);
        Ok(lifted)
    }

    /// Records that occurrence (`name`, `event`, `at`) fired; `false` when it already had (on this
    /// replica or another).
    pub async fn record_occurrence(
        &mut self,
        name: &str,
        event: &str,
        at: DateTime<Utc>,
        fired_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO schedule_occurrences (name, event, at, fired_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name, event, at) DO NOTHING",
        )
        .bind(name)
        .bind(event)
        .bind(millis(at))
        .bind(millis(fired_at))
        .execute(self.db())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Queues `text` for `channel` on `platform`.
    pub async fn enqueue_announcement(
        &mut self,
        platform: ChatPlatform,
        channel: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = serde_json::json!({"channel": channel, "text": text}).to_string();
        self.owes_wakeup = true;
        sqlx::query("INSERT INTO jobs (kind, payload, run_at, created_at) VALUES ($1, $2, $3, $3)")
            .bind(JobKind::Announce(platform).as_str())
            .bind(payload)
            .bind(millis(now))
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Deletes one job (not every job of its promotion: a duplicate deploy job must not take the
    /// running one's job, and with it its lease, away).
    pub async fn delete_job(&mut self, job_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Rewrites a promotion's reason (a queued card's "waiting for …") without a state change.
    pub async fn set_reason(
        &mut self,
        promotion_id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE promotions SET reason = $1, updated_at = $2 WHERE id = $3 AND state = 'queued'",
        )
        .bind(reason)
        .bind(millis(now))
        .bind(promotion_id)
        .execute(self.db())
        .await?;
        Ok(())
    }
}
