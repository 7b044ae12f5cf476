//! The gateway's shared state and the execution pipeline both surfaces use: the feed
//! endpoint and the control API's `run` call a feed the same way.

use crate::{
    agent::AgentClient,
    auth::KeyCache,
    cache::ResultCache,
    cluster::{AgentRoute, Cluster, Route, Target},
    limiter::Limiter,
    metrics::Metrics,
    recorder,
    tally::{self, Tallies},
};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use axum::{extract::State, http::StatusCode, response::IntoResponse};
use futures::{StreamExt, stream::BoxStream};
use sluice_core::{Code, Error, FeedSignature, Params, Result, params::params_to_json};
use sluice_runtime::{CallLogs, CallOutput, CallSpec, ModuleSpec, Runtime};
use sluice_sources::{SourceConfig, Sources};
use sluice_store::{NewInvocation, Revision, Store};
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, oneshot};

/// Chunks an offloaded body may run ahead of the client by (see [`Gateway::offload`]).
const OFFLOADED_CHUNKS: usize = 4;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL clients use to reach this server (for links in responses).
    pub public_url: String,
    /// Concurrent requests per feed, body streaming included.
    pub feed_concurrency: usize,
    /// Requests allowed to wait for a slot before 429.
    pub feed_queue: usize,
    /// Bytes of encoded results kept for feeds declared with `cache=`.
    pub cache_bytes: usize,
    /// How long another server's deploy may take to be seen here (PostgreSQL store with
    /// several replicas). Deploys through this process are seen at once.
    pub live_cache_ttl: Duration,
    /// The runtime that runs what is heavy on CPU: streamed result bodies (passthrough
    /// extracts, big Python results, OData) and PostgreSQL wire sessions. `None` runs them
    /// where the request arrived. The request path itself (HTTP, keys, worker calls of small
    /// feeds) stays on the runtime serving the listener, which can then be small: on a
    /// 2-core server one thread there is a third more hello calls per second than two,
    /// because the threads no longer wake each other for every call (see BENCHMARKS.md).
    pub compute: Option<tokio::runtime::Handle>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            public_url: "http://127.0.0.1:8080".into(),
            feed_concurrency: 16,
            feed_queue: 256,
            cache_bytes: 64 << 20,
            live_cache_ttl: Duration::from_secs(5),
            compute: None,
        }
    }
}

/// Data sources granted to one workspace, in the two forms needed: configs for native
/// passthrough, and the JSON connection map sent to workers for `sluice.connect`.
pub struct WorkspaceSources {
    pub configs: HashMap<String, SourceConfig>,
    /// Serialized once: every CALL of the workspace carries it.
    pub worker_json: Arc<str>,
}

#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// Workspace, then feed: nested so the hot path looks both up by `&str`, without building
/// an owned key per request.
type PerFeed<T> = HashMap<String, HashMap<String, T>>;

pub(crate) struct Inner {
    pub store: Store,
    pub runtime: Runtime,
    pub sources: Sources,
    pub cfg: GatewayConfig,
    pub keys: KeyCache,
    pub live: RwLock<PerFeed<(Instant, Arc<Revision>)>>,
    pub ws_sources: RwLock<HashMap<String, Arc<WorkspaceSources>>>,
    pub limiters: RwLock<PerFeed<Arc<Limiter>>>,
    pub cache: ResultCache,
    pub metrics: Metrics,
    /// Result schemas by revision scope (see `schemas.rs`, `LiveFeed::scope`).
    pub schemas: RwLock<HashMap<String, SchemaRef>>,
    pub recorder: mpsc::Sender<NewInvocation>,
    /// Every call served, counted per revision and minute (see `tally.rs`).
    pub tallies: Arc<Tallies>,
    pub ready: AtomicBool,
    /// Set when runtime = kubernetes: feeds run in their agent pods, not in `runtime`.
    pub agents: Option<Agents>,
}

