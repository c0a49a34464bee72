//! One direction's samples of the clock offset, a block's best each, over a sliding window,
//! and their lower convex hull: the floor no sample lies below (see [`super::model`]).
//!
//! Realtime contract: fixed-capacity arrays, no allocation, no syscall; a rebuild is one pass
//! over at most [`MAX_POINTS`] points.

use heapless::{Deque, Vec as HVec};

/// Most blocks a direction holds.
pub const MAX_POINTS: usize = 512;

/// One block's best sample: local time and offset sample, ns from the model's origin (the
/// backward samples negated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Point {
    pub(super) t: i64,
    pub(super) y: i64,
}

/// One direction's points and their lower hull.
#[derive(Clone, Debug, Default)]
pub(super) struct Envelope {
    pub(super) pts: Deque<Point, MAX_POINTS>,
    hull: HVec<Point, MAX_POINTS>,
    block_end: i64,
    pub(super) sum_t: f64,
    sum_y: f64,
}

impl Envelope {
    pub(super) fn clear(&mut self) {
        self.pts.clear();
        self.hull.clear();
        self.block_end = i64::MIN;
    }

    /// Adds `p`, keeping the better (lower after taking the line of slope `s` off) of two
    /// samples in one block; a sample older than the newest point is dropped.
    pub(super) fn add(&mut self, p: Point, block_ns: i64, s: f64) {
        if let Some(last) = self.pts.back_mut() {
            if p.t < last.t {
                return;
            }
            if p.t < self.block_end {
                let score = |q: &Point| q.y as f64 - s * q.t as f64;
                if score(&p) < score(last) {
                    *last = p;
                }
                return;
            }
        }
        if self.pts.is_full() {
            self.pts.pop_front();
        }
        let _ = self.pts.push_back(p);
        self.block_end = p.t.saturating_add(block_ns);
    }

    pub(super) fn trim(&mut self, newest: i64, window_ns: i64) {
        while self
            .pts
            .front()
            .is_some_and(|f| newest.saturating_sub(f.t) > window_ns)
        {
            self.pts.pop_front();
        }
    }

    pub(super) fn shift(&mut self, dt: i64, dy: i64) {
        for p in self.pts.iter_mut() {
            p.t -= dt;
            p.y -= dy;
        }
        self.block_end = self.block_end.saturating_sub(dt);
    }

    /// The lower hull (monotone chain; the points are in time order) and the sums.
    pub(super) fn rebuild(&mut self) {
        self.hull.clear();
        self.sum_t = 0.0;
        self.sum_y = 0.0;
        for &p in self.pts.iter() {
            self.sum_t += p.t as f64;
            self.sum_y += p.y as f64;
            while self.hull.len() >= 2 {
                let a = self.hull[self.hull.len() - 2];
                let b = self.hull[self.hull.len() - 1];
                let cross = (b.t - a.t) as i128 * (p.y - a.y) as i128
                    - (b.y - a.y) as i128 * (p.t - a.t) as i128;
                if cross <= 0 {
                    self.hull.pop();
                } else {
                    break;
                }
            }
            let _ = self.hull.push(p);
        }
    }

    /// The highest line of slope `s` no point lies below: its value at t = 0.
    pub(super) fn floor(&self, s: f64) -> f64 {
        self.hull
            .iter()
            .map(|p| p.y as f64 - s * p.t as f64)
            .fold(f64::INFINITY, f64::min)
    }

    /// Total height of the points over the line of slope `s` at its floor.
    pub(super) fn gap(&self, s: f64) -> f64 {
        let n = self.pts.len() as f64;
        if n == 0.0 {
            return 0.0;
        }
        self.sum_y - s * self.sum_t - n * self.floor(s)
    }

    pub(super) fn edge_slopes(&self) -> impl Iterator<Item = f64> + '_ {
        self.hull
            .windows(2)
            .map(|w| (w[1].y - w[0].y) as f64 / (w[1].t - w[0].t) as f64)
    }
}
