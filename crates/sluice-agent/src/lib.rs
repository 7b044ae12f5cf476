//! `sluice agent`: the local runtime serving one feed revision in a pod. The operator runs it
//! as the container of a feed's Deployment; the gateway (the only thing the workspace's
//! NetworkPolicy lets in) validates parameters and authenticates callers, then calls
//! `POST /v1/call` here and gets the rows back as an Arrow IPC stream, which it encodes for
//! the client exactly as in local mode. After the stream's end-of-stream marker comes a
//! trailer, one JSON object `{"stdout", "stderr", "duration_ms"}`: what the call printed,
//! for the gateway's invocation log.
//!
//! A feed that returns `sluice.sql(...)` unchanged has the query run here, natively, against
//! the pod's mounted data sources, exactly as the local runtime runs it: the rows never pass
//! through Python and the image needs no database driver.
//!
//! The feed's dependencies are baked into the image (`/opt/sluice/deps`, on the base
//! interpreter's path through a `.pth` file the builder writes), so the agent never resolves
//! or downloads anything: it runs the module on the base interpreter.
//!
//! `GET /v1/signature` says which revision the agent serves and that revision's signature
//! (parameter names, types, defaults): the gateway checks calls against it, which is how a
//! feed the store has never seen (a Feed applied as YAML by GitOps, a canary) is served.
//! Every `/v1/call` answer names the revision in `x-sluice-revision`, so the gateway logs a
//! call under the revision that really served it, even mid-rollout.
//!
//! Probes: `/healthz` (alive), `/readyz` (workers warmed, not draining). On SIGTERM it stops
//! being ready, finishes the calls in flight (up to the drain timeout), then stops its workers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use arrow_ipc::writer::StreamWriter;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_core::agent::{REVISION_HEADER, SIGNATURE_PATH, Served};
use sluice_runtime::{CallOutput, CallSpec, ModuleSpec, Runtime, RuntimeConfig};
use sluice_sources::{QueryStream, SourceConfig, Sources};

/// Flags of `sluice agent` (the operator sets the environment variables).
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    #[arg(long, env = "SLUICE_AGENT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also serve `/metrics` alone on this address: the port a workspace's NetworkPolicy
    /// opens to Prometheus (scraping the calls-in-flight metric the autoscaler reads),
    /// while the calls' port stays the gateway's only.
    #[arg(long, env = "SLUICE_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The feed module.
    #[arg(
        long,
        env = "SLUICE_FEED_MODULE",
        default_value = "/opt/sluice/feed/feed.py"
    )]
    pub module: PathBuf,
    /// The function to serve.
    #[arg(long, env = "SLUICE_FEED")]
    pub feed: String,
    #[arg(long, env = "SLUICE_REVISION", default_value = "0")]
    pub revision: String,
    /// One folder per granted data source, each with a `url` file (the mounted Secrets).
    #[arg(
        long,
        env = "SLUICE_SOURCES_DIR",
        default_value = "/var/run/sluice/sources"
    )]
    pub sources_dir: PathBuf,
    /// Writable scratch space (an emptyDir: the root filesystem is read-only).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "/tmp/sluice")]
    pub data_dir: PathBuf,
    #[arg(long, env = "SLUICE_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Python workers (concurrent calls) in this pod.
    #[arg(long, env = "SLUICE_WORKERS_MAX", default_value_t = 4)]
    pub workers: usize,
    #[arg(long, env = "SLUICE_CALL_TIMEOUT", default_value_t = 60)]
    pub call_timeout_secs: u64,
    /// Longest a SIGTERM waits for calls in flight.
    #[arg(long, default_value_t = 25)]
    pub drain_secs: u64,
    /// CPU scheduling of the agent and its workers: `batch` (throughput) or `normal`.
    #[arg(long, env = "SLUICE_CPU_SCHEDULING", default_value = "batch", value_parser = sluice_runtime::sched::CpuScheduling::parse)]
    pub cpu_scheduling: sluice_runtime::sched::CpuScheduling,
}

/// The agent's state, shared by its handlers.
pub struct Agent {
    runtime: Runtime,
    module: ModuleSpec,
    feed: String,
    /// The revision served and its signature, found when the agent started.
    served: Served,
    sources: Arc<str>,
    /// The same data sources for a `sluice.sql(...)` the feed returns unchanged, which the
    /// agent runs natively, as the local runtime does: its rows never pass through Python,
    /// and the image needs no database driver.
    native: Sources,
    source_configs: HashMap<String, SourceConfig>,
    unsupported_sources: BTreeMap<String, String>,
    ready: AtomicBool,
    registry: Registry,
    in_flight: Gauge,
    calls: Family<Vec<(String, String)>, Counter>,
}

/// The data sources mounted in the pod, from their Secrets.
#[derive(Debug, Default)]
pub struct MountedSources {
    /// `{name: {"kind": ..}}`, for the runtime and the native `sluice.sql`.
    pub usable: serde_json::Value,
    /// Sources whose URL is of a kind feeds cannot use yet: name → the URL's scheme. A
    /// feed that uses one is told so; the others are served.
    pub unsupported: BTreeMap<String, String>,
}

