//! End to end: the browser IDE. One `sluice up` server; first the control-API routes the
//! IDE adds (drafts per key, templates, source catalogs, inspection with error lines,
//! revision code, per-feed metrics) over HTTP, then an analyst's first session in a real
//! headless Chromium (`tests/clients/ide_flow.mjs` with playwright-core): log in, create a
//! feed from a template, run it, see the table and the chart, insert a `sluice.sql` snippet,
//! deploy, call its URL, roll back, watch its metrics, create and revoke a key, delete a
//! feed, switch to a second workspace (set up here) and back.
//! Screenshots land in `target/ide-artifacts/` (not committed).
//!
//! Chromium is required, not optional: without it the test fails and says how to install
//! it (`.ci/run` does; or `apt-get install chromium`).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn chromium() -> PathBuf {
    let candidates = [
        std::env::var_os("SLUICE_TEST_CHROMIUM").map(PathBuf::from),
        Some("/usr/bin/chromium".into()),
        Some("/usr/bin/chromium-browser".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "the IDE test needs a headless Chromium and found none: run .ci/run (it installs it) or `apt-get install -y chromium`, or point SLUICE_TEST_CHROMIUM at one"
            )
        })
}

fn artifacts() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ide-artifacts");
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p.canonicalize().unwrap()
}

