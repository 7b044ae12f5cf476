//! The image builder against a real registry: Debian's `docker-registry` on loopback, checked
//! with `skopeo inspect` and `umoci unpack` (each part skips with a printed reason when its
//! tool is missing: `apt-get install docker-registry skopeo umoci`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_build::image::{BuildInput, Report, build, push_image};
use sluice_build::layer::{self, File};
use sluice_build::registry::{ImageRef, Registry};

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

struct RegistryProcess {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Option<RegistryProcess> {
    start_registry_with("")
}

/// The registry, with `extra` appended to its config (e.g. an `auth:` section).
fn start_registry_with(extra: &str) -> Option<RegistryProcess> {
    let Some(bin) = which("docker-registry") else {
        eprintln!("SKIP: docker-registry is not on PATH (apt-get install docker-registry)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n{extra}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start on {host}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(RegistryProcess {
        child,
        host,
        _dir: dir,
    })
}

/// A small base image standing in for Python slim + the agent: a passwd file and a `sluice`.
async fn push_base(reg: &Registry, host: &str) -> ImageRef {
    push_base_with(reg, host, "test", Some("3.12.7")).await
}

/// The same, tagged `tag`, its environment naming Python `python` (as the official Python
/// images' `PYTHON_VERSION` does), or no version.
async fn push_base_with(reg: &Registry, host: &str, tag: &str, python: Option<&str>) -> ImageRef {
    let base: ImageRef = format!("{host}/sluice/runtime:{tag}").parse().unwrap();
    let f = |path: &str, mode, text: &str| File {
        path: path.into(),
        mode,
        contents: text.as_bytes().to_vec(),
    };
    let layer = layer::from_files(vec![
        f(
            "/etc/passwd",
            0o644,
            "root:x:0:0::/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
        ),
        f("/usr/local/bin/sluice", 0o755, "#!/bin/sh\necho agent\n"),
    ])
    .unwrap();
    let mut env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        "PYTHONPATH=/old".into(),
    ];
    env.extend(python.map(|v| format!("PYTHON_VERSION={v}")));
    let config = json!({"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": env},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "test base"}]});
    push_image(reg, &base, &[layer], config).await.unwrap();
    base
}

fn input(
    reg: &Arc<Registry>,
    base: &ImageRef,
    host: &str,
    tag: &str,
    source: &str,
    deps: &Path,
    work: &Path,
) -> BuildInput {
    BuildInput {
        base: base.clone(),
        image: format!("{host}/sluice/team/sales:{tag}").parse().unwrap(),
        feed: "sales".into(),
        source: source.as_bytes().to_vec(),
        lock: Some(b"tinylib==1.0\n".to_vec()),
        deps_dir: Some(deps.to_path_buf()),
        work_dir: work.to_path_buf(),
        uv: "uv".into(),
        python_version: None,
        python_platform: "x86_64-manylinux_2_28".into(),
        base_registry: reg.clone(),
        registry: reg.clone(),
    }
}

