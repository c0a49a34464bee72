//! How much a stream changed the sound: THD+N of a sine and its wow & flutter, measured the way
//! an audio analyzer does, from the played samples alone (never from the engine's counters).
//!
//! **THD+N.** The played tone (channel 0) is cut into windows of [`WINDOW`] frames, each
//! weighted by a 4-term Blackman-Harris window. Within a window, THD+N is the power of
//! everything above 20 Hz and outside ±20 Hz of the tone, over the total power, in dB. The tone
//! is first fitted (its frequency from the phase advance across the window, then amplitude,
//! phase and offset by weighted least squares) and taken out in the time domain, as an
//! analyzer's notch filter does: at 8192 frames the window's main lobe (±4 bins, ±23 Hz at
//! 48 kHz) is wider than the ±20 Hz band, and its leakage alone would read −81 dB. Of what is
//! left, only the few DFT bins that the two exclusions cover are computed (Goertzel); the rest
//! follows from Parseval's theorem, so a window costs a few passes over its samples, no FFT. The per-window figures go into a fixed histogram (0.05 dB steps), so the median, the
//! 95th percentile and the worst window come out of a run of any length without allocating.
//! A 16-bit half-scale tone reads about −92 dB, the format's own floor.
//!
//! **Wow & flutter.** The tone's phase at the start of each window (a DFT at the tone's exact
//! frequency) gives its mean frequency over the window, from the phase advance between windows.
//! Its deviation from the mean over the run, after the settling time, is reported peak and RMS,
//! in percent of the tone. A clock offset (drift in ppm) moves the mean only, not the deviation.
//! Windows are [`WINDOW`] frames apart (about 5.9 a second at 48 kHz), which sees the slow
//! wobble of a correction loop; a standard wow & flutter meter's weighting filter is not applied.
//!
//! Windows whose level is more than 40 dB under the tone's (silence before a stream) are counted
//! apart and not measured: a gap inside a window shows as a bad THD+N, which is the point.
//! The first window starts [`ONSET_GUARD_S`] after the tone's first sample: a tone switched on
//! (and the receiver's fade-in from silence) is not a sine, so no analyzer measures across the
//! switch; from there on every window counts, the start-up ones towards `worst_with_startup`.
//!
//! Allocates its buffers in [`FidelityAnalyzer::new`]; [`FidelityAnalyzer::push`] never does.

use crate::format::StreamFormat;

/// Frames per analysis window.
pub const WINDOW: usize = 8192;
/// Half-width of the tone's exclusion band, and the low edge of the measured band, Hz.
const NOTCH_HZ: f64 = 20.0;
/// Histogram range and step, dB.
const HIST_LO_DB: f64 = -200.0;
const HIST_STEP_DB: f64 = 0.05;
const HIST_BINS: usize = 4200;
/// Windows start this long after the first sample louder than [`ONSET_LEVEL`], seconds.
pub const ONSET_GUARD_S: f64 = 0.005;
/// The tone has begun once a sample is this loud (full scale 1): 40 dB under a half-scale tone.
const ONSET_LEVEL: f64 = 0.005;
/// A window quieter than the tone by this much is silence, not measured.
const SILENT_BELOW_DB: f64 = -40.0;

/// THD+N percentiles over the measured windows, dB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThdnStats {
    /// Median.
    pub median_db: f64,
    /// 95th percentile (the worse side).
    pub p95_db: f64,
    /// Worst window after the settling time.
    pub worst_db: f64,
    /// Worst window of the whole run, start-up included.
    pub worst_with_startup_db: f64,
    /// Windows measured after the settling time.
    pub windows: u64,
    /// Windows skipped as silence.
    pub silent_windows: u64,
}

/// What a [`FidelityAnalyzer`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FidelityReport {
    /// THD+N of the tone.
    pub thdn: ThdnStats,
    /// Wow & flutter: the tone's largest frequency deviation from its mean, % of the tone.
    pub wow_flutter_peak_pct: f64,
    /// Wow & flutter, RMS, %.
    pub wow_flutter_rms_pct: f64,
    /// The tone's mean frequency after settling, Hz (the clock offset shows here).
    pub mean_freq_hz: f64,
}

/// Measures a played sine (see the module docs).
#[derive(Clone, Debug)]
pub struct FidelityAnalyzer {
    rate: f64,
    freq: f64,
    channels: usize,
    format: StreamFormat,
    full_scale: f64,
    window: Vec<f64>,
    buf: Vec<f64>,
    /// What is left of a window once the fitted tone is taken out.
    residual: Vec<f64>,
    fill: usize,
    /// Samples still to skip before the first window: `None` until the tone has begun.
    onset_skip: Option<u64>,
    /// Bins of the measured exclusions: DC..20 Hz, and the tone ± 20 Hz.
    low_bins: std::ops::RangeInclusive<usize>,
    tone_bins: std::ops::RangeInclusive<usize>,
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
}

