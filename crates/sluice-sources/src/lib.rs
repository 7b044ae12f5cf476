//! Data-source connectors: run SQL with bound parameters on SQLite and PostgreSQL and stream
//! Arrow record batches.
//!
//! This crate owns connection pools to analysts' databases and the translation of database
//! rows into Arrow. It never formats a response (that is the gateway's `encode`) and never
//! reads Sluice's own store. Values are always bound, never spliced into SQL text: named
//! `:params` are rewritten to positions by `sluice_core::sqlparams`.
//!
//! Rows are read while the caller polls the stream: a spawned task reads from the database,
//! builds one batch of at most `batch_rows` rows and hands it over a channel of capacity 1,
//! so at most a couple of batches exist at a time whatever the size of the result, and the
//! database read overlaps with the caller's encoding (the machines we run on have few cores,
//! but a socket wait and an encode can still overlap).

#![forbid(unsafe_code)]

/// A date or timestamp parameter as the SDK sends it: `{"$date": "2024-01-01"}`,
/// `{"$timestamp": ...}` or `{"$timestamptz": ...}`. Returns the tag and the ISO text.
pub(crate) fn tagged_temporal(
    m: &serde_json::Map<String, serde_json::Value>,
) -> Option<(&str, &str)> {
    let (k, v) = m.iter().next().filter(|_| m.len() == 1)?;
    matches!(k.as_str(), "$date" | "$timestamp" | "$timestamptz")
        .then_some((k.as_str(), v.as_str()?))
}

mod builder;
mod pg;
mod sqlite;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::stream::BoxStream;
use sluice_core::{Code, Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Rows per batch when the caller does not choose: large enough that per-batch costs
/// (allocation, channel hand-off, encoder set-up) vanish, small enough (a few MiB for a wide
/// table) that memory stays bounded.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Connections per source. Small on purpose: a feed gateway should not be able to exhaust an
/// analyst's warehouse; requests queue for a connection instead.
const MAX_CONNECTIONS: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String },
}

/// The rows of one query: the schema is known before the first row is sent, so the gateway
/// can write a CSV header or an Arrow schema message even for an empty result.
pub struct QueryStream {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Connection pools, one per source name, created on first use and reused until
/// [`Sources::invalidate`] or a changed config replaces them. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Sources {
    pools: Arc<Mutex<HashMap<String, (SourceConfig, Pool)>>>,
    batch_rows: usize,
}

impl Default for Sources {
    fn default() -> Self {
        Self::new()
    }
}

impl Sources {
    pub fn new() -> Sources {
        Sources {
            pools: Default::default(),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    /// Rows per record batch (minimum 1).
    pub fn with_batch_rows(mut self, rows: usize) -> Sources {
        self.batch_rows = rows.max(1);
        self
    }

    /// Forget the pool of a source (its config changed or it was deleted). Connections close
    /// once in-flight queries return them.
    pub fn invalidate(&self, name: &str) {
        let removed = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some((_, pool)) = removed {
            // Closing waits for checked-out connections; do it off the caller's path.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    match pool {
                        Pool::Sqlite(p) => p.close().await,
                        Pool::Postgres(p) => p.close().await,
                    }
                });
            }
        }
    }

    /// Open a connection and run `select 1`: used before saving a source. Errors say what
    /// failed (host unreachable, auth, file missing) without echoing passwords.
    pub async fn test(&self, cfg: &SourceConfig) -> Result<()> {
        match cfg {
            SourceConfig::Sqlite { path } => sqlite::test(path).await,
            SourceConfig::Postgres { url } => pg::test(url).await,
        }
    }

    /// Run `sql` with `:name` parameters bound from `params` and stream the result as Arrow
    /// record batches. See the crate docs for type mapping; errors carry
    /// [`Code::SourceQueryFailed`] with the database's own message.
    pub async fn query(
        &self,
        name: &str,
        cfg: &SourceConfig,
        sql: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<QueryStream> {
        match self.pool(name, cfg)? {
            Pool::Sqlite(pool) => {
                let path = match cfg {
                    SourceConfig::Sqlite { path } => path.as_path(),
                    SourceConfig::Postgres { .. } => std::path::Path::new(""),
                };
                sqlite::query(name, &pool, path, sql, params, self.batch_rows).await
            }
            Pool::Postgres(pool) => {
                pg::query(name, &pool, url_of(cfg), sql, params, self.batch_rows).await
            }
        }
    }

    fn pool(&self, name: &str, cfg: &SourceConfig) -> Result<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, p)) = pools.get(name).filter(|(c, _)| c == cfg) {
            return Ok(p.clone());
        }
        let pool = match cfg {
            SourceConfig::Sqlite { path } => Pool::Sqlite(sqlite::pool(name, path)?),
            SourceConfig::Postgres { url } => Pool::Postgres(pg::pool(name, url)?),
        };
        pools.insert(name.to_string(), (cfg.clone(), pool.clone()));
        Ok(pool)
    }
}

fn url_of(cfg: &SourceConfig) -> &str {
    match cfg {
        SourceConfig::Postgres { url } => url,
        SourceConfig::Sqlite { .. } => "",
    }
}

/// Map a sqlx error to a Sluice error. Errors from the server about the statement carry the
/// database's message; everything about reaching the server is a connection failure.
/// `secret` (a password) is scrubbed from whatever text we produce.
pub(crate) fn sql_error(source: &str, e: sqlx::Error, secret: Option<&str>) -> Error {
    let (connect, text) = match &e {
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception), 28 (auth) and 3D (no such database) are about
            // reaching the source, not about the query.
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let connect =
                code.starts_with("08") || code.starts_with("28") || code.starts_with("3D");
            let mut msg = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(h) = pg.hint() {
                    msg.push_str(&format!(" (hint: {h})"));
                }
                if msg.contains("operator does not exist") && msg.contains("text") {
                    msg.push_str(
                        "; parameters are sent as text, bigint, double precision or boolean: cast in SQL, e.g. :since::date",
                    );
                }
            }
            (connect, msg)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => (true, e.to_string()),
        _ => (false, e.to_string()),
    };
    let text = match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text,
    };
    let message = if connect {
        format!("could not connect to data source '{source}': {text}")
    } else {
        format!("query on data source '{source}' failed: {text}")
    };
    Error::new(Code::SourceQueryFailed, message).with("source", source)
}

pub(crate) fn query_failed(source: &str, message: impl std::fmt::Display) -> Error {
    Error::new(
        Code::SourceQueryFailed,
        format!("query on data source '{source}' failed: {message}"),
    )
    .with("source", source)
}

/// Channel-backed stream: the producer task stops (and drops its connection) as soon as the
/// consumer is dropped, because its next `send` fails.
pub(crate) fn receiver_stream(
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
) -> BoxStream<'static, Result<RecordBatch>> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| (v, rx))
    }))
}
