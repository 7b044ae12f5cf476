//! Deployed feeds: list, revisions, rollback, delete, call (the data itself) and logs.

use super::{Ctx, absolute_url, seg};
use crate::cli::{CallArgs, CallFormat};
use crate::http::{ClientError, LineBuffer};
use crate::output::{Style, cell, field, human_bytes, print_json, print_out, table};
use crate::progress::Progress;
use anyhow::{Context, Result};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};

fn feed_path(ws: &str, feed: &str) -> String {
    format!("/api/v1/workspaces/{}/feeds/{}", seg(ws), seg(feed))
}

pub async fn list(ctx: Ctx) -> Result<()> {
    let ws = ctx.workspace().await?;
    let feeds = ctx
        .client
        .get_json(&format!("/api/v1/workspaces/{}/feeds", seg(&ws)))
        .await?;
    if ctx.json() {
        return print_json(&feeds);
    }
    let rows: Vec<Vec<String>> = as_list(&feeds)
        .iter()
        .map(|f| {
            vec![
                field(f, "name"),
                field(f, "live_revision"),
                params_summary(f.get("params").unwrap_or(&Value::Null)),
                field(f, "updated_at"),
                absolute_url(ctx.client.base(), &field(f, "url")),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!(
            "no feeds in workspace {ws} yet: `sluice init NAME` then `sluice deploy NAME.py` creates one"
        );
        return Ok(());
    }
    print_out(&table(
        &["FEED", "LIVE", "PARAMETERS", "UPDATED", "URL"],
        &rows,
    ))
}

/// `limit: int = 10, region: str = "EU", since: date` (no default = required).
pub(crate) fn params_summary(params: &Value) -> String {
    as_list(params)
        .iter()
        .map(|p| {
            let mut s = format!("{}: {}", field(p, "name"), field(p, "type"));
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
            if !required {
                // A missing or null default means Python's None.
                let d = match p.get("default") {
                    None | Some(Value::Null) => "None".to_string(),
                    Some(v) => v.to_string(),
                };
                s.push_str(&format!(" = {d}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn as_list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

pub async fn revisions(ctx: Ctx, feed: &str) -> Result<()> {
    let ws = ctx.workspace().await?;
    let revs = ctx
        .client
        .get_json(&format!("{}/revisions", feed_path(&ws, feed)))
        .await?;
    if ctx.json() {
        return print_json(&revs);
    }
    let rows: Vec<Vec<String>> = as_list(&revs)
        .iter()
        .map(|r| {
            let live = r.get("live").and_then(Value::as_bool).unwrap_or(false);
            let env: String = field(r, "env_hash").chars().take(12).collect();
            vec![
                field(r, "number"),
                if live { "live".into() } else { String::new() },
                field(r, "filename"),
                field(r, "created_at"),
                field(r, "created_by"),
                env,
            ]
        })
        .collect();
    print_out(&table(
        &["REVISION", "LIVE", "FILE", "CREATED", "BY", "ENV"],
        &rows,
    ))
}

pub async fn rollback(ctx: Ctx, feed: &str, revision: i64) -> Result<()> {
    let ws = ctx.workspace().await?;
    let f = ctx
        .client
        .post_json(
            &format!("{}/rollback", feed_path(&ws, feed)),
            &json!({ "revision": revision }),
        )
        .await?;
    if ctx.json() {
        return print_json(&f);
    }
    print_out(&format!(
        "{feed}: revision {} is live ({})\n",
        f.get("live_revision")
            .map(cell)
            .unwrap_or_else(|| revision.to_string()),
        absolute_url(ctx.client.base(), &field(&f, "url"))
    ))
}

pub async fn delete(ctx: Ctx, feed: &str, yes: bool) -> Result<()> {
    // Refuse before any network call: a script without --yes is a usage mistake.
    if !yes && !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(format!(
            "refusing to delete feed '{feed}' without confirmation: stdin is not a terminal; pass --yes to delete it"
        ))
        .into());
    }
    let ws = ctx.workspace().await?;
    if !yes {
        eprint!(
            "Delete feed '{feed}' in workspace {ws}, with all its revisions? BI tools using it will get 404s. [y/N] "
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("not deleted");
            return Ok(());
        }
    }
    ctx.client.delete(&feed_path(&ws, feed)).await?;
    if ctx.json() {
        return print_json(&json!({ "deleted": feed, "workspace": ws }));
    }
    print_out(&format!("deleted feed {feed} from workspace {ws}\n"))
}

/// `GET /feeds/{ws}/{feed}`: the body is streamed as it arrives, so large results never sit
/// in memory. A file is written as FILE.part and renamed at the end, so a failed download
/// never looks like a complete one.
pub async fn call(ctx: Ctx, a: CallArgs) -> Result<()> {
    if a.out.is_none() && a.format == CallFormat::Arrow && std::io::stdout().is_terminal() {
        return Err(ClientError::Usage(
            "Arrow is binary and would garble the terminal: pass -o FILE or pipe the output".into(),
        )
        .into());
    }
    let ws = ctx.workspace().await?;
    let mut query: Vec<(String, String)> = a.params.clone();
    query.push(("format".into(), a.format.as_str().into()));
    let req = ctx
        .client
        .request(
            Method::GET,
            &format!("/feeds/{}/{}", seg(&ws), seg(&a.feed)),
        )
        .query(&query);
    let resp = ctx.client.send(req).await?;
    let mut body = resp.bytes_stream();

    let Some(out) = &a.out else {
        // Plain blocking writes: this command has nothing else to do meanwhile, and a slow
        // reader should slow the download down (backpressure) rather than buffer it.
        let mut stdout = std::io::stdout();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ctx.client.transport_error(&e))?;
            if let Err(e) = stdout.write_all(&chunk) {
                // The reader (`| head`) has what it wanted.
                return ignore_broken_pipe(e);
            }
        }
        return stdout.flush().or_else(ignore_broken_pipe);
    };

    let part = {
        let mut p = out.clone().into_os_string();
        p.push(".part");
        std::path::PathBuf::from(p)
    };
    let progress = Progress::start(
        ctx.tty,
        &format!("downloading {} to {}", a.feed, out.display()),
    );
    let result = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("cannot create {}", part.display()))?;
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ctx.client.transport_error(&e))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .with_context(|| format!("cannot write {}", part.display()))?;
            bytes += chunk.len() as u64;
            if ctx.tty {
                progress.set_message(&format!(
                    "downloading {} to {}: {}",
                    a.feed,
                    out.display(),
                    human_bytes(bytes)
                ));
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        tokio::fs::rename(&part, out)
            .await
            .with_context(|| format!("cannot move {} to {}", part.display(), out.display()))?;
        anyhow::Ok(bytes)
    }
    .await;
    let secs = progress.elapsed().as_secs_f64();
    progress.finish();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    if ctx.json() {
        return print_json(&json!({ "file": out, "bytes": bytes, "format": a.format.as_str() }));
    }
    eprintln!(
        "wrote {} to {} in {secs:.1}s",
        human_bytes(bytes),
        out.display()
    );
    Ok(())
}

fn ignore_broken_pipe(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e.into())
    }
}

