//! The clock model: the sender's clock as a line (offset and rate) against the receiver's,
//! fitted to the time exchanges.
//!
//! Each exchange gives two one-way samples of the offset θ (sender clock − receiver clock):
//! forward `t2 − t1 = θ + d→` and backward `t3 − t4 = θ − d←`, where the one-way delays
//! `d→`, `d←` are a path's fixed delay plus whatever queueing, scheduling and interrupt
//! coalescing added on that pass. Those only ever add delay, so the forward samples lie on or
//! *above* the line θ + (fixed delay →) and the backward ones on or *below* θ − (fixed delay ←):
//! the line is the forward samples' lower envelope and the backward samples' upper envelope,
//! and their mean is θ plus half the paths' asymmetry (which no exchange can see).
//!
//! This is minimum-delay filtering done per direction: a sample counts when its own pass was
//! quick, whatever the other pass did, so far more samples count than when both passes of an
//! exchange must be quick at once (a filter on the round trip). As in [`crate::drift`], each
//! direction keeps its best sample of every block (an eighth of a second) over a sliding
//! window, and their lower convex hull (the backward samples negated); the two lines share one
//! slope, chosen as the linear-programming estimate: the slope that brings both envelopes
//! closest to all of their points while no point lies beyond its line (a convex piecewise
//! linear function of the slope, least at one of the hulls' edges).
//!
//! The error estimate is the mean height of each direction's points over its line divided by
//! their number (how far the lowest of them would typically sit above the true line),
//! summed over both directions and grown with the distance from the points' mean time. It
//! leaves out the unknowable asymmetry.
//!
//! **Steps.** A sample beyond its line on the side where delay cannot put it (a forward sample
//! under the floor, a backward one over the ceiling) by more than [`ClockParams::step_ns`] means
//! the clock stepped (the sender's machine restarted, another sender took over): the fit
//! restarts, counted ([`ClockModel::restarts`]) when the model was locked. The rate is kept:
//! the new fit uses it as long as its points are consistent with it and span less time than
//! the points it came from (a rebooted sender has the same crystal; another sender taking
//! over shows a different rate within seconds). Before the lock the threshold is
//! [`ClockParams::loose_step_ns`]. Samples
//! above their line by [`ClockParams::step_above_ns`] for [`ClockParams::step_above_for_ns`] on
//! end (a path that got slower for good) restart it as well.
//!
//! Realtime contract: no allocation, no syscall, no formatting. Points and hulls live in
//! fixed-capacity arrays; an exchange costs a pass over at most [`MAX_POINTS`] points per
//! direction.

pub use super::envelope::MAX_POINTS;
use super::envelope::{Envelope, Point};

/// Local times of points are rebased when they reach this many ns from the origin, so they
/// stay exact in an `f64`.
const REBASE_NS: i64 = 1 << 38;

/// Tuning of the clock model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockParams {
    /// Length of a block, ns: each direction keeps its best sample of each.
    pub block_ns: u64,
    /// Span of the points kept, ns (at most [`MAX_POINTS`] blocks).
    pub window_ns: u64,
    /// Span the points must cover before the rate is fitted and the model can lock, ns.
    pub min_span_ns: u64,
    /// A sample this far (ns) beyond its line on the side delay cannot put it is a step, once
    /// the model is locked.
    pub step_ns: u64,
    /// The same before the model is locked (its line is still rough).
    pub loose_step_ns: u64,
    /// Samples of one direction this far (ns) above their line ...
    pub step_above_ns: u64,
    /// ... for this long (ns) are a step.
    pub step_above_for_ns: u64,
    /// The model is locked when its error estimate is at most this, ns.
    pub lock_error_ns: u64,
}

impl Default for ClockParams {
    fn default() -> Self {
        ClockParams {
            block_ns: 125_000_000,
            window_ns: 60_000_000_000,
            min_span_ns: 500_000_000,
            step_ns: 1_000_000,
            loose_step_ns: 20_000_000,
            step_above_ns: 5_000_000,
            step_above_for_ns: 4_000_000_000,
            lock_error_ns: 100_000,
        }
    }
}

