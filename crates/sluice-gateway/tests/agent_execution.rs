//! runtime = kubernetes: the gateway's `execute` calls a REAL `sluice agent` (in-process, on
//! loopback, with real Python workers) and gets the same `Execution` as a local call: the
//! schema, the batches, what the feed printed, and the feed's error with its code and message.

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
    std::fs::write(dir.join("feed.py"), MODULE).unwrap();
    let args = AgentArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
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
    assert_eq!(e.code, Code::RuntimeUnavailable);
    assert!(e.message.contains("kubectl get feeds -n team-a"), "{e}");

    gw.set_agent_url("team-a", "hello", Some(&agent_url));
    let mut params = Params::new();
    params.insert("name".into(), ParamValue::Str("ann".into()));
    params.insert("n".into(), ParamValue::Int(5));
    let ex = gw
        .execute("team-a", &module(), "hello", &params, "r1")
        .await
        .unwrap();
    assert!(!ex.passthrough);
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
            url: agent_url.clone(),
            canary: Some(CanaryRoute {
                url: "http://127.0.0.1:9".into(),
                weight: 100,
            }),
        }),
    );
    let ex = gw
        .execute("team-a", &module(), "hello", &Params::new(), "r1c")
        .await
        .unwrap();
    let rows: usize = ex
        .batches
        .map(|b| b.unwrap().num_rows())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(rows, 3);
    gw.set_agent_url("team-a", "hello", Some(&agent_url));

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
    gw.set_agent_url("team-a", "hello", None);
    let e = gw
        .execute("team-a", &module(), "hello", &Params::new(), "r4")
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("no ready agent"), "{e}");
}
