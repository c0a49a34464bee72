//! Test signals and the analyzer that checks what was played against what was captured.
//!
//! **Frame-index ramps.** Channel 0 carries the capture device's frame counter `n mod 65536` in
//! its top 16 bits, channel 1 the same counter offset by half a lap (`n + 32768`), further
//! channels other offsets; bits below the top 16 (S24, S32) carry a hash of `n`, the same on
//! every channel. Every frame therefore names its own position, bit-exactly. Because the two
//! ramps wrap half a lap apart, at every position one of them is far from its wrap, so frames
//! that were interpolated (a slip crossfade, a resampler) still decode to a fractional position.
//!
//! **Sine.** An analog-like tone, for listening and for resampling modes.
//!
//! **Two tones.** Two sines at a quarter of full scale each (the sum stays within half scale),
//! by default at 18 and 19 kHz: near the top of the band, where a resampler's aliases and
//! images and the two tones' intermodulation products land in the measured band, apart from
//! both tones.
//!
//! The [`Analyzer`] looks at played samples only — never at the engine's counters — and
//! classifies every frame: in sync (the continuation of the previous one), or part of a gap.
//! It also measures end-to-end latency from the capture times the simulator records.
//!
//! A source that stops cleanly (a sender's clean stop, [`Analyzer::source_ended`]) is the one
//! thing the samples cannot tell: once the last frame sent has played, what follows (the fade,
//! silence) is counted like the silence before the first frame, and the next stream is locked
//! onto afresh.

use crate::format::{SampleFormat, StreamFormat};
use crate::rng::mix64;

/// What the virtual capture device hears.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceKind {
    /// Frame-index ramps (bit-exact checking).
    Ramp,
    /// A sine tone at the given frequency, half scale.
    Sine {
        /// Hz.
        freq_hz: f64,
    },
    /// Two sine tones, each at quarter scale.
    TwoTone {
        /// The first tone, Hz (wow & flutter follows it).
        f1_hz: f64,
        /// The second tone, Hz.
        f2_hz: f64,
    },
}

/// The default sine, Hz.
pub const DEFAULT_SINE_HZ: f64 = 997.0;
/// The default two-tone pair, Hz.
pub const DEFAULT_TWO_TONE_HZ: (f64, f64) = (18_000.0, 19_000.0);
/// Closest two tones may be, Hz: each needs its own ±20 Hz exclusion band and a clean fit.
pub const MIN_TONE_SPACING_HZ: f64 = 100.0;

/// The accepted forms of a source, for messages.
pub const SOURCE_FORMS: &str =
    "ramp, sine[:HZ] (e.g. sine:997) or twotone[:F1,F2] (e.g. twotone:18000,19000)";

