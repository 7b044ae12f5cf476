//! The Helm chart: `values.yaml` satisfies `values.schema.json` and the schema refuses bad
//! values (checked with Python's `jsonschema`, which the test suite's requirements install);
//! `helm lint` and `helm template` run when helm is on PATH, and every rendered workload is
//! restricted. Each part prints why it skips when its tool is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/sluice")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).is_file()))
}

/// Validate `values` against the chart's schema; `Ok(None)` when jsonschema is missing.
fn validate(values: &Value) -> Result<Option<()>, String> {
    let script = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit(3)
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(json.load(sys.stdin))]
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(chart().join("values.schema.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(values.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(Some(())),
        Some(3) => Ok(None),
        _ => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

fn values() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap()
}

#[test]
fn values_yaml_satisfies_the_schema_and_the_schema_refuses_mistakes() {
    match validate(&values()) {
        Ok(Some(())) => {}
        Ok(None) => {
            eprintln!("SKIP: python3 has no jsonschema (pip install jsonschema)");
            return;
        }
        Err(e) => panic!("values.yaml does not satisfy values.schema.json:\n{e}"),
    }
    let mut cases = Vec::new();
    let mut v = values();
    v["server"]["replicas"] = json!(0);
    cases.push((v, "0 is less than the minimum of 1"));
    let mut v = values();
    v["server"]["replica"] = json!(2);
    cases.push((
        v,
        "Additional properties are not allowed ('replica' was unexpected)",
    ));
    let mut v = values();
    v["server"]["resources"]["limits"]["memory"] = json!("lots");
    cases.push((v, "'lots' does not match"));
    let mut v = values();
    v["server"]["publicUrl"] = json!("sluice.example.com");
    cases.push((v, "does not match '^https?://'"));
    for (v, expected) in cases {
        let err = validate(&v).expect_err(expected);
        assert!(err.contains(expected), "expected {expected:?}, got {err}");
    }
}

#[test]
fn the_server_runs_feeds_through_the_operator() {
    // Without helm (the rendered check is in `helm_lint_and_template`): the server's
    // container sets runtime = kubernetes, or deployed feeds would run in the server's own
    // pods and never become Feed resources.
    let text = std::fs::read_to_string(chart().join("templates/server.yaml")).unwrap();
    assert!(
        text.contains("- {name: SLUICE_RUNTIME, value: kubernetes}"),
        "server.yaml does not set SLUICE_RUNTIME=kubernetes"
    );
}

#[test]
fn every_template_container_is_restricted() {
    // Without helm: each container in the templates takes the restricted security context.
    for entry in std::fs::read_dir(chart().join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let containers = text.matches("containers:").count();
        let restricted = text
            .matches("include \"sluice.containerSecurityContext\"")
            .count();
        let pods = text
            .matches("include \"sluice.podSecurityContext\"")
            .count();
        assert_eq!(
            containers,
            restricted,
            "{}: a container without the restricted context",
            path.display()
        );
        assert_eq!(
            containers,
            pods,
            "{}: a pod without the restricted context",
            path.display()
        );
    }
}

#[test]
fn helm_lint_and_template() {
    if !on_path("helm") {
        eprintln!(
            "SKIP: helm is not on PATH; install helm and rerun `cargo test -p sluice-kube --test integration chart::`"
        );
        return;
    }
    let chart = chart();
    let out = Command::new("helm")
        .arg("lint")
        .arg(&chart)
        .arg("--strict")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("helm")
        .args(["template", "sluice"])
        .arg(&chart)
        .args([
            "--namespace",
            "sluice-system",
            "--set",
            "ingress.enabled=true,serviceMonitor.enabled=true,httpRoute.enabled=true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        kinds.push(v["kind"].as_str().unwrap_or_default().to_string());
        if v["kind"] == "Deployment" && v["metadata"]["name"] == "sluice-server" {
            let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
            assert!(
                env.as_array()
                    .unwrap()
                    .contains(&json!({"name": "SLUICE_RUNTIME", "value": "kubernetes"})),
                "the server runs feeds through the operator: {env}"
            );
        }
        if v["kind"] == "Deployment" {
            let pod = &v["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            for c in pod["containers"].as_array().unwrap() {
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
                assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            }
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "ClusterRole",
        "Ingress",
        "HTTPRoute",
        "ServiceMonitor",
        "PodMonitor",
        "NetworkPolicy",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in the rendered chart: {kinds:?}"
        );
    }
}
