//! SQLite's one write connection, run on the calling thread (rusqlite), as an sqlx executor.
//!
//! sqlx-sqlite runs every connection on a thread of its own: each statement is a pair of thread
//! wake-ups, and measured on a 2-vCPU machine those hops, not SQLite, were the promotion
//! lifecycle's cost (≈ 42 statements, BEGIN and COMMIT per promotion; see the README's "Where
//! the lifecycle's time goes"). Here a write statement runs to completion where it is called:
//! SQLite answers these in microseconds, from its page cache, and a WAL commit writes without
//! `fsync` (`synchronous = NORMAL`).
//!
//! The queries stay the store's sqlx queries: this connection is an `Executor` for sqlx's `Any`
//! driver. It binds `AnyArguments` and answers `AnyRow`s, mapping each value by its SQLite type as
//! sqlx-sqlite's own `Any` mapping does, so every query is still written once for both
//! databases. Reads outside transactions stay on sqlx's SQLite pool, in parallel with writes.
//!
//! The connection is not pooled: SQLite takes one writer at a time, and every store of one file
//! in this process shares its connection (two would wait on each other's locks).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Any, Describe, Either, Execute, Executor};
use sqlx_core::any::{AnyColumn, AnyTypeInfoKind, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::StoreError;

/// Prepared statements kept per connection: the store has about 150 distinct statements.
const STATEMENT_CACHE: usize = 256;

/// WAL pages after which a commit checkpoints (see `connect`).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// The write connections open in this process, by file.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<WriteConnection>>>>> =
    LazyLock::new(Mutex::default);

/// The write connection of one SQLite file, shared by the stores of this process.
#[derive(Clone)]
pub(super) struct SqliteWriter(Arc<Mutex<WriteConnection>>);

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteWriter")
    }
}

impl SqliteWriter {
    /// The write connection of the SQLite file `file` (created if missing; WAL): this process's,
    /// if it has one open already.
    pub async fn open(file: &Path) -> Result<SqliteWriter, StoreError> {
        let mut open = OPEN.lock().await;
        let known = std::fs::canonicalize(file)
            .ok()
            .and_then(|key| open.get(&key))
            .and_then(Weak::upgrade);
        if let Some(shared) = known {
            // A closed store's is not reopened: this store gets a connection of its own.
            if shared.lock().await.conn.is_some() {
                return Ok(SqliteWriter(shared));
            }
        }
        let conn = connect(file).map_err(database_error)?;
        let shared = Arc::new(Mutex::new(WriteConnection {
            conn: Some(conn),
            in_transaction: false,
        }));
        if let Ok(key) = std::fs::canonicalize(file) {
            open.retain(|_, writer| writer.strong_count() > 0);
            open.insert(key, Arc::downgrade(&shared));
        }
        Ok(SqliteWriter(shared))
    }

    /// Waits for the connection (a transaction holds it until it ends).
    pub async fn lock(&self) -> Held {
        Held(self.0.clone().lock_owned().await)
    }

    pub async fn close(&self) {
        if let Some(conn) = self.0.lock().await.conn.take() {
            if let Err((_, error)) = conn.close() {
                tracing::warn!(%error, "closing the SQLite write connection");
            }
        }
    }
}

fn connect(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL + NORMAL survives process crashes; only power loss can drop the last commits, and the
    // file stays consistent.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A checkpoint runs inside the commit that crosses the threshold, fsync and all. Every
    // 10,000 pages (≈ 40 MiB of WAL) instead of SQLite's 1,000 makes that ten times rarer, and
    // pages written again and again between checkpoints are copied back once.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

pub(super) struct WriteConnection {
    /// `None` once the store is closed.
    conn: Option<Connection>,
    /// BEGIN ran and neither COMMIT nor ROLLBACK since.
    in_transaction: bool,
}

impl std::fmt::Debug for WriteConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteConnection")
            .field("open", &self.conn.is_some())
            .field("in_transaction", &self.in_transaction)
            .finish()
    }
}

