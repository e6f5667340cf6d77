//! The SQL. Each function takes any executor (pool or transaction), so one query text serves both.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::AnyQueryResult;
use sqlx::{Any, Executor};

use crate::domain::approval::Approval;
use crate::domain::audit::AuditEvent;
use crate::domain::audit_chain::{ChainedEvent, StoredLink};
use crate::domain::identity::Identity;
use crate::domain::manifest::Manifest;
use crate::domain::platform::ChatPlatform;
use crate::domain::promotion::PromotionState;
use crate::domain::promotion::{Promotion, Stage};
use crate::domain::release::Release;
use crate::domain::version::Version;

use super::records::{
    millis, time, ApprovalRow, AuditRow, PromotionRow, ReleaseRow, PROMOTION_COLUMNS,
    PROMOTION_FIELDS,
};
use super::{StoreError, Tx};

const DEPLOY_LOG_KEEP: i64 = 200;

/// `('awaiting_approval', …)`: the SQL list of [`PromotionState::ACTIVE`], made from the enum so
/// the two cannot drift (the migrations' partial indexes are checked against it in a test).
pub fn active_states_sql() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let names: Vec<String> = PromotionState::ACTIVE
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect();
        format!("({})", names.join(", "))
    });
    &LIST
}

/// Kinds of outbox jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Deploy,
    /// Post or edit a promotion's card on one platform (at most one such job per promotion).
    Card(ChatPlatform),
    /// Post a message (window, freeze, schedule) to a channel on one platform.
    Announce(ChatPlatform),
}

impl JobKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            JobKind::Deploy => "deploy",
            JobKind::Card(ChatPlatform::Slack) => "card:slack",
            JobKind::Card(ChatPlatform::Discord) => "card:discord",
            JobKind::Announce(ChatPlatform::Slack) => "announce:slack",
            JobKind::Announce(ChatPlatform::Discord) => "announce:discord",
        }
    }

    /// The kind as an SQL literal. Statements that pick jobs by kind name it, not bind it: the
    /// jobs table's partial indexes are per kind, and SQLite re-prepares a statement every time
    /// a parameter that decides whether such an index applies is bound (profiled: the claim was
    /// parsed and planned again on every run). The names are ours, without quotes.
    fn sql_literal(self) -> String {
        format!("'{}'", self.as_str())
    }
}

/// Where a promotion's card lives on one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCardRecord {
    pub channel: String,
    /// `None` until posted.
    pub message_id: Option<String>,
    /// The last deploy_log id posted to the card's thread.
    pub thread_log_id: i64,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub promotion_id: i64,
    pub attempts: i64,
}

impl ClaimedJob {
    /// The lease `worker` holds on this job by this claim.
    pub fn lease(&self, worker: &str) -> JobLease {
        JobLease {
            job_id: self.id,
            worker: worker.to_string(),
            attempt: self.attempts,
        }
    }
}

pub struct NewRelease<'a> {
    pub service: &'a str,
    pub version: &'a Version,
    pub commit: Option<&'a str>,
    pub notes: Option<&'a str>,
    pub created_by: &'a Identity,
    pub at: DateTime<Utc>,
}

pub struct NewPromotion<'a> {
    pub service: &'a str,
    pub version: &'a Version,
    pub environment: &'a str,
    /// Where it starts (the engine opens promotions awaiting approval or approved).
    pub stage: Stage,
    pub requested_by: &'a Identity,
    pub rollback: bool,
    pub previous_version: Option<&'a Version>,
    pub required_approvals: u32,
    pub force_reason: Option<&'a str>,
    pub hotfix_reason: Option<&'a str>,
    pub retry_of: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    /// The artifact it deploys: its release's digest when it was asked for.
    pub digest: Option<&'a str>,
}

/// One line of `status`: a promotion that runs now (`current`) or is active in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub promotion: Promotion,
    pub current: bool,
    pub approval_count: i64,
}

fn decode_promotions(rows: Vec<PromotionRow>) -> Result<Vec<Promotion>, StoreError> {
    rows.into_iter().map(Promotion::try_from).collect()
}

fn unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub async fn promotion<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
) -> Result<Option<Promotion>, StoreError> {
    promotion_locked(db, id, "").await
}

/// One promotion by id; `lock` is a row-locking suffix such as `FOR UPDATE` (or empty).
pub async fn promotion_locked<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    lock: &str,
) -> Result<Option<Promotion>, StoreError> {
    let sql = format!("SELECT {PROMOTION_COLUMNS} FROM promotions p WHERE p.id = $1 {lock}");
    let row: Option<PromotionRow> = sqlx::query_as(&sql).bind(id).fetch_optional(db).await?;
    row.map(Promotion::try_from).transpose()
}

