//! `latency = auto`: a latency target that follows the network's observed jitter.
//!
//! Every packet that arrives in order gives its *transit*: arrival time minus the time its
//! first frame was captured, in the receiver's clock and up to a constant (the sender's clock
//! is unknown, and drifts: at 500 ppm the constant moves 0.5 ms per second). The spread of the
//! transits inside one second is therefore the jitter of that second, drift contributing at
//! most half a millisecond. The tracker keeps the spreads of the last [`WINDOW_S`] seconds and
//! recommends
//!
//! ```text
//! target = floor + HEADROOM · max(spread over the window) + margin
//! ```
//!
//! clamped to the configured bounds, where `floor` is what the receiver needs with a perfect
//! network (the device's buffer, a period and a packet). The receiver moves its target towards
//! the recommendation at a bounded rate (up quickly, down slowly, never by a jump), through the
//! drift loop's feed-forward ([`crate::drift::DriftController::update_moving`]): the buffer
//! level follows by slips or resampling, never by a gap.
//!
//! Realtime contract: fixed-size arrays, no allocation, a few integer operations per packet.

/// Seconds of history the recommendation looks back on.
pub const WINDOW_S: usize = 30;
/// Safety factor on the observed spread.
pub const HEADROOM: f64 = 1.25;
/// Fixed margin above floor + headroom · spread, milliseconds.
pub const MARGIN_MS: f64 = 1.0;

/// Bounds and pace of an automatic latency target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoLatency {
    /// Lowest target, frames.
    pub min_frames: usize,
    /// Highest target, frames.
    pub max_frames: usize,
    /// How fast the target may rise, ms per second of audio (≤ the drift loop's limit).
    pub rise_ms_per_s: f64,
    /// How fast it may fall, ms per second.
    pub fall_ms_per_s: f64,
}

impl AutoLatency {
    /// Bounds in milliseconds at `rate`, with the default pace (rise 1 ms/s, fall 0.1 ms/s).
    pub fn from_ms(rate: u32, min_ms: f64, max_ms: f64) -> AutoLatency {
        let f = |ms: f64| (ms.max(0.0) * rate as f64 / 1000.0).round() as usize;
        AutoLatency {
            min_frames: f(min_ms),
            max_frames: f(max_ms).max(f(min_ms)),
            rise_ms_per_s: 1.0,
            fall_ms_per_s: 0.1,
        }
    }
}

/// Per-second transit spreads and the target they call for.
#[derive(Clone, Debug)]
pub struct JitterTracker {
    rate: u32,
    /// Second (of arrival time) the current block belongs to.
    block: u64,
    block_min: i64,
    block_max: i64,
    block_count: u32,
    spreads: [u32; WINDOW_S],
    filled: usize,
    next: usize,
    seconds_seen: u64,
}

impl JitterTracker {
    /// A tracker for a stream at `rate`.
    pub fn new(rate: u32) -> JitterTracker {
        JitterTracker {
            rate: rate.max(1),
            block: u64::MAX,
            block_min: i64::MAX,
            block_max: i64::MIN,
            block_count: 0,
            spreads: [0; WINDOW_S],
            filled: 0,
            next: 0,
            seconds_seen: 0,
        }
    }

    /// Forgets everything (a new stream: its transit constant differs).
    pub fn reset(&mut self) {
        *self = JitterTracker::new(self.rate);
    }

    /// Drops the second being measured but keeps the history (a new stream: its transit
    /// constant differs from the old one's, the network did not change).
    pub fn restart_block(&mut self) {
        self.block = u64::MAX;
        self.block_min = i64::MAX;
        self.block_max = i64::MIN;
        self.block_count = 0;
    }

    /// A packet whose first frame is `first_frame` arrived at `arrival_ns`.
    pub fn observe(&mut self, first_frame: u64, arrival_ns: u64) {
        // Transit in microseconds, up to a constant: arrival − capture time of the frame.
        let capture_us = (first_frame as u128 * 1_000_000 / self.rate as u128) as i64;
        let transit = (arrival_ns / 1_000) as i64 - capture_us;
        let second = arrival_ns / 1_000_000_000;
        if second != self.block {
            self.close_block();
            self.block = second;
        }
        self.block_min = self.block_min.min(transit);
        self.block_max = self.block_max.max(transit);
        self.block_count += 1;
    }

    fn close_block(&mut self) {
        if self.block_count >= 2 {
            let spread = (self.block_max - self.block_min).clamp(0, u32::MAX as i64) as u32;
            self.spreads[self.next] = spread;
            self.next = (self.next + 1) % WINDOW_S;
            self.filled = (self.filled + 1).min(WINDOW_S);
            self.seconds_seen += 1;
        }
        self.block_min = i64::MAX;
        self.block_max = i64::MIN;
        self.block_count = 0;
    }

    /// Whole seconds measured so far.
    pub fn seconds_seen(&self) -> u64 {
        self.seconds_seen
    }

    /// Largest per-second transit spread in the window (and the open second), microseconds.
    pub fn jitter_us(&self) -> u32 {
        let open = if self.block_count >= 2 {
            (self.block_max - self.block_min).clamp(0, u32::MAX as i64) as u32
        } else {
            0
        };
        self.spreads[..self.filled]
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(open)
    }

    /// The target this jitter calls for, frames: `floor_frames` plus headroom on the jitter
    /// plus the margin, within `bounds`.
    pub fn recommend(&self, floor_frames: usize, bounds: &AutoLatency) -> usize {
        let ms = HEADROOM * self.jitter_us() as f64 / 1000.0 + MARGIN_MS;
        let frames = floor_frames + (ms * self.rate as f64 / 1000.0).ceil() as usize;
        frames.clamp(bounds.min_frames, bounds.max_frames.max(bounds.min_frames))
    }
}