impl SourceKind {
    /// Parses `ramp`, `sine`, `sine:HZ`, `twotone` or `twotone:F1,F2`; the error names the
    /// value and the accepted forms.
    pub fn from_spec(s: &str) -> Result<SourceKind, String> {
        let t = s.trim();
        let bad = |why: &str| format!("bad source {s:?}{why}: use {SOURCE_FORMS}");
        let hz = |v: &str| -> Result<f64, String> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| bad(&format!(" ({v:?} is not a frequency in Hz)")))
        };
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("ramp", None) => Ok(SourceKind::Ramp),
            ("sine", None) => Ok(SourceKind::Sine {
                freq_hz: DEFAULT_SINE_HZ,
            }),
            ("sine", Some(a)) => Ok(SourceKind::Sine { freq_hz: hz(a)? }),
            ("twotone", None) => Ok(SourceKind::TwoTone {
                f1_hz: DEFAULT_TWO_TONE_HZ.0,
                f2_hz: DEFAULT_TWO_TONE_HZ.1,
            }),
            ("twotone", Some(a)) => {
                let (f1, f2) = a
                    .split_once(',')
                    .ok_or_else(|| bad(" (give two frequencies, F1,F2)"))?;
                Ok(SourceKind::TwoTone {
                    f1_hz: hz(f1)?,
                    f2_hz: hz(f2)?,
                })
            }
            _ => Err(bad("")),
        }
    }

    /// The source as [`from_spec`](Self::from_spec) reads it, e.g. `sine:997`.
    pub fn spec(&self) -> String {
        match *self {
            SourceKind::Ramp => "ramp".into(),
            SourceKind::Sine { freq_hz } => format!("sine:{freq_hz}"),
            SourceKind::TwoTone { f1_hz, f2_hz } => format!("twotone:{f1_hz},{f2_hz}"),
        }
    }

    /// Whether the source is one or two tones (what a fidelity analyzer measures).
    pub fn is_tonal(&self) -> bool {
        !matches!(self, SourceKind::Ramp)
    }

    /// Whether the tones can be measured at `rate`: each above 20 Hz and at least 20 Hz under
    /// half the rate (the analyzer's exclusion bands), two tones at least
    /// [`MIN_TONE_SPACING_HZ`] apart.
    pub fn check(&self, rate: u32) -> Result<(), String> {
        let top = rate as f64 / 2.0 - 20.0;
        let ok = |f: f64| f.is_finite() && f > 20.0 && f < top;
        let out_of_range = || {
            format!(
                "source {}: a tone must be above 20 Hz and below {top} Hz at {rate} Hz",
                self.spec()
            )
        };
        match *self {
            SourceKind::Ramp => Ok(()),
            SourceKind::Sine { freq_hz } if !ok(freq_hz) => Err(out_of_range()),
            SourceKind::Sine { .. } => Ok(()),
            SourceKind::TwoTone { f1_hz, f2_hz } if !ok(f1_hz) || !ok(f2_hz) => Err(out_of_range()),
            SourceKind::TwoTone { f1_hz, f2_hz } if (f1_hz - f2_hz).abs() < MIN_TONE_SPACING_HZ => {
                Err(format!(
                    "source {}: the two tones must be at least {MIN_TONE_SPACING_HZ} Hz apart",
                    self.spec()
                ))
            }
            SourceKind::TwoTone { .. } => Ok(()),
        }
    }
}

/// Top-16-bit offset of channel `c`'s ramp.
#[inline]
fn ramp_offset(c: usize) -> u64 {
    match c {
        0 => 0,
        1 => 32_768,
        _ => (c as u64 * 40_503 + 8_192) & 0xFFFF,
    }
}

/// Low bits of frame `n` (below the top 16), shared by all channels; they repeat every ramp
/// lap, so a frame can be checked without knowing which lap it is from.
#[inline]
fn low_bits(sample: SampleFormat, n: u64) -> i32 {
    match sample {
        SampleFormat::S16Le => 0,
        SampleFormat::S24_3Le => ((mix64(n & 0xFFFF) & 0xFF) << 8) as i32,
        SampleFormat::S32Le => (mix64(n & 0xFFFF) & 0xFFFF) as i32,
    }
}

/// The left-justified sample of channel `c` of ramp frame `n`.
#[inline]
pub fn ramp_sample(sample: SampleFormat, n: u64, c: usize) -> i32 {
    let top = ((n + ramp_offset(c)) & 0xFFFF) as u16 as i16 as i32;
    (top << 16) | low_bits(sample, n)
}

/// Generates the source signal in the wire format.
#[derive(Clone, Debug)]
pub struct Source {
    kind: SourceKind,
    format: StreamFormat,
}

impl Source {
    /// A source of `kind` in `format`.
    pub fn new(kind: SourceKind, format: StreamFormat) -> Source {
        Source { kind, format }
    }

    /// Writes frames `first..` (device frame counter) into `out`, whole frames.
    pub fn fill(&self, first: u64, out: &mut [u8]) {
        let f = self.format;
        let ch = f.channels as usize;
        let fb = f.frame_bytes();
        let sb = f.sample.bytes();
        match self.kind {
            SourceKind::Ramp if f.sample == SampleFormat::S16Le && ch == 2 => {
                for (k, frame) in out.chunks_exact_mut(4).enumerate() {
                    let n = first + k as u64;
                    frame[..2].copy_from_slice(&(n as u16).to_le_bytes());
                    frame[2..].copy_from_slice(&((n + 32_768) as u16).to_le_bytes());
                }
            }
            SourceKind::Ramp => {
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = first + k as u64;
                    for c in 0..ch {
                        f.sample
                            .encode(ramp_sample(f.sample, n, c), &mut frame[c * sb..]);
                    }
                }
            }
            SourceKind::Sine { freq_hz } => {
                let w = core::f64::consts::TAU * freq_hz / f.rate as f64;
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = first + k as u64;
                    // Phase from n mod one cycle-ish window keeps precision over days.
                    let v = ((w * n as f64).sin() * 0.5 * i32::MAX as f64) as i32;
                    for c in 0..ch {
                        f.sample.encode(v, &mut frame[c * sb..]);
                    }
                }
            }
            SourceKind::TwoTone { f1_hz, f2_hz } => {
                let w1 = core::f64::consts::TAU * f1_hz / f.rate as f64;
                let w2 = core::f64::consts::TAU * f2_hz / f.rate as f64;
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = (first + k as u64) as f64;
                    let x = 0.25 * ((w1 * n).sin() + (w2 * n).sin());
                    let v = (x * i32::MAX as f64) as i32;
                    for c in 0..ch {
                        f.sample.encode(v, &mut frame[c * sb..]);
                    }
                }
            }
        }
    }
}

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

