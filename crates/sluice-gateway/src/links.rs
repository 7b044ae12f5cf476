//! `GET /links/{token}`: a secret feed link. Some tools (a web-file connection in Qlik,
//! Excel's "From Web", a spreadsheet's IMPORTDATA) can only paste a URL, never send a
//! header; a link is a revocable, unguessable token in the path that reads one feed of one
//! workspace as a viewer would. Everything after resolving the token is the code path of
//! `/feeds/{ws}/{feed}` (`feeds::respond`): same parameters, formats, cache and errors.
//!
//! Tokens are made and stored like API keys (`sluice_core::keys::generate_link`, prefix plus
//! SHA-256). Resolved links are cached briefly like verified keys; revoking one through the
//! control API clears the cache at once ([`Gateway::invalidate_links`]).

use crate::{
    auth::{CACHE_TTL, Principal},
    feeds,
    problem::ApiError,
    state::Gateway,
};
use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use sluice_core::{Code, Error, Role, keys};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Instant,
};

/// What a valid link opens: one feed, read as a viewer of its workspace.
#[derive(Debug)]
pub struct LinkTarget {
    pub workspace: String,
    pub feed: String,
    pub principal: Principal,
}

/// Resolved links by token hash. Only valid links are cached: an unknown or revoked token
/// always costs a lookup, so a revocation is never hidden by the cache.
#[derive(Default)]
pub struct LinkCache {
    entries: RwLock<HashMap<String, (Instant, Arc<LinkTarget>)>>,
}

pub async fn get_link(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let link = match gw.resolve_link(&token).await {
        Ok(l) => l,
        Err(e) => {
            let mut res = ApiError::from(e).into_response();
            // No credentials can help on a link URL: a Basic challenge would only make
            // browsers and Excel ask for a password the link never takes.
            res.headers_mut().remove(header::WWW_AUTHENTICATE);
            return res;
        }
    };
    feeds::respond(
        &gw,
        &link.workspace,
        &link.feed,
        query.as_deref(),
        &headers,
        &link.principal,
        started,
    )
    .await
}

impl Gateway {
    /// The feed a link token opens: 401 `invalid_key` when the token is unknown, and also
    /// when it was revoked, with a detail that says so.
    pub async fn resolve_link(&self, token: &str) -> Result<Arc<LinkTarget>, Error> {
        let invalid = || {
            Error::new(
                Code::InvalidKey,
                "this feed link is not valid: ask an editor of the workspace for a new one (`sluice links create FEED`)",
            )
        };
        let Some(prefix) = keys::link_prefix_of(token) else {
            return Err(invalid());
        };
        let hash = keys::hash(token);
        let cache = &self.inner.keys.links.entries;
        let cached = cache.read().expect("link cache lock").get(&hash).cloned();
        if let Some((at, link)) = cached
            && at.elapsed() < CACHE_TTL
        {
            return Ok(link);
        }
        let record = self.store().link_by_prefix(&prefix).await?;
        let Some(record) = record.filter(|r| keys::hashes_equal(&r.hash, &hash)) else {
            return Err(invalid());
        };
        if let Some(at) = record.revoked_at {
            return Err(Error::new(
                Code::InvalidKey,
                format!(
                    "this feed link was revoked on {}: ask an editor of workspace '{}' for a new one",
                    at.format("%Y-%m-%d %H:%M UTC"),
                    record.workspace
                ),
            )
            .with("link", record.prefix.as_str())
            .with("revoked_at", at.to_rfc3339()));
        }
        let link = Arc::new(LinkTarget {
            principal: Principal {
                name: format!("link '{}'", record.name),
                prefix: record.prefix.clone(),
                role: Role::Viewer,
                workspace: Some(record.workspace.clone()),
            },
            workspace: record.workspace,
            feed: record.feed,
        });
        let store = self.store().clone();
        tokio::spawn(async move {
            let _ = store.touch_link(&record.prefix).await;
        });
        cache
            .write()
            .expect("link cache lock")
            .insert(hash, (Instant::now(), link.clone()));
        Ok(link)
    }

    /// Forget resolved links after one is revoked (or its feed deleted).
    pub fn invalidate_links(&self) {
        self.inner
            .keys
            .links
            .entries
            .write()
            .expect("link cache lock")
            .clear();
    }
}
