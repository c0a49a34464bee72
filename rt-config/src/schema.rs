//! The schema every configuration file is checked against: each key, its type and range, and
//! the fix to suggest. Checking collects every problem of a file at once, each with its line.

use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use toml_edit::{ImDocument, Item, TableLike};

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Any string.
    Text,
    /// One of these strings (compared case-insensitively).
    Choice(&'static [&'static str]),
    /// An integer in `min..=max`.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A number (integer or float) in `min..=max`.
    Number {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// A string, or an array of strings.
    TextList,
}

/// A string, or an array of strings (`dest = ["kitchen:46000", "hall:46000"]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TextList {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl TextList {
    /// The strings joined with commas, as the command line gives a list.
    pub fn joined(&self) -> String {
        match self {
            TextList::One(s) => s.clone(),
            TextList::Many(v) => v.join(","),
        }
    }
}

/// One key of the schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeySpec {
    /// Table (`audio`, `network`, ...).
    pub section: &'static str,
    /// Key inside the table.
    pub key: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// What it means, for messages.
    pub help: &'static str,
}

/// Rates a USB interface typically offers; anything in range is accepted.
pub const RATES: (i64, i64) = (8_000, 384_000);

/// Defines the configuration in one place. From each key's line come the field of its serde
/// struct (an `Option`; unknown keys are refused), its entry in [`KEYS`] (what it holds, its
/// help: the checks, the suggestions and the field's documentation) and its line in
/// `Config::merge`; from each table, its entry in [`SECTIONS`].
macro_rules! schema {
    (
        $(#[$rmeta:meta])*
        $Root:ident {
            $( $rkey:ident: $rty:ty => $rkind:expr, $rhelp:literal; )*
        }
        $(
            [$section:ident] $Section:ident {
                $( $key:ident: $ty:ty => $kind:expr, $help:literal; )*
            }
        )*
    ) => {
        $(
            #[doc = concat!("`[", stringify!($section), "]`.")]
            #[derive(Clone, Debug, Default, Deserialize, PartialEq)]
            #[serde(deny_unknown_fields)]
            pub struct $Section {
                $(
                    #[doc = concat!("`", stringify!($key), "`: ", $help, ".")]
                    pub $key: Option<$ty>,
                )*
            }
        )*

        $(#[$rmeta])*
        #[derive(Clone, Debug, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct $Root {
            $(
                #[doc = concat!("`", stringify!($rkey), "`: ", $rhelp, ".")]
                pub $rkey: Option<$rty>,
            )*
            $(
                #[doc = concat!("`[", stringify!($section), "]`.")]
                #[serde(default)]
                pub $section: $Section,
            )*
        }

        /// Every key, in the order of the schema.
        pub const KEYS: &[KeySpec] = &[
            $( KeySpec { section: "", key: stringify!($rkey), kind: $rkind, help: $rhelp }, )*
            $($(
                KeySpec {
                    section: stringify!($section),
                    key: stringify!($key),
                    kind: $kind,
                    help: $help,
                },
            )*)*
        ];

        /// The tables the schema knows.
        pub const SECTIONS: &[&str] = &[$(stringify!($section)),*];

        impl $Root {
            /// Fills what `self` leaves unset from `lower` (a preset, the defaults).
            pub fn merge(mut self, lower: &$Root) -> $Root {
                $(
                    if self.$rkey.is_none() {
                        self.$rkey = lower.$rkey.clone();
                    }
                )*
                $($(
                    if self.$section.$key.is_none() {
                        self.$section.$key = lower.$section.$key.clone();
                    }
                )*)*
                self
            }
        }
    };
}

schema! {
    /// A whole file.
    Config {
        board: String => Kind::Choice(&["auto", "pi3", "pi4", "pi5", "zero2w", "generic"]),
            "board preset (auto reads /proc/device-tree/model)";
    }
    [audio] Audio {
        device: String => Kind::Text,
            "ALSA device, e.g. hw:CARD=CODEC,DEV=0 (see `netaudio devices`), or virtual; a receiver also snapcast:tcp://HOST:PORT, pipe:PATH or stdout";
        rate: u32 => Kind::Int { min: RATES.0, max: RATES.1 },
            "sample rate in Hz (44100, 48000, 96000 are usual)";
        channels: u8 => Kind::Int { min: 1, max: 32 },
            "channels";
        format: String => Kind::Choice(&["S16_LE", "S24_3LE", "S32_LE"]),
            "sample format";
        period_frames: usize => Kind::Int { min: 16, max: 8192 },
            "frames per period (256 suits USB audio on a Pi; 64-128 with an RT kernel)";
        periods: usize => Kind::Int { min: 2, max: 32 },
            "periods in the device buffer (3 or 4 are typical)";
    }
    [network] Network {
        dest: TextList => Kind::TextList,
            "where the sender sends: host:port, a host name (the default port), a receiver's announced name, auto (the only receiver announced on the LAN), a multicast group:port (e.g. 239.255.46.1:46000), or an array of receivers' host:port";
        listen: String => Kind::Text,
            "where the receiver listens, addr:port (e.g. 0.0.0.0:46000), or a multicast group:port to join";
        ttl: u32 => Kind::Int { min: 1, max: 255 },
            "multicast sender: hop limit of the packets (default 1: the LAN, routers do not forward them)";
        interface: String => Kind::Text,
            "multicast: the interface (name or address) the sender sends the group out of, or the receiver joins it on (default: the routing table's choice)";
        dscp: u8 => Kind::Int { min: 0, max: 63 },
            "DSCP of sent packets (46: expedited forwarding)";
        key_file: String => Kind::Text,
            "pre-shared key file, the same on both machines (`netaudio keygen > FILE`, chmod 600)";
        proto: String => Kind::Choice(&["native", "rtp", "tcp"]),
            "wire protocol (tcp: raw PCM, as the old arecord | nc / nc -l | aplay pipeline)";
        sdp_file: String => Kind::Text,
            "rtp sender: also write the stream's SDP to this file (it is always logged)";
        name: String => Kind::Text,
            "receiver: the name it is announced under on the LAN (default: the host name)";
        announce: bool => Kind::Bool,
            "receiver: announce it on the LAN over mDNS/DNS-SD, for `netaudio discover` and dest = NAME or auto";
        sap: String => Kind::Text,
            "rtp: the sender announces its stream by SAP to ADDR:PORT (default 224.0.0.56:9875, PipeWire's), a receiver given one follows the stream announced there; off: no SAP";
    }
    [receiver] Receiver {
        latency_ms: f64 => Kind::Number { min: 1.0, max: 2000.0 },
            "target latency in ms, from arrival to leaving the sound card";
        latency: String => Kind::Choice(&["fixed", "auto"]),
            "auto: the target follows the network's jitter between latency_min_ms and latency_max_ms, starting at latency_ms";
        latency_min_ms: f64 => Kind::Number { min: 0.0, max: 2000.0 },
            "latency = auto: lowest target, ms (never below what the devices need)";
        latency_max_ms: f64 => Kind::Number { min: 1.0, max: 2000.0 },
            "latency = auto: highest target, ms";
        drift_mode: String => Kind::Choice(&["resample", "slip", "off"]),
            "clock drift correction";
        playback_format: String => Kind::Choice(&["auto", "S16_LE", "S24_3LE", "S32_LE"]),
            "sample format the playback device is opened in (auto: the widest it takes when resampling)";
        recovery: String => Kind::Choice(&["nack", "off"]),
            "loss recovery: nack asks the sender to send lost packets again";
        output_delay_us: f64 => Kind::Number { min: 0.0, max: 100_000.0 },
            "with sync.latency_ms: the delay after the sound card (the converter's filter, an amplifier's DSP), in µs; the receiver plays that much earlier";
    }
    [sync] Sync {
        latency_ms: f64 => Kind::Number { min: 1.0, max: 2000.0 },
            "receiver: play every frame this long after the sender captured it, the same on every receiver of the stream, so they all play in step (presentation time; the network's delay is part of it)";
        clock: String => Kind::Choice(&["exchange", "system"]),
            "how receivers know the sender's clock: exchange (a time exchange over the stream's own sockets, default) or system (the hosts' clocks, kept together by PTP/linuxptp or chrony; set it on the sender and on every receiver)";
    }
    [rt] Rt {
        cpu: usize => Kind::Int { min: 0, max: 1023 },
            "core of the realtime audio thread (an isolated one, see isolcpus=)";
        priority: u8 => Kind::Int { min: 0, max: 99 },
            "SCHED_FIFO priority of the audio thread (0: normal scheduling)";
        mlock: bool => Kind::Bool,
            "lock the process's memory";
    }
    [log] Log {
        level: String => Kind::Choice(&["error", "warn", "info", "debug", "trace"]),
            "log level";
        stats_interval_s: f64 => Kind::Number { min: 0.0, max: 86_400.0 },
            "seconds between stats lines (0: none)";
        file: String => Kind::Text,
            "also append the log to this file (for those who tail -f)";
    }
    [status] Status {
        http: String => Kind::Text,
            "serve the status page (levels, buffer, drift, loss, gap log) on ADDR:PORT, e.g. 0.0.0.0:8080 for the LAN, or a bare PORT for localhost only (default: off)";
    }
}

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The file (or other origin).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// `section.key` (or the section).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}: {}", self.origin, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.origin, self.key, self.message),
        }
    }
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) || c.starts_with(word) || word.starts_with(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The 1-based line of a byte offset of `text` (a span from the parser).
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `key` in `table`, from the parser's span of the key (else of its value).
fn line_of(text: &str, table: &dyn TableLike, key: &str) -> Option<usize> {
    let (k, item) = table.get_key_value(key)?;
    let span: Range<usize> = k.span().or_else(|| item.span())?;
    Some(line_at(text, span.start))
}

/// An item as a plain TOML value, for checking and for messages.
fn plain(item: &Item) -> Option<toml::Value> {
    use serde::de::IntoDeserializer;
    let v = item.clone().into_value().ok()?;
    toml::Value::deserialize(v.into_deserializer()).ok()
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Text => "a string".into(),
        Kind::Choice(c) => format!("one of {}", c.join(", ")),
        Kind::Int { min, max } => format!("a whole number in {min}..={max}"),
        Kind::Number { min, max } => format!("a number in {min}..={max}"),
        Kind::Bool => "true or false".into(),
        Kind::TextList => "a string or an array of strings".into(),
    }
}

