//! The receiver's side of the drift loop: once per period, the level measured against the
//! target (fixed, or moving with `latency = auto`), stall detection, the warm-up that holds the
//! first stream until the clocks are measured, and the correction handed to the renderer.
//!
//! Realtime contract: called from [`Receiver::render`]; never allocates, locks, blocks or makes
//! a syscall.

use super::{PRESENTATION_EARLY_LEVEL_TIME_S, PRESENTATION_EARLY_S, Receiver, WARMUP_MAX_NS};
use crate::autolatency::AutoLatency;

/// A render later than this many periods after the previous one is a stall.
const STALL_PERIODS: f64 = 4.0;
/// ... and later than this, seconds (short periods wake with relatively more jitter).
const STALL_MIN_S: f64 = 0.02;

impl Receiver {
    /// The level to hold now: fixed, or with `latency = auto` moved `dt` seconds further
    /// towards what the jitter calls for.
    fn level_target_now(&mut self, frames_per_packet: usize, dt: f64) -> f64 {
        let Some(auto) = self.cfg.auto_latency else {
            return self.moving.value;
        };
        // Two seconds of measurements before the first move.
        if self.jitter.seconds_seen() >= 2 {
            let d = self.resampler_delay;
            let floor = self.cfg.level_floor(frames_per_packet);
            let level_bounds = AutoLatency {
                min_frames: (self.cfg.level_for(auto.min_frames as f64, d).max(0.0)) as usize,
                max_frames: (self.cfg.level_for(auto.max_frames as f64, d).max(0.0)) as usize,
                ..auto
            };
            let goal = self.jitter.recommend(floor, &level_bounds).max(floor) as f64;
            let rate = self.cfg.format.rate as f64;
            self.moving.step(
                goal,
                dt,
                auto.rise_ms_per_s * rate / 1000.0,
                auto.fall_ms_per_s * rate / 1000.0,
            );
            self.counters.target_frames =
                self.moving.value + self.cfg.output_delay_frames as f64 + d as f64;
        }
        self.moving.value
    }

    /// With presentation time, the first seconds after the stream starts to play in step pay
    /// the presentation error back over [`PRESENTATION_EARLY_LEVEL_TIME_S`] instead of the
    /// configured level time, growing to it over [`PRESENTATION_EARLY_S`], and the slew
    /// within the level band is as much faster. The drift estimate is then half a second's
    /// points through a clock model as young: it can be tens of ppm off, and held to it at
    /// 10 ppm/s with a 5 s level time, a receiver ran 100 µs and more from the others for
    /// seconds. Tens of ppm moved within a second are far below what pitch can hear; later the
    /// estimate is within a ppm and the slow pace keeps the pitch steady.
    fn pace_presentation(&mut self, now_ns: u64) {
        let playing = self.timeline.is_some_and(|t| t.warmup_from.is_none());
        if !(self.cfg.presentation && playing && self.drift.has_reference()) {
            return;
        }
        let since = *self.presenting_since.get_or_insert(now_ns);
        let base = self.cfg.drift.level_time_s;
        let early = PRESENTATION_EARLY_LEVEL_TIME_S.min(base);
        let age = now_ns.saturating_sub(since) as f64 * 1e-9;
        let level_time = early + (base - early) * (age / PRESENTATION_EARLY_S).min(1.0);
        self.drift.set_pace(
            level_time,
            self.cfg.drift.slew_ppm_per_s * base / level_time,
        );
    }

