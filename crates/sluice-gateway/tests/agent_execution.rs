//! runtime = kubernetes: the gateway's `execute` calls a REAL `sluice agent` (in-process, on
//! loopback, with real Python workers) and gets the same `Execution` as a local call: the
//! schema, the batches, what the feed printed, and the feed's error with its code and message.
//!
//! Then the whole `GET /feeds/{ws}/{feed}` over HTTP against real agents: a feed only the
//! cluster knows (applied as YAML by GitOps) checked against the signature its agent
//! serves, and a canary split whose calls are answered, logged and counted under the
//! revision that served each one.

use std::time::Duration;

use arrow_array::{Array, StringArray};
use futures::StreamExt;
use sluice_agent::{Agent, AgentArgs, serve};
use sluice_core::{Code, Params, params::ParamValue};
use sluice_gateway::cluster::{AgentRoute, CanaryRoute};
use sluice_gateway::{AgentClient, Gateway, GatewayConfig};
use sluice_runtime::{ModuleSpec, Runtime, RuntimeConfig};

const MODULE: &str = r#"
import sys
import sluice

@sluice.feed
def hello(name: str = "world", n: int = 3):
    if name == "boom":
        raise ValueError("no booms")
    print("greeting", name)
    print("careful", file=sys.stderr)
    return [{"greeting": "hello " + name, "i": i} for i in range(n)]
"#;

async fn start_agent(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_agent_of(dir, MODULE, "hello", "1").await
}

