//! The HTTP side: service document, `$metadata`, entity sets and `/$count`.

use crate::csdl::{self, EntitySet};
use crate::cursor::{self, Cursor, Cursors, End, Lookup, PagingConfig, SkipToken};
use crate::query::{self, Options, Shape, df_error};
use arrow_schema::SchemaRef;
use axum::{
    Router,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use sluice_core::{Code, Error, Result};
use sluice_gateway::{
    Gateway, LiveFeed, Principal, RESERVED_PARAMS, auth::query_pairs, request_id,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

#[derive(Clone)]
pub struct OData {
    gw: Gateway,
    /// One DataFusion session for every request: `read_table` plans over a request's own
    /// feed stream without registering anything, and building a session (its function
    /// registry) per request would cost more than a small query.
    ctx: Arc<SessionContext>,
    /// Server-side cursors of paged reads (see `cursor.rs`).
    cursors: Arc<Cursors>,
}

/// The OData routes with the default paging limits.
pub fn router(gw: Gateway) -> Router {
    router_with(gw, PagingConfig::default())
}

pub fn router_with(gw: Gateway, paging: PagingConfig) -> Router {
    let state = OData {
        gw,
        ctx: Arc::new(SessionContext::new()),
        cursors: Arc::new(Cursors::new(paging)),
    };
    Router::new()
        .route("/odata/{ws}", get(service_document))
        .route("/odata/{ws}/", get(service_document))
        .route("/odata/{ws}/$metadata", get(metadata))
        .route("/odata/{ws}/{set}", get(entity_set))
        .route("/odata/{ws}/{set}/$count", get(count))
        .with_state(state)
}

/// A problem document (RFC 9457) that OData clients can also read: they look for
/// `error.code` and `error.message`.
fn error_response(e: Error, editor: bool) -> Response {
    let mut body = e.problem(editor, None);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "error".into(),
            serde_json::json!({"code": e.code.as_str(), "message": e.message}),
        );
    }
    let mut res = sluice_gateway::problem::problem_response(&e, editor);
    *res.body_mut() = Body::from(body.to_string());
    odata_version(res)
}

fn odata_version(mut res: Response) -> Response {
    res.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    res
}

fn ok(content_type: &'static str, body: Body) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    odata_version(res)
}

impl OData {
    async fn principal(
        &self,
        ws: &str,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>> {
        let p = self.gw.authenticate(headers, query).await?;
        p.authorize(ws, false)?;
        Ok(p)
    }

    fn base(&self, ws: &str) -> String {
        format!(
            "{}/odata/{ws}",
            self.gw.config().public_url.trim_end_matches('/')
        )
    }

    /// The workspace's feeds as served now: the store's live revisions and, with runtime =
    /// kubernetes, the cluster's Ready feeds the store does not have (GitOps).
    async fn live(&self, ws: &str) -> Result<Vec<Arc<LiveFeed>>> {
        self.gw.live_feeds(ws).await
    }
}

async fn service_document(
    State(od): State<OData>,
    Path(ws): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        od.principal(&ws, &headers, q.as_deref()).await?;
        // Names only: describing a cluster feed would ask its agent for nothing needed here.
        let sets: Vec<serde_json::Value> = od
            .gw
            .live_feed_names(&ws)
            .await?
            .iter()
            .map(|f| serde_json::json!({"name": f, "kind": "EntitySet", "url": f}))
            .collect();
        let body = serde_json::json!({
            "@odata.context": format!("{}/$metadata", od.base(&ws)),
            "value": sets,
        });
        Ok::<_, Error>(ok(JSON, Body::from(body.to_string())))
    };
    run.await.unwrap_or_else(|e| error_response(e, false))
}

async fn metadata(
    State(od): State<OData>,
    Path(ws): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        od.principal(&ws, &headers, q.as_deref()).await?;
        let revs = od.live(&ws).await?;
        // A few feeds at a time: learning schemas runs feeds, and a workspace may have many.
        let found: Vec<(Arc<LiveFeed>, Result<Option<SchemaRef>>)> = futures::stream::iter(revs)
            .map(|rev| {
                let od = od.clone();
                let ws = ws.clone();
                async move {
                    let s = od.gw.result_schema(&ws, &rev).await;
                    (rev, s)
                }
            })
            .buffered(4)
            .collect()
            .await;
        let mut sets = Vec::new();
        for (rev, schema) in found {
            match schema {
                Ok(Some(schema)) => {
                    sets.push(EntitySet::new(&rev.feed, &schema, &rev.signature.key))
                }
                Ok(None) => tracing::info!(
                    feed = %rev.feed,
                    "left out of $metadata: its columns are unknown until it is called once with its required parameters"
                ),
                // One broken feed must not hide the others from a BI tool.
                Err(e) => {
                    tracing::warn!(feed = %rev.feed, "left out of $metadata: calling it with its defaults failed: {}", e.message)
                }
            }
        }
        Ok::<_, Error>(ok(
            "application/xml",
            Body::from(csdl::metadata(&ws, &sets)),
        ))
    };
    run.await.unwrap_or_else(|e| error_response(e, false))
}

