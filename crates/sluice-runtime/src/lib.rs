//! Local runtime: uv environments, warm Python worker pools, the framed worker protocol.
//!
//! This crate owns everything between "here is a feed module's source" and "here are its
//! rows as Arrow": the embedded Python SDK, dependency resolution with uv, one venv per
//! lock, one pool of long-lived workers per live revision, and the protocol they speak
//! (docs/worker-protocol.md). It never touches the store or HTTP: the control plane and
//! the gateway call [`Runtime`] with plain values, and get typed [`sluice_core::Error`]s.
//!
//! Layout: `pep723` (pure: the `# /// script` block), `env` (uv, venvs), `sdk` (the
//! embedded package), `protocol` (frames), `arrow_conv` (pure: ROWS → Arrow, schema
//! fitting), `worker` (one process), `pool` (leases, queue, backoff), `call` (one call,
//! streaming).

mod arrow_conv;
mod call;
mod config;
mod env;
mod pep723;
mod pool;
mod protocol;
pub mod sched;
mod sdk;
mod worker;

pub use call::{CallLogs, CallOutput, CallSpec};
pub use config::RuntimeConfig;
pub use env::{BASE_ENV, Prepared};
pub use pep723::{ScriptMetadata, parse_script_metadata};
pub use pool::PoolStats;

use env::Envs;
use pool::{Limits, Pool};
use sha2::{Digest, Sha256};
use sluice_core::{Code, Error, FeedSignature, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use worker::{Launch, StartError, Worker};

static SEQ: AtomicU64 = AtomicU64::new(1);

/// Unique within this process: socket names, temp folders.
pub(crate) fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A feed module to run: its source and the environment `prepare` resolved for it.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// Unique per revision; pools are keyed by it. Throwaway runs use a negative id.
    pub revision_id: i64,
    /// The user's file name (e.g. `sales.py`), shown in errors instead of internal paths.
    pub filename: String,
    pub source: String,
    pub env_hash: String,
    pub lock: String,
}

/// The local runtime. Cheap to clone; all clones share the pools.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RuntimeConfig,
    envs: Envs,
    sdk_dir: PathBuf,
    run_dir: PathBuf,
    home: PathBuf,
    pools: Mutex<HashMap<i64, Arc<Pool>>>,
    shutting_down: AtomicBool,
}

