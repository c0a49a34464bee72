//! The monitor capture with a tone for a source (`hil-tests rig --source sine:HZ` or
//! `twotone:F1,F2`): THD+N and wow & flutter of what the receiver played (channel 3), measured
//! by the engine's [`FidelityAnalyzer`], with the source as the monitor heard it (channel 1)
//! measured alongside, as the rig's own floor.
//!
//! A tone does not name its frames as the ramp does, so neither latency nor gaps are measured
//! frame by frame here. What stands for gaps: the windows whose THD+N is 20 dB or more above the
//! median ([`ThdnStats::outlier_windows`](engine::sim::fidelity::ThdnStats)); a gap, a slip or
//! a burst of noise lies in each (one window may hold several).
//!
//! The measured span starts at the first played frame that is not silence, as with the ramp;
//! windows starting before the settling time count only towards the start-up worst case.

use super::analysis::{MONITOR_FRAME_BYTES, MonitorReport};
use engine::format::{SampleFormat, StreamFormat};
use engine::sim::fidelity::{FidelityAnalyzer, FidelityReport, WindowPoint};
use engine::sim::signal::SourceKind;

/// A played sample at least this large (S16) ends the leading silence.
const SOUND_FROM: i16 = 16;

/// What the tone analysis measured.
#[derive(Clone, Debug)]
pub struct ToneReport {
    /// What the receiver played.
    pub played: FidelityReport,
    /// The played tone over time.
    pub series: Vec<WindowPoint>,
    /// The source as the monitor heard it (the rig's own floor).
    pub reference: FidelityReport,
}

/// Streams monitor frames through the tone analysis.
pub struct ToneAnalysis {
    rate: f64,
    played: FidelityAnalyzer,
    reference: FidelityAnalyzer,
    m: u64,
    /// Monitor frame where the source appeared.
    started: Option<u64>,
    first_played: Option<u64>,
    partial: Vec<u8>,
}

impl ToneAnalysis {
    /// An analysis of `source` at `rate` Hz over about `duration_s`, the first `settle_s` of
    /// it start-up; `None` for the ramp (which has its own analysis).
    pub fn new(rate: u32, source: SourceKind, settle_s: f64, duration_s: f64) -> Option<Self> {
        let format = StreamFormat::new(rate, 2, SampleFormat::S16Le)?;
        let make = || {
            FidelityAnalyzer::for_source(format, source, settle_s).map(|a| a.expecting(duration_s))
        };
        Some(ToneAnalysis {
            rate: rate as f64,
            played: make()?,
            reference: make()?,
            m: 0,
            started: None,
            first_played: None,
            partial: Vec::with_capacity(MONITOR_FRAME_BYTES),
        })
    }

    /// Frames measured so far (since the first played frame).
    pub fn measured_frames(&self) -> u64 {
        self.first_played.map_or(0, |f| self.m - f)
    }

    /// Whether the source has shown up on the monitor.
    pub fn source_seen(&self) -> bool {
        self.started.is_some()
    }

    /// Whether a played frame has shown up.
    pub fn played_seen(&self) -> bool {
        self.first_played.is_some()
    }