/// The fitted line: θ(t) = `c + s·t` (t and θ from the origin), and how good it is.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Line {
    c: f64,
    s: f64,
    /// Forward floor and backward (negated) floor at t = 0.
    floor_f: f64,
    floor_b: f64,
    /// Error estimate at the newest point, ns (`None` before the points span enough).
    error: Option<f64>,
}

/// What became of one exchange in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Taken into the fit.
    Taken,
    /// The clock stepped: the fit restarted with this exchange.
    Restarted,
    /// Older than the newest point (a reordered response): left out.
    Dropped,
}

/// The model of the sender's clock (see the module docs).
#[derive(Clone, Debug)]
pub struct ClockModel {
    params: ClockParams,
    /// Receiver clock and offset of the origin.
    origin: Option<(u64, i128)>,
    fwd: Envelope,
    bwd: Envelope,
    line: Option<Line>,
    /// The slope used before the points span enough (the last fitted one) ...
    held_slope: f64,
    /// ... and the span of the points it was fitted to, ns.
    held_span: f64,
    /// Restarted after a step: the held slope is kept while the new points are consistent
    /// with it and span less than it was fitted to.
    holding: bool,
    above_f: Option<u64>,
    above_b: Option<u64>,
    restarts: u64,
    newest: u64,
}

impl ClockModel {
    /// An empty model.
    pub fn new(params: ClockParams) -> ClockModel {
        let mut m = ClockModel {
            params,
            origin: None,
            fwd: Envelope::default(),
            bwd: Envelope::default(),
            line: None,
            held_slope: 0.0,
            held_span: 0.0,
            holding: false,
            above_f: None,
            above_b: None,
            restarts: 0,
            newest: 0,
        };
        m.reset();
        m
    }

    /// The tuning.
    pub fn params(&self) -> &ClockParams {
        &self.params
    }

    /// Forgets every exchange (the rate is kept as a first guess).
    pub fn reset(&mut self) {
        self.origin = None;
        self.fwd.clear();
        self.bwd.clear();
        self.line = None;
        self.above_f = None;
        self.above_b = None;
    }

    /// Times the fit restarted on a step of a locked model.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Takes one exchange: `t1`, `t4` on the receiver's clock, `t2`, `t3` on the sender's.
    /// The caller has checked that the delay is not negative.
    pub fn observe(&mut self, t1: u64, t2: u64, t3: u64, t4: u64) -> Observed {
        let mid = t1 / 2 + t4 / 2 + (t1 % 2 + t4 % 2) / 2;
        let fwd = t2 as i128 - t1 as i128;
        let bwd = t3 as i128 - t4 as i128;
        let mut outcome = Observed::Taken;
        if let (Some((t0, y0)), Some(line)) = (self.origin, self.line) {
            let t = (mid as i128 - t0 as i128) as f64;
            let above_f = (fwd - y0) as f64 - (line.floor_f + line.s * t);
            let above_b = (y0 - bwd) as f64 - (line.floor_b - line.s * t);
            let locked = self.locked();
            if self.is_step(mid, above_f, above_b) {
                // Before the lock a rough line may be beaten by one quick exchange: the fit
                // starts again, but only a locked model's step counts.
                self.restarts += locked as u64;
                self.reset();
                self.holding = locked;
                outcome = Observed::Restarted;
            }
        }
        let (t0, y0) = *self.origin.get_or_insert((mid, (fwd + bwd) / 2));
        let t = clamp_i64(mid as i128 - t0 as i128);
        if self.fwd.pts.back().is_some_and(|p| t < p.t) {
            return Observed::Dropped;
        }
        let block = self.params.block_ns.min(i64::MAX as u64) as i64;
        let s = self.line.map_or(self.held_slope, |l| l.s);
        self.fwd.add(
            Point {
                t,
                y: clamp_i64(fwd - y0),
            },
            block,
            s,
        );
        self.bwd.add(
            Point {
                t,
                y: clamp_i64(y0 - bwd),
            },
            block,
            -s,
        );
        self.newest = mid;
        let window = self.params.window_ns.min(i64::MAX as u64) as i64;
        self.fwd.trim(t, window);
        self.bwd.trim(t, window);
        if t >= REBASE_NS {
            self.rebase();
        }
        self.fit();
        outcome
    }

