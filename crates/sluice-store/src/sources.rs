//! Data sources: named connections whose configs (URLs with passwords, tokens, paths) are
//! sealed with the master key before they reach the database (see `crypto`), and the grants
//! that let workspaces use them.

use crate::{Store, crypto::OpenError, db, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result, names};
use std::{collections::BTreeMap, fmt};

#[derive(Clone, Serialize, PartialEq)]
pub struct SourceRecord {
    pub name: String,
    pub kind: String,
    /// The decrypted config. Never serialized: the control API promises that source
    /// listings never include credentials.
    #[serde(skip_serializing)]
    pub config: serde_json::Value,
    /// Workspaces granted this source, by name.
    pub workspaces: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for SourceRecord {
    // Hand-written so that logging a record (`?source`) cannot print its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRecord")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("config", &"<redacted>")
            .field("workspaces", &self.workspaces)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    name: String,
    kind: String,
    config: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    source: String,
    workspace: String,
}

const GRANTS_SQL: &str = "SELECT s.name AS source, w.name AS workspace FROM source_grants g \
     JOIN sources s ON s.id = g.source_id JOIN workspaces w ON w.id = g.workspace_id ORDER BY w.name";

/// The associated data that binds a sealed config to its source row.
fn aad(name: &str) -> Vec<u8> {
    format!("sluice-source:{name}").into_bytes()
}

impl Store {
    /// Creates the source or replaces its kind and config; existing grants are kept.
    pub async fn upsert_source(
        &self,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<SourceRecord> {
        names::validate("data source", name)?;
        if kind.trim().is_empty() {
            return Err(Error::new(
                Code::BadRequest,
                format!("data source '{name}' needs a kind (e.g. 'postgres' or 'sqlite')"),
            ));
        }
        if !config.is_object() {
            return Err(Error::new(
                Code::BadRequest,
                format!(
                    "the config of data source '{name}' must be a JSON object such as {{\"url\": \"postgres://...\"}}"
                ),
            ));
        }
        let clear = serde_json::to_vec(config)
            .map_err(|e| Error::internal(format!("cannot encode a data-source config: {e}")))?;
        let sealed = self.inner.sealer.seal(&clear, &aad(name));
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO sources (name, kind, config, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(kind)
        .bind(&sealed)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db("save a data source")))?;
        self.source(name)
            .await?
            .ok_or_else(|| Error::internal(format!("data source '{name}' vanished right after it was saved; was it deleted concurrently?")))
    }

    pub async fn source(&self, name: &str) -> Result<Option<SourceRecord>> {
        let row: Option<SourceRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT name, kind, config, created_at, updated_at FROM sources WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db("read a data source")))?;
        match row {
            None => Ok(None),
            Some(row) => Ok(self.with_grants(vec![row]).await?.pop()),
        }
    }

    /// All sources, by name.
    pub async fn list_sources(&self) -> Result<Vec<SourceRecord>> {
        let rows: Vec<SourceRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT name, kind, config, created_at, updated_at FROM sources ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .map_err(db("list data sources")))?;
        self.with_grants(rows).await
    }

    /// Lets a workspace use a source. Granting twice is not an error.
    pub async fn grant_source(&self, source: &str, workspace: &str) -> Result<()> {
        in_tx!(self, "grant a data source", tx => {
            let source_id: i64 = sqlx::query_scalar("SELECT id FROM sources WHERE name = $1")
                .bind(source)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("grant a data source"))?
                .ok_or_else(|| Error::not_found(Code::SourceNotFound, "data source", source))?;
            let workspace_id: i64 = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
                .bind(workspace)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("grant a data source"))?
                .ok_or_else(|| Error::not_found(Code::WorkspaceNotFound, "workspace", workspace))?;
            sqlx::query(
                "INSERT INTO source_grants (source_id, workspace_id) VALUES ($1, $2) ON CONFLICT (source_id, workspace_id) DO NOTHING",
            )
            .bind(source_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db("grant a data source"))?;
        });
        Ok(())
    }

    /// The sources a workspace may use, by name.
    pub async fn sources_for_workspace(&self, ws: &str) -> Result<Vec<SourceRecord>> {
        let ws_id = self.workspace_id(ws).await?;
        let rows: Vec<SourceRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT name, kind, config, created_at, updated_at FROM sources \
             WHERE id IN (SELECT source_id FROM source_grants WHERE workspace_id = $1) ORDER BY name",
        )
        .bind(ws_id)
        .fetch_all(pool)
        .await
        .map_err(db("list the data sources of a workspace")))?;
        self.with_grants(rows).await
    }

    /// Decrypts the rows and attaches their grants. The grants table is one row per
    /// (source, workspace) pair, small enough to read whole.
    async fn with_grants(&self, rows: Vec<SourceRow>) -> Result<Vec<SourceRecord>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let grants: Vec<GrantRow> = on_pool!(self, pool => sqlx::query_as(GRANTS_SQL).fetch_all(pool).await.map_err(db("read data-source grants")))?;
        let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in grants {
            by_source.entry(g.source).or_default().push(g.workspace);
        }
        rows.into_iter()
            .map(|row| {
                let config = self.open_config(&row.name, &row.config)?;
                Ok(SourceRecord {
                    workspaces: by_source.remove(&row.name).unwrap_or_default(),
                    name: row.name,
                    kind: row.kind,
                    config,
                    created_at: ts(row.created_at),
                    updated_at: ts(row.updated_at),
                })
            })
            .collect()
    }

    fn open_config(&self, name: &str, sealed: &str) -> Result<serde_json::Value> {
        let clear = self.inner.sealer.open(sealed, &aad(name)).map_err(|e| match e {
            OpenError::WrongKeyOrTampered => Error::internal(format!(
                "cannot decrypt the config of data source '{name}': it was sealed with another master key or altered in the database; \
                 start Sluice with the original master key, or save the source again"
            )),
            OpenError::Malformed(why) => Error::internal(format!(
                "the stored config of data source '{name}' is not a sealed value ({why}); save the source again"
            )),
        })?;
        serde_json::from_slice(&clear)
            .map_err(|e| Error::internal(format!("the config of data source '{name}' decrypted to invalid JSON ({e}); save the source again")))
    }
}
