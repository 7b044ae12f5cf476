//! Python environments: the module's PEP 723 dependencies are resolved with uv into a lock
//! (pinned requirements), and each distinct lock gets one venv under
//! `<data_dir>/envs/<env_hash>/`, shared by every revision that resolves to it.
//!
//! A venv is built in a temporary folder and renamed into place only when complete, so a
//! kill mid-install never leaves a half env that looks usable; `uv venv --relocatable`
//! keeps it working after the rename. Modules without dependencies run on the base
//! interpreter directly and need no uv at all (env hash `base`).

use crate::pep723::parse_script_metadata;
use sha2::{Digest, Sha256};
use sluice_core::{Code, Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What `prepare` resolved for a module: store it with the revision, pass it back in
/// [`crate::ModuleSpec`] to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// As declared in the `# /// script` block.
    pub requirements: Vec<String>,
    /// Pinned requirements from `uv pip compile`; empty without dependencies.
    pub lock: String,
    /// `base`, or 16 hex digits of sha256(lock, python version).
    pub env_hash: String,
}

pub const BASE_ENV: &str = "base";
const COMPLETE_MARKER: &str = ".sluice-env-complete";

pub(crate) struct Envs {
    pub data_dir: PathBuf,
    /// The base interpreter's real path (not a pyenv shim: workers get a cleared env).
    pub python: PathBuf,
    pub python_version: String,
    uv_configured: Option<PathBuf>,
    uv_cache: PathBuf,
    /// The uv binary once found or provisioned; the mutex also serialises provisioning.
    uv: tokio::sync::Mutex<Option<PathBuf>>,
    /// One lock per env hash so two deploys of the same dependencies build it once.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Envs {
    pub fn new(
        data_dir: PathBuf,
        python: PathBuf,
        python_version: String,
        uv: Option<PathBuf>,
        uv_cache: PathBuf,
    ) -> Envs {
        Envs {
            data_dir,
            python,
            python_version,
            uv_configured: uv,
            uv_cache,
            uv: tokio::sync::Mutex::new(None),
            building: Mutex::new(HashMap::new()),
        }
    }

    /// The interpreter a module with this env hash runs on.
    pub fn python_for(&self, env_hash: &str) -> PathBuf {
        if env_hash == BASE_ENV {
            self.python.clone()
        } else {
            self.env_dir(env_hash).join("bin").join("python")
        }
    }

    fn env_dir(&self, env_hash: &str) -> PathBuf {
        self.data_dir.join("envs").join(env_hash)
    }

