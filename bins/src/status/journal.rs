//! What the status page shows besides the live snapshot: the gap log and the last minutes of
//! buffer level, drift correction and loss. Kept on the housekeeping side only: the realtime
//! threads never see a [`Journal`] (its mutex is taken by the housekeeping thread and the
//! status page's thread, neither of them realtime).
//!
//! How the gap log is made: the realtime threads already report what happens through their
//! event queues (`engine::rtlog`), which the housekeeping thread drains every 50 ms. Each
//! `GapStart` (the receiver's `gaps` counter counts exactly these) opens an entry, its
//! `GapEnd` gives its length. Why is decided from the other events within a second of its
//! start, in this order: the device went away (`DeviceLost`: "device lost"), the device over-
//! or underran (`Xrun`: "xrun"), a new sender took over (`StreamStart`, `Resync` new stream:
//! "new stream"), the sender stopped (`StreamEnd`: "sender stopped"), packets arrived too far
//! ahead (`Resync` overflow: "stall"); otherwise packets were missing and could not be
//! recovered: "loss". A sender's clean stop is no gap (the receiver plays silence until the
//! next stream), but a listener hears it: it is listed as "sender stopped" with `gap: false`,
//! lasting until the next stream starts (`StreamStart`, or `Resync` to a new stream). A sender has no gaps of its own: its xruns and lost
//! devices are listed instead.

use engine::rtlog::{Event, Record, ResyncReason};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Entries the gap log keeps (the oldest go first).
pub const GAP_LOG_LEN: usize = 100;
/// Points of history kept: the page's five minutes at its 4 updates a second.
pub const HISTORY_LEN: usize = 1200;
/// Events within this much of a gap's start explain it.
const WINDOW_NS: u64 = 1_000_000_000;
/// Recent events kept for explaining gaps.
const RECENT: usize = 32;

/// One interruption a listener heard (or, for a sender, one fault of its device).
#[derive(Clone, Debug, PartialEq)]
pub struct GapEntry {
    /// Wall clock at its start, ms since the epoch.
    pub at_ms: u64,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// How long it lasted, ms (None while it goes on).
    pub ms: Option<f64>,
    /// loss, xrun, device lost, new stream, sender stopped, stall.
    pub reason: &'static str,
    /// Counted in the `gaps` counter (false: a clean stop, or a sender's device fault).
    pub gap: bool,
    /// The event's time in the realtime thread's clock, ns (for explaining it).
    t_ns: u64,
    /// The reason is final (events after the window cannot change it).
    settled: bool,
}

impl GapEntry {
    fn json(&self) -> Value {
        json!({"at_ms": self.at_ms, "uptime_s": self.uptime_s, "ms": self.ms,
            "reason": self.reason, "gap": self.gap})
    }
}

/// One point of the page's plot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    /// Seconds since the daemon started.
    pub t: f64,
    /// Buffer level, ms.
    pub buffer_ms: f64,
    /// Its target, ms.
    pub target_ms: f64,
    /// Drift correction, ppm.
    pub correction_ppm: f64,
    /// Packets lost since the point before.
    pub lost: u64,
    /// The `gaps` counter.
    pub gaps: u64,
}

impl Point {
    /// The point from a status snapshot at `t`; `prev` gives the loss since.
    pub fn from_snapshot(v: &Value, t: f64, prev: Option<&Point>, prev_lost: u64) -> Point {
        let f = |k: &str| v[k].as_f64().filter(|x| x.is_finite()).unwrap_or(0.0);
        let lost = v["lost_packets"].as_u64().unwrap_or(0);
        Point {
            t,
            buffer_ms: f("buffer_ms"),
            target_ms: f("target_ms"),
            correction_ppm: f("correction_ppm"),
            lost: prev.map_or(0, |_| lost.saturating_sub(prev_lost)),
            gaps: v["gaps"].as_u64().unwrap_or(0),
        }
    }

    /// As the page reads it: `[t, buffer, target, correction, lost, gaps]`.
    pub fn json(&self) -> Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!([
            r(self.t),
            r(self.buffer_ms),
            r(self.target_ms),
            r(self.correction_ppm),
            self.lost,
            self.gaps
        ])
    }
}

#[derive(Default)]
struct Inner {
    log: VecDeque<GapEntry>,
    /// A gap is going on (its entry is the newest with `gap`).
    open_gap: bool,
    /// A clean stop waiting for the next stream.
    open_stop: bool,
    recent: VecDeque<(u64, &'static str)>,
    history: VecDeque<Point>,
    last_lost: u64,
    version: u64,
}

/// The gap log and the plot's history of one daemon.
pub struct Journal {
    receiver: bool,
    rate: u32,
    started: Instant,
    inner: Mutex<Inner>,
}

/// What an event says about a gap near it, strongest first.
fn cause(e: &Event) -> Option<&'static str> {
    match e {
        Event::DeviceLost { .. } => Some("device lost"),
        Event::Xrun { .. } => Some("xrun"),
        Event::StreamStart { .. }
        | Event::Resync {
            reason: ResyncReason::NewStream,
            ..
        } => Some("new stream"),
        Event::StreamEnd { .. } => Some("sender stopped"),
        Event::Resync {
            reason: ResyncReason::Overflow,
            ..
        } => Some("stall"),
        _ => None,
    }
}

