//! Several replicas on one database (SPEC §8), as database facts:
//!
//! - each replica's heartbeat row (`replicas`), for `GET /api/v1/cluster`;
//! - the gateway lock: one replica at a time holds the platform connections (the Discord gateway,
//!   Slack Socket Mode). On PostgreSQL it is a session-level advisory lock on a dedicated
//!   connection: it lives exactly as long as that connection, so a replica that dies (or whose
//!   connection drops) lets it go without anyone's clock deciding. On SQLite the one process per
//!   file holds it by definition (see [`ServeLock`]);
//! - wake-ups: `LISTEN shipmate_jobs`, which a trigger notifies when a job becomes claimable;
//! - the SQLite serve lock: one `shipmate serve` per database file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::Connection;

use super::records::time;
use super::{Store, StoreError};

/// The advisory lock key of the gateway: any fixed number, the same in every replica.
const GATEWAY_LOCK_KEY: i64 = 0x5348_4950_4741_5445; // "SHIPGATE"
/// How long a lock check may take before the lock counts as lost.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The notification channel the jobs trigger (migration 0008) notifies.
const JOBS_CHANNEL: &str = "shipmate_jobs";

/// A replica as its heartbeat row shows it (and `GET /api/v1/cluster` lists it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaRecord {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: DateTime<Utc>,
    /// On the database's clock.
    pub last_seen: DateTime<Utc>,
    pub holds_gateway: bool,
    /// Jobs (deploys, card edits, announcements) whose lease this replica holds now.
    pub jobs_running: i64,
}

/// What a replica says about itself in each heartbeat.
#[derive(Debug, Clone)]
pub struct ReplicaBeat<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub holds_gateway: bool,
}

/// Proof that this replica holds the gateway lock. The platform connections take one to run;
/// only [`Store::try_gateway_lock`] makes it. Dropping it lets the lock go.
#[derive(Debug)]
pub struct GatewayLock {
    held: HeldBy,
}

#[derive(Debug)]
enum HeldBy {
    /// SQLite: this process is the only `serve` on the file.
    OnlyProcess,
    /// PostgreSQL: the session holding the advisory lock.
    Session(PgConnection),
}

impl GatewayLock {
    /// Whether the lock is still ours: on PostgreSQL, asked of the server on the lock's own
    /// session (an error or a slow answer counts as lost: the server may have given it away).
    pub async fn still_held(&mut self) -> bool {
        let HeldBy::Session(connection) = &mut self.held else {
            return true;
        };
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_backend_pid() AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1)",
        )
        .bind(GATEWAY_LOCK_KEY)
        .fetch_one(connection);
        matches!(
            tokio::time::timeout(LOCK_CHECK_TIMEOUT, check).await,
            Ok(Ok(true))
        )
    }
}

/// A PostgreSQL URL, kept for the dedicated connections (the gateway lock, the listener) and
/// never printed: it may hold a password.
#[derive(Clone)]
pub(super) struct PostgresUrl(pub(super) String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresUrl(…)")
    }
}

/// Wake-ups from other replicas' commits.
pub struct JobWakeups {
    listener: PgListener,
}

/// Why [`JobWakeups::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A job became claimable.
    JobReady,
    /// The listening connection dropped and was opened again: notifications sent meanwhile
    /// are lost, so whatever is due must be looked for.
    Reconnected,
}

impl JobWakeups {
    /// The next wake-up. sqlx reconnects a dropped listener by itself on the next call.
    pub async fn next(&mut self) -> Result<Wakeup, StoreError> {
        match self.listener.try_recv().await? {
            Some(_) => Ok(Wakeup::JobReady),
            None => Ok(Wakeup::Reconnected),
        }
    }
}

