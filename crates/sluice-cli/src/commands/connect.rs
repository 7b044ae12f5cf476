//! `sluice connect` (connection files and snippets for BI tools) and `sluice links`
//! (secret feed links). The server renders every file; this side picks where it goes:
//! files a tool opens (.odc, .pbids, .tds) are written to disk under the server's file
//! name, snippets to paste (Qlik, M, pandas, curl) go to stdout unless `-o` is given.

use super::{Ctx, seg};
use crate::cli::ConnectArgs;
use crate::output::{field, print_json, print_out, table};
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn feed_path(ws: &str, feed: &str) -> String {
    format!("/api/v1/workspaces/{}/feeds/{}", seg(ws), seg(feed))
}

/// The `filename` of a `Content-Disposition: attachment; filename="x.odc"`, reduced to a
/// bare name so a hostile server cannot make the CLI write outside the current directory.
pub(crate) fn disposition_filename(header: &str) -> Option<String> {
    let raw = header
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("filename="))?
        .trim_matches('"');
    let name = Path::new(raw).file_name()?.to_str()?.to_string();
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

pub async fn connect(ctx: Ctx, a: ConnectArgs) -> Result<()> {
    let ws = ctx.workspace().await?;
    let base = match &a.feed {
        Some(feed) => format!("{}/connect", feed_path(&ws, feed)),
        None => format!("/api/v1/workspaces/{}/connect", seg(&ws)),
    };
    let Some(tool) = a.tool else {
        return list_tools(&ctx, &base).await;
    };
    let mut query = a.params.clone();
    let link = match (a.link, &a.feed) {
        (false, _) => None,
        (true, None) => {
            return Err(crate::http::ClientError::Usage(
                "a secret link opens one feed: name the feed, e.g. `sluice connect FEED --tool qlik --link`".into(),
            )
            .into());
        }
        (true, Some(feed)) => {
            let l = ctx
                .client
                .post_json(
                    &format!("{}/links", feed_path(&ws, feed)),
                    &json!({ "name": format!("sluice connect --tool {}", tool.as_str()) }),
                )
                .await?;
            query.push(("link".into(), field(&l, "token")));
            Some(l)
        }
    };
    let req = ctx
        .client
        .request(Method::GET, &format!("{base}/{}", tool.as_str()))
        .query(&query);
    let resp = ctx.client.send(req).await?;
    let filename = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename)
        .unwrap_or_else(|| format!("sluice-{}.txt", tool.as_str()));
    let media_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .text()
        .await
        .map_err(|e| ctx.client.transport_error(&e))?;
    let link_json = link
        .as_ref()
        .map(|l| json!({ "id": field(l, "id"), "url": field(l, "url") }));
    if let Some(l) = &link
        && !ctx.json()
    {
        eprintln!(
            "{}",
            ctx.style.yellow(&format!(
                "created secret link {} to {}: anyone with this output can read the feed until `sluice links revoke {}`",
                field(l, "id"),
                field(l, "feed"),
                field(l, "id")
            ))
        );
    }

    let out: Option<PathBuf> = match &a.out {
        Some(p) => Some(p.clone()),
        None if tool.is_file() => Some(PathBuf::from(&filename)),
        None => None,
    };
    let Some(out) = out else {
        if ctx.json() {
            return print_json(&json!({
                "tool": tool.as_str(), "filename": filename, "media_type": media_type,
                "content": body, "link": link_json,
            }));
        }
        return print_out(&body);
    };
    std::fs::write(&out, &body).with_context(|| format!("cannot write {}", out.display()))?;
    if ctx.json() {
        return print_json(&json!({
            "tool": tool.as_str(), "file": out, "bytes": body.len(), "media_type": media_type,
            "link": link_json,
        }));
    }
    eprintln!("wrote {}: {}", out.display(), open_hint(tool.as_str()));
    Ok(())
}

/// What to do with a written file, in one line.
fn open_hint(tool: &str) -> &'static str {
    match tool {
        "excel" => {
            "open it in Excel; when asked for credentials choose Basic, any user name, a Sluice key as password"
        }
        "powerbi" => {
            "open it in Power BI Desktop; when asked choose Basic, any user name, a Sluice key as password"
        }
        "tableau" => "open it in Tableau; the password is a Sluice key",
        _ => "done",
    }
}

