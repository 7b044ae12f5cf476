//! Sluice's images run in a real OCI runtime, as the pods the operator writes would run them.
//!
//! No Kubernetes API server can be installed on these machines, but a container runtime can:
//! podman (daemonless) with runc, from Debian. So the part of a cluster that runs images is
//! real here, and only the kubelet's reading of a pod spec is done by this file
//! ([`Podman::run_pod`]: image, args, environment, user and groups, read-only root
//! filesystem, dropped capabilities, no privilege escalation, ConfigMap, Secret and emptyDir
//! volumes with their `items`, the termination message file). The flow is a cluster's:
//!
//! 1. a Python base image (a stand-in for `python:3.X-slim`, from this machine's CPython:
//!    `tests/containers/python-base.sh`) is pushed to Debian's `docker-registry` on loopback;
//! 2. `sluice image` puts this build's `sluice` and uv on it, and the Helm chart's server
//!    container runs on it: restricted, it runs a draft whose PEP 723 dependency uv resolves
//!    from PyPI into the data volume (what `sluice run` and the IDE's preview need);
//! 3. the operator's pure build step plans a Feed: its build Job runs `sluice build` inside
//!    that image, restricted, and resolves the feed's lock with uv from PyPI, pushes the feed
//!    image and writes its digest to the termination message;
//! 4. the plan with that digest gives the revision's Deployment, whose pod runs `sluice
//!    agent`: ready on `/readyz`, its signature, a call whose `sluice.sql` reads the local
//!    PostgreSQL through the data source Secret the workspace's plan copies, the dependency
//!    from the image's dependency layer; a SIGTERM drains and exits 0.
//!
//! Every pod uses the host's network (nothing else is reachable from tests), so the one
//! change made to the operator's spec is the agent's listen address: loopback and a free
//! port instead of `0.0.0.0:8080`. Needs `podman`, `runc`, `docker-registry` and uv (which
//! `.ci/run` installs); without them the test says what to install and returns.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice_kube::build::feed::{self, FeedInputs};
use sluice_kube::build::{Object, Settings};
use sluice_kube::crd::{DataSource, Feed};

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's `docker-registry` on a loopback port, stopped on drop.
struct Registry {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A volume's content as the kubelet would lay it out: files from a ConfigMap or Secret
/// (their `items` applied), or an empty writable directory.
enum Volume {
    Files(PathBuf),
    Empty,
}

/// podman with its own storage under a temporary directory (nothing is left in the
/// machine's), runc as the runtime, and every container removed on drop.
struct Podman {
    dir: tempfile::TempDir,
    /// ConfigMaps and Secrets of the "cluster", by name: key → content.
    objects: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().unwrap(),
            objects: BTreeMap::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            // crun refuses this machine's hybrid cgroup hierarchy; runc runs on it.
            .args(["--runtime", "runc", "--log-level", "error"]);
        c
    }

    /// Import a root filesystem tar as an image and push it to `image` (plain HTTP).
    fn import_and_push(&self, tar: &Path, image: &str, changes: &[&str]) {
        let mut c = self.cmd();
        c.arg("import");
        for ch in changes {
            c.args(["--change", ch]);
        }
        check("podman import", &c.arg(tar).arg(image).output().unwrap());
        check(
            "podman push",
            &self
                .cmd()
                .args(["push", "--tls-verify=false", image])
                .output()
                .unwrap(),
        );
    }

