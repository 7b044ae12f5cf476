//! `GET /feeds/{ws}/{feed}`: the endpoint BI tools and pandas load.

use crate::{
    auth::query_pairs,
    cache::{MAX_ENTRY_BYTES, ResultCache, parse_ttl},
    encode::{Format, encode},
    problem::ApiError,
    state::{Gateway, Logs, Picked, module_of},
};
use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use sluice_core::{Code, Error, FeedSignature, Params, params::params_to_json};
use sluice_store::{NewInvocation, Revision};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Query names that belong to the gateway, not to the feed.
pub const RESERVED: &[&str] = &["format", "api_key"];

pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// `?format=` wins over `Accept`; a browser's `*/*` gets JSON.
pub fn negotiate(pairs: &[(String, String)], headers: &HeaderMap) -> Result<Format, Error> {
    if let Some((_, f)) = pairs.iter().find(|(k, _)| k == "format") {
        return Format::from_query(f).ok_or_else(|| {
            Error::new(
                Code::UnsupportedFormat,
                format!("format '{f}' is not supported: use json, csv, ndjson or arrow"),
            )
            .with("parameter", "format")
            .with("value", f.as_str())
        });
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_accept)
        .unwrap_or(Format::Json))
}

/// A failure before the call started (metrics only) or one already written to the
/// invocation log.
enum Failure {
    Early(Error),
    Logged(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Early(e)
    }
}

