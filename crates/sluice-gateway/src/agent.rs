//! Execution through a feed's in-cluster agent (runtime = kubernetes): the gateway has
//! already authenticated the caller and checked the parameters; it POSTs the call to the
//! agent's `/v1/call` and decodes the Arrow IPC stream it answers into the same
//! [`Execution`] the local runtime gives, so encoding, caching and limits are unchanged.
//! The batches stream: each is handed on as soon as its bytes have arrived.

use crate::state::{Execution, Logs};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use futures::StreamExt;
use sluice_core::{Code, Error, Result};
use sluice_runtime::CallLogs;
use std::time::Duration;

/// Calls feed agents over HTTP. One per gateway: it keeps connections to the agents.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

impl AgentClient {
    /// `call_timeout` bounds the wait for the agent's answer to start (the agent enforces
    /// its own per-call limit on the run itself).
    pub fn new(call_timeout: Duration) -> AgentClient {
        AgentClient {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(call_timeout + Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
        }
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
        let mut body = resp.bytes_stream();
        let mut decoder = StreamDecoder::new();
        let mut pending: Option<Buffer> = None;
        // Read until the schema message has arrived; a first batch may come with it.
        let mut first: Option<RecordBatch> = None;
        let schema = loop {
            if let Some(buf) = pending.as_mut() {
                while !buf.is_empty() && first.is_none() {
                    first = decoder.decode(buf).map_err(bad_stream)?;
                    if decoder.schema().is_some() && first.is_none() {
                        break;
                    }
                }
                if buf.is_empty() {
                    pending = None;
                }
            }
            if let Some(s) = decoder.schema() {
                break s;
            }
            match body.next().await {
                Some(Ok(chunk)) => pending = Some(Buffer::from(chunk)),
                Some(Err(e)) => return Err(cut(&url, &e)),
                None => {
                    return Err(Error::new(
                        Code::WorkerCrashed,
                        format!("the feed's agent at {url} ended its answer before any rows"),
                    ));
                }
            }
        };
        let url2 = url.clone();
        let batches = futures::stream::unfold(
            (decoder, body, pending, first, false),
            move |(mut decoder, mut body, mut pending, mut first, done)| {
                let url = url2.clone();
                async move {
                    if done {
                        return None;
                    }
                    if let Some(b) = first.take() {
                        return Some((Ok(b), (decoder, body, pending, None, false)));
                    }
                    loop {
                        if let Some(buf) = pending.as_mut() {
                            while !buf.is_empty() {
                                match decoder.decode(buf) {
                                    Ok(Some(b)) => {
                                        return Some((
                                            Ok(b),
                                            (decoder, body, pending, None, false),
                                        ));
                                    }
                                    Ok(None) => {}
                                    Err(e) => {
                                        return Some((
                                            Err(bad_stream(e)),
                                            (decoder, body, None, None, true),
                                        ));
                                    }
                                }
                            }
                        }
                        match body.next().await {
                            Some(Ok(chunk)) => pending = Some(Buffer::from(chunk)),
                            Some(Err(e)) => {
                                return Some((
                                    Err(cut(&url, &e)),
                                    (decoder, body, None, None, true),
                                ));
                            }
                            None => {
                                return match decoder.finish() {
                                    Ok(()) => None,
                                    Err(e) => Some((
                                        Err(bad_stream(e)),
                                        (decoder, body, None, None, true),
                                    )),
                                };
                            }
                        }
                    }
                }
            },
        )
        .boxed();
        Ok(Execution {
            schema,
            batches,
            // The agent's pod logs keep what the feed printed.
            logs: Logs::Ready(CallLogs::default()),
            passthrough: false,
        })
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
