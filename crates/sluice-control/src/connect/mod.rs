//! Connection files and snippets for BI tools: a `.pbids` for Power BI, an `.odc` for
//! Excel, a Tableau `.tds`, a Qlik load script, Power Query M, pandas and curl, for one feed
//! or a whole workspace.
//!
//! Everything here is pure: [`render`] turns a [`Target`] (where the server is, which
//! workspace and feed, the feed's parameters) into a [`ConnectFile`]. The HTTP side is
//! `handlers.rs` next to this file. XML and JSON are written by hand with the escaping
//! helpers below; the tests parse every output with a real parser.
//!
//! How each tool connects, and why:
//! - Power BI and Excel use OData (`{public_url}/odata/{ws}/`, one entity set per feed) with
//!   HTTP Basic: the tool asks for credentials (any user name, the key as password), so the
//!   files never hold a key, and a static URL keeps the Power BI Service able to refresh.
//! - Tableau and Qlik use their built-in PostgreSQL connectors against the Postgres-wire
//!   endpoint: database = workspace, table = feed, password = a key, SSL required.
//! - Power Query M, pandas and curl read the feed's CSV over HTTP; the key comes from the
//!   tool's credential prompt or the `SLUICE_KEY` environment variable.
//! - With a secret feed link (`/links/{token}`) the snippets need no credentials at all,
//!   for tools that cannot send a header.

pub mod handlers;
mod tools;

#[cfg(test)]
mod tests;

use sluice_core::{Code, Error, ParamSpec};
use std::net::SocketAddr;

/// The user name suggested wherever a tool insists on one; the server ignores it.
pub const USER: &str = "sluice";

/// Where clients reach this server, as the control API hands it out in connection files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// Base URL of the HTTP endpoints, without a trailing slash.
    pub public_url: String,
    /// Host and port of the PostgreSQL wire endpoint.
    pub pg_host: String,
    pub pg_port: u16,
}

impl ConnectInfo {
    /// From the server's settings. A Postgres endpoint listening on every address
    /// (`0.0.0.0`, `::`) is reached by the host name of the public URL.
    pub fn new(public_url: &str, pg_listen: SocketAddr) -> ConnectInfo {
        let public_url = public_url.trim_end_matches('/').to_string();
        let pg_host = if pg_listen.ip().is_unspecified() {
            url_host(&public_url).unwrap_or("127.0.0.1").to_string()
        } else {
            pg_listen.ip().to_string()
        };
        ConnectInfo {
            public_url,
            pg_host,
            pg_port: pg_listen.port(),
        }
    }

    pub fn feed_url(&self, ws: &str, feed: &str) -> String {
        format!("{}/feeds/{ws}/{feed}", self.public_url)
    }

    /// The OData service root of a workspace.
    pub fn odata_root(&self, ws: &str) -> String {
        format!("{}/odata/{ws}/", self.public_url)
    }

    pub fn link_url(&self, token: &str) -> String {
        format!("{}/links/{token}", self.public_url)
    }
}

/// The host of an `http(s)://user@host:port/path` URL (IPv6 without brackets).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => hostport.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// The tools a connection file or snippet can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    PowerBi,
    Excel,
    Tableau,
    Qlik,
    PowerQuery,
    Pandas,
    Curl,
}

impl Tool {
    pub const ALL: [Tool; 7] = [
        Tool::Excel,
        Tool::PowerBi,
        Tool::Tableau,
        Tool::Qlik,
        Tool::PowerQuery,
        Tool::Pandas,
        Tool::Curl,
    ];

