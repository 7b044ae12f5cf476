//! The cluster side of runtime = kubernetes, as the control API needs it: write a feed's
//! new revision where the operator picks it up, and say how far it got. Implemented over
//! `sluice_kube::control::KubeFeeds` by the `sluice` binary; a trait here so the gateway and
//! control crates stay free of the Kubernetes client.

use futures::future::BoxFuture;
use sluice_core::Result;
use sluice_store::Revision;

/// A feed as the cluster reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFeed {
    pub name: String,
    /// The revision being served.
    pub live_revision: Option<String>,
    pub ready: bool,
    /// What it waits for when not ready (a condition's reason).
    pub waiting_for: Option<String>,
    /// Where its agent answers inside the cluster, once ready.
    pub agent_url: Option<String>,
    /// Written through the API (false: applied by GitOps).
    pub managed_by_server: bool,
}

pub trait Cluster: Send + Sync {
    /// Make `rev` the feed's live revision in the cluster.
    fn deploy<'a>(&'a self, ws: &'a str, rev: &'a Revision) -> BoxFuture<'a, Result<ClusterFeed>>;
    /// Every feed of the workspace in the cluster, however it was created.
    fn list<'a>(&'a self, ws: &'a str) -> BoxFuture<'a, Result<Vec<ClusterFeed>>>;
}
