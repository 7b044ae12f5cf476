//! Configuration, parsed once: clap flags (each with a `SLUICE_*` environment variable)
//! over an optional TOML file over defaults, into one typed [`ServerConfig`] that is passed
//! down. Nothing below `main` reads the environment.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use sluice_runtime::sched::CpuScheduling;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Flags shared by `sluice up` and `sluice server`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML file with server settings (flags and environment override it)
    #[arg(long, env = "SLUICE_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Where Sluice keeps its database, environments and sample data
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address for the API, feeds and web UI
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PostgreSQL wire protocol address (served from issue #3 on)
    #[arg(long, env = "SLUICE_PG_LISTEN")]
    pub pg_listen: Option<SocketAddr>,
    /// Metadata database: sqlite:///path or postgres://... (default: SQLite in the data dir)
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Admin key to create or accept (32 characters or more)
    #[arg(long, env = "SLUICE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// 32-byte key (64 hex characters) that encrypts data-source credentials
    #[arg(long, env = "SLUICE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// URL clients use to reach this server, for links (default: http://LISTEN)
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Python interpreter for feeds without dependencies, and base for uv environments
    #[arg(long, env = "SLUICE_PYTHON")]
    pub python: Option<PathBuf>,
    /// uv binary (default: on PATH, else provisioned into the data dir from PyPI)
    #[arg(long, env = "SLUICE_UV")]
    pub uv: Option<PathBuf>,
    /// uv's package cache (default: in the data dir); may be shared between servers
    #[arg(long, env = "SLUICE_UV_CACHE_DIR")]
    pub uv_cache_dir: Option<PathBuf>,
    /// Per-call time limit in seconds
    #[arg(long, env = "SLUICE_CALL_TIMEOUT")]
    pub call_timeout: Option<u64>,
    /// Memory limit of one worker process, in MiB
    #[arg(long, env = "SLUICE_WORKER_MEMORY_MB")]
    pub worker_memory_mb: Option<u64>,
    /// Most worker processes per live feed
    #[arg(long, env = "SLUICE_WORKERS_MAX")]
    pub workers_max: Option<usize>,
    /// Concurrent requests per feed before queueing
    #[arg(long, env = "SLUICE_FEED_CONCURRENCY")]
    pub feed_concurrency: Option<usize>,
    /// Requests allowed to wait per feed before 429
    #[arg(long, env = "SLUICE_FEED_QUEUE")]
    pub feed_queue: Option<usize>,
    /// Log as JSON lines instead of text
    #[arg(long, env = "SLUICE_LOG_JSON")]
    pub log_json: bool,
    /// Where feeds run: `local` (Python workers in this process) or `kubernetes` (Feed
    /// objects, served by their in-cluster agent)
    #[arg(long, env = "SLUICE_RUNTIME", value_parser = RuntimeKind::parse)]
    pub runtime: Option<RuntimeKind>,
    /// CPU scheduling of the server and its workers: `batch` (throughput, the default) or
    /// `normal` (keep the policy the server was started with)
    #[arg(long, env = "SLUICE_CPU_SCHEDULING", value_parser = CpuScheduling::parse)]
    pub cpu_scheduling: Option<CpuScheduling>,
    /// Threads serving HTTP requests (default: half the cores, at least one); streamed
    /// results, OData and PostgreSQL sessions run on a pool with a thread per core
    #[arg(long, env = "SLUICE_IO_THREADS", value_parser = clap::value_parser!(u16).range(1..=MAX_IO_THREADS as i64))]
    pub io_threads: Option<u16>,
}

/// Where feeds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Warm Python worker pools supervised by this process.
    #[default]
    Local,
    /// Feed custom resources reconciled by `sluice operator`; the gateway calls each feed's
    /// agent Service.
    Kubernetes,
}

impl RuntimeKind {
    fn parse(s: &str) -> Result<RuntimeKind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(RuntimeKind::Local),
            "kubernetes" | "k8s" => Ok(RuntimeKind::Kubernetes),
            other => Err(format!(
                "unknown runtime '{other}': use `local` or `kubernetes`"
            )),
        }
    }
}

