//! What the fidelity analyzer reports: THD+N percentiles, wow & flutter, and the per-window
//! series for a plot.

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
    /// Windows after the settling time whose THD+N is
    /// [`OUTLIER_ABOVE_MEDIAN_DB`](super::OUTLIER_ABOVE_MEDIAN_DB) or more above the median.
    pub outlier_windows: u64,
}

/// A stretch of consecutive windows, one point of the series over time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPoint {
    /// Where the first window starts, seconds of audio fed.
    pub t_s: f64,
    /// Worst THD+N of the windows, dB (NaN when all were silent).
    pub thdn_db: f64,
    /// Lowest frequency of the first tone over the windows, Hz (NaN when not known: silence,
    /// or the first window after it).
    pub freq_min_hz: f64,
    /// Highest frequency of the first tone, Hz.
    pub freq_max_hz: f64,
    /// Windows in the stretch.
    pub windows: u32,
}

impl FidelityReport {
    /// "997 Hz" or "18000 + 19000 Hz".
    pub fn tones_label(&self) -> String {
        match self.second_tone_hz {
            Some(f2) => format!("{} + {} Hz", self.tone_hz, f2),
            None => format!("{} Hz", self.tone_hz),
        }
    }
}

/// The one-line summary the text reports print (`thd+n_db: median … wow_flutter: …`).
impl core::fmt::Display for FidelityReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "thd+n_db: median {:.1}  p95 {:.1}  worst {:.1} (start-up included {:.1}) over {} windows of {}, {} outliers  wow_flutter: peak {:.5} %  rms {:.5} %",
            self.thdn.median_db,
            self.thdn.p95_db,
            self.thdn.worst_db,
            self.thdn.worst_with_startup_db,
            self.thdn.windows,
            self.tones_label(),
            self.thdn.outlier_windows,
            self.wow_flutter_peak_pct,
            self.wow_flutter_rms_pct,
        )
    }
}

impl WindowPoint {
    pub(super) fn merge(self, b: WindowPoint) -> WindowPoint {
        WindowPoint {
            t_s: self.t_s,
            thdn_db: self.thdn_db.max(b.thdn_db),
            freq_min_hz: self.freq_min_hz.min(b.freq_min_hz),
            freq_max_hz: self.freq_max_hz.max(b.freq_max_hz),
            windows: self.windows + b.windows,
        }
    }
}

/// What a [`FidelityAnalyzer`](super::FidelityAnalyzer) measured.
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
    /// The tone measured (the first one, with two tones), Hz.
    pub tone_hz: f64,
    /// The second tone, Hz, when there are two.
    pub second_tone_hz: Option<f64>,
}