/// How strictly consecutive positions must follow each other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTolerance {
    /// Smallest accepted step between consecutive played frames, frames.
    pub min: f64,
    /// Largest accepted step.
    pub max: f64,
    /// Largest disagreement between the two ramps' readings of one frame, frames.
    pub agree: f64,
    /// How far from a ramp's wrap interpolation can smear that ramp, frames.
    pub smear: f64,
}

impl StepTolerance {
    /// Exactly one frame per frame.
    pub const EXACT: StepTolerance = StepTolerance {
        min: 1.0,
        max: 1.0,
        agree: 0.02,
        smear: 0.0,
    };
    /// Slips (one frame dropped or repeated, crossfaded) move by 0 to 2 frames; bits below
    /// the top 16 (S24, S32) read as up to one frame more.
    pub const SLIP: StepTolerance = StepTolerance {
        min: -1.0,
        max: 3.0,
        agree: 0.02,
        // A crossfade interpolates between neighbours: only the frame straddling the wrap.
        smear: 2.0,
    };
    /// A band-limited resampler changes amplitudes by its pass-band ripple (a few 16-bit
    /// steps on a full-scale ramp), so readings may be a few frames off; every gap the engine
    /// can make (a silence, a fade, a jump) is still far outside this.
    pub const RESAMPLE: StepTolerance = StepTolerance {
        min: -12.0,
        max: 14.0,
        agree: 24.0,
        // The resampler's sinc reaches 32 input frames each side.
        smear: 40.0,
    };
}

/// Latency histogram resolution, ms.
const HIST_STEP_MS: f64 = 0.01;
/// Latency histogram range, ms.
const HIST_MAX_MS: f64 = 5_000.0;

/// One gap the analyzer saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GapRecord {
    /// Play time of the gap's first frame, seconds.
    pub t_s: f64,
    /// Frames the gap lasted (0 for a bare jump).
    pub frames: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Nothing valid played yet (prefill silence is not a gap).
    Start,
    /// Following the source at `pos` (device frame of the last played frame).
    Sync,
    /// In a gap since `since` frames.
    Gap,
}

/// Checks played frames against the source, from the samples alone.
pub struct Analyzer {
    format: StreamFormat,
    tolerance: StepTolerance,
    state: State,
    /// Anchored out of silence or a gap on one frame, not yet confirmed by the next: a
    /// mismatch then means the anchor was a faded frame that only looked like the source (a
    /// mono S16 frame matches the ramp somewhere whatever its value; a resampled fade decodes
    /// consistently by chance), not a new gap.
    tentative: bool,
    /// Whether the last anchor was bit-exact.
    anchor_exact: bool,
    /// The tentative anchor ended a gap (a mismatch then continues that gap).
    tentative_in_gap: bool,
    pos: f64,
    /// Counters.
    pub counts: AnalyzerCounts,
    gap_frames_now: u64,
    hist: Vec<u32>,
    hist_n: u64,
    lat_max_ms: f64,
    lat_sum_ms: f64,
    lat_sum_n: u64,
    gaps: Vec<GapRecord>,
    gap_recorded: bool,
    slip_sum: f64,
    /// Device frame where the source stopped cleanly, until its end has played.
    source_end: Option<f64>,
    expected: Vec<i32>,
    got: Vec<i32>,
}