impl WriteConnection {
    fn connection(&self) -> Result<&Connection, sqlx::Error> {
        self.conn.as_ref().ok_or(sqlx::Error::PoolClosed)
    }

    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.connection()?
            .execute_batch("BEGIN")
            .map_err(database_error)?;
        self.in_transaction = true;
        Ok(())
    }

    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.connection()?
            .execute_batch("COMMIT")
            .map_err(database_error)?;
        self.in_transaction = false;
        Ok(())
    }

    fn roll_back_if_open(&mut self) {
        if !self.in_transaction {
            return;
        }
        self.in_transaction = false;
        if let Some(conn) = &self.conn {
            // "No transaction is active" when a failed COMMIT already ended it: fine.
            if let Err(error) = conn.execute_batch("ROLLBACK") {
                tracing::debug!(%error, "rolling back an unfinished SQLite transaction");
            }
        }
    }

    /// Runs one statement: its rows, then what it changed (the shape sqlx's `fetch_many` answers).
    fn run(
        &self,
        sql: &str,
        arguments: Option<AnyArguments<'_>>,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>, sqlx::Error> {
        let conn = self.connection()?;
        let mut statement = conn.prepare_cached(sql).map_err(database_error)?;
        let values = arguments.map(|a| a.values.0).unwrap_or_default();
        bind(&mut statement, &values)?;
        let column_names: Arc<sqlx_core::HashMap<UStr, usize>> = Arc::new(
            statement
                .column_names()
                .into_iter()
                .enumerate()
                .map(|(ordinal, name)| (UStr::new(name), ordinal))
                .collect(),
        );
        let columns: Vec<AnyColumn> = statement
            .column_names()
            .into_iter()
            .enumerate()
            .map(|(ordinal, name)| AnyColumn {
                ordinal,
                name: UStr::new(name),
                type_info: AnyTypeInfo {
                    kind: AnyTypeInfoKind::Null,
                },
            })
            .collect();
        let read_only = statement.readonly();
        let mut answers = Vec::new();
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next().map_err(database_error)? {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                values.push(any_value(row.get_ref(index).map_err(database_error)?)?);
            }
            answers.push(Either::Right(AnyRow {
                column_names: column_names.clone(),
                columns: columns.clone(),
                values,
            }));
        }
        drop(rows);
        let rows_affected = if read_only { 0 } else { conn.changes() };
        answers.push(Either::Left(AnyQueryResult {
            rows_affected,
            last_insert_id: None,
        }));
        Ok(answers)
    }
}

/// Binds `$N` to the N-th argument, as sqlx-sqlite does (SQLite numbers parameters by first use).
fn bind(
    statement: &mut rusqlite::CachedStatement<'_>,
    values: &[AnyValueKind<'_>],
) -> Result<(), sqlx::Error> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or_default();
        let position: usize = name
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| sqlx::Error::Protocol(format!("unsupported SQL parameter {name:?}")))?;
        // An argument that was never bound is NULL, as in sqlx-sqlite.
        let value = match values.get(position.saturating_sub(1)) {
            Some(value) => sql_value(value)?,
            None => ToSqlOutput::Owned(Value::Null),
        };
        statement
            .raw_bind_parameter(index, value)
            .map_err(database_error)?;
    }
    Ok(())
}

fn sql_value<'a>(value: &'a AnyValueKind<'_>) -> Result<ToSqlOutput<'a>, sqlx::Error> {
    Ok(match value {
        AnyValueKind::Null(_) => ToSqlOutput::Owned(Value::Null),
        AnyValueKind::Bool(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
        AnyValueKind::SmallInt(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
        AnyValueKind::Integer(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
        AnyValueKind::BigInt(v) => ToSqlOutput::Owned(Value::Integer(*v)),
        AnyValueKind::Real(v) => ToSqlOutput::Owned(Value::Real(f64::from(*v))),
        AnyValueKind::Double(v) => ToSqlOutput::Owned(Value::Real(*v)),
        AnyValueKind::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        AnyValueKind::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "an argument of a kind the SQLite writer does not bind: {other:?}"
            )))
        }
    })
}

/// A value as sqlx-sqlite's `Any` mapping gives it: by the value's own SQLite type.
fn any_value(value: ValueRef<'_>) -> Result<AnyValue, sqlx::Error> {
    let kind = match value {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(v) => AnyValueKind::BigInt(v),
        ValueRef::Real(v) => AnyValueKind::Double(v),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => AnyValueKind::Text(Cow::Owned(text.to_string())),
            Err(error) => return Err(sqlx::Error::Decode(Box::new(error))),
        },
        ValueRef::Blob(bytes) => AnyValueKind::Blob(Cow::Owned(bytes.to_vec())),
    };
    Ok(AnyValue { kind })
}

/// rusqlite's error as sqlx's, keeping what the store asks of it (a unique violation).
fn database_error(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteWriteError {
                message: message.unwrap_or_else(|| failure.to_string()),
                extended_code: failure.extended_code,
            }))
        }
        other => sqlx::Error::AnyDriverError(Box::new(other)),
    }
}

#[derive(Debug)]
struct SqliteWriteError {
    message: String,
    extended_code: i32,
}

impl std::fmt::Display for SqliteWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqliteWriteError {}

