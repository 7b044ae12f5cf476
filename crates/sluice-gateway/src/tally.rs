//! Exact traffic per feed: every call the gateway serves is counted here, per revision and
//! clock minute (calls, 5xx, 4xx, a latency histogram), and the counts are flushed to the
//! store's per-minute aggregates (`sluice_store::MinuteCounts`), which the control API's
//! metrics endpoint reads. The invocation records cannot give these numbers: quiet
//! successful calls are sampled (see `limiter.rs`).
//!
//! # The request path
//!
//! Counting a call is a read lock on the map of revisions (shared, like the other per-feed
//! maps of the gateway) and a handful of relaxed atomic adds into the slot of its minute. A
//! revision has a small ring of minute slots; a slot is moved on to a new minute by the
//! first call that needs it, under a per-revision mutex that only that call (and any racing
//! it at the turn of the minute) ever takes: once a minute per revision, never on the way
//! of a call that finds its minute ready.
//!
//! # The flush
//!
//! A background task (and the metrics endpoint, before it reads, so this server's own
//! calls are shown at once) writes the counts *so far* of every minute a slot still holds
//! under this process's random replica name, replacing what it wrote before: a retried
//! flush cannot count twice, and replicas add up (see `sluice-store`'s `traffic.rs`). A
//! minute's slot is reused [`SLOTS`] minutes later, long after its last flush.

use sluice_core::Result;
use sluice_store::{
    LATENCY_BUCKETS, MINUTE_MS, MinuteCounts, Store, TRAFFIC_RETENTION, latency_bucket,
};
use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError, RwLock, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering, fence},
    },
    time::Duration,
};

/// Minutes a revision's tally holds at once: the current one, and the closed ones a flush
/// may still have to write.
const SLOTS: i64 = 4;
/// How often the counts go to the store: what another replica's Observe panel lags by,
/// and what a crash loses.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Old minutes are pruned every this many flushes (ten minutes), and at start.
const PRUNE_EVERY: u32 = 120;
/// A slot that holds no minute: never used, or being moved on to a new one.
const NO_MINUTE: i64 = i64::MIN;

struct Slot {
    /// The minute (since the epoch) counted here, or [`NO_MINUTE`].
    minute: AtomicI64,
    requests: AtomicU64,
    errors: AtomicU64,
    client_errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    max_us: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            minute: AtomicI64::new(NO_MINUTE),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }

    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        [
            &self.requests,
            &self.errors,
            &self.client_errors,
            &self.max_us,
        ]
        .into_iter()
        .chain(&self.latency)
    }
}

/// One revision's calls, by minute.
struct RevisionTally {
    slots: [Slot; SLOTS as usize],
    /// Taken only to move a slot on to a new minute.
    turn: Mutex<()>,
}

impl RevisionTally {
    fn new() -> RevisionTally {
        RevisionTally {
            slots: std::array::from_fn(|_| Slot::new()),
            turn: Mutex::new(()),
        }
    }

