//! The Python SDK (`python/sluice/*.py`) is compiled into the binary and written out at
//! startup, so an analyst never pip-installs it and a worker always runs the SDK that
//! matches this runtime's protocol. The copy lives in a folder named by the hash of its
//! contents: two binaries with different SDKs never overwrite each other's files under a
//! running worker.

use sha2::{Digest, Sha256};
use sluice_core::{Error, Result};
use std::path::{Path, PathBuf};

/// Every file of the package, listed explicitly: a new SDK file must be added here or
/// workers will fail to import it (the `sdk_has_every_python_file` test checks that).
pub(crate) const FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../python/sluice/__init__.py"),
    ),
    (
        "_encode.py",
        include_str!("../../../python/sluice/_encode.py"),
    ),
    ("_feed.py", include_str!("../../../python/sluice/_feed.py")),
    ("_sql.py", include_str!("../../../python/sluice/_sql.py")),
    (
        "_worker.py",
        include_str!("../../../python/sluice/_worker.py"),
    ),
];

pub(crate) fn hash() -> String {
    let mut h = Sha256::new();
    for (name, body) in FILES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(body.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Write the SDK under `<data_dir>/sdk/<hash>/sluice/` unless it is already there, and
/// return the folder to put on PYTHONPATH. Built in a temporary folder and renamed, so a
/// crash mid-write never leaves a partial package that looks complete.
pub(crate) async fn install(data_dir: &Path) -> Result<PathBuf> {
    let root = data_dir.join("sdk");
    let dest = root.join(hash());
    if tokio::fs::try_exists(dest.join("sluice").join("__init__.py"))
        .await
        .unwrap_or(false)
    {
        return Ok(dest);
    }
    let tmp = root.join(format!(".tmp-{}-{}", std::process::id(), crate::next_seq()));
    let pkg = tmp.join("sluice");
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::internal(format!(
            "could not {what} {} while installing the Python SDK: {e}; check that the data dir is writable",
            p.display()
        ))
    };
    tokio::fs::create_dir_all(&pkg)
        .await
        .map_err(|e| io("create", &pkg, e))?;
    for (name, body) in FILES {
        let p = pkg.join(name);
        tokio::fs::write(&p, body)
            .await
            .map_err(|e| io("write", &p, e))?;
    }
    if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
        // Another process installed the same SDK first: theirs is identical, use it.
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        if !tokio::fs::try_exists(dest.join("sluice").join("__init__.py"))
            .await
            .unwrap_or(false)
        {
            return Err(io("rename into place", &dest, e));
        }
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_has_every_python_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/sluice");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "python/sluice/*.py and sdk::FILES differ: list every file in FILES"
        );
    }

    #[tokio::test]
    async fn install_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let a = install(d.path()).await.unwrap();
        let b = install(d.path()).await.unwrap();
        assert_eq!(a, b);
        assert!(a.join("sluice/_worker.py").is_file());
        let entries = std::fs::read_dir(d.path().join("sdk")).unwrap().count();
        assert_eq!(entries, 1, "no temporary folders left behind");
    }
}
