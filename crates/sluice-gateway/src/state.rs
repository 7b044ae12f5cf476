//! The gateway's shared state and the execution pipeline both surfaces use: the feed
//! endpoint and the control API's `run` call a feed the same way.

use crate::{
    agent::AgentClient,
    auth::KeyCache,
    cache::ResultCache,
    cluster::{AgentRoute, Cluster},
    limiter::Limiter,
    metrics::Metrics,
    recorder,
};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use axum::{extract::State, http::StatusCode, response::IntoResponse};
use futures::stream::BoxStream;
use sluice_core::{Code, Error, Params, Result, params::params_to_json};
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            public_url: "http://127.0.0.1:8080".into(),
            feed_concurrency: 16,
            feed_queue: 256,
            cache_bytes: 64 << 20,
            live_cache_ttl: Duration::from_secs(5),
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
    /// Result schemas by revision id (see `schemas.rs`).
    pub schemas: RwLock<HashMap<i64, SchemaRef>>,
    pub recorder: mpsc::Sender<NewInvocation>,
    pub ready: AtomicBool,
    /// Set when runtime = kubernetes: feeds run in their agent pods, not in `runtime`.
    pub agents: Option<Agents>,
}

/// Feed agents (runtime = kubernetes) and where each feed's agent answers, as the Feed's
/// status reports it (a watch of the cluster's Feeds keeps this current).
pub(crate) struct Agents {
    pub client: AgentClient,
    pub cluster: Option<Arc<dyn Cluster>>,
    pub routes: RwLock<PerFeed<AgentRoute>>,
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
    /// [`Gateway::set_agent_url`]); `runtime` still serves `sluice run` of unsaved code.
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

    /// Where a feed's agent answers (the Feed's status URL); `None` forgets it. Only
    /// meaningful with runtime = kubernetes.
    pub fn set_agent_url(&self, ws: &str, feed: &str, url: Option<&str>) {
        self.set_agent_route(ws, feed, url.map(AgentRoute::live));
    }

    /// Where a feed's calls go (its agent, and a canary's share); `None` forgets it.
    pub fn set_agent_route(&self, ws: &str, feed: &str, route: Option<AgentRoute>) {
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

    /// Every route at once (workspace → feed → route), as a watch of the cluster knows
    /// them: feeds absent here are forgotten.
    pub fn replace_agent_routes(&self, all: HashMap<String, HashMap<String, AgentRoute>>) {
        if let Some(agents) = &self.inner.agents {
            *agents.routes.write().expect("agents lock") = all;
        }
    }

    /// Where a feed's calls go now (runtime = kubernetes).
    pub fn agent_route(&self, ws: &str, feed: &str) -> Option<AgentRoute> {
        let agents = self.inner.agents.as_ref()?;
        let routes = agents.routes.read().expect("agents lock");
        routes.get(ws).and_then(|m| m.get(feed)).cloned()
    }

    /// The cluster deploys write to (runtime = kubernetes).
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.inner.agents.as_ref().and_then(|a| a.cluster.as_ref())
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

    /// Call a feed and return its rows as a stream. A `sluice.sql(...)` returned unchanged
    /// is run here, natively, so its rows never pass through Python.
    pub async fn execute(
        &self,
        ws: &str,
        module: &ModuleSpec,
        feed: &str,
        params: &Params,
        request_id: &str,
    ) -> Result<Execution> {
        if let Some(agents) = &self.inner.agents {
            // The agent runs `sluice.sql` itself, with the data sources mounted in its pod.
            let route = self.agent_route(ws, feed).ok_or_else(|| {
                    Error::new(
                        Code::RuntimeUnavailable,
                        format!("feed '{ws}/{feed}' has no ready agent yet: `kubectl get feeds -n {ws}` shows its build and rollout"),
                    )
                    .retry_after(5)
                })?;
            let url = crate::cluster::pick(&route, request_id);
            let first = agents
                .client
                .call(url, params_to_json(params), request_id)
                .await;
            // A canary that cannot be reached (still rolling out, crashed) must not fail its
            // share of the calls: the live revision serves them.
            return match first {
                Err(e) if e.code == Code::RuntimeUnavailable && url != route.url => {
                    tracing::warn!(workspace = %ws, feed = %feed, "canary unreachable, calling the live agent: {e}");
                    agents
                        .client
                        .call(&route.url, params_to_json(params), request_id)
                        .await
                }
                other => other,
            };
        }
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
                let q = self
                    .inner
                    .sources
                    .query(&source, cfg, &query, &params)
                    .await?;
                Ok(Execution {
                    schema: q.schema,
                    batches: q.batches,
                    logs: Logs::Ready(logs),
                    passthrough: true,
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
            }),
        }
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

pub async fn readyz(State(gw): State<Gateway>) -> impl IntoResponse {
    if gw.inner.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
