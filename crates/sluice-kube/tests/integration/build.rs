//! The pure build steps, from YAML fixtures: what a Workspace and a Feed become.
//!
//! Each case compares the whole output with a golden file under `fixtures/expected/`
//! (regenerate with `SLUICE_UPDATE_GOLDEN=1 cargo test -p sluice-kube --test integration build::` and
//! review the diff), then asserts the properties that matter one by one, so a reviewer sees
//! intent and a change in output is caught either way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use sluice_kube::build::feed::{self, FeedInputs, Invalid};
use sluice_kube::build::workspace::{self, WorkspaceInputs};
use sluice_kube::build::{Object, Settings};
use sluice_kube::crd::{DataSource, Feed, Workspace};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_yaml::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn settings() -> Settings {
    Settings {
        gateway_namespace: "sluice-system".into(),
        gateway_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "sluice-server".into())]),
        gateway_url: "https://sluice.example.com/".into(),
        registry: "registry.example.com/sluice".into(),
        registry_secret: Some("registry-push".into()),
        runtime_image: "registry.example.com/sluice/runtime:py3.12".into(),
        builder_image: "registry.example.com/sluice/sluice:0.1.0".into(),
        kaniko_image: None,
        metrics_namespace: Some("monitoring".into()),
    }
}

fn golden(name: &str, objects: &[Object]) {
    let docs: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(&o.body).unwrap())
        .collect();
    let text = docs.join("---\n");
    let path = fixtures().join("expected").join(name);
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "{} differs from the build output:\n{text}",
        path.display()
    );
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Value {
    &objects
        .iter()
        .find(|o| o.resource.kind == kind && o.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} in {:?}",
                objects.iter().map(Object::key).collect::<Vec<_>>()
            )
        })
        .body
}

fn secret(name: &str, url: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("sluice-system".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "url".into(),
            ByteString(url.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

fn workspace_objects() -> Vec<Object> {
    let ws: Workspace = load("workspace-team.yaml");
    let sources: Vec<DataSource> = load("datasources.yaml");
    let inputs = WorkspaceInputs {
        data_sources: sources
            .into_iter()
            .map(|ds| {
                let s = secret(&ds.spec.secret_ref.name, "postgres://u:p@db/x");
                (ds, Some(s))
            })
            .collect(),
        registry_secret: Some(Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..secret("registry-push", "{}")
        }),
    };
    workspace::build(&ws, &inputs, &settings())
}

#[test]
fn workspace_golden() {
    golden("workspace-team.yaml", &workspace_objects());
}

#[test]
fn workspace_namespace_quota_limits_and_rbac() {
    let out = workspace_objects();
    assert_eq!(
        out[0].key(),
        "Namespace/sluice-team",
        "the namespace is applied first"
    );
    let ns = find(&out, "Namespace", "sluice-team");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(ns["metadata"]["ownerReferences"][0]["kind"], "Workspace");
    assert_eq!(ns["metadata"]["ownerReferences"][0]["controller"], true);

    let quota = find(&out, "ResourceQuota", "sluice-quota");
    assert_eq!(
        quota["spec"]["hard"],
        json!({"requests.cpu": "4", "requests.memory": "8Gi", "pods": "20"})
    );
    let limits = find(&out, "LimitRange", "sluice-limits");
    assert_eq!(
        limits["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "200m", "memory": "256Mi"})
    );
    assert_eq!(
        limits["spec"]["limits"][0]["default"],
        json!({"cpu": "1", "memory": "512Mi"})
    );

    let editors = find(&out, "RoleBinding", "sluice-editors");
    assert_eq!(editors["roleRef"]["name"], "sluice-editor");
    assert_eq!(
        editors["subjects"],
        json!([
            {"kind": "User", "name": "ann@example.com", "apiGroup": "rbac.authorization.k8s.io"},
            {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
        ])
    );
    let viewers = find(&out, "RoleBinding", "sluice-viewers");
    assert_eq!(viewers["subjects"][0]["name"], "analysts");
    for o in &out {
        assert_eq!(
            o.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "sluice-operator",
            "{}",
            o.key()
        );
    }
}

#[test]
fn workspace_gets_only_granted_data_source_secrets() {
    let out = workspace_objects();
    let secrets: Vec<&str> = out
        .iter()
        .filter(|o| o.resource.kind == "Secret")
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(
        secrets,
        [
            "sluice-ds-warehouse",
            "sluice-ds-metrics",
            "sluice-registry"
        ],
        "hr is granted to `people` only"
    );
    assert_eq!(
        find(&out, "Secret", "sluice-registry")["type"],
        "kubernetes.io/dockerconfigjson"
    );
}

#[test]
fn workspace_network_policies_deny_by_default() {
    let out = workspace_objects();
    let deny = find(&out, "NetworkPolicy", "default-deny");
    assert_eq!(
        deny["spec"],
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    );

    let ingress = find(&out, "NetworkPolicy", "sluice-gateway-ingress");
    assert_eq!(
        ingress["spec"]["podSelector"]["matchLabels"],
        json!({"sluice.dev/role": "feed"})
    );
    assert_eq!(
        ingress["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sluice-system"}},
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sluice-server"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}]
        }])
    );

    let egress = &find(&out, "NetworkPolicy", "sluice-feed-egress")["spec"]["egress"];
    let rules = egress.as_array().unwrap();
    assert_eq!(rules.len(), 3, "DNS, warehouse, metrics; not hr: {egress}");
    assert_eq!(
        rules[0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
    assert_eq!(
        rules[1],
        json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5432}]})
    );
    assert_eq!(
        rules[2]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(
        rules[2]["to"][0]["podSelector"]["matchLabels"],
        json!({"app": "prometheus"})
    );

    // Prometheus's namespace reaches the agents' metrics port (the autoscaler's metric), and
    // only that port; without a metrics namespace, nothing does.
    let metrics = find(&out, "NetworkPolicy", "sluice-metrics-ingress");
    assert_eq!(
        metrics["spec"],
        json!({"podSelector": {"matchLabels": {"sluice.dev/role": "feed"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                            "ports": [{"protocol": "TCP", "port": 9464}]}]})
    );
    let ws: Workspace = load("workspace-team.yaml");
    let none = workspace::build(
        &ws,
        &WorkspaceInputs::default(),
        &Settings {
            metrics_namespace: None,
            ..settings()
        },
    );
    assert!(
        !none.iter().any(|o| o.name == "sluice-metrics-ingress"),
        "no metrics namespace, no opening"
    );
}