pub async fn active_promotion<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    environment: &str,
) -> Result<Option<Promotion>, StoreError> {
    let sql = format!(
        "SELECT {PROMOTION_COLUMNS} FROM promotions p \
         WHERE p.service = $1 AND p.environment = $2 AND p.state IN {}",
        active_states_sql()
    );
    promotion_in_environment(db, &sql, service, environment).await
}

pub async fn current<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    environment: &str,
) -> Result<Option<Promotion>, StoreError> {
    let sql = format!(
        "SELECT {PROMOTION_COLUMNS} FROM current_deployments c \
         JOIN promotions p ON p.id = c.promotion_id \
         WHERE c.service = $1 AND c.environment = $2"
    );
    promotion_in_environment(db, &sql, service, environment).await
}

async fn promotion_in_environment<'e, E: Executor<'e, Database = Any>>(
    db: E,
    sql: &str,
    service: &str,
    environment: &str,
) -> Result<Option<Promotion>, StoreError> {
    let row: Option<PromotionRow> = sqlx::query_as(sql)
        .bind(service)
        .bind(environment)
        .fetch_optional(db)
        .await?;
    row.map(Promotion::try_from).transpose()
}

pub async fn succeeded_environments<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    version: &Version,
) -> Result<Vec<String>, StoreError> {
    // Deduplicated here: with DISTINCT, SQLite's planner (no statistics) walks every promotion
    // of the service in environment order instead of looking up (service, version, state).
    let mut environments: Vec<String> = sqlx::query_scalar(
        "SELECT environment FROM promotions \
         WHERE service = $1 AND version = $2 AND state = 'succeeded'",
    )
    .bind(service)
    .bind(version.to_string())
    .fetch_all(db)
    .await?;
    environments.sort();
    environments.dedup();
    Ok(environments)
}

pub async fn succeeded_versions<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    environment: &str,
) -> Result<Vec<Version>, StoreError> {
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM promotions \
         WHERE service = $1 AND environment = $2 AND state = 'succeeded' ORDER BY id DESC",
    )
    .bind(service)
    .bind(environment)
    .fetch_all(db)
    .await?;
    parse_versions(texts)
}

pub async fn release_versions<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
) -> Result<Vec<Version>, StoreError> {
    let texts: Vec<String> =
        sqlx::query_scalar("SELECT version FROM releases WHERE service = $1 ORDER BY id")
            .bind(service)
            .fetch_all(db)
            .await?;
    parse_versions(texts)
}

fn parse_versions(texts: Vec<String>) -> Result<Vec<Version>, StoreError> {
    texts
        .into_iter()
        .map(|text| {
            text.parse()
                .map_err(|_| StoreError::Corrupt(format!("bad version {text}")))
        })
        .collect()
}

const RELEASE_COLUMNS: &str =
    "id, service, version, commit_sha, notes, created_by, created_at, committed_at, digest, changes, changes_note";

pub async fn release<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    version: &Version,
) -> Result<Option<Release>, StoreError> {
    let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE service = $1 AND version = $2");
    let row: Option<ReleaseRow> = sqlx::query_as(&sql)
        .bind(service)
        .bind(version.to_string())
        .fetch_optional(db)
        .await?;
    row.map(Release::try_from).transpose()
}

/// Inserts a release; `None` when it exists already (concurrent creators do not abort the
/// transaction, which PostgreSQL would do on a unique violation).
pub async fn insert_release<'e, E: Executor<'e, Database = Any>>(
    db: E,
    release: NewRelease<'_>,
) -> Result<Option<Release>, StoreError> {
    let sql = format!(
        "INSERT INTO releases (service, version, commit_sha, notes, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (service, version) DO NOTHING \
         RETURNING {RELEASE_COLUMNS}"
    );
    let row: Option<ReleaseRow> = sqlx::query_as(&sql)
        .bind(release.service)
        .bind(release.version.to_string())
        .bind(release.commit)
        .bind(release.notes)
        .bind(release.created_by.as_str())
        .bind(millis(release.at))
        .fetch_optional(db)
        .await?;
    row.map(Release::try_from).transpose()
}

