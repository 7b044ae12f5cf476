//! Server-side cursors for server-driven paging.
//!
//! Without them every `@odata.nextLink` would call the feed again and skip the rows already
//! delivered: reading an N-page feed would cost N feed calls and O(n²) rows. Instead, the
//! first paged request starts one call of the feed, and a background task keeps the rows of
//! the query (after `$filter`, `$orderby`, `$select`, and `$top`) in memory while the client
//! reads pages; each next link names the cursor (`$skiptoken=<offset>.<cursor id>`).
//!
//! Bounds: a cursor expires after [`PagingConfig::ttl`] without a page read; all cursors
//! together hold at most [`PagingConfig::max_bytes`] (the least recently read go first), one
//! cursor at most [`PagingConfig::max_cursor_bytes`] (then it stops growing: it is
//! *truncated*, and the page after its last row starts a new call and a new cursor from
//! that position). A cursor belongs to the key that made it: another key is refused.
//!
//! This file is the store and its rules only; `service.rs` decides when to use it.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use sluice_core::{Code, Error, Result};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Limits of the cursor store.
#[derive(Debug, Clone)]
pub struct PagingConfig {
    /// How long a cursor lives after its last page was read.
    pub ttl: Duration,
    /// Bytes of rows all cursors may hold together.
    pub max_bytes: usize,
    /// Bytes of rows one cursor may hold; a bigger result is read in several calls.
    pub max_cursor_bytes: usize,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            ttl: Duration::from_secs(300),
            max_bytes: 256 << 20,
            max_cursor_bytes: 64 << 20,
        }
    }
}

/// A parsed `$skiptoken`: rows of the query already delivered, and the cursor holding the
/// rest. A bare number (what earlier versions sent) has no cursor.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SkipToken {
    pub offset: u64,
    pub cursor: Option<String>,
}