fn sales() -> Feed {
    load("feed-sales.yaml")
}

fn inputs(build_succeeded: bool) -> FeedInputs {
    let f = sales();
    FeedInputs {
        workspace: "team".into(),
        source: f.spec.source.inline.clone().unwrap(),
        data_sources: load("datasources.yaml"),
        build_succeeded,
        build_failed: false,
        image_digest: None,
    }
}

#[test]
fn feed_golden() {
    let plan = feed::build(&sales(), &inputs(true), &settings()).unwrap();
    golden("feed-sales.yaml", &plan.objects);
}

#[test]
fn feed_before_its_build_has_only_the_source_and_the_build_job() {
    let plan = feed::build(&sales(), &inputs(false), &settings()).unwrap();
    let keys: Vec<String> = plan.objects.iter().map(Object::key).collect();
    let job = feed::build_job_name(
        "sales-by-region",
        &feed::content_hash(&sales(), &inputs(false).source, &settings()),
    );
    assert_eq!(
        keys,
        [
            "ConfigMap/sluice-team/sales-by-region-source".to_string(),
            format!("Job/sluice-team/{job}"),
        ]
    );
    assert!(!plan.image_ready);
    assert_eq!(
        plan.keep_names,
        ["sales-by-region-canary"],
        "the canary keeps serving while building (the reconcile keeps the live revision)"
    );
    assert_eq!(
        plan.serving_name, None,
        "nothing to serve until it is built"
    );
    assert_eq!(plan.revision, "7");
    assert_eq!(
        plan.url,
        "https://sluice.example.com/feeds/team/sales-by-region"
    );
    assert!(
        plan.image
            .starts_with("registry.example.com/sluice/sluice-team/sales-by-region:")
    );

    let job = find(&plan.objects, "Job", &job);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["sluice.dev/role"],
        "builder"
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..3], ["build", "--source", "/src/feed.py"]);
    assert!(
        args.windows(2)
            .any(|w| w == ["--lock", "/src/requirements.lock"])
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--image", plan.image.as_str()])
    );
    assert_eq!(pod["volumes"][3]["secret"]["secretName"], "sluice-registry");
    assert_restricted(pod);
}