    /// Whether a sample `above_f` over the forward line and `above_b` over the (negated)
    /// backward line at `now` says the clock stepped.
    fn is_step(&mut self, now: u64, above_f: f64, above_b: f64) -> bool {
        let p = &self.params;
        let below = if self.locked() {
            p.step_ns
        } else {
            p.loose_step_ns
        } as f64;
        if above_f < -below || above_b < -below {
            return true;
        }
        let above = p.step_above_ns as f64;
        let for_ns = p.step_above_for_ns;
        let track = |since: &mut Option<u64>, h: f64| {
            if h > above {
                let s = *since.get_or_insert(now);
                now.saturating_sub(s) >= for_ns
            } else {
                *since = None;
                false
            }
        };
        let f = track(&mut self.above_f, above_f);
        let b = track(&mut self.above_b, above_b);
        f || b
    }

    /// Moves the origin to the oldest point, so local times stay small.
    fn rebase(&mut self) {
        let (Some((t0, y0)), Some(oldest)) = (self.origin, self.fwd.pts.front().copied()) else {
            return;
        };
        let s = self.line.map_or(self.held_slope, |l| l.s);
        let dt = oldest.t;
        if dt <= 0 {
            return;
        }
        let dy = (s * dt as f64).round() as i64;
        self.fwd.shift(dt, dy);
        self.bwd.shift(dt, -dy);
        self.origin = Some((t0 + dt as u64, y0 + dy as i128));
    }

    fn fit(&mut self) {
        self.fwd.rebuild();
        self.bwd.rebuild();
        let (nf, nb) = (self.fwd.pts.len(), self.bwd.pts.len());
        if nf == 0 || nb == 0 {
            self.line = None;
            return;
        }
        let first = self.fwd.pts.front().map_or(0, |p| p.t);
        let last = self.fwd.pts.back().map_or(0, |p| p.t);
        let span = (last - first) as f64;
        let spans = span >= self.params.min_span_ns as f64 && span > 0.0;
        let mut s = self.held_slope;
        if spans {
            let fitted = self.best_slope().unwrap_or(self.held_slope);
            self.holding &= span < self.held_span && self.consistent(fitted);
            if !self.holding {
                s = fitted;
                self.held_slope = s;
                self.held_span = span;
            }
        }
        let floor_f = self.fwd.floor(s);
        let floor_b = self.bwd.floor(-s);
        let error = spans.then(|| {
            let per_f = self.fwd.gap(s) / (nf * nf) as f64;
            let per_b = self.bwd.gap(-s) / (nb * nb) as f64;
            let mean_t = self.fwd.sum_t / nf as f64;
            (per_f + per_b) * (1.0 + 2.0 * (last as f64 - mean_t).abs() / span)
        });
        self.line = Some(Line {
            c: (floor_f - floor_b) / 2.0,
            s,
            floor_f,
            floor_b,
            error,
        });
    }

    /// Whether the points are consistent with the held slope as well as with `fitted`, their
    /// own: the held line's total height over the points exceeds the fitted one's by at most
    /// two mean heights (for exponential jitter, a log-likelihood ratio of at most 2).
    fn consistent(&self, fitted: f64) -> bool {
        let cost = |s: f64| self.fwd.gap(s) + self.bwd.gap(-s);
        let n = (self.fwd.pts.len() + self.bwd.pts.len()) as f64;
        let best = cost(fitted);
        cost(self.held_slope) - best <= 2.0 * best / n
    }

    /// The slope that minimises both envelopes' total height over their lines: a convex
    /// piecewise-linear function, least at one of the hulls' edges.
    fn best_slope(&self) -> Option<f64> {
        let cost = |s: f64| self.fwd.gap(s) + self.bwd.gap(-s);
        let candidates = self
            .fwd
            .edge_slopes()
            .chain(self.bwd.edge_slopes().map(|k| -k));
        let mut best: Option<(f64, f64)> = None;
        for s in candidates {
            let c = cost(s);
            if c.is_finite() && best.is_none_or(|(_, b)| c < b) {
                best = Some((s, c));
            }
        }
        best.map(|(s, _)| s)
    }

