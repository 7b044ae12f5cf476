//! Reconcile against a scenario mock of the API server: every request the operator makes is
//! asserted in order (method, path, query, field manager, content type, body), and answered
//! the way a real API server would. A request the scenario does not expect blocks the
//! reconcile, which fails the test by timeout; a missing one fails the scenario.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use sluice_kube::build::Settings;
use sluice_kube::build::feed::{build_job_name, content_hash};
use sluice_kube::crd::{Feed, Workspace};
use sluice_kube::metrics::Metrics;
use sluice_kube::reconcile::{self, Context};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NOW: &str = "2026-01-02T03:04:05Z";
const DIGEST: &str = "sha256:5c5b8f2a0b9c4e7d1f3a6b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0";

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sluice-operator".into(),
            instance: None,
        },
    );
    let settings = Settings {
        gateway_url: "https://sluice.example.com".into(),
        registry: "registry.example.com/sluice".into(),
        ..Settings::default()
    };
    let ctx = Context {
        client,
        settings,
        recorder,
        metrics: Metrics::default(),
        namespace: "sluice-system".into(),
        now: || NOW.to_string(),
        failures: Default::default(),
    };
    (Arc::new(ctx), handle)
}

/// One expected request.
struct Step {
    method: &'static str,
    path: String,
    reply_status: u16,
    reply: Value,
}

fn step(method: &'static str, path: impl Into<String>, reply: Value) -> Step {
    Step {
        method,
        path: path.into(),
        reply_status: 200,
        reply,
    }
}

fn not_found(method: &'static str, path: impl Into<String>) -> Step {
    Step {
        method,
        path: path.into(),
        reply_status: 404,
        reply: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    }
}

/// A request as it was seen, for the assertions after the scenario.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
}

async fn serve(mut handle: Handle, steps: Vec<Step>) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (i, s) in steps.into_iter().enumerate() {
        let (req, send) = handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("request {i} ({} {}) was never made", s.method, s.path));
        let (parts, body) = req.into_parts();
        let query: BTreeMap<String, String> =
            form_urlencoded_pairs(parts.uri.query().unwrap_or(""));
        let bytes = body.collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_eq!(
            (parts.method.as_str(), parts.uri.path()),
            (s.method, s.path.as_str()),
            "request {i}: {} {}",
            parts.method,
            parts.uri
        );
        let reply = if s.method == "PATCH" && s.reply.is_null() {
            body.clone()
        } else {
            s.reply
        };
        send.send_response(
            Response::builder()
                .status(s.reply_status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        seen.push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body,
        });
    }
    seen
}

fn form_urlencoded_pairs(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                v.replace("%3D", "=")
                    .replace("%2C", ",")
                    .replace("%2F", "/"),
            )
        })
        .collect()
}

async fn run<F, T>(reconcile: F, handle: Handle, steps: Vec<Step>) -> (T, Vec<Seen>)
where
    F: std::future::Future<Output = T>,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(reconcile, serve(handle, steps))
    })
    .await
    .expect("the reconcile made a request the scenario does not expect, or never finished")
}

fn feed(spec: Value, status: Option<Value>) -> Feed {
    serde_json::from_value(feed_value(spec, status)).unwrap()
}

/// A Feed as the API server returns it (the reply to a finalizer or status patch).
fn feed_value(spec: Value, status: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
        "metadata": {"name": "sales", "namespace": "sluice-team", "uid": "u-feed", "generation": 4,
                     "resourceVersion": "10", "finalizers": ["sluice.dev/cleanup"]},
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sluice-team", "labels": {"sluice.dev/workspace": "team"}}})
}

fn warehouse(workspaces: &[&str]) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSource",
           "metadata": {"name": "warehouse", "uid": "u-ds"},
           "spec": {"type": "postgres", "secretRef": {"name": "warehouse", "namespace": "sluice-system"},
                    "workspaces": workspaces, "egress": {"cidrs": ["10.1.0.0/16"], "ports": [5432]}}})
}

fn metadata_list(names: &[&str]) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
           "items": names.iter().map(|n| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": n}})).collect::<Vec<_>>()})
}

const NS: &str = "/api/v1/namespaces/sluice-team";
const APPS: &str = "/apis/apps/v1/namespaces/sluice-team";
const BATCH: &str = "/apis/batch/v1/namespaces/sluice-team";
const HPA: &str = "/apis/autoscaling/v2/namespaces/sluice-team";
const FEEDS: &str = "/apis/sluice.dev/v1alpha1/namespaces/sluice-team/feeds";

fn spec() -> Value {
    json!({"source": {"inline": "import sluice\n"}, "dataSources": ["warehouse"]})
}

fn job_name(f: &Feed) -> String {
    build_job_name(
        "sales",
        &content_hash(f, "import sluice\n", &context().0.settings),
    )
}