/// What the analyzer counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AnalyzerCounts {
    /// Frames looked at.
    pub frames: u64,
    /// Frames that were exactly the source frame at their position.
    pub bit_exact: u64,
    /// Frames that continued the source (exact or interpolated).
    pub in_sync: u64,
    /// Gaps.
    pub gaps: u64,
    /// Frames inside gaps.
    pub gap_frames: u64,
    /// Longest gap, frames.
    pub max_gap_frames: u64,
    /// Silence before the first valid frame (of the run, or after a source that stopped
    /// cleanly).
    pub leading_frames: u64,
}

impl Analyzer {
    /// An analyzer for `format`, accepting steps within `tolerance`, keeping up to
    /// `max_gap_records` gap records.
    pub fn new(format: StreamFormat, tolerance: StepTolerance, max_gap_records: usize) -> Analyzer {
        let ch = format.channels as usize;
        Analyzer {
            format,
            tolerance,
            state: State::Start,
            tentative: false,
            anchor_exact: false,
            tentative_in_gap: false,
            pos: 0.0,
            counts: AnalyzerCounts::default(),
            gap_frames_now: 0,
            hist: vec![0; (HIST_MAX_MS / HIST_STEP_MS) as usize + 1],
            hist_n: 0,
            lat_max_ms: 0.0,
            lat_sum_ms: 0.0,
            lat_sum_n: 0,
            gaps: Vec::with_capacity(max_gap_records),
            gap_recorded: false,
            slip_sum: 0.0,
            source_end: None,
            expected: vec![0; ch],
            got: vec![0; ch],
        }
    }

    /// The source stopped cleanly: device frame `end` and those after it were never sent. Once
    /// the frame before it has played (within the step tolerance), output that does not
    /// continue the source is not a gap but the silence before the next stream.
    pub fn source_ended(&mut self, end: u64) {
        self.source_end = Some(end as f64);
    }

    /// Gaps seen (at most the capacity given to `new`).
    pub fn gap_records(&self) -> &[GapRecord] {
        &self.gaps
    }

    /// Net frames skipped (positive) or repeated (negative) while in sync: the drift
    /// corrections, as heard.
    pub fn slip_frames(&self) -> f64 {
        self.slip_sum
    }

    /// Mean latency since the last call, ms (NaN when none was measured).
    pub fn take_mean_latency_ms(&mut self) -> f64 {
        let m = if self.lat_sum_n > 0 {
            self.lat_sum_ms / self.lat_sum_n as f64
        } else {
            f64::NAN
        };
        self.lat_sum_ms = 0.0;
        self.lat_sum_n = 0;
        m
    }

