//! The schema every configuration file is checked against: each key, its type and range, and
//! the fix to suggest. Checking collects every problem of a file at once, each with its line.

use std::fmt;

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

/// Every key.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "",
        key: "board",
        kind: Kind::Choice(&["auto", "pi3", "pi4", "pi5", "zero2w", "generic"]),
        help: "board preset (auto reads /proc/device-tree/model)",
    },
    KeySpec {
        section: "audio",
        key: "device",
        kind: Kind::Text,
        help: "ALSA device, e.g. hw:CARD=CODEC,DEV=0 (see `netaudio devices`), or virtual",
    },
    KeySpec {
        section: "audio",
        key: "rate",
        kind: Kind::Int {
            min: RATES.0,
            max: RATES.1,
        },
        help: "sample rate in Hz (44100, 48000, 96000 are usual)",
    },
    KeySpec {
        section: "audio",
        key: "channels",
        kind: Kind::Int { min: 1, max: 32 },
        help: "channels",
    },
    KeySpec {
        section: "audio",
        key: "format",
        kind: Kind::Choice(&["S16_LE", "S24_3LE", "S32_LE"]),
        help: "sample format",
    },
    KeySpec {
        section: "audio",
        key: "period_frames",
        kind: Kind::Int { min: 16, max: 8192 },
        help: "frames per period (256 suits USB audio on a Pi; 64-128 with an RT kernel)",
    },
    KeySpec {
        section: "audio",
        key: "periods",
        kind: Kind::Int { min: 2, max: 32 },
        help: "periods in the device buffer (3 or 4 are typical)",
    },
    KeySpec {
        section: "network",
        key: "dest",
        kind: Kind::Text,
        help: "where the sender sends, host:port (e.g. turntable2.local:46000)",
    },
    KeySpec {
        section: "network",
        key: "listen",
        kind: Kind::Text,
        help: "where the receiver listens, addr:port (e.g. 0.0.0.0:46000)",
    },
    KeySpec {
        section: "network",
        key: "dscp",
        kind: Kind::Int { min: 0, max: 63 },
        help: "DSCP of sent packets (46: expedited forwarding)",
    },
    KeySpec {
        section: "network",
        key: "key_file",
        kind: Kind::Text,
        help: "pre-shared key file, the same on both machines (`netaudio keygen > FILE`, chmod 600)",
    },
    KeySpec {
        section: "network",
        key: "proto",
        kind: Kind::Choice(&["native", "rtp", "tcp"]),
        help: "wire protocol (tcp: raw PCM, as the old arecord | nc / nc -l | aplay pipeline)",
    },
    KeySpec {
        section: "network",
        key: "sdp_file",
        kind: Kind::Text,
        help: "rtp sender: also write the stream's SDP to this file (it is always logged)",
    },
    KeySpec {
        section: "receiver",
        key: "latency_ms",
        kind: Kind::Number {
            min: 1.0,
            max: 2000.0,
        },
        help: "target latency in ms, from arrival to leaving the sound card",
    },
    KeySpec {
        section: "receiver",
        key: "latency",
        kind: Kind::Choice(&["fixed", "auto"]),
        help: "auto: the target follows the network's jitter between latency_min_ms and latency_max_ms, starting at latency_ms",
    },
    KeySpec {
        section: "receiver",
        key: "latency_min_ms",
        kind: Kind::Number {
            min: 0.0,
            max: 2000.0,
        },
        help: "latency = auto: lowest target, ms (never below what the devices need)",
    },
    KeySpec {
        section: "receiver",
        key: "latency_max_ms",
        kind: Kind::Number {
            min: 1.0,
            max: 2000.0,
        },
        help: "latency = auto: highest target, ms",
    },
    KeySpec {
        section: "receiver",
        key: "drift_mode",
        kind: Kind::Choice(&["resample", "slip", "off"]),
        help: "clock drift correction",
    },
    KeySpec {
        section: "receiver",
        key: "playback_format",
        kind: Kind::Choice(&["auto", "S16_LE", "S24_3LE", "S32_LE"]),
        help: "sample format the playback device is opened in (auto: the widest it takes when resampling)",
    },
    KeySpec {
        section: "receiver",
        key: "recovery",
        kind: Kind::Choice(&["nack", "off"]),
        help: "loss recovery: nack asks the sender to send lost packets again",
    },
    KeySpec {
        section: "rt",
        key: "cpu",
        kind: Kind::Int { min: 0, max: 1023 },
        help: "core of the realtime audio thread (an isolated one, see isolcpus=)",
    },
    KeySpec {
        section: "rt",
        key: "priority",
        kind: Kind::Int { min: 0, max: 99 },
        help: "SCHED_FIFO priority of the audio thread (0: normal scheduling)",
    },
    KeySpec {
        section: "rt",
        key: "mlock",
        kind: Kind::Bool,
        help: "lock the process's memory",
    },
    KeySpec {
        section: "log",
        key: "level",
        kind: Kind::Choice(&["error", "warn", "info", "debug", "trace"]),
        help: "log level",
    },
    KeySpec {
        section: "log",
        key: "stats_interval_s",
        kind: Kind::Number {
            min: 0.0,
            max: 86_400.0,
        },
        help: "seconds between stats lines (0: none)",
    },
    KeySpec {
        section: "log",
        key: "file",
        kind: Kind::Text,
        help: "also append the log to this file (for those who tail -f)",
    },
];

