//! A feed's traffic over a time window, from its invocation records: calls, errors and
//! latency percentiles per bucket (the IDE's Observe panel asks for one-minute buckets).
//!
//! The numbers are computed by the database with one query text for both backends
//! (window functions, integer arithmetic on the millisecond `at` column), so only the
//! per-bucket aggregates cross the wire, never the records.
//!
//! They are as complete as the records are: the gateway samples quiet successful calls
//! above a per-second rate and the recorder prunes each feed to its newest records (see
//! `sluice-gateway`'s limiter and recorder). [`Traffic::oldest_record`] says how far back
//! the records reach, so a reader can tell an idle minute from a pruned one.

use crate::{Store, db, ts};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result};

/// The most buckets one answer may hold: a day of minutes.
pub const MAX_TRAFFIC_BUCKETS: i64 = 24 * 60;

/// Calls of one feed in one time bucket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficBucket {
    /// Where the bucket starts (inclusive); it ends where the next one starts.
    pub start: DateTime<Utc>,
    pub requests: i64,
    /// Calls answered with a 5xx status: the feed raised, timed out or its worker failed.
    pub errors: i64,
    /// Calls answered with a 4xx status, such as 429 at the feed's concurrency limit: counted
    /// apart, as they are not the feed failing. (A bad parameter is refused before a call
    /// starts and leaves no record.)
    pub client_errors: i64,
    /// Median latency by the nearest-rank method (always a latency that was observed);
    /// `None` when the bucket had no calls.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

impl TrafficBucket {
    fn empty(start: DateTime<Utc>) -> TrafficBucket {
        TrafficBucket {
            start,
            requests: 0,
            errors: 0,
            client_errors: 0,
            p50_ms: None,
            p95_ms: None,
        }
    }
}

/// A feed's traffic over `[from, to)`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Traffic {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_seconds: i64,
    /// The whole window as one bucket: its percentiles are over every call in the window,
    /// which no combination of the per-bucket percentiles gives.
    pub total: TrafficBucket,
    /// Every bucket of the window, oldest first, empty ones included, so a chart has no
    /// gaps to guess about.
    pub buckets: Vec<TrafficBucket>,
    /// The feed's oldest kept record. When it is later than `from`, the window reaches
    /// back past the records and its start may have been pruned (or the feed is new).
    pub oldest_record: Option<DateTime<Utc>>,
}

/// Aggregates per bucket, with the bucket's index from `$2` in steps of `$4` ms. Nearest-rank
/// percentile: the value at rank ceil(p·n/100), written as integer division so it is
/// the same expression on both backends.
const TRAFFIC_SQL: &str = "\
    SELECT bucket, COUNT(*) AS requests, \
      SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS errors, \
      SUM(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END) AS client_errors, \
      MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN duration_ms END) AS p50_ms, \
      MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN duration_ms END) AS p95_ms \
    FROM (\
      SELECT (at - $2) / $4 AS bucket, status, duration_ms, \
        ROW_NUMBER() OVER (PARTITION BY (at - $2) / $4 ORDER BY duration_ms) AS rn, \
        COUNT(*) OVER (PARTITION BY (at - $2) / $4) AS n \
      FROM invocations WHERE feed_id = $1 AND at >= $2 AND at < $3\
    ) ranked \
    GROUP BY bucket ORDER BY bucket";

type BucketRow = (i64, i64, i64, i64, Option<f64>, Option<f64>);

