//! One feed image: the base image's layers, a dependency layer keyed by the lock's hash (so
//! revisions with the same lock share it, and a code-only change never runs uv), and a code
//! layer; then an OCI config and manifest. Every blob the registry already has is skipped.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::layer::{self, File, Layer};
use crate::registry::{self, DOCKER_LIST, ImageRef, OCI_INDEX, OCI_MANIFEST, Registry};

/// Where the code and the dependencies go in the image.
pub const FEED_DIR: &str = "/opt/sluice/feed";
pub const DEPS_DIR: &str = "/opt/sluice/deps";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Fixed creation time: the same inputs give the same digest.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// Everything one build needs, already read from files.
pub struct BuildInput {
    pub base: ImageRef,
    pub image: ImageRef,
    pub feed: String,
    pub source: Vec<u8>,
    pub lock: Option<Vec<u8>>,
    /// Dependencies already installed (instead of running uv), keyed by the lock all the same.
    pub deps_dir: Option<PathBuf>,
    /// Scratch space for uv.
    pub work_dir: PathBuf,
    /// The uv binary and the target of the wheels it picks.
    pub uv: String,
    /// `X.Y`; `None` takes the base image's (its `PYTHON_VERSION`), which is what the
    /// dependency layer's wheels and the `.pth` file's site-packages must match.
    pub python_version: Option<String>,
    pub python_platform: String,
    /// Registry connections; the same one twice when base and image share a host.
    pub base_registry: std::sync::Arc<Registry>,
    pub registry: std::sync::Arc<Registry>,
}

/// What a build did; the test asserts on it and `sluice build` prints it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub digest: String,
    pub pushed_blobs: usize,
    pub skipped_blobs: usize,
    pub deps_cached: bool,
    pub layers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("base image {0}: {1}")]
    Base(String, String),
    #[error("uv: {0}")]
    Uv(String),
}

/// The key of a dependency layer: the lock and where its wheels must run.
pub fn lock_hash(lock: &[u8], python_version: &str, platform: &str) -> String {
    let mut key = lock.to_vec();
    key.extend_from_slice(format!("\n{python_version}\n{platform}").as_bytes());
    layer::sha256(&key)["sha256:".len()..][..16].to_string()
}

/// Where an image's base comes from and where it goes.
#[derive(Clone, Copy)]
struct Target<'a> {
    base: &'a ImageRef,
    image: &'a ImageRef,
    base_registry: &'a Registry,
    registry: &'a Registry,
}

impl BuildInput {
    fn target(&self) -> Target<'_> {
        Target {
            base: &self.base,
            image: &self.image,
            base_registry: &self.base_registry,
            registry: &self.registry,
        }
    }
}

async fn ensure_blob(
    input: Target<'_>,
    report: &mut Report,
    digest: &str,
    bytes: impl AsyncFnOnce() -> Result<Vec<u8>, Error>,
) -> Result<(), Error> {
    let repo = &input.image.repository;
    if input.registry.blob_exists(repo, digest).await? {
        report.skipped_blobs += 1;
        return Ok(());
    }
    if input.base.registry == input.image.registry
        && input
            .registry
            .mount_blob(repo, digest, &input.base.repository)
            .await?
    {
        report.skipped_blobs += 1;
        return Ok(());
    }
    let bytes = bytes().await?;
    input.registry.put_blob(repo, digest, &bytes).await?;
    report.pushed_blobs += 1;
    Ok(())
}

/// Resolve the base image to one linux/amd64 manifest and its config.
async fn base_image(input: Target<'_>) -> Result<(Value, Value), Error> {
    let b = &input.base;
    let reg = &input.base_registry;
    let bad = |m: &str| Error::Base(b.to_string(), m.to_string());
    let (bytes, media, _) = reg
        .get_manifest(&b.repository, &b.reference)
        .await?
        .ok_or_else(|| bad("not found"))?;
    let mut manifest: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
    if media.starts_with(OCI_INDEX) || media.starts_with(DOCKER_LIST) {
        let entry = manifest["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|e| {
                    e["platform"]["os"] == "linux" && e["platform"]["architecture"] == "amd64"
                })
            })
            .ok_or_else(|| bad("no linux/amd64 image in its index"))?;
        let digest = entry["digest"].as_str().unwrap_or_default().to_string();
        let (bytes, _, _) = reg
            .get_manifest(&b.repository, &digest)
            .await?
            .ok_or_else(|| bad("index entry missing"))?;
        manifest = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest without config"))?;
    let config: Value = serde_json::from_slice(&reg.get_blob(&b.repository, config_digest).await?)
        .map_err(|e| bad(&e.to_string()))?;
    Ok((manifest, config))
}

