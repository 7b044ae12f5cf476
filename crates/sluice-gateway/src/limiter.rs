//! Per-feed concurrency limit with a bounded queue. A request holds a permit for its whole
//! life, body streaming included, so a feed that serves slow clients can't starve the
//! others. When the queue is full the caller gets 429 with `Retry-After` at once instead of
//! piling up sockets: BI tools retry, a stuck server doesn't recover.

use sluice_core::{Code, Error};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limiter {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    limit: usize,
    queue: usize,
}

impl Limiter {
    pub fn new(limit: usize, queue: usize) -> Self {
        Limiter {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            waiting: AtomicUsize::new(0),
            limit: limit.max(1),
            queue,
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
