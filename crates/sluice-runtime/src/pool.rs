//! A pool of warm workers for one revision.
//!
//! Concurrency is a semaphore of `pool_max` permits: a caller holding a permit owns at most
//! one worker, and only starts a new one when no idle worker is left, so the pool never
//! exceeds `pool_max` processes and never runs two calls on one worker. Callers beyond the
//! permits wait, at most `queue` of them; the next gets `too_many_requests`.
//!
//! A [`Lease`] is the permit plus the worker. Whatever happens to the call (success,
//! crash, timeout, a stream dropped mid-call, a cancelled future) the lease's `Drop`
//! decides the worker's fate, so the bookkeeping cannot drift.

use crate::worker::{Launch, StartError, Worker};
use sluice_core::{Code, Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A pool that has not lost a worker for this long starts its backoff from scratch.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// An idle worker is checked for a quiet death (OOM killer, kill -9) before reuse once it
/// has been idle this long.
const RECHECK_IDLE: Duration = Duration::from_millis(500);
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub min: usize,
    pub max: usize,
    pub queue: usize,
}

/// Per-pool numbers for `/metrics` and the admin UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub revision_id: i64,
    /// Worker processes alive or starting.
    pub workers: usize,
    /// Workers leased to a call (or being started for one).
    pub busy: usize,
    /// Callers waiting for a worker.
    pub waiting: usize,
    /// Workers replaced after a crash, a timeout or an abandoned stream.
    pub restarts: u64,
}

/// What becomes of a leased worker when the lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The call ended by the protocol (END or ERROR): the worker can serve the next one.
    Healthy,
    /// The process died or the connection broke: replace it, with backoff.
    Crashed,
    /// We stopped it (timeout, protocol violation, stream dropped mid-call): replace it
    /// at once, since nothing suggests the module itself is failing.
    Killed,
}

struct State {
    /// Idle workers, each with the moment it became idle; the last one is the warmest.
    idle: Vec<(Worker, Instant)>,
    workers: usize,
    busy: usize,
    waiting: usize,
    restarts: u64,
    failures: u32,
    last_failure: Option<Instant>,
    not_before: Option<Instant>,
    retired: bool,
}

