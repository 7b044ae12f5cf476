//! What `sluice server` needs from Kubernetes when its runtime is `kubernetes`: write a Feed
//! object on deploy (server-side apply, field manager `sluice-server`, so GitOps tools and the
//! operator keep their own fields), read feeds and their status back (feeds applied as YAML by
//! GitOps users appear like any other), delete. The server maps these plain values to its API.
//!
//! Which namespace a workspace's feeds live in is decided here only ([`KubeFeeds::namespace`]):
//! the Workspace object's `spec.namespace`, else `sluice-<workspace>` (the operator's rule,
//! [`crate::build::workspace::namespace_of`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::build::feed::function_of;
use crate::build::workspace::{default_namespace, namespace_of};
use crate::build::{LABEL_FEED, LABEL_ROLE};
use crate::crd::{Feed, Workspace};
use crate::reconcile::LAST_CALL;

/// The field manager of the server's writes.
pub const SERVER_FIELD_MANAGER: &str = "sluice-server";

/// One deploy: a new live revision of a feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deploy {
    pub source: String,
    pub lock: Option<String>,
    pub function: Option<String>,
    /// The control plane's revision number.
    pub revision: String,
    pub cache: Option<String>,
    pub data_sources: Vec<String>,
}

/// A feed as the API shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedView {
    pub name: String,
    pub function: String,
    /// The revision the spec asks for.
    pub revision: Option<String>,
    /// The revision being served.
    pub live_revision: Option<String>,
    pub ready: bool,
    pub built: bool,
    /// The reason of the first condition that is not True (what the CLI shows).
    pub waiting_for: Option<String>,
    pub url: Option<String>,
    /// Where the agent of the revision that serves answers inside the cluster (its Service,
    /// port 80), while one serves: what the gateway calls. Set while a next revision
    /// builds or rolls out, when `ready` (which is about the spec as written) is not.
    pub agent_url: Option<String>,
    pub image: Option<String>,
    /// Written by GitOps (another field manager owns the spec), not through the API.
    pub managed_by_server: bool,
    pub namespace: String,
    /// The feed's cache duration, as its spec says.
    pub cache: Option<String>,
    /// A canary taking part of the calls (a weight above 0 in the spec).
    pub canary: Option<CanaryView>,
    /// For a feed that scales to zero: `namespace/deployment` of the revision that serves,
    /// what the gateway records calls on and wakes ([`KubeFeeds::touch`], [`KubeFeeds::wake`]).
    pub wake: Option<String>,
}

/// A feed's canary: the operator serves it as `<feed>-canary`, next to the live Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CanaryView {
    pub revision: String,
    /// Percent of calls, 1 to 100.
    pub weight: u8,
    pub agent_url: String,
}

impl FeedView {
    pub fn from_feed(f: &Feed) -> FeedView {
        let status = f.status.clone().unwrap_or_default();
        let is_true = |t: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let current = status.observed_generation == f.metadata.generation;
        let waiting_for = status
            .conditions
            .iter()
            .find(|c| c.status != "True")
            .map(|c| c.reason.clone())
            .or_else(|| (!current).then(|| "Reconciling".to_string()));
        let ready = current && is_true("Ready");
        let namespace = f
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let canary = f
            .spec
            .canary
            .as_ref()
            .filter(|c| c.weight > 0)
            .map(|c| CanaryView {
                revision: c.revision.clone(),
                // CEL keeps it within 0..=100; clamp anyway, it decides routing.
                weight: c.weight.clamp(0, 100) as u8,
                agent_url: agent_url(&namespace, &format!("{}-canary", f.name_any())),
            });
        // Calls go to the Service of the revision that serves, whatever the spec asks for
        // meanwhile (a next revision building, a spec the operator has not seen yet): a
        // gateway that starts mid-rollout routes at once. Statuses written before each
        // revision had its own Service served from the one named after the feed.
        let serving = is_true("Ready") && status.revision.is_some();
        let service = status.service.clone().unwrap_or_else(|| f.name_any());
        FeedView {
            wake: (serving && f.spec.scaling.scale_to_zero)
                .then(|| format!("{namespace}/{service}")),
            agent_url: serving.then(|| agent_url(&namespace, &service)),
            canary,
            cache: f.spec.cache.clone(),
            namespace,
            name: f.name_any(),
            function: function_of(f),
            revision: f.spec.revision.clone(),
            live_revision: status.revision.clone(),
            ready,
            built: is_true("Built"),
            waiting_for,
            url: status.url.clone(),
            image: status.image.clone(),
            managed_by_server: f
                .managed_fields()
                .iter()
                .any(|m| m.manager.as_deref() == Some(SERVER_FIELD_MANAGER)),
        }
    }
}