#[test]
fn feed_deployment_is_restricted_and_scaled() {
    let plan = feed::build(&sales(), &inputs(true), &settings()).unwrap();
    assert_eq!(plan.serving_name.as_deref(), Some("sales-by-region-r7"));
    let d = find(&plan.objects, "Deployment", "sales-by-region-r7");
    let pod = &d["spec"]["template"]["spec"];
    assert_restricted(pod);
    assert!(
        d["spec"].get("replicas").is_none(),
        "the HPA owns replicas when min < max"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], plan.image.as_str());
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The command in full (a feed image's entrypoint is already `sluice agent`), calls on
    // 8080 and metrics alone on 9464, the port the metrics policy opens.
    assert_eq!(c["command"], json!(["sluice", "agent"]));
    assert_eq!(
        c["args"],
        json!([
            "--listen",
            "0.0.0.0:8080",
            "--metrics-listen",
            "0.0.0.0:9464"
        ])
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9464}])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})
    );
    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(env["SLUICE_FEED"], "sales_by_region");
    assert_eq!(env["SLUICE_CACHE"], "5m");
    assert_eq!(env["SLUICE_REVISION"], "7");
    assert_eq!(
        pod["volumes"][1]["secret"]["secretName"],
        "sluice-ds-warehouse"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["sluice.dev/role"], "feed",
        "the ingress policy selects on it"
    );

    let hpa = find(
        &plan.objects,
        "HorizontalPodAutoscaler",
        "sales-by-region-r7",
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "sales-by-region-r7");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 6);
    assert_eq!(
        hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"],
        "4"
    );

    // The revision's own pods only: its Service never reaches another revision's.
    let selector = json!({"sluice.dev/feed": "sales-by-region", "sluice.dev/track": "live", "sluice.dev/revision": "7"});
    let svc = find(&plan.objects, "Service", "sales-by-region-r7");
    assert_eq!(svc["spec"]["selector"], selector);
    assert_eq!(d["spec"]["selector"]["matchLabels"], selector);
    let canary = find(&plan.objects, "Deployment", "sales-by-region-canary");
    assert_eq!(canary["spec"]["replicas"], 1);
    assert_eq!(
        canary["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/sluice/sluice-team/sales-by-region:abc"
    );
    let csvc = find(&plan.objects, "Service", "sales-by-region-canary");
    assert_eq!(csvc["metadata"]["annotations"]["sluice.dev/weight"], "10");
    for o in &plan.objects {
        assert_eq!(
            o.body["metadata"]["ownerReferences"][0]["kind"],
            "Feed",
            "{}",
            o.key()
        );
    }
}

#[test]
fn fixed_scale_sets_replicas_and_a_given_image_skips_the_build() {
    let mut f = sales();
    f.spec.scaling.min_replicas = 3;
    f.spec.scaling.max_replicas = 3;
    f.spec.image = Some("registry.example.com/prebuilt:1".into());
    f.spec.canary = None;
    let plan = feed::build(&f, &inputs(false), &settings()).unwrap();
    let kinds: Vec<&str> = plan
        .objects
        .iter()
        .map(|o| o.resource.kind.as_str())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
    assert!(plan.image_ready);
    assert_eq!(
        find(&plan.objects, "Deployment", "sales-by-region-r7")["spec"]["replicas"],
        3
    );
}

#[test]
fn each_revision_has_its_own_deployment_name() {
    assert_eq!(feed::serving_object_name("sales", "7"), "sales-r7");
    assert_eq!(
        feed::serving_object_name("sales", "3f9a2b1c4d5e"),
        "sales-r3f9a2b1c4d5e"
    );
    // Anything else that could not be written out is hashed: uppercase, dots, dashes (so
    // `a` at `1-canary` cannot meet feed `a-r1`'s canary), or too long for 63 characters.
    for odd in ["V2", "1.0", "1-canary", "x_y"] {
        let n = feed::serving_object_name("sales", odd);
        assert!(n.starts_with("sales-h") && n.len() == 15, "{odd}: {n}");
    }
    assert_ne!(
        feed::serving_object_name("sales", "V2"),
        feed::serving_object_name("sales", "v2")
    );
    let long = "f".repeat(50);
    let n = feed::serving_object_name(&long, "3f9a2b1c4d5e");
    assert!(n.len() <= 63 && n.starts_with(&format!("{long}-h")), "{n}");
    // A new revision is a new name: its pods come up beside the old ones.
    let mut f = sales();
    let a = feed::build(&f, &inputs(true), &settings()).unwrap();
    f.spec.revision = Some("8".into());
    let b = feed::build(&f, &inputs(true), &settings()).unwrap();
    assert_ne!(a.serving_name, b.serving_name);
}

