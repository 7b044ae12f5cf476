//! Shared helpers for the end-to-end tests: they start the real `sluice` binary on a free
//! loopback port with a fresh data dir, and drive it over HTTP and through its own CLI.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// uv downloads are cached across tests and runs (under target/), so only the first run
/// of the suite pays for fetching packages from PyPI.
pub fn shared_cache() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache");
    std::fs::create_dir_all(&p).unwrap();
    p.canonicalize().unwrap()
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
    pub stdout: Vec<String>,
    pub log_path: PathBuf,
}

pub struct Opts {
    pub subcommand: &'static str,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub wait_ready: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            subcommand: "up",
            env: vec![],
            args: vec![],
            wait_ready: true,
        }
    }
}

impl Server {
    pub fn start(opts: Opts) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        Self::start_in(data_dir, Some(tmp), opts)
    }

    pub fn start_in(data_dir: PathBuf, tmp: Option<tempfile::TempDir>, opts: Opts) -> Server {
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let cache = shared_cache();
        let mut cmd = Command::new(bin());
        cmd.arg(opts.subcommand)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&opts.args)
            .env("SLUICE_ADMIN_KEY", ADMIN_KEY)
            .env("SLUICE_UV_CACHE_DIR", cache.join("uv-cache"))
            .env("SLUICE_LOG", "info,sqlx=warn")
            // Tests run in parallel: each server's PostgreSQL endpoint on a free port.
            .env("SLUICE_PG_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start sluice");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "sluice did not print its URL; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    )
                });
            stdout.push(line.clone());
            if let Some(rest) = line.strip_prefix("Sluice is running at ") {
                break rest.trim().to_string();
            }
        };
        // The next lines (key, hint) are printed right after.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            stdout.push(line);
        }
        let s = Server {
            child,
            url,
            data_dir,
            _tmp: tmp,
            stdout,
            log_path,
        };
        if opts.wait_ready {
            s.wait_ready(Duration::from_secs(600));
        }
        s
    }

    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let client = reqwest::blocking::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send()
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http(&self) -> Http {
        Http {
            base: self.url.clone(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
        }
    }

    /// Run a client command of the same binary against this server.
    pub fn cli(&self, home: &Path, key: &str, args: &[&str]) -> CliOut {
        let out = Command::new(bin())
            .args(args)
            .current_dir(home)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("SLUICE_URL", &self.url)
            .env("SLUICE_KEY", key)
            .output()
            .unwrap();
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct Http {
    pub base: String,
    pub client: reqwest::blocking::Client,
}

impl Http {
    pub fn get(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client.get(format!("{}{}", self.base, path))
    }
    pub fn get_key(&self, path: &str, key: &str) -> reqwest::blocking::Response {
        self.get(path).bearer_auth(key).send().unwrap()
    }
    pub fn json(&self, path: &str, key: &str) -> (u16, serde_json::Value) {
        let r = self.get_key(path, key);
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
    pub fn post(&self, path: &str, key: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}{}", self.base, path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
    pub fn deploy(
        &self,
        key: &str,
        ws: &str,
        filename: &str,
        source: &str,
    ) -> (u16, serde_json::Value) {
        self.post(
            &format!("/api/v1/workspaces/{ws}/deploy"),
            key,
            serde_json::json!({"filename": filename, "source": source}),
        )
    }
}

/// Peak resident memory of a process, from /proc (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Run a real client program on one of the scripts in `tests/clients` and return the JSON
/// report it prints as its last line. `hint` says how to install what the client needs.
pub fn run_client(program: &str, script: &str, args: &[&str], hint: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new(program)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({hint}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script} printed no JSON report ({e}):\n{stdout}"))
}