/// The Python version (`X.Y`) of an image config's environment: `PYTHON_VERSION`, which the
/// official Python images set (e.g. `3.12.7`) and images built on them inherit.
pub fn python_version_of(config: &Value) -> Option<String> {
    let full = config["Env"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix("PYTHON_VERSION="))?;
    let mut parts = full.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (number(major) && number(minor)).then(|| format!("{major}.{minor}"))
}

/// The dependency layer: found in the registry under `deps-<lock hash>`, or built and pushed.
async fn deps_layer(
    input: &BuildInput,
    python_version: &str,
    lock: &[u8],
    report: &mut Report,
) -> Result<(String, String, u64), Error> {
    let key = lock_hash(lock, python_version, &input.python_platform);
    let tag = format!("deps-{key}");
    let repo = &input.image.repository;
    if let Some((bytes, _, _)) = input.registry.get_manifest(repo, &tag).await? {
        let m: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Uv(e.to_string()))?;
        let cfg: Value = serde_json::from_slice(
            &input
                .registry
                .get_blob(repo, m["config"]["digest"].as_str().unwrap_or_default())
                .await?,
        )
        .map_err(|e| Error::Uv(e.to_string()))?;
        if let (Some(l), Some(diff)) = (
            m["layers"][0].as_object(),
            cfg["rootfs"]["diff_ids"][0].as_str(),
        ) {
            report.deps_cached = true;
            eprintln!("deps: reusing the layer of lock {key}");
            return Ok((
                l["digest"].as_str().unwrap_or_default().into(),
                diff.into(),
                l["size"].as_u64().unwrap_or(0),
            ));
        }
    }
    let dir = match &input.deps_dir {
        Some(d) => d.clone(),
        None => install_with_uv(input, python_version, lock, &key).await?,
    };
    let layer = layer::from_dir(&dir, DEPS_DIR)?;
    eprintln!(
        "deps: built a {} byte layer for lock {key}",
        layer.bytes.len()
    );
    ensure_blob(input.target(), report, &layer.digest, async || {
        Ok(layer.bytes.clone())
    })
    .await?;
    // A one-layer image under deps-<key> is how the next build finds this layer.
    let config = json!({"architecture": "amd64", "os": "linux", "created": CREATED,
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}});
    let config = serde_json::to_vec(&config).expect("json");
    let config_digest = layer::sha256(&config);
    ensure_blob(input.target(), report, &config_digest, async || {
        Ok(config.clone())
    })
    .await?;
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": layer.digest, "size": layer.bytes.len()}]});
    input
        .registry
        .put_manifest(
            repo,
            &tag,
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).expect("json"),
        )
        .await?;
    Ok((layer.digest, layer.diff_id, layer.bytes.len() as u64))
}

async fn install_with_uv(
    input: &BuildInput,
    python_version: &str,
    lock: &[u8],
    key: &str,
) -> Result<PathBuf, Error> {
    let dir = input.work_dir.join(format!("deps-{key}"));
    let lock_path = input.work_dir.join(format!("lock-{key}.txt"));
    tokio::fs::create_dir_all(&input.work_dir).await?;
    tokio::fs::write(&lock_path, lock).await?;
    eprintln!(
        "deps: uv pip install for Python {python_version} on {}",
        input.python_platform
    );
    let out = tokio::process::Command::new(&input.uv)
        .args([
            "pip",
            "install",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--no-compile",
        ])
        .args([
            "--python-version",
            python_version,
            "--python-platform",
            &input.python_platform,
        ])
        .arg("--target")
        .arg(&dir)
        .arg("-r")
        .arg(&lock_path)
        // Trust the image's own certificate store (where a company adds the CA of its
        // TLS-inspecting proxy or private index), not only the roots uv was built with.
        // Both names: `UV_SYSTEM_CERTS` since uv 0.10, `UV_NATIVE_TLS` before.
        .env("UV_SYSTEM_CERTS", "true")
        .env("UV_NATIVE_TLS", "true")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Uv(format!("cannot run {}: {e}", input.uv)))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(Error::Uv(format!("uv pip install failed ({})", out.status)));
    }
    Ok(dir)
}

/// The base interpreter's site-packages in `python:X.Y-slim`-style images.
pub fn site_packages(python_version: &str) -> String {
    format!("/usr/local/lib/python{python_version}/site-packages")
}

