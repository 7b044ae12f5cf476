//! The saved login: `{url, key}` in a small TOML file, readable only by its owner because
//! it holds a secret. Paths arrive as values (resolved from clap args), never from the
//! environment here.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Config {
    pub url: String,
    pub key: String,
}

/// `--config`/`$SLUICE_CONFIG` if given, else `$HOME/.config/sluice/config.toml`.
pub fn resolve_path(explicit: Option<&Path>, home: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match home {
        Some(h) if !h.as_os_str().is_empty() => {
            Ok(h.join(".config").join("sluice").join("config.toml"))
        }
        _ => bail!(
            "cannot tell where the config file goes: HOME is not set. Pass --config FILE or set SLUICE_CONFIG"
        ),
    }
}

/// Reads the config; `Ok(None)` when the file does not exist (not logged in yet).
pub fn read(path: &Path) -> Result<Option<Config>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read config file {}", path.display()));
        }
    };
    let cfg = toml::from_str(&text).with_context(|| {
        format!(
            "config file {} is not valid: run `sluice login URL --key KEY` to rewrite it",
            path.display()
        )
    })?;
    Ok(Some(cfg))
}

/// Renders the file. A JSON string literal is also a valid TOML basic string (same escapes,
/// `\uXXXX` for control characters), which spares a TOML writer dependency.
pub fn render(cfg: &Config) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings always serialize");
    format!(
        "# Written by `sluice login`. Holds an API key: keep this file private.\nurl = {}\nkey = {}\n",
        q(&cfg.url),
        q(&cfg.key)
    )
}

/// Writes the config with mode 0600, atomically (temp file + rename) so an interrupted
/// login never leaves a half-written key behind.
pub fn write(path: &Path, cfg: &Config) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)
            .with_context(|| format!("cannot create config directory {}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.tmp");
    let result = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_private(&tmp)?;
        f.write_all(render(cfg).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write config file {}", path.display()))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "sluice-cli-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn path_prefers_explicit_then_home() {
        let p = resolve_path(Some(Path::new("/x/c.toml")), Some(Path::new("/home/a"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/c.toml"));
        let p = resolve_path(None, Some(Path::new("/home/a"))).unwrap();
        assert_eq!(p, PathBuf::from("/home/a/.config/sluice/config.toml"));
        let e = resolve_path(None, None).unwrap_err().to_string();
        assert!(e.contains("SLUICE_CONFIG"), "{e}");
    }

    #[test]
    fn write_then_read_round_trips_awkward_strings_with_mode_0600() {
        let dir = TempDir::new("cfg");
        let path = dir.0.join("nested/deeper/config.toml");
        let cfg = Config {
            url: "http://127.0.0.1:8080".into(),
            key: "k\"ey\\with\nodd\u{1}chars é".into(),
        };
        write(&path, &cfg).unwrap();
        assert_eq!(read(&path).unwrap(), Some(cfg.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Overwriting keeps the mode and replaces the content; no temp file is left.
        let cfg2 = Config {
            url: "https://sluice.example".into(),
            key: "other".into(),
        };
        write(&path, &cfg2).unwrap();
        assert_eq!(read(&path).unwrap(), Some(cfg2));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.toml")]);
    }

    #[test]
    fn missing_file_is_none_and_garbage_says_how_to_fix() {
        let dir = TempDir::new("cfg2");
        assert_eq!(read(&dir.0.join("nope.toml")).unwrap(), None);
        let bad = dir.0.join("bad.toml");
        std::fs::write(&bad, "url = 3").unwrap();
        let e = format!("{:#}", read(&bad).unwrap_err());
        assert!(e.contains("sluice login"), "{e}");
    }
}
