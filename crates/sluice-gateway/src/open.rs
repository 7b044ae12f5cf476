//! Feeds opened by the other protocols (OData, the PostgreSQL wire): the same concurrency
//! limit, metrics, result cache and invocation log as `GET /feeds/{ws}/{feed}`, but the
//! rows are handed over as Arrow batches for a query engine to work on instead of being
//! encoded here.
//!
//! The result cache of a feed declared with `cache=` is shared with `/feeds`: a call's
//! rows are kept as the Arrow IPC stream `?format=arrow` would send, under the same key,
//! so whichever protocol reads a feed first warms it for the others.

use crate::cache::{MAX_ENTRY_BYTES, ResultCache, parse_ttl};
use crate::cluster::Route;
use crate::feeds::Finish;
use crate::state::{Gateway, module_of};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{Code, Error, FeedSignature, Params, Result, params::params_to_json};
use sluice_store::Revision;
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Instant;

/// A feed as OData and the PostgreSQL wire serve it: the store's live revision, or with
/// runtime = kubernetes a feed only the cluster has (applied as YAML by GitOps), described
/// by the signature its agent serves. Either is listed, described and called alike.
#[derive(Clone, Debug)]
pub struct LiveFeed {
    pub feed: String,
    /// What its parameters are checked against, and its key columns.
    pub signature: Arc<FeedSignature>,
    /// The revision's name: the store's number, else the cluster's (a content hash or the
    /// Feed's `spec.revision`).
    pub revision: String,
    /// What cached results and learnt result schemas are kept under: the store's revision
    /// id (as `/feeds` keys its cache), else `workspace/feed@revision`.
    pub scope: String,
    /// The store's revision, whose module the local runtime runs.
    stored: Option<Arc<Revision>>,
    /// The store's id and number of the revision (also for a feed only the cluster has,
    /// once recorded): what its calls are counted and logged under.
    revision_id: Option<i64>,
    number: Option<i64>,
}

impl LiveFeed {
    fn stored(rev: Arc<Revision>) -> LiveFeed {
        LiveFeed {
            feed: rev.feed.clone(),
            signature: Arc::new(rev.signature.clone()),
            revision: rev.number.to_string(),
            scope: rev.id.to_string(),
            revision_id: Some(rev.id),
            number: Some(rev.number),
            stored: Some(rev),
        }
    }
}

/// One call of a feed in progress. The call is logged when `batches` ends (200), fails
/// (with the error's status) or is dropped early: 499 like a client hanging up, unless
/// `enough` was set first (a query engine that stopped reading because it had every row it
/// needed, e.g. for `LIMIT`), which is a success.
pub struct OpenFeed {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
    pub enough: Arc<AtomicBool>,
    /// The rows come from a native `sluice.sql` query: dropping the stream early only stops
    /// the query (a Python feed's worker would have to be replaced).
    pub passthrough: bool,
}

/// Logs the call when the stream is dropped before its end (see [`OpenFeed::enough`]).
struct Guard {
    finish: Option<Finish>,
    enough: Arc<AtomicBool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take()
            && self.enough.load(Ordering::Relaxed)
        {
            f.done(200, None);
        }
        // Otherwise `Finish`'s own drop logs 499.
    }
}