/// The code, and a `.pth` file that puts the dependency layer on the base interpreter's path:
/// the agent's workers run with a cleared environment (no PYTHONPATH), and a `.pth` in
/// site-packages is read all the same.
fn code_layer(input: &BuildInput, python_version: &str) -> std::io::Result<Layer> {
    layer::from_files(vec![
        File {
            path: format!("{FEED_DIR}/feed.py"),
            mode: 0o644,
            contents: input.source.clone(),
        },
        File {
            path: format!("{}/sluice-deps.pth", site_packages(python_version)),
            mode: 0o644,
            contents: format!("{DEPS_DIR}\n").into_bytes(),
        },
    ])
}

/// An image being put together: the base's layers (already in the target repository) and
/// what is added on top.
struct Composed {
    layers: Vec<Value>,
    diff_ids: Vec<Value>,
    history: Vec<Value>,
    /// The base's config (`Env`, `Entrypoint`, ...), to be adjusted.
    config: Value,
    architecture: String,
    os: String,
}

/// Resolve the base image and make its layers present in the target repository (there
/// already, mounted from the base repository on the same registry, or copied).
async fn from_base(t: Target<'_>, report: &mut Report) -> Result<Composed, Error> {
    let (base_manifest, base_config) = base_image(t).await?;
    let mut layers: Vec<Value> = Vec::new();
    for l in base_manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        ensure_blob(t, report, &digest, async || {
            Ok(t.base_registry
                .get_blob(&t.base.repository, &digest)
                .await?)
        })
        .await?;
        let media = l["mediaType"].as_str().unwrap_or(LAYER_GZIP);
        let media = if media.contains("docker") {
            LAYER_GZIP
        } else {
            media
        };
        layers.push(json!({"mediaType": media, "digest": digest, "size": l["size"]}));
    }
    eprintln!("base: {} with {} layers", t.base, layers.len());
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut config = base_config["config"].clone();
    if !config.is_object() {
        config = json!({});
    }
    Ok(Composed {
        layers,
        diff_ids: list(&base_config["rootfs"]["diff_ids"]),
        history: list(&base_config["history"]),
        config,
        architecture: base_config["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .into(),
        os: base_config["os"].as_str().unwrap_or("linux").into(),
    })
}

impl Composed {
    /// Add a layer already in the target repository.
    fn push_layer(&mut self, digest: &str, diff_id: &str, size: u64, created_by: String) {
        self.layers
            .push(json!({"mediaType": LAYER_GZIP, "digest": digest, "size": size}));
        self.diff_ids.push(diff_id.into());
        self.history
            .push(json!({"created": CREATED, "created_by": created_by}));
    }

    /// Push a layer made here and add it.
    async fn add(
        &mut self,
        t: Target<'_>,
        report: &mut Report,
        layer: &Layer,
        created_by: String,
    ) -> Result<(), Error> {
        ensure_blob(t, report, &layer.digest, async || Ok(layer.bytes.clone())).await?;
        self.push_layer(
            &layer.digest,
            &layer.diff_id,
            layer.bytes.len() as u64,
            created_by,
        );
        Ok(())
    }

    /// Label the image with its base, push its config and manifest; the manifest's digest.
    async fn finish(mut self, t: Target<'_>, report: &mut Report) -> Result<String, Error> {
        let mut labels = self.config["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert(
            "org.opencontainers.image.base.name".into(),
            t.base.to_string().into(),
        );
        self.config["Labels"] = labels.into();
        let config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "created": CREATED,
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
            "history": self.history,
        });
        let config = serde_json::to_vec(&config).expect("json");
        let config_digest = layer::sha256(&config);
        ensure_blob(t, report, &config_digest, async || Ok(config.clone())).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config.len()},
            "layers": self.layers,
        });
        report.layers = self.layers.len();
        let bytes = serde_json::to_vec(&manifest).expect("json");
        let digest = t
            .registry
            .put_manifest(
                &t.image.repository,
                &t.image.reference,
                OCI_MANIFEST,
                &bytes,
            )
            .await?;
        eprintln!(
            "pushed {}@{digest} ({} blobs pushed, {} already there)",
            t.image, report.pushed_blobs, report.skipped_blobs
        );
        Ok(digest)
    }
}