/// Moves a target towards a goal at bounded rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MovingTarget {
    /// Current target, frames (fractional while moving).
    pub value: f64,
    /// Frames per second it moves at right now (positive: rising).
    pub velocity: f64,
}

impl MovingTarget {
    /// Starts at `frames`, still.
    pub fn new(frames: f64) -> MovingTarget {
        MovingTarget {
            value: frames,
            velocity: 0.0,
        }
    }

    /// Advances `dt` seconds towards `goal`, rising at most `rise` and falling at most `fall`
    /// frames per second.
    pub fn step(&mut self, goal: f64, dt: f64, rise: f64, fall: f64) {
        if !goal.is_finite() || !dt.is_finite() || dt <= 0.0 {
            self.velocity = 0.0;
            return;
        }
        let before = self.value;
        if goal > self.value {
            self.value = (self.value + rise.max(0.0) * dt).min(goal);
        } else if goal < self.value {
            self.value = (self.value - fall.max(0.0) * dt).max(goal);
        }
        self.velocity = (self.value - before) / dt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const RATE: u32 = 48_000;

    /// Packets of 256 frames, each delayed by a uniform jitter in [0, jitter_ms], for
    /// `seconds`, starting at audio time `t0_s`.
    fn feed(t: &mut JitterTracker, rng: &mut Rng, t0_s: f64, seconds: f64, jitter_ms: f64) {
        let n = (seconds * RATE as f64 / 256.0) as u64;
        let first0 = (t0_s * RATE as f64) as u64;
        for i in 0..n {
            let frame = first0 + i * 256;
            let ideal_ns = frame as f64 * 1e9 / RATE as f64 + 5e6;
            let arrival = ideal_ns + rng.next_f64() * jitter_ms * 1e6;
            t.observe(frame, arrival as u64);
        }
    }

    #[test]
    fn the_recommendation_follows_the_jitter_with_headroom() {
        let b = AutoLatency::from_ms(RATE, 5.0, 200.0);
        let mut t = JitterTracker::new(RATE);
        let mut rng = Rng::new(1);
        feed(&mut t, &mut rng, 0.0, 20.0, 8.0);
        let j = t.jitter_us();
        assert!((7_000..=8_000).contains(&j), "{j}");
        let floor = 768;
        let r = t.recommend(floor, &b);
        let ms = (r - floor) as f64 * 1000.0 / RATE as f64;
        assert!((9.5..=11.5).contains(&ms), "{ms}");
    }

    #[test]
    fn a_quiet_network_recommends_the_floor_and_the_bounds_hold() {
        let mut t = JitterTracker::new(RATE);
        let mut rng = Rng::new(2);
        feed(&mut t, &mut rng, 0.0, 10.0, 0.0);
        assert!(t.jitter_us() <= 1, "{}", t.jitter_us());
        let b = AutoLatency::from_ms(RATE, 2.0, 50.0);
        assert_eq!(t.recommend(500, &b), 500 + 48);
        let tight = AutoLatency::from_ms(RATE, 20.0, 30.0);
        assert_eq!(t.recommend(500, &tight), 960);
        feed(&mut t, &mut rng, 10.0, 5.0, 100.0);
        assert_eq!(t.recommend(500, &tight), 1440);
    }

    #[test]
    fn a_burst_of_jitter_is_remembered_for_the_window_then_forgotten() {
        let mut t = JitterTracker::new(RATE);
        let mut rng = Rng::new(3);
        feed(&mut t, &mut rng, 0.0, 5.0, 1.0);
        feed(&mut t, &mut rng, 5.0, 2.0, 20.0);
        feed(&mut t, &mut rng, 7.0, (WINDOW_S - 5) as f64, 1.0);
        assert!(t.jitter_us() > 15_000, "{}", t.jitter_us());
        feed(&mut t, &mut rng, 2.0 + WINDOW_S as f64, 10.0, 1.0);
        assert!(t.jitter_us() < 1_500, "{}", t.jitter_us());
    }

    #[test]
    fn drift_alone_is_not_jitter() {
        // 500 ppm: the transit slides 0.5 ms per second.
        let mut t = JitterTracker::new(RATE);
        for i in 0..(60 * RATE as u64 / 256) {
            let frame = i * 256;
            let arrival = frame as f64 * 1e9 / RATE as f64 * (1.0 + 500e-6);
            t.observe(frame, arrival as u64);
        }
        assert!(t.jitter_us() <= 600, "{}", t.jitter_us());
    }

    #[test]
    fn the_target_moves_at_bounded_rates_without_jumps() {
        let mut m = MovingTarget::new(960.0);
        let dt = 256.0 / RATE as f64;
        let (rise, fall) = (48.0, 4.8);
        let mut prev = m.value;
        for _ in 0..(RATE / 256) {
            m.step(1920.0, dt, rise, fall);
            assert!(m.value - prev <= rise * dt + 1e-9);
            prev = m.value;
        }
        assert!((m.value - 1008.0).abs() < 1.0, "{}", m.value);
        assert!((m.velocity - rise).abs() < 1e-6);
        for _ in 0..(30 * RATE / 256) {
            m.step(1920.0, dt, rise, fall);
        }
        assert_eq!(m.value, 1920.0);
        assert_eq!(m.velocity, 0.0);
        m.step(0.0, 1.0, rise, fall);
        assert!((m.value - (1920.0 - fall)).abs() < 1e-9);
        m.step(f64::NAN, 1.0, rise, fall);
        assert_eq!(m.velocity, 0.0);
    }
}
