//! `sluice run FILE`: run a feed file on the server without deploying it. The rows go to
//! stdout; what the feed printed, and timing, go to stderr so `> out.csv` stays clean.

use super::{Ctx, seg};
use crate::cli::{RunArgs, RunFormat};
use crate::output::{Style, cell, csv, print_json, print_out, records, table};
use crate::progress::Progress;
use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub async fn run(ctx: Ctx, a: RunArgs) -> Result<()> {
    let source = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read feed file {}: check the path", a.file.display()))?;
    let body = request_body(
        &source,
        &filename(&a.file),
        a.feed.as_deref(),
        &a.params,
        a.limit,
    );
    let ws = ctx.workspace().await?;
    let progress = Progress::start(
        ctx.tty,
        &format!("running {} in workspace {ws}", a.file.display()),
    );
    let resp = ctx
        .client
        .post_json(&format!("/api/v1/workspaces/{}/run", seg(&ws)), &body)
        .await?;
    progress.finish();

    print_captured(&ctx.style, &resp);
    if ctx.json() {
        return print_json(&resp);
    }
    let columns: Vec<String> = resp
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(cell).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<Value>> = resp
        .get("rows")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    match a.format {
        RunFormat::Table => {
            let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
            let cells: Vec<Vec<String>> =
                rows.iter().map(|r| r.iter().map(cell).collect()).collect();
            print_out(&table(&headers, &cells))?;
        }
        RunFormat::Json => print_json(&records(&columns, &rows))?,
        RunFormat::Csv => print_out(&csv(&columns, &rows))?,
    }
    eprintln!("{}", ctx.style.dim(&summary(&resp, rows.len(), a.limit)));
    Ok(())
}

/// The body of `POST /run`. Repeated `-p name=...` are joined with commas, the form a
/// `list[str]` parameter accepts, since the API takes one string per name.
pub(crate) fn request_body(
    source: &str,
    filename: &str,
    feed: Option<&str>,
    params: &[(String, String)],
    limit: u64,
) -> Value {
    let mut joined: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in params {
        joined
            .entry(k.as_str())
            .and_modify(|acc| {
                acc.push(',');
                acc.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let params: Map<String, Value> = joined
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    json!({ "source": source, "filename": filename, "feed": feed, "params": params, "limit": limit })
}

fn filename(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// "top_products: 10 rows in 132 ms (showing the first 10; more with --limit)".
pub(crate) fn summary(resp: &Value, shown: usize, limit: u64) -> String {
    let feed = resp.get("feed").and_then(Value::as_str).unwrap_or("feed");
    let total = resp
        .get("row_count")
        .and_then(Value::as_u64)
        .unwrap_or(shown as u64);
    let ms = resp.get("duration_ms").and_then(Value::as_u64);
    let mut s = format!("{feed}: {total} row{}", if total == 1 { "" } else { "s" });
    if let Some(ms) = ms {
        s.push_str(&format!(" in {ms} ms"));
    }
    if resp
        .get("truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || (total as usize) > shown
    {
        s.push_str(&format!(
            " (showing the first {shown}; raise --limit, now {limit}, to see more)"
        ));
    }
    s
}

/// The feed's own print() output and warnings, labelled and dimmed so they are not
/// mistaken for rows.
fn print_captured(style: &Style, resp: &Value) {
    for stream in ["stdout", "stderr"] {
        if let Some(text) = resp
            .get(stream)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        {
            eprint!("{}", labelled(style, stream, text));
        }
    }
}

pub(crate) fn labelled(style: &Style, label: &str, text: &str) -> String {
    let mut out = style.dim(&format!("── feed {label} ──")) + "\n";
    for line in text.trim_end().lines() {
        out.push_str(&style.dim(&format!("│ {line}")));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_joins_repeated_params_and_keeps_the_rest() {
        let params = vec![
            ("region".to_string(), "EU".to_string()),
            ("tags".to_string(), "a".to_string()),
            ("tags".to_string(), "b".to_string()),
        ];
        let b = request_body("src", "top.py", Some("top"), &params, 20);
        assert_eq!(
            b,
            json!({"source": "src", "filename": "top.py", "feed": "top",
                   "params": {"region": "EU", "tags": "a,b"}, "limit": 20})
        );
        assert_eq!(request_body("s", "f.py", None, &[], 5)["feed"], Value::Null);
    }

    #[test]
    fn summary_notes_truncation() {
        let r = json!({"feed": "top", "row_count": 3, "truncated": false, "duration_ms": 12});
        assert_eq!(summary(&r, 3, 20), "top: 3 rows in 12 ms");
        let r = json!({"feed": "top", "row_count": 500, "truncated": true, "duration_ms": 40});
        assert_eq!(
            summary(&r, 20, 20),
            "top: 500 rows in 40 ms (showing the first 20; raise --limit, now 20, to see more)"
        );
        let r = json!({"feed": "one", "row_count": 1});
        assert_eq!(summary(&r, 1, 20), "one: 1 row");
    }

    #[test]
    fn captured_output_is_labelled() {
        let s = labelled(&Style { color: false }, "stdout", "hello\nworld\n");
        assert_eq!(s, "── feed stdout ──\n│ hello\n│ world\n");
    }
}
