//! A feed's traffic: calls, errors and latency percentiles per bucket of whole minutes (the
//! IDE's Observe panel asks for one-minute buckets).
//!
//! The numbers are exact: they come from per-minute aggregates (`feed_minutes`) that every
//! gateway writes for every call it serves, not from the invocation records, which are
//! sampled (a busy feed keeps ~20 quiet calls a second; see `sluice-gateway`'s limiter).
//!
//! # How the aggregates are written, and why so
//!
//! A gateway counts in memory and flushes, every few seconds, the counts *so far* of each
//! (revision, clock minute) it served, under its own `replica` name (random per process).
//! A flush overwrites its own row with a larger count and never adds to it, so:
//!
//! - a flush retried after a commit whose answer was lost writes the same numbers again:
//!   nothing is counted twice;
//! - several replicas never write the same row, and a reader adds them up;
//! - a process that restarts gets a new name, so it cannot overwrite what it wrote before.
//!
//! What a crash loses is what the process had not flushed yet (a few seconds of calls).
//!
//! Latency is a histogram with fixed bucket bounds ([`LATENCY_BOUNDS_MS`]): it adds up
//! across replicas and minutes, which percentiles do not. Percentiles are estimated from it
//! by interpolating inside the bucket that holds the nearest rank, capped at the slowest
//! call seen (see [`latency_percentile`]).

use crate::{Store, db, ts};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sluice_core::{Code, Error, Result};

/// The most buckets one answer may hold: a day of minutes.
pub const MAX_TRAFFIC_BUCKETS: i64 = 24 * 60;

/// How long per-minute aggregates are kept: the longest window a caller may ask for.
pub const TRAFFIC_RETENTION: TimeDelta = TimeDelta::minutes(MAX_TRAFFIC_BUCKETS);

/// Upper bounds (inclusive, milliseconds) of the latency histogram's buckets; one more,
/// open bucket counts slower calls. Roughly 1.5× apart, so an estimated percentile is off
/// by less than a bucket's width, from a tenth of a millisecond (a cached call) to five
/// minutes (a long extract). Changing them needs a migration of `feed_minutes`.
pub const LATENCY_BOUNDS_MS: [f64; 36] = [
    0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0,
    100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 7500.0,
    10_000.0, 15_000.0, 20_000.0, 30_000.0, 60_000.0, 120_000.0, 300_000.0,
];

/// The number of latency buckets: one per bound and the open last one.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The histogram bucket a call of `ms` milliseconds falls in.
pub fn latency_bucket(ms: f64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms)
}

/// One replica's counts of one revision's calls in one clock minute, as they stand so far.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteCounts {
    /// The store revision the calls were resolved to (its feed is what they count for).
    pub revision_id: i64,
    /// The minute's start: a whole minute.
    pub minute: DateTime<Utc>,
    pub requests: i64,
    /// Answered with a 5xx status.
    pub errors: i64,
    /// Answered with a 4xx status.
    pub client_errors: i64,
    /// Calls per latency bucket ([`LATENCY_BOUNDS_MS`]).
    pub latency: [i64; LATENCY_BUCKETS],
    /// The slowest call of the minute.
    pub latency_max_ms: f64,
}

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
    /// starts and is not counted.)
    pub client_errors: i64,
    /// Median latency, estimated from the latency histogram (see [`latency_percentile`]);
    /// `None` when the bucket had no calls.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
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
    /// The start of the feed's oldest kept minute. When it is later than `from`, the window
    /// reaches back past what is kept (a day) or the feed is new.
    pub oldest_record: Option<DateTime<Utc>>,
}

/// Counts added up over replicas, revisions and minutes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sum {
    requests: i64,
    errors: i64,
    client_errors: i64,
    latency: Vec<i64>,
    max_ms: f64,
}

impl Sum {
    fn add(&mut self, row: &Row) {
        self.requests += row.requests;
        self.errors += row.errors;
        self.client_errors += row.client_errors;
        if self.latency.is_empty() {
            self.latency = vec![0; LATENCY_BUCKETS];
        }
        for (acc, n) in self.latency.iter_mut().zip(&row.latency) {
            *acc += n;
        }
        self.max_ms = self.max_ms.max(row.max_ms);
    }

    fn bucket(&self, start: DateTime<Utc>) -> TrafficBucket {
        let p = |q| latency_percentile(&self.latency, self.max_ms, q);
        TrafficBucket {
            start,
            requests: self.requests,
            errors: self.errors,
            client_errors: self.client_errors,
            p50_ms: p(50),
            p95_ms: p(95),
        }
    }
}

