//! `sluice build`: flags, then one [`crate::image::build`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::image::{BuildInput, Report, build};
use crate::registry::{ImageRef, Registry, basic_from_docker_config};

/// Flags of `sluice build`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// The feed module.
    #[arg(long)]
    pub source: PathBuf,
    /// The dependency lock (pinned requirements, as `uv pip compile` writes them).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// The base runtime image (Python plus the sluice agent).
    #[arg(long, env = "SLUICE_RUNTIME_IMAGE")]
    pub base: String,
    /// The image to push, host/repository:tag.
    #[arg(long)]
    pub image: String,
    /// The function the image serves.
    #[arg(long)]
    pub feed: String,
    /// Scratch directory for uv.
    #[arg(long, default_value = "/tmp/sluice-build")]
    pub work_dir: PathBuf,
    /// Use these already-installed dependencies instead of running uv.
    #[arg(long)]
    pub deps_dir: Option<PathBuf>,
    #[arg(long, default_value = "uv")]
    pub uv: String,
    /// Python version of the base image, for the wheels uv picks.
    #[arg(long, default_value = "3.12")]
    pub python_version: String,
    #[arg(long, default_value = "x86_64-manylinux_2_28")]
    pub python_platform: String,
    /// Talk plain HTTP to the registries (always so for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
    /// Directory with a Docker config.json holding registry credentials.
    #[arg(long, env = "DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// Also write the pushed digest to this file (a Job uses /dev/termination-log).
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
    h == "localhost" || h == "127.0.0.1" || h == "[::1]"
}

/// Run a build from flags.
pub async fn run(args: BuildArgs) -> anyhow::Result<Report> {
    let base: ImageRef = args.base.parse().map_err(anyhow::Error::msg)?;
    let image: ImageRef = args.image.parse().map_err(anyhow::Error::msg)?;
    let docker_config: serde_json::Value = match &args.docker_config {
        Some(dir) => {
            let path = dir.join("config.json");
            match std::fs::read(&path) {
                Ok(b) => serde_json::from_slice(&b)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
                Err(_) => serde_json::Value::Null,
            }
        }
        None => serde_json::Value::Null,
    };
    let connect = |host: &str| -> anyhow::Result<Arc<Registry>> {
        let plain = args.plain_http || is_loopback(host);
        Ok(Arc::new(Registry::new(
            host,
            plain,
            basic_from_docker_config(&docker_config, host),
        )?))
    };
    let registry = connect(&image.registry)?;
    let base_registry = if base.registry == image.registry {
        registry.clone()
    } else {
        connect(&base.registry)?
    };
    let input = BuildInput {
        source: std::fs::read(&args.source)
            .with_context(|| format!("cannot read {}", args.source.display()))?,
        lock: match &args.lock {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        },
        base,
        image,
        feed: args.feed.clone(),
        deps_dir: args.deps_dir.clone(),
        work_dir: args.work_dir.clone(),
        uv: args.uv.clone(),
        python_version: args.python_version.clone(),
        python_platform: args.python_platform.clone(),
        base_registry,
        registry,
    };
    let report = build(&input).await?;
    if let Some(path) = &args.digest_file {
        std::fs::write(path, &report.digest)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}@{}", input.image, report.digest);
    Ok(report)
}
