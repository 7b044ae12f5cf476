//! What `sluice server` needs from Kubernetes when its runtime is `kubernetes`: write a Feed
//! object on deploy (server-side apply, field manager `sluice-server`, so GitOps tools and the
//! operator keep their own fields), read feeds and their status back (feeds applied as YAML by
//! GitOps users appear like any other), delete. The server maps these plain values to its API.

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::build::feed::function_of;
use crate::crd::Feed;

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
    /// Where the feed's agent answers inside the cluster (its Service, port 80), once ready:
    /// what the gateway calls.
    pub agent_url: Option<String>,
    pub image: Option<String>,
    /// Written by GitOps (another field manager owns the spec), not through the API.
    pub managed_by_server: bool,
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
        FeedView {
            agent_url: ready.then(|| {
                agent_url(
                    f.metadata.namespace.as_deref().unwrap_or("default"),
                    &f.name_any(),
                )
            }),
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

/// The in-cluster URL of a feed's agent: its Service (named after the Feed, port 80).
pub fn agent_url(namespace: &str, feed: &str) -> String {
    format!("http://{feed}.{namespace}.svc")
}

/// The Feed object's name for a feed: feed names may hold `_`, object names may not.
pub fn object_name(feed: &str) -> String {
    feed.replace('_', "-")
}

/// Feeds of one cluster, addressed by workspace namespace.
#[derive(Clone)]
pub struct KubeFeeds {
    client: Client,
}

impl KubeFeeds {
    pub fn new(client: Client) -> KubeFeeds {
        KubeFeeds { client }
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
