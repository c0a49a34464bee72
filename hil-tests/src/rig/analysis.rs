//! Analysis of the 4-channel monitor capture.
//!
//! Channels 1–2 of every monitor frame hold what the test-signal player put out in that JACK
//! cycle (the ramp: frame counter `n mod 65536`, and `n + 32768`), channels 3–4 what the
//! receiver played in the same cycle. So:
//!
//! - **latency** of a played frame is `source position − played position` (mod 65536) in the
//!   same monitor frame, frame-exact, with no clock to estimate;
//! - **gaps** come from the engine's [`Analyzer`] run over channels 3–4 as a 2-channel S16
//!   stream, with [`StepTolerance::SLIP`] (a receiver may drop or repeat a frame to follow
//!   drift), anchored by a [`CaptureTimes`] built from channels 1–2 (which source frame was
//!   current at which monitor frame). A gap is a maximal run of output that is not the
//!   continuation of the source.
//!
//! Nothing is checked before the source shows up on the monitor, and the start-up period before
//! the first valid played frame is leading silence, not a gap. The measured span starts at that
//! first frame. Latency is unambiguous up to one ramp lap (65536 frames, 1.37 s at 48 kHz).

use crate::plot::TracePoint;
use engine::format::{SampleFormat, StreamFormat};
use engine::sim::signal::{Analyzer, CaptureTimes, StepTolerance};
use std::collections::VecDeque;

/// One ramp lap, frames.
const LAP: u64 = 65_536;
/// The first source position is placed this many laps up, so no position the analyzer
/// unwraps ever goes below zero.
const FIRST_LAP: u64 = 16;
/// Source history kept for `time_of` (monitor frames): two laps.
const KEEP_FRAMES: u64 = 2 * LAP;
/// Gap records kept (all are counted).
const MAX_GAP_RECORDS: usize = 10_000;
/// Bytes of one monitor frame: 4 channels of S16.
pub const MONITOR_FRAME_BYTES: usize = 8;

/// The position a ramp frame (two S16 samples) names, if both ramps agree on it.
#[inline]
fn ramp_pos(a: [u8; 2], b: [u8; 2]) -> Option<u16> {
    let a = u16::from_le_bytes(a);
    let b = u16::from_le_bytes(b);
    (b == a ^ 0x8000).then_some(a)
}

/// A run of monitor frames over which the source advanced one frame per frame.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// First monitor frame.
    m0: u64,
    /// Absolute source frame at `m0`.
    s0: u64,
    /// Frames.
    len: u64,
}

/// Which source frame was current at which monitor frame, from channels 1–2: the capture
/// times the [`Analyzer`] needs, in monitor time (monitor frame / rate).
#[derive(Debug)]
pub struct SourceClock {
    rate: f64,
    segs: VecDeque<Segment>,
    breaks: u64,
}

impl SourceClock {
    fn new(rate: f64) -> SourceClock {
        SourceClock {
            rate,
            segs: VecDeque::new(),
            breaks: 0,
        }
    }

    /// Records that monitor frame `m` heard source position `p` (mod 65536); frames where the
    /// source could not be read are simply not recorded.
    fn push(&mut self, m: u64, p: u16) {
        let Some(last) = self.segs.back_mut() else {
            self.segs.push_back(Segment {
                m0: m,
                s0: FIRST_LAP * LAP + p as u64,
                len: 1,
            });
            return;
        };
        let last_m = last.m0 + last.len - 1;
        let last_s = last.s0 + last.len - 1;
        if m == last_m + 1 && p == (last_s + 1) as u16 {
            last.len += 1;
            return;
        }
        // The source jumped or paused: place it on the lap nearest to where it would be had it
        // run on.
        let guess = last_s + (m - last_m);
        let d = (p as i64 - (guess % LAP) as i64 + 32_768).rem_euclid(LAP as i64) - 32_768;
        let s0 = (guess as i64 + d).max(0) as u64;
        self.breaks += 1;
        self.segs.push_back(Segment { m0: m, s0, len: 1 });
        while self.segs.len() > 1 && self.segs[1].m0 + KEEP_FRAMES < m {
            self.segs.pop_front();
        }
    }

    /// Times the source jumped or paused after it first appeared.
    pub fn breaks(&self) -> u64 {
        self.breaks
    }

    fn monitor_frame(&self, t: f64) -> u64 {
        (t * self.rate).round().max(0.0) as u64
    }
}