/// The tables the schema knows.
pub const SECTIONS: &[&str] = &["audio", "network", "receiver", "rt", "log"];

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

/// Levenshtein distance (small strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) || c.starts_with(word) || word.starts_with(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The 1-based line of `key` in `section` of `text`, found by reading the lines (the files
/// are flat: one level of tables, one key per line).
pub fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            if key.is_empty() && current == section {
                return Some(i + 1);
            }
            continue;
        }
        if current == section
            && let Some((k, _)) = line.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            return Some(i + 1);
        }
    }
    None
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Text => "a string".into(),
        Kind::Choice(c) => format!("one of {}", c.join(", ")),
        Kind::Int { min, max } => format!("a whole number in {min}..={max}"),
        Kind::Number { min, max } => format!("a number in {min}..={max}"),
        Kind::Bool => "true or false".into(),
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
        _ => wrong(),
    }
}

/// Every problem of a configuration text.
pub fn check(text: &str, origin: &str) -> Vec<Problem> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            return vec![Problem {
                origin: origin.into(),
                line,
                key: "syntax".into(),
                message: e.message().trim().to_string()
                    + " (TOML: `key = value` lines under [audio], [network], [receiver], [rt], [log])",
            }];
        }
    };
    let mut problems = Vec::new();
    for (name, value) in &table {
        if let toml::Value::Table(t) = value {
            if !SECTIONS.contains(&name.as_str()) {
                let hint = did_you_mean(name, SECTIONS.iter().copied())
                    .map(|m| format!("; did you mean [{m}]?"))
                    .unwrap_or_else(|| format!("; the tables are [{}]", SECTIONS.join("], [")));
                problems.push(Problem {
                    origin: origin.into(),
                    line: line_of(text, name, ""),
                    key: format!("[{name}]"),
                    message: format!("unknown table{hint}"),
                });
                continue;
            }
            for (key, v) in t {
                check_key(text, origin, name, key, v, &mut problems);
            }
        } else {
            check_key(text, origin, "", name, value, &mut problems);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

fn check_key(
    text: &str,
    origin: &str,
    section: &str,
    key: &str,
    v: &toml::Value,
    out: &mut Vec<Problem>,
) {
    let full = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    let line = line_of(text, section, key);
    match KEYS.iter().find(|s| s.section == section && s.key == key) {
        Some(spec) => {
            if let Some(message) = check_value(spec, v) {
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
}