/// The `p`th percentile of the calls counted in `counts` (per [`LATENCY_BOUNDS_MS`]
/// bucket), the slowest of which took `max_ms`; `None` without calls.
///
/// The nearest rank ceil(p·n/100) is found in the histogram, then placed inside its bucket
/// by interpolating between the bucket's bounds, the upper one capped at `max_ms` (which is
/// how the open last bucket gets an upper bound at all). The estimate is thus never above
/// an observed latency, and off by less than the bucket's width.
pub fn latency_percentile(counts: &[i64], max_ms: f64, p: u8) -> Option<f64> {
    let n: i64 = counts.iter().sum();
    if n <= 0 {
        return None;
    }
    // `n` is positive here; unsigned, `div_ceil` is stable.
    let rank = (u64::from(p) * n.unsigned_abs()).div_ceil(100).max(1);
    let rank = i64::try_from(rank).unwrap_or(i64::MAX);
    let mut below = 0i64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && below + c >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_MS[i - 1]
            };
            let upper = LATENCY_BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY)
                .min(max_ms)
                .max(lower);
            let at = lower + (upper - lower) * (rank - below) as f64 / c as f64;
            // Microseconds are as fine as a clock on the request path measures.
            return Some((at * 1000.0).round() / 1000.0);
        }
        below += c;
    }
    None
}

/// A stored minute, its histogram decoded.
struct Row {
    minute: i64,
    requests: i64,
    errors: i64,
    client_errors: i64,
    latency: Vec<i64>,
    max_ms: f64,
}

type RawRow = (i64, i64, i64, i64, String, f64);

/// Traffic is kept per clock minute: the unit of `feed_minutes` and of every window.
pub const MINUTE_MS: i64 = 60_000;

/// Overwrite this replica's row with the counts so far, never with smaller ones (the guard
/// makes a stale flush that arrives late harmless). Rows of revisions deleted meanwhile
/// (their feed was deleted) select nothing and are dropped.
const UPSERT_SQL: &str = "\
    INSERT INTO feed_minutes (feed_id, revision_id, replica, minute, requests, errors, client_errors, latency_counts, latency_max_ms) \
    SELECT r.feed_id, r.id, $2, $3, $4, $5, $6, $7, $8 FROM revisions r WHERE r.id = $1 \
    ON CONFLICT (revision_id, replica, minute) DO UPDATE SET \
      requests = excluded.requests, errors = excluded.errors, client_errors = excluded.client_errors, \
      latency_counts = excluded.latency_counts, latency_max_ms = excluded.latency_max_ms \
    WHERE excluded.requests >= feed_minutes.requests";

impl Store {
    /// Writes `replica`'s counts so far of some revisions' minutes in one transaction,
    /// replacing what the same replica wrote for them before (see the module docs). Counts
    /// of revisions that no longer exist are dropped, not an error: the writer is a
    /// background task with nobody to report to, and the feed's minutes are gone anyway.
    pub async fn record_feed_minutes(&self, replica: &str, counts: &[MinuteCounts]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        for c in counts {
            if c.minute.timestamp_millis().rem_euclid(MINUTE_MS) != 0 {
                return Err(Error::new(
                    Code::BadRequest,
                    format!(
                        "traffic is kept per clock minute: {} is not the start of one",
                        c.minute.to_rfc3339()
                    ),
                ));
            }
        }
        in_tx!(self, "record feed traffic", tx => {
            for c in counts {
                let latency = serde_json::to_string(&c.latency[..])
                    .map_err(|e| Error::internal(format!("cannot encode a latency histogram: {e}")))?;
                sqlx::query(UPSERT_SQL)
                    .bind(c.revision_id)
                    .bind(replica)
                    .bind(c.minute.timestamp_millis())
                    .bind(c.requests)
                    .bind(c.errors)
                    .bind(c.client_errors)
                    .bind(latency)
                    .bind(c.latency_max_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("record feed traffic"))?;
            }
        });
        Ok(())
    }