/// Replaces a release's manifest.
pub async fn set_manifest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    release_id: i64,
    manifest: &Manifest,
) -> Result<(), StoreError> {
    let changes = serde_json::to_string(&manifest.changes)
        .map_err(|e| StoreError::Corrupt(format!("changes: {e}")))?;
    sqlx::query(
        "UPDATE releases SET committed_at = $1, digest = $2, changes = $3, changes_note = $4 \
         WHERE id = $5",
    )
    .bind(manifest.committed_at.map(millis))
    .bind(manifest.digest.as_ref().map(|d| d.as_str().to_string()))
    .bind(changes)
    .bind(manifest.changes_note.as_deref())
    .bind(release_id)
    .execute(db)
    .await?;
    Ok(())
}

/// The digest a promotion deployed (or will): the release's when it was asked for.
pub async fn promotion_digest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<Option<String>, StoreError> {
    let digest: Option<Option<String>> =
        sqlx::query_scalar("SELECT digest FROM promotions WHERE id = $1")
            .bind(promotion_id)
            .fetch_optional(db)
            .await?;
    Ok(digest.flatten())
}

/// Records the digest a promotion deploys.
pub async fn set_promotion_digest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    digest: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE promotions SET digest = $1 WHERE id = $2")
        .bind(digest)
        .bind(promotion_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The digest of the newest succeeded promotion of a version in an environment: `Some(None)`
/// when it succeeded without one, `None` when it never succeeded there.
pub async fn succeeded_digest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    version: &Version,
    environment: &str,
) -> Result<Option<Option<String>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT digest FROM promotions WHERE service = $1 AND version = $2 AND environment = $3 \
         AND state = 'succeeded' AND is_rollback = 0 ORDER BY id DESC LIMIT 1",
    )
    .bind(service)
    .bind(version.to_string())
    .bind(environment)
    .fetch_optional(db)
    .await?)
}

/// Active promotions of a release awaiting approval.
pub async fn awaiting_of_release<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    version: &Version,
) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM promotions WHERE service = $1 AND version = $2 \
         AND state = 'awaiting_approval' ORDER BY id",
    )
    .bind(service)
    .bind(version.to_string())
    .fetch_all(db)
    .await?)
}

/// Removes every approval of a promotion; returns how many there were.
pub async fn clear_approvals<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<u64, StoreError> {
    let result = sqlx::query("DELETE FROM approvals WHERE promotion_id = $1")
        .bind(promotion_id)
        .execute(db)
        .await?;
    Ok(result.rows_affected())
}

pub async fn insert_promotion<'e, E: Executor<'e, Database = Any>>(
    db: E,
    new: NewPromotion<'_>,
) -> Result<Promotion, StoreError> {
    let sql = format!(
        "INSERT INTO promotions (service, version, environment, state, requested_by, is_rollback, \
         previous_version, required_approvals, force_reason, retry_of, created_at, updated_at, expires_at, \
         reason, started_at, finished_at, hotfix_reason, digest) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16, $17) \
         RETURNING {PROMOTION_FIELDS}"
    );
    let stage = new.stage.columns();
    let inserted: Result<PromotionRow, sqlx::Error> = sqlx::query_as(&sql)
        .bind(new.service)
        .bind(new.version.to_string())
        .bind(new.environment)
        .bind(stage.state.as_str())
        .bind(new.requested_by.as_str())
        .bind(i64::from(new.rollback))
        .bind(new.previous_version.map(ToString::to_string))
        .bind(i64::from(new.required_approvals))
        .bind(new.force_reason)
        .bind(new.retry_of)
        .bind(millis(new.at))
        .bind(new.expires_at.map(millis))
        .bind(stage.reason)
        .bind(stage.started_at.map(millis))
        .bind(stage.finished_at.map(millis))
        .bind(new.hotfix_reason)
        .bind(new.digest)
        .fetch_one(db)
        .await;
    match inserted {
        Ok(row) => row.try_into(),
        Err(e) if unique_violation(&e) => Err(StoreError::ActiveExists),
        Err(e) => Err(e.into()),
    }
}

pub async fn update_promotion<'e, E: Executor<'e, Database = Any>>(
    db: E,
    p: &Promotion,
    expected: PromotionState,
) -> Result<AnyQueryResult, StoreError> {
    let stage = p.stage.columns();
    let result = sqlx::query(
        "UPDATE promotions SET state = $1, reason = $2, updated_at = $3, started_at = $4, \
         finished_at = $5, expires_at = $6 WHERE id = $7 AND state = $8",
    )
    .bind(stage.state.as_str())
    .bind(stage.reason)
    .bind(millis(p.updated_at))
    .bind(stage.started_at.map(millis))
    .bind(stage.finished_at.map(millis))
    .bind(p.expires_at.map(millis))
    .bind(p.id)
    .bind(expected.as_str())
    .execute(db)
    .await;
    match result {
        Ok(done) => Ok(done),
        Err(e) if unique_violation(&e) => Err(StoreError::ActiveExists),
        Err(e) => Err(e.into()),
    }
}

