//! A pool of warm workers for one revision.
//!
//! Concurrency is a semaphore of `pool_max` permits: a caller holding a permit owns at most
//! one worker, and only starts a new one when no idle worker is left, so the pool never
//! exceeds `pool_max` processes and never runs two calls on one worker. Callers beyond the
//! permits wait, at most `queue` of them; the next gets `too_many_requests`.
//!
//! While calls are quick, a waiting caller's CALL is also written into the socket of a
//! busy worker, one deep, so the worker finds it the moment it ends its current call; the
//! lease, permit included, then passes straight to that caller ([`Pool::feed_next`]). (Two
//! deep measured no faster with the hello benchmark once the worker sends a quick call's
//! result together with the next one's.)
//!
//! A [`Lease`] is the permit plus the worker. Whatever happens to the call (success,
//! crash, timeout, a stream dropped mid-call, a cancelled future) the lease's `Drop`
//! decides the worker's fate, so the bookkeeping cannot drift.

use crate::protocol::{self, Kind};
use crate::worker::{Launch, StartError, Worker};
use sluice_core::{Code, Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A pool that has not lost a worker for this long starts its backoff from scratch.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// An idle worker is checked for a quiet death (OOM killer, kill -9) before reuse once it
/// has been idle this long.
const RECHECK_IDLE: Duration = Duration::from_millis(500);
/// Calls are queued behind a busy worker only while calls typically take less than this.
const QUEUE_BEHIND_TYPICAL_CALL: Duration = Duration::from_millis(10);
/// ... and only CALL frames this small, which a socket takes whole without waiting.
const QUEUE_BEHIND_MAX_BYTES: usize = 16 * 1024;
/// How long a queued call whose caller went away may take to finish unread before its
/// worker is stopped instead (see [`drain`]).
const DRAIN_ABANDONED: Duration = Duration::from_secs(5);
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
    /// Calls queued behind a busy worker's quick call (see `Pool::queue_behind`).
    pub queued_behind: u64,
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
    queued_behind: u64,
    /// One entry per worker leased to a call, for queueing the next call behind it.
    leased: Vec<Leased>,
    /// Recent healthy call durations (exponentially weighted), in seconds.
    typical_call: f64,
    /// Waiting callers' CALLs, oldest first, for queueing behind busy workers.
    pending: std::collections::VecDeque<Pending>,
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
                queued_behind: 0,
                leased: Vec::new(),
                typical_call: f64::INFINITY,
                pending: std::collections::VecDeque::new(),
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
            queued_behind: s.queued_behind,
        }
    }

    /// A worker that has been handed `call` (a CALL payload): an idle one, a freshly
    /// started one, or, when every worker is busy with quick calls, a busy one with the
    /// call queued behind its current one (see [`Pool::feed_next`]).
    pub async fn call_lease(self: &Arc<Self>, call: &[u8]) -> Result<Lease> {
        let frame: Arc<[u8]> = protocol::frame(Kind::Call, call).into();
        let mut dead_workers = 0;
        loop {
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => return Err(shut_down()),
                Err(TryAcquireError::NoPermits) => match self.wait(&frame).await? {
                    Waited::Permit(p) => p,
                    Waited::Sent(lease) => return Ok(*lease),
                    // The worker ahead of us failed before reaching our call, which
                    // therefore never started: find another worker.
                    Waited::Retry => continue,
                },
            };
            let mut lease = self.lease_worker(permit).await?;
            match lease.worker().send_frame(&frame).await {
                Ok(()) => {
                    lease.called = true;
                    self.feed_next(&mut self.state());
                    return Ok(lease);
                }
                Err(e) if dead_workers == 0 => {
                    // The process was gone before the call (died while idle): the call
                    // never started, so it may go to a fresh worker.
                    tracing::info!(revision_id = self.revision_id, error = %e, "a feed worker had died while idle; the call goes to a fresh one");
                    dead_workers += 1;
                }
                Err(_) => return Err(crate::call::crashed(&mut lease).await),
            }
        }
    }

    /// Wait for a permit, or for our CALL to be queued behind a busy worker and that
    /// worker to reach it, whichever comes first. Both queues are first come, first served.
    async fn wait(self: &Arc<Self>, frame: &Arc<[u8]>) -> Result<Waited> {
        let id = crate::next_seq();
        let queueable = frame.len() <= QUEUE_BEHIND_MAX_BYTES;
        let (tx, mut rx) = oneshot::channel();
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
            if queueable {
                s.pending.push_back(Pending {
                    id,
                    frame: frame.clone(),
                    tx,
                });
                self.feed_next(&mut s);
            }
        }
        let _waiting = Waiting(self, id);
        tokio::select! {
            biased;
            handed = &mut rx => Ok(handed.map_or(Waited::Retry, |l| Waited::Sent(Box::new(l)))),
            permit = self.permits.clone().acquire_owned() => {
                let permit = permit.map_err(|_| shut_down())?;
                let still_pending = {
                    let mut s = self.state();
                    match s.pending.iter().position(|p| p.id == id) {
                        Some(i) => {
                            s.pending.remove(i);
                            true
                        }
                        None => !queueable,
                    }
                };
                if still_pending {
                    return Ok(Waited::Permit(permit));
                }
                // Our CALL went behind a busy worker meanwhile: wait for that one and
                // let the permit go to the next caller.
                drop(permit);
                Ok(rx.await.map_or(Waited::Retry, |l| Waited::Sent(Box::new(l))))
            }
        }
    }

    /// Queue waiting callers' CALLs behind busy workers, at most one per worker, oldest
    /// caller first: the worker then finds its next call the moment it finishes, instead
    /// of sleeping until the gateway has read its result, released it and woken the
    /// next caller. On a saturated feed that saves a sleep and a wake-up of the Python
    /// process per call, its largest cost. A worker still runs one call at a time: the
    /// queued CALL is only read after END.
    ///
    /// Only while calls are quick (a slow current call would hold the next one up while
    /// another worker might free sooner), and only frames the socket takes whole
    /// without waiting.
    fn feed_next(&self, s: &mut State) {
        if s.retired
            || s.pending.is_empty()
            || s.typical_call > QUEUE_BEHIND_TYPICAL_CALL.as_secs_f64()
        {
            return;
        }
        let now = Instant::now();
        let limit = QUEUE_BEHIND_TYPICAL_CALL
            .as_secs_f64()
            .max(2.0 * s.typical_call);
        let State {
            leased,
            pending,
            queued_behind,
            ..
        } = s;
        for slot in leased.iter_mut() {
            if slot.next.is_some()
                || slot.poisoned
                || now.duration_since(slot.since).as_secs_f64() >= limit
            {
                continue;
            }
            let p = loop {
                match pending.pop_front() {
                    None => return,
                    Some(p) if p.tx.is_closed() => continue,
                    Some(p) => break p,
                }
            };
            match protocol::try_write_whole(&slot.writer, &p.frame) {
                Ok(true) => {
                    slot.next = Some(p.tx);
                    *queued_behind += 1;
                }
                Ok(false) => pending.push_front(p),
                Err(e) => {
                    // Part of a frame went out: that worker's stream is corrupt. Its
                    // current call ends in a protocol error and the worker is replaced.
                    tracing::warn!(revision_id = self.revision_id, error = %e, "queueing a call behind a busy worker failed");
                    slot.poisoned = true;
                    pending.push_front(p);
                }
            }
        }
    }

    /// Lease an idle worker, or start one, under `permit`.
    async fn lease_worker(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Result<Lease> {
        let mut lease = Lease::new(self.clone(), permit);
        loop {
            let w = self.state().idle.pop();
            match w {
                Some((mut w, since)) => {
                    // A worker that was busy a moment ago is alive (a death in between
                    // makes the CALL fail to write, see `call_lease`); checking costs a
                    // syscall per call.
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
                    lease.attach(w);
                    return Ok(lease);
                }
                None => break,
            }
        }
        let w = self.start_worker().await?;
        lease.attach(w);
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
            let w = self.start_worker().await?;
            lease.attach(w);
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

    fn release(self: &Arc<Self>, lease: &mut Lease) {
        let worker = lease.worker.take();
        let mut outcome = lease.outcome;
        let mut s = self.state();
        let slot = s.leased.iter().position(|l| l.id == lease.slot);
        let (next, poisoned) = match slot {
            Some(i) => {
                let l = s.leased.swap_remove(i);
                (l.next, l.poisoned)
            }
            None => (None, false),
        };
        if poisoned && outcome == Outcome::Healthy {
            outcome = Outcome::Killed;
        }
        if outcome == Outcome::Healthy && lease.called {
            let took = lease.since.elapsed().as_secs_f64();
            s.typical_call = if s.typical_call.is_finite() {
                0.8 * s.typical_call + 0.2 * took
            } else {
                took
            };
        }
        // A call queued behind this one takes the worker, and the slot, as they are. (Any
        // other outcome drops it: that call never started, and its caller looks for
        // another worker.)
        if outcome == Outcome::Healthy
            && let Some(next) = next
            && let Some(worker) = worker
        {
            let mut handed = Lease {
                pool: self.clone(),
                worker: None,
                outcome: Outcome::Killed,
                permit: lease.permit.take(),
                slot: 0,
                since: Instant::now(),
                called: true,
            };
            handed.register(&mut s, worker);
            self.feed_next(&mut s);
            drop(s);
            // Nobody waits for it any more (the caller went away) but the worker runs it
            // anyway: read it to its end, and the worker carries on.
            if let Err(abandoned) = next.send(handed)
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn(drain(abandoned));
            }
            return;
        }
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
        // Callers whose CALL is not yet queued anywhere find a worker the usual way
        // (or, once closed, hear that the runtime is shutting down).
        s.pending.clear();
        if close {
            self.permits.close();
        }
        let idle = std::mem::take(&mut s.idle);
        s.workers -= idle.len();
        idle.into_iter().map(|(w, _)| w).collect()
    }
}

