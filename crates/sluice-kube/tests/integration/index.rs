//! The server's watched view of Feeds (`sluice_kube::index`): the pure index from objects,
//! and the watch against a scenario mock API server that lists, then streams watch events.
//! Every request is asserted (method, path, that it is a list or a watch); routes must
//! follow the events (a feed becoming Ready is added, a deleted one removed, a relist
//! replaces everything).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sluice_kube::crd::{Feed, Workspace};
use sluice_kube::index::{self, FeedIndex};

const FEEDS: &str = "/apis/sluice.dev/v1alpha1/feeds";
const WORKSPACES: &str = "/apis/sluice.dev/v1alpha1/workspaces";

fn feed_value(ns: &str, name: &str, function: Option<&str>, ready: bool) -> Value {
    let mut spec = json!({"source": {"inline": "import sluice\n"}, "revision": "3"});
    if let Some(f) = function {
        spec["function"] = f.into();
    }
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
        "metadata": {"name": name, "namespace": ns, "generation": 1, "resourceVersion": "5"},
        "spec": spec,
        "status": {"observedGeneration": 1, "revision": "3", "conditions": [
            {"type": "Built", "status": "True", "reason": "ImageReady", "message": ""},
            {"type": "Ready", "status": if ready {"True"} else {"False"},
             "reason": if ready {"Available"} else {"Rollout"}, "message": ""}]}})
}

fn feed(ns: &str, name: &str, function: Option<&str>, ready: bool) -> Feed {
    serde_json::from_value(feed_value(ns, name, function, ready)).unwrap()
}

fn workspace_value(name: &str, namespace: Option<&str>) -> Value {
    let mut spec = json!({});
    if let Some(ns) = namespace {
        spec["namespace"] = ns.into();
    }
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name, "resourceVersion": "5"}, "spec": spec})
}

fn workspace(name: &str, namespace: Option<&str>) -> Workspace {
    serde_json::from_value(workspace_value(name, namespace)).unwrap()
}

/// (workspace, feed, agent URL or "-" when not ready, canary "url weight" or "-").
fn summary(idx: &FeedIndex) -> Vec<(String, String, String, String)> {
    idx.routes()
        .into_values()
        .map(|r| {
            (
                r.workspace,
                r.feed,
                r.view.agent_url.unwrap_or_else(|| "-".into()),
                r.view
                    .canary
                    .map(|c| format!("{} {}", c.agent_url, c.weight))
                    .unwrap_or_else(|| "-".into()),
            )
        })
        .collect()
}

fn row(ws: &str, feed: &str, url: &str, canary: &str) -> (String, String, String, String) {
    (ws.into(), feed.into(), url.into(), canary.into())
}

#[test]
fn routes_come_from_ready_feeds_in_workspace_namespaces() {
    let mut idx = FeedIndex::default();
    let mut with_canary = feed_value(
        "sluice-team",
        "sales-by-region",
        Some("sales_by_region"),
        true,
    );
    with_canary["spec"]["canary"] = json!({"revision": "4", "image": "r/x:4", "weight": 10});
    idx.apply_feed(&serde_json::from_value(with_canary).unwrap());
    idx.apply_feed(&feed("sluice-team", "nightly", None, false));
    // Not a workspace namespace: never served.
    idx.apply_feed(&feed("kube-system", "stray", None, true));
    assert_eq!(
        summary(&idx),
        [
            row("team", "nightly", "-", "-"),
            row(
                "team",
                "sales_by_region",
                "http://sales-by-region.sluice-team.svc",
                "http://sales-by-region-canary.sluice-team.svc 10"
            ),
        ]
    );
    assert_eq!(idx.namespace_of("team"), "sluice-team");

    // A Workspace object with its own namespace: that namespace's feeds are the workspace's,
    // and `sluice-team` no longer is.
    idx.apply_workspace(&workspace("team", Some("analytics")));
    assert_eq!(idx.namespace_of("team"), "analytics");
    assert_eq!(idx.workspace_of("analytics").as_deref(), Some("team"));
    assert_eq!(idx.workspace_of("sluice-team"), None);
    assert!(summary(&idx).is_empty());
    idx.apply_feed(&feed("analytics", "sales", None, true));
    assert_eq!(
        summary(&idx),
        [row("team", "sales", "http://sales.analytics.svc", "-")]
    );
    assert_eq!(idx.feeds_of("team").len(), 1);

    idx.delete_workspace(&workspace("team", Some("analytics")));
    assert_eq!(idx.namespace_of("team"), "sluice-team");
    idx.delete_feed(&feed("sluice-team", "nightly", None, false));
    assert_eq!(
        summary(&idx)
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>(),
        ["sales_by_region"]
    );
    idx.reset_feeds(&[]);
    assert!(summary(&idx).is_empty());
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items})
}