pub async fn set_current<'e, E: Executor<'e, Database = Any>>(
    db: E,
    p: &Promotion,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO current_deployments (service, environment, promotion_id) VALUES ($1, $2, $3) \
         ON CONFLICT (service, environment) DO UPDATE SET promotion_id = excluded.promotion_id",
    )
    .bind(&p.service)
    .bind(&p.environment)
    .bind(p.id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn approvals<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<Vec<Approval>, StoreError> {
    let rows: Vec<ApprovalRow> = sqlx::query_as(
        "SELECT voter, at FROM approvals WHERE promotion_id = $1 ORDER BY at, voter",
    )
    .bind(promotion_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Approval::try_from).collect()
}

pub async fn add_approval<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    voter: &Identity,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approvals (promotion_id, voter, at) VALUES ($1, $2, $3) \
         ON CONFLICT (promotion_id, voter) DO NOTHING",
    )
    .bind(promotion_id)
    .bind(voter.as_str())
    .bind(millis(at))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn remove_approval<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    voter: &Identity,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM approvals WHERE promotion_id = $1 AND voter = $2")
        .bind(promotion_id)
        .bind(voter.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Appends one audit event with its chain hash (see [`super::Tx::commit`]).
/// Appends chained events, each with its hash, in one statement per [`AUDIT_ROWS_PER_INSERT`]:
/// every statement is a round trip to the database, and the ids follow the rows' order.
pub async fn audit(tx: &mut Tx, events: &[(ChainedEvent, String)]) -> Result<(), StoreError> {
    for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = row * 7;
                let params: Vec<String> = (1..=7).map(|n| format!("${}", first + n)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events (promotion_id, at, actor, platform, kind, detail, hash) \
             VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (event, hash) in chunk {
            query = query
                .bind(event.promotion_id)
                .bind(event.at)
                .bind(&event.actor)
                .bind(&event.platform)
                .bind(&event.kind)
                .bind(&event.detail)
                .bind(hash);
        }
        query.execute(tx.db()).await?;
    }
    Ok(())
}

/// Rows per audit INSERT: far below SQLite's 32,766 and PostgreSQL's 65,535 parameters.
const AUDIT_ROWS_PER_INSERT: usize = 500;

pub async fn audit_page<'e, E: Executor<'e, Database = Any>>(
    db: E,
    after_id: i64,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<StoredLink>, StoreError> {
    type Row = (
        i64,
        Option<i64>,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, promotion_id, at, actor, platform, kind, detail, hash FROM audit_events \
         WHERE id > $1 AND at >= $2 ORDER BY id LIMIT $3",
    )
    .bind(after_id)
    .bind(since.map(millis).unwrap_or(i64::MIN))
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, promotion_id, at, actor, platform, kind, detail, hash)| StoredLink {
                id,
                event: ChainedEvent {
                    promotion_id,
                    at,
                    actor,
                    platform,
                    kind,
                    detail,
                },
                hash,
            },
        )
        .collect())
}

pub async fn events<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT at, actor, platform, kind, detail FROM audit_events \
         WHERE promotion_id = $1 ORDER BY id",
    )
    .bind(promotion_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(AuditEvent::try_from).collect()
}

/// Owes the promotion its deploy job; `false` when it has one already. One deploy job per
/// promotion is a database fact (`jobs_one_deploy`), so replicas racing here queue one.
pub async fn enqueue_deploy<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    run_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO jobs (kind, promotion_id, run_at, created_at) VALUES ('deploy', $1, $2, $2) \
         ON CONFLICT (promotion_id) WHERE kind = 'deploy' DO NOTHING",
    )
    .bind(promotion_id)
    .bind(millis(run_at))
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The due time of the earliest unclaimed job among `kinds` (the kinds this process works on:
/// a job no worker here claims must not keep its workers awake).
pub async fn next_job_due<'e, E: Executor<'e, Database = Any>>(
    db: E,
    kinds: &[JobKind],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let literals: Vec<String> = kinds.iter().map(|kind| kind.sql_literal()).collect();
    let sql = format!(
        "SELECT MIN(run_at) FROM jobs WHERE lease_owner IS NULL AND kind IN ({})",
        literals.join(", ")
    );
    sqlx::query_scalar::<_, Option<i64>>(&sql)
        .fetch_one(db)
        .await?
        .map(time)
        .transpose()
}

pub async fn delete_jobs<'e, E: Executor<'e, Database = Any>>(
    db: E,
    kind: JobKind,
    promotion_id: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "DELETE FROM jobs WHERE kind = {} AND promotion_id = $1",
        kind.sql_literal()
    );
    sqlx::query(&sql).bind(promotion_id).execute(db).await?;
    Ok(())
}

