//! Realtime threads: SCHED_FIFO at a chosen priority, pinned to a chosen core, memory locked.
//!
//! [`spawn`] starts a thread that first applies its [`RtSpec`] (scheduling through
//! `thread-priority`, giving both policy and priority; affinity through `core_affinity`), reports
//! the outcome to the spawner — which logs any refusal once, with what to grant — and then runs
//! the body. Refusals never stop the program: without the privilege it runs as a normal thread.
//!
//! [`lock_memory`] calls `mlockall(MCL_CURRENT | MCL_FUTURE)` so no page of the process is
//! paged out; buffers are touched at start-up ([`prefault`]) so the steady state takes no page
//! faults.

use std::fmt;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
};

/// How a realtime thread should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtSpec {
    /// SCHED_FIFO priority 1..=99; `None` leaves the thread SCHED_OTHER.
    pub priority: Option<u8>,
    /// Core to pin to; `None` leaves the affinity alone.
    pub cpu: Option<usize>,
}

/// What the kernel granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtOutcome {
    /// SCHED_FIFO at the asked priority is in force.
    pub fifo: bool,
    /// Pinned to the asked core.
    pub pinned: bool,
    /// Why something was refused, with what to grant.
    pub problems: Vec<String>,
}

impl fmt::Display for RtOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

/// Applies `spec` to the calling thread.
pub fn apply(spec: RtSpec) -> RtOutcome {
    let mut out = RtOutcome::default();
    if let Some(p) = spec.priority {
        let res = ThreadPriorityValue::try_from(p)
            .map_err(|e| format!("{e:?}"))
            .and_then(|v| {
                thread_priority::set_thread_priority_and_policy(
                    thread_priority::thread_native_id(),
                    ThreadPriority::Crossplatform(v),
                    ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
                )
                .map_err(|e| format!("{e:?}"))
            });
        match res {
            Ok(()) => out.fifo = true,
            Err(e) => out.problems.push(format!(
                "SCHED_FIFO priority {p} refused ({e}); running with normal scheduling, gaps are \
                 likelier under load. Grant it: run as root, or give the service \
                 LimitRTPRIO={p} (systemd) / CAP_SYS_NICE, or add `@audio - rtprio 95` to \
                 /etc/security/limits.d/audio.conf and join group audio"
            )),
        }
    }
    if let Some(cpu) = spec.cpu {
        // Only CPUs the process may use (core_affinity would panic past CPU_SETSIZE).
        let allowed =
            core_affinity::get_core_ids().is_some_and(|ids| ids.iter().any(|c| c.id == cpu));
        let ok = allowed && core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        if ok {
            out.pinned = true;
        } else {
            out.problems.push(format!(
                "cannot pin to CPU {cpu} (this machine has CPUs 0..{}); set rt.*.cpu to one of them",
                thread::available_parallelism().map_or(1, |n| n.get()) - 1
            ));
        }
    }
    out
}

/// Spawns a named thread that applies `spec`, then runs `body`. Returns the handle and what
/// the kernel granted (blocks until the thread has applied its settings).
pub fn spawn<T, F>(name: &str, spec: RtSpec, body: F) -> std::io::Result<(JoinHandle<T>, RtOutcome)>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new().name(name.into()).spawn(move || {
        let outcome = apply(spec);
        let _ = tx.send(outcome);
        body()
    })?;
    let outcome = rx.recv().unwrap_or_default();
    Ok((handle, outcome))
}

/// Locks all current and future memory of the process (`mlockall`).
pub fn lock_memory() -> Result<(), String> {
    // SAFETY: mlockall takes flags only and affects no Rust-visible state.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if r == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(format!(
            "mlockall failed ({e}); pages may be swapped out under memory pressure. Grant it: \
             LimitMEMLOCK=infinity (systemd) or `@audio - memlock unlimited` in limits.conf"
        ))
    }
}

/// Touches every page of `buf` so it is resident before the steady state.
pub fn prefault(buf: &mut [u8]) {
    for i in (0..buf.len()).step_by(4096) {
        // Volatile, so the write is not optimised away.
        let p: *mut u8 = &mut buf[i];
        // SAFETY: `p` points at a live byte of `buf`.
        let v = unsafe { std::ptr::read_volatile(p) };
        // SAFETY: as above; writing the byte's own value back changes nothing.
        unsafe { std::ptr::write_volatile(p, v) };
    }
}

/// The calling thread's scheduling as the kernel reports it: (policy, priority, allowed CPUs).
pub fn current_scheduling() -> (i32, i32, Vec<usize>) {
    // SAFETY: sched_getscheduler(0) queries the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: writes one sched_param into a live local.
    unsafe { libc::sched_getparam(0, &mut param) };
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: writes one cpu_set_t into a live local of that size.
    unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    let cpus = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect();
    (policy, param.sched_priority, cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_priority_and_affinity_read_back_from_the_kernel() {
        let spec = RtSpec {
            priority: Some(42),
            cpu: Some(0),
        };
        let (h, outcome) = spawn("rt-test", spec, current_scheduling).unwrap();
        let (policy, prio, cpus) = h.join().unwrap();
        assert!(outcome.pinned, "{outcome}");
        assert_eq!(cpus, vec![0]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(outcome.fifo, "root may use SCHED_FIFO: {outcome}");
        }
        if outcome.fifo {
            assert_eq!(policy, libc::SCHED_FIFO);
            assert_eq!(prio, 42);
        } else {
            // Without the privilege the thread still runs, normally scheduled, and says why.
            assert_eq!(policy, libc::SCHED_OTHER);
            assert!(outcome.problems[0].contains("LimitRTPRIO"));
        }
    }

    #[test]
    fn a_missing_cpu_is_a_clear_problem_not_a_failure() {
        let spec = RtSpec {
            priority: None,
            cpu: Some(4096),
        };
        let (h, outcome) = spawn("rt-test", spec, || 7).unwrap();
        assert_eq!(h.join().unwrap(), 7);
        assert!(!outcome.pinned);
        assert!(outcome.problems[0].contains("CPU 4096"));
    }
}
