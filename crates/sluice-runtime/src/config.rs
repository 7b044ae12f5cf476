//! The runtime's configuration: a plain struct filled once by the binary (flags, env, TOML)
//! and passed down; nothing in this crate reads environment variables.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where SDK copies, uv, environments, module files and worker sockets live.
    pub data_dir: PathBuf,
    /// The base interpreter: runs modules without dependencies and seeds every venv.
    pub python: PathBuf,
    /// A uv binary to use; otherwise `uv` on PATH, else one provisioned into the data dir.
    pub uv: Option<PathBuf>,
    /// uv's download cache; `<data_dir>/uv-cache` when unset. Shareable between data dirs.
    pub uv_cache_dir: Option<PathBuf>,
    /// Workers `warm` starts per pool and the pool refills to after a crash.
    pub pool_min: usize,
    /// Most workers (so concurrent calls) per pool.
    pub pool_max: usize,
    /// Most callers waiting for a worker per pool before calls get `too_many_requests`.
    pub queue: usize,
    /// Longest a call may keep a worker busy (time spent waiting for a slow consumer of
    /// the stream does not count).
    pub call_timeout: Duration,
    /// Address-space limit the worker sets on itself (`RLIMIT_AS`).
    pub memory_limit_mb: u64,
    /// Longest a worker may take to connect and import the module.
    pub worker_start_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: PathBuf::from(".sluice"),
            python: PathBuf::from("python3"),
            uv: None,
            uv_cache_dir: None,
            pool_min: 1,
            pool_max: 4,
            queue: 64,
            call_timeout: Duration::from_secs(60),
            memory_limit_mb: 2048,
            worker_start_timeout: Duration::from_secs(30),
        }
    }
}
