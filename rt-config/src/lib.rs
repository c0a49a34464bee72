//! netaudio's configuration file.
//!
//! One TOML file per machine (`/etc/netaudio/sender.toml`, `receiver.toml`). Every key is
//! optional; what the command line gives wins over the file, and the file over the defaults.
//! Unknown keys are errors, reported with their line.
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
//! key_file = "/etc/netaudio/key"   # optional: authenticate every packet (both machines)
//! proto = "native"                 # native, rtp (ffmpeg, VLC, PipeWire), tcp
//! sdp_file = "/run/netaudio/stream.sdp"  # rtp sender: where to write the SDP
//! sap = "224.0.0.56:9875"          # rtp sender: SAP announcements (PipeWire's group), or "off"
//!
//! [receiver]
//! latency_ms = 20.0
//! drift_mode = "resample"           # resample (transparent), slip, off
//! playback_format = "auto"          # auto (widest the card takes when resampling), S16_LE, ...
//! latency = "auto"                  # optional: follow the jitter, within:
//! latency_min_ms = 10.0
//! latency_max_ms = 200.0
//! recovery = "nack"                 # nack (ask for lost packets again), off
//!
//! [rt]
//! cpu = 3
//! priority = 80
//! mlock = true
//!
//! [log]
//! level = "info"
//! stats_interval_s = 10
//!
//! [status]
//! http = "0.0.0.0:8080"             # the status page, for the LAN (a bare port: localhost)
//! ```

#![forbid(unsafe_code)]

pub mod duration;
pub mod schema;

pub use duration::parse_duration;
pub use schema::{Audio, Config, Log, Network, Receiver, Rt, Status, TextList};

use std::path::Path;

/// Board presets shipped with netaudio: (name, TOML).
pub const PRESETS: &[(&str, &str)] = &[
    ("pi3", include_str!("../presets/pi3.toml")),
    ("pi4", include_str!("../presets/pi4.toml")),
    ("pi5", include_str!("../presets/pi5.toml")),
    ("zero2w", include_str!("../presets/zero2w.toml")),
    ("generic", include_str!("../presets/generic.toml")),
];

/// The board preset for a `/proc/device-tree/model` string.
pub fn board_for_model(model: &str) -> &'static str {
    let m = model.trim_end_matches('\0');
    if m.contains("Raspberry Pi Zero 2") {
        "zero2w"
    } else if m.contains("Raspberry Pi 5") {
        "pi5"
    } else if m.contains("Raspberry Pi 4") || m.contains("Raspberry Pi Compute Module 4") {
        "pi4"
    } else if m.contains("Raspberry Pi 3") {
        "pi3"
    } else {
        "generic"
    }
}

/// This machine's board, from `/proc/device-tree/model` (`generic` when there is none).
pub fn detect_board() -> &'static str {
    std::fs::read_to_string("/proc/device-tree/model")
        .map(|m| board_for_model(&m))
        .unwrap_or("generic")
}

impl Config {
    /// Parses TOML text; `origin` names it in errors. Every problem of the text is reported,
    /// one per line of the error: `origin:line: key: what is wrong; the fix`.
    pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
        let problems = schema::check(text, origin);
        if !problems.is_empty() {
            return Err(problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n"));
        }
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// A board preset by name (`auto` detects the board).
    pub fn preset(name: &str) -> Result<Config, String> {
        let name = if name.eq_ignore_ascii_case("auto") {
            detect_board()
        } else {
            name
        };
        let (n, text) = PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown board {name:?}: use auto or one of {}",
                    names.join(", ")
                )
            })?;
        Config::parse(text, &format!("preset {n}"))
    }

    /// The file's settings over its board preset (`board`, default `auto`).
    pub fn with_preset(self) -> Result<Config, String> {
        let board = self.board.clone().unwrap_or_else(|| "auto".into());
        let preset = Config::preset(&board)?;
        Ok(self.merge(&preset))
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
        assert_eq!(
            s.network.dest.map(|d| d.joined()).as_deref(),
            Some("turntable2.local:46000")
        );
        let r = Config::parse(include_str!("../examples/receiver.toml"), "receiver.toml").unwrap();
        assert_eq!(r.receiver.latency_ms, Some(30.0));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let e = Config::parse("[audio]\nrate = 48000\nperiod = 256\n", "sender.toml").unwrap_err();
        assert_eq!(
            e,
            "sender.toml:3: audio.period: unknown key; did you mean \"periods\"?"
        );
    }

    #[test]
    fn every_preset_validates_and_boards_are_detected() {
        for (name, _) in PRESETS {
            let c = Config::preset(name).unwrap();
            assert!(c.audio.period_frames.is_some(), "{name}");
        }
        assert_eq!(board_for_model("Raspberry Pi 4 Model B Rev 1.4\0"), "pi4");
        assert_eq!(board_for_model("Raspberry Pi Zero 2 W Rev 1.0"), "zero2w");
        assert_eq!(board_for_model("Raspberry Pi 5 Model B Rev 1.0"), "pi5");
        assert_eq!(
            board_for_model("Raspberry Pi 3 Model B Plus Rev 1.3"),
            "pi3"
        );
        assert_eq!(board_for_model("QEMU"), "generic");
        assert!(Config::preset("pi9").unwrap_err().contains("pi4"));
        assert!(Config::preset("auto").is_ok());
    }

    #[test]
    fn proto_and_sdp_file_parse_and_bad_protos_name_the_choices() {
        let c = Config::parse(
            "[network]\nproto = \"rtp\"\nsdp_file = \"stream.sdp\"\nsap = \"off\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.network.proto.as_deref(), Some("rtp"));
        assert_eq!(c.network.sdp_file.as_deref(), Some("stream.sdp"));
        assert_eq!(c.network.sap.as_deref(), Some("off"));
        assert!(Config::parse("[network]\nproto = \"tcp\"\n", "f").is_ok());
        let e = Config::parse("[network]\nproto = \"udp\"\n", "f").unwrap_err();
        assert!(
            e.starts_with("f:2: network.proto:") && e.contains("rtp") && e.contains("native"),
            "{e}"
        );
    }

    #[test]
    fn the_file_wins_over_the_preset() {
        let file = Config::parse("board = \"pi4\"\n[audio]\nperiod_frames = 128\n", "f").unwrap();
        let c = file.with_preset().unwrap();
        assert_eq!(c.audio.period_frames, Some(128));
        assert_eq!(c.rt.cpu, Some(3));
        assert_eq!(c.receiver.latency_ms, Some(25.0));
    }
}