    pub async fn prepare(
        &self,
        source: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Prepared> {
        let requirements = parse_script_metadata(source)?.dependencies;
        if requirements.is_empty() {
            return Ok(Prepared {
                requirements,
                lock: String::new(),
                env_hash: BASE_ENV.into(),
            });
        }
        let uv = self.uv(progress).await?;
        progress(format!("resolving {}", requirements.join(", ")));
        let mut input = requirements.join("\n");
        input.push('\n');
        let out = self
            .run_uv(
                &uv,
                &[
                    "pip".as_ref(),
                    "compile".as_ref(),
                    "-".as_ref(),
                    "--python".as_ref(),
                    self.python.as_os_str(),
                    "--no-header".as_ref(),
                    "--no-annotate".as_ref(),
                    "--quiet".as_ref(),
                ],
                Some(&input),
            )
            .await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::new(
                Code::DependencyResolutionFailed,
                format!(
                    "could not resolve the dependencies declared in the module's `# /// script` block ({}): {}. Check each package name and version on https://pypi.org",
                    requirements.join(", "),
                    summarize_uv_error(&stderr, &requirements)
                ),
            )
            .with("requirements", requirements.clone())
            .with("uv_stderr", tail(&stderr, 4000)));
        }
        let lock = String::from_utf8_lossy(&out.stdout).into_owned();
        let env_hash = env_hash(&lock, &self.python_version);
        self.ensure_env(&env_hash, &lock, progress).await?;
        Ok(Prepared {
            requirements,
            lock,
            env_hash,
        })
    }

    /// Make sure `<data_dir>/envs/<env_hash>` exists, building it from `lock` if not (a
    /// fresh data dir, or an env deleted to reclaim space).
    pub async fn ensure_env(
        &self,
        env_hash: &str,
        lock: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<()> {
        if env_hash == BASE_ENV {
            return Ok(());
        }
        if env_hash.is_empty() || !env_hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::internal(format!(
                "'{env_hash}' is not an environment hash"
            )));
        }
        let short = &env_hash[..env_hash.len().min(6)];
        let dir = self.env_dir(env_hash);
        if dir.join(COMPLETE_MARKER).is_file() {
            progress(format!("env {short}… cached"));
            return Ok(());
        }
        let gate = {
            let mut b = self.building.lock().unwrap_or_else(|p| p.into_inner());
            b.entry(env_hash.to_string()).or_default().clone()
        };
        let _building = gate.lock().await;
        if dir.join(COMPLETE_MARKER).is_file() {
            progress(format!("env {short}… cached"));
            return Ok(());
        }
        let uv = self.uv(progress).await?;
        let packages = lock
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        progress(format!("installing {packages} packages into env {short}…"));
        let envs = self.data_dir.join("envs");
        let tmp = envs.join(format!(
            ".tmp-{env_hash}-{}-{}",
            std::process::id(),
            crate::next_seq()
        ));
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::internal(format!(
                "could not {what} {}: {e}; check that the data dir is writable",
                p.display()
            ))
        };
        tokio::fs::create_dir_all(&envs)
            .await
            .map_err(|e| io("create", &envs, e))?;
        let result = async {
            let out = self
                .run_uv(
                    &uv,
                    &[
                        "venv".as_ref(),
                        "--relocatable".as_ref(),
                        "--quiet".as_ref(),
                        "--python".as_ref(),
                        self.python.as_os_str(),
                        tmp.as_os_str(),
                    ],
                    None,
                )
                .await?;
            check(&out, "create the virtual environment")?;
            let lock_path = tmp.join("requirements.lock");
            tokio::fs::write(&lock_path, lock)
                .await
                .map_err(|e| io("write", &lock_path, e))?;
            let py = tmp.join("bin").join("python");
            let out = self
                .run_uv(
                    &uv,
                    &[
                        "pip".as_ref(),
                        "sync".as_ref(),
                        "--quiet".as_ref(),
                        "--python".as_ref(),
                        py.as_os_str(),
                        lock_path.as_os_str(),
                    ],
                    None,
                )
                .await?;
            check(&out, "install the locked packages")?;
            let marker = tmp.join(COMPLETE_MARKER);
            tokio::fs::write(&marker, env_hash)
                .await
                .map_err(|e| io("write", &marker, e))?;
            if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                // A folder without the marker: an older, interrupted build. Replace it.
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            tokio::fs::rename(&tmp, &dir)
                .await
                .map_err(|e| io("move the new environment to", &dir, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        result?;
        progress(format!("env {short}… ready"));
        Ok(())
    }

    /// uv from the config, else on PATH, else in the data dir, else installed there from
    /// PyPI with the base interpreter's pip (once: the mutex makes concurrent deploys wait
    /// for the first one, and the temp-dir rename keeps other processes safe).
    async fn uv(&self, progress: &(dyn Fn(String) + Send + Sync)) -> Result<PathBuf> {
        let mut slot = self.uv.lock().await;
        if let Some(uv) = slot.as_ref() {
            return Ok(uv.clone());
        }
        if let Some(uv) = &self.uv_configured {
            if !works(uv).await {
                return Err(Error::new(
                    Code::RuntimeUnavailable,
                    format!(
                        "the configured uv binary {} does not run; fix the path in the runtime config or remove it to let Sluice install uv",
                        uv.display()
                    ),
                ));
            }
            *slot = Some(uv.clone());
            return Ok(uv.clone());
        }
        let provisioned = self
            .data_dir
            .join("tools")
            .join("uv")
            .join("bin")
            .join("uv");
        for candidate in [PathBuf::from("uv"), provisioned.clone()] {
            if works(&candidate).await {
                *slot = Some(candidate.clone());
                return Ok(candidate);
            }
        }
        let tools = self.data_dir.join("tools");
        progress(format!("provisioning uv into {} (once)", tools.display()));
        let tmp = tools.join(format!(
            ".tmp-uv-{}-{}",
            std::process::id(),
            crate::next_seq()
        ));
        let out = Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&tmp)
            .arg("uv")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                Error::new(
                    Code::RuntimeUnavailable,
                    format!("could not run {}: {e}", self.python.display()),
                )
            })?;
        if !out.status.success() || !tmp.join("bin").join("uv").is_file() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(Error::new(
                Code::RuntimeUnavailable,
                format!(
                    "uv is needed to install the module's dependencies but is not installed, and `{} -m pip install uv` failed: {}. Install uv (https://docs.astral.sh/uv/) and put it on PATH or set its path in the runtime config",
                    self.python.display(),
                    tail(String::from_utf8_lossy(&out.stderr).trim(), 500)
                ),
            ));
        }
        let dest = tools.join("uv");
        if tokio::fs::rename(&tmp, &dest).await.is_err() {
            // Another process provisioned it meanwhile; use theirs.
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        if !works(&provisioned).await {
            return Err(Error::new(
                Code::RuntimeUnavailable,
                format!(
                    "uv was installed into {} but does not run; delete that folder and retry",
                    dest.display()
                ),
            ));
        }
        *slot = Some(provisioned.clone());
        Ok(provisioned)
    }

    async fn run_uv(
        &self,
        uv: &Path,
        args: &[&std::ffi::OsStr],
        stdin: Option<&str>,
    ) -> Result<std::process::Output> {
        let mut cmd = Command::new(uv);
        cmd.args(args)
            // Deterministic: no user/project uv.toml, never download a Python behind our back.
            .arg("--no-config")
            .env("UV_CACHE_DIR", &self.uv_cache)
            .env("UV_PYTHON_DOWNLOADS", "never")
            // Trust the machine's certificate store (where a company adds the CA of its
            // TLS-inspecting proxy or private index; in Sluice's image, the Python base's),
            // not only the roots uv was built with. `UV_SYSTEM_CERTS` since uv 0.10,
            // `UV_NATIVE_TLS` before; `sluice build` does the same.
            .env("UV_SYSTEM_CERTS", "true")
            .env("UV_NATIVE_TLS", "true")
            .env_remove("VIRTUAL_ENV")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::new(
                Code::RuntimeUnavailable,
                format!("could not run uv at {}: {e}", uv.display()),
            )
        })?;
        if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(input.as_bytes())
                .await
                .map_err(|e| Error::internal(format!("writing to uv: {e}")))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| Error::internal(format!("waiting for uv: {e}")))
    }
}