/// Reasons a Feed waits for with work still under way; any other reason is the end of a
/// rollout that did not become ready (a failed build, a missing data source, ...).
const UNDER_WAY: [&str; 7] = [
    "Reconciling",
    "Building",
    "WaitingForBuild",
    "Applied",
    "RollingOut",
    "PodsNotReady",
    "Starting",
];

/// How long and how closely [`KubeFeeds::follow`] watches a rollout.
#[derive(Clone, Copy, Debug)]
pub struct Follow {
    /// When the deploy began: build pods created before it are earlier builds'.
    pub since: chrono::DateTime<chrono::Utc>,
    pub timeout: Duration,
    /// Between two looks at the Feed.
    pub poll: Duration,
}

/// How [`KubeFeeds::follow`] reports a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// The Feed now waits for something else (a condition's reason).
    Waiting(String),
    /// A line the build printed.
    BuildLog(String),
}

/// The in-cluster URL of an agent: its Service's, port 80.
pub fn agent_url(namespace: &str, service: &str) -> String {
    format!("http://{service}.{namespace}.svc")
}

/// The Feed object's name for a feed: feed names may hold `_`, object names may not.
pub fn object_name(feed: &str) -> String {
    feed.replace('_', "-")
}

/// Feeds of one cluster, addressed by workspace namespace.
#[derive(Clone)]
pub struct KubeFeeds {
    client: Client,
    /// Workspace → namespace, for workspaces that have a Workspace object. A workspace's
    /// namespace cannot change once created (a CEL rule), so an answer is kept for good.
    namespaces: Arc<RwLock<HashMap<String, String>>>,
}

