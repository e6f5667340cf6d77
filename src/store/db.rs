//! [`Db`]: the one executor type the store's queries run on, whatever holds the connection.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyConnection, AnyPool, Describe, Either, Execute, Executor};

use super::sqlite_writer::WriteConnection;

/// Where a query runs: PostgreSQL's pool, a PostgreSQL transaction, or SQLite's write
/// connection (in a transaction or not).
pub(super) enum Db<'a> {
    Pool(&'a AnyPool),
    Connection(&'a mut AnyConnection),
    Sqlite(&'a mut WriteConnection),
}

macro_rules! dispatch {
    ($db:expr, $executor:ident => $call:expr) => {
        match $db {
            Db::Pool($executor) => $call,
            Db::Connection($executor) => $call,
            Db::Sqlite($executor) => $call,
        }
    };
}

impl<'c> Executor<'c> for Db<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        dispatch!(self, executor => executor.fetch_many(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        dispatch!(self, executor => executor.fetch_optional(query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        dispatch!(self, executor => executor.prepare_with(sql, parameters))
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        dispatch!(self, executor => executor.describe(sql))
    }
}

impl std::fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Pool(_) => "Db::Pool",
            Db::Connection(_) => "Db::Connection",
            Db::Sqlite(_) => "Db::Sqlite",
        })
    }
}
