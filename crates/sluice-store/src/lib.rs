//! The metadata store: workspaces, API keys, secret feed links, IDE drafts, data sources (credentials
//! sealed at rest), feeds with their immutable revisions, invocation records, and exact
//! per-minute traffic aggregates of every feed. It is the only crate that speaks SQL to the
//! metadata database; everything else calls [`Store`].
//!
//! It runs on SQLite (the embedded default, one file in the data directory) and on
//! PostgreSQL (production), with one migration folder per backend embedded in the binary.
//! It must never touch feed code, workers or sockets other than its database connection.
//!
//! # Why an enum of two pools and not `sqlx::AnyPool`
//!
//! `AnyPool` would give one code path, but it erases what this store needs from each
//! backend: SQLite's connection options (WAL, `busy_timeout`, foreign keys, create-if-missing)
//! and `BEGIN IMMEDIATE` for write transactions, PostgreSQL's typed pool, and it needs its
//! drivers installed at runtime. Both backends accept the same SQL here (`$N` placeholders,
//! `ON CONFLICT`, `RETURNING`, window functions), so the two `match` arms that [`on_pool!`]
//! and [`in_tx!`] expand to are the same tokens compiled against two concrete pools: one
//! text of every query, native types and options for each backend.

#![forbid(unsafe_code)]

use chrono::{DateTime, Utc};
use sluice_core::{Code, Error, Result};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::{fmt, str::FromStr, sync::Arc, time::Duration};

/// Runs `$body` with `$pool` bound to the concrete pool of the store's backend. The body
/// must produce the same type on both backends (map query results to plain values inside).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.inner.pool {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` inside one transaction bound to `$tx` and commits it; an early return
/// (`?`) drops the transaction, which rolls it back. On SQLite the transaction starts with
/// `BEGIN IMMEDIATE`: a deferred transaction that reads first and writes later fails at
/// once with SQLITE_BUSY when another writer got in between, while an immediate one takes
/// the write lock up front and waits for it under `busy_timeout`.
macro_rules! in_tx {
    ($store:expr, $what:expr, $tx:ident => $body:expr) => {
        match &$store.inner.pool {
            $crate::Pool::Sqlite(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err($crate::db($what))?;
                let out = $body;
                $tx.commit().await.map_err($crate::db($what))?;
                out
            }
            $crate::Pool::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err($crate::db($what))?;
                let out = $body;
                $tx.commit().await.map_err($crate::db($what))?;
                out
            }
        }
    };
}

mod crypto;
mod drafts;
mod feeds;
mod invocations;
mod keys;
mod links;
mod sources;
mod traffic;
mod workspaces;

pub use drafts::Draft;
pub use feeds::{FeedRecord, NewRevision, Revision};
pub use invocations::{Invocation, MAX_INVOCATIONS_PAGE, NewInvocation};
pub use keys::{KeyRecord, NewKey};
pub use links::{LinkRecord, NewLink};
pub use sources::SourceRecord;
pub use traffic::{
    LATENCY_BOUNDS_MS, LATENCY_BUCKETS, MAX_TRAFFIC_BUCKETS, MINUTE_MS, MinuteCounts,
    TRAFFIC_RETENTION, Traffic, TrafficBucket, latency_bucket, latency_percentile,
};
pub use workspaces::Workspace;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite writer waits for another writer before giving up. Writes here are
/// small (a deploy is a handful of rows), so waiting is always better than failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Associated data of the master-key check row (see `check_master_key`).
const KEY_CHECK_AAD: &[u8] = b"sluice-master-key-check";

pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

struct Inner {
    pool: Pool,
    sealer: crypto::Sealer,
}

/// Handle to the metadata database. Cheap to clone: every clone shares one pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    // Deliberately shows neither the URL (it may hold a password) nor the master key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// The URL of the embedded database in a data directory: `<data_dir>/sluice.db`.
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("sluice.db").display())
}