impl KubeFeeds {
    pub fn new(client: Client) -> KubeFeeds {
        KubeFeeds {
            client,
            namespaces: Default::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of a workspace's feeds: its Workspace object's, else
    /// `sluice-<workspace>` (not remembered: the Workspace may be created later).
    pub async fn namespace(&self, ws: &str) -> Result<String, kube::Error> {
        if let Some(ns) = self.namespaces.read().expect("namespaces lock").get(ws) {
            return Ok(ns.clone());
        }
        match Api::<Workspace>::all(self.client.clone())
            .get_opt(ws)
            .await?
        {
            Some(w) => {
                let ns = namespace_of(&w);
                self.remember_namespace(ws, &ns);
                Ok(ns)
            }
            None => Ok(default_namespace(ws)),
        }
    }

    /// What a watch of Workspaces learned (see [`crate::index`]).
    pub fn remember_namespace(&self, ws: &str, ns: &str) {
        self.namespaces
            .write()
            .expect("namespaces lock")
            .insert(ws.to_string(), ns.to_string());
    }

    fn api(&self, namespace: &str) -> Api<Feed> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Write the feed's spec for a new revision (fields the server does not set, such as
    /// scaling or a canary applied by GitOps, are left alone).
    pub async fn deploy(
        &self,
        namespace: &str,
        name: &str,
        d: &Deploy,
    ) -> Result<FeedView, kube::Error> {
        let mut spec = json!({"source": {"inline": d.source}, "revision": d.revision});
        if let Some(lock) = &d.lock {
            spec["lock"] = lock.clone().into();
        }
        if let Some(f) = &d.function {
            spec["function"] = f.clone().into();
        }
        if let Some(c) = &d.cache {
            spec["cache"] = c.clone().into();
        }
        if !d.data_sources.is_empty() {
            spec["dataSources"] = d.data_sources.clone().into();
        }
        let body = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec});
        let f = self
            .api(namespace)
            .patch(
                name,
                &PatchParams::apply(SERVER_FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(FeedView::from_feed(&f))
    }

    /// Follow a deploy until the Feed serves `revision`, stops on a reason that is not
    /// [`UNDER_WAY`] (a failed build), is deleted, or the time limit passes; answers its
    /// state then. What it waits for, and the log of each build pod started for it (a
    /// builder pod of the feed created at or after `since`), go to `progress` as they come.
    pub async fn follow(
        &self,
        namespace: &str,
        name: &str,
        revision: &str,
        f: Follow,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Option<FeedView>, kube::Error> {
        let (since, poll) = (f.since, f.poll);
        let deadline = tokio::time::Instant::now() + f.timeout;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let builders =
            ListParams::default().labels(&format!("{LABEL_FEED}={name},{LABEL_ROLE}=builder"));
        let mut followed = HashSet::new();
        let mut waiting = None;
        loop {
            let Some(v) = self.get(namespace, name).await? else {
                return Ok(None);
            };
            if v.ready && v.live_revision.as_deref() == Some(revision) {
                return Ok(Some(v));
            }
            if v.waiting_for != waiting {
                waiting = v.waiting_for.clone();
                if let Some(w) = &waiting {
                    progress(Progress::Waiting(w.clone()));
                }
            }
            if waiting.as_deref().is_some_and(|w| !UNDER_WAY.contains(&w)) {
                return Ok(Some(v));
            }
            // A build pod of this deploy that has started: its log, to the end.
            let started = pods.list(&builders).await?.items.into_iter().find(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .is_some_and(|t| t.0.as_second() >= since.timestamp())
                    && !matches!(phase, None | Some("Pending"))
                    && !followed.contains(&p.name_any())
            });
            if let Some(pod) = started {
                followed.insert(pod.name_any());
                let lp = LogParams {
                    follow: true,
                    ..LogParams::default()
                };
                let mut lines = Box::pin(pods.log_stream(&pod.name_any(), &lp).await?.lines());
                while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next()).await {
                    match line {
                        Ok(l) => progress(Progress::BuildLog(l)),
                        Err(_) => break, // the log ended badly: the Feed's status says how the build went
                    }
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Some(v));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Record a call on a scale-to-zero feed's Deployment (`namespace/name`, see
    /// [`FeedView::wake`]): the annotation the operator's idle timer counts from.
    pub async fn touch(&self, wake: &str) -> Result<(), kube::Error> {
        let (ns, name) = wake.split_once('/').unwrap_or(("default", wake));
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {LAST_CALL: now}}})),
            )
            .await?;
        Ok(())
    }

    /// Start a scaled-to-zero feed's pods: one replica when it has none (one it has, an
    /// autoscaler's choice, is left alone).
    pub async fn wake(&self, wake: &str) -> Result<(), kube::Error> {
        let (ns, name) = wake.split_once('/').unwrap_or(("default", wake));
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let scale = api.get_scale(name).await?;
        if scale.spec.and_then(|s| s.replicas).unwrap_or(0) == 0 {
            api.patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<FeedView>, kube::Error> {
        Ok(self
            .api(namespace)
            .get_opt(name)
            .await?
            .as_ref()
            .map(FeedView::from_feed))
    }

    /// Every feed of the workspace, however it was created.
    pub async fn list(&self, namespace: &str) -> Result<Vec<FeedView>, kube::Error> {
        let mut out: Vec<FeedView> = self
            .api(namespace)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(FeedView::from_feed)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn delete(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        match self
            .api(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
