//! What a simulation run is asked to do: the format, the devices' clocks, the network, the
//! source signal, the receivers (each with its own clock and link), and the sender restarts and
//! machine stalls to schedule.

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

/// Most receivers one run can simulate.
pub const MAX_RECEIVERS: usize = 16;

/// One receiver of the stream: its playback device's clock and its own link to and from the
/// sender. One sender feeds every receiver, as a multicast group does: each packet goes through
/// each receiver's forward link; a receiver's NACKs go back through its reverse link, and the
/// packets sent again for it go to it alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimReceiver {
    /// The playback device's clock offset against true time, ppm (the sender's capture clock
    /// is [`SimConfig::drift_ppm`] off true time).
    pub clock_ppm: f64,
    /// When its playback device starts ticking (its phase), seconds.
    pub start_s: f64,
    /// One-way delay from the sender, ms (`None`: the run's [`NetConfig::delay_ms`]).
    pub delay_ms: Option<f64>,
    /// The reverse path's one-way delay minus the forward path's, ms (the NACKs' way back).
    pub asymmetry_ms: f64,
    /// Jitter of its link, ms (`None`: the run's).
    pub jitter_ms: Option<f64>,
    /// Random loss of its link (`None`: the run's).
    pub loss: Option<f64>,
    /// Its host's own monotonic clock, which every time it reads runs on (arrivals, renders,
    /// the time exchange): its rate against true time, less one, ppm ...
    pub system_ppm: f64,
    /// ... and its reading at true time 0, seconds.
    pub system_offset_s: f64,
    /// When it joins, seconds: before, it is not running (it gets no packets and asks
    /// nothing; its device plays silence).
    pub join_s: f64,
    /// When its process restarts, seconds: a fresh receiver takes over at once, knowing
    /// nothing (no stream, no clocks, no model).
    pub restart_s: Option<f64>,
}

impl Default for SimReceiver {
    /// The receiver of a one-receiver run: a true clock, the run's link.
    fn default() -> Self {
        SimReceiver {
            clock_ppm: 0.0,
            start_s: 0.000_37,
            delay_ms: None,
            asymmetry_ms: 0.0,
            jitter_ms: None,
            loss: None,
            system_ppm: 0.0,
            system_offset_s: 0.0,
            join_s: 0.0,
            restart_s: None,
        }
    }
}

impl SimReceiver {
    /// `n` receivers spread over a room's worth of differences: clocks evenly over
    /// −100..+100 ppm, one-way delays evenly over 0.3..5 ms (in another order than the clocks),
    /// reverse paths up to 1 ms longer or shorter, unrelated device phases, and host clocks
    /// of their own (up to ±50 ppm off true time, read from unrelated origins); jitter and
    /// loss are the run's.
    pub fn spread(n: usize) -> Vec<SimReceiver> {
        Self::spread_with(n, 1.0)
    }

    /// As [`spread`](Self::spread), with reverse paths up to `asymmetry_ms` longer or shorter
    /// (at least 0).
    pub fn spread_with(n: usize, asymmetry_ms: f64) -> Vec<SimReceiver> {
        let n = n.clamp(1, MAX_RECEIVERS);
        let asymmetry_ms = if asymmetry_ms.is_finite() {
            asymmetry_ms.max(0.0)
        } else {
            0.0
        };
        if n == 1 {
            return vec![SimReceiver::default()];
        }
        let step = 1.0 / (n - 1) as f64;
        (0..n)
            .map(|i| {
                // Delays in the order (3i + 1) mod n, a permutation of 0..n when 3 does not
                // divide n (reversed otherwise), so that clock and delay are unrelated.
                let k = if n % 3 != 0 {
                    (i * 3 + 1) % n
                } else {
                    n - 1 - i
                };
                let delay_ms = 0.3 + 4.7 * k as f64 * step;
                // Asymmetry from 1 ms down to 0, alternately longer and shorter (longer where
                // the path is too short to be shorter still).
                let mag = asymmetry_ms * (n - 1 - i) as f64 * step;
                let sign = if i % 2 == 0 || delay_ms <= mag {
                    1.0
                } else {
                    -1.0
                };
                SimReceiver {
                    clock_ppm: -100.0 + 200.0 * i as f64 * step,
                    start_s: 0.000_37 + 0.001_31 * i as f64,
                    delay_ms: Some(delay_ms),
                    asymmetry_ms: sign * mag,
                    jitter_ms: None,
                    loss: None,
                    // Host clocks unrelated to the devices': a crystal of their own.
                    system_ppm: 50.0 - 100.0 * k as f64 * step,
                    system_offset_s: 1000.0 + 317.3 * i as f64,
                    join_s: 0.0,
                    restart_s: None,
                }
            })
            .collect()
    }
}

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
    /// Target end-to-end latency, ms (network transit comes on top, except with
    /// [`sync`](Self::sync)); with `auto_latency`, where the target starts.
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
    /// The receivers (at least one, at most [`MAX_RECEIVERS`]); the first one's figures are
    /// the report's own, the skew is measured against it.
    pub receivers: Vec<SimReceiver>,
    /// Presentation time: the sender stamps its packets with their capture time and answers
    /// time requests; each receiver models the sender's clock by the exchange over its own
    /// links and plays every frame at its capture time plus `latency_ms` (which is then from
    /// capture, network transit included).
    pub sync: bool,
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
            receivers: vec![SimReceiver::default()],
            sync: false,
        }
    }

    /// Receiver `r`'s forward link (sender to receiver).
    pub fn forward_link(&self, r: &SimReceiver) -> NetConfig {
        NetConfig {
            delay_ms: r.delay_ms.unwrap_or(self.net.delay_ms),
            jitter_ms: r.jitter_ms.unwrap_or(self.net.jitter_ms),
            loss: r.loss.unwrap_or(self.net.loss),
            ..self.net
        }
    }

    /// Receiver `r`'s reverse link (its NACKs to the sender): the forward link with the
    /// asymmetry added to its delay.
    pub fn reverse_link(&self, r: &SimReceiver) -> NetConfig {
        let fwd = self.forward_link(r);
        NetConfig {
            delay_ms: (fwd.delay_ms + r.asymmetry_ms).max(0.0),
            ..fwd
        }
    }

    /// A latency for presentation time ([`sync`](Self::sync)), which counts from capture:
    /// the default's ([`default_latency_ms`]), plus the capture period, plus the slowest
    /// receiver's path (delay and jitter) and, with loss recovery, one round trip of its.
    pub fn presentation_latency_ms(&self) -> f64 {
        let slowest = self
            .receivers
            .iter()
            .map(|r| {
                let (f, b) = (self.forward_link(r), self.reverse_link(r));
                let path = f.delay_ms + f.max_jitter_ms();
                match self.recovery {
                    crate::recovery::RecoveryMode::Nack => {
                        path + f.delay_ms + f.max_jitter_ms() + b.delay_ms + b.max_jitter_ms()
                    }
                    crate::recovery::RecoveryMode::Off => path,
                }
            })
            .fold(0.0, f64::max);
        default_latency_ms(self.format, self.period)
            + self.format.ms_for_frames(self.period as f64)
            + slowest
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