    /// The name in URLs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Tool::PowerBi => "powerbi",
            Tool::Excel => "excel",
            Tool::Tableau => "tableau",
            Tool::Qlik => "qlik",
            Tool::PowerQuery => "powerquery",
            Tool::Pandas => "pandas",
            Tool::Curl => "curl",
        }
    }

    /// A tool by name, or by the extension of its file (`pbids`, `odc`, `tds`, `qvs`, `m`).
    pub fn parse(s: &str) -> Option<Tool> {
        let s = s.trim().to_ascii_lowercase();
        Tool::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .or(match s.as_str() {
                "pbids" | "power-bi" | "power_bi" => Some(Tool::PowerBi),
                "odc" => Some(Tool::Excel),
                "tds" => Some(Tool::Tableau),
                "qvs" => Some(Tool::Qlik),
                "m" | "pq" | "power-query" | "power_query" => Some(Tool::PowerQuery),
                "python" | "py" => Some(Tool::Pandas),
                "sh" => Some(Tool::Curl),
                _ => None,
            })
    }

    pub fn title(self) -> &'static str {
        match self {
            Tool::PowerBi => "Power BI Desktop (.pbids)",
            Tool::Excel => "Excel (.odc)",
            Tool::Tableau => "Tableau (.tds)",
            Tool::Qlik => "Qlik Sense load script",
            Tool::PowerQuery => "Power Query M (Power BI, Excel)",
            Tool::Pandas => "pandas",
            Tool::Curl => "curl",
        }
    }

    /// How the tool reaches the data and authenticates.
    pub fn via(self) -> &'static str {
        match self {
            Tool::PowerBi | Tool::Excel => {
                "OData; Basic auth when asked: any user name, a Sluice key as password"
            }
            Tool::Tableau | Tool::Qlik => {
                "PostgreSQL connector; user sluice, a Sluice key as password, SSL required"
            }
            Tool::PowerQuery => {
                "CSV over HTTP; Basic auth when asked: any user name, a Sluice key as password"
            }
            Tool::Pandas => "CSV over HTTP; Bearer key from $SLUICE_KEY",
            Tool::Curl => "CSV over HTTP; Basic auth with the key from $SLUICE_KEY",
        }
    }

    /// A file the tool opens (written to disk by the CLI), rather than text to paste.
    pub fn is_file(self) -> bool {
        matches!(self, Tool::PowerBi | Tool::Excel | Tool::Tableau)
    }

    /// Whether the output can use a secret feed link instead of credentials. Power BI and
    /// Tableau files always ask for credentials, which is what they are good at.
    pub fn takes_link(self) -> bool {
        !matches!(self, Tool::PowerBi | Tool::Tableau)
    }

    pub fn extension(self) -> &'static str {
        match self {
            Tool::PowerBi => "pbids",
            Tool::Excel => "odc",
            Tool::Tableau => "tds",
            Tool::Qlik => "qvs",
            Tool::PowerQuery => "pq",
            Tool::Pandas => "py",
            Tool::Curl => "sh",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Tool::PowerBi => "application/json",
            Tool::Excel => "text/x-ms-odc; charset=utf-8",
            Tool::Tableau => "application/xml",
            Tool::Qlik | Tool::PowerQuery => "text/plain; charset=utf-8",
            Tool::Pandas => "text/x-python; charset=utf-8",
            Tool::Curl => "text/x-shellscript; charset=utf-8",
        }
    }
}

/// A feed as the generators need it: its name, first doc line and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSpec {
    pub name: String,
    pub doc: String,
    pub params: Vec<ParamSpec>,
}

/// What to connect to: one feed, or every feed of a workspace.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Feed(&'a FeedSpec),
    Workspace(&'a [FeedSpec]),
}

#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub info: &'a ConnectInfo,
    pub workspace: &'a str,
    pub scope: Scope<'a>,
    /// Parameter values chosen by the caller (`-p name=value`), already checked against
    /// the feed's signature; a name may repeat for `list[str]`. They replace defaults.
    pub overrides: &'a [(String, String)],
    /// A secret feed link token to embed instead of asking for credentials.
    pub link: Option<&'a str>,
}

/// A generated file: what to call it, its media type and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFile {
    pub filename: String,
    pub media_type: &'static str,
    pub body: String,
}

/// The connection file or snippet of `tool` for `target`.
pub fn render(tool: Tool, target: &Target) -> Result<ConnectFile, Error> {
    if target.link.is_some() && !tool.takes_link() {
        return Err(Error::new(
            Code::BadRequest,
            format!(
                "{} asks for credentials itself, so its file never embeds a link: leave out the link, or use excel, qlik, powerquery, pandas or curl",
                tool.title()
            ),
        ));
    }
    let stem = match target.scope {
        Scope::Feed(f) => format!("{}-{}", target.workspace, f.name),
        Scope::Workspace(_) => {
            if target.link.is_some() {
                return Err(Error::new(
                    Code::BadRequest,
                    "a secret link opens one feed: ask for a feed's connection, not the workspace's",
                ));
            }
            if !target.overrides.is_empty() {
                return Err(Error::new(
                    Code::BadRequest,
                    "parameters belong to one feed: ask for a feed's connection to set them",
                ));
            }
            target.workspace.to_string()
        }
    };
    let body = match tool {
        Tool::PowerBi => tools::pbids(target),
        Tool::Excel => tools::odc(target),
        Tool::Tableau => tools::tds(target),
        Tool::Qlik => tools::qlik(target),
        Tool::PowerQuery => tools::power_query(target),
        Tool::Pandas => tools::pandas(target),
        Tool::Curl => tools::curl(target),
    };
    Ok(ConnectFile {
        filename: format!("{stem}.{}", tool.extension()),
        media_type: tool.media_type(),
        body,
    })
}

