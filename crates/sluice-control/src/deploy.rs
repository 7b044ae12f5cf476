//! Deploy and run: a module's source goes through the same steps either way (resolve
//! dependencies, load it in a real worker, discover its feeds); deploy then stores
//! immutable revisions and makes them live in one transaction, run calls one feed once.

use crate::{
    Caller,
    handlers::{ApiResult, JsonBody, ensure_workspace},
};
use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::{Code, Error, FeedSignature, names};
use sluice_gateway::{
    Gateway, Principal,
    cluster::Rollout,
    encode::{Format, encode},
    problem::problem_response,
};
use sluice_runtime::ModuleSpec;
use sluice_store::NewRevision;
use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use tokio::sync::mpsc;

/// Feed modules are code, not data: 1 MiB is generous and keeps the store lean.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Throwaway modules (inspection, `sluice run`) get negative ids so their pools never
/// collide with a stored revision's.
static SCRATCH_ID: AtomicI64 = AtomicI64::new(-1);

fn scratch_id() -> i64 {
    SCRATCH_ID.fetch_sub(1, Ordering::SeqCst)
}

#[derive(Deserialize)]
pub struct Module {
    pub(crate) source: String,
    pub(crate) filename: String,
}

pub(crate) fn check_module(m: &Module) -> Result<(), Error> {
    if m.source.len() > MAX_SOURCE_BYTES {
        return Err(Error::new(
            Code::PayloadTooLarge,
            format!(
                "{} is {} bytes; feed modules are limited to {MAX_SOURCE_BYTES}: move data out of the code",
                m.filename,
                m.source.len()
            ),
        ));
    }
    if !m.filename.ends_with(".py") || m.filename.contains('/') || m.filename.contains('\\') {
        return Err(Error::new(
            Code::BadRequest,
            format!(
                "filename '{}' must be a bare name ending in .py",
                m.filename
            ),
        ));
    }
    Ok(())
}

type Progress = Arc<dyn Fn(String) + Send + Sync>;

/// Where a watched deploy's build log goes (feed, line); `None`: the deploy does not wait
/// for the cluster (a client that did not ask for a stream).
type BuildLog = Option<Arc<dyn Fn(&str, String) + Send + Sync>>;

/// Resolve, load and discover. Returns the module spec (with its env) and its feeds.
async fn load(
    gw: &Gateway,
    m: &Module,
    progress: &Progress,
) -> Result<(ModuleSpec, Vec<FeedSignature>), Error> {
    check_module(m)?;
    let p = progress.clone();
    let prepared = gw
        .runtime()
        .prepare(&m.source, &move |msg: String| p(msg))
        .await?;
    progress(format!("loading {} in a worker", m.filename));
    let spec = ModuleSpec {
        revision_id: scratch_id(),
        filename: m.filename.clone(),
        source: m.source.clone(),
        env_hash: prepared.env_hash.clone(),
        lock: prepared.lock.clone(),
    };
    let feeds = gw.runtime().inspect(&spec).await?;
    if feeds.is_empty() {
        return Err(Error::new(
            Code::InvalidFeedModule,
            format!(
                "{} defines no feed: decorate a function with @sluice.feed",
                m.filename
            ),
        )
        .with("file", m.filename.as_str()));
    }
    for f in &feeds {
        names::validate("feed", &f.name).map_err(|e| e.with("file", m.filename.as_str()))?;
        if let Some(p) = f
            .params
            .iter()
            .find(|p| sluice_gateway::RESERVED_PARAMS.contains(&p.name.as_str()))
        {
            return Err(Error::new(
                Code::InvalidFeedModule,
                format!(
                    "feed '{}' has a parameter named '{}', which the gateway keeps for itself ({}): rename it",
                    f.name,
                    p.name,
                    sluice_gateway::RESERVED_PARAMS.join(", ")
                ),
            )
            .with("file", m.filename.as_str())
            .with("parameter", p.name.as_str()));
        }
    }
    Ok((spec, feeds))
}

