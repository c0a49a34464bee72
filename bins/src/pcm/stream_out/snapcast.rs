//! What a snapserver reads: its JSON-RPC control port asked for `Server.GetStatus`, the TCP
//! source on our port found among its streams, and that source's sample format checked
//! against the stream's.
//!
//! Not for realtime threads: connects, blocks (with timeouts), allocates and formats. Runs at
//! open and on the output's connector thread before each connect.

use super::names::WireSample;
use engine::format::StreamFormat;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the control port may take to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP source of snapserver, as its control port lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapSource {
    /// The source's name (`name=`).
    pub name: String,
    /// Its URI as snapserver shows it.
    pub uri: String,
    /// Frames per second.
    pub rate: u32,
    /// Bits per sample (16, 24, 32).
    pub bits: u16,
    /// Channels.
    pub channels: u8,
    /// Its read chunk, ms (`chunk_ms`, default 20).
    pub chunk_ms: u32,
}

impl SnapSource {
    /// `RATE:BITS:CHANNELS`, as snapserver spells it.
    pub fn sampleformat(&self) -> String {
        format!("{}:{}:{}", self.rate, self.bits, self.channels)
    }
}

/// What the control port said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The TCP source on our port.
    Found(SnapSource),
    /// Snapserver answered but has no server-mode TCP source on our port (the text says why).
    NoSource(String),
    /// The control port did not answer (the text says why).
    Unreachable(String),
}

/// Asks the snapserver at `host:control` for the server-mode TCP source on `port`.
pub fn probe(host: &str, control: u16, port: u16) -> Probe {
    match get_status(host, control) {
        Ok(v) => match find_source(&v, port) {
            Ok(s) => Probe::Found(s),
            Err(e) => Probe::NoSource(e),
        },
        Err(e) => Probe::Unreachable(e),
    }
}

fn get_status(host: &str, control: u16) -> Result<Value, String> {
    let addr = (host, control)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, CONTROL_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .and_then(|_| {
            s.write_all(b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"Server.GetStatus\"}\r\n")
        })
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut r = BufReader::new(s);
    // Notifications may come first: the answer is the line with our id.
    for _ in 0..16 {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            return Err(format!("{addr} does not answer Snapcast's JSON-RPC"));
        };
        if v["id"] == 1 {
            return if v["result"].is_object() {
                Ok(v["result"].clone())
            } else {
                Err(format!(
                    "{addr} answered Server.GetStatus with {}",
                    v["error"]
                ))
            };
        }
    }
    Err(format!("{addr} closed without answering Server.GetStatus"))
}

/// `RATE:BITS:CHANNELS` (no wildcards).
pub fn parse_sampleformat(s: &str) -> Option<(u32, u16, u8)> {
    let mut it = s.split(':');
    let r = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    it.next().is_none().then_some(r)
}

