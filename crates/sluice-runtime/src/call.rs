//! One feed call on a leased worker: send CALL, read frames until the result's shape is
//! known (so the gateway can write headers before streaming), then hand out the rest as a
//! stream that reads the next frame only when the consumer asks for the next batch.

use crate::arrow_conv::{conform, relax, rows_to_batch};
use crate::pool::{Lease, Outcome};
use crate::protocol::{EndFrame, ErrorFrame, Frame, Kind, ReadError, SqlFrame};
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{Code, Error, Result};
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the feed printed and how long it ran; `rows` is what was delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallLogs {
    pub stdout: String,
    pub stderr: String,
    pub rows: u64,
    pub duration_ms: f64,
}

impl EndFrame {
    /// What the call printed and how long it ran, with the rows actually delivered.
    fn logs(self, rows: u64) -> CallLogs {
        CallLogs {
            stdout: self.stdout,
            stderr: self.stderr,
            rows,
            duration_ms: self.duration_ms,
        }
    }
}

/// One call of one feed.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub feed: String,
    /// Already validated and coerced against the feed's signature, in JSON.
    pub params: serde_json::Value,
    /// `{name: {"kind": "sqlite", "path": ..} | {"kind": "postgres", "url": ..}}` as JSON
    /// text: the same for every call of a workspace, so it is serialized once, not per call.
    pub sources: Arc<str>,
    /// Whether a returned `sluice.sql(...)` may come back as [`CallOutput::Sql`].
    pub passthrough: bool,
    pub request_id: String,
}

pub enum CallOutput {
    /// The feed returned `sluice.sql(...)` unchanged: run it natively. (The worker is
    /// already back in the pool.)
    Sql {
        source: String,
        query: String,
        params: serde_json::Map<String, serde_json::Value>,
        logs: CallLogs,
    },
    /// Rows as Arrow record batches, all with `schema`. The worker stays leased until the
    /// stream ends or is dropped; dropping it mid-call kills and replaces the worker (see
    /// [`RowStream`]). `done` resolves with the logs once the stream has ended; an error
    /// mid-stream is the stream's last item and also arrives on `done`.
    Rows {
        schema: SchemaRef,
        batches: BoxStream<'static, Result<RecordBatch>>,
        done: oneshot::Receiver<Result<CallLogs>>,
    },
}

impl std::fmt::Debug for CallOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallOutput::Sql { source, query, .. } => f
                .debug_struct("Sql")
                .field("source", source)
                .field("query", query)
                .finish_non_exhaustive(),
            CallOutput::Rows { schema, .. } => f
                .debug_struct("Rows")
                .field("schema", schema)
                .finish_non_exhaustive(),
        }
    }
}

/// The call timeout counts only time spent waiting for the worker: a BI tool reading a
/// big result slowly must not make a fast feed time out.
struct Budget {
    limit: Duration,
    spent: Duration,
}

/// The CALL frame's payload, written directly: the sources are already JSON text.
pub(crate) fn payload(call: CallSpec) -> Result<Vec<u8>> {
    let sources = call.sources.trim();
    let mut out = Vec::with_capacity(96 + call.feed.len() + sources.len());
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut out, &call.request_id).map_err(Error::internal)?;
    out.extend_from_slice(b",\"feed\":");
    serde_json::to_writer(&mut out, &call.feed).map_err(Error::internal)?;
    out.extend_from_slice(b",\"params\":");
    if call.params.is_null() {
        out.extend_from_slice(b"{}");
    } else {
        serde_json::to_writer(&mut out, &call.params).map_err(Error::internal)?;
    }
    out.extend_from_slice(b",\"sources\":");
    out.extend_from_slice(if sources.is_empty() {
        b"{}"
    } else {
        sources.as_bytes()
    });
    out.extend_from_slice(if call.passthrough {
        b",\"passthrough\":true}"
    } else {
        b",\"passthrough\":false}"
    });
    Ok(out)
}