async fn do_deploy(
    gw: &Gateway,
    p: &Principal,
    ws: &str,
    m: Module,
    progress: Progress,
    build_log: BuildLog,
) -> Result<Value, Error> {
    let (spec, feeds) = load(gw, &m, &progress).await?;
    progress(format!("publishing {} feed(s)", feeds.len()));
    let mut before = Vec::new();
    for f in &feeds {
        before.push(gw.store().live_revision(ws, &f.name).await?);
    }
    let revisions = feeds
        .iter()
        .map(|sig| NewRevision {
            feed: sig.name.clone(),
            filename: m.filename.clone(),
            source: m.source.clone(),
            lock: spec.lock.clone(),
            env_hash: spec.env_hash.clone(),
            signature: sig.clone(),
            created_by: p.name.clone(),
        })
        .collect();
    let stored = gw.store().deploy(ws, revisions).await?;
    // The switch is the store transaction above; from here requests find the new
    // revision, and the old pools drain (in-flight calls finish on the old code).
    for (rev, old) in stored.iter().zip(before) {
        gw.invalidate_feed(ws, &rev.feed);
        if let Some(old) = old {
            gw.runtime().retire(old.id).await;
        }
    }
    tracing::info!(workspace = %ws, feeds = stored.len(), by = %p.name, "deployed {}", m.filename);
    let mut out: Vec<Value> = stored.iter().map(|r| json!({
        "name": r.feed, "revision": r.number, "url": gw.feed_url(ws, &r.feed), "env_hash": r.env_hash,
    })).collect();
    // runtime = kubernetes: the store revision is the record; the Feed object is what the
    // operator builds and rolls out. Its status comes back as the feed's `cluster` state.
    if let Some(cluster) = gw.cluster() {
        for (rev, o) in stored.iter().zip(out.iter_mut()) {
            progress(format!(
                "writing Feed {} (revision {}) to the cluster",
                rev.feed, rev.number
            ));
            // Pods are stamped by the API server's clock: allow it to be a little behind.
            let since = chrono::Utc::now() - chrono::Duration::seconds(5);
            let mut c = cluster.deploy(ws, rev).await?;
            if let Some(log) = &build_log {
                progress(format!("building and rolling out {}", rev.feed));
                let feed = rev.feed.clone();
                let report = |r: Rollout| match r {
                    Rollout::Waiting(w) => progress(format!("{feed}: {w}")),
                    Rollout::BuildLog(line) => log(&feed, line),
                };
                c = cluster.follow(ws, rev, since, &report).await?;
            }
            // The watch of the cluster keeps routes current; this only spares a first call
            // the wait for it. A route already known stays: during a rollout the previous
            // revision's pods keep serving behind the same Service.
            if c.ready && gw.agent_route(ws, &rev.feed).is_none() {
                gw.set_agent_route(ws, &rev.feed, c.route());
            }
            o["cluster"] = json!({
                "ready": c.ready, "live_revision": c.live_revision, "waiting_for": c.waiting_for,
            });
        }
    }
    Ok(json!({ "feeds": out }))
}

pub async fn deploy(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    JsonBody(m): JsonBody<Module>,
) -> ApiResult {
    p.authorize(&ws, true)?;
    ensure_workspace(&gw, &ws).await?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if !streaming {
        let quiet: Progress = Arc::new(|msg| tracing::debug!("deploy: {msg}"));
        let body = do_deploy(&gw, &p, &ws, m, quiet, None).await?;
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    // Progress as NDJSON while the work runs in its own task: a client that goes away
    // does not cancel a deploy half-way.
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let ptx = tx.clone();
    let progress: Progress = Arc::new(move |msg| {
        let _ = ptx.send(line(&json!({"event": "progress", "message": msg})));
    });
    // runtime = kubernetes: the image build's log, line by line, while it runs.
    let ltx = tx.clone();
    let build_log: BuildLog = Some(Arc::new(move |feed: &str, l: String| {
        let _ = ltx.send(line(&json!({"event": "log", "feed": feed, "line": l})));
    }));
    tokio::spawn(async move {
        let editor = p.is_editor_of(&ws);
        let end = match do_deploy(&gw, &p, &ws, m, progress, build_log).await {
            Ok(mut v) => {
                v["event"] = "done".into();
                v
            }
            Err(e) => json!({"event": "error", "problem": e.problem(editor, None)}),
        };
        let _ = tx.send(line(&end));
    });
    let stream = tokio_stream_from(rx);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream.fuse()),
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<String>,
) -> impl futures::Stream<Item = Result<String, Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

fn line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Load a module in a worker without deploying or running it: its feeds' signatures (the
/// IDE builds its parameter form from them), or the same `invalid_feed_module` error with
/// `file` and `line` that a deploy would answer.
pub async fn inspect(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    JsonBody(m): JsonBody<Module>,
) -> Response {
    let editor = p.is_editor_of(&ws);
    let result = async {
        p.authorize(&ws, true)?;
        ensure_workspace(&gw, &ws).await?;
        let quiet: Progress = Arc::new(|msg| tracing::debug!("inspect: {msg}"));
        let (_, feeds) = load(&gw, &m, &quiet).await?;
        Ok::<_, Error>(json!({ "feeds": feeds }))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem_response(&e, editor),
    }
}

#[derive(Deserialize)]
pub struct RunRequest {
    source: String,
    filename: String,
    feed: Option<String>,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    limit: Option<usize>,
}