pub async fn get_feed(
    State(gw): State<Gateway>,
    Path((ws, feed)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let principal = match gw.authenticate(&headers, query.as_deref()).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    respond(
        &gw,
        &ws,
        &feed,
        query.as_deref(),
        &headers,
        &principal,
        started,
    )
    .await
}

/// A feed's rows for a caller who is already known: the one path behind `/feeds/{ws}/{feed}`
/// and the secret links of `/links/{token}`, so both check parameters, negotiate formats,
/// cache, log and fail alike.
pub(crate) async fn respond(
    gw: &Gateway,
    ws: &str,
    feed: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    principal: &crate::Principal,
    started: Instant,
) -> Response {
    let rid = request_id(headers);
    let editor = principal.is_editor_of(ws);
    match serve(gw, ws, feed, query, headers, &rid, principal, started).await {
        Ok(r) => r,
        Err(e) => {
            // Only feeds that exist get metric labels: random names must not grow the registry.
            let e = match e {
                Failure::Logged(e) => e,
                Failure::Early(e) => {
                    if !matches!(e.code, Code::WorkspaceNotFound | Code::FeedNotFound) {
                        let secs = started.elapsed().as_secs_f64();
                        gw.inner.metrics.record(
                            ws,
                            feed,
                            e.status(),
                            secs,
                            0,
                            Some(e.code.as_str()),
                        );
                    }
                    e
                }
            };
            ApiError::for_editor(e, editor).into_response()
        }
    }
}

/// The revision that serves one call: the store's live one run by the local runtime, or the
/// one of the feed's agents `pick_agent` chose (runtime = kubernetes; the feed may be one
/// only the cluster knows, the agent a canary).
enum Run {
    Local(Arc<Revision>),
    Agent(Picked),
}

impl Run {
    fn signature(&self) -> &FeedSignature {
        match self {
            Run::Local(rev) => &rev.signature,
            Run::Agent(p) => &p.signed.signature,
        }
    }

    fn revision(&self) -> String {
        match self {
            Run::Local(rev) => rev.number.to_string(),
            Run::Agent(p) => p.revision.clone(),
        }
    }

    /// The store's number of the revision, which the invocation log shows.
    fn revision_number(&self) -> Option<i64> {
        match self {
            Run::Local(rev) => Some(rev.number),
            Run::Agent(p) => p.signed.number,
        }
    }

    /// The store's id of the revision, when the store has it: what the call is counted
    /// under in the per-minute traffic.
    fn revision_id(&self) -> Option<i64> {
        match self {
            Run::Local(rev) => Some(rev.id),
            Run::Agent(p) => p.signed.revision_id,
        }
    }

    /// What result-cache keys name the code by: the store's revision id when it has one
    /// (shared with OData and the PostgreSQL wire), else the cluster's revision name.
    fn cache_scope(&self, ws: &str, feed: &str) -> String {
        match self {
            Run::Local(rev) => rev.id.to_string(),
            Run::Agent(p) => match p.signed.revision_id {
                Some(id) => id.to_string(),
                None => format!("{ws}/{feed}@{}", p.revision),
            },
        }
    }
}

/// Run the call on the agent `pick_agent` chose. A canary that cannot be reached leaves the
/// call to the live revision, whose own signature checks the parameters again (the
/// canary's may differ); `params` are then the ones that ran.
async fn call_agent(
    gw: &Gateway,
    ws: &str,
    feed: &str,
    picked: &Picked,
    pairs: &[(String, String)],
    params: &mut Params,
    rid: &str,
) -> sluice_core::Result<crate::Execution> {
    match gw.call_agent(picked.target(), params, rid).await {
        Err(e) if e.code == Code::RuntimeUnavailable && picked.canary => {
            tracing::warn!(workspace = %ws, feed = %feed, revision = %picked.revision, "canary unreachable, calling the live agent: {e}");
            let live = gw.pick_agent(ws, feed, rid, true).await?;
            *params = live.signed.signature.coerce(pairs, RESERVED)?;
            gw.call_agent(live.target(), params, rid).await
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    gw: &Gateway,
    ws: &str,
    feed: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    rid: &str,
    principal: &crate::Principal,
    started: Instant,
) -> Result<Response, Failure> {
    principal.authorize(ws, false)?;
    // Which revision serves the call is decided first: its signature checks the parameters,
    // and its name is what the call is logged and cached under.
    let run = if gw.uses_agents() {
        Run::Agent(gw.pick_agent(ws, feed, rid, false).await?)
    } else {
        Run::Local(gw.live_revision(ws, feed).await?)
    };
    let pairs = query_pairs(query);
    let format = negotiate(&pairs, headers)?;
    let mut params = run.signature().coerce(&pairs, RESERVED)?;
    let params_json = params_to_json(&params);

    let mut finish = Finish {
        gw: gw.clone(),
        ws: ws.to_string(),
        feed: feed.to_string(),
        revision: run.revision(),
        revision_number: run.revision_number(),
        revision_id: run.revision_id(),
        logged: false,
        request_id: rid.to_string(),
        params: params_json.clone(),
        started,
        rows: Arc::new(AtomicU64::new(0)),
        logs: None,
        permit: None,
        limiter: gw.limiter(ws, feed),
    };

    let ttl = run
        .signature()
        .cache
        .as_deref()
        .and_then(parse_ttl)
        .filter(|t| !t.is_zero());
    let mut cache_key =
        ttl.map(|_| ResultCache::key(run.cache_scope(ws, feed), format.extension(), &params_json));
    if let Some((body, rows)) = cache_key.as_ref().and_then(|k| gw.inner.cache.get(k)) {
        gw.inner
            .metrics
            .cache_hits
            .get_or_create(&crate::metrics::Metrics::feed(ws, feed))
            .inc();
        finish.rows.store(rows, Ordering::Relaxed);
        let revision = finish.revision.clone();
        finish.done(200, None);
        return Ok(response(format, feed, &revision, Body::from(body), true));
    }

    let permit = finish.limiter.acquire(feed).await;
    let exec = match permit {
        Ok(p) => {
            finish.permit = Some(p);
            match &run {
                Run::Local(rev) => gw.execute(ws, &module_of(rev), feed, &params, rid).await,
                Run::Agent(picked) => {
                    call_agent(gw, ws, feed, picked, &pairs, &mut params, rid).await
                }
            }
        }
        Err(e) => Err(e),
    };
    let exec = match exec {
        Ok(exec) => exec,
        Err(e) => {
            finish.fail(&e);
            return Err(Failure::Logged(e));
        }
    };
    // The agent names the revision that really served the call: a canary's fallback to the
    // live revision, or mid-rollout a pod of the previous one. Its rows are not cached
    // under the revision that was meant.
    if let Some(served) = exec.revision.as_ref().filter(|r| **r != finish.revision) {
        finish.revision = served.clone();
        finish.revision_number = None;
        finish.params = params_to_json(&params);
        cache_key = None;
    }
    let revision = finish.revision.clone();
    finish.logs = Some(exec.logs);
    let rows = finish.rows.clone();
    let batches = exec
        .batches
        .inspect_ok(move |b| {
            rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        })
        .boxed();
    let mut body = encode(format, exec.schema, batches);
    // A passthrough's rows are read and encoded here, in Rust, however many there are: that
    // is work for the compute runtime, never for the threads that answer small calls.
    if exec.passthrough {
        body = gw.offload(body);
    }

    // A small result is usually complete already (the worker's rows and its END arrived
    // together): answer it whole, with a Content-Length and no chunked framing, and an
    // error that comes before any byte as a real problem response.
    let mut ready = Vec::new();
    let mut failed = None;
    // Two polls at most: the encoder yields a chunk only once it holds `CHUNK_BYTES`, or
    // at the end, so a small result is one chunk then the end, and a big one streams as
    // it comes instead of being gathered here.
    for _ in 0..2 {
        match futures::FutureExt::now_or_never(body.next()) {
            Some(Some(Ok(chunk))) => ready.push(chunk),
            Some(Some(Err(e))) if ready.is_empty() => {
                finish.fail(&e);
                return Err(Failure::Logged(e));
            }
            Some(Some(Err(e))) => {
                failed = Some(e);
                break;
            }
            Some(None) => {
                let whole = concat(ready);
                let keep = cache_key
                    .zip(ttl)
                    .filter(|_| whole.len() <= MAX_ENTRY_BYTES)
                    .map(|(k, t)| (k, t, whole.clone()));
                finish.succeeded(keep);
                return Ok(response(format, feed, &revision, Body::from(whole), false));
            }
            // Still running: stream what is ready, then the rest as it comes.
            None => break,
        }
    }
    // What is left is a big or slow result: the rest is read and encoded on the compute
    // runtime (a passthrough's already is).
    if !exec.passthrough {
        body = gw.offload(body);
    }
    let body = if ready.is_empty() && failed.is_none() {
        body
    } else {
        let prefix = ready.into_iter().map(Ok).chain(failed.map(Err));
        futures::stream::iter(prefix).chain(body).boxed()
    };

    struct St {
        body: futures::stream::BoxStream<'static, sluice_core::Result<Bytes>>,
        finish: Option<Finish>,
        keep: Option<(String, Duration, BytesMut)>,
    }
    let st = St {
        body,
        finish: Some(finish),
        keep: cache_key.zip(ttl).map(|(k, t)| (k, t, BytesMut::new())),
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        let finish = st.finish.as_ref()?;
        match st.body.next().await {
            Some(Ok(chunk)) => {
                if let Some((_, _, buf)) = &mut st.keep {
                    if buf.len() + chunk.len() <= MAX_ENTRY_BYTES {
                        buf.extend_from_slice(&chunk);
                    } else {
                        st.keep = None;
                    }
                }
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                // Headers are gone already: the client sees the connection cut, the
                // invocation log and metrics see the real cause.
                tracing::warn!(feed = %finish.feed, revision = %finish.revision, "feed failed mid-stream: {e}");
                if let Some(f) = st.finish.take() {
                    f.done(e.status(), Some(e.code.as_str()));
                }
                Some((Err(e), st))
            }
            None => {
                let f = st.finish.take()?;
                f.succeeded(st.keep.take().map(|(k, t, buf)| (k, t, buf.freeze())));
                None
            }
        }
    });
    // Fused: the gzip layer polls once more after the end, which a bare unfold forbids.
    Ok(response(
        format,
        feed,
        &revision,
        Body::from_stream(stream.fuse()),
        false,
    ))
}

fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in &chunks {
        all.extend_from_slice(c);
    }
    all.freeze()
}

fn response(format: Format, feed: &str, revision: &str, body: Body, cached: bool) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "inline; filename=\"{feed}.{}\"",
        format.extension()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    // A cluster's revision names are free text: one a header cannot carry is left out.
    if let Ok(v) = HeaderValue::from_str(revision) {
        h.insert(sluice_core::agent::REVISION_HEADER, v);
    }
    h.insert(
        "x-sluice-cache",
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    res
}

/// Everything needed to log one request when it ends, however it ends. If the client goes
/// away mid-stream the stream is dropped, and so is this: it then logs status 499.
pub(crate) struct Finish {
    pub(crate) gw: Gateway,
    pub(crate) ws: String,
    pub(crate) feed: String,
    /// The revision that served the call (the store's number, or a cluster's revision name).
    pub(crate) revision: String,
    /// The store's number for it, which the invocation log shows (a feed only the cluster
    /// has gets numbers too, see `Store::cluster_revision`); else `revision` when it is one.
    pub(crate) revision_number: Option<i64>,
    /// The store's id of the revision the call was resolved to, which counts it in the
    /// feed's per-minute traffic. When an agent says another revision served the call (a
    /// canary's fallback, a rollout), the count stays with this one: the same feed.
    pub(crate) revision_id: Option<i64>,
    /// Set once the request is logged; a drop before that logs it as abandoned.
    pub(crate) logged: bool,
    pub(crate) request_id: String,
    pub(crate) params: serde_json::Value,
    pub(crate) started: Instant,
    pub(crate) rows: Arc<AtomicU64>,
    pub(crate) logs: Option<Logs>,
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) limiter: Arc<crate::limiter::Limiter>,
}

