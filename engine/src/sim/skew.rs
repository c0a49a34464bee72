//! The skew between receivers: for every source frame that two or more receivers play, the
//! instant it leaves each receiver's DAC (virtual time), compared.
//!
//! Each receiver reports the frames it plays in sync, as the signal analyzer names them
//! (capture-device frame numbers, fractional where a resampler interpolated), with their DAC
//! instants ([`SkewMeter::played`]). A receiver's fractional positions are turned into the
//! instants at which it passed each whole frame, by linear interpolation between consecutive
//! played frames; bit-exact frames are taken at their own instant. The instants go into one ring
//! per receiver, indexed by frame number; a frame is compared once the most advanced receiver is
//! [`HOLD`] frames past it (by then every receiver that plays it has done so), then forgotten.
//! Receivers that did not play a frame in sync (a gap, not started yet) are left out of its
//! comparison; a frame played by fewer than two receivers is not compared.
//!
//! Per frame: each receiver's skew against receiver 0 (`t_r − t_0`, when receiver 0 played
//! it), and the spread (latest minus earliest of the receivers that played it). Their
//! magnitudes go into fixed log-linear histograms ([`SkewHistogram`]: 1 ns steps below 1 µs,
//! 1/1024 of the value above), so percentiles of a run of any length come out without
//! allocating; the signed extremes and mean are kept exactly. A series of at most
//! `points` points (the range of each receiver's skew and the largest spread over a stretch of
//! frames) follows them over time, for a plot.
//!
//! Everything is allocated in [`SkewMeter::new`]; reporting frames allocates nothing.

use super::config::MAX_RECEIVERS;

/// Ring length per receiver, frames (a power of two).
const RING: u64 = 1 << 16;
/// Frames behind the most advanced receiver at which a frame is compared: skews beyond this
/// (about 0.68 s at 48 kHz) are counted as `late_frames`, not measured.
pub const HOLD: u64 = RING / 2;
/// Sub-steps per power of two of the histogram.
const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;
/// Histogram bins: exact nanoseconds below `SUB`, then `SUB` per power of two up to 2^44 ns.
const BINS: usize = (SUB + (44 - SUB_BITS as u64) * SUB) as usize;

/// A histogram of magnitudes in nanoseconds: 1 ns steps below 1024 ns, then 1024 steps per
/// power of two (0.1 % of the value).
#[derive(Clone, Debug)]
pub struct SkewHistogram {
    bins: Vec<u64>,
    n: u64,
    max_ns: f64,
}

impl SkewHistogram {
    fn new() -> SkewHistogram {
        SkewHistogram {
            bins: vec![0; BINS],
            n: 0,
            max_ns: 0.0,
        }
    }

    fn bin(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let e = 63 - ns.leading_zeros() as u64;
        let i = SUB + (e - SUB_BITS as u64) * SUB + ((ns >> (e - SUB_BITS as u64)) & (SUB - 1));
        (i as usize).min(BINS - 1)
    }

    /// The lowest value of bin `i`, ns.
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let e = (i - SUB) / SUB + SUB_BITS as u64;
        let m = (i - SUB) % SUB;
        (SUB + m) << (e - SUB_BITS as u64)
    }

    fn add(&mut self, ns: f64) {
        let ns = ns.abs();
        self.bins[Self::bin(ns.round() as u64)] += 1;
        self.n += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Percentile `q` in [0, 1], µs: the lowest value of the bin holding it (exact below
    /// 1 µs, within 0.1 % above); NaN when empty.
    pub fn percentile_us(&self, q: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let want = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut acc = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            acc += c;
            if acc >= want {
                // Never above the largest value seen.
                return (Self::lower(i) as f64).min(self.max_ns) / 1000.0;
            }
        }
        self.max_ns / 1000.0
    }

    /// The largest value, µs (exact); NaN when empty.
    pub fn max_us(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.max_ns / 1000.0
        }
    }
}

