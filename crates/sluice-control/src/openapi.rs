//! The OpenAPI 3.1 description of the HTTP surface, built from one table so it stays next
//! to the routes in `lib.rs`. `docs/openapi.json` is this document, committed; a test fails
//! when the two drift (regenerate with `UPDATE_OPENAPI=1 cargo test -p sluice-control openapi`).

use serde_json::{Value, json};

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn arr(v: Value) -> Value {
    json!({"type": "array", "items": v})
}

fn path_param(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

/// One operation: summary, minimum role, request body schema, success status and schema.
fn op(
    summary: &str,
    role: &str,
    params: &[Value],
    body: Option<Value>,
    status: &str,
    ok: Option<Value>,
) -> Value {
    let mut o = json!({
        "summary": summary,
        "description": format!("Needs role: {role}."),
        "parameters": params,
        "responses": {
            status: match ok {
                Some(schema) => json!({"description": "OK", "content": {"application/json": {"schema": schema}}}),
                None => json!({"description": "Done"}),
            },
            "default": {"description": "An error", "content": {"application/problem+json": {"schema": r("Problem")}}},
        },
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

/// A connection file download: its media type depends on the tool.
fn connect_file(summary: &str, params: &[Value]) -> Value {
    json!({
        "summary": summary,
        "description": "Needs role: viewer.",
        "parameters": params,
        "responses": {
            "200": {
                "description": "The file, with Content-Disposition: attachment",
                "content": {
                    "application/json": {}, "text/x-ms-odc": {}, "application/xml": {},
                    "text/plain": {}, "text/x-python": {}, "text/x-shellscript": {}}},
            "default": {"description": "An error", "content": {"application/problem+json": {"schema": r("Problem")}}},
        },
    })
}

pub fn document() -> Value {
    let ws = path_param("ws", "workspace name");
    let feed = path_param("feed", "feed name");
    let tool = json!({"name": "tool", "in": "path", "required": true,
        "description": "the tool (or its file extension: pbids, odc, tds, qvs, pq, py, sh)",
        "schema": {"type": "string", "examples": ["excel", "powerbi", "tableau", "qlik", "powerquery", "pandas", "curl"]}});
    let link = json!({"name": "link", "in": "query", "required": false,
        "description": "a secret link token of this feed to embed instead of asking for credentials (not for powerbi and tableau)",
        "schema": {"type": "string"}});
    let module = json!({"type": "object", "required": ["source", "filename"], "properties": {
        "source": {"type": "string", "description": "the Python module"},
        "filename": {"type": "string", "description": "a bare name ending in .py"}}});
    let ide_module = module.clone();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Feeds and the control API. Authenticate with `Authorization: Bearer KEY`, HTTP Basic with the key as password, `X-API-Key`, or `?api_key=`. Errors are RFC 9457 problem documents with a stable `code`.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "query": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "code", "detail"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "code": {"type": "string"}, "detail": {"type": "string"},
                    "parameter": {"type": "string"}, "traceback": {"type": "string", "description": "editors only"}}},
                "ParamSpec": {"type": "object", "required": ["name", "type", "required"], "properties": {
                    "name": {"type": "string"},
                    "type": {"enum": ["str", "int", "float", "bool", "date", "datetime", "list[str]"]},
                    "default": {}, "required": {"type": "boolean"}}},
                "Feed": {"type": "object", "properties": {
                    "name": {"type": "string"}, "workspace": {"type": "string"}, "doc": {"type": "string"},
                    "params": arr(r("ParamSpec")), "cache": {"type": ["string", "null"]},
                    "live_revision": {"type": ["integer", "null"]}, "url": {"type": ["string", "null"]},
                    "created_at": {"type": ["string", "null"], "format": "date-time"}, "updated_at": {"type": ["string", "null"], "format": "date-time"},
                    "managed_by": {"description": "runtime = kubernetes: `sluice` (deployed through the API) or `gitops` (a Feed applied as YAML, served like any other; its params and doc come from the signature its agent reports)", "enum": ["sluice", "gitops"]},
                    "cluster": {"description": "runtime = kubernetes: the Feed's state in the cluster", "type": ["object", "null"], "properties": {
                        "ready": {"type": "boolean"}, "live_revision": {"type": ["string", "null"]}, "waiting_for": {"type": ["string", "null"]}}}}},
                "Revision": {"type": "object", "properties": {
                    "number": {"type": "integer"}, "feed": {"type": "string"}, "filename": {"type": "string"},
                    "env_hash": {"type": "string"}, "lock": {"type": "string"}, "signature": {"type": "object"},
                    "created_at": {"type": "string", "format": "date-time"}, "created_by": {"type": "string"}, "live": {"type": "boolean"}}},
                "Invocation": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "feed": {"type": "string"}, "revision": {"type": "integer"},
                    "revision_name": {"type": "string", "description": "runtime = kubernetes, a feed only the cluster has (GitOps): the cluster's name of the revision (its `spec.revision` or content hash); `revision` is the store's number for it"},
                    "request_id": {"type": "string"}, "status": {"type": "integer"}, "duration_ms": {"type": "number"},
                    "rows": {"type": "integer"}, "error_code": {"type": ["string", "null"]}, "stdout": {"type": "string"},
                    "stderr": {"type": "string"}, "params": {"type": "object"}, "at": {"type": "string", "format": "date-time"}}},
                "Key": {"type": "object", "properties": {
                    "name": {"type": "string"}, "prefix": {"type": "string"}, "role": {"enum": ["admin", "editor", "viewer"]},
                    "workspace": {"type": ["string", "null"]}, "created_at": {"type": "string", "format": "date-time"},
                    "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                    "secret": {"type": "string", "description": "only in the answer to POST /api/v1/keys"}}},
                "Source": {"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"enum": ["sqlite", "postgres"]},
                    "workspaces": arr(json!({"type": "string"})), "created_at": {"type": "string", "format": "date-time"}}},
                "Workspace": {"type": "object", "properties": {"name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}},
                "Deployed": {"type": "object", "properties": {"feeds": arr(json!({"type": "object", "properties": {
                    "name": {"type": "string"}, "revision": {"type": "integer"}, "url": {"type": "string"}, "env_hash": {"type": "string"}}}))}},
                "Link": {"type": "object", "properties": {
                    "id": {"type": "string", "description": "the link's public id, for revoking"},
                    "name": {"type": "string"}, "workspace": {"type": "string"}, "feed": {"type": "string"},
                    "created_by": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                    "token": {"type": "string", "description": "only in the answer to POST: the secret"},
                    "url": {"type": "string", "description": "only in the answer to POST: {public_url}/links/{token}"}}},
                "Connect": {"type": "object", "description": "Where and how BI tools connect, and the connection files on offer.", "properties": {
                    "workspace": {"type": "string"}, "feed": {"type": "string"}, "feeds": arr(json!({"type": "string"})),
                    "http": {"type": "object"}, "odata": {"type": "object"}, "postgres": {"type": "object"}, "auth": {"type": "object"},
                    "tools": arr(json!({"type": "object", "properties": {
                        "tool": {"type": "string"}, "title": {"type": "string"}, "via": {"type": "string"},
                        "kind": {"enum": ["file", "snippet"]}, "filename": {"type": "string"}, "media_type": {"type": "string"},
                        "takes_link": {"type": "boolean"}, "url": {"type": "string"}}}))}},
                "RunResult": {"type": "object", "properties": {
                    "feed": {"type": "string"}, "columns": arr(json!({"type": "string"})), "rows": arr(arr(json!({}))),
                    "row_count": {"type": "integer"}, "truncated": {"type": "boolean"}, "stdout": {"type": "string"},
                    "stderr": {"type": "string"}, "duration_ms": {"type": "number"}}},
            },
        },
        "security": [{"bearer": []}, {"basic": []}, {"header": []}, {"query": []}],
        "paths": {
            "/feeds/{ws}/{feed}": {"get": {
                "summary": "A feed's rows. Other query parameters are the feed's own, checked against its signature.",
                "parameters": [ws, feed, {"name": "format", "in": "query", "schema": {"enum": ["json", "csv", "ndjson", "arrow"]}}],
                "responses": {
                    "200": {"description": "The rows", "content": {
                        "application/json": {"schema": arr(json!({"type": "object"}))},
                        "text/csv": {}, "application/x-ndjson": {}, "application/vnd.apache.arrow.stream": {}}},
                    "default": {"description": "An error", "content": {"application/problem+json": {"schema": r("Problem")}}}}}},
            "/links/{token}": {"get": {
                "summary": "A feed's rows through a secret feed link: no credentials, otherwise exactly like /feeds/{ws}/{feed}. A revoked link answers 401.",
                "security": [],
                "parameters": [path_param("token", "the link's secret token"), {"name": "format", "in": "query", "schema": {"enum": ["json", "csv", "ndjson", "arrow"]}}],
                "responses": {
                    "200": {"description": "The rows", "content": {
                        "application/json": {"schema": arr(json!({"type": "object"}))},
                        "text/csv": {}, "application/x-ndjson": {}, "application/vnd.apache.arrow.stream": {}}},
                    "default": {"description": "An error", "content": {"application/problem+json": {"schema": r("Problem")}}}}}},
            "/api/v1/whoami": {"get": op("The calling key", "any", &[], None, "200", Some(json!({"type": "object"})))},
            "/api/v1/workspaces": {
                "get": op("Workspaces this key can see", "any", &[], None, "200", Some(arr(r("Workspace")))),
                "post": op("Create a workspace", "admin", &[], Some(json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})), "201", Some(r("Workspace")))},
            "/api/v1/workspaces/{ws}/feeds": {"get": op("Feeds of a workspace", "viewer", std::slice::from_ref(&ws), None, "200", Some(arr(r("Feed"))))},
            "/api/v1/workspaces/{ws}/feeds/{feed}": {
                "get": op("One feed", "viewer", &[ws.clone(), feed.clone()], None, "200", Some(r("Feed"))),
                "delete": op("Delete a feed and its revisions", "editor", &[ws.clone(), feed.clone()], None, "204", None)},
            "/api/v1/workspaces/{ws}/feeds/{feed}/revisions": {"get": op("Revisions, newest first", "viewer", &[ws.clone(), feed.clone()], None, "200", Some(arr(r("Revision"))))},
            "/api/v1/workspaces/{ws}/feeds/{feed}/rollback": {"post": op("Make an earlier revision live", "editor", &[ws.clone(), feed.clone()],
                Some(json!({"type": "object", "required": ["revision"], "properties": {"revision": {"type": "integer"}}})), "200", Some(r("Feed")))},
            "/api/v1/workspaces/{ws}/feeds/{feed}/logs": {"get": op("Recent invocations, oldest first; follow=true streams NDJSON", "editor",
                &[ws.clone(), feed.clone(),
                  json!({"name": "after", "in": "query", "schema": {"type": "integer"}}),
                  json!({"name": "limit", "in": "query", "schema": {"type": "integer"}}),
                  json!({"name": "follow", "in": "query", "schema": {"type": "boolean"}})],
                None, "200", Some(arr(r("Invocation"))))},
            "/api/v1/workspaces/{ws}/feeds/{feed}/connect": {"get": op("How BI tools connect to a feed, and its connection files", "viewer", &[ws.clone(), feed.clone()], None, "200", Some(r("Connect")))},
            "/api/v1/workspaces/{ws}/feeds/{feed}/connect/{tool}": {"get": connect_file(
                "A feed's connection file or snippet, as an attachment. Other query parameters are the feed's own, checked against its signature, and replace its defaults.",
                &[ws.clone(), feed.clone(), tool.clone(), link.clone()])},
            "/api/v1/workspaces/{ws}/connect": {"get": op("How BI tools connect to a workspace, and its connection files", "viewer", std::slice::from_ref(&ws), None, "200", Some(r("Connect")))},
            "/api/v1/workspaces/{ws}/connect/{tool}": {"get": connect_file(
                "A workspace's connection file or snippet (OData service root, PostgreSQL database, or every feed), as an attachment",
                &[ws.clone(), tool.clone()])},
            "/api/v1/workspaces/{ws}/feeds/{feed}/links": {
                "get": op("Active secret links of a feed", "editor", &[ws.clone(), feed.clone()], None, "200", Some(arr(r("Link")))),
                "post": op("Create a secret feed link; the token and URL are in this answer only", "editor", &[ws.clone(), feed.clone()],
                    Some(json!({"type": "object", "properties": {"name": {"type": ["string", "null"], "description": "who or what uses the link"}}})),
                    "201", Some(r("Link")))},
            "/api/v1/workspaces/{ws}/feeds/{feed}/links/{id}": {"delete": op("Revoke a feed's link; it stops working at once", "editor",
                &[ws.clone(), feed.clone(), path_param("id", "the link's id")], None, "204", None)},
            "/api/v1/workspaces/{ws}/links": {"get": op("Active secret links of every feed of a workspace", "editor", std::slice::from_ref(&ws), None, "200", Some(arr(r("Link"))))},
            "/api/v1/workspaces/{ws}/links/{id}": {"delete": op("Revoke a link of the workspace; it stops working at once", "editor",
                &[ws.clone(), path_param("id", "the link's id")], None, "204", None)},
            "/api/v1/workspaces/{ws}/deploy": {"post": op("Deploy a module: each @sluice.feed becomes a live revision. With Accept: application/x-ndjson, progress events stream.", "editor", std::slice::from_ref(&ws), Some(module.clone()), "201", Some(r("Deployed")))},
            "/api/v1/workspaces/{ws}/run": {"post": op("Run a module's feed once without deploying", "editor", std::slice::from_ref(&ws),
                Some(json!({"allOf": [module, {"type": "object", "properties": {
                    "feed": {"type": ["string", "null"]}, "params": {"type": "object"}, "limit": {"type": ["integer", "null"]}}}]})),
                "200", Some(r("RunResult")))},
            "/api/v1/keys": {
                "get": op("Keys (admin: all; editor: the workspace's)", "editor", &[], None, "200", Some(arr(r("Key")))),
                "post": op("Create a key; the secret is in this answer only", "editor", &[],
                    Some(json!({"type": "object", "required": ["name", "role"], "properties": {
                        "name": {"type": "string"}, "role": {"enum": ["admin", "editor", "viewer"]}, "workspace": {"type": ["string", "null"]}}})),
                    "201", Some(r("Key")))},
            "/api/v1/keys/{prefix}": {"delete": op("Revoke a key", "editor", &[path_param("prefix", "the key's prefix")], None, "204", None)},
            "/api/v1/sources": {
                "get": op("Data sources this key can see (never credentials)", "any", &[], None, "200", Some(arr(r("Source")))),
                "post": op("Add or replace a data source; it is tested first", "admin", &[],
                    Some(json!({"type": "object", "required": ["name", "kind", "config"], "properties": {
                        "name": {"type": "string"}, "kind": {"enum": ["sqlite", "postgres"]},
                        "config": {"type": "object", "description": "{\"path\"} for sqlite, {\"url\"} for postgres"},
                        "workspaces": arr(json!({"type": "string"}))}})),
                    "201", Some(r("Source")))},
            "/api/v1/sources/{name}/grants": {"post": op("Grant a data source to a workspace", "admin", &[path_param("name", "data source name")],
                Some(json!({"type": "object", "required": ["workspace"], "properties": {"workspace": {"type": "string"}}})), "204", None)},
        }
    });
    add_ide_paths(&mut doc, &ide_module);
    doc
}