impl Gateway {
    /// The feed `feed` of the workspace as it is served now: the store's live revision, else
    /// (runtime = kubernetes) a Ready feed of the cluster's, with the signature of the
    /// revision its live agent serves. `feed_not_found` when neither has it;
    /// `feed_not_ready` for a cluster feed not Ready yet.
    pub async fn live_feed(&self, ws: &str, feed: &str) -> Result<Arc<LiveFeed>> {
        match self.live_revision(ws, feed).await {
            Ok(rev) => Ok(Arc::new(LiveFeed::stored(rev))),
            Err(e) if e.code == Code::FeedNotFound && self.cluster_route(ws, feed).is_some() => {
                // The live agent's revision describes the feed; a canary's share of calls
                // is still the canary's (and logged so), as on `/feeds`.
                let picked = self.pick_agent(ws, feed, "describe", true).await?;
                let scope = match picked.signed.revision_id {
                    Some(id) => id.to_string(),
                    None => format!("{ws}/{feed}@{}", picked.revision),
                };
                Ok(Arc::new(LiveFeed {
                    feed: feed.to_string(),
                    signature: picked.signed.signature.clone(),
                    revision: picked.revision,
                    scope,
                    stored: None,
                    revision_id: picked.signed.revision_id,
                    number: picked.signed.number,
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// The names of the workspace's feeds that have a live revision: the store's, then
    /// (runtime = kubernetes) the cluster's Ready feeds the store does not have, each
    /// group sorted by name. What OData lists as entity sets and the PostgreSQL wire as
    /// tables.
    pub async fn live_feed_names(&self, ws: &str) -> Result<Vec<String>> {
        let stored = self.inner.store.list_feeds(ws).await?;
        let mut names: Vec<String> = stored
            .iter()
            .filter(|(_, rev)| rev.is_some())
            .map(|(f, _)| f.name.clone())
            .collect();
        let mut cluster_only: Vec<String> = self
            .cluster_routes(ws)
            .into_iter()
            .filter(|(name, route)| {
                matches!(route, Route::Ready(_)) && !stored.iter().any(|(f, _)| f.name == *name)
            })
            .map(|(name, _)| name)
            .collect();
        cluster_only.sort();
        names.extend(cluster_only);
        Ok(names)
    }

    /// Every feed [`Gateway::live_feed_names`] lists, as served now. A cluster feed whose
    /// agent cannot describe it is left out (logged): one broken feed must not hide the
    /// others from a BI tool.
    pub async fn live_feeds(&self, ws: &str) -> Result<Vec<Arc<LiveFeed>>> {
        let mut out = Vec::new();
        for name in self.live_feed_names(ws).await? {
            match self.live_feed(ws, &name).await {
                Ok(f) => out.push(f),
                Err(e) if e.code == Code::FeedNotFound => {} // deleted meanwhile
                Err(e) => {
                    tracing::warn!(workspace = %ws, feed = %name, "left out of the feed list: {}", e.message)
                }
            }
        }
        Ok(out)
    }

    /// Call `lf` with `params` (already coerced against its signature). The caller has
    /// authorized the principal for the workspace.
    pub async fn open_feed(
        &self,
        ws: &str,
        lf: &LiveFeed,
        params: &Params,
        request_id: &str,
    ) -> Result<OpenFeed> {
        let feed = lf.feed.as_str();
        let ttl = lf
            .signature
            .cache
            .as_deref()
            .and_then(parse_ttl)
            .filter(|t| !t.is_zero());
        let mut cache_key =
            ttl.map(|_| ResultCache::key(&lf.scope, "arrow", &params_to_json(params)));
        let mut finish = Finish {
            gw: self.clone(),
            ws: ws.to_string(),
            feed: feed.to_string(),
            revision: lf.revision.clone(),
            revision_number: lf.number,
            revision_id: lf.revision_id,
            logged: false,
            request_id: request_id.to_string(),
            params: params_to_json(params),
            started: Instant::now(),
            rows: Arc::new(AtomicU64::new(0)),
            logs: None,
            permit: None,
            limiter: self.limiter(ws, feed),
        };
        if let Some(key) = &cache_key
            && let Some((body, rows)) = self.inner.cache.get(key)
        {
            match decode_ipc(&body) {
                Ok((schema, batches)) => {
                    self.inner
                        .metrics
                        .cache_hits
                        .get_or_create(&crate::metrics::Metrics::feed(ws, feed))
                        .inc();
                    finish.rows.store(rows, Ordering::Relaxed);
                    finish.done(200, None);
                    return Ok(OpenFeed {
                        schema,
                        batches: futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
                        enough: Arc::new(AtomicBool::new(true)),
                        passthrough: true,
                    });
                }
                Err(e) => tracing::warn!(feed, "cached result unreadable, calling the feed: {e}"),
            }
        }
        let exec = match finish.limiter.acquire(feed).await {
            Ok(p) => {
                finish.permit = Some(p);
                match (&lf.stored, self.uses_agents()) {
                    (_, true) => self.execute_on_agents(ws, feed, params, request_id).await,
                    (Some(rev), false) => {
                        self.execute_here(ws, &module_of(rev), feed, params, request_id)
                            .await
                    }
                    (None, false) => Err(Error::internal(format!(
                        "feed '{ws}/{feed}' has no stored revision to run with runtime = local"
                    ))),
                }
            }
            Err(e) => Err(e),
        };
        let exec = match exec {
            Ok(exec) => exec,
            Err(e) => {
                finish.fail(&e);
                return Err(e);
            }
        };
        // runtime = kubernetes: the revision the agent says served the call (a canary's) is
        // what the call is logged under, and its rows are not cached as the live revision's.
        let other_revision = exec.revision.as_ref().filter(|r| **r != finish.revision);
        if let Some(served) = other_revision {
            finish.revision = served.clone();
            finish.revision_number = None;
            cache_key = None;
        }
        let same_revision = other_revision.is_none();
        finish.logs = Some(exec.logs);
        let enough = Arc::new(AtomicBool::new(false));
        let guard = Guard {
            finish: Some(finish),
            enough: enough.clone(),
        };
        // The columns of any call are remembered for describing the feed (see
        // `result_schema`), but only once it has returned rows: a call with none (a
        // filter nothing matches) may type its Python columns as text.
        let remember = same_revision.then(|| (self.clone(), lf.scope.clone(), exec.schema.clone()));
        // A cached feed's rows are kept while they stay small enough to cache, and stored
        // once the call has ended well.
        let keep = cache_key.zip(ttl).map(|(key, ttl)| Keep {
            key,
            ttl,
            schema: exec.schema.clone(),
            batches: Vec::new(),
            bytes: 0,
        });
        let batches = futures::stream::unfold(
            (exec.batches, guard, remember, keep),
            |(mut batches, mut guard, mut remember, mut keep)| async move {
                let f = guard.finish.as_ref()?;
                match batches.next().await {
                    Some(Ok(b)) => {
                        f.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        if b.num_rows() > 0
                            && let Some((gw, id, schema)) = remember.take()
                        {
                            gw.remember_schema(&id, &schema);
                        }
                        if let Some(k) = &mut keep {
                            k.bytes += b.get_array_memory_size();
                            if k.bytes > MAX_ENTRY_BYTES {
                                keep = None;
                            } else if b.num_rows() > 0 {
                                k.batches.push(b.clone());
                            }
                        }
                        Some((Ok(b), (batches, guard, remember, keep)))
                    }
                    Some(Err(e)) => {
                        if let Some(f) = guard.finish.take() {
                            f.done(e.status(), Some(e.code.as_str()));
                        }
                        Some((Err(e), (batches, guard, remember, None)))
                    }
                    None => {
                        let f = guard.finish.take()?;
                        if let Some(k) = keep.take() {
                            k.store(&f.gw, f.rows.load(Ordering::Relaxed));
                        }
                        f.done(200, None);
                        None
                    }
                }
            },
        )
        .boxed();
        Ok(OpenFeed {
            schema: exec.schema,
            batches,
            enough,
            passthrough: exec.passthrough,
        })
    }
}

/// The rows of a call of a cached feed, kept until it ends.
struct Keep {
    key: String,
    ttl: std::time::Duration,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// In memory, which bounds the encoded size closely enough.
    bytes: usize,
}

impl Keep {
    fn store(self, gw: &Gateway, rows: u64) {
        let encoded = (|| {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?;
            for b in &self.batches {
                w.write(b)?;
            }
            w.into_inner()
        })();
        match encoded {
            Ok(body) => gw.inner.cache.put(self.key, body.into(), rows, self.ttl),
            Err(e) => tracing::warn!("could not cache a result: {e}"),
        }
    }
}

/// A cached result (an Arrow IPC stream) as batches again.
fn decode_ipc(
    body: &bytes::Bytes,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), arrow_schema::ArrowError> {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.as_ref()), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}
