//! One error type for the whole system. Each error carries a stable [`Code`]: the code is
//! what scripts and BI tools match on, it fixes the HTTP status, and it names the page of
//! the docs that explains it. The message is for people and says what to do next.

use serde::Serialize;
use std::fmt;

/// Stable error codes, one table: variant, wire string, HTTP status, title. The wire string
/// is part of the HTTP contract: never rename one, only add.
macro_rules! codes {
    ($($variant:ident => $s:literal, $status:literal, $title:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $s),* } }
            pub fn status(self) -> u16 { match self { $(Code::$variant => $status),* } }
            /// Short human title for the problem document (RFC 9457 `title`).
            pub fn title(self) -> &'static str { match self { $(Code::$variant => $title),* } }
        }
    };
}

codes! {
    BadRequest => "bad_request", 400, "Bad request";
    InvalidParameter => "invalid_parameter", 400, "Invalid parameter";
    UnknownParameter => "unknown_parameter", 400, "Unknown parameter";
    MissingParameter => "missing_parameter", 400, "Missing parameter";
    InvalidName => "invalid_name", 400, "Invalid name";
    UnsupportedFormat => "unsupported_format", 400, "Unsupported format";
    InvalidQuery => "invalid_query", 400, "Invalid query";
    Unauthenticated => "unauthenticated", 401, "Authentication required";
    InvalidKey => "invalid_key", 401, "Invalid API key";
    Forbidden => "forbidden", 403, "Forbidden";
    NotFound => "not_found", 404, "Not found";
    WorkspaceNotFound => "workspace_not_found", 404, "Workspace not found";
    FeedNotFound => "feed_not_found", 404, "Feed not found";
    RevisionNotFound => "revision_not_found", 404, "Revision not found";
    SourceNotFound => "source_not_found", 404, "Data source not found";
    AlreadyExists => "already_exists", 409, "Already exists";
    PayloadTooLarge => "payload_too_large", 413, "Payload too large";
    InvalidFeedModule => "invalid_feed_module", 422, "Invalid feed module";
    DependencyResolutionFailed => "dependency_resolution_failed", 422, "Dependency resolution failed";
    TooManyRequests => "too_many_requests", 429, "Too many requests";
    FeedRaised => "feed_raised", 500, "Feed raised an exception";
    SourceQueryFailed => "source_query_failed", 500, "Data source query failed";
    Internal => "internal", 500, "Internal error";
    NotImplemented => "not_implemented", 501, "Not implemented";
    WorkerCrashed => "worker_crashed", 502, "Feed worker crashed";
    RuntimeUnavailable => "runtime_unavailable", 503, "Runtime unavailable";
    FeedNotReady => "feed_not_ready", 503, "Feed not ready";
    Timeout => "timeout", 504, "Feed timed out";
}

impl Code {
    pub fn from_wire(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable code, a message for people, and optional structured
/// extension members (RFC 9457 allows extra members; e.g. `parameter`, `expected`).
#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// Extra members merged into the problem document.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Private detail (a Python traceback): shown only to editors of the workspace.
    pub traceback: Option<String>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            extra: Default::default(),
            traceback: None,
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn with_traceback(mut self, tb: impl Into<String>) -> Self {
        self.traceback = Some(tb.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Error::new(Code::Internal, message.to_string())
    }

    pub fn not_found(code: Code, what: &str, name: &str) -> Self {
        Error::new(
            code,
            format!(
                "{what} '{name}' does not exist or is not visible to this key: {}",
                match code {
                    Code::WorkspaceNotFound => "`sluice whoami` shows the key's workspace",
                    Code::FeedNotFound => "`sluice feeds -w WORKSPACE` lists the feeds",
                    Code::RevisionNotFound => "`sluice revisions FEED` lists the revisions",
                    Code::SourceNotFound => "`sluice sources ls` lists the data sources",
                    _ => "check the name",
                }
            ),
        )
        .with("name", name)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The RFC 9457 problem document. `show_traceback` is decided by the caller's role.
    pub fn problem(&self, show_traceback: bool, instance: Option<&str>) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert(
            "type".into(),
            format!("https://sluice.dev/errors/{}", self.code.as_str()).into(),
        );
        doc.insert("title".into(), self.code.title().into());
        doc.insert("status".into(), self.code.status().into());
        doc.insert("code".into(), self.code.as_str().into());
        doc.insert("detail".into(), self.message.clone().into());
        if let Some(i) = instance {
            doc.insert("instance".into(), i.into());
        }
        for (k, v) in &self.extra {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Some(tb) = self.traceback.as_ref().filter(|_| show_traceback) {
            doc.insert("traceback".into(), tb.clone().into());
        }
        serde_json::Value::Object(doc)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_map_to_status() {
        for c in Code::ALL {
            assert_eq!(Code::from_wire(c.as_str()), Some(*c));
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        assert_eq!(Code::InvalidParameter.as_str(), "invalid_parameter");
        assert_eq!(Code::InvalidParameter.status(), 400);
        assert_eq!(Code::TooManyRequests.status(), 429);
        assert_eq!(Code::WorkerCrashed.status(), 502);
        assert_eq!(Code::Timeout.status(), 504);
    }

    #[test]
    fn problem_hides_traceback_unless_asked() {
        let e = Error::new(Code::FeedRaised, "ZeroDivisionError: division by zero")
            .with_traceback("Traceback ...")
            .with("feed", "f");
        let hidden = e.problem(false, None);
        assert!(hidden.get("traceback").is_none());
        assert_eq!(hidden["code"], "feed_raised");
        assert_eq!(hidden["status"], 500);
        assert_eq!(hidden["feed"], "f");
        let shown = e.problem(true, Some("/feeds/demo/f"));
        assert_eq!(shown["traceback"], "Traceback ...");
        assert_eq!(shown["instance"], "/feeds/demo/f");
    }
}
