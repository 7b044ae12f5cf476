//! Small handlers of the control API: reads, rollbacks, keys, sources, logs.

use crate::Caller;
use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Path, Query, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sluice_core::{Code, Error, Role, keys, names};
use sluice_gateway::{ApiError, Gateway};
use sluice_sources::SourceConfig;
use sluice_store::{FeedRecord, NewKey, Revision};
use std::time::Duration;

pub type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON body whose rejections are problem documents like every other error.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::new(
                Code::PayloadTooLarge,
                "the request body is larger than the server accepts (2 MiB): feed modules hold code, not data",
            )
            .into()),
            Err(e) => Err(Error::new(
                Code::BadRequest,
                format!("invalid JSON body: {}", e.body_text()),
            )
            .into()),
        }
    }
}

pub fn feed_json(gw: &Gateway, f: &FeedRecord, live: Option<&Revision>) -> Value {
    json!({
        "name": f.name,
        "workspace": f.workspace,
        "doc": live.map(|r| r.signature.doc.clone()).unwrap_or_default(),
        "params": live.map(|r| json!(r.signature.params)).unwrap_or(json!([])),
        "cache": live.and_then(|r| r.signature.cache.clone()),
        "live_revision": f.live_revision,
        "url": gw.feed_url(&f.workspace, &f.name),
        "created_at": f.created_at,
        "updated_at": f.updated_at,
    })
}

pub fn revision_json(r: &Revision, live: Option<i64>) -> Value {
    json!({
        "number": r.number,
        "feed": r.feed,
        "filename": r.filename,
        "env_hash": r.env_hash,
        "lock": r.lock,
        "signature": r.signature,
        "created_at": r.created_at,
        "created_by": r.created_by,
        "live": live == Some(r.number),
    })
}

pub async fn whoami(Caller(p): Caller) -> Json<Value> {
    Json(json!({"name": p.name, "prefix": p.prefix, "role": p.role, "workspace": p.workspace}))
}

pub async fn list_workspaces(
    State(gw): State<Gateway>,
    Caller(p): Caller,
) -> ApiResult<Json<Value>> {
    let all = gw.store().list_workspaces().await?;
    let visible: Vec<_> = all
        .into_iter()
        .filter(|w| p.role.is_admin() || p.workspace.as_deref() == Some(w.name.as_str()))
        .collect();
    Ok(Json(json!(visible)))
}

#[derive(Deserialize)]
pub struct NewWorkspace {
    name: String,
}

pub async fn create_workspace(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<NewWorkspace>,
) -> ApiResult {
    p.require_admin()?;
    let ws = gw.store().create_workspace(&b.name).await?;
    Ok((StatusCode::CREATED, Json(json!(ws))).into_response())
}

pub async fn list_feeds(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    ensure_workspace(&gw, &ws).await?;
    let feeds = gw.store().list_feeds(&ws).await?;
    let mut out: Vec<Value> = feeds
        .iter()
        .map(|(f, r)| feed_json(&gw, f, r.as_ref()))
        .collect();
    crate::cluster::merge_list(&gw, &ws, &mut out).await?;
    Ok(Json(Value::Array(out)))
}

pub async fn ensure_workspace(gw: &Gateway, ws: &str) -> Result<(), Error> {
    match gw.store().workspace(ws).await? {
        Some(_) => Ok(()),
        None => Err(Error::not_found(Code::WorkspaceNotFound, "workspace", ws)),
    }
}

async fn feed_or_404(gw: &Gateway, ws: &str, feed: &str) -> Result<FeedRecord, Error> {
    gw.store()
        .feed(ws, feed)
        .await?
        .ok_or_else(|| Error::not_found(Code::FeedNotFound, "feed", &format!("{ws}/{feed}")))
}

/// A feed with a log: the store's, or (runtime = kubernetes) one only the cluster has,
/// whose log starts with the first call its gateway serves (see `Store::cluster_revision`).
async fn logged_feed_or_404(gw: &Gateway, ws: &str, feed: &str) -> Result<(), Error> {
    if gw.cluster_route(ws, feed).is_some() {
        return Ok(());
    }
    feed_or_404(gw, ws, feed).await.map(|_| ())
}

