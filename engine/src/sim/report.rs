//! What a simulation run reports: the analyzer's findings, the engine's counters, loss
//! recovery's costs and a trace of the drift loop; with several receivers, each one's figures
//! and the skew between them.

use super::config::SimReceiver;
use super::fidelity;
use super::net::NetCounters;
use super::signal::{AnalyzerCounts, GapRecord};
use super::skew::SkewReport;
use crate::recovery::RecoveryMode;
use crate::stats::StatsSnapshot;

/// What a run measured. The analyzer's and the receiver's figures are receiver 0's (the only
/// one's in a one-receiver run; every receiver's are in `receivers`). Of loss recovery, the
/// traffic (NACKs sent and delivered, packets sent again, their bytes) is all receivers'
/// together, the outcome (recovered, expired, round trip) receiver 0's.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// Audio streamed, seconds.
    pub audio_seconds: f64,
    /// What the analyzer saw.
    pub analyzer: AnalyzerCounts,
    /// Gaps the analyzer saw (at most 10 000 kept).
    pub gaps: Vec<GapRecord>,
    /// Latency percentiles after settling, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Highest.
    pub latency_max_ms: f64,
    /// The receiver's own counters.
    pub engine: StatsSnapshot,
    /// What the network did.
    pub net: NetCounters,
    /// Net frames slipped as heard by the analyzer.
    pub analyzer_slip_frames: f64,
    /// The receiver's drift estimate at the end, ppm.
    pub drift_ppm_estimated: f64,
    /// Allocations during the steady-state loop, when the counting allocator is installed.
    pub allocations_steady_state: Option<u64>,
    /// Frees during the steady-state loop, when the counting allocator is installed.
    pub frees_steady_state: Option<u64>,
    /// Buffer level and latency over time.
    pub trace: Vec<TracePoint>,
    /// Packets sent.
    pub packets_sent: u64,
    /// What loss recovery cost and did.
    pub recovery: RecoveryReport,
    /// THD+N and wow & flutter of the played tone, with a sine source (see [`fidelity`]).
    pub fidelity: Option<fidelity::FidelityReport>,
    /// Seconds from the first packet until the receiver's drift estimate came within 1 ppm of
    /// the true clock offset for good; `None` if it was not within 1 ppm at the end.
    pub drift_lock_s: Option<f64>,
    /// The same over time, for a plot (empty without a tone).
    pub fidelity_series: Vec<fidelity::WindowPoint>,
    /// Every receiver's figures, receiver 0 first.
    pub receivers: Vec<ReceiverReport>,
    /// The skew between the receivers' outputs of the same frame (two or more receivers and
    /// the frame-index ramp for a source).
    pub skew: Option<SkewReport>,
}

/// One receiver's figures in a run with several.
#[derive(Clone, Debug)]
pub struct ReceiverReport {
    /// Its clock and link.
    pub spec: SimReceiver,
    /// What its analyzer saw.
    pub analyzer: AnalyzerCounts,
    /// Gaps its analyzer saw (at most 10 000 kept).
    pub gaps: Vec<GapRecord>,
    /// Latency (capture to DAC) percentiles after settling, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Highest.
    pub latency_max_ms: f64,
    /// The receiver's own counters.
    pub engine: StatsSnapshot,
    /// What its forward link did.
    pub net: NetCounters,
    /// Its drift estimate at the end, ppm.
    pub drift_ppm_estimated: f64,
    /// As [`SimReport::drift_lock_s`].
    pub drift_lock_s: Option<f64>,
    /// NACK datagrams it sent.
    pub nacks_sent: u64,
    /// Of those, delivered to the sender.
    pub nacks_delivered: u64,
    /// Packets it asked for that arrived in time.
    pub recovered: u64,
    /// Packets it gave up on.
    pub expired: u64,
    /// With presentation time: the time exchange and how close to its presentation time it
    /// played.
    pub sync: Option<SyncFigures>,
}

/// A receiver's time exchange and presentation error over a run with presentation time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncFigures {
    /// Time requests sent.
    pub requests: u64,
    /// Answers taken.
    pub responses: u64,
    /// The clock model's error estimate at the end, µs.
    pub model_error_us: Option<f64>,
    /// Times the model restarted (a clock step).
    pub model_restarts: u64,
    /// The presentation error at the renders after settling (what the receiver itself
    /// measured: its model's view, not the truth; the skew meter has the truth), RMS, µs ...
    pub presentation_error_rms_us: f64,
    /// ... and the largest magnitude.
    pub presentation_error_max_us: f64,
}

/// What loss recovery cost and did in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecoveryReport {
    /// The mode.
    pub mode: RecoveryMode,
    /// Bytes of first transmissions (the stream itself, headers included).
    pub audio_bytes: u64,
    /// NACK datagrams the receiver sent.
    pub nacks_sent: u64,
    /// Bytes of those NACKs.
    pub nack_bytes: u64,
    /// NACKs the return path delivered to the sender.
    pub nacks_delivered: u64,
    /// Packets the sender sent again.
    pub retransmits: u64,
    /// Bytes sent again.
    pub retransmit_bytes: u64,
    /// Packets asked for that the sender did not send again: sent again as often as allowed
    /// already.
    pub resends_over_limit: u64,
    /// Packets asked for that the sender did not send again: the resend rate cap.
    pub resends_capped: u64,
    /// Packets asked for that arrived in time to be played.
    pub recovered: u64,
    /// Packets given up on at their play-out time.
    pub expired: u64,
    /// Smoothed NACK round trip at the end, ms.
    pub rtt_ms: f64,
    /// CPU time spent in recovery (history copies, NACK writing and answering), seconds of
    /// this machine.
    pub cpu_s: f64,
}

impl RecoveryReport {
    /// Extra bytes on the wire (NACKs both ways counted once, plus packets sent again), as a
    /// percentage of the stream's own bytes.
    pub fn overhead_percent(&self) -> f64 {
        if self.audio_bytes == 0 {
            return 0.0;
        }
        (self.nack_bytes + self.retransmit_bytes) as f64 * 100.0 / self.audio_bytes as f64
    }
}

/// One point of the trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracePoint {
    /// Audio time, seconds.
    pub t_s: f64,
    /// Mean latency over the interval, ms (NaN if none measured).
    pub latency_ms: f64,
    /// Receiver buffer level, ms.
    pub level_ms: f64,
    /// Correction applied, ppm.
    pub ratio_ppm: f64,
}