    /// Whether the points span enough and the error estimate is within
    /// [`ClockParams::lock_error_ns`].
    pub fn locked(&self) -> bool {
        self.error_ns()
            .is_some_and(|e| e <= self.params.lock_error_ns)
    }

    /// The error estimate at the newest exchange, ns (without the paths' asymmetry), once
    /// the points span [`ClockParams::min_span_ns`].
    pub fn error_ns(&self) -> Option<u64> {
        let e = self.line?.error?;
        Some(if e.is_finite() {
            e.clamp(0.0, u64::MAX as f64) as u64
        } else {
            u64::MAX
        })
    }

    /// Whether there is a model at all (at least one exchange since the last restart).
    pub fn has_model(&self) -> bool {
        self.line.is_some()
    }

    /// The sender's clock rate against the receiver's, less one, ppm (positive: the
    /// sender's clock runs fast).
    pub fn rate_ppm(&self) -> Option<f64> {
        Some(self.line?.s * 1e6)
    }

    /// The receiver-clock time of the newest exchange taken.
    pub fn newest(&self) -> Option<u64> {
        self.origin.map(|_| self.newest)
    }

    /// The offset (sender clock − receiver clock) at receiver time `local`, ns.
    pub fn offset_at(&self, local: u64) -> Option<i128> {
        let (t0, y0) = self.origin?;
        let l = self.line?;
        let t = (local as i128 - t0 as i128) as f64;
        Some(y0 + (l.c + l.s * t).round() as i128)
    }

    /// The sender-clock time at receiver time `local`.
    pub fn local_to_sender(&self, local: u64) -> Option<u64> {
        u64::try_from(local as i128 + self.offset_at(local)?).ok()
    }

    /// The receiver-clock time at sender time `sender`.
    pub fn sender_to_local(&self, sender: u64) -> Option<u64> {
        let (t0, y0) = self.origin?;
        let l = self.line?;
        let d = sender as i128 - t0 as i128 - y0;
        let x = (d as f64 - l.c) / (1.0 + l.s);
        if !x.is_finite() {
            return None;
        }
        u64::try_from(t0 as i128 + x.round() as i128).ok()
    }
}