fn skopeo_inspect(args: &[&str]) -> Option<Value> {
    which("skopeo")?;
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--tls-verify=false")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn builds_push_reproducible_images_and_reuse_the_dependency_layer() {
    let Some(proc_) = start_registry() else {
        return;
    };
    let host = proc_.host.clone();
    let reg = Arc::new(Registry::new(&host, true, None).unwrap());
    let base = push_base(&reg, &host).await;

    let tmp = tempfile::tempdir().unwrap();
    let deps = tmp.path().join("deps");
    std::fs::create_dir_all(deps.join("tinylib")).unwrap();
    std::fs::write(deps.join("tinylib/__init__.py"), "VERSION = '1.0'\n").unwrap();
    let source = "import sluice\n\n@sluice.feed\ndef sales():\n    return [{'a': 1}]\n";

    // First build: base layer mounted from the base repository, deps + code + config pushed.
    let first: Report = build(&input(&reg, &base, &host, "r1", source, &deps, tmp.path()))
        .await
        .unwrap();
    assert_eq!(first.layers, 3);
    assert!(!first.deps_cached);
    assert!(first.pushed_blobs >= 3, "{first:?}");

    // Same inputs, same digest, nothing pushed again.
    let again = build(&input(&reg, &base, &host, "r1", source, &deps, tmp.path()))
        .await
        .unwrap();
    assert_eq!(
        again.digest, first.digest,
        "same inputs must give the same digest"
    );
    assert_eq!(again.pushed_blobs, 0, "{again:?}");
    assert!(again.deps_cached);

    // A code-only change: a new image, the dependency layer found by lock hash (the deps dir
    // is gone, so it cannot have been rebuilt), only code + config pushed, within 2 s.
    std::fs::remove_dir_all(&deps).unwrap();
    let started = Instant::now();
    let changed = build(&input(
        &reg,
        &base,
        &host,
        "r2",
        &source.replace("1}", "2}"),
        &deps,
        tmp.path(),
    ))
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert_ne!(changed.digest, first.digest);
    assert!(changed.deps_cached);
    assert_eq!(
        changed.pushed_blobs, 2,
        "code layer and config only: {changed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "a code-only build took {elapsed:?}"
    );
    eprintln!("code-only rebuild and push: {elapsed:?}");

    let image = format!("docker://{host}/sluice/team/sales:r1");
    let Some(inspect) = skopeo_inspect(&[&image]) else {
        eprintln!("SKIP: skopeo is not on PATH (apt-get install skopeo)");
        return;
    };
    assert_eq!(inspect["Digest"], first.digest.as_str());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(inspect["Labels"]["dev.sluice.feed"], "sales");
    let env: Vec<&str> = inspect["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"PYTHONPATH=/opt/sluice/deps"), "{env:?}");
    assert!(!env.contains(&"PYTHONPATH=/old"), "{env:?}");
    assert!(env.contains(&"SLUICE_FEED=sales"), "{env:?}");
    let config = skopeo_inspect(&["--config", &image]).unwrap();
    assert_eq!(config["config"]["Entrypoint"], json!(["sluice", "agent"]));
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["history"].as_array().unwrap().len(), 3);

    if which("umoci").is_none() {
        eprintln!("SKIP: umoci is not on PATH (apt-get install umoci)");
        return;
    }
    let layout = tmp.path().join("oci");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &image])
        .arg(format!("oci:{}:r1", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:r1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/sluice/feed/feed.py")).unwrap(),
        source
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/sluice/deps/tinylib/__init__.py")).unwrap(),
        "VERSION = '1.0'\n"
    );
    assert!(
        rootfs.join("usr/local/bin/sluice").is_file(),
        "the base layer is there"
    );
    assert_eq!(
        std::fs::read_to_string(
            rootfs.join("usr/local/lib/python3.12/site-packages/sluice-deps.pth")
        )
        .unwrap(),
        "/opt/sluice/deps\n",
        "the workers' interpreter finds the dependencies without PYTHONPATH"
    );
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["args"], json!(["sluice", "agent"]));
    assert_eq!(runtime["process"]["cwd"], "/opt/sluice/feed");
}

