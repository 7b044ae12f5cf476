//! Execution through a feed's in-cluster agent (runtime = kubernetes): the gateway has
//! already authenticated the caller and checked the parameters; it POSTs the call to the
//! agent's `/v1/call` and decodes the Arrow IPC stream it answers into the same
//! [`Execution`] the local runtime gives, so encoding, caching and limits are unchanged.
//! The batches stream: each is handed on as soon as its bytes have arrived; what the feed
//! printed follows the rows, so invocation logs and `sluice logs` work as in local mode.
//! The agent names the revision that served the call in a header, and serves that revision's
//! signature (see `sluice_core::agent`), which [`AgentClient::served`] reads.

use crate::state::{Execution, Logs};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use futures::StreamExt;
use sluice_core::agent::{REVISION_HEADER, SIGNATURE_PATH, Served};
use sluice_core::{Code, Error, Result};
use sluice_runtime::CallLogs;
use std::time::Duration;
use tokio::sync::oneshot;

/// Calls feed agents over HTTP. One per gateway: it keeps connections to the agents.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

impl AgentClient {
    /// `call_timeout` bounds the wait for the agent's answer to start (the agent enforces
    /// its own per-call limit on the run itself). Fails only when the HTTP client cannot be
    /// built (its TLS backend or the system's resolver configuration cannot be loaded),
    /// which the server reports at startup rather than panicking.
    pub fn new(call_timeout: Duration) -> Result<AgentClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(call_timeout + Duration::from_secs(5))
            .build()
            .map_err(|e| {
                Error::internal(format!(
                    "cannot build the HTTP client that calls feed agents: {e}; check the system's TLS and DNS configuration"
                ))
            })?;
        Ok(AgentClient { http })
    }

    /// Run one call on the agent at `base_url` (the Feed's status URL, e.g.
    /// `http://hello.team-a.svc:8080`).
    pub async fn call(
        &self,
        base_url: &str,
        params: serde_json::Value,
        request_id: &str,
    ) -> Result<Execution> {
        let url = format!("{}/v1/call", base_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({"params": params, "request_id": request_id}))
            .send()
            .await
            .map_err(|e| unavailable(&url, &e))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(error_of(status, &body, &url));
        }
        let revision = resp
            .headers()
            .get(REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (logs_tx, logs_rx) = oneshot::channel();
        let mut reader = Reader {
            decoder: StreamDecoder::new(),
            body: resp.bytes_stream().boxed(),
            pending: None,
            trailer: None,
            logs: Some(logs_tx),
            rows: 0,
            url,
            done: false,
        };
        // Read until the schema message has arrived; a first batch may come with it.
        let first = reader.advance(true).await.transpose()?;
        let Some(schema) = reader.decoder.schema() else {
            return Err(Error::new(
                Code::WorkerCrashed,
                format!(
                    "the feed's agent at {} ended its answer before any rows",
                    reader.url
                ),
            ));
        };
        let batches = futures::stream::unfold((reader, first), |(mut r, first)| async move {
            if let Some(b) = first {
                return Some((Ok(b), (r, None)));
            }
            r.advance(false).await.map(|item| (item, (r, None)))
        })
        .boxed();
        Ok(Execution {
            schema,
            batches,
            // What the feed printed comes after the rows (see `Reader`).
            logs: Logs::Pending(logs_rx),
            passthrough: false,
            revision,
        })
    }

    /// Whether an agent answers at `base_url` and is ready for calls (its `/readyz`): how
    /// the gateway tells a scaled-to-zero feed's pods are up.
    pub async fn ready(&self, base_url: &str) -> bool {
        let url = format!("{}/readyz", base_url.trim_end_matches('/'));
        match self
            .http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// What the agent at `base_url` serves: its revision and that revision's signature.
    /// Asked on a connection of its own, closed after: behind a Service each new
    /// connection may reach another pod, so a retry during a rollout can find one of the
    /// new revision instead of asking the same old pod again.
    pub async fn served(&self, base_url: &str) -> Result<Served> {
        let url = format!("{}{SIGNATURE_PATH}", base_url.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .header(reqwest::header::CONNECTION, "close")
            .send()
            .await
            .map_err(|e| unavailable(&url, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            // Images built before agents served signatures: nothing to wait for.
            return Err(Error::new(
                Code::FeedNotReady,
                format!(
                    "the feed's agent at {url} does not say what it serves (its image predates signatures): \
                     rebuild the feed's image with this version of Sluice (`sluice deploy` again, or change the Feed so the operator rebuilds it)"
                ),
            ));
        }
        let body = resp.bytes().await.map_err(|e| cut(&url, &e))?;
        if !status.is_success() {
            return Err(error_of(status.as_u16(), &body, &url));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                Code::WorkerCrashed,
                format!("the feed's agent at {url} sent an unreadable signature ({e})"),
            )
        })
    }
}

