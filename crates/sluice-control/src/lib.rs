//! The control API, `/api/v1`: what the CLI and the web IDE use to manage workspaces,
//! feeds, revisions, keys and data sources. It owns every write to the store; the gateway
//! only reads. After a write it tells the gateway what to forget (live revisions, keys,
//! sources) so the next request sees the change.
//!
//! The contract is `docs/api.md`.

mod deploy;
mod handlers;
pub mod openapi;

use axum::{
    Router,
    extract::FromRequestParts,
    http::request::Parts,
    routing::{delete, get, post},
};
use sluice_gateway::{ApiError, Gateway, Principal};
use std::sync::Arc;

pub use deploy::{MAX_SOURCE_BYTES, deploy_module};

/// Every path this router serves (the OpenAPI test checks each is documented).
pub const ROUTES: &[&str] = &[
    "/api/v1/whoami",
    "/api/v1/workspaces",
    "/api/v1/workspaces/{ws}/feeds",
    "/api/v1/workspaces/{ws}/feeds/{feed}",
    "/api/v1/workspaces/{ws}/feeds/{feed}/revisions",
    "/api/v1/workspaces/{ws}/feeds/{feed}/rollback",
    "/api/v1/workspaces/{ws}/feeds/{feed}/logs",
    "/api/v1/workspaces/{ws}/deploy",
    "/api/v1/workspaces/{ws}/run",
    "/api/v1/keys",
    "/api/v1/keys/{prefix}",
    "/api/v1/sources",
    "/api/v1/sources/{name}/grants",
];

pub fn router(gw: Gateway) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route(
            "/api/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        )
        .route("/api/v1/workspaces/{ws}/feeds", get(list_feeds))
        .route(
            "/api/v1/workspaces/{ws}/feeds/{feed}",
            get(get_feed).delete(delete_feed),
        )
        .route(
            "/api/v1/workspaces/{ws}/feeds/{feed}/revisions",
            get(list_revisions),
        )
        .route(
            "/api/v1/workspaces/{ws}/feeds/{feed}/rollback",
            post(rollback),
        )
        .route("/api/v1/workspaces/{ws}/feeds/{feed}/logs", get(logs))
        .route("/api/v1/workspaces/{ws}/deploy", post(deploy::deploy))
        .route("/api/v1/workspaces/{ws}/run", post(deploy::run))
        .route("/api/v1/keys", get(list_keys).post(create_key))
        .route("/api/v1/keys/{prefix}", delete(revoke_key))
        .route("/api/v1/sources", get(list_sources).post(add_source))
        .route("/api/v1/sources/{name}/grants", post(grant_source))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .with_state(gw)
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
