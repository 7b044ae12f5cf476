//! The committed CRD YAML matches the Rust types, and the CEL rules in it accept good
//! objects and refuse the mistakes they are meant to catch (evaluated with kube's client-side
//! CEL evaluator against the committed schema, as the API server would).

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice_kube::crdgen;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_crds_match_the_rust_types() {
    let root = repo_root();
    let mut drift = Vec::new();
    for dir in crdgen::CRD_DIRS {
        for (name, text) in crdgen::crds() {
            let path = root.join(dir).join(&name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != text {
                drift.push(path.display().to_string());
            }
        }
    }
    assert!(
        drift.is_empty(),
        "CRD YAML is out of date: {drift:?}\nrun `cargo run -p sluice -- crds --write .` and commit the result"
    );
}

fn schema(file: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("deploy/crds").join(file)).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cel_errors(file: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(file), obj, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn feed(spec: Value) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
           "metadata": {"name": "sales", "namespace": "sluice-team"}, "spec": spec})
}

const FEEDS: &str = "feeds.sluice.dev.yaml";

#[test]
fn a_good_feed_passes_cel() {
    let f = feed(json!({"source": {"inline": "import sluice"}, "cache": "5m",
        "scaling": {"minReplicas": 0, "maxReplicas": 3, "targetConcurrency": 4, "scaleToZero": true, "idleTimeout": "10m"},
        "revision": "2026.11_rc-1",
        "canary": {"revision": "8", "image": "r/x:8", "weight": 10}}));
    assert_eq!(cel_errors(FEEDS, &f, None), Vec::<String>::new());
}

#[test]
fn cel_refuses_the_obvious_feed_mistakes() {
    let cases = [
        (json!({"source": {}}), "either inline or configMapRef"),
        (
            json!({"source": {"inline": "x", "configMapRef": {"name": "c"}}}),
            "either inline or configMapRef",
        ),
        (
            json!({"source": {"inline": "x"}, "cache": "five minutes"}),
            "cache is a duration",
        ),
        (
            json!({"source": {"inline": "x"}, "scaling": {"minReplicas": 3, "maxReplicas": 2, "targetConcurrency": 1, "scaleToZero": false}}),
            "maxReplicas must be at least minReplicas",
        ),
        (
            json!({"source": {"inline": "x"}, "scaling": {"minReplicas": 0, "maxReplicas": 2, "targetConcurrency": 1, "scaleToZero": false}}),
            "minReplicas 0 needs scaleToZero",
        ),
        (
            json!({"source": {"inline": "x"}, "canary": {"revision": "2", "image": "i", "weight": 150}}),
            "weight is a percentage",
        ),
        (
            json!({"source": {"inline": "x"}, "scaling": {"minReplicas": 0, "maxReplicas": 2, "targetConcurrency": 1, "scaleToZero": true, "idleTimeout": "soon"}}),
            "idleTimeout is a duration",
        ),
        // A revision labels its pods: a label value, at most 63 characters.
        (
            json!({"source": {"inline": "x"}, "revision": "v 2"}),
            "revision is 1 to 63 letters",
        ),
        (
            json!({"source": {"inline": "x"}, "revision": "r".repeat(64)}),
            "revision is 1 to 63 letters",
        ),
        (
            json!({"source": {"inline": "x"}, "canary": {"revision": "-2", "image": "i", "weight": 5}}),
            "revision is 1 to 63 letters",
        ),
    ];
    for (spec, expected) in cases {
        let errors = cel_errors(FEEDS, &feed(spec.clone()), None);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: expected an error containing {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn cel_refuses_bad_workspaces_and_data_sources() {
    let ws = |spec: Value| json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": "team"}, "spec": spec});
    let file = "workspaces.sluice.dev.yaml";
    assert!(
        cel_errors(
            file,
            &ws(json!({"members": [{"kind": "User", "name": "ann", "role": "editor"}]})),
            None
        )
        .is_empty()
    );
    let errors = cel_errors(
        file,
        &ws(json!({"members": [{"kind": "User", "name": "ann", "role": "owner"}]})),
        None,
    );
    assert!(
        errors.iter().any(|e| e.contains("editor or viewer")),
        "{errors:?}"
    );
    let old = ws(json!({"namespace": "a"}));
    let errors = cel_errors(file, &ws(json!({"namespace": "b"})), Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("cannot change")),
        "{errors:?}"
    );

    let ds = |spec: Value| json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSource", "metadata": {"name": "warehouse"}, "spec": spec});
    let file = "datasources.sluice.dev.yaml";
    let good = ds(
        json!({"type": "postgres", "secretRef": {"name": "wh", "namespace": "sluice-system"}, "egress": {"cidrs": ["10.0.0.0/24"], "ports": [5432]}}),
    );
    assert!(cel_errors(file, &good, None).is_empty());
    let errors = cel_errors(
        file,
        &ds(json!({"type": "oracle", "secretRef": {"name": "wh", "namespace": "n"}})),
        None,
    );
    assert!(
        errors.iter().any(|e| e.contains("type is postgres")),
        "{errors:?}"
    );
    let errors = cel_errors(
        file,
        &ds(
            json!({"type": "http", "secretRef": {"name": "wh", "namespace": "n"}, "egress": {"ports": [70000]}}),
        ),
        None,
    );
    assert!(
        errors.iter().any(|e| e.contains("egress names cidrs")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("ports are 1 to 65535")),
        "{errors:?}"
    );
}

#[test]
fn feeds_print_revision_ready_url_and_age() {
    let text = std::fs::read_to_string(repo_root().join("deploy/crds").join(FEEDS)).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    let cols: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Revision", "Ready", "URL", "Age"]);
}