impl Store {
    /// Opens (creating it if needed) and migrates the metadata database.
    ///
    /// `url` is `sqlite:///abs/path/sluice.db` (or `sqlite::memory:` for a throwaway store)
    /// or `postgres://...`. `secret` is the 32-byte master key that seals data-source
    /// configs; opening a database created with another key fails, because its credentials
    /// could not be read.
    pub async fn open(url: &str, secret: [u8; 32]) -> Result<Store> {
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(open_sqlite(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(open_postgres(url).await?)
        } else {
            // Only the scheme is echoed: the rest of a URL may carry a password.
            let scheme = url.split_once(':').map_or(url, |(s, _)| s);
            return Err(Error::new(
                Code::BadRequest,
                format!(
                    "unsupported metadata database URL scheme '{scheme}': use sqlite:///absolute/path/sluice.db or postgres://user@host/database"
                ),
            ));
        };
        let migrated = match &pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        migrated.map_err(|e| {
            Error::internal(format!(
                "cannot migrate the metadata database: {e}. If it was last used by a newer Sluice, run that version; otherwise check the database is writable"
            ))
        })?;
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                sealer: crypto::Sealer::new(&secret),
            }),
        };
        store.check_master_key().await?;
        Ok(store)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.inner.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection and waits for them to finish. Other clones of this store
    /// become unusable. On SQLite, closing the last connection checkpoints the WAL into
    /// the main file.
    pub async fn close(&self) {
        match &self.inner.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// An instance setting (e.g. `"initialized"`), or `None` if it was never set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(db("read an instance setting")))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db("write an instance setting")))
    }

    /// Seals a known value with the master key on first open and checks it opens on every
    /// later one: a wrong key is then refused at startup with a clear message, instead of
    /// surfacing as a decryption failure on the first BI request that needs a data source.
    async fn check_master_key(&self) -> Result<()> {
        let token = self.inner.sealer.seal(b"sluice", KEY_CHECK_AAD);
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO master_key_check (id, token) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&token)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db("record the master key check")))?;
        let stored: String = on_pool!(self, pool => sqlx::query_scalar("SELECT token FROM master_key_check WHERE id = 1")
            .fetch_one(pool)
            .await
            .map_err(db("read the master key check")))?;
        match self.inner.sealer.open(&stored, KEY_CHECK_AAD) {
            Ok(_) => Ok(()),
            Err(crypto::OpenError::WrongKeyOrTampered) => Err(Error::internal(
                "the master key differs from the one this metadata database was created with, so its data-source credentials cannot be decrypted: start Sluice with the original master key",
            )),
            Err(crypto::OpenError::Malformed(why)) => Err(Error::internal(format!(
                "the master key check row of the metadata database is damaged ({why}): restore the database from a backup"
            ))),
        }
    }
}

async fn open_sqlite(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::new(Code::BadRequest, format!("invalid SQLite URL '{url}': {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    // The data directory may not exist yet on a first start (`sluice up --data-dir D`).
    let parent = options
        .get_filename()
        .parent()
        .filter(|d| !in_memory && !d.as_os_str().is_empty());
    if let Some(dir) = parent {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            Error::internal(format!(
                "cannot create the data directory {}: {e}; check its permissions",
                dir.display()
            ))
        })?;
    }
    let mut pool = SqlitePoolOptions::new().max_connections(8);
    if in_memory {
        // An in-memory database lives as long as one connection to it: keep one forever.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    pool.connect_with(options).await.map_err(|e| {
        Error::internal(format!(
            "cannot open the SQLite metadata database '{url}': {e}; check the path is writable"
        ))
    })
}

async fn open_postgres(url: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::new(Code::BadRequest, format!("invalid PostgreSQL URL: {e}")))?;
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| {
            Error::internal(format!(
                "cannot connect to the PostgreSQL metadata database: {e}; check the server is running and the URL (host, port, user, database) is right"
            ))
        })
}

/// Maps a sqlx error to a store error that says what was being done. Unique violations
/// become `already_exists`; callers that know *what* exists check for it first and give a
/// better message, this is the fallback.
pub(crate) fn db(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::new(
            Code::AlreadyExists,
            format!("cannot {what}: it already exists ({})", d.message()),
        ),
        sqlx::Error::PoolTimedOut => Error::internal(format!(
            "cannot {what}: the metadata database did not answer in time; check it is running and not overloaded"
        )),
        _ => Error::internal(format!("cannot {what}: metadata database error: {e}")),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn ts(ms: i64) -> DateTime<Utc> {
    // Every stored value came from `now_ms`, so it is in range; the fallback only guards
    // against a hand-edited row.
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}
