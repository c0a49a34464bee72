//! When the source's frames were captured ([`CaptureTimes`]): a closed-form clock, none at
//! all, or a recorded history; what the analyzer anchors positions and latency to.
//!
//! Not realtime code: [`CaptureHistory::new`] allocates its ring, recording into it does not.

/// When the source's frames were captured: what the analyzer needs to anchor positions and
/// measure latency.
pub trait CaptureTimes {
    /// Device frames captured by time `t` (seconds), i.e. the counter of the next frame.
    fn frames_at(&self, t: f64) -> f64;
    /// The time the analog world reached device frame `n`, if known.
    fn time_of(&self, n: f64) -> Option<f64>;
}

/// A capture clock known in closed form: frame 0 at `t0`, `rate` frames per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearCapture {
    /// Time of frame 0, seconds.
    pub t0: f64,
    /// True rate, frames per second.
    pub rate: f64,
}

impl CaptureTimes for LinearCapture {
    fn frames_at(&self, t: f64) -> f64 {
        ((t - self.t0) * self.rate).floor().max(0.0)
    }

    fn time_of(&self, n: f64) -> Option<f64> {
        (n >= 0.0).then(|| self.t0 + n / self.rate)
    }
}

/// No capture times known (the source is in another process): gaps are still found, latency
/// is not measured, positions are counted from an arbitrary lap.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Unanchored;

impl CaptureTimes for Unanchored {
    fn frames_at(&self, _t: f64) -> f64 {
        // Any lap will do: the signal repeats every 65536 frames.
        65_536.0 * 1_000.0 + 65_535.0
    }

    fn time_of(&self, _n: f64) -> Option<f64> {
        None
    }
}

/// Capture times of recent capture periods, as the simulator recorded them.
pub struct CaptureHistory {
    period: u64,
    /// Time at which the period ending at frame `(k+1)·period` was complete.
    times: Vec<f64>,
    rates: Vec<f64>,
    ticks: u64,
}

impl CaptureHistory {
    /// Room for `len` periods of `period` frames.
    pub fn new(period: usize, len: usize) -> CaptureHistory {
        CaptureHistory {
            period: period as u64,
            times: vec![f64::NAN; len],
            rates: vec![f64::NAN; len],
            ticks: 0,
        }
    }

    /// Records that capture period number `ticks()` was complete at `t` with clock `rate`.
    pub fn record(&mut self, t: f64, rate: f64) {
        let i = (self.ticks % self.times.len() as u64) as usize;
        self.times[i] = t;
        self.rates[i] = rate;
        self.ticks += 1;
    }

    /// Periods recorded.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Frames captured so far (frame counter of the next frame).
    pub fn frames(&self) -> u64 {
        self.ticks * self.period
    }

    /// The time the analog world reached device frame `n`, if it is still in the history.
    pub fn time_of_frame(&self, n: f64) -> Option<f64> {
        if n < 0.0 {
            return None;
        }
        let k = (n as u64) / self.period;
        if k >= self.ticks || self.ticks - k > self.times.len() as u64 {
            return None;
        }
        let i = (k % self.times.len() as u64) as usize;
        let end = ((k + 1) * self.period) as f64;
        Some(self.times[i] - (end - n) / self.rates[i])
    }
}

impl CaptureTimes for CaptureHistory {
    fn frames_at(&self, _t: f64) -> f64 {
        self.frames() as f64
    }

    fn time_of(&self, n: f64) -> Option<f64> {
        self.time_of_frame(n)
    }
}