impl FidelityAnalyzer {
    /// For a tone of `freq_hz` in `format`; windows that start before `settle_s` count only
    /// towards the start-up worst case.
    pub fn new(format: StreamFormat, freq_hz: f64, settle_s: f64) -> FidelityAnalyzer {
        let rate = format.rate as f64;
        let n = WINDOW as f64;
        let (a0, a1, a2, a3) = (0.35875, 0.48829, 0.14128, 0.01168);
        let window: Vec<f64> = (0..WINDOW)
            .map(|i| {
                let x = std::f64::consts::TAU * i as f64 / n;
                a0 - a1 * x.cos() + a2 * (2.0 * x).cos() - a3 * (3.0 * x).cos()
            })
            .collect();
        let window_power = window.iter().map(|w| w * w).sum();
        let bin_hz = rate / n;
        let low_hi = (NOTCH_HZ / bin_hz).floor() as usize;
        let t_lo = ((freq_hz - NOTCH_HZ) / bin_hz).ceil().max(0.0) as usize;
        let t_hi = ((freq_hz + NOTCH_HZ) / bin_hz).floor() as usize;
        let bytes = format.sample.bytes();
        FidelityAnalyzer {
            rate,
            freq: freq_hz,
            channels: format.channels as usize,
            format,
            full_scale: (1u64 << (8 * bytes.min(4) - 1)) as f64,
            window,
            buf: vec![0.0; WINDOW],
            residual: vec![0.0; WINDOW],
            fill: 0,
            onset_skip: None,
            low_bins: 0..=low_hi,
            tone_bins: t_lo.max(low_hi + 1)..=t_hi,
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
        let settled = start >= self.settle_frames;
        let n = WINDOW as f64;
        let total = windowed_power(&self.buf, &self.window);
        // The phase of the tone's own frequency: across windows, the mean frequency (wow &
        // flutter); across the window's halves, the frequency the tone is fitted at.
        let z = goertzel(&self.buf, &self.window, self.freq / self.rate);
        let phase = z.arg();
        let expected = std::f64::consts::TAU * self.freq * n / self.rate;
        if let Some(prev) = self.prev_phase.filter(|_| settled) {
            let d = wrap(phase - prev - expected);
            let f = self.freq + d * self.rate / (std::f64::consts::TAU * n);
            self.f_count += 1;
            let delta = f - self.f_mean;
            self.f_mean += delta / self.f_count as f64;
            self.f_m2 += delta * (f - self.f_mean);
            self.f_min = self.f_min.min(f);
            self.f_max = self.f_max.max(f);
        }
        // Silence (before a stream): the tone far under a half-scale tone's level.
        let tone_level = 2.0 * z.norm_sqr() / n / self.window_power;
        if tone_level < 0.125 * 10f64.powf(SILENT_BELOW_DB / 10.0) || total <= 0.0 {
            self.silent += 1;
            self.prev_phase = None;
            return;
        }
        self.prev_phase = Some(phase);
        // The notch: the tone fitted (frequency, amplitude, phase, offset) and taken out in the
        // time domain, as an analyzer's notch filter does, so the window's own leakage of the
        // tone does not count; what the stream did to it (a slip, a jump) stays in.
        let freq = self.fit_frequency();
        fit_and_remove(
            &self.buf,
            &self.window,
            freq / self.rate,
            &mut self.residual,
        );
        let res_total = windowed_power(&self.residual, &self.window);
        let bin_power = |k: usize| -> f64 {
            let p = goertzel(&self.residual, &self.window, k as f64 / n).norm_sqr() / n;
            if k == 0 { p } else { 2.0 * p }
        };
        let low: f64 = self.low_bins.clone().map(bin_power).sum();
        let near: f64 = self.tone_bins.clone().map(bin_power).sum();
        let rest = (res_total - low - near).max(total * 1e-20);
        let db = 10.0 * (rest / total).log10();
        self.worst_all = self.worst_all.max(db);
        if !settled {
            return;
        }
        self.worst = self.worst.max(db);
        self.measured += 1;
        let i = ((db - HIST_LO_DB) / HIST_STEP_DB).floor();
        self.hist[(i.max(0.0) as usize).min(HIST_BINS - 1)] += 1;
    }

    /// The tone's frequency within the current window, from its phase advance between the
    /// window's two halves.
    fn fit_frequency(&self) -> f64 {
        let h = WINDOW / 2;
        let c = self.freq / self.rate;
        let a = goertzel_plain(&self.buf[..h], c);
        let b = goertzel_plain(&self.buf[h..], c);
        let expected = std::f64::consts::TAU * c * h as f64;
        let d = wrap(b.arg() - a.arg() - expected);
        self.freq + d * self.rate / (std::f64::consts::TAU * h as f64)
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
            },
            wow_flutter_peak_pct: peak,
            wow_flutter_rms_pct: rms,
            mean_freq_hz: mean,
        }
    }
}