/// A job claimed with a lease: its promotion (card and deploy jobs) or payload (announcements).
pub struct LeasedRow {
    pub id: i64,
    pub promotion_id: Option<i64>,
    pub payload: String,
    pub attempts: i64,
}

/// How a claim asks for jobs.
pub struct Claim<'a> {
    pub kind: JobKind,
    pub worker: &'a str,
    /// Jobs due by then (due times are the bot's real clock).
    pub now: DateTime<Utc>,
    pub lease: Duration,
    pub limit: u32,
}

/// A claimed job as its holder knows it: the fencing token is `attempt`, the `attempts` value
/// its claim left on the row. Any later claim increments it, so a holder whose lease was taken
/// finds its writes refused even if its own clock says the lease still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub job_id: i64,
    pub worker: String,
    pub attempt: i64,
}

fn lease_millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The one lease claim: due jobs of a kind whose lease is free or ran out become `worker`'s for
/// `lease`, oldest first. Leases are measured on the database's clock (`db_now`, an SQL
/// expression in Unix milliseconds), so replicas whose clocks disagree still agree on who
/// holds a job. `skip_locked` lets replicas pass each other's rows.
pub async fn claim<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    skip_locked: &str,
    claim: Claim<'_>,
) -> Result<Vec<LeasedRow>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET lease_owner = $1, lease_until = {db_now} + $2, attempts = attempts + 1, \
         dirty = 0 \
         WHERE id IN (SELECT id FROM jobs WHERE kind = {kind} AND run_at <= $3 \
             AND (lease_until IS NULL OR lease_until < {db_now}) ORDER BY id LIMIT $4 {skip_locked}) \
         RETURNING id, promotion_id, payload, attempts",
        kind = claim.kind.sql_literal(),
    );
    let rows: Vec<(i64, Option<i64>, String, i64)> = sqlx::query_as(&sql)
        .bind(claim.worker)
        .bind(lease_millis(claim.lease))
        .bind(millis(claim.now))
        .bind(i64::from(claim.limit))
        .fetch_all(db)
        .await?;
    let mut leased: Vec<LeasedRow> = rows
        .into_iter()
        .map(|(id, promotion_id, payload, attempts)| LeasedRow {
            id,
            promotion_id,
            payload,
            attempts,
        })
        .collect();
    leased.sort_by_key(|row| row.id);
    Ok(leased)
}

/// Extends a lease that is still ours and still running; `false` when it was taken or ran out
/// (the holder must stop: someone else may own the job now).
pub async fn renew_lease<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    lease: &JobLease,
    duration: Duration,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE jobs SET lease_until = {db_now} + $1 \
         WHERE id = $2 AND lease_owner = $3 AND attempts = $4 AND lease_until >= {db_now}"
    );
    let renewed = sqlx::query(&sql)
        .bind(lease_millis(duration))
        .bind(lease.job_id)
        .bind(&lease.worker)
        .bind(lease.attempt)
        .execute(db)
        .await?;
    Ok(renewed.rows_affected() == 1)
}

/// The fence every write for a leased job goes through, first in its transaction: succeeds only
/// while the lease is ours and running. The no-op UPDATE takes the row's write lock, so no claim
/// can take the job between this check and the commit.
pub async fn hold_lease<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    lease: &JobLease,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE jobs SET lease_owner = lease_owner \
         WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND lease_until >= {db_now}"
    );
    let held = sqlx::query(&sql)
        .bind(lease.job_id)
        .bind(&lease.worker)
        .bind(lease.attempt)
        .execute(db)
        .await?;
    if held.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost)
    }
}

