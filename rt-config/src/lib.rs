//! netaudio's configuration file.
//!
//! One TOML file per machine (`/etc/netaudio/sender.toml`, `receiver.toml`). Every key is
//! optional; what the command line gives wins over the file, and the file over the defaults.
//! Unknown keys are errors, reported with their line and column.
//!
//! ```toml
//! [audio]
//! device = "hw:CARD=CODEC,DEV=0"   # or a dsnoop PCM, or "virtual"
//! rate = 44100
//! channels = 2
//! format = "S16_LE"                 # S16_LE, S24_3LE, S32_LE
//! period_frames = 256
//! periods = 3
//!
//! [network]
//! dest = "turntable2.local:46000"   # sender
//! listen = "0.0.0.0:46000"          # receiver
//! dscp = 46
//!
//! [receiver]
//! latency_ms = 20.0
//! drift_mode = "slip"               # slip, resample, off
//!
//! [rt]
//! cpu = 3
//! priority = 80
//! mlock = true
//!
//! [log]
//! level = "info"
//! stats_interval_s = 10
//! ```

use serde::Deserialize;
use std::path::Path;

/// `[audio]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    /// ALSA device name or `virtual[:...]`.
    pub device: Option<String>,
    /// Hz.
    pub rate: Option<u32>,
    /// Channels.
    pub channels: Option<u8>,
    /// `S16_LE`, `S24_3LE` or `S32_LE`.
    pub format: Option<String>,
    /// Frames per period.
    pub period_frames: Option<usize>,
    /// Periods per device buffer.
    pub periods: Option<usize>,
}

/// `[network]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Where the sender sends (`host:port`).
    pub dest: Option<String>,
    /// Where the receiver listens (`addr:port`).
    pub listen: Option<String>,
    /// DSCP of sent packets.
    pub dscp: Option<u8>,
}

/// `[receiver]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Target latency, ms.
    pub latency_ms: Option<f64>,
    /// `slip`, `resample` or `off`.
    pub drift_mode: Option<String>,
}

/// `[rt]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rt {
    /// Core of the realtime thread.
    pub cpu: Option<usize>,
    /// SCHED_FIFO priority (0: normal scheduling).
    pub priority: Option<u8>,
    /// Lock memory.
    pub mlock: Option<bool>,
}

/// `[log]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// error, warn, info, debug, trace.
    pub level: Option<String>,
    /// Seconds between stats lines.
    pub stats_interval_s: Option<f64>,
}

/// A whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[audio]`.
    #[serde(default)]
    pub audio: Audio,
    /// `[network]`.
    #[serde(default)]
    pub network: Network,
    /// `[receiver]`.
    #[serde(default)]
    pub receiver: Receiver,
    /// `[rt]`.
    #[serde(default)]
    pub rt: Rt,
    /// `[log]`.
    #[serde(default)]
    pub log: Log,
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let c = Config::parse(
            r#"
            [audio]
            device = "hw:CARD=CODEC,DEV=0"
            rate = 48000
            period_frames = 128
            [network]
            dest = "turntable2.local:46000"
            [receiver]
            drift_mode = "resample"
            [rt]
            cpu = 3
            priority = 85
            "#,
            "test.toml",
        )
        .unwrap();
        assert_eq!(c.audio.rate, Some(48_000));
        assert_eq!(c.rt.cpu, Some(3));
        assert_eq!(c.receiver.drift_mode.as_deref(), Some("resample"));
        assert_eq!(c.audio.channels, None);
    }

    #[test]
    fn the_shipped_examples_parse() {
        let s = Config::parse(include_str!("../examples/sender.toml"), "sender.toml").unwrap();
        assert_eq!(s.network.dest.as_deref(), Some("turntable2.local:46000"));
        let r = Config::parse(include_str!("../examples/receiver.toml"), "receiver.toml").unwrap();
        assert_eq!(r.receiver.latency_ms, Some(30.0));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let e = Config::parse("[audio]\nrate = 48000\nperiod = 256\n", "sender.toml").unwrap_err();
        assert!(e.contains("sender.toml"), "{e}");
        assert!(e.contains("period"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }
}
