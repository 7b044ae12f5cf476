//! `sluice operator`: the wiring. Parses nothing itself (its flags arrive as [`OperatorArgs`]),
//! serves `/metrics` and `/healthz`, waits to hold the leader Lease, then runs the Feed and
//! Workspace controllers until SIGTERM or until leadership is lost (then it exits, and
//! Kubernetes restarts it as a candidate).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::build::Settings;
use crate::crd::{DataSource, Feed, Workspace};
use crate::lease::LeaseLock;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Error, backoff};

/// Flags of `sluice operator`.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The operator's own namespace (Lease, registry push Secret).
    #[arg(
        long,
        env = "SLUICE_OPERATOR_NAMESPACE",
        default_value = "sluice-system"
    )]
    pub namespace: String,
    /// Where /metrics and /healthz listen.
    #[arg(
        long,
        env = "SLUICE_OPERATOR_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: SocketAddr,
    /// This replica's name in the leader Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "sluice-operator")]
    pub lease_name: String,
    /// Run without leader election (a single replica, or a test).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the Sluice server, the only source of ingress to feed pods.
    #[arg(
        long,
        env = "SLUICE_GATEWAY_NAMESPACE",
        default_value = "sluice-system"
    )]
    pub gateway_namespace: String,
    /// Pod label of the Sluice server, as key=value (repeatable).
    #[arg(
        long = "gateway-label",
        default_value = "app.kubernetes.io/name=sluice-server"
    )]
    pub gateway_labels: Vec<String>,
    /// Public base URL of the gateway.
    #[arg(
        long,
        env = "SLUICE_PUBLIC_URL",
        default_value = "http://sluice.sluice-system.svc"
    )]
    pub gateway_url: String,
    /// Registry repository prefix for feed images.
    #[arg(
        long,
        env = "SLUICE_REGISTRY",
        default_value = "registry.sluice-system.svc:5000/sluice"
    )]
    pub registry: String,
    /// dockerconfigjson Secret (in --namespace) with push credentials.
    #[arg(long, env = "SLUICE_REGISTRY_SECRET")]
    pub registry_secret: Option<String>,
    /// Default base runtime image of feeds; default the builder image (Sluice's one image,
    /// made by `sluice image`, has Python, `sluice` and `uv`).
    #[arg(long, env = "SLUICE_RUNTIME_IMAGE")]
    pub runtime_image: Option<String>,
    /// Image that runs `sluice build` in build Jobs.
    #[arg(
        long,
        env = "SLUICE_BUILDER_IMAGE",
        default_value = "ghcr.io/sluice-dev/sluice:latest"
    )]
    pub builder_image: String,
    /// Build with this Kaniko executor image and a generated Dockerfile instead of `sluice build`
    /// (workspace namespaces then enforce Pod Security baseline: Kaniko runs as root).
    #[arg(long, env = "SLUICE_KANIKO_IMAGE")]
    pub kaniko_image: Option<String>,
    /// Namespace of the Prometheus that scrapes feed pods (their metrics port, for the
    /// autoscaler's calls-in-flight metric); unset, no namespace may reach it.
    #[arg(long, env = "SLUICE_METRICS_NAMESPACE")]
    pub metrics_namespace: Option<String>,
}

impl OperatorArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut gateway_labels = BTreeMap::new();
        for l in &self.gateway_labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--gateway-label {l:?} is not key=value"))?;
            gateway_labels.insert(k.to_string(), v.to_string());
        }
        Ok(Settings {
            gateway_namespace: self.gateway_namespace.clone(),
            gateway_labels,
            gateway_url: self.gateway_url.clone(),
            registry: self.registry.clone(),
            registry_secret: self.registry_secret.clone(),
            runtime_image: self
                .runtime_image
                .clone()
                .unwrap_or_else(|| self.builder_image.clone()),
            builder_image: self.builder_image.clone(),
            kaniko_image: self.kaniko_image.clone(),
            metrics_namespace: self.metrics_namespace.clone(),
        })
    }
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    let mut failures = ctx.failures.lock().expect("failures lock");
    let n = failures.entry(key.clone()).or_insert(0);
    let delay = backoff(*n);
    *n += 1;
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn forget_failures<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &ObjectRef<K>) {
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace.clone().unwrap_or_default(),
        obj.name
    );
    ctx.failures.lock().expect("failures lock").remove(&key);
}