impl Finish {
    pub(crate) fn done(mut self, status: u16, error: Option<&str>) {
        self.log(status, error);
    }

    /// The whole body went out: keep it in the result cache when `keep` says so (key,
    /// time to live, body), and log the request.
    fn succeeded(self, keep: Option<(String, Duration, Bytes)>) {
        if let Some((key, ttl, body)) = keep {
            let rows = self.rows.load(Ordering::Relaxed);
            self.gw.inner.cache.put(key, body, rows, ttl);
        }
        self.done(200, None);
    }

    /// The call failed before any row: keep what the feed printed, for `sluice logs`.
    pub(crate) fn fail(mut self, e: &Error) {
        let text = |k: &str| {
            e.extra
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (stdout, mut stderr) = (text("stdout"), text("stderr"));
        if let Some(tb) = &e.traceback {
            stderr.push_str(tb);
        }
        self.logs = Some(Logs::Ready(sluice_runtime::CallLogs {
            stdout,
            stderr,
            rows: 0,
            duration_ms: 0.0,
        }));
        self.log(e.status(), Some(e.code.as_str()));
    }

    fn log(&mut self, status: u16, error: Option<&str>) {
        let secs = self.started.elapsed().as_secs_f64();
        let rows = self.rows.load(Ordering::Relaxed);
        self.gw.inner.metrics.record_served(
            &self.ws,
            &self.feed,
            &self.revision,
            status,
            secs,
            rows,
            error,
        );
        self.permit.take();
        self.logged = true;
        let at = chrono::Utc::now();
        // Every call is counted here, exactly; the invocation log below keeps a sample.
        if let Some(id) = self.revision_id {
            self.gw
                .inner
                .tallies
                .record(id, at.timestamp_millis(), status, secs * 1000.0);
        }
        // The store's invocation log numbers revisions as the store does. A revision the
        // store has no number for (a canary named otherwise, or one served in its place) is
        // in the metrics and the trace, not there.
        let Some(revision) = self
            .revision_number
            .or_else(|| self.revision.parse::<i64>().ok())
        else {
            tracing::info!(workspace = %self.ws, feed = %self.feed, revision = %self.revision, status, rows, request_id = %self.request_id, "call served by a revision the store does not number");
            return;
        };
        let logs = self.logs.take();
        let gw = self.gw.clone();
        let mut inv = NewInvocation {
            workspace: std::mem::take(&mut self.ws),
            feed: std::mem::take(&mut self.feed),
            revision,
            request_id: std::mem::take(&mut self.request_id),
            status,
            duration_ms: secs * 1000.0,
            rows: rows as i64,
            error_code: error.map(str::to_string),
            stdout: String::new(),
            stderr: String::new(),
            params: std::mem::take(&mut self.params),
            at,
        };
        // Usually the logs are there by the time the body has ended: record them on the
        // spot, and only spawn a task to wait when the worker is still finishing.
        let logs = match logs {
            Some(Logs::Pending(mut rx)) => match rx.try_recv() {
                Ok(Ok(l)) => Some(Logs::Ready(l)),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => Some(Logs::Pending(rx)),
                _ => None,
            },
            other => other,
        };
        let quiet = |l: Option<&sluice_runtime::CallLogs>| {
            status == 200 && l.is_none_or(|l| l.stdout.is_empty() && l.stderr.is_empty())
        };
        let now = inv.at.timestamp() as u64;
        match logs {
            None if quiet(None) && !self.limiter.sample_quiet(now) => {}
            None => gw.record(inv),
            Some(Logs::Ready(l)) => {
                if !quiet(Some(&l)) || self.limiter.sample_quiet(now) {
                    inv.stdout = l.stdout;
                    inv.stderr = l.stderr;
                    gw.record(inv);
                }
            }
            Some(logs) => {
                tokio::spawn(async move {
                    if let Some(l) = logs.wait().await {
                        inv.stdout = l.stdout;
                        inv.stderr = l.stderr;
                    }
                    gw.record(inv);
                });
            }
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.logged {
            self.log(499, Some("client_closed"));
        }
    }
}
