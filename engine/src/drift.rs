//! Clock-drift control: measures how fast the sender's clock runs against the playback
//! device's, and corrects by exactly that, plus a slow term that keeps the receive buffer at
//! its target.
//!
//! **Feed-forward estimate.** Both clocks are timed on the receiver's monotonic clock:
//! the stream's frame index against each packet's arrival time, and the frames the playback
//! device has taken against each render's time. Network jitter and late wake-ups only ever
//! make a frame look *later* than its clock says, never earlier, so each clock is the lower
//! envelope of its points: an [`EnvelopeFit`] keeps the earliest point of every block
//! (a tenth of a second), the lower convex hull of the last 50 s of them, and the hull's
//! edge under the points' mean time, the line no point lies below that is closest to all
//! of them (a linear-programming clock-skew estimator). On a clean link the slope is exact
//! after a second; with 5 ms of jitter the earliest arrivals sits within
//! a few tens of µs of the true delay and the hull's two supporting points pin the slope to a
//! fraction of a ppm within seconds. The drift is the ratio of the two slopes.
//!
//! **Level.** The buffer level is measured against the same envelope (frames between the
//! arrival line at this moment, lifted to the earliest arrivals of the last second so a
//! wandering clock shows at once, and the frame being played), so the jitter does not move it
//! either; a level error is paid back over [`DriftParams::level_time_s`] (bounded by
//! [`DriftParams::level_limit_ppm`]), faster when it is beyond [`DriftParams::slew_level_ms`]. The correction (input frames per output frame − 1) is
//! `drift + level term − target velocity / rate`, approached at a bounded slew rate
//! ([`DriftParams::slew_ppm_per_s`], faster only when the level strays): it changes by small
//! fractions of a ppm once locked, so the resampler steered by it does not wobble, and a
//! start-up at a large drift glides to pitch instead of stepping. Until the arrival line exists (the
//! first second of a stream) the level is the newest arrival's, low-pass filtered.
//!
//! A step in a clock's points (an xrun on the device, a route change on the network) that
//! the line cannot explain restarts that fit; a new stream restarts the arrival fit. The last
//! estimate is kept meanwhile: the clocks did not change.
//!
//! Realtime contract: no allocation, no syscall. Points and hull live in fixed-capacity
//! arrays; a block's close costs one pass over at most [`MAX_POINTS`] points, ten times a
//! second.

use heapless::{Deque, Vec as HVec};

/// Most blocks an envelope fit holds.
pub const MAX_POINTS: usize = 512;

/// Tuning of the drift loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftParams {
    /// Time over which a level error is paid back, seconds.
    pub level_time_s: f64,
    /// Largest correction the level term makes, ppm.
    pub level_limit_ppm: f64,
    /// Time constant of the fallback level filter (before the arrival line exists), seconds.
    pub filter_s: f64,
    /// Largest correction, ppm.
    pub limit_ppm: f64,
    /// How fast the correction may change while the level is within
    /// [`slew_level_ms`](Self::slew_level_ms) of its target, ppm per second. A tone whose
    /// pitch glides at 10 ppm/s stays a sine to −80 dB and better over an analyzer's window.
    pub slew_ppm_per_s: f64,
    /// Beyond this level error (ms) the slew limit grows with its square, so a drift that
    /// was not known is caught up before the buffer runs dry.
    pub slew_level_ms: f64,
    /// Length of an envelope block, seconds.
    pub block_s: f64,
    /// Span of the envelope fits, seconds.
    pub window_s: f64,
    /// Span the arrival and playback points must cover before their slopes are trusted,
    /// seconds.
    pub min_span_s: f64,
    /// A block whose earliest point lies this far (ms) below the line, or the last
    /// [`STEP_BLOCKS`] blocks this far above it, is a step: the fit restarts.
    pub step_ms: f64,
}

/// Uncertainty under which a first estimate is taken at once, ppm.
pub const TRUST_PPM: f64 = 50.0;

/// Uncertainty at which restarted fits replace a held estimate, however certain it was, ppm.
pub const HELD_PPM: f64 = 1.0;

/// Blocks whose earliest points place the level (about a second).
pub const RECENT_BLOCKS: usize = 10;

/// How far the correction may be from what it should be before its slew speeds up, ppm:
/// the slew grows with the square of the distance beyond this.
pub const SLEW_FREE_PPM: f64 = 50.0;