/// A real agent serving `feed` of `source` as `revision`, in a folder of its own under `dir`.
async fn start_agent_of(
    dir: &std::path::Path,
    source: &str,
    feed: &str,
    revision: &str,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let dir = dir.join(format!("agent-{feed}-{revision}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("feed.py"), source).unwrap();
    let args = AgentArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        module: dir.join("feed.py"),
        feed: feed.into(),
        revision: revision.into(),
        sources_dir: dir.join("sources"),
        data_dir: dir.join("agent-data"),
        python: "python3".into(),
        workers: 1,
        call_timeout_secs: 30,
        drain_secs: 5,
        cpu_scheduling: sluice_runtime::sched::CpuScheduling::Normal,
    };
    let agent = Agent::start(&args).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        agent,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    (base, stop)
}

fn module() -> ModuleSpec {
    // Not used on the agent path: the agent serves the module baked into its image.
    ModuleSpec {
        revision_id: 1,
        filename: "feed.py".into(),
        source: MODULE.into(),
        env_hash: sluice_runtime::BASE_ENV.into(),
        lock: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_goes_through_the_feeds_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_url, stop) = start_agent(dir.path()).await;

    let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
        .await
        .unwrap();
    let runtime = Runtime::start(RuntimeConfig {
        data_dir: dir.path().join("gw-data"),
        python: "python3".into(),
        pool_min: 0,
        pool_max: 1,
        ..RuntimeConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::with_agents(
        store,
        runtime,
        sluice_sources::Sources::new(),
        GatewayConfig::default(),
        AgentClient::new(Duration::from_secs(30)).unwrap(),
        None,
    );
    assert!(gw.uses_agents());

    // Before the Feed reports a URL: 503 with what to look at.
    let params = Params::new();
    let e = gw
        .execute("team-a", &module(), "hello", &params, "r0")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, Code::FeedNotReady);
    assert_eq!(e.retry_after, Some(5));
    assert!(e.message.contains("kubectl get feeds -n team-a"), "{e}");

    gw.set_agent_route("team-a", "hello", Some(AgentRoute::live(&agent_url, "1")));
    let mut params = Params::new();
    params.insert("name".into(), ParamValue::Str("ann".into()));
    params.insert("n".into(), ParamValue::Int(5));
    let ex = gw
        .execute("team-a", &module(), "hello", &params, "r1")
        .await
        .unwrap();
    assert!(!ex.passthrough);
    assert_eq!(ex.revision.as_deref(), Some("1"), "named by the agent");
    let names: Vec<&str> = ex
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["greeting", "i"]);
    let batches: Vec<_> = ex.batches.collect().await;
    let batches: Vec<_> = batches.into_iter().map(|b| b.unwrap()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5);
    let col = batches[0].column_by_name("greeting").unwrap();
    let col = col.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(col.value(0), "hello ann");
    // What the feed printed follows the rows (the agent's trailer): `sluice logs` shows it.
    let logs = ex.logs.wait().await.expect("the call's logs");
    assert_eq!(logs.stdout, "greeting ann\n");
    assert_eq!(logs.stderr, "careful\n");
    assert_eq!(logs.rows, 5);
    assert!(logs.duration_ms > 0.0, "{logs:?}");

    // No rows: schema, end of stream and trailer may come in one chunk.
    let mut params = Params::new();
    params.insert("name".into(), ParamValue::Str("nobody".into()));
    params.insert("n".into(), ParamValue::Int(0));
    let ex = gw
        .execute("team-a", &module(), "hello", &params, "r1b")
        .await
        .unwrap();
    let batches: Vec<_> = ex.batches.collect().await;
    assert!(batches.iter().all(|b| b.as_ref().unwrap().num_rows() == 0));
    let logs = ex.logs.wait().await.expect("the call's logs");
    assert_eq!((logs.stdout.as_str(), logs.rows), ("greeting nobody\n", 0));

    // A canary that cannot be reached: its share of the calls is served by the live agent.
    gw.set_agent_route(
        "team-a",
        "hello",
        Some(AgentRoute {
            wake: None,
            url: agent_url.clone(),
            revision: "1".into(),
            canary: Some(CanaryRoute {
                url: "http://127.0.0.1:9".into(),
                revision: "2".into(),
                weight: 100,
            }),
        }),
    );
    let ex = gw
        .execute("team-a", &module(), "hello", &Params::new(), "r1c")
        .await
        .unwrap();
    assert_eq!(
        ex.revision.as_deref(),
        Some("1"),
        "the live revision served it, not the canary"
    );
    let rows: usize = ex
        .batches
        .map(|b| b.unwrap().num_rows())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(rows, 3);
    gw.set_agent_route("team-a", "hello", Some(AgentRoute::live(&agent_url, "1")));

    // The feed raising: the same code and message as a local call.
    let mut params = Params::new();
    params.insert("name".into(), ParamValue::Str("boom".into()));
    let e = gw
        .execute("team-a", &module(), "hello", &params, "r2")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, Code::FeedRaised, "{e}");
    assert!(e.message.contains("no booms"), "{e}");

    // An agent that is gone: 503, not a hang.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = gw
        .execute("team-a", &module(), "hello", &Params::new(), "r3")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, Code::RuntimeUnavailable, "{e}");

    // Forgotten (feed deleted): back to "no ready agent".
    gw.set_agent_route("team-a", "hello", None);
    let e = gw
        .execute("team-a", &module(), "hello", &Params::new(), "r4")
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("no ready agent"), "{e}");
    assert_eq!(e.code, Code::FeedNotReady);
}

/// A feed applied as YAML: the store has never seen it, its agent knows its signature.
const NIGHTLY: &str = r#"
from datetime import date
import sluice

@sluice.feed
def nightly(region: str = "EU", n: int = 2, since: date = date(2024, 1, 1)):
    """Nightly totals."""
    return [{"region": region, "i": i, "since": since.isoformat()} for i in range(n)]
"#;

/// The canary's code: one parameter more than the live revision's `MODULE`.
const HELLO_V2: &str = r#"
import sluice

@sluice.feed
def hello(name: str = "world", n: int = 3, shout: bool = False):
    print("v2 greeting", name)
    g = "hello " + name
    return [{"greeting": g.upper() if shout else g, "i": i} for i in range(n)]
"#;

fn signature(v: serde_json::Value) -> sluice_core::FeedSignature {
    serde_json::from_value(v).unwrap()
}

