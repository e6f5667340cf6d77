//! The one read behind the delivery metrics: the promotions that ended (succeeded, failed, rolled
//! back since) in a time window, with their release's times. Served by the partial indexes of
//! migration 0010; the arithmetic is `domain::dora`'s.

use chrono::{DateTime, Utc};
use sqlx::{Any, Executor};

use crate::domain::dora::{DeliveryRecord, Ending};

use super::records::{millis, time};
use super::StoreError;

/// `('succeeded', 'failed', 'rolled_back')`, from [`Ending::STATES`]: the migration's partial
/// indexes repeat it word for word (a test holds them together), or the planners ignore them.
fn ended_states_sql() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let names: Vec<String> = Ending::STATES
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect();
        format!("({})", names.join(", "))
    });
    &LIST
}

/// (service, environment, state, is_rollback, finished_at, created_at, release created_at)
type EndedRow = (String, String, String, i64, i64, i64, Option<i64>);

/// The promotions that ended between `from` and `to` (both included), of one (service,
/// environment) or of all.
///
/// The lead time's start is the release's creation for now; when releases carry `committed_at`,
/// select it too and fill [`DeliveryRecord::committed_at`].
pub(super) async fn ended_promotions<'e, E: Executor<'e, Database = Any>>(
    db: E,
    only: Option<(&str, &str)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    // Separate texts rather than `($3 = '' OR …)`, which would keep the planner from the
    // per-environment index.
    let pair_filter = match only {
        Some(_) => "AND p.service = $3 AND p.environment = $4",
        None => "",
    };
    let sql = format!(
        "SELECT p.service, p.environment, p.state, p.is_rollback, p.finished_at, p.created_at, \
         r.created_at FROM promotions p \
         LEFT JOIN releases r ON r.service = p.service AND r.version = p.version \
         WHERE p.state IN {} AND p.finished_at >= $1 AND p.finished_at <= $2 {pair_filter}",
        ended_states_sql()
    );
    let mut query = sqlx::query_as::<_, EndedRow>(&sql)
        .bind(millis(from))
        .bind(millis(to));
    if let Some((service, environment)) = only {
        query = query.bind(service).bind(environment);
    }
    let rows = query.fetch_all(db).await?;
    rows.into_iter().map(record).collect()
}

fn record(row: EndedRow) -> Result<DeliveryRecord, StoreError> {
    let (service, environment, state, is_rollback, finished_at, created_at, release_created_at) =
        row;
    let ending = state.parse().ok().and_then(Ending::of).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{service} {environment}: `{state}` is not an ended state"
        ))
    })?;
    Ok(DeliveryRecord {
        ending,
        rollback: is_rollback != 0,
        finished_at: time(finished_at)?,
        requested_at: time(created_at)?,
        release_created_at: release_created_at.map(time).transpose()?,
        committed_at: None,
        service,
        environment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_index_exactly_the_ended_states() {
        let predicate = format!("WHERE state IN {}", ended_states_sql());
        for sql in [
            include_str!("../../migrations/sqlite/0010_dora.sql"),
            include_str!("../../migrations/postgres/0010_dora.sql"),
        ] {
            assert_eq!(sql.matches("WHERE state IN").count(), 2, "{sql}");
            assert_eq!(sql.matches(&predicate).count(), 2, "{predicate}\n{sql}");
        }
    }
}