/// Σ(x·w)²: by Parseval, Σ_k |X_k|² / N over every bin of the windowed DFT.
fn windowed_power(x: &[f64], w: &[f64]) -> f64 {
    x.iter().zip(w).map(|(x, w)| (x * w) * (x * w)).sum()
}

/// The DFT of `x` (unwindowed) at `cycles` per sample.
fn goertzel_plain(x: &[f64], cycles: f64) -> Complex {
    let omega = std::f64::consts::TAU * cycles;
    let (mut re, mut im) = (0.0, 0.0);
    // A rotating phasor: one complex multiply per sample, no trigonometry in the loop.
    let (c, s) = (omega.cos(), -omega.sin());
    let (mut pr, mut pi) = (1.0f64, 0.0f64);
    for &v in x {
        re += v * pr;
        im += v * pi;
        let t = pr * c - pi * s;
        pi = pr * s + pi * c;
        pr = t;
    }
    Complex { re, im }
}

/// Fits `a·cos(ωn) + b·sin(ωn) + c` to `x` by least squares weighted with `w`, and writes
/// `x` minus the fit into `out`.
fn fit_and_remove(x: &[f64], w: &[f64], cycles: f64, out: &mut [f64]) {
    let omega = std::f64::consts::TAU * cycles;
    let (rc, rs) = (omega.cos(), omega.sin());
    // Normal equations of the weighted fit, in the basis (cos, sin, 1).
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    let (mut co, mut si) = (1.0f64, 0.0f64);
    for (&xn, &wn) in x.iter().zip(w) {
        let basis = [co, si, 1.0];
        for i in 0..3 {
            v[i] += wn * xn * basis[i];
            for j in 0..3 {
                m[i][j] += wn * basis[i] * basis[j];
            }
        }
        let t = co * rc - si * rs;
        si = co * rs + si * rc;
        co = t;
    }
    let p = solve3(m, v).unwrap_or([0.0; 3]);
    let (mut co, mut si) = (1.0f64, 0.0f64);
    for (o, &xn) in out.iter_mut().zip(x) {
        *o = xn - (p[0] * co + p[1] * si + p[2]);
        let t = co * rc - si * rs;
        si = co * rs + si * rc;
        co = t;
    }
}

/// Solves `m·p = v` (Cramer's rule); `None` when `m` is singular.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |a: [[f64; 3]; 3]| -> f64 {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-300 {
        return None;
    }
    let mut p = [0.0; 3];
    for (k, pk) in p.iter_mut().enumerate() {
        let mut a = m;
        for i in 0..3 {
            a[i][k] = v[i];
        }
        *pk = det(a) / d;
    }
    Some(p)
}

/// A complex number, just enough for one DFT bin.
#[derive(Clone, Copy, Debug)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }
}

/// The DFT of `x·w` at `cycles` per sample (any real frequency, not only a bin), by Goertzel's
/// recurrence: X = Σ x[n]·w[n]·e^{−iωn}.
fn goertzel(x: &[f64], w: &[f64], cycles: f64) -> Complex {
    let omega = std::f64::consts::TAU * cycles;
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (a, b) in x.iter().zip(w) {
        let s = a * b + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    // After N steps: X·e^{iω(N−1)} = s1 − e^{−iω}·s2.
    let re = s1 - omega.cos() * s2;
    let im = omega.sin() * s2;
    let n1 = (x.len() - 1) as f64;
    let (c, s) = ((omega * n1).cos(), (omega * n1).sin());
    // Multiply by e^{−iω(N−1)}.
    Complex {
        re: re * c + im * s,
        im: im * c - re * s,
    }
}

/// `a` wrapped into (−π, π].
fn wrap(a: f64) -> f64 {
    let t = std::f64::consts::TAU;
    a - t * ((a + std::f64::consts::PI) / t).floor()
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
    fn goertzel_is_the_dft() {
        let n = 64;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let w = vec![1.0; n];
        for k in [0usize, 1, 5, 31] {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in x.iter().enumerate() {
                let a = -std::f64::consts::TAU * (k * i) as f64 / n as f64;
                re += v * a.cos();
                im += v * a.sin();
            }
            let g = goertzel(&x, &w, k as f64 / n as f64);
            assert!((g.re - re).abs() < 1e-9 && (g.im - im).abs() < 1e-9, "{k}");
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
