//! Invocation records: one row per feed call, with its status, timing and captured output,
//! for `sluice logs`. They are written in batches by a background task and pruned to a
//! bounded number per feed, so this table never grows without limit.

use crate::{Store, db, ts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result};

/// The most records one page may return, whatever the caller asks for.
pub const MAX_INVOCATIONS_PAGE: i64 = 10_000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NewInvocation {
    pub workspace: String,
    pub feed: String,
    /// Number of the revision that ran.
    pub revision: i64,
    pub request_id: String,
    /// HTTP status returned to the client.
    pub status: u16,
    pub duration_ms: f64,
    pub rows: i64,
    pub error_code: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub params: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// A stored invocation: the record as written, plus its id. Serialized flat, so API
/// clients see one object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Invocation {
    /// Increasing: the cursor for `after_id`.
    pub id: i64,
    /// The cluster's name of the revision (a GitOps feed's `spec.revision` or content
    /// hash), for feeds only the cluster has; their `revision` is the store's number for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(flatten)]
    pub record: NewInvocation,
}

#[derive(sqlx::FromRow)]
struct InvocationRow {
    id: i64,
    workspace: String,
    feed: String,
    revision: i64,
    request_id: String,
    status: i64,
    duration_ms: f64,
    row_count: i64,
    error_code: Option<String>,
    stdout: String,
    stderr: String,
    params: String,
    at: i64,
    revision_name: Option<String>,
}

impl InvocationRow {
    fn into_invocation(self) -> Result<Invocation> {
        let bad = |what: &str| {
            Error::internal(format!(
                "invocation {} of feed '{}' has {what} in the metadata database",
                self.id, self.feed
            ))
        };
        let status = u16::try_from(self.status).map_err(|_| bad("an out-of-range status"))?;
        let params = serde_json::from_str(&self.params).map_err(|_| bad("unreadable params"))?;
        Ok(Invocation {
            id: self.id,
            revision_name: self.revision_name,
            record: NewInvocation {
                workspace: self.workspace,
                feed: self.feed,
                revision: self.revision,
                request_id: self.request_id,
                status,
                duration_ms: self.duration_ms,
                rows: self.row_count,
                error_code: self.error_code,
                stdout: self.stdout,
                stderr: self.stderr,
                params,
                at: ts(self.at),
            },
        })
    }
}

macro_rules! invocation_sql {
    ($($tail:literal),*) => {
        concat!(
            "SELECT i.id, w.name AS workspace, f.name AS feed, i.revision, i.request_id, i.status, i.duration_ms, \
             i.row_count, i.error_code, i.stdout, i.stderr, i.params, i.at, r.name AS revision_name \
             FROM invocations i JOIN feeds f ON f.id = i.feed_id JOIN workspaces w ON w.id = f.workspace_id \
             LEFT JOIN revisions r ON r.feed_id = i.feed_id AND r.number = i.revision"
            $(, " ", $tail)*
        )
    };
}

impl Store {
    /// Writes a batch of records in one transaction (one fsync for the batch, not one per
    /// call). Records of feeds deleted since the call are dropped, not an error: the writer
    /// is a background task with nobody to report to, and the feed's records are gone anyway.
    pub async fn record_invocations(&self, batch: &[NewInvocation]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let dropped = in_tx!(self, "record invocations", tx => {
            let mut dropped = 0usize;
            for inv in batch {
                let n = sqlx::query(
                    "INSERT INTO invocations (feed_id, revision, request_id, status, duration_ms, row_count, error_code, stdout, stderr, params, at) \
                     SELECT f.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                     FROM feeds f JOIN workspaces w ON w.id = f.workspace_id WHERE w.name = $1 AND f.name = $2",
                )
                .bind(&inv.workspace)
                .bind(&inv.feed)
                .bind(inv.revision)
                .bind(&inv.request_id)
                .bind(i64::from(inv.status))
                .bind(inv.duration_ms)
                .bind(inv.rows)
                .bind(&inv.error_code)
                .bind(&inv.stdout)
                .bind(&inv.stderr)
                .bind(inv.params.to_string())
                .bind(inv.at.timestamp_millis())
                .execute(&mut *tx)
                .await
                .map_err(db("record invocations"))?
                .rows_affected();
                if n == 0 {
                    dropped += 1;
                }
            }
            dropped
        });
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "dropped invocation records of feeds that no longer exist"
            );
        }
        Ok(())
    }

    /// A page of a feed's records, oldest first: those after `after_id`, or, when it is
    /// `None`, the latest `limit` ones (what `sluice logs` shows before following).
    /// `limit` is capped at [`MAX_INVOCATIONS_PAGE`].
    pub async fn invocations(
        &self,
        ws: &str,
        feed: &str,
        after_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Invocation>> {
        let feed_id = self.logged_feed_id(ws, feed).await?;
        let limit = limit.clamp(0, MAX_INVOCATIONS_PAGE);
        let rows: Vec<InvocationRow> = match after_id {
            Some(after) => on_pool!(self, pool => sqlx::query_as(
                invocation_sql!("WHERE i.feed_id = $1 AND i.id > $2 ORDER BY i.id LIMIT $3")
            )
            .bind(feed_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db("read invocations")))?,
            None => {
                let mut rows: Vec<InvocationRow> = on_pool!(self, pool => sqlx::query_as(
                    invocation_sql!("WHERE i.feed_id = $1 ORDER BY i.id DESC LIMIT $2")
                )
                .bind(feed_id)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db("read invocations")))?;
                rows.reverse();
                rows
            }
        };
        rows.into_iter()
            .map(InvocationRow::into_invocation)
            .collect()
    }

    /// Keeps the newest `keep_per_feed` records of each feed and deletes the rest. Returns
    /// how many were deleted.
    pub async fn prune_invocations(&self, keep_per_feed: i64) -> Result<u64> {
        if keep_per_feed < 0 {
            return Err(Error::new(
                Code::BadRequest,
                format!("cannot keep {keep_per_feed} invocations per feed: use 0 or more"),
            ));
        }
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM invocations WHERE id IN (\
               SELECT id FROM (\
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY feed_id ORDER BY id DESC) AS rn FROM invocations\
               ) ranked WHERE rn > $1)",
        )
        .bind(keep_per_feed)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(db("prune invocations")))
    }
}