impl DatabaseError for SqliteWriteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.extended_code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// The write connection, held by a transaction or a statement. A transaction dropped without
/// commit (an error, a refusal, a cancelled request) is rolled back here, at once.
pub(super) struct Held(OwnedMutexGuard<WriteConnection>);

impl Deref for Held {
    type Target = WriteConnection;

    fn deref(&self) -> &WriteConnection {
        &self.0
    }
}

impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut WriteConnection {
        &mut self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.roll_back_if_open();
    }
}

impl<'c> Executor<'c> for &'c mut WriteConnection {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        mut query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let sql = query.sql();
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode);
        stream::once(async move { self.run(sql, arguments?) })
            .map_ok(|answers| stream::iter(answers.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let mut answers = self.fetch_many(query);
        Box::pin(async move {
            while let Some(answer) = answers.try_next().await? {
                if let Either::Right(row) = answer {
                    return Ok(Some(row));
                }
            }
            Ok(None)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        _sql: &'q str,
        _parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async { Err(not_offered("prepared statements")) })
    }

    fn describe<'e, 'q: 'e>(
        self,
        _sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async { Err(not_offered("describe")) })
    }
}

/// The store runs plain queries only (statements are cached inside the connection).
fn not_offered(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("the SQLite write connection does not offer {what}"))
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn writer() -> (tempfile::TempDir, SqliteWriter) {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = SqliteWriter::open(&dir.path().join("writer.db"))
            .await
            .expect("open the writer");
        (dir, writer)
    }

    /// A fresh file's writer, held, with the table `create_table` makes.
    async fn held_with(create_table: &str) -> (tempfile::TempDir, SqliteWriter, Held) {
        let (dir, writer) = writer().await;
        let mut held = writer.lock().await;
        sqlx::query::<Any>(create_table)
            .execute(&mut *held)
            .await
            .expect("create the table");
        (dir, writer, held)
    }

    #[tokio::test]
    async fn dollar_parameters_bind_by_number_not_by_first_use() {
        let (_dir, writer) = writer().await;
        let mut held = writer.lock().await;
        let row = sqlx::query::<Any>("SELECT $2 || $1 || $2 AS word, $3 AS missing")
            .bind("a")
            .bind("b")
            .fetch_one(&mut *held)
            .await
            .expect("query");
        assert_eq!(row.get::<String, _>("word"), "bab");
        assert_eq!(row.get::<Option<i64>, _>("missing"), None);
    }

    #[tokio::test]
    async fn a_duplicate_key_is_a_unique_violation() {
        let (_dir, _writer, mut held) = held_with("CREATE TABLE t (k TEXT PRIMARY KEY)").await;
        let inserted = sqlx::query::<Any>("INSERT INTO t (k) VALUES ($1)")
            .bind("x")
            .execute(&mut *held)
            .await
            .expect("first insert");
        assert_eq!(inserted.rows_affected(), 1);
        let duplicate = sqlx::query::<Any>("INSERT INTO t (k) VALUES ($1)")
            .bind("x")
            .execute(&mut *held)
            .await
            .expect_err("second insert of the same key");
        let kind = duplicate.as_database_error().map(|e| e.kind());
        assert!(
            matches!(kind, Some(ErrorKind::UniqueViolation)),
            "{duplicate:?}"
        );
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_is_rolled_back_for_the_next_holder() {
        let (_dir, writer, mut held) = held_with("CREATE TABLE t (k INTEGER)").await;
        held.begin().expect("begin");
        sqlx::query::<Any>("INSERT INTO t (k) VALUES (1)")
            .execute(&mut *held)
            .await
            .expect("insert");
        drop(held);

        let mut next = writer.lock().await;
        let count: i64 = sqlx::query::<Any>("SELECT COUNT(*) AS n FROM t")
            .fetch_one(&mut *next)
            .await
            .expect("count")
            .get("n");
        assert_eq!(count, 0);
        // The connection is usable for a new transaction: no BEGIN left open.
        next.begin().expect("a fresh BEGIN");
        next.commit().expect("commit");
    }

    #[tokio::test]
    async fn writers_of_one_file_share_one_connection_until_it_is_closed() {
        let (dir, first) = writer().await;
        let same = SqliteWriter::open(&dir.path().join("writer.db"))
            .await
            .expect("open again");
        assert!(Arc::ptr_eq(&first.0, &same.0));
        first.close().await;
        let after_close = SqliteWriter::open(&dir.path().join("writer.db"))
            .await
            .expect("open after close");
        assert!(!Arc::ptr_eq(&first.0, &after_close.0));
    }
}