/// The gateway over HTTP, with runtime = kubernetes, in front of real agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_feeds_are_checked_against_their_revisions_signature_and_logged_under_it() {
    use sluice_gateway::cluster::{Route, pick};
    let dir = tempfile::tempdir().unwrap();
    let ((nightly_url, _stop1), (live_url, _stop2), (canary_url, _stop3)) = tokio::join!(
        start_agent_of(dir.path(), NIGHTLY, "nightly", "3f2a9c1e7b44"),
        start_agent_of(dir.path(), MODULE, "hello", "1"),
        start_agent_of(dir.path(), HELLO_V2, "hello", "2"),
    );

    // The store knows `hello` (revisions 1 and 2, 1 live), not `nightly`.
    let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
        .await
        .unwrap();
    store.create_workspace("team").await.unwrap();
    let hello = serde_json::json!({"name": "hello", "params": [
        {"name": "name", "type": "str", "default": "world"},
        {"name": "n", "type": "int", "default": 3}]});
    let mut hello_v2 = hello.clone();
    hello_v2["params"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "shout", "type": "bool", "default": false}));
    for (source, sig) in [(MODULE, hello), (HELLO_V2, hello_v2)] {
        store
            .deploy(
                "team",
                vec![sluice_store::NewRevision {
                    feed: "hello".into(),
                    filename: "hello.py".into(),
                    source: source.into(),
                    lock: String::new(),
                    env_hash: sluice_runtime::BASE_ENV.into(),
                    signature: signature(sig),
                    created_by: "ann".into(),
                }],
            )
            .await
            .unwrap();
    }
    store.set_live("team", "hello", 1).await.unwrap();
    let key = sluice_core::keys::generate();
    store
        .create_key(sluice_store::NewKey {
            name: "admin".into(),
            prefix: key.prefix.clone(),
            hash: key.hash.clone(),
            role: sluice_core::Role::Admin,
            workspace: None,
        })
        .await
        .unwrap();
    let runtime = Runtime::start(RuntimeConfig {
        data_dir: dir.path().join("gw-data"),
        python: "python3".into(),
        pool_min: 0,
        pool_max: 1,
        ..RuntimeConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::with_agents(
        store.clone(),
        runtime,
        sluice_sources::Sources::new(),
        GatewayConfig::default(),
        AgentClient::new(Duration::from_secs(30)).unwrap(),
        None,
    );
    gw.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = sluice_gateway::router(gw.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", key.secret);
    let get = |path: &str, rid: &str| {
        http.get(format!("{base}{path}"))
            .header("authorization", &auth)
            .header("x-request-id", rid)
            .send()
    };
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = r.json().await.unwrap();
        (status, retry, body)
    };

    // A GitOps feed still building: told so (503, Retry-After, what it waits for), not a 404
    // and not a call with unchecked parameters.
    gw.set_cluster_route("team", "nightly", Some(Route::Waiting("Building".into())));
    let (status, retry, body) = problem(get("/feeds/team/nightly", "g0").await.unwrap()).await;
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");
    assert_eq!(body["code"], "feed_not_ready");
    assert_eq!(body["waiting_for"], "Building");
    assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
    // A feed neither the store nor the cluster knows is still a 404.
    let (status, _, body) = problem(get("/feeds/team/nobody", "g1").await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("feed_not_found"))
    );

    // Ready: served like any feed, its parameters checked against the signature its agent
    // serves (the store has none).
    gw.set_cluster_route(
        "team",
        "nightly",
        Some(Route::Ready(AgentRoute::live(&nightly_url, "3f2a9c1e7b44"))),
    );
    let r = get("/feeds/team/nightly?region=US&n=3&since=2025-02-01", "g2")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-revision"], "3f2a9c1e7b44");
    let rows: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"region": "US", "i": 0, "since": "2025-02-01"},
            {"region": "US", "i": 1, "since": "2025-02-01"},
            {"region": "US", "i": 2, "since": "2025-02-01"}]),
        "parameters coerced and defaults applied"
    );
    let (status, _, body) = problem(get("/feeds/team/nightly?n=many", "g3").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_parameter");
    assert_eq!(body["parameter"], "n");
    assert_eq!(body["expected"], "int");
    assert!(body["detail"].as_str().unwrap().contains("many"), "{body}");
    let (status, _, body) = problem(
        get("/feeds/team/nightly?since=someday", "g4")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    assert_eq!(body["expected"], "date");
    let (status, _, body) =
        problem(get("/feeds/team/nightly?regoin=US", "g5").await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unknown_parameter"))
    );
    assert_eq!(body["known"], serde_json::json!(["region", "n", "since"]));
    let r = get("/feeds/team/nightly?format=csv&n=1", "g6")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        r.text().await.unwrap(),
        "region,i,since\r\nEU,0,2024-01-01\r\n"
    );
    // Logged and counted like any feed's: the store records the cluster's revision the
    // first time it is served (no code, the agent's signature), and `sluice logs` names it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let invs = store
            .invocations("team", "nightly", None, 100)
            .await
            .unwrap_or_default();
        if invs.len() >= 2 || std::time::Instant::now() > deadline {
            break invs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen: Vec<(&str, u16)> = logged
        .iter()
        .map(|i| (i.record.request_id.as_str(), i.record.status))
        .collect();
    // (Calls refused for their parameters are answered before any feed runs, and are
    // not logged, for any feed.)
    assert_eq!(seen, [("g2", 200), ("g6", 200)], "{logged:?}");
    for inv in &logged {
        assert_eq!(inv.revision_name.as_deref(), Some("3f2a9c1e7b44"));
        assert_eq!(inv.record.revision, 1, "the store's number for it");
    }
    gw.flush_traffic().await.unwrap();
    let now = chrono::Utc::now();
    let minute =
        chrono::DateTime::from_timestamp_millis(now.timestamp_millis() / 60_000 * 60_000).unwrap();
    let t = store
        .feed_traffic(
            "team",
            "nightly",
            minute - chrono::TimeDelta::minutes(1),
            minute + chrono::TimeDelta::minutes(1),
            chrono::TimeDelta::minutes(2),
        )
        .await
        .unwrap();
    assert_eq!((t.total.requests, t.total.errors), (2, 0), "{t:?}");
    assert!(
        store
            .list_feeds("team")
            .await
            .unwrap()
            .iter()
            .all(|(f, _)| f.name != "nightly"),
        "still not one of the store's feeds"
    );
    // Its next revision builds (the watch sees it not Ready): the revision that was Ready
    // keeps serving, its calls checked and logged as before, until the next one is Ready.
    // A feed that has never been Ready still waits.
    let watched = |nightly: Route| {
        std::collections::HashMap::from([(
            "team".to_string(),
            std::collections::HashMap::from([
                ("nightly".to_string(), nightly),
                ("fresh".to_string(), Route::Waiting("Building".into())),
            ]),
        )])
    };
    gw.replace_agent_routes(watched(Route::Waiting("Building".into())));
    for rid in ["b0", "b1"] {
        let r = get("/feeds/team/nightly?n=1&region=US", rid).await.unwrap();
        assert_eq!(r.status(), 200, "{rid}: served by the previous revision");
        assert_eq!(r.headers()["x-sluice-revision"], "3f2a9c1e7b44");
        gw.replace_agent_routes(watched(Route::Waiting("PodsNotReady".into())));
    }
    let (status, _, body) = problem(get("/feeds/team/nightly?n=x", "b2").await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parameter")),
        "still checked against the serving revision's signature: {body}"
    );
    let (status, _, body) = problem(get("/feeds/team/fresh", "b3").await.unwrap()).await;
    assert_eq!(
        (status, body["waiting_for"].as_str()),
        (503, Some("Building"))
    );
    // Deleted from the cluster: not routed any more.
    gw.replace_agent_routes(Default::default());
    let (status, _, body) = problem(get("/feeds/team/nightly", "b4").await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("feed_not_found"))
    );

    // The route names a revision its agent does not serve (yet): 503, never a call checked
    // against another revision's signature.
    gw.set_cluster_route(
        "team",
        "nightly",
        Some(Route::Ready(AgentRoute::live(&nightly_url, "9e9e9e9e9e9e"))),
    );
    let (status, retry, body) = problem(get("/feeds/team/nightly?n=1", "g7").await.unwrap()).await;
    assert_eq!((status, retry.as_deref()), (503, Some("2")), "{body}");
    assert_eq!(body["code"], "feed_not_ready");
    assert!(
        body["detail"].as_str().unwrap().contains("3f2a9c1e7b44"),
        "{body}"
    );

    // A canary split on `hello`: each call answered, logged and counted under the revision
    // that served it; the canary's calls are checked against the canary's own signature.
    let route = AgentRoute {
        wake: None,
        url: live_url.clone(),
        revision: "1".into(),
        canary: Some(sluice_gateway::cluster::CanaryRoute {
            url: canary_url.clone(),
            revision: "2".into(),
            weight: 50,
        }),
    };
    gw.set_agent_route("team", "hello", Some(route.clone()));
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..16 {
        let rid = format!("call-{i}");
        let want = pick(&route, &rid).revision.to_string();
        let r = get("/feeds/team/hello?n=1", &rid).await.unwrap();
        assert_eq!(r.status(), 200, "{rid}");
        assert_eq!(r.headers()["x-sluice-revision"], want.as_str(), "{rid}");
        expected.insert(rid, want);
    }
    let served: std::collections::BTreeSet<&String> = expected.values().collect();
    assert_eq!(served.len(), 2, "both revisions took calls: {expected:?}");
    // `shout` exists only in the canary's signature.
    let to = |rev: &str| {
        (0..100)
            .map(|i| format!("shout-{i}"))
            .find(|rid| pick(&route, rid).revision == rev)
            .unwrap()
    };
    let r = get("/feeds/team/hello?shout=true&n=1", &to("2"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows: serde_json::Value = r.json().await.unwrap();
    assert_eq!(rows[0]["greeting"], "HELLO WORLD");
    let (status, _, body) =
        problem(get("/feeds/team/hello?shout=true", &to("1")).await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unknown_parameter"))
    );

    // The invocation log (what `sluice logs` shows): every call under its own revision.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let invs = store.invocations("team", "hello", None, 100).await.unwrap();
        let ok: Vec<_> = invs
            .into_iter()
            .filter(|i| i.record.request_id.starts_with("call-"))
            .collect();
        if ok.len() == expected.len() || std::time::Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logged.len(), expected.len(), "{logged:?}");
    for inv in &logged {
        let want = &expected[&inv.record.request_id];
        assert_eq!(
            inv.record.revision.to_string(),
            *want,
            "{}",
            inv.record.request_id
        );
        // What the feed printed came from that revision's code.
        let printed = if want == "2" {
            "v2 greeting"
        } else {
            "greeting world"
        };
        assert!(inv.record.stdout.starts_with(printed), "{inv:?}");
    }
    // And the metrics count each revision's calls apart.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for rev in ["1", "2"] {
        let n = expected.values().filter(|r| *r == rev).count();
        let line = format!(
            "sluice_feed_revision_requests_total{{workspace=\"team\",feed=\"hello\",revision=\"{rev}\",status=\"200\"}} "
        );
        let got: usize = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        // The `shout` call the canary served counts too.
        assert_eq!(got, n + usize::from(rev == "2"), "revision {rev}");
    }

    // A canary that is not serving (its agent cannot be reached to learn its signature):
    // its share of the calls goes to the live revision, and is logged so.
    gw.set_agent_route(
        "team",
        "hello",
        Some(AgentRoute {
            wake: None,
            canary: Some(sluice_gateway::cluster::CanaryRoute {
                url: "http://127.0.0.1:9".into(),
                revision: "7".into(),
                weight: 100,
            }),
            ..route.clone()
        }),
    );
    let r = get("/feeds/team/hello?n=1", "fallback-1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-revision"], "1");
}

