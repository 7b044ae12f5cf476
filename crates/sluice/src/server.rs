//! Wiring: open the store, start the runtime, build the gateway and control API, create
//! the first workspace and key, serve until Ctrl-C/SIGTERM, then drain and stop workers.

use crate::{config::ServerConfig, demo};
use anyhow::Context;
use axum::{
    Router,
    http::{HeaderName, StatusCode},
};
use sluice_core::{Role, keys};
use sluice_gateway::{Gateway, Principal};
use sluice_store::{NewKey, Store};
use std::{io::Write, path::Path, time::Duration};
use tower_http::{
    classify::ServerErrorsFailureClass,
    compression::CompressionLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `sluice up`: sample data and example feeds on first start, admin key kept in the data dir.
    AllInOne,
    /// `sluice server`: nothing but an admin key on first start.
    Production,
}

pub fn app(
    gw: Gateway,
    connect: sluice_control::ConnectInfo,
    paging: sluice_odata::PagingConfig,
) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    sluice_control::router(gw.clone(), connect)
        .merge(sluice_odata::router_with(gw.clone(), paging))
        .merge(sluice_gateway::router(gw))
        // The browser IDE at `/` (its assets come precompressed; the layer below leaves
        // responses that already have a Content-Encoding alone).
        .merge(sluice_ide::router())
        .layer(CompressionLayer::new().gzip(true))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }).on_failure(on_failure))
        .layer(SetRequestIdLayer::new(request_id, FastRequestUuid))
}

/// A 5xx answer is logged as an error, except 503: "not now, retry" is an expected answer
/// (`/readyz` while warming up or draining, a feed whose agent is not ready yet), and a
/// prober polling `/readyz` at start would otherwise fill the log with errors. The causes of
/// a feed's 503 are in its invocation log and metrics.
fn on_failure(class: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span) {
    let ms = latency.as_millis();
    match class {
        ServerErrorsFailureClass::StatusCode(s) if s == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::debug!(latency_ms = ms, "answered 503 Service Unavailable")
        }
        class => tracing::error!(latency_ms = ms, "response failed: {class}"),
    }
}

/// A random (v4) UUID per request, drawn from the thread's cached RNG: tower-http's
/// `MakeRequestUuid` asks the kernel (`getrandom`) on every request, a syscall on the
/// hottest path for an id that needs to be unique, not secret.
#[derive(Clone, Copy)]
struct FastRequestUuid;

