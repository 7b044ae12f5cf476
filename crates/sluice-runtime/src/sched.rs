//! The CPU scheduling policy of a serving process and of the workers it starts.
//!
//! A feed call is a chain of wake-ups between processes: the client's request wakes a
//! gateway thread, its CALL wakes a Python worker, the worker's answer wakes the gateway
//! again. Under Linux's default policy each wake-up may preempt whatever is running on that
//! CPU, which under load is usually another worker or a gateway thread half-way through a
//! request; the preempted process resumes later with cold caches, and in a virtual machine
//! every such preemption is also a reschedule interrupt between CPUs. `SCHED_BATCH` keeps
//! the fair share of CPU but lets a woken task wait until the running one blocks (or its
//! slice ends), so each process finishes the work it has before the switch. With the hello
//! benchmark on 2 cores that is about a fifth more requests per second and a lower p99.
//!
//! The policy is set on the main thread before the async runtime starts: every thread
//! created afterwards, and every process they start (workers, uv), inherits it. It only
//! changes which runnable task goes first once a CPU is busy; an idle CPU still runs a woken
//! task at once, so a lightly loaded server answers as quickly as before.

use std::fmt;

/// How the serving process and its workers are scheduled (`"batch"` or `"normal"` in a
/// config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_BATCH`: throughput first (see the module comment).
    #[default]
    Batch,
    /// Leave the policy the process was started with (the kernel's default, or what a
    /// service manager set).
    Normal,
}

impl CpuScheduling {
    pub fn parse(s: &str) -> Result<CpuScheduling, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "batch" => Ok(CpuScheduling::Batch),
            "normal" | "default" => Ok(CpuScheduling::Normal),
            other => Err(format!(
                "unknown CPU scheduling '{other}': use `batch` (throughput, the default) or `normal`"
            )),
        }
    }

    /// Apply the policy to the calling thread, and so to every thread and process it starts
    /// from now on. Only the default policy is switched: a real-time or idle policy chosen
    /// by an administrator (e.g. systemd's `CPUSchedulingPolicy=`) is left alone.
    pub fn apply(self) -> std::io::Result<Applied> {
        if self == CpuScheduling::Normal {
            return Ok(Applied::Unchanged);
        }
        imp::to_batch()
    }
}

impl fmt::Display for CpuScheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuScheduling::Batch => "batch",
            CpuScheduling::Normal => "normal",
        })
    }
}

/// What [`CpuScheduling::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Batch,
    /// Nothing: `normal` was asked for, the process already had another non-default policy,
    /// or the platform has no `SCHED_BATCH`.
    Unchanged,
}

/// The scheduling policy of a process or thread (`0` for the caller), as the kernel names
/// it: `"batch"`, `"normal"`, or another policy's name. For tests and diagnostics.
pub fn policy_of(pid: u32) -> std::io::Result<&'static str> {
    imp::policy_of(pid)
}

// The only unsafe code in the workspace: no maintained safe wrapper offers
// sched_setscheduler (rustix leaves it out on purpose, and thread-priority also changes the
// nice value).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    use super::Applied;

    pub fn to_batch() -> std::io::Result<Applied> {
        // SAFETY: plain syscalls on the calling thread; `param` outlives the call.
        unsafe {
            let current = libc::sched_getscheduler(0);
            if current < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if current != libc::SCHED_OTHER {
                return Ok(Applied::Unchanged);
            }
            // Non-real-time policies take priority 0; switching from SCHED_OTHER to
            // SCHED_BATCH needs no privilege.
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Applied::Batch)
    }

    pub fn policy_of(pid: u32) -> std::io::Result<&'static str> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid too large"))?;
        // SAFETY: a plain syscall.
        let policy = unsafe { libc::sched_getscheduler(pid) };
        Ok(match policy {
            p if p < 0 => return Err(std::io::Error::last_os_error()),
            libc::SCHED_OTHER => "normal",
            libc::SCHED_BATCH => "batch",
            libc::SCHED_IDLE => "idle",
            libc::SCHED_FIFO => "fifo",
            libc::SCHED_RR => "rr",
            _ => "other",
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Applied;

    pub fn to_batch() -> std::io::Result<Applied> {
        Ok(Applied::Unchanged)
    }

    pub fn policy_of(_pid: u32) -> std::io::Result<&'static str> {
        Ok("normal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_a_typo_says_what_is_accepted() {
        assert_eq!(CpuScheduling::parse(" Batch "), Ok(CpuScheduling::Batch));
        assert_eq!(CpuScheduling::parse("normal"), Ok(CpuScheduling::Normal));
        let e = CpuScheduling::parse("fast").unwrap_err();
        assert!(
            e.contains("'fast'") && e.contains("batch") && e.contains("normal"),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    #[test]
    fn batch_applies_to_the_thread_and_what_it_starts() {
        // In a thread of its own: the policy is per thread and must not leak into other tests.
        std::thread::spawn(|| {
            // Whatever policy the test runner was started with, begin from the default.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain syscall on this thread.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) },
                0
            );
            assert_eq!(policy_of(0).unwrap(), "normal");
            assert_eq!(CpuScheduling::Normal.apply().unwrap(), Applied::Unchanged);
            assert_eq!(policy_of(0).unwrap(), "normal");
            assert_eq!(CpuScheduling::Batch.apply().unwrap(), Applied::Batch);
            assert_eq!(policy_of(0).unwrap(), "batch");
            // Threads and processes started afterwards inherit it.
            let inner = std::thread::spawn(|| policy_of(0).unwrap()).join().unwrap();
            assert_eq!(inner, "batch");
            let child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap();
            let policy = policy_of(child.id());
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(policy.unwrap(), "batch");
            // A second apply is harmless.
            assert_eq!(CpuScheduling::Batch.apply().unwrap(), Applied::Unchanged);
        })
        .join()
        .unwrap();
    }
}
