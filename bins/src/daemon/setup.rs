//! Start-up steps every daemon shares: the status server, keys for sender and receiver, the
//! retransmit history, stream ids, memory locking and the realtime threads' report, CPU time,
//! the run's deadline, and the test fault switch of the daemon's device.

use super::options::RunOptions;
use crate::housekeeping::STOP;
use crate::net::monotonic_ns;
use crate::pcm::alsa::GoneSwitch;
use crate::rt;
use crate::status::{self, Journal, Meter};
use crate::watchdog::TestFault;
use engine::receiver::Receiver;
use engine::recovery::{DEFAULT_HISTORY_MS, RetransmitHistory};
use engine::sender::Sender;
use engine::stats::Stats;
use std::sync::Arc;
use std::time::Instant;

/// What the status servers of a daemon of `role` show.
pub(crate) fn status_source(
    opts: &RunOptions,
    role: &'static str,
    setup: &crate::pcm::DeviceSetup,
    address: String,
    stats: &Arc<Stats>,
    meter: &Arc<Meter>,
) -> status::Source {
    status::Source {
        role,
        format: setup.format,
        device: setup.name.clone(),
        address,
        stats: stats.clone(),
        meter: meter.clone(),
        started: Instant::now(),
        keyed: opts.key.is_some(),
        receivers: None,
    }
}

/// The status socket (and the Prometheus port when asked): a warning, not a failure, when it
/// cannot be opened.
pub(crate) fn start_status(
    opts: &RunOptions,
    source: &status::Source,
) -> Option<std::thread::JoinHandle<()>> {
    let path = opts
        .status_socket
        .clone()
        .unwrap_or_else(|| status::default_socket(source.role));
    match status::serve(source.clone(), path.clone(), opts.metrics.clone(), &STOP) {
        Ok(h) => {
            log::info!("status: `netaudio status --socket {}`", path.display());
            Some(h)
        }
        Err(e) => {
            log::warn!("{e}; `netaudio status` will not reach this daemon");
            None
        }
    }
}

/// The status page (`[status] http`, `--http`) when asked: its journal, for the housekeeping
/// thread to feed. An address that cannot be served is a failure (it was asked for).
pub(crate) fn start_page(
    opts: &RunOptions,
    source: &status::Source,
) -> Result<Option<Arc<Journal>>, String> {
    let Some(addr) = opts.http else {
        return Ok(None);
    };
    let journal = Arc::new(Journal::new(
        source.role != "sender",
        source.format.rate,
        source.started,
    ));
    let (_thread, bound) = status::web::serve_page(source.clone(), journal.clone(), addr, &STOP)
        .map_err(|e| e.to_string())?;
    log::info!("status page: http://{bound}/");
    Ok(Some(journal))
}

/// The sender, authenticated when a key is configured (its session: the wall clock now).
pub(super) fn with_sender_key(tx: Sender, opts: &RunOptions) -> Sender {
    match &opts.key {
        Some(k) => {
            log::info!("packets are authenticated with the key file");
            tx.with_auth(k.clone(), crate::net::clock_ns(libc::CLOCK_REALTIME))
        }
        None => tx,
    }
}

/// The copies of the last packets a sender keeps for NACKs; with a key it answers only NACKs
/// sealed with it.
pub(super) fn history_for(tx: &Sender, opts: &RunOptions) -> RetransmitHistory {
    let h =
        RetransmitHistory::for_span(tx.format().rate, tx.frames_per_packet(), DEFAULT_HISTORY_MS);
    match &opts.key {
        Some(k) => h.with_auth(k.clone()),
        None => h,
    }
}

/// The receiver, accepting only authenticated packets when a key is configured.
pub(super) fn with_receiver_key(rx: Receiver, opts: &RunOptions) -> Receiver {
    match &opts.key {
        Some(k) => {
            log::info!(
                "only packets authenticated with the key file are played (clocks must agree within {} s)",
                engine::auth::DEFAULT_MAX_SKEW_NS / 1_000_000_000
            );
            rx.with_auth(k.clone())
        }
        None => rx,
    }
}

/// A random stream id (new per sender start).
pub(crate) fn new_stream_id() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into a live buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        engine::rng::mix64(monotonic_ns() ^ std::process::id() as u64) as u32
    }
}

pub(crate) fn setup_rt(opts: &RunOptions) {
    if opts.mlock
        && let Err(e) = rt::lock_memory()
    {
        log::warn!("{e}");
    }
}

pub(crate) fn report_rt(name: &str, outcome: &rt::RtOutcome) {
    if !outcome.problems.is_empty() {
        log::warn!("{name} thread: {outcome}");
    } else {
        log::info!(
            "{name} thread: {}{}",
            if outcome.fifo {
                "SCHED_FIFO"
            } else {
                "normal scheduling"
            },
            if outcome.pinned { ", pinned" } else { "" }
        );
    }
}

pub(crate) fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe_zeroed_rusage();
    // SAFETY: getrusage writes one rusage into a live local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

pub(crate) fn deadline(opts: &RunOptions) -> Option<Instant> {
    opts.duration.map(|d| Instant::now() + d)
}

/// The test fault switch of the daemon's ALSA device when `fault` is a device fault: it must be
/// `want` (the one for this daemon's device direction), and `switch` must give one (an ALSA
/// device); other faults need none.
pub(super) fn device_fault(
    fault: Option<TestFault>,
    want: TestFault,
    switch: impl FnOnce() -> Option<GoneSwitch>,
) -> Result<Option<GoneSwitch>, String> {
    match fault {
        None | Some(TestFault::Stall | TestFault::Panic | TestFault::RxDropEvery(_)) => Ok(None),
        Some(f) if f == want => switch().map(Some).ok_or_else(|| {
            format!(
                "NETAUDIO_TEST_FAULT={f} needs an ALSA device (virtual devices simulate an \
                 unplug with virtual:unplug=AT+FOR)"
            )
        }),
        Some(f) => Err(format!(
            "NETAUDIO_TEST_FAULT={f} does not apply here: capture-gone is for netaudio send, \
             playback-gone for netaudio recv, each with an ALSA device"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_faults_need_the_daemons_own_alsa_device() {
        let g = GoneSwitch::default();
        let alsa = || Some(g.clone());
        let want = TestFault::CaptureGone;
        assert!(device_fault(None, want, alsa).unwrap().is_none());
        assert!(
            device_fault(Some(TestFault::Stall), want, alsa)
                .unwrap()
                .is_none()
        );
        assert!(device_fault(Some(want), want, alsa).unwrap().is_some());
        let e = device_fault(Some(want), want, || None).unwrap_err();
        assert!(
            e.contains("capture-gone needs an ALSA device") && e.contains("unplug=AT+FOR"),
            "{e}"
        );
        let e = device_fault(Some(TestFault::PlaybackGone), want, alsa).unwrap_err();
        assert!(e.contains("playback-gone for netaudio recv"), "{e}");
    }
}
