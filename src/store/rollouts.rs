//! The SQL of rollouts (migrations 0006, 0007): where a promotion's rollout is in its plan, the
//! controls people gave it, and each check's tally per gate.

use chrono::{DateTime, Utc};
use sqlx::{Any, Executor};

use crate::domain::verification::Tally;

use super::records::{millis, time};
use super::{JobLease, Store, StoreError, Tx};

/// A promotion's stored rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutRecord {
    pub promotion_id: i64,
    /// The index of the plan action it is at.
    pub position: usize,
    /// A backend call of `position` runs (or ran when the bot died).
    pub calling: bool,
    /// When the gate at `position` began (rules clock).
    pub gate_started_at: Option<DateTime<Utc>>,
    /// Who holds it before its next step.
    pub paused_by: Option<String>,
    /// Someone asked to end the current pause now.
    pub advance: bool,
    /// Who asked to abort, and why.
    pub abort_by: Option<String>,
    pub abort_reason: Option<String>,
    /// The rollback its failure or abort started.
    pub rolled_back_by: Option<i64>,
    /// The running call's backend works remotely: the call is resumed after a restart.
    pub call_remote: bool,
    /// When the running call first started (wall clock).
    pub call_started_at: Option<DateTime<Utc>>,
    /// The running call's remote handle (JSON), as its backend reported it.
    pub call_handle: Option<String>,
    /// What the running call's backend says it is doing, for the cards.
    pub call_status: Option<String>,
}

type RolloutRow = (
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

const ROLLOUT_COLUMNS: &str = "promotion_id, position, calling, gate_started_at, paused_by, \
     advance, abort_by, abort_reason, rolled_back_by, call_remote, call_started_at, call_handle, \
     call_status";

fn record(row: RolloutRow) -> Result<RolloutRecord, StoreError> {
    let (
        id,
        position,
        calling,
        gate_started_at,
        paused_by,
        advance,
        abort_by,
        abort_reason,
        rb,
        call_remote,
        call_started_at,
        call_handle,
        call_status,
    ) = row;
    Ok(RolloutRecord {
        promotion_id: id,
        position: usize::try_from(position)
            .map_err(|_| StoreError::Corrupt(format!("rollout of #{id} at position {position}")))?,
        calling: calling != 0,
        gate_started_at: gate_started_at.map(time).transpose()?,
        paused_by,
        advance: advance != 0,
        abort_by,
        abort_reason,
        rolled_back_by: rb,
        call_remote: call_remote != 0,
        call_started_at: call_started_at.map(time).transpose()?,
        call_handle,
        call_status,
    })
}

async fn rollout<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<Option<RolloutRecord>, StoreError> {
    let sql = format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE promotion_id = $1");
    sqlx::query_as::<_, RolloutRow>(&sql)
        .bind(promotion_id)
        .fetch_optional(db)
        .await?
        .map(record)
        .transpose()
}

type TallyRow = (i64, i64, i64, i64, Option<String>);

impl Store {
    /// Stores the running call's remote handle, if `lease` still holds its job.
    pub async fn save_call_handle(
        &self,
        lease: &JobLease,
        promotion_id: i64,
        handle: &str,
    ) -> Result<(), StoreError> {
        self.update_call(lease, promotion_id, "call_handle", handle)
            .await
    }

    /// Stores what the running call's backend says it is doing, if `lease` still holds its job.
    pub async fn save_call_status(
        &self,
        lease: &JobLease,
        promotion_id: i64,
        status: &str,
    ) -> Result<(), StoreError> {
        self.update_call(lease, promotion_id, "call_status", status)
            .await
    }

    async fn update_call(
        &self,
        lease: &JobLease,
        promotion_id: i64,
        column: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.hold_lease(lease).await?;
        let sql =
            format!("UPDATE rollouts SET {column} = $1 WHERE promotion_id = $2 AND calling = 1");
        sqlx::query(&sql)
            .bind(value)
            .bind(promotion_id)
            .execute(tx.db())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn rollout(&self, promotion_id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        rollout(&self.read, promotion_id).await
    }

    /// Each check's tally in the gate at `position`, by check index.
    pub async fn tallies(
        &self,
        promotion_id: i64,
        position: usize,
    ) -> Result<Vec<(usize, Tally)>, StoreError> {
        let rows: Vec<TallyRow> = sqlx::query_as(
            "SELECT check_index, probes, inconclusive_in_row, done, failure FROM check_tallies \
             WHERE promotion_id = $1 AND position = $2 ORDER BY check_index",
        )
        .bind(promotion_id)
        .bind(position_value(position))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(index, probes, in_row, done, failure)| {
                let tally = Tally {
                    probes: u32::try_from(probes).unwrap_or(u32::MAX),
                    inconclusive_in_row: u32::try_from(in_row).unwrap_or(u32::MAX),
                    failure,
                    done: done != 0,
                };
                Some((usize::try_from(index).ok()?, tally))
            })
            .collect())
    }
}