    /// Latency percentile `q` in [0, 1], ms; NaN when nothing was measured.
    pub fn latency_percentile_ms(&self, q: f64) -> f64 {
        if self.hist_n == 0 {
            return f64::NAN;
        }
        let want = ((q * self.hist_n as f64).ceil() as u64).clamp(1, self.hist_n);
        let mut acc = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            acc += c as u64;
            if acc >= want {
                return i as f64 * HIST_STEP_MS;
            }
        }
        HIST_MAX_MS
    }

    /// Highest latency measured, ms.
    pub fn latency_max_ms(&self) -> f64 {
        if self.hist_n == 0 {
            f64::NAN
        } else {
            self.lat_max_ms
        }
    }

    /// Forgets the latency statistics (to measure after settling).
    pub fn reset_latency(&mut self) {
        self.hist.fill(0);
        self.hist_n = 0;
        self.lat_max_ms = 0.0;
    }

    /// Decodes a frame's position (mod 65536) from its first channels, and whether both
    /// ramps agree on it. Around one ramp's wrap, interpolation smears that channel and the
    /// other one alone tells the position; which one is meant is decided by continuity with
    /// `expected` (the position the previous frame implies), so a smeared value can never pass
    /// for the other channel's reading.
    fn decode(&self, s: &[i32], expected: Option<f64>) -> Option<(f64, bool)> {
        const LAP: f64 = 65_536.0;
        let w = self.tolerance.smear;
        let p0 = (s[0] as f64 / 65_536.0).rem_euclid(LAP);
        let dist = |a: f64, b: f64| ((a - b + 32_768.0).rem_euclid(LAP) - 32_768.0).abs();
        if s.len() < 2 {
            // One ramp alone cannot be read where interpolation smears its wrap: there the
            // position is taken as the continuation of the previous frame.
            if let Some(e) = expected
                && dist(e, 32_767.5) < w
            {
                return Some((e, false));
            }
            return Some((p0, true));
        }
        let p1 = (s[1] as f64 / 65_536.0 - 32_768.0).rem_euclid(LAP);
        // Channel 0 wraps at 32767.5, channel 1 at 65535.5; at any position at most one of
        // them is smeared, and the other one's reading says which.
        let smeared0 = dist(p1, 32_767.5) < w;
        let smeared1 = dist(p0, 65_535.5) < w;
        let near = |p: f64| expected.is_none_or(|e| dist(p, e) <= 4.0 + self.tolerance.agree);
        match (smeared0, smeared1) {
            (false, false) => (dist(p0, p1) < self.tolerance.agree).then_some((p0, true)),
            (true, false) => near(p1).then_some((p1, false)),
            (false, true) => near(p0).then_some((p0, false)),
            (true, true) => match expected {
                Some(_) if near(p1) => Some((p1, false)),
                Some(_) if near(p0) => Some((p0, false)),
                _ => None,
            },
        }
    }

    fn exact_at(&mut self, n: u64) -> bool {
        let sample = self.format.sample;
        for (c, e) in self.expected.iter_mut().enumerate() {
            *e = ramp_sample(sample, n, c);
        }
        // Compare after the format's own round trip (S16 keeps the top 16 bits, etc.).
        self.expected == self.got
    }

    fn unwrap(&self, p: f64, around: f64) -> f64 {
        let base = around.rem_euclid(65_536.0);
        let d = (p - base + 32_768.0).rem_euclid(65_536.0) - 32_768.0;
        around + d
    }

    fn end_gap(&mut self) {
        self.counts.max_gap_frames = self.counts.max_gap_frames.max(self.gap_frames_now);
        if self.gap_recorded
            && let Some(g) = self.gaps.last_mut()
        {
            g.frames = self.gap_frames_now;
        }
    }

    fn begin_gap(&mut self, t: f64) {
        self.counts.gaps += 1;
        self.gap_frames_now = 0;
        self.gap_recorded = self.gaps.len() < self.gaps.capacity();
        if self.gap_recorded {
            self.gaps.push(GapRecord { t_s: t, frames: 0 });
        }
    }

    /// Checks played frames `bytes` (wire format), the first played at `t_play` seconds,
    /// one every `dt` seconds, given the capture history. Measures latency once per call.
    pub fn played<C: CaptureTimes>(&mut self, bytes: &[u8], t_play: f64, dt: f64, capture: &C) {
        let fb = self.format.frame_bytes();
        let sample = self.format.sample;
        let mut latency_done = false;
        for (k, frame) in bytes.chunks_exact(fb).enumerate() {
            self.counts.frames += 1;
            // Fast path: the exact next frame.
            if self.state == State::Sync {
                let next = self.pos + 1.0;
                let n = next as u64;
                if next.fract() == 0.0 && frame_is_ramp(sample, frame, n, &mut self.got) {
                    self.tentative = false;
                    self.pos = next;
                    self.counts.bit_exact += 1;
                    self.counts.in_sync += 1;
                    if !latency_done {
                        latency_done = self.measure(t_play + k as f64 * dt, capture);
                    }
                    continue;
                }
            }
            sample.decode_slice(frame, &mut self.got);
            let t = t_play + k as f64 * dt;
            let expected = (self.state == State::Sync).then_some(self.pos + 1.0);
            let decoded = self.decode(&self.got, expected);
            match self.state {
                State::Sync => {
                    let ok = decoded.map(|(p, _)| {
                        let abs = self.unwrap(p, self.pos);
                        (abs, abs - self.pos)
                    });
                    match ok {
                        Some((abs, step))
                            if step >= self.tolerance.min && step <= self.tolerance.max =>
                        {
                            self.tentative = false;
                            // Bits below the top 16 read as a fraction: an exact frame sits
                            // at the floor of its decoded position.
                            let whole = abs.floor();
                            let exact = whole >= 0.0 && self.exact_at(whole as u64);
                            let abs = if exact { whole } else { abs };
                            self.slip_sum += abs - self.pos - 1.0;
                            self.pos = abs;
                            self.counts.in_sync += 1;
                            if exact {
                                self.counts.bit_exact += 1;
                            }
                        }
                        _ if self.source_end.is_some_and(|e| {
                            self.pos < e && self.pos + self.tolerance.max >= e
                        }) =>
                        {
                            // The source's last frame has played: it ended here.
                            self.source_end = None;
                            self.state = State::Start;
                            if !self.try_anchor(decoded, t, capture) {
                                self.counts.leading_frames += 1;
                            }
                        }
                        _ if self.tentative && self.tentative_in_gap => {
                            // The anchor was not the stream coming back (a frame fading in
                            // that looked like the source): the gap goes on, one gap.
                            self.tentative = false;
                            self.counts.in_sync -= 1;
                            if self.anchor_exact {
                                self.counts.bit_exact -= 1;
                            }
                            self.state = State::Gap;
                            self.gap_frames_now += 1;
                            self.counts.gap_frames += 1;
                            if self.try_anchor(decoded, t, capture) {
                                self.end_gap();
                                self.tentative = true;
                            } else {
                                self.gap_frames_now += 1;
                                self.counts.gap_frames += 1;
                            }
                        }
                        _ if self.tentative => {
                            // The anchor was not the stream: it was still leading.
                            self.tentative = false;
                            self.counts.in_sync -= 1;
                            if self.anchor_exact {
                                self.counts.bit_exact -= 1;
                            }
                            self.counts.leading_frames += 1;
                            self.state = State::Start;
                            if !self.try_anchor(decoded, t, capture) {
                                self.counts.leading_frames += 1;
                            } else {
                                self.tentative = true;
                                self.tentative_in_gap = false;
                            }
                        }
                        _ => {
                            if self.source_end.is_some_and(|e| self.pos >= e) {
                                // Playing past a recorded end: that end was not this stream's.
                                self.source_end = None;
                            }
                            self.begin_gap(t);
                            if self.try_anchor(decoded, t, capture) {
                                // A bare jump: zero frames of gap.
                                self.end_gap();
                                self.tentative = true;
                                self.tentative_in_gap = true;
                            } else {
                                self.state = State::Gap;
                                self.gap_frames_now = 1;
                                self.counts.gap_frames += 1;
                            }
                        }
                    }
                }
                State::Start => {
                    if !self.try_anchor(decoded, t, capture) {
                        self.counts.leading_frames += 1;
                    } else {
                        self.tentative = true;
                        self.tentative_in_gap = false;
                    }
                }
                State::Gap => {
                    if self.try_anchor(decoded, t, capture) {
                        self.end_gap();
                        self.tentative = true;
                        self.tentative_in_gap = true;
                    } else {
                        self.gap_frames_now += 1;
                        self.counts.gap_frames += 1;
                    }
                }
            }
            if self.state == State::Sync && !latency_done {
                latency_done = self.measure(t, capture);
            }
        }
    }

    /// Locks onto a frame that is exactly a source frame (or, for resampled streams, a
    /// consistently decoded one) at the position nearest below what has been captured.
    fn try_anchor<C: CaptureTimes>(
        &mut self,
        decoded: Option<(f64, bool)>,
        t: f64,
        capture: &C,
    ) -> bool {
        let Some((p, consistent)) = decoded else {
            return false;
        };
        if self.got.iter().all(|&s| s == 0) {
            // Silence (before a stream, or while the receiver warms up) is not the source,
            // even where a ramp passes through zero.
            return false;
        }
        let newest = capture.frames_at(t);
        let mut abs = self.unwrap(p, newest);
        if abs > newest {
            abs -= 65_536.0;
        }
        if abs < 0.0 {
            return false;
        }
        let exact = self.exact_at(abs.floor() as u64);
        if exact {
            abs = abs.floor();
        }
        // A slip or resample stream also resumes on a frame both ramps agree on.
        let interpolating = self.tolerance != StepTolerance::EXACT && self.format.channels >= 2;
        if !(exact || (interpolating && consistent)) {
            return false;
        }
        if exact {
            self.counts.bit_exact += 1;
        }
        self.anchor_exact = exact;
        self.counts.in_sync += 1;
        self.pos = abs;
        self.state = State::Sync;
        true
    }

    fn measure<C: CaptureTimes>(&mut self, t_play: f64, capture: &C) -> bool {
        let Some(tc) = capture.time_of(self.pos) else {
            return false;
        };
        let ms = (t_play - tc) * 1000.0;
        if !ms.is_finite() {
            return false;
        }
        let bin = ((ms / HIST_STEP_MS).round().max(0.0) as usize).min(self.hist.len() - 1);
        self.hist[bin] += 1;
        self.hist_n += 1;
        self.lat_max_ms = self.lat_max_ms.max(ms);
        self.lat_sum_ms += ms;
        self.lat_sum_n += 1;
        true
    }
}