    /// Analyzes monitor bytes (4-channel S16_LE, any split) until `limit` frames have been
    /// measured; returns whether they have.
    pub fn feed(&mut self, mut bytes: &[u8], limit: u64) -> bool {
        if !self.partial.is_empty() {
            let take = (MONITOR_FRAME_BYTES - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < MONITOR_FRAME_BYTES {
                return false;
            }
            let frame: [u8; MONITOR_FRAME_BYTES] =
                self.partial[..].try_into().expect("a whole frame");
            self.partial.clear();
            if self.frame(&frame, limit) {
                return true;
            }
        }
        let mut frames = bytes.chunks_exact(MONITOR_FRAME_BYTES);
        for f in &mut frames {
            if self.frame(f, limit) {
                return true;
            }
        }
        self.partial.extend_from_slice(frames.remainder());
        false
    }

    fn frame(&mut self, f: &[u8], limit: u64) -> bool {
        if self.measured_frames() >= limit {
            return true;
        }
        let src = i16::from_le_bytes([f[0], f[1]]);
        let out = i16::from_le_bytes([f[4], f[5]]);
        if self.started.is_none() && src != 0 {
            self.started = Some(self.m);
        }
        if self.started.is_some()
            && self.first_played.is_none()
            && out.unsigned_abs() >= SOUND_FROM as u16
        {
            self.first_played = Some(self.m);
        }
        if self.first_played.is_some() {
            self.played.push(out as f64 / 32_768.0);
            self.reference.push(src as f64 / 32_768.0);
        }
        self.m += 1;
        false
    }

    /// The monitor's view for the report's common fields (no latency, no gaps: a tone cannot
    /// tell them frame by frame), and what the tone analysis measured.
    pub fn report(&self) -> (MonitorReport, ToneReport) {
        let played = self.played.report();
        let reference = self.reference.report();
        // As with the ramp: monitor frames after the source appeared, before the first played.
        let from = self.started.unwrap_or(self.m);
        let leading = self.first_played.unwrap_or(self.m).saturating_sub(from);
        let mon = MonitorReport {
            audio_seconds: self.measured_frames() as f64 / self.rate,
            gaps: 0,
            gap_frames: 0,
            max_gap_frames: 0,
            bit_exact_frames: 0,
            in_sync_frames: 0,
            checked_frames: self.measured_frames(),
            leading_frames: leading,
            slip_frames: 0.0,
            latency_p50_ms: f64::NAN,
            latency_p99_ms: f64::NAN,
            latency_max_ms: f64::NAN,
            latency_frames: 0,
            // The rig's own source faltering: its windows that went silent or stood out.
            source_breaks: reference.thdn.outlier_windows + reference.thdn.silent_windows,
            gap_list: Vec::new(),
            trace: Vec::new(),
        };
        (
            mon,
            ToneReport {
                played,
                series: self.played.series(),
                reference,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monitor frames: the source tone from frame `src_from`, the same tone played `delay`
    /// frames later; `out` may change what is played.
    fn monitor(
        frames: u64,
        src_from: u64,
        delay: u64,
        tone: impl Fn(u64) -> f64,
        out: impl Fn(u64, i16) -> i16,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        for m in 0..frames {
            let s = |n: Option<u64>| n.map_or(0, |n| (tone(n) * 32_768.0).round() as i16);
            let src = s(m.checked_sub(src_from));
            let played = out(m, s(m.checked_sub(src_from + delay)));
            for x in [src, src, played, played] {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v
    }

    fn sine(n: u64) -> f64 {
        0.5 * (std::f64::consts::TAU * 997.0 / 48_000.0 * n as f64).sin()
    }

    #[test]
    fn a_clean_tone_reads_the_16_bit_floor_and_start_up_is_skipped() {
        let source = SourceKind::Sine { freq_hz: 997.0 };
        let mut a = ToneAnalysis::new(48_000, source, 1.0, 10.0).unwrap();
        let bytes = monitor(48_000 * 12, 1000, 20_000, sine, |_, x| x);
        // Odd splits: frames across calls.
        let mut reached = false;
        for piece in bytes.chunks(4093) {
            if a.feed(piece, 48_000 * 10) {
                reached = true;
                break;
            }
        }
        assert!(reached);
        let (mon, t) = a.report();
        assert_eq!(mon.audio_seconds, 10.0);
        // The source's first nonzero frame is its second (sin 0 = 0), and so is the tone's.
        assert_eq!(mon.leading_frames, 20_000, "{mon:?}");
        assert_eq!(mon.source_breaks, 0);
        assert!((-93.0..-91.0).contains(&t.played.thdn.median_db), "{t:?}");
        assert!(
            (-93.0..-91.0).contains(&t.reference.thdn.median_db),
            "{t:?}"
        );
        assert_eq!(t.played.thdn.outlier_windows, 0);
        assert!(t.played.wow_flutter_rms_pct < 1e-4);
        assert!(!t.series.is_empty());
    }

    #[test]
    fn a_dropout_stands_out_as_an_outlier_window() {
        let source = SourceKind::Sine { freq_hz: 997.0 };
        let mut a = ToneAnalysis::new(48_000, source, 0.5, 10.0).unwrap();
        // 5 ms of silence 6 s into the played tone.
        let hole = 300_000..300_240;
        let bytes = monitor(48_000 * 11, 0, 0, sine, |m, x| {
            if hole.contains(&m) { 0 } else { x }
        });
        a.feed(&bytes, 48_000 * 10);
        let (_, t) = a.report();
        assert_eq!(t.played.thdn.outlier_windows, 1, "{t:?}");
        assert!(t.played.thdn.worst_db > -40.0, "{t:?}");
        assert_eq!(t.reference.thdn.outlier_windows, 0);
    }

    #[test]
    fn the_ramp_has_no_tone_analysis() {
        assert!(ToneAnalysis::new(48_000, SourceKind::Ramp, 1.0, 10.0).is_none());
    }
}