    /// Deletes every feed's minutes that started before `before`. Returns how many rows
    /// were deleted.
    pub async fn prune_feed_minutes(&self, before: DateTime<Utc>) -> Result<u64> {
        on_pool!(self, pool => sqlx::query("DELETE FROM feed_minutes WHERE minute < $1")
            .bind(before.timestamp_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(db("prune feed traffic")))
    }

    /// The traffic of `ws/feed` over `[from, to)` in buckets of `bucket`, starting at `from`
    /// (the last one may be cut short by `to`). Traffic is kept per clock minute, so `from`
    /// must start a minute and `bucket` be whole minutes. At most [`MAX_TRAFFIC_BUCKETS`]
    /// buckets.
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
        let feed_id = self.logged_feed_id(ws, feed).await?;
        let raw: Vec<RawRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT minute, requests, errors, client_errors, latency_counts, latency_max_ms \
             FROM feed_minutes WHERE feed_id = $1 AND minute >= $2 AND minute < $3",
        )
        .bind(feed_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await
        .map_err(db("read a feed's traffic")))?;
        let rows = raw.into_iter().map(decode).collect::<Result<Vec<Row>>>()?;
        let oldest: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(minute) FROM feed_minutes WHERE feed_id = $1",
        )
        .bind(feed_id)
        .fetch_one(pool)
        .await
        .map_err(db("read a feed's oldest traffic")))?;
        let (total, buckets) = fill(from_ms, bucket_ms, count, &rows);
        Ok(Traffic {
            from,
            to,
            bucket_seconds: bucket_ms / 1000,
            total,
            buckets,
            oldest_record: oldest.map(ts),
        })
    }
}

impl Traffic {
    /// The traffic of a feed with no calls recorded yet over `[from, to)` (as
    /// [`Store::feed_traffic`] buckets it): every bucket empty.
    pub fn none(from: DateTime<Utc>, to: DateTime<Utc>, bucket: TimeDelta) -> Result<Traffic> {
        let (from_ms, bucket_ms) = (from.timestamp_millis(), bucket.num_milliseconds());
        let count = bucket_count(from_ms, to.timestamp_millis(), bucket_ms)?;
        let (total, buckets) = fill(from_ms, bucket_ms, count, &[]);
        Ok(Traffic {
            from,
            to,
            bucket_seconds: bucket_ms / 1000,
            total,
            buckets,
            oldest_record: None,
        })
    }
}

fn decode((minute, requests, errors, client_errors, latency, max_ms): RawRow) -> Result<Row> {
    let latency: Vec<i64> = serde_json::from_str(&latency)
        .ok()
        .filter(|l: &Vec<i64>| l.len() == LATENCY_BUCKETS)
        .ok_or_else(|| {
            Error::internal(format!(
                "the latency histogram of minute {} in the metadata database is unreadable (expected {LATENCY_BUCKETS} counts)",
                ts(minute).to_rfc3339()
            ))
        })?;
    Ok(Row {
        minute,
        requests,
        errors,
        client_errors,
        latency,
        max_ms,
    })
}