impl SkipToken {
    pub fn parse(s: &str) -> Option<SkipToken> {
        let s = s.trim();
        let (offset, cursor) = match s.split_once('.') {
            Some((o, c)) => {
                if c.len() != 32 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                (o, Some(c.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        Some(SkipToken {
            offset: offset.parse().ok()?,
            cursor,
        })
    }

    pub fn format(offset: u64, cursor: &str) -> String {
        format!("{offset}.{cursor}")
    }
}

/// How a cursor's filling ended, if it has.
#[derive(Debug, Clone)]
pub enum End {
    /// Still reading the feed.
    Open,
    /// Every row of the query is here.
    Done,
    /// Stopped at its byte budget (or evicted while filling): rows after the last one held
    /// need a new call.
    Truncated,
    /// The feed or the query failed after the rows held.
    Failed(Error),
}

/// What a cursor holds now.
pub struct Fill {
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub rows: u64,
    pub end: End,
}

/// The rows of one query, from position `base` of its filtered and ordered result.
pub struct Cursor {
    pub id: String,
    /// Who made it (see [`owner_of`]).
    pub owner: String,
    /// The request it answers, without its `$skiptoken` (see `service.rs`).
    pub query: String,
    pub schema: SchemaRef,
    /// Position of the first row held, in the query's result (after `$skip`, before `$top`).
    pub base: u64,
    /// `@odata.count` once known.
    pub count: Mutex<Option<u64>>,
    fill: Mutex<Fill>,
    changed: watch::Sender<u64>,
}

impl Cursor {
    fn push(&self, b: RecordBatch) {
        let mut f = self.fill.lock().expect("cursor lock");
        f.rows += b.num_rows() as u64;
        f.batches.push(b);
        drop(f);
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn finish(&self, end: End) {
        let mut f = self.fill.lock().expect("cursor lock");
        if matches!(f.end, End::Open) {
            f.end = end;
        }
        drop(f);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Wait until the cursor holds rows up to position `until` (exclusive) or has ended,
    /// then run `f` on what it holds.
    pub async fn when<T>(&self, until: u64, f: impl FnOnce(&Fill) -> T) -> T {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let fill = self.fill.lock().expect("cursor lock");
                if self.base + fill.rows >= until || !matches!(fill.end, End::Open) {
                    return f(&fill);
                }
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`: unreachable, but never spin.
                let fill = self.fill.lock().expect("cursor lock");
                return f(&fill);
            }
        }
    }
}

/// A cursor's identity for its owner check: the key (or token) that made it.
pub fn owner_of(p: &sluice_gateway::Principal) -> String {
    format!("{}\u{0}{}", p.prefix, p.name)
}

struct Entry {
    cursor: Arc<Cursor>,
    bytes: usize,
    used: Instant,
}

/// Every open cursor of the process.
pub struct Cursors {
    cfg: PagingConfig,
    inner: Mutex<(HashMap<String, Entry>, usize)>,
    ids: std::collections::hash_map::RandomState,
    counter: std::sync::atomic::AtomicU64,
}

/// Why a token's cursor cannot be used.
pub enum Lookup {
    Found(Arc<Cursor>),
    /// Expired, evicted, failed, or never made here: compute again from the offset.
    Gone,
}

impl Cursors {
    pub fn new(cfg: PagingConfig) -> Cursors {
        Cursors {
            cfg,
            inner: Mutex::new((HashMap::new(), 0)),
            ids: Default::default(),
            counter: Default::default(),
        }
    }

    pub fn config(&self) -> &PagingConfig {
        &self.cfg
    }

    /// A new cursor id. Random per process, but what protects a cursor is its owner check,
    /// not the id being secret.
    fn new_id(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let mut a = self.ids.build_hasher();
        a.write_u64(n);
        a.write_u64(t);
        let mut b = self.ids.build_hasher();
        b.write_u64(!n);
        b.write_u64(t.rotate_left(17));
        format!("{:016x}{:016x}", a.finish(), b.finish())
    }

    /// Register an empty cursor; fill it with [`Cursors::charge`] and [`Cursor::push`].
    pub fn create(
        &self,
        owner: String,
        query: String,
        schema: SchemaRef,
        base: u64,
    ) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor {
            id: self.new_id(),
            owner,
            query,
            schema,
            base,
            count: Mutex::new(None),
            fill: Mutex::new(Fill {
                batches: Vec::new(),
                rows: 0,
                end: End::Open,
            }),
            changed: watch::channel(0).0,
        });
        let mut g = self.inner.lock().expect("cursors lock");
        let now = Instant::now();
        Self::expire(&mut g, now, self.cfg.ttl);
        g.0.insert(
            cursor.id.clone(),
            Entry {
                cursor: cursor.clone(),
                bytes: 0,
                used: now,
            },
        );
        cursor
    }

    /// The cursor of a token, checked against the caller and the request. Reading it keeps
    /// it alive for another TTL.
    pub fn lookup(&self, id: &str, owner: &str, query: &str) -> Result<Lookup> {
        let mut g = self.inner.lock().expect("cursors lock");
        let now = Instant::now();
        Self::expire(&mut g, now, self.cfg.ttl);
        let Some(e) = g.0.get_mut(id) else {
            return Ok(Lookup::Gone);
        };
        if e.cursor.owner != owner {
            return Err(Error::new(
                Code::Forbidden,
                "this $skiptoken belongs to a read started with another key: start the read again without $skiptoken",
            )
            .with("option", "$skiptoken"));
        }
        if e.cursor.query != query {
            return Err(Error::new(
                Code::InvalidQuery,
                "this $skiptoken belongs to another query: follow @odata.nextLink as given (same feed, parameters and query options), or start again without $skiptoken",
            )
            .with("option", "$skiptoken"));
        }
        let failed = matches!(
            e.cursor.fill.lock().expect("cursor lock").end,
            End::Failed(_)
        );
        if failed {
            // A failure may have been passing: the next page calls the feed again.
            if let Some(e) = g.0.remove(id) {
                g.1 -= e.bytes;
            }
            return Ok(Lookup::Gone);
        }
        e.used = now;
        Ok(Lookup::Found(e.cursor.clone()))
    }

    /// Account for `bytes` more rows in cursor `id`, evicting the least recently read
    /// cursors if all of them would exceed the budget. False when the cursor must stop
    /// growing: over its own budget, or evicted itself. A cursor's first batch is always
    /// taken, so every call makes progress.
    pub fn charge(&self, id: &str, bytes: usize) -> bool {
        let mut g = self.inner.lock().expect("cursors lock");
        let (map, total) = &mut *g;
        let Some(held) = map.get(id).map(|e| e.bytes) else {
            return false;
        };
        if held > 0 && held + bytes > self.cfg.max_cursor_bytes {
            return false;
        }
        while *total + bytes > self.cfg.max_bytes {
            let victim = map
                .iter()
                // Evicting an empty cursor frees nothing and would stall a read.
                .filter(|(k, e)| k.as_str() != id && e.bytes > 0)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    if let Some(e) = map.remove(&k) {
                        *total -= e.bytes;
                        e.cursor.finish(End::Truncated);
                    }
                }
                None if held == 0 => break,
                None => return false,
            }
        }
        if let Some(e) = map.get_mut(id) {
            e.bytes += bytes;
        }
        *total += bytes;
        true
    }

    /// Forget a cursor (its rows are no longer needed, e.g. the result fit on one page).
    pub fn remove(&self, id: &str) {
        let mut g = self.inner.lock().expect("cursors lock");
        if let Some(e) = g.0.remove(id) {
            g.1 -= e.bytes;
        }
    }

    /// Bytes held by all cursors (for tests and logs).
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("cursors lock").1
    }

    fn expire(g: &mut (HashMap<String, Entry>, usize), now: Instant, ttl: Duration) {
        let (map, total) = g;
        map.retain(|_, e| {
            let keep = now.duration_since(e.used) < ttl;
            if !keep {
                *total -= e.bytes;
                e.cursor.finish(End::Truncated);
            }
            keep
        });
    }
}

/// Fill `cursor` from `rows` until they end, the budget stops it, or it is evicted.
pub async fn fill(
    cursors: Arc<Cursors>,
    cursor: Arc<Cursor>,
    mut rows: futures::stream::BoxStream<'static, Result<RecordBatch>>,
) {
    use futures::StreamExt;
    // Whatever ends this task (a panic included), waiters must not wait forever.
    struct Ender(Arc<Cursor>);
    impl Drop for Ender {
        fn drop(&mut self) {
            self.0.finish(End::Truncated);
        }
    }
    let ender = Ender(cursor.clone());
    while let Some(b) = rows.next().await {
        match b {
            Ok(b) if b.num_rows() == 0 => {}
            Ok(b) => {
                if !cursors.charge(&cursor.id, b.get_array_memory_size()) {
                    ender.0.finish(End::Truncated);
                    return;
                }
                cursor.push(b);
            }
            Err(e) => {
                ender.0.finish(End::Failed(e));
                return;
            }
        }
    }
    ender.0.finish(End::Done);
}

/// The rows at positions `from..to` of a cursor's fill (positions count from `base`).
pub fn slice(fill: &Fill, base: u64, from: u64, to: u64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut pos = base;
    for b in &fill.batches {
        let n = b.num_rows() as u64;
        let (start, end) = (from.max(pos), to.min(pos + n));
        if start < end {
            out.push(b.slice((start - pos) as usize, (end - start) as usize));
        }
        pos += n;
        if pos >= to {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    fn batch(from: i64, n: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
        )
        .unwrap()
    }

    fn values(bs: &[RecordBatch]) -> Vec<i64> {
        bs.iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let id = "0123456789abcdef0123456789ABCDEF";
        let t = SkipToken::parse(&SkipToken::format(40, id)).unwrap();
        assert_eq!(t.offset, 40);
        assert_eq!(t.cursor.as_deref(), Some(&*id.to_ascii_lowercase()));
        assert_eq!(
            SkipToken::parse("7"),
            Some(SkipToken {
                offset: 7,
                cursor: None
            })
        );
        for bad in ["", "x", "-1", "3.abc", "3.", &format!("x.{id}")] {
            assert_eq!(SkipToken::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn filled_cursors_serve_slices_and_wait_for_rows() {
        let cs = Arc::new(Cursors::new(PagingConfig::default()));
        let c = cs.create("k".into(), "q".into(), schema(), 10);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<RecordBatch>>();
        let task = tokio::spawn(fill(cs.clone(), c.clone(), Box::pin(rx)));
        tx.unbounded_send(Ok(batch(10, 3))).unwrap();
        let got = c.when(12, |f| values(&slice(f, c.base, 11, 12))).await;
        assert_eq!(got, [11]);
        tx.unbounded_send(Ok(batch(13, 4))).unwrap();
        drop(tx);
        task.await.unwrap();
        let (got, done) = c
            .when(u64::MAX, |f| {
                (
                    values(&slice(f, c.base, 12, 15)),
                    matches!(f.end, End::Done),
                )
            })
            .await;
        assert_eq!(got, [12, 13, 14]);
        assert!(done);
        assert!(cs.bytes() > 0);
        cs.remove(&c.id);
        assert_eq!(cs.bytes(), 0);
    }

    #[test]
    fn owners_and_queries_are_checked_and_cursors_expire() {
        let cs = Cursors::new(PagingConfig {
            ttl: Duration::from_millis(50),
            ..Default::default()
        });
        let c = cs.create("alice".into(), "q".into(), schema(), 0);
        assert!(matches!(
            cs.lookup(&c.id, "alice", "q"),
            Ok(Lookup::Found(_))
        ));
        let e = cs.lookup(&c.id, "bob", "q").err().unwrap();
        assert_eq!(e.code, Code::Forbidden);
        let e = cs.lookup(&c.id, "alice", "other").err().unwrap();
        assert_eq!(e.code, Code::InvalidQuery);
        assert!(matches!(cs.lookup("nope", "alice", "q"), Ok(Lookup::Gone)));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(cs.lookup(&c.id, "alice", "q"), Ok(Lookup::Gone)));
        assert!(matches!(c.fill.lock().unwrap().end, End::Truncated));
    }

    #[test]
    fn budgets_truncate_and_evict_the_least_recently_read() {
        let cs = Cursors::new(PagingConfig {
            ttl: Duration::from_secs(60),
            max_bytes: 100,
            max_cursor_bytes: 60,
        });
        let a = cs.create("k".into(), "a".into(), schema(), 0);
        assert!(cs.charge(&a.id, 40));
        assert!(cs.charge(&a.id, 20));
        assert!(!cs.charge(&a.id, 1), "over its own budget");
        // The first batch of a cursor is always taken.
        let b = cs.create("k".into(), "b".into(), schema(), 0);
        assert!(cs.charge(&b.id, 70), "evicts a to make room");
        assert!(matches!(cs.lookup(&a.id, "k", "a"), Ok(Lookup::Gone)));
        assert!(matches!(a.fill.lock().unwrap().end, End::Truncated));
        assert_eq!(cs.bytes(), 70);
        let c = cs.create("k".into(), "c".into(), schema(), 0);
        assert!(cs.charge(&c.id, 20));
        std::thread::sleep(Duration::from_millis(2));
        // b is read again, so c is now the least recently read.
        assert!(matches!(cs.lookup(&b.id, "k", "b"), Ok(Lookup::Found(_))));
        let d = cs.create("k".into(), "d".into(), schema(), 0);
        assert!(cs.charge(&d.id, 20));
        assert!(matches!(cs.lookup(&c.id, "k", "c"), Ok(Lookup::Gone)));
        assert!(matches!(cs.lookup(&b.id, "k", "b"), Ok(Lookup::Found(_))));
        assert!(cs.bytes() <= 100);
    }
}