/// The names in an image's layer `index` (gzip tar).
async fn layer_names(reg: &Registry, repo: &str, tag: &str, index: usize) -> Vec<String> {
    let (bytes, _, _) = reg.get_manifest(repo, tag).await.unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let digest = manifest["layers"][index]["digest"].as_str().unwrap();
    let blob = reg.get_blob(repo, digest).await.unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The dependencies go on the path of the base image's own Python, whichever it is: the
/// `.pth` file in its site-packages (and uv's wheels for it, keyed by it). A base that does
/// not say its version needs `--python-version`, and the error says so.
#[tokio::test]
async fn the_python_version_is_the_base_images() {
    let Some(proc_) = start_registry() else {
        return;
    };
    let host = proc_.host.clone();
    let reg = Arc::new(Registry::new(&host, true, None).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let deps = tmp.path().join("deps");
    std::fs::create_dir_all(deps.join("tinylib")).unwrap();
    std::fs::write(deps.join("tinylib/__init__.py"), "").unwrap();
    let pth = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.ends_with("sluice-deps.pth"))
            .cloned()
            .collect()
    };

    let py311 = push_base_with(&reg, &host, "py311", Some("3.11.9")).await;
    let report = build(&input(
        &reg,
        &py311,
        &host,
        "a",
        "import sluice
",
        &deps,
        tmp.path(),
    ))
    .await
    .unwrap();
    assert_eq!(report.layers, 3);
    let names = layer_names(&reg, "sluice/team/sales", "a", 2).await;
    assert_eq!(
        pth(&names),
        ["usr/local/lib/python3.11/site-packages/sluice-deps.pth"]
    );

    // An explicit version wins over the base's.
    let mut inp = input(
        &reg,
        &py311,
        &host,
        "b",
        "import sluice
",
        &deps,
        tmp.path(),
    );
    inp.python_version = Some("3.13".into());
    build(&inp).await.unwrap();
    let names = layer_names(&reg, "sluice/team/sales", "b", 2).await;
    assert_eq!(
        pth(&names),
        ["usr/local/lib/python3.13/site-packages/sluice-deps.pth"]
    );

    let unnamed = push_base_with(&reg, &host, "unnamed", None).await;
    let err = build(&input(
        &reg,
        &unnamed,
        &host,
        "c",
        "import sluice
",
        &deps,
        tmp.path(),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("PYTHON_VERSION") && err.contains("--python-version"),
        "{err}"
    );
}

/// Pushing to a registry that wants a login, as the operator's build Job does: the
/// credentials come from `$DOCKER_CONFIG/config.json` (the mounted dockerconfigjson
/// Secret); without them the build stops with an error that says where they go.
#[tokio::test]
async fn pushes_with_the_credentials_of_docker_config() {
    // A bcrypt htpasswd line, from the C library's crypt (libxcrypt) through Python's.
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt; print('builder:' + crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let auth_dir = tempfile::tempdir().unwrap();
    let htpasswd = auth_dir.path().join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let Some(proc_) = start_registry_with(&format!(
        "auth:\n  htpasswd:\n    realm: sluice-test\n    path: {}\n",
        htpasswd.display()
    )) else {
        return;
    };
    let host = proc_.host.clone();
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("feed.py");
    std::fs::write(&source, "import sluice\n").unwrap();
    let base = format!("{host}/sluice/runtime:test");
    let args = |docker_config: Option<PathBuf>| sluice_build::cli::BuildArgs {
        source: source.clone(),
        lock: None,
        base: base.clone(),
        image: format!("{host}/sluice/team/sales:r1"),
        feed: "sales".into(),
        work_dir: tmp.path().join("work"),
        deps_dir: None,
        uv: "uv".into(),
        python_version: None,
        python_platform: "x86_64-manylinux_2_28".into(),
        plain_http: false,
        docker_config,
        digest_file: None,
    };

    let e = sluice_build::cli::run(args(None)).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("401") && e.contains("DOCKER_CONFIG"),
        "the refusal says where credentials go: {e}"
    );

    let config = tmp.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        json!({"auths": {host.clone(): {"username": "builder", "password": "s3cret"}}}).to_string(),
    )
    .unwrap();
    let basic = sluice_build::registry::basic_from_docker_config(
        &serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap(),
        &host,
    );
    let reg = Registry::new(&host, true, basic).unwrap();
    push_base(&reg, &host).await;
    let report = sluice_build::cli::run(args(Some(config))).await.unwrap();
    assert_eq!(report.layers, 2, "{report:?}");
    let Some(inspect) = skopeo_inspect(&[
        "--creds",
        "builder:s3cret",
        &format!("docker://{host}/sluice/team/sales:r1"),
    ]) else {
        eprintln!("SKIP: skopeo is not on PATH (apt-get install skopeo)");
        return;
    };
    assert_eq!(inspect["Digest"], report.digest.as_str());
}

/// The dependency layer built by uv for real, from a lock with one pure wheel from PyPI.
#[tokio::test]
async fn uv_builds_the_dependency_layer() {
    if which("uv").is_none() {
        eprintln!("SKIP: uv is not on PATH (pip install uv)");
        return;
    }
    let Some(proc_) = start_registry() else {
        return;
    };
    let host = proc_.host.clone();
    let reg = Arc::new(Registry::new(&host, true, None).unwrap());
    let base = push_base(&reg, &host).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut inp = input(
        &reg,
        &base,
        &host,
        "uv",
        "import six\n",
        &tmp.path().join("none"),
        tmp.path(),
    );
    inp.deps_dir = None;
    inp.lock = Some(b"six==1.16.0\n".to_vec());
    let report = build(&inp).await.unwrap();
    assert!(!report.deps_cached);
    assert_eq!(report.layers, 3);

    let names = layer_names(&reg, "sluice/team/sales", "uv", 1).await;
    assert!(
        names.iter().any(|n| n == "opt/sluice/deps/six.py"),
        "{names:?}"
    );
}