/// Where a Kubernetes client would find its API, as kube's own `Config::infer` looks:
/// `$KUBECONFIG`, then `~/.kube/config`, then the pod's service account. Checked at startup
/// so a server configured for Kubernetes fails with what to do rather than at first deploy.
pub fn check_kube_config(
    kubeconfig: Option<&std::ffi::OsStr>,
    home: Option<&std::path::Path>,
    in_cluster: bool,
) -> anyhow::Result<()> {
    if in_cluster {
        return Ok(());
    }
    if let Some(list) = kubeconfig.filter(|k| !k.is_empty()) {
        if std::env::split_paths(list).any(|p| p.is_file()) {
            return Ok(());
        }
        bail!(
            "runtime = \"kubernetes\" but KUBECONFIG ({}) names no readable file: point it at the cluster's kubeconfig, run the server in a pod of the cluster, or set runtime = \"local\"",
            list.to_string_lossy()
        );
    }
    if home.is_some_and(|h| h.join(".kube/config").is_file()) {
        return Ok(());
    }
    bail!(
        "runtime = \"kubernetes\" but no Kubernetes API is configured: set KUBECONFIG (or write ~/.kube/config), run the server in a pod of the cluster, or set runtime = \"local\" ([runtime] kind in the config file, or SLUICE_RUNTIME)"
    )
}

/// The TOML file's shape. Every field is optional; see `docs/config.md`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    pg_listen: Option<SocketAddr>,
    database_url: Option<String>,
    admin_key: Option<String>,
    master_key: Option<String>,
    public_url: Option<String>,
    cpu_scheduling: Option<CpuScheduling>,
    io_threads: Option<u16>,
    #[serde(default)]
    runtime: RuntimeFile,
    #[serde(default)]
    gateway: GatewayFile,
    #[serde(default)]
    odata: ODataFile,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RuntimeFile {
    kind: Option<RuntimeKind>,
    python: Option<PathBuf>,
    uv: Option<PathBuf>,
    uv_cache_dir: Option<PathBuf>,
    workers_min: Option<usize>,
    workers_max: Option<usize>,
    queue: Option<usize>,
    call_timeout: Option<u64>,
    worker_memory_mb: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    feed_concurrency: Option<usize>,
    feed_queue: Option<usize>,
    cache_mb: Option<usize>,
}

/// OData server-side paging: the cursors that let a paged read call the feed once.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ODataFile {
    cursor_ttl: Option<u64>,
    cursors_mb: Option<usize>,
    cursor_mb: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The PostgreSQL wire endpoint; connection files for Tableau and Qlik point there.
    pub pg_listen: SocketAddr,
    pub database_url: Option<String>,
    pub admin_key: Option<String>,
    pub master_key: Option<[u8; 32]>,
    pub log_json: bool,
    /// Applied by `main` before the async runtime starts (see `sluice_runtime::sched`).
    pub cpu_scheduling: CpuScheduling,
    /// Threads of the runtime serving HTTP; `main` builds it (see [`default_io_threads`]).
    pub io_threads: usize,
    pub runtime_kind: RuntimeKind,
    pub runtime: sluice_runtime::RuntimeConfig,
    pub gateway: sluice_gateway::GatewayConfig,
    pub odata: sluice_odata::PagingConfig,
}

