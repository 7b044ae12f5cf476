//! PEP 723 inline script metadata: the `# /// script` block at the top of a feed module
//! that declares its dependencies. A pure function of the source text, so a bad block is
//! reported (with its line) before any process is started.
//!
//! The block is TOML inside comment lines:
//!
//! ```text
//! # /// script
//! # dependencies = ["pandas>=2"]
//! # ///
//! ```

use sluice_core::{Code, Error, Result};

/// What the module's `# /// script` block declares. Only `dependencies` matters to Sluice;
/// other keys (`requires-python`, `[tool.*]`) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptMetadata {
    pub dependencies: Vec<String>,
}

/// Parse the PEP 723 `script` block of `source`. No block means no dependencies.
pub fn parse_script_metadata(source: &str) -> Result<ScriptMetadata> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found: Option<(usize, String)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end_matches('\r');
        let Some(kind) = line.strip_prefix("# /// ") else {
            i += 1;
            continue;
        };
        let kind = kind.trim();
        // Per PEP 723 the block runs over the following comment lines ("#" or "# ...") and
        // ends at the *last* "# ///" among them, so TOML content may itself contain "# ///".
        let mut end = None;
        let mut j = i + 1;
        while j < lines.len() {
            let l = lines[j].trim_end_matches('\r');
            if l == "#" || l.starts_with("# ") {
                if l == "# ///" {
                    end = Some(j);
                }
                j += 1;
            } else {
                break;
            }
        }
        let Some(end) = end else {
            return Err(invalid(
                i + 1,
                format!(
                    "the `# /// {kind}` block opened here is never closed: add a line `# ///` after its last line"
                ),
            ));
        };
        if kind == "script" {
            if let Some((first, _)) = &found {
                return Err(invalid(
                    i + 1,
                    format!(
                        "a second `# /// script` block (the first is at line {first}): keep only one"
                    ),
                ));
            }
            let content: String = lines[i + 1..end]
                .iter()
                .map(|l| {
                    let l = l.trim_end_matches('\r');
                    let body = if l == "#" { "" } else { &l[2..] };
                    format!("{body}\n")
                })
                .collect();
            found = Some((i + 1, content));
        }
        i = end + 1;
    }
    let Some((open_line, content)) = found else {
        return Ok(ScriptMetadata::default());
    };
    let table: toml::Table = content.parse().map_err(|e: toml::de::Error| {
        // The TOML error's span is an offset into the block's content; the block's
        // content starts on the line after the opening marker.
        let line_in_block = e
            .span()
            .map(|s| content[..s.start.min(content.len())].matches('\n').count())
            .unwrap_or(0);
        invalid(
            open_line + 1 + line_in_block,
            format!(
                "the `# /// script` block is not valid TOML: {}",
                e.message()
            ),
        )
    })?;
    let dependencies = match table.get("dependencies") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                other => Err(invalid(
                    open_line,
                    format!(
                        "`dependencies` must be a list of requirement strings such as \"pandas>=2\", found {}",
                        other.type_str()
                    ),
                )),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(invalid(
                open_line,
                format!(
                    "`dependencies` must be a list of requirement strings such as [\"pandas>=2\"], found {}",
                    other.type_str()
                ),
            ));
        }
    };
    Ok(ScriptMetadata { dependencies })
}

fn invalid(line: usize, what: String) -> Error {
    Error::new(Code::InvalidFeedModule, format!("line {line}: {what}")).with("line", line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_block_means_no_dependencies() {
        let m = parse_script_metadata("import sluice\n\n@sluice.feed\ndef f():\n    return []\n")
            .unwrap();
        assert!(m.dependencies.is_empty());
    }

    #[test]
    fn reads_dependencies() {
        let src = "#!/usr/bin/env python\n# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\n#   \"pandas>=2\",\n#   \"tabulate\",\n# ]\n#\n# [tool.x]\n# y = 1\n# ///\nimport sluice\n";
        let m = parse_script_metadata(src).unwrap();
        assert_eq!(m.dependencies, vec!["pandas>=2", "tabulate"]);
    }

    #[test]
    fn block_without_dependencies_key() {
        let m =
            parse_script_metadata("# /// script\n# requires-python = \">=3.11\"\n# ///\n").unwrap();
        assert!(m.dependencies.is_empty());
    }

    #[test]
    fn crlf_line_endings() {
        let m =
            parse_script_metadata("# /// script\r\n# dependencies = [\"a\"]\r\n# ///\r\n").unwrap();
        assert_eq!(m.dependencies, vec!["a"]);
    }

    #[test]
    fn other_block_types_are_ignored() {
        let m = parse_script_metadata(
            "# /// other\n# x = 1\n# ///\n\n# /// script\n# dependencies = [\"b\"]\n# ///\n",
        )
        .unwrap();
        assert_eq!(m.dependencies, vec!["b"]);
    }

    #[test]
    fn bad_toml_names_the_line() {
        let src = "import os\n# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\"pandas\"\n# ///\n";
        let e = parse_script_metadata(src).unwrap_err();
        assert_eq!(e.code, Code::InvalidFeedModule);
        assert!(e.message.contains("not valid TOML"), "{}", e.message);
        let line = e.extra["line"].as_u64().unwrap();
        // The broken array starts on line 4; TOML notices at the end of the block.
        assert!((4..=5).contains(&line), "line {line}: {}", e.message);
    }

    #[test]
    fn bad_value_on_a_line_is_reported_there() {
        let src = "# /// script\n# dependencies = [\"a\"]\n# oops = = 1\n# ///\n";
        let e = parse_script_metadata(src).unwrap_err();
        assert_eq!(e.extra["line"], 3, "{}", e.message);
        assert!(e.message.starts_with("line 3:"), "{}", e.message);
    }

    #[test]
    fn unclosed_block_is_an_error() {
        let e = parse_script_metadata("x = 1\n# /// script\n# dependencies = []\nimport sluice\n")
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidFeedModule);
        assert_eq!(e.extra["line"], 2);
        assert!(e.message.contains("never closed"), "{}", e.message);
    }

    #[test]
    fn dependencies_must_be_strings() {
        let e = parse_script_metadata("# /// script\n# dependencies = \"pandas\"\n# ///\n")
            .unwrap_err();
        assert!(
            e.message.contains("list of requirement strings"),
            "{}",
            e.message
        );
        let e = parse_script_metadata("# /// script\n# dependencies = [1]\n# ///\n").unwrap_err();
        assert!(
            e.message.contains("list of requirement strings"),
            "{}",
            e.message
        );
    }

    #[test]
    fn two_script_blocks_are_an_error() {
        let e = parse_script_metadata("# /// script\n# ///\n\n# /// script\n# ///\n").unwrap_err();
        assert_eq!(e.extra["line"], 4);
    }
}