/// What every data request needs: the caller, the feed, its options and parameters.
struct Request {
    principal: Arc<Principal>,
    rev: Arc<LiveFeed>,
    opts: Options,
    params: sluice_core::Params,
    pairs: Vec<(String, String)>,
}

async fn prepare(
    od: &OData,
    ws: &str,
    set: &str,
    q: Option<&str>,
    headers: &HeaderMap,
) -> Result<Request> {
    let principal = od.principal(ws, headers, q).await?;
    if set.contains('(') {
        return Err(Error::new(
            Code::NotImplemented,
            format!(
                "addressing a single entity ('{set}') is not supported: filter the entity set with $filter instead"
            ),
        ));
    }
    let rev = od.gw.live_feed(ws, set).await?;
    let pairs = query_pairs(q);
    let (opts, custom) = query::parse(&pairs)?;
    let params = rev.signature.coerce(&custom, RESERVED_PARAMS)?;
    Ok(Request {
        principal,
        rev,
        opts,
        params,
        pairs,
    })
}

/// Run the filter of `req` over a fresh call of the feed and count the rows.
async fn count_rows(od: &OData, ws: &str, req: &Request, rid: &str) -> Result<u64> {
    let open = od.gw.open_feed(ws, &req.rev, &req.params, rid).await?;
    let set = EntitySet::new(&req.rev.feed, &open.schema, &req.rev.signature.key);
    let df = query::frame(
        &od.ctx,
        &set,
        open.schema,
        open.batches,
        &req.opts,
        Shape::Count,
    )?;
    Ok(df.count().await.map_err(df_error)? as u64)
}