pub async fn logs(ctx: Ctx, feed: &str, follow: bool, lines: u64) -> Result<()> {
    let ws = ctx.workspace().await?;
    let mut query = vec![("limit", lines.to_string())];
    if follow {
        query.push(("follow", "true".into()));
    }
    let req = ctx
        .client
        .request(Method::GET, &format!("{}/logs", feed_path(&ws, feed)))
        .query(&query);
    let resp = ctx.client.send(req).await?;
    if !follow {
        let list = ctx.client.json_body(resp).await?;
        if ctx.json() {
            return print_json(&list);
        }
        if as_list(&list).is_empty() {
            eprintln!("no invocations of {feed} yet");
        }
        for inv in as_list(&list) {
            print_out(&invocation_line(&ctx.style, inv))?;
        }
        return Ok(());
    }
    if !ctx.json() {
        eprintln!(
            "{}",
            ctx.style.dim(&format!(
                "following {feed} in workspace {ws} (Ctrl-C to stop)"
            ))
        );
    }
    let mut body = resp.bytes_stream();
    let mut buf = LineBuffer::default();
    let emit = |line: &str| -> Result<()> {
        if ctx.json() {
            // NDJSON in, NDJSON out: one invocation per line for `jq`.
            return print_out(&format!("{line}\n"));
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("the server sent a log line that is not JSON: {line}"))?;
        print_out(&invocation_line(&ctx.style, &v))
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ctx.client.transport_error(&e))?;
        for line in buf.push(&chunk) {
            emit(&line)?;
        }
    }
    if let Some(line) = buf.finish() {
        emit(&line)?;
    }
    eprintln!("{}", ctx.style.dim("the server closed the log stream"));
    Ok(())
}

/// One invocation as a log line, with what the feed printed indented below it:
/// `2024-05-01T10:00:00Z  200   12 ms    10 rows  rev 3  region=EU`.
pub(crate) fn invocation_line(style: &Style, inv: &Value) -> String {
    let params = inv
        .get("params")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    // A GitOps feed's revisions are known by the cluster's name for them.
    let revision = match field(inv, "revision_name") {
        name if name.is_empty() => field(inv, "revision"),
        name => name,
    };
    let mut s = format!(
        "{}  {:>3}  {:>6} ms  {:>6} rows  rev {}",
        field(inv, "at"),
        field(inv, "status"),
        field(inv, "duration_ms"),
        field(inv, "rows"),
        revision,
    );
    if !params.is_empty() {
        s.push_str(&format!("  {params}"));
    }
    let code = field(inv, "error_code");
    if !code.is_empty() {
        s.push_str(&format!("  error[{code}]"));
    }
    s.push('\n');
    for stream in ["stdout", "stderr"] {
        for line in field(inv, stream).trim_end().lines() {
            s.push_str(&style.dim(&format!("    {stream}│ {line}")));
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_summary_shows_types_defaults_and_required() {
        let p = json!([
            {"name": "limit", "type": "int", "default": 10},
            {"name": "region", "type": "str", "default": "EU"},
            {"name": "since", "type": "date", "required": true},
            {"name": "tag", "type": "str", "default": null}
        ]);
        assert_eq!(
            params_summary(&p),
            r#"limit: int = 10, region: str = "EU", since: date, tag: str = None"#
        );
        assert_eq!(params_summary(&Value::Null), "");
    }

    #[test]
    fn invocation_lines_show_status_params_errors_and_output() {
        let inv = json!({"id": 7, "feed": "top", "revision": 3, "status": 500, "duration_ms": 12, "rows": 0,
            "error_code": "feed_raised", "stdout": "", "stderr": "boom\n", "params": {"region": "EU"},
            "at": "2024-05-01T10:00:00Z"});
        assert_eq!(
            invocation_line(&Style { color: false }, &inv),
            "2024-05-01T10:00:00Z  500      12 ms       0 rows  rev 3  region=EU  error[feed_raised]\n    stderr│ boom\n"
        );
        let mut gitops = inv.clone();
        gitops["revision_name"] = "3f2a9c1e7b44".into();
        assert!(
            invocation_line(&Style { color: false }, &gitops).contains("rev 3f2a9c1e7b44  "),
            "the cluster's name for a GitOps feed's revision"
        );
    }
}
