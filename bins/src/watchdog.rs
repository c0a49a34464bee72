//! The systemd watchdog's proof that the realtime threads are alive.
//!
//! Each realtime loop of [`crate::stream`] owns a [`Heartbeat`] and calls [`Heartbeat::beat`]
//! once per turn: a device period, a device wait that timed out (at most 100 ms), or a turn
//! while its device is away and being reopened on another thread (at most
//! [`AWAY_WAIT_MS`](crate::stream::AWAY_WAIT_MS)). It also holds the [`Running`] guard
//! [`Heartbeat::running`] gives, which marks how the loop ended: returned, or unwound by a
//! panic.
//!
//! Realtime contract of [`Heartbeat::beat`]: one relaxed load of the test-fault switch, one
//! relaxed load and one relaxed store of its own counter (the loop is its only writer). No
//! syscall, no allocation, no lock, no formatting.
//!
//! The housekeeping thread ([`crate::housekeeping::run`]) reads the heartbeats every tick
//! through a [`Watch`], which decides:
//! * feed `WATCHDOG=1`, at most once every [`feed_interval`] (half systemd's watchdog timeout,
//!   as systemd recommends; [`FEED_INTERVAL`] without one), only when every heartbeat
//!   advanced since the last feed and within the last [`FRESH`]: a loop stuck past its period
//!   deadline by more than that is not fed for;
//! * give up at once when a loop panicked, or returned while the daemon runs; and when a
//!   heartbeat has not advanced for the stall limit ([`stall_limit`]). The daemon then says
//!   why and exits with code 3, and systemd (`Restart=always`) starts it again.
//!
//! A test-only fault switch, `NETAUDIO_TEST_FAULT=rt-stall` or `rt-panic` ([`TestFault`]), is
//! read at start-up; the housekeeping thread arms it after it has fed the watchdog
//! [`FAULT_AFTER_FEEDS`] times, and the armed loop stalls forever (never beats again) or
//! panics at its next beat. `capture-gone` and `playback-gone` are armed the same way in the
//! daemon's ALSA device instead ([`crate::pcm::alsa::GoneSwitch`]): it reports ENODEV, as an
//! unplugged USB device does, and is then really closed and opened again. `rx-drop-every=N`
//! is no fault of a loop: a receiver's socket (`recv`'s, or `demo`'s) drops every N-th
//! datagram from the start, a lossy link in front of that receiver alone (for the tests of
//! loss recovery with several receivers, and of the status page's gap log).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the watchdog is fed at most when systemd watches no timeout (`WATCHDOG_USEC`
/// unset): the notifications still show the realtime threads are alive.
pub const FEED_INTERVAL: Duration = Duration::from_secs(1);
/// A heartbeat older than this is not fed for. A loop turns at least every 100 ms (its device
/// wait), and while its device is away at least every
/// [`AWAY_WAIT_MS`](crate::stream::AWAY_WAIT_MS).
pub const FRESH: Duration = Duration::from_millis(500);
/// The stall limit without systemd's watchdog, and its upper bound with it.
pub const MAX_STALL: Duration = Duration::from_secs(10);
/// The stall limit's lower bound: well above the longest turn of a loop (the reopen of a lost
/// device is not made on the loop's thread).
pub const MIN_STALL: Duration = Duration::from_secs(3);
/// Feeds after which the housekeeping thread arms a [`TestFault`] (tests only).
pub const FAULT_AFTER_FEEDS: u64 = 2;

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const RETURNED: u8 = 2;
const PANICKED: u8 = 3;

const NO_FAULT: u8 = 0;
const FAULT_STALL: u8 = 1;
const FAULT_PANIC: u8 = 2;

/// One realtime loop's heartbeat (see the module docs).
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    beats: AtomicU64,
    state: AtomicU8,
    fault: AtomicU8,
}

impl Heartbeat {
    /// The heartbeat of the realtime thread `name` (as the log names it).
    pub fn new(name: &'static str) -> Heartbeat {
        Heartbeat {
            name,
            beats: AtomicU64::new(0),
            state: AtomicU8::new(NOT_STARTED),
            fault: AtomicU8::new(NO_FAULT),
        }
    }