/// Feed agents (runtime = kubernetes) and where each feed's agent answers, as the Feed's
/// status reports it (a watch of the cluster's Feeds keeps this current).
pub(crate) struct Agents {
    pub client: AgentClient,
    pub cluster: Option<Arc<dyn Cluster>>,
    pub routes: RwLock<PerFeed<Route>>,
    /// Signatures of the revisions agents serve, by workspace, feed and revision name (a
    /// revision's code never changes, so neither does its signature). Trimmed to the routed
    /// revisions when the watch replaces the routes.
    pub signatures: RwLock<PerFeed<HashMap<String, Signed>>>,
    /// Scale-to-zero feeds (by `AgentRoute::wake`): when this gateway last found their pods
    /// up and recorded a call on them.
    pub awake: std::sync::Mutex<HashMap<String, Instant>>,
}

/// How long a scale-to-zero feed found up is trusted to stay up without asking again, and
/// how often its calls are recorded for the operator's idle timer (which is at least a
/// minute, so pods never stop under a stream of calls). Each record is a Deployment write,
/// which the operator reconciles: twice a minute per busy feed and gateway at most.
const AWAKE_FOR: Duration = Duration::from_secs(30);
/// How long a call waits for a scaled-to-zero feed's first pod (image pull, Python start).
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// A served revision's signature, and its store id and number when the store has the
/// revision (the result cache keys by the id, shared with OData and the PostgreSQL wire;
/// the per-minute traffic counts by it; the invocation log numbers by the number).
#[derive(Clone)]
pub(crate) struct Signed {
    pub signature: Arc<FeedSignature>,
    pub revision_id: Option<i64>,
    pub number: Option<i64>,
}

/// The agent chosen for one call (runtime = kubernetes), with what the gateway needs before
/// it calls: the revision it serves and that revision's signature.
pub(crate) struct Picked {
    pub url: String,
    pub revision: String,
    pub canary: bool,
    pub signed: Signed,
}

impl Picked {
    pub fn target(&self) -> Target<'_> {
        Target {
            url: &self.url,
            revision: &self.revision,
            canary: self.canary,
        }
    }
}

/// Where the captured stdout/stderr of a call will come from.
pub enum Logs {
    Ready(CallLogs),
    Pending(oneshot::Receiver<Result<CallLogs>>),
}

impl Logs {
    pub async fn wait(self) -> Option<CallLogs> {
        match self {
            Logs::Ready(l) => Some(l),
            Logs::Pending(rx) => match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(Ok(l))) => Some(l),
                _ => None,
            },
        }
    }
}

/// A feed call in progress: the schema is known, the rows stream.
pub struct Execution {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
    pub logs: Logs,
    /// True when `sluice.sql` ran natively in Rust.
    pub passthrough: bool,
    /// The revision that served the call, as the feed's agent names it (runtime =
    /// kubernetes: a canary's, or mid-rollout the previous one's). `None` for the local
    /// runtime, which runs exactly the revision it was given.
    pub revision: Option<String>,
}

pub fn module_of(rev: &Revision) -> ModuleSpec {
    ModuleSpec {
        revision_id: rev.id,
        filename: rev.filename.clone(),
        source: rev.source.clone(),
        env_hash: rev.env_hash.clone(),
        lock: rev.lock.clone(),
    }
}

/// A stored data source as the runtime uses it: its typed connection config, and the
/// same as JSON (with its `kind`) for the worker's CALL.
pub fn source_config(s: &sluice_store::SourceRecord) -> Result<(SourceConfig, serde_json::Value)> {
    let mut json = match s.config.clone() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    json.insert("kind".into(), s.kind.clone().into());
    let json = serde_json::Value::Object(json);
    let cfg = serde_json::from_value(json.clone()).map_err(|e| {
        Error::internal(format!(
            "data source '{}' has an unreadable config ({e}): re-add it with `sluice sources add`",
            s.name
        ))
    })?;
    Ok((cfg, json))
}

impl Gateway {
    /// Build the state and start the invocation recorder.
    pub fn new(store: Store, runtime: Runtime, sources: Sources, cfg: GatewayConfig) -> Gateway {
        Gateway::build(store, runtime, sources, cfg, None)
    }