const ORDER: [&str; 5] = [
    "device lost",
    "xrun",
    "new stream",
    "sender stopped",
    "stall",
];

fn rank(r: &str) -> usize {
    ORDER.iter().position(|o| *o == r).unwrap_or(ORDER.len())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Journal {
    /// An empty journal of a receiver (`receiver`: gaps are logged) or a sender (device faults
    /// are) streaming at `rate` Hz, that started at `started`.
    pub fn new(receiver: bool, rate: u32, started: Instant) -> Journal {
        let inner = Inner {
            log: VecDeque::with_capacity(GAP_LOG_LEN),
            history: VecDeque::with_capacity(HISTORY_LEN),
            recent: VecDeque::with_capacity(RECENT),
            ..Default::default()
        };
        Journal {
            receiver,
            rate: rate.max(1),
            started,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one realtime event (housekeeping thread, as it drains the queues).
    pub fn record(&self, r: &Record) {
        let mut g = self.lock();
        let inner = &mut *g;
        let now_s = self.started.elapsed().as_secs_f64();
        let entry = |reason, gap| GapEntry {
            at_ms: wall_ms(),
            uptime_s: now_s,
            ms: None,
            reason,
            gap,
            t_ns: r.t_ns,
            settled: false,
        };
        let push = |inner: &mut Inner, e: GapEntry| {
            if inner.log.len() == GAP_LOG_LEN {
                inner.log.pop_front();
            }
            inner.log.push_back(e);
        };
        if let Some(c) = cause(&r.event) {
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back((r.t_ns, c));
            // A later event may explain a gap that started just before it.
            for e in inner.log.iter_mut().rev().take(4) {
                if e.gap
                    && !e.settled
                    && r.t_ns.abs_diff(e.t_ns) <= WINDOW_NS
                    && rank(c) < rank(e.reason)
                {
                    e.reason = c;
                }
            }
        }
        match r.event {
            Event::GapStart { .. } if self.receiver => {
                let mut e = entry("loss", true);
                for &(t, c) in &inner.recent {
                    if t.abs_diff(r.t_ns) <= WINDOW_NS && rank(c) < rank(e.reason) {
                        e.reason = c;
                    }
                }
                push(inner, e);
                inner.open_gap = true;
            }
            Event::GapEnd { frames } if self.receiver => {
                if inner.open_gap
                    && let Some(e) = inner.log.iter_mut().rev().find(|e| e.gap)
                {
                    e.ms = Some(frames as f64 * 1000.0 / self.rate as f64);
                }
                inner.open_gap = false;
            }
            Event::StreamEnd { .. } if self.receiver => {
                push(inner, entry("sender stopped", false));
                inner.open_stop = true;
            }
            Event::StreamStart { .. }
            | Event::Resync {
                reason: ResyncReason::NewStream,
                ..
            } if inner.open_stop => {
                if let Some(e) = inner.log.iter_mut().rev().find(|e| !e.gap) {
                    e.ms = Some(r.t_ns.saturating_sub(e.t_ns) as f64 / 1e6);
                    e.settled = true;
                }
                inner.open_stop = false;
            }
            Event::Xrun { .. } if !self.receiver => {
                let mut e = entry("xrun", false);
                e.ms = Some(0.0);
                push(inner, e);
            }
            Event::DeviceLost { .. } if !self.receiver => push(inner, entry("device lost", false)),
            Event::DeviceBack { .. } if !self.receiver => {
                if let Some(e) = inner
                    .log
                    .iter_mut()
                    .rev()
                    .find(|e| e.reason == "device lost" && e.ms.is_none())
                {
                    e.ms = Some(r.t_ns.saturating_sub(e.t_ns) as f64 / 1e6);
                }
            }
            _ => {}
        }
        for e in inner.log.iter_mut() {
            if r.t_ns.saturating_sub(e.t_ns) > WINDOW_NS {
                e.settled = true;
            }
        }
        inner.version += 1;
    }

    /// Adds the point a page update took (the status page's thread, a few times a second);
    /// `lost` is the `lost_packets` counter then.
    pub fn sample(&self, v: &Value) -> Point {
        let mut g = self.lock();
        let t = self.started.elapsed().as_secs_f64();
        let lost = v["lost_packets"].as_u64().unwrap_or(0);
        let p = Point::from_snapshot(v, t, g.history.back(), g.last_lost);
        g.last_lost = lost;
        if g.history.len() == HISTORY_LEN {
            g.history.pop_front();
        }
        g.history.push_back(p);
        p
    }

    /// Every point kept, oldest first, as the page reads them.
    pub fn history_json(&self) -> Value {
        Value::Array(self.lock().history.iter().map(Point::json).collect())
    }

    /// The gap log, newest first, at most `n` entries, and its version (it changes with
    /// every event).
    pub fn log_json(&self, n: usize) -> (Value, u64) {
        let g = self.lock();
        let v = g.log.iter().rev().take(n).map(GapEntry::json).collect();
        (Value::Array(v), g.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t_ms: u64, event: Event) -> Record {
        Record {
            t_ns: t_ms * 1_000_000,
            event,
        }
    }

    #[test]
    fn gaps_are_logged_with_their_length_and_cause() {
        let j = Journal::new(true, 48_000, Instant::now());
        // Loss: nothing else near it.
        j.record(&rec(1000, Event::GapStart { frame: 10 }));
        j.record(&rec(1010, Event::GapEnd { frames: 480 }));
        // An xrun reported on another queue just after the gap began still explains it.
        j.record(&rec(5000, Event::GapStart { frame: 20 }));
        j.record(&rec(5002, Event::Xrun { capture: false }));
        j.record(&rec(5020, Event::GapEnd { frames: 960 }));
        // A device lost explains it more than an xrun.
        j.record(&rec(9000, Event::Xrun { capture: false }));
        j.record(&rec(
            9001,
            Event::DeviceLost {
                capture: false,
                errno: 19,
            },
        ));
        j.record(&rec(9002, Event::GapStart { frame: 30 }));
        // An xrun long after a gap does not explain it.
        j.record(&rec(20_000, Event::GapStart { frame: 40 }));
        j.record(&rec(20_001, Event::GapEnd { frames: 48 }));
        j.record(&rec(25_000, Event::Xrun { capture: false }));
        // A clean stop is no gap, but lasts until the next stream.
        j.record(&rec(
            30_000,
            Event::StreamEnd {
                stream_id: 1,
                frame: 99,
            },
        ));
        j.record(&rec(
            32_500,
            Event::StreamStart {
                stream_id: 2,
                rate: 48_000,
                channels: 2,
            },
        ));
        // ... or until another sender's stream takes over.
        j.record(&rec(
            40_000,
            Event::StreamEnd {
                stream_id: 2,
                frame: 9,
            },
        ));
        j.record(&rec(
            41_000,
            Event::Resync {
                from: 2,
                to: 3,
                reason: ResyncReason::NewStream,
            },
        ));
        let (log, _) = j.log_json(10);
        let got: Vec<(String, Value, bool)> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap().to_string(),
                    e["ms"].clone(),
                    e["gap"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("sender stopped".into(), json!(1000.0), false),
                ("sender stopped".into(), json!(2500.0), false),
                ("loss".into(), json!(1.0), true),
                ("device lost".into(), Value::Null, true),
                ("xrun".into(), json!(20.0), true),
                ("loss".into(), json!(10.0), true),
            ]
        );
        assert_eq!(
            j.log_json(2).0.as_array().unwrap().len(),
            2,
            "newest first, at most n"
        );
    }

    #[test]
    fn a_senders_log_lists_its_device_faults() {
        let j = Journal::new(false, 48_000, Instant::now());
        j.record(&rec(1000, Event::Xrun { capture: true }));
        j.record(&rec(
            2000,
            Event::DeviceLost {
                capture: true,
                errno: 19,
            },
        ));
        j.record(&rec(3500, Event::DeviceBack { capture: true }));
        j.record(&rec(4000, Event::GapStart { frame: 1 }));
        let (log, version) = j.log_json(10);
        assert_eq!(version, 4);
        assert_eq!(log[0]["reason"], "device lost");
        assert_eq!(log[0]["ms"], 1500.0);
        assert_eq!(log[1]["reason"], "xrun");
        assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
    }

    #[test]
    fn the_log_and_the_history_stay_bounded() {
        let j = Journal::new(true, 48_000, Instant::now());
        for i in 0..(GAP_LOG_LEN as u64 + 10) {
            j.record(&rec(i * 5000, Event::GapStart { frame: i as i64 }));
        }
        assert_eq!(
            j.log_json(usize::MAX).0.as_array().unwrap().len(),
            GAP_LOG_LEN
        );
        for i in 0..(HISTORY_LEN as u64 + 10) {
            j.sample(&json!({"buffer_ms": 20.0, "target_ms": 20.0, "lost_packets": i * 2}));
        }
        let h = j.history_json();
        assert_eq!(h.as_array().unwrap().len(), HISTORY_LEN);
        // Loss per point: the counter's increase since the point before.
        assert_eq!(h[HISTORY_LEN - 1][4], 2);
        assert_eq!(h[HISTORY_LEN - 1][1], 20.0);
    }
}