    /// The thread's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Marks the loop running until the guard is dropped (returned, or unwound by a panic).
    pub fn running(&self) -> Running<'_> {
        self.state.store(RUNNING, Ordering::Release);
        Running(self)
    }

    /// One turn of the loop. Realtime-safe (see the module docs).
    #[inline]
    pub fn beat(&self) {
        if self.fault.load(Ordering::Relaxed) != NO_FAULT {
            self.fault_now();
        }
        let n = self.beats.load(Ordering::Relaxed);
        self.beats.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Turns the loop has made.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// Makes the loop stall or panic at its next beat (tests only; device faults are not the
    /// heartbeat's and do nothing here).
    pub fn arm(&self, fault: TestFault) {
        let code = match fault {
            TestFault::Stall => FAULT_STALL,
            TestFault::Panic => FAULT_PANIC,
            TestFault::CaptureGone | TestFault::PlaybackGone | TestFault::RxDropEvery(_) => {
                return;
            }
        };
        self.fault.store(code, Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn fault_now(&self) {
        if self.fault.load(Ordering::Relaxed) == FAULT_PANIC {
            panic!("test fault rt-panic (NETAUDIO_TEST_FAULT)");
        }
        // Stuck for good: never beats again, whatever happens.
        loop {
            std::thread::park();
        }
    }
}

/// Held by a running loop; see [`Heartbeat::running`].
pub struct Running<'a>(&'a Heartbeat);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let end = if std::thread::panicking() {
            PANICKED
        } else {
            RETURNED
        };
        self.0.state.store(end, Ordering::Release);
    }
}

/// A fault injected on purpose, for the tests of the watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestFault {
    /// The realtime loop stops making progress (blocks for good).
    Stall,
    /// The realtime loop panics.
    Panic,
    /// The ALSA capture device reports ENODEV (as when unplugged), once.
    CaptureGone,
    /// The ALSA playback device reports ENODEV (as when unplugged), once.
    PlaybackGone,
    /// A receiver drops every n-th datagram on arrival, from the start (a lossy link in front
    /// of it alone): `rx-drop-every=N`.
    RxDropEvery(u32),
}

impl std::fmt::Display for TestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TestFault::Stall => "rt-stall",
            TestFault::Panic => "rt-panic",
            TestFault::CaptureGone => "capture-gone",
            TestFault::PlaybackGone => "playback-gone",
            TestFault::RxDropEvery(n) => return write!(f, "rx-drop-every={n}"),
        })
    }
}

impl TestFault {
    /// `NETAUDIO_TEST_FAULT`: unset or empty for none, `rt-stall`, `rt-panic`, `capture-gone`,
    /// `playback-gone` or `rx-drop-every=N` (N ≥ 2).
    pub fn from_env() -> Result<Option<TestFault>, String> {
        match std::env::var("NETAUDIO_TEST_FAULT") {
            Err(_) => Ok(None),
            Ok(v) => TestFault::parse(&v),
        }
    }

    fn parse(v: &str) -> Result<Option<TestFault>, String> {
        match v {
            "" => Ok(None),
            "rt-stall" => Ok(Some(TestFault::Stall)),
            "rt-panic" => Ok(Some(TestFault::Panic)),
            "capture-gone" => Ok(Some(TestFault::CaptureGone)),
            "playback-gone" => Ok(Some(TestFault::PlaybackGone)),
            _ => match v.strip_prefix("rx-drop-every=").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 2 => Ok(Some(TestFault::RxDropEvery(n))),
                _ => Err(format!(
                    "NETAUDIO_TEST_FAULT={v:?}: use rt-stall, rt-panic, capture-gone, \
                     playback-gone or rx-drop-every=N (N ≥ 2) (for tests only), or unset it"
                )),
            },
        }
    }
}

/// systemd's watchdog timeout for this process: `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset
/// or names this process (read as `sd_watchdog_enabled()` does, by [`sd_notify`]).
pub fn systemd_timeout() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// The stall limit: half systemd's watchdog timeout ([`systemd_timeout`]), so the log says why
/// before systemd's watchdog fires; [`MAX_STALL`] without one; always within
/// [`MIN_STALL`]..=[`MAX_STALL`].
pub fn stall_limit() -> Duration {
    stall_limit_for(systemd_timeout())
}

/// How often the watchdog is fed at most: half systemd's watchdog timeout
/// ([`systemd_timeout`]), as systemd recommends; [`FEED_INTERVAL`] without one.
pub fn feed_interval() -> Duration {
    feed_interval_for(systemd_timeout())
}

fn stall_limit_for(timeout: Option<Duration>) -> Duration {
    timeout.map_or(MAX_STALL, |t| (t / 2).clamp(MIN_STALL, MAX_STALL))
}

fn feed_interval_for(timeout: Option<Duration>) -> Duration {
    timeout.map_or(FEED_INTERVAL, |t| t / 2)
}