#[test]
fn the_revision_hash_follows_the_content() {
    let s = settings();
    let f = sales();
    let a = feed::content_hash(&f, "x = 1", &s);
    assert_eq!(
        a,
        feed::content_hash(&f, "x = 1", &s),
        "same inputs, same hash"
    );
    assert_ne!(a, feed::content_hash(&f, "x = 2", &s));
    let mut g = f.clone();
    g.spec.lock = Some("numpy==2".into());
    assert_ne!(a, feed::content_hash(&g, "x = 1", &s));
    let mut g = f.clone();
    g.spec.revision = Some("99".into());
    assert_eq!(
        a,
        feed::content_hash(&g, "x = 1", &s),
        "the control plane's revision label is not content"
    );
    // A ready-made image is what is served: another image is another revision.
    let mut g = f.clone();
    g.spec.image = Some("registry.example.com/prebuilt:1".into());
    let one = feed::content_hash(&g, "x = 1", &s);
    assert_ne!(a, one);
    g.spec.image = Some("registry.example.com/prebuilt:2".into());
    assert_ne!(one, feed::content_hash(&g, "x = 1", &s));
}

#[test]
fn ungranted_or_missing_data_sources_are_refused() {
    let mut f = sales();
    f.spec.data_sources = vec!["hr".into()];
    assert_eq!(
        feed::build(&f, &inputs(true), &settings()),
        Err(Invalid::NotGranted("hr".into(), "team".into()))
    );
    f.spec.data_sources = vec!["nope".into()];
    assert_eq!(
        feed::build(&f, &inputs(true), &settings()),
        Err(Invalid::MissingDataSource("nope".into()))
    );
}

fn assert_restricted(pod: &Value) {
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    }
}

#[test]
fn kaniko_builds_from_a_generated_dockerfile() {
    let s = Settings {
        kaniko_image: Some("gcr.io/kaniko-project/executor:v1.23.2".into()),
        ..settings()
    };
    let plan = feed::build(&sales(), &inputs(false), &s).unwrap();
    let cm = find(&plan.objects, "ConfigMap", "sales-by-region-source");
    let dockerfile = cm["data"]["Dockerfile"].as_str().unwrap();
    assert_eq!(dockerfile, feed::dockerfile(&sales(), &s));
    let lines: Vec<&str> = dockerfile.lines().collect();
    assert_eq!(lines[0], "FROM registry.example.com/sluice/runtime:py3.12");
    let lock = lines
        .iter()
        .position(|l| l.starts_with("COPY requirements.lock"))
        .unwrap();
    let code = lines
        .iter()
        .position(|l| l.starts_with("COPY feed.py"))
        .unwrap();
    assert!(
        lock < code,
        "dependencies before code, so Kaniko's cache keeps them"
    );
    assert!(dockerfile.contains("SLUICE_FEED=sales_by_region"));
    assert!(dockerfile.contains("USER 65532:65532"));

    let job = plan
        .objects
        .iter()
        .find(|o| o.resource.kind == "Job")
        .unwrap();
    let c = &job.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "gcr.io/kaniko-project/executor:v1.23.2");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--destination={}", plan.image).as_str()),
        "{args:?}"
    );
    assert!(args.contains(&"--digest-file=/dev/termination-log"));
    assert!(args.contains(&"--cache-repo=registry.example.com/sluice/cache"));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["runAsUser"], 0, "Kaniko needs root");
    assert_eq!(c["volumeMounts"][1]["mountPath"], "/kaniko/.docker");

    let ws: Workspace = load("workspace-team.yaml");
    let out = workspace::build(&ws, &WorkspaceInputs::default(), &s);
    let labels = &out[0].body["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    // Feed pods stay restricted either way.
    let plan = feed::build(&sales(), &inputs(true), &s).unwrap();
    assert_restricted(
        &find(&plan.objects, "Deployment", "sales-by-region-r7")["spec"]["template"]["spec"],
    );
}
