//! RTP interoperability: the L16 and L24 payload formats of RFC 3550/3551, their SDP, and the
//! translation of received RTP packets into native packets.
//!
//! ```text
//!  0   1   2       4               8              12
//!  +---+---+-------+---------------+---------------+---------------------------------+
//!  |V P X CC|M PT| sequence | timestamp     | SSRC          | payload: big-endian PCM  |
//!  +---+---+-------+---------------+---------------+---------------------------------+
//! ```
//! * [`RtpSender`] turns captured periods into RTP packets: the 12-byte header is built on the
//!   caller's stack and the payload is the captured frames converted to network byte order in a
//!   buffer allocated by [`RtpSender::new`]. **This is not zero-copy** (the native
//!   [`Sender`](crate::sender::Sender) is): RTP's L16/L24 are big-endian and sound cards give
//!   little-endian samples, so every sample is byte-swapped once, into that buffer.
//!   Periods are split into equal packets that fit
//!   [`MAX_PACKET_LEN`](crate::wire::MAX_PACKET_LEN), as the native sender does; the SDP
//!   announces the resulting packet time (`a=ptime`).
//! * [`RtpPacket::parse`] is total: any byte string gives a packet (CSRCs, header extension and
//!   padding skipped) or a typed [`RtpError`], never a panic.
//! * [`RtpTranslator`] rewrites an RTP packet as a native packet in a preallocated buffer, so
//!   [`Receiver::on_packet`](crate::receiver::Receiver::on_packet) and with it the jitter buffer,
//!   concealment and drift control work unchanged: stream id = SSRC, the 64-bit first-frame
//!   index extended from the 32-bit timestamp (wraps handled per SSRC), the payload converted
//!   back to little-endian.
//! * [`write_sdp`] writes the session description (RFC 4566) a receiver such as ffmpeg, VLC or
//!   PipeWire opens.
//! * [`SdpStream::parse`] reads one (where an announced stream goes, in which format).
//! * [`sap`] announces that description (SAP, RFC 2974), as PipeWire's RTP modules expect, and
//!   reads the announcements of others.
//!
//! Payload types: static 10 (L16, 44.1 kHz, stereo) and 11 (L16, 44.1 kHz, mono); dynamic
//! [`PT_DYNAMIC`] (96) for everything else, described by `a=rtpmap`. A received dynamic payload
//! type (96..=127) is taken to be in the receiver's own format, since only the SDP could say
//! otherwise. S32_LE has no RTP payload format and is refused.
//!
//! Realtime contract: `RtpSender::new` and `RtpTranslator::new` allocate their buffers;
//! `packetize`, `parse` and `translate` never allocate, lock, block or make a syscall.
//! [`write_sdp`] allocates (start-up only).

mod packet;
pub mod sap;
mod sdp;
mod sdp_parse;
mod sender;
mod translate;

pub use packet::{RtpHeader, RtpPacket};
pub use sdp::{SdpDirection, SdpParams, write_sdp};
pub use sdp_parse::{SdpError, SdpStream};
pub use sender::{RtpSender, RtpSenderError};
pub use translate::{RtpTranslator, TRACKED_SOURCES};

use crate::format::{SampleFormat, StreamFormat};
use core::fmt;

/// Length of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// The RTP version this code speaks.
pub const RTP_VERSION: u8 = 2;
/// Static payload type: L16, 44 100 Hz, 2 channels (RFC 3551 table 4).
pub const PT_L16_STEREO_44K: u8 = 10;
/// Static payload type: L16, 44 100 Hz, 1 channel.
pub const PT_L16_MONO_44K: u8 = 11;
/// The dynamic payload type we send for every other format.
pub const PT_DYNAMIC: u8 = 96;
/// Largest RTP datagram accepted. Above [`MAX_PACKET_LEN`](crate::wire::MAX_PACKET_LEN): ffmpeg
/// sends 1472-byte packets (a full IPv4 Ethernet frame) by default.
pub const MAX_RTP_DATAGRAM: usize = 2048;

