//! Drafts: feed modules being written in the web IDE, saved per author and workspace
//! under a feed name. Nothing serves a draft; deploying one is the control API's job with
//! the draft's source, like any other module.

use crate::{Store, db, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::Result;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Draft {
    pub workspace: String,
    /// The prefix of the key that wrote it.
    #[serde(skip_serializing)]
    pub owner: String,
    pub name: String,
    pub filename: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct DraftRow {
    workspace: String,
    owner: String,
    name: String,
    filename: String,
    source: String,
    created_at: i64,
    updated_at: i64,
}

impl From<DraftRow> for Draft {
    fn from(r: DraftRow) -> Self {
        Draft {
            workspace: r.workspace,
            owner: r.owner,
            name: r.name,
            filename: r.filename,
            source: r.source,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

const SELECT: &str = "SELECT w.name AS workspace, d.owner, d.name, d.filename, d.source, d.created_at, d.updated_at \
     FROM drafts d JOIN workspaces w ON w.id = d.workspace_id";

impl Store {
    /// Creates or replaces `owner`'s draft `name` in workspace `ws` (`workspace_not_found`
    /// if there is no such workspace).
    pub async fn save_draft(
        &self,
        ws: &str,
        owner: &str,
        name: &str,
        filename: &str,
        source: &str,
    ) -> Result<Draft> {
        let ws_id = self.workspace_id(ws).await?;
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO drafts (workspace_id, owner, name, filename, source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (workspace_id, owner, name) DO UPDATE SET filename = excluded.filename, \
             source = excluded.source, updated_at = excluded.updated_at",
        )
        .bind(ws_id)
        .bind(owner)
        .bind(name)
        .bind(filename)
        .bind(source)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db("save a draft")))?;
        self.draft(ws, owner, name)
            .await?
            .ok_or_else(|| sluice_core::Error::internal("a draft vanished right after saving"))
    }

    pub async fn draft(&self, ws: &str, owner: &str, name: &str) -> Result<Option<Draft>> {
        let sql = format!("{SELECT} WHERE w.name = $1 AND d.owner = $2 AND d.name = $3");
        let row: Option<DraftRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(ws)
            .bind(owner)
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db("read a draft")))?;
        Ok(row.map(Into::into))
    }

    /// `owner`'s drafts in `ws`, by name.
    pub async fn list_drafts(&self, ws: &str, owner: &str) -> Result<Vec<Draft>> {
        self.workspace_id(ws).await?;
        let sql = format!("{SELECT} WHERE w.name = $1 AND d.owner = $2 ORDER BY d.name");
        let rows: Vec<DraftRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(ws)
            .bind(owner)
            .fetch_all(pool)
            .await
            .map_err(db("list drafts")))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// `false` if there was no such draft.
    pub async fn delete_draft(&self, ws: &str, owner: &str, name: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "DELETE FROM drafts WHERE owner = $1 AND name = $2 AND workspace_id IN (SELECT id FROM workspaces WHERE name = $3)",
        )
        .bind(owner)
        .bind(name)
        .bind(ws)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(db("delete a draft")))?;
        Ok(n > 0)
    }
}
