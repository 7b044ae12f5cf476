//! The PostgreSQL wire protocol endpoint (`--pg-listen`), so every BI tool's PostgreSQL
//! connector reads feeds: password = a Sluice key (clear text, or SCRAM-SHA-256 when the
//! user name is the key's prefix; see `session.rs`), database = the workspace, each live
//! feed a table of schema `public`.
//!
//! The protocol handlers, the SQL dialect and the `pg_catalog` come from
//! `datafusion-postgres` (pgwire + DataFusion + `datafusion-pg-catalog`). What is ours:
//! authentication against the gateway, and one DataFusion session per connection whose
//! only catalog is the workspace, listing exactly the feeds the key may read (see
//! `table.rs` for how a feed becomes a table). A session per connection also keeps what
//! a client creates (temporary tables, `SET`s) to that connection. `COPY ... TO STDOUT`
//! (psql's `\copy`, psycopg's `cursor.copy()`) streams a query's rows in PostgreSQL's
//! copy formats (`copy/`).

mod catalog;
mod colnames;
mod copy;
mod hooks;
mod keys;
mod like;
mod rewrite;
mod rows;
mod scram;
mod session;
mod table;
pub mod tls;

pub use session::{Handlers, Shared};
pub use table::{FeedSchema, FeedTable};

use datafusion_postgres::pgwire;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use pgwire::tokio::TlsAcceptor;

/// Accept connections on `listener` until `shutdown` resolves. Connections in progress
/// end with the process.
pub async fn serve(
    gw: sluice_gateway::Gateway,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = Arc::new(Shared::new(gw, tls.is_some()));
    // Decode the shared pg_catalog tables now rather than in the first connection.
    tokio::task::spawn_blocking(|| {
        if let Err(e) = catalog::statics() {
            tracing::warn!("postgres endpoint: the pg_catalog tables could not be built: {e}");
        }
    });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, addr)) => {
                let handlers = Handlers::new(shared.clone());
                let tls = tls.clone();
                // A session decodes, plans and encodes rows: heavy work, kept off the
                // threads that serve HTTP calls.
                shared.gw.spawn_compute(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                        tracing::debug!(%addr, "postgres connection ended with an error: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("postgres endpoint: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
