//! Reading a session description (RFC 4566) of an L16/L24 stream, as SAP announcements carry
//! them (PipeWire's `module-rtp-sink`, netaudio's own sender, VLC): where the stream goes and in
//! which format.
//!
//! Tolerant like PipeWire's reader: lines end in CRLF or LF, unknown lines and attributes are
//! skipped, the first `m=audio` line with `RTP/AVP` is the stream, `a=rtpmap` for its payload
//! type gives the format (the static types 10 and 11 need none), `c=` may carry a TTL
//! (`/1`). Total: any text gives a stream or a typed [`SdpError`], never a panic.
//!
//! Not realtime (start-up only), though it does not allocate: it borrows the text.

use super::static_format;
use crate::format::{SampleFormat, StreamFormat};
use core::fmt;
use core::net::IpAddr;

/// What an SDP says about its audio stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdpStream<'a> {
    /// The `o=` line's value: with SAP, the session's identity.
    pub origin: &'a str,
    /// The session name (`s=`), may be empty.
    pub name: &'a str,
    /// Where the media goes (`c=`): a unicast or multicast address.
    pub addr: IpAddr,
    /// The media port (`m=`).
    pub port: u16,
    /// The payload type.
    pub payload_type: u8,
    /// The stream's format.
    pub format: StreamFormat,
}

/// Why an SDP does not describe a stream we can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpError {
    /// The first line is not `v=0`.
    NotSdp,
    /// No `c=IN IP4|IP6 ADDR` line, or an address that does not parse.
    NoAddress,
    /// No `m=audio PORT RTP/AVP PT` line.
    NoAudio,
    /// The payload type has no `a=rtpmap` and is not static L16.
    NoRtpmap(u8),
    /// An encoding other than L16/L24 (e.g. PCMU, opus).
    Encoding,
    /// A rate or channel count out of range.
    Format,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotSdp => f.write_str("not an SDP (no v=0 first)"),
            Self::NoAddress => f.write_str("SDP without a usable c=IN IP4/IP6 address"),
            Self::NoAudio => f.write_str("SDP without an m=audio PORT RTP/AVP line"),
            Self::NoRtpmap(pt) => write!(f, "SDP without a=rtpmap for payload type {pt}"),
            Self::Encoding => f.write_str("SDP stream is not L16 or L24 audio"),
            Self::Format => f.write_str("SDP stream has a rate or channel count out of range"),
        }
    }
}

impl std::error::Error for SdpError {}

/// `L16/48000/2` (channels default to 1) into a format.
fn rtpmap_format(enc: &str) -> Result<StreamFormat, SdpError> {
    let mut it = enc.split('/');
    let sample = match it.next().map(str::trim) {
        Some(e) if e.eq_ignore_ascii_case("L16") => SampleFormat::S16Le,
        Some(e) if e.eq_ignore_ascii_case("L24") => SampleFormat::S24_3Le,
        _ => return Err(SdpError::Encoding),
    };
    let rate = it.next().and_then(|r| r.trim().parse::<u32>().ok());
    let channels = match it.next() {
        Some(c) => c.trim().parse::<u8>().ok(),
        None => Some(1),
    };
    match (rate, channels) {
        (Some(r), Some(c)) => StreamFormat::new(r, c, sample).ok_or(SdpError::Format),
        _ => Err(SdpError::Format),
    }
}

