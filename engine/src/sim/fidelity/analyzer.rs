//! The [`FidelityAnalyzer`]: cuts the played tone into windows, measures each window's THD+N
//! and the tone's frequency, and sums them up into a [`FidelityReport`].
//!
//! Allocates its buffers in [`FidelityAnalyzer::new`] (and [`FidelityAnalyzer::expecting`]);
//! [`FidelityAnalyzer::push`] never does.

use super::dsp::{
    fit_and_remove, fit_and_remove_two, goertzel, goertzel_plain, windowed_power, wrap,
};
use super::{
    COARSE, FidelityReport, HIST_BINS, HIST_LO_DB, HIST_STEP_DB, MAX_SERIES_POINTS, NOTCH_HZ,
    ONSET_GUARD_S, ONSET_LEVEL, OUTLIER_ABOVE_MEDIAN_DB, SILENT_BELOW_DB, ThdnStats, WINDOW,
    WindowPoint,
};
use crate::format::StreamFormat;
use crate::sim::signal::SourceKind;

/// Measures a played sine (see the module docs).
#[derive(Clone, Debug)]
pub struct FidelityAnalyzer {
    rate: f64,
    freq: f64,
    /// The second tone, Hz.
    freq2: Option<f64>,
    channels: usize,
    format: StreamFormat,
    full_scale: f64,
    window: Vec<f64>,
    /// The same window over half as many frames (two tones' frequencies are read with it).
    half_window: Vec<f64>,
    /// Window of the coarse frequency estimate's segments ([`COARSE`] frames).
    short_window: Vec<f64>,
    buf: Vec<f64>,
    /// What is left of a window once the fitted tone is taken out.
    residual: Vec<f64>,
    fill: usize,
    /// Samples still to skip before the first window: `None` until the tone has begun.
    onset_skip: Option<u64>,
    /// Bins of the measured exclusions: DC..20 Hz, and the tone ± 20 Hz.
    low_bins: std::ops::RangeInclusive<usize>,
    tone_bins: std::ops::RangeInclusive<usize>,
    /// The second tone ± 20 Hz (empty with one tone).
    tone2_bins: std::ops::RangeInclusive<usize>,
    window_power: f64,
    frames: u64,
    settle_frames: u64,
    hist: Vec<u32>,
    measured: u64,
    silent: u64,
    worst: f64,
    worst_all: f64,
    prev_phase: Option<f64>,
    /// Welford's running mean and sum of squares of the per-window frequency, after settling.
    f_count: u64,
    f_mean: f64,
    f_m2: f64,
    f_min: f64,
    f_max: f64,
    /// The series over time, its capacity fixed at construction.
    series: Vec<WindowPoint>,
    /// Windows per point of the series.
    series_group: u32,
    /// The point being filled.
    series_open: Option<WindowPoint>,
}

/// A 4-term Blackman-Harris window of `len` frames.
fn blackman_harris(len: usize) -> Vec<f64> {
    let n = len as f64;
    let (a0, a1, a2, a3) = (0.35875, 0.48829, 0.14128, 0.01168);
    (0..len)
        .map(|i| {
            let x = std::f64::consts::TAU * i as f64 / n;
            a0 - a1 * x.cos() + a2 * (2.0 * x).cos() - a3 * (3.0 * x).cos()
        })
        .collect()
}

impl FidelityAnalyzer {
    /// For a tone of `freq_hz` in `format`; windows that start before `settle_s` count only
    /// towards the start-up worst case.
    pub fn new(format: StreamFormat, freq_hz: f64, settle_s: f64) -> FidelityAnalyzer {
        FidelityAnalyzer::with_tones(format, freq_hz, None, settle_s)
    }

    /// For two tones of `f1_hz` and `f2_hz` (see the module docs); wow & flutter follows the
    /// first.
    pub fn new_two_tone(
        format: StreamFormat,
        f1_hz: f64,
        f2_hz: f64,
        settle_s: f64,
    ) -> FidelityAnalyzer {
        FidelityAnalyzer::with_tones(format, f1_hz, Some(f2_hz), settle_s)
    }