fn assert_applied(s: &Seen, kind: &str, name: &str) {
    assert_eq!(
        s.content_type, "application/apply-patch+yaml",
        "{} {}",
        s.method, s.path
    );
    assert_eq!(
        s.query.get("fieldManager").map(String::as_str),
        Some("sluice-operator"),
        "{}",
        s.path
    );
    assert_eq!(
        s.query.get("force").map(String::as_str),
        Some("true"),
        "{}",
        s.path
    );
    assert_eq!(s.body["kind"], kind, "{}", s.path);
    assert_eq!(s.body["metadata"]["name"], name, "{}", s.path);
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn a_new_feed_gets_its_finalizer_first() {
    let (ctx, handle) = context();
    let mut f = feed(spec(), None);
    f.metadata.finalizers = None;
    let steps = vec![step(
        "PATCH",
        format!("{FEEDS}/sales"),
        feed_value(spec(), None),
    )];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    assert_eq!(seen[0].content_type, "application/json-patch+json");
    let ops = serde_json::to_string(&seen[0].body).unwrap();
    assert!(
        ops.contains(r#""path":"/metadata/finalizers""#) && ops.contains("sluice.dev/cleanup"),
        "{ops}"
    );
}

#[tokio::test]
async fn a_feed_whose_image_is_not_built_gets_a_build_job_and_old_things_are_swept() {
    let (ctx, handle) = context();
    let f = feed(spec(), None);
    let job = job_name(&f);
    let selector = "sluice.dev/feed=sales,app.kubernetes.io/managed-by=sluice-operator";
    let steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["team"]),
        ),
        not_found("GET", format!("{BATCH}/jobs/{job}")),
        step(
            "PATCH",
            format!("{NS}/configmaps/sales-source"),
            Value::Null,
        ),
        step("PATCH", format!("{BATCH}/jobs/{job}"), Value::Null),
        // A canary the spec no longer has goes.
        step(
            "GET",
            format!("{APPS}/deployments"),
            metadata_list(&["sales-canary"]),
        ),
        step(
            "DELETE",
            format!("{APPS}/deployments/sales-canary"),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        step("GET", format!("{NS}/services"), metadata_list(&[])),
        step(
            "GET",
            format!("{BATCH}/jobs"),
            metadata_list(&["sales-build-00000000", &job]),
        ),
        step(
            "DELETE",
            format!("{BATCH}/jobs/sales-build-00000000"),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        step(
            "GET",
            format!("{HPA}/horizontalpodautoscalers"),
            metadata_list(&[]),
        ),
        step(
            "PATCH",
            format!("{FEEDS}/sales/status"),
            feed_value(spec(), None),
        ),
    ];
    let (result, seen) = run(
        reconcile::reconcile_feed(Arc::new(f), ctx.clone()),
        handle,
        steps,
    )
    .await;
    result.unwrap();
    assert_applied(&seen[3], "ConfigMap", "sales-source");
    assert_eq!(seen[3].body["data"]["feed.py"], "import sluice\n");
    assert_applied(&seen[4], "Job", &job);
    assert_eq!(
        seen[4].body["metadata"]["ownerReferences"][0]["uid"],
        "u-feed"
    );
    assert_eq!(seen[5].query["labelSelector"], selector);
    assert_eq!(seen[6].query.get("propagationPolicy"), None);
    let status = &seen[11];
    assert_applied(status, "Feed", "sales");
    let st = &status.body["status"];
    assert_eq!(st["observedGeneration"], 4);
    assert_eq!(st["url"], "https://sluice.example.com/feeds/team/sales");
    assert_eq!(condition(st, "Built")["reason"], "Building");
    assert_eq!(condition(st, "Built")["status"], "False");
    assert_eq!(condition(st, "Built")["observedGeneration"], 4);
    assert_eq!(condition(st, "Built")["lastTransitionTime"], NOW);
    assert_eq!(condition(st, "Ready")["reason"], "WaitingForBuild");
    assert!(st.get("revision").is_none(), "nothing is served yet");
    assert!(
        ctx.metrics
            .render()
            .contains(r#"sluice_operator_reconciles_total{kind="feed",result="ok"} 1"#)
    );
}

#[tokio::test]
async fn a_built_feed_is_deployed_reports_ready_and_records_an_event() {
    let (ctx, handle) = context();
    let f = feed(spec(), None);
    let job = job_name(&f);
    let hash = content_hash(&f, "import sluice\n", &ctx.settings);
    let serving = format!("sales-r{hash}");
    let steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["team"]),
        ),
        step(
            "GET",
            format!("{BATCH}/jobs/{job}"),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job}, "status": {"succeeded": 1}}),
        ),
        step(
            "GET",
            format!("{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b-1"}, "status": {"containerStatuses": [
                {"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "message": DIGEST}}}]}}]}),
        ),
        step(
            "PATCH",
            format!("{NS}/configmaps/sales-source"),
            Value::Null,
        ),
        step("PATCH", format!("{BATCH}/jobs/{job}"), Value::Null),
        step(
            "PATCH",
            format!("{APPS}/deployments/{serving}"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": serving}, "status": {"replicas": 1, "readyReplicas": 1}}),
        ),
        step("PATCH", format!("{NS}/services/{serving}"), Value::Null),
        step(
            "GET",
            format!("{APPS}/deployments"),
            metadata_list(&[&serving]),
        ),
        step("GET", format!("{NS}/services"), metadata_list(&[&serving])),
        step("GET", format!("{BATCH}/jobs"), metadata_list(&[&job])),
        step(
            "GET",
            format!("{HPA}/horizontalpodautoscalers"),
            metadata_list(&[]),
        ),
        step(
            "PATCH",
            format!("{FEEDS}/sales/status"),
            feed_value(spec(), None),
        ),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}),
        ),
    ];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    assert_applied(&seen[6], "Deployment", &serving);
    let pod = &seen[6].body["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        format!("registry.example.com/sluice/sluice-team/sales:{hash}@{DIGEST}"),
        "pinned to the digest the build pushed"
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_applied(&seen[7], "Service", &serving);
    let st = &seen[12].body["status"];
    assert_eq!(st["revision"], hash.as_str());
    assert_eq!(st["service"], serving.as_str(), "what the gateway calls");
    assert!(st.get("draining").is_none(), "nothing served before");
    assert_eq!(st["readyReplicas"], 1);
    assert_eq!(st["imageDigest"], DIGEST);
    assert_eq!(seen[3].query["labelSelector"], format!("job-name={job}"));
    for (t, reason) in [
        ("Built", "ImageReady"),
        ("Deployed", "Applied"),
        ("Ready", "Available"),
    ] {
        assert_eq!(condition(st, t)["status"], "True", "{t}");
        assert_eq!(condition(st, t)["reason"], reason, "{t}");
    }
    let ev = &seen[13].body;
    assert_eq!(ev["reason"], "Deployed");
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["regarding"]["kind"], "Feed");
    assert_eq!(ev["regarding"]["name"], "sales");
    assert_eq!(ev["reportingController"], "sluice-operator");
}