/// Read the result of a CALL already sent on `lease`.
pub(crate) async fn run(mut lease: Lease, timeout: Duration) -> Result<CallOutput> {
    let mut budget = Budget {
        limit: timeout,
        spent: Duration::ZERO,
    };
    let first = recv(&mut lease, &mut budget).await?;
    match first.kind {
        Kind::Error => Err(error_frame(&mut lease, &first)),
        Kind::Sql => {
            let sql: SqlFrame = parse(&mut lease, &first)?;
            let next = recv(&mut lease, &mut budget).await?;
            match next.kind {
                Kind::End => {
                    let end: EndFrame = parse(&mut lease, &next)?;
                    lease.outcome = Outcome::Healthy;
                    Ok(CallOutput::Sql {
                        source: sql.source,
                        query: sql.query,
                        params: sql.params,
                        logs: end.logs(0),
                    })
                }
                Kind::Error => Err(error_frame(&mut lease, &next)),
                other => Err(violation(&mut lease, format!("{other:?} after SQL"))),
            }
        }
        // No rows and no columns (the feed returned None or an empty list).
        Kind::End => finished(
            lease,
            &first,
            Arc::new(Schema::empty()),
            futures::stream::empty().boxed(),
            0,
        ),
        Kind::Arrow => {
            let reader = open_ipc(&mut lease, first.payload)?;
            let schema = relax(&reader.schema());
            Ok(rows_output(RowStream::new(
                lease,
                budget,
                schema,
                Some(reader),
                None,
            )))
        }
        Kind::Rows => {
            let frame = parse(&mut lease, &first)?;
            let batch = match rows_to_batch(&frame, None) {
                Ok(b) => b,
                Err(e) => return Err(violation(&mut lease, e.message)),
            };
            let schema = batch.schema();
            if let Some(end) = lease.worker().take_buffered(Kind::End) {
                // The whole result is here: give the worker back now.
                let rows = batch.num_rows() as u64;
                let batches = futures::stream::once(async move { Ok(batch) }).boxed();
                return finished(lease, &end, schema, batches, rows);
            }
            Ok(rows_output(RowStream::new(
                lease,
                budget,
                schema,
                None,
                Some(batch),
            )))
        }
        other => Err(violation(
            &mut lease,
            format!("{other:?} as the first frame of a call"),
        )),
    }
}

/// The call ended with `end` and its whole result is in `batches`: the worker goes back
/// to the pool now, and the logs are ready at once.
fn finished(
    mut lease: Lease,
    end: &Frame,
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
    rows: u64,
) -> Result<CallOutput> {
    let end: EndFrame = parse(&mut lease, end)?;
    lease.outcome = Outcome::Healthy;
    drop(lease);
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Ok(end.logs(rows)));
    Ok(CallOutput::Rows {
        schema,
        batches,
        done: rx,
    })
}

fn rows_output(stream: RowStream) -> CallOutput {
    let schema = stream.schema.clone();
    let (tx, rx) = oneshot::channel();
    let mut stream = stream;
    stream.done = Some(tx);
    let batches = futures::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|item| (item, s))
    })
    .boxed();
    CallOutput::Rows {
        schema,
        batches,
        done: rx,
    }
}

/// The rest of a call's result. If this is dropped before END the worker is mid-call:
/// its remaining output would have to be read and thrown away (a million-row generator
/// nobody wants, holding a slot for up to the call timeout), and the protocol has no
/// cancel. So the lease's default outcome applies: the worker is killed and a fresh one
/// starts in the background, without crash backoff. Bounded cost, and a client that hangs
/// up frees its slot at once.
struct RowStream {
    lease: Option<Lease>,
    budget: Budget,
    schema: SchemaRef,
    reader: Option<StreamReader<Cursor<Bytes>>>,
    pending: Option<RecordBatch>,
    done: Option<oneshot::Sender<Result<CallLogs>>>,
    rows: u64,
}

impl RowStream {
    fn new(
        lease: Lease,
        budget: Budget,
        schema: SchemaRef,
        reader: Option<StreamReader<Cursor<Bytes>>>,
        pending: Option<RecordBatch>,
    ) -> RowStream {
        RowStream {
            lease: Some(lease),
            budget,
            schema,
            reader,
            pending,
            done: None,
            rows: 0,
        }
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(b) = self.pending.take() {
                self.rows += b.num_rows() as u64;
                return Some(Ok(b));
            }
            if let Some(reader) = self.reader.as_mut() {
                match reader.next() {
                    Some(Ok(b)) => match conform(b, &self.schema) {
                        Ok(b) => {
                            self.pending = Some(b);
                            continue;
                        }
                        Err(e) => return Some(Err(self.fail_killing(e))),
                    },
                    Some(Err(e)) => {
                        return Some(Err(self.fail_killing(Error::internal(format!(
                            "the worker sent an unreadable Arrow batch: {e}"
                        )))));
                    }
                    None => self.reader = None,
                }
            }
            let lease = self.lease.as_mut()?;
            let frame = match recv(lease, &mut self.budget).await {
                Ok(f) => f,
                Err(e) => {
                    self.lease = None;
                    return Some(Err(self.finish_err(e)));
                }
            };
            match frame.kind {
                Kind::Arrow => match open_ipc(lease, frame.payload) {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => {
                        self.lease = None;
                        return Some(Err(self.finish_err(e)));
                    }
                },
                Kind::Rows => {
                    let parsed =
                        parse(lease, &frame).and_then(|f| rows_to_batch(&f, Some(&self.schema)));
                    match parsed {
                        Ok(b) => self.pending = Some(b),
                        Err(e) => return Some(Err(self.fail_killing(e))),
                    }
                }
                Kind::End => {
                    let end = parse::<EndFrame>(lease, &frame);
                    let logs = end.map(|end| {
                        lease.outcome = Outcome::Healthy;
                        end.logs(self.rows)
                    });
                    self.lease = None;
                    return match logs {
                        Ok(logs) => {
                            if let Some(tx) = self.done.take() {
                                let _ = tx.send(Ok(logs));
                            }
                            None
                        }
                        Err(e) => Some(Err(self.finish_err(e))),
                    };
                }
                Kind::Error => {
                    let e = error_frame(lease, &frame);
                    self.lease = None;
                    return Some(Err(self.finish_err(e)));
                }
                other => {
                    let e = violation(lease, format!("{other:?} in the middle of a row stream"));
                    self.lease = None;
                    return Some(Err(self.finish_err(e)));
                }
            }
        }
    }

    /// The stream cannot continue but the worker is mid-call: kill it (the lease's
    /// default outcome) and end the stream with `e`.
    fn fail_killing(&mut self, e: Error) -> Error {
        self.reader = None;
        self.pending = None;
        self.lease = None;
        self.finish_err(e)
    }

    fn finish_err(&mut self, e: Error) -> Error {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Err(e.clone()));
        }
        e
    }
}