    pub(super) fn update_drift(&mut self, now_ns: u64, out_frames: usize) -> f64 {
        let Some(t) = self.timeline else {
            return 0.0;
        };
        let rate = self.cfg.format.rate as f64;
        let nominal = out_frames as f64 / rate;
        let mut dt = match self.last_render_t {
            Some(prev) if now_ns > prev => (now_ns - prev) as f64 * 1e-9,
            _ => nominal,
        };
        self.last_render_t = Some(now_ns);
        if dt > (STALL_PERIODS * self.cfg.period as f64 / rate).max(STALL_MIN_S) {
            // The render came far too late: the receiver (and on a shared clock the sender
            // too) stalled. Both clocks' lines are suspect until they are measured again,
            // and the time lost is no time for filters and slews to act in.
            self.drift.restart_clocks();
            self.resumed_ns = now_ns;
            dt = nominal;
        }
        if t.end.is_some() {
            // No more packets will come: the falling level says nothing about the clocks.
            // Hold the correction as it is until the next stream; report what is left.
            let left = (t.newest_end - self.read_pos).max(0) as f64;
            self.counters.level_frames = left + self.cfg.output_delay_frames as f64;
            return self.drift.correction();
        }
        self.drift.on_playout(now_ns, self.counters.frames_played);

        // Extrapolate the newest arrival to now (bounded, so a stalled sender shows as a
        // falling level rather than being hidden): the level until the arrival line exists.
        // (Nothing was seen during a stall: extrapolate from its end at most.)
        let since = now_ns.saturating_sub(t.newest_t.max(self.resumed_ns)) as f64 * 1e-9 * rate;
        let extrapolated = since.min((2 * t.frames_per_packet.max(self.cfg.period as i64)) as f64);
        let mut fallback = (t.newest_end - self.read_pos) as f64 + extrapolated;
        let mut position = self.read_pos as f64
            + match &self.resampler {
                Some(rs) => rs.position_offset(),
                None => self.frac as f64 / 4_294_967_296.0,
            };
        let mut target = self.level_target_now(t.frames_per_packet as usize, dt);
        if self.drift.has_reference() {
            target += self.render_lateness;
            // This render's own lateness beyond the mean: the level it reads counts frames
            // captured since the device reached its position (see `set_render_lateness_ns`).
            position += self.wake_excess;
        }
        // Still in the silence before the stream's first frame: nothing of it has been heard,
        // so jump to the target instead of slipping there (a sender that starts with a burst of
        // buffered periods must not leave the stream above its target for seconds).
        let level = self.drift.line_level(now_ns, position).unwrap_or(fallback);
        let excess = level - target;
        if let Some((first, since)) = t.warmup_from {
            // Warming up, nothing heard yet: hold the level a margin above its target, moving
            // the read position only forward (frames behind it were not stored), and at the
            // end step forward onto the target, so the stream starts there.
            // With presentation time the start waits for the capture times too, so the stream
            // starts in step with the others.
            let timed = !self.cfg.presentation || self.drift.has_reference();
            let done =
                (self.drift.trusted() && timed) || now_ns.saturating_sub(since) >= WARMUP_MAX_NS;
            let margin = if done { 0.0 } else { self.warmup_margin() };
            let jump = (excess - margin).round().max(0.0);
            self.read_pos += jump as i64;
            position += jump;
            fallback -= jump;
            if done {
                // Measured: the stream plays from the next frame read on.
                if let Some(tl) = self.timeline.as_mut() {
                    tl.start = first.max(self.read_pos);
                    tl.warmup_from = None;
                }
                // Nothing heard yet: start at the estimated pitch, not at a guess (through
                // heavy jitter it is still rough; the correction glides on from there).
                self.drift.take_estimate();
            }
        } else if self.read_pos < t.start && self.frac == 0 && excess > self.cfg.period as f64 / 2.0
        {
            self.read_pos += excess.round() as i64;
            position += excess.round();
            fallback -= excess.round();
            self.drift.restart_level();
        }
        self.pace_presentation(now_ns);
        let c = self
            .drift
            .update(now_ns, position, fallback, target, self.moving.velocity, dt);
        self.counters.level_frames = self.level_frames();
        if self.drift.has_reference() {
            self.counters.presentation_error_us = (self.drift.level() - target) / rate * 1e6;
        }
        self.counters.ratio_ppm = c * 1e6;
        self.counters.drift_ppm = self.drift.drift_ppm();
        c
    }
}
