//! `sluice build`: flags, then one [`crate::image::build`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::image::{BuildInput, Report, RuntimeInput, build, runtime_image};
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
    /// Python version (X.Y) of the base image, for the wheels uv picks and the site-packages
    /// the dependencies are put on; default: the base image's `PYTHON_VERSION`.
    #[arg(long)]
    pub python_version: Option<String>,
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

/// Connections to the base's registry and the target's (one when they share a host), with
/// the credentials of `$DOCKER_CONFIG/config.json` when there is one.
fn connect(
    base: &ImageRef,
    image: &ImageRef,
    plain_http: bool,
    docker_config: Option<&std::path::Path>,
) -> anyhow::Result<(Arc<Registry>, Arc<Registry>)> {
    let docker_config: serde_json::Value = match docker_config {
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
        let plain = plain_http || is_loopback(host);
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
    Ok((base_registry, registry))
}

fn finish(image: &ImageRef, report: &Report, digest_file: Option<&PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = digest_file {
        std::fs::write(path, &report.digest)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{image}@{}", report.digest);
    Ok(())
}

/// Run a build from flags.
pub async fn run(args: BuildArgs) -> anyhow::Result<Report> {
    let base: ImageRef = args.base.parse().map_err(anyhow::Error::msg)?;
    let image: ImageRef = args.image.parse().map_err(anyhow::Error::msg)?;
    let (base_registry, registry) = connect(
        &base,
        &image,
        args.plain_http,
        args.docker_config.as_deref(),
    )?;
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
    finish(&input.image, &report, args.digest_file.as_ref())?;
    Ok(report)
}

/// Flags of `sluice image`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// The Python base image, e.g. docker.io/library/python:3.12-slim (or a mirror of it).
    #[arg(long = "from")]
    pub from: String,
    /// The image to push, host/repository:tag.
    #[arg(long)]
    pub image: String,
    /// The sluice executable to put in the image; default the one running (build it with
    /// `cargo build --release` on the image's platform first).
    #[arg(long)]
    pub sluice: Option<PathBuf>,
    /// The uv executable to put in the image; default the `uv` on PATH.
    #[arg(long)]
    pub uv: Option<PathBuf>,
    /// Talk plain HTTP to the registries (always so for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
    /// Directory with a Docker config.json holding registry credentials.
    #[arg(long, env = "DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// Also write the pushed digest to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
}

/// Build Sluice's own image (server, operator, builder, and the runtime base of feeds).
pub async fn run_image(args: ImageArgs) -> anyhow::Result<Report> {
    let base: ImageRef = args.from.parse().map_err(anyhow::Error::msg)?;
    let image: ImageRef = args.image.parse().map_err(anyhow::Error::msg)?;
    let (base_registry, registry) = connect(
        &base,
        &image,
        args.plain_http,
        args.docker_config.as_deref(),
    )?;
    let sluice = match &args.sluice {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find the running sluice executable")?,
    };
    let uv = match &args.uv {
        Some(p) => p.clone(),
        None => std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("uv"))
                    .find(|p| p.is_file())
            })
            .context("no uv on PATH: install it (`pip install uv`) or pass --uv")?,
    };
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let input = RuntimeInput {
        sluice: read(&sluice)?,
        uv: read(&uv)?,
        base,
        image,
        base_registry,
        registry,
    };
    let report = runtime_image(&input).await?;
    finish(&input.image, &report, args.digest_file.as_ref())?;
    Ok(report)
}