pub(crate) struct Pool {
    pub revision_id: i64,
    launch: Launch,
    limits: Limits,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

impl Pool {
    pub fn new(revision_id: i64, launch: Launch, limits: Limits) -> Arc<Pool> {
        Arc::new(Pool {
            revision_id,
            launch,
            limits,
            permits: Arc::new(Semaphore::new(limits.max.max(1))),
            state: Mutex::new(State {
                idle: Vec::new(),
                workers: 0,
                busy: 0,
                waiting: 0,
                restarts: 0,
                failures: 0,
                last_failure: None,
                not_before: None,
                retired: false,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.state();
        PoolStats {
            revision_id: self.revision_id,
            workers: s.workers,
            busy: s.busy,
            waiting: s.waiting,
            restarts: s.restarts,
        }
    }

    /// A worker for one call: an idle one, or a freshly started one.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(shut_down()),
            Err(TryAcquireError::NoPermits) => {
                {
                    let mut s = self.state();
                    if s.waiting >= self.limits.queue {
                        return Err(Error::new(
                            Code::TooManyRequests,
                            format!(
                                "this feed is busy: all {} workers are running calls and {} more calls are waiting; retry in a moment",
                                self.limits.max, s.waiting
                            ),
                        )
                        .retry_after(1));
                    }
                    s.waiting += 1;
                }
                let _waiting = Waiting(self);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| shut_down())?
            }
        };
        let mut lease = Lease::new(self.clone(), permit);
        loop {
            let w = self.state().idle.pop();
            match w {
                Some((mut w, since)) => {
                    // A worker that was busy a moment ago is alive (a death in between
                    // shows as a crash of the call); checking costs a syscall per call.
                    if since.elapsed() >= RECHECK_IDLE && w.has_exited() {
                        // Died while idle (OOM killer, someone's kill -9): replace quietly.
                        w.kill();
                        let mut s = self.state();
                        s.workers -= 1;
                        s.restarts += 1;
                        continue;
                    }
                    // The lease counted a new slot; this worker was already counted.
                    self.state().workers -= 1;
                    lease.worker = Some(w);
                    return Ok(lease);
                }
                None => break,
            }
        }
        lease.worker = Some(self.start_worker().await?);
        Ok(lease)
    }

    async fn start_worker(&self) -> Result<Worker> {
        let not_before = self.state().not_before;
        if let Some(t) = not_before {
            tokio::time::sleep_until(t.into()).await;
        }
        match Worker::start(&self.launch).await {
            Ok(w) => Ok(w),
            Err(e) => {
                self.record_failure();
                Err(match e {
                    StartError::Other(e) => e,
                    StartError::Load(le) => {
                        let e =
                            crate::load_error(le, &self.launch.module_path, &self.launch.filename);
                        Error {
                            message: format!("the feed module no longer loads: {}", e.message),
                            ..e
                        }
                    }
                })
            }
        }
    }

    fn record_failure(&self) {
        let mut s = self.state();
        let now = Instant::now();
        if s.last_failure
            .is_some_and(|t| now.duration_since(t) > HEALTHY_RESET)
        {
            s.failures = 0;
        }
        let delay = BACKOFF_START
            .saturating_mul(1 << s.failures.min(10))
            .min(BACKOFF_MAX);
        s.failures += 1;
        s.last_failure = Some(now);
        s.not_before = Some(now + delay);
    }

    /// Start workers until `pool_min` are alive (or every slot is taken by a call).
    pub async fn fill(self: &Arc<Self>) -> Result<()> {
        loop {
            {
                let s = self.state();
                if s.retired || s.workers >= self.limits.min {
                    return Ok(());
                }
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return Ok(());
            };
            let mut lease = Lease::new(self.clone(), permit);
            lease.worker = Some(self.start_worker().await?);
            lease.outcome = Outcome::Healthy;
        }
    }

    fn refill_in_background(self: &Arc<Self>) {
        let pool = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = pool.fill().await {
                    tracing::warn!(revision_id = pool.revision_id, error = %e, "could not restart a feed worker");
                }
            });
        }
    }

    fn release(self: &Arc<Self>, worker: Option<Worker>, outcome: Outcome) {
        let mut s = self.state();
        s.busy -= 1;
        let Some(mut worker) = worker else {
            // Starting failed or was cancelled: the slot is simply free again.
            s.workers -= 1;
            return;
        };
        match outcome {
            Outcome::Healthy if !s.retired => s.idle.push((worker, Instant::now())),
            Outcome::Healthy => {
                s.workers -= 1;
                drop(s);
                stop_gracefully(worker);
            }
            Outcome::Crashed | Outcome::Killed => {
                worker.kill();
                s.workers -= 1;
                s.restarts += 1;
                let retired = s.retired;
                drop(s);
                if outcome == Outcome::Crashed {
                    self.record_failure();
                }
                if !retired {
                    self.refill_in_background();
                }
            }
        }
    }

    /// Stop taking new work: idle workers stop now, busy ones when their call ends.
    pub fn retire(&self, close: bool) -> Vec<Worker> {
        let mut s = self.state();
        s.retired = true;
        if close {
            self.permits.close();
        }
        let idle = std::mem::take(&mut s.idle);
        s.workers -= idle.len();
        idle.into_iter().map(|(w, _)| w).collect()
    }
}

fn shut_down() -> Error {
    Error::new(
        Code::RuntimeUnavailable,
        "the runtime is shutting down; retry against the new server",
    )
    .retry_after(1)
}

fn stop_gracefully(worker: Worker) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(worker.shutdown(SHUTDOWN_GRACE));
        }
        Err(_) => drop(worker),
    }
}

/// Counts a caller as waiting for exactly as long as it waits, even if cancelled.
struct Waiting<'a>(&'a Pool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

pub(crate) struct Lease {
    pool: Arc<Pool>,
    pub worker: Option<Worker>,
    /// Until the call ends by the protocol, assume the worker is in an unknown state.
    pub outcome: Outcome,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn new(pool: Arc<Pool>, permit: OwnedSemaphorePermit) -> Lease {
        {
            let mut s = pool.state();
            s.workers += 1;
            s.busy += 1;
        }
        Lease {
            pool,
            worker: None,
            outcome: Outcome::Killed,
            _permit: permit,
        }
    }

    pub fn worker(&mut self) -> &mut Worker {
        // A lease handed out by `acquire` always holds a worker until it is dropped.
        self.worker.as_mut().expect("lease without worker")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Runs before the permit field is dropped: the worker is back in `idle` before
        // the next waiter gets the permit and looks for one.
        self.pool.release(self.worker.take(), self.outcome);
    }
}