async fn recv(lease: &mut Lease, budget: &mut Budget) -> Result<Frame> {
    let remaining = budget.limit.saturating_sub(budget.spent);
    let t0 = Instant::now();
    let r = tokio::time::timeout(remaining, lease.worker().recv()).await;
    budget.spent += t0.elapsed();
    match r {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(ReadError::Closed)) => Err(crashed(lease).await),
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "worker connection failed mid-call");
            Err(crashed(lease).await)
        }
        Ok(Err(ReadError::Corrupt(msg))) => Err(violation(lease, msg)),
        Err(_) => {
            lease.worker().kill();
            lease.outcome = Outcome::Killed;
            Err(Error::new(
                Code::Timeout,
                format!(
                    "the feed did not finish within {} s (the runtime's call timeout), so its worker was stopped; make the feed faster (filter in SQL, return fewer rows) or ask an admin to raise the call timeout",
                    budget.limit.as_secs_f64()
                ),
            )
            .with("timeout_seconds", budget.limit.as_secs_f64()))
        }
    }
}

pub(crate) async fn crashed(lease: &mut Lease) -> Error {
    lease.outcome = Outcome::Crashed;
    let w = lease.worker();
    let status = w.exit_status(Duration::from_secs(2)).await;
    w.kill();
    let output = w.output_tail();
    Error::new(
        Code::WorkerCrashed,
        format!(
            "the feed's worker process exited unexpectedly ({status}), e.g. out of memory or a call to os._exit: the call was not retried; a new worker is starting"
        ),
    )
    .with("exit", status)
    .with("worker_output", output)
}

fn error_frame(lease: &mut Lease, frame: &Frame) -> Error {
    match frame.json::<ErrorFrame>() {
        Ok(ef) => {
            // The SDK exits after reporting a MemoryError (the interpreter may be left
            // half-broken past RLIMIT_AS): replace the worker instead of reusing it.
            lease.outcome = if ef.ty == "MemoryError" {
                Outcome::Killed
            } else {
                Outcome::Healthy
            };
            ef.into_error()
        }
        Err(e) => {
            lease.outcome = Outcome::Killed;
            e
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(lease: &mut Lease, frame: &Frame) -> Result<T> {
    frame
        .json()
        .inspect_err(|_| lease.outcome = Outcome::Killed)
}

fn open_ipc(lease: &mut Lease, payload: Bytes) -> Result<StreamReader<Cursor<Bytes>>> {
    StreamReader::try_new(Cursor::new(payload), None).map_err(|e| {
        lease.outcome = Outcome::Killed;
        Error::internal(format!(
            "the worker sent an unreadable Arrow IPC stream: {e}"
        ))
    })
}

fn violation(lease: &mut Lease, what: String) -> Error {
    lease.outcome = Outcome::Killed;
    Error::internal(format!(
        "the feed's worker broke the protocol ({what}); it was restarted. This is a bug in Sluice, please report it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_payload_is_the_json_the_worker_reads() {
        let spec = |params, sources: &str, passthrough| CallSpec {
            feed: "top\"products".into(),
            params,
            sources: sources.into(),
            passthrough,
            request_id: "r\n1".into(),
        };
        let p = payload(spec(
            serde_json::json!({"limit": 5, "region": "EU"}),
            r#" {"warehouse": {"kind": "sqlite", "path": "/d/w.db"}} "#,
            true,
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "r\n1",
                "feed": "top\"products",
                "params": {"limit": 5, "region": "EU"},
                "sources": {"warehouse": {"kind": "sqlite", "path": "/d/w.db"}},
                "passthrough": true,
            })
        );
        // No parameters and no sources are empty objects, never null.
        let p = payload(spec(serde_json::Value::Null, "", false)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["params"], serde_json::json!({}));
        assert_eq!(v["sources"], serde_json::json!({}));
        assert_eq!(v["passthrough"], false);
    }
}