/// What the housekeeping thread does after a look at the heartbeats.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Send `WATCHDOG=1`.
    Feed,
    /// Nothing yet.
    Wait,
    /// A realtime thread stopped: why, for the log. Feed no more.
    Stopped(String),
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    beats: u64,
    advanced_at: Instant,
    fed_at_beats: u64,
}

/// The housekeeping thread's view of the heartbeats (see the module docs).
#[derive(Debug)]
pub struct Watch {
    seen: Vec<Seen>,
    next_feed: Instant,
    feed_interval: Duration,
    feeds: u64,
    stall_limit: Duration,
}

impl Watch {
    /// Watches `n` heartbeats from `now`, giving up on one silent for `stall_limit`; feeds at
    /// most once every [`FEED_INTERVAL`] (see [`feeding_every`](Self::feeding_every)).
    pub fn new(n: usize, now: Instant, stall_limit: Duration) -> Watch {
        let seen = Seen {
            beats: 0,
            advanced_at: now,
            fed_at_beats: 0,
        };
        Watch {
            seen: vec![seen; n],
            next_feed: now + FEED_INTERVAL,
            feed_interval: FEED_INTERVAL,
            feeds: 0,
            stall_limit,
        }
    }

    /// The same watch, feeding at most once every `interval` (e.g. [`feed_interval`]).
    pub fn feeding_every(mut self, interval: Duration) -> Watch {
        self.next_feed = self.next_feed - self.feed_interval + interval;
        self.feed_interval = interval;
        self
    }

    /// Times the watchdog was fed.
    pub fn feeds(&self) -> u64 {
        self.feeds
    }

    /// Looks at `heartbeats` (the same ones, in the same order, every time) at `now`; `stop`
    /// is the daemon's stop flag (a loop may return once it is set).
    pub fn tick(&mut self, now: Instant, heartbeats: &[&Heartbeat], stop: &AtomicBool) -> Verdict {
        let mut fresh = true;
        for (hb, s) in heartbeats.iter().zip(self.seen.iter_mut()) {
            match hb.state.load(Ordering::Acquire) {
                PANICKED => return Verdict::Stopped(stopped(hb, "it panicked")),
                // Read after the state: a loop that returned because of `stop` saw it set.
                RETURNED if !stop.load(Ordering::Relaxed) => {
                    return Verdict::Stopped(stopped(hb, "its loop returned while running"));
                }
                _ => {}
            }
            let beats = hb.beats();
            if beats != s.beats {
                s.beats = beats;
                s.advanced_at = now;
            }
            let quiet = now.saturating_duration_since(s.advanced_at);
            if quiet > self.stall_limit {
                let why = format!(
                    "no heartbeat for {:.1} s (stuck past its period deadline)",
                    quiet.as_secs_f64()
                );
                return Verdict::Stopped(stopped(hb, &why));
            }
            fresh &= beats != s.fed_at_beats && quiet <= FRESH;
        }
        if now < self.next_feed || !fresh {
            return Verdict::Wait;
        }
        for s in &mut self.seen {
            s.fed_at_beats = s.beats;
        }
        self.next_feed = now + self.feed_interval;
        self.feeds += 1;
        Verdict::Feed
    }
}

