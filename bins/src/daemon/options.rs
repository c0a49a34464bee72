//! The settings of the daemons as the command line and configuration resolve them: audio,
//! common run options, wire protocol, receiver settings and the sample format of the playback
//! device; and the check that refuses a key where the protocol cannot carry its tag.

use crate::pcm::DeviceRequest;
use crate::rt::RtSpec;
use engine::auth::Key;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::recovery::RecoveryMode;
use std::time::Duration;

/// Audio side of a daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioOptions {
    /// Device name (ALSA, or `virtual[:...]`).
    pub device: String,
    /// Stream format.
    pub format: StreamFormat,
    /// Frames per period.
    pub period: usize,
    /// Periods in the device buffer.
    pub periods: usize,
}

impl AudioOptions {
    pub(crate) fn request(&self) -> DeviceRequest {
        DeviceRequest {
            name: self.device.clone(),
            format: self.format,
            period: self.period,
            periods: self.periods,
        }
    }
}

/// Everything common to the daemons.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Realtime thread settings.
    pub rt: RtSpec,
    /// Lock memory.
    pub mlock: bool,
    /// Seconds between stats lines (0: none).
    pub stats_interval: f64,
    /// Write final counters here as JSON.
    pub stats_json: Option<std::path::PathBuf>,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Serve live status on this unix socket (None: the default path; daemons only).
    pub status_socket: Option<std::path::PathBuf>,
    /// Serve Prometheus text on this localhost address (off when None).
    pub metrics: Option<String>,
    /// Serve the status page on this address (`[status] http`, `--http`; off when None).
    pub http: Option<std::net::SocketAddr>,
    /// Pre-shared key: authenticate every packet (see `engine::auth`).
    pub key: Option<Key>,
    /// Wire protocol of `send` and `recv` (`demo` always streams native).
    pub proto: Proto,
    /// Receiver: announce it on the LAN under this name (`discovery::announce`); None: not.
    pub announce_as: Option<String>,
    /// RTP: where the sender announces its stream by SAP (None: off).
    pub sap: Option<std::net::SocketAddr>,
    /// A multicast destination's hop limit and interface (sender), the interface a receiver
    /// listening on a group joins it on (`network.ttl`, `network.interface`).
    pub multicast: crate::net::MulticastOptions,
    /// How receivers know the sender's clock (`sync.clock`): a sender stamps capture times on
    /// its wall clock for `System`.
    pub sync_clock: SyncClock,
}

/// How receivers playing by presentation time know the sender's clock (`sync.clock`,
/// `--sync-clock`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncClock {
    /// A time exchange over the stream's own sockets.
    #[default]
    Exchange,
    /// The hosts' wall clocks, kept together by PTP (linuxptp) or chrony.
    System,
}

impl SyncClock {
    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Result<SyncClock, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exchange" => Ok(SyncClock::Exchange),
            "system" => Ok(SyncClock::System),
            _ => Err(format!(
                "unknown sync clock {s:?} (sync.clock / --sync-clock): use exchange (the built-in time exchange) or system (host clocks kept together by PTP or chrony)"
            )),
        }
    }

    /// Its configuration name.
    pub fn name(self) -> &'static str {
        match self {
            SyncClock::Exchange => "exchange",
            SyncClock::System => "system",
        }
    }
}

/// Presentation time: several receivers in step (`[sync]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncOptions {
    /// From a frame's capture to its leaving the converter, ms, the same on every receiver.
    pub latency_ms: f64,
    /// How the sender's clock is known.
    pub clock: SyncClock,
}

/// The wire protocol (`[network] proto`, `--proto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Proto {
    /// netaudio's own packets over UDP.
    #[default]
    Native,
    /// RTP (RFC 3551 L16/L24).
    Rtp,
    /// Raw PCM over TCP, as the old `arecord | nc` / `nc -l | aplay` pipeline.
    Tcp,
}

impl Proto {
    /// Its configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Native => "native",
            Proto::Rtp => "rtp",
            Proto::Tcp => "tcp",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Result<Proto, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(Proto::Native),
            "rtp" => Ok(Proto::Rtp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!(
                "unknown protocol {s:?} (network.proto / --proto): use native, rtp or tcp"
            )),
        }
    }
}

/// Receiver settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceiveOptions {
    /// Target latency, ms.
    pub latency_ms: f64,
    /// Drift correction.
    pub drift_mode: DriftMode,
    /// The playback device's sample format.
    pub playback_format: PlaybackFormat,
    /// Loss recovery.
    pub recovery: RecoveryMode,
    /// `latency = auto` between these bounds (ms); `latency_ms` is where the target starts.
    pub auto_latency: Option<(f64, f64)>,
    /// Presentation time (several receivers in step): then `latency_ms` is not used.
    pub sync: Option<SyncOptions>,
    /// The delay after the sound card, µs (`receiver.output_delay_us`): presentation time
    /// plays that much earlier.
    pub output_delay_us: f64,
}

/// The sample format a playback device is opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaybackFormat {
    /// With `resample`, the widest the device takes (S32_LE, S24_3LE, then the stream's):
    /// resampled audio is then not rounded back to a 16-bit stream's width, which would add
    /// its quantisation noise a second time (+3 dB). Otherwise, and on virtual devices, the
    /// stream's.
    Auto,
    /// This one (at least as wide as the stream's).
    Fixed(SampleFormat),
}

/// Raw PCM and RTP have no room for netaudio's tag: a key with `proto = "tcp"` or `"rtp"` is
/// a configuration mistake, not something to ignore.
pub(crate) fn refuse_key_unless_native(opts: &RunOptions) -> Result<(), String> {
    let why = match opts.proto {
        Proto::Tcp => {
            "raw PCM, as the old pipeline sends it, has no room for an authentication tag"
        }
        Proto::Rtp => "RTP packets, as ffmpeg, VLC and PipeWire read them, carry no netaudio tag",
        Proto::Native => return Ok(()),
    };
    if opts.key.is_some() {
        let name = if opts.proto == Proto::Tcp {
            "tcp"
        } else {
            "rtp"
        };
        return Err(format!(
            "network.key_file (--key-file) cannot be used with proto = \"{name}\": {why}; remove the key file, or use proto = \"native\" on both machines"
        ));
    }
    Ok(())
}