/// One receiver's skew against receiver 0 over a run (after settling).
#[derive(Clone, Debug)]
pub struct ReceiverSkew {
    /// |skew| of the frames this receiver and receiver 0 both played.
    pub abs: SkewHistogram,
    /// Signed skew (`t_r − t_0`, positive: later), smallest, µs (NaN: none measured).
    pub min_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    sum_us: f64,
}

impl ReceiverSkew {
    fn new() -> ReceiverSkew {
        ReceiverSkew {
            abs: SkewHistogram::new(),
            min_us: f64::NAN,
            max_us: f64::NAN,
            sum_us: 0.0,
        }
    }

    fn add(&mut self, skew_s: f64) {
        let us = skew_s * 1e6;
        self.abs.add(skew_s * 1e9);
        // (`min`/`max` take the other value when one is NaN.)
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.sum_us += us;
    }

    /// Mean signed skew, µs (NaN: none measured).
    pub fn mean_us(&self) -> f64 {
        if self.abs.n == 0 {
            f64::NAN
        } else {
            self.sum_us / self.abs.n as f64
        }
    }
}

/// One point of the skew series: a stretch of compared frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkewPoint {
    /// Audio time of the stretch's first frame (its frame number over the nominal rate), s.
    pub t_s: f64,
    /// Each receiver's smallest skew against receiver 0 over the stretch, µs (NaN: none;
    /// receiver 0's own entry is 0 when it played).
    pub min_us: [f64; MAX_RECEIVERS],
    /// Each receiver's largest, µs.
    pub max_us: [f64; MAX_RECEIVERS],
    /// The largest spread (latest minus earliest receiver) of a frame in the stretch, µs.
    pub spread_us: f64,
}

impl SkewPoint {
    fn empty(t_s: f64) -> SkewPoint {
        SkewPoint {
            t_s,
            min_us: [f64::NAN; MAX_RECEIVERS],
            max_us: [f64::NAN; MAX_RECEIVERS],
            spread_us: f64::NAN,
        }
    }
}

/// What the skew meter measured.
#[derive(Clone, Debug)]
pub struct SkewReport {
    /// Receivers compared.
    pub receivers: usize,
    /// Frames played by two or more receivers and compared (after settling).
    pub frames_compared: u64,
    /// Frames a receiver played more than [`HOLD`] frames after the most advanced one:
    /// not compared.
    pub late_frames: u64,
    /// The spread per compared frame: latest minus earliest DAC instant.
    pub spread: SkewHistogram,
    /// Per receiver, against receiver 0 (receiver 0's own entry stays empty).
    pub per_receiver: Vec<ReceiverSkew>,
    /// Over time (the whole run, settling included).
    pub series: Vec<SkewPoint>,
}

/// Where one receiver is in its stream of played frames.
#[derive(Clone, Copy, Debug, Default)]
struct Follow {
    /// The previous in-sync frame: position and DAC instant.
    prev: Option<(f64, f64)>,
    /// The next whole frame to report (nothing below it is reported again).
    next_n: u64,
}

/// Pairs the frames several receivers play and measures their skew.
pub struct SkewMeter {
    receivers: usize,
    rate: f64,
    /// Frames from this one on count towards the statistics.
    settle_frame: u64,
    /// `tags[slot * receivers + r]`: the frame whose instant `times[..]` holds.
    tags: Vec<u64>,
    times: Vec<f64>,
    follow: [Follow; MAX_RECEIVERS],
    newest: Option<u64>,
    cursor: u64,
    /// Instants of one frame, per receiver (NaN: not played).
    scratch: [f64; MAX_RECEIVERS],
    report: SkewReport,
    series_every: u64,
    open: Option<SkewPoint>,
    open_until: u64,
}