/// The query of a feed's CSV URL: `format=csv`, then each parameter in signature order
/// with the caller's value, else its default; a required parameter nobody gave gets a
/// `<name>` placeholder (the feed answers 400 naming it until it is filled in).
pub(crate) fn csv_query(feed: &FeedSpec, overrides: &[(String, String)]) -> Vec<(String, String)> {
    let mut q = vec![("format".to_string(), "csv".to_string())];
    for p in &feed.params {
        let given: Vec<&String> = overrides
            .iter()
            .filter(|(k, _)| *k == p.name)
            .map(|(_, v)| v)
            .collect();
        if !given.is_empty() {
            q.extend(given.into_iter().map(|v| (p.name.clone(), v.clone())));
            continue;
        }
        match &p.default {
            Some(d) if !d.is_null() => {
                q.extend(default_texts(d).into_iter().map(|v| (p.name.clone(), v)))
            }
            _ if p.required => q.push((p.name.clone(), format!("<{}>", p.name))),
            _ => {}
        }
    }
    q
}

/// Required parameters without a value in `csv_query`, for a comment next to it.
pub(crate) fn unfilled(feed: &FeedSpec, overrides: &[(String, String)]) -> Vec<String> {
    feed.params
        .iter()
        .filter(|p| p.required && p.default.as_ref().is_none_or(|d| d.is_null()))
        .filter(|p| !overrides.iter().any(|(k, _)| *k == p.name))
        .map(|p| p.name.clone())
        .collect()
}

/// A default as the text a URL carries: dates are already ISO strings, lists repeat.
fn default_texts(v: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match v {
        Value::Null => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(default_texts).collect(),
        other => vec![other.to_string()],
    }
}

/// `a=1&b=x%20y`: a percent-encoded query string.
pub(crate) fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters (RFC 3986), so the result is safe
/// in a URL, in shell single quotes, and in every string literal below.
pub(crate) fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text for XML element content.
pub(crate) fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for an XML attribute value, in single or double quotes.
pub(crate) fn xml_attr(s: &str) -> String {
    xml_text(s).replace('"', "&quot;").replace('\'', "&apos;")
}

/// A Power Query M text literal. `#(` starts an escape inside M text, so it is escaped too.
pub(crate) fn m_str(s: &str) -> String {
    let inner = s
        .replace("#(", "#(#)(")
        .replace('"', "\"\"")
        .replace('\r', "#(cr)")
        .replace('\n', "#(lf)")
        .replace('\t', "#(tab)");
    format!("\"{inner}\"")
}

/// A field name in an M record: bare when it is a plain identifier, else `#"..."`.
pub(crate) fn m_ident(s: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "and",
        "as",
        "each",
        "else",
        "error",
        "false",
        "if",
        "in",
        "is",
        "let",
        "meta",
        "not",
        "null",
        "or",
        "otherwise",
        "section",
        "shared",
        "then",
        "true",
        "try",
        "type",
    ];
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !KEYWORDS.contains(&s) {
        s.to_string()
    } else {
        format!("#{}", m_str(s))
    }
}

/// A Python string literal (a JSON string is one: same escapes).
pub(crate) fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

/// A shell word in single quotes.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A SQL identifier in double quotes.
pub(crate) fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal.
pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The first line of a feed's docstring, safe inside a one-line comment.
pub(crate) fn doc_line(doc: &str) -> String {
    let line = doc.lines().map(str::trim).find(|l| !l.is_empty());
    let mut s: String = line
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    // No comment syntax of the generated languages can be closed from inside.
    s = s.replace("*/", "* /").replace("-->", "-- >");
    s
}
