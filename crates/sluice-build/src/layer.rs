//! Reproducible layers: a tar of files with fixed order, owner, mode and time, gzipped with
//! no timestamp, so the same files always give the same digest.

use std::io::Write;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// A compressed layer and its two digests.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `sha256:...` of the gzip bytes (what the manifest names).
    pub digest: String,
    /// `sha256:...` of the uncompressed tar (what the image config's rootfs names).
    pub diff_id: String,
    pub bytes: Vec<u8>,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One file of a layer.
pub struct File {
    /// Absolute path inside the image.
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Build a layer from files; parent directories are added (mode 0755).
pub fn from_files(mut files: Vec<File>) -> std::io::Result<Layer> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        let mut p = Path::new(f.path.trim_start_matches('/'));
        while let Some(parent) = p.parent() {
            if parent.as_os_str().is_empty() {
                break;
            }
            dirs.insert(parent.to_string_lossy().into_owned());
            p = parent;
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    for f in &files {
        let mut h = header(tar::EntryType::Regular, f.mode, f.contents.len() as u64);
        tar.append_data(
            &mut h,
            f.path.trim_start_matches('/'),
            f.contents.as_slice(),
        )?;
    }
    let tar = tar.into_inner()?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    gz.write_all(&tar)?;
    let bytes = gz.finish()?;
    Ok(Layer {
        digest: sha256(&bytes),
        diff_id: sha256(&tar),
        bytes,
    })
}

/// Every regular file under `dir`, placed under `prefix` in the image (modes kept: 0755 for
/// executables, 0644 otherwise; symlinks are followed).
pub fn from_dir(dir: &Path, prefix: &str) -> std::io::Result<Layer> {
    let mut files = Vec::new();
    collect(dir, dir, prefix, &mut files)?;
    from_files(files)
}

fn collect(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<File>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect(root, &path, prefix, out)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push(File {
                path: format!("{}/{rel}", prefix.trim_end_matches('/')),
                mode,
                contents: std::fs::read(&path)?,
            });
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_digest_in_any_order() {
        let f = |p: &str, c: &str| File {
            path: p.into(),
            mode: 0o644,
            contents: c.as_bytes().to_vec(),
        };
        let a = from_files(vec![f("/a/x.py", "1"), f("/b/y.py", "2")]).unwrap();
        let b = from_files(vec![f("/b/y.py", "2"), f("/a/x.py", "1")]).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        let c = from_files(vec![f("/a/x.py", "1"), f("/b/y.py", "3")]).unwrap();
        assert_ne!(a.digest, c.digest);
        let names: Vec<String> =
            tar::Archive::new(flate2::read::GzDecoder::new(a.bytes.as_slice()))
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect();
        assert_eq!(names, ["a/", "b/", "a/x.py", "b/y.py"]);
    }
}