/// The server-mode TCP source listening on `port` in a `Server.GetStatus` result.
pub fn find_source(status: &Value, port: u16) -> Result<SnapSource, String> {
    let streams = status["server"]["streams"]
        .as_array()
        .ok_or("its status lists no streams")?;
    let mut seen = Vec::new();
    for s in streams {
        let uri = &s["uri"];
        let q = &uri["query"];
        let raw = uri["raw"].as_str().unwrap_or("?").to_string();
        let host = uri["host"].as_str().unwrap_or("");
        let p = q["port"]
            .as_str()
            .and_then(|p| p.parse::<u16>().ok())
            .or_else(|| host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .unwrap_or(super::names::SNAPCAST_STREAM_PORT);
        let mode = q["mode"].as_str().unwrap_or("server");
        if uri["scheme"] != "tcp" || p != port || mode != "server" {
            seen.push(raw);
            continue;
        }
        let sf = q["sampleformat"].as_str().unwrap_or("48000:16:2");
        let (rate, bits, channels) = parse_sampleformat(sf).ok_or_else(|| {
            format!("its source {raw} has sampleformat {sf:?}; give it RATE:BITS:CHANNELS")
        })?;
        let chunk_ms = q["chunk_ms"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .filter(|&c| c > 0)
            .unwrap_or(20);
        return Ok(SnapSource {
            name: s["id"].as_str().unwrap_or("?").to_string(),
            uri: raw,
            rate,
            bits,
            channels,
            chunk_ms,
        });
    }
    Err(format!(
        "it has no TCP source in server mode on port {port} (its sources: {}); add \
         `source = tcp://0.0.0.0:{port}?name=netaudio&mode=server` to snapserver.conf, or point \
         ?control=PORT at the snapserver that has it",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}

/// How to write `stream` into `src`: its sample encoding, or an error naming both formats and
/// the fix when rate or channels differ (only the width is converted).
pub fn check_format(stream: StreamFormat, src: &SnapSource) -> Result<WireSample, String> {
    let ours = format!(
        "{}:{}:{}",
        stream.rate,
        stream.sample.bytes() * 8,
        stream.channels
    );
    let mismatch = |why: String| {
        format!(
            "snapserver's source {:?} reads sampleformat {} but netaudio streams {ours} ({why}): \
             set `sampleformat={}:{}:{}` on that source in snapserver.conf (`source = \
             tcp://...?name={}&mode=server&sampleformat={}:{}:{}`), or stream {} Hz, {} channels with \
             netaudio's --rate {} --channels {} (audio.rate, audio.channels) on sender and \
             receiver",
            src.name,
            src.sampleformat(),
            stream.rate,
            src.bits,
            stream.channels,
            src.name,
            stream.rate,
            src.bits,
            stream.channels,
            src.rate,
            src.channels,
            src.rate,
            src.channels
        )
    };
    if src.rate != stream.rate {
        return Err(mismatch(format!(
            "{} Hz against {} Hz",
            src.rate, stream.rate
        )));
    }
    if src.channels != stream.channels {
        return Err(mismatch(format!(
            "{} channels against {}",
            src.channels, stream.channels
        )));
    }
    WireSample::from_snapcast_bits(src.bits).ok_or_else(|| {
        mismatch(format!(
            "{} bits per sample: netaudio writes 16, 24 or 32",
            src.bits
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;
    use serde_json::json;

    fn status(uri_host: &str, query: Value) -> Value {
        json!({"server": {"streams": [
            {"id": "default", "uri": {"scheme": "pipe", "host": "", "raw": "pipe:///tmp/snapfifo?name=default",
              "query": {"sampleformat": "48000:16:2"}}},
            {"id": "netaudio", "uri": {"scheme": "tcp", "host": uri_host,
              "raw": format!("tcp://{uri_host}/?name=netaudio"), "query": query}}
        ]}})
    }

    #[test]
    fn the_source_on_our_port_is_found_and_its_format_read() {
        let v = status(
            "0.0.0.0:4954",
            json!({"mode": "server", "sampleformat": "44100:24:2", "chunk_ms": "10"}),
        );
        let s = find_source(&v, 4954).unwrap();
        assert_eq!(
            (s.name.as_str(), s.rate, s.bits, s.channels, s.chunk_ms),
            ("netaudio", 44_100, 24, 2, 10)
        );
        let e = find_source(&v, 4953).unwrap_err();
        assert!(
            e.contains("port 4953")
                && e.contains("pipe:///tmp/snapfifo")
                && e.contains("mode=server"),
            "{e}"
        );
        // A client-mode source is not ours to connect to.
        let v = status("10.0.0.1:4953", json!({"mode": "client"}));
        assert!(find_source(&v, 4953).is_err());
        assert_eq!(parse_sampleformat("48000:16:2"), Some((48_000, 16, 2)));
        assert_eq!(parse_sampleformat("*:16:2"), None);
        assert_eq!(parse_sampleformat("48000:16"), None);
    }

    #[test]
    fn formats_agree_on_rate_and_channels_and_the_width_is_converted() {
        let src = SnapSource {
            name: "netaudio".into(),
            uri: "tcp://0.0.0.0:4953".into(),
            rate: 48_000,
            bits: 24,
            channels: 2,
            chunk_ms: 20,
        };
        let s16 = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        assert_eq!(check_format(s16, &src), Ok(WireSample::S24In4));
        let s44 = StreamFormat::new(44_100, 2, SampleFormat::S16Le).unwrap();
        let e = check_format(s44, &src).unwrap_err();
        assert!(
            e.contains("48000:24:2")
                && e.contains("44100:16:2")
                && e.contains("sampleformat=44100:24:2")
                && e.contains("--rate 48000 --channels 2"),
            "{e}"
        );
        let mono = StreamFormat::new(48_000, 1, SampleFormat::S16Le).unwrap();
        assert!(
            check_format(mono, &src)
                .unwrap_err()
                .contains("2 channels against 1")
        );
    }
}