pub async fn append_deploy_log(
    tx: &mut Tx,
    promotion_id: i64,
    lines: &[String],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for line in lines {
        sqlx::query("INSERT INTO deploy_log (promotion_id, at, line) VALUES ($1, $2, $3)")
            .bind(promotion_id)
            .bind(millis(at))
            .bind(line)
            .execute(tx.db())
            .await?;
    }
    // Keep only the newest lines: the log is for reading a deploy, not for archiving it.
    sqlx::query(
        "DELETE FROM deploy_log WHERE promotion_id = $1 AND id <= \
         (SELECT id FROM deploy_log WHERE promotion_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(promotion_id)
    .bind(DEPLOY_LOG_KEEP)
    .execute(tx.db())
    .await?;
    Ok(())
}

pub async fn deploy_log<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
) -> Result<Vec<String>, StoreError> {
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT line FROM deploy_log WHERE promotion_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(promotion_id)
    .bind(DEPLOY_LOG_KEEP)
    .fetch_all(db)
    .await?;
    lines.reverse();
    Ok(lines)
}

pub async fn status<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: Option<&str>,
) -> Result<Vec<StatusRow>, StoreError> {
    let filter = if service.is_some() {
        "AND p.service = $1"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {PROMOTION_COLUMNS}, CAST(1 AS BIGINT) AS is_current, CAST(0 AS BIGINT) AS approval_count \
         FROM current_deployments c JOIN promotions p ON p.id = c.promotion_id WHERE 1 = 1 {filter} \
         UNION ALL \
         SELECT {PROMOTION_COLUMNS}, CAST(0 AS BIGINT) AS is_current, \
             (SELECT COUNT(*) FROM approvals a WHERE a.promotion_id = p.id) AS approval_count \
         FROM promotions p WHERE p.state IN {active} {filter}",
        active = active_states_sql()
    );
    let mut query = sqlx::query(&sql);
    if let Some(service) = service {
        query = query.bind(service);
    }
    let rows = query.fetch_all(db).await?;
    rows.iter()
        .map(|row| {
            use sqlx::{FromRow, Row};
            Ok(StatusRow {
                promotion: PromotionRow::from_row(row)?.try_into()?,
                current: row.try_get::<i64, _>("is_current")? == 1,
                approval_count: row.try_get("approval_count")?,
            })
        })
        .collect()
}

pub async fn history<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    environment: Option<&str>,
    limit: u32,
) -> Result<Vec<Promotion>, StoreError> {
    let sql = format!(
        "SELECT {PROMOTION_COLUMNS} FROM promotions p WHERE p.service = $1 \
         AND ($2 = '' OR p.environment = $2) ORDER BY p.id DESC LIMIT $3"
    );
    let rows: Vec<PromotionRow> = sqlx::query_as(&sql)
        .bind(service)
        .bind(environment.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    decode_promotions(rows)
}

pub async fn active_counts<'e, E: Executor<'e, Database = Any>>(
    db: E,
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    let sql = format!(
        "SELECT service, environment, state, COUNT(*) FROM promotions \
         WHERE state IN {} GROUP BY service, environment, state",
        active_states_sql()
    );
    Ok(sqlx::query_as(&sql).fetch_all(db).await?)
}

pub async fn expired_approvals<'e, E: Executor<'e, Database = Any>>(
    db: E,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM promotions WHERE state = 'awaiting_approval' \
         AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id",
    )
    .bind(millis(now))
    .fetch_all(db)
    .await?)
}

pub async fn orphaned_deploys<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    own_worker: &str,
    all: bool,
) -> Result<Vec<i64>, StoreError> {
    let sql = format!(
        "SELECT p.id FROM promotions p WHERE p.state IN ('deploying', 'verifying') AND ($1 = 1 \
         OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.promotion_id = p.id AND j.kind = 'deploy' \
             AND (j.lease_owner = $2 OR j.lease_until >= {db_now}))) \
         AND NOT EXISTS (SELECT 1 FROM rollouts r JOIN jobs j ON j.promotion_id = r.promotion_id \
             AND j.kind = 'deploy' WHERE r.promotion_id = p.id AND (r.calling = 0 OR r.call_remote = 1)) ORDER BY p.id"
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(i64::from(all))
        .bind(own_worker)
        .fetch_all(db)
        .await?)
}

pub async fn record_inbound<'e, E: Executor<'e, Database = Any>>(
    db: E,
    source: &str,
    event_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO inbound_events (source, event_id, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (source, event_id) DO NOTHING",
    )
    .bind(source)
    .bind(event_id)
    .bind(millis(at))
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn seen_inbound<'e, E: Executor<'e, Database = Any>>(
    db: E,
    source: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbound_events WHERE source = $1 AND event_id = $2",
    )
    .bind(source)
    .bind(event_id)
    .fetch_one(db)
    .await?;
    Ok(found > 0)
}