    /// For what `source` plays: `None` for the ramp, which has no tone to measure.
    pub fn for_source(
        format: StreamFormat,
        source: SourceKind,
        settle_s: f64,
    ) -> Option<FidelityAnalyzer> {
        match source {
            SourceKind::Ramp => None,
            SourceKind::Sine { freq_hz } => Some(Self::new(format, freq_hz, settle_s)),
            SourceKind::TwoTone { f1_hz, f2_hz } => {
                Some(Self::new_two_tone(format, f1_hz, f2_hz, settle_s))
            }
        }
    }

    /// Sizes the series over time for a run of `duration_s` seconds (at most
    /// [`MAX_SERIES_POINTS`] points, each covering as many windows as that takes). Allocates:
    /// call it before feeding.
    pub fn expecting(mut self, duration_s: f64) -> FidelityAnalyzer {
        let windows = (duration_s.max(0.0) * self.rate / WINDOW as f64).ceil();
        let windows = if windows.is_finite() {
            windows.min(1e15) as u64 + 1
        } else {
            u64::MAX
        };
        let group = windows.div_ceil(MAX_SERIES_POINTS as u64).clamp(1, 1 << 30);
        let points = windows.div_ceil(group).clamp(2, MAX_SERIES_POINTS as u64);
        self.series = Vec::with_capacity(points as usize);
        self.series_group = group as u32;
        self.series_open = None;
        self
    }

    fn with_tones(
        format: StreamFormat,
        freq_hz: f64,
        freq2_hz: Option<f64>,
        settle_s: f64,
    ) -> FidelityAnalyzer {
        let rate = format.rate as f64;
        let n = WINDOW as f64;
        let window = blackman_harris(WINDOW);
        let window_power = window.iter().map(|w| w * w).sum();
        let bin_hz = rate / n;
        // Bins up to N/2 − 1 are counted one-sided (a tone at the very top of the band is not
        // measurable, and must not count a bin twice).
        let top = WINDOW / 2 - 1;
        let notch = |f: f64| -> (usize, usize) {
            let lo = ((f - NOTCH_HZ) / bin_hz).ceil().max(0.0) as usize;
            let hi = ((f + NOTCH_HZ) / bin_hz).floor().max(0.0) as usize;
            (lo, hi.min(top))
        };
        let low_hi = (NOTCH_HZ / bin_hz).floor() as usize;
        let (t_lo, t_hi) = notch(freq_hz);
        // The exclusions must not overlap: a bin counts once. The lower tone's band comes first.
        let (tone_bins, tone2_bins) = match freq2_hz {
            None => (
                t_lo.max(low_hi + 1)..=t_hi,
                std::ops::RangeInclusive::new(1, 0),
            ),
            Some(f2) => {
                let (u_lo, u_hi) = notch(f2);
                if f2 >= freq_hz {
                    let a = t_lo.max(low_hi + 1)..=t_hi;
                    let b = u_lo.max(low_hi + 1).max(t_hi + 1)..=u_hi;
                    (a, b)
                } else {
                    let b = u_lo.max(low_hi + 1)..=u_hi;
                    let a = t_lo.max(low_hi + 1).max(u_hi + 1)..=t_hi;
                    (a, b)
                }
            }
        };
        FidelityAnalyzer {
            rate,
            freq: freq_hz,
            freq2: freq2_hz,
            channels: format.channels as usize,
            format,
            // Samples decode left-justified into an i32, whatever the format.
            full_scale: 2_147_483_648.0,
            window,
            half_window: if freq2_hz.is_some() {
                blackman_harris(WINDOW / 2)
            } else {
                Vec::new()
            },
            short_window: blackman_harris(COARSE),
            buf: vec![0.0; WINDOW],
            residual: vec![0.0; WINDOW],
            fill: 0,
            onset_skip: None,
            low_bins: 0..=low_hi,
            tone_bins,
            tone2_bins,
            window_power,
            frames: 0,
            settle_frames: (settle_s * rate) as u64,
            hist: vec![0; HIST_BINS],
            measured: 0,
            silent: 0,
            worst: f64::NEG_INFINITY,
            worst_all: f64::NEG_INFINITY,
            prev_phase: None,
            f_count: 0,
            f_mean: 0.0,
            f_m2: 0.0,
            f_min: f64::INFINITY,
            f_max: f64::NEG_INFINITY,
            series: Vec::with_capacity(MAX_SERIES_POINTS),
            series_group: 1,
            series_open: None,
        }
    }

