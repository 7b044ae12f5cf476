//! runtime = kubernetes: the control API's [`Cluster`] over `sluice_kube::control::KubeFeeds`.
//! A workspace is the namespace `sluice-<workspace>` (the operator's default for a Workspace
//! without `spec.namespace`); a feed is the Feed object named after it (`_` becomes `-`),
//! whose function is the feed's name.

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_core::{Code, Error, Result};
use sluice_gateway::cluster::{Cluster, ClusterFeed};
use sluice_kube::control::{Deploy, FeedView, KubeFeeds, object_name};
use sluice_store::Revision;

pub struct KubeCluster {
    pub feeds: KubeFeeds,
}

pub fn namespace_of(ws: &str) -> String {
    format!("sluice-{ws}")
}

fn view(v: FeedView) -> ClusterFeed {
    ClusterFeed {
        // The API names feeds by function, as in local mode.
        name: v.function,
        live_revision: v.live_revision,
        ready: v.ready,
        waiting_for: v.waiting_for,
        agent_url: v.agent_url,
        managed_by_server: v.managed_by_server,
    }
}

fn unavailable(what: &str, e: kube::Error) -> Error {
    Error::new(
        Code::RuntimeUnavailable,
        format!("the Kubernetes API refused to {what} ({e}): check the server's RBAC and `kubectl get feeds -A`"),
    )
    .retry_after(5)
}

impl Cluster for KubeCluster {
    fn deploy<'a>(&'a self, ws: &'a str, rev: &'a Revision) -> BoxFuture<'a, Result<ClusterFeed>> {
        async move {
            let d = Deploy {
                source: rev.source.clone(),
                lock: (!rev.lock.is_empty()).then(|| rev.lock.clone()),
                function: Some(rev.feed.clone()),
                revision: rev.number.to_string(),
                cache: rev.signature.cache.clone(),
                ..Default::default()
            };
            let v = self
                .feeds
                .deploy(&namespace_of(ws), &object_name(&rev.feed), &d)
                .await
                .map_err(|e| unavailable("write the Feed", e))?;
            Ok(view(v))
        }
        .boxed()
    }

    fn list<'a>(&'a self, ws: &'a str) -> BoxFuture<'a, Result<Vec<ClusterFeed>>> {
        async move {
            let v = self
                .feeds
                .list(&namespace_of(ws))
                .await
                .map_err(|e| unavailable("list Feeds", e))?;
            Ok(v.into_iter().map(view).collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    //! A scenario mock of the API server (as in sluice-kube's reconcile tests): every
    //! request is asserted (method, path, field manager, body) and answered as the API
    //! server would.
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    const FEEDS: &str = "/apis/sluice.dev/v1alpha1/namespaces/sluice-team/feeds";

    fn revision() -> Revision {
        Revision {
            id: 11,
            workspace: "team".into(),
            feed: "sales_by_region".into(),
            number: 4,
            filename: "sales.py".into(),
            source: "import sluice\n".into(),
            lock: "pandas==2.2.3\n".into(),
            env_hash: "abc".into(),
            signature: serde_json::from_value(json!({"name": "sales_by_region", "cache": "5m"}))
                .unwrap(),
            created_at: chrono::Utc::now(),
            created_by: "ann".into(),
        }
    }

    fn feed(name: &str, spec: Value, status: Value, manager: &str) -> Value {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
            "metadata": {"name": name, "namespace": "sluice-team", "generation": 2,
                "managedFields": [{"manager": manager, "operation": "Apply"}]},
            "spec": spec, "status": status})
    }

    #[tokio::test]
    async fn deploy_writes_the_feed_as_sluice_server_and_list_shows_gitops_feeds() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster {
            feeds: KubeFeeds::new(kube::Client::new(service, "default")),
        };
        let api = tokio::spawn(async move {
            let mut seen = Vec::new();
            // 1. The deploy: a server-side apply; answered as applied, not yet reconciled.
            let (req, send) = handle.next_request().await.expect("the apply");
            let (parts, body) = req.into_parts();
            let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
            seen.push((
                parts.method.to_string(),
                parts.uri.to_string(),
                parts.headers.get("content-type").cloned(),
                body.clone(),
            ));
            let mut applied = body.clone();
            applied["metadata"]["generation"] = 2.into();
            applied["metadata"]["managedFields"] =
                json!([{"manager": "sluice-server", "operation": "Apply"}]);
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&applied).unwrap(),
            )));
            // 2. The list: the server's feed, now Ready, and one applied by GitOps.
            let (req, send) = handle.next_request().await.expect("the list");
            seen.push((
                req.method().to_string(),
                req.uri().path().to_string(),
                None,
                Value::Null,
            ));
            let ready = json!({"observedGeneration": 2, "revision": "4",
                "conditions": [{"type": "Built", "status": "True", "reason": "ImageReady", "message": ""},
                               {"type": "Ready", "status": "True", "reason": "Available", "message": ""}]});
            let mut ours = applied.clone();
            ours["status"] = ready.clone();
            let gitops = feed(
                "nightly",
                json!({"source": {"inline": "x"}, "function": "nightly_totals", "revision": "9"}),
                json!({"observedGeneration": 1, "conditions": [{"type": "Built", "status": "False", "reason": "Building", "message": ""}]}),
                "argocd-controller",
            );
            let list = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "FeedList", "metadata": {}, "items": [ours, gitops]});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&list).unwrap(),
            )));
            seen
        });

        let deployed = cluster.deploy("team", &revision()).await.unwrap();
        assert_eq!(deployed.name, "sales_by_region");
        assert!(!deployed.ready && deployed.agent_url.is_none());
        assert_eq!(deployed.waiting_for.as_deref(), Some("Reconciling"));
        let listed = cluster.list("team").await.unwrap();
        let seen = api.await.unwrap();

        let (method, uri, content_type, body) = &seen[0];
        assert_eq!(method, "PATCH");
        assert!(
            uri.starts_with(&format!("{FEEDS}/sales-by-region?")),
            "{uri}"
        );
        assert!(
            uri.contains("fieldManager=sluice-server") && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(
            content_type.as_ref().unwrap(),
            "application/apply-patch+yaml"
        );
        assert_eq!(
            body["metadata"],
            json!({"name": "sales-by-region", "namespace": "sluice-team"})
        );
        assert_eq!(
            body["spec"],
            json!({"source": {"inline": "import sluice\n"}, "lock": "pandas==2.2.3\n",
                "function": "sales_by_region", "revision": "4", "cache": "5m"})
        );
        assert_eq!((seen[1].0.as_str(), seen[1].1.as_str()), ("GET", FEEDS));

        assert_eq!(listed.len(), 2, "sorted by object name");
        let ours = &listed[1];
        assert_eq!(ours.name, "sales_by_region");
        assert!(ours.ready && ours.managed_by_server);
        assert_eq!(ours.live_revision.as_deref(), Some("4"));
        assert_eq!(
            ours.agent_url.as_deref(),
            Some("http://sales-by-region.sluice-team.svc")
        );
        let g = &listed[0];
        assert_eq!(g.name, "nightly_totals", "named by its function");
        assert!(!g.ready && !g.managed_by_server && g.agent_url.is_none());
        assert_eq!(g.waiting_for.as_deref(), Some("Building"));
    }
}
