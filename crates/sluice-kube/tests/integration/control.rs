//! What `sluice server` asks of the API server (`sluice_kube::control`), against a scenario
//! mock: every request asserted in order (method, path, query), answered as the API server
//! would.

use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sluice_kube::control::{Follow, KubeFeeds, Progress};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const FEEDS: &str = "/apis/sluice.dev/v1alpha1/namespaces/sluice-team/feeds";
const PODS: &str = "/api/v1/namespaces/sluice-team/pods";

/// Answer the next request, which must be `method path`; returns its query.
async fn answer(
    handle: &mut Handle,
    method: &str,
    path: &str,
    status: u16,
    body: Vec<u8>,
) -> String {
    let (req, send) = handle
        .next_request()
        .await
        .unwrap_or_else(|| panic!("{method} {path} was never made"));
    assert_eq!(
        (req.method().as_str(), req.uri().path()),
        (method, path),
        "{}",
        req.uri()
    );
    let query = req.uri().query().unwrap_or("").to_string();
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(body))
            .unwrap(),
    );
    query
}

fn json_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn feed(status: Value) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
        "metadata": {"name": "sales", "namespace": "sluice-team", "generation": 3},
        "spec": {"source": {"inline": "x"}, "revision": "4"}, "status": status})
}

fn cond(type_: &str, ok: bool, reason: &str) -> Value {
    json!({"type": type_, "status": if ok {"True"} else {"False"}, "reason": reason, "message": ""})
}

fn limits(since: chrono::DateTime<chrono::Utc>) -> Follow {
    Follow {
        since,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn follow_streams_the_build_log_until_the_revision_is_ready() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let feeds = KubeFeeds::new(Client::new(service, "default"));
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let started = (chrono::Utc::now()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let api = tokio::spawn(async move {
        // Building: the Feed says so, and its build pod has started.
        answer(
            &mut handle,
            "GET",
            &format!("{FEEDS}/sales"),
            200,
            json_body(feed(json!({
            "observedGeneration": 3, "revision": "3",
            "conditions": [cond("Built", false, "Building"), cond("Ready", true, "Available")]}))),
        )
        .await;
        let selector = answer(&mut handle, "GET", PODS, 200, json_body(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                // An earlier build of the feed: not this deploy's.
                {"metadata": {"name": "sales-build-old-x", "creationTimestamp": "2020-01-01T00:00:00Z"},
                 "status": {"phase": "Succeeded"}},
                {"metadata": {"name": "sales-build-new-y", "creationTimestamp": started},
                 "status": {"phase": "Running"}}]})))
        .await;
        let log_query = answer(&mut handle, "GET", &format!("{PODS}/sales-build-new-y/log"), 200,
            b"Resolved 3 packages\ndependency layer deps-1f2e found in the registry\npushed sha256:abc\n".to_vec())
        .await;
        // Built and rolled out: revision 4 is served.
        answer(
            &mut handle,
            "GET",
            &format!("{FEEDS}/sales"),
            200,
            json_body(feed(json!({
            "observedGeneration": 3, "revision": "4",
            "conditions": [cond("Built", true, "ImageReady"), cond("Ready", true, "Available")]}))),
        )
        .await;
        (selector, log_query)
    });

    let seen = Mutex::new(Vec::new());
    let report = |p: Progress| seen.lock().unwrap().push(p);
    let v = tokio::time::timeout(
        Duration::from_secs(10),
        feeds.follow("sluice-team", "sales", "4", limits(since), &report),
    )
    .await
    .expect("follow made a request the scenario does not expect")
    .unwrap()
    .expect("the Feed");
    let (selector, log_query) = api.await.unwrap();

    assert!(v.ready && v.live_revision.as_deref() == Some("4"), "{v:?}");
    assert!(
        selector.contains("labelSelector=sluice.dev%2Ffeed%3Dsales%2Csluice.dev%2Frole%3Dbuilder"),
        "{selector}"
    );
    assert!(log_query.contains("follow=true"), "{log_query}");
    assert_eq!(
        seen.into_inner().unwrap(),
        [
            Progress::Waiting("Building".into()),
            Progress::BuildLog("Resolved 3 packages".into()),
            Progress::BuildLog("dependency layer deps-1f2e found in the registry".into()),
            Progress::BuildLog("pushed sha256:abc".into()),
        ]
    );
}

#[tokio::test]
async fn follow_stops_at_a_failed_build() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let feeds = KubeFeeds::new(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        answer(&mut handle, "GET", &format!("{FEEDS}/sales"), 200, json_body(feed(json!({
            "observedGeneration": 3,
            "conditions": [cond("Built", false, "BuildFailed"), cond("Ready", false, "WaitingForBuild")]}))))
        .await;
    });
    let seen = Mutex::new(Vec::new());
    let report = |p: Progress| seen.lock().unwrap().push(p);
    let v = tokio::time::timeout(
        Duration::from_secs(10),
        feeds.follow(
            "sluice-team",
            "sales",
            "4",
            limits(chrono::Utc::now()),
            &report,
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    api.await.unwrap();
    assert!(!v.ready);
    assert_eq!(v.waiting_for.as_deref(), Some("BuildFailed"));
    assert_eq!(
        seen.into_inner().unwrap(),
        [Progress::Waiting("BuildFailed".into())]
    );
}

#[tokio::test]
async fn a_workspaces_namespace_comes_from_its_workspace_object() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let feeds = KubeFeeds::new(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        answer(
            &mut handle,
            "GET",
            "/apis/sluice.dev/v1alpha1/workspaces/team",
            200,
            json_body(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "team"}, "spec": {"namespace": "analytics"}})),
        )
        .await;
        // No Workspace object: the default, asked again next time (it may be created).
        for _ in 0..2 {
            answer(
                &mut handle,
                "GET",
                "/apis/sluice.dev/v1alpha1/workspaces/ops",
                404,
                json_body(json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "code": 404, "message": "not found"})),
            )
            .await;
        }
    });
    assert_eq!(feeds.namespace("team").await.unwrap(), "analytics");
    // A workspace's namespace cannot change: the answer is kept, no second read.
    assert_eq!(feeds.namespace("team").await.unwrap(), "analytics");
    assert_eq!(feeds.namespace("ops").await.unwrap(), "sluice-ops");
    assert_eq!(feeds.namespace("ops").await.unwrap(), "sluice-ops");
    tokio::time::timeout(Duration::from_secs(5), api)
        .await
        .unwrap()
        .unwrap();
}