impl MakeRequestId for FastRequestUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        axum::http::HeaderValue::from_str(&id.to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn master_key(cfg: &ServerConfig) -> anyhow::Result<[u8; 32]> {
    if let Some(k) = cfg.master_key {
        return Ok(k);
    }
    if cfg
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"))
    {
        anyhow::bail!(
            "a PostgreSQL store needs SLUICE_MASTER_KEY (64 hex characters, e.g. `openssl rand -hex 32`): it encrypts data-source credentials"
        );
    }
    let path = cfg.data_dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(text.trim())
            .with_context(|| format!("{} is damaged: restore it from a backup", path.display()))?;
        return bytes.try_into().map_err(|_| {
            anyhow::anyhow!("{} is damaged: restore it from a backup", path.display())
        });
    }
    let key: [u8; 32] = rand::random();
    write_private(&path, &hex::encode(key))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Make sure an admin key exists and return it when we know its secret.
async fn ensure_admin_key(
    store: &Store,
    cfg: &ServerConfig,
    mode: Mode,
) -> anyhow::Result<Option<String>> {
    let key_file = cfg.data_dir.join("admin.key");
    let secret = match &cfg.admin_key {
        Some(k) => k.clone(),
        None if mode == Mode::AllInOne && key_file.exists() => {
            std::fs::read_to_string(&key_file)?.trim().to_string()
        }
        None if store.setting("initialized").await?.is_some() => return Ok(None),
        None => keys::generate().secret,
    };
    let prefix = keys::prefix_of(&secret);
    let hash = keys::hash(&secret);
    match store.key_by_prefix(&prefix).await? {
        Some(k) if keys::hashes_equal(&k.hash, &hash) => {}
        _ => {
            store
                .create_key(NewKey {
                    name: "admin".into(),
                    prefix,
                    hash,
                    role: Role::Admin,
                    workspace: None,
                })
                .await?;
        }
    }
    if mode == Mode::AllInOne && cfg.admin_key.is_none() {
        write_private(&key_file, &secret)?;
    }
    Ok(Some(secret))
}

/// First start: workspace `demo`; with the all-in-one server also the warehouse and the
/// example feeds. Returns whether the examples still need deploying.
async fn bootstrap(gw: &Gateway, cfg: &ServerConfig, mode: Mode) -> anyhow::Result<bool> {
    let store = gw.store();
    if store.workspace("demo").await?.is_none() {
        store.create_workspace("demo").await?;
    }
    if mode == Mode::AllInOne {
        let wh = cfg.data_dir.join("warehouse.db");
        if !wh.exists() {
            tracing::info!("generating the sample warehouse (one time, a few seconds)");
        }
        demo::ensure_warehouse(&wh)
            .await
            .context("could not create the sample warehouse")?;
        if store.source("warehouse").await?.is_none() {
            store
                .upsert_source("warehouse", "sqlite", &serde_json::json!({"path": wh}))
                .await?;
            store.grant_source("warehouse", "demo").await?;
        }
    }
    Ok(mode == Mode::AllInOne && store.setting("examples_deployed").await?.is_none())
}

async fn deploy_examples(gw: Gateway) {
    let admin = Principal {
        name: "sluice".into(),
        prefix: String::new(),
        role: Role::Admin,
        workspace: None,
    };
    let mut ok = true;
    for (file, source) in demo::EXAMPLE_FEEDS {
        match sluice_control::deploy_module(&gw, &admin, "demo", file, source).await {
            Ok(_) => tracing::info!("example {file} is live"),
            Err(e) => {
                ok = false;
                tracing::warn!("example {file} could not be deployed: {e}");
            }
        }
    }
    if ok {
        let _ = gw.store().set_setting("examples_deployed", "1").await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

pub async fn run(mut cfg: ServerConfig, mode: Mode) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let url = match &cfg.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", cfg.data_dir.join("sluice.db").display()),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server running there? pick one with --listen",
                cfg.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let pg_listener = tokio::net::TcpListener::bind(cfg.pg_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the PostgreSQL endpoint: is another server (or PostgreSQL) running there? pick one with --pg-listen",
                cfg.pg_listen
            )
        })?;
    let pg_addr = pg_listener.local_addr()?;
    let pg_tls = sluice_pgwire::tls::acceptor(&cfg.data_dir, mode == Mode::AllInOne)?;
    if pg_tls.is_none() && !pg_addr.ip().is_loopback() {
        tracing::warn!(
            "the PostgreSQL endpoint on {pg_addr} has no TLS: keys (the passwords) would cross the network in clear text; put {} and {} in {}",
            sluice_pgwire::tls::CERT_FILE,
            sluice_pgwire::tls::KEY_FILE,
            cfg.data_dir.display()
        );
    }
    if cfg.gateway.public_url.is_empty() {
        cfg.gateway.public_url = format!("http://{addr}");
    }
    let store = Store::open(&url, master_key(&cfg)?)
        .await
        .with_context(|| "cannot open the metadata store".to_string())?;
    let admin_secret = ensure_admin_key(&store, &cfg, mode).await?;
    let runtime = sluice_runtime::Runtime::start(cfg.runtime.clone()).await?;
    let gw = match cfg.runtime_kind {
        crate::config::RuntimeKind::Local => Gateway::new(
            store.clone(),
            runtime.clone(),
            sluice_sources::Sources::new(),
            cfg.gateway.clone(),
        ),
        crate::config::RuntimeKind::Kubernetes => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!("runtime = kubernetes but no Kubernetes API: set KUBECONFIG or run in a pod ({e})")
            })?;
            let feeds = sluice_kube::control::KubeFeeds::new(client);
            let cluster = crate::kube_cluster::KubeCluster::new(feeds.clone());
            let gw = Gateway::with_agents(
                store.clone(),
                runtime.clone(),
                sluice_sources::Sources::new(),
                cfg.gateway.clone(),
                sluice_gateway::AgentClient::new(cfg.runtime.call_timeout)?,
                Some(std::sync::Arc::new(cluster)),
            );
            // Runs as long as the server: the task ends with the process.
            crate::kube_cluster::spawn_watch(feeds, gw.clone());
            gw
        }
    };
    let examples = bootstrap(&gw, &cfg, mode).await?;
    store.set_setting("initialized", "1").await?;

    println!("Sluice is running at http://{addr}");
    match &admin_secret {
        // A production server's output goes to collected, widely read logs, and a key the
        // admin set is known to them already: only a key made here must be shown (once).
        Some(_) if mode == Mode::Production && cfg.admin_key.is_some() => {
            println!("Admin key: the one SLUICE_ADMIN_KEY sets (not printed)")
        }
        Some(k) => println!("Admin key: {k}"),
        None => println!(
            "Admin key: set at first start (SLUICE_ADMIN_KEY) — create more with `sluice keys create`"
        ),
    }
    println!("PostgreSQL: postgresql://x@{pg_addr}/demo (password: a key)");
    println!("Try:  curl -u x:<key> 'http://{addr}/feeds/demo/hello?name=you&format=csv'");
    let _ = std::io::stdout().flush();

    // Warm the pools of live feeds so the first request doesn't pay for a worker start.
    let warm = gw.clone();
    let warming = tokio::spawn(async move {
        if examples {
            deploy_examples(warm.clone()).await;
        }
        if let Ok(revs) = warm.store().all_live_revisions().await {
            for r in revs {
                if let Err(e) = warm.runtime().warm(&sluice_gateway::module_of(&r)).await {
                    tracing::warn!(workspace = %r.workspace, feed = %r.feed, "could not start workers: {e}");
                }
            }
        }
        warm.set_ready(true);
    });

    // Without TCP_NODELAY the last small chunk of a streamed body waits for the client's
    // delayed ACK: ~40 ms on every uncached call (measured in bench/).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tracing::info!(
        tls = pg_tls.is_some(),
        "PostgreSQL wire endpoint on {pg_addr}"
    );
    let pg = tokio::spawn(sluice_pgwire::serve(gw.clone(), pg_listener, pg_tls, {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }));
    let connect = sluice_control::ConnectInfo::new(&cfg.gateway.public_url, pg_addr);
    axum::serve(listener, app(gw.clone(), connect, cfg.odata.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
    let _ = pg.await;
    warming.abort();
    gw.set_ready(false);
    // The calls counted since the last periodic flush, so a restart loses none of them.
    if let Err(e) = gw.flush_traffic().await {
        tracing::warn!("could not write the last feed traffic counts: {e}");
    }
    tokio::time::timeout(Duration::from_secs(10), runtime.shutdown())
        .await
        .ok();
    tracing::info!("stopped");
    Ok(())
}
