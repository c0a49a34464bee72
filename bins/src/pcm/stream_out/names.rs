//! Output names: `snapcast:tcp://HOST:PORT[?control=PORT]`, `pipe:PATH` and `stdout`, parsed
//! into an [`OutputTarget`]; and the sample encodings an output writes ([`WireSample`]).
//!
//! Parsed at open, never on a realtime thread, except [`WireSample::bytes`] and
//! [`WireSample::encode_slice`] (arithmetic on caller-owned buffers: no allocation, no lock).

use engine::format::SampleFormat;
use std::path::PathBuf;

/// Snapserver's default TCP source port (`tcp://HOST:4953`).
pub const SNAPCAST_STREAM_PORT: u16 = 4953;
/// Snapserver's default JSON-RPC control port.
pub const SNAPCAST_CONTROL_PORT: u16 = 1705;

/// Where an output writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    /// A Snapcast TCP source in server mode: netaudio connects and writes.
    Snapcast {
        /// Host of snapserver.
        host: String,
        /// Its TCP source port.
        port: u16,
        /// Its JSON-RPC control port (to read the source's sample format).
        control: u16,
    },
    /// A FIFO (created if missing), e.g. Snapcast's `pipe://` source.
    Pipe(PathBuf),
    /// This process's standard output.
    Stdout,
}

impl OutputTarget {
    /// What the output is, for logs and `netaudio check`.
    pub fn describe(&self) -> String {
        match self {
            OutputTarget::Snapcast {
                host,
                port,
                control,
            } => format!(
                "the Snapcast TCP source at {host}:{port} (server mode; format read from its control port {control})"
            ),
            OutputTarget::Pipe(p) => format!("the FIFO {}", p.display()),
            OutputTarget::Stdout => "standard output".into(),
        }
    }
}

const USAGE: &str = "use snapcast:tcp://HOST:PORT (a snapserver source \
     `tcp://0.0.0.0:PORT?name=NAME&mode=server`; add ?control=PORT when its JSON-RPC port is \
     not 1705), pipe:PATH (a FIFO, created if missing) or stdout";

/// Parses an output name; `None` when `name` is not one (an ALSA or virtual device).
pub fn parse_name(name: &str) -> Option<Result<OutputTarget, String>> {
    if name == "stdout" {
        return Some(Ok(OutputTarget::Stdout));
    }
    if let Some(path) = name.strip_prefix("pipe:") {
        // `pipe:///tmp/x` as Snapcast spells it is accepted too.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() || path.contains('\0') {
            return Some(Err(format!("no FIFO path in {name:?}: {USAGE}")));
        }
        return Some(Ok(OutputTarget::Pipe(PathBuf::from(path))));
    }
    let rest = name.strip_prefix("snapcast:")?;
    Some(parse_snapcast(name, rest))
}

fn parse_snapcast(name: &str, rest: &str) -> Result<OutputTarget, String> {
    let bad = |why: &str| format!("bad Snapcast output {name:?}: {why}; {USAGE}");
    let addr = rest
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("only tcp:// sources can be written to"))?;
    let (addr, query) = addr.split_once('?').unwrap_or((addr, ""));
    let addr = addr.trim_end_matches('/');
    let (host, port) = match addr.rsplit_once(':') {
        // An IPv6 literal in brackets, or a host with a port.
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a port number")))?,
        ),
        _ => (addr, SNAPCAST_STREAM_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let mut control = SNAPCAST_CONTROL_PORT;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("control", v)) => {
                control = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad(&format!("control={v:?} is not a port number")))?;
            }
            _ => return Err(bad(&format!("unknown option {kv:?} (only control=PORT)"))),
        }
    }
    Ok(OutputTarget::Snapcast {
        host: host.to_string(),
        port,
        control,
    })
}

/// How an output encodes a sample: netaudio's formats, and Snapcast's 24-bit one (in four
/// bytes, the value in the low three, sign-extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireSample {
    /// A format the engine renders too.
    Pcm(SampleFormat),
    /// 24 bits in 4 bytes (Snapcast's `:24:`, ALSA's S24_LE).
    S24In4,
}

impl WireSample {
    /// Snapcast's encoding for `bits` (16, 24 or 32).
    pub fn from_snapcast_bits(bits: u16) -> Option<WireSample> {
        match bits {
            16 => Some(WireSample::Pcm(SampleFormat::S16Le)),
            24 => Some(WireSample::S24In4),
            32 => Some(WireSample::Pcm(SampleFormat::S32Le)),
            _ => None,
        }
    }