fn events(evs: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, o) in evs {
        out.extend_from_slice(json!({"type": t, "object": o}).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn the_watch_keeps_routes_current() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let idx = Arc::new(RwLock::new(FeedIndex::default()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(index::watch(client, idx.clone(), move |i: &FeedIndex| {
        let _ = tx.send(summary(i));
    }));

    // The API server: each watcher lists, then watches from the list's resourceVersion.
    // The two watchers run concurrently, so requests are answered by what they ask for.
    // The Feed watch's events are held until the test has seen the listed state.
    let (go, mut released) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut held = Vec::new(); // watches left open, as a quiet API server does
        let mut feed_watch = None;
        let mut go_given = false;
        let watch_events = || {
            // nightly becomes Ready; sales-by-region is deleted.
            events(&[
                ("MODIFIED", feed_value("sluice-ops", "nightly", None, true)),
                (
                    "DELETED",
                    feed_value(
                        "analytics",
                        "sales-by-region",
                        Some("sales_by_region"),
                        true,
                    ),
                ),
            ])
        };
        loop {
            let (req, send) = tokio::select! {
                r = handle.next_request() => match r {
                    Some(r) => r,
                    None => break,
                },
                _ = &mut released, if !go_given => {
                    go_given = true;
                    if let Some(send) = feed_watch.take() {
                        let send: tower_test::mock::SendResponse<Response<Body>> = send;
                        send.send_response(Response::new(Body::from(watch_events())));
                    }
                    continue;
                }
            };
            let (path, query) = (
                req.uri().path().to_string(),
                req.uri().query().unwrap_or("").to_string(),
            );
            assert_eq!(req.method(), "GET", "{path}?{query}");
            let watching = query.contains("watch=true");
            seen.push((path.clone(), watching));
            let body = match (path.as_str(), watching) {
                (WORKSPACES, false) => serde_json::to_vec(&list(
                    "WorkspaceList",
                    vec![workspace_value("team", Some("analytics"))],
                ))
                .unwrap(),
                (FEEDS, false) => serde_json::to_vec(&list(
                    "FeedList",
                    vec![
                        feed_value(
                            "analytics",
                            "sales-by-region",
                            Some("sales_by_region"),
                            true,
                        ),
                        feed_value("sluice-ops", "nightly", None, false),
                    ],
                ))
                .unwrap(),
                (FEEDS, true)
                    if seen
                        .iter()
                        .filter(|s| **s == (FEEDS.to_string(), true))
                        .count()
                        == 1 =>
                {
                    assert!(query.contains("resourceVersion=10"), "{query}");
                    if !go_given {
                        feed_watch = Some(send);
                        continue;
                    }
                    watch_events()
                }
                (_, true) => {
                    held.push(send);
                    continue;
                }
                other => panic!("unexpected request {other:?}"),
            };
            send.send_response(Response::new(Body::from(body)));
        }
        seen
    });

    // Wait for the routes to reach a state (intermediate states depend on which list lands first).
    async fn until(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<(String, String, String, String)>>,
        want: Vec<(String, String, String, String)>,
    ) {
        let mut last = None;
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(s) = rx.recv().await {
                if s == want {
                    return;
                }
                last = Some(s);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "routes never became {want:?}; last seen {last:?}"
        );
    }

    // Listed, with the Workspace's own namespace: the Ready feed is routed; nightly is
    // known (not ready, so no URL) in the `ops` workspace.
    until(
        &mut rx,
        vec![
            row("ops", "nightly", "-", "-"),
            row(
                "team",
                "sales_by_region",
                "http://sales-by-region.analytics.svc",
                "-",
            ),
        ],
    )
    .await;
    // Then the watch events: nightly Ready, sales-by-region gone.
    go.send(()).unwrap();
    until(
        &mut rx,
        vec![row("ops", "nightly", "http://nightly.sluice-ops.svc", "-")],
    )
    .await;
    assert_eq!(idx.read().unwrap().namespace_of("team"), "analytics");

    watch.abort();
    let seen = api.await.unwrap();
    for want in [
        (WORKSPACES, false),
        (FEEDS, false),
        (FEEDS, true),
        (WORKSPACES, true),
    ] {
        assert!(
            seen.iter().any(|(p, w)| (p.as_str(), *w) == want),
            "no {want:?} in {seen:?}"
        );
    }
}

/// The gateway calls the Service of the revision that serves (`status.service`), also
/// while the spec asks for a next revision the operator has not rolled out yet: a gateway
/// that starts mid-build routes at once instead of answering `feed_not_ready`.
#[test]
fn routes_follow_the_serving_revision_mid_build() {
    let mut v = feed_value("sluice-team", "sales", None, true);
    v["status"]["service"] = "sales-r3".into();
    let mut idx = FeedIndex::default();
    idx.apply_feed(&serde_json::from_value(v.clone()).unwrap());
    assert_eq!(
        summary(&idx),
        [row("team", "sales", "http://sales-r3.sluice-team.svc", "-")]
    );
    // A deploy wrote revision 4; the operator has not reconciled it yet, then it builds.
    v["metadata"]["generation"] = 2.into();
    v["spec"]["revision"] = "4".into();
    let f: Feed = serde_json::from_value(v.clone()).unwrap();
    idx.apply_feed(&f);
    let view = sluice_kube::control::FeedView::from_feed(&f);
    assert!(!view.ready, "the spec as written is not served yet");
    assert_eq!(view.live_revision.as_deref(), Some("3"));
    assert_eq!(
        summary(&idx),
        [row("team", "sales", "http://sales-r3.sluice-team.svc", "-")]
    );
    // Nothing serves (no pod of revision 3 is ready): no route.
    v["status"]["conditions"][1]["status"] = "False".into();
    idx.apply_feed(&serde_json::from_value(v).unwrap());
    assert_eq!(summary(&idx), [row("team", "sales", "-", "-")]);
}