    /// Feeds interleaved frames in the analyzer's format (channel 0 is measured).
    pub fn feed(&mut self, bytes: &[u8]) {
        let fb = self.format.frame_bytes();
        let sb = self.format.sample.bytes();
        for f in bytes.chunks_exact(fb) {
            let v = self.format.sample.decode(&f[..sb]) as f64 / self.full_scale;
            self.push(v);
        }
        debug_assert!(self.channels >= 1);
    }

    /// Feeds one sample of the tone, full scale ±1.
    pub fn push(&mut self, x: f64) {
        match self.onset_skip {
            None if x.abs() < ONSET_LEVEL => {
                self.frames += 1;
                return;
            }
            None => {
                self.onset_skip = Some((ONSET_GUARD_S * self.rate) as u64);
                self.frames += 1;
                return;
            }
            Some(n) if n > 0 => {
                self.onset_skip = Some(n - 1);
                self.frames += 1;
                return;
            }
            Some(_) => {}
        }
        self.buf[self.fill] = x;
        self.fill += 1;
        self.frames += 1;
        if self.fill == WINDOW {
            self.fill = 0;
            self.window_done(self.frames - WINDOW as u64);
        }
    }

    fn window_done(&mut self, start: u64) {
        let (db, freq) = self.measure_window(start);
        self.series_add(start, db, freq);
    }

    /// One window's THD+N (NaN when silent) and the first tone's mean frequency since the
    /// previous window (NaN when not known).
    fn measure_window(&mut self, start: u64) -> (f64, f64) {
        let settled = start >= self.settle_frames;
        let n = WINDOW as f64;
        let total = windowed_power(&self.buf, &self.window);
        // The phase of the tone's own frequency: across windows, the mean frequency (wow &
        // flutter); across the window's halves, the frequency the tone is fitted at.
        let z = goertzel(&self.buf, &self.window, self.freq / self.rate);
        let phase = z.arg();
        // Silence (before a stream): the tone far under a half-scale tone's level.
        let tone_level = 2.0 * z.norm_sqr() / n / self.window_power;
        if tone_level < 0.125 * 10f64.powf(SILENT_BELOW_DB / 10.0) || total <= 0.0 {
            self.silent += 1;
            self.prev_phase = None;
            return (f64::NAN, f64::NAN);
        }
        let expected = std::f64::consts::TAU * self.freq * n / self.rate;
        let mut freq_now = f64::NAN;
        if let Some(prev) = self.prev_phase {
            let d = wrap(phase - prev - expected);
            let f = self.freq + d * self.rate / (std::f64::consts::TAU * n);
            freq_now = f;
            if settled {
                self.f_count += 1;
                let delta = f - self.f_mean;
                self.f_mean += delta / self.f_count as f64;
                self.f_m2 += delta * (f - self.f_mean);
                self.f_min = self.f_min.min(f);
                self.f_max = self.f_max.max(f);
            }
        }
        self.prev_phase = Some(phase);
        // The notch: the tone fitted (frequency, amplitude, phase, offset) and taken out in the
        // time domain, as an analyzer's notch filter does, so the window's own leakage of the
        // tone does not count; what the stream did to it (a slip, a jump) stays in.
        match self.freq2 {
            None => {
                let freq = self.fit_frequency();
                fit_and_remove(
                    &self.buf,
                    &self.window,
                    freq / self.rate,
                    &mut self.residual,
                );
            }
            Some(f2) => {
                let c1 = self.fit_frequency_windowed(self.freq) / self.rate;
                let c2 = self.fit_frequency_windowed(f2) / self.rate;
                fit_and_remove_two(&self.buf, &self.window, c1, c2, &mut self.residual);
            }
        }
        let res_total = windowed_power(&self.residual, &self.window);
        let bin_power = |k: usize| -> f64 {
            let p = goertzel(&self.residual, &self.window, k as f64 / n).norm_sqr() / n;
            if k == 0 { p } else { 2.0 * p }
        };
        let low: f64 = self.low_bins.clone().map(bin_power).sum();
        let near: f64 = self.tone_bins.clone().map(bin_power).sum();
        let near2: f64 = self.tone2_bins.clone().map(bin_power).sum();
        let rest = (res_total - low - near - near2).max(total * 1e-20);
        let db = 10.0 * (rest / total).log10();
        self.worst_all = self.worst_all.max(db);
        if !settled {
            return (db, freq_now);
        }
        self.worst = self.worst.max(db);
        self.measured += 1;
        let i = ((db - HIST_LO_DB) / HIST_STEP_DB).floor();
        self.hist[(i.max(0.0) as usize).min(HIST_BINS - 1)] += 1;
        (db, freq_now)
    }

