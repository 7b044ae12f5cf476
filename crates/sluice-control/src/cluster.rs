//! runtime = kubernetes: the cluster's side of the feed API. Feeds deployed through this
//! server (the store has their revisions) carry their `cluster` state; Feeds applied as
//! YAML by GitOps users, which the store has never seen, are listed after them with
//! `managed_by: "gitops"`, so `sluice feeds` and the IDE show every feed of the workspace.
//! Nothing here writes: deploy, rollback and delete go through `Cluster` in their handlers.

use serde_json::{Value, json};
use sluice_core::Error;
use sluice_gateway::Gateway;
use sluice_gateway::cluster::ClusterFeed;

/// A feed's state in the cluster, as the API shows it.
pub fn state_json(c: &ClusterFeed) -> Value {
    json!({"ready": c.ready, "live_revision": c.live_revision, "waiting_for": c.waiting_for})
}

/// A Feed only the cluster knows. Its parameters and documentation are in its code, which
/// the store never loaded: they come from the signature its serving agent reports (what
/// the gateway checks calls against, kept per revision, see `Gateway::live_feed`). A feed
/// that serves no revision yet, or whose agent cannot be asked, shows none (logged).
async fn gitops_json(gw: &Gateway, ws: &str, c: &ClusterFeed) -> Value {
    let signature = if c.agent_url.is_some() {
        match gw.live_feed(ws, &c.name).await {
            Ok(lf) => Some(lf.signature.clone()),
            Err(e) => {
                tracing::warn!(workspace = %ws, feed = %c.name, "no signature from its agent: {}", e.message);
                None
            }
        }
    } else {
        None
    };
    json!({
        "name": c.name,
        "workspace": ws,
        "doc": signature.as_ref().map(|s| s.doc.clone()).unwrap_or_default(),
        "params": signature.as_ref().map(|s| json!(s.params)).unwrap_or(json!([])),
        "cache": c.cache,
        "live_revision": c.live_revision.as_deref().and_then(|r| r.parse::<i64>().ok()),
        "url": gw.feed_url(ws, &c.name),
        "created_at": null,
        "updated_at": null,
        "managed_by": "gitops",
        "cluster": state_json(c),
    })
}

/// The cluster's feeds of a workspace, or none when runtime = local. A cluster that cannot
/// be reached is an error (503 with Retry-After): a list without the GitOps feeds would
/// look complete and is not.
async fn cluster_feeds(gw: &Gateway, ws: &str) -> Result<Option<Vec<ClusterFeed>>, Error> {
    match gw.cluster() {
        Some(c) => Ok(Some(c.list(ws).await?)),
        None => Ok(None),
    }
}

/// `feeds` (the store's, as JSON) with each one's cluster state, then the cluster-only ones.
pub async fn merge_list(gw: &Gateway, ws: &str, feeds: &mut Vec<Value>) -> Result<(), Error> {
    let Some(cluster) = cluster_feeds(gw, ws).await? else {
        return Ok(());
    };
    for f in feeds.iter_mut() {
        let c = cluster
            .iter()
            .find(|c| Some(c.name.as_str()) == f["name"].as_str());
        f["managed_by"] = "sluice".into();
        f["cluster"] = c.map(state_json).unwrap_or(Value::Null);
    }
    let known: Vec<String> = feeds
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    for c in cluster.iter().filter(|c| !known.contains(&c.name)) {
        feeds.push(gitops_json(gw, ws, c).await);
    }
    Ok(())
}

/// One feed: the store's (with its cluster state) when `store_feed` is given, else the
/// cluster's GitOps feed of that name, if any.
pub async fn merge_one(
    gw: &Gateway,
    ws: &str,
    name: &str,
    store_feed: Option<Value>,
) -> Result<Option<Value>, Error> {
    let Some(cluster) = cluster_feeds(gw, ws).await? else {
        return Ok(store_feed);
    };
    let c = cluster.iter().find(|c| c.name == name);
    Ok(match (store_feed, c) {
        (Some(mut f), c) => {
            f["managed_by"] = "sluice".into();
            f["cluster"] = c.map(state_json).unwrap_or(Value::Null);
            Some(f)
        }
        (None, Some(c)) => Some(gitops_json(gw, ws, c).await),
        (None, None) => None,
    })
}
