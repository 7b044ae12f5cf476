//! Invocation records are written by one background task in batches: a request never waits
//! for the store, and SQLite sees one transaction per batch instead of one per request.

use sluice_store::{NewInvocation, Store};
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 512;
const PRUNE_EVERY: u32 = 200;
const KEEP_PER_FEED: i64 = 1000;

pub fn spawn(store: Store) -> (mpsc::Sender<NewInvocation>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<NewInvocation>(8192);
    let handle = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flushes = 0u32;
        loop {
            let n = rx.recv_many(&mut batch, BATCH).await;
            if n == 0 {
                break;
            }
            if let Err(e) = store.record_invocations(&batch).await {
                tracing::warn!("could not record {} invocations: {e}", batch.len());
            }
            batch.clear();
            flushes += 1;
            if flushes.is_multiple_of(PRUNE_EVERY)
                && let Err(e) = store.prune_invocations(KEEP_PER_FEED).await
            {
                tracing::warn!("could not prune invocations: {e}");
            }
            // With a backlog, write the next batch at once; otherwise let a trickle
            // gather into a batch instead of one transaction per request.
            if n < BATCH {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (tx, handle)
}