    /// Adds a window to the series; when the series is full, neighbouring points merge
    /// (in place: the series never grows beyond its capacity).
    fn series_add(&mut self, start: u64, db: f64, freq: f64) {
        let w = WindowPoint {
            t_s: start as f64 / self.rate,
            thdn_db: db,
            freq_min_hz: freq,
            freq_max_hz: freq,
            windows: 1,
        };
        let open = match self.series_open.take() {
            Some(p) => p.merge(w),
            None => w,
        };
        if open.windows < self.series_group {
            self.series_open = Some(open);
            return;
        }
        if self.series.capacity() < 2 {
            return;
        }
        if self.series.len() == self.series.capacity() {
            let half = self.series.len() / 2;
            for i in 0..half {
                self.series[i] = self.series[2 * i].merge(self.series[2 * i + 1]);
            }
            let odd = self.series.len() % 2 == 1;
            if odd {
                self.series[half] = self.series[2 * half];
            }
            self.series.truncate(half + odd as usize);
            self.series_group = self.series_group.saturating_mul(2);
        }
        self.series.push(open);
    }

    /// The THD+N and frequency of the windows over time (at most [`MAX_SERIES_POINTS`] + 1
    /// points). Allocates.
    pub fn series(&self) -> Vec<WindowPoint> {
        self.series
            .iter()
            .copied()
            .chain(self.series_open)
            .collect()
    }

    /// The tone's frequency within the current window, from its phase advance between the
    /// window's two halves.
    fn fit_frequency(&self) -> f64 {
        let h = WINDOW / 2;
        let f0 = self.coarse_frequency(self.freq);
        let c = f0 / self.rate;
        let a = goertzel_plain(&self.buf[..h], c);
        let b = goertzel_plain(&self.buf[h..], c);
        let expected = std::f64::consts::TAU * c * h as f64;
        let d = wrap(b.arg() - a.arg() - expected);
        f0 + d * self.rate / (std::f64::consts::TAU * h as f64)
    }

    /// The tone near `nominal` from the phase advance between two short windowed segments:
    /// unambiguous within ±rate / (2 · [`COARSE`]) (±23 Hz at 48 kHz, a 1000 ppm clock offset
    /// at 20 kHz), so the window halves' finer advance can be unwrapped around it.
    fn coarse_frequency(&self, nominal: f64) -> f64 {
        let n = COARSE;
        let c = nominal / self.rate;
        let a = goertzel(&self.buf[..n], &self.short_window, c);
        let b = goertzel(&self.buf[n..2 * n], &self.short_window, c);
        let expected = std::f64::consts::TAU * c * n as f64;
        let d = wrap(b.arg() - a.arg() - expected);
        nominal + d * self.rate / (std::f64::consts::TAU * n as f64)
    }