/// The Kubernetes side of scale to zero as the gateway sees it: `wake` starts the feed's
/// pod, here a real agent on the port its Service answers at; every request is recorded.
struct ScaledToZero {
    dir: std::path::PathBuf,
    port: u16,
    seen: std::sync::Mutex<Vec<String>>,
}

impl sluice_gateway::cluster::Cluster for ScaledToZero {
    fn deploy<'a>(
        &'a self,
        _: &'a str,
        _: &'a sluice_store::Revision,
    ) -> futures::future::BoxFuture<'a, sluice_core::Result<sluice_gateway::cluster::ClusterFeed>>
    {
        unreachable!("this test deploys nothing")
    }
    fn list<'a>(
        &'a self,
        _: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        sluice_core::Result<Vec<sluice_gateway::cluster::ClusterFeed>>,
    > {
        unreachable!("this test lists nothing")
    }
    fn follow<'a>(
        &'a self,
        _: &'a str,
        _: &'a sluice_store::Revision,
        _: chrono::DateTime<chrono::Utc>,
        _: &'a (dyn Fn(sluice_gateway::cluster::Rollout) + Send + Sync),
    ) -> futures::future::BoxFuture<'a, sluice_core::Result<sluice_gateway::cluster::ClusterFeed>>
    {
        unreachable!("this test follows nothing")
    }
    fn delete<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, sluice_core::Result<()>> {
        unreachable!("this test deletes nothing")
    }
    fn touch<'a>(
        &'a self,
        wake: &'a str,
    ) -> futures::future::BoxFuture<'a, sluice_core::Result<()>> {
        self.seen.lock().unwrap().push(format!("touch {wake}"));
        Box::pin(async { Ok(()) })
    }
    fn wake<'a>(
        &'a self,
        wake: &'a str,
    ) -> futures::future::BoxFuture<'a, sluice_core::Result<()>> {
        self.seen.lock().unwrap().push(format!("wake {wake}"));
        let (dir, port) = (self.dir.clone(), self.port);
        // As the API server does: the scale-up is accepted at once; the pod comes later.
        tokio::spawn(async move {
            let dir = dir.join("woken");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("feed.py"), MODULE).unwrap();
            let agent = Agent::start(&AgentArgs {
                listen: "127.0.0.1:0".parse().unwrap(),
                metrics_listen: None,
                module: dir.join("feed.py"),
                feed: "hello".into(),
                revision: "1".into(),
                sources_dir: dir.join("sources"),
                data_dir: dir.join("agent-data"),
                python: "python3".into(),
                workers: 1,
                call_timeout_secs: 30,
                drain_secs: 5,
                cpu_scheduling: sluice_runtime::sched::CpuScheduling::Normal,
            })
            .await
            .unwrap();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            serve(
                listener,
                agent,
                std::future::pending(),
                Duration::from_secs(1),
            )
            .await
        });
        Box::pin(async { Ok(()) })
    }
}