/// Read a queued call whose caller has gone away to its end, so the worker, and the calls
/// queued behind it, carry on. A call that does not end soon (or breaks the protocol)
/// leaves the lease's default outcome: the worker is stopped and replaced, and the calls
/// behind it, which never started, go to other workers.
async fn drain(mut lease: Lease) {
    let ended = tokio::time::timeout(DRAIN_ABANDONED, async {
        loop {
            match lease.worker().recv().await {
                Ok(f) if f.kind == Kind::End => return true,
                // The SDK exits after a MemoryError: that worker is not reusable.
                Ok(f) if f.kind == Kind::Error => {
                    return f
                        .json::<protocol::ErrorFrame>()
                        .is_ok_and(|e| e.ty != "MemoryError");
                }
                Ok(f) if matches!(f.kind, Kind::Rows | Kind::Arrow | Kind::Sql) => continue,
                _ => return false,
            }
        }
    })
    .await;
    if ended == Ok(true) {
        lease.outcome = Outcome::Healthy;
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

/// Counts a caller as waiting for exactly as long as it waits, even if cancelled, and
/// takes its CALL out of the pending queue if it is still there.
struct Waiting<'a>(&'a Pool, u64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.waiting -= 1;
        if let Some(i) = s.pending.iter().position(|p| p.id == self.1) {
            s.pending.remove(i);
        }
    }
}

