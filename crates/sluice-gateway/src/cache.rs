//! Result cache for feeds declared with `@sluice.feed(cache="5m")`. Encoded bodies are
//! kept per (revision, format, parameters) until they expire; a new revision has a new id,
//! so a deploy never serves stale rows. Bounded in bytes; only small results are kept
//! (big extracts stream and are not worth holding in memory).

use bytes::Bytes;
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Parse `30s`, `5m`, `2h`, `1d` or plain seconds. `None` for anything else.
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

pub const MAX_ENTRY_BYTES: usize = 4 << 20;

pub struct Entry {
    pub body: Bytes,
    pub rows: u64,
    expires: Instant,
}

pub struct ResultCache {
    max_bytes: usize,
    inner: Mutex<(HashMap<String, Entry>, usize)>,
}

impl ResultCache {
    pub fn new(max_bytes: usize) -> Self {
        ResultCache {
            max_bytes,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// `revision` names the code that made the rows: the store's revision id, or for a
    /// revision only the cluster knows (runtime = kubernetes) `ws/feed@name`.
    pub fn key(
        revision: impl std::fmt::Display,
        format: &str,
        params: &serde_json::Value,
    ) -> String {
        format!("{revision}\u{0}{format}\u{0}{params}")
    }

    pub fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        let mut g = self.inner.lock().expect("cache lock");
        let (map, size) = &mut *g;
        match map.get(key) {
            Some(e) if e.expires > Instant::now() => Some((e.body.clone(), e.rows)),
            Some(_) => {
                if let Some(e) = map.remove(key) {
                    *size -= e.body.len();
                }
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: String, body: Bytes, rows: u64, ttl: Duration) {
        if body.len() > MAX_ENTRY_BYTES || body.len() > self.max_bytes {
            return;
        }
        let mut g = self.inner.lock().expect("cache lock");
        let (map, size) = &mut *g;
        let now = Instant::now();
        if *size + body.len() > self.max_bytes {
            // Expired entries first, then the ones closest to expiry.
            map.retain(|_, e| e.expires > now);
            *size = map.values().map(|e| e.body.len()).sum();
            while *size + body.len() > self.max_bytes {
                let Some(k) = map
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(e) = map.remove(&k) {
                    *size -= e.body.len();
                }
            }
        }
        *size += body.len();
        if let Some(old) = map.insert(
            key,
            Entry {
                body,
                rows,
                expires: now + ttl,
            },
        ) {
            *size -= old.body.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_ttl("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_ttl("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_ttl("5 weeks"), None);
        assert_eq!(parse_ttl("m"), None);
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let c = ResultCache::new(10);
        c.put(
            "a".into(),
            Bytes::from_static(b"12345"),
            1,
            Duration::from_secs(60),
        );
        c.put(
            "b".into(),
            Bytes::from_static(b"12345"),
            1,
            Duration::from_secs(120),
        );
        assert!(c.get("a").is_some());
        c.put(
            "c".into(),
            Bytes::from_static(b"123"),
            1,
            Duration::from_secs(60),
        );
        assert!(
            c.get("a").is_none(),
            "the entry closest to expiry goes first"
        );
        assert!(c.get("b").is_some() && c.get("c").is_some());
        c.put("d".into(), Bytes::from_static(b"x"), 1, Duration::ZERO);
        assert!(c.get("d").is_none());
        c.put(
            "huge".into(),
            Bytes::from(vec![0u8; 11]),
            1,
            Duration::from_secs(60),
        );
        assert!(c.get("huge").is_none());
    }
}
