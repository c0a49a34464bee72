//! The session description (RFC 4566) of an RTP stream, as ffmpeg, VLC or PipeWire open it.
//!
//! Not realtime: [`write_sdp`] allocates its text (start-up only).

use super::{RtpError, encoding_name};
use crate::format::StreamFormat;
use core::net::{IpAddr, SocketAddr};

/// Which way the media flows, from the point of view of whoever opens the SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpDirection {
    /// `a=recvonly`: the SDP's user only receives (what a sender publishes).
    RecvOnly,
    /// `a=sendonly`: the SDP's user only sends (what a receiver publishes).
    SendOnly,
}

/// What an SDP file describes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdpParams<'a> {
    /// Session name (`s=`).
    pub name: &'a str,
    /// Session id (`o=`): e.g. the SSRC.
    pub session_id: u32,
    /// Address of the originating host (`o=`).
    pub origin: IpAddr,
    /// Where the media goes (`c=` address and `m=` port).
    pub dest: SocketAddr,
    /// Payload type.
    pub payload_type: u8,
    /// Stream format.
    pub format: StreamFormat,
    /// Packet time, ms.
    pub ptime_ms: f64,
    /// Direction attribute.
    pub direction: SdpDirection,
}

fn ip_kind(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IP4" } else { "IP6" }
}

/// Writes a session description (RFC 4566, RFC 3551) for one L16/L24 stream, lines ending
/// in CRLF. A multicast IPv4 destination gets the TTL 1 of an unconfigured socket.
pub fn write_sdp(p: &SdpParams<'_>) -> Result<String, RtpError> {
    let enc = encoding_name(p.format.sample)?;
    let dest = p.dest.ip();
    let ttl = match dest {
        IpAddr::V4(a) if a.is_multicast() => "/1",
        _ => "",
    };
    let ptime = format!("{:.3}", p.ptime_ms);
    let ptime = ptime.trim_end_matches('0').trim_end_matches('.');
    let dir = match p.direction {
        SdpDirection::RecvOnly => "recvonly",
        SdpDirection::SendOnly => "sendonly",
    };
    let pt = p.payload_type;
    Ok([
        "v=0".to_string(),
        format!(
            "o=- {} 0 IN {} {}",
            p.session_id,
            ip_kind(p.origin),
            p.origin
        ),
        format!("s={}", p.name),
        format!("c=IN {} {dest}{ttl}", ip_kind(dest)),
        "t=0 0".to_string(),
        format!("m=audio {} RTP/AVP {pt}", p.dest.port()),
        format!(
            "a=rtpmap:{pt} {enc}/{}/{}",
            p.format.rate, p.format.channels
        ),
        format!("a=ptime:{ptime}"),
        format!("a={dir}"),
        String::new(),
    ]
    .join("\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    fn f(rate: u32, ch: u8, s: SampleFormat) -> StreamFormat {
        StreamFormat::new(rate, ch, s).unwrap()
    }

    #[test]
    fn sdp_describes_the_stream() {
        let sdp = write_sdp(&SdpParams {
            name: "netaudio",
            session_id: 42,
            origin: "192.168.1.10".parse().unwrap(),
            dest: "192.168.1.20:46000".parse().unwrap(),
            payload_type: 96,
            format: f(48_000, 2, SampleFormat::S24_3Le),
            ptime_ms: 256.0 / 48.0,
            direction: SdpDirection::RecvOnly,
        })
        .unwrap();
        assert_eq!(
            sdp,
            "v=0\r\no=- 42 0 IN IP4 192.168.1.10\r\ns=netaudio\r\nc=IN IP4 192.168.1.20\r\n\
             t=0 0\r\nm=audio 46000 RTP/AVP 96\r\na=rtpmap:96 L24/48000/2\r\na=ptime:5.333\r\n\
             a=recvonly\r\n"
        );
        let sdp = write_sdp(&SdpParams {
            name: "x",
            session_id: 1,
            origin: "::1".parse().unwrap(),
            dest: "[ff02::1]:5004".parse().unwrap(),
            payload_type: 10,
            format: f(44_100, 2, SampleFormat::S16Le),
            ptime_ms: 5.0,
            direction: SdpDirection::SendOnly,
        })
        .unwrap();
        assert!(sdp.contains("o=- 1 0 IN IP6 ::1\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP6 ff02::1\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:10 L16/44100/2\r\na=ptime:5\r\na=sendonly"));
        let mc = write_sdp(&SdpParams {
            name: "x",
            session_id: 1,
            origin: "10.0.0.1".parse().unwrap(),
            dest: "239.1.2.3:5004".parse().unwrap(),
            payload_type: 96,
            format: f(48_000, 1, SampleFormat::S16Le),
            ptime_ms: 1.0,
            direction: SdpDirection::RecvOnly,
        })
        .unwrap();
        assert!(mc.contains("c=IN IP4 239.1.2.3/1\r\n"), "{mc}");
    }
}
