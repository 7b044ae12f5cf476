//! Keys and data sources: what an admin (or an editor, for keys in their workspace) manages.

use super::{Ctx, seg};
use crate::cli::{SourceAddArgs, SourceKind};
use crate::http::ClientError;
use crate::output::{cell, field, print_json, print_out, table};
use crate::progress::Progress;
use anyhow::Result;
use serde_json::{Value, json};
use sluice_core::Role;

pub async fn key_create(ctx: Ctx, name: &str, role: Role) -> Result<()> {
    // Admin keys are platform-wide; the others belong to one workspace.
    let workspace = if role.is_admin() {
        None
    } else {
        Some(ctx.workspace().await?)
    };
    let key = ctx
        .client
        .post_json(
            "/api/v1/keys",
            &json!({ "name": name, "role": role, "workspace": workspace }),
        )
        .await?;
    if ctx.json() {
        return print_json(&key);
    }
    let scope = workspace
        .map(|w| format!(" for workspace {w}"))
        .unwrap_or_default();
    eprintln!(
        "created {role} key '{name}'{scope} (prefix {})",
        field(&key, "prefix")
    );
    // The secret alone on stdout, so `KEY=$(sluice keys create ...)` captures just it.
    print_out(&format!("{}\n", field(&key, "secret")))?;
    eprintln!(
        "{}",
        ctx.style.yellow("warning: this secret is shown only now and cannot be retrieved again; store it somewhere safe")
    );
    Ok(())
}

pub async fn keys_list(ctx: Ctx) -> Result<()> {
    let keys = ctx.client.get_json("/api/v1/keys").await?;
    if ctx.json() {
        return print_json(&keys);
    }
    let rows: Vec<Vec<String>> = list(&keys)
        .iter()
        .map(|k| {
            vec![
                field(k, "name"),
                field(k, "prefix"),
                field(k, "role"),
                field(k, "workspace"),
                field(k, "created_at"),
                field(k, "last_used_at"),
            ]
        })
        .collect();
    print_out(&table(
        &[
            "NAME",
            "PREFIX",
            "ROLE",
            "WORKSPACE",
            "CREATED",
            "LAST USED",
        ],
        &rows,
    ))
}

pub async fn key_revoke(ctx: Ctx, prefix: &str) -> Result<()> {
    ctx.client
        .delete(&format!("/api/v1/keys/{}", seg(prefix)))
        .await?;
    if ctx.json() {
        return print_json(&json!({ "revoked": prefix }));
    }
    print_out(&format!("revoked key {prefix}: it stops working now\n"))
}

/// The `config` member of `POST /sources`: sqlite takes a file path, postgres a URL.
pub(crate) fn source_config(
    kind: SourceKind,
    path: Option<&str>,
    url: Option<&str>,
) -> Result<Value> {
    match (kind, path, url) {
        (SourceKind::Sqlite, Some(p), None) => Ok(json!({ "path": p })),
        (SourceKind::Postgres, None, Some(u)) => Ok(json!({ "url": u })),
        (SourceKind::Sqlite, _, _) => Err(ClientError::Usage(
            "a sqlite source takes --path FILE (the database file as the server sees it)".into(),
        )
        .into()),
        (SourceKind::Postgres, _, _) => Err(ClientError::Usage(
            "a postgres source takes --url postgres://USER:PASSWORD@HOST/DB".into(),
        )
        .into()),
    }
}

pub async fn source_add(ctx: Ctx, a: SourceAddArgs) -> Result<()> {
    let config = source_config(a.kind, a.path.as_deref(), a.source_url.as_deref())?;
    let body = json!({ "name": a.name, "kind": a.kind.as_str(), "config": config, "workspaces": a.grants });
    // The server opens a connection before saving, which can take a few seconds.
    let progress = Progress::start(
        ctx.tty,
        &format!("testing the connection to {} and saving it", a.name),
    );
    let source = ctx.client.post_json("/api/v1/sources", &body).await?;
    progress.finish();
    if ctx.json() {
        return print_json(&source);
    }
    let grants = workspaces(&source);
    print_out(&format!(
        "added {} source '{}'{}\n",
        a.kind.as_str(),
        a.name,
        if grants.is_empty() {
            "; no workspace may use it yet: add --grant WS".to_string()
        } else {
            format!(", usable in: {grants}")
        }
    ))
}

pub async fn sources_list(ctx: Ctx) -> Result<()> {
    let sources = ctx.client.get_json("/api/v1/sources").await?;
    if ctx.json() {
        return print_json(&sources);
    }
    let rows: Vec<Vec<String>> = list(&sources)
        .iter()
        .map(|s| {
            vec![
                field(s, "name"),
                field(s, "kind"),
                workspaces(s),
                field(s, "created_at"),
            ]
        })
        .collect();
    print_out(&table(&["SOURCE", "KIND", "WORKSPACES", "CREATED"], &rows))
}

fn workspaces(source: &Value) -> String {
    list(source.get("workspaces").unwrap_or(&Value::Null))
        .iter()
        .map(cell)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_config_matches_kind_and_location() {
        assert_eq!(
            source_config(SourceKind::Sqlite, Some("/d/w.db"), None).unwrap(),
            json!({"path": "/d/w.db"})
        );
        assert_eq!(
            source_config(SourceKind::Postgres, None, Some("postgres://h/db")).unwrap(),
            json!({"url": "postgres://h/db"})
        );
        let e = source_config(SourceKind::Sqlite, None, Some("postgres://h/db")).unwrap_err();
        assert!(e.to_string().contains("--path"), "{e}");
        let e = source_config(SourceKind::Postgres, Some("/x.db"), None).unwrap_err();
        assert!(matches!(
            e.downcast_ref::<ClientError>(),
            Some(ClientError::Usage(_))
        ));
    }

    #[test]
    fn workspaces_are_listed() {
        assert_eq!(
            workspaces(&json!({"workspaces": ["demo", "sales"]})),
            "demo, sales"
        );
        assert_eq!(workspaces(&json!({})), "");
    }
}
