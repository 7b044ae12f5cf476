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
use std::sync::{Arc, atomic::AtomicU64, atomic::Ordering};
use std::time::Instant;

/// One call of a feed in progress. The call is logged when `batches` ends (200), fails
/// (with the error's status) or is dropped early (499, like a client hanging up).
pub struct OpenFeed {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
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
        let batches = futures::stream::unfold(
            (exec.batches, Some(finish)),
            |(mut batches, mut finish)| async move {
                let f = finish.as_ref()?;
                match batches.next().await {
                    Some(Ok(b)) => {
                        f.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        Some((Ok(b), (batches, finish)))
                    }
                    Some(Err(e)) => {
                        if let Some(f) = finish.take() {
                            f.done(e.status(), Some(e.code.as_str()));
                        }
                        Some((Err(e), (batches, finish)))
                    }
                    None => {
                        finish.take()?.done(200, None);
                        None
                    }
                }
            },
        )
        .boxed();
        Ok(OpenFeed {
            schema: exec.schema,
            batches,
        })
    }
}