fn clamp_i64(x: i128) -> i64 {
    x.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exchange at receiver time `t` over paths of `fwd`/`bwd` ns, the sender's clock at
    /// `offset + rate·t`.
    fn exchange(
        m: &mut ClockModel,
        t: u64,
        offset: f64,
        rate: f64,
        fwd: u64,
        bwd: u64,
    ) -> Observed {
        let sender = |l: u64| (l as f64 * (1.0 + rate) + offset) as u64;
        let t2 = sender(t + fwd);
        let t3 = t2 + 20_000;
        let t4 = t + fwd + 20_000 + bwd;
        m.observe(t, t2, t3, t4)
    }

    #[test]
    fn a_clean_path_gives_the_offset_and_rate_exactly() {
        let mut m = ClockModel::new(ClockParams::default());
        assert!(m.sender_to_local(5).is_none() && !m.locked());
        let (offset, rate) = (3.0e12, 50e-6);
        let t0 = 1_000_000_000_000u64;
        for k in 0..200u64 {
            exchange(&mut m, t0 + k * 25_000_000, offset, rate, 400_000, 400_000);
        }
        assert!(m.locked(), "{:?}", m.error_ns());
        assert!((m.rate_ppm().unwrap() - 50.0).abs() < 0.01);
        let now = t0 + 200 * 25_000_000;
        let truth = (now as f64 * (1.0 + rate) + offset) as u64;
        let est = m.local_to_sender(now).unwrap();
        assert!((est as i128 - truth as i128).abs() < 100, "{est} {truth}");
        let back = m.sender_to_local(truth).unwrap();
        assert!((back as i128 - now as i128).abs() < 100);
        // Asymmetry shows as half of it, as it must.
        let mut m = ClockModel::new(ClockParams::default());
        for k in 0..200u64 {
            exchange(&mut m, t0 + k * 25_000_000, offset, 0.0, 1_400_000, 400_000);
        }
        let err = m.offset_at(now).unwrap() - offset as i128;
        assert!((err - 500_000).abs() < 100, "{err}");
    }

    #[test]
    fn a_step_restarts_the_fit_and_the_rate_is_kept() {
        let mut m = ClockModel::new(ClockParams::default());
        let t0 = 5_000_000_000u64;
        for k in 0..400u64 {
            let o = exchange(&mut m, t0 + k * 25_000_000, 1e9, 20e-6, 300_000, 300_000);
            assert_ne!(o, Observed::Restarted);
        }
        assert!(m.locked());
        let t = t0 + 400 * 25_000_000;
        assert_eq!(
            exchange(&mut m, t, 1e9 - 5e6, 20e-6, 300_000, 300_000),
            Observed::Restarted
        );
        assert_eq!(m.restarts(), 1);
        assert!(
            (m.rate_ppm().unwrap() - 20.0).abs() < 0.1,
            "the rate is kept"
        );
        let truth = 1e9 - 5e6 + t as f64 * (1.0 + 20e-6);
        let err = m.local_to_sender(t).unwrap() as f64 - truth;
        assert!(err.abs() < 1_000.0, "{err}");
        // A step up shows on the backward side at once.
        for k in 1..100u64 {
            exchange(
                &mut m,
                t + k * 25_000_000,
                1e9 - 5e6,
                20e-6,
                300_000,
                300_000,
            );
        }
        let t = t + 100 * 25_000_000;
        assert_eq!(
            exchange(&mut m, t, 1e9 + 7e6, 20e-6, 300_000, 300_000),
            Observed::Restarted
        );
    }

    #[test]
    fn another_sender_taking_over_brings_its_own_rate() {
        let mut m = ClockModel::new(ClockParams::default());
        let mut t = 0u64;
        let mut rng = crate::rng::Rng::new(4);
        let mut jitter = || 300_000 + rng.next_u64() % 500_000;
        for _ in 0..1000 {
            t += 25_000_000;
            exchange(&mut m, t, 0.0, 30e-6, jitter(), jitter());
        }
        assert!((m.rate_ppm().unwrap() - 30.0).abs() < 0.5);
        let mut restarted = 0;
        for _ in 0..400 {
            t += 25_000_000;
            let o = exchange(&mut m, t, -2e9, -40e-6, jitter(), jitter());
            restarted += (o == Observed::Restarted) as u32;
        }
        assert_eq!((restarted, m.restarts()), (1, 1));
        let rate = m.rate_ppm().unwrap();
        assert!((rate + 40.0).abs() < 2.0, "{rate} ppm");
        let truth = -2e9 + t as f64 * (1.0 - 40e-6);
        let err = m.local_to_sender(t).unwrap() as f64 - truth;
        assert!(err.abs() < 20_000.0, "{err}");
    }

    #[test]
    fn a_path_that_gets_slower_for_good_restarts_after_a_while() {
        let mut m = ClockModel::new(ClockParams::default());
        let mut t = 0u64;
        for _ in 0..400 {
            t += 25_000_000;
            exchange(&mut m, t, 0.0, 0.0, 300_000, 300_000);
        }
        let mut restarted_after = None;
        for k in 0..400u64 {
            t += 25_000_000;
            if exchange(&mut m, t, 0.0, 0.0, 10_300_000, 300_000) == Observed::Restarted {
                restarted_after = Some(k);
                break;
            }
        }
        let k = restarted_after.expect("a restart");
        assert!((155..=165).contains(&k), "{k}");
        // The new path's asymmetry, 5 ms of half.
        t += 25_000_000;
        exchange(&mut m, t, 0.0, 0.0, 10_300_000, 300_000);
        let err = m.offset_at(t).unwrap();
        assert!((err - 5_000_000).abs() < 1_000, "{err}");
    }

    #[test]
    fn days_of_exchanges_stay_exact() {
        let p = ClockParams::default();
        let mut m = ClockModel::new(p);
        let rate = -80e-6;
        let mut t = 7u64;
        for _ in 0..200_000 {
            t += 500_000_000;
            exchange(&mut m, t, 0.0, rate, 1_000_000, 1_000_000);
        }
        let truth = t as f64 * (1.0 + rate);
        let err = m.local_to_sender(t).unwrap() as f64 - truth;
        assert!(err.abs() < 100.0, "{err} after {} s", t / 1_000_000_000);
        assert_eq!(m.restarts(), 0);
    }
}
