//! Secret feed links: create (the token is in this answer only), list, revoke. The gateway
//! serves them at `/links/{token}`; revoking clears its link cache so the next request
//! with the token is refused at once.

use crate::{
    Caller,
    connect::ConnectInfo,
    handlers::{ApiResult, JsonBody},
};
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::{Code, Error, keys};
use sluice_gateway::Gateway;
use sluice_store::{LinkRecord, NewLink};
use std::sync::Arc;

fn link_json(l: &LinkRecord) -> Value {
    json!({
        "id": l.prefix, "name": l.name, "workspace": l.workspace, "feed": l.feed,
        "created_by": l.created_by, "created_at": l.created_at, "last_used_at": l.last_used_at,
    })
}

fn links_json(v: &[LinkRecord]) -> Json<Value> {
    Json(Value::Array(v.iter().map(link_json).collect()))
}

#[derive(Deserialize, Default)]
pub struct CreateLink {
    name: Option<String>,
}

pub async fn create(
    State(gw): State<Gateway>,
    Extension(info): Extension<Arc<ConnectInfo>>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
    JsonBody(b): JsonBody<CreateLink>,
) -> ApiResult {
    p.authorize(&ws, true)?;
    let name = b
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{feed} link"));
    let t = keys::generate_link();
    let rec = gw
        .store()
        .create_link(NewLink {
            workspace: ws.clone(),
            feed: feed.clone(),
            name,
            prefix: t.prefix,
            hash: t.hash,
            created_by: p.name.clone(),
        })
        .await?;
    tracing::info!(workspace = %ws, feed = %feed, link = %rec.prefix, by = %p.name, "feed link created");
    let mut body = link_json(&rec);
    body["url"] = Value::String(info.link_url(&t.secret));
    body["token"] = Value::String(t.secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list_for_feed(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    Ok(links_json(&gw.store().list_links(&ws, Some(&feed)).await?))
}

pub async fn list_for_workspace(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    Ok(links_json(&gw.store().list_links(&ws, None).await?))
}

/// Revokes link `id` of workspace `ws` (and of `feed`, when the path names one).
async fn revoke(
    gw: &Gateway,
    p: &sluice_gateway::Principal,
    ws: &str,
    feed: Option<&str>,
    id: &str,
) -> ApiResult {
    p.authorize(ws, true)?;
    let found = gw.store().link_by_prefix(id).await?.filter(|l| {
        l.workspace == ws && feed.is_none_or(|f| l.feed == f) && l.revoked_at.is_none()
    });
    if found.is_none() || !gw.store().revoke_link(ws, id).await? {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "no active link '{id}' in {}: `sluice links ls` lists them",
                match feed {
                    Some(f) => format!("feed '{ws}/{f}'"),
                    None => format!("workspace '{ws}'"),
                }
            ),
        )
        .with("name", id)
        .into());
    }
    gw.invalidate_links();
    tracing::info!(workspace = %ws, link = %id, by = %p.name, "feed link revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn revoke_for_feed(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed, id)): Path<(String, String, String)>,
) -> ApiResult {
    revoke(&gw, &p, &ws, Some(&feed), &id).await
}

pub async fn revoke_in_workspace(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    revoke(&gw, &p, &ws, None, &id).await
}