    /// The pod's first container as `podman run` arguments (detached when `detach`), the
    /// way the kubelet would run it, and the host's loopback port given for each
    /// `0.0.0.0:PORT` argument (the pod's addresses, on the host's network), by PORT.
    fn pod_args(&self, name: &str, pod: &Value, detach: bool) -> (Vec<String>, BTreeMap<u16, u16>) {
        let c = &pod["containers"][0];
        let sc = |k: &str| {
            let own = &c["securityContext"][k];
            if own.is_null() {
                pod["securityContext"][k].clone()
            } else {
                own.clone()
            }
        };
        let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.into()];
        if detach {
            args.push("--detach".into());
        }
        args.extend(
            [
                "--tls-verify=false",
                "--network=host",
                // This sandbox refuses to raise these limits to podman's defaults.
                "--ulimit=nofile=4096:4096",
                "--ulimit=nproc=4096:4096",
            ]
            .map(String::from),
        );
        let (user, group) = (sc("runAsUser"), sc("runAsGroup"));
        assert!(user.is_i64(), "the pod names its user: {pod}");
        args.push(format!(
            "--user={}:{}",
            user,
            group.as_i64().unwrap_or(user.as_i64().unwrap())
        ));
        if let Some(g) = pod["securityContext"]["fsGroup"].as_i64() {
            args.push(format!("--group-add={g}"));
        }
        if sc("runAsNonRoot") == json!(true) {
            assert_ne!(user, json!(0), "runAsNonRoot with user 0");
        }
        if sc("readOnlyRootFilesystem") == json!(true) {
            args.extend(["--read-only", "--read-only-tmpfs=false"].map(String::from));
        }
        if sc("allowPrivilegeEscalation") == json!(false) {
            args.push("--security-opt=no-new-privileges".into());
        }
        assert_eq!(
            sc("seccompProfile")["type"],
            "RuntimeDefault",
            "podman's default seccomp profile is the runtime default"
        );
        for cap in c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
        {
            args.push(format!("--cap-drop={}", cap.as_str().unwrap()));
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("only literal env values are emulated: {e}"));
            args.push(format!("--env={}={value}", e["name"].as_str().unwrap()));
        }
        // Volumes, as the kubelet lays them out.
        let mut volumes: BTreeMap<String, Volume> = BTreeMap::new();
        for v in pod["volumes"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().unwrap().to_string();
            let (source, key) = if !v["configMap"].is_null() {
                (&v["configMap"], "name")
            } else if !v["secret"].is_null() {
                (&v["secret"], "secretName")
            } else {
                assert!(!v["emptyDir"].is_null(), "unsupported volume {v}");
                volumes.insert(vname, Volume::Empty);
                continue;
            };
            let object = source[key].as_str().unwrap();
            let data = self
                .objects
                .get(object)
                .unwrap_or_else(|| panic!("the pod mounts {object}, which the cluster lacks"));
            let dir = self.dir.path().join("volumes").join(name).join(&vname);
            std::fs::create_dir_all(&dir).unwrap();
            let items: Vec<(String, String)> = match source["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i["key"].as_str().unwrap().into(),
                            i["path"].as_str().unwrap().into(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (k, path) in items {
                let bytes = data
                    .get(&k)
                    .unwrap_or_else(|| panic!("{object} has no key {k}"));
                std::fs::write(dir.join(path), bytes).unwrap();
            }
            volumes.insert(vname, Volume::Files(dir));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let path = m["mountPath"].as_str().unwrap();
            match &volumes[m["name"].as_str().unwrap()] {
                Volume::Files(dir) => args.push(format!("--volume={}:{path}:ro", dir.display())),
                Volume::Empty => args.push(format!("--tmpfs={path}:rw,mode=1777")),
            }
        }
        // Every container gets a writable termination message file.
        let message = self.dir.path().join(format!("{name}.termination-log"));
        std::fs::write(&message, "").unwrap();
        std::fs::set_permissions(
            &message,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        args.push(format!(
            "--volume={}:/dev/termination-log",
            message.display()
        ));
        if let Some(cmd) = c["command"].as_array() {
            args.push(format!("--entrypoint={}", Value::from(cmd.clone())));
        }
        args.push(c["image"].as_str().unwrap().into());
        let mut ports = BTreeMap::new();
        for a in c["args"].as_array().into_iter().flatten() {
            let a = a.as_str().unwrap();
            args.push(match a.strip_prefix("0.0.0.0:") {
                Some(p) => {
                    let host = free_port();
                    ports.insert(p.parse().unwrap(), host);
                    format!("127.0.0.1:{host}")
                }
                None => a.into(),
            });
        }
        (args, ports)
    }

    fn termination_message(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.termination-log"))).unwrap()
    }

    /// Run a Job's pod to its end; its output.
    fn run_to_end(&self, name: &str, pod: &Value) -> Output {
        self.cmd()
            .args(self.pod_args(name, pod, false).0)
            .output()
            .unwrap()
    }

    /// Start a pod's container; the host ports of its `0.0.0.0:PORT` arguments, by PORT.
    fn start(&self, name: &str, pod: &Value) -> BTreeMap<u16, u16> {
        let (args, ports) = self.pod_args(name, pod, true);
        check("podman run", &self.cmd().args(args).output().unwrap());
        ports
    }

    /// Poll a readiness probe's URL as the kubelet does, up to two minutes.
    async fn wait_ready(&self, name: &str, url: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match http.get(url).send().await {
                Ok(r) if r.status() == 200 => return,
                _ if Instant::now() > deadline => {
                    panic!("{name} never became ready:\n{}", self.logs(name))
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    fn logs(&self, name: &str) -> String {
        let out = self.cmd().args(["logs", name]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.cmd().args(["system", "reset", "--force"]).output();
    }
}

/// A text column's values, whichever Arrow string type carries them.
fn strings(col: &arrow_array::ArrayRef) -> Vec<String> {
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;
    let all = |it: &mut dyn Iterator<Item = Option<&str>>| -> Vec<String> {
        it.map(|v| v.unwrap().to_string()).collect()
    };
    match col.data_type() {
        DataType::Utf8 => all(&mut col.as_string::<i32>().iter()),
        DataType::LargeUtf8 => all(&mut col.as_string::<i64>().iter()),
        DataType::Utf8View => all(&mut col.as_string_view().iter()),
        other => panic!("not a text column: {other}"),
    }
}

fn object<'a>(objects: &'a [Object], kind: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.resource.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in the plan"))
}

/// Run a feed Deployment's pod, wait for its readiness probe, and check what it serves: its
/// liveness probe, its signature, and a call (rows from PostgreSQL through the data source
/// Secret, the dependency imported from the image, the call's output).
async fn serve_and_call(podman: &Podman, name: &str, pod: &Value) {
    let ports = podman.start(name, pod);
    let base = format!("http://127.0.0.1:{}", ports[&8080]);
    let probe = pod["containers"][0]["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let http = reqwest::Client::new();
    podman.wait_ready(name, &format!("{base}{probe}")).await;
    let live = pod["containers"][0]["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        http.get(format!("{base}{live}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let signed: Value = http
        .get(format!("{base}/v1/signature"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(signed["revision"], "1", "{signed}");
    assert_eq!(
        signed["signature"]["doc"], "Numbered names, from PostgreSQL.",
        "{signed}"
    );

    let client = sluice_gateway::AgentClient::new(Duration::from_secs(60)).unwrap();
    let exec = client
        .call(&base, json!({"prefix": "eu-", "n": 4}), "c1")
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", podman.logs(name)));
    assert_eq!(exec.revision.as_deref(), Some("1"));
    let batches: Vec<_> = exec.batches.collect().await;
    let mut names = Vec::new();
    for b in batches {
        let b = b.unwrap();
        names.extend(strings(b.column_by_name("name").unwrap()));
    }
    assert_eq!(names, ["eu-1", "eu-2", "eu-3", "eu-4"]);
    let logs = exec.logs.wait().await.expect("the call's logs");
    assert_eq!(
        logs.stdout, "six 1.16.0\n",
        "the dependency came from the image's layer"
    );
    // The metrics port (the one the PodMonitor scrapes and the metrics policy opens) counts
    // the call, and serves nothing else.
    let metrics = format!("http://127.0.0.1:{}", ports[&9464]);
    let text = http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sluice_agent_calls_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("sluice_agent_calls_in_flight 0"), "{text}");
    let r = http.get(format!("{metrics}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The server container of `deploy/helm/sluice/templates/server.yaml` as the chart renders
/// it (helm cannot be installed here to render it; the test checks the two list the same
/// variables), with loopback addresses, a throwaway database, and runtime = local (no API
/// server: drafts run in the server's own workers either way).
fn server_pod(image: &str, env: &[(&str, String)]) -> Value {
    let chart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/helm/sluice/templates/server.yaml"),
    )
    .unwrap();
    let mut in_chart: Vec<&str> = chart
        .split("name: ")
        .skip(1)
        .filter_map(|s| s.split([',', '\n', '}']).next())
        .filter(|n| n.starts_with("SLUICE_"))
        .collect();
    in_chart.sort();
    let mut here: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
    here.sort();
    assert_eq!(
        here, in_chart,
        "the chart's server env and this test's differ"
    );
    json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "server", "image": image, "args": ["server"],
            "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "runAsNonRoot": true, "privileged": false, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                             {"name": "data", "mountPath": "/var/lib/sluice"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
    })
}

async fn server_runs_a_draft_with_a_dependency(podman: &Podman, image: &str) {
    let pg = std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("sluice_containers_{}", std::process::id());
    let psql = |sql: &str| {
        check(
            sql,
            &Command::new("psql")
                .args([&format!("{pg}/postgres"), "-X", "-q", "-c", sql])
                .output()
                .unwrap(),
        )
    };
    psql(&format!("drop database if exists {db}"));
    psql(&format!("create database {db}"));
    let (http_port, pg_port) = (free_port(), free_port());
    let admin = "containers-admin-key-0123456789abcdef0123";
    let env = [
        ("SLUICE_LISTEN", format!("127.0.0.1:{http_port}")),
        ("SLUICE_PG_LISTEN", format!("127.0.0.1:{pg_port}")),
        ("SLUICE_DATA_DIR", "/var/lib/sluice".into()),
        ("SLUICE_PUBLIC_URL", format!("http://127.0.0.1:{http_port}")),
        ("SLUICE_LOG_JSON", "true".into()),
        ("SLUICE_RUNTIME", "local".into()),
        ("SLUICE_DATABASE_URL", format!("{pg}/{db}")),
        ("SLUICE_MASTER_KEY", "ab".repeat(32)),
        ("SLUICE_ADMIN_KEY", admin.into()),
    ];
    let pod = server_pod(image, &env);
    // The chart sets the server's addresses in its environment, here loopback ones.
    podman.start("server", &pod);
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    podman.wait_ready("server", &format!("{base}/readyz")).await;
    let r = http
        .post(format!("{base}/api/v1/workspaces"))
        .bearer_auth(admin)
        .json(&json!({"name": "team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let draft = "# /// script\n# dependencies = [\"six==1.16.0\"]\n# ///\nimport six\nimport sluice\n\n@sluice.feed\ndef draft(n: int = 2):\n    print('six', six.__version__)\n    return [{'i': i, 'text': six.ensure_str('row %d' % i)} for i in range(n)]\n";
    let r = http
        .post(format!("{base}/api/v1/workspaces/team/run"))
        .bearer_auth(admin)
        .json(&json!({"source": draft, "filename": "draft.py", "feed": "draft", "params": {"n": "3"}}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", podman.logs("server"));
    assert_eq!(body["row_count"], 3, "{body}");
    assert_eq!(body["rows"][2], json!([2, "row 2"]), "{body}");
    assert_eq!(body["stdout"], "six 1.16.0\n", "{body}");
    let logs = podman.logs("server");
    assert!(
        logs.contains("Admin key: the one SLUICE_ADMIN_KEY sets") && !logs.contains(admin),
        "a production server keeps the admin key out of its logs:\n{logs}"
    );
    let _ = podman
        .cmd()
        .args(["rm", "--force", "--time", "5", "server"])
        .output();
    psql(&format!("drop database if exists {db} with (force)"));
}

const FEED: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Feed
metadata: {name: regions, namespace: sluice-team, uid: 3f9a0000-0000-4000-8000-0000000c0de5, generation: 1}
spec:
  function: regions
  revision: "1"
  lock: "six==1.16.0\n"
  dataSources: [warehouse]
  source:
    inline: |
      import six
      import sluice

      @sluice.feed
      def regions(prefix: str = "r", n: int = 3):
          """Numbered names, from PostgreSQL."""
          print("six", six.__version__)
          return sluice.sql("warehouse",
              "select :prefix || g as name, g as n from generate_series(1, :n) g",
              prefix=six.ensure_str(prefix), n=n)
"#;

const DATA_SOURCE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: DataSource
metadata: {name: warehouse, uid: 7e1f0000-0000-4000-8000-000000000001}
spec:
  type: postgres
  secretRef: {name: warehouse, namespace: sluice-system}
  workspaces: [team]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluices_images_and_the_pods_it_writes_run_in_a_real_container_runtime() {
    let missing: Vec<&str> = ["podman", "runc", "docker-registry", "uv", "ldconfig"]
        .into_iter()
        .filter(|p| which(p).is_none() && !Path::new("/usr/sbin").join(p).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP: {missing:?} not on PATH (apt-get install podman runc docker-registry; pip install uv)"
        );
        return;
    }
    let registry = Registry::start();
    let host = registry.host.clone();
    let mut podman = Podman::new();
    let tmp = tempfile::tempdir().unwrap();

    // 1. The Python base, pushed as `library/python:X.Y-slim`.
    let uv = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import uv; print(uv.find_uv_bin())"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let uv = match uv.trim() {
        "" => which("uv").unwrap(),
        p => PathBuf::from(p),
    };
    let rootfs = tmp.path().join("python.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containers/python-base.sh");
    let out = Command::new(&script)
        .arg(&rootfs)
        .arg(common::bin())
        .arg(&uv)
        .output()
        .unwrap();
    check("python-base.sh", &out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (minor, full) = stdout.trim().split_once(' ').unwrap();
    let python = format!("{host}/library/python:{minor}-slim");
    podman.import_and_push(
        &rootfs,
        &python,
        &[
            &format!("ENV PYTHON_VERSION={full}"),
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            r#"CMD ["python3"]"#,
        ],
    );

    // 2. Sluice's image on it, by the real `sluice image`.
    let sluice_image = format!("{host}/sluice/sluice:test");
    let out = Command::new(common::bin())
        .args(["image", "--from", &python, "--image", &sluice_image])
        .arg("--uv")
        .arg(&uv)
        .output()
        .unwrap();
    check("sluice image", &out);

    // 2b. The chart's server pod on that image runs drafts (`sluice run`, the IDE's
    // preview) in its own workers: Python, uv resolving a PEP 723 dependency from PyPI into
    // its data volume, on a read-only root as uid 65532.
    server_runs_a_draft_with_a_dependency(&podman, &sluice_image).await;

    // 3. The operator's plan for a Feed before its build: the build Job.
    let feed_cr: Feed = serde_yaml::from_str(FEED).unwrap();
    let ds: DataSource = serde_yaml::from_str(DATA_SOURCE).unwrap();
    let settings = Settings {
        gateway_namespace: "sluice-system".into(),
        gateway_labels: BTreeMap::new(),
        gateway_url: "http://127.0.0.1/".into(),
        registry: format!("{host}/sluice"),
        registry_secret: Some("registry-push".into()),
        runtime_image: sluice_image.clone(),
        builder_image: sluice_image.clone(),
        kaniko_image: None,
        metrics_namespace: None,
    };
    let source = feed_cr.spec.source.inline.clone().unwrap();
    let mut inputs = FeedInputs {
        workspace: "team".into(),
        source: source.clone(),
        data_sources: vec![ds],
        ..Default::default()
    };
    let plan = feed::build(&feed_cr, &inputs, &settings).unwrap();
    let config_map = object(&plan.objects, "ConfigMap");
    let data: BTreeMap<String, Vec<u8>> = config_map.body["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
        .collect();
    podman.objects.insert(config_map.name.clone(), data);
    // The push credentials' Secret (the registry here takes anonymous pushes).
    podman.objects.insert(
        "sluice-registry".into(),
        BTreeMap::from([(".dockerconfigjson".into(), br#"{"auths": {}}"#.to_vec())]),
    );
    let job = object(&plan.objects, "Job");
    let pod = &job.body["spec"]["template"]["spec"];
    let started = Instant::now();
    let out = podman.run_to_end("build", pod);
    check("the build Job's pod", &out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("Python {minor}")),
        "the build read the base image's Python version: {log}"
    );
    let digest = podman.termination_message("build");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "the digest is the termination message: {digest:?}\n{log}"
    );
    eprintln!("build Job: {:?}", started.elapsed());

    // A code-only change (revision 2, same lock): its Job reuses the dependency layer and
    // pushes a new image, timed from the pod's start to its end (the image is pulled).
    let mut changed: Feed = serde_yaml::from_str(&FEED.replace("Numbered names", "Names")).unwrap();
    changed.spec.revision = Some("2".into());
    let changed_inputs = FeedInputs {
        source: changed.spec.source.inline.clone().unwrap(),
        ..inputs.clone()
    };
    let plan2 = feed::build(&changed, &changed_inputs, &settings).unwrap();
    let cm = object(&plan2.objects, "ConfigMap");
    podman.objects.insert(
        cm.name.clone(),
        cm.body["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect(),
    );
    let pod2 = &object(&plan2.objects, "Job").body["spec"]["template"]["spec"];
    let started = Instant::now();
    let out = podman.run_to_end("build-2", pod2);
    let elapsed = started.elapsed();
    check("the code-only build Job's pod", &out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("deps: reusing the layer"), "{log}");
    let digest2 = podman.termination_message("build-2");
    assert!(
        digest2.starts_with("sha256:") && digest2 != digest,
        "{digest2}"
    );
    eprintln!("code-only change, build Job pod start to pushed image: {elapsed:?}");

    // 4. The plan once built: the revision's Deployment, run with the workspace's copy of
    // the data source's Secret.
    inputs.build_succeeded = true;
    inputs.image_digest = Some(digest.clone());
    let plan = feed::build(&feed_cr, &inputs, &settings).unwrap();
    let deployment = plan
        .objects
        .iter()
        .find(|o| o.resource.kind == "Deployment" && Some(&o.name) == plan.serving_name.as_ref())
        .expect("the serving revision's Deployment");
    let pod = &deployment.body["spec"]["template"]["spec"];
    assert!(
        pod["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("@{digest}")),
        "pinned to the built digest"
    );
    let pg = std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    podman.objects.insert(
        "sluice-ds-warehouse".into(),
        BTreeMap::from([("url".into(), format!("{pg}/postgres").into_bytes())]),
    );
    serve_and_call(&podman, "agent", pod).await;

    // A SIGTERM (what the kubelet sends, with the pod's grace period) drains and exits 0.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    let out = podman
        .cmd()
        .args(["stop", "--time", &grace.to_string(), "agent"])
        .output()
        .unwrap();
    check("podman stop", &out);
    let out = podman
        .cmd()
        .args(["inspect", "--format", "{{.State.ExitCode}}", "agent"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        podman.logs("agent")
    );

    // 5. The Kaniko alternative: the plan's generated Dockerfile, built from the build
    // context the ConfigMap holds, by podman's Buildah (Kaniko's executor image cannot be
    // pulled here; both follow the Dockerfile reference), pushed where the Job would push,
    // and served by the same Deployment.
    let kaniko = Settings {
        kaniko_image: Some("kaniko-executor".into()),
        ..settings.clone()
    };
    inputs.build_succeeded = false;
    inputs.image_digest = None;
    let plan = feed::build(&feed_cr, &inputs, &kaniko).unwrap();
    let context = tmp.path().join("kaniko");
    std::fs::create_dir_all(&context).unwrap();
    for (k, v) in object(&plan.objects, "ConfigMap").body["data"]
        .as_object()
        .unwrap()
    {
        std::fs::write(context.join(k), v.as_str().unwrap()).unwrap();
    }
    let job = object(&plan.objects, "Job");
    let destination = job.body["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str().unwrap().strip_prefix("--destination="))
        .expect("the Job names its destination")
        .to_string();
    let started = Instant::now();
    check(
        "podman build of the generated Dockerfile",
        &podman
            .cmd()
            .args(["build", "--network=host", "--tls-verify=false"])
            .args(["--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096"])
            .args(["--tag", &destination])
            .arg(&context)
            .output()
            .unwrap(),
    );
    let digest_file = tmp.path().join("kaniko.digest");
    check(
        "podman push",
        &podman
            .cmd()
            .args(["push", "--tls-verify=false", "--digestfile"])
            .arg(&digest_file)
            .arg(&destination)
            .output()
            .unwrap(),
    );
    eprintln!("Dockerfile build: {:?}", started.elapsed());
    inputs.build_succeeded = true;
    inputs.image_digest = Some(std::fs::read_to_string(&digest_file).unwrap());
    let plan = feed::build(&feed_cr, &inputs, &kaniko).unwrap();
    let deployment = plan
        .objects
        .iter()
        .find(|o| o.resource.kind == "Deployment" && Some(&o.name) == plan.serving_name.as_ref())
        .expect("the serving revision's Deployment");
    serve_and_call(
        &podman,
        "agent-kaniko",
        &deployment.body["spec"]["template"]["spec"],
    )
    .await;
    drop(registry);
}