const OLD: &str = "sales-r0ld0ld0ld0ld";

/// A feed serving revision `0ld0ld0ld0ld` from its own Deployment and Service.
fn serving_old(draining: Option<Value>) -> Value {
    let mut st = json!({"observedGeneration": 4, "revision": "0ld0ld0ld0ld", "service": OLD,
        "image": "registry.example.com/sluice/sluice-team/sales:0ld0ld0ld0ld@sha256:old",
        "imageDigest": "sha256:old",
        "conditions": [
            {"type": "Built", "status": "True", "reason": "ImageReady", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "Deployed", "status": "True", "reason": "Applied", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    if let Some(d) = draining {
        st["draining"] = d;
    }
    st
}

fn deleted() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
}

/// A built feed's reconcile: its revision's Deployment answers with `deployment_status`
/// (and `generation`); when `previous` is given, the reconcile reads the Deployment that
/// served before (it still does). The sweep's lists find `existing` Deployments and
/// Services (and HPAs), and `gone` of them are deleted. An Event follows the status patch
/// only when `event`.
struct Built<'a> {
    job: &'a str,
    serving: &'a str,
    generation: i64,
    deployment_status: Value,
    previous: Option<Value>,
    existing: &'a [&'a str],
    gone: &'a [&'a str],
    event: bool,
}

fn built_steps(b: Built) -> Vec<Step> {
    let job = b.job;
    let mut steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["team"]),
        ),
        step(
            "GET",
            format!("{BATCH}/jobs/{job}"),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job}, "status": {"succeeded": 1}}),
        ),
        step(
            "GET",
            format!("{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
        step(
            "PATCH",
            format!("{NS}/configmaps/sales-source"),
            Value::Null,
        ),
        step("PATCH", format!("{BATCH}/jobs/{job}"), Value::Null),
        step(
            "PATCH",
            format!("{APPS}/deployments/{}", b.serving),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": b.serving, "generation": b.generation},
                   "spec": {"replicas": 2}, "status": b.deployment_status}),
        ),
        step("PATCH", format!("{NS}/services/{}", b.serving), Value::Null),
    ];
    if let Some(p) = b.previous {
        steps.push(step("GET", format!("{APPS}/deployments/{OLD}"), p));
    }
    let mut sweep = |kind_path: String, list: &[&str]| {
        steps.push(step("GET", kind_path.clone(), metadata_list(list)));
        for name in list.iter().filter(|n| b.gone.contains(n)) {
            steps.push(step("DELETE", format!("{kind_path}/{name}"), deleted()));
        }
    };
    sweep(format!("{APPS}/deployments"), b.existing);
    sweep(format!("{NS}/services"), b.existing);
    sweep(format!("{BATCH}/jobs"), &[job]);
    // The spec is fixed-size: only earlier revisions had autoscalers.
    let hpas: Vec<&str> = b
        .existing
        .iter()
        .copied()
        .filter(|n| *n != b.serving)
        .collect();
    sweep(format!("{HPA}/horizontalpodautoscalers"), &hpas);
    steps.push(step(
        "PATCH",
        format!("{FEEDS}/sales/status"),
        feed_value(spec(), None),
    ));
    if b.event {
        steps.push(step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        ));
    }
    steps
}