impl CaptureTimes for SourceClock {
    fn frames_at(&self, t: f64) -> f64 {
        let m = self.monitor_frame(t);
        for s in self.segs.iter().rev() {
            if m >= s.m0 + s.len {
                // After the newest frame heard (or in a hole): the newest one so far.
                return (s.s0 + s.len) as f64;
            }
            if m >= s.m0 {
                return (s.s0 + (m - s.m0) + 1) as f64;
            }
        }
        self.segs.front().map_or(0.0, |s| s.s0 as f64)
    }

    fn time_of(&self, n: f64) -> Option<f64> {
        if n.is_nan() || n < 0.0 {
            return None;
        }
        let whole = n.floor() as u64;
        self.segs
            .iter()
            .rev()
            .find(|s| whole >= s.s0 && whole < s.s0 + s.len)
            .map(|s| (s.m0 as f64 + (n - s.s0 as f64)) / self.rate)
    }
}

/// One gap, in the measured span's time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gap {
    /// Seconds since the first played frame.
    pub t_s: f64,
    /// Frames the gap lasted (0 for a bare jump).
    pub frames: u64,
}

/// What the monitor showed over the measured span.
#[derive(Clone, Debug)]
pub struct MonitorReport {
    /// Measured audio, seconds (from the first valid played frame).
    pub audio_seconds: f64,
    /// Gaps (the analyzer's).
    pub gaps: u64,
    /// Frames inside gaps.
    pub gap_frames: u64,
    /// Longest gap, frames.
    pub max_gap_frames: u64,
    /// Frames exactly equal to the source frame they continue.
    pub bit_exact_frames: u64,
    /// Frames that continued the source (exact or interpolated).
    pub in_sync_frames: u64,
    /// Frames checked in the measured span.
    pub checked_frames: u64,
    /// Monitor frames, after the source appeared, before the first valid played frame.
    pub leading_frames: u64,
    /// Net frames the receiver skipped (+) or repeated (−) while in sync.
    pub slip_frames: f64,
    /// Latency percentiles and maximum, ms (NaN when nothing was measured).
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Maximum.
    pub latency_max_ms: f64,
    /// Frames whose latency was measured.
    pub latency_frames: u64,
    /// Times the test source itself jumped or paused (a fault of the rig, not the pipeline).
    pub source_breaks: u64,
    /// The gaps (at most 10 000).
    pub gap_list: Vec<Gap>,
    /// Latency and slip rate over time, for the plot.
    pub trace: Vec<TracePoint>,
}

/// Streams monitor frames through the analysis.
pub struct MonitorAnalysis {
    rate: f64,
    analyzer: Analyzer,
    clock: SourceClock,
    /// Monitor frames consumed.
    m: u64,
    /// Whether the source has appeared (analysis running).
    started: bool,
    /// Monitor frame of the first valid played frame.
    first_played: Option<u64>,
    /// Bytes of an incomplete frame from the last call.
    partial: Vec<u8>,
    /// Channels 3–4 not yet given to the analyzer, and the monitor frame of the first of them.
    pending: Vec<u8>,
    pending_m: u64,
    /// Latency histogram, frames.
    hist: Vec<u64>,
    lat_n: u64,
    lat_max: u64,
    /// Trace interval, measured frames.
    trace_step: u64,
    trace: Vec<TracePoint>,
    acc_sum: f64,
    acc_n: u64,
    acc_slip: f64,
}

impl MonitorAnalysis {
    /// The same analysis following played frames with `tolerance` (a resampled stream's frames
    /// sit between the source's).
    pub fn with_tolerance(mut self, tolerance: StepTolerance) -> MonitorAnalysis {
        let format = StreamFormat::new(self.rate as u32, 2, SampleFormat::S16Le)
            .expect("the rig's rate is within the engine's range");
        self.analyzer = Analyzer::new(format, tolerance, MAX_GAP_RECORDS);
        self
    }

    /// An analysis at `rate` Hz that samples its trace every `trace_step_s` seconds.
    pub fn new(rate: u32, trace_step_s: f64) -> MonitorAnalysis {
        let format = StreamFormat::new(rate, 2, SampleFormat::S16Le)
            .expect("the rig's rate is within the engine's range");
        MonitorAnalysis {
            rate: rate as f64,
            analyzer: Analyzer::new(format, StepTolerance::SLIP, MAX_GAP_RECORDS),
            clock: SourceClock::new(rate as f64),
            m: 0,
            started: false,
            first_played: None,
            partial: Vec::with_capacity(MONITOR_FRAME_BYTES),
            pending: Vec::new(),
            pending_m: 0,
            hist: vec![0; LAP as usize],
            lat_n: 0,
            lat_max: 0,
            trace_step: ((trace_step_s * rate as f64).round() as u64).max(1),
            trace: Vec::new(),
            acc_sum: 0.0,
            acc_n: 0,
            acc_slip: 0.0,
        }
    }