/// The runtime's config of a source URL: `postgres://`/`postgresql://`, or `sqlite:`/a file
/// path; any other scheme is returned as the error.
fn source_config(url: &str) -> Result<serde_json::Value, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(serde_json::json!({"kind": "postgres", "url": url}));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(serde_json::json!({"kind": "sqlite", "path": path}));
    }
    match url.split_once("://") {
        Some((scheme, _)) => Err(scheme.to_string()),
        None => Ok(serde_json::json!({"kind": "sqlite", "path": url})),
    }
}

/// Read the data sources mounted under `dir` (one folder per source, its Secret's `url`).
pub fn read_sources(dir: &Path) -> anyhow::Result<MountedSources> {
    let mut out = serde_json::Map::new();
    let mut unsupported = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(MountedSources::default());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let url = std::fs::read_to_string(entry.path().join("url"))
            .with_context(|| format!("data source {name}: no `url` in its Secret"))?;
        match source_config(url.trim()) {
            Ok(config) => {
                out.insert(name, config);
            }
            Err(scheme) => {
                tracing::warn!(source = %name, scheme = %scheme, "data source of a kind feeds cannot use yet: calls that use it fail");
                unsupported.insert(name, scheme);
            }
        }
    }
    Ok(MountedSources {
        usable: out.into(),
        unsupported,
    })
}

impl Agent {
    /// Run a `sluice.sql(...)` natively against one of the pod's data sources.
    async fn run_sql(
        &self,
        source: &str,
        query: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> sluice_core::Result<QueryStream> {
        if let Some(scheme) = self.unsupported_sources.get(source) {
            return Err(sluice_core::Error::new(
                sluice_core::Code::SourceNotFound,
                format!("data source '{source}' is a {scheme}:// URL, which feeds cannot use yet: Sluice reads postgres:// and sqlite: sources"),
            )
            .with("source", source));
        }
        let cfg = self.source_configs.get(source).ok_or_else(|| {
            let mut known: Vec<&String> = self.source_configs.keys().collect();
            known.sort();
            sluice_core::Error::new(
                sluice_core::Code::SourceNotFound,
                format!("data source '{source}' is not mounted in this feed's pod (mounted: {known:?}): list it in the Feed's `dataSources` and grant it to the workspace"),
            )
            .with("source", source)
        })?;
        self.native.query(source, cfg, query, params).await
    }

    /// Start the runtime, find the feed's signature and warm its workers. A module that does
    /// not load, or does not define the feed, stops the agent here: a pod that cannot serve
    /// never becomes ready, and the Feed says why in its pods' logs.
    pub async fn start(args: &AgentArgs) -> anyhow::Result<Arc<Agent>> {
        let source = tokio::fs::read_to_string(&args.module)
            .await
            .with_context(|| format!("cannot read the feed module {}", args.module.display()))?;
        let MountedSources {
            usable: sources,
            unsupported,
        } = read_sources(&args.sources_dir)?;
        let source_configs = sources
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, config)| {
                serde_json::from_value(config.clone())
                    .map(|c| (name.clone(), c))
                    .with_context(|| format!("data source {name}: unreadable config"))
            })
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        let sources = sources.to_string();
        let runtime = Runtime::start(RuntimeConfig {
            data_dir: args.data_dir.clone(),
            python: args.python.clone(),
            pool_min: 1,
            pool_max: args.workers.max(1),
            call_timeout: Duration::from_secs(args.call_timeout_secs),
            ..RuntimeConfig::default()
        })
        .await?;
        let module = ModuleSpec {
            revision_id: 1,
            filename: args
                .module
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "feed.py".into()),
            source,
            // Dependencies are in the image already: the base interpreter runs the module.
            env_hash: sluice_runtime::BASE_ENV.into(),
            lock: String::new(),
        };
        // Loading the module in a throwaway worker is the check `sluice deploy` makes; a Feed
        // applied as YAML never went through it, and its signature exists nowhere else.
        let feeds = runtime.inspect(&module).await.map_err(|e| {
            anyhow::anyhow!(
                "the feed module {} does not load: {e}",
                args.module.display()
            )
        })?;
        let Some(signature) = feeds.into_iter().find(|f| f.name == args.feed) else {
            anyhow::bail!(
                "the feed module {} defines no feed named {:?}: check the Feed's `function`",
                args.module.display(),
                args.feed
            );
        };
        let served = Served {
            revision: args.revision.clone(),
            signature,
        };
        let mut registry = Registry::with_prefix("sluice_agent");
        let in_flight = Gauge::default();
        let calls = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("calls_in_flight", "Calls being served", in_flight.clone());
        registry.register("calls", "Calls by result", calls.clone());
        let agent = Arc::new(Agent {
            runtime,
            module,
            feed: args.feed.clone(),
            served,
            sources: sources.into(),
            native: Sources::new(),
            source_configs,
            unsupported_sources: unsupported,
            ready: AtomicBool::new(false),
            registry,
            in_flight,
            calls,
        });
        agent.runtime.warm(&agent.module).await?;
        agent.ready.store(true, Ordering::SeqCst);
        tracing::info!(feed = %args.feed, revision = %args.revision, "ready");
        Ok(agent)
    }

    /// Stop being ready (the first step of a drain).
    pub fn unready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}