/// Build and push one image; returns what was done.
pub async fn build(input: &BuildInput) -> Result<Report, Error> {
    let t = input.target();
    let mut report = Report::default();
    let mut image = from_base(t, &mut report).await?;
    let python_version = match &input.python_version {
        Some(v) => v.clone(),
        None => python_version_of(&image.config).ok_or_else(|| {
            Error::Base(
                input.base.to_string(),
                "its environment names no Python version (PYTHON_VERSION, as the official \
                 Python images set it): pass --python-version X.Y"
                    .into(),
            )
        })?,
    };
    eprintln!("base: Python {python_version}");
    if let Some(lock) = &input.lock {
        let (digest, diff_id, size) = deps_layer(input, &python_version, lock, &mut report).await?;
        image.push_layer(
            &digest,
            &diff_id,
            size,
            "sluice build: dependencies (uv)".into(),
        );
    }
    let code = code_layer(input, &python_version)?;
    image
        .add(
            t,
            &mut report,
            &code,
            format!("sluice build: feed {}", input.feed),
        )
        .await?;

    let cfg = &mut image.config;
    let mut env: Vec<Value> = cfg["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.as_str().unwrap_or("").starts_with("PYTHONPATH="))
        .collect();
    env.push(format!("PYTHONPATH={DEPS_DIR}").into());
    env.push(format!("SLUICE_FEED_MODULE={FEED_DIR}/feed.py").into());
    env.push(format!("SLUICE_FEED={}", input.feed).into());
    cfg["Env"] = env.into();
    cfg["Entrypoint"] = json!(["sluice", "agent"]);
    cfg["Cmd"] = json!([]);
    cfg["User"] = "65532:65532".into();
    cfg["WorkingDir"] = FEED_DIR.into();
    cfg["ExposedPorts"] = json!({"8080/tcp": {}});
    let mut labels = cfg["Labels"].as_object().cloned().unwrap_or_default();
    labels.insert("dev.sluice.feed".into(), input.feed.clone().into());
    cfg["Labels"] = labels.into();
    report.digest = image.finish(t, &mut report).await?;
    Ok(report)
}

/// What `sluice image` needs: a Python base (e.g. `python:3.12-slim`) and the two binaries
/// it adds.
pub struct RuntimeInput {
    pub base: ImageRef,
    pub image: ImageRef,
    /// The `sluice` executable to put in the image (by default, the one running).
    pub sluice: Vec<u8>,
    /// The `uv` executable: drafts run by the server and `sluice build` resolve with it.
    pub uv: Vec<u8>,
    pub base_registry: std::sync::Arc<Registry>,
    pub registry: std::sync::Arc<Registry>,
}

/// Build and push Sluice's one image: the base's Python plus `sluice` and `uv` in
/// `/usr/local/bin`, run as uid 65532. It is the server's, the operator's and the builder's
/// image (`sluice server`, `sluice operator`, `sluice build`) and the default runtime base of
/// feed images (whose entrypoint is `sluice agent`). Reproducible like feed images: the same
/// base and binaries give the same digest.
pub async fn runtime_image(input: &RuntimeInput) -> Result<Report, Error> {
    let t = Target {
        base: &input.base,
        image: &input.image,
        base_registry: &input.base_registry,
        registry: &input.registry,
    };
    let mut report = Report::default();
    let mut image = from_base(t, &mut report).await?;
    let binaries = layer::from_files(vec![
        File {
            path: "/usr/local/bin/sluice".into(),
            mode: 0o755,
            contents: input.sluice.clone(),
        },
        File {
            path: "/usr/local/bin/uv".into(),
            mode: 0o755,
            contents: input.uv.clone(),
        },
    ])?;
    image
        .add(
            t,
            &mut report,
            &binaries,
            "sluice image: sluice and uv".into(),
        )
        .await?;
    let cfg = &mut image.config;
    cfg["Entrypoint"] = json!(["sluice"]);
    cfg["Cmd"] = json!(["server"]);
    cfg["User"] = "65532:65532".into();
    cfg["ExposedPorts"] = json!({"8080/tcp": {}, "5433/tcp": {}});
    report.digest = image.finish(t, &mut report).await?;
    Ok(report)
}

/// Push an image made of the given layers and config (for base images made here, e.g. in tests
/// or air-gapped installs). Returns the manifest digest.
pub async fn push_image(
    registry: &Registry,
    image: &ImageRef,
    layers: &[Layer],
    config: Value,
) -> Result<String, Error> {
    let repo = &image.repository;
    let mut config = config;
    config["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()});
    let config = serde_json::to_vec(&config).expect("json");
    let config_digest = layer::sha256(&config);
    for (digest, bytes) in layers
        .iter()
        .map(|l| (&l.digest, &l.bytes))
        .chain([(&config_digest, &config)])
    {
        if !registry.blob_exists(repo, digest).await? {
            registry.put_blob(repo, digest, bytes).await?;
        }
    }
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": LAYER_GZIP, "digest": l.digest, "size": l.bytes.len()})).collect::<Vec<_>>(),
    });
    Ok(registry
        .put_manifest(
            repo,
            &image.reference,
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).expect("json"),
        )
        .await?)
}