fn status_patch(seen: &[Seen]) -> &Value {
    let s = seen
        .iter()
        .find(|s| s.path.ends_with("/feeds/sales/status"))
        .expect("a status patch");
    &s.body["status"]
}

/// A new revision goes live atomically: it gets its own Deployment and Service beside the
/// previous revision's, and while its pods come up the status keeps naming the previous
/// revision and its Service (which the gateway calls, and whose pods make the feed Ready).
/// The reconcile that sees every new pod updated and ready switches both in one write; the
/// previous revision's pods then drain for 30 s before the sweep deletes them.
#[tokio::test]
async fn the_served_revision_changes_only_once_the_new_pods_are_all_ready() {
    let f = feed(spec(), Some(serving_old(None)));
    let job = job_name(&f);
    let hash = content_hash(&f, "import sluice\n", &context().0.settings);
    let serving = format!("sales-r{hash}");
    let old_pods = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": OLD, "generation": 2},
        "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}});
    let rolling = [
        // One new pod started, not ready yet.
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0}),
        // The Deployment controller has not even seen the template yet.
        json!({}),
        // One of the two ready.
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}),
    ];
    for status in rolling {
        let (ctx, handle) = context();
        // No `Deployed` Event and no deletion: the scenario would refuse them.
        let steps = built_steps(Built {
            job: &job,
            serving: &serving,
            generation: 1,
            deployment_status: status.clone(),
            previous: Some(old_pods.clone()),
            existing: &[OLD, &serving],
            gone: &[],
            event: false,
        });
        let (result, seen) = run(
            reconcile::reconcile_feed(Arc::new(f.clone()), ctx),
            handle,
            steps,
        )
        .await;
        result.unwrap();
        let st = status_patch(&seen);
        assert_eq!(st["revision"], "0ld0ld0ld0ld", "{status}");
        assert_eq!(st["service"], OLD, "{status}");
        assert_eq!(st["imageDigest"], "sha256:old", "{status}");
        assert!(st["image"].as_str().unwrap().contains(":0ld0ld0ld0ld@"));
        let deployed = condition(st, "Deployed");
        assert_eq!(
            (deployed["status"].as_str(), deployed["reason"].as_str()),
            (Some("False"), Some("RollingOut")),
            "{status}"
        );
        let ready = condition(st, "Ready");
        assert_eq!(ready["status"], "True", "the old pods serve");
        assert_eq!(st["readyReplicas"], 2, "the old revision's pods");
    }

    // Pods that never become ready: the Deployment controller's deadline passes, and the
    // status says so (a watched `sluice deploy` stops on it); revision 0ld keeps serving.
    let (ctx, handle) = context();
    let stuck = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 0,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
    let (result, seen) = run(
        reconcile::reconcile_feed(Arc::new(f.clone()), ctx),
        handle,
        built_steps(Built {
            job: &job,
            serving: &serving,
            generation: 1,
            deployment_status: stuck,
            previous: Some(old_pods.clone()),
            existing: &[OLD, &serving],
            gone: &[],
            event: false,
        }),
    )
    .await;
    result.unwrap();
    let st = status_patch(&seen);
    assert_eq!(st["service"], OLD);
    assert_eq!(condition(st, "Deployed")["reason"], "RolloutStalled");
    assert!(
        condition(st, "Deployed")["message"]
            .as_str()
            .unwrap()
            .contains(&format!("kubectl describe deployment {serving}"))
    );
    assert_eq!(condition(st, "Ready")["status"], "True");

    let (ctx, handle) = context();
    let done =
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
    let (result, seen) = run(
        reconcile::reconcile_feed(Arc::new(f), ctx),
        handle,
        built_steps(Built {
            job: &job,
            serving: &serving,
            generation: 1,
            deployment_status: done,
            previous: None,
            existing: &[OLD, &serving],
            gone: &[],
            event: true,
        }),
    )
    .await;
    let action = result.unwrap();
    let st = status_patch(&seen);
    assert_eq!(st["revision"], hash.as_str());
    assert_eq!(st["service"], serving.as_str());
    assert_eq!(condition(st, "Deployed")["reason"], "Applied");
    assert_eq!(
        st["draining"],
        json!({"revision": "0ld0ld0ld0ld", "service": OLD, "until": "2026-01-02T03:04:35Z"}),
        "the old pods stay for gateways that have not seen the switch yet"
    );
    assert_eq!(seen.last().unwrap().body["reason"], "Deployed");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(31)),
        "back when the drain is over"
    );
}

