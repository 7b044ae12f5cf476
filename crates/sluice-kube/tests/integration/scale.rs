//! How long the operator takes to reconcile 1,000 Feeds, over real HTTP to a minimal fake API
//! server on loopback (answers every read the reconcile makes, echoes every apply, lists
//! nothing to sweep). It measures the operator's own cost per feed: dereference, build,
//! the build pod's digest, 4 applies, 4 sweep lists, a status patch and an Event, 14 requests
//! a feed. Run with
//! `cargo test -p sluice-kube --test integration -- --nocapture scale::` (part of `./test.sh`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use serde_json::{Value, json};
use sluice_kube::build::Settings;
use sluice_kube::crd::Feed;
use sluice_kube::metrics::Metrics;
use sluice_kube::reconcile::{Context, now_rfc3339, reconcile_feed};

async fn api(
    State(count): State<Arc<AtomicUsize>>,
    method: Method,
    uri: Uri,
    Path(path): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    count.fetch_add(1, Ordering::Relaxed);
    let parts: Vec<&str> = path.split('/').collect();
    let name = parts.last().copied().unwrap_or_default().to_string();
    let json_body =
        |v: Value| ([("content-type", "application/json")], v.to_string()).into_response();
    match method {
        Method::PATCH | Method::POST => {
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            if path.ends_with("/status") || parts.contains(&"feeds") {
                v = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed", "metadata": {"name": parts[parts.len() - 2]},
                    "spec": {"source": {"inline": "x"}}});
            }
            if v["kind"] == "Deployment" {
                v["status"] = json!({"replicas": 1, "readyReplicas": 1});
            }
            json_body(v)
        }
        _ if uri.query().is_some_and(|q| q.contains("labelSelector")) => json_body(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": []}),
        ),
        _ if parts.contains(&"datasources") => json_body(
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSource",
            "metadata": {"name": name}, "spec": {"type": "postgres", "secretRef": {"name": "s", "namespace": "n"}, "workspaces": ["*"]}}),
        ),
        _ if parts.contains(&"jobs") => json_body(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "status": {"succeeded": 1}}),
        ),
        _ => json_body(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"sluice.dev/workspace": "team"}}}),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_1000_feeds() {
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::any(api))
        .with_state(count.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: Settings::default(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "sluice-operator".into(),
                instance: None,
            },
        ),
        metrics: Metrics::default(),
        namespace: "sluice-system".into(),
        now: now_rfc3339,
        failures: Default::default(),
    });
    let feeds: Vec<Arc<Feed>> = (0..1000)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
                    "metadata": {"name": format!("feed-{i}"), "namespace": format!("sluice-ws-{}", i % 20), "uid": format!("u{i}"),
                                 "generation": 1, "finalizers": ["sluice.dev/cleanup"]},
                    "spec": {"source": {"inline": format!("import sluice\n# {i}\n")}, "dataSources": ["warehouse"]}}))
                .unwrap(),
            )
        })
        .collect();
    let started = Instant::now();
    // The Controller's default is unbounded concurrency; 16 in flight is a conservative stand-in.
    let results: Vec<_> = futures::stream::iter(feeds)
        .map(|f| reconcile_feed(f, ctx.clone()))
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "{:?}", results.iter().find(|r| r.is_err()));
    let requests = count.load(Ordering::Relaxed);
    println!(
        "reconciled 1000 feeds in {elapsed:.2?} ({:.0} feeds/s, {requests} API requests, {:.0} req/s)",
        1000.0 / elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    // The time is printed for docs/kubernetes.md, never asserted: it measures the machine.
}