    fn record(&self, now_ms: i64, status: u16, ms: f64) {
        let minute = now_ms.div_euclid(MINUTE_MS);
        let slot = &self.slots[minute.rem_euclid(SLOTS) as usize];
        if slot.minute.load(Ordering::Acquire) != minute {
            self.turn(slot, minute);
        }
        slot.latency[latency_bucket(ms)].fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int: a negative or NaN duration counts as 0.
        slot.max_us
            .fetch_max((ms * 1000.0) as u64, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 400 {
            slot.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Move `slot` on to `minute`: it held one [`SLOTS`] or more minutes older, flushed for
    /// the last time minutes ago. A seqlock of sorts: the minute is cleared before the
    /// counters are, so a flush reading meanwhile sees the minute change and drops what it
    /// read.
    #[cold]
    fn turn(&self, slot: &Slot, minute: i64) {
        let _one = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let held = slot.minute.load(Ordering::Relaxed);
        // Another call moved it on first; or it holds a later minute, which a call that
        // ended minutes ago by its own clock joins rather than erasing it.
        if held == minute || (held != NO_MINUTE && held > minute) {
            return;
        }
        slot.minute.store(NO_MINUTE, Ordering::Relaxed);
        fence(Ordering::Release);
        for c in slot.counters() {
            c.store(0, Ordering::Relaxed);
        }
        slot.minute.store(minute, Ordering::Release);
    }

    /// The counts so far of every minute a slot holds that is not older than `oldest`.
    fn snapshot(&self, revision_id: i64, oldest: i64, out: &mut Vec<MinuteCounts>) {
        for slot in &self.slots {
            let minute = slot.minute.load(Ordering::Acquire);
            if minute == NO_MINUTE || minute < oldest {
                continue;
            }
            let load = |c: &AtomicU64| i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            let mut latency = [0i64; LATENCY_BUCKETS];
            for (l, c) in latency.iter_mut().zip(&slot.latency) {
                *l = load(c);
            }
            let counts = MinuteCounts {
                revision_id,
                minute: minute_start(minute),
                requests: load(&slot.requests),
                errors: load(&slot.errors),
                client_errors: load(&slot.client_errors),
                latency,
                latency_max_ms: load(&slot.max_us) as f64 / 1000.0,
            };
            fence(Ordering::Acquire);
            if slot.minute.load(Ordering::Relaxed) == minute {
                out.push(counts);
            }
        }
    }
}

fn minute_start(minute: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(minute.saturating_mul(MINUTE_MS)).unwrap_or_default()
}

/// Every revision's tally in this process, and what of them has been written.
pub(crate) struct Tallies {
    /// This process's name in the store's aggregates: random, so a restarted process never
    /// overwrites the counts of the one before.
    replica: String,
    by_revision: RwLock<HashMap<i64, RevisionTally>>,
    /// What the last flushes wrote, by (revision, minute): only changes are written again.
    /// Held for a whole flush, so flushes take turns.
    written: tokio::sync::Mutex<HashMap<(i64, i64), MinuteCounts>>,
}

impl Tallies {
    pub fn new() -> Tallies {
        Tallies {
            replica: format!("{:016x}", rand::random::<u64>()),
            by_revision: RwLock::default(),
            written: tokio::sync::Mutex::default(),
        }
    }

    /// Count one call of the store revision `revision_id` that ended at `now_ms` with
    /// `status` after `ms` milliseconds.
    pub fn record(&self, revision_id: i64, now_ms: i64, status: u16, ms: f64) {
        {
            let map = self
                .by_revision
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(t) = map.get(&revision_id) {
                t.record(now_ms, status, ms);
                return;
            }
        }
        // The first call of a revision since it was last forgotten.
        self.by_revision
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(revision_id)
            .or_insert_with(RevisionTally::new)
            .record(now_ms, status, ms);
    }

    fn snapshot(&self, oldest: i64) -> Vec<MinuteCounts> {
        let map = self
            .by_revision
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (id, t) in map.iter() {
            t.snapshot(*id, oldest, &mut out);
        }
        out
    }

    /// Write what changed since the last flush; then forget the revisions that had no call
    /// for two minutes and are written in full, so the map holds only revisions in use.
    pub async fn flush(&self, store: &Store, now_ms: i64) -> Result<()> {
        let mut written = self.written.lock().await;
        let now = now_ms.div_euclid(MINUTE_MS);
        let oldest = now - SLOTS + 1;
        let key = |c: &MinuteCounts| (c.revision_id, c.minute.timestamp_millis());
        let changed: Vec<MinuteCounts> = self
            .snapshot(oldest)
            .into_iter()
            .filter(|c| written.get(&key(c)) != Some(c))
            .collect();
        store.record_feed_minutes(&self.replica, &changed).await?;
        for c in changed {
            written.insert(key(&c), c);
        }
        // Under the write lock no call is being counted, so a revision found idle and
        // written cannot gain a call before it is gone; its next call starts a new tally
        // in a minute this one never held.
        self.by_revision
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, t| {
                let mut held = Vec::new();
                t.snapshot(*id, oldest, &mut held);
                !held.iter().all(|c| {
                    c.minute.timestamp_millis() < (now - 1) * MINUTE_MS
                        && written.get(&key(c)) == Some(c)
                })
            });
        written.retain(|(_, minute), _| *minute >= oldest * MINUTE_MS);
        Ok(())
    }

    #[cfg(test)]
    fn revisions(&self) -> usize {
        self.by_revision.read().unwrap().len()
    }
}

/// Flush every few seconds, and prune minutes older than the longest window the API
/// serves. Ends when the gateway is gone.
pub(crate) fn spawn(store: Store, tallies: Weak<Tallies>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushes = 0u32;
        loop {
            tick.tick().await;
            let Some(tallies) = tallies.upgrade() else {
                break;
            };
            let now = chrono::Utc::now();
            if let Err(e) = tallies.flush(&store, now.timestamp_millis()).await {
                tracing::warn!(
                    "could not write feed traffic counts (retried in {FLUSH_EVERY:?}): {e}"
                );
            }
            if flushes.is_multiple_of(PRUNE_EVERY)
                && let Err(e) = store.prune_feed_minutes(now - TRAFFIC_RETENTION).await
            {
                tracing::warn!("could not prune feed traffic counts: {e}");
            }
            flushes = flushes.wrapping_add(1);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T0: i64 = 28_333_334 * MINUTE_MS;

    fn counts(t: &Tallies, now_ms: i64) -> Vec<MinuteCounts> {
        let mut out = t.snapshot(now_ms.div_euclid(MINUTE_MS) - SLOTS + 1);
        out.sort_by_key(|c| (c.revision_id, c.minute));
        out
    }

    #[test]
    fn calls_are_counted_per_revision_and_minute_by_class_and_latency() {
        let t = Tallies::new();
        t.record(7, T0, 200, 1.0);
        t.record(7, T0 + 59_999, 500, 2.0);
        t.record(7, T0 + 30_000, 429, 0.05);
        t.record(7, T0 + MINUTE_MS, 200, 400.0);
        t.record(8, T0, 200, 3.0);
        let c = counts(&t, T0 + MINUTE_MS);
        assert_eq!(c.len(), 3);
        let (a, b, other) = (&c[0], &c[1], &c[2]);
        assert_eq!((a.revision_id, a.minute.timestamp_millis()), (7, T0));
        assert_eq!((a.requests, a.errors, a.client_errors), (3, 1, 1));
        assert_eq!(a.latency.iter().sum::<i64>(), 3);
        assert_eq!(a.latency[latency_bucket(0.05)], 1);
        assert_eq!(a.latency_max_ms, 2.0);
        assert_eq!(
            (b.minute.timestamp_millis(), b.requests),
            (T0 + MINUTE_MS, 1)
        );
        assert_eq!(b.latency_max_ms, 400.0);
        assert_eq!((other.revision_id, other.requests), (8, 1));
    }

    #[test]
    fn a_slot_is_reused_for_a_later_minute_from_zero() {
        let t = Tallies::new();
        for _ in 0..5 {
            t.record(1, T0, 500, 10.0);
        }
        // The same slot, SLOTS minutes later.
        let later = T0 + SLOTS * MINUTE_MS;
        t.record(1, later, 200, 1.0);
        let c = counts(&t, later);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (c[0].minute.timestamp_millis(), c[0].requests, c[0].errors),
            (later, 1, 0)
        );
        assert_eq!(c[0].latency_max_ms, 1.0);
        // A call that ended before the slot's minute by its own (late) clock joins it
        // instead of erasing it.
        t.record(1, T0, 200, 1.0);
        assert_eq!(counts(&t, later)[0].requests, 2);
    }

    #[test]
    fn concurrent_calls_across_a_minute_boundary_are_all_counted() {
        let t = Arc::new(Tallies::new());
        let threads: Vec<_> = (0..8)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000i64 {
                        // Half the calls of each thread in each of two minutes, interleaved,
                        // so threads race to turn the second minute's slot.
                        let at = T0 + (i % 2) * MINUTE_MS + k;
                        t.record(3, at, 200, (i % 50) as f64);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let c = counts(&t, T0 + MINUTE_MS);
        assert_eq!(
            c.iter().map(|c| c.requests).collect::<Vec<_>>(),
            [20_000, 20_000]
        );
        for m in &c {
            assert_eq!(m.latency.iter().sum::<i64>(), m.requests);
        }
    }

    #[tokio::test]
    async fn flushes_write_changes_only_and_forget_idle_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sluice_store::sqlite_url(dir.path()), [1; 32])
            .await
            .unwrap();
        store.create_workspace("w").await.unwrap();
        let rev = store
            .deploy(
                "w",
                vec![sluice_store::NewRevision {
                    feed: "f".into(),
                    filename: "f.py".into(),
                    source: "".into(),
                    lock: "".into(),
                    env_hash: "e".into(),
                    signature: serde_json::from_value(
                        serde_json::json!({"name": "f", "doc": "", "params": []}),
                    )
                    .unwrap(),
                    created_by: "t".into(),
                }],
            )
            .await
            .unwrap()
            .remove(0);
        let t = Tallies::new();
        let window = |s: &Store| {
            let s = s.clone();
            async move {
                s.feed_traffic(
                    "w",
                    "f",
                    minute_start(T0 / MINUTE_MS),
                    minute_start(T0 / MINUTE_MS + 3),
                    chrono::TimeDelta::minutes(1),
                )
                .await
                .unwrap()
                .total
                .requests
            }
        };
        for _ in 0..30 {
            t.record(rev.id, T0 + 1, 200, 1.0);
        }
        t.flush(&store, T0 + 2).await.unwrap();
        t.flush(&store, T0 + 3).await.unwrap();
        assert_eq!(window(&store).await, 30, "a second flush adds nothing");
        t.record(rev.id, T0 + 4, 200, 1.0);
        t.flush(&store, T0 + 5).await.unwrap();
        assert_eq!(window(&store).await, 31);
        // Two minutes later the revision is idle and written: forgotten.
        t.flush(&store, T0 + 2 * MINUTE_MS).await.unwrap();
        assert_eq!(t.revisions(), 0);
        assert_eq!(window(&store).await, 31);
        // Its next call starts a new tally, whose minute adds to the others.
        t.record(rev.id, T0 + 2 * MINUTE_MS + 1, 200, 1.0);
        t.flush(&store, T0 + 2 * MINUTE_MS + 2).await.unwrap();
        assert_eq!(window(&store).await, 32);
        store.close().await;
    }
}