impl ServerConfig {
    pub fn load(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(".sluice"));
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()?.join(data_dir)
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal address"));
        let pg_listen = args
            .pg_listen
            .or(file.pg_listen)
            .unwrap_or_else(|| "127.0.0.1:5433".parse().expect("literal address"));
        let admin_key = args.admin_key.clone().or(file.admin_key);
        if let Some(k) = admin_key.as_ref().filter(|k| k.len() < 32) {
            bail!(
                "SLUICE_ADMIN_KEY is {} characters long: use 32 or more (e.g. `openssl rand -hex 24`)",
                k.len()
            );
        }
        let master_key = match args.master_key.clone().or(file.master_key) {
            Some(hex_key) => Some(parse_master_key(&hex_key)?),
            None => None,
        };
        // Without an explicit URL the server fills it in once it knows its bound address.
        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_default();
        let rf = file.runtime;
        let runtime_kind = args.runtime.or(rf.kind).unwrap_or_default();
        if runtime_kind == RuntimeKind::Kubernetes {
            check_kube_config(
                std::env::var_os("KUBECONFIG").as_deref(),
                std::env::var_os("HOME").map(PathBuf::from).as_deref(),
                std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            )?;
        }
        let defaults = sluice_runtime::RuntimeConfig {
            data_dir: data_dir.clone(),
            ..Default::default()
        };
        let runtime = sluice_runtime::RuntimeConfig {
            python: args
                .python
                .clone()
                .or(rf.python)
                .unwrap_or(defaults.python.clone()),
            uv: args.uv.clone().or(rf.uv),
            uv_cache_dir: args.uv_cache_dir.clone().or(rf.uv_cache_dir),
            pool_min: rf.workers_min.unwrap_or(defaults.pool_min),
            pool_max: args
                .workers_max
                .or(rf.workers_max)
                .unwrap_or(defaults.pool_max),
            queue: rf.queue.unwrap_or(defaults.queue),
            call_timeout: args
                .call_timeout
                .or(rf.call_timeout)
                .map(Duration::from_secs)
                .unwrap_or(defaults.call_timeout),
            memory_limit_mb: args
                .worker_memory_mb
                .or(rf.worker_memory_mb)
                .unwrap_or(defaults.memory_limit_mb),
            ..defaults
        };
        let gf = file.gateway;
        let gd = sluice_gateway::GatewayConfig::default();
        let gateway = sluice_gateway::GatewayConfig {
            public_url,
            feed_concurrency: args
                .feed_concurrency
                .or(gf.feed_concurrency)
                .unwrap_or(gd.feed_concurrency),
            feed_queue: args.feed_queue.or(gf.feed_queue).unwrap_or(gd.feed_queue),
            cache_bytes: gf.cache_mb.map(|m| m << 20).unwrap_or(gd.cache_bytes),
            ..gd
        };
        let of = file.odata;
        let od = sluice_odata::PagingConfig::default();
        let odata = sluice_odata::PagingConfig {
            ttl: of.cursor_ttl.map(Duration::from_secs).unwrap_or(od.ttl),
            max_bytes: of.cursors_mb.map(|m| m << 20).unwrap_or(od.max_bytes),
            max_cursor_bytes: of.cursor_mb.map(|m| m << 20).unwrap_or(od.max_cursor_bytes),
        };
        if odata.max_cursor_bytes > odata.max_bytes {
            bail!(
                "[odata] cursor_mb ({}) is larger than cursors_mb ({}): one cursor cannot hold more than all of them",
                odata.max_cursor_bytes >> 20,
                odata.max_bytes >> 20
            );
        }
        Ok(ServerConfig {
            data_dir,
            listen,
            pg_listen,
            database_url: args.database_url.clone().or(file.database_url),
            admin_key,
            master_key,
            log_json: args.log_json,
            cpu_scheduling: args
                .cpu_scheduling
                .or(file.cpu_scheduling)
                .unwrap_or_default(),
            io_threads: match args.io_threads.or(file.io_threads) {
                Some(n) if !(1..=MAX_IO_THREADS).contains(&n) => bail!(
                    "io_threads = {n} is out of range: use 1 to {MAX_IO_THREADS}, or leave it out for half the cores ({})",
                    default_io_threads()
                ),
                Some(n) => n.into(),
                None => default_io_threads(),
            },
            runtime_kind,
            runtime,
            gateway,
            odata,
        })
    }
}

/// The most HTTP threads a server may be given (flag, environment or file alike).
const MAX_IO_THREADS: u16 = 1024;

