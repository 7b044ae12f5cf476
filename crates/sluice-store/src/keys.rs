//! API keys. The store keeps the lookup prefix and the SHA-256 hash made by
//! `sluice_core::keys`, never the key itself; checking a presented key against the hash is
//! the caller's job (`sluice_core::keys::hashes_equal`). Keys made through the API also
//! carry a SCRAM-SHA-256 verifier for the PostgreSQL endpoint
//! (`sluice_core::keys::ScramVerifier`); older keys and keys set at start have none.

use crate::{Store, db, is_unique_violation, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result, Role};

/// A key to record. `workspace` is `None` for admin keys and names an existing workspace
/// for editor and viewer keys.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub role: Role,
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRecord {
    pub name: String,
    pub prefix: String,
    /// Not serialized: API responses never need it, and leaking it would allow offline
    /// guessing of weak custom admin keys.
    #[serde(skip_serializing)]
    pub hash: String,
    /// The SCRAM-SHA-256 verifier, PostgreSQL's `SCRAM-SHA-256$...` text; `None` for
    /// keys made without one. Not serialized, like the hash.
    #[serde(skip_serializing)]
    pub scram: Option<String>,
    pub role: Role,
    pub workspace: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    name: String,
    prefix: String,
    hash: String,
    scram: Option<String>,
    role: String,
    workspace: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl KeyRow {
    fn into_record(self) -> Result<KeyRecord> {
        let role = self.role.parse::<Role>().map_err(|_| {
            Error::internal(format!(
                "key '{}' has an unknown role '{}' in the metadata database",
                self.prefix, self.role
            ))
        })?;
        Ok(KeyRecord {
            name: self.name,
            prefix: self.prefix,
            hash: self.hash,
            scram: self.scram,
            role,
            workspace: self.workspace,
            created_at: ts(self.created_at),
            last_used_at: self.last_used_at.map(ts),
        })
    }
}

macro_rules! key_sql {
    ($($tail:literal),*) => {
        concat!(
            "SELECT k.name, k.prefix, k.hash, k.scram, k.role, w.name AS workspace, k.created_at, k.last_used_at \
             FROM api_keys k LEFT JOIN workspaces w ON w.id = k.workspace_id WHERE k.revoked_at IS NULL"
            $(, " ", $tail)*
        )
    };
}

impl Store {
    pub async fn create_key(&self, k: NewKey) -> Result<KeyRecord> {
        self.create_key_with_scram(k, None).await
    }

    /// [`Store::create_key`], recording the key's SCRAM verifier too (PostgreSQL's
    /// `SCRAM-SHA-256$...` text, made by `sluice_core::keys::ScramVerifier`).
    pub async fn create_key_with_scram(
        &self,
        k: NewKey,
        scram: Option<String>,
    ) -> Result<KeyRecord> {
        if k.name.trim().is_empty() {
            return Err(Error::new(
                Code::BadRequest,
                "a key needs a name that says who or what uses it (e.g. 'tableau-finance')",
            ));
        }
        let workspace_id = match (k.role, &k.workspace) {
            (Role::Admin, None) => None,
            (Role::Admin, Some(ws)) => {
                return Err(Error::new(
                    Code::BadRequest,
                    format!(
                        "admin keys are platform-wide and cannot belong to workspace '{ws}': omit the workspace, or use role editor or viewer"
                    ),
                ));
            }
            (role, None) => {
                return Err(Error::new(
                    Code::BadRequest,
                    format!(
                        "{role} keys belong to one workspace: name the workspace the key is for"
                    ),
                ));
            }
            (_, Some(ws)) => Some(self.workspace_id(ws).await?),
        };
        let now = now_ms();
        let inserted = on_pool!(self, pool => sqlx::query(
            "INSERT INTO api_keys (name, prefix, hash, scram, role, workspace_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&scram)
        .bind(k.role.as_str())
        .bind(workspace_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()));
        match inserted {
            Ok(()) => Ok(KeyRecord {
                name: k.name,
                prefix: k.prefix,
                hash: k.hash,
                scram,
                role: k.role,
                workspace: k.workspace,
                created_at: ts(now),
                last_used_at: None,
            }),
            Err(e) if is_unique_violation(&e) => Err(Error::new(
                Code::AlreadyExists,
                format!(
                    "an active key with prefix '{}' already exists: generate a new key, or revoke the old one first",
                    k.prefix
                ),
            )),
            Err(e) => Err(db("create a key")(e)),
        }
    }

    /// The active (not revoked) key with this prefix.
    pub async fn key_by_prefix(&self, prefix: &str) -> Result<Option<KeyRecord>> {
        let row: Option<KeyRow> = on_pool!(self, pool => sqlx::query_as(key_sql!("AND k.prefix = $1"))
            .bind(prefix)
            .fetch_optional(pool)
            .await
            .map_err(db("look up a key")))?;
        row.map(KeyRow::into_record).transpose()
    }

    /// Active keys, oldest first: all of them for `None`, else those of one workspace.
    pub async fn list_keys(&self, workspace: Option<&str>) -> Result<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> = match workspace {
            None => on_pool!(self, pool => sqlx::query_as(key_sql!("ORDER BY k.id"))
                .fetch_all(pool)
                .await
                .map_err(db("list keys")))?,
            Some(ws) => {
                let ws_id = self.workspace_id(ws).await?;
                on_pool!(self, pool => sqlx::query_as(key_sql!("AND k.workspace_id = $1 ORDER BY k.id"))
                    .bind(ws_id)
                    .fetch_all(pool)
                    .await
                    .map_err(db("list keys")))?
            }
        };
        rows.into_iter().map(KeyRow::into_record).collect()
    }

    /// Revokes the active key with this prefix. `false` if there was none. The row is kept
    /// (with `revoked_at`) so audits can still name the key.
    pub async fn revoke_key(&self, prefix: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(prefix)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(db("revoke a key")))?;
        Ok(n > 0)
    }

    /// Records that the key was just used.
    pub async fn touch_key(&self, prefix: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE prefix = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(prefix)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(db("record key use")))
    }
}
