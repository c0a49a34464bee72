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
//! A 16-bit half-scale tone reads about −92 dB, the format's own floor (rounding noise).
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
//! Windows 20 dB or more above the median are counted as outliers: with a tone for a source,
//! where the frame-index ramp cannot say where a gap is, each holds a gap, a slip or a burst of
//! noise.
//!
//! **Two tones** ([`FidelityAnalyzer::new_two_tone`], e.g. 18 and 19 kHz at a quarter of full
//! scale each): both are fitted together (each one's frequency from its phase advance across
//! the window's halves, then amplitudes, phases and offset by one weighted least-squares fit)
//! and taken out; ±20 Hz around each and below 20 Hz are excluded, and THD+N is what is left
//! over the total. Their intermodulation products and whatever a resampler aliases or images
//! near the top of the band fall in the measured band. Wow & flutter follows the first tone.
//!
//! **Over time.** Every window's THD+N and the first tone's frequency also go into a series of
//! at most [`MAX_SERIES_POINTS`] points (the worst THD+N and the frequency's range over a run of
//! windows, merged pairwise when the series fills up), for a plot.
//!
//! Allocates its buffers in [`FidelityAnalyzer::new`] (and [`FidelityAnalyzer::expecting`]);
//! [`FidelityAnalyzer::push`] never does.

mod analyzer;
mod dsp;
mod report;

pub use analyzer::FidelityAnalyzer;
pub use report::{FidelityReport, ThdnStats, ThdnSummary, WindowPoint, WowFlutterSummary};

/// Frames per analysis window.
pub const WINDOW: usize = 8192;
/// Frames of each of the two segments of the coarse frequency estimate.
const COARSE: usize = 1024;
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
/// A window this much above the median THD+N is an outlier.
pub const OUTLIER_ABOVE_MEDIAN_DB: f64 = 20.0;
/// Most points of the per-window series.
pub const MAX_SERIES_POINTS: usize = 2000;