    /// Frames measured so far (since the first valid played frame).
    pub fn measured_frames(&self) -> u64 {
        self.first_played.map_or(0, |f| self.m - f)
    }

    /// Whether the source has shown up on the monitor.
    pub fn source_seen(&self) -> bool {
        self.started
    }

    /// Whether a valid played frame has shown up.
    pub fn played_seen(&self) -> bool {
        self.first_played.is_some()
    }

    /// Analyzes monitor bytes (4-channel S16_LE, any split), stopping once `limit` frames have
    /// been measured. Returns whether the limit was reached; the rest of `bytes` is ignored
    /// then.
    pub fn feed(&mut self, mut bytes: &[u8], limit: u64) -> bool {
        if !self.partial.is_empty() {
            let need = MONITOR_FRAME_BYTES - self.partial.len();
            let take = need.min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < MONITOR_FRAME_BYTES {
                return false;
            }
            let frame: [u8; MONITOR_FRAME_BYTES] =
                self.partial[..].try_into().expect("a whole frame");
            self.partial.clear();
            if self.frame(&frame, limit) {
                self.flush();
                return true;
            }
        }
        let mut frames = bytes.chunks_exact(MONITOR_FRAME_BYTES);
        for f in &mut frames {
            if self.frame(f, limit) {
                self.flush();
                return true;
            }
        }
        self.partial.extend_from_slice(frames.remainder());
        self.flush();
        false
    }

    /// One monitor frame; true (and the frame not consumed) once `limit` is reached.
    fn frame(&mut self, f: &[u8], limit: u64) -> bool {
        if self.measured_frames() >= limit {
            return true;
        }
        let m = self.m;
        let src = ramp_pos([f[0], f[1]], [f[2], f[3]]);
        if let Some(p) = src {
            self.clock.push(m, p);
            self.started = true;
        }
        if !self.started {
            self.m += 1;
            return false;
        }
        if self.pending.is_empty() {
            self.pending_m = m;
        }
        self.pending.extend_from_slice(&f[4..8]);
        let played = ramp_pos([f[4], f[5]], [f[6], f[7]]);
        if self.first_played.is_none() && played.is_some() {
            self.first_played = Some(m);
        }
        if let (Some(s), Some(p)) = (src, played) {
            let lat = s.wrapping_sub(p) as u64;
            self.hist[lat as usize] += 1;
            self.lat_n += 1;
            self.lat_max = self.lat_max.max(lat);
            self.acc_sum += lat as f64;
            self.acc_n += 1;
        }
        self.m += 1;
        if let Some(first) = self.first_played {
            let done = self.m - first;
            if done % self.trace_step == 0 {
                self.flush();
                let slip = self.analyzer.slip_frames();
                let ratio_ppm = (slip - self.acc_slip) / self.trace_step as f64 * 1e6;
                self.acc_slip = slip;
                let latency_ms = if self.acc_n > 0 {
                    self.acc_sum / self.acc_n as f64 * 1000.0 / self.rate
                } else {
                    f64::NAN
                };
                self.trace.push(TracePoint {
                    t_s: done as f64 / self.rate,
                    latency_ms,
                    level_ms: f64::NAN,
                    ratio_ppm,
                });
                self.acc_sum = 0.0;
                self.acc_n = 0;
            }
        }
        false
    }