impl Runtime {
    /// Check the base interpreter, write the SDK, create the data dir's folders. Workers
    /// start later: on `warm` or on a pool's first call.
    pub async fn start(cfg: RuntimeConfig) -> Result<Runtime> {
        let data_dir = std::path::absolute(&cfg.data_dir).map_err(|e| {
            Error::internal(format!(
                "the data dir {} cannot be resolved: {e}",
                cfg.data_dir.display()
            ))
        })?;
        let run_dir = data_dir.join("run");
        let home = data_dir.join("home");
        for d in [&data_dir, &run_dir, &home, &data_dir.join("modules")] {
            tokio::fs::create_dir_all(d).await.map_err(|e| {
                Error::internal(format!(
                    "could not create {}: {e}; check that the data dir is writable",
                    d.display()
                ))
            })?;
        }
        let (python, python_version) = probe_python(&cfg.python).await?;
        let sdk_dir = sdk::install(&data_dir).await?;
        let uv_cache = cfg
            .uv_cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("uv-cache"));
        let envs = Envs::new(
            data_dir.clone(),
            python,
            python_version,
            cfg.uv.clone(),
            uv_cache,
        );
        let cfg = RuntimeConfig { data_dir, ..cfg };
        Ok(Runtime {
            inner: Arc::new(Inner {
                cfg,
                envs,
                sdk_dir,
                run_dir,
                home,
                pools: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }

    /// The base interpreter's version, e.g. `3.11.7` (part of every env hash).
    pub fn python_version(&self) -> &str {
        &self.inner.envs.python_version
    }

    /// Resolve dependencies and build/cache the environment for a module's source.
    pub async fn prepare(
        &self,
        source: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Prepared> {
        self.inner.envs.prepare(source, progress).await
    }

    /// Load the module in a fresh (throwaway) worker and return the feeds it defines.
    /// A module that does not load is `invalid_feed_module` with `file` (the user's file
    /// name) and `line` members and the traceback.
    pub async fn inspect(&self, module: &ModuleSpec) -> Result<Vec<FeedSignature>> {
        self.check_running()?;
        self.inner
            .envs
            .ensure_env(&module.env_hash, &module.lock, &|_| {})
            .await?;
        let dir = self
            .inner
            .cfg
            .data_dir
            .join("modules")
            .join(format!("inspect-{}", next_seq()));
        let path = write_module(&dir, module).await?;
        let launch = self.launch(module, path.clone());
        let started = Worker::start(&launch).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        match started {
            Ok(w) => {
                let feeds = w.hello.feeds.clone();
                tokio::spawn(w.shutdown(pool::SHUTDOWN_GRACE));
                if feeds.is_empty() {
                    return Err(Error::new(
                        Code::InvalidFeedModule,
                        format!(
                            "{} defines no feed: decorate at least one function with @sluice.feed",
                            module.filename
                        ),
                    )
                    .with("file", module.filename.clone())
                    .with("line", serde_json::Value::Null));
                }
                Ok(feeds)
            }
            Err(StartError::Load(le)) => Err(load_error(le, &path, &module.filename)),
            Err(StartError::Other(e)) => Err(e),
        }
    }

    /// Start the revision's pool up to `pool_min` workers now, so the first call is fast.
    pub async fn warm(&self, module: &ModuleSpec) -> Result<()> {
        self.pool_for(module).await?.fill().await
    }

    /// Run one feed call on the pool for `module.revision_id`, creating it on first use.
    pub async fn call(&self, module: &ModuleSpec, call: CallSpec) -> Result<CallOutput> {
        let pool = self.pool_for(module).await?;
        let payload = call::payload(call)?;
        let lease = pool.call_lease(&payload).await?;
        call::run(lease, self.inner.cfg.call_timeout).await
    }

    /// Stop serving a revision: calls in flight finish, then its workers exit.
    pub async fn retire(&self, revision_id: i64) {
        let pool = self.pools().remove(&revision_id);
        if let Some(pool) = pool {
            let idle = pool.retire(false);
            futures::future::join_all(idle.into_iter().map(|w| w.shutdown(pool::SHUTDOWN_GRACE)))
                .await;
        }
    }

    /// SHUTDOWN to idle workers, up to 5 s for them to exit, then SIGKILL. Waiting callers
    /// and later calls get `runtime_unavailable`; calls in flight stop their worker when
    /// they end.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let pools: Vec<Arc<Pool>> = self.pools().drain().map(|(_, p)| p).collect();
        let idle: Vec<Worker> = pools.iter().flat_map(|p| p.retire(true)).collect();
        futures::future::join_all(idle.into_iter().map(|w| w.shutdown(pool::SHUTDOWN_GRACE))).await;
    }

    /// Per pool: revision id, workers, busy, waiting, restarts.
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut s: Vec<PoolStats> = self.pools().values().map(|p| p.stats()).collect();
        s.sort_by_key(|p| p.revision_id);
        s
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Pool>>> {
        self.inner.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_running(&self) -> Result<()> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::new(
                Code::RuntimeUnavailable,
                "the runtime is shutting down; retry against the new server",
            )
            .retry_after(1));
        }
        Ok(())
    }

    async fn pool_for(&self, module: &ModuleSpec) -> Result<Arc<Pool>> {
        self.check_running()?;
        if let Some(p) = self.pools().get(&module.revision_id) {
            return Ok(p.clone());
        }
        // Slow preparation (an env rebuilt from its lock) happens outside the map lock so
        // other revisions keep serving; a racing caller's identical pool is discarded.
        self.inner
            .envs
            .ensure_env(&module.env_hash, &module.lock, &|_| {})
            .await?;
        let digest = hex::encode(Sha256::digest(module.source.as_bytes()));
        let dir = self.inner.cfg.data_dir.join("modules").join(format!(
            "{}-{}",
            module.revision_id,
            &digest[..12]
        ));
        let path = write_module(&dir, module).await?;
        let cfg = &self.inner.cfg;
        let limits = Limits {
            min: cfg.pool_min,
            max: cfg.pool_max.max(1),
            queue: cfg.queue,
        };
        let pool = Pool::new(module.revision_id, self.launch(module, path), limits);
        self.check_running()?;
        Ok(self
            .pools()
            .entry(module.revision_id)
            .or_insert(pool)
            .clone())
    }

    fn launch(&self, module: &ModuleSpec, module_path: PathBuf) -> Launch {
        let i = &self.inner;
        Launch {
            python: i.envs.python_for(&module.env_hash),
            sdk_dir: i.sdk_dir.clone(),
            module_path,
            filename: module.filename.clone(),
            run_dir: i.run_dir.clone(),
            home: i.home.clone(),
            memory_mb: i.cfg.memory_limit_mb,
            start_timeout: i.cfg.worker_start_timeout,
        }
    }
}

/// The interpreter's real path and version. A pyenv or asdf shim needs its own
/// environment variables, which workers do not get, so workers run the real binary
/// (for a venv, `sys.executable` is the venv's own python, which is what we want).
async fn probe_python(python: &Path) -> Result<(PathBuf, String)> {
    let out = tokio::process::Command::new(python)
        .args(["-c", "import sys, platform; print(sys.executable); print(platform.python_version())"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            Error::new(
                Code::RuntimeUnavailable,
                format!("could not run the Python interpreter '{}': {e}; install Python 3.9+ or set the runtime's python path", python.display()),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some(exe), Some(version)) if !exe.is_empty() => {
            Ok((PathBuf::from(exe), version.trim().to_string()))
        }
        _ => Err(Error::new(
            Code::RuntimeUnavailable,
            format!(
                "the Python interpreter '{}' did not start: {}",
                python.display(),
                env::tail(String::from_utf8_lossy(&out.stderr).trim(), 500)
            ),
        )),
    }
}

/// Write the module under `dir` with a safe version of the user's file name, atomically
/// (a worker starting concurrently never imports half a file).
async fn write_module(dir: &Path, module: &ModuleSpec) -> Result<PathBuf> {
    let base = Path::new(&module.filename)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.ends_with(".py") {
        name.push_str(".py");
    }
    if name.starts_with('.') {
        name.insert_str(0, "feed");
    }
    let io = |p: &Path, e: std::io::Error| {
        Error::internal(format!(
            "could not write the feed module to {}: {e}; check that the data dir is writable",
            p.display()
        ))
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io(dir, e))?;
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}", next_seq()));
    tokio::fs::write(&tmp, &module.source)
        .await
        .map_err(|e| io(&tmp, e))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| io(&path, e))?;
    Ok(path)
}

/// LOAD_ERROR → `invalid_feed_module`, with our on-disk path replaced by the user's file
/// name everywhere it appears.
pub(crate) fn load_error(le: protocol::LoadError, path: &Path, filename: &str) -> Error {
    let ours = path.display().to_string();
    let fix = |s: &str| s.replace(&ours, filename);
    let file = match le.file {
        Some(f) if f == ours => filename.to_string(),
        Some(f) => fix(&f),
        None => filename.to_string(),
    };
    let mut e = Error::new(Code::InvalidFeedModule, fix(&le.message))
        .with("file", file)
        .with(
            "line",
            le.line
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null),
        );
    if !le.traceback.is_empty() {
        e = e.with_traceback(fix(&le.traceback));
    }
    e
}
