//! Feeds and their immutable revisions. A deploy adds one revision per feed of a module and
//! makes it live in a single transaction; a rollback only moves the live pointer. Revisions
//! are never edited, so a number always means the same code, lockfile and signature.

use crate::{Store, db, now_ms, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, FeedSignature, Result, names};
use std::collections::{HashMap, HashSet};

/// One feed of a deployed module.
#[derive(Debug, Clone)]
pub struct NewRevision {
    pub feed: String,
    pub filename: String,
    /// The Python module's code.
    pub source: String,
    /// Pinned requirements text; empty when the module has no dependencies.
    pub lock: String,
    pub env_hash: String,
    pub signature: FeedSignature,
    /// Name of the key that deployed it.
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Revision {
    pub id: i64,
    pub workspace: String,
    pub feed: String,
    /// Per-feed number: 1, 2, 3...
    pub number: i64,
    pub filename: String,
    pub source: String,
    pub lock: String,
    pub env_hash: String,
    pub signature: FeedSignature,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeedRecord {
    pub workspace: String,
    pub name: String,
    /// Number of the live revision.
    pub live_revision: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RevisionRow {
    id: i64,
    workspace: String,
    feed: String,
    number: i64,
    filename: String,
    code: String,
    lockfile: String,
    env_hash: String,
    signature: String,
    created_at: i64,
    created_by: String,
}

impl RevisionRow {
    fn into_revision(self) -> Result<Revision> {
        let signature = serde_json::from_str(&self.signature).map_err(|e| {
            Error::internal(format!(
                "revision {} of feed '{}' has an unreadable signature in the metadata database ({e}); deploy the feed again",
                self.number, self.feed
            ))
        })?;
        Ok(Revision {
            id: self.id,
            workspace: self.workspace,
            feed: self.feed,
            number: self.number,
            filename: self.filename,
            source: self.code,
            lock: self.lockfile,
            env_hash: self.env_hash,
            signature,
            created_at: ts(self.created_at),
            created_by: self.created_by,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    workspace: String,
    name: String,
    live_revision: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<FeedRow> for FeedRecord {
    fn from(r: FeedRow) -> Self {
        FeedRecord {
            workspace: r.workspace,
            name: r.name,
            live_revision: r.live_revision,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

macro_rules! revision_sql {
    ($($tail:literal),*) => {
        concat!(
            "SELECT r.id, w.name AS workspace, f.name AS feed, r.number, r.filename, r.code, r.lockfile, \
             r.env_hash, r.signature, r.created_at, r.created_by \
             FROM revisions r JOIN feeds f ON f.id = r.feed_id JOIN workspaces w ON w.id = f.workspace_id"
            $(, " ", $tail)*
        )
    };
}

macro_rules! feed_sql {
    ($($tail:literal),*) => {
        concat!(
            "SELECT w.name AS workspace, f.name, f.live_revision, f.created_at, f.updated_at \
             FROM feeds f JOIN workspaces w ON w.id = f.workspace_id"
            $(, " ", $tail)*
        )
    };
}

/// A feed deployed through the API ('sluice'); feeds only the cluster has ('cluster', see
/// [`Store::cluster_revision`]) are left out of everything but their log and traffic.
const FEED_ID_SQL: &str = "SELECT f.id FROM feeds f JOIN workspaces w ON w.id = f.workspace_id WHERE w.name = $1 AND f.name = $2 AND f.origin = 'sluice'";
/// Any feed with a log: deployed through the API or served from the cluster.
const ANY_FEED_ID_SQL: &str = "SELECT f.id FROM feeds f JOIN workspaces w ON w.id = f.workspace_id WHERE w.name = $1 AND f.name = $2";

impl Store {
    /// Adds a revision to each named feed (creating feeds that do not exist yet) and makes
    /// it live, all in one transaction: either every feed of the module moves to its new
    /// revision or none does.
    pub async fn deploy(&self, ws: &str, revisions: Vec<NewRevision>) -> Result<Vec<Revision>> {
        if revisions.is_empty() {
            return Err(Error::new(
                Code::BadRequest,
                "nothing to deploy: the module defines no feeds (decorate a function with @sluice.feed)",
            ));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = revisions.iter().find(|r| !seen.insert(r.feed.as_str())) {
            return Err(Error::new(
                Code::BadRequest,
                format!(
                    "feed '{}' is defined twice in one module: give each @sluice.feed a distinct name",
                    dup.feed
                ),
            ));
        }
        let now = now_ms();
        let deployed = in_tx!(self, "deploy feeds", tx => {
            let ws_id: i64 = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("deploy feeds"))?
                .ok_or_else(|| Error::not_found(Code::WorkspaceNotFound, "workspace", ws))?;
            let mut out = Vec::with_capacity(revisions.len());
            for r in revisions {
                // Checked here, inside the transaction, like everything else that can fail:
                // a bad item anywhere in the list rolls back the items before it.
                names::validate("feed", &r.feed)?;
                let signature = serde_json::to_string(&r.signature)
                    .map_err(|e| Error::internal(format!("cannot encode the signature of feed '{}': {e}", r.feed)))?;
                sqlx::query(
                    "INSERT INTO feeds (workspace_id, name, live_revision, created_at, updated_at) VALUES ($1, $2, NULL, $3, $3) \
                     ON CONFLICT (workspace_id, name) DO NOTHING",
                )
                .bind(ws_id)
                .bind(&r.feed)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("deploy feeds"))?;
                // Updating the feed row first locks it on PostgreSQL, so two concurrent
                // deploys of one feed queue here and each then sees the other's number
                // instead of both picking the same one and failing on the unique index.
                // A feed the cluster served before (GitOps) becomes this server's.
                let feed_id: i64 = sqlx::query_scalar("UPDATE feeds SET updated_at = $3, origin = 'sluice' WHERE workspace_id = $1 AND name = $2 RETURNING id")
                    .bind(ws_id)
                    .bind(&r.feed)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("deploy feeds"))?;
                let number: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE feed_id = $1")
                    .bind(feed_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("deploy feeds"))?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO revisions (feed_id, number, filename, code, lockfile, env_hash, signature, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .bind(feed_id)
                .bind(number)
                .bind(&r.filename)
                .bind(&r.source)
                .bind(&r.lock)
                .bind(&r.env_hash)
                .bind(&signature)
                .bind(now)
                .bind(&r.created_by)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("deploy feeds"))?;
                sqlx::query("UPDATE feeds SET live_revision = $1 WHERE id = $2")
                    .bind(number)
                    .bind(feed_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("deploy feeds"))?;
                out.push(Revision {
                    id,
                    workspace: ws.to_string(),
                    feed: r.feed,
                    number,
                    filename: r.filename,
                    source: r.source,
                    lock: r.lock,
                    env_hash: r.env_hash,
                    signature: r.signature,
                    created_at: ts(now),
                    created_by: r.created_by,
                });
            }
            out
        });
        Ok(deployed)
    }

    /// Makes an existing revision live again (rollback, or roll forward).
    pub async fn set_live(&self, ws: &str, feed: &str, number: i64) -> Result<Revision> {
        let row: RevisionRow = in_tx!(self, "change the live revision", tx => {
            let feed_id: i64 = sqlx::query_scalar(FEED_ID_SQL)
                .bind(ws)
                .bind(feed)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("change the live revision"))?
                .ok_or_else(|| Error::not_found(Code::FeedNotFound, "feed", feed).with("workspace", ws))?;
            let row: RevisionRow = sqlx::query_as(revision_sql!("WHERE r.feed_id = $1 AND r.number = $2"))
                .bind(feed_id)
                .bind(number)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("change the live revision"))?
                .ok_or_else(|| {
                    Error::new(
                        Code::RevisionNotFound,
                        format!("feed '{feed}' has no revision {number}: `sluice revisions {feed}` lists the ones it has"),
                    )
                    .with("feed", feed)
                    .with("revision", number)
                })?;
            sqlx::query("UPDATE feeds SET live_revision = $1, updated_at = $2 WHERE id = $3")
                .bind(number)
                .bind(now_ms())
                .bind(feed_id)
                .execute(&mut *tx)
                .await
                .map_err(db("change the live revision"))?;
            row
        });
        row.into_revision()
    }

    pub async fn feed(&self, ws: &str, feed: &str) -> Result<Option<FeedRecord>> {
        let row: Option<FeedRow> = on_pool!(self, pool => sqlx::query_as(feed_sql!("WHERE w.name = $1 AND f.name = $2 AND f.origin = 'sluice'"))
            .bind(ws)
            .bind(feed)
            .fetch_optional(pool)
            .await
            .map_err(db("read a feed")))?;
        Ok(row.map(Into::into))
    }

    pub async fn live_revision(&self, ws: &str, feed: &str) -> Result<Option<Revision>> {
        let row: Option<RevisionRow> = on_pool!(self, pool => sqlx::query_as(
            revision_sql!("WHERE w.name = $1 AND f.name = $2 AND r.number = f.live_revision")
        )
        .bind(ws)
        .bind(feed)
        .fetch_optional(pool)
        .await
        .map_err(db("read the live revision of a feed")))?;
        row.map(RevisionRow::into_revision).transpose()
    }

    pub async fn revision(&self, ws: &str, feed: &str, number: i64) -> Result<Option<Revision>> {
        let row: Option<RevisionRow> = on_pool!(self, pool => sqlx::query_as(
            revision_sql!("WHERE w.name = $1 AND f.name = $2 AND r.number = $3 AND f.origin = 'sluice'")
        )
        .bind(ws)
        .bind(feed)
        .bind(number)
        .fetch_optional(pool)
        .await
        .map_err(db("read a revision")))?;
        row.map(RevisionRow::into_revision).transpose()
    }

    /// The feeds of a workspace by name, each with its live revision.
    pub async fn list_feeds(&self, ws: &str) -> Result<Vec<(FeedRecord, Option<Revision>)>> {
        self.workspace_id(ws).await?;
        let feeds: Vec<FeedRow> = on_pool!(self, pool => sqlx::query_as(feed_sql!("WHERE w.name = $1 AND f.origin = 'sluice' ORDER BY f.name"))
            .bind(ws)
            .fetch_all(pool)
            .await
            .map_err(db("list feeds")))?;
        let live: Vec<RevisionRow> = on_pool!(self, pool => sqlx::query_as(
            revision_sql!("WHERE w.name = $1 AND r.number = f.live_revision")
        )
        .bind(ws)
        .fetch_all(pool)
        .await
        .map_err(db("list feeds")))?;
        let mut live: HashMap<String, Revision> = live
            .into_iter()
            .map(|r| r.into_revision().map(|r| (r.feed.clone(), r)))
            .collect::<Result<_>>()?;
        Ok(feeds
            .into_iter()
            .map(|f| {
                let rev = live.remove(&f.name);
                (f.into(), rev)
            })
            .collect())
    }

    /// Every revision of a feed, newest first.
    pub async fn list_revisions(&self, ws: &str, feed: &str) -> Result<Vec<Revision>> {
        self.feed_id(ws, feed).await?;
        let rows: Vec<RevisionRow> = on_pool!(self, pool => sqlx::query_as(
            revision_sql!("WHERE w.name = $1 AND f.name = $2 ORDER BY r.number DESC")
        )
        .bind(ws)
        .bind(feed)
        .fetch_all(pool)
        .await
        .map_err(db("list revisions")))?;
        rows.into_iter().map(RevisionRow::into_revision).collect()
    }

    /// Deletes a feed with its revisions, invocation records and traffic minutes. `false` if there was none.
    pub async fn delete_feed(&self, ws: &str, feed: &str) -> Result<bool> {
        // Revisions, invocations and traffic minutes go with it through ON DELETE CASCADE (SQLite connections
        // are opened with foreign keys on).
        let n = on_pool!(self, pool => sqlx::query(
            "DELETE FROM feeds WHERE workspace_id = (SELECT id FROM workspaces WHERE name = $1) AND name = $2",
        )
        .bind(ws)
        .bind(feed)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(db("delete a feed")))?;
        Ok(n > 0)
    }

    /// The live revision of every feed of every workspace, to warm worker pools at startup.
    pub async fn all_live_revisions(&self) -> Result<Vec<Revision>> {
        let rows: Vec<RevisionRow> = on_pool!(self, pool => sqlx::query_as(
            revision_sql!("WHERE r.number = f.live_revision ORDER BY w.name, f.name")
        )
        .fetch_all(pool)
        .await
        .map_err(db("list live revisions")))?;
        rows.into_iter().map(RevisionRow::into_revision).collect()
    }

    /// The id of a feed deployed through the API, or `feed_not_found`.
    pub(crate) async fn feed_id(&self, ws: &str, feed: &str) -> Result<i64> {
        self.lookup_feed_id(FEED_ID_SQL, ws, feed).await
    }

    /// The id of a feed with a log and traffic: deployed through the API, or served from
    /// the cluster. `feed_not_found` otherwise.
    pub(crate) async fn logged_feed_id(&self, ws: &str, feed: &str) -> Result<i64> {
        self.lookup_feed_id(ANY_FEED_ID_SQL, ws, feed).await
    }

    async fn lookup_feed_id(&self, sql: &'static str, ws: &str, feed: &str) -> Result<i64> {
        let id: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(ws)
            .bind(feed)
            .fetch_optional(pool)
            .await
            .map_err(db("look up a feed")))?;
        id.ok_or_else(|| Error::not_found(Code::FeedNotFound, "feed", feed).with("workspace", ws))
    }

    /// runtime = kubernetes: the store's record of revision `name` of a feed only the
    /// cluster has (applied as YAML by GitOps), made the first time the gateway serves it,
    /// so its calls are logged and counted like any feed's. The feed row has origin
    /// 'cluster' and never a live revision; the revision has the signature its agent
    /// reported and no code. `None` when the API deployed a feed of that name: its revisions
    /// are its own, and the cluster's other names for them are not recorded.
    pub async fn cluster_revision(
        &self,
        ws: &str,
        feed: &str,
        name: &str,
        signature: &FeedSignature,
    ) -> Result<Option<Revision>> {
        let now = now_ms();
        let encoded = serde_json::to_string(signature).map_err(|e| {
            Error::internal(format!("cannot encode the signature of feed '{feed}': {e}"))
        })?;
        let row: Option<RevisionRow> = in_tx!(self, "record a cluster revision", tx => {
            let ws_id: i64 = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("record a cluster revision"))?
                .ok_or_else(|| Error::not_found(Code::WorkspaceNotFound, "workspace", ws))?;
            sqlx::query(
                "INSERT INTO feeds (workspace_id, name, live_revision, created_at, updated_at, origin) \
                 VALUES ($1, $2, NULL, $3, $3, 'cluster') ON CONFLICT (workspace_id, name) DO NOTHING",
            )
            .bind(ws_id)
            .bind(feed)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("record a cluster revision"))?;
            // Locks the row on PostgreSQL, as a deploy does, so numbers never collide.
            let (feed_id, origin): (i64, String) = sqlx::query_as(
                "UPDATE feeds SET updated_at = updated_at WHERE workspace_id = $1 AND name = $2 RETURNING id, origin",
            )
            .bind(ws_id)
            .bind(feed)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("record a cluster revision"))?;
            if origin != "cluster" {
                None
            } else {
                let known: Option<i64> = sqlx::query_scalar("SELECT id FROM revisions WHERE feed_id = $1 AND name = $2")
                    .bind(feed_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("record a cluster revision"))?;
                let id = match known {
                    Some(id) => id,
                    None => {
                        let number: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE feed_id = $1")
                            .bind(feed_id)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db("record a cluster revision"))?;
                        sqlx::query_scalar(
                            "INSERT INTO revisions (feed_id, number, filename, code, lockfile, env_hash, signature, created_at, created_by, name) \
                             VALUES ($1, $2, '', '', '', '', $3, $4, 'cluster', $5) RETURNING id",
                        )
                        .bind(feed_id)
                        .bind(number)
                        .bind(&encoded)
                        .bind(now)
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db("record a cluster revision"))?
                    }
                };
                let row: RevisionRow = sqlx::query_as(revision_sql!("WHERE r.id = $1"))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("record a cluster revision"))?;
                Some(row)
            }
        });
        row.map(RevisionRow::into_revision).transpose()
    }
}