/// The agent's HTTP API.
/// `/metrics` alone, for the metrics port.
pub fn metrics_router(agent: Arc<Agent>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(agent)
}

pub fn router(agent: Arc<Agent>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/call", post(call))
        .route(SIGNATURE_PATH, get(signature))
        .with_state(agent)
}

async fn readyz(State(a): State<Arc<Agent>>) -> StatusCode {
    if a.ready.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn signature(State(a): State<Arc<Agent>>) -> Json<Served> {
    Json(a.served.clone())
}

async fn metrics(State(a): State<Arc<Agent>>) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &a.registry).expect("String");
    out
}

fn problem(e: &sluice_core::Error, revision: &str) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (HeaderName::from_static(REVISION_HEADER), revision),
        ],
        // The gateway decides what its caller may see; it gets everything.
        e.problem(true, None).to_string(),
    )
        .into_response()
}

/// Decrements the in-flight gauge when the response body is done (or dropped).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn call(State(a): State<Arc<Agent>>, Json(body): Json<serde_json::Value>) -> Response {
    a.in_flight.inc();
    let guard = InFlight(a.in_flight.clone());
    let spec = CallSpec {
        feed: a.feed.clone(),
        params: body
            .get("params")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
        sources: a.sources.clone(),
        passthrough: true,
        request_id: body
            .get("request_id")
            .and_then(|r| r.as_str())
            .unwrap_or("agent")
            .to_string(),
    };
    let count = |result: &str| {
        a.calls
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
    };
    let (schema, mut batches, done) = match a.runtime.call(&a.module, spec).await {
        Ok(CallOutput::Rows {
            schema,
            batches,
            done,
        }) => (schema, batches, done),
        Ok(CallOutput::Sql {
            source,
            query,
            params,
            logs,
        }) => match a.run_sql(&source, &query, &params).await {
            Ok(q) => {
                let (tx, done) = tokio::sync::oneshot::channel();
                let _ = tx.send(Ok(logs));
                (q.schema, q.batches, done)
            }
            Err(e) => {
                count("error");
                return problem(&e, &a.served.revision);
            }
        },
        Err(e) => {
            count("error");
            return problem(&e, &a.served.revision);
        }
    };
    count("ok");
    // Stream the Arrow IPC bytes batch by batch: nothing waits for the whole result.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _guard = guard;
        let mut writer = match StreamWriter::try_new(Vec::new(), &schema) {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
        };
        loop {
            let chunk = std::mem::take(writer.get_mut());
            if !chunk.is_empty() && tx.send(Ok(chunk.into())).await.is_err() {
                return; // the caller hung up; dropping the stream frees the worker
            }
            match batches.next().await {
                Some(Ok(batch)) => {
                    if let Err(e) = writer.write(&batch) {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                }
                Some(Err(e)) => {
                    // Mid-stream: the status is sent, so the stream ends without its
                    // end-of-stream marker and the gateway reports the call failed.
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
                None => break,
            }
        }
        if writer.finish().is_err() {
            return;
        }
        let mut rest = std::mem::take(writer.get_mut());
        // After the end-of-stream marker, what the call printed: the gateway records it in
        // the invocation log as a local call would (an IPC reader stops at the marker).
        let logs = match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(Ok(l))) => l,
            _ => sluice_runtime::CallLogs::default(),
        };
        rest.extend_from_slice(&trailer(&logs));
        let _ = tx.send(Ok(rest.into())).await;
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apache.arrow.stream"),
            (
                HeaderName::from_static(REVISION_HEADER),
                a.served.revision.as_str(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The answer's trailer: one JSON object after the Arrow IPC stream.
fn trailer(logs: &sluice_runtime::CallLogs) -> Vec<u8> {
    serde_json::json!({
        "stdout": logs.stdout,
        "stderr": logs.stderr,
        "duration_ms": logs.duration_ms,
    })
    .to_string()
    .into_bytes()
}

/// Serve until `shutdown` resolves, then drain: unready, finish calls in flight (at most
/// `drain`), stop the workers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let a = agent.clone();
    tokio::spawn(async move {
        shutdown.await;
        a.unready();
        let _ = stop_tx.send(());
    });
    let server = axum::serve(listener, router(agent.clone())).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r?,
        _ = async {
            // Only starts counting once the drain has begun.
            while agent.ready.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(drain).await;
        } => tracing::warn!("drain timeout: calls still in flight are cut"),
    }
    agent.shutdown().await;
    Ok(())
}

/// `sluice agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let agent = Agent::start(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(addr) = args.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        // Ends with the process: scrapes may go on while calls drain.
        tokio::spawn(axum::serve(metrics, metrics_router(agent.clone())).into_future());
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("draining");
    };
    serve(
        listener,
        agent,
        shutdown,
        Duration::from_secs(args.drain_secs),
    )
    .await
}