impl Tx {
    /// Which attempt the promotion is: 1, or one more than the promotion it retries.
    pub async fn attempt(&mut self, promotion_id: i64) -> Result<u32, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "WITH RECURSIVE chain (id, retry_of) AS ( \
               SELECT id, retry_of FROM promotions WHERE id = $1 \
               UNION ALL SELECT p.id, p.retry_of FROM promotions p JOIN chain c ON p.id = c.retry_of) \
             SELECT COUNT(*) FROM chain",
        )
        .bind(promotion_id)
        .fetch_one(self.db())
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX).max(1))
    }

    pub async fn rollout(
        &mut self,
        promotion_id: i64,
    ) -> Result<Option<RolloutRecord>, StoreError> {
        rollout(self.db(), promotion_id).await
    }

    /// Moves the rollout to `position` (a new action: its pause and advance requests start
    /// afresh, except a hold, which lasts until resumed).
    pub async fn move_rollout(
        &mut self,
        promotion_id: i64,
        position: usize,
        calling: bool,
        gate_started_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rollouts (promotion_id, position, calling, gate_started_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (promotion_id) DO UPDATE SET \
             position = excluded.position, calling = excluded.calling, \
             gate_started_at = excluded.gate_started_at, advance = 0",
        )
        .bind(promotion_id)
        .bind(position_value(position))
        .bind(i64::from(calling))
        .bind(gate_started_at.map(millis))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Starts the backend call at `position`: running, `remote` or not, since `started_at`
    /// (wall clock), with no handle or status yet.
    pub async fn start_call(
        &mut self,
        promotion_id: i64,
        position: usize,
        remote: bool,
        started_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rollouts SET position = $1, calling = 1, gate_started_at = NULL, advance = 0, \
             call_remote = $2, call_started_at = $3, call_handle = NULL, call_status = NULL \
             WHERE promotion_id = $4",
        )
        .bind(position_value(position))
        .bind(i64::from(remote))
        .bind(millis(started_at))
        .bind(promotion_id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn set_paused_by(
        &mut self,
        promotion_id: i64,
        by: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollouts SET paused_by = $1 WHERE promotion_id = $2")
            .bind(by)
            .bind(promotion_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Ends the current pause now and lifts a hold.
    pub async fn request_advance(&mut self, promotion_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollouts SET advance = 1, paused_by = NULL WHERE promotion_id = $1")
            .bind(promotion_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn request_abort(
        &mut self,
        promotion_id: i64,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollouts SET abort_by = $1, abort_reason = $2 WHERE promotion_id = $3")
            .bind(by)
            .bind(reason)
            .bind(promotion_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn set_rolled_back_by(
        &mut self,
        promotion_id: i64,
        rollback: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollouts SET rolled_back_by = $1 WHERE promotion_id = $2")
            .bind(rollback)
            .bind(promotion_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn save_tally(
        &mut self,
        promotion_id: i64,
        position: usize,
        check_index: usize,
        tally: &Tally,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO check_tallies \
             (promotion_id, position, check_index, probes, inconclusive_in_row, done, failure) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (promotion_id, position, check_index) DO UPDATE SET \
             probes = excluded.probes, inconclusive_in_row = excluded.inconclusive_in_row, \
             done = excluded.done, failure = excluded.failure",
        )
        .bind(promotion_id)
        .bind(position_value(position))
        .bind(position_value(check_index))
        .bind(i64::from(tally.probes))
        .bind(i64::from(tally.inconclusive_in_row))
        .bind(i64::from(tally.done))
        .bind(tally.failure.as_deref())
        .execute(self.db())
        .await?;
        Ok(())
    }
}

fn position_value(position: usize) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}