fn stopped(hb: &Heartbeat, why: &str) -> String {
    format!(
        "the realtime thread {} stopped: {why}; the watchdog is no longer fed, exiting (code 3) \
         so that systemd restarts netaudio",
        hb.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs the housekeeping's 50 ms ticks from `*t` for `d`, the loop beating every `every`
    /// (never when None); returns the verdicts other than Wait, with their times, up to the
    /// first `Stopped`.
    fn run(
        w: &mut Watch,
        hb: &Heartbeat,
        t: &mut Instant,
        d: Duration,
        every: Option<Duration>,
    ) -> Vec<(Duration, Verdict)> {
        let stop = AtomicBool::new(false);
        let (start, end) = (*t, *t + d);
        let mut next_beat = start;
        let mut out = Vec::new();
        while *t < end {
            *t += 50 * MS;
            if let Some(e) = every {
                while next_beat <= *t {
                    hb.beat();
                    next_beat += e;
                }
            }
            match w.tick(*t, &[hb], &stop) {
                Verdict::Wait => {}
                Verdict::Feed => out.push((*t - start, Verdict::Feed)),
                v => {
                    out.push((*t - start, v));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn fed_once_a_second_while_the_loop_beats() {
        let hb = Heartbeat::new("na-test");
        let _running = hb.running();
        let mut t = Instant::now();
        let mut w = Watch::new(1, t, MAX_STALL);
        let v = run(&mut w, &hb, &mut t, 10_000 * MS, Some(5 * MS));
        assert_eq!(v.len(), 10, "{v:?}");
        assert!(v.iter().all(|(_, v)| *v == Verdict::Feed));
        // Through a device back-off (a beat every 2 s) it is still fed, and not given up on.
        let v = run(&mut w, &hb, &mut t, 20_000 * MS, Some(2_000 * MS));
        assert!(v.len() >= 9, "{v:?}");
        assert!(v.iter().all(|(_, v)| *v == Verdict::Feed), "{v:?}");
    }

    #[test]
    fn fed_at_the_interval_given() {
        let hb = Heartbeat::new("na-test");
        let _running = hb.running();
        let mut t = Instant::now();
        let mut w = Watch::new(1, t, MAX_STALL).feeding_every(3_000 * MS);
        let v = run(&mut w, &hb, &mut t, 10_000 * MS, Some(5 * MS));
        let at: Vec<Duration> = v.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, [3_000 * MS, 6_000 * MS, 9_000 * MS], "{v:?}");
    }

    #[test]
    fn a_stalled_loop_is_not_fed_and_given_up_after_the_limit() {
        let hb = Heartbeat::new("na-test");
        let _running = hb.running();
        let mut t = Instant::now();
        let mut w = Watch::new(1, t, MIN_STALL);
        let v = run(&mut w, &hb, &mut t, 3_000 * MS, Some(5 * MS));
        assert_eq!(v.len(), 3, "{v:?}");
        // The loop stops: never fed again; given up on once the limit has passed.
        let v = run(&mut w, &hb, &mut t, 10_000 * MS, None);
        let [(at, Verdict::Stopped(why))] = &v[..] else {
            panic!("{v:?}");
        };
        assert!(*at > MIN_STALL && *at <= MIN_STALL + 100 * MS, "{at:?}");
        assert!(
            why.contains("the realtime thread na-test stopped: no heartbeat"),
            "{why}"
        );
    }

    #[test]
    fn a_loop_that_never_starts_is_never_fed() {
        let hb = Heartbeat::new("na-test");
        let mut t = Instant::now();
        let mut w = Watch::new(1, t, MIN_STALL);
        let v = run(&mut w, &hb, &mut t, 5_000 * MS, None);
        assert!(matches!(v[..], [(_, Verdict::Stopped(_))]), "{v:?}");
    }

    #[test]
    fn a_panicked_loop_is_given_up_at_once() {
        let hb = Heartbeat::new("na-test");
        let t = Instant::now();
        let mut w = Watch::new(1, t, MAX_STALL);
        let stop = AtomicBool::new(false);
        hb.arm(TestFault::Panic);
        let r = std::panic::catch_unwind(|| {
            let _running = hb.running();
            hb.beat();
        });
        assert!(r.is_err());
        let Verdict::Stopped(why) = w.tick(t + 50 * MS, &[&hb], &stop) else {
            panic!("a panicked loop must be given up");
        };
        assert!(why.contains("na-test stopped: it panicked"), "{why}");
    }

    #[test]
    fn a_loop_may_return_once_the_daemon_stops_only() {
        let hb = Heartbeat::new("na-test");
        let t = Instant::now();
        drop(hb.running());
        let stop = AtomicBool::new(false);
        let mut w = Watch::new(1, t, MAX_STALL);
        assert!(matches!(
            w.tick(t + 50 * MS, &[&hb], &stop),
            Verdict::Stopped(_)
        ));
        stop.store(true, Ordering::Relaxed);
        let mut w = Watch::new(1, t, MAX_STALL);
        assert_eq!(w.tick(t + 50 * MS, &[&hb], &stop), Verdict::Wait);
    }

    #[test]
    fn every_heartbeat_must_advance_for_a_feed() {
        let (a, b) = (Heartbeat::new("na-a"), Heartbeat::new("na-b"));
        let t = Instant::now();
        let stop = AtomicBool::new(false);
        let mut w = Watch::new(2, t, MAX_STALL);
        a.beat();
        b.beat();
        assert_eq!(w.tick(t + 1_000 * MS, &[&a, &b], &stop), Verdict::Feed);
        // Only one of them goes on: no feed.
        a.beat();
        assert_eq!(w.tick(t + 2_000 * MS, &[&a, &b], &stop), Verdict::Wait);
        b.beat();
        assert_eq!(w.tick(t + 2_050 * MS, &[&a, &b], &stop), Verdict::Feed);
    }

    #[test]
    fn the_stall_limit_follows_systemds_watchdog() {
        let s = Duration::from_secs;
        assert_eq!(stall_limit_for(None), MAX_STALL);
        assert_eq!(
            stall_limit_for(Some(s(30))),
            MAX_STALL,
            "WatchdogSec=30: at most 10 s"
        );
        assert_eq!(stall_limit_for(Some(s(8))), s(4));
        assert_eq!(stall_limit_for(Some(s(2))), MIN_STALL);
        // Fed at half the timeout, as systemd recommends; once a second without one.
        assert_eq!(feed_interval_for(None), FEED_INTERVAL);
        assert_eq!(feed_interval_for(Some(s(30))), s(15));
        assert_eq!(feed_interval_for(Some(s(6))), s(3));
    }

    /// Prints what the daemon reads from the environment; run in a process of its own, with
    /// the variables set, by the test below.
    #[test]
    #[ignore = "run by the_watchdog_timings_are_read_from_systemds_environment"]
    fn print_the_watchdog_timings() {
        println!(
            "timings: {} {}",
            stall_limit().as_millis(),
            feed_interval().as_millis()
        );
    }

    /// The stall limit and the feed interval (ms) a new process reads with `WATCHDOG_USEC`
    /// set to `usec` and `WATCHDOG_PID` to `pid` (`$$`: its own pid), when given.
    fn timings_with(usec: Option<&str>, pid: Option<&str>) -> (u128, u128) {
        let mut script = String::new();
        if let Some(u) = usec {
            script += &format!("export WATCHDOG_USEC='{u}'; ");
        }
        if let Some(p) = pid {
            script += &format!("export WATCHDOG_PID={p}; ");
        }
        script += r#"exec "$0" "$@""#;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "watchdog::tests::print_the_watchdog_timings"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| Some(l.split_once("timings: ")?.1))
            .unwrap_or_else(|| panic!("{text}"));
        let (stall, feed) = line.split_once(' ').unwrap();
        (stall.parse().unwrap(), feed.parse().unwrap())
    }

    #[test]
    fn the_watchdog_timings_are_read_from_systemds_environment() {
        assert_eq!(timings_with(None, None), (10_000, 1_000));
        assert_eq!(
            timings_with(Some("30000000"), None),
            (10_000, 15_000),
            "WatchdogSec=30: at most 10 s"
        );
        assert_eq!(timings_with(Some("8000000"), Some("$$")), (4_000, 4_000));
        assert_eq!(timings_with(Some("2000000"), None), (3_000, 1_000));
        // Meant for another process, or unreadable: ignored.
        assert_eq!(timings_with(Some("8000000"), Some("1")), (10_000, 1_000));
        assert_eq!(timings_with(Some("soon"), None), (10_000, 1_000));
    }

    #[test]
    fn the_fault_switch_names_its_values() {
        assert_eq!(TestFault::parse(""), Ok(None));
        assert_eq!(TestFault::parse("rt-stall"), Ok(Some(TestFault::Stall)));
        assert_eq!(TestFault::parse("rt-panic"), Ok(Some(TestFault::Panic)));
        assert_eq!(
            TestFault::parse("capture-gone"),
            Ok(Some(TestFault::CaptureGone))
        );
        assert_eq!(
            TestFault::parse("playback-gone"),
            Ok(Some(TestFault::PlaybackGone))
        );
        for f in [
            TestFault::Stall,
            TestFault::Panic,
            TestFault::CaptureGone,
            TestFault::PlaybackGone,
            TestFault::RxDropEvery(20),
        ] {
            assert_eq!(TestFault::parse(&f.to_string()), Ok(Some(f)));
        }
        assert!(TestFault::parse("rx-drop-every=1").is_err());
        assert!(TestFault::parse("rx-drop-every=x").is_err());
        let e = TestFault::parse("rt-crash").unwrap_err();
        assert!(
            e.contains("rt-stall") && e.contains("rt-panic") && e.contains("capture-gone"),
            "{e}"
        );
    }

    #[test]
    fn a_device_fault_is_not_the_heartbeats() {
        let hb = Heartbeat::new("na-test");
        hb.arm(TestFault::CaptureGone);
        hb.arm(TestFault::PlaybackGone);
        hb.beat();
        assert_eq!(hb.beats(), 1);
    }
}