/// A waiting caller's CALL, ready to be queued behind a busy worker.
struct Pending {
    id: u64,
    frame: Arc<[u8]>,
    tx: oneshot::Sender<Lease>,
}

enum Waited {
    Permit(OwnedSemaphorePermit),
    /// Our CALL was queued behind a busy worker, which has now finished its call.
    Sent(Box<Lease>),
    Retry,
}

/// A worker leased to a call.
struct Leased {
    id: u64,
    writer: Arc<OwnedWriteHalf>,
    since: Instant,
    /// A caller whose CALL is queued behind the current one.
    next: Option<oneshot::Sender<Lease>>,
    /// Queueing wrote part of a frame: the worker must not be reused.
    poisoned: bool,
}

pub(crate) struct Lease {
    pool: Arc<Pool>,
    pub worker: Option<Worker>,
    /// Until the call ends by the protocol, assume the worker is in an unknown state.
    pub outcome: Outcome,
    permit: Option<OwnedSemaphorePermit>,
    /// This lease's entry in the pool's `leased`, once it has a worker.
    slot: u64,
    since: Instant,
    /// A CALL was sent on it (leases that only start a worker do not count as calls).
    called: bool,
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
            permit: Some(permit),
            slot: 0,
            since: Instant::now(),
            called: false,
        }
    }

    fn attach(&mut self, worker: Worker) {
        let pool = self.pool.clone();
        let mut s = pool.state();
        self.register(&mut s, worker);
    }

    fn register(&mut self, s: &mut State, worker: Worker) {
        self.slot = crate::next_seq();
        s.leased.push(Leased {
            id: self.slot,
            writer: worker.writer(),
            since: self.since,
            next: None,
            poisoned: false,
        });
        self.worker = Some(worker);
    }

    pub fn worker(&mut self) -> &mut Worker {
        // A lease handed out by `call_lease` always holds a worker until it is dropped.
        self.worker.as_mut().expect("lease without worker")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Runs before the permit is dropped: the worker is back in `idle` (or handed on)
        // before the next waiter gets the permit and looks for one.
        let pool = self.pool.clone();
        pool.release(self);
    }
}
