//! Secret feed links: a token that reads one feed of one workspace, for BI tools that can
//! only paste a URL. Stored like API keys (lookup prefix plus SHA-256 of the token, made by
//! `sluice_core::keys::generate_link`); checking a presented token against the hash is the
//! caller's job. A revoked link keeps its row so the gateway can say it was revoked.

use crate::{Store, db, is_unique_violation, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result};

/// A link to record for an existing feed.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub workspace: String,
    pub feed: String,
    /// Who or what the link is for, e.g. "finance dashboard".
    pub name: String,
    pub prefix: String,
    pub hash: String,
    /// Name of the key that created it.
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkRecord {
    pub name: String,
    /// The link's public id: what `sluice links ls` shows and `revoke` takes.
    pub prefix: String,
    /// Never serialized, like a key's hash.
    #[serde(skip_serializing)]
    pub hash: String,
    pub workspace: String,
    pub feed: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    name: String,
    prefix: String,
    hash: String,
    workspace: String,
    feed: String,
    created_by: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<LinkRow> for LinkRecord {
    fn from(r: LinkRow) -> Self {
        LinkRecord {
            name: r.name,
            prefix: r.prefix,
            hash: r.hash,
            workspace: r.workspace,
            feed: r.feed,
            created_by: r.created_by,
            created_at: ts(r.created_at),
            last_used_at: r.last_used_at.map(ts),
            revoked_at: r.revoked_at.map(ts),
        }
    }
}

macro_rules! link_sql {
    ($($tail:literal),*) => {
        concat!(
            "SELECT l.name, l.prefix, l.hash, w.name AS workspace, f.name AS feed, l.created_by, \
             l.created_at, l.last_used_at, l.revoked_at \
             FROM feed_links l JOIN feeds f ON f.id = l.feed_id JOIN workspaces w ON w.id = f.workspace_id"
            $(, " ", $tail)*
        )
    };
}

impl Store {
    /// Records a link to an existing feed (`feed_not_found` otherwise).
    pub async fn create_link(&self, l: NewLink) -> Result<LinkRecord> {
        let feed_id = self.feed_id(&l.workspace, &l.feed).await?;
        let now = now_ms();
        let inserted = on_pool!(self, pool => sqlx::query(
            "INSERT INTO feed_links (feed_id, name, prefix, hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(feed_id)
        .bind(&l.name)
        .bind(&l.prefix)
        .bind(&l.hash)
        .bind(&l.created_by)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()));
        match inserted {
            Ok(()) => Ok(LinkRecord {
                name: l.name,
                prefix: l.prefix,
                hash: l.hash,
                workspace: l.workspace,
                feed: l.feed,
                created_by: l.created_by,
                created_at: ts(now),
                last_used_at: None,
                revoked_at: None,
            }),
            Err(e) if is_unique_violation(&e) => Err(Error::new(
                Code::AlreadyExists,
                format!(
                    "a link with id '{}' already exists: generate a new token",
                    l.prefix
                ),
            )),
            Err(e) => Err(db("create a feed link")(e)),
        }
    }

    /// The link with this prefix, revoked or not (the caller tells the two apart).
    pub async fn link_by_prefix(&self, prefix: &str) -> Result<Option<LinkRecord>> {
        let row: Option<LinkRow> = on_pool!(self, pool => sqlx::query_as(link_sql!("WHERE l.prefix = $1"))
            .bind(prefix)
            .fetch_optional(pool)
            .await
            .map_err(db("look up a feed link")))?;
        Ok(row.map(Into::into))
    }

    /// Active links of a workspace, or of one of its feeds, oldest first.
    pub async fn list_links(&self, ws: &str, feed: Option<&str>) -> Result<Vec<LinkRecord>> {
        let rows: Vec<LinkRow> = match feed {
            None => {
                self.workspace_id(ws).await?;
                on_pool!(self, pool => sqlx::query_as(link_sql!(
                    "WHERE w.name = $1 AND l.revoked_at IS NULL ORDER BY l.id"
                ))
                .bind(ws)
                .fetch_all(pool)
                .await
                .map_err(db("list feed links")))?
            }
            Some(feed) => {
                let feed_id = self.feed_id(ws, feed).await?;
                on_pool!(self, pool => sqlx::query_as(link_sql!(
                    "WHERE l.feed_id = $1 AND l.revoked_at IS NULL ORDER BY l.id"
                ))
                .bind(feed_id)
                .fetch_all(pool)
                .await
                .map_err(db("list feed links")))?
            }
        };
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Revokes an active link of workspace `ws`. `false` if it has none with this prefix
    /// (a link of another workspace is not touched).
    pub async fn revoke_link(&self, ws: &str, prefix: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE feed_links SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL AND feed_id IN \
             (SELECT f.id FROM feeds f JOIN workspaces w ON w.id = f.workspace_id WHERE w.name = $3)",
        )
        .bind(now_ms())
        .bind(prefix)
        .bind(ws)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(db("revoke a feed link")))?;
        Ok(n > 0)
    }

    /// Records that the link was just used.
    pub async fn touch_link(&self, prefix: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE feed_links SET last_used_at = $1 WHERE prefix = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(prefix)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(db("record feed link use")))
    }
}
