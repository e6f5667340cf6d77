//! The store: every SQL statement of shipmate, behind one facade that speaks domain types.
//!
//! One set of runtime queries serves SQLite (embedded default) and PostgreSQL (replicas) through
//! sqlx's `Any` driver; the few dialect differences are in [`Dialect`]. Writes go through [`Tx`]:
//! one transaction per state change, carrying the audit event and the outbox jobs it owes.

mod cluster;
mod db;
mod delivery;
mod dora;
mod governance;
mod pages;
mod queries;
pub mod records;
mod rollouts;
mod schedule;
mod sqlite_writer;
mod status_cache;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::Notify;

use crate::domain::approval::Approval;
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::audit_chain::{ChainedEvent, StoredLink};
use crate::domain::dora::{DeliveryRecord, Pair};
use crate::domain::identity::Identity;
use crate::domain::manifest::Manifest;
use crate::domain::platform::ChatPlatform;
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::release::Release;
use crate::domain::version::Version;

pub use cluster::{
    lock_for_serving, GatewayLock, JobWakeups, ReplicaBeat, ReplicaRecord, ServeLock, Wakeup,
};
use db::Db;
pub use delivery::DeliveryMark;
pub use governance::{ThreadNote, Tick};
pub use pages::{AuditFilter, AuditRecord, TallyRecord};
pub use queries::{
    active_states_sql, ChatCardRecord, ClaimedJob, JobKind, JobLease, NewPromotion, NewRelease,
    ProcessRecord, StatusRow,
};
pub use rollouts::RolloutRecord;
pub use schedule::{ClaimedAnnouncement, FreezeRecord};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The unique index refused a second active promotion for the environment.
    #[error("another promotion is already active for this environment")]
    ActiveExists,
    /// A row changed under us (another replica or worker got there first).
    #[error("the promotion changed while this request was being handled; try again")]
    Concurrent,
    #[error("inconsistent data in the database: {0}")]
    Corrupt(String),
    /// A write for a leased job whose lease is no longer ours (taken by another claim, or run
    /// out): the write was refused, and the holder must stop working on the job.
    #[error("the job's lease was lost (another worker may hold it now); nothing was written")]
    LeaseLost,
    /// Another process serves this SQLite file (or its lock file could not be used).
    #[error("{0}")]
    Locked(String),
}

/// The few places where SQLite and PostgreSQL need different SQL; nobody outside the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn migrator(self) -> &'static Migrator {
        match self {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The database's clock in Unix milliseconds, as SQL: leases are measured on it, the one
    /// clock every replica shares. (Times are stored as integer milliseconds, not text.)
    fn now_millis(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The aggregate that joins a group's texts with a separator: `f(text, ',')`.
    fn string_agg(self) -> &'static str {
        match self {
            Dialect::Sqlite => "group_concat",
            Dialect::Postgres => "string_agg",
        }
    }

    /// Row locking for job claims: replicas skip each other's rows instead of waiting.
    fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }
}