/// Consecutive blocks above the line by more than [`DriftParams::step_ms`] that restart a fit.
pub const STEP_BLOCKS: u32 = 8;

impl Default for DriftParams {
    fn default() -> Self {
        DriftParams {
            level_time_s: 20.0,
            level_limit_ppm: 200.0,
            filter_s: 0.5,
            limit_ppm: 2000.0,
            slew_ppm_per_s: 10.0,
            slew_level_ms: 1.0,
            block_s: 0.1,
            window_s: 50.0,
            min_span_s: 1.0,
            step_ms: 20.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Point {
    /// Seconds since the fit's origin.
    t: f64,
    /// Frames the clock is behind `t · rate` (the origin's frame count taken off).
    e: f64,
}

/// The lower envelope line of a clock's (time, frame count) points.
#[derive(Clone, Debug)]
pub struct EnvelopeFit {
    rate: f64,
    block_s: f64,
    window_s: f64,
    min_span_s: f64,
    step_frames: f64,
    origin: Option<(u64, i64)>,
    block_end: f64,
    cur: Option<Point>,
    pts: Deque<Point, MAX_POINTS>,
    hull: HVec<Point, MAX_POINTS>,
    /// A point of the line and its slope (frames per second).
    line: Option<(Point, f64)>,
    above: u32,
    restarts: u64,
}

impl EnvelopeFit {
    /// A fit for a clock nominally at `rate` frames per second.
    pub fn new(rate: u32, params: &DriftParams) -> EnvelopeFit {
        let rate = rate as f64;
        EnvelopeFit {
            rate,
            block_s: params.block_s.max(0.01),
            window_s: params
                .window_s
                .clamp(1.0, params.block_s.max(0.01) * (MAX_POINTS - 1) as f64),
            min_span_s: params.min_span_s,
            step_frames: params.step_ms * 1e-3 * rate,
            origin: None,
            block_end: 0.0,
            cur: None,
            pts: Deque::new(),
            hull: HVec::new(),
            line: None,
            above: 0,
            restarts: 0,
        }
    }

    /// Forgets the points after a stall the caller saw (counted as a step restart): where
    /// the clock resumed says nothing of where the line was.
    pub fn restart(&mut self) {
        self.reset();
        self.restarts += 1;
    }

    /// Forgets every point (a new timeline).
    pub fn reset(&mut self) {
        self.origin = None;
        // Times count from the next origin: a block end left from the old one would keep
        // every block open for as long as the old timeline had run.
        self.block_end = 0.0;
        self.cur = None;
        self.pts.clear();
        self.hull.clear();
        self.line = None;
        self.above = 0;
    }

    /// Times a fit restarted on a step.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Notes that the clock had counted `frames` at `t_ns`.
    pub fn observe(&mut self, t_ns: u64, frames: i64) {
        let (t0, f0) = *self.origin.get_or_insert((t_ns, frames));
        if t_ns < t0 {
            return;
        }
        let t = (t_ns - t0) as f64 * 1e-9;
        let p = Point {
            t,
            e: t * self.rate - (frames - f0) as f64,
        };
        if self.cur.is_none_or(|c| p.e < c.e) {
            self.cur = Some(p);
        }
        if t >= self.block_end {
            self.block_end = t + self.block_s;
            if let Some(c) = self.cur.take() {
                self.close_block(c);
            }
        }
    }

    fn close_block(&mut self, p: Point) {
        if let Some(pred) = self.line_e(p.t) {
            let off = p.e - pred;
            let step = if off < -self.step_frames {
                true
            } else if off > self.step_frames {
                self.above += 1;
                self.above >= STEP_BLOCKS
            } else {
                self.above = 0;
                false
            };
            if step {
                // Keep the origin (a line's frames stay comparable); drop the points.
                self.restarts += 1;
                self.pts.clear();
                self.hull.clear();
                self.line = None;
                self.above = 0;
            }
        }
        if self.pts.is_full() {
            self.pts.pop_front();
        }
        let _ = self.pts.push_back(p);
        while self.pts.front().is_some_and(|f| p.t - f.t > self.window_s) {
            self.pts.pop_front();
        }
        self.fit();
    }

    /// The lower hull (monotone chain) and its edge under the points' mean time.
    fn fit(&mut self) {
        self.hull.clear();
        let mut sum_t = 0.0;
        for &p in self.pts.iter() {
            sum_t += p.t;
            while self.hull.len() >= 2 {
                let a = self.hull[self.hull.len() - 2];
                let b = self.hull[self.hull.len() - 1];
                let cross = (b.t - a.t) * (p.e - a.e) - (b.e - a.e) * (p.t - a.t);
                if cross <= 0.0 {
                    self.hull.pop();
                } else {
                    break;
                }
            }
            let _ = self.hull.push(p);
        }
        let (Some(first), Some(last)) = (self.pts.front(), self.pts.back()) else {
            self.line = None;
            return;
        };
        if self.hull.len() < 2 || last.t - first.t < self.min_span_s {
            self.line = None;
            return;
        }
        let mean = sum_t / self.pts.len() as f64;
        let mut i = 0;
        while i + 2 < self.hull.len() && self.hull[i + 1].t < mean {
            i += 1;
        }
        let (a, b) = (self.hull[i], self.hull[i + 1]);
        self.line = Some((a, (b.e - a.e) / (b.t - a.t)));
    }

    /// How uncertain the slope is, as a fraction: twice the mean height of the points above
    /// the line (what the jitter adds to the earliest point of a block), over the span.
    /// Pessimistic by design: it says when a first estimate can be taken as it is.
    pub fn uncertainty(&self) -> Option<f64> {
        let (p, s) = self.line?;
        let (first, last) = (self.pts.front()?, self.pts.back()?);
        let n = self.pts.len() as f64;
        let mean = self
            .pts
            .iter()
            .map(|q| q.e - (p.e + s * (q.t - p.t)))
            .sum::<f64>()
            / n;
        Some(2.0 * mean.max(0.0) / (self.rate * (last.t - first.t)))
    }

    fn line_e(&self, t: f64) -> Option<f64> {
        self.line.map(|(p, s)| p.e + s * (t - p.t))
    }

    /// The clock's rate against the timer's, less one (positive: the clock runs fast), once
    /// the points cover enough time.
    pub fn skew(&self) -> Option<f64> {
        self.line.map(|(_, s)| -s / self.rate)
    }

    /// How far the earliest points of the last [`RECENT_BLOCKS`] blocks lie above the line,
    /// frames: the line is fitted to the whole window, so a clock that wanders shows here
    /// first.
    fn recent_offset(&self) -> f64 {
        let Some((p, s)) = self.line else {
            return 0.0;
        };
        self.pts
            .iter()
            .rev()
            .take(RECENT_BLOCKS)
            .map(|q| q.e - (p.e + s * (q.t - p.t)))
            .fold(f64::INFINITY, f64::min)
            .max(0.0)
    }

    /// The frame count the clock showed at `t_ns` at the earliest: the line, lifted to the
    /// earliest points of the last second.
    pub fn frames_at(&self, t_ns: u64) -> Option<f64> {
        let (t0, f0) = self.origin?;
        let t = (t_ns as f64 - t0 as f64) * 1e-9;
        Some(f0 as f64 + t * self.rate - self.line_e(t)? - self.recent_offset())
    }
}

/// The drift loop: a feed-forward drift estimate from the two clocks plus a slow level term.
#[derive(Clone, Debug)]
pub struct DriftController {
    params: DriftParams,
    rate: f64,
    arrivals: EnvelopeFit,
    playout: EnvelopeFit,
    estimate: f64,
    correction: f64,
    level: f64,
    primed: bool,
    measured: bool,
    /// Keep the estimate until the restarted fits know better.
    hold: bool,
    seen_restarts: u64,
    /// The uncertainty of the estimate when it was last measured (fraction).
    estimate_uncertainty: f64,
    /// Presentation time: a frame and the receiver-clock instant it was captured at (see
    /// [`set_reference`](Self::set_reference)).
    reference: Option<(u64, f64)>,
}

impl DriftController {
    /// A controller for a stream at `rate` frames per second.
    pub fn new(rate: u32, params: DriftParams) -> DriftController {
        DriftController {
            arrivals: EnvelopeFit::new(rate, &params),
            playout: EnvelopeFit::new(rate, &params),
            params,
            rate: rate as f64,
            estimate: 0.0,
            correction: 0.0,
            level: 0.0,
            primed: false,
            measured: false,
            hold: false,
            seen_restarts: 0,
            estimate_uncertainty: f64::INFINITY,
            reference: None,
        }
    }

    /// Presentation time: `Some((t_ns, frame))` says the stream's frame `frame` was captured
    /// at `t_ns` on the receiver's clock (the sender's capture time through the model of its
    /// clock). The level is then measured from capture instead of from arrival: the frames
    /// captured by now (that frame, plus the stream's rate as the arrival line measures it
    /// times the time since) less the frame being played. Held at a target that is the
    /// latency less what plays after the read, it plays every frame at its capture time plus
    /// the latency, on every receiver that does the same. `None`: from arrival again.
    pub fn set_reference(&mut self, reference: Option<(u64, f64)>) {
        self.reference = reference.filter(|&(_, f)| f.is_finite());
    }

    /// Whether the level is measured from capture ([`set_reference`](Self::set_reference)).
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// The frame count the level is measured from at `t_ns`: captured by then (with a
    /// reference), or arrived by then (the arrival line), once known.
    fn frames_at(&self, t_ns: u64) -> Option<f64> {
        match self.reference {
            Some((t0, f0)) => {
                // The stream's rate on this clock; the distance is tens of ms, so the
                // nominal rate is within nanoseconds until the line exists.
                let r = self.rate * (1.0 + self.arrivals.skew().unwrap_or(0.0));
                Some(f0 + (t_ns as f64 - t0 as f64) * 1e-9 * r)
            }
            None => self.arrivals.frames_at(t_ns),
        }
    }

    /// Forgets the level history but keeps the drift estimate (the clocks did not change).
    pub fn restart_level(&mut self) {
        self.primed = false;
    }

    /// A stall of the receiver (its render came far later than a period): the device and,
    /// on a shared clock such as a JACK server, the sender may have resumed late, so both
    /// lines would put the level where it was before. Both fits start afresh and the level
    /// is read from the buffer until they are back, filtered from where it was (a single
    /// reading is off by up to a packet); the estimate is kept.
    pub fn restart_clocks(&mut self) {
        self.arrivals.restart();
        self.playout.restart();
    }

    /// The playback device restarted (an xrun recovered, or the device reopened): the frames
    /// it had taken and the time no longer follow one line (its re-priming alone would put a
    /// point a buffer below it), so the playback fit starts afresh; the estimate is kept.
    pub fn restart_playout(&mut self) {
        self.playout.restart();
    }

    /// The arrival line is fitted to other points from now on (capture instants instead of
    /// arrivals, see [`Receiver::on_capture_point`](crate::receiver::Receiver::on_capture_point)):
    /// it starts afresh, the estimate held until the new line is as certain.
    pub fn restart_arrival_line(&mut self) {
        self.arrivals.restart();
    }

    /// A new stream: its frame indices start afresh, so the arrival fit does too.
    pub fn restart_arrivals(&mut self) {
        self.arrivals.reset();
        self.primed = false;
    }

    /// The newest frame of the stream, `frames` (its end), arrived at `t_ns`.
    pub fn on_arrival(&mut self, t_ns: u64, frames: i64) {
        self.arrivals.observe(t_ns, frames);
    }

    /// The playback device had taken `played` frames in all when it asked for more at `t_ns`.
    pub fn on_playout(&mut self, t_ns: u64, played: u64) {
        self.playout.observe(t_ns, played as i64);
    }

    /// The level by the arrival line at `t_ns` with `position` being played, once the line
    /// exists.
    pub fn line_level(&self, t_ns: u64, position: f64) -> Option<f64> {
        Some(self.frames_at(t_ns)? - position)
    }

    /// One render's update at `t_ns`: `position` is the stream frame being played (fractional),
    /// `fallback` the level by the newest arrival (used until the arrival line exists),
    /// `target` the level to hold, moving at `target_velocity` frames per second, `dt` the
    /// seconds since the last update. Returns the correction (input frames per output
    /// frame − 1).
    pub fn update(
        &mut self,
        t_ns: u64,
        position: f64,
        fallback: f64,
        target: f64,
        target_velocity: f64,
        dt: f64,
    ) -> f64 {
        if !position.is_finite()
            || !fallback.is_finite()
            || !target.is_finite()
            || !target_velocity.is_finite()
            || !dt.is_finite()
            || dt <= 0.0
        {
            return self.correction;
        }
        self.refresh_estimate();
        let level = match self.frames_at(t_ns) {
            Some(f) => f - position,
            None => {
                if !self.primed {
                    self.level = fallback;
                } else {
                    let a = (dt / self.params.filter_s).min(1.0);
                    self.level += a * (fallback - self.level);
                }
                self.level
            }
        };
        self.primed = true;
        self.level = level;
        let limit = self.params.limit_ppm * 1e-6;
        // Within the level band the error is paid back gently; beyond it (a stall that played
        // concealment and cost the buffer milliseconds) the term grows with the error's
        // square, so the margin against the next hiccup comes back in seconds, not minutes.
        let band = self.params.slew_level_ms * 1e-3 * self.rate;
        let stray = ((level - target).abs() / band).max(1.0);
        let level_limit = (self.params.level_limit_ppm * 1e-6 * stray * stray).min(limit);
        let term = ((level - target) * stray / (self.params.level_time_s * self.rate))
            .clamp(-level_limit, level_limit);
        let want = (self.estimate + term - target_velocity / self.rate).clamp(-limit, limit);
        let behind = (level - target).abs() / (self.params.slew_level_ms * 1e-3 * self.rate);
        // Beyond the level band, catching up matters more than a clean glide: the slew grows
        // with the square of the level error. So it does when the correction is far from
        // what it should be (after a disturbance): steering on at a correction hundreds of
        // ppm off would empty or overfill the buffer while it crept back.
        let off = (want - self.correction).abs() / (SLEW_FREE_PPM * 1e-6);
        let urge = (behind * behind).max(off * off);
        let slew = self.params.slew_ppm_per_s * 1e-6 * urge.clamp(1.0, 200.0) * dt;
        self.correction += (want - self.correction).clamp(-slew, slew);
        self.correction
    }

    /// Sets the time over which a level error is paid back and the slew within the level
    /// band (see [`DriftParams`]); non-finite or non-positive values are ignored.
    pub fn set_pace(&mut self, level_time_s: f64, slew_ppm_per_s: f64) {
        if level_time_s.is_finite() && level_time_s > 0.0 {
            self.params.level_time_s = level_time_s;
        }
        if slew_ppm_per_s.is_finite() && slew_ppm_per_s > 0.0 {
            self.params.slew_ppm_per_s = slew_ppm_per_s;
        }
    }

    /// The correction last returned.
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// The level last measured, frames.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The drift estimate, ppm (positive: the sender's clock is faster).
    pub fn drift_ppm(&self) -> f64 {
        self.estimate * 1e6
    }

    /// Whether both clocks' lines exist (the estimate is measured, not carried over).
    pub fn locked(&self) -> bool {
        self.arrivals.skew().is_some() && self.playout.skew().is_some()
    }

    fn refresh_estimate(&mut self) {
        // Once measured, the estimate outlives a restart of the fits (a stall does not change
        // the clocks): a restarted fit's first slopes, a second or two of points, are tens of
        // ppm off where the window before the stall was within one, however small their
        // uncertainty claims to be. They replace the estimate once they are as certain as it
        // was (or as certain as a ppm). Meanwhile the level term steers out whatever error
        // the held estimate has (a device replaced by another with another clock).
        let restarts = self.step_restarts();
        if restarts != self.seen_restarts {
            self.seen_restarts = restarts;
            self.hold = self.measured;
        }
        let (Some(a), Some(p)) = (self.arrivals.skew(), self.playout.skew()) else {
            return;
        };
        let new = (1.0 + a) / (1.0 + p) - 1.0;
        let uncertainty = match (self.arrivals.uncertainty(), self.playout.uncertainty()) {
            (Some(ua), Some(up)) => ua + up,
            _ => f64::INFINITY,
        };
        if self.hold {
            if uncertainty > self.estimate_uncertainty.max(HELD_PPM * 1e-6) {
                return;
            }
            self.hold = false;
        }
        self.estimate = new;
        self.estimate_uncertainty = uncertainty;
        self.measured = true;
    }

    /// Takes the estimate as the correction at once, without gliding: for a receiver that
    /// has played nothing yet (the glide is for what is heard).
    pub fn take_estimate(&mut self) {
        self.refresh_estimate();
        if self.measured {
            self.correction = self.estimate;
        }
    }

    /// Whether the estimate can be taken as it is: both lines exist and their slopes are
    /// certain to [`TRUST_PPM`] (on a clean link, at once; through jitter, only after a while:
    /// until then the correction glides towards the estimate as it improves).
    pub fn trusted(&self) -> bool {
        match (self.arrivals.uncertainty(), self.playout.uncertainty()) {
            (Some(a), Some(p)) => a + p <= TRUST_PPM * 1e-6,
            _ => false,
        }
    }

    /// Whether the drift has been measured at least once (since the controller was built).
    pub fn measured(&self) -> bool {
        self.measured
    }

    /// Fits restarted on a step, both clocks.
    pub fn step_restarts(&self) -> u64 {
        self.arrivals.restarts() + self.playout.restarts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const RATE: u32 = 48_000;
    /// How late the playback thread may wake, seconds (a SCHED_FIFO thread on an isolated
    /// core; the simulated rig has none).
    const WAKE_S: f64 = 0.000_05;

    /// A sender `drift_ppm` fast sending 128-frame packets through a link with uniform jitter
    /// up to `jitter_ms`, a device taking 256-frame periods with wake-ups up to [`WAKE_S`] late,
    /// and a buffer drained at `1 + correction`. Returns (estimate error ppm at `at_s`, worst
    /// level error after half the run, frames).
    fn run_with(
        params: DriftParams,
        seed: u64,
        drift_ppm: f64,
        jitter_ms: f64,
        seconds: f64,
        at_s: f64,
    ) -> (f64, f64, f64) {
        run_stalling(
            params,
            seed,
            drift_ppm,
            jitter_ms,
            seconds,
            at_s,
            (f64::INFINITY, false),
        )
        .0
    }

    /// [`run_with`], the receiver stalling at `stall_s` (both fits restart), or with `xrun`
    /// the playback device underrunning then (it is primed again and its fit restarts);
    /// also returns the largest estimate error from the stall on, ppm, and whether both
    /// clocks were measured again by the end.
    fn run_stalling(
        params: DriftParams,
        seed: u64,
        drift_ppm: f64,
        jitter_ms: f64,
        seconds: f64,
        at_s: f64,
        (stall_s, xrun): (f64, bool),
    ) -> ((f64, f64, f64), f64, bool) {
        let mut c = DriftController::new(RATE, params);
        let mut stalled = false;
        let mut after_stall: f64 = 0.0;
        let mut rng = Rng::new(seed);
        let r = RATE as f64;
        let send_dt = 128.0 / (r * (1.0 + drift_ppm * 1e-6));
        let play_dt = 256.0 / r;
        let (mut t_send, mut sent) = (0.0f64, 0i64);
        let mut t_play = 0.003;
        let mut position = -960.0;
        let mut played = 0u64;
        let mut err_at = f64::NAN;
        let mut worst: f64 = 0.0;
        let mut newest = 0i64;
        while t_play < seconds {
            while t_send <= t_play {
                sent += 128;
                let arrive = t_send + 0.0005 + rng.next_f64() * jitter_ms * 1e-3;
                // In-order delivery is enough here: arrivals are what the fit sees.
                if sent > newest {
                    newest = sent;
                    c.on_arrival((arrive * 1e9) as u64, sent);
                }
                t_send += send_dt;
            }
            if t_play >= stall_s {
                if !stalled {
                    stalled = true;
                    if xrun {
                        // The device underran and was primed again with a whole buffer at
                        // once (three periods): its count steps by a buffer, 16 ms, under
                        // what a stall would show.
                        played += 3 * 256;
                        c.restart_playout();
                    } else {
                        c.restart_clocks();
                    }
                }
                after_stall = after_stall.max((c.drift_ppm() - drift_ppm).abs());
            }
            let wake = t_play + rng.next_f64() * WAKE_S;
            c.on_playout((wake * 1e9) as u64, played);
            let corr = c.update(
                (wake * 1e9) as u64,
                position,
                newest as f64 - position,
                960.0,
                0.0,
                play_dt,
            );
            position += 256.0 * (1.0 + corr);
            played += 256;
            t_play += play_dt;
            if err_at.is_nan() && t_play >= at_s {
                err_at = c.drift_ppm() - drift_ppm;
            }
            if t_play > seconds / 2.0 {
                // The level against the true (jitter-free) arrivals.
                // (A packet carries the 128 frames up to its send time.)
                let truth = (t_play * r * (1.0 + drift_ppm * 1e-6)) + 128.0 - position;
                worst = worst.max((truth - 960.0 - 0.0005 * r).abs());
            }
        }
        (
            (err_at, worst, c.drift_ppm() - drift_ppm),
            after_stall,
            c.locked(),
        )
    }

    #[test]
    fn locks_within_a_ppm_in_five_seconds_on_a_clean_link() {
        for seed in 1..10 {
            for ppm in [-500.0, -100.0, -10.0, 0.0, 10.0, 100.0, 500.0] {
                let (at5, _, _) = run_with(DriftParams::default(), seed, ppm, 0.0, 6.0, 5.0);
                assert!(at5.abs() < 1.0, "{ppm} ppm: off by {at5:.3} ppm at 5 s");
            }
        }
    }

    #[test]
    fn locks_within_a_ppm_in_twenty_seconds_with_5_ms_of_jitter_and_holds_the_level() {
        for (seed, ppm) in [
            (1, -500.0),
            (2, -100.0),
            (3, -10.0),
            (4, 10.0),
            (5, 100.0),
            (6, 500.0),
        ] {
            let (at20, worst, end) = run_with(DriftParams::default(), seed, ppm, 5.0, 200.0, 20.0);
            assert!(at20.abs() < 1.0, "{ppm} ppm: off by {at20:.3} ppm at 20 s");
            assert!(end.abs() < 0.5, "{ppm} ppm: off by {end:.3} ppm at the end");
            assert!(worst < 12.0, "{ppm} ppm: level off by {worst:.1} frames");
        }
    }

    #[test]
    fn a_step_restarts_the_fit_and_keeps_the_estimate() {
        let p = DriftParams::default();
        let mut f = EnvelopeFit::new(RATE, &p);
        let mut t = 0u64;
        let mut frames = 0i64;
        for _ in 0..2000 {
            f.observe(t, frames);
            t += 5_333_333;
            frames += 256;
        }
        assert!(f.skew().unwrap().abs() < 1e-6);
        // An xrun: 100 ms of frames never taken.
        t += 100_000_000;
        for _ in 0..2000 {
            f.observe(t, frames);
            t += 5_333_333;
            frames += 256;
        }
        assert_eq!(f.restarts(), 1);
        assert!(f.skew().unwrap().abs() < 1e-6);
    }

    #[test]
    fn after_a_stall_or_an_xrun_the_clocks_are_measured_again_and_the_estimate_kept_meanwhile() {
        // The restarted fits' first slopes (a second or two of points) are tens of ppm off;
        // the estimate measured over the window before the stall is not. The fits come back
        // within seconds however long the stream has run.
        for (seed, ppm, jitter_ms) in [
            (11, 100.0, 5.0),
            (12, -100.0, 0.1),
            (13, 500.0, 0.02),
            (14, 10.0, 0.0),
        ] {
            for xrun in [false, true] {
                let ((_, _, end), worst, locked) = run_stalling(
                    DriftParams::default(),
                    seed,
                    ppm,
                    jitter_ms,
                    100.0,
                    20.0,
                    (90.0, xrun),
                );
                let what = if xrun { "xrun" } else { "stall" };
                assert!(locked, "{ppm} ppm, {what}: not measured again in 10 s");
                assert!(
                    worst < 1.0,
                    "{ppm} ppm, {what}: off by {worst:.3} ppm after"
                );
                assert!(
                    end.abs() < 1.0,
                    "{ppm} ppm, {what}: off by {end:.3} ppm at the end"
                );
            }
        }
    }

    #[test]
    fn ignores_garbage_input() {
        let mut c = DriftController::new(RATE, DriftParams::default());
        assert_eq!(c.update(0, f64::NAN, 0.0, 0.0, 0.0, 0.01), 0.0);
        assert_eq!(c.update(0, 1.0, 0.0, 0.0, 0.0, 0.0), 0.0);
        let big = c.update(0, 0.0, 1e12, 0.0, 0.0, 1.0);
        assert!(big <= 2000e-6 + 1e-12);
    }
}