/// Checks one value against its spec; `None` when it fits.
pub fn check_value(spec: &KeySpec, v: &toml::Value) -> Option<String> {
    let shown = v.to_string();
    let wrong = || {
        Some(format!(
            "{shown} is not allowed: {} must be {} ({})",
            spec.key,
            describe(spec.kind),
            spec.help
        ))
    };
    match (spec.kind, v) {
        (Kind::Text, toml::Value::String(_)) => None,
        (Kind::Choice(c), toml::Value::String(s)) => {
            if c.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                None
            } else {
                let hint = did_you_mean(&s.to_ascii_lowercase(), c.iter().copied())
                    .map(|m| format!("; did you mean \"{m}\"?"))
                    .unwrap_or_default();
                Some(format!(
                    "{shown} is not allowed: {} must be {}{hint}",
                    spec.key,
                    describe(spec.kind)
                ))
            }
        }
        (Kind::Int { min, max }, toml::Value::Integer(i)) => {
            if (min..=max).contains(i) {
                None
            } else {
                Some(format!(
                    "{i} is out of range: {} must be in {min}..={max} ({})",
                    spec.key, spec.help
                ))
            }
        }
        (Kind::Number { min, max }, toml::Value::Integer(_) | toml::Value::Float(_)) => {
            let x = v.as_float().or(v.as_integer().map(|i| i as f64))?;
            if x.is_finite() && (min..=max).contains(&x) {
                None
            } else {
                Some(format!(
                    "{shown} is out of range: {} must be in {min}..={max} ({})",
                    spec.key, spec.help
                ))
            }
        }
        (Kind::Bool, toml::Value::Boolean(_)) => None,
        (Kind::TextList, toml::Value::String(_)) => None,
        (Kind::TextList, toml::Value::Array(a))
            if !a.is_empty() && a.iter().all(toml::Value::is_str) =>
        {
            None
        }
        _ => wrong(),
    }
}