/// A page of a feed's log; a cluster feed not called yet has none.
async fn invocations(
    gw: &Gateway,
    ws: &str,
    feed: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<sluice_store::Invocation>, Error> {
    match gw.store().invocations(ws, feed, after, limit).await {
        Err(e) if e.code == Code::FeedNotFound && gw.cluster_route(ws, feed).is_some() => {
            Ok(Vec::new())
        }
        other => other,
    }
}

pub async fn get_feed(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    let stored = match gw.store().feed(&ws, &feed).await? {
        Some(f) => {
            let live = gw.store().live_revision(&ws, &feed).await?;
            Some(feed_json(&gw, &f, live.as_ref()))
        }
        None => None,
    };
    crate::cluster::merge_one(&gw, &ws, &feed, stored)
        .await?
        .map(Json)
        .ok_or_else(|| Error::not_found(Code::FeedNotFound, "feed", &format!("{ws}/{feed}")).into())
}

pub async fn delete_feed(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
) -> ApiResult {
    p.authorize(&ws, true)?;
    let live = gw.store().live_revision(&ws, &feed).await?;
    // runtime = kubernetes: the Feed object goes first, so a failure leaves the feed whole
    // (and the delete can be retried) rather than serving pods the API no longer lists.
    if let Some(cluster) = gw.cluster() {
        feed_or_404(&gw, &ws, &feed).await?;
        cluster.delete(&ws, &feed).await?;
        gw.set_cluster_route(&ws, &feed, None);
    }
    if !gw.store().delete_feed(&ws, &feed).await? {
        return Err(Error::not_found(Code::FeedNotFound, "feed", &format!("{ws}/{feed}")).into());
    }
    gw.invalidate_feed(&ws, &feed);
    // Its links went with it: a feed created again under the name must not open to them.
    gw.invalidate_links();
    if let Some(r) = live {
        gw.runtime().retire(r.id).await;
    }
    tracing::info!(workspace = %ws, feed = %feed, by = %p.name, "feed deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_revisions(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    let f = feed_or_404(&gw, &ws, &feed).await?;
    let revs = gw.store().list_revisions(&ws, &feed).await?;
    Ok(Json(Value::Array(
        revs.iter()
            .map(|r| revision_json(r, f.live_revision))
            .collect(),
    )))
}

/// One revision with its code: what the IDE opens, diffs and rolls back to. Code is
/// for editors, like tracebacks.
pub async fn get_revision(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    let f = feed_or_404(&gw, &ws, &feed).await?;
    let r = gw
        .store()
        .revision(&ws, &feed, number)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                Code::RevisionNotFound,
                "revision",
                &format!("{ws}/{feed}@{number}"),
            )
        })?;
    let mut v = revision_json(&r, f.live_revision);
    v["source"] = Value::String(r.source);
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct Rollback {
    revision: i64,
}

pub async fn rollback(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
    JsonBody(b): JsonBody<Rollback>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, true)?;
    let before = gw.store().live_revision(&ws, &feed).await?;
    let rev = gw.store().set_live(&ws, &feed, b.revision).await?;
    gw.invalidate_feed(&ws, &feed);
    if let Some(old) = before.filter(|o| o.id != rev.id) {
        gw.runtime().retire(old.id).await;
    }
    // runtime = kubernetes: the Feed's spec gets that revision (its code, lock, number);
    // the operator rolls it out as it would a deploy.
    let state = match gw.cluster() {
        Some(cluster) => {
            let c = cluster.deploy(&ws, &rev).await?;
            if c.ready && gw.agent_route(&ws, &feed).is_none() {
                gw.set_agent_route(&ws, &feed, c.route());
            }
            Some(crate::cluster::state_json(&c))
        }
        None => None,
    };
    tracing::info!(workspace = %ws, feed = %feed, revision = rev.number, by = %p.name, "rolled back");
    let f = feed_or_404(&gw, &ws, &feed).await?;
    let mut out = feed_json(&gw, &f, Some(&rev));
    if let Some(state) = state {
        out["managed_by"] = "sluice".into();
        out["cluster"] = state;
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct LogQuery {
    after: Option<i64>,
    limit: Option<i64>,
    #[serde(default)]
    follow: bool,
}

pub async fn logs(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    p.authorize(&ws, true)?;
    logged_feed_or_404(&gw, &ws, &feed).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let first = invocations(&gw, &ws, &feed, q.after, limit).await?;
    if !q.follow {
        return Ok(Json(json!(first)).into_response());
    }
    // NDJSON that stays open: the backlog, then new invocations as they are recorded.
    let after = first.last().map(|i| i.id).or(q.after).unwrap_or(0);
    let backlog = futures::stream::iter(first.into_iter().map(|i| Ok::<_, Error>(line(&i))));
    let live = futures::stream::unfold(after, move |mut after| {
        let gw = gw.clone();
        let (ws, feed) = (ws.clone(), feed.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match invocations(&gw, &ws, &feed, Some(after), 200).await {
                    Ok(batch) if batch.is_empty() => continue,
                    Ok(batch) => {
                        after = batch.last().map(|i| i.id).unwrap_or(after);
                        let chunk: String = batch.iter().map(line).collect();
                        return Some((Ok(chunk), after));
                    }
                    Err(e) => return Some((Err(e), after)),
                }
            }
        }
    });
    let body = Body::from_stream(backlog.chain(live).fuse());
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn line<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}

pub async fn list_keys(State(gw): State<Gateway>, Caller(p): Caller) -> ApiResult<Json<Value>> {
    if !p.role.can_write() {
        return Err(
            Error::new(Code::Forbidden, "listing keys needs an editor or admin key").into(),
        );
    }
    let scope = if p.role.is_admin() {
        None
    } else {
        p.workspace.as_deref()
    };
    let keys = gw.store().list_keys(scope).await?;
    Ok(Json(Value::Array(keys.iter().map(key_json).collect())))
}

