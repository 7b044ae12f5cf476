//! runtime = kubernetes: the control API's [`Cluster`] over `sluice_kube::control::KubeFeeds`,
//! and the watch that keeps the gateway's agent routes current ([`spawn_watch`]).
//! A workspace's namespace is its Workspace object's (`sluice-<workspace>` without one, see
//! `KubeFeeds::namespace`); a feed is the Feed object named after it (`_` becomes `-`),
//! whose function is the feed's name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_core::{Code, Error, Result};
use sluice_gateway::Gateway;
use sluice_gateway::cluster::{AgentRoute, CanaryRoute, Cluster, ClusterFeed, Rollout, Route};
use sluice_kube::control::{Deploy, FeedView, Follow, KubeFeeds, Progress, object_name};
use sluice_kube::index::FeedIndex;
use sluice_store::Revision;

pub struct KubeCluster {
    pub feeds: KubeFeeds,
    /// How long a watched deploy follows its build and rollout.
    pub follow_timeout: std::time::Duration,
    /// How often it looks at the Feed meanwhile.
    pub follow_poll: std::time::Duration,
}

impl KubeCluster {
    pub fn new(feeds: KubeFeeds) -> KubeCluster {
        KubeCluster {
            feeds,
            // A dependency layer built from scratch takes minutes; a code-only one seconds.
            follow_timeout: std::time::Duration::from_secs(600),
            follow_poll: std::time::Duration::from_secs(1),
        }
    }

    async fn namespace(&self, ws: &str) -> Result<String> {
        self.feeds
            .namespace(ws)
            .await
            .map_err(|e| unavailable("read the Workspace", e))
    }
}

/// Where calls go, from what the watch knows: every Ready feed's agent and canary, each
/// with the revision it serves; every other feed with what it waits for, so its calls are
/// told (`feed_not_ready`) rather than that it does not exist.
pub fn routes_of(idx: &FeedIndex) -> HashMap<String, HashMap<String, Route>> {
    let mut out: HashMap<String, HashMap<String, Route>> = HashMap::new();
    for r in idx.routes().into_values() {
        let v = r.view;
        let route = match (v.agent_url, v.live_revision) {
            (Some(url), Some(revision)) => Route::Ready(AgentRoute {
                wake: v.wake,
                url,
                revision,
                canary: v.canary.map(|c| CanaryRoute {
                    url: c.agent_url,
                    revision: c.revision,
                    weight: c.weight,
                }),
            }),
            _ => Route::Waiting(v.waiting_for.unwrap_or_else(|| "Reconciling".into())),
        };
        out.entry(r.workspace).or_default().insert(r.feed, route);
    }
    out
}

