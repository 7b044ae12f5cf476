//! Workspaces: a team's space. Everything else (keys, feeds, grants) hangs off one.

use crate::{Store, db, is_unique_violation, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result, names};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Workspace {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    name: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace {
            name: r.name,
            created_at: ts(r.created_at),
        }
    }
}

impl Store {
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace> {
        names::validate("workspace", name)?;
        let now = now_ms();
        let inserted = on_pool!(self, pool => sqlx::query("INSERT INTO workspaces (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => Ok(Workspace {
                name: name.to_string(),
                created_at: ts(now),
            }),
            Err(e) if is_unique_violation(&e) => Err(Error::new(
                Code::AlreadyExists,
                format!(
                    "workspace '{name}' already exists: pick another name or use the existing one"
                ),
            )
            .with("name", name)),
            Err(e) => Err(db("create a workspace")(e)),
        }
    }

    pub async fn workspace(&self, name: &str) -> Result<Option<Workspace>> {
        let row: Option<WorkspaceRow> = on_pool!(self, pool => sqlx::query_as("SELECT name, created_at FROM workspaces WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db("read a workspace")))?;
        Ok(row.map(Into::into))
    }

    /// All workspaces, by name.
    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let rows: Vec<WorkspaceRow> = on_pool!(self, pool => sqlx::query_as("SELECT name, created_at FROM workspaces ORDER BY name")
                .fetch_all(pool)
                .await
                .map_err(db("list workspaces")))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The id of a workspace, or `workspace_not_found`.
    pub(crate) async fn workspace_id(&self, name: &str) -> Result<i64> {
        let id: Option<i64> = on_pool!(self, pool => sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db("look up a workspace")))?;
        id.ok_or_else(|| Error::not_found(Code::WorkspaceNotFound, "workspace", name))
    }
}