/// Run a module's feed once without deploying: what `sluice run` and the IDE's preview use.
pub async fn run(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    JsonBody(r): JsonBody<RunRequest>,
) -> Response {
    let editor = p.is_editor_of(&ws);
    match do_run(&gw, &p, &ws, r).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem_response(&e, editor),
    }
}

async fn do_run(gw: &Gateway, p: &Principal, ws: &str, r: RunRequest) -> Result<Value, Error> {
    p.authorize(ws, true)?;
    ensure_workspace(gw, ws).await?;
    let started = std::time::Instant::now();
    let m = Module {
        source: r.source,
        filename: r.filename,
    };
    let quiet: Progress = Arc::new(|msg| tracing::debug!("run: {msg}"));
    let (spec, feeds) = load(gw, &m, &quiet).await?;
    let sig = match &r.feed {
        Some(name) => feeds.iter().find(|f| &f.name == name).ok_or_else(|| {
            let names: Vec<&str> = feeds.iter().map(|f| f.name.as_str()).collect();
            Error::new(
                Code::FeedNotFound,
                format!(
                    "{} has no feed '{name}': it defines {}",
                    m.filename,
                    names.join(", ")
                ),
            )
        })?,
        None if feeds.len() == 1 => &feeds[0],
        None => {
            let names: Vec<&str> = feeds.iter().map(|f| f.name.as_str()).collect();
            return Err(Error::new(
                Code::BadRequest,
                format!(
                    "{} defines several feeds ({}): pick one with --feed",
                    m.filename,
                    names.join(", ")
                ),
            ));
        }
    };
    let raw: Vec<(String, String)> = r
        .params
        .iter()
        .flat_map(|(k, v)| match v {
            Value::String(s) => vec![(k.clone(), s.clone())],
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    (
                        k.clone(),
                        i.as_str().map(str::to_string).unwrap_or(i.to_string()),
                    )
                })
                .collect(),
            other => vec![(k.clone(), other.to_string())],
        })
        .collect();
    let params = sig.coerce(&raw, &[])?;
    let limit = r.limit.unwrap_or(100).min(100_000);
    let result = run_and_collect(gw, ws, &spec, &sig.name, &params, limit).await;
    gw.runtime().retire(spec.revision_id).await;
    let (columns, rows, row_count, logs) = result?;
    Ok(json!({
        "feed": sig.name,
        "columns": columns,
        "rows": rows,
        "row_count": row_count,
        "truncated": row_count > limit as u64,
        "stdout": logs.as_ref().map(|l| l.stdout.clone()).unwrap_or_default(),
        "stderr": logs.as_ref().map(|l| l.stderr.clone()).unwrap_or_default(),
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

type Collected = (
    Vec<String>,
    Vec<Value>,
    u64,
    Option<sluice_runtime::CallLogs>,
);

async fn run_and_collect(
    gw: &Gateway,
    ws: &str,
    spec: &ModuleSpec,
    feed: &str,
    params: &sluice_core::Params,
    limit: usize,
) -> Result<Collected, Error> {
    // The draft, not the deployed revision: with runtime = kubernetes `execute` would call
    // the feed's agent, which serves the code of its image.
    let exec = gw.execute_here(ws, spec, feed, params, "run").await?;
    let schema = exec.schema.clone();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // Count every row, keep the first `limit`: the preview shows the true size.
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut batches = exec.batches;
    while let Some(b) = batches.next().await {
        let b = b?;
        let room = limit.saturating_sub(total as usize);
        if room > 0 {
            kept.push(b.slice(0, room.min(b.num_rows())));
        }
        total += b.num_rows() as u64;
    }
    drop(batches);
    let logs = exec.logs.wait().await;
    let mut json_bytes = Vec::new();
    let mut s = encode(
        Format::Json,
        schema,
        futures::stream::iter(kept.into_iter().map(Ok)).boxed(),
    );
    while let Some(chunk) = s.next().await {
        json_bytes.extend_from_slice(&chunk?);
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&json_bytes)
        .map_err(|e| Error::internal(format!("could not re-read encoded rows: {e}")))?;
    let rows = objects
        .into_iter()
        .map(|mut o| {
            Value::Array(
                columns
                    .iter()
                    .map(|c| o.remove(c).unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    Ok((columns, rows, total, logs))
}

/// Deploy a module from inside the server (the examples `sluice up` starts with).
pub async fn deploy_module(
    gw: &Gateway,
    by: &Principal,
    ws: &str,
    filename: &str,
    source: &str,
) -> Result<Value, Error> {
    let log: Progress = Arc::new(|msg| tracing::info!("{msg}"));
    do_deploy(
        gw,
        by,
        ws,
        Module {
            source: source.to_string(),
            filename: filename.to_string(),
        },
        log,
        None,
    )
    .await
}