/// A gateway that starts while the next revision builds must find the feed served: the
/// status keeps naming the revision that serves, its Service, and Ready from its pods.
#[tokio::test]
async fn a_feed_building_its_next_revision_stays_ready_on_the_previous_one() {
    let (ctx, handle) = context();
    let f = feed(spec(), Some(serving_old(None)));
    let job = job_name(&f);
    let steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["team"]),
        ),
        not_found("GET", format!("{BATCH}/jobs/{job}")),
        step(
            "PATCH",
            format!("{NS}/configmaps/sales-source"),
            Value::Null,
        ),
        step("PATCH", format!("{BATCH}/jobs/{job}"), Value::Null),
        step(
            "GET",
            format!("{APPS}/deployments/{OLD}"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": OLD},
                   "status": {"replicas": 3, "readyReplicas": 3}}),
        ),
        step("GET", format!("{APPS}/deployments"), metadata_list(&[OLD])),
        step("GET", format!("{NS}/services"), metadata_list(&[OLD])),
        step("GET", format!("{BATCH}/jobs"), metadata_list(&[&job])),
        step(
            "GET",
            format!("{HPA}/horizontalpodautoscalers"),
            metadata_list(&[OLD]),
        ),
        step(
            "PATCH",
            format!("{FEEDS}/sales/status"),
            feed_value(spec(), None),
        ),
    ];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    let st = status_patch(&seen);
    assert_eq!(st["revision"], "0ld0ld0ld0ld");
    assert_eq!(st["service"], OLD);
    assert_eq!(condition(st, "Built")["reason"], "Building");
    assert_eq!(condition(st, "Deployed")["reason"], "WaitingForBuild");
    let ready = condition(st, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("Available"))
    );
    assert_eq!(st["readyReplicas"], 3);
}

/// Once its drain is over, the previous revision's Deployment, Service and autoscaler go;
/// a revision that never served (a failed rollout replaced by another) goes at once.
#[tokio::test]
async fn a_drained_revision_is_swept() {
    let f = feed(spec(), Some(serving_old(None)));
    let hash = content_hash(&f, "import sluice\n", &context().0.settings);
    let serving = format!("sales-r{hash}");
    let mut st = serving_old(Some(
        json!({"revision": "0lder", "service": "sales-r0lder", "until": "2026-01-02T03:04:00Z"}),
    ));
    st["revision"] = hash.clone().into();
    st["service"] = serving.clone().into();
    let f = feed(spec(), Some(st));
    let job = job_name(&f);
    let (ctx, handle) = context();
    let ready =
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
    let (result, seen) = run(
        reconcile::reconcile_feed(Arc::new(f), ctx),
        handle,
        built_steps(Built {
            job: &job,
            serving: &serving,
            generation: 1,
            deployment_status: ready,
            previous: None,
            existing: &["sales-r0lder", "sales-rfailed", &serving],
            gone: &["sales-r0lder", "sales-rfailed"],
            event: false,
        }),
    )
    .await;
    let action = result.unwrap();
    let st = status_patch(&seen);
    assert!(st.get("draining").is_none(), "{st}");
    assert_eq!(st["service"], serving.as_str());
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(deletes.len(), 6, "{deletes:?}");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_feed_using_an_ungranted_data_source_is_refused_in_its_status() {
    let (ctx, handle) = context();
    let old = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "DataSourceNotGranted", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    let f = feed(spec(), Some(old));
    let job = job_name(&f);
    let steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["finance"]),
        ),
        not_found("GET", format!("{BATCH}/jobs/{job}")),
        step(
            "PATCH",
            format!("{FEEDS}/sales/status"),
            feed_value(spec(), None),
        ),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        ),
    ];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    let st = &seen[3].body["status"];
    let deployed = condition(st, "Deployed");
    assert_eq!(deployed["status"], "False");
    assert_eq!(deployed["reason"], "DataSourceNotGranted");
    assert!(
        deployed["message"]
            .as_str()
            .unwrap()
            .contains("\"warehouse\" is not granted to workspace \"team\"")
    );
    assert_eq!(
        condition(st, "Ready")["lastTransitionTime"],
        "2020-01-01T00:00:00Z",
        "same status keeps its time"
    );
    assert_eq!(seen[4].body["type"], "Warning");
    assert_eq!(seen[4].body["reason"], "DataSourceNotGranted");
}

#[tokio::test]
async fn deleting_a_feed_removes_its_pods_then_its_finalizer() {
    let (ctx, handle) = context();
    let mut f = feed(spec(), None);
    f.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    let ok = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    // Every revision's and the canary's, found by label (one already gone meanwhile).
    let steps = vec![
        step(
            "GET",
            format!("{APPS}/deployments"),
            metadata_list(&["sales-r7", "sales-canary"]),
        ),
        step("DELETE", format!("{APPS}/deployments/sales-r7"), ok.clone()),
        not_found("DELETE", format!("{APPS}/deployments/sales-canary")),
        step(
            "GET",
            format!("{NS}/services"),
            metadata_list(&["sales-r7"]),
        ),
        step("DELETE", format!("{NS}/services/sales-r7"), ok.clone()),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        ),
        step("PATCH", format!("{FEEDS}/sales"), feed_value(spec(), None)),
    ];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    assert_eq!(
        seen[0].query["labelSelector"],
        "sluice.dev/feed=sales,app.kubernetes.io/managed-by=sluice-operator"
    );
    assert_eq!(seen[1].body["propagationPolicy"], "Foreground");
    assert_eq!(seen[6].content_type, "application/json-patch+json");
    let ops = serde_json::to_string(&seen[6].body).unwrap();
    assert!(
        ops.contains(r#""op":"remove""#) && ops.contains("/metadata/finalizers"),
        "{ops}"
    );
}