/// A feed scaled to zero has no pod: the first call asks the cluster to start one, is held
/// until it is ready, and is answered; the calls after it go straight through (the gateway
/// asks again, and records a call for the operator's idle timer, at most every 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_wakes_a_feed_scaled_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    // The port the feed's Service would answer at, with nothing behind it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = std::sync::Arc::new(ScaledToZero {
        dir: dir.path().to_path_buf(),
        port,
        seen: Default::default(),
    });
    let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
        .await
        .unwrap();
    let runtime = Runtime::start(RuntimeConfig {
        data_dir: dir.path().join("gw-data"),
        python: "python3".into(),
        pool_min: 0,
        pool_max: 1,
        ..RuntimeConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::with_agents(
        store,
        runtime,
        sluice_sources::Sources::new(),
        GatewayConfig::default(),
        AgentClient::new(Duration::from_secs(30)).unwrap(),
        Some(cluster.clone()),
    );
    let mut route = AgentRoute::live(format!("http://127.0.0.1:{port}"), "1");
    route.wake = Some("sluice-team/hello-r1".into());
    gw.set_agent_route("team-a", "hello", Some(route));

    let started = std::time::Instant::now();
    let ex = gw
        .execute("team-a", &module(), "hello", &Params::new(), "w1")
        .await
        .expect("the call waits for the pod, then is answered");
    let rows: usize = ex
        .batches
        .map(|b| b.unwrap().num_rows())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(rows, 3);
    println!("woken and answered in {:?}", started.elapsed());
    assert_eq!(
        *cluster.seen.lock().unwrap(),
        ["touch sluice-team/hello-r1", "wake sluice-team/hello-r1"]
    );

    let ex = gw
        .execute("team-a", &module(), "hello", &Params::new(), "w2")
        .await
        .unwrap();
    assert_eq!(ex.batches.collect::<Vec<_>>().await.len(), 1);
    assert_eq!(
        cluster.seen.lock().unwrap().len(),
        2,
        "up a moment ago: neither asked nor recorded again"
    );
}
