//! The control API, `/api/v1`: what the CLI and the web IDE use to manage workspaces,
//! feeds, revisions, drafts, keys and data sources, and to watch a feed's traffic. It owns every write to the store; the gateway
//! only reads. After a write it tells the gateway what to forget (live revisions, keys,
//! sources) so the next request sees the change.
//!
//! The contract is `docs/api.md`.

mod catalog;
mod cluster;
pub mod connect;
mod deploy;
mod drafts;
mod handlers;
mod links;
mod metrics;
pub mod openapi;

use axum::{
    Extension, Router,
    extract::FromRequestParts,
    http::request::Parts,
    routing::{MethodRouter, delete, get, post},
};
use sluice_gateway::{ApiError, Gateway, Principal};
use std::sync::Arc;

pub use connect::ConnectInfo;
pub use deploy::{MAX_SOURCE_BYTES, deploy_module};

/// Every route of the control API, in one table: the router is built from it and the
/// OpenAPI test checks each path is documented.
fn routes() -> Vec<(&'static str, MethodRouter<Gateway>)> {
    use handlers::*;
    vec![
        ("/api/v1/whoami", get(whoami)),
        (
            "/api/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        ),
        ("/api/v1/workspaces/{ws}/feeds", get(list_feeds)),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}",
            get(get_feed).delete(delete_feed),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/revisions",
            get(list_revisions),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/revisions/{number}",
            get(get_revision),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/rollback",
            post(rollback),
        ),
        ("/api/v1/workspaces/{ws}/feeds/{feed}/logs", get(logs)),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/metrics",
            get(crate::metrics::feed),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/connect",
            get(connect::handlers::feed_tools),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/connect/{tool}",
            get(connect::handlers::feed_file),
        ),
        (
            "/api/v1/workspaces/{ws}/connect",
            get(connect::handlers::workspace_tools),
        ),
        (
            "/api/v1/workspaces/{ws}/connect/{tool}",
            get(connect::handlers::workspace_file),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/links",
            get(links::list_for_feed).post(links::create),
        ),
        (
            "/api/v1/workspaces/{ws}/feeds/{feed}/links/{id}",
            delete(links::revoke_for_feed),
        ),
        (
            "/api/v1/workspaces/{ws}/links",
            get(links::list_for_workspace),
        ),
        (
            "/api/v1/workspaces/{ws}/links/{id}",
            delete(links::revoke_in_workspace),
        ),
        ("/api/v1/workspaces/{ws}/deploy", post(deploy::deploy)),
        ("/api/v1/workspaces/{ws}/run", post(deploy::run)),
        ("/api/v1/workspaces/{ws}/inspect", post(deploy::inspect)),
        ("/api/v1/workspaces/{ws}/drafts", get(drafts::list)),
        (
            "/api/v1/workspaces/{ws}/drafts/{name}",
            get(drafts::get).put(drafts::save).delete(drafts::delete),
        ),
        ("/api/v1/templates", get(catalog::templates)),
        ("/api/v1/sources/{name}/tables", get(catalog::tables)),
        ("/api/v1/keys", get(list_keys).post(create_key)),
        ("/api/v1/keys/{prefix}", delete(revoke_key)),
        ("/api/v1/sources", get(list_sources).post(add_source)),
        ("/api/v1/sources/{name}/grants", post(grant_source)),
    ]
}

/// The control API. `connect` says where clients reach this server, for the connection
/// files and links it hands out.
pub fn router(gw: Gateway, connect: ConnectInfo) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, methods)| r.route(path, methods))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .with_state(gw)
        .layer(Extension(Arc::new(connect)))
}

/// The authenticated caller, as an extractor: every control route needs one.
pub struct Caller(pub Arc<Principal>);

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Self::Rejection> {
        let p = gw.authenticate(&parts.headers, parts.uri.query()).await?;
        Ok(Caller(p))
    }
}
