//! Feeds opened by the other protocols (OData, the PostgreSQL wire): the same concurrency
//! limit, metrics and invocation log as `GET /feeds/{ws}/{feed}`, but the rows are handed
//! over as Arrow batches for a query engine to work on instead of being encoded here.

use crate::feeds::Finish;
use crate::state::{Gateway, module_of};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{Params, Result, params::params_to_json};
use sluice_store::Revision;
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Instant;

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
    /// Call `rev` with `params` (already coerced against its signature). The caller has
    /// authorized the principal for the workspace.
    pub async fn open_feed(
        &self,
        ws: &str,
        rev: &Arc<Revision>,
        params: &Params,
        request_id: &str,
    ) -> Result<OpenFeed> {
        let feed = rev.feed.as_str();
        let mut finish = Finish {
            gw: self.clone(),
            ws: ws.to_string(),
            feed: feed.to_string(),
            revision: rev.number,
            logged: false,
            request_id: request_id.to_string(),
            params: params_to_json(params),
            started: Instant::now(),
            rows: Arc::new(AtomicU64::new(0)),
            logs: None,
            permit: None,
            limiter: self.limiter(ws, feed),
        };
        let exec = match finish.limiter.acquire(feed).await {
            Ok(p) => {
                finish.permit = Some(p);
                self.execute(ws, &module_of(rev), feed, params, request_id)
                    .await
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
        finish.logs = Some(exec.logs);
        let enough = Arc::new(AtomicBool::new(false));
        let guard = Guard {
            finish: Some(finish),
            enough: enough.clone(),
        };
        // The columns of any call are remembered for describing the feed (see
        // `result_schema`), but only once it has returned rows: a call with none (a
        // filter nothing matches) may type its Python columns as text.
        let remember = Some((self.clone(), rev.id, exec.schema.clone()));
        let batches = futures::stream::unfold(
            (exec.batches, guard, remember),
            |(mut batches, mut guard, mut remember)| async move {
                let f = guard.finish.as_ref()?;
                match batches.next().await {
                    Some(Ok(b)) => {
                        f.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        if b.num_rows() > 0
                            && let Some((gw, id, schema)) = remember.take()
                        {
                            gw.remember_schema(id, &schema);
                        }
                        Some((Ok(b), (batches, guard, remember)))
                    }
                    Some(Err(e)) => {
                        if let Some(f) = guard.finish.take() {
                            f.done(e.status(), Some(e.code.as_str()));
                        }
                        Some((Err(e), (batches, guard, remember)))
                    }
                    None => {
                        guard.finish.take()?.done(200, None);
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
