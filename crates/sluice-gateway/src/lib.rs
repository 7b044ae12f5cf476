//! The gateway: everything between a BI tool's HTTP request and a feed's rows.
//!
//! It authenticates the caller, finds the live revision, checks parameters against the
//! feed's signature before any user code runs, enforces the per-feed concurrency limit,
//! asks the runtime for rows (or runs a `sluice.sql` passthrough natively through
//! `sluice-sources`), and encodes the Arrow batches for the client while they stream.
//!
//! The control API (`sluice-control`) shares this crate's [`Gateway`] state, its auth and
//! its problem responses, so both surfaces behave alike. This crate never writes feeds,
//! keys or sources: that is the control API's job.

mod agent;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod encode;
mod feeds;
pub mod limiter;
pub mod links;
pub mod metrics;
mod open;
pub mod problem;
mod recorder;
mod schemas;
mod state;
mod tally;

pub use agent::AgentClient;
pub use auth::Principal;
pub use feeds::{RESERVED as RESERVED_PARAMS, request_id};
pub use open::{LiveFeed, OpenFeed};
pub use problem::ApiError;
pub use state::{
    Execution, Gateway, GatewayConfig, Logs, WorkspaceSources, module_of, source_config,
};

use axum::{Router, routing::get};

/// Routes served by the gateway: feeds, secret feed links, health and metrics.
pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/feeds/{ws}/{feed}", get(feeds::get_feed))
        .route("/links/{token}", get(links::get_link))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(state::readyz))
        .route("/metrics", get(metrics::scrape))
        .with_state(gw)
}