/// Decodes `frame` into `got` and says whether it is exactly ramp frame `n`.
#[inline]
fn frame_is_ramp(sample: SampleFormat, frame: &[u8], n: u64, got: &mut [i32]) -> bool {
    if sample == SampleFormat::S16Le && got.len() == 2 {
        let a = u16::from_le_bytes([frame[0], frame[1]]);
        let b = u16::from_le_bytes([frame[2], frame[3]]);
        if a == n as u16 && b == (n + 32_768) as u16 {
            got[0] = (a as i16 as i32) << 16;
            got[1] = (b as i16 as i32) << 16;
            return true;
        }
        sample.decode_slice(frame, got);
        return false;
    }
    sample.decode_slice(frame, got);
    got.iter()
        .enumerate()
        .all(|(c, &v)| v == ramp_sample(sample, n, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(sample: SampleFormat, ch: u8) -> StreamFormat {
        StreamFormat::new(48_000, ch, sample).unwrap()
    }

    fn history(frames: u64) -> CaptureHistory {
        let mut h = CaptureHistory::new(64, 100_000);
        for k in 0..frames / 64 {
            h.record((k + 1) as f64 * 64.0 / 48_000.0, 48_000.0);
        }
        h
    }

    #[test]
    fn sources_parse_and_bad_ones_are_named() {
        assert_eq!(SourceKind::from_spec("ramp"), Ok(SourceKind::Ramp));
        assert_eq!(
            SourceKind::from_spec("sine"),
            Ok(SourceKind::Sine { freq_hz: 997.0 })
        );
        assert_eq!(
            SourceKind::from_spec("sine:440"),
            Ok(SourceKind::Sine { freq_hz: 440.0 })
        );
        let two = SourceKind::from_spec("twotone:997,1997").unwrap();
        assert_eq!(
            two,
            SourceKind::TwoTone {
                f1_hz: 997.0,
                f2_hz: 1997.0
            }
        );
        assert_eq!(SourceKind::from_spec(&two.spec()), Ok(two));
        assert_eq!(
            SourceKind::from_spec("twotone"),
            Ok(SourceKind::TwoTone {
                f1_hz: 18_000.0,
                f2_hz: 19_000.0
            })
        );
        for bad in [
            "noise",
            "sine:",
            "sine:abc",
            "sine:-5",
            "sine:nan",
            "twotone:5",
            "twotone:1,x",
            "ramp:3",
            "",
        ] {
            let e = SourceKind::from_spec(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("twotone[:F1,F2]"),
                "{bad}: {e}"
            );
        }
        assert!(SourceKind::Sine { freq_hz: 997.0 }.check(48_000).is_ok());
        assert!(SourceKind::Sine { freq_hz: 10.0 }.check(48_000).is_err());
        assert!(
            SourceKind::Sine { freq_hz: 23_990.0 }
                .check(48_000)
                .is_err()
        );
        let e = SourceKind::from_spec("twotone")
            .unwrap()
            .check(8_000)
            .unwrap_err();
        assert!(
            e.contains("twotone:18000,19000") && e.contains("3980"),
            "{e}"
        );
        let e = SourceKind::from_spec("twotone:1000,1050")
            .unwrap()
            .check(48_000)
            .unwrap_err();
        assert!(e.contains("100 Hz apart"), "{e}");
    }

    #[test]
    fn two_tones_stay_within_half_scale() {
        let f = fmt(SampleFormat::S32Le, 2);
        let src = Source::new(SourceKind::from_spec("twotone").unwrap(), f);
        let mut buf = vec![0u8; 48_000 * f.frame_bytes()];
        src.fill(0, &mut buf);
        let peak = buf
            .chunks_exact(4)
            .map(|b| (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / i32::MAX as f64).abs())
            .fold(0.0, f64::max);
        assert!((0.45..=0.5).contains(&peak), "{peak}");
    }

    #[test]
    fn a_clean_ramp_is_bit_exact_and_gapless() {
        for sample in SampleFormat::ALL {
            for ch in [1u8, 2, 4] {
                let f = fmt(sample, ch);
                let src = Source::new(SourceKind::Ramp, f);
                // Played right after capture: within one ramp lap of the newest frame.
                let mut buf = vec![0u8; 60_000 * f.frame_bytes()];
                src.fill(10, &mut buf);
                let h = history(60_032);
                let mut a = Analyzer::new(f, StepTolerance::EXACT, 16);
                a.played(&buf, 1.0, 1.0 / 48_000.0, &h);
                assert_eq!(a.counts.gaps, 0, "{sample} {ch}");
                assert_eq!(a.counts.bit_exact, 60_000, "{sample} {ch}");
            }
        }
    }

    #[test]
    fn holes_jumps_and_silence_are_gaps() {
        let f = fmt(SampleFormat::S16Le, 2);
        let src = Source::new(SourceKind::Ramp, f);
        let h = history(400_000);
        let mut a = Analyzer::new(f, StepTolerance::EXACT, 16);
        let mut buf = vec![0u8; 1000 * 4];
        // Leading silence is not a gap.
        a.played(&buf, 0.0, 1e-5, &h);
        src.fill(5000, &mut buf);
        a.played(&buf, 0.1, 1e-5, &h);
        // A jump of 100 frames.
        src.fill(6100, &mut buf);
        a.played(&buf, 0.2, 1e-5, &h);
        // A hole of 50 silent frames, then audio continues further on.
        let mut buf2 = vec![0u8; 1000 * 4];
        src.fill(7100, &mut buf2[200..]);
        a.played(&buf2, 0.3, 1e-5, &h);
        assert_eq!(a.counts.leading_frames, 1000);
        assert_eq!(a.counts.gaps, 2);
        assert_eq!(a.counts.gap_frames, 50);
        assert_eq!(a.gap_records().len(), 2);
        assert_eq!(a.gap_records()[1].frames, 50);
    }

    #[test]
    fn silence_after_a_clean_stop_is_no_gap_but_a_stop_too_early_is() {
        let f = fmt(SampleFormat::S16Le, 2);
        let src = Source::new(SourceKind::Ramp, f);
        // Captured so far: up to frame 10 048 (positions are anchored below it).
        let h = history(10_048);
        let mut buf = vec![0u8; 1000 * 4];
        let silence = vec![0u8; 300 * 4];
        for (end, gaps) in [(6000, 0), (6001, 1)] {
            let mut a = Analyzer::new(f, StepTolerance::EXACT, 16);
            src.fill(5000, &mut buf);
            a.source_ended(end);
            // Frames 5000..6000 play, then silence, then a new stream further on.
            a.played(&buf, 0.1, 1e-5, &h);
            a.played(&silence, 0.2, 1e-5, &h);
            src.fill(9000, &mut buf);
            a.played(&buf, 0.3, 1e-5, &h);
            assert_eq!(a.counts.gaps, gaps, "source ending at {end}");
            assert_eq!(a.counts.in_sync, 2000, "source ending at {end}");
            if gaps == 0 {
                assert_eq!(a.counts.leading_frames, 300);
            }
        }
    }

    #[test]
    fn interpolated_frames_decode_across_both_wraps() {
        let f = fmt(SampleFormat::S16Le, 2);
        let h = history(200_000);
        let mut a = Analyzer::new(f, StepTolerance::SLIP, 16);
        let mut buf = Vec::new();
        // Positions advancing by 1.25 frames, across ch0's wrap (32767.5) and ch1's (65535.5).
        let mut p: f64 = 32_000.0;
        while p < 66_500.0 {
            for c in 0..2 {
                let n0 = p.floor() as u64;
                let x = ramp_sample(SampleFormat::S16Le, n0, c) as f64;
                let y = ramp_sample(SampleFormat::S16Le, n0 + 1, c) as f64;
                let v = x + (y - x) * p.fract();
                let mut b = [0u8; 2];
                SampleFormat::S16Le.encode(v as i32, &mut b);
                buf.extend_from_slice(&b);
            }
            p += 1.0 + 1.0 / 64.0;
        }
        a.played(&buf, 3.0, 1e-5, &h);
        assert_eq!(a.counts.gaps, 0);
        assert!(a.slip_frames() > 500.0);
    }
}
