//! The generated CRD YAML. `sluice crds --write` refreshes `deploy/crds/` and the Helm chart's
//! `crds/`; the `crd_drift` test fails when what is committed there differs from the Rust types.

use kube::CustomResourceExt;

use crate::crd::{DataSource, Feed, Workspace};

/// Each CRD as (file name, YAML text), in a fixed order.
pub fn crds() -> Vec<(String, String)> {
    let all = [Workspace::crd(), Feed::crd(), DataSource::crd()];
    all.into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_yaml::to_string(&crd).expect("a CRD serializes to YAML");
            let text = format!(
                "# Generated from crates/sluice-kube/src/crd.rs by `sluice crds --write`; do not edit.\n{body}"
            );
            (format!("{name}.yaml"), text)
        })
        .collect()
}

/// The directories (relative to the repository root) that hold a copy of the CRDs.
pub const CRD_DIRS: [&str; 2] = ["deploy/crds", "deploy/helm/sluice/crds"];

/// Write every CRD into every directory of [`CRD_DIRS`] under `root`.
pub fn write_all(root: &std::path::Path) -> std::io::Result<()> {
    for dir in CRD_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, text) in crds() {
            std::fs::write(dir.join(name), text)?;
        }
    }
    Ok(())
}