impl Store {
    /// The traffic of `ws/feed` over `[from, to)` in buckets of `bucket`, starting at `from`
    /// (the last one may be cut short by `to`). At most [`MAX_TRAFFIC_BUCKETS`] buckets.
    pub async fn feed_traffic(
        &self,
        ws: &str,
        feed: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: TimeDelta,
    ) -> Result<Traffic> {
        let (from_ms, to_ms, bucket_ms) = (
            from.timestamp_millis(),
            to.timestamp_millis(),
            bucket.num_milliseconds(),
        );
        let count = bucket_count(from_ms, to_ms, bucket_ms)?;
        let feed_id = self.feed_id(ws, feed).await?;
        let per_bucket = self
            .traffic_rows(feed_id, from_ms, to_ms, bucket_ms)
            .await?;
        let whole = self
            .traffic_rows(feed_id, from_ms, to_ms, to_ms - from_ms)
            .await?;
        let oldest: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(at) FROM invocations WHERE feed_id = $1",
        )
        .bind(feed_id)
        .fetch_one(pool)
        .await
        .map_err(db("read a feed's oldest invocation")))?;
        let total = fill(from_ms, to_ms - from_ms, 1, whole)
            .pop()
            .unwrap_or_else(|| TrafficBucket::empty(from));
        Ok(Traffic {
            from,
            to,
            bucket_seconds: bucket_ms / 1000,
            total,
            buckets: fill(from_ms, bucket_ms, count, per_bucket),
            oldest_record: oldest.map(ts),
        })
    }

    async fn traffic_rows(
        &self,
        feed_id: i64,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<BucketRow>> {
        on_pool!(self, pool => sqlx::query_as(TRAFFIC_SQL)
            .bind(feed_id)
            .bind(from_ms)
            .bind(to_ms)
            .bind(bucket_ms)
            .fetch_all(pool)
            .await
            .map_err(db("compute a feed's traffic")))
    }
}

/// How many buckets of `bucket_ms` cover `[from_ms, to_ms)`, or why the window is refused.
fn bucket_count(from_ms: i64, to_ms: i64, bucket_ms: i64) -> Result<i64> {
    if bucket_ms < 1000 {
        return Err(Error::new(
            Code::BadRequest,
            "traffic buckets must be at least one second long",
        ));
    }
    if to_ms <= from_ms {
        return Err(Error::new(
            Code::BadRequest,
            "the traffic window must end after it starts",
        ));
    }
    // Both are positive here (checked above); unsigned, `div_ceil` is stable and total.
    let count = (to_ms - from_ms)
        .unsigned_abs()
        .div_ceil(bucket_ms.unsigned_abs());
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    if count > MAX_TRAFFIC_BUCKETS {
        return Err(Error::new(
            Code::BadRequest,
            format!(
                "a traffic window of {count} buckets is too many: ask for at most {MAX_TRAFFIC_BUCKETS} (a shorter window or longer buckets)"
            ),
        ));
    }
    Ok(count)
}

/// The database's rows (only buckets with calls, by index) → every bucket of the window.
fn fill(from_ms: i64, bucket_ms: i64, count: i64, rows: Vec<BucketRow>) -> Vec<TrafficBucket> {
    let start = |i: i64| ts(from_ms + i * bucket_ms);
    let mut out: Vec<TrafficBucket> = (0..count).map(|i| TrafficBucket::empty(start(i))).collect();
    for (i, requests, errors, client_errors, p50_ms, p95_ms) in rows {
        // The query only reads `[from, to)`, so every index is in range; a row outside it
        // would mean a clock far off, and is better dropped than allowed to panic.
        if let Some(b) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            *b = TrafficBucket {
                start: b.start,
                requests,
                errors,
                client_errors,
                p50_ms,
                p95_ms,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_cut_into_whole_buckets_and_bounded() {
        assert_eq!(bucket_count(0, 15 * 60_000, 60_000).unwrap(), 15);
        // A partial last bucket still counts.
        assert_eq!(bucket_count(0, 60_001, 60_000).unwrap(), 2);
        assert_eq!(bucket_count(0, 24 * 3_600_000, 60_000).unwrap(), 1440);
        for (from, to, bucket) in [
            (0, 24 * 3_600_000 + 1, 60_000),
            (10, 10, 60_000),
            (10, 5, 60_000),
            (0, 60_000, 0),
        ] {
            assert_eq!(
                bucket_count(from, to, bucket).unwrap_err().code,
                Code::BadRequest,
                "{from}..{to} by {bucket}"
            );
        }
    }

    #[test]
    fn missing_buckets_are_filled_as_empty() {
        let rows = vec![(1, 3, 1, 0, Some(5.0), Some(9.0)), (7, 1, 0, 0, None, None)];
        let out = fill(60_000, 60_000, 3, rows);
        assert_eq!(out.len(), 3, "the out-of-range index 7 is dropped");
        assert_eq!(out[0], TrafficBucket::empty(ts(60_000)));
        assert_eq!(
            (out[1].start, out[1].requests, out[1].errors, out[1].p95_ms),
            (ts(120_000), 3, 1, Some(9.0))
        );
        assert_eq!(out[2].requests, 0);
    }
}