// ---- chat cards ----

pub async fn add_chat_card<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    platform: ChatPlatform,
    channel: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chat_cards (promotion_id, platform, channel) VALUES ($1, $2, $3) \
         ON CONFLICT (promotion_id, platform) DO NOTHING",
    )
    .bind(promotion_id)
    .bind(platform.as_str())
    .bind(channel)
    .execute(db)
    .await?;
    Ok(())
}

/// Owes every card of the promotion an update: one job per card, marked dirty when one is
/// already pending or running, so the newest state is always sent once more.
pub async fn touch_cards<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (kind, promotion_id, run_at, created_at) \
         SELECT 'card:' || platform, promotion_id, $2, $2 FROM chat_cards WHERE promotion_id = $1 \
         ON CONFLICT (kind, promotion_id) WHERE kind LIKE 'card:%' DO UPDATE SET dirty = 1",
    )
    .bind(promotion_id)
    .bind(millis(now))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn chat_card<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    platform: ChatPlatform,
) -> Result<Option<ChatCardRecord>, StoreError> {
    let row: Option<(String, Option<String>, i64, Option<i64>)> = sqlx::query_as(
        "SELECT channel, message_id, thread_log_id, sent_at FROM chat_cards \
         WHERE promotion_id = $1 AND platform = $2",
    )
    .bind(promotion_id)
    .bind(platform.as_str())
    .fetch_optional(db)
    .await?;
    row.map(|(channel, message_id, thread_log_id, sent_at)| {
        Ok(ChatCardRecord {
            channel,
            message_id,
            thread_log_id,
            sent_at: sent_at.map(super::records::time).transpose()?,
        })
    })
    .transpose()
}

pub async fn card_sent<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    platform: ChatPlatform,
    message_id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chat_cards SET message_id = $1, sent_at = $2 WHERE promotion_id = $3 AND platform = $4",
    )
    .bind(message_id)
    .bind(millis(at))
    .bind(promotion_id)
    .bind(platform.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn thread_posted<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    platform: ChatPlatform,
    log_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chat_cards SET thread_log_id = $1 WHERE promotion_id = $2 AND platform = $3",
    )
    .bind(log_id)
    .bind(promotion_id)
    .bind(platform.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// The promotion whose card is this message (for reactions).
pub async fn card_promotion<'e, E: Executor<'e, Database = Any>>(
    db: E,
    platform: ChatPlatform,
    channel: &str,
    message_id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT promotion_id FROM chat_cards WHERE platform = $1 AND channel = $2 AND message_id = $3",
    )
    .bind(platform.as_str())
    .bind(channel)
    .bind(message_id)
    .fetch_optional(db)
    .await?)
}

/// Deploy output after `after_id`, oldest first, with ids.
pub async fn deploy_log_since<'e, E: Executor<'e, Database = Any>>(
    db: E,
    promotion_id: i64,
    after_id: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, line FROM deploy_log WHERE promotion_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(promotion_id)
    .bind(after_id)
    .fetch_all(db)
    .await?)
}

/// Ends a card job: gone when nothing changed meanwhile, else due again at `next`.
pub async fn finish_card_job(
    tx: &mut Tx,
    job_id: i64,
    next: DateTime<Utc>,
) -> Result<(), StoreError> {
    let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1 AND dirty = 0")
        .bind(job_id)
        .execute(tx.db())
        .await?;
    if deleted.rows_affected() == 0 {
        retry_job(tx.db(), job_id, next, None).await?;
    }
    Ok(())
}

/// Gives a claimed job back, due at `run_at`.
pub async fn retry_job<'e, E: Executor<'e, Database = Any>>(
    db: E,
    job_id: i64,
    run_at: DateTime<Utc>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, run_at = $1, \
         last_error = COALESCE($2, last_error) WHERE id = $3",
    )
    .bind(millis(run_at))
    .bind(error)
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(())
}

// ---- deploy process groups ----

/// A deploy script's process group as recorded while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub promotion_id: i64,
    /// hostname/boot id of the machine it runs on.
    pub host: String,
    pub pgid: i64,
    /// The leader's start time in clock ticks since boot.
    pub started: i64,
}

const PROCESS_COLUMNS: &str = "d.promotion_id, d.host, d.pgid, d.started";

fn process_records(rows: Vec<(i64, String, i64, i64)>) -> Vec<ProcessRecord> {
    rows.into_iter()
        .map(|(promotion_id, host, pgid, started)| ProcessRecord {
            promotion_id,
            host,
            pgid,
            started,
        })
        .collect()
}