    /// A gateway for runtime = kubernetes: calls go to each feed's agent (see
    /// [`Gateway::set_agent_route`]); `runtime` still serves `sluice run` of unsaved code.
    pub fn with_agents(
        store: Store,
        runtime: Runtime,
        sources: Sources,
        cfg: GatewayConfig,
        client: AgentClient,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Gateway {
        let agents = Agents {
            client,
            cluster,
            routes: Default::default(),
            signatures: Default::default(),
            awake: Default::default(),
        };
        Gateway::build(store, runtime, sources, cfg, Some(agents))
    }

    fn build(
        store: Store,
        runtime: Runtime,
        sources: Sources,
        cfg: GatewayConfig,
        agents: Option<Agents>,
    ) -> Gateway {
        let (recorder, _task) = recorder::spawn(store.clone());
        let tallies = Arc::new(Tallies::new());
        tally::spawn(store.clone(), Arc::downgrade(&tallies));
        Gateway {
            inner: Arc::new(Inner {
                cache: ResultCache::new(cfg.cache_bytes),
                store,
                runtime,
                sources,
                cfg,
                keys: KeyCache::default(),
                live: Default::default(),
                ws_sources: Default::default(),
                limiters: Default::default(),
                metrics: Metrics::default(),
                schemas: Default::default(),
                recorder,
                tallies,
                ready: AtomicBool::new(false),
                agents,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
    pub fn sources(&self) -> &Sources {
        &self.inner.sources
    }
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.cfg
    }
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }
    pub fn feed_url(&self, ws: &str, feed: &str) -> String {
        format!(
            "{}/feeds/{ws}/{feed}",
            self.inner.cfg.public_url.trim_end_matches('/')
        )
    }

    /// The live revision of a feed, from memory when fresh.
    pub async fn live_revision(&self, ws: &str, feed: &str) -> Result<Arc<Revision>> {
        let cached = self
            .inner
            .live
            .read()
            .expect("live lock")
            .get(ws)
            .and_then(|m| m.get(feed))
            .cloned();
        if let Some((at, rev)) = cached
            && at.elapsed() < self.inner.cfg.live_cache_ttl
        {
            return Ok(rev);
        }
        let rev = self
            .inner
            .store
            .live_revision(ws, feed)
            .await?
            .ok_or_else(|| Error::not_found(Code::FeedNotFound, "feed", &format!("{ws}/{feed}")))?;
        let rev = Arc::new(rev);
        self.inner
            .live
            .write()
            .expect("live lock")
            .entry(ws.to_string())
            .or_default()
            .insert(feed.to_string(), (Instant::now(), rev.clone()));
        Ok(rev)
    }

    /// Forget what is cached about a feed after a deploy, rollback or delete.
    pub fn invalidate_feed(&self, ws: &str, feed: &str) {
        if let Some(m) = self.inner.live.write().expect("live lock").get_mut(ws) {
            m.remove(feed);
        }
    }

    /// Where a feed's calls go (its agent, and a canary's share); `None` forgets it. Only
    /// meaningful with runtime = kubernetes.
    pub fn set_agent_route(&self, ws: &str, feed: &str, route: Option<AgentRoute>) {
        self.set_cluster_route(ws, feed, route.map(Route::Ready));
    }

    /// What the gateway knows of one of the cluster's feeds; `None` forgets it.
    pub fn set_cluster_route(&self, ws: &str, feed: &str, route: Option<Route>) {
        let Some(agents) = &self.inner.agents else {
            return;
        };
        let mut routes = agents.routes.write().expect("agents lock");
        match route {
            Some(r) => {
                routes
                    .entry(ws.to_string())
                    .or_default()
                    .insert(feed.to_string(), r);
            }
            None => {
                if let Some(m) = routes.get_mut(ws) {
                    m.remove(feed);
                }
            }
        }
    }

    /// Every feed of the cluster at once (workspace → feed → route), as a watch of the
    /// cluster knows them: feeds absent here are forgotten, and so are the signatures of
    /// revisions no route serves any more. A feed that was Ready and now waits (its next
    /// revision builds or rolls out) keeps the route it had ([`Route::carried`]).
    pub fn replace_agent_routes(&self, mut all: HashMap<String, HashMap<String, Route>>) {
        let Some(agents) = &self.inner.agents else {
            return;
        };
        // Held to the end: a route set meanwhile (a deploy) must not be lost, nor carried
        // from a table about to be replaced.
        let mut routes = agents.routes.write().expect("agents lock");
        for (ws, feeds) in all.iter_mut() {
            for (feed, route) in feeds.iter_mut() {
                let seen = std::mem::replace(route, Route::Waiting(String::new()));
                *route = Route::carried(routes.get(ws.as_str()).and_then(|m| m.get(feed)), seen);
            }
        }
        agents
            .signatures
            .write()
            .expect("signatures lock")
            .retain(|ws, feeds| {
                feeds.retain(|feed, revs| {
                    match all.get(ws).and_then(|m| m.get(feed)) {
                        Some(Route::Ready(r)) => revs.retain(|rev, _| {
                            *rev == r.revision
                                || r.canary.as_ref().is_some_and(|c| c.revision == *rev)
                        }),
                        // Never Ready yet (a Ready one is carried above): nothing routed
                        // to drop.
                        Some(Route::Waiting(_)) => {}
                        None => revs.clear(),
                    }
                    !revs.is_empty()
                });
                !feeds.is_empty()
            });
        *routes = all;
    }

    /// Where a ready feed's calls go now (runtime = kubernetes).
    pub fn agent_route(&self, ws: &str, feed: &str) -> Option<AgentRoute> {
        match self.cluster_route(ws, feed)? {
            Route::Ready(r) => Some(r),
            Route::Waiting(_) => None,
        }
    }

    /// Every feed of the workspace the cluster has, with its route (runtime = kubernetes).
    pub fn cluster_routes(&self, ws: &str) -> Vec<(String, Route)> {
        let Some(agents) = self.inner.agents.as_ref() else {
            return Vec::new();
        };
        let routes = agents.routes.read().expect("agents lock");
        routes
            .get(ws)
            .map(|m| m.iter().map(|(f, r)| (f.clone(), r.clone())).collect())
            .unwrap_or_default()
    }

    /// What the gateway knows of a feed in the cluster (runtime = kubernetes).
    pub fn cluster_route(&self, ws: &str, feed: &str) -> Option<Route> {
        let agents = self.inner.agents.as_ref()?;
        let routes = agents.routes.read().expect("agents lock");
        routes.get(ws).and_then(|m| m.get(feed)).cloned()
    }

    /// The cluster deploys write to (runtime = kubernetes).
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.inner.agents.as_ref().and_then(|a| a.cluster.as_ref())
    }

    /// Run `task` on the compute runtime (or here, without one): for work that keeps a
    /// thread busy for long, such as a PostgreSQL wire session.
    pub fn spawn_compute<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.cfg.compute {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// `task`'s result, computed on the compute runtime (or here, without one).
    pub async fn on_compute<T, F>(&self, task: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match &self.inner.cfg.compute {
            Some(rt) => rt.spawn(task).await.unwrap_or_else(|e| {
                Err(Error::internal(format!(
                    "a task on the compute runtime failed: {e}"
                )))
            }),
            None => task.await,
        }
    }

    /// A response body produced on the compute runtime: reading the rows and encoding them
    /// happen there, and the request's runtime only copies finished chunks to the socket.
    /// A few chunks wait in between at most, so memory stays bounded; when the client goes
    /// away, the receiver is dropped, the producer's next send fails, and the body (with the
    /// source query or the worker lease it holds) is dropped there.
    pub fn offload<T: Send + 'static>(&self, body: BoxStream<'static, T>) -> BoxStream<'static, T> {
        match &self.inner.cfg.compute {
            Some(rt) => offload_to(rt, body),
            None => body,
        }
    }

    pub fn uses_agents(&self) -> bool {
        self.inner.agents.is_some()
    }

    pub fn invalidate_keys(&self) {
        self.inner.keys.clear();
    }

    pub fn invalidate_sources(&self) {
        self.inner.ws_sources.write().expect("sources lock").clear();
    }

    pub async fn workspace_sources(&self, ws: &str) -> Result<Arc<WorkspaceSources>> {
        if let Some(s) = self.inner.ws_sources.read().expect("sources lock").get(ws) {
            return Ok(s.clone());
        }
        let mut configs = HashMap::new();
        let mut worker = serde_json::Map::new();
        for s in self.inner.store.sources_for_workspace(ws).await? {
            let (cfg, json) = source_config(&s)?;
            configs.insert(s.name.clone(), cfg);
            worker.insert(s.name, json);
        }
        let ws_sources = Arc::new(WorkspaceSources {
            configs,
            worker_json: serde_json::Value::Object(worker).to_string().into(),
        });
        self.inner
            .ws_sources
            .write()
            .expect("sources lock")
            .insert(ws.to_string(), ws_sources.clone());
        Ok(ws_sources)
    }

    pub fn limiter(&self, ws: &str, feed: &str) -> Arc<Limiter> {
        if let Some(l) = self
            .inner
            .limiters
            .read()
            .expect("limiter lock")
            .get(ws)
            .and_then(|m| m.get(feed))
        {
            return l.clone();
        }
        self.inner
            .limiters
            .write()
            .expect("limiter lock")
            .entry(ws.to_string())
            .or_default()
            .entry(feed.to_string())
            .or_insert_with(|| {
                Arc::new(Limiter::new(
                    self.inner.cfg.feed_concurrency,
                    self.inner.cfg.feed_queue,
                ))
            })
            .clone()
    }

    /// Call a deployed feed and return its rows as a stream: with runtime = kubernetes its
    /// agent serves the call (`module` is then only what the store knows of it), else the
    /// local runtime runs `module` ([`Gateway::execute_here`]).
    pub async fn execute(
        &self,
        ws: &str,
        module: &ModuleSpec,
        feed: &str,
        params: &Params,
        request_id: &str,
    ) -> Result<Execution> {
        if self.uses_agents() {
            return self.execute_on_agents(ws, feed, params, request_id).await;
        }
        self.execute_here(ws, module, feed, params, request_id)
            .await
    }

    /// The agents of runtime = kubernetes; calling one with runtime = local is a bug.
    fn require_agents(&self) -> Result<&Agents> {
        self.inner
            .agents
            .as_ref()
            .ok_or_else(|| Error::internal("a feed agent was called with runtime = local"))
    }

    /// runtime = kubernetes: the call goes to the feed's agent (the canary's for its share
    /// of request ids), which runs `sluice.sql` itself with the data sources mounted in its
    /// pod.
    pub(crate) async fn execute_on_agents(
        &self,
        ws: &str,
        feed: &str,
        params: &Params,
        request_id: &str,
    ) -> Result<Execution> {
        let agents = self.require_agents()?;
        let route = self
            .agent_route(ws, feed)
            .ok_or_else(|| self.no_agent(ws, feed))?;
        self.wake_if_idle(ws, feed, &route).await?;
        let target = crate::cluster::pick(&route, request_id);
        let first = agents
            .client
            .call(target.url, params_to_json(params), request_id)
            .await;
        if let (Err(e), Some(wake)) = (&first, &route.wake)
            && e.code == Code::RuntimeUnavailable
            && !target.canary
        {
            // Its pods stopped after all (an idle stop this gateway did not see coming):
            // the next call asks again, and wakes it.
            agents.awake.lock().expect("awake lock").remove(wake);
        }
        // A canary that cannot be reached (still rolling out, crashed) must not fail its
        // share of the calls: the live revision serves them.
        let mut exec = match first {
            Err(e) if e.code == Code::RuntimeUnavailable && target.canary => {
                tracing::warn!(workspace = %ws, feed = %feed, revision = %target.revision, "canary unreachable, calling the live agent: {e}");
                return self
                    .call_agent(route.live_target(), params, request_id)
                    .await;
            }
            other => other?,
        };
        exec.revision
            .get_or_insert_with(|| target.revision.to_string());
        Ok(exec)
    }

    /// Run `module`'s feed in this server's own runtime, whatever runs deployed feeds: what
    /// `sluice run` and the IDE's preview need, since the code is a draft no agent has (with
    /// runtime = kubernetes an agent serves only the revision baked into its image). The
    /// workspace's data sources come from the store, as in local mode, and a
    /// `sluice.sql(...)` returned unchanged is run here, natively, so its rows never pass
    /// through Python.
    pub async fn execute_here(
        &self,
        ws: &str,
        module: &ModuleSpec,
        feed: &str,
        params: &Params,
        request_id: &str,
    ) -> Result<Execution> {
        let sources = self.workspace_sources(ws).await?;
        let out = self
            .inner
            .runtime
            .call(
                module,
                CallSpec {
                    feed: feed.to_string(),
                    params: params_to_json(params),
                    sources: sources.worker_json.clone(),
                    passthrough: true,
                    request_id: request_id.to_string(),
                },
            )
            .await?;
        match out {
            CallOutput::Sql {
                source,
                query,
                params,
                logs,
            } => {
                let cfg = sources.configs.get(&source).ok_or_else(|| {
                    let known: Vec<&String> = sources.configs.keys().collect();
                    Error::new(
                        Code::SourceNotFound,
                        format!("data source '{source}' is not granted to workspace '{ws}' (granted: {known:?}): ask an admin to grant it"),
                    )
                    .with("source", source.as_str())
                })?;
                // The query's rows are read and converted by a task it starts: on the
                // compute runtime, with the encoding (see `feeds.rs`).
                let sources = self.inner.sources.clone();
                let cfg = cfg.clone();
                let q = self
                    .on_compute(async move { sources.query(&source, &cfg, &query, &params).await })
                    .await?;
                Ok(Execution {
                    schema: q.schema,
                    batches: q.batches,
                    logs: Logs::Ready(logs),
                    passthrough: true,
                    revision: None,
                })
            }
            CallOutput::Rows {
                schema,
                batches,
                done,
            } => Ok(Execution {
                schema,
                batches,
                logs: Logs::Pending(done),
                passthrough: false,
                revision: None,
            }),
        }
    }

    /// The error of a call to a feed that has no ready agent: what it waits for when the
    /// cluster says, else that no Feed is seen yet (a deploy just written, a watch that has
    /// not caught up).
    fn no_agent(&self, ws: &str, feed: &str) -> Error {
        let waiting = match self.cluster_route(ws, feed) {
            Some(Route::Waiting(w)) => w,
            _ => "its Feed to be seen in the cluster".to_string(),
        };
        Error::new(
            Code::FeedNotReady,
            format!(
                "feed '{ws}/{feed}' has no ready agent yet (waiting for {waiting}): retry shortly; `kubectl get feeds -n {ws}` shows its build and rollout"
            ),
        )
        .with("waiting_for", waiting)
        .retry_after(5)
    }

    /// runtime = kubernetes: the agent that serves the call with this request id (the
    /// canary's share goes to the canary; `live_only` after a canary failed) and the
    /// signature of the revision it serves, which the call's parameters must fit. A feed the
    /// store has never seen (applied as YAML by GitOps) is served like any other: its
    /// signature comes from its agent. A canary whose signature cannot be had yet leaves its
    /// calls to the live revision.
    pub(crate) async fn pick_agent(
        &self,
        ws: &str,
        feed: &str,
        request_id: &str,
        live_only: bool,
    ) -> Result<Picked> {
        let route = match self.cluster_route(ws, feed) {
            Some(Route::Ready(r)) => r,
            Some(Route::Waiting(_)) => return Err(self.no_agent(ws, feed)),
            None => {
                // Only a feed the store knows is worth waiting for; any other is a 404.
                self.live_revision(ws, feed).await?;
                return Err(self.no_agent(ws, feed));
            }
        };
        self.wake_if_idle(ws, feed, &route).await?;
        let target = if live_only {
            route.live_target()
        } else {
            crate::cluster::pick(&route, request_id)
        };
        match self.signed(ws, feed, target).await {
            Ok(signed) => Ok(picked(target, signed)),
            Err(e)
                if target.canary
                    && matches!(e.code, Code::RuntimeUnavailable | Code::FeedNotReady) =>
            {
                tracing::warn!(workspace = %ws, feed = %feed, revision = %target.revision, "canary not serving yet, calling the live agent: {e}");
                let live = route.live_target();
                Ok(picked(live, self.signed(ws, feed, live).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// A feed that scales to zero may have no pod: every call first makes sure one is up
    /// (asked at most every [`AWAKE_FOR`] while calls come: its `/readyz`), and records
    /// the call for the operator's idle timer at the same pace. With no pod it asks the
    /// cluster to start one and holds the call until it is ready, up to [`WAKE_TIMEOUT`].
    async fn wake_if_idle(&self, ws: &str, feed: &str, route: &AgentRoute) -> Result<()> {
        let (Some(wake), Some(agents)) = (&route.wake, self.inner.agents.as_ref()) else {
            return Ok(());
        };
        let Some(cluster) = agents.cluster.as_ref() else {
            return Ok(());
        };
        let fresh = |at: Option<&Instant>| at.is_some_and(|t| t.elapsed() < AWAKE_FOR);
        if fresh(agents.awake.lock().expect("awake lock").get(wake)) {
            return Ok(());
        }
        // Recorded whether or not the pods are up: the call is coming either way.
        if let Err(e) = cluster.touch(wake).await {
            tracing::warn!(workspace = %ws, feed = %feed, "cannot record a call for the idle timer: {}", e.message);
        }
        if agents.client.ready(&route.url).await {
            agents
                .awake
                .lock()
                .expect("awake lock")
                .insert(wake.clone(), Instant::now());
            return Ok(());
        }
        tracing::info!(workspace = %ws, feed = %feed, "scaled to zero: starting a pod for a call");
        cluster.wake(wake).await?;
        let deadline = Instant::now() + WAKE_TIMEOUT;
        let mut pause = Duration::from_millis(200);
        while Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            if agents.client.ready(&route.url).await {
                agents
                    .awake
                    .lock()
                    .expect("awake lock")
                    .insert(wake.clone(), Instant::now());
                return Ok(());
            }
        }
        Err(Error::new(
            Code::FeedNotReady,
            format!(
                "feed '{ws}/{feed}' was scaled to zero and its pod is not ready after {} s: retry shortly; `kubectl describe deployment` in its namespace says why",
                WAKE_TIMEOUT.as_secs()
            ),
        )
        .with("waiting_for", "ScaledToZero")
        .retry_after(5))
    }

    /// Run one call on the agent `pick_agent` chose; the execution names the revision the
    /// agent says served it (the chosen one unless a rollout is under way).
    pub(crate) async fn call_agent(
        &self,
        target: Target<'_>,
        params: &Params,
        request_id: &str,
    ) -> Result<Execution> {
        let agents = self.require_agents()?;
        let mut exec = agents
            .client
            .call(target.url, params_to_json(params), request_id)
            .await?;
        exec.revision
            .get_or_insert_with(|| target.revision.to_string());
        Ok(exec)
    }

    /// The signature of the revision an agent serves: from memory; else from the store when
    /// it has that revision (deployed through this server: known exactly, and agents of
    /// images built before agents served signatures keep working); else from the agent.
    async fn signed(&self, ws: &str, feed: &str, target: Target<'_>) -> Result<Signed> {
        let agents = self.inner.agents.as_ref().ok_or_else(|| {
            Error::internal("a feed agent's signature was asked for with runtime = local")
        })?;
        let known = agents
            .signatures
            .read()
            .expect("signatures lock")
            .get(ws)
            .and_then(|m| m.get(feed))
            .and_then(|m| m.get(target.revision))
            .cloned();
        if let Some(s) = known {
            return Ok(s);
        }
        let stored = match target.revision.parse::<i64>() {
            Ok(n) => self.inner.store.revision(ws, feed, n).await?,
            Err(_) => None,
        };
        let signed = match stored {
            Some(rev) => Signed {
                signature: Arc::new(rev.signature),
                revision_id: Some(rev.id),
                number: Some(rev.number),
            },
            None => {
                let signature = self.served_signature(ws, feed, target).await?;
                // A feed only the cluster has (GitOps): recorded in the store under this
                // revision name, so its calls are logged and counted like any feed's. A
                // store that cannot record it leaves the calls served, only unlogged.
                let recorded = match self
                    .inner
                    .store
                    .cluster_revision(ws, feed, target.revision, &signature)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(workspace = %ws, feed = %feed, revision = %target.revision, "cannot record the cluster's revision; its calls go unlogged: {}", e.message);
                        None
                    }
                };
                Signed {
                    signature: Arc::new(signature),
                    revision_id: recorded.as_ref().map(|r| r.id),
                    number: recorded.map(|r| r.number),
                }
            }
        };
        agents
            .signatures
            .write()
            .expect("signatures lock")
            .entry(ws.to_string())
            .or_default()
            .entry(feed.to_string())
            .or_default()
            .insert(target.revision.to_string(), signed.clone());
        Ok(signed)
    }

    /// Ask the agent what it serves. Mid-rollout the Service may still reach a pod of the
    /// previous revision: a few tries on fresh connections, then `feed_not_ready` rather
    /// than a signature of other code.
    async fn served_signature(
        &self,
        ws: &str,
        feed: &str,
        target: Target<'_>,
    ) -> Result<FeedSignature> {
        let agents = self.inner.agents.as_ref().ok_or_else(|| {
            Error::internal("a feed agent's signature was asked for with runtime = local")
        })?;
        let mut seen = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let served = agents.client.served(target.url).await?;
            if served.revision != target.revision {
                seen = served.revision;
                continue;
            }
            if served.signature.name != feed {
                return Err(Error::internal(format!(
                    "the agent at {} serves feed '{}', not '{feed}': check the Feed's `function`",
                    target.url, served.signature.name
                )));
            }
            return Ok(served.signature);
        }
        Err(Error::new(
            Code::FeedNotReady,
            format!(
                "feed '{ws}/{feed}' is rolling out revision {}, but its agent at {} still serves revision {seen}: retry shortly",
                target.revision, target.url
            ),
        )
        .with("revision", target.revision)
        .retry_after(2))
    }

    /// Write this server's counts of the calls it served to the store now, rather than at
    /// the next periodic flush: what the metrics endpoint does before it reads, so this
    /// server's calls are shown at once (another replica's lag by a few seconds), and what a
    /// graceful shutdown does last.
    pub async fn flush_traffic(&self) -> Result<()> {
        self.inner
            .tallies
            .flush(&self.inner.store, chrono::Utc::now().timestamp_millis())
            .await
    }

    /// Queue an invocation record. When the store can't keep up, records are dropped
    /// (counted in `sluice_invocation_records_dropped_total`) rather than slowing requests.
    pub(crate) fn record(&self, inv: NewInvocation) {
        if self.inner.recorder.try_send(inv).is_err() {
            let m = &self.inner.metrics;
            let dropped = m.records_dropped.inc();
            if dropped.is_power_of_two() {
                tracing::warn!(
                    "invocation log queue is full: {} records dropped so far",
                    dropped + 1
                );
            }
        }
    }
}

fn picked(t: Target<'_>, signed: Signed) -> Picked {
    Picked {
        url: t.url.to_string(),
        revision: t.revision.to_string(),
        canary: t.canary,
        signed,
    }
}

pub async fn readyz(State(gw): State<Gateway>) -> impl IntoResponse {
    if gw.inner.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// [`Gateway::offload`] onto `rt`.
fn offload_to<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    mut body: BoxStream<'static, T>,
) -> BoxStream<'static, T> {
    let (tx, rx) = mpsc::channel(OFFLOADED_CHUNKS);
    rt.spawn(async move {
        while let Some(item) = body.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
    .boxed()
}

#[cfg(test)]
mod offload_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn compute() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-compute")
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn an_offloaded_body_is_produced_on_the_compute_runtime_in_order() {
        let rt = compute();
        let body = futures::stream::iter(0..100)
            .map(|i| (i, std::thread::current().name().map(str::to_string)))
            .boxed();
        let got: Vec<_> = offload_to(rt.handle(), body).collect().await;
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(
            got.iter()
                .all(|(_, t)| t.as_deref() == Some("test-compute")),
            "produced on {:?}",
            got.iter()
                .map(|(_, t)| t)
                .collect::<std::collections::HashSet<_>>()
        );
        rt.shutdown_background();
    }

    #[tokio::test]
    async fn a_client_gone_stops_the_producer_a_few_chunks_later() {
        let rt = compute();
        let produced = Arc::new(AtomicUsize::new(0));
        let body = futures::stream::repeat(())
            .map({
                let produced = produced.clone();
                move |()| produced.fetch_add(1, Ordering::Relaxed)
            })
            .boxed();
        let mut rx = offload_to(rt.handle(), body);
        assert_eq!(rx.next().await, Some(0));
        drop(rx);
        // The producer notices at its next send and drops the body (its source query or
        // worker lease with it): an endless body stops within the channel's few chunks.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped_at = produced.load(Ordering::Relaxed);
        assert!(stopped_at <= 2 + OFFLOADED_CHUNKS, "{stopped_at}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(produced.load(Ordering::Relaxed), stopped_at);
        rt.shutdown_background();
    }
}