#[tokio::test]
async fn an_api_error_is_reported_with_its_category() {
    let (ctx, handle) = context();
    let f = feed(spec(), None);
    let steps = vec![Step {
        method: "GET",
        path: NS.into(),
        reply_status: 500,
        reply: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
    }];
    let (result, _) = run(
        reconcile::reconcile_feed(Arc::new(f), ctx.clone()),
        handle,
        steps,
    )
    .await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("etcd is down"), "{err}");
    assert!(ctx.metrics.render().contains(
        r#"sluice_operator_reconcile_failures_total{kind="feed",category="finalizer"} 1"#
    ));
}

#[tokio::test]
async fn a_workspace_applies_its_namespace_first_and_copies_only_granted_secrets() {
    let (ctx, handle) = context();
    let ws: Workspace = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "team", "uid": "u-ws", "generation": 1, "finalizers": ["sluice.dev/cleanup"]},
        "spec": {"members": [{"kind": "User", "name": "ann", "role": "editor"}]}
    })).unwrap();
    let mut hr = warehouse(&["people"]);
    hr["metadata"]["name"] = "hr".into();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse", "namespace": "sluice-system"}, "data": {"url": "cG9zdGdyZXM6Ly8="}});
    let mut steps = vec![
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources",
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSourceList", "metadata": {}, "items": [warehouse(&["team"]), hr]}),
        ),
        step(
            "GET",
            "/api/v1/namespaces/sluice-system/secrets/warehouse",
            secret,
        ),
        step("PATCH", "/api/v1/namespaces/sluice-team", Value::Null),
        step(
            "PATCH",
            format!("{NS}/limitranges/sluice-limits"),
            Value::Null,
        ),
        step(
            "PATCH",
            format!("{NS}/serviceaccounts/sluice-feed"),
            Value::Null,
        ),
        step(
            "PATCH",
            format!("{NS}/serviceaccounts/sluice-builder"),
            Value::Null,
        ),
        step(
            "PATCH",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/sluice-team/rolebindings/sluice-editors",
            Value::Null,
        ),
        step(
            "PATCH",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/sluice-team/rolebindings/sluice-viewers",
            Value::Null,
        ),
        step(
            "PATCH",
            format!("{NS}/secrets/sluice-ds-warehouse"),
            Value::Null,
        ),
    ];
    for np in [
        "default-deny",
        "sluice-gateway-ingress",
        "sluice-feed-egress",
        "sluice-builder-egress",
    ] {
        steps.push(step(
            "PATCH",
            format!("/apis/networking.k8s.io/v1/namespaces/sluice-team/networkpolicies/{np}"),
            Value::Null,
        ));
    }
    steps.push(step("PATCH", "/apis/sluice.dev/v1alpha1/workspaces/team/status", json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": "team"}, "spec": {}})));
    let (result, seen) = run(
        reconcile::reconcile_workspace(Arc::new(ws), ctx),
        handle,
        steps,
    )
    .await;
    result.unwrap();
    for s in &seen[2..] {
        assert_eq!(s.query["fieldManager"], "sluice-operator");
    }
    assert_eq!(seen[8].body["data"]["url"], "cG9zdGdyZXM6Ly8=");
    let st = &seen.last().unwrap().body["status"];
    assert_eq!(st["namespace"], "sluice-team");
    assert_eq!(st["dataSources"], json!(["warehouse"]));
    assert_eq!(condition(st, "Ready")["status"], "True");
}

#[tokio::test]
async fn a_data_source_reports_whether_its_secret_is_there() {
    let secret_with_url = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse"}, "data": {"url": "eA=="}});
    for (type_, reply, ready, reason) in [
        (
            "postgres",
            Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse"}, "data": {"url": "eA=="}}),
            ),
            "True",
            "SecretFound",
        ),
        (
            "postgres",
            Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse"}, "data": {"password": "eA=="}}),
            ),
            "False",
            "SecretHasNoUrl",
        ),
        ("postgres", None, "False", "SecretMissing"),
        // Accepted by the CRD, not read by feeds yet: said so, not Ready.
        (
            "mysql",
            Some(secret_with_url.clone()),
            "False",
            "TypeNotServedYet",
        ),
    ] {
        let (ctx, handle) = context();
        let mut ds = warehouse(&["team"]);
        ds["metadata"]["generation"] = json!(2);
        ds["spec"]["type"] = json!(type_);
        let get = match reply {
            Some(r) => step(
                "GET",
                "/api/v1/namespaces/sluice-system/secrets/warehouse",
                r,
            ),
            None => not_found("GET", "/api/v1/namespaces/sluice-system/secrets/warehouse"),
        };
        let steps = vec![
            get,
            step(
                "PATCH",
                "/apis/sluice.dev/v1alpha1/datasources/warehouse/status",
                ds.clone(),
            ),
        ];
        let ds: sluice_kube::crd::DataSource = serde_json::from_value(ds).unwrap();
        let (result, seen) = run(
            reconcile::reconcile_datasource(Arc::new(ds), ctx),
            handle,
            steps,
        )
        .await;
        result.unwrap();
        assert_applied(&seen[1], "DataSource", "warehouse");
        let st = &seen[1].body["status"];
        assert_eq!(st["observedGeneration"], 2);
        assert_eq!(condition(st, "Ready")["status"], ready, "{reason}");
        assert_eq!(condition(st, "Ready")["reason"], reason);
    }
}