/// The database facade. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    write: Writer,
    read: AnyPool,
    dialect: Dialect,
    /// Present for SQLite only: with replicas another process may write at any time.
    status_cache: Option<Arc<status_cache::StatusCache>>,
    /// The platform delivery the transactions of this handle record at commit (see `delivery`).
    delivery: Option<DeliveryMark>,
    /// PostgreSQL only: for the dedicated connections of the gateway lock and the listener.
    postgres_url: Option<cluster::PostgresUrl>,
    /// Rung after every write that leaves a job claimable, so this process's workers start it
    /// at once (other replicas hear of it through `LISTEN`, see [`Store::job_wakeups`]).
    jobs_ready: Arc<Notify>,
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`); a SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Store {
                write: Writer::Pool(pool.clone()),
                read: pool,
                dialect: Dialect::Postgres,
                status_cache: None,
                delivery: None,
                postgres_url: Some(cluster::PostgresUrl(url.to_string())),
                jobs_ready: Arc::default(),
            })
        }
    }

    async fn connect_sqlite(url: &str) -> Result<Store, StoreError> {
        let url = if url.contains("mode=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        let options = || {
            AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(30))
                // A local file needs no liveness ping; it would cost a thread round trip per query.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            // WAL + NORMAL survives process crashes; only power loss can drop the
                            // last commits, and the file stays consistent.
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            conn.execute(pragma).await?;
                        }
                        Ok(())
                    })
                })
        };
        // First: it switches the file to WAL before the readers open it.
        let file = SqliteConnectOptions::from_str(&url)?
            .get_filename()
            .to_path_buf();
        let write = sqlite_writer::SqliteWriter::open(&file).await?;
        let read = options().max_connections(4).connect(&url).await?;
        Ok(Store {
            write: Writer::Sqlite(write),
            read,
            dialect: Dialect::Sqlite,
            status_cache: Some(Arc::default()),
            delivery: None,
            postgres_url: None,
            jobs_ready: Arc::default(),
        })
    }

    /// At start-up: an embedded (SQLite) database has one process, so every lease left in it is a
    /// dead process's and is forgotten; returns whether that was so. A shared (PostgreSQL)
    /// database keeps its leases: other replicas may hold them.
    pub async fn forget_leases_if_embedded(&self) -> Result<bool, StoreError> {
        if self.dialect != Dialect::Sqlite {
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_until = NULL")
            .execute(self.writer().await?.db())
            .await?;
        Ok(true)
    }

    /// Applies the migrations this binary carries.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = self.dialect.migrator();
        match &self.write {
            Writer::Pool(pool) => migrator.run(pool).await?,
            Writer::Sqlite(writer) => {
                // On a pool connection, while no write of this process can come between.
                let _writing = writer.lock().await;
                migrator.run(&self.read).await?
            }
        }
        Ok(())
    }

    /// Ready: the database answers and every migration this binary knows has been applied.
    pub async fn is_ready(&self) -> bool {
        let latest = self
            .dialect
            .migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        let applied: Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.read)
                .await;
        matches!(applied, Ok(Some(version)) if version >= latest)
    }

    pub async fn close(&self) {
        match &self.write {
            Writer::Pool(pool) => pool.close().await,
            Writer::Sqlite(writer) => writer.close().await,
        }
        self.read.close().await;
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let conn = match &self.write {
            Writer::Pool(pool) => TxConnection::Postgres(pool.begin().await?),
            Writer::Sqlite(writer) => {
                let mut held = writer.lock().await;
                held.begin()?;
                TxConnection::Sqlite(held)
            }
        };
        Ok(Tx {
            conn,
            dialect: self.dialect,
            status_cache: self.status_cache.clone(),
            delivery: self.delivery.clone(),
            jobs_ready: self.jobs_ready.clone(),
            owes_wakeup: false,
            audit: Vec::new(),
        })
    }

    /// The write connection, for one statement outside a transaction.
    async fn writer(&self) -> Result<WriteGuard, StoreError> {
        Ok(match &self.write {
            Writer::Pool(pool) => WriteGuard::Pool(pool.clone()),
            Writer::Sqlite(writer) => WriteGuard::Sqlite(writer.lock().await),
        })
    }

    /// Rung whenever a write of this process leaves a job claimable.
    pub fn jobs_ready(&self) -> Arc<Notify> {
        self.jobs_ready.clone()
    }

    fn wake_job_workers(&self) {
        self.jobs_ready.notify_one();
    }

    /// When the earliest unclaimed job of `kinds` is due (due times are the bot's real clock):
    /// the workers sleep until then unless something wakes them first.
    pub async fn next_job_due(
        &self,
        kinds: &[JobKind],
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        queries::next_job_due(&self.read, kinds).await
    }

    /// This store, with every transaction it begins recording `mark` when it commits (the first
    /// one that commits does): a delivery is seen exactly when its effect is written.
    pub fn recording(&self, mark: DeliveryMark) -> Store {
        Store {
            delivery: Some(mark),
            ..self.clone()
        }
    }

    /// Records a delivery whose request wrote nothing (a refusal, a read), so a repeat of it is
    /// still answered as a repeat.
    pub async fn record_if_pending(&self, mark: &DeliveryMark) -> Result<(), StoreError> {
        if let Some((source, id, at)) = mark.take_pending() {
            match queries::record_inbound(self.writer().await?.db(), &source, &id, at).await {
                Ok(first) => mark.written(first),
                Err(error) => {
                    mark.restore(source, id, at);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// How many deliveries of `source` whose id starts with `prefix` were recorded.
    pub async fn count_inbound_prefixed(
        &self,
        source: &str,
        prefix: &str,
    ) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbound_events \
             WHERE source = $1 AND substr(event_id, 1, length($2)) = $2",
        )
        .bind(source)
        .bind(prefix)
        .fetch_one(&self.read)
        .await?;
        Ok(count)
    }

    /// Whether a delivery was recorded before.
    pub async fn seen_inbound(&self, source: &str, id: &str) -> Result<bool, StoreError> {
        queries::seen_inbound(&self.read, source, id).await
    }

    /// Up to `limit` audit events after event `after_id`, in the order they were written (the
    /// chain's order), with their hashes; only those at or after `since` when given.
    /// The newest audit event's id (0: none). Every change of state writes one, so it tells
    /// whether anything changed since it was last read.
    pub async fn audit_head(&self) -> Result<i64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")
            .fetch_one(&self.read)
            .await?;
        Ok(head)
    }

    pub async fn audit_page(
        &self,
        after_id: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<StoredLink>, StoreError> {
        queries::audit_page(&self.read, after_id, since, limit).await
    }

    // ---- reads ----

    pub async fn promotion(&self, id: i64) -> Result<Option<Promotion>, StoreError> {
        queries::promotion(&self.read, id).await
    }

    /// The active promotion of an environment, read outside any transaction (PostgreSQL refuses
    /// further statements in a transaction that hit a unique violation).
    pub async fn active_promotion(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<Promotion>, StoreError> {
        queries::active_promotion(&self.read, service, environment).await
    }

    pub async fn approvals(&self, promotion_id: i64) -> Result<Vec<Approval>, StoreError> {
        queries::approvals(&self.read, promotion_id).await
    }

    pub async fn release(
        &self,
        service: &str,
        version: &Version,
    ) -> Result<Option<Release>, StoreError> {
        queries::release(&self.read, service, version).await
    }

    /// Release versions of a service in creation order.
    pub async fn release_versions(&self, service: &str) -> Result<Vec<Version>, StoreError> {
        queries::release_versions(&self.read, service).await
    }

    pub async fn events(&self, promotion_id: i64) -> Result<Vec<AuditEvent>, StoreError> {
        queries::events(&self.read, promotion_id).await
    }

    /// The last 200 deploy output lines of a promotion, oldest first.
    pub async fn deploy_log(&self, promotion_id: i64) -> Result<Vec<String>, StoreError> {
        queries::deploy_log(&self.read, promotion_id).await
    }

    /// What runs now and what is active, for every service or one.
    pub async fn status(&self, service: Option<&str>) -> Result<Arc<Vec<StatusRow>>, StoreError> {
        let Some(cache) = &self.status_cache else {
            return Ok(Arc::new(queries::status(&self.read, service).await?));
        };
        if let Some(rows) = cache.get(service) {
            return Ok(rows);
        }
        let generation = cache.generation();
        let rows = Arc::new(queries::status(&self.read, service).await?);
        cache.put(service, generation, rows.clone());
        Ok(rows)
    }

    pub async fn history(
        &self,
        service: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Promotion>, StoreError> {
        queries::history(&self.read, service, environment, limit).await
    }

    /// The promotions that ended (succeeded, failed, rolled back) from `from` to `to`, of one
    /// (service, environment) or of all: what the delivery metrics are computed from.
    pub async fn ended_promotions(
        &self,
        only: Option<(&str, &str)>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(Pair, Vec<DeliveryRecord>)>, StoreError> {
        dora::ended_promotions(&self.read, self.dialect.string_agg(), only, from, to).await
    }

    /// (service, environment, state, count) of active promotions, for the metrics gauge.
    pub async fn active_counts(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        queries::active_counts(&self.read).await
    }

    /// Awaiting-approval promotions whose approval deadline has passed.
    pub async fn expired_approvals(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        queries::expired_approvals(&self.read, now).await
    }

    /// Promotions left deploying or verifying by a process that is gone. With `all`, every one
    /// (a single-process SQLite bot at start-up); otherwise those whose deploy job lease, held by
    /// another worker, has run out. A rollout waiting in a pause or a verification (no backend
    /// call running) whose job is still there is no orphan: whoever claims the job resumes it.
    pub async fn orphaned_deploys(
        &self,
        own_worker: &str,
        all: bool,
    ) -> Result<Vec<i64>, StoreError> {
        queries::orphaned_deploys(&self.read, self.dialect.now_millis(), own_worker, all).await
    }

    // ---- outbox, deploy log, inbound dedupe ----

    /// Claims due deploy or card jobs for `worker` (announcements: [`Store::claim_announcements`]).
    pub async fn claim_jobs(
        &self,
        kind: JobKind,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows = self.claim(kind, worker, now, lease, limit).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                row.promotion_id.map(|promotion_id| ClaimedJob {
                    id: row.id,
                    promotion_id,
                    attempts: row.attempts,
                })
            })
            .collect())
    }

    /// The one lease claim, for every kind of job.
    async fn claim(
        &self,
        kind: JobKind,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<queries::LeasedRow>, StoreError> {
        let claim = queries::Claim {
            kind,
            worker,
            now,
            lease,
            limit,
        };
        let dialect = self.dialect;
        queries::claim(
            self.writer().await?.db(),
            dialect.now_millis(),
            dialect.skip_locked(),
            claim,
        )
        .await
    }

    /// Gives a job back before its lease runs out (a rollout stopped in a gate at shutdown), so
    /// its next holder need not wait for the lease to run out.
    pub async fn release_lease(&self, lease: &JobLease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND attempts = $3",
        )
        .bind(lease.job_id)
        .bind(&lease.worker)
        .bind(lease.attempt)
        .execute(self.writer().await?.db())
        .await?;
        self.wake_job_workers();
        Ok(())
    }

    /// Extends a lease for `duration` from the database's now; `false` when it was taken or had
    /// run out (stop working on the job).
    pub async fn renew_lease(
        &self,
        lease: &JobLease,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        queries::renew_lease(
            self.writer().await?.db(),
            self.dialect.now_millis(),
            lease,
            duration,
        )
        .await
    }

    /// Appends a running deploy's output, if `lease` still holds its job
    /// ([`StoreError::LeaseLost`] otherwise, and nothing is written).
    pub async fn append_deploy_log(
        &self,
        lease: &JobLease,
        promotion_id: i64,
        lines: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.hold_lease(lease).await?;
        queries::append_deploy_log(&mut tx, promotion_id, lines, at).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- deploy process groups ----

    /// Records a running script's process group, if `lease` still holds its job.
    pub async fn record_process(
        &self,
        lease: &JobLease,
        record: &ProcessRecord,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.hold_lease(lease).await?;
        queries::record_process(tx.db(), record, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a group once it is known dead.
    pub async fn forget_process(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        queries::forget_process(self.writer().await?.db(), record).await
    }

    /// Groups recorded on `host` whose deploy nobody runs any more (see the query).
    pub async fn stale_processes(
        &self,
        host: &str,
        own_worker: &str,
    ) -> Result<Vec<ProcessRecord>, StoreError> {
        let now = self.dialect.now_millis();
        queries::stale_processes(self.writer().await?.db(), now, host, own_worker).await
    }

    // ---- chat cards ----

    pub async fn touch_cards(
        &self,
        promotion_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        queries::touch_cards(self.writer().await?.db(), promotion_id, now).await?;
        self.wake_job_workers();
        Ok(())
    }

    pub async fn chat_card(
        &self,
        promotion_id: i64,
        platform: ChatPlatform,
    ) -> Result<Option<ChatCardRecord>, StoreError> {
        queries::chat_card(&self.read, promotion_id, platform).await
    }

    pub async fn card_sent(
        &self,
        promotion_id: i64,
        platform: ChatPlatform,
        message_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        queries::card_sent(
            self.writer().await?.db(),
            promotion_id,
            platform,
            message_id,
            at,
        )
        .await
    }

    pub async fn thread_posted(
        &self,
        promotion_id: i64,
        platform: ChatPlatform,
        log_id: i64,
    ) -> Result<(), StoreError> {
        queries::thread_posted(self.writer().await?.db(), promotion_id, platform, log_id).await
    }

    pub async fn card_promotion(
        &self,
        platform: ChatPlatform,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        queries::card_promotion(&self.read, platform, channel, message_id).await
    }

    pub async fn deploy_log_since(
        &self,
        promotion_id: i64,
        after_id: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        queries::deploy_log_since(&self.read, promotion_id, after_id).await
    }

    pub async fn finish_card_job(
        &self,
        job_id: i64,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        queries::finish_card_job(&mut tx, job_id, next).await?;
        tx.commit().await?;
        self.wake_job_workers();
        Ok(())
    }

    pub async fn retry_job(
        &self,
        job_id: i64,
        run_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        queries::retry_job(self.writer().await?.db(), job_id, run_at, Some(error)).await?;
        // The workers may be sleeping until a later due time.
        self.wake_job_workers();
        Ok(())
    }

    /// Records an inbound platform event; `false` when it was seen before (a retry).
    pub async fn record_inbound(
        &self,
        source: &str,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        queries::record_inbound(self.writer().await?.db(), source, event_id, at).await
    }
}

/// Where writes go: PostgreSQL's pool, or SQLite's one write connection (`sqlite_writer`).
#[derive(Debug, Clone)]
enum Writer {
    Pool(AnyPool),
    Sqlite(sqlite_writer::SqliteWriter),
}

/// The write connection for one statement outside a transaction.
enum WriteGuard {
    Pool(AnyPool),
    Sqlite(sqlite_writer::Held),
}

impl WriteGuard {
    fn db(&mut self) -> Db<'_> {
        match self {
            WriteGuard::Pool(pool) => Db::Pool(pool),
            WriteGuard::Sqlite(held) => Db::Sqlite(held),
        }
    }
}

enum TxConnection {
    Postgres(Transaction<'static, Any>),
    Sqlite(sqlite_writer::Held),
}

/// One write transaction. Dropped without `commit`, it rolls back.
pub struct Tx {
    conn: TxConnection,
    dialect: Dialect,
    status_cache: Option<Arc<status_cache::StatusCache>>,
    delivery: Option<DeliveryMark>,
    jobs_ready: Arc<Notify>,
    /// A job was written: the workers are woken once this commits.
    owes_wakeup: bool,
    /// Audit events of this transaction, chained and written at commit (see [`Tx::commit`]).
    audit: Vec<ChainedEvent>,
}

impl Tx {
    /// Commits; a request's delivery mark is written first, and a delivery seen before rolls the
    /// whole transaction back ([`StoreError::Concurrent`], with the mark saying so).
    ///
    /// The transaction's audit events are written last, each hashed onto the chain (SPEC §10):
    /// the chain's head row is locked for the rest of the transaction, so concurrent writers on
    /// PostgreSQL append one after the other and keep one chain, and no transaction waits for
    /// any other lock while it holds the head (it is always the last lock taken).
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.append_audit().await?;
        let mark = self.delivery.take();
        let pending = mark.as_ref().and_then(DeliveryMark::take_pending);
        if let (Some(mark), Some((source, id, at))) = (&mark, pending) {
            let first = match queries::record_inbound(self.db(), &source, &id, at).await {
                Ok(first) => first,
                Err(error) => {
                    mark.restore(source, id, at);
                    return Err(error);
                }
            };
            if !first {
                mark.written(false);
                return Err(StoreError::Concurrent);
            }
            if let Err(error) = self.finish().await {
                mark.restore(source, id, at);
                return Err(error);
            }
            Ok(())
        } else {
            self.finish().await
        }
    }

    /// Commits the connection's transaction, then tells the rest of the process.
    async fn finish(self) -> Result<(), StoreError> {
        match self.conn {
            TxConnection::Postgres(tx) => tx.commit().await?,
            TxConnection::Sqlite(mut held) => held.commit()?,
        }
        if let Some(cache) = &self.status_cache {
            cache.invalidate();
        }
        if self.owes_wakeup {
            self.jobs_ready.notify_one();
        }
        Ok(())
    }

    /// Where this transaction's statements run.
    fn db(&mut self) -> Db<'_> {
        match &mut self.conn {
            TxConnection::Postgres(tx) => Db::Connection(tx),
            TxConnection::Sqlite(held) => Db::Sqlite(held),
        }
    }

    async fn append_audit(&mut self) -> Result<(), StoreError> {
        if self.audit.is_empty() {
            return Ok(());
        }
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE",
        };
        let mut previous: String = sqlx::query_scalar(&format!(
            "SELECT last_hash FROM audit_chain WHERE id = 1 {lock}"
        ))
        .fetch_one(self.db())
        .await?;
        let mut chained = Vec::with_capacity(self.audit.len());
        for event in std::mem::take(&mut self.audit) {
            let hash = event.hash_after(&previous);
            previous.clone_from(&hash);
            chained.push((event, hash));
        }
        queries::audit(self, &chained).await?;
        sqlx::query("UPDATE audit_chain SET last_hash = $1 WHERE id = 1")
            .bind(previous)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn promotion(&mut self, id: i64) -> Result<Option<Promotion>, StoreError> {
        queries::promotion(self.db(), id).await
    }

    /// The fence for writes about a leased job: call it first; [`StoreError::LeaseLost`] when
    /// the lease was taken or ran out (drop the transaction). Until commit no claim can take the
    /// job from us.
    pub async fn hold_lease(&mut self, lease: &JobLease) -> Result<(), StoreError> {
        let now = self.dialect.now_millis();
        queries::hold_lease(self.db(), now, lease).await
    }

    /// Reads a promotion and holds its row until commit, so concurrent votes are counted one
    /// after the other (SQLite's single writer serialises them anyway).
    pub async fn lock_promotion(&mut self, id: i64) -> Result<Option<Promotion>, StoreError> {
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE",
        };
        queries::promotion_locked(self.db(), id, lock).await
    }

    pub async fn active_promotion(
        &mut self,
        service: &str,
        environment: &str,
    ) -> Result<Option<Promotion>, StoreError> {
        queries::active_promotion(self.db(), service, environment).await
    }

    /// The promotion whose version runs now in the environment.
    pub async fn current(
        &mut self,
        service: &str,
        environment: &str,
    ) -> Result<Option<Promotion>, StoreError> {
        queries::current(self.db(), service, environment).await
    }

    /// Environments where this version stands succeeded (not rolled back).
    pub async fn succeeded_environments(
        &mut self,
        service: &str,
        version: &Version,
    ) -> Result<Vec<String>, StoreError> {
        queries::succeeded_environments(self.db(), service, version).await
    }

    /// Versions that stand succeeded in an environment, most recent first.
    pub async fn succeeded_versions(
        &mut self,
        service: &str,
        environment: &str,
    ) -> Result<Vec<Version>, StoreError> {
        queries::succeeded_versions(self.db(), service, environment).await
    }

    /// Release versions of a service in creation order.
    pub async fn release_versions(&mut self, service: &str) -> Result<Vec<Version>, StoreError> {
        queries::release_versions(self.db(), service).await
    }

    pub async fn release(
        &mut self,
        service: &str,
        version: &Version,
    ) -> Result<Option<Release>, StoreError> {
        queries::release(self.db(), service, version).await
    }

    /// Inserts a release; `None` when it exists already.
    pub async fn insert_release(
        &mut self,
        release: NewRelease<'_>,
    ) -> Result<Option<Release>, StoreError> {
        queries::insert_release(self.db(), release).await
    }

    pub async fn set_manifest(
        &mut self,
        release_id: i64,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        queries::set_manifest(self.db(), release_id, manifest).await
    }

    /// The digest of the newest succeeded promotion of a version in an environment: `Some(None)`
    /// when it succeeded without one, `None` when it never succeeded there.
    pub async fn succeeded_digest(
        &mut self,
        service: &str,
        version: &Version,
        environment: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        queries::succeeded_digest(self.db(), service, version, environment).await
    }

    /// The digest a promotion deploys.
    pub async fn promotion_digest(
        &mut self,
        promotion_id: i64,
    ) -> Result<Option<String>, StoreError> {
        queries::promotion_digest(self.db(), promotion_id).await
    }

    pub async fn set_promotion_digest(
        &mut self,
        promotion_id: i64,
        digest: Option<&str>,
    ) -> Result<(), StoreError> {
        queries::set_promotion_digest(self.db(), promotion_id, digest).await
    }

    /// Active promotions of a release awaiting approval.
    pub async fn awaiting_of_release(
        &mut self,
        service: &str,
        version: &Version,
    ) -> Result<Vec<i64>, StoreError> {
        queries::awaiting_of_release(self.db(), service, version).await
    }

    /// Removes every approval of a promotion; returns how many there were.
    pub async fn clear_approvals(&mut self, promotion_id: i64) -> Result<u64, StoreError> {
        queries::clear_approvals(self.db(), promotion_id).await
    }

    pub async fn insert_promotion(
        &mut self,
        promotion: NewPromotion<'_>,
    ) -> Result<Promotion, StoreError> {
        queries::insert_promotion(self.db(), promotion).await
    }

    /// Writes `updated` if the stored state is still `expected` (compare-and-set).
    pub async fn update_promotion(
        &mut self,
        updated: &Promotion,
        expected: PromotionState,
    ) -> Result<(), StoreError> {
        let result: AnyQueryResult =
            queries::update_promotion(self.db(), updated, expected).await?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Concurrent)
        }
    }

    pub async fn approvals(&mut self, promotion_id: i64) -> Result<Vec<Approval>, StoreError> {
        queries::approvals(self.db(), promotion_id).await
    }

    pub async fn add_approval(
        &mut self,
        promotion_id: i64,
        voter: &Identity,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        queries::add_approval(self.db(), promotion_id, voter, at).await
    }

    pub async fn remove_approval(
        &mut self,
        promotion_id: i64,
        voter: &Identity,
    ) -> Result<(), StoreError> {
        queries::remove_approval(self.db(), promotion_id, voter).await
    }

    pub async fn audit(
        &mut self,
        promotion_id: Option<i64>,
        actor: &Identity,
        kind: AuditKind,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.audit.push(ChainedEvent {
            promotion_id,
            at: records::millis(at),
            actor: actor.as_str().to_string(),
            platform: actor.platform().to_string(),
            kind: kind.as_str().to_string(),
            detail: detail.to_string(),
        });
        Ok(())
    }

    /// Owes the promotion its deploy job; `false` when it has one already.
    pub async fn enqueue_deploy(
        &mut self,
        promotion_id: i64,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.owes_wakeup = true;
        queries::enqueue_deploy(self.db(), promotion_id, run_at).await
    }

    pub async fn delete_jobs(
        &mut self,
        kind: JobKind,
        promotion_id: i64,
    ) -> Result<(), StoreError> {
        queries::delete_jobs(self.db(), kind, promotion_id).await
    }

    pub async fn add_chat_card(
        &mut self,
        promotion_id: i64,
        platform: ChatPlatform,
        channel: &str,
    ) -> Result<(), StoreError> {
        queries::add_chat_card(self.db(), promotion_id, platform, channel).await
    }

    /// Owes the promotion's cards an update (no-op for a promotion without cards).
    pub async fn touch_cards(
        &mut self,
        promotion_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.owes_wakeup = true;
        queries::touch_cards(self.db(), promotion_id, now).await
    }

    /// Process groups recorded for other promotions of the environment.
    pub async fn environment_processes(
        &mut self,
        service: &str,
        environment: &str,
        except: i64,
    ) -> Result<Vec<ProcessRecord>, StoreError> {
        queries::environment_processes(self.db(), service, environment, except).await
    }

    /// Another promotion of the environment whose deploy job is still leased.
    pub async fn other_leased_deploy(
        &mut self,
        service: &str,
        environment: &str,
        except: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.dialect.now_millis();
        queries::other_leased_deploy(self.db(), now, service, environment, except).await
    }

    pub async fn forget_process(&mut self, record: &ProcessRecord) -> Result<(), StoreError> {
        queries::forget_process(self.db(), record).await
    }

    pub async fn set_current(&mut self, promotion: &Promotion) -> Result<(), StoreError> {
        queries::set_current(self.db(), promotion).await
    }
}
