//! The one place that speaks HTTP to Sluice: base URL, the bearer key, and turning every
//! failure into a message that says what went wrong and what to do (unreachable server,
//! rejected key, RFC 9457 problem documents). Commands never touch reqwest directly
//! except to read a successful response's body.

use anyhow::Result;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` may lack a scheme (`localhost:8080`); http is assumed then, as for a local `sluice up`.
    pub fn new(base: &str, key: &str) -> Result<Client> {
        let base = normalize_url(base)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluice-cli/", env!("CARGO_PKG_VERSION")))
            // Only the connect step is bounded: feeds, deploys and `logs -f` may legitimately take long.
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            base,
            key: key.to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`), authenticated with the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
    }

    /// Sends and returns the response if it is a success; every failure becomes a
    /// [`ClientError`] with a helpful message.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from_response(&self.base, resp).await.into())
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.json_body(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        self.json_body(resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// The body as JSON; an empty body (204) is `null`.
    pub async fn json_body(&self, resp: Response) -> Result<Value> {
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "the server at {} answered with something that is not JSON ({e}); is this URL a Sluice server?",
                self.base
            )
        })
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: transport_reason(e),
        }
        .into()
    }
}

/// Adds `http://` when no scheme is given and drops trailing slashes, so paths can be appended.
pub fn normalize_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let parsed = reqwest::Url::parse(&with_scheme).map_err(|e| {
        anyhow::anyhow!(
            "'{raw}' is not a valid server URL ({e}): expected something like http://127.0.0.1:8080"
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!(
            "'{raw}' is not an http(s) URL: expected something like http://127.0.0.1:8080"
        );
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// The shortest honest reason a request never got an answer, e.g. "connection refused".
fn transport_reason(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut source = e.source();
    let mut innermost = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "connection timed out".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        innermost = Some(s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        return "connection timed out".into();
    }
    innermost.unwrap_or_else(|| e.to_string())
}

/// An RFC 9457 problem document as Sluice sends it (`code` is the stable part).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: u16,
    pub code: String,
    pub detail: String,
    pub traceback: Option<String>,
    /// Where in the analyst's file the problem is, when the server says (`file`, `line`).
    pub location: Option<String>,
    pub retry_after: Option<String>,
}

impl Problem {
    /// Reads a problem document; falls back to the status line and raw body for anything
    /// else (a proxy's HTML error page, say), so the user still sees what came back.
    pub fn parse(status: u16, body: &str) -> Problem {
        let doc: Option<serde_json::Map<String, Value>> = serde_json::from_str(body).ok();
        let text = |doc: &serde_json::Map<String, Value>, k: &str| {
            doc.get(k).and_then(Value::as_str).map(str::to_string)
        };
        match doc {
            Some(doc) => {
                let code = text(&doc, "code").unwrap_or_else(|| fallback_code(status));
                let detail = text(&doc, "detail")
                    .or_else(|| text(&doc, "title"))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                let line = doc.get("line").and_then(|l| {
                    l.as_u64()
                        .map(|n| n.to_string())
                        .or(l.as_str().map(str::to_string))
                });
                let location = match (text(&doc, "file").or_else(|| text(&doc, "filename")), line) {
                    (Some(f), Some(l)) => Some(format!("{f}:{l}")),
                    (Some(f), None) => Some(f),
                    _ => None,
                };
                Problem {
                    status,
                    code,
                    detail,
                    traceback: text(&doc, "traceback").filter(|t| !t.trim().is_empty()),
                    location,
                    retry_after: None,
                }
            }
            None => {
                let body = body.trim();
                let reason = StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error");
                let detail = if body.is_empty() {
                    format!("HTTP {status} {reason}")
                } else {
                    format!("HTTP {status} {reason}: {}", truncate(body, 300))
                };
                Problem {
                    status,
                    code: fallback_code(status),
                    detail,
                    traceback: None,
                    location: None,
                    retry_after: None,
                }
            }
        }
    }

    /// `error[code]: detail`, then `--> file:line` and the traceback when there are any.
    pub fn render(&self) -> String {
        let mut s = format!("error[{}]: {}", self.code, self.detail);
        // Servers often put file:line in the detail already; say it once.
        if let Some(loc) = self
            .location
            .as_ref()
            .filter(|l| !self.detail.contains(l.as_str()))
        {
            s.push_str(&format!("\n  --> {loc}"));
        }
        if let Some(after) = &self.retry_after {
            s.push_str(&format!("\n  retry after {after} seconds"));
        }
        if let Some(tb) = &self.traceback {
            s.push('\n');
            s.push_str(tb.trim_end());
        }
        s
    }
}

fn fallback_code(status: u16) -> String {
    sluice_core::Code::ALL
        .iter()
        .find(|c| c.status() == status)
        .map(|c| c.as_str().to_string())
        .unwrap_or_else(|| format!("http_{status}"))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Errors the client reports specially; everything else is a plain `anyhow` message.
#[derive(Debug)]
pub enum ClientError {
    /// No HTTP answer at all.
    Unreachable { url: String, reason: String },
    /// 401: the key is unknown, revoked or missing.
    KeyRejected { url: String, code: String },
    /// Any other non-success answer.
    Api(Problem),
    /// The command was used wrongly in a way clap cannot see (exit code 2).
    Usage(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { url, reason } => {
                write!(
                    f,
                    "cannot reach Sluice at {url}: {reason}. Is `sluice up` running?"
                )
            }
            ClientError::KeyRejected { url, code } => write!(
                f,
                "the key was rejected ({code}): run `sluice login {url} --key KEY` with a valid key"
            ),
            ClientError::Api(p) => f.write_str(&p.render()),
            ClientError::Usage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ClientError {}

pub async fn error_from_response(base: &str, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    classify(base, status, &body, retry_after)
}

/// Pure: maps a status and body to the error shown to the user.
pub fn classify(base: &str, status: u16, body: &str, retry_after: Option<String>) -> ClientError {
    let mut problem = Problem::parse(status, body);
    if status == 401 {
        return ClientError::KeyRejected {
            url: base.to_string(),
            code: problem.code,
        };
    }
    problem.retry_after = retry_after;
    ClientError::Api(problem)
}

/// Splits a byte stream into lines (NDJSON): bytes in, complete lines out. A line split
/// across chunks, or a UTF-8 character split across chunks, is joined before decoding.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_string();
            if !text.trim().is_empty() {
                lines.push(text);
            }
        }
        lines
    }

    /// What is left when the stream ends without a final newline.
    pub fn finish(self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.pending).trim().to_string();
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_normalization() {
        assert_eq!(normalize_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_url("localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            normalize_url(" https://x.example/base// ").unwrap(),
            "https://x.example/base"
        );
        assert!(
            normalize_url("ftp://x")
                .unwrap_err()
                .to_string()
                .contains("http")
        );
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn problem_with_traceback_and_location() {
        let body = r#"{"type":"https://sluice.dev/errors/feed_raised","title":"Feed raised an exception","status":500,
            "code":"feed_raised","detail":"ZeroDivisionError: division by zero","traceback":"Traceback (most recent call last):\n  File \"f.py\", line 3\n","file":"f.py","line":3}"#;
        let p = Problem::parse(500, body);
        assert_eq!(p.code, "feed_raised");
        assert_eq!(p.location.as_deref(), Some("f.py:3"));
        let r = p.render();
        assert!(
            r.starts_with(
                "error[feed_raised]: ZeroDivisionError: division by zero\n  --> f.py:3\nTraceback"
            ),
            "{r}"
        );
        assert!(r.ends_with("line 3"), "{r}");
    }

    #[test]
    fn location_not_repeated_when_detail_has_it() {
        let body = r#"{"code":"invalid_feed_module","detail":"top.py:7: SyntaxError: invalid syntax","file":"top.py","line":7}"#;
        assert_eq!(
            Problem::parse(422, body).render(),
            "error[invalid_feed_module]: top.py:7: SyntaxError: invalid syntax"
        );
    }

    #[test]
    fn non_problem_bodies_still_say_what_came_back() {
        let p = Problem::parse(502, "<html>Bad Gateway</html>");
        assert_eq!(p.code, "worker_crashed");
        assert_eq!(
            p.render(),
            "error[worker_crashed]: HTTP 502 Bad Gateway: <html>Bad Gateway</html>"
        );
        assert_eq!(
            Problem::parse(418, "").render(),
            "error[http_418]: HTTP 418 I'm a teapot"
        );
    }

    #[test]
    fn unauthorized_says_how_to_log_in_again() {
        let e = classify(
            "http://h:1",
            401,
            r#"{"code":"invalid_key","detail":"no such key"}"#,
            None,
        );
        assert_eq!(
            e.to_string(),
            "the key was rejected (invalid_key): run `sluice login http://h:1 --key KEY` with a valid key"
        );
        let e = classify(
            "http://h:1",
            429,
            r#"{"code":"too_many_requests","detail":"slow down"}"#,
            Some("7".into()),
        );
        assert_eq!(
            e.to_string(),
            "error[too_many_requests]: slow down\n  retry after 7 seconds"
        );
    }

    #[test]
    fn line_buffer_joins_split_lines_and_characters() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"{\"a\":").is_empty());
        assert_eq!(b.push(b"1}\n\n{\"b\":\"\xc3"), vec!["{\"a\":1}"]);
        assert_eq!(b.push(b"\xa9\"}\r\n{\"c\""), vec!["{\"b\":\"é\"}"]);
        assert_eq!(b.finish().as_deref(), Some("{\"c\""));
    }

    #[tokio::test]
    async fn unreachable_server_says_connection_refused() {
        // Take a free port and release it so nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, "k").unwrap();
        let err = client.get_json("/api/v1/whoami").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach Sluice at {url}: connection refused. Is `sluice up` running?")
        );
    }
}