/// What the web IDE needs beyond the CLI's routes: revision code, inspection, drafts,
/// feed metrics, templates and source catalogs. Added to the document after the main
/// table, which is kept under `json!`'s recursion limit.
fn add_ide_paths(doc: &mut Value, module: &Value) {
    let ws = path_param("ws", "workspace name");
    let feed = path_param("feed", "feed name");
    let name = path_param("name", "draft name: the feed it will become");
    let schemas = &mut doc["components"]["schemas"];
    schemas["Draft"] = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "workspace": {"type": "string"}, "filename": {"type": "string"},
        "source": {"type": "string", "description": "not in the list answer"},
        "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}});
    schemas["Template"] = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"},
        "source": {"type": "string", "description": "the module, with {feed} where the feed name goes"}}});
    schemas["Table"] = json!({"type": "object", "properties": {
        "name": {"type": "string", "description": "schema-qualified unless in public (PostgreSQL)"},
        "columns": arr(json!({"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}))}});
    schemas["TrafficBucket"] = json!({"type": "object", "properties": {
        "start": {"type": "string", "format": "date-time"},
        "requests": {"type": "integer"},
        "errors": {"type": "integer", "description": "calls answered 5xx: the feed raised, timed out or its worker failed"},
        "client_errors": {"type": "integer", "description": "calls answered 4xx, such as 429 at the concurrency limit (bad parameters are refused before a call and not counted)"},
        "p50_ms": {"type": ["number", "null"], "description": "median latency, estimated from a latency histogram (within the nearest rank's bucket, never above the slowest call); null without calls"},
        "p95_ms": {"type": ["number", "null"]}}});
    schemas["FeedMetrics"] = json!({"type": "object", "description": "Every call the gateways served, counted per clock minute and added up over the server's replicas (another replica's calls of the current minute show within seconds). Minutes are kept for a day: oldest_record is the start of the feed's oldest kept minute.", "properties": {
        "workspace": {"type": "string"}, "feed": {"type": "string"}, "window": {"type": "string"},
        "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
        "bucket_seconds": {"type": "integer"},
        "total": r("TrafficBucket"),
        "buckets": arr(r("TrafficBucket")),
        "oldest_record": {"type": ["string", "null"], "format": "date-time"}}});
    let paths = &mut doc["paths"];
    paths["/api/v1/workspaces/{ws}/feeds/{feed}/revisions/{number}"] = json!({"get": op(
        "One revision with its code (source)", "editor",
        &[ws.clone(), feed.clone(), json!({"name": "number", "in": "path", "required": true, "schema": {"type": "integer"}})],
        None, "200", Some(json!({"allOf": [r("Revision"), {"type": "object", "properties": {"source": {"type": "string"}}}]})))});
    paths["/api/v1/workspaces/{ws}/inspect"] = json!({"post": op(
        "Load a module in a worker without deploying it: its feeds' signatures, or the invalid_feed_module error (with file and line) a deploy would answer",
        "editor", std::slice::from_ref(&ws), Some(module.clone()), "200",
        Some(json!({"type": "object", "properties": {"feeds": arr(json!({"type": "object", "properties": {
            "name": {"type": "string"}, "doc": {"type": "string"}, "params": arr(r("ParamSpec")),
            "cache": {"type": "string"}, "key": arr(json!({"type": "string"}))}}))}})))});
    paths["/api/v1/workspaces/{ws}/drafts"] = json!({"get": op(
        "The caller's drafts in the workspace (without their code)", "editor", std::slice::from_ref(&ws), None, "200", Some(arr(r("Draft"))))});
    paths["/api/v1/workspaces/{ws}/drafts/{name}"] = json!({
        "get": op("One of the caller's drafts, with its code", "editor", &[ws.clone(), name.clone()], None, "200", Some(r("Draft"))),
        "put": op("Create or replace one of the caller's drafts", "editor", &[ws.clone(), name.clone()],
            Some(json!({"type": "object", "required": ["source"], "properties": {
                "source": {"type": "string"}, "filename": {"type": ["string", "null"], "description": "default {name}.py"}}})),
            "200", Some(r("Draft"))),
        "delete": op("Delete one of the caller's drafts", "editor", &[ws.clone(), name], None, "204", None)});
    paths["/api/v1/workspaces/{ws}/feeds/{feed}/metrics"] = json!({"get": op(
        "A feed's calls, errors and latency (p50, p95) per minute over a window ending with the current minute, and over the whole window",
        "viewer",
        &[ws.clone(), feed.clone(), json!({"name": "window", "in": "query", "required": false,
            "description": "whole minutes or hours up to 24h; default 1h",
            "schema": {"type": "string", "examples": ["15m", "1h", "24h"]}})],
        None, "200", Some(r("FeedMetrics")))});
    paths["/api/v1/templates"] = json!({"get": op(
        "New-feed templates (those of sluice init)", "any", &[], None, "200", Some(arr(r("Template"))))});
    paths["/api/v1/sources/{name}/tables"] = json!({"get": op(
        "Tables and columns of a data source granted to the caller's workspace (admin: any)", "any",
        &[path_param("name", "data source name")], None, "200", Some(arr(r("Table"))))});
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../../docs/openapi.json");

    #[test]
    fn openapi_json_is_committed_and_current() {
        let current = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
            std::fs::write(path, &current).unwrap();
            return;
        }
        assert!(
            COMMITTED == current,
            "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p sluice-control openapi` and commit it"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (route, _) in crate::routes() {
            assert!(
                paths.contains_key(route),
                "{route} is served but not in the OpenAPI document"
            );
        }
    }
}