impl SkewMeter {
    /// A meter for `receivers` receivers at `rate` frames per second, counting frames from
    /// `settle_s` seconds of audio on, with a series of about `points` points over
    /// `duration_s`.
    pub fn new(
        receivers: usize,
        rate: u32,
        settle_s: f64,
        duration_s: f64,
        points: usize,
    ) -> SkewMeter {
        let receivers = receivers.clamp(1, MAX_RECEIVERS);
        let rate = rate as f64;
        let points = points.max(1);
        SkewMeter {
            receivers,
            rate,
            settle_frame: (settle_s * rate).max(0.0) as u64,
            tags: vec![u64::MAX; RING as usize * receivers],
            times: vec![f64::NAN; RING as usize * receivers],
            follow: [Follow::default(); MAX_RECEIVERS],
            newest: None,
            cursor: 0,
            scratch: [f64::NAN; MAX_RECEIVERS],
            report: SkewReport {
                receivers,
                frames_compared: 0,
                late_frames: 0,
                spread: SkewHistogram::new(),
                per_receiver: (0..receivers).map(|_| ReceiverSkew::new()).collect(),
                series: Vec::with_capacity(points + 2),
            },
            series_every: ((duration_s * rate / points as f64).ceil() as u64).max(1),
            open: None,
            open_until: 0,
        }
    }

    /// Receiver `r` played the frame at source position `pos` (capture-device frames,
    /// fractional if interpolated) in sync, leaving its DAC at `t` seconds; `dt` is its frame
    /// spacing. Frames not reported (gaps) break the interpolation.
    pub fn played(&mut self, r: usize, pos: f64, t: f64, dt: f64) {
        if r >= self.receivers || pos.is_nan() || pos < 0.0 {
            return;
        }
        let f = self.follow[r];
        let continued = f.prev.filter(|&(p0, t0)| t - t0 <= 1.5 * dt && pos > p0);
        self.follow[r].prev = Some((pos, t));
        match continued {
            Some((p0, t0)) => {
                // Every whole frame passed since the previous one, at its interpolated instant.
                let mut n = (p0.floor() as u64 + 1).max(f.next_n);
                while n as f64 <= pos {
                    let tn = if n as f64 == pos {
                        t
                    } else {
                        t0 + (n as f64 - p0) / (pos - p0) * (t - t0)
                    };
                    self.record(r, n, tn);
                    n += 1;
                }
                self.follow[r].next_n = n;
            }
            None => {
                // After a gap (or at the start): a whole frame only.
                if pos.fract() == 0.0 && pos as u64 >= f.next_n {
                    self.record(r, pos as u64, t);
                    self.follow[r].next_n = pos as u64 + 1;
                }
            }
        }
    }

    fn record(&mut self, r: usize, n: u64, t: f64) {
        let newest = match self.newest {
            None => {
                self.cursor = n.saturating_sub(HOLD);
                n
            }
            Some(x) => x.max(n),
        };
        self.newest = Some(newest);
        if n < self.cursor {
            self.report.late_frames += 1;
            return;
        }
        let i = (n & (RING - 1)) as usize * self.receivers + r;
        self.tags[i] = n;
        self.times[i] = t;
        while self.cursor + HOLD < newest {
            self.compare(self.cursor);
            self.cursor += 1;
        }
    }

    /// Compares frame `n` across the receivers that played it.
    fn compare(&mut self, n: u64) {
        let base = (n & (RING - 1)) as usize * self.receivers;
        let mut count = 0;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for r in 0..self.receivers {
            let t = if self.tags[base + r] == n {
                self.times[base + r]
            } else {
                f64::NAN
            };
            self.scratch[r] = t;
            if !t.is_nan() {
                count += 1;
                lo = lo.min(t);
                hi = hi.max(t);
            }
        }
        if count < 2 {
            return;
        }
        let spread = hi - lo;
        let t0 = self.scratch[0];
        if n >= self.settle_frame {
            self.report.frames_compared += 1;
            self.report.spread.add(spread * 1e9);
            if !t0.is_nan() {
                for r in 1..self.receivers {
                    let t = self.scratch[r];
                    if !t.is_nan() {
                        self.report.per_receiver[r].add(t - t0);
                    }
                }
            }
        }
        self.series_add(n, spread);
    }

