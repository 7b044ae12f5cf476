//! End to end: the real binary, real Python workers, the real sample warehouse, a real
//! PostgreSQL. One server per scenario; steps inside a scenario run in order because each
//! builds on the last, like a user's session does.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn admin() -> &'static str {
    ADMIN_KEY
}

#[test]
fn the_core_loop_from_init_to_delete() {
    let s = Server::start(Opts::default());
    let http = s.http();
    assert!(
        s.stdout.iter().any(|l| l.contains(ADMIN_KEY)),
        "up prints the admin key: {:?}",
        s.stdout
    );

    // The examples are live on first start.
    let (st, feeds) = http.json("/api/v1/workspaces/demo/feeds", admin());
    assert_eq!(st, 200, "{feeds}");
    let names: Vec<&str> = feeds
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "hello",
        "sales_by_region",
        "customer_segments",
        "monthly_revenue",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // The analyst's path, with the CLI of the same binary.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = s.cli(h, admin(), &["login", &s.url, "--key", admin()]).ok();
    assert!(
        out.stdout.contains("admin") || out.stderr.contains("admin"),
        "{out:?}"
    );
    s.cli(h, admin(), &["init", "top_products"]).ok();
    assert!(h.join("top_products.py").exists());
    let again = s.cli(h, admin(), &["init", "top_products"]);
    assert_ne!(again.code, 0, "init must not overwrite");

    let run = s
        .cli(
            h,
            admin(),
            &[
                "run",
                "top_products.py",
                "-p",
                "limit=5",
                "--output",
                "json",
            ],
        )
        .ok();
    let v: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(v["rows"].as_array().unwrap().len(), 5, "{v}");
    // Not deployed by run.
    assert_eq!(
        http.get_key("/feeds/demo/top_products", admin()).status(),
        404
    );

    let dep = s.cli(h, admin(), &["deploy", "top_products.py"]).ok();
    assert!(dep.stdout.contains("top_products"), "{dep:?}");

    // The same call a BI tool makes: Basic auth with the key as password, CSV.
    let r = http
        .get("/feeds/demo/top_products?limit=5&format=csv")
        .basic_auth("x", Some(admin()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().unwrap();
    assert_eq!(csv.lines().count(), 6, "header + 5 rows:\n{csv}");

    // Every format, from ?format= and from Accept.
    let r = http.get_key("/feeds/demo/top_products?limit=3", admin());
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let rows: Vec<Value> = r.json().unwrap();
    assert_eq!(rows.len(), 3);
    let nd = http
        .get("/feeds/demo/top_products?limit=3")
        .bearer_auth(admin())
        .header("accept", "application/x-ndjson")
        .send()
        .unwrap();
    let nd_text = nd.text().unwrap();
    assert_eq!(nd_text.lines().count(), 3);
    let first: Value = serde_json::from_str(nd_text.lines().next().unwrap()).unwrap();
    assert_eq!(first, rows[0], "ndjson and json agree");
    let arrow = http.get_key("/feeds/demo/top_products?limit=3&format=arrow", admin());
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = arrow.bytes().unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 3);

    // CLI call streams the body.
    let call = s
        .cli(
            h,
            admin(),
            &["call", "top_products", "-p", "limit=2", "--format", "csv"],
        )
        .ok();
    assert_eq!(call.stdout.lines().count(), 3, "{call:?}");

    // A second revision, then rollback to the first.
    let src = std::fs::read_to_string(h.join("top_products.py")).unwrap();
    let (_, f1) = http.json("/api/v1/workspaces/demo/feeds/top_products", admin());
    let doc1 = f1["doc"].as_str().unwrap().to_string();
    assert!(!doc1.is_empty() && src.contains(&doc1), "{f1}");
    let v2 = src.replacen(&doc1, &format!("Revision two. {doc1}"), 1);
    std::fs::write(h.join("top_products.py"), &v2).unwrap();
    s.cli(h, admin(), &["deploy", "top_products.py"]).ok();
    let (_, f) = http.json("/api/v1/workspaces/demo/feeds/top_products", admin());
    assert_eq!(f["live_revision"], 2);
    assert!(
        f["doc"].as_str().unwrap().starts_with("Revision two"),
        "{f}"
    );
    let revs = s
        .cli(
            h,
            admin(),
            &["revisions", "top_products", "--output", "json"],
        )
        .ok();
    let revs: Value = serde_json::from_str(&revs.stdout).unwrap();
    assert_eq!(revs.as_array().unwrap().len(), 2);
    s.cli(h, admin(), &["rollback", "top_products", "1"]).ok();
    let (_, f) = http.json("/api/v1/workspaces/demo/feeds/top_products", admin());
    assert_eq!(f["live_revision"], 1);
    assert!(!f["doc"].as_str().unwrap().starts_with("Revision two"));
    let r = http.get_key("/feeds/demo/top_products?limit=1", admin());
    assert_eq!(r.headers()["x-sluice-revision"], "1");

    // Delete.
    assert_eq!(
        f1["url"],
        format!("{}/feeds/demo/top_products", s.url),
        "links use the real address"
    );
    s.cli(h, admin(), &["delete", "top_products", "--yes"]).ok();
    assert_eq!(
        http.get_key("/feeds/demo/top_products", admin()).status(),
        404
    );

    // gzip when asked.
    let r = http
        .get("/feeds/demo/sales_by_region?region=NA")
        .bearer_auth(admin())
        .header("accept-encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );

    // The API describes itself, exactly as committed.
    let doc: Value = http
        .get("/api/v1/openapi.json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let committed: Value =
        serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
    assert_eq!(doc, committed);

    // Request ids come back.
    let r = http.get_key("/feeds/demo/hello", admin());
    assert!(r.headers().contains_key("x-request-id"));
}

#[test]
fn auth_roles_and_parameter_errors() {
    let s = Server::start(Opts::default());
    let http = s.http();

    // No key: 401 with a Basic challenge (Excel and Tableau need it to prompt).
    let r = http.get("/feeds/demo/hello").send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().unwrap();
    assert_eq!(p["code"], "unauthenticated");
    let (st, p) = http.json(
        "/feeds/demo/hello",
        "sk_aaaaaaaaaa_wrongwrongwrongwrongwrongwrongwron",
    );
    assert_eq!((st, p["code"].as_str()), (401, Some("invalid_key")));

    // Every place a key may travel.
    assert_eq!(
        http.get("/feeds/demo/hello")
            .header("x-api-key", admin())
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(&format!("/feeds/demo/hello?api_key={}", admin()))
            .send()
            .unwrap()
            .status(),
        200
    );

    // Keys per workspace and role.
    let (st, _) = http.post("/api/v1/workspaces", admin(), json!({"name": "finance"}));
    assert_eq!(st, 201);
    let (st, viewer) = http.post(
        "/api/v1/keys",
        admin(),
        json!({"name": "tableau", "role": "viewer", "workspace": "demo"}),
    );
    assert_eq!(st, 201, "{viewer}");
    let viewer = viewer["secret"].as_str().unwrap().to_string();
    let (_, other) = http.post(
        "/api/v1/keys",
        admin(),
        json!({"name": "fin", "role": "editor", "workspace": "finance"}),
    );
    let other = other["secret"].as_str().unwrap().to_string();

    assert_eq!(
        http.get_key("/feeds/demo/hello", &viewer).status(),
        200,
        "a viewer may call feeds"
    );
    let (st, p) = http.deploy(
        &viewer,
        "demo",
        "x.py",
        "import sluice\n@sluice.feed\ndef x():\n    return []\n",
    );
    assert_eq!(
        (st, p["code"].as_str()),
        (403, Some("forbidden")),
        "a viewer may not deploy: {p}"
    );
    let (st, p) = http.json("/feeds/demo/hello", &other);
    assert_eq!(
        (st, p["code"].as_str()),
        (404, Some("workspace_not_found")),
        "other workspaces are invisible: {p}"
    );

    // Revoked keys stop working at once.
    let prefix = viewer.split('_').nth(1).unwrap().to_string();
    let r = http
        .client
        .delete(format!("{}/api/v1/keys/{prefix}", http.base))
        .bearer_auth(admin())
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(http.get_key("/feeds/demo/hello", &viewer).status(), 401);

    // Parameters are checked before user code runs.
    let (st, p) = http.json("/feeds/demo/sales_by_region?since=yesterday", admin());
    assert_eq!(st, 400);
    assert_eq!(p["code"], "invalid_parameter");
    assert_eq!(p["parameter"], "since");
    assert!(
        p["detail"].as_str().unwrap().contains("yesterday")
            && p["detail"].as_str().unwrap().contains("YYYY-MM-DD"),
        "{p}"
    );
    let (st, p) = http.json("/feeds/demo/sales_by_region?regoin=EU", admin());
    assert_eq!((st, p["code"].as_str()), (400, Some("unknown_parameter")));
    assert!(
        p["detail"].as_str().unwrap().contains("region"),
        "the error lists the known parameters: {p}"
    );
    let (st, p) = http.json("/feeds/demo/hello?format=xlsx", admin());
    assert_eq!((st, p["code"].as_str()), (400, Some("unsupported_format")));
    let (st, p) = http.json("/feeds/demo/nope", admin());
    assert_eq!((st, p["code"].as_str()), (404, Some("feed_not_found")));
}

#[test]
fn deploy_errors_name_the_cause() {
    let s = Server::start(Opts::default());
    let http = s.http();
    let cases = [
        (
            "syntax.py",
            "import sluice\n\n@sluice.feed\ndef f(:\n    pass\n",
            "syntax",
            Some(4),
        ),
        (
            "imports.py",
            "import sluice\nimport not_a_module_xyz\n\n@sluice.feed\ndef f():\n    return []\n",
            "not_a_module_xyz",
            Some(2),
        ),
        (
            "nofeed.py",
            "def f():\n    return []\n",
            "@sluice.feed",
            None,
        ),
        (
            "badtype.py",
            "import sluice\n\n@sluice.feed\ndef f(x: dict = {}):\n    return []\n",
            "dict",
            Some(4),
        ),
        (
            "baddep.py",
            "# /// script\n# dependencies = [\"this-package-does-not-exist-sluice-test\"]\n# ///\nimport sluice\n@sluice.feed\ndef f():\n    return []\n",
            "this-package-does-not-exist-sluice-test",
            None,
        ),
    ];
    for (file, src, needle, line) in cases {
        let (st, p) = http.deploy(admin(), "demo", file, src);
        assert_eq!(st, 422, "{file}: {p}");
        let detail = p["detail"].as_str().unwrap_or_default().to_lowercase();
        assert!(detail.contains(&needle.to_lowercase()), "{file}: {p}");
        if let Some(line) = line {
            assert_eq!(p["line"], line, "{file}: {p}");
            assert_eq!(p["file"], file, "{file}: {p}");
        }
    }
    // Nothing of the failed deploys went live.
    let (_, feeds) = http.json("/api/v1/workspaces/demo/feeds", admin());
    assert!(!feeds.as_array().unwrap().iter().any(|f| f["name"] == "f"));
}

const CRASHY: &str = r#"
import os, sys, time
import sluice

@sluice.feed
def crashy(mode: str = "ok"):
    print("called with", mode)
    if mode == "exit":
        os._exit(3)
    if mode == "raise":
        raise ValueError("bad mode")
    if mode == "sleep":
        time.sleep(30)
    return [{"mode": mode}]

@sluice.feed
def big(n: int = 1000000):
    for i in range(n):
        yield {"i": i, "label": "row"}
"#;

#[test]
fn failures_stay_inside_their_feed() {
    // Long enough for the 1M-row stream below on a loaded CI machine (a debug build's worker
    // time counts against it), short of the 30 s the sleeping call would take.
    let s = Server::start(Opts {
        env: vec![("SLUICE_CALL_TIMEOUT".into(), "10".into())],
        ..Default::default()
    });
    let http = s.http();
    let (st, p) = http.deploy(admin(), "demo", "crashy.py", CRASHY);
    assert_eq!(st, 201, "{p}");

    let (st, p) = http.json("/feeds/demo/crashy?mode=raise", admin());
    assert_eq!((st, p["code"].as_str()), (500, Some("feed_raised")), "{p}");
    assert!(
        p["traceback"].as_str().unwrap().contains("ValueError"),
        "editors see the traceback: {p}"
    );
    let (_, viewer) = http.post(
        "/api/v1/keys",
        admin(),
        json!({"name": "v", "role": "viewer", "workspace": "demo"}),
    );
    let (st, p) = http.json(
        "/feeds/demo/crashy?mode=raise",
        viewer["secret"].as_str().unwrap(),
    );
    assert_eq!(st, 500);
    assert!(p.get("traceback").is_none(), "viewers don't: {p}");

    let (st, p) = http.json("/feeds/demo/crashy?mode=exit", admin());
    assert_eq!(
        (st, p["code"].as_str()),
        (502, Some("worker_crashed")),
        "{p}"
    );
    assert_eq!(
        http.get_key("/feeds/demo/hello", admin()).status(),
        200,
        "other feeds are unaffected"
    );
    let (st, _) = http.json("/feeds/demo/crashy?mode=ok", admin());
    assert_eq!(st, 200, "the crashed worker was replaced");

    let (st, p) = http.json("/feeds/demo/crashy?mode=sleep", admin());
    assert_eq!((st, p["code"].as_str()), (504, Some("timeout")), "{p}");
    let (st, _) = http.json("/feeds/demo/crashy?mode=ok", admin());
    assert_eq!(st, 200);

    // Captured output is in the logs, per invocation.
    std::thread::sleep(Duration::from_millis(600));
    let (st, logs) = http.json("/api/v1/workspaces/demo/feeds/crashy/logs", admin());
    assert_eq!(st, 200, "{logs}");
    let logs = logs.as_array().unwrap();
    assert!(
        logs.iter().any(|l| l["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("called with raise")
            && l["status"] == 500),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l["error_code"] == "timeout"),
        "{logs:?}"
    );

    // A 1M-row result streams: the server never holds it whole.
    let before = peak_rss_kib(s.pid());
    let mut r = http
        .get("/feeds/demo/big?format=ndjson")
        .bearer_auth(admin())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut lines = 0usize;
    let mut buf = [0u8; 65536];
    loop {
        let n = std::io::Read::read(&mut r, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 1_000_000);
    let after = peak_rss_kib(s.pid());
    // 1M rows as NDJSON is ~30 MB; the server's peak may not grow by anything like it.
    assert!(
        after.saturating_sub(before) < 25_000,
        "peak RSS grew {} KiB while streaming",
        after - before
    );

    let metrics = http.get("/metrics").send().unwrap().text().unwrap();
    assert!(
        metrics.contains(
            "sluice_feed_requests_total{workspace=\"demo\",feed=\"crashy\",status=\"502\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_feed_request_duration_seconds_bucket"));
    assert!(metrics.contains("sluice_workers{"));
}

#[test]
fn a_full_queue_answers_429() {
    let s = Server::start(Opts {
        env: vec![
            ("SLUICE_FEED_CONCURRENCY".into(), "1".into()),
            ("SLUICE_FEED_QUEUE".into(), "0".into()),
        ],
        ..Default::default()
    });
    let http = s.http();
    let (st, p) = http.deploy(admin(), "demo", "slow.py", "import time, sluice\n@sluice.feed\ndef slow(s: float = 2):\n    time.sleep(s)\n    return [{\"ok\": 1}]\n");
    assert_eq!(st, 201, "{p}");
    let base = s.url.clone();
    let busy = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(format!("{base}/feeds/demo/slow?s=3"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap()
            .status()
    });
    std::thread::sleep(Duration::from_millis(800));
    let r = http.get_key("/feeds/demo/slow?s=0", admin());
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(http.get_key("/feeds/demo/slow?s=0", admin()).status(), 200);
}

#[test]
fn restart_keeps_everything_and_sigterm_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start_in(dir.clone(), None, Opts::default());
    let http = s.http();
    let (st, p) = http.deploy(admin(), "demo", "slow.py", "import time, sluice\n@sluice.feed\ndef slow(s: float = 2):\n    time.sleep(s)\n    return [{\"ok\": 1}]\n");
    assert_eq!(st, 201, "{p}");
    let base = s.url.clone();
    let in_flight = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .get(format!("{base}/feeds/demo/slow?s=2"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(700));
    let status = s.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let (code, body) = in_flight.join().unwrap();
    assert_eq!(
        code, 200,
        "the in-flight request finished during shutdown: {body}"
    );

    let s = Server::start_in(dir, Some(tmp), Opts::default());
    let http = s.http();
    let (st, _) = http.json("/feeds/demo/slow?s=0", admin());
    assert_eq!(st, 200, "deployed feeds survive a restart");
    let (_, feeds) = http.json("/api/v1/workspaces/demo/feeds", admin());
    assert_eq!(
        feeds
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["name"] == "hello")
            .count(),
        1,
        "examples are not deployed twice"
    );
}

#[test]
fn the_cli_explains_what_went_wrong() {
    let s = Server::start(Opts::default());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    // Wrong key: says so and what to do.
    let out = s.cli(
        h,
        "sk_aaaaaaaaaa_notavalidkeynotavalidkeynotava",
        &["feeds"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("the key was rejected") && out.stderr.contains("sluice login"),
        "{out:?}"
    );

    // Server unreachable: says where it looked.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = std::process::Command::new(bin())
        .args([
            "feeds",
            "--url",
            &format!("http://{dead}"),
            "--key",
            ADMIN_KEY,
        ])
        .env("HOME", h)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot reach Sluice") && stderr.contains(&dead.to_string()),
        "{stderr}"
    );

    // A deploy error shows file:line from the server.
    std::fs::write(
        h.join("broken.py"),
        "import sluice\n\n@sluice.feed\ndef broken(:\n    pass\n",
    )
    .unwrap();
    let out = s.cli(h, ADMIN_KEY, &["deploy", "broken.py"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("broken.py") && out.stderr.contains('4'),
        "{out:?}"
    );

    // --output json is machine-readable; logs show what a feed printed.
    let out = s.cli(h, ADMIN_KEY, &["feeds", "--output", "json"]).ok();
    let feeds: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        feeds
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "hello")
    );
    std::fs::write(
        h.join("noisy.py"),
        "import sluice\n\n@sluice.feed\ndef noisy(word: str = 'x'):\n    print('the word is', word)\n    return [{'w': word}]\n",
    )
    .unwrap();
    s.cli(h, ADMIN_KEY, &["deploy", "noisy.py"]).ok();
    s.cli(h, ADMIN_KEY, &["call", "noisy", "-p", "word=pelican"])
        .ok();
    std::thread::sleep(Duration::from_millis(600));
    let out = s
        .cli(h, ADMIN_KEY, &["logs", "noisy", "--output", "json"])
        .ok();
    assert!(out.stdout.contains("the word is pelican"), "{out:?}");

    // Keys: the secret is printed once, and works.
    let out = s
        .cli(
            h,
            ADMIN_KEY,
            &["keys", "create", "excel", "--role", "viewer", "-w", "demo"],
        )
        .ok();
    let secret = out.stdout.trim().to_string();
    assert!(secret.starts_with("sk_"), "{out:?}");
    assert_eq!(s.http().get_key("/feeds/demo/hello", &secret).status(), 200);

    // Oversized modules are refused with 413.
    let big = format!(
        "import sluice\n# {}\n@sluice.feed\ndef big():\n    return []\n",
        "x".repeat(2 << 20)
    );
    let (st, p) = s.http().deploy(ADMIN_KEY, "demo", "big.py", &big);
    assert_eq!(
        (st, p["code"].as_str()),
        (413, Some("payload_too_large")),
        "{p}"
    );
}

#[test]
fn a_new_revision_goes_live_while_old_calls_finish() {
    let s = Server::start(Opts::default());
    let http = s.http();
    let v = |n: u32, sleep: f32| {
        format!(
            "import time, sluice\n\n@sluice.feed\ndef ver(s: float = {sleep}):\n    time.sleep(s)\n    return [{{\"v\": {n}}}]\n"
        )
    };
    let (st, p) = http.deploy(ADMIN_KEY, "demo", "ver.py", &v(1, 2.0));
    assert_eq!(st, 201, "{p}");
    let base = s.url.clone();
    let old_call = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .get(format!("{base}/feeds/demo/ver"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap();
        r.json::<Value>().unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));

    // Progress streams while the deploy runs, then the result.
    let r = http
        .client
        .post(format!("{}/api/v1/workspaces/demo/deploy", http.base))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "application/x-ndjson")
        .json(&json!({"filename": "ver.py", "source": v(2, 0.0)}))
        .send()
        .unwrap();
    let events: Vec<Value> = r
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "progress"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["event"], "done", "{events:?}");
    assert_eq!(events.last().unwrap()["feeds"][0]["revision"], 2);

    let (_, now) = http.json("/feeds/demo/ver", ADMIN_KEY);
    assert_eq!(
        now,
        json!([{"v": 2}]),
        "new calls get the new revision at once"
    );
    assert_eq!(
        old_call.join().unwrap(),
        json!([{"v": 1}]),
        "the call in flight finished on the old one"
    );
}

