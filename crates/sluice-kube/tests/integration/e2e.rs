//! End to end against a real API server: the cluster named by `KUBECONFIG`, or a control plane
//! started from the envtest binaries in `KUBEBUILDER_ASSETS` (etcd + kube-apiserver, no
//! controllers: there Deployments never get pods, so readiness is not checked). With neither,
//! the test prints why it skips. docs/kubernetes.md says how to run it on kind or k3d.
//!
//! The flow: install the CRDs, create a DataSource and its Secret, a Workspace (namespace,
//! policies, secret copy), a Feed with a ready image (Deployment, Service, status), add and
//! remove a canary (the sweep deletes it), delete the Feed (finalizer cleanup) and the
//! Workspace. Set `SLUICE_E2E_FEED_IMAGE` to a feed image `sluice build` made (a feed named
//! `hello`; docs/kubernetes.md shows how) to also wait for Ready on a real cluster.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config, CustomResourceExt};
use serde_json::json;
use sluice_kube::build::Settings;
use sluice_kube::crd::{DataSource, Feed, Workspace};
use sluice_kube::metrics::Metrics;
use sluice_kube::reconcile::{Context, now_rfc3339};

struct Envtest {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Envtest {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd and kube-apiserver from `assets`, on loopback, with a static admin token.
fn start_envtest(assets: &str) -> (Envtest, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd = Command::new(format!("{assets}/etcd"))
        .arg(format!("--data-dir={}", d.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!(
            "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd from KUBEBUILDER_ASSETS");
    let key = d.join("sa.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .expect("openssl makes the service account key");
    assert!(status.success());
    std::fs::write(
        d.join("tokens.csv"),
        "sluice-e2e-token,admin,admin,system:masters\n",
    )
    .unwrap();
    let apiserver = Command::new(format!("{assets}/kube-apiserver"))
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--cert-dir={}", d.join("certs").display()))
        .arg(format!("--secure-port={api_port}"))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .args([
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=AlwaysAllow",
        ])
        .arg(format!(
            "--token-auth-file={}",
            d.join("tokens.csv").display()
        ))
        .arg(format!("--service-account-key-file={}", key.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            key.display()
        ))
        .arg("--service-account-issuer=https://127.0.0.1")
        .arg("--disable-admission-plugins=ServiceAccount")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kube-apiserver from KUBEBUILDER_ASSETS");
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: sluice-e2e-token\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin}}\ncurrent-context: envtest\n"
        ),
    )
    .unwrap();
    (
        Envtest {
            children: vec![etcd, apiserver],
            _dir: dir,
        },
        kubeconfig,
    )
}

async fn client_from(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ssa() -> PatchParams {
    PatchParams::apply("sluice-e2e").force()
}

#[tokio::test]
async fn operator_end_to_end() {
    let mut _envtest = None;
    let client = if let Some(path) = std::env::var_os("KUBECONFIG") {
        client_from(std::path::Path::new(&path)).await
    } else if let Ok(assets) = std::env::var("KUBEBUILDER_ASSETS") {
        let (env, kubeconfig) = start_envtest(&assets);
        _envtest = Some(env);
        let client = client_from(&kubeconfig).await;
        wait_for("the envtest API server", Duration::from_secs(60), || {
            let c = client.clone();
            async move { c.apiserver_version().await.ok() }
        })
        .await;
        client
    } else {
        eprintln!(
            "SKIP: neither KUBECONFIG nor KUBEBUILDER_ASSETS is set; see docs/kubernetes.md (kind or k3d) to run the end-to-end test"
        );
        return;
    };
    let real_cluster = _envtest.is_none();

    // CRDs.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [Workspace::crd(), Feed::crd(), DataSource::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &ssa(), &Patch::Apply(&crd))
            .await
            .unwrap();
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let c = crds.get(&name).await.ok()?;
                    c.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }

    // The operator, in-process, without leader election.
    let system = "sluice-e2e-system";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            system,
            &ssa(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": system}}),
            ),
        )
        .await
        .unwrap();
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: Settings {
            gateway_namespace: system.into(),
            gateway_url: "http://sluice.e2e".into(),
            ..Settings::default()
        },
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some("e2e".into()),
            },
        ),
        metrics: Metrics::default(),
        namespace: system.into(),
        now: now_rfc3339,
        failures: Default::default(),
    });
    let operator = tokio::spawn(sluice_kube::operator::run_controllers(ctx.clone()));

    Api::<Secret>::namespaced(client.clone(), system)
        .patch("e2e-warehouse", &ssa(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "e2e-warehouse"}, "stringData": {"url": "postgres://u:p@10.9.0.1/wh"}})))
        .await
        .unwrap();
    Api::<DataSource>::all(client.clone())
        .patch("e2e-warehouse", &ssa(), &Patch::Apply(json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSource",
            "metadata": {"name": "e2e-warehouse"},
            "spec": {"type": "postgres", "secretRef": {"name": "e2e-warehouse", "namespace": system},
                     "workspaces": ["e2e"], "egress": {"cidrs": ["10.9.0.1/32"], "ports": [5432]}}})))
        .await
        .unwrap();
    let workspaces: Api<Workspace> = Api::all(client.clone());
    workspaces
        .patch(
            "e2e",
            &ssa(),
            &Patch::Apply(
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "e2e"}, "spec": {"quota": {"pods": 10}}}),
            ),
        )
        .await
        .unwrap();
    wait_for("Workspace e2e Ready", Duration::from_secs(60), || {
        let w = workspaces.clone();
        async move {
            let s = w.get("e2e").await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let ns = "sluice-e2e";
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get("default-deny")
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .get("sluice-ds-e2e-warehouse")
        .await
        .unwrap();

    // A feed with a ready image.
    let image = std::env::var("SLUICE_E2E_FEED_IMAGE")
        .unwrap_or_else(|_| "registry.k8s.io/pause:3.10".into());
    let feeds: Api<Feed> = Api::namespaced(client.clone(), ns);
    let feed_at = |revision: &str, canary: Option<serde_json::Value>| {
        let mut f = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed", "metadata": {"name": "hello"},
            "spec": {"source": {"inline": "import sluice\n"}, "image": image, "revision": revision, "dataSources": ["e2e-warehouse"]}});
        if let Some(c) = canary {
            f["spec"]["canary"] = c;
        }
        f
    };
    let feed = |canary| feed_at("1", canary);
    feeds
        .patch("hello", &ssa(), &Patch::Apply(feed(None)))
        .await
        .unwrap();
    let status = wait_for("Feed hello Deployed", Duration::from_secs(60), || {
        let f = feeds.clone();
        async move {
            let f = f.get("hello").await.ok()?;
            let s = f.status.clone()?;
            (s.observed_generation == f.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Deployed" && c.status == "True"))
            .then_some(s)
        }
    })
    .await;
    assert_eq!(
        status.url.as_deref(),
        Some("http://sluice.e2e/feeds/e2e/hello")
    );
    assert_eq!(status.revision.as_deref(), Some("1"));
    assert_eq!(status.service.as_deref(), Some("hello-r1"));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deployments.get("hello-r1").await.unwrap();
    assert_eq!(d.metadata.owner_references.unwrap()[0].kind, "Feed");
    Api::<Service>::namespaced(client.clone(), ns)
        .get("hello-r1")
        .await
        .unwrap();
    let pods_run = real_cluster && std::env::var_os("SLUICE_E2E_FEED_IMAGE").is_some();
    if pods_run {
        wait_for("Feed hello Ready", Duration::from_secs(180), || {
            let f = feeds.clone();
            async move {
                let s = f.get("hello").await.ok()?.status?;
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }

    // Revision 2 gets its own Deployment beside revision 1's, which serves until every pod
    // of revision 2 is ready; then the status switches, and revision 1 drains and goes.
    feeds
        .patch("hello", &ssa(), &Patch::Apply(feed_at("2", None)))
        .await
        .unwrap();
    wait_for("Deployment hello-r2", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move { d.get_opt("hello-r2").await.ok()? }
    })
    .await;
    if pods_run {
        wait_for("revision 2 to serve", Duration::from_secs(180), || {
            let f = feeds.clone();
            async move {
                let s = f.get("hello").await.ok()?.status?;
                (s.revision.as_deref() == Some("2") && s.service.as_deref() == Some("hello-r2"))
                    .then_some(())
            }
        })
        .await;
        wait_for(
            "revision 1 to drain and go",
            Duration::from_secs(120),
            || {
                let d = deployments.clone();
                async move {
                    match d.get_opt("hello-r1").await.ok()? {
                        None => Some(()),
                        Some(d) => d.metadata.deletion_timestamp.map(|_| ()),
                    }
                }
            },
        )
        .await;
    } else {
        // No pods here: revision 2 never rolls out, so revision 1 keeps serving.
        let s = wait_for("the status of revision 2", Duration::from_secs(60), || {
            let f = feeds.clone();
            async move {
                let f = f.get("hello").await.ok()?;
                let s = f.status?;
                (s.observed_generation == f.metadata.generation).then_some(s)
            }
        })
        .await;
        assert_eq!(
            (s.revision.as_deref(), s.service.as_deref()),
            (Some("1"), Some("hello-r1"))
        );
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Deployed" && c.reason == "RollingOut"),
            "{:?}",
            s.conditions
        );
        assert!(deployments.get_opt("hello-r1").await.unwrap().is_some());
    }
    let feed = |canary| feed_at("2", canary);

    // A canary comes and goes; the sweep removes its Deployment.
    feeds
        .patch(
            "hello",
            &ssa(),
            &Patch::Apply(feed(Some(
                json!({"revision": "2", "image": image, "weight": 10}),
            ))),
        )
        .await
        .unwrap();
    wait_for("the canary Deployment", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move { d.get_opt("hello-canary").await.ok()? }
    })
    .await;
    feeds
        .patch("hello", &ssa(), &Patch::Apply(feed(None)))
        .await
        .unwrap();
    wait_for(
        "the canary Deployment to go",
        Duration::from_secs(60),
        || {
            let d = deployments.clone();
            async move {
                match d.get_opt("hello-canary").await.ok()? {
                    None => Some(()),
                    Some(d) => d.metadata.deletion_timestamp.map(|_| ()),
                }
            }
        },
    )
    .await;

    // Deleting the feed runs its finalizer.
    feeds
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("Feed hello to be deleted", Duration::from_secs(60), || {
        let f = feeds.clone();
        async move { f.get_opt("hello").await.ok()?.is_none().then_some(()) }
    })
    .await;
    workspaces
        .delete("e2e", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "Workspace e2e to be deleted",
        Duration::from_secs(60),
        || {
            let w = workspaces.clone();
            async move { w.get_opt("e2e").await.ok()?.is_none().then_some(()) }
        },
    )
    .await;
    let gone = namespaces.get_opt(ns).await.unwrap();
    assert!(
        gone.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the workspace namespace is being deleted"
    );
    Api::<DataSource>::all(client.clone())
        .delete("e2e-warehouse", &DeleteParams::default())
        .await
        .unwrap();
    operator.abort();
}