fn put(http: &Http, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = http
        .client
        .put(format!("{}{}", http.base, path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn delete(http: &Http, path: &str, key: &str) -> u16 {
    http.client
        .delete(format!("{}{}", http.base, path))
        .bearer_auth(key)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn the_ide_takes_an_analyst_from_login_to_a_live_feed() {
    let server = Server::start(Opts::default());
    let http = server.http();
    let admin = ADMIN_KEY;

    // The page and its assets come from the binary.
    let page = http.get("/").send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let html = page.text().unwrap();
    assert!(html.contains("<title>Sluice</title>"));
    assert!(html.contains("/ide/app."), "{html}");

    api_routes_of_the_ide(&http, admin);
    feed_metrics_over_http(&http, admin);

    // The browser session.
    let exe = chromium();
    let dir = artifacts();
    let report = run_client(
        "node",
        "ide_flow.mjs",
        &[
            server.url.as_str(),
            admin,
            dir.to_str().unwrap(),
            exe.to_str().unwrap(),
            SECOND_WS,
            SECOND_FEED,
        ],
        "npm ci in crates/sluice/tests/clients (test.sh does) and Chromium (.ci/run installs it)",
    );
    println!("IDE flow report: {report:#}");
    assert_eq!(report["rows_r1"], 10);
    assert_eq!(report["rows_r2"], 3);
    assert_eq!(report["rows_after_rollback"], 10);
    assert_eq!(report["chart_bars"], 10);
    assert_eq!(report["snippet_inserted"], true);
    assert_eq!(report["revoked_key_status"], 401);
    assert_eq!(report["deleted_feed_status"], 404);
    assert_eq!(report["second_ws_feeds"], json!([SECOND_FEED]));
    // What the Observe panel showed is what the server counts: at least the five calls the
    // flow made (CSV, r1, r2, after the rollback, the tailed one), and no more than the
    // server has counted since.
    let shown = report["metrics_requests"].as_i64().unwrap();
    let (st, m) = http.json(
        "/api/v1/workspaces/demo/feeds/ide_top/metrics?window=1h",
        admin,
    );
    assert_eq!(st, 200, "{m}");
    let counted = m["total"]["requests"].as_i64().unwrap();
    assert!(
        shown >= 5 && shown <= counted,
        "shown {shown}, counted {counted}"
    );
    let first_load = report["first_load_bytes"].as_u64().unwrap();
    assert!(
        first_load > 1000 && first_load <= 300 * 1024,
        "first load {first_load} bytes"
    );
    let shots = report["screenshots"].as_array().unwrap();
    assert!(shots.len() >= 10, "{shots:?}");
    for s in shots {
        let meta = std::fs::metadata(s.as_str().unwrap()).unwrap();
        assert!(meta.len() > 5000, "{s} is not a real screenshot");
    }
    // What the browser did is real: the feed is live at revision 1 after the rollback.
    let (st, feed) = http.json("/api/v1/workspaces/demo/feeds/ide_top", admin);
    assert_eq!(st, 200, "{feed}");
    assert_eq!(feed["live_revision"], 1);
}

/// The second workspace the browser switches to, with one feed that has had calls.
const SECOND_WS: &str = "ide_second";
const SECOND_FEED: &str = "ide_boom";

/// `GET …/feeds/{feed}/metrics` over real calls: three that succeed and one that raises,
/// in a second workspace (which the browser flow then switches to).
fn feed_metrics_over_http(http: &Http, admin: &str) {
    let (st, ws) = http.post("/api/v1/workspaces", admin, json!({"name": SECOND_WS}));
    assert_eq!(st, 201, "{ws}");
    let (st, d) = http.deploy(
        admin,
        SECOND_WS,
        "ide_boom.py",
        "import sluice\n\n@sluice.feed\ndef ide_boom(n: int = 0, fail: bool = False):\n    if fail:\n        raise ValueError('boom')\n    return [{'n': n}]\n",
    );
    assert_eq!(st, 201, "{d}");
    let feed = format!("/feeds/{SECOND_WS}/{SECOND_FEED}");
    for q in ["n=1", "n=2", "n=3", "fail=true"] {
        let r = http.get_key(&format!("{feed}?{q}"), admin);
        let want = if q == "fail=true" { 500 } else { 200 };
        assert_eq!(r.status().as_u16(), want, "{q}: {}", r.text().unwrap());
    }
    // A bad parameter is refused before any call starts: not a call, not counted.
    assert_eq!(http.get_key(&format!("{feed}?n=x"), admin).status(), 400);

    let path = format!("/api/v1/workspaces/{SECOND_WS}/feeds/{SECOND_FEED}/metrics?window=15m");
    let m = metrics_once_counted(http, admin, &path, 4);
    assert_eq!(m["total"]["requests"], 4, "{m}");
    assert_eq!(m["total"]["errors"], 1, "{m}");
    assert_eq!(m["total"]["client_errors"], 0, "{m}");
    assert!(m["total"]["p50_ms"].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        m["total"]["p95_ms"].as_f64() >= m["total"]["p50_ms"].as_f64(),
        "{m}"
    );
    assert_eq!(
        (m["window"].as_str(), m["bucket_seconds"].as_i64()),
        (Some("15m"), Some(60))
    );
    let buckets = m["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 15, "{m}");
    let per_minute: i64 = buckets
        .iter()
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(per_minute, 4, "the minutes add up to the total");
    assert_eq!(m["from"], buckets[0]["start"]);

    // Every call is counted, not only the invocation records, which keep about 20 quiet
    // successful calls a second per feed: a burst of many more, from a few clients at once,
    // is counted exactly.
    const BURST: i64 = 300;
    const CLIENTS: i64 = 4;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let feed = &feed;
            s.spawn(move || {
                for n in (c..BURST).step_by(CLIENTS as usize) {
                    let r = http.get_key(&format!("{feed}?n={n}"), admin);
                    assert_eq!(r.status(), 200, "call {n}");
                }
            });
        }
    });
    let took = started.elapsed();
    let want = 4 + BURST;
    let m = metrics_once_counted(http, admin, &path, want);
    assert_eq!(m["total"]["requests"], want, "{m}");
    assert_eq!(m["total"]["errors"], 1, "{m}");
    let per_minute: i64 = m["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(per_minute, want, "the minutes add up to the total");
    // The periodic flush (every 5 s) writes the same counts again: nothing is added twice.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (st, again) = http.json(&path, admin);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["total"]["requests"], want, "{again}");
    // What the records alone would have shown (informative: on a machine slow enough to
    // spread the burst over 15 seconds they would hold every call).
    let (st, logs) = http.json(
        &format!("/api/v1/workspaces/{SECOND_WS}/feeds/{SECOND_FEED}/logs?limit=1000"),
        admin,
    );
    assert_eq!(st, 200, "{logs}");
    println!(
        "{BURST} calls in {took:?}: {} counted, {} invocation records kept",
        again["total"]["requests"],
        logs.as_array().map_or(0, Vec::len)
    );

    // Counts carry no parameters or output: viewers may read them, not the invocations.
    let (st, viewer) = http.post(
        "/api/v1/keys",
        admin,
        json!({"name": "metrics viewer", "role": "viewer", "workspace": SECOND_WS}),
    );
    assert_eq!(st, 201, "{viewer}");
    let viewer = viewer["secret"].as_str().unwrap();
    assert_eq!(http.json(&path, viewer).0, 200);
    let logs = format!("/api/v1/workspaces/{SECOND_WS}/feeds/{SECOND_FEED}/logs");
    assert_eq!(http.json(&logs, viewer).0, 403);
    let (st, e) = http.json("/api/v1/workspaces/demo/feeds/hello/metrics", viewer);
    assert_eq!(
        (st, e["code"].as_str()),
        (404, Some("workspace_not_found")),
        "another workspace does not exist for this key"
    );

    let (st, e) = http.json(
        &format!("/api/v1/workspaces/{SECOND_WS}/feeds/{SECOND_FEED}/metrics?window=2d"),
        admin,
    );
    assert_eq!(
        (st, e["code"].as_str(), e["parameter"].as_str()),
        (400, Some("invalid_parameter"), Some("window")),
        "{e}"
    );
    let (st, e) = http.json(
        &format!("/api/v1/workspaces/{SECOND_WS}/feeds/nope/metrics"),
        admin,
    );
    assert_eq!(
        (st, e["code"].as_str()),
        (404, Some("feed_not_found")),
        "{e}"
    );
}

/// The metrics at `path` once they count `want` calls, or after 30 s. A call is counted
/// when its response has ended, which a client may see a moment before the server does.
fn metrics_once_counted(http: &Http, admin: &str, path: &str, want: i64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, m) = http.json(path, admin);
        assert_eq!(st, 200, "{m}");
        if m["total"]["requests"].as_i64() >= Some(want) || std::time::Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn api_routes_of_the_ide(http: &Http, admin: &str) {
    // Templates are those of `sluice init`.
    let (st, templates) = http.json("/api/v1/templates", admin);
    assert_eq!(st, 200);
    assert_eq!(templates[0]["name"], "top_products");
    assert!(
        templates[0]["source"]
            .as_str()
            .unwrap()
            .contains("def {feed}(")
    );

    // The warehouse's catalog.
    let (st, tables) = http.json("/api/v1/sources/warehouse/tables", admin);
    assert_eq!(st, 200, "{tables}");
    let sales = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sales")
        .unwrap_or_else(|| panic!("no sales table in {tables}"));
    let cols: Vec<&str> = sales["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        cols.contains(&"region") && cols.contains(&"amount"),
        "{cols:?}"
    );
    let (st, e) = http.json("/api/v1/sources/nope/tables", admin);
    assert_eq!((st, e["code"].as_str()), (404, Some("source_not_found")));

    // Drafts belong to the key that wrote them.
    let (st, editor) = http.post(
        "/api/v1/keys",
        admin,
        json!({"name": "ide editor", "role": "editor", "workspace": "demo"}),
    );
    assert_eq!(st, 201, "{editor}");
    let editor = editor["secret"].as_str().unwrap().to_string();
    let (st, d) = put(
        http,
        "/api/v1/workspaces/demo/drafts/mine",
        &editor,
        json!({"source": "import sluice\n"}),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["filename"], "mine.py");
    let (_, list) = http.json("/api/v1/workspaces/demo/drafts", &editor);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("source").is_none(), "the list leaves code out");
    let (st, _) = http.json("/api/v1/workspaces/demo/drafts/mine", admin);
    assert_eq!(st, 404, "another key's draft is not visible");
    // An unknown workspace is not an empty list of drafts.
    let (st, e) = http.json("/api/v1/workspaces/nowhere/drafts", admin);
    assert_eq!(
        (st, e["code"].as_str()),
        (404, Some("workspace_not_found")),
        "{e}"
    );
    let (st, e) = put(
        http,
        "/api/v1/workspaces/demo/drafts/Bad-Name",
        &editor,
        json!({"source": ""}),
    );
    assert_eq!((st, e["code"].as_str()), (400, Some("invalid_name")), "{e}");
    let (st, e) = put(
        http,
        "/api/v1/workspaces/demo/drafts/big",
        &editor,
        json!({"source": "#".repeat((1 << 20) + 1)}),
    );
    assert_eq!(st, 413, "{e}");
    assert_eq!(
        delete(http, "/api/v1/workspaces/demo/drafts/mine", &editor),
        204
    );
    assert_eq!(
        delete(http, "/api/v1/workspaces/demo/drafts/mine", &editor),
        404
    );

    // Inspect: signatures, or the error a deploy would give, at its line.
    let (st, r) = http.post(
        "/api/v1/workspaces/demo/inspect",
        &editor,
        json!({"filename": "two.py", "source": "import sluice\n\n@sluice.feed\ndef two(n: int = 2):\n    return [{'n': n}]\n"}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["feeds"][0]["name"], "two");
    assert_eq!(r["feeds"][0]["params"][0]["name"], "n");
    let (st, e) = http.post(
        "/api/v1/workspaces/demo/inspect",
        &editor,
        json!({"filename": "bad.py", "source": "import sluice\n\n\ndef broken(:\n    pass\n"}),
    );
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["code"], "invalid_feed_module");
    assert_eq!(e["line"], 4, "{e}");

    // A revision's code, for editors.
    let (st, r) = http.json("/api/v1/workspaces/demo/feeds/hello/revisions/1", &editor);
    assert_eq!(st, 200, "{r}");
    assert!(r["source"].as_str().unwrap().contains("def hello"));
    let (st, e) = http.json("/api/v1/workspaces/demo/feeds/hello/revisions/99", &editor);
    assert_eq!((st, e["code"].as_str()), (404, Some("revision_not_found")));
}