/// `sluice image`: Sluice's own image from a Python base on another registry (standing in
/// for Docker Hub's `python:3.12-slim`): the base's layers copied across, `sluice` and `uv`
/// added executable in /usr/local/bin, run as 65532 with `sluice server` by default; the same
/// inputs give the same digest; and a feed image builds on it.
#[tokio::test]
async fn sluice_image_adds_sluice_and_uv_to_a_python_base() {
    let (Some(hub), Some(ours)) = (start_registry(), start_registry()) else {
        return;
    };
    let hub_reg = Arc::new(Registry::new(&hub.host, true, None).unwrap());
    let python: ImageRef = format!("{}/library/python:3.12-slim", hub.host)
        .parse()
        .unwrap();
    let site = layer::from_files(vec![File {
        path: "/usr/local/lib/python3.12/os.py".into(),
        mode: 0o644,
        contents: b"# the standard library\n".to_vec(),
    }])
    .unwrap();
    let config = json!({"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.12.7"], "Cmd": ["python3"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "python slim"}]});
    push_image(&hub_reg, &python, &[site], config)
        .await
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let (sluice_bin, uv_bin) = (tmp.path().join("sluice"), tmp.path().join("uv"));
    std::fs::write(&sluice_bin, "#!/bin/sh\necho sluice\n").unwrap();
    std::fs::write(&uv_bin, "#!/bin/sh\necho uv\n").unwrap();
    let image = format!("{}/sluice/sluice:0.1.0", ours.host);
    let args = sluice_build::cli::ImageArgs {
        from: python.to_string(),
        image: image.clone(),
        sluice: Some(sluice_bin.clone()),
        uv: Some(uv_bin.clone()),
        plain_http: false,
        docker_config: None,
        digest_file: Some(tmp.path().join("digest")),
    };
    let first = sluice_build::cli::run_image(args.clone()).await.unwrap();
    assert_eq!(first.layers, 2, "{first:?}");
    assert_eq!(first.pushed_blobs, 3, "base layer copied, binaries, config");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("digest")).unwrap(),
        first.digest
    );
    let again = sluice_build::cli::run_image(args).await.unwrap();
    assert_eq!(again.digest, first.digest, "same inputs, same digest");
    assert_eq!(again.pushed_blobs, 0, "{again:?}");

    // A feed image on top of it: its entrypoint is the agent.
    let reg = Arc::new(Registry::new(&ours.host, true, None).unwrap());
    let deps = tmp.path().join("deps");
    std::fs::create_dir_all(deps.join("tinylib")).unwrap();
    std::fs::write(deps.join("tinylib/__init__.py"), "").unwrap();
    let runtime: ImageRef = image.parse().unwrap();
    let feed = build(&input(
        &reg,
        &runtime,
        &ours.host,
        "r1",
        "import sluice\n",
        &deps,
        tmp.path(),
    ))
    .await
    .unwrap();
    assert_eq!(feed.layers, 4, "python, sluice + uv, deps, code");

    let Some(config) = skopeo_inspect(&["--config", &format!("docker://{image}")]) else {
        eprintln!("SKIP: skopeo is not on PATH (apt-get install skopeo)");
        return;
    };
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(["sluice"]));
    assert_eq!(c["Cmd"], json!(["server"]));
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(
        c["Labels"]["org.opencontainers.image.base.name"],
        python.to_string()
    );
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "PYTHON_VERSION=3.12.7"),
        "the base's environment is kept: {c}"
    );
    if which("umoci").is_none() {
        eprintln!("SKIP: umoci is not on PATH (apt-get install umoci)");
        return;
    }
    let layout = tmp.path().join("oci");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
        ])
        .arg(format!("oci:{}:s", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:s", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    use std::os::unix::fs::PermissionsExt;
    for (name, original) in [("sluice", &sluice_bin), ("uv", &uv_bin)] {
        let p = rootfs.join("usr/local/bin").join(name);
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(original).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755,
            "{name} is executable"
        );
    }
    assert!(rootfs.join("usr/local/lib/python3.12/os.py").is_file());
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["args"], json!(["sluice", "server"]));
    assert_eq!(runtime["process"]["user"]["uid"], 65532);
}