/// The agent's answer as it streams: an Arrow IPC stream, then after its end-of-stream
/// marker a trailer, one JSON object with what the call printed
/// (`{"stdout", "stderr", "duration_ms"}`, see `sluice-agent`). An agent without the trailer
/// still works; its calls log nothing.
struct Reader {
    decoder: StreamDecoder,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    /// Bytes arrived and not decoded yet.
    pending: Option<Buffer>,
    /// Set once the IPC stream has ended: the trailer's bytes so far.
    trailer: Option<Vec<u8>>,
    logs: Option<oneshot::Sender<Result<CallLogs>>>,
    rows: u64,
    url: String,
    done: bool,
}

impl Reader {
    /// The next batch; `None` at the end of the answer (or, with `until_schema`, as soon as
    /// the schema is known). A batch is handed on as soon as its bytes have arrived.
    async fn advance(&mut self, until_schema: bool) -> Option<Result<RecordBatch>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(mut buf) = self.pending.take() {
                match &mut self.trailer {
                    Some(t) => t.extend_from_slice(buf.as_slice()),
                    None => {
                        while !buf.is_empty() {
                            match self.decoder.decode(&mut buf) {
                                Ok(Some(b)) => {
                                    if !buf.is_empty() {
                                        self.pending = Some(buf);
                                    }
                                    self.rows += b.num_rows() as u64;
                                    return Some(Ok(b));
                                }
                                Ok(None) => {}
                                // The decoder refuses bytes after the end-of-stream marker
                                // and stays finished: those bytes are the trailer.
                                Err(_) if self.decoder.finish().is_ok() => {
                                    self.trailer = Some(buf.as_slice().to_vec());
                                    break;
                                }
                                Err(e) => return Some(Err(self.fail(bad_stream(e)))),
                            }
                        }
                    }
                }
            }
            if until_schema && self.decoder.schema().is_some() {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.pending = Some(Buffer::from(chunk)),
                Some(Err(e)) => {
                    let e = cut(&self.url, &e);
                    return Some(Err(self.fail(e)));
                }
                None => {
                    self.done = true;
                    return match self.decoder.finish() {
                        Ok(()) => {
                            self.finish_logs();
                            None
                        }
                        Err(e) => Some(Err(self.fail(bad_stream(e)))),
                    };
                }
            }
        }
    }

    /// The call failed mid-answer: no logs will come (the agent's pod log keeps them).
    fn fail(&mut self, e: Error) -> Error {
        self.done = true;
        self.logs.take();
        e
    }

    fn finish_logs(&mut self) {
        let Some(tx) = self.logs.take() else {
            return;
        };
        let t: serde_json::Value = self
            .trailer
            .as_deref()
            .and_then(|t| serde_json::from_slice(t).ok())
            .unwrap_or_default();
        let text = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let _ = tx.send(Ok(CallLogs {
            stdout: text("stdout"),
            stderr: text("stderr"),
            rows: self.rows,
            duration_ms: t.get("duration_ms").and_then(|v| v.as_f64()).unwrap_or(0.0),
        }));
    }
}

fn unavailable(url: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::new(
            Code::Timeout,
            format!("the feed's agent at {url} did not answer in time"),
        );
    }
    Error::new(
        Code::RuntimeUnavailable,
        format!("the feed's agent at {url} cannot be reached ({e}): `kubectl get feeds` shows whether it is ready"),
    )
    .retry_after(5)
}

fn cut(url: &str, e: &reqwest::Error) -> Error {
    Error::new(
        Code::WorkerCrashed,
        format!("the feed's agent at {url} cut its answer short: the call failed mid-stream ({e})"),
    )
}

fn bad_stream(e: arrow_schema::ArrowError) -> Error {
    Error::new(
        Code::WorkerCrashed,
        format!("the feed's agent sent rows that are not a valid Arrow IPC stream: {e}"),
    )
}

/// The agent's problem+json, back into the error it was (code, message, traceback, extras),
/// so the gateway answers exactly as if the call had run locally.
fn error_of(status: u16, body: &[u8], url: &str) -> Error {
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = doc
        .get("code")
        .and_then(|c| c.as_str())
        .and_then(Code::from_wire)
        .unwrap_or(if status >= 500 {
            Code::WorkerCrashed
        } else {
            Code::BadRequest
        });
    let detail = doc
        .get("detail")
        .and_then(|d| d.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "the feed's agent at {url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        });
    let mut e = Error::new(code, detail);
    if let Some(obj) = doc.as_object() {
        for (k, v) in obj {
            match k.as_str() {
                "type" | "title" | "status" | "code" | "detail" | "instance" => {}
                "traceback" => {
                    if let Some(tb) = v.as_str() {
                        e = e.with_traceback(tb);
                    }
                }
                _ => e = e.with(k, v.clone()),
            }
        }
    }
    e
}