    /// Gives the pending played frames to the analyzer.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let t0 = self.pending_m as f64 / self.rate;
        self.analyzer
            .played(&self.pending, t0, 1.0 / self.rate, &self.clock);
        self.pending.clear();
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.lat_n == 0 {
            return f64::NAN;
        }
        let want = ((q * self.lat_n as f64).ceil() as u64).clamp(1, self.lat_n);
        let mut acc = 0;
        for (i, &c) in self.hist.iter().enumerate() {
            acc += c;
            if acc >= want {
                return i as f64 * 1000.0 / self.rate;
            }
        }
        f64::NAN
    }

    /// The report of what has been fed so far.
    pub fn report(&mut self) -> MonitorReport {
        self.flush();
        let c = self.analyzer.counts;
        let first = self.first_played.unwrap_or(self.m) as f64;
        let gap_list = self
            .analyzer
            .gap_records()
            .iter()
            .map(|g| Gap {
                t_s: (g.t_s * self.rate - first) / self.rate,
                frames: g.frames,
            })
            .collect();
        MonitorReport {
            audio_seconds: self.measured_frames() as f64 / self.rate,
            gaps: c.gaps,
            gap_frames: c.gap_frames,
            max_gap_frames: c.max_gap_frames,
            bit_exact_frames: c.bit_exact,
            in_sync_frames: c.in_sync,
            checked_frames: c.frames - c.leading_frames,
            leading_frames: c.leading_frames,
            slip_frames: self.analyzer.slip_frames(),
            latency_p50_ms: self.percentile_ms(0.5),
            latency_p99_ms: self.percentile_ms(0.99),
            latency_max_ms: if self.lat_n > 0 {
                self.lat_max as f64 * 1000.0 / self.rate
            } else {
                f64::NAN
            },
            latency_frames: self.lat_n,
            source_breaks: self.clock.breaks(),
            gap_list,
            trace: self.trace.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    /// A monitor stream: for every monitor frame, the source position (None: silence) and the
    /// played position (None: silence).
    fn monitor(frames: impl Iterator<Item = (Option<u64>, Option<u64>)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (s, p) in frames {
            for v in [s, p] {
                match v {
                    Some(n) => {
                        out.extend_from_slice(&(n as u16).to_le_bytes());
                        out.extend_from_slice(&((n + 32_768) as u16).to_le_bytes());
                    }
                    None => out.extend_from_slice(&[0; 4]),
                }
            }
        }
        out
    }

    /// Feeds `bytes` in odd-sized pieces (frames split across calls).
    fn feed_all(a: &mut MonitorAnalysis, bytes: &[u8], limit: u64) -> bool {
        for piece in bytes.chunks(1_237) {
            if a.feed(piece, limit) {
                return true;
            }
        }
        false
    }

    const LATENCY: u64 = 1_000;
    /// Source starts at monitor frame 300 (frame counter 70 000); the receiver plays from
    /// monitor frame 300 + LATENCY + 2 000 on, LATENCY frames behind.
    fn delayed(m: u64) -> (Option<u64>, Option<u64>) {
        let src = (m >= 300).then(|| 70_000 + m - 300);
        let played = (m >= 300 + LATENCY + 2_000).then(|| 70_000 + m - 300 - LATENCY);
        (src, played)
    }

    #[test]
    fn constant_latency_is_measured_exactly_and_startup_is_not_a_gap() {
        let mut a = MonitorAnalysis::new(RATE, 0.5);
        let bytes = monitor((0..200_000).map(delayed));
        assert!(!feed_all(&mut a, &bytes, u64::MAX));
        let r = a.report();
        let measured = 200_000 - (300 + LATENCY + 2_000);
        assert_eq!(r.gaps, 0);
        assert_eq!(r.checked_frames, measured);
        assert_eq!(r.bit_exact_frames, measured);
        assert_eq!(r.leading_frames, LATENCY + 2_000);
        assert_eq!(r.latency_frames, measured);
        let ms = LATENCY as f64 * 1000.0 / RATE as f64;
        assert!((r.latency_p50_ms - ms).abs() < 1e-9, "{}", r.latency_p50_ms);
        assert!((r.latency_p99_ms - ms).abs() < 1e-9);
        assert!((r.latency_max_ms - ms).abs() < 1e-9);
        assert!((r.audio_seconds - measured as f64 / RATE as f64).abs() < 1e-9);
        assert_eq!(r.source_breaks, 0);
        // One trace point per half second, all at the latency.
        assert_eq!(r.trace.len() as u64, measured / 24_000);
        assert!(r.trace.iter().all(|p| (p.latency_ms - ms).abs() < 1e-9));
        assert!(r.trace.iter().all(|p| p.ratio_ppm == 0.0));
    }

    #[test]
    fn the_run_stops_exactly_at_the_limit() {
        let mut a = MonitorAnalysis::new(RATE, 1.0);
        let bytes = monitor((0..100_000).map(delayed));
        assert!(feed_all(&mut a, &bytes, 48_000));
        assert_eq!(a.measured_frames(), 48_000);
        assert!(a.feed(&bytes[..80], 48_000));
        let r = a.report();
        assert_eq!(r.checked_frames, 48_000);
        assert_eq!(r.audio_seconds, 1.0);
    }

    #[test]
    fn a_silent_hole_and_a_jump_are_gaps() {
        let hole = 50_000..50_200;
        let jump_at = 80_000;
        let frames = (0..150_000).map(|m| {
            let (s, p) = delayed(m);
            if hole.contains(&m) {
                (s, None)
            } else if m >= jump_at {
                // 300 frames dropped: played positions jump ahead, latency falls by 300.
                (s, p.map(|p| p + 300))
            } else {
                (s, p)
            }
        });
        let mut a = MonitorAnalysis::new(RATE, 1.0);
        feed_all(&mut a, &monitor(frames), u64::MAX);
        let r = a.report();
        assert_eq!(r.gaps, 2);
        assert_eq!(r.gap_frames, 200);
        assert_eq!(r.max_gap_frames, 200);
        let first = 300 + LATENCY + 2_000;
        assert_eq!(r.gap_list.len(), 2);
        assert!((r.gap_list[0].t_s - (50_000 - first) as f64 / 48_000.0).abs() < 1e-6);
        assert_eq!(r.gap_list[0].frames, 200);
        assert!((r.gap_list[1].t_s - (jump_at - first) as f64 / 48_000.0).abs() < 1e-6);
        assert_eq!(r.gap_list[1].frames, 0);
        let lo = (LATENCY - 300) as f64 / 48.0;
        let hi = LATENCY as f64 / 48.0;
        assert!((r.latency_p50_ms - lo).abs() < 1e-9 || (r.latency_p50_ms - hi).abs() < 1e-9);
        assert!((r.latency_max_ms - hi).abs() < 1e-9);
    }

    #[test]
    fn slips_are_not_gaps() {
        // The receiver drops one frame at 40 000 and repeats one at 90 000.
        let frames = (0..150_000).map(|m| {
            let (s, p) = delayed(m);
            let p = p.map(|p| match m {
                40_000..90_000 => p + 1,
                _ => p,
            });
            (s, p)
        });
        let mut a = MonitorAnalysis::new(RATE, 1.0);
        feed_all(&mut a, &monitor(frames), u64::MAX);
        let r = a.report();
        assert_eq!(r.gaps, 0);
        assert_eq!(r.slip_frames, 0.0);
        assert_eq!(r.bit_exact_frames, r.checked_frames);
        assert!((r.latency_max_ms - LATENCY as f64 / 48.0).abs() < 1e-9);
        // The dropped frame shows as +1 frame in its trace interval: 1e6 / 48 000 ppm.
        let up = r.trace.iter().filter(|p| p.ratio_ppm > 0.0).count();
        let down = r.trace.iter().filter(|p| p.ratio_ppm < 0.0).count();
        assert_eq!((up, down), (1, 1));
    }

    #[test]
    fn latency_beyond_a_ramp_wrap_and_a_source_break_are_seen() {
        // Source positions cross 65536 (the counter wraps) with 40 000 frames of latency.
        let lat = 40_000;
        let frames = (0..300_000u64).map(|m| {
            let s = 60_000 + m;
            let p = (m >= lat).then(|| s - lat);
            // The source pauses for 100 frames at 250 000 (a rig fault).
            let s = if (250_000..250_100).contains(&m) {
                None
            } else if m >= 250_100 {
                Some(s + 5)
            } else {
                Some(s)
            };
            (s, p)
        });
        let mut a = MonitorAnalysis::new(RATE, 1.0);
        feed_all(&mut a, &monitor(frames), u64::MAX);
        let r = a.report();
        assert_eq!(r.gaps, 0);
        assert_eq!(r.source_breaks, 1);
        assert!((r.latency_p50_ms - lat as f64 / 48.0).abs() < 1e-9);
    }

    #[test]
    fn the_source_clock_maps_both_ways() {
        let mut c = SourceClock::new(48_000.0);
        for m in 10..1_000u64 {
            c.push(m, (m + 5) as u16);
        }
        let base = FIRST_LAP * LAP + 15;
        assert_eq!(c.frames_at(10.0 / 48_000.0), (base + 1) as f64);
        assert_eq!(c.frames_at(500.0 / 48_000.0), (base + 491) as f64);
        // Past the newest frame: the newest.
        assert_eq!(c.frames_at(1.0), (base + 990) as f64);
        let t = c.time_of((base + 100) as f64).unwrap();
        assert!((t * 48_000.0 - 110.0).abs() < 1e-6);
        assert_eq!(c.time_of(5.0), None);
    }
}
