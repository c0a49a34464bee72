//! How a receiver is built: the drift mode, the configuration with the levels derived from it,
//! and why a configuration is refused. Nothing here runs on the realtime thread except the
//! level helpers, which are plain arithmetic.

use crate::autolatency::AutoLatency;
use crate::drift::DriftParams;
use crate::format::{SampleFormat, StreamFormat};
use crate::recovery::{RecoveryMode, TrackerParams};
use core::fmt;

/// How the receiver follows the sender's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriftMode {
    /// No correction: bit-exact, for two devices on one clock.
    Off,
    /// Drop or repeat a single frame now and then, crossfaded over a short window; bit-exact
    /// outside those windows, but each slip is a distortion product (−30 dB THD+N at 100 ppm
    /// on a 997 Hz tone).
    Slip,
    /// Windowed-sinc resampling at the measured ratio, steered smoothly: transparent (THD+N at
    /// the format's floor, no wow). The default.
    Resample,
}

impl DriftMode {
    /// Every mode.
    pub const ALL: [DriftMode; 3] = [DriftMode::Off, DriftMode::Slip, DriftMode::Resample];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Slip => "slip",
            Self::Resample => "resample",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<DriftMode> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for DriftMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a receiver is built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceiverConfig {
    /// Format of the playback device; streams of another format are refused.
    pub format: StreamFormat,
    /// Sample format of the playback device: the stream's, or a wider one. Frames are
    /// written to the device in it; a wider one keeps the resampler's output from being
    /// rounded back to the stream's width (a second rounding adds the format's quantisation
    /// noise again: +3 dB on a 16-bit stream). Bit-exact paths stay bit-exact in any width.
    pub output_sample: SampleFormat,
    /// Frames per [`Receiver::render`](super::Receiver::render) call (the playback period).
    pub period: usize,
    /// Latency to hold, frames: from a frame's arrival to its leaving the playback device.
    pub target_frames: usize,
    /// Frames the playback device holds after render (its buffer minus one period); the ring
    /// itself holds `target_frames - output_delay_frames`.
    pub output_delay_frames: usize,
    /// Ring capacity, frames (at least twice the target; bounds the latency).
    pub capacity_frames: usize,
    /// Drift correction.
    pub drift_mode: DriftMode,
    /// Drift loop tuning.
    pub drift: DriftParams,
    /// Length of concealment fades, frames.
    pub fade_frames: usize,
    /// Length of a slip crossfade, frames (rounded to a power of two).
    pub slip_window: usize,
    /// `latency = auto`: the target follows the observed jitter within these bounds (on the
    /// whole latency, like `target_frames`, which is then where it starts).
    pub auto_latency: Option<AutoLatency>,
    /// Loss recovery.
    pub recovery: RecoveryMode,
    /// Loss tracker tuning.
    pub recovery_params: TrackerParams,
    /// Presentation time (several receivers in sync): `target_frames` is the latency from
    /// the sender's capture of a frame to its leaving this receiver's converter, and the
    /// level is measured from capture once the driver gives the capture times on this
    /// receiver's clock ([`Receiver::set_presentation`](super::Receiver::set_presentation));
    /// the first stream's warm-up also waits for them.
    pub presentation: bool,
}

impl ReceiverConfig {
    /// Sensible settings for `format`, a playback period and a target latency in ms.
    pub fn new(format: StreamFormat, period: usize, target_ms: f64) -> ReceiverConfig {
        let target_frames = format.frames_for_ms(target_ms);
        ReceiverConfig {
            format,
            output_sample: format.sample,
            period,
            target_frames,
            output_delay_frames: 0,
            capacity_frames: (target_frames * 4)
                .max(period * 8)
                .max(format.rate as usize / 2),
            drift_mode: DriftMode::Resample,
            drift: DriftParams::default(),
            fade_frames: (format.rate as usize / 1000).max(8),
            slip_window: 64,
            auto_latency: None,
            recovery: RecoveryMode::Nack,
            recovery_params: TrackerParams::default(),
            presentation: false,
        }
    }

    /// Bytes of one frame written to the playback device.
    pub fn output_frame_bytes(&self) -> usize {
        self.output_sample.bytes() * self.format.channels as usize
    }

    pub(super) fn ring_target(&self) -> f64 {
        self.target_frames.saturating_sub(self.output_delay_frames) as f64
    }

    /// What the ring holds at target, less what a resampler holds.
    pub(super) fn level_target(&self, resampler_delay: usize) -> f64 {
        (self.ring_target() - resampler_delay as f64).max(self.period as f64)
    }

    /// Ring level for a whole latency of `frames`.
    pub(super) fn level_for(&self, frames: f64, resampler_delay: usize) -> f64 {
        frames - self.output_delay_frames as f64 - resampler_delay as f64
    }

    /// The lowest level that plays a perfect network without underruns: a period being
    /// rendered and a packet on its way, and never under two periods.
    pub(super) fn level_floor(&self, frames_per_packet: usize) -> usize {
        (2 * self.period).max(self.period + frames_per_packet)
    }
}

/// Why a receiver cannot be built.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverError {
    /// Period of zero frames.
    ZeroPeriod,
    /// The target does not leave room for a period plus a packet.
    TargetTooSmall {
        /// Frames the ring would hold.
        ring_target: usize,
        /// Frames it must hold at least.
        minimum: usize,
    },
    /// The resampler could not be built.
    Resampler(String),
    /// The playback device's samples are narrower than the stream's.
    OutputNarrower {
        /// The stream's sample format.
        stream: SampleFormat,
        /// The device's.
        output: SampleFormat,
    },
}

impl fmt::Display for ReceiverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("period of 0 frames; use at least 16"),
            Self::TargetTooSmall {
                ring_target,
                minimum,
            } => write!(
                f,
                "target latency leaves {ring_target} frames in the receive buffer, at least {minimum} are needed (two periods); raise latency_ms"
            ),
            Self::Resampler(e) => f.write_str(e),
            Self::OutputNarrower { stream, output } => write!(
                f,
                "the playback format {} is narrower than the stream's {}: bits would be lost; play the stream at {} or wider",
                output.name(),
                stream.name(),
                stream.name()
            ),
        }
    }
}

impl std::error::Error for ReceiverError {}
