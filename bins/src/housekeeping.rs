//! The non-realtime side of a running daemon: the logger, signals, the periodic stats line,
//! the realtime event queue's formatting, and the systemd watchdog, fed only while the
//! realtime threads' heartbeats advance (see [`crate::watchdog`]).

use crate::pcm::alsa::GoneSwitch;
use crate::status::Journal;
use crate::watchdog::{self, FAULT_AFTER_FEEDS, Heartbeat, TestFault, Verdict, Watch};
use engine::rtlog::{EventConsumer, log_record};
use engine::stats::StatsSnapshot;
use sd_notify::NotifyState;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM; every loop watches it.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set [`STOP`] (a clean stop) and ignores SIGPIPE.
pub fn install_signal_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for (sig, how) in [
        (Signal::SIGINT, &act),
        (Signal::SIGTERM, &act),
        (Signal::SIGPIPE, &ignore),
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; ignoring
        // a signal has no precondition.
        let _ = unsafe { sigaction(sig, how) };
    }
}

struct StderrLogger {
    level: log::LevelFilter,
    start: Instant,
    file: Option<std::sync::Mutex<std::fs::File>>,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = self.start.elapsed().as_secs_f64();
            // One write per line.
            let line = format!("{t:9.3} {:<5} {}\n", r.level(), r.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            // Only the housekeeping side logs, so this lock is never on a realtime path.
            if let Some(f) = &self.file
                && let Ok(mut f) = f.lock()
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the stderr logger (under systemd, stderr goes to the journal), also appending to
/// `file` when given (the old `tail -f /var/log/...` habit; rotate it with logrotate's
/// `copytruncate`).
pub fn init_logging(level: &str, file: Option<&str>) -> Result<(), String> {
    let level: log::LevelFilter = level.parse().map_err(|_| {
        format!("unknown log level {level:?}: use error, warn, info, debug or trace")
    })?;
    let file = match file {
        Some(p) => Some(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open log.file {p:?}: {e}"))?,
        )),
        None => None,
    };
    let logger = Box::leak(Box::new(StderrLogger {
        level,
        start: Instant::now(),
        file,
    }));
    log::set_logger(logger).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

/// Tells systemd `state` when run as a `Type=notify` service (`$NOTIFY_SOCKET` set); silent
/// otherwise. Housekeeping thread only: [`sd_notify::notify`] formats and opens a socket.
fn notify(state: NotifyState) {
    let _ = sd_notify::notify(&[state]);
}

/// One stats line for a receiver.
pub fn receiver_line(s: &StatsSnapshot, rate: u32) -> String {
    let ms = |f: f64| f * 1000.0 / rate as f64;
    let mut line = receiver_counts(s, ms);
    if s.auth_failures + s.replayed_packets + s.stale_packets > 0 {
        line += &format!(
            " | dropped: {} bad tag, {} replayed, {} stale (stale: are both clocks synchronised?)",
            s.auth_failures, s.replayed_packets, s.stale_packets
        );
    }
    if s.device_lost > 0 {
        line += &format!(" | device lost {}x", s.device_lost);
    }
    if s.late_renders > 0 {
        line += &format!(" | late renders {}", s.late_renders);
    }
    if s.streams_ended > 0 {
        line += &format!(" | senders stopped cleanly {}x", s.streams_ended);
    }
    line
}

fn receiver_counts(s: &StatsSnapshot, ms: impl Fn(f64) -> f64) -> String {
    format!(
        "buffer {:.1} ms (target {:.1}) | rx {} pkts, lost {}, recovered {}, late {}, dup {} | \
         drift {:+.1} ppm (correcting {:+.1}) | xruns {} | gaps {} | concealed {:.1} ms",
        ms(s.level_frames),
        ms(s.target_frames),
        s.packets_received,
        s.lost_packets,
        s.recovered_packets,
        s.late_packets,
        s.duplicate_packets,
        s.drift_ppm,
        s.ratio_ppm,
        s.xruns,
        s.gaps,
        ms(s.concealed_frames as f64),
    )
}

/// One stats line for a sender.
pub fn sender_line(s: &StatsSnapshot, rate: u32) -> String {
    format!(
        "sent {} pkts, {:.1} s of audio, {} refused | xruns {}",
        s.packets_sent,
        s.frames_sent as f64 / rate as f64,
        s.send_errors,
        s.xruns
    )
}

/// Drains realtime events into the log (and into `journal`, the status page's gap log, when
/// given), prints a stats line every `interval`, and feeds the watchdog while every one of
/// `heartbeats` advances, until [`STOP`] or `until` (when given).
/// `line` makes the stats line. `fault` (tests only) is armed after [`FAULT_AFTER_FEEDS`]
/// feeds: in the first heartbeat's loop, or, for a device fault, through `gone` (the daemon's
/// ALSA device).
///
/// Returns why, when a realtime thread stopped (panicked, returned, or stuck past the stall
/// limit): that has been logged and told systemd (`STATUS=`), and the watchdog is no longer
/// fed; the daemon must exit with code 3.
#[allow(clippy::too_many_arguments)]
pub fn run<F: FnMut() -> String>(
    events: &mut [&mut EventConsumer],
    journal: Option<&Journal>,
    heartbeats: &[&Heartbeat],
    fault: Option<TestFault>,
    gone: Option<&GoneSwitch>,
    interval: Duration,
    until: Option<Instant>,
    mut line: F,
) -> Result<(), String> {
    notify(NotifyState::Ready);
    let mut next = Instant::now() + interval;
    let mut watch = Watch::new(heartbeats.len(), Instant::now(), watchdog::stall_limit())
        .feeding_every(watchdog::feed_interval());
    let mut outcome = Ok(());
    while !STOP.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
        std::thread::sleep(Duration::from_millis(50));
        drain(events, journal);
        let now = Instant::now();
        match watch.tick(now, heartbeats, &STOP) {
            Verdict::Feed => {
                notify(NotifyState::Watchdog);
                if let (Some(f), Some(hb)) = (fault, heartbeats.first())
                    && watch.feeds() == FAULT_AFTER_FEEDS
                {
                    match (f, gone) {
                        (TestFault::Stall | TestFault::Panic, _) => {
                            log::warn!(
                                "test fault {f} injected into the realtime thread {} \
                                 (NETAUDIO_TEST_FAULT)",
                                hb.name()
                            );
                            hb.arm(f);
                        }
                        (_, Some(g)) => {
                            log::warn!(
                                "test fault {f} injected into the ALSA device (NETAUDIO_TEST_FAULT)"
                            );
                            g.trip();
                        }
                        (_, None) => {}
                    }
                }
            }
            Verdict::Wait => {}
            Verdict::Stopped(why) => {
                log::error!("{why}");
                notify(NotifyState::Status(&why));
                outcome = Err(why);
                break;
            }
        }
        if !interval.is_zero() && now >= next {
            next += interval;
            log::info!("{}", line());
        }
    }
    if outcome.is_ok() {
        notify(NotifyState::Stopping);
    }
    drain(events, journal);
    for q in events.iter_mut() {
        let dropped = q.dropped();
        if dropped > 0 {
            log::warn!("{dropped} realtime events were dropped (queue full)");
        }
    }
    outcome
}

/// Logs every queued realtime event, and hands it to `journal` when given.
fn drain(events: &mut [&mut EventConsumer], journal: Option<&Journal>) {
    for q in events.iter_mut() {
        while let Some(r) = q.pop() {
            log_record(&r);
            if let Some(j) = journal {
                j.record(&r);
            }
        }
    }
}