async fn count(
    State(od): State<OData>,
    Path((ws, set)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(&od, &ws, &set, q.as_deref(), &headers, |req| {
        count_text(&od, &ws, req, &headers)
    })
    .await
}

async fn count_text(od: &OData, ws: &str, req: Request, headers: &HeaderMap) -> Result<Response> {
    let n = count_rows(od, ws, &req, &request_id(headers)).await?;
    Ok(ok("text/plain", Body::from(n.to_string())))
}

/// The envelope of the data requests: prepare, run `f`, and answer an error as an OData
/// problem (with the traceback for editors of the workspace).
async fn respond<F, Fut>(
    od: &OData,
    ws: &str,
    set: &str,
    q: Option<&str>,
    headers: &HeaderMap,
    f: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response>>,
{
    let req = match prepare(od, ws, set, q, headers).await {
        Ok(req) => req,
        Err(e) => return error_response(e, false),
    };
    let editor = req.principal.is_editor_of(ws);
    f(req).await.unwrap_or_else(|e| error_response(e, editor))
}

/// `Prefer: odata.maxpagesize=N` (also inside a list of preferences).
fn max_page_size(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
        .filter_map(|n| n.trim().trim_matches('"').parse::<u64>().ok())
        .find(|n| *n > 0)
}

/// The query string with `$skiptoken` replaced: OData clients follow the link as is.
fn next_link(base: &str, set: &str, pairs: &[(String, String)], token: &str) -> String {
    let mut q = String::new();
    for (k, v) in pairs.iter().filter(|(k, _)| k != "$skiptoken") {
        q.push_str(&encode(k));
        q.push('=');
        q.push_str(&encode(v));
        q.push('&');
    }
    format!("{base}/{set}?{q}$skiptoken={token}")
}

/// Percent-encoding for query components; `$`, `'`, `(`, `)`, `,` and `:` stay readable.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b'\''
            | b'('
            | b')'
            | b','
            | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn entity_set(
    State(od): State<OData>,
    Path((ws, set)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(&od, &ws, &set, q.as_deref(), &headers, |req| {
        rows(&od, &ws, req, &headers)
    })
    .await
}

/// The rows of one page of an entity set: streamed in one response, or paged through a
/// server-side cursor when the client asks for pages or follows a cursor's next link.
async fn rows(od: &OData, ws: &str, req: Request, headers: &HeaderMap) -> Result<Response> {
    let rid = request_id(headers);
    let page = max_page_size(headers);
    let res = if page.is_some() || req.opts.skiptoken.cursor.is_some() {
        paged(od, ws, &req, page, &rid).await?
    } else {
        streamed(od, ws, &req, &rid).await?
    };
    let mut res = res;
    if let Some(n) = page
        && let Ok(v) = HeaderValue::from_str(&format!("odata.maxpagesize={n}"))
    {
        res.headers_mut().insert("preference-applied", v);
    }
    Ok(res)
}

/// `{"@odata.context":...,"@odata.count":n,"value":`
fn head(od: &OData, ws: &str, req: &Request, count: Option<u64>) -> Vec<u8> {
    let select = req
        .opts
        .select
        .as_ref()
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    let mut head = format!(
        r#"{{"@odata.context":{}"#,
        serde_json::Value::String(format!(
            "{}/$metadata#{}{select}",
            od.base(ws),
            req.rev.feed
        ))
    );
    if let Some(n) = count {
        head.push_str(&format!(r#","@odata.count":{n}"#));
    }
    head.push_str(r#","value":"#);
    head.into_bytes()
}

fn tail(link: Option<String>) -> Vec<u8> {
    match link {
        Some(link) => format!(
            r#","@odata.nextLink":{}}}"#,
            serde_json::Value::String(link)
        )
        .into_bytes(),
        None => b"}".to_vec(),
    }
}

/// The whole result in one response, in constant memory: the rows stream from the feed
/// through DataFusion to the client. A bare numeric `$skiptoken` (no cursor) skips rows.
async fn streamed(od: &OData, ws: &str, req: &Request, rid: &str) -> Result<Response> {
    let total = if req.opts.count {
        Some(count_rows(od, ws, req, rid).await?)
    } else {
        None
    };
    let open = od.gw.open_feed(ws, &req.rev, &req.params, rid).await?;
    let es = EntitySet::new(&req.rev.feed, &open.schema, &req.rev.signature.key);
    // With $top, DataFusion stops reading the feed once it has the rows (and drops it
    // before the response ends): that is a successful call, not a hang-up.
    let enough = open.enough.clone();
    if req.opts.top.is_some() {
        enough.store(true, Ordering::Relaxed);
    }
    let df = query::frame(
        &od.ctx,
        &es,
        open.schema,
        open.batches,
        &req.opts,
        Shape::Rows,
    )?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stream = df.execute_stream().await.map_err(df_error)?;
    let rows = stream.map_err(df_error).boxed();
    let tail: sluice_gateway::encode::Tail = Box::new(move || {
        enough.store(true, Ordering::Relaxed);
        tail(None)
    });
    let body = sluice_gateway::encode::encode_wrapped(schema, rows, head(od, ws, req, total), tail);
    Ok(ok(JSON, Body::from_stream(od.gw.offload(body).fuse())))
}

/// What identifies a read for its cursor: the feed, its parameters and every query option
/// but `$skiptoken`. Not the revision: a read that started before a deploy finishes on the
/// rows it started with, so its pages stay one consistent result.
fn query_id(req: &Request) -> String {
    let opts = Options {
        skiptoken: SkipToken::default(),
        ..req.opts.clone()
    };
    format!(
        "{}\u{0}{}\u{0}{opts:?}",
        req.rev.feed,
        sluice_core::params::params_to_json(&req.params)
    )
}

/// Call the feed once and start filling a cursor with the query's rows from position
/// `from` (of the filtered, ordered result; `$skip` included).
async fn start_cursor(
    od: &OData,
    ws: &str,
    req: &Request,
    owner: &str,
    query_id: &str,
    from: u64,
    rid: &str,
) -> Result<Arc<Cursor>> {
    let open = od.gw.open_feed(ws, &req.rev, &req.params, rid).await?;
    // A cursor may stop reading on purpose ($top, its byte budget, eviction): a success.
    open.enough.store(true, Ordering::Relaxed);
    let es = EntitySet::new(&req.rev.feed, &open.schema, &req.rev.signature.key);
    // With $count=true the cursor keeps every row after `from`: counting them all is one
    // read of the feed, which this one is.
    let fetch = match (req.opts.count, req.opts.top) {
        (false, Some(t)) => Some((req.opts.skip + t).saturating_sub(from)),
        _ => None,
    };
    let df = query::frame(
        &od.ctx,
        &es,
        open.schema,
        open.batches,
        &req.opts,
        Shape::Window { from, fetch },
    )?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stream = df.execute_stream().await.map_err(df_error)?;
    let c = od
        .cursors
        .create(owner.to_string(), query_id.to_string(), schema, from);
    tokio::spawn(cursor::fill(
        od.cursors.clone(),
        c.clone(),
        stream.map_err(df_error).boxed(),
    ));
    Ok(c)
}

/// One page of a paged read, from the read's cursor; the first page (or a page whose
/// cursor has expired, or lies past the rows its cursor could hold) calls the feed once
/// and starts a cursor from that position.
async fn paged(
    od: &OData,
    ws: &str,
    req: &Request,
    page: Option<u64>,
    rid: &str,
) -> Result<Response> {
    let owner = cursor::owner_of(&req.principal);
    let qid = query_id(req);
    let token = &req.opts.skiptoken;
    // Positions in the filtered, ordered result: this page starts at `start`; `$top` ends
    // the read at `limit`; the page ends at `want` unless the rows end first.
    let start = req.opts.skip + token.offset;
    let limit = req.opts.top.map_or(u64::MAX, |t| req.opts.skip + t);
    let want = page
        .map_or(u64::MAX, |p| start.saturating_add(p))
        .min(limit);
    // One row past the page tells whether there is a next page.
    let need = if want >= limit { want } else { want + 1 };

    let mut found = match &token.cursor {
        Some(id) => match od.cursors.lookup(id, &owner, &qid)? {
            Lookup::Found(c) if c.base <= start => Some(c),
            _ => None,
        },
        None => None,
    };
    let mut attempts = 0;
    let (c, batches, page_end, more) = loop {
        let c = match found.take() {
            Some(c) => c,
            None => {
                attempts += 1;
                if attempts > 2 {
                    return Err(Error::new(
                        Code::RuntimeUnavailable,
                        "the server could not keep this page's rows (its paging memory is taken by other reads): retry the request",
                    ));
                }
                start_cursor(od, ws, req, &owner, &qid, start, rid).await?
            }
        };
        let out = c
            .when(need, |f| {
                let held = c.base + f.rows;
                if let End::Failed(e) = &f.end
                    && held < need
                {
                    return Err(e.clone());
                }
                if start >= held && !matches!(f.end, End::Done) {
                    // Truncated before this page: a new call from here.
                    return Ok(None);
                }
                let page_end = want.min(held).max(start);
                let more = page_end < limit
                    && (held > page_end || matches!(f.end, End::Open | End::Truncated));
                Ok(Some((
                    cursor::slice(f, c.base, start, page_end),
                    page_end,
                    more,
                )))
            })
            .await?;
        if let Some((batches, page_end, more)) = out {
            break (c, batches, page_end, more);
        }
    };

    let total = if req.opts.count {
        Some(count_of(od, ws, req, &c, rid).await?)
    } else {
        None
    };
    let link = if more {
        let token = SkipToken::format(page_end - req.opts.skip, &c.id);
        Some(next_link(&od.base(ws), &req.rev.feed, &req.pairs, &token))
    } else {
        // The read is over: free its rows now rather than at expiry.
        od.cursors.remove(&c.id);
        None
    };
    let rows = futures::stream::iter(batches.into_iter().map(Ok)).boxed();
    let tail: sluice_gateway::encode::Tail = Box::new(move || tail(link));
    let body = sluice_gateway::encode::encode_wrapped(
        c.schema.clone(),
        rows,
        head(od, ws, req, total),
        tail,
    );
    Ok(ok(JSON, Body::from_stream(od.gw.offload(body).fuse())))
}

/// `@odata.count` of a paged read: known from the cursor once it holds every row from the
/// first one; otherwise counted by one more call, and remembered for the next pages.
async fn count_of(od: &OData, ws: &str, req: &Request, c: &Cursor, rid: &str) -> Result<u64> {
    if let Some(n) = *c.count.lock().expect("count lock") {
        return Ok(n);
    }
    let whole = if c.base == 0 {
        c.when(u64::MAX, |f| matches!(f.end, End::Done).then_some(f.rows))
            .await
    } else {
        None
    };
    let n = match whole {
        Some(n) => n,
        None => count_rows(od, ws, req, rid).await?,
    };
    *c.count.lock().expect("count lock") = Some(n);
    Ok(n)
}
