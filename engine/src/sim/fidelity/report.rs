//! What the fidelity analyzer reports: THD+N percentiles, wow & flutter, and the per-window
//! series for a plot.

use serde::Serialize;

/// THD+N percentiles over the measured windows, dB. Serialises as the reports' `thdn_db` object
/// gives them: `median`, `p95`, `worst`, `worst_with_startup` (null when not finite) and the
/// window counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ThdnStats {
    /// Median.
    #[serde(rename = "median")]
    pub median_db: f64,
    /// 95th percentile (the worse side).
    #[serde(rename = "p95")]
    pub p95_db: f64,
    /// Worst window after the settling time.
    #[serde(rename = "worst")]
    pub worst_db: f64,
    /// Worst window of the whole run, start-up included.
    #[serde(rename = "worst_with_startup")]
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

    /// The THD+N part of the JSON reports (`thdn_db`).
    pub fn thdn_summary(&self) -> ThdnSummary {
        ThdnSummary {
            thdn: self.thdn,
            tones_hz: std::iter::once(self.tone_hz)
                .chain(self.second_tone_hz)
                .collect(),
        }
    }

    /// The wow & flutter part of the JSON reports (`wow_flutter_pct`).
    pub fn wow_flutter_summary(&self) -> WowFlutterSummary {
        WowFlutterSummary {
            peak: self.wow_flutter_peak_pct,
            rms: self.wow_flutter_rms_pct,
            mean_freq_hz: self.mean_freq_hz,
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

/// THD+N as the JSON reports give it (`thdn_db`): [`ThdnStats`] and the tones measured.
#[derive(Clone, Debug, Serialize)]
pub struct ThdnSummary {
    /// The percentiles and window counts.
    #[serde(flatten)]
    pub thdn: ThdnStats,
    /// The tones, Hz: one, or two.
    pub tones_hz: Vec<f64>,
}

/// Wow & flutter as the JSON reports give it (`wow_flutter_pct`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct WowFlutterSummary {
    /// Largest deviation from the mean frequency, % of the tone.
    pub peak: f64,
    /// RMS deviation, %.
    pub rms: f64,
    /// The mean frequency after settling, Hz.
    pub mean_freq_hz: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summaries_serialise_with_the_reports_keys() {
        let f = FidelityReport {
            thdn: ThdnStats {
                median_db: -90.5,
                p95_db: -89.0,
                worst_db: f64::NAN,
                worst_with_startup_db: -60.0,
                windows: 10,
                silent_windows: 1,
                outlier_windows: 0,
            },
            wow_flutter_peak_pct: 0.002,
            wow_flutter_rms_pct: 0.001,
            mean_freq_hz: 997.0,
            tone_hz: 18000.0,
            second_tone_hz: Some(19000.0),
        };
        assert_eq!(
            serde_json::to_value(f.thdn_summary()).unwrap(),
            json!({
                "median": -90.5, "p95": -89.0, "worst": null, "worst_with_startup": -60.0,
                "windows": 10, "silent_windows": 1, "outlier_windows": 0,
                "tones_hz": [18000.0, 19000.0],
            })
        );
        assert_eq!(
            serde_json::to_value(f.wow_flutter_summary()).unwrap(),
            json!({ "peak": 0.002, "rms": 0.001, "mean_freq_hz": 997.0 })
        );
    }
}