async fn serve_metrics(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Run the operator until SIGTERM, or until the leader Lease is lost.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let client = Client::try_default().await.map_err(|e| {
        // kube's error repeats its causes in its own message: one line is enough.
        anyhow::anyhow!("no Kubernetes API: set KUBECONFIG or run in a pod ({e})")
    })?;
    let metrics = Metrics::default();
    tokio::spawn({
        let metrics = metrics.clone();
        let addr = args.metrics_listen;
        async move {
            if let Err(e) = serve_metrics(addr, metrics).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }
    });
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("sluice-operator-{}", std::process::id()));

    let lease = LeaseLock {
        api: Api::<Lease>::namespaced(client.clone(), &args.namespace),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
    };
    if !args.no_leader_election {
        tracing::info!(lease = %args.lease_name, %identity, "waiting to become the leader");
        while !lease.try_acquire_or_renew().await? {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!(%identity, "leading");
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some(identity),
            },
        ),
        metrics,
        namespace: args.namespace.clone(),
        now: reconcile::now_rfc3339,
        failures: Default::default(),
    });

    let controllers = run_controllers(ctx);

    let renew = async {
        if args.no_leader_election {
            return futures::future::pending::<anyhow::Result<()>>().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            match lease.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => anyhow::bail!("lost the leader Lease to another replica"),
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
            }
        }
    };
    tokio::select! {
        _ = controllers => Ok(()),
        r = renew => r,
    }
}

/// The Feed, Workspace and DataSource controllers, until SIGTERM. The e2e test runs these in-process.
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=sluice-operator");
    let feeds = Controller::new(Api::<Feed>::all(client.clone()), wc.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Job>::all(client.clone()), owned)
        .shutdown_on_signal()
        .run(reconcile::reconcile_feed, error_policy, ctx.clone())
        .for_each({
            let ctx = ctx.clone();
            move |r| {
                match r {
                    Ok((obj, _)) => forget_failures(&ctx, &obj),
                    Err(e) => tracing::debug!(error = %e, "feed controller"),
                }
                futures::future::ready(())
            }
        });
    let workspaces = Controller::new(Api::<Workspace>::all(client.clone()), wc.clone());
    let store = workspaces.store();
    let workspaces = workspaces
        // A change to a DataSource (grants, egress) re-reconciles the workspaces it names.
        .watches(
            Api::<DataSource>::all(client.clone()),
            wc,
            move |ds: DataSource| {
                let names: Vec<ObjectRef<Workspace>> =
                    if ds.spec.workspaces.iter().any(|w| w == "*") {
                        store
                            .state()
                            .iter()
                            .map(|w| ObjectRef::from_obj(w.as_ref()))
                            .collect()
                    } else {
                        ds.spec
                            .workspaces
                            .iter()
                            .map(|w| ObjectRef::new(w))
                            .collect()
                    };
                names
            },
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile_workspace, error_policy, ctx.clone())
        .for_each({
            let ctx = ctx.clone();
            move |r| {
                match r {
                    Ok((obj, _)) => forget_failures(&ctx, &obj),
                    Err(e) => tracing::debug!(error = %e, "workspace controller"),
                }
                futures::future::ready(())
            }
        });

    let datasources = Controller::new(
        Api::<DataSource>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile::reconcile_datasource, error_policy, ctx.clone())
    .for_each({
        let ctx = ctx.clone();
        move |r| {
            match r {
                Ok((obj, _)) => forget_failures(&ctx, &obj),
                Err(e) => tracing::debug!(error = %e, "data source controller"),
            }
            futures::future::ready(())
        }
    });
    futures::future::join3(feeds, workspaces, datasources).await;
}

/// Flags of `sluice crds`.
#[derive(clap::Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Write deploy/crds and the chart's crds/ under this repository root instead of printing.
    #[arg(long, value_name = "REPO_ROOT")]
    pub write: Option<std::path::PathBuf>,
}

/// `sluice crds`: print the CRDs as one YAML stream, or write them into the repository.
pub fn crds(args: &CrdsArgs) -> anyhow::Result<()> {
    match &args.write {
        Some(root) => crate::crdgen::write_all(root).context("cannot write the CRDs"),
        None => {
            let docs: Vec<String> = crate::crdgen::crds().into_iter().map(|(_, t)| t).collect();
            print!("{}", docs.join("---\n"));
            Ok(())
        }
    }
}
