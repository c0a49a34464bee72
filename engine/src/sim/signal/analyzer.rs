//! The [`Analyzer`]: classifies every played frame from the samples alone (in sync, or part
//! of a gap) and measures end-to-end latency against the capture times.
//!
//! `new` allocates the latency histogram and room for the gap records; analysing played frames
//! allocates nothing (gaps beyond that room are counted, not recorded).

use super::{CaptureTimes, ramp_sample};
use crate::format::{SampleFormat, StreamFormat};

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
    /// The format the played frames come in.
    input: SampleFormat,
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
            input: format.sample,
        }
    }

    /// The played frames come in `sample`, wider than the stream's (a device that takes the
    /// resampler's output at full resolution): exact frames are the stream's samples
    /// left-justified, and an interpolated frame's bits below the stream's width tell its
    /// position to a fraction of a frame (the stream's own rounding would lose it).
    pub fn with_input(mut self, sample: SampleFormat) -> Analyzer {
        self.set_input(sample);
        self
    }

    /// As [`with_input`](Self::with_input), in place.
    pub fn set_input(&mut self, sample: SampleFormat) {
        if sample.bytes() >= self.format.sample.bytes() {
            self.input = sample;
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
        self.played_with(bytes, t_play, dt, capture, |_, _| {});
    }

    /// [`Analyzer::played`], also handing `on_frame` the source position (capture-device
    /// frames, fractional if interpolated) and play time of every frame that continued the
    /// source; a frame that anchors after silence or a gap is not handed over (the next one,
    /// continuing it, is).
    pub fn played_with<C: CaptureTimes, F: FnMut(f64, f64)>(
        &mut self,
        bytes: &[u8],
        t_play: f64,
        dt: f64,
        capture: &C,
        mut on_frame: F,
    ) {
        let fb = self.input.bytes() * self.format.channels as usize;
        let sample = self.input;
        let stream = self.format.sample;
        let mut latency_done = false;
        for (k, frame) in bytes.chunks_exact(fb).enumerate() {
            self.counts.frames += 1;
            // Fast path: the exact next frame.
            if self.state == State::Sync {
                let next = self.pos + 1.0;
                let n = next as u64;
                if next.fract() == 0.0 && frame_is_ramp(sample, stream, frame, n, &mut self.got) {
                    self.tentative = false;
                    self.pos = next;
                    self.counts.bit_exact += 1;
                    self.counts.in_sync += 1;
                    on_frame(next, t_play + k as f64 * dt);
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
                            on_frame(abs, t);
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

/// Decodes `frame` (in `sample`) into `got` and says whether it is exactly ramp frame `n` of a
/// `stream`-format source.
#[inline]
fn frame_is_ramp(
    sample: SampleFormat,
    stream: SampleFormat,
    frame: &[u8],
    n: u64,
    got: &mut [i32],
) -> bool {
    if sample == SampleFormat::S16Le && stream == sample && got.len() == 2 {
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
        .all(|(c, &v)| v == ramp_sample(stream, n, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::signal::{CaptureHistory, Source, SourceKind};

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
