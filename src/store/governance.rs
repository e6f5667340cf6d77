//! The SQL of release governance (SPEC §10): checklist ticks, the one approval reminder, and the
//! notes a card's thread is owed (reminders, cleared approvals), posted like deploy output.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::domain::identity::Identity;
use crate::domain::platform::ChatPlatform;

use super::records::{millis, time};
use super::{Dialect, Store, StoreError, Tx};

/// A note the bot owes a card's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNote {
    pub id: i64,
    pub text: String,
    /// The note pings the promotion's approvers (the reminder).
    pub mention_approvers: bool,
}

/// One ticked checklist item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Numbered from 1, as on the card.
    pub item: usize,
    pub by: String,
    pub at: DateTime<Utc>,
}

const TICKS: &str = "SELECT item, ticked_by, ticked_at FROM checklist_ticks \
    WHERE promotion_id = $1 ORDER BY item";

fn ticks_of(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Tick>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let item: i64 = row.try_get("item")?;
            Ok(Tick {
                item: usize::try_from(item)
                    .map_err(|_| StoreError::Corrupt(format!("checklist item {item}")))?,
                by: row.try_get("ticked_by")?,
                at: time(row.try_get("ticked_at")?)?,
            })
        })
        .collect()
}

impl Store {
    pub async fn checklist_ticks(&self, promotion_id: i64) -> Result<Vec<Tick>, StoreError> {
        let rows = sqlx::query(TICKS)
            .bind(promotion_id)
            .fetch_all(&self.read)
            .await?;
        ticks_of(rows)
    }

    /// Awaiting-approval promotions that have spent 80 % of their approval time and were not
    /// reminded yet.
    pub async fn due_reminders(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM promotions WHERE state = 'awaiting_approval' \
             AND reminded_at IS NULL AND expires_at IS NOT NULL \
             AND created_at + (expires_at - created_at) * 4 / 5 <= $1 ORDER BY id",
        )
        .bind(millis(now))
        .fetch_all(&self.read)
        .await?;
        Ok(ids)
    }

    /// Thread notes of a promotion after `after_id`, oldest first.
    pub async fn thread_notes_since(
        &self,
        promotion_id: i64,
        after_id: i64,
    ) -> Result<Vec<ThreadNote>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, text, CAST(CASE WHEN mention_approvers THEN 1 ELSE 0 END AS BIGINT) AS mention \
             FROM thread_notes WHERE promotion_id = $1 AND id > $2 ORDER BY id",
        )
        .bind(promotion_id)
        .bind(after_id)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                let mention: i64 = row.try_get("mention")?;
                Ok(ThreadNote {
                    id: row.try_get("id")?,
                    text: row.try_get("text")?,
                    mention_approvers: mention != 0,
                })
            })
            .collect()
    }

    /// The card's thread on `platform` has every note up to `note_id`.
    pub async fn thread_note_posted(
        &self,
        promotion_id: i64,
        platform: ChatPlatform,
        note_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE chat_cards SET thread_note_id = $3 WHERE promotion_id = $1 AND platform = $2",
        )
        .bind(promotion_id)
        .bind(platform.as_str())
        .bind(note_id)
        .execute(self.writer().await?.db())
        .await?;
        Ok(())
    }

    /// The last note posted to the card's thread on `platform` (0: none).
    pub async fn thread_note_cursor(
        &self,
        promotion_id: i64,
        platform: ChatPlatform,
    ) -> Result<i64, StoreError> {
        let cursor = sqlx::query_scalar(
            "SELECT thread_note_id FROM chat_cards WHERE promotion_id = $1 AND platform = $2",
        )
        .bind(promotion_id)
        .bind(platform.as_str())
        .fetch_optional(&self.read)
        .await?;
        Ok(cursor.unwrap_or(0))
    }
}

impl Tx {
    pub async fn checklist_ticks(&mut self, promotion_id: i64) -> Result<Vec<Tick>, StoreError> {
        let rows = sqlx::query(TICKS)
            .bind(promotion_id)
            .fetch_all(self.db())
            .await?;
        ticks_of(rows)
    }

    /// Ticks `item`; `false` when someone ticked it already.
    pub async fn tick(
        &mut self,
        promotion_id: i64,
        item: usize,
        by: &Identity,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let item = i64::try_from(item).map_err(|_| StoreError::Corrupt("item".into()))?;
        let inserted = sqlx::query(
            "INSERT INTO checklist_ticks (promotion_id, item, ticked_by, ticked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (promotion_id, item) DO NOTHING",
        )
        .bind(promotion_id)
        .bind(item)
        .bind(by.as_str())
        .bind(millis(at))
        .execute(self.db())
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Marks the promotion reminded; `false` when it was already (another replica was first).
    pub async fn mark_reminded(
        &mut self,
        promotion_id: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE promotions SET reminded_at = $2 WHERE id = $1 AND reminded_at IS NULL",
        )
        .bind(promotion_id)
        .bind(millis(at))
        .execute(self.db())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// A note for the promotion's card threads, posted with the next card update.
    pub async fn add_thread_note(
        &mut self,
        promotion_id: i64,
        text: &str,
        mention_approvers: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mention = match (self.dialect, mention_approvers) {
            (Dialect::Postgres, true) => "TRUE",
            (Dialect::Postgres, false) => "FALSE",
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
        };
        sqlx::query(&format!(
            "INSERT INTO thread_notes (promotion_id, at, text, mention_approvers) \
             VALUES ($1, $2, $3, {mention})"
        ))
        .bind(promotion_id)
        .bind(millis(at))
        .bind(text)
        .execute(self.db())
        .await?;
        Ok(())
    }
}