/// Every problem of a configuration text.
pub fn check(text: &str, origin: &str) -> Vec<Problem> {
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return vec![Problem {
                origin: origin.into(),
                line: e.span().map(|s| line_at(text, s.start)),
                key: "syntax".into(),
                message: e.message().trim().to_string()
                    + " (TOML: `key = value` lines under [audio], [network], [receiver], [rt], [log])",
            }];
        }
    };
    let root = doc.as_table();
    let mut problems = Vec::new();
    for (name, item) in root.iter() {
        let line = line_of(text, root, name);
        match item.as_table_like() {
            Some(_) if !SECTIONS.contains(&name) => {
                let hint = did_you_mean(name, SECTIONS.iter().copied())
                    .map(|m| format!("; did you mean [{m}]?"))
                    .unwrap_or_else(|| format!("; the tables are [{}]", SECTIONS.join("], [")));
                problems.push(Problem {
                    origin: origin.into(),
                    line,
                    key: format!("[{name}]"),
                    message: format!("unknown table{hint}"),
                });
            }
            Some(t) => {
                for (key, v) in t.iter() {
                    let line = line_of(text, t, key);
                    check_key(origin, line, name, key, v, &mut problems);
                }
            }
            None => check_key(origin, line, "", name, item, &mut problems),
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

fn check_key(
    origin: &str,
    line: Option<usize>,
    section: &str,
    key: &str,
    item: &Item,
    out: &mut Vec<Problem>,
) {
    let full = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    match KEYS.iter().find(|s| s.section == section && s.key == key) {
        Some(spec) => {
            let message = match plain(item) {
                Some(v) => check_value(spec, &v),
                None => Some(format!(
                    "{} must be {} ({})",
                    spec.key,
                    describe(spec.kind),
                    spec.help
                )),
            };
            if let Some(message) = message {
                out.push(Problem {
                    origin: origin.into(),
                    line,
                    key: full,
                    message,
                });
            }
        }
        None => {
            let here = KEYS.iter().filter(|s| s.section == section).map(|s| s.key);
            let hint = match did_you_mean(key, here) {
                Some(m) => format!("; did you mean \"{m}\"?"),
                None => {
                    // Maybe it belongs to another table.
                    match KEYS.iter().find(|s| s.key == key) {
                        Some(s) => format!("; it belongs under [{}]", s.section),
                        None => {
                            let keys: Vec<&str> = KEYS
                                .iter()
                                .filter(|s| s.section == section)
                                .map(|s| s.key)
                                .collect();
                            format!("; the keys here are {}", keys.join(", "))
                        }
                    }
                }
            };
            out.push(Problem {
                origin: origin.into(),
                line,
                key: full,
                message: format!("unknown key{hint}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_and_an_out_of_range_rate_are_both_reported_with_lines() {
        let text =
            "[audio]\ndevice = \"hw:CARD=CODEC,DEV=0\"\nrate = 1234567\nperiod_frame = 256\n";
        let p = check(text, "bad.toml");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].line, Some(3));
        assert_eq!(p[0].key, "audio.rate");
        assert!(p[0].message.contains("1234567") && p[0].message.contains("8000..=384000"));
        assert_eq!(p[1].line, Some(4));
        assert!(
            p[1].message.contains("did you mean \"period_frames\""),
            "{}",
            p[1]
        );
        assert_eq!(
            p[1].to_string(),
            "bad.toml:4: audio.period_frame: unknown key; did you mean \"period_frames\"?"
        );
    }

    #[test]
    fn misplaced_keys_unknown_tables_and_bad_choices_say_the_fix() {
        let text = "[rt]\nlatency_ms = 20\n[recevier]\n[audio]\nformat = \"s16le\"\n";
        let p = check(text, "x.toml");
        assert!(
            p[0].message.contains("belongs under [receiver]"),
            "{}",
            p[0]
        );
        assert!(p[1].message.contains("did you mean [receiver]"), "{}", p[1]);
        assert!(p[2].message.contains("one of S16_LE"), "{}", p[2]);
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let p = check("[audio]\nrate = = 3\n", "x.toml");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(2));
    }

    #[test]
    fn lines_come_from_the_parser_for_tables_dotted_keys_and_inline_tables() {
        let text = "# netaudio\nrt = { cpu = 3, prio = 80 }\n\naudio.rates = 48000\n[recevier]\n";
        let p = check(text, "x.toml");
        let shown: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "x.toml:2: rt.prio: unknown key; did you mean \"priority\"?",
                "x.toml:4: audio.rates: unknown key; did you mean \"rate\"?",
                "x.toml:5: [recevier]: unknown table; did you mean [receiver]?",
            ]
        );
    }

    #[test]
    fn every_key_of_the_schema_deserialises() {
        for spec in KEYS {
            let value = match spec.kind {
                Kind::Text => "\"x\"".to_string(),
                Kind::Choice(c) => format!("\"{}\"", c[0]),
                Kind::Int { min, .. } => min.to_string(),
                Kind::Number { max, .. } => format!("{max:?}"),
                Kind::Bool => "true".to_string(),
                Kind::TextList => "[\"a\", \"b\"]".to_string(),
            };
            let text = if spec.section.is_empty() {
                format!("{} = {value}\n", spec.key)
            } else {
                format!("[{}]\n{} = {value}\n", spec.section, spec.key)
            };
            let c = crate::Config::parse(&text, "t.toml").unwrap();
            assert_ne!(c, crate::Config::default(), "{text}");
        }
    }

    #[test]
    fn dest_is_one_receiver_or_an_array_of_them() {
        let c = crate::Config::parse(
            "[network]\ndest = [\"kitchen:46000\", \"hall:46000\"]\nttl = 4\ninterface = \"eth0\"\n",
            "t.toml",
        )
        .unwrap();
        let d = c.network.dest.unwrap();
        assert_eq!(d.joined(), "kitchen:46000,hall:46000");
        assert_eq!(
            (c.network.ttl, c.network.interface.as_deref()),
            (Some(4), Some("eth0"))
        );
        assert!(check("[network]\ndest = \"239.255.46.1:46000\"\n", "t.toml").is_empty());
        for bad in ["dest = [1, 2]", "dest = []", "ttl = 0"] {
            let p = check(&format!("[network]\n{bad}\n"), "t.toml");
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
        }
    }
}