/// Why a byte string is not an RTP packet we can play, or a format cannot be sent as RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtpError {
    /// Shorter than its headers say.
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the headers need.
        needed: usize,
    },
    /// Longer than [`MAX_RTP_DATAGRAM`].
    TooLong {
        /// Bytes received.
        len: usize,
    },
    /// Not RTP version 2.
    BadVersion(u8),
    /// An RTCP packet (payload type byte 200..=204), e.g. with rtcp-mux: not audio.
    Rtcp(u8),
    /// The padding count is zero or larger than the packet.
    BadPadding(u8),
    /// A payload type that is not L16/L24 audio (e.g. 0 = PCMU).
    UnsupportedPayloadType(u8),
    /// A packet without samples.
    NoPayload,
    /// The payload is not a whole number of frames.
    PartialFrame {
        /// Payload bytes.
        payload_len: usize,
        /// Bytes per frame of the format.
        frame_bytes: usize,
    },
    /// A sample format RTP has no payload format for.
    NoPayloadFormat(SampleFormat),
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len, needed } => {
                write!(
                    f,
                    "truncated RTP packet: {len} bytes, its headers need {needed}"
                )
            }
            Self::TooLong { len } => {
                write!(f, "RTP packet of {len} bytes, above {MAX_RTP_DATAGRAM}")
            }
            Self::BadVersion(v) => write!(f, "RTP version {v}, this build speaks {RTP_VERSION}"),
            Self::Rtcp(t) => write!(f, "RTCP packet (type {t}), not audio"),
            Self::BadPadding(p) => write!(f, "bad RTP padding count {p}"),
            Self::UnsupportedPayloadType(pt) => write!(
                f,
                "RTP payload type {pt} is not L16/L24 audio; send 10/11 (L16 44.1 kHz) or a dynamic type (96-127) in the receiver's format"
            ),
            Self::NoPayload => f.write_str("RTP packet carries no samples"),
            Self::PartialFrame {
                payload_len,
                frame_bytes,
            } => write!(
                f,
                "RTP payload of {payload_len} bytes is not a whole number of {frame_bytes}-byte frames (is the sender's format the receiver's?)"
            ),
            Self::NoPayloadFormat(s) => write!(
                f,
                "format {s} has no RTP payload format (audio.format / --format {s}); use S16_LE (sent as L16) or S24_3LE (sent as L24)"
            ),
        }
    }
}

impl std::error::Error for RtpError {}

/// The RTP encoding name of a sample format: `L16`, `L24`.
pub fn encoding_name(sample: SampleFormat) -> Result<&'static str, RtpError> {
    match sample {
        SampleFormat::S16Le => Ok("L16"),
        SampleFormat::S24_3Le => Ok("L24"),
        SampleFormat::S32Le => Err(RtpError::NoPayloadFormat(sample)),
    }
}

/// The payload type we send `format` with: 10 or 11 where RFC 3551 assigns one, else
/// [`PT_DYNAMIC`].
pub fn payload_type(format: StreamFormat) -> Result<u8, RtpError> {
    encoding_name(format.sample)?;
    Ok(match (format.sample, format.rate, format.channels) {
        (SampleFormat::S16Le, 44_100, 2) => PT_L16_STEREO_44K,
        (SampleFormat::S16Le, 44_100, 1) => PT_L16_MONO_44K,
        _ => PT_DYNAMIC,
    })
}

/// The format a static payload type stands for (`None` for dynamic or non-audio types).
pub const fn static_format(pt: u8) -> Option<StreamFormat> {
    match pt {
        PT_L16_STEREO_44K => StreamFormat::new(44_100, 2, SampleFormat::S16Le),
        PT_L16_MONO_44K => StreamFormat::new(44_100, 1, SampleFormat::S16Le),
        _ => None,
    }
}

/// Converts samples between little-endian (the sound card's) and big-endian (RTP's) order;
/// the same operation both ways. Whole samples only: `min(src, dst)` bytes, rounded down.
#[inline]
pub fn swap_byte_order(sample: SampleFormat, src: &[u8], dst: &mut [u8]) {
    match sample {
        SampleFormat::S16Le => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src.chunks_exact(2)) {
                d[0] = s[1];
                d[1] = s[0];
            }
        }
        SampleFormat::S24_3Le => {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                d[0] = s[2];
                d[1] = s[1];
                d[2] = s[0];
            }
        }
        SampleFormat::S32Le => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                d.copy_from_slice(&[s[3], s[2], s[1], s[0]]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rate: u32, ch: u8, s: SampleFormat) -> StreamFormat {
        StreamFormat::new(rate, ch, s).unwrap()
    }

    #[test]
    fn payload_types_follow_rfc_3551() {
        let s16 = SampleFormat::S16Le;
        assert_eq!(payload_type(f(44_100, 2, s16)), Ok(10));
        assert_eq!(payload_type(f(44_100, 1, s16)), Ok(11));
        assert_eq!(payload_type(f(48_000, 2, s16)), Ok(96));
        assert_eq!(payload_type(f(44_100, 2, SampleFormat::S24_3Le)), Ok(96));
        let e = payload_type(f(48_000, 2, SampleFormat::S32Le)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("S32_LE") && text.contains("S16_LE") && text.contains("S24_3LE"),
            "{text}"
        );
        assert_eq!(static_format(10), Some(f(44_100, 2, s16)));
        assert_eq!(static_format(0), None);
    }
}
