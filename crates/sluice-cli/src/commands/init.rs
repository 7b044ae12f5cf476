//! `sluice init NAME`: a first feed that runs as-is against the demo `warehouse` source,
//! so an analyst sees rows within a minute. Works offline: no server involved.

use crate::cli::{InitArgs, OutputMode};
use crate::http::ClientError;
use crate::output::{print_json, print_out};
use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn init(a: InitArgs) -> Result<()> {
    let (path, feed) = target(&a.name)?;
    let tpl = sluice_core::templates::find(&a.template).map_err(ClientError::Usage)?;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} already exists; init never overwrites a file: pick another name or remove it first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(tpl.render(&feed).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if a.common.output == OutputMode::Json {
        return print_json(&json!({ "file": path, "feed": feed }));
    }
    let p = path.display();
    let params = if tpl.name == "top_products" {
        " -p region=APAC -p limit=5"
    } else {
        ""
    };
    print_out(&format!(
        "Wrote {p}: feed '{feed}' ({}).\nTry it:\n  sluice run {p}{params}\n  sluice deploy {p}\n",
        tpl.title
    ))
}

/// `NAME`, `NAME.py` or `dir/NAME.py` → the file to write and the feed name. The feed is
/// named after the function, which is named after the file, so the name must be a valid
/// feed name (it is also a Python identifier then).
pub(crate) fn target(name: &str) -> Result<(PathBuf, String)> {
    let path = Path::new(name);
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let feed = stem.strip_suffix(".py").unwrap_or(stem).to_string();
    sluice_core::names::validate("feed", &feed).map_err(|e| ClientError::Usage(e.message))?;
    Ok((path.with_file_name(format!("{feed}.py")), feed))
}

/// The default template for `feed`, as `sluice init` writes it.
#[cfg(test)]
pub(crate) fn template(feed: &str) -> String {
    sluice_core::templates::TEMPLATES[0].render(feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CommonArgs;
    use crate::config::tests::TempDir;

    #[test]
    fn target_accepts_name_file_or_path_and_rejects_bad_names() {
        assert_eq!(
            target("top").unwrap(),
            (PathBuf::from("top.py"), "top".into())
        );
        assert_eq!(
            target("top.py").unwrap(),
            (PathBuf::from("top.py"), "top".into())
        );
        assert_eq!(
            target("feeds/top_2").unwrap(),
            (PathBuf::from("feeds/top_2.py"), "top_2".into())
        );
        for bad in ["Top", "my-feed", "1st", ""] {
            let e = target(bad).unwrap_err();
            assert!(
                matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn template_is_a_complete_feed_module() {
        let t = template("top_products");
        assert!(t.starts_with("# /// script\n"));
        assert!(t.contains("\n# ///\n"));
        assert!(t.contains(
            "def top_products(limit: int = 10, region: str = \"EU\"):\n    \"\"\"Top products"
        ));
        assert!(t.contains("sluice.sql(\n        \"warehouse\""));
        // Every :placeholder in the query is bound by a keyword argument.
        for p in [":region", ":limit"] {
            assert!(t.contains(p));
        }
        assert!(t.contains("region=region,") && t.contains("limit=limit,"));
        assert!(!t.contains("{feed}"));
        // Columns of the demo warehouse only.
        assert!(t.contains("s.product_id") && t.contains("s.amount") && t.contains("p.category"));
    }

    #[test]
    fn init_writes_once_and_refuses_to_overwrite() {
        let dir = TempDir::new("init");
        let name = dir.0.join("top_products").to_string_lossy().into_owned();
        let args = || InitArgs {
            name: name.clone(),
            template: "top_products".into(),
            common: CommonArgs {
                config: None,
                home: None,
                output: OutputMode::Json,
            },
        };
        init(args()).unwrap();
        let file = dir.0.join("top_products.py");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            template("top_products")
        );
        std::fs::write(&file, "mine").unwrap();
        let e = init(args()).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }
}