    /// Bits of precision.
    pub fn bits(self) -> u16 {
        match self {
            WireSample::Pcm(SampleFormat::S16Le) => 16,
            WireSample::Pcm(SampleFormat::S24_3Le) | WireSample::S24In4 => 24,
            WireSample::Pcm(SampleFormat::S32Le) => 32,
        }
    }

    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            WireSample::Pcm(s) => s.bytes(),
            WireSample::S24In4 => 4,
        }
    }

    /// The engine format to render in for a stream of `stream` samples: the stream's, or this
    /// one's precision when it is wider (the engine renders at a device's wider width).
    pub fn render_format(self, stream: SampleFormat) -> SampleFormat {
        let wider = match self.bits() {
            32 => SampleFormat::S32Le,
            24 => SampleFormat::S24_3Le,
            _ => SampleFormat::S16Le,
        };
        if wider.bytes() > stream.bytes() {
            wider
        } else {
            stream
        }
    }

    /// Encodes left-justified samples (as the engine holds them) into `bytes`.
    pub fn encode_slice(self, samples: &[i32], bytes: &mut [u8]) {
        match self {
            WireSample::Pcm(s) => s.encode_slice(samples, bytes),
            WireSample::S24In4 => {
                for (s, c) in samples.iter().zip(bytes.chunks_exact_mut(4)) {
                    // Round to 24 bits as the engine does, saturating at full scale.
                    let v = ((*s as i64 + 128) >> 8).min(0x7F_FFFF) as i32;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// The name Snapcast's `sampleformat` uses for the width.
    pub fn name(self) -> &'static str {
        match self {
            WireSample::Pcm(s) => s.name(),
            WireSample::S24In4 => "S24_LE (24 bits in 4 bytes)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_clear_errors() {
        assert_eq!(parse_name("hw:0"), None);
        assert_eq!(parse_name("virtual"), None);
        assert_eq!(parse_name("stdout"), Some(Ok(OutputTarget::Stdout)));
        assert_eq!(
            parse_name("pipe:/tmp/snapfifo"),
            Some(Ok(OutputTarget::Pipe("/tmp/snapfifo".into())))
        );
        assert_eq!(
            parse_name("pipe:///tmp/snapfifo"),
            Some(Ok(OutputTarget::Pipe("/tmp/snapfifo".into())))
        );
        assert!(parse_name("pipe:").unwrap().is_err());
        assert_eq!(
            parse_name("snapcast:tcp://10.0.0.2:4954"),
            Some(Ok(OutputTarget::Snapcast {
                host: "10.0.0.2".into(),
                port: 4954,
                control: 1705
            }))
        );
        assert_eq!(
            parse_name("snapcast:tcp://snap.local?control=1805"),
            Some(Ok(OutputTarget::Snapcast {
                host: "snap.local".into(),
                port: 4953,
                control: 1805
            }))
        );
        assert_eq!(
            parse_name("snapcast:tcp://[::1]:5000/"),
            Some(Ok(OutputTarget::Snapcast {
                host: "::1".into(),
                port: 5000,
                control: 1705
            }))
        );
        for (bad, says) in [
            ("snapcast:pipe:///tmp/f", "only tcp://"),
            ("snapcast:tcp://h:x", "\"x\""),
            ("snapcast:tcp://h:1?control=0", "control=\"0\""),
            ("snapcast:tcp://h:1?name=a", "name=a"),
            ("snapcast:tcp://:1", "no host"),
        ] {
            let e = parse_name(bad).unwrap().unwrap_err();
            assert!(e.contains(says) && e.contains("mode=server"), "{e}");
        }
    }

    #[test]
    fn wire_samples_encode_what_snapcast_reads() {
        let w = WireSample::from_snapcast_bits(24).unwrap();
        let mut b = [0u8; 8];
        w.encode_slice(&[0x1234_5600, -0x100], &mut b);
        assert_eq!(b, [0x56, 0x34, 0x12, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        w.encode_slice(&[i32::MAX], &mut b[..4]);
        assert_eq!(b[..4], [0xFF, 0xFF, 0x7F, 0]);
        assert_eq!(WireSample::from_snapcast_bits(20), None);
        let s16 = WireSample::from_snapcast_bits(16).unwrap();
        assert_eq!(
            s16.render_format(SampleFormat::S24_3Le),
            SampleFormat::S24_3Le
        );
        assert_eq!(
            WireSample::from_snapcast_bits(32)
                .unwrap()
                .render_format(SampleFormat::S16Le),
            SampleFormat::S32Le
        );
        assert_eq!(w.render_format(SampleFormat::S16Le), SampleFormat::S24_3Le);
    }
}
