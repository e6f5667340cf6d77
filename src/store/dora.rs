//! The one read behind the delivery metrics: the promotions that ended (succeeded, failed, rolled
//! back since) in a time window, with their release's times. Served by the partial indexes of
//! migration 0010; the arithmetic is `domain::dora`'s.

use chrono::{DateTime, Utc};
use sqlx::{Any, Executor};

use crate::domain::dora::{DeliveryRecord, Ending, Pair};

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

/// One promotion as the read encodes it: `state is_rollback finished_at created_at
/// release_created_at` (the last empty when the release row is missing).
const ENDED_FIELDS: &str = "p.state || ' ' || CAST(p.is_rollback AS TEXT) || ' ' || \
    CAST(p.finished_at AS TEXT) || ' ' || CAST(p.created_at AS TEXT) || ' ' || \
    COALESCE(CAST(r.created_at AS TEXT), '') || ' ' || COALESCE(CAST(r.committed_at AS TEXT), '')";

/// The promotions that ended between `from` and `to` (both included), of one (service,
/// environment) or of all.
///
/// A 90-day window over a busy history holds tens of thousands of promotions, and a driver row
/// costs far more than the database's work to find it; so the database joins each (service,
/// environment)'s promotions into one text (`string_agg` is `dialect`'s), and a handful of rows
/// come back.
///
/// The lead time starts at the release's `committed_at` when given, else at its creation.
pub(super) async fn ended_promotions<'e, E: Executor<'e, Database = Any>>(
    db: E,
    string_agg: &str,
    only: Option<(&str, &str)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(Pair, Vec<DeliveryRecord>)>, StoreError> {
    // Separate texts rather than `($3 = '' OR …)`, which would keep the planner from the
    // per-environment index.
    let pair_filter = match only {
        Some(_) => "AND p.service = $3 AND p.environment = $4",
        None => "",
    };
    let sql = format!(
        "SELECT p.service, p.environment, {string_agg}({ENDED_FIELDS}, ',') FROM promotions p \
         LEFT JOIN releases r ON r.service = p.service AND r.version = p.version \
         WHERE p.state IN {} AND p.finished_at >= $1 AND p.finished_at <= $2 {pair_filter} \
         GROUP BY p.service, p.environment",
        ended_states_sql()
    );
    let mut query = sqlx::query_as::<_, (String, String, String)>(&sql)
        .bind(millis(from))
        .bind(millis(to));
    if let Some((service, environment)) = only {
        query = query.bind(service).bind(environment);
    }
    let mut groups = Vec::new();
    for (service, environment, joined) in query.fetch_all(db).await? {
        let records = joined
            .split(',')
            .map(|encoded| record(&service, &environment, encoded))
            .collect::<Result<Vec<DeliveryRecord>, StoreError>>()?;
        groups.push(((service, environment), records));
    }
    Ok(groups)
}

/// Decodes one promotion of [`ENDED_FIELDS`].
fn record(service: &str, environment: &str, encoded: &str) -> Result<DeliveryRecord, StoreError> {
    let corrupt = || {
        StoreError::Corrupt(format!(
            "{service} {environment}: `{encoded}` is no ended promotion"
        ))
    };
    let mut fields = encoded.split(' ');
    let mut next = || fields.next().ok_or_else(corrupt);
    let ending = next()?
        .parse()
        .ok()
        .and_then(Ending::of)
        .ok_or_else(corrupt)?;
    let rollback = next()? != "0";
    let mut millis_field = |optional: bool| -> Result<Option<i64>, StoreError> {
        match next()? {
            "" if optional => Ok(None),
            text => text.parse().map(Some).map_err(|_| corrupt()),
        }
    };
    let finished_at = millis_field(false)?.ok_or_else(corrupt)?;
    let created_at = millis_field(false)?.ok_or_else(corrupt)?;
    let release_created_at = millis_field(true)?;
    let committed_at = millis_field(true)?;
    Ok(DeliveryRecord {
        ending,
        rollback,
        finished_at: time(finished_at)?,
        requested_at: time(created_at)?,
        release_created_at: release_created_at.map(time).transpose()?,
        committed_at: committed_at.map(time).transpose()?,
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

    #[test]
    fn decodes_what_the_read_encodes_and_names_what_it_cannot() {
        let record = |encoded| record("api", "production", encoded);
        let decoded = record("rolled_back 1 5000 2000 1000 ").ok();
        let expected = DeliveryRecord {
            ending: Ending::RolledBack,
            rollback: true,
            finished_at: time(5000).ok().unwrap_or_default(),
            requested_at: time(2000).ok().unwrap_or_default(),
            release_created_at: time(1000).ok(),
            committed_at: None,
        };
        assert_eq!(decoded, Some(expected));
        let committed = record("succeeded 0 5000 2000 1000 500").ok();
        assert_eq!(committed.and_then(|r| r.committed_at), time(500).ok());
        let without_release = record("failed 0 5000 2000  ").ok();
        assert_eq!(without_release.map(|r| r.release_created_at), Some(None));
        for bad in [
            "",
            "queued 0 1 2 3",
            "succeeded 0 x 2 3",
            "succeeded 0 1",
            "succeeded 0 1 2",
            "succeeded 0 1 2 3",
        ] {
            let error = record(bad).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("is no ended promotion")),
                "{bad:?}: {error:?}"
            );
        }
    }
}