impl Store {
    /// Takes the gateway lock if no other replica holds it; `None` when one does.
    pub async fn try_gateway_lock(&self) -> Result<Option<GatewayLock>, StoreError> {
        let Some(url) = &self.postgres_url else {
            return Ok(Some(GatewayLock {
                held: HeldBy::OnlyProcess,
            }));
        };
        let mut connection = PgConnection::connect(&url.0).await?;
        // A holder whose machine vanishes without closing its socket is noticed by the server
        // within ~20 s, so the lock is free for another replica well inside SPEC §8's 30 s.
        for setting in [
            "SET tcp_keepalives_idle = 5",
            "SET tcp_keepalives_interval = 5",
            "SET tcp_keepalives_count = 3",
        ] {
            sqlx::query(setting).execute(&mut connection).await?;
        }
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(GATEWAY_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        Ok(locked.then_some(GatewayLock {
            held: HeldBy::Session(connection),
        }))
    }

    /// Listens for jobs other replicas (or this one) made claimable; `None` on SQLite, where
    /// the only writer is this process and wakes its workers itself.
    pub async fn job_wakeups(&self) -> Result<Option<JobWakeups>, StoreError> {
        let Some(url) = &self.postgres_url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(&url.0).await?;
        listener.listen(JOBS_CHANNEL).await?;
        Ok(Some(JobWakeups { listener }))
    }

    /// Writes this replica's heartbeat on the database's clock.
    pub async fn replica_heartbeat(&self, beat: &ReplicaBeat<'_>) -> Result<(), StoreError> {
        let now = self.dialect.now_millis();
        sqlx::query(&format!(
            "INSERT INTO replicas (id, host, pid, started_at, last_seen, holds_gateway) \
             VALUES ($1, $2, $3, $4, {now}, $5) \
             ON CONFLICT (id) DO UPDATE SET last_seen = {now}, holds_gateway = $5"
        ))
        .bind(beat.id)
        .bind(beat.host)
        .bind(i64::from(beat.pid))
        .bind(super::records::millis(beat.started_at))
        .bind(i64::from(beat.holds_gateway))
        .execute(self.writer().await?.db())
        .await?;
        Ok(())
    }

    /// Marks `holder` as the only replica holding the gateway: it holds the lock, so any other
    /// row saying so is a dead replica's.
    pub async fn gateway_taken_by(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE replicas SET holds_gateway = CASE WHEN id = $1 THEN 1 ELSE 0 END \
             WHERE holds_gateway = 1 OR id = $1",
        )
        .bind(holder)
        .execute(self.writer().await?.db())
        .await?;
        Ok(())
    }

    /// Replicas seen within `alive`, with the jobs each holds a lease on, oldest first.
    pub async fn replicas(&self, alive: Duration) -> Result<Vec<ReplicaRecord>, StoreError> {
        let now = self.dialect.now_millis();
        let rows: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT r.id, r.host, r.pid, r.started_at, r.last_seen, r.holds_gateway, \
                 (SELECT COUNT(*) FROM jobs j WHERE j.lease_owner = r.id AND j.lease_until > {now}) \
             FROM replicas r WHERE r.last_seen >= {now} - $1 ORDER BY r.started_at, r.id"
        ))
        .bind(duration_millis(alive))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(id, host, pid, started, seen, gateway, jobs)| {
                Ok(ReplicaRecord {
                    id,
                    host,
                    pid,
                    started_at: time(started)?,
                    last_seen: time(seen)?,
                    holds_gateway: gateway != 0,
                    jobs_running: jobs,
                })
            })
            .collect()
    }

    /// Forgets replicas not seen within `stale` (and this one, at a clean stop: pass its id).
    pub async fn prune_replicas(
        &self,
        stale: Duration,
        stopping: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = self.dialect.now_millis();
        let result = sqlx::query(&format!(
            "DELETE FROM replicas WHERE last_seen < {now} - $1 OR id = $2"
        ))
        .bind(duration_millis(stale))
        .bind(stopping.unwrap_or_default())
        .execute(self.writer().await?.db())
        .await?;
        Ok(result.rows_affected())
    }
}

/// `serve` on SQLite: this process becomes the only one serving the database file; `host`
/// names this machine in the refusal a second `serve` gets. PostgreSQL (any number of
/// replicas) and in-memory databases need no lock.
pub fn lock_for_serving(database_url: &str, host: &str) -> Result<Option<ServeLock>, StoreError> {
    if !database_url.starts_with("sqlite:") {
        return Ok(None);
    }
    let options = SqliteConnectOptions::from_str(database_url)?;
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
        return Ok(None);
    }
    ServeLock::take(file, host).map(Some)
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The exclusive lock of one `serve` on a SQLite file: an OS file lock on `<file>.serve-lock`,
/// which the kernel drops when the process dies (no stale lock after a crash). The lock file
/// names its holder, for the refusal of a second `serve`.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    fn take(database: &Path, host: &str) -> Result<ServeLock, StoreError> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Locked(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder's description is best effort: the lock itself is the fact.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                };
                return Err(StoreError::Locked(format!(
                    "{} is already served by {holder}. One `shipmate serve` per SQLite file: stop \
                     that one first, or use PostgreSQL (database.url = \"postgres://…\") to run \
                     several replicas",
                    database.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Locked(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        let holder = format!("shipmate serve (pid {} on {host})", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "could not describe the serve lock's holder");
        }
        Ok(ServeLock { _file: file })
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".serve-lock");
    PathBuf::from(name)
}