async fn works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

fn check(out: &std::process::Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::new(
        Code::DependencyResolutionFailed,
        format!("uv could not {what}: {}", tail(stderr.trim(), 1000)),
    )
    .with("uv_stderr", tail(&stderr, 4000)))
}

pub fn env_hash(lock: &str, python_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(lock.as_bytes());
    h.update([0]);
    h.update(python_version.as_bytes());
    hex::encode(h.finalize())[..16].to_string()
}

/// The line of uv's report that names one of the requirements, without uv's box-drawing
/// decoration; else its last line. A user wants "no version of pandaz" not 30 lines.
pub(crate) fn summarize_uv_error(stderr: &str, requirements: &[String]) -> String {
    let clean = |l: &str| {
        l.trim_start_matches([' ', '×', '╰', '─', '▶', '│', '├', '╭', '┬', '┴', '┼'])
            .trim()
            .to_string()
    };
    let names: Vec<String> = requirements
        .iter()
        .map(|r| {
            r.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
        .filter(|n| !n.is_empty())
        .collect();
    let lines: Vec<String> = stderr
        .lines()
        .map(clean)
        .filter(|l| !l.is_empty())
        .collect();
    let hit = lines
        .iter()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            !lower.starts_with("no solution found")
                && names.iter().any(|n| lower.contains(n.as_str()))
        })
        .or_else(|| lines.last());
    hit.cloned()
        .unwrap_or_else(|| "uv failed without a message".into())
}

pub(crate) fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_line_naming_the_package() {
        let stderr = "  × No solution found when resolving dependencies:\n  ╰─▶ Because there is no version of sluice-no-such-pkg and you require sluice-no-such-pkg, we can conclude that your requirements are unsatisfiable.\n";
        let s = summarize_uv_error(stderr, &["sluice-no-such-pkg>=1".into()]);
        assert!(
            s.starts_with("Because there is no version of sluice-no-such-pkg"),
            "{s}"
        );
        assert_eq!(
            summarize_uv_error("error: boom\n", &["x".into()]),
            "error: boom"
        );
    }

    #[test]
    fn env_hash_depends_on_lock_and_python() {
        let a = env_hash("tabulate==0.9.0\n", "3.11.7");
        assert_eq!(a.len(), 16);
        assert_ne!(a, env_hash("tabulate==0.9.0\n", "3.12.1"));
        assert_ne!(a, env_hash("tabulate==0.8.0\n", "3.11.7"));
        assert_eq!(a, env_hash("tabulate==0.9.0\n", "3.11.7"));
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "[...]def");
        assert_eq!(tail("ab", 3), "ab");
    }
}