/// The scheduling policy of every thread of `pid` and of every process it started, by name
/// (`sluice_runtime::sched::policy_of` reads a thread's as well as a process's).
fn policies_of_tree(pid: u32) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        if let Ok(p) = sluice_runtime::sched::policy_of(tid) {
            out.push((format!("sluice thread {tid}"), p));
        }
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_str().unwrap_or("").parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == pid {
            let cmd = std::fs::read_to_string(format!("/proc/{child}/cmdline")).unwrap_or_default();
            if let Ok(p) = sluice_runtime::sched::policy_of(child) {
                out.push((cmd.replace('\0', " "), p));
            }
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_server_and_its_workers_run_batch_scheduled_unless_told_otherwise() {
    // `normal` keeps the policy the server was started with: this test thread's.
    let inherited = sluice_runtime::sched::policy_of(0).unwrap();
    for (env, want) in [(None, "batch"), (Some("normal"), inherited)] {
        let opts = Opts {
            env: env
                .map(|v| vec![("SLUICE_CPU_SCHEDULING".to_string(), v.to_string())])
                .unwrap_or_default(),
            ..Opts::default()
        };
        let s = Server::start(opts);
        // A call, so the feed's worker is certainly running.
        let (st, body) = s.http().json("/feeds/demo/hello", admin());
        assert_eq!(st, 200, "{body}");
        let tree = policies_of_tree(s.pid());
        assert!(
            tree.iter().any(|(name, _)| name.contains("sluice._worker")),
            "a worker is among the server's children: {tree:?}"
        );
        assert!(tree.len() > 3, "threads and workers were found: {tree:?}");
        let wrong: Vec<_> = tree.iter().filter(|(_, p)| *p != want).collect();
        assert!(wrong.is_empty(), "with {env:?}, not {want}: {wrong:?}");
    }
}