#[tokio::test]
async fn the_server_deploys_feeds_with_its_own_field_manager_and_lists_gitops_ones_too() {
    use sluice_kube::control::{Deploy, KubeFeeds};
    let (ctx, handle) = context();
    let feeds = KubeFeeds::new(ctx.client.clone());
    let mut applied = feed_value(spec(), None);
    applied["metadata"]["managedFields"] =
        json!([{"manager": "sluice-server", "operation": "Apply"}]);
    let mut gitops = feed_value(
        json!({"source": {"inline": "x"}, "revision": "3"}),
        Some(json!({
        "observedGeneration": 4, "revision": "3", "url": "https://s/feeds/team/gitops",
        "conditions": [{"type": "Built", "status": "True", "reason": "ImageReady", "message": ""},
                       {"type": "Ready", "status": "True", "reason": "Available", "message": ""}]})),
    );
    gitops["metadata"]["name"] = "gitops".into();
    gitops["metadata"]["managedFields"] =
        json!([{"manager": "argocd-controller", "operation": "Apply"}]);
    let steps = vec![
        step("PATCH", format!("{FEEDS}/sales"), applied.clone()),
        step(
            "GET",
            FEEDS,
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "FeedList", "metadata": {}, "items": [gitops, applied]}),
        ),
        not_found("DELETE", format!("{FEEDS}/gone")),
    ];
    let work = async {
        let d = Deploy {
            source: "import sluice\n".into(),
            lock: Some("pandas==2.2.3\n".into()),
            revision: "7".into(),
            cache: Some("5m".into()),
            data_sources: vec!["warehouse".into()],
            ..Default::default()
        };
        let deployed = feeds.deploy("sluice-team", "sales", &d).await.unwrap();
        let listed = feeds.list("sluice-team").await.unwrap();
        feeds.delete("sluice-team", "gone").await.unwrap();
        (deployed, listed)
    };
    let ((deployed, listed), seen) = run(work, handle, steps).await;
    assert_eq!(seen[0].query["fieldManager"], "sluice-server");
    assert_eq!(seen[0].query["force"], "true");
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    assert_eq!(
        seen[0].body["spec"],
        json!({"source": {"inline": "import sluice\n"}, "revision": "7",
        "lock": "pandas==2.2.3\n", "cache": "5m", "dataSources": ["warehouse"]})
    );
    assert!(deployed.managed_by_server);
    assert!(!deployed.ready);
    assert_eq!(
        listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["gitops", "sales"]
    );
    let g = &listed[0];
    assert!(g.ready && g.built && !g.managed_by_server);
    assert_eq!(g.live_revision.as_deref(), Some("3"));
    assert_eq!(g.url.as_deref(), Some("https://s/feeds/team/gitops"));
    assert_eq!(g.waiting_for, None);
    assert_eq!(
        listed[1].waiting_for.as_deref(),
        Some("Reconciling"),
        "no status yet"
    );
}

fn scale_to_zero_spec() -> Value {
    let mut s = spec();
    s["scaling"] = json!({"minReplicas": 0, "maxReplicas": 1, "targetConcurrency": 4, "scaleToZero": true, "idleTimeout": "2m"});
    s
}

fn deployment(replicas: i64, created: &str, last_call: Option<&str>) -> kube::api::DynamicObject {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sales-r1", "creationTimestamp": created}, "spec": {"replicas": replicas}});
    if let Some(t) = last_call {
        d["metadata"]["annotations"] = json!({"sluice.dev/last-call": t});
    }
    serde_json::from_value(d).unwrap()
}