async fn list_tools(ctx: &Ctx, base: &str) -> Result<()> {
    let doc = ctx.client.get_json(base).await?;
    if ctx.json() {
        return print_json(&doc);
    }
    let rows: Vec<Vec<String>> = doc
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            vec![
                field(t, "tool"),
                field(t, "kind"),
                field(t, "filename"),
                field(t, "via"),
            ]
        })
        .collect();
    let mut s = table(&["TOOL", "KIND", "FILE", "HOW IT CONNECTS"], &rows);
    if let Some(url) = doc.pointer("/http/url").and_then(Value::as_str) {
        s.push_str(&format!("\nHTTP:     {url}?format=csv\n"));
    }
    if let Some(url) = doc.pointer("/odata/url").and_then(Value::as_str) {
        s.push_str(&format!("OData:    {url}\n"));
    }
    if let Some(pg) = doc.get("postgres") {
        s.push_str(&format!(
            "Postgres: host {} port {} database {} user {} (password: a key, sslmode=require)\n",
            field(pg, "host"),
            field(pg, "port"),
            field(pg, "database"),
            field(pg, "user")
        ));
    }
    s.push_str("\nsluice connect [FEED] --tool TOOL writes one; --link embeds a secret link instead of credentials.\n");
    print_out(&s)
}

pub async fn link_create(ctx: Ctx, feed: &str, name: Option<&str>) -> Result<()> {
    let ws = ctx.workspace().await?;
    let l = ctx
        .client
        .post_json(
            &format!("{}/links", feed_path(&ws, feed)),
            &json!({ "name": name }),
        )
        .await?;
    if ctx.json() {
        return print_json(&l);
    }
    eprintln!(
        "created link {} '{}' to {ws}/{feed}",
        field(&l, "id"),
        field(&l, "name")
    );
    // The URL alone on stdout, so `URL=$(sluice links create ...)` captures just it.
    print_out(&format!("{}\n", field(&l, "url")))?;
    eprintln!(
        "{}",
        ctx.style.yellow(&format!(
            "warning: anyone with this URL can read the feed (add ?format=csv and parameters); it is shown only now. Revoke it with `sluice links revoke {}`",
            field(&l, "id")
        ))
    );
    Ok(())
}

pub async fn links_list(ctx: Ctx, feed: Option<&str>) -> Result<()> {
    let ws = ctx.workspace().await?;
    let path = match feed {
        Some(f) => format!("{}/links", feed_path(&ws, f)),
        None => format!("/api/v1/workspaces/{}/links", seg(&ws)),
    };
    let links = ctx.client.get_json(&path).await?;
    if ctx.json() {
        return print_json(&links);
    }
    let rows: Vec<Vec<String>> = links
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|l| {
            vec![
                field(l, "id"),
                field(l, "feed"),
                field(l, "name"),
                field(l, "created_by"),
                field(l, "created_at"),
                field(l, "last_used_at"),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no active links in workspace {ws}: `sluice links create FEED` makes one");
        return Ok(());
    }
    print_out(&table(
        &["ID", "FEED", "NAME", "CREATED BY", "CREATED", "LAST USED"],
        &rows,
    ))
}

pub async fn link_revoke(ctx: Ctx, id: &str) -> Result<()> {
    let ws = ctx.workspace().await?;
    ctx.client
        .delete(&format!(
            "/api/v1/workspaces/{}/links/{}",
            seg(&ws),
            seg(id)
        ))
        .await?;
    if ctx.json() {
        return print_json(&json!({ "revoked": id, "workspace": ws }));
    }
    print_out(&format!("revoked link {id}: it stops working now\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_from_content_disposition_stay_in_the_current_directory() {
        assert_eq!(
            disposition_filename("attachment; filename=\"demo-sales.odc\"").as_deref(),
            Some("demo-sales.odc")
        );
        assert_eq!(
            disposition_filename("attachment; filename=demo.pbids").as_deref(),
            Some("demo.pbids")
        );
        assert_eq!(
            disposition_filename("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            disposition_filename("attachment; filename=\".bashrc\""),
            None
        );
        assert_eq!(disposition_filename("attachment"), None);
    }
}