pub async fn record_process<'e, E: Executor<'e, Database = Any>>(
    db: E,
    record: &ProcessRecord,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deploy_processes (promotion_id, host, pgid, started, recorded_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (promotion_id) DO UPDATE SET host = excluded.host, \
         pgid = excluded.pgid, started = excluded.started, recorded_at = excluded.recorded_at",
    )
    .bind(record.promotion_id)
    .bind(&record.host)
    .bind(record.pgid)
    .bind(record.started)
    .bind(millis(at))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn forget_process<'e, E: Executor<'e, Database = Any>>(
    db: E,
    record: &ProcessRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM deploy_processes WHERE promotion_id = $1 AND host = $2 AND pgid = $3 \
         AND started = $4",
    )
    .bind(record.promotion_id)
    .bind(&record.host)
    .bind(record.pgid)
    .bind(record.started)
    .execute(db)
    .await?;
    Ok(())
}

/// Groups recorded on `host` whose deploy nobody runs any more: no deploy job of theirs is
/// leased (live on the database's clock) or held by `own_worker`.
pub async fn stale_processes<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    host: &str,
    own_worker: &str,
) -> Result<Vec<ProcessRecord>, StoreError> {
    let sql = format!(
        "SELECT {PROCESS_COLUMNS} FROM deploy_processes d WHERE d.host = $1 AND NOT EXISTS \
         (SELECT 1 FROM jobs j WHERE j.promotion_id = d.promotion_id AND j.kind = 'deploy' \
             AND (j.lease_owner = $2 OR j.lease_until >= {db_now})) ORDER BY d.promotion_id"
    );
    let rows = sqlx::query_as(&sql)
        .bind(host)
        .bind(own_worker)
        .fetch_all(db)
        .await?;
    Ok(process_records(rows))
}

/// Groups recorded for other promotions of the environment: older deploys that may still run.
/// Driven from the few recorded groups, not from the environment's whole history.
pub async fn environment_processes<'e, E: Executor<'e, Database = Any>>(
    db: E,
    service: &str,
    environment: &str,
    except: i64,
) -> Result<Vec<ProcessRecord>, StoreError> {
    let sql = format!(
        "SELECT {PROCESS_COLUMNS} FROM deploy_processes d \
         WHERE d.promotion_id <> $3 AND EXISTS (SELECT 1 FROM promotions p \
             WHERE p.id = d.promotion_id AND p.service = $1 AND p.environment = $2) \
         ORDER BY d.promotion_id"
    );
    let rows = sqlx::query_as(&sql)
        .bind(service)
        .bind(environment)
        .bind(except)
        .fetch_all(db)
        .await?;
    Ok(process_records(rows))
}

/// Another promotion of the environment whose deploy job is still leased (its worker runs it).
/// Driven from the deploy jobs (as many as run now), not from the environment's whole history.
pub async fn other_leased_deploy<'e, E: Executor<'e, Database = Any>>(
    db: E,
    db_now: &str,
    service: &str,
    environment: &str,
    except: i64,
) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "SELECT j.promotion_id FROM jobs j \
         WHERE j.kind = 'deploy' AND j.promotion_id <> $3 AND j.lease_until >= {db_now} \
             AND EXISTS (SELECT 1 FROM promotions p \
                 WHERE p.id = j.promotion_id AND p.service = $1 AND p.environment = $2) \
         ORDER BY j.promotion_id LIMIT 1"
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(service)
        .bind(environment)
        .bind(except)
        .fetch_optional(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partial indexes over active promotions (`promotions_one_active`, `promotions_active`)
    /// list exactly [`PromotionState::ACTIVE`], on both dialects.
    #[test]
    fn the_migrations_index_exactly_the_active_states() {
        let migrations = [
            (
                "sqlite",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                "postgres",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
        ];
        let predicate = format!("WHERE state IN {}", active_states_sql());
        for (dialect, sql) in migrations {
            assert_eq!(sql.matches("WHERE state IN").count(), 2, "{dialect}");
            assert_eq!(sql.matches(&predicate).count(), 2, "{dialect}: {predicate}");
        }
    }

    #[test]
    fn the_active_list_names_every_active_state_once() {
        let list = active_states_sql();
        for state in PromotionState::ALL {
            let quoted = format!("'{}'", state.as_str());
            assert_eq!(list.contains(&quoted), state.is_active(), "{state}");
        }
    }
}