/// Watch the cluster's Feeds and Workspaces for as long as the server runs, so a feed that
/// becomes Ready (after its build, or applied by GitOps) is called without a deploy through
/// this server, and one deleted or no longer ready is not.
pub fn spawn_watch(feeds: KubeFeeds, gw: Gateway) -> tokio::task::JoinHandle<()> {
    let client = feeds.client().clone();
    let index = Arc::new(RwLock::new(FeedIndex::default()));
    tokio::spawn(sluice_kube::index::watch(client, index, move |idx| {
        for (ws, ns) in idx.namespaces() {
            feeds.remember_namespace(ws, ns);
        }
        gw.replace_agent_routes(routes_of(idx));
    }))
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
        cache: v.cache,
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
            let ns = self.namespace(ws).await?;
            let v = self
                .feeds
                .deploy(&ns, &object_name(&rev.feed), &d)
                .await
                .map_err(|e| unavailable("write the Feed", e))?;
            Ok(view(v))
        }
        .boxed()
    }

    fn list<'a>(&'a self, ws: &'a str) -> BoxFuture<'a, Result<Vec<ClusterFeed>>> {
        async move {
            let ns = self.namespace(ws).await?;
            let v = self
                .feeds
                .list(&ns)
                .await
                .map_err(|e| unavailable("list Feeds", e))?;
            Ok(v.into_iter().map(view).collect())
        }
        .boxed()
    }

    fn follow<'a>(
        &'a self,
        ws: &'a str,
        rev: &'a Revision,
        since: chrono::DateTime<chrono::Utc>,
        progress: &'a (dyn Fn(Rollout) + Send + Sync),
    ) -> BoxFuture<'a, Result<ClusterFeed>> {
        async move {
            let ns = self.namespace(ws).await?;
            let name = object_name(&rev.feed);
            let report = |p: Progress| {
                progress(match p {
                    Progress::Waiting(w) => Rollout::Waiting(w),
                    Progress::BuildLog(l) => Rollout::BuildLog(l),
                })
            };
            let v = self
                .feeds
                .follow(
                    &ns,
                    &name,
                    &rev.number.to_string(),
                    Follow {
                        since,
                        timeout: self.follow_timeout,
                        poll: self.follow_poll,
                    },
                    &report,
                )
                .await
                .map_err(|e| unavailable("follow the Feed's rollout", e))?;
            v.map(view).ok_or_else(|| {
                Error::new(
                    Code::FeedNotFound,
                    format!("the Feed {ns}/{name} was deleted while it rolled out"),
                )
            })
        }
        .boxed()
    }

    fn delete<'a>(&'a self, ws: &'a str, feed: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            let ns = self.namespace(ws).await?;
            self.feeds
                .delete(&ns, &object_name(feed))
                .await
                .map_err(|e| unavailable("delete the Feed", e))
        }
        .boxed()
    }

    fn touch<'a>(&'a self, wake: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            self.feeds
                .touch(wake)
                .await
                .map_err(|e| unavailable("record a call on the feed's Deployment", e))
        }
        .boxed()
    }

    fn wake<'a>(&'a self, wake: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            self.feeds
                .wake(wake)
                .await
                .map_err(|e| unavailable("scale the feed's Deployment up from zero", e))
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

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    async fn no_workspace(handle: &mut Handle) {
        let (req, send) = handle.next_request().await.expect("the Workspace read");
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            ("GET", "/apis/sluice.dev/v1alpha1/workspaces/team")
        );
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(
                    serde_json::to_vec(
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                    )
                    .unwrap(),
                ))
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn deploy_writes_the_feed_as_sluice_server_and_list_shows_gitops_feeds() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(KubeFeeds::new(kube::Client::new(service, "default")));
        let api = tokio::spawn(async move {
            let mut seen = Vec::new();
            // 0. Which namespace: no Workspace object, so `sluice-team`.
            no_workspace(&mut handle).await;
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
            // 2. The list: the server's feed, now Ready, and one applied by GitOps. (No
            // Workspace object was found: asked again, it may have been created since.)
            no_workspace(&mut handle).await;
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

    /// One request the control API must make: asserted, then answered.
    async fn expect(
        handle: &mut Handle,
        method: &str,
        path: &str,
        reply: Value,
    ) -> (String, Value) {
        let (req, send) = handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("{method} {path} was never made"));
        let (parts, body) = req.into_parts();
        assert_eq!(
            (parts.method.as_str(), parts.uri.path()),
            (method, path),
            "{}",
            parts.uri
        );
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let reply = if reply.is_null() { body.clone() } else { reply };
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&reply).unwrap(),
        )));
        (parts.uri.query().unwrap_or("").to_string(), body)
    }

    /// The control API over HTTP with runtime = kubernetes, against the scenario mock: the
    /// workspace's namespace comes from its Workspace object (read once), GitOps Feeds
    /// appear in the feed list and detail, rollback writes the Feed's revision, delete
    /// deletes the Feed.
    /// A real `sluice agent` on loopback serving `dir/feed.py` as `feed` at `revision`; its URL.
    async fn serve_agent(dir: &std::path::Path, feed: &str, revision: &str) -> String {
        let agent = sluice_agent::Agent::start(&sluice_agent::AgentArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            module: dir.join("feed.py"),
            feed: feed.into(),
            revision: revision.into(),
            sources_dir: dir.join("sources"),
            data_dir: dir.join("data"),
            python: "python3".into(),
            workers: 1,
            call_timeout_secs: 30,
            drain_secs: 5,
            cpu_scheduling: sluice_runtime::sched::CpuScheduling::Normal,
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(sluice_agent::serve(
            listener,
            agent,
            futures::future::pending(),
            std::time::Duration::from_secs(1),
        ));
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_api_reads_and_writes_the_clusters_feeds() {
        const ANALYTICS: &str = "/apis/sluice.dev/v1alpha1/namespaces/analytics/feeds";
        let dir = tempfile::tempdir().unwrap();
        let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
            .await
            .unwrap();
        store.create_workspace("team").await.unwrap();
        for code in ["v = 1\n", "v = 2\n"] {
            store
                .deploy(
                    "team",
                    vec![sluice_store::NewRevision {
                        feed: "sales_by_region".into(),
                        filename: "sales.py".into(),
                        source: code.into(),
                        lock: String::new(),
                        env_hash: "abc".into(),
                        signature: serde_json::from_value(json!({"name": "sales_by_region"}))
                            .unwrap(),
                        created_by: "ann".into(),
                    }],
                )
                .await
                .unwrap();
        }
        let key = sluice_core::keys::generate();
        store
            .create_key(sluice_store::NewKey {
                name: "admin".into(),
                prefix: key.prefix.clone(),
                hash: key.hash.clone(),
                role: sluice_core::Role::Admin,
                workspace: None,
            })
            .await
            .unwrap();
        let runtime = sluice_runtime::Runtime::start(sluice_runtime::RuntimeConfig {
            data_dir: dir.path().to_path_buf(),
            pool_min: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(KubeFeeds::new(kube::Client::new(service, "default")));
        let gw = Gateway::with_agents(
            store,
            runtime,
            sluice_sources::Sources::new(),
            Default::default(),
            sluice_gateway::AgentClient::new(std::time::Duration::from_secs(5)).unwrap(),
            Some(std::sync::Arc::new(cluster)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "http://{}/api/v1/workspaces/team",
            listener.local_addr().unwrap()
        );
        let connect = sluice_control::ConnectInfo::new(&base, "127.0.0.1:5433".parse().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, sluice_control::router(gw, connect))
                .await
                .unwrap()
        });

        let api = tokio::spawn(async move {
            let mut writes = Vec::new();
            // The list: the Workspace names its namespace; then that namespace's Feeds.
            expect(
                &mut handle,
                "GET",
                "/apis/sluice.dev/v1alpha1/workspaces/team",
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
                       "metadata": {"name": "team"}, "spec": {"namespace": "analytics"}}),
            )
            .await;
            let ready = json!({"observedGeneration": 2, "revision": "2", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "message": ""}]});
            let mut ours = feed(
                "sales-by-region",
                json!({"source": {"inline": "v = 2\n"}, "function": "sales_by_region", "revision": "2"}),
                ready,
                "sluice-server",
            );
            ours["metadata"]["namespace"] = "analytics".into();
            let mut gitops = feed(
                "nightly",
                json!({"source": {"inline": "x"}, "function": "nightly_totals", "revision": "9", "cache": "1h"}),
                json!({"observedGeneration": 2, "revision": "9", "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Available", "message": ""}]}),
                "argocd-controller",
            );
            gitops["metadata"]["namespace"] = "analytics".into();
            let list = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "FeedList", "metadata": {},
                              "items": [ours, gitops]});
            expect(&mut handle, "GET", ANALYTICS, list.clone()).await;
            // The detail of the GitOps feed: the namespace is remembered, no Workspace read.
            expect(&mut handle, "GET", ANALYTICS, list).await;
            // Rollback to revision 1: the Feed's spec gets revision 1's code and number.
            writes.push(
                expect(
                    &mut handle,
                    "PATCH",
                    &format!("{ANALYTICS}/sales-by-region"),
                    Value::Null,
                )
                .await,
            );
            // Delete: the Feed object.
            writes.push(expect(&mut handle, "DELETE", &format!("{ANALYTICS}/sales-by-region"),
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})).await);
            writes
        });

        let http = reqwest::Client::new();
        let auth = format!("Bearer {}", key.secret);
        let get = |path: String| {
            http.get(format!("{base}{path}"))
                .header("authorization", &auth)
                .send()
        };

        let resp = get("/feeds".into()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let feeds: Value = resp.json().await.unwrap();
        let feeds = feeds.as_array().unwrap();
        assert_eq!(feeds.len(), 2, "{feeds:?}");
        assert_eq!(feeds[0]["name"], "sales_by_region");
        assert_eq!(feeds[0]["managed_by"], "sluice");
        assert_eq!(feeds[0]["live_revision"], 2);
        assert_eq!(
            feeds[0]["cluster"],
            json!({"ready": true, "live_revision": "2", "waiting_for": null})
        );
        assert_eq!(feeds[1]["name"], "nightly_totals");
        assert_eq!(feeds[1]["managed_by"], "gitops");
        assert_eq!(feeds[1]["live_revision"], 9);
        assert_eq!(feeds[1]["cache"], "1h");
        assert_eq!(
            feeds[1]["url"], "http://127.0.0.1:8080/feeds/team/nightly_totals",
            "served by the gateway like any feed: {}",
            feeds[1]
        );

        let one: Value = get("/feeds/nightly_totals".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["managed_by"], "gitops");
        assert_eq!(one["cluster"]["ready"], true);

        let resp = http
            .post(format!("{base}/feeds/sales_by_region/rollback"))
            .header("authorization", &auth)
            .json(&json!({"revision": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let rolled: Value = resp.json().await.unwrap();
        assert_eq!(rolled["live_revision"], 1);
        assert_eq!(rolled["cluster"]["ready"], false, "{rolled}");

        let resp = http
            .delete(format!("{base}/feeds/sales_by_region"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);

        let writes = tokio::time::timeout(std::time::Duration::from_secs(10), api)
            .await
            .expect("the API calls the scenario expects")
            .unwrap();
        let (query, body) = &writes[0];
        assert!(
            query.contains("fieldManager=sluice-server") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(
            body["metadata"],
            json!({"name": "sales-by-region", "namespace": "analytics"})
        );
        assert_eq!(
            body["spec"],
            json!({"source": {"inline": "v = 1\n"}, "function": "sales_by_region", "revision": "1"})
        );
        // The operator's finalizer decides how the pods go: no policy of our own.
        assert!(
            writes[1].1.get("propagationPolicy").is_none(),
            "{:?}",
            writes[1]
        );
    }

    /// `sluice run` and the IDE's preview (`POST .../run`) with runtime = kubernetes run the
    /// draft they send, in the server's own runtime against the workspace's data sources
    /// (the store's, as in local mode), never the revision the feed's agent serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_executes_the_draft_in_the_server_not_the_deployed_feeds_agent() {
        let dir = tempfile::tempdir().unwrap();
        let wh = dir.path().join("warehouse.db");
        let made = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3; c = sqlite3.connect({:?}); c.execute('create table sales(region text, amount real)'); c.executemany('insert into sales values (?, ?)', [('EU', 1.5), ('US', 9.0), ('EU', 2.5)]); c.commit()",
                wh.to_str().unwrap()
            ))
            .status()
            .unwrap();
        assert!(made.success());

        // The deployed revision, served by a real agent: different code, different rows.
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(
            agent_dir.join("feed.py"),
            "import sluice\n\n@sluice.feed\ndef sales(region: str = 'US'):\n    return [{'who': 'deployed'}]\n",
        )
        .unwrap();
        let agent_url = serve_agent(&agent_dir, "sales", "1").await;

        let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
            .await
            .unwrap();
        store.create_workspace("team").await.unwrap();
        store
            .upsert_source("warehouse", "sqlite", &json!({"path": wh}))
            .await
            .unwrap();
        store.grant_source("warehouse", "team").await.unwrap();
        let key = sluice_core::keys::generate();
        store
            .create_key(sluice_store::NewKey {
                name: "ann".into(),
                prefix: key.prefix.clone(),
                hash: key.hash.clone(),
                role: sluice_core::Role::Editor,
                workspace: Some("team".into()),
            })
            .await
            .unwrap();
        let runtime = sluice_runtime::Runtime::start(sluice_runtime::RuntimeConfig {
            data_dir: dir.path().join("server"),
            pool_min: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let gw = Gateway::with_agents(
            store,
            runtime,
            sluice_sources::Sources::new(),
            Default::default(),
            sluice_gateway::AgentClient::new(std::time::Duration::from_secs(30)).unwrap(),
            None,
        );
        gw.set_agent_route("team", "sales", Some(AgentRoute::live(&agent_url, "1")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connect = sluice_control::ConnectInfo::new(&base, "127.0.0.1:5433".parse().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, sluice_control::router(gw, connect))
                .await
                .unwrap()
        });

        let run = |source: &str, params: Value| {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/workspaces/team/run"))
                .header("authorization", format!("Bearer {}", key.secret))
                .json(&json!({"source": source, "filename": "sales.py", "params": params}))
                .send()
        };
        // A draft whose rows come from the workspace's data source (run natively here).
        let draft = "import sluice\n\n@sluice.feed\ndef sales(region: str = 'US'):\n    print('draft ran')\n    return sluice.sql('warehouse', 'select region, amount from sales where region = :region order by amount', region=region)\n";
        let r = run(draft, json!({"region": "EU"})).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["columns"], json!(["region", "amount"]), "{body}");
        assert_eq!(body["rows"], json!([["EU", 1.5], ["EU", 2.5]]), "{body}");
        assert_eq!(body["stdout"], "draft ran\n");
        // A draft whose Python reads the source itself: the store's credentials reach the
        // server's worker (`sluice.connect`), as in local mode.
        let draft = "import sluice\n\n@sluice.feed\ndef sales():\n    c = sluice.connect('warehouse')\n    n = c.cursor().execute('select count(*) from sales').fetchone()[0]\n    return [{'who': 'draft', 'n': n}]\n";
        let r = run(draft, json!({})).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["rows"], json!([["draft", 3]]), "{body}");
    }

    /// A GitOps feed (only the cluster has it) is an OData entity set and a PostgreSQL-wire
    /// table like any other once Ready, described by the signature its agent serves and
    /// called through it; a cluster feed not Ready yet is neither.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gitops_feeds_are_odata_entity_sets_and_pg_wire_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feed.py"),
            "import sluice\n\n@sluice.feed\ndef nightly(region: str = 'EU', n: int = 2):\n    return [{'region': region, 'i': i} for i in range(n)]\n",
        )
        .unwrap();
        let agent_url = serve_agent(dir.path(), "nightly", "3f2a9c1e7b44").await;

        let store = sluice_store::Store::open("sqlite::memory:", [7; 32])
            .await
            .unwrap();
        store.create_workspace("team").await.unwrap();
        let key = sluice_core::keys::generate();
        store
            .create_key(sluice_store::NewKey {
                name: "bi".into(),
                prefix: key.prefix.clone(),
                hash: key.hash.clone(),
                // An editor: reading a feed's log needs one.
                role: sluice_core::Role::Editor,
                workspace: Some("team".into()),
            })
            .await
            .unwrap();
        let runtime = sluice_runtime::Runtime::start(sluice_runtime::RuntimeConfig {
            data_dir: dir.path().join("server"),
            pool_min: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        // The Kubernetes API, for the feed API's list (a scenario mock; the agent is real).
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = KubeCluster::new(KubeFeeds::new(kube::Client::new(service, "default")));
        let gw = Gateway::with_agents(
            store,
            runtime,
            sluice_sources::Sources::new(),
            Default::default(),
            sluice_gateway::AgentClient::new(std::time::Duration::from_secs(30)).unwrap(),
            Some(std::sync::Arc::new(cluster)),
        );
        gw.set_ready(true);
        // What the watch reports: `nightly` Ready (applied by GitOps), `fresh` still building.
        gw.replace_agent_routes(HashMap::from([(
            "team".to_string(),
            HashMap::from([
                (
                    "nightly".to_string(),
                    Route::Ready(AgentRoute::live(&agent_url, "3f2a9c1e7b44")),
                ),
                ("fresh".to_string(), Route::Waiting("Building".into())),
            ]),
        )]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pg = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pg_port = pg.local_addr().unwrap().port();
        let connect = sluice_control::ConnectInfo::new(&base, pg.local_addr().unwrap());
        tokio::spawn(sluice_pgwire::serve(
            gw.clone(),
            pg,
            None,
            futures::future::pending(),
        ));
        let app = crate::server::app(gw.clone(), connect, Default::default());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let http = reqwest::Client::new();
        let get = |path: &str| {
            http.get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {}", key.secret))
                .send()
        };
        let doc: Value = get("/odata/team/").await.unwrap().json().await.unwrap();
        assert_eq!(
            doc["value"],
            json!([{"name": "nightly", "kind": "EntitySet", "url": "nightly"}]),
            "the Ready GitOps feed, not the one still building: {doc}"
        );
        let r = get("/odata/team/$metadata").await.unwrap();
        assert_eq!(r.status(), 200);
        let xml = r.text().await.unwrap();
        assert!(xml.contains(r#"EntitySet Name="nightly""#), "{xml}");
        assert!(
            xml.contains(r#"Property Name="region""#) && xml.contains(r#"Property Name="i""#),
            "{xml}"
        );
        let r = get("/odata/team/nightly?region=US&n=3&$filter=i%20gt%200")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rows: Value = r.json().await.unwrap();
        assert_eq!(
            rows["value"],
            json!([{"_row": 2, "region": "US", "i": 1}, {"_row": 3, "region": "US", "i": 2}]),
            "rows of the agent's call (a feed without a key gets `_row`): {rows}"
        );
        // Its parameters are checked against the signature its agent serves.
        let r = get("/odata/team/nightly?n=many").await.unwrap();
        assert_eq!(r.status(), 400);
        let r = get("/odata/team/fresh").await.unwrap();
        assert_eq!(r.status(), 503, "not Ready yet: feed_not_ready");

        let secret = key.secret.clone();
        let psql = move |sql: &'static str| {
            let secret = secret.clone();
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new("psql")
                    .args(["-h", "127.0.0.1", "-p", &pg_port.to_string(), "-U", "x"])
                    .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, "team"])
                    .env("PGPASSWORD", secret)
                    .env("PGSSLMODE", "disable")
                    .env("PGCONNECT_TIMEOUT", "20")
                    .output()
                    .expect("psql runs (Debian postgresql-client)");
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let (ok, out, err) = psql(
            "select table_name from information_schema.tables where table_schema = 'public' order by 1",
        )
        .await
        .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "nightly", "{out}");
        let (ok, out, err) = psql("select region, i from nightly where region = 'US' order by i")
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "US|0\nUS|1", "{out}");

        // A canary that cannot be reached (crashed, or still rolling out) takes all the
        // calls: BI tools are answered by the live revision, over OData and the PostgreSQL
        // wire alike, as on `/feeds`.
        gw.set_agent_route(
            "team",
            "nightly",
            Some(AgentRoute {
                canary: Some(CanaryRoute {
                    url: "http://127.0.0.1:9".into(),
                    revision: "9d0e1f2a3b4c".into(),
                    weight: 100,
                }),
                ..AgentRoute::live(&agent_url, "3f2a9c1e7b44")
            }),
        );
        let r = get("/odata/team/nightly?region=NA&n=2").await.unwrap();
        assert_eq!(r.status(), 200, "the live agent answers the canary's share");
        let rows: Value = r.json().await.unwrap();
        assert_eq!(
            rows["value"],
            json!([{"_row": 1, "region": "NA", "i": 0}, {"_row": 2, "region": "NA", "i": 1}]),
            "{rows}"
        );
        let (ok, out, err) = psql("select region, i from nightly where region = 'NA' order by i")
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "NA|0\nNA|1", "{out}");
        gw.set_agent_route(
            "team",
            "nightly",
            Some(AgentRoute::live(&agent_url, "3f2a9c1e7b44")),
        );

        // The feed API shows its parameters and documentation from the same signature.
        let api = tokio::spawn(async move {
            no_workspace(&mut handle).await;
            let nightly = feed(
                "nightly",
                json!({"source": {"inline": "x"}, "function": "nightly"}),
                json!({"observedGeneration": 2, "revision": "3f2a9c1e7b44", "service": "nightly-r3f2a9c1e7b44",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": ""}]}),
                "argocd-controller",
            );
            expect(
                &mut handle,
                "GET",
                "/apis/sluice.dev/v1alpha1/namespaces/sluice-team/feeds",
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "FeedList", "metadata": {}, "items": [nightly]}),
            )
            .await;
        });
        let r = get("/api/v1/workspaces/team/feeds").await.unwrap();
        assert_eq!(r.status(), 200);
        let feeds: Value = r.json().await.unwrap();
        api.await.unwrap();
        let nightly = &feeds[0];
        assert_eq!(nightly["managed_by"], "gitops", "{feeds}");
        let params: Vec<(&str, &str)> = nightly["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["type"].as_str().unwrap()))
            .collect();
        assert_eq!(params, [("region", "str"), ("n", "int")], "{nightly}");

        // Its calls above (OData and the PostgreSQL wire) are in its log, under the
        // cluster's name of the revision, as `sluice logs` shows them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let logs = loop {
            let r = get("/api/v1/workspaces/team/feeds/nightly/logs")
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let logs: Value = r.json().await.unwrap();
            if logs.as_array().is_some_and(|l| l.len() >= 2) || std::time::Instant::now() > deadline
            {
                break logs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let logs = logs.as_array().unwrap();
        assert!(logs.len() >= 2, "{logs:?}");
        assert!(
            logs.iter()
                .all(|l| l["revision_name"] == "3f2a9c1e7b44" && l["feed"] == "nightly"),
            "{logs:?}"
        );
        // A feed of the cluster not called yet (`fresh`, still building) has an empty log,
        // not a 404.
        let r = get("/api/v1/workspaces/team/feeds/fresh/logs")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
        // Counted like any feed (the Observe panel), and no calls yet is zeros, not a 404.
        let m: Value = get("/api/v1/workspaces/team/feeds/nightly/metrics")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(m["total"]["requests"].as_i64().unwrap() >= 2, "{m}");
        let r = get("/api/v1/workspaces/team/feeds/fresh/metrics")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["total"]["requests"], 0, "{m}");
    }

    #[test]
    fn routes_are_the_ready_feeds_with_their_revisions_and_canaries() {
        let mut idx = FeedIndex::default();
        let mut f = feed(
            "sales-by-region",
            json!({"source": {"inline": "x"}, "function": "sales_by_region",
                   "canary": {"revision": "5", "image": "r/s:5", "weight": 20}}),
            json!({"observedGeneration": 2, "revision": "4", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "message": ""}]}),
            "sluice-server",
        );
        idx.apply_feed(&serde_json::from_value(f.clone()).unwrap());
        f["metadata"]["name"] = "building".into();
        f["spec"]["function"] = "building".into();
        f["status"]["conditions"][0]["status"] = "False".into();
        f["status"]["conditions"][0]["reason"] = "PodsNotReady".into();
        idx.apply_feed(&serde_json::from_value(f).unwrap());
        let routes = routes_of(&idx);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes["team"],
            HashMap::from([
                (
                    "sales_by_region".to_string(),
                    Route::Ready(AgentRoute {
                        wake: None,
                        url: "http://sales-by-region.sluice-team.svc".into(),
                        revision: "4".into(),
                        canary: Some(CanaryRoute {
                            url: "http://sales-by-region-canary.sluice-team.svc".into(),
                            revision: "5".into(),
                            weight: 20
                        }),
                    })
                ),
                (
                    "building".to_string(),
                    Route::Waiting("PodsNotReady".into())
                ),
            ]),
            "the feed not ready yet is known, with what it waits for, but not routed"
        );
    }
}
