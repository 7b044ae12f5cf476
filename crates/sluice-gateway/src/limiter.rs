//! Per-feed concurrency limit with a bounded queue. A request holds a permit for its whole
//! life, body streaming included, so a feed that serves slow clients can't starve the
//! others. When the queue is full the caller gets 429 with `Retry-After` at once instead of
//! piling up sockets: BI tools retry, a stuck server doesn't recover.

use sluice_core::{Code, Error};
use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limiter {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    limit: usize,
    queue: usize,
    /// Quiet-log budget: the current second (high bits) and records written in it.
    quiet: AtomicU64,
}

/// Successful calls that printed nothing are logged at most this often per feed and
/// second. Every error and every call with output is logged; metrics count everything.
/// Without this, the invocation log costs a fifth of the gateway's CPU at 10k calls/s.
pub const QUIET_RECORDS_PER_SECOND: u64 = 20;

impl Limiter {
    pub fn new(limit: usize, queue: usize) -> Self {
        Limiter {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            waiting: AtomicUsize::new(0),
            limit: limit.max(1),
            queue,
            quiet: AtomicU64::new(0),
        }
    }

    pub async fn acquire(&self, feed: &str) -> Result<OwnedSemaphorePermit, Error> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _guard = Waiting(&self.waiting);
        if before >= self.queue {
            return Err(Error::new(
                Code::TooManyRequests,
                format!(
                    "feed '{feed}' is at its limit of {} concurrent requests with {} waiting: retry shortly",
                    self.limit, self.queue
                ),
            )
            .retry_after(1));
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(Code::RuntimeUnavailable, "the server is shutting down"))
    }

    /// Whether a quiet successful call made at second `now` should be logged.
    pub fn sample_quiet(&self, now: u64) -> bool {
        let mut cur = self.quiet.load(Ordering::Relaxed);
        loop {
            let (sec, n) = (cur >> 20, cur & 0xF_FFFF);
            if sec == now && n >= QUIET_RECORDS_PER_SECOND {
                return false;
            }
            let next = if sec == now {
                (now << 20) | (n + 1)
            } else {
                (now << 20) | 1
            };
            match self
                .quiet
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_calls_are_sampled_per_second() {
        let l = Limiter::new(1, 1);
        let logged = (0..100).filter(|_| l.sample_quiet(7)).count() as u64;
        assert_eq!(logged, QUIET_RECORDS_PER_SECOND);
        assert!(l.sample_quiet(8), "a new second has a new budget");
    }

    #[tokio::test]
    async fn full_queue_answers_429_and_frees_up() {
        let l = Arc::new(Limiter::new(1, 1));
        let first = l.acquire("f").await.unwrap();
        let l2 = l.clone();
        let queued = tokio::spawn(async move { l2.acquire("f").await.map(|_| ()) });
        while l.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let e = l.acquire("f").await.unwrap_err();
        assert_eq!(e.code, Code::TooManyRequests);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(l.in_flight(), 1);
        drop(first);
        queued.await.unwrap().unwrap();
        assert_eq!(l.waiting(), 0);
        assert!(l.acquire("f").await.is_ok());
    }
}