impl<'a> SdpStream<'a> {
    /// Reads the audio stream of `sdp`.
    pub fn parse(sdp: &'a str) -> Result<SdpStream<'a>, SdpError> {
        let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("v=0") {
            return Err(SdpError::NotSdp);
        }
        let (mut origin, mut name, mut addr) = ("", "", None);
        let mut media: Option<(u16, u8)> = None;
        let mut format = None;
        for l in lines {
            let Some((key, value)) = l.split_once('=') else {
                continue;
            };
            match key {
                "o" => origin = value,
                "s" => name = value,
                // The first c= wins, except that a media-level one after m= overrides.
                "c" if addr.is_none() || media.is_some() => {
                    let mut f = value.split_whitespace();
                    if let (Some("IN"), Some("IP4" | "IP6"), Some(a)) =
                        (f.next(), f.next(), f.next())
                    {
                        let a = a.split('/').next().unwrap_or(a);
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            addr = Some(ip);
                        }
                    }
                }
                "m" if media.is_none() => {
                    let f: heapless::Vec<&str, 4> = value.split_whitespace().take(4).collect();
                    if let [kind, port, proto, pt] = f.as_slice()
                        && *kind == "audio"
                        && proto.starts_with("RTP/AVP")
                        && let (Ok(port), Ok(pt)) = (port.parse::<u16>(), pt.parse::<u8>())
                        && port > 0
                        && pt < 128
                    {
                        media = Some((port, pt));
                        format = static_format(pt).map(Ok);
                    }
                }
                "a" => {
                    if let (Some((_, pt)), Some(map)) = (media, value.strip_prefix("rtpmap:"))
                        && let Some((t, enc)) = map.trim().split_once(char::is_whitespace)
                        && t.parse::<u8>() == Ok(pt)
                    {
                        format = Some(rtpmap_format(enc));
                    }
                }
                _ => {}
            }
        }
        let (port, payload_type) = media.ok_or(SdpError::NoAudio)?;
        let format = format.ok_or(SdpError::NoRtpmap(payload_type))??;
        Ok(SdpStream {
            origin,
            name,
            addr: addr.ok_or(SdpError::NoAddress)?,
            port,
            payload_type,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{SdpDirection, SdpParams, write_sdp};

    #[test]
    fn reads_what_pipewire_and_netaudio_announce() {
        let pw = "v=0\no=root 3910000000 0 IN IP4 0.0.0.0\ns=PipeWire RTP Stream on host\nc=IN IP4 224.0.0.56/1\nt=3910000000 0\na=recvonly\na=tool:PipeWire 0.3.65\nm=audio 46380 RTP/AVP 127\na=rtpmap:127 L16/48000/2\na=type:broadcast\na=ptime:6\n";
        let s = SdpStream::parse(pw).unwrap();
        assert_eq!(s.origin, "root 3910000000 0 IN IP4 0.0.0.0");
        assert_eq!(s.name, "PipeWire RTP Stream on host");
        assert_eq!(s.addr, "224.0.0.56".parse::<IpAddr>().unwrap());
        assert_eq!((s.port, s.payload_type), (46380, 127));
        assert_eq!(
            s.format,
            StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap()
        );

        for (pt, format) in [
            (
                96,
                StreamFormat::new(96_000, 2, SampleFormat::S24_3Le).unwrap(),
            ),
            (10, StreamFormat::DEFAULT),
        ] {
            let ours = write_sdp(&SdpParams {
                name: "netaudio",
                session_id: 7,
                origin: "10.0.0.1".parse().unwrap(),
                dest: "[ff02::1]:5004".parse().unwrap(),
                payload_type: pt,
                format,
                ptime_ms: 5.0,
                direction: SdpDirection::RecvOnly,
            })
            .unwrap();
            let s = SdpStream::parse(&ours).unwrap();
            assert_eq!(
                (s.addr, s.port, s.format),
                ("ff02::1".parse().unwrap(), 5004, format)
            );
        }
        // Static type 11 without rtpmap, mono L16 with no channel count.
        let s =
            SdpStream::parse("v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5004 RTP/AVP 11\r\n").unwrap();
        assert_eq!(
            s.format,
            StreamFormat::new(44_100, 1, SampleFormat::S16Le).unwrap()
        );
        let s = SdpStream::parse(
            "v=0\nc=IN IP4 1.2.3.4\nm=audio 9 RTP/AVP 98\na=rtpmap:98 l16/32000\n",
        )
        .unwrap();
        assert_eq!(
            s.format,
            StreamFormat::new(32_000, 1, SampleFormat::S16Le).unwrap()
        );
    }

    #[test]
    fn what_cannot_be_played_is_a_typed_error() {
        let p = SdpStream::parse;
        assert_eq!(p(""), Err(SdpError::NotSdp));
        assert_eq!(p("o=x\nv=0"), Err(SdpError::NotSdp));
        assert_eq!(p("v=0\nc=IN IP4 1.2.3.4\n"), Err(SdpError::NoAudio));
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=video 5 RTP/AVP 96\n"),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 96\n"),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 96\n"),
            Err(SdpError::NoRtpmap(96))
        );
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"),
            Err(SdpError::Encoding)
        );
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 96\na=rtpmap:96 L16/9/2\n"),
            Err(SdpError::Format)
        );
        assert_eq!(
            p("v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 96\na=rtpmap:96 L16/x/2\n"),
            Err(SdpError::Format)
        );
        assert_eq!(
            p("v=0\nc=IN IP9 nowhere\nm=audio 5 RTP/AVP 96\na=rtpmap:96 L16/48000/2\n"),
            Err(SdpError::NoAddress)
        );
        // Every prefix of a valid SDP, and garbage: a stream or an error.
        let good = "v=0\r\no=- 1 0 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4 1.2.3.4/1\r\nm=audio 5 RTP/AVP 96\r\na=rtpmap:96 L24/48000/2\r\n";
        for k in 0..=good.len() {
            let _ = p(&good[..k]);
        }
        let _ = p("v=0\n=\na=rtpmap:\nm=\nc=\nm=audio\nm=audio 1 RTP/AVP\n\u{feff}");
    }
}