/// The idle timer counts from the last call a gateway recorded on the Deployment, else
/// from its creation; it is `idleTimeout` (at least a minute), and only for scale to zero.
#[test]
fn a_scale_to_zero_feed_is_idle_after_its_timeout() {
    use reconcile::{Idle, idle, idle_timeout};
    let f = feed(scale_to_zero_spec(), None);
    assert_eq!(idle_timeout(&f), Duration::from_secs(120));
    let now = "2026-01-02T03:04:05Z";
    let created_long_ago = "2026-01-01T00:00:00Z";
    assert_eq!(
        idle(&f, &deployment(1, created_long_ago, None), now),
        Idle::ScaleDown
    );
    assert_eq!(
        idle(
            &f,
            &deployment(1, created_long_ago, Some("2026-01-02T03:03:05Z")),
            now
        ),
        Idle::Busy(Some(Duration::from_secs(60))),
        "a call a minute ago: look again in a minute"
    );
    assert_eq!(
        idle(&f, &deployment(1, "2026-01-02T03:04:00Z", None), now),
        Idle::Busy(Some(Duration::from_secs(115))),
        "a new Deployment gets its full idle time"
    );
    assert_eq!(
        idle(&f, &deployment(0, created_long_ago, None), now),
        Idle::Busy(None),
        "already at zero"
    );
    let always_on = feed(spec(), None);
    assert_eq!(
        idle(&always_on, &deployment(1, created_long_ago, None), now),
        Idle::Busy(None)
    );
    let mut s = scale_to_zero_spec();
    s["scaling"]["idleTimeout"] = "5s".into();
    assert_eq!(
        idle_timeout(&feed(s, None)),
        Duration::from_secs(60),
        "gateways record calls every 30 s: never shorter than a minute"
    );
}

/// The reconcile of an idle scale-to-zero feed scales its serving Deployment to zero
/// (through the scale subresource, so its pods stop) and says so in an Event; the feed
/// stays Ready (the gateway starts a pod on the next call).
#[tokio::test]
async fn an_idle_scale_to_zero_feed_is_scaled_to_zero() {
    let (ctx, handle) = context();
    let f = feed(scale_to_zero_spec(), None);
    let job = job_name(&f);
    let hash = content_hash(&f, "import sluice\n", &ctx.settings);
    let serving = format!("sales-r{hash}");
    let steps = vec![
        step("GET", NS, namespace()),
        step(
            "GET",
            "/apis/sluice.dev/v1alpha1/datasources/warehouse",
            warehouse(&["team"]),
        ),
        step(
            "GET",
            format!("{BATCH}/jobs/{job}"),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job}, "status": {"succeeded": 1}}),
        ),
        step(
            "GET",
            format!("{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
        step(
            "PATCH",
            format!("{NS}/configmaps/sales-source"),
            Value::Null,
        ),
        step("PATCH", format!("{BATCH}/jobs/{job}"), Value::Null),
        step(
            "PATCH",
            format!("{APPS}/deployments/{serving}"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": serving, "creationTimestamp": "2026-01-01T00:00:00Z",
                                "annotations": {"sluice.dev/last-call": "2026-01-02T03:00:00Z"}},
                   "spec": {"replicas": 1}, "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}),
        ),
        step("PATCH", format!("{NS}/services/{serving}"), Value::Null),
        step(
            "GET",
            format!("{APPS}/deployments"),
            metadata_list(&[&serving]),
        ),
        step("GET", format!("{NS}/services"), metadata_list(&[&serving])),
        step("GET", format!("{BATCH}/jobs"), metadata_list(&[&job])),
        step(
            "GET",
            format!("{HPA}/horizontalpodautoscalers"),
            metadata_list(&[]),
        ),
        step(
            "PATCH",
            format!("{APPS}/deployments/{serving}/scale"),
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": serving}, "spec": {"replicas": 0}}),
        ),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        ),
        step(
            "PATCH",
            format!("{FEEDS}/sales/status"),
            feed_value(spec(), None),
        ),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/sluice-team/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        ),
    ];
    let (result, seen) = run(reconcile::reconcile_feed(Arc::new(f), ctx), handle, steps).await;
    result.unwrap();
    let scale = seen.iter().find(|s| s.path.ends_with("/scale")).unwrap();
    assert_eq!(scale.content_type, "application/merge-patch+json");
    assert_eq!(scale.body, json!({"spec": {"replicas": 0}}));
    let ev = &seen[13].body;
    assert_eq!(ev["reason"], "ScaledToZero");
    assert!(ev["note"].as_str().unwrap().contains("120 s"), "{ev}");
    let st = status_patch(&seen);
    assert_eq!(condition(st, "Ready")["status"], "True");
}

/// A first revision whose pods never become ready stops a watched deploy with a reason
/// that says what to look at, rather than letting it wait out its ten minutes.
#[tokio::test]
async fn a_first_revision_that_never_gets_ready_is_reported_stalled() {
    let settings = context().0.settings.clone();
    let f = feed(spec(), None);
    let inputs = sluice_kube::build::feed::FeedInputs {
        workspace: "team".into(),
        source: "import sluice\n".into(),
        data_sources: vec![serde_json::from_value(warehouse(&["team"])).unwrap()],
        build_succeeded: true,
        ..Default::default()
    };
    let plan = sluice_kube::build::feed::build(&f, &inputs, &settings).unwrap();
    let stuck: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "generation": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}))
    .unwrap();
    let st = reconcile::feed_status(
        &f,
        &inputs,
        &plan,
        Some(&stuck),
        None,
        &Default::default(),
        NOW,
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RolloutStalled")
    );
    assert!(
        ready
            .message
            .contains("kubectl describe deployment sales-r"),
        "{}",
        ready.message
    );
}