    fn series_add(&mut self, n: u64, spread: f64) {
        if self.open.is_some() && n >= self.open_until {
            self.close_point();
        }
        let rate = self.rate;
        let every = self.series_every;
        let p = self
            .open
            .get_or_insert_with(|| SkewPoint::empty(n as f64 / rate));
        if self.open_until <= n {
            self.open_until = (n / every + 1) * every;
        }
        let t0 = self.scratch[0];
        if !t0.is_nan() {
            for r in 0..self.receivers {
                let t = self.scratch[r];
                if !t.is_nan() {
                    let us = (t - t0) * 1e6;
                    p.min_us[r] = p.min_us[r].min(us);
                    p.max_us[r] = p.max_us[r].max(us);
                }
            }
        }
        p.spread_us = p.spread_us.max(spread * 1e6);
    }

    fn close_point(&mut self) {
        if let Some(p) = self.open.take()
            && self.report.series.len() < self.report.series.capacity()
        {
            self.report.series.push(p);
        }
    }

    /// Compares what is still held and hands over the report.
    pub fn finish(mut self) -> SkewReport {
        if let Some(newest) = self.newest {
            while self.cursor <= newest {
                self.compare(self.cursor);
                self.cursor += 1;
            }
        }
        self.close_point();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_exact_below_a_microsecond_and_within_a_thousandth_above() {
        for ns in [
            0u64,
            1,
            7,
            1023,
            1024,
            1025,
            4096,
            123_456,
            5_000_000,
            1 << 40,
        ] {
            let i = SkewHistogram::bin(ns);
            let lo = SkewHistogram::lower(i);
            assert!(lo <= ns && ns - lo <= ns / 1024, "{ns}: bin {i} from {lo}");
            assert!(SkewHistogram::lower(i + 1) > ns, "{ns}");
        }
        let mut h = SkewHistogram::new();
        for v in 0..1000 {
            h.add(v as f64);
        }
        assert_eq!(h.percentile_us(0.5), 0.499);
        assert_eq!(h.percentile_us(0.99), 0.989);
        assert_eq!(h.max_us(), 0.999);
    }

    #[test]
    fn exact_and_interpolated_frames_pair_up() {
        let rate = 48_000.0;
        let dt = 1.0 / rate;
        let mut m = SkewMeter::new(3, 48_000, 0.0, 10.0, 10);
        // Receiver 0 plays frame n at n·dt; receiver 1 the same 100 µs later; receiver 2
        // resamples: positions a quarter frame off, at the same instants as receiver 0 plus
        // a quarter frame, i.e. on the same line as receiver 0.
        for k in 0..200_000u64 {
            let t = k as f64 * dt;
            m.played(0, k as f64, t, dt);
            m.played(1, k as f64, t + 100e-6, dt);
            if !(1000..1010).contains(&k) {
                // Receiver 2 has a gap here: left out.
                m.played(2, k as f64 + 0.25, t + 0.25 * dt, dt);
            }
        }
        let r = m.finish();
        assert_eq!(r.late_frames, 0);
        let one = &r.per_receiver[1];
        assert!((one.min_us - 100.0).abs() < 1e-6 && (one.max_us - 100.0).abs() < 1e-6);
        let two = &r.per_receiver[2];
        assert!(
            two.min_us.abs() < 1e-3 && two.max_us.abs() < 1e-3,
            "{two:?}"
        );
        // The frames after receiver 2's gap are compared between 0 and 1 only; the ones it
        // interpolates again from the second frame after the gap on.
        assert_eq!(one.abs.count(), r.frames_compared);
        assert!(one.abs.count() - two.abs.count() <= 12);
        assert!((r.spread.max_us() - 100.0).abs() < 1e-3);
        assert!(!r.series.is_empty() && r.series.len() <= 12);
    }
}