fn key_json(k: &sluice_store::KeyRecord) -> Value {
    json!({
        "name": k.name, "prefix": k.prefix, "role": k.role, "workspace": k.workspace,
        "created_at": k.created_at, "last_used_at": k.last_used_at,
    })
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    role: Role,
    workspace: Option<String>,
}

pub async fn create_key(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<CreateKey>,
) -> ApiResult {
    if b.name.trim().is_empty() {
        return Err(Error::new(
            Code::BadRequest,
            "a key needs a name, e.g. the person or tool that will use it",
        )
        .into());
    }
    match (b.role, &b.workspace) {
        (Role::Admin, Some(_)) => {
            return Err(Error::new(
                Code::BadRequest,
                "admin keys are platform-wide: leave out the workspace",
            )
            .into());
        }
        (Role::Admin, None) => p.require_admin()?,
        (_, None) => {
            return Err(Error::new(
                Code::BadRequest,
                format!("{} keys belong to a workspace: pass one", b.role),
            )
            .into());
        }
        (_, Some(ws)) => p.authorize(ws, true)?,
    }
    let k = keys::generate();
    // The SCRAM-SHA-256 verifier for the PostgreSQL endpoint (4096 PBKDF2 rounds, off
    // the async workers).
    let secret = k.secret.clone();
    let scram = tokio::task::spawn_blocking(move || keys::ScramVerifier::generate(&secret))
        .await
        .map_err(|e| Error::internal(format!("making the key's SCRAM verifier failed: {e}")))?;
    let rec = gw
        .store()
        .create_key_with_scram(
            NewKey {
                name: b.name,
                prefix: k.prefix,
                hash: k.hash,
                role: b.role,
                workspace: b.workspace,
            },
            Some(scram.to_string()),
        )
        .await?;
    let mut body = key_json(&rec);
    body["secret"] = Value::String(k.secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn revoke_key(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(prefix): Path<String>,
) -> ApiResult {
    let target = gw.store().key_by_prefix(&prefix).await?;
    let Some(target) = target else {
        return Err(Error::not_found(Code::NotFound, "key", &prefix).into());
    };
    match &target.workspace {
        _ if p.role.is_admin() => {}
        Some(ws) => p.authorize(ws, true)?,
        None => p.require_admin()?,
    }
    gw.store().revoke_key(&prefix).await?;
    gw.invalidate_keys();
    tracing::info!(key = %prefix, by = %p.name, "key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn source_json(s: &sluice_store::SourceRecord) -> Value {
    json!({"name": s.name, "kind": s.kind, "workspaces": s.workspaces, "created_at": s.created_at})
}

pub async fn list_sources(State(gw): State<Gateway>, Caller(p): Caller) -> ApiResult<Json<Value>> {
    let list = match (&p.workspace, p.role.is_admin()) {
        (_, true) => gw.store().list_sources().await?,
        (Some(ws), false) => gw.store().sources_for_workspace(ws).await?,
        (None, false) => vec![],
    };
    Ok(Json(Value::Array(list.iter().map(source_json).collect())))
}

#[derive(Deserialize)]
pub struct AddSource {
    name: String,
    kind: String,
    config: Value,
    #[serde(default)]
    workspaces: Vec<String>,
}

pub async fn add_source(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<AddSource>,
) -> ApiResult {
    p.require_admin()?;
    names::validate("data source", &b.name)?;
    let mut cfg_json = match b.config {
        Value::Object(m) => m,
        _ => {
            return Err(Error::new(
                Code::BadRequest,
                "config must be an object: {\"path\": ...} or {\"url\": ...}",
            )
            .into());
        }
    };
    cfg_json.insert("kind".into(), Value::String(b.kind.clone()));
    let cfg: SourceConfig = serde_json::from_value(Value::Object(cfg_json.clone())).map_err(|e| {
        Error::new(
            Code::BadRequest,
            format!("invalid data source config ({e}): kind 'sqlite' takes {{\"path\"}}, kind 'postgres' takes {{\"url\"}}"),
        )
    })?;
    for ws in &b.workspaces {
        ensure_workspace(&gw, ws).await?;
    }
    gw.sources().test(&cfg).await?;
    cfg_json.remove("kind");
    gw.store()
        .upsert_source(&b.name, &b.kind, &Value::Object(cfg_json))
        .await?;
    for ws in &b.workspaces {
        gw.store().grant_source(&b.name, ws).await?;
    }
    gw.sources().invalidate(&b.name);
    gw.invalidate_sources();
    let rec = gw
        .store()
        .source(&b.name)
        .await?
        .ok_or_else(|| Error::internal("source vanished after saving"))?;
    Ok((StatusCode::CREATED, Json(source_json(&rec))).into_response())
}

#[derive(Deserialize)]
pub struct Grant {
    workspace: String,
}

pub async fn grant_source(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<Grant>,
) -> ApiResult {
    p.require_admin()?;
    ensure_workspace(&gw, &b.workspace).await?;
    if gw.store().source(&name).await?.is_none() {
        return Err(Error::not_found(Code::SourceNotFound, "data source", &name).into());
    }
    gw.store().grant_source(&name, &b.workspace).await?;
    gw.invalidate_sources();
    Ok(StatusCode::NO_CONTENT.into_response())
}