    /// Like [`fit_frequency`](Self::fit_frequency), for the tone nominally at `nominal` with
    /// another one beside it: each half is windowed, so the other tone does not leak into the
    /// phase.
    fn fit_frequency_windowed(&self, nominal: f64) -> f64 {
        let h = WINDOW / 2;
        let f0 = self.coarse_frequency(nominal);
        let c = f0 / self.rate;
        let a = goertzel(&self.buf[..h], &self.half_window, c);
        let b = goertzel(&self.buf[h..], &self.half_window, c);
        let expected = std::f64::consts::TAU * c * h as f64;
        let d = wrap(b.arg() - a.arg() - expected);
        f0 + d * self.rate / (std::f64::consts::TAU * h as f64)
    }

    /// Windows after the settling time whose THD+N is at least `db`.
    fn windows_from(&self, db: f64) -> u64 {
        let i = ((db - HIST_LO_DB) / HIST_STEP_DB).floor().max(0.0) as usize;
        self.hist.iter().skip(i).map(|&c| c as u64).sum()
    }

    /// The figures so far.
    pub fn report(&self) -> FidelityReport {
        let q = |p: f64| -> f64 {
            if self.measured == 0 {
                return f64::NAN;
            }
            let want = ((p * self.measured as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, &c) in self.hist.iter().enumerate() {
                seen += c as u64;
                if seen >= want {
                    return HIST_LO_DB + (i as f64 + 0.5) * HIST_STEP_DB;
                }
            }
            f64::NAN
        };
        let finite = |v: f64| if v.is_finite() { v } else { f64::NAN };
        let (peak, rms, mean) = if self.f_count >= 2 {
            let sd = (self.f_m2 / (self.f_count - 1) as f64).sqrt();
            let peak = (self.f_max - self.f_mean).max(self.f_mean - self.f_min);
            (
                100.0 * peak / self.f_mean,
                100.0 * sd / self.f_mean,
                self.f_mean,
            )
        } else {
            (f64::NAN, f64::NAN, f64::NAN)
        };
        FidelityReport {
            thdn: ThdnStats {
                median_db: q(0.5),
                p95_db: q(0.95),
                worst_db: finite(self.worst),
                worst_with_startup_db: finite(self.worst_all),
                windows: self.measured,
                silent_windows: self.silent,
                outlier_windows: if self.measured > 0 {
                    self.windows_from(q(0.5) + OUTLIER_ABOVE_MEDIAN_DB)
                } else {
                    0
                },
            },
            wow_flutter_peak_pct: peak,
            wow_flutter_rms_pct: rms,
            mean_freq_hz: mean,
            tone_hz: self.freq,
            second_tone_hz: self.freq2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    fn fmt(sample: SampleFormat) -> StreamFormat {
        StreamFormat::new(48_000, 2, sample).unwrap()
    }

    fn tone(a: &mut FidelityAnalyzer, seconds: f64, mut f: impl FnMut(u64) -> f64) {
        for n in 0..(seconds * 48_000.0) as u64 {
            a.push(f(n));
        }
    }

    #[test]
    fn a_pure_tone_reads_far_below_the_16_bit_floor() {
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S16Le), 997.0, 0.0);
        let w = std::f64::consts::TAU * 997.0 / 48_000.0;
        tone(&mut a, 5.0, |n| 0.5 * (w * n as f64).sin());
        let r = a.report();
        assert!(r.thdn.worst_db < -120.0, "{r:?}");
        assert!(r.wow_flutter_rms_pct < 1e-6, "{r:?}");
        assert!((r.mean_freq_hz - 997.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn a_16_bit_half_scale_tone_reads_its_floor() {
        let f = fmt(SampleFormat::S16Le);
        let mut a = FidelityAnalyzer::new(f, 997.0, 0.0);
        let w = std::f64::consts::TAU * 997.0 / 48_000.0;
        let mut bytes = Vec::new();
        for n in 0..48_000 * 5u64 {
            let v = (0.5 * 32768.0 * (w * n as f64).sin()).round() as i16;
            bytes.extend_from_slice(&v.to_le_bytes());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        a.feed(&bytes);
        let r = a.report();
        // Quantization noise of a half-scale 16-bit tone: about −92 dB unweighted, a little
        // above in windowed bands; the analyzer must neither hide nor exaggerate it.
        assert!((-95.0..-86.0).contains(&r.thdn.median_db), "{r:?}");
    }

    #[test]
    fn known_noise_and_harmonics_are_measured() {
        // A 3rd harmonic 60 dB under the tone: THD+N −60 dB.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S32Le), 997.0, 0.0);
        let w = std::f64::consts::TAU * 997.0 / 48_000.0;
        tone(&mut a, 5.0, |n| {
            let t = w * n as f64;
            0.5 * t.sin() + 0.0005 * (3.0 * t).sin()
        });
        let r = a.report();
        assert!((r.thdn.median_db + 60.0).abs() < 0.3, "{r:?}");
        assert!((r.thdn.p95_db - r.thdn.median_db).abs() < 0.2, "{r:?}");
    }

    #[test]
    fn a_slip_shows_as_a_bad_window_and_a_steady_offset_is_no_flutter() {
        // 100 ppm fast, and one dropped sample 2 s in.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S32Le), 997.0, 0.5);
        let w = std::f64::consts::TAU * 997.0 * (1.0 + 100e-6) / 48_000.0;
        tone(&mut a, 6.0, |n| {
            let k = if n >= 96_000 { n + 1 } else { n };
            0.5 * (w * k as f64).sin()
        });
        let r = a.report();
        assert!(r.thdn.median_db < -120.0, "{r:?}");
        assert!(r.thdn.worst_db > -60.0, "the slip's window: {r:?}");
        assert!(
            (r.mean_freq_hz - 997.0 * (1.0 + 100e-6)).abs() < 0.01,
            "{r:?}"
        );
        // The slip itself is a phase jump: one window's frequency moves, the rest do not.
        assert!(r.wow_flutter_peak_pct > 0.001, "{r:?}");
    }

    #[test]
    fn a_wobbling_clock_is_flutter() {
        // ±0.1 % frequency modulation at 0.5 Hz: RMS ≈ 0.0707 %.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S32Le), 997.0, 0.0);
        let mut phase = 0.0f64;
        tone(&mut a, 20.0, |n| {
            let t = n as f64 / 48_000.0;
            let f = 997.0 * (1.0 + 1e-3 * (std::f64::consts::TAU * 0.5 * t).sin());
            phase += std::f64::consts::TAU * f / 48_000.0;
            0.5 * phase.sin()
        });
        let r = a.report();
        assert!((r.wow_flutter_rms_pct - 0.0707).abs() < 0.01, "{r:?}");
        assert!((r.wow_flutter_peak_pct - 0.1).abs() < 0.02, "{r:?}");
    }

    /// Half-scale total, a quarter each: 18 and 19 kHz.
    fn two_tones(n: u64, f1: f64, f2: f64) -> f64 {
        let (w1, w2) = (
            std::f64::consts::TAU * f1 / 48_000.0,
            std::f64::consts::TAU * f2 / 48_000.0,
        );
        0.25 * ((w1 * n as f64).sin() + (w2 * n as f64).sin())
    }

    /// 16-bit interleaved stereo of `x`, rounded to nearest.
    fn s16(seconds: f64, mut x: impl FnMut(u64) -> f64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in 0..(seconds * 48_000.0) as u64 {
            let v = (x(n) * 32768.0).round() as i16;
            bytes.extend_from_slice(&v.to_le_bytes());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn two_pure_tones_read_far_below_the_16_bit_floor() {
        for (f1, f2) in [(18_000.0, 19_000.0), (997.0, 1997.0), (19_000.0, 18_000.0)] {
            let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S32Le), f1, f2, 0.0);
            tone(&mut a, 5.0, |n| two_tones(n, f1, f2));
            let r = a.report();
            assert!(r.thdn.worst_db < -120.0, "{f1} {f2}: {r:?}");
            assert!((r.mean_freq_hz - f1).abs() < 1e-6, "{r:?}");
            assert!(r.wow_flutter_rms_pct < 1e-6, "{r:?}");
            assert_eq!(r.second_tone_hz, Some(f2));
        }
    }

    #[test]
    fn a_16_bit_two_tone_reads_the_quantization_floor() {
        // Two quarter-scale tones: 0.0625 of power over the rounding noise's Δ²/12
        // (Δ = 2⁻¹⁵): −89.1 dB, and the exclusion bands take a little of the noise out.
        let theory = 10.0 * ((1.0f64 / 32768.0).powi(2) / 12.0 / 0.0625).log10();
        let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S16Le), 18e3, 19e3, 0.0);
        a.feed(&s16(10.0, |n| two_tones(n, 18e3, 19e3)));
        let r = a.report();
        println!("theory {theory:.2} dB: {r:?}");
        assert!((r.thdn.median_db - theory).abs() < 1.0, "{theory}: {r:?}");
        assert!(r.thdn.p95_db - r.thdn.median_db < 1.0, "{r:?}");
        assert_eq!(r.thdn.outlier_windows, 0, "{r:?}");
    }

    #[test]
    fn a_spur_80_db_down_is_caught_beside_two_tones() {
        // What a resampler's alias or the tones' intermodulation would add, at −80 dB of the
        // total power: 2·f1 − f2 (17 kHz), a spur 50 Hz off a tone (outside its ±20 Hz), a
        // low one.
        let total = 0.0625;
        let amp = (2.0 * total * 1e-8f64).sqrt();
        for spur in [17_000.0, 19_050.0, 5_000.0, 47.0] {
            let w = std::f64::consts::TAU * spur / 48_000.0;
            let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S32Le), 18e3, 19e3, 0.0);
            tone(&mut a, 5.0, |n| {
                two_tones(n, 18e3, 19e3) + amp * (w * n as f64 + 0.3).sin()
            });
            let r = a.report();
            assert!((r.thdn.median_db + 80.0).abs() < 0.5, "{spur} Hz: {r:?}");
            // Over 16-bit quantization (−89 dB) it still stands out.
            let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S16Le), 18e3, 19e3, 0.0);
            a.feed(&s16(5.0, |n| {
                two_tones(n, 18e3, 19e3) + amp * (w * n as f64 + 0.3).sin()
            }));
            let r16 = a.report();
            assert!(
                (-80.5..-78.5).contains(&r16.thdn.median_db),
                "{spur} Hz, 16 bit: {r16:?}"
            );
        }
    }

    #[test]
    fn two_tones_follow_the_first_for_wow_and_flutter() {
        // 100 ppm fast: both tones move, the mean frequency is the first one's.
        let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S32Le), 997.0, 1997.0, 0.0);
        let k = 1.0 + 100e-6;
        tone(&mut a, 6.0, |n| two_tones(n, 997.0 * k, 1997.0 * k));
        let r = a.report();
        assert!((r.mean_freq_hz - 997.0 * k).abs() < 1e-4, "{r:?}");
        // Fitted at their own frequencies, the offset tones are still taken out cleanly.
        assert!(r.thdn.worst_db < -110.0, "{r:?}");
    }

    #[test]
    fn the_series_is_bounded_and_keeps_the_worst_window() {
        // 30 s planned: 176 windows, one point each. A slip 20 s in shows in its point.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S32Le), 997.0, 0.0).expecting(30.0);
        let cap = a.series.capacity();
        assert!((176..=200).contains(&cap), "{cap}");
        let w = std::f64::consts::TAU * 997.0 / 48_000.0;
        tone(&mut a, 30.0, |n| {
            let k = if n >= 960_000 { n + 1 } else { n };
            0.5 * (w * k as f64).sin()
        });
        let s = a.series();
        assert_eq!(s.len(), 30 * 48_000 / WINDOW);
        assert_eq!(a.series.capacity(), cap, "no reallocation");
        let worst = s
            .iter()
            .max_by(|a, b| a.thdn_db.total_cmp(&b.thdn_db))
            .unwrap();
        assert!(
            (worst.t_s - 20.0).abs() < 0.2 && worst.thdn_db > -60.0,
            "{worst:?}"
        );
        assert!(
            s.iter()
                .skip(1)
                .all(|p| (p.freq_min_hz - 997.0).abs() < 0.5)
        );
        assert_eq!(a.report().thdn.outlier_windows, 1);

        // Fed far longer than planned: points merge, the series stays within its capacity.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S32Le), 997.0, 0.0).expecting(5.0);
        let cap = a.series.capacity();
        tone(&mut a, 60.0, |n| 0.5 * (w * n as f64).sin());
        let s = a.series();
        assert!(
            s.len() <= cap + 1 && s.len() >= cap / 2,
            "{} of {cap}",
            s.len()
        );
        assert_eq!(a.series.capacity(), cap);
        let windows: u32 = s.iter().map(|p| p.windows).sum();
        assert_eq!(windows as usize, 60 * 48_000 / WINDOW);
        assert!(s.windows(2).all(|p| p[0].t_s < p[1].t_s));

        // A day, planned: at most MAX_SERIES_POINTS.
        let a = FidelityAnalyzer::new(fmt(SampleFormat::S16Le), 997.0, 0.0).expecting(86_400.0);
        assert!(a.series.capacity() <= MAX_SERIES_POINTS + 8);
        assert!(a.series_group > 1);
    }

    #[test]
    fn odd_tones_do_not_panic() {
        for (f1, f2) in [
            (23_999.0, 24_500.0),
            (0.0, 5.0),
            (f64::NAN, 1000.0),
            (1000.0, 1000.0),
        ] {
            let mut a = FidelityAnalyzer::new_two_tone(fmt(SampleFormat::S16Le), f1, f2, 0.0);
            tone(&mut a, 1.0, |n| two_tones(n, 1000.0, 2000.0));
            let _ = a.report();
        }
        let mut a =
            FidelityAnalyzer::new(fmt(SampleFormat::S16Le), f64::INFINITY, 0.0).expecting(f64::NAN);
        tone(&mut a, 1.0, |n| (n as f64).sin());
        let _ = a.report();
    }

    #[test]
    fn silence_is_counted_apart() {
        // Before the tone: not windowed at all.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S16Le), 997.0, 0.0);
        tone(&mut a, 1.0, |_| 0.0);
        let r = a.report();
        assert_eq!(r.thdn.windows, 0);
        assert!(r.thdn.median_db.is_nan());
        // After it (a stream that stopped): windows counted apart, not measured.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S16Le), 997.0, 0.0);
        tone(&mut a, 3.0, |n| {
            let t = n as f64 / 48_000.0;
            if t < 1.5 {
                0.5 * (std::f64::consts::TAU * 997.0 * t).sin()
            } else {
                0.0
            }
        });
        let r = a.report();
        assert!(r.thdn.silent_windows >= 5, "{r:?}");
        assert!(r.thdn.windows >= 7, "{r:?}");
    }

    #[test]
    fn windows_start_after_the_tone_is_switched_on() {
        // Half a second of silence, then a tone switched on at an arbitrary phase: no window
        // straddles the switch, so even the first one reads the 16-bit floor.
        let mut a = FidelityAnalyzer::new(fmt(SampleFormat::S16Le), 997.0, 10.0);
        tone(&mut a, 3.0, |n| {
            let t = n as f64 / 48_000.0 - 0.5;
            if t < 0.0 {
                0.0
            } else {
                let v = 0.5 * (std::f64::consts::TAU * 997.0 * t + 1.0).sin();
                (v * 32_768.0).round() / 32_768.0
            }
        });
        let r = a.report();
        assert!(r.thdn.worst_with_startup_db < -90.0, "{r:?}");
    }
}
