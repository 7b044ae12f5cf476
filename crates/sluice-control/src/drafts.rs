//! Drafts of the web IDE: `/api/v1/workspaces/{ws}/drafts[/{name}]`. A draft is a feed
//! module its author is still writing, saved on the server per key (the user, until OIDC)
//! and workspace. Only editors write code, so only editors have drafts; nobody else ever
//! sees one, not even an admin reading another key's drafts.

use crate::{
    Caller,
    deploy::{Module, check_module},
    handlers::{ApiResult, JsonBody, ensure_workspace},
};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::{Code, Error, names};
use sluice_gateway::Gateway;

fn not_found(ws: &str, name: &str) -> Error {
    Error::not_found(Code::NotFound, "draft", &format!("{ws}/{name}"))
}

pub async fn list(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    // An unknown workspace is a 404 like on every other workspace route, not an empty
    // list that would read as "no drafts yet".
    ensure_workspace(&gw, &ws).await?;
    let drafts = gw.store().list_drafts(&ws, &p.prefix).await?;
    // The list is for the sidebar: names and times, not every module's code.
    Ok(Json(Value::Array(
        drafts
            .iter()
            .map(|d| json!({"name": d.name, "workspace": d.workspace, "filename": d.filename, "created_at": d.created_at, "updated_at": d.updated_at}))
            .collect(),
    )))
}

pub async fn get(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    ensure_workspace(&gw, &ws).await?;
    let d = gw
        .store()
        .draft(&ws, &p.prefix, &name)
        .await?
        .ok_or_else(|| not_found(&ws, &name))?;
    Ok(Json(json!(d)))
}

#[derive(Deserialize)]
pub struct SaveDraft {
    source: String,
    filename: Option<String>,
}

pub async fn save(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
    JsonBody(b): JsonBody<SaveDraft>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    // Named like the feed it will become, so the name follows the feed rules.
    names::validate("feed", &name)?;
    let m = Module {
        filename: b.filename.unwrap_or_else(|| format!("{name}.py")),
        source: b.source,
    };
    check_module(&m)?;
    let d = gw
        .store()
        .save_draft(&ws, &p.prefix, &name, &m.filename, &m.source)
        .await?;
    Ok(Json(json!(d)))
}

pub async fn delete(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult {
    p.authorize(&ws, true)?;
    ensure_workspace(&gw, &ws).await?;
    if !gw.store().delete_draft(&ws, &p.prefix, &name).await? {
        return Err(not_found(&ws, &name).into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
