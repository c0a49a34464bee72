//! What a simulation run is asked to do: the format, the devices' clocks, the network, the
//! source signal, and the sender restarts and machine stalls to schedule.

use super::net::NetConfig;
use super::signal::SourceKind;
use crate::format::{SampleFormat, StreamFormat};
use crate::receiver::DriftMode;
use crate::recovery::RecoveryMode;

/// A sender restart during a run (how the sender stops: [`SimConfig::clean_stops`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Restart {
    /// When, seconds of audio.
    pub at_s: f64,
    /// How long the sender is away, ms (captured audio is lost meanwhile).
    pub downtime_ms: f64,
}

/// A stall of the whole machine, devices included (see
/// [`clock::VirtualClock::pause_at`](super::clock::VirtualClock::pause_at)):
/// capture and playback stop and resume late together, as on a JACK server that missed
/// cycles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// When, seconds of audio.
    pub at_s: f64,
    /// How long, ms.
    pub ms: f64,
}

/// Most sender restarts one run can schedule.
pub const MAX_RESTARTS: usize = 16;

/// A simulation run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Stream format.
    pub format: StreamFormat,
    /// Period of both devices, frames.
    pub period: usize,
    /// Audio to stream, seconds.
    pub duration_s: f64,
    /// Sender clock offset relative to the receiver's, ppm.
    pub drift_ppm: f64,
    /// Slow wander of the sender's clock around its offset, ±ppm.
    pub wander_ppm: f64,
    /// Period of the wander, seconds.
    pub wander_period_s: f64,
    /// The link.
    pub net: NetConfig,
    /// Target end-to-end latency, ms (network transit comes on top); with `auto_latency`,
    /// where the target starts.
    pub latency_ms: f64,
    /// `latency = auto` between these bounds, ms.
    pub auto_latency: Option<(f64, f64)>,
    /// Periods in the playback device's buffer.
    pub playback_periods: usize,
    /// Sample format the playback device takes (`None`: the stream's). A wider one keeps
    /// the resampler's output at full resolution; the analyzers hear it at that width.
    pub playback_sample: Option<SampleFormat>,
    /// Drift correction mode.
    pub drift_mode: DriftMode,
    /// Loss recovery (off unless asked for: the engine's scenario tests measure concealment).
    pub recovery: RecoveryMode,
    /// Source signal.
    pub source: SourceKind,
    /// Sender restarts.
    pub restarts: Vec<Restart>,
    /// A stall of both devices (at most one per run).
    pub stall: Option<Stall>,
    /// Whether a restarting sender stops cleanly, sending its END packets (as on SIGTERM), or
    /// just goes silent (a crash, `kill -9`, a power cut).
    pub clean_stops: bool,
    /// Seconds of audio after which latency statistics start (the drift loop settles).
    pub settle_s: f64,
    /// Points in the trace.
    pub trace_points: usize,
    /// Seed for stream ids and the network.
    pub seed: u64,
}

impl SimConfig {
    /// A clean link at `format`, `period` frames, for `duration_s` seconds.
    pub fn new(format: StreamFormat, period: usize, duration_s: f64) -> SimConfig {
        SimConfig {
            format,
            period,
            duration_s,
            drift_ppm: 0.0,
            wander_ppm: 0.0,
            wander_period_s: 600.0,
            net: NetConfig::default(),
            latency_ms: default_latency_ms(format, period),
            auto_latency: None,
            playback_periods: 3,
            playback_sample: None,
            drift_mode: DriftMode::Resample,
            recovery: RecoveryMode::Off,
            source: SourceKind::Ramp,
            restarts: Vec::new(),
            stall: None,
            clean_stops: false,
            settle_s: 60.0_f64.min(duration_s / 4.0),
            trace_points: 2000,
            seed: 1,
        }
    }

    /// Frames the playback device holds after a render.
    pub fn output_delay_frames(&self) -> usize {
        self.playback_periods.saturating_sub(1) * self.period
    }
}

/// The default target latency for a period: the playback buffer, two periods of receive
/// buffer, and 2 ms for the network's jitter.
pub fn default_latency_ms(format: StreamFormat, period: usize) -> f64 {
    let period_ms = format.ms_for_frames(period as f64);
    (4.0 * period_ms + 2.0).max(5.0)
}