/// Half the cores, at least one: the HTTP path is short (parse, check the key, hand the call
/// to a worker, write the answer), and on few cores more threads cost more in waking each
/// other than they add; everything long runs on the compute pool (one thread per core).
pub fn default_io_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn parse_master_key(s: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(s.trim()).context("SLUICE_MASTER_KEY must be 64 hex characters")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("SLUICE_MASTER_KEY must be 64 hex characters (32 bytes)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `args` loaded with `text` as the TOML file.
    fn load_with_file(text: &str, args: ServerArgs) -> anyhow::Result<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, text).unwrap();
        ServerConfig::load(&ServerArgs {
            config: Some(file),
            ..args
        })
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\npublic_url = \"https://data.example\"\n[runtime]\nworkers_max = 7\ncall_timeout = 5\n[gateway]\nfeed_queue = 3\n[odata]\ncursor_ttl = 60\ncursor_mb = 8\n").unwrap();
        let args = ServerArgs {
            config: Some(file),
            feed_queue: Some(9),
            ..Default::default()
        };
        let c = ServerConfig::load(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.runtime.pool_max, 7);
        assert_eq!(c.runtime.call_timeout, Duration::from_secs(5));
        assert_eq!(c.gateway.feed_queue, 9);
        assert_eq!(c.gateway.public_url, "https://data.example");
        assert!(c.data_dir.is_absolute());
        assert_eq!(c.pg_listen.to_string(), "127.0.0.1:5433", "the default");
        assert_eq!(c.odata.ttl, Duration::from_secs(60));
        assert_eq!(c.odata.max_cursor_bytes, 8 << 20);
        assert_eq!(c.odata.max_bytes, 256 << 20, "the default");
    }

    #[test]
    fn cpu_scheduling_defaults_to_batch_and_the_file_and_flag_can_say_normal() {
        let load = |text: &str, flag: Option<CpuScheduling>| {
            let args = ServerArgs {
                cpu_scheduling: flag,
                ..Default::default()
            };
            load_with_file(text, args)
        };
        assert_eq!(load("", None).unwrap().cpu_scheduling, CpuScheduling::Batch);
        let normal = "cpu_scheduling = \"normal\"\n";
        assert_eq!(
            load(normal, None).unwrap().cpu_scheduling,
            CpuScheduling::Normal
        );
        let flag = Some(CpuScheduling::Batch);
        assert_eq!(
            load(normal, flag).unwrap().cpu_scheduling,
            CpuScheduling::Batch
        );
        let e = format!(
            "{:#}",
            load("cpu_scheduling = \"fast\"\n", None).unwrap_err()
        );
        assert!(e.contains("fast") && e.contains("batch"), "{e}");
    }

    #[test]
    fn io_threads_default_to_half_the_cores_and_the_file_and_flag_set_them() {
        let load = |text: &str, flag: Option<u16>| {
            let args = ServerArgs {
                io_threads: flag,
                ..Default::default()
            };
            load_with_file(text, args)
        };
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(load("", None).unwrap().io_threads, (cores / 2).max(1));
        assert_eq!(load("io_threads = 3\n", None).unwrap().io_threads, 3);
        assert_eq!(load("io_threads = 3\n", Some(2)).unwrap().io_threads, 2);
        let e = format!("{:#}", load("io_threads = 0\n", None).unwrap_err());
        assert!(
            e.contains("io_threads = 0") && e.contains("use 1 to 1024"),
            "{e}"
        );
        let e = format!("{:#}", load("io_threads = 5000\n", None).unwrap_err());
        assert!(e.contains("io_threads = 5000"), "{e}");
    }

    #[test]
    fn the_documented_example_is_a_valid_config() {
        let doc = include_str!("../../../docs/config.md");
        let toml_block = doc
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let parsed: FileConfig =
            toml::from_str(toml_block).expect("docs/config.md's example parses");
        assert_eq!(parsed.runtime.workers_max, Some(4));
        assert_eq!(parsed.gateway.cache_mb, Some(64));
        assert_eq!(parsed.odata.cursor_ttl, Some(300));
    }

    #[test]
    fn runtime_kind_from_file_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "[runtime]\nkind = \"local\"\n").unwrap();
        let args = ServerArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(
            ServerConfig::load(&args).unwrap().runtime_kind,
            RuntimeKind::Local
        );
        assert_eq!(
            ServerConfig::load(&ServerArgs::default())
                .unwrap()
                .runtime_kind,
            RuntimeKind::Local,
            "the default"
        );
        assert_eq!(
            RuntimeKind::parse("Kubernetes"),
            Ok(RuntimeKind::Kubernetes)
        );
        assert!(RuntimeKind::parse("nomad").unwrap_err().contains("local"));
        std::fs::write(&file, "[runtime]\nkind = \"nomad\"\n").unwrap();
        let e = format!(
            "{:#}",
            ServerConfig::load(&ServerArgs {
                config: Some(file),
                ..Default::default()
            })
            .unwrap_err()
        );
        assert!(e.contains("kubernetes"), "{e}");
    }

    #[test]
    fn kubernetes_without_a_kube_config_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_kube_config(None, Some(dir.path()), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("set KUBECONFIG") && e.contains("runtime = \"local\""),
            "{e}"
        );
        let missing = dir.path().join("nope");
        let e = check_kube_config(Some(missing.as_os_str()), None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no readable file"), "{e}");
        assert!(check_kube_config(None, None, true).is_ok(), "in a pod");
        std::fs::create_dir_all(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), "apiVersion: v1\n").unwrap();
        assert!(check_kube_config(None, Some(dir.path()), false).is_ok());
        let kc = dir.path().join(".kube/config");
        assert!(check_kube_config(Some(kc.as_os_str()), None, false).is_ok());
    }

    #[test]
    fn bad_values_are_explained() {
        let args = ServerArgs {
            admin_key: Some("short".into()),
            ..Default::default()
        };
        assert!(
            ServerConfig::load(&args)
                .unwrap_err()
                .to_string()
                .contains("32 or more")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = 1").unwrap();
        let args = ServerArgs {
            config: Some(file),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::load(&args).unwrap_err());
        assert!(e.contains("lisen"), "{e}");
        assert!(parse_master_key("abcd").is_err());
    }
}
