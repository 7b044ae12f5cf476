//! The HTTP side of connection files: `/api/v1/workspaces/{ws}[/feeds/{feed}]/connect[/{tool}]`.
//! Reads the feed's signature from the live revision, checks chosen parameters and an
//! optional link token, and hands plain data to the pure [`super::render`].

use super::{ConnectFile, ConnectInfo, FeedSpec, Scope, Target, Tool, USER, render};
use crate::{
    Caller,
    handlers::{ApiResult, ensure_workspace},
};
use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use sluice_core::{Code, Error, FeedSignature};
use sluice_gateway::{Gateway, RESERVED_PARAMS, auth::query_pairs};
use std::sync::Arc;

/// Query names of the connect endpoints that are not feed parameters.
const OWN: &[&str] = &["link"];

fn tool_or_404(name: &str) -> Result<Tool, Error> {
    Tool::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
        Error::new(
            Code::NotFound,
            format!(
                "no connection file for tool '{name}': use one of {}",
                known.join(", ")
            ),
        )
        .with("known", known)
    })
}

fn spec(sig: &FeedSignature) -> FeedSpec {
    FeedSpec {
        name: sig.name.clone(),
        doc: sig.doc.clone(),
        params: sig.params.clone(),
    }
}

/// The caller's parameter values, checked against the signature like a feed request
/// would be, except that required parameters may be left for the snippet's placeholder.
fn overrides(
    sig: &FeedSignature,
    pairs: &[(String, String)],
) -> Result<Vec<(String, String)>, Error> {
    let reserved: Vec<&str> = RESERVED_PARAMS.iter().chain(OWN).copied().collect();
    let mut lenient = sig.clone();
    for p in &mut lenient.params {
        if p.required {
            p.required = false;
            p.default = None;
        }
    }
    lenient.coerce(pairs, &reserved)?;
    Ok(pairs
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()) && !k.starts_with('$'))
        .cloned()
        .collect())
}

fn link_param(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .find(|(k, _)| k == "link")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn download(file: ConnectFile) -> Response {
    let mut res = file.body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.media_type),
    );
    // Filenames are built from validated names, so they need no quoting beyond this.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

pub async fn feed_file(
    State(gw): State<Gateway>,
    Extension(info): Extension<Arc<ConnectInfo>>,
    Caller(p): Caller,
    Path((ws, feed, tool)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    p.authorize(&ws, false)?;
    let tool = tool_or_404(&tool)?;
    let rev = gw.live_revision(&ws, &feed).await?;
    let pairs = query_pairs(query.as_deref());
    let chosen = overrides(&rev.signature, &pairs)?;
    let link = link_param(&pairs);
    if let Some(token) = link {
        let target = gw.resolve_link(token).await?;
        if (target.workspace.as_str(), target.feed.as_str()) != (ws.as_str(), feed.as_str()) {
            return Err(Error::new(
                Code::BadRequest,
                format!(
                    "that link opens feed '{}', not '{feed}': create one for this feed (`sluice links create {feed}`)",
                    target.feed
                ),
            )
            .with("parameter", "link")
            .into());
        }
    }
    let f = spec(&rev.signature);
    let file = render(
        tool,
        &Target {
            info: &info,
            workspace: &ws,
            scope: Scope::Feed(&f),
            overrides: &chosen,
            link,
        },
    )?;
    Ok(download(file))
}

/// The live feeds of a workspace, as the generators need them.
async fn workspace_feeds(gw: &Gateway, ws: &str) -> Result<Vec<FeedSpec>, Error> {
    ensure_workspace(gw, ws).await?;
    Ok(gw
        .store()
        .list_feeds(ws)
        .await?
        .into_iter()
        .filter_map(|(_, live)| live.map(|r| spec(&r.signature)))
        .collect())
}

pub async fn workspace_file(
    State(gw): State<Gateway>,
    Extension(info): Extension<Arc<ConnectInfo>>,
    Caller(p): Caller,
    Path((ws, tool)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    p.authorize(&ws, false)?;
    let tool = tool_or_404(&tool)?;
    let feeds = workspace_feeds(&gw, &ws).await?;
    let pairs = query_pairs(query.as_deref());
    let reserved: Vec<&str> = RESERVED_PARAMS.iter().chain(OWN).copied().collect();
    let chosen: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .cloned()
        .collect();
    let file = render(
        tool,
        &Target {
            info: &info,
            workspace: &ws,
            scope: Scope::Workspace(&feeds),
            overrides: &chosen,
            link: link_param(&pairs),
        },
    )?;
    Ok(download(file))
}

fn tools_json(info: &ConnectInfo, path: &str, stem: &str) -> Value {
    Value::Array(
        Tool::ALL
            .iter()
            .map(|t| {
                json!({
                    "tool": t.name(),
                    "title": t.title(),
                    "via": t.via(),
                    "kind": if t.is_file() { "file" } else { "snippet" },
                    "filename": format!("{stem}.{}", t.extension()),
                    "media_type": t.media_type(),
                    "takes_link": t.takes_link(),
                    "url": format!("{}{path}/{}", info.public_url, t.name()),
                })
            })
            .collect(),
    )
}

fn auth_json() -> Value {
    json!({
        "basic": format!("any user name (e.g. {USER}), a Sluice key as password"),
        "bearer": "Authorization: Bearer KEY",
        "header": "X-API-Key: KEY",
        "query": "?api_key=KEY",
        "link": "a secret feed link (POST .../feeds/{feed}/links) for tools that cannot send credentials",
    })
}

pub async fn feed_tools(
    State(gw): State<Gateway>,
    Extension(info): Extension<Arc<ConnectInfo>>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    gw.live_revision(&ws, &feed).await?;
    Ok(Json(json!({
        "workspace": ws,
        "feed": feed,
        "http": {"url": info.feed_url(&ws, &feed), "formats": ["json", "csv", "ndjson", "arrow"]},
        "odata": {"url": format!("{}{feed}", info.odata_root(&ws))},
        "postgres": {
            "host": info.pg_host, "port": info.pg_port, "database": ws, "table": feed,
            "user": USER, "sslmode": "require",
        },
        "auth": auth_json(),
        "tools": tools_json(&info, &format!("/api/v1/workspaces/{ws}/feeds/{feed}/connect"), &format!("{ws}-{feed}")),
    })))
}

pub async fn workspace_tools(
    State(gw): State<Gateway>,
    Extension(info): Extension<Arc<ConnectInfo>>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    let feeds = workspace_feeds(&gw, &ws).await?;
    Ok(Json(json!({
        "workspace": ws,
        "feeds": feeds.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        "odata": {"url": info.odata_root(&ws)},
        "postgres": {
            "host": info.pg_host, "port": info.pg_port, "database": ws,
            "user": USER, "sslmode": "require",
        },
        "auth": auth_json(),
        "tools": tools_json(&info, &format!("/api/v1/workspaces/{ws}/connect"), &ws),
    })))
}