/// How many buckets of `bucket_ms` cover `[from_ms, to_ms)`, or why the window is refused.
fn bucket_count(from_ms: i64, to_ms: i64, bucket_ms: i64) -> Result<i64> {
    if bucket_ms < MINUTE_MS || bucket_ms % MINUTE_MS != 0 || from_ms.rem_euclid(MINUTE_MS) != 0 {
        return Err(Error::new(
            Code::BadRequest,
            "traffic is kept per clock minute: the window must start on a minute and its buckets be whole minutes",
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

/// The stored minutes (only those with calls, any replica and revision) → the whole window
/// and every bucket of it, empty ones included.
fn fill(
    from_ms: i64,
    bucket_ms: i64,
    count: i64,
    rows: &[Row],
) -> (TrafficBucket, Vec<TrafficBucket>) {
    let mut sums = vec![Sum::default(); usize::try_from(count).unwrap_or(0)];
    let mut total = Sum::default();
    for row in rows {
        total.add(row);
        // The query only reads `[from, to)`, so every index is in range; a row outside it
        // would mean a clock far off, and is better dropped than allowed to panic.
        let i = (row.minute - from_ms).div_euclid(bucket_ms);
        if let Some(s) = usize::try_from(i).ok().and_then(|i| sums.get_mut(i)) {
            s.add(row);
        }
    }
    let buckets = sums
        .iter()
        .enumerate()
        .map(|(i, s)| s.bucket(ts(from_ms + i as i64 * bucket_ms)))
        .collect();
    (total.bucket(ts(from_ms)), buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = MINUTE_MS;

    #[test]
    fn windows_are_cut_into_whole_minute_buckets_and_bounded() {
        assert_eq!(bucket_count(0, 15 * MIN, MIN).unwrap(), 15);
        // A partial last bucket still counts.
        assert_eq!(bucket_count(0, MIN + 1, MIN).unwrap(), 2);
        assert_eq!(bucket_count(0, 24 * 60 * MIN, MIN).unwrap(), 1440);
        assert_eq!(bucket_count(MIN, 61 * MIN, 5 * MIN).unwrap(), 12);
        for (from, to, bucket) in [
            (0, 24 * 60 * MIN + 1, MIN),
            (0, 0, MIN),
            (MIN, 0, MIN),
            (0, MIN, 0),
            (0, MIN, 1000),
            (0, 3 * MIN, 90_000),
            (10, MIN, MIN),
        ] {
            assert_eq!(
                bucket_count(from, to, bucket).unwrap_err().code,
                Code::BadRequest,
                "{from}..{to} by {bucket}"
            );
        }
    }

    #[test]
    fn latencies_fall_in_the_bucket_their_bound_includes() {
        assert_eq!(latency_bucket(0.0), 0);
        assert_eq!(latency_bucket(0.1), 0, "bounds are inclusive");
        assert_eq!(latency_bucket(0.1001), 1);
        assert_eq!(
            latency_bucket(4.0),
            LATENCY_BOUNDS_MS.partition_point(|&b| b < 5.0)
        );
        assert_eq!(
            latency_bucket(1e9),
            LATENCY_BUCKETS - 1,
            "the open last bucket"
        );
        assert!(LATENCY_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    fn histogram(latencies: &[f64]) -> (Vec<i64>, f64) {
        let mut counts = vec![0; LATENCY_BUCKETS];
        for &ms in latencies {
            counts[latency_bucket(ms)] += 1;
        }
        (counts, latencies.iter().copied().fold(0.0, f64::max))
    }

    #[test]
    fn percentiles_are_estimated_within_the_bucket_of_the_nearest_rank() {
        assert_eq!(latency_percentile(&[0; LATENCY_BUCKETS], 0.0, 50), None);
        // 1..=100 ms: the estimate stays within the bucket that holds the true value, and
        // never above the slowest call.
        let latencies: Vec<f64> = (1..=100).map(f64::from).collect();
        let (counts, max) = histogram(&latencies);
        for p in [1u8, 50, 95, 99, 100] {
            let truth = latencies[(usize::from(p) * 100).div_ceil(100) - 1];
            let est = latency_percentile(&counts, max, p).unwrap();
            let b = latency_bucket(truth);
            let lower = if b == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_MS[b - 1]
            };
            assert!(
                est > lower && est <= LATENCY_BOUNDS_MS[b] && est <= max,
                "p{p}: {est} for {truth}"
            );
        }
        // One call: every percentile is that call's bucket, capped at the call itself.
        let (counts, max) = histogram(&[42.0]);
        assert_eq!(latency_percentile(&counts, max, 50), Some(42.0));
        // The open last bucket is bounded by the slowest call.
        let (counts, max) = histogram(&[400_000.0, 500_000.0]);
        let p95 = latency_percentile(&counts, max, 95).unwrap();
        assert!(p95 > 300_000.0 && p95 <= 500_000.0, "{p95}");
    }

    fn row(minute: i64, requests: i64, errors: i64, latencies: &[f64]) -> Row {
        let (latency, max_ms) = histogram(latencies);
        Row {
            minute,
            requests,
            errors,
            client_errors: 0,
            latency,
            max_ms,
        }
    }

    #[test]
    fn minutes_of_every_replica_add_up_per_bucket_and_in_total() {
        let rows = [
            row(MIN, 2, 1, &[1.0, 2.0]),
            row(MIN, 1, 0, &[3.0]),
            row(3 * MIN, 1, 0, &[1.0]),
            // Out of range: counted in no bucket (the query never returns it).
            row(99 * MIN, 5, 5, &[1.0; 5]),
        ];
        let (total, buckets) = fill(MIN, MIN, 3, &rows[..3]);
        assert_eq!(buckets.len(), 3);
        assert_eq!(
            (buckets[0].start, buckets[0].requests, buckets[0].errors),
            (ts(MIN), 3, 1)
        );
        assert_eq!((buckets[1].requests, buckets[1].p50_ms), (0, None));
        assert_eq!(buckets[2].requests, 1);
        assert_eq!((total.start, total.requests, total.errors), (ts(MIN), 4, 1));
        let (_, buckets) = fill(MIN, MIN, 3, &rows);
        assert_eq!(buckets.iter().map(|b| b.requests).sum::<i64>(), 4);
    }
}
