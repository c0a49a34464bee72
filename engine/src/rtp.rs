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
//!   Periods are split into equal packets that fit [`MAX_PACKET_LEN`], as the native sender
//!   does; the SDP announces the resulting packet time (`a=ptime`).
//! * [`RtpPacket::parse`] is total: any byte string gives a packet (CSRCs, header extension and
//!   padding skipped) or a typed [`RtpError`], never a panic.
//! * [`RtpTranslator`] rewrites an RTP packet as a native packet in a preallocated buffer, so
//!   [`Receiver::on_packet`](crate::receiver::Receiver::on_packet) and with it the jitter buffer,
//!   concealment and drift control work unchanged: stream id = SSRC, the 64-bit first-frame
//!   index extended from the 32-bit timestamp (wraps handled per SSRC), the payload converted
//!   back to little-endian.
//! * [`write_sdp`] writes the session description (RFC 4566) a receiver such as ffmpeg, VLC or
//!   PipeWire opens.
//!
//! Payload types: static 10 (L16, 44.1 kHz, stereo) and 11 (L16, 44.1 kHz, mono); dynamic
//! [`PT_DYNAMIC`] (96) for everything else, described by `a=rtpmap`. A received dynamic payload
//! type (96..=127) is taken to be in the receiver's own format, since only the SDP could say
//! otherwise. S32_LE has no RTP payload format and is refused.
//!
//! Realtime contract: `RtpSender::new` and `RtpTranslator::new` allocate their buffers;
//! `packetize`, `parse` and `translate` never allocate, lock, block or make a syscall.
//! [`write_sdp`] allocates (start-up only).

use crate::format::{SampleFormat, StreamFormat};
use crate::wire::{self, Flags, MAX_PACKET_LEN, PacketHeader};
use core::fmt;
use core::net::{IpAddr, SocketAddr};

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
/// Largest RTP datagram accepted. Above [`MAX_PACKET_LEN`]: ffmpeg sends 1472-byte packets
/// (a full IPv4 Ethernet frame) by default.
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

/// The fixed part of an RTP header (CSRCs and extensions are skipped on parse, never sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// Marker bit: set on the first packet of a talkspurt (here: of a stream).
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number (wraps).
    pub seq: u16,
    /// Sampling instant of the first frame, in frames (wraps).
    pub timestamp: u32,
    /// Synchronisation source: the stream id.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes the header (version 2, no padding, extension or CSRCs).
    pub fn emit(&self, h: &mut [u8; RTP_HEADER_LEN]) {
        h[0] = RTP_VERSION << 6;
        h[1] = ((self.marker as u8) << 7) | (self.payload_type & 0x7F);
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; RTP_HEADER_LEN] {
        let mut h = [0u8; RTP_HEADER_LEN];
        self.emit(&mut h);
        h
    }
}

/// A checked RTP packet: its header and where its payload lies in the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    header: RtpHeader,
    payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses any byte string: a packet, or what is wrong with it. Skips CSRCs and a header
    /// extension, strips padding; does not look at the payload type's meaning.
    pub fn parse(bytes: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let len = bytes.len();
        if len > MAX_RTP_DATAGRAM {
            return Err(RtpError::TooLong { len });
        }
        let Some(h) = bytes.get(..RTP_HEADER_LEN) else {
            return Err(RtpError::Truncated {
                len,
                needed: RTP_HEADER_LEN,
            });
        };
        let version = h[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        if (200..=204).contains(&h[1]) {
            return Err(RtpError::Rtcp(h[1]));
        }
        let padding = h[0] & 0x20 != 0;
        let extension = h[0] & 0x10 != 0;
        let csrcs = (h[0] & 0x0F) as usize;
        let mut start = RTP_HEADER_LEN + 4 * csrcs;
        if extension {
            let Some(x) = bytes.get(start..start + 4) else {
                return Err(RtpError::Truncated {
                    len,
                    needed: start + 4,
                });
            };
            start += 4 + 4 * u16::from_be_bytes([x[2], x[3]]) as usize;
        }
        if start > len {
            return Err(RtpError::Truncated { len, needed: start });
        }
        let mut end = len;
        if padding {
            let p = bytes[len - 1];
            if p == 0 || p as usize > len - start {
                return Err(RtpError::BadPadding(p));
            }
            end -= p as usize;
        }
        Ok(RtpPacket {
            header: RtpHeader {
                marker: h[1] & 0x80 != 0,
                payload_type: h[1] & 0x7F,
                seq: u16::from_be_bytes([h[2], h[3]]),
                timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            },
            payload: &bytes[start..end],
        })
    }

    /// The header.
    pub fn header(&self) -> &RtpHeader {
        &self.header
    }

    /// The payload (padding removed).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Why an RTP sender cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpSenderError {
    /// A period of zero frames.
    ZeroPeriod,
    /// One frame alone does not fit a datagram.
    FrameTooLarge {
        /// Bytes per frame.
        frame_bytes: usize,
    },
    /// The sample format has no RTP payload format.
    Format(RtpError),
}

impl fmt::Display for RtpSenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("period of 0 frames; use at least 16"),
            Self::FrameTooLarge { frame_bytes } => write!(
                f,
                "a frame of {frame_bytes} bytes does not fit a {MAX_PACKET_LEN}-byte datagram; use fewer channels"
            ),
            Self::Format(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RtpSenderError {}

/// Turns periods of captured frames into RTP packets.
#[derive(Clone, Debug)]
pub struct RtpSender {
    format: StreamFormat,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    timestamp_base: u32,
    next_frame: u64,
    frames_per_packet: usize,
    marker: bool,
    buf: Vec<u8>,
}

impl RtpSender {
    /// A sender for `format` whose capture periods hold `period` frames. Each period is split
    /// into equal packets that fit [`MAX_PACKET_LEN`]. `ssrc` is the stream id (new for each
    /// start); `first_seq` and `timestamp_base` should be random (RFC 3550 §5.1).
    pub fn new(
        format: StreamFormat,
        period: usize,
        ssrc: u32,
        first_seq: u16,
        timestamp_base: u32,
    ) -> Result<RtpSender, RtpSenderError> {
        let payload_type = payload_type(format).map_err(RtpSenderError::Format)?;
        if period == 0 {
            return Err(RtpSenderError::ZeroPeriod);
        }
        let room = MAX_PACKET_LEN - RTP_HEADER_LEN;
        let max_frames = room / format.frame_bytes();
        if max_frames == 0 {
            return Err(RtpSenderError::FrameTooLarge {
                frame_bytes: format.frame_bytes(),
            });
        }
        let packets = period.div_ceil(max_frames);
        let frames_per_packet = period.div_ceil(packets);
        Ok(RtpSender {
            format,
            payload_type,
            ssrc,
            seq: first_seq,
            timestamp_base,
            next_frame: 0,
            frames_per_packet,
            marker: true,
            buf: vec![0; frames_per_packet * format.frame_bytes()],
        })
    }

    /// The stream's format.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The payload type sent.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// This start's SSRC (the stream id).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Frames per packet (a period's last packet may hold fewer).
    pub fn frames_per_packet(&self) -> usize {
        self.frames_per_packet
    }

    /// Duration of a full packet, ms (the SDP's `a=ptime`).
    pub fn ptime_ms(&self) -> f64 {
        self.format.ms_for_frames(self.frames_per_packet as f64)
    }

    /// Index the next captured frame will get.
    pub fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Sequence number of the next packet.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The RTP timestamp of stream frame `frame`: `frame + base mod 2^32`.
    pub fn timestamp_of(&self, frame: u64) -> u32 {
        self.timestamp_base.wrapping_add(frame as u32)
    }

    /// Skips `frames` frames (captured audio that was lost): the timestamps jump, so a
    /// receiver sees a hole in the right place.
    pub fn skip(&mut self, frames: u64) {
        self.next_frame = self.next_frame.wrapping_add(frames);
    }

    /// Starts a new stream with `ssrc` (e.g. after the capture device came back): the next
    /// packet carries the marker bit; sequence numbers and timestamps continue.
    pub fn restart(&mut self, ssrc: u32) {
        self.ssrc = ssrc;
        self.marker = true;
    }

    /// Splits `captured` (whole interleaved little-endian frames in the stream format) into
    /// packets and hands each to `emit` as (header, big-endian payload); the payload lives in
    /// this sender's buffer until the next call. Returns the number of packets. Trailing bytes
    /// that do not make a whole frame are ignored.
    pub fn packetize<F>(&mut self, captured: &[u8], mut emit: F) -> usize
    where
        F: FnMut(&[u8; RTP_HEADER_LEN], &[u8]),
    {
        let fb = self.format.frame_bytes();
        let mut frames = captured.len() / fb;
        let mut at = 0;
        let mut n = 0;
        while frames > 0 {
            let take = frames.min(self.frames_per_packet);
            let header = RtpHeader {
                marker: self.marker,
                payload_type: self.payload_type,
                seq: self.seq,
                timestamp: self.timestamp_of(self.next_frame),
                ssrc: self.ssrc,
            }
            .to_bytes();
            let payload = &mut self.buf[..take * fb];
            swap_byte_order(self.format.sample, &captured[at..at + take * fb], payload);
            emit(&header, payload);
            self.marker = false;
            self.seq = self.seq.wrapping_add(1);
            self.next_frame = self.next_frame.wrapping_add(take as u64);
            at += take * fb;
            frames -= take;
            n += 1;
        }
        n
    }
}

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

/// Timestamp and sequence extension state of one SSRC.
#[derive(Clone, Copy, Debug, Default)]
struct SourceState {
    used: bool,
    ssrc: u32,
    last_ts: u32,
    last_frame: u64,
    last_seq: u16,
    ext_seq: u32,
}

/// SSRCs whose extension state is kept at once (the stream played, a new one taking over, and
/// a stray or two).
pub const TRACKED_SOURCES: usize = 4;

/// Rewrites RTP packets as native packets for [`Receiver::on_packet`](crate::receiver::Receiver::on_packet).
pub struct RtpTranslator {
    format: StreamFormat,
    sources: [SourceState; TRACKED_SOURCES],
    next_slot: usize,
    buf: Vec<u8>,
}

impl RtpTranslator {
    /// A translator for a receiver playing `format`: dynamic payload types are taken to be in
    /// that format. Refuses formats RTP cannot carry (S32_LE).
    pub fn new(format: StreamFormat) -> Result<RtpTranslator, RtpError> {
        encoding_name(format.sample)?;
        Ok(RtpTranslator {
            format,
            sources: [SourceState::default(); TRACKED_SOURCES],
            next_slot: 0,
            buf: vec![0; wire::HEADER_LEN + MAX_RTP_DATAGRAM],
        })
    }

    /// The format dynamic payload types are read in.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The native packet for RTP datagram `bytes`, built in this translator's buffer (valid
    /// until the next call): [`frames`](Self::frames) with the header written before them.
    pub fn translate(&mut self, bytes: &[u8]) -> Result<&[u8], RtpError> {
        let (native, n) = {
            let (h, pcm) = self.frames(bytes)?;
            (h, pcm.len())
        };
        let (head, _) = self.buf.split_at_mut(wire::HEADER_LEN);
        let head: &mut [u8; wire::HEADER_LEN] = head.try_into().expect("split at HEADER_LEN");
        native.emit(head);
        Ok(&self.buf[..wire::HEADER_LEN + n])
    }

    /// The frames of RTP datagram `bytes` in the receiver's byte order (in this translator's
    /// buffer, valid until the next call) and the typed header that places them in a stream
    /// (the SSRC as stream id): what [`crate::receiver::Receiver::on_frames`] takes. The first
    /// packet of an SSRC maps its timestamp `ts` to frame `2^32 + ts`; later ones continue
    /// from there across timestamp wraps (and reorder).
    pub fn frames(&mut self, bytes: &[u8]) -> Result<(PacketHeader, &[u8]), RtpError> {
        let p = RtpPacket::parse(bytes)?;
        let h = *p.header();
        let format = match h.payload_type {
            96..=127 => self.format,
            pt => static_format(pt).ok_or(RtpError::UnsupportedPayloadType(pt))?,
        };
        let payload = p.payload();
        if payload.is_empty() {
            return Err(RtpError::NoPayload);
        }
        let fb = format.frame_bytes();
        if payload.len() % fb != 0 {
            return Err(RtpError::PartialFrame {
                payload_len: payload.len(),
                frame_bytes: fb,
            });
        }
        let frames = payload.len() / fb;
        let (first_frame, seq) = self.extend(&h);
        let native = PacketHeader {
            flags: Flags::default(),
            stream_id: h.ssrc,
            seq,
            first_frame,
            format,
            // At most MAX_RTP_DATAGRAM bytes: always fits.
            frames: frames as u16,
            ext_len: 0,
            tag_len: 0,
        };
        let body = &mut self.buf[wire::HEADER_LEN..wire::HEADER_LEN + payload.len()];
        swap_byte_order(format.sample, payload, body);
        Ok((native, body))
    }

    /// 64-bit frame index and 32-bit sequence number of a packet of `h.ssrc`.
    fn extend(&mut self, h: &RtpHeader) -> (u64, u32) {
        let slot = match self.sources.iter().position(|s| s.used && s.ssrc == h.ssrc) {
            Some(i) => i,
            None => {
                let i = self.next_slot;
                self.next_slot = (i + 1) % TRACKED_SOURCES;
                self.sources[i] = SourceState {
                    used: true,
                    ssrc: h.ssrc,
                    last_ts: h.timestamp,
                    last_frame: (1u64 << 32) + h.timestamp as u64,
                    last_seq: h.seq,
                    ext_seq: h.seq as u32,
                };
                return (self.sources[i].last_frame, self.sources[i].ext_seq);
            }
        };
        let s = &mut self.sources[slot];
        let dt = h.timestamp.wrapping_sub(s.last_ts) as i32 as i64;
        let frame = (s.last_frame as i64).saturating_add(dt).max(0) as u64;
        let ds = h.seq.wrapping_sub(s.last_seq) as i16 as i32;
        let seq = (s.ext_seq as i64 + ds as i64) as u32;
        if dt > 0 {
            s.last_ts = h.timestamp;
            s.last_frame = frame;
        }
        if ds > 0 {
            s.last_seq = h.seq;
            s.ext_seq = seq;
        }
        (frame, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Packet;

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

    #[test]
    fn packets_are_big_endian_with_a_marker_on_the_first() {
        let fmt = f(48_000, 2, SampleFormat::S24_3Le);
        let mut s = RtpSender::new(fmt, 256, 0xABCD_0123, u16::MAX, u32::MAX - 100).unwrap();
        assert_eq!(s.frames_per_packet(), 128, "1536 bytes split in two");
        let captured: Vec<u8> = (0..256 * 6).map(|i| i as u8).collect();
        let mut got = Vec::new();
        let n = s.packetize(&captured, |h, p| {
            assert!(RTP_HEADER_LEN + p.len() <= MAX_PACKET_LEN);
            let mut d = h.to_vec();
            d.extend_from_slice(p);
            got.push(d);
        });
        assert_eq!(n, 2);
        let p0 = RtpPacket::parse(&got[0]).unwrap();
        let p1 = RtpPacket::parse(&got[1]).unwrap();
        assert_eq!(
            *p0.header(),
            RtpHeader {
                marker: true,
                payload_type: 96,
                seq: u16::MAX,
                timestamp: u32::MAX - 100,
                ssrc: 0xABCD_0123
            }
        );
        assert!(!p1.header().marker);
        assert_eq!(p1.header().seq, 0, "sequence wraps");
        assert_eq!(p1.header().timestamp, 27, "timestamp wraps");
        assert_eq!(&p0.payload()[..6], &[2, 1, 0, 5, 4, 3]);
        assert_eq!(got[0][0], 0x80);
    }

    #[test]
    fn translation_restores_the_native_packet() {
        let fmt = f(48_000, 2, SampleFormat::S16Le);
        let mut s = RtpSender::new(fmt, 300, 7, 100, u32::MAX - 299).unwrap();
        let mut t = RtpTranslator::new(fmt).unwrap();
        let captured: Vec<u8> = (0..300 * 4).map(|i| (i * 7) as u8).collect();
        let mut frames = Vec::new();
        for _ in 0..2 {
            s.packetize(&captured, |h, p| {
                let mut d = h.to_vec();
                d.extend_from_slice(p);
                let native = t.translate(&d).unwrap();
                let pk = Packet::new_checked(native).unwrap();
                assert_eq!(pk.header().stream_id, 7);
                assert_eq!(pk.header().format, fmt);
                assert_eq!(pk.payload(), &captured[..]);
                frames.push(pk.header().first_frame);
            });
        }
        // The timestamp wrapped between the two: frame indices still count up.
        assert_eq!(frames[1] - frames[0], 300);
        assert_eq!(frames[0], (1 << 32) + (u32::MAX - 299) as u64);
    }

    #[test]
    fn parse_skips_csrcs_extensions_and_padding() {
        let mut d = RtpHeader {
            marker: false,
            payload_type: 96,
            seq: 1,
            timestamp: 2,
            ssrc: 3,
        }
        .to_bytes()
        .to_vec();
        d[0] |= 0x20 | 0x10 | 2; // padding, extension, 2 CSRCs
        d.extend_from_slice(&[0; 8]); // CSRCs
        d.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // one extension word
        d.extend_from_slice(&[1, 2, 3, 4]); // payload
        d.extend_from_slice(&[0, 0, 3]); // padding
        let p = RtpPacket::parse(&d).unwrap();
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert_eq!(p.header().ssrc, 3);
    }

    #[test]
    fn rejections_are_typed() {
        let fmt = f(48_000, 2, SampleFormat::S16Le);
        let mut t = RtpTranslator::new(fmt).unwrap();
        let h = |pt: u8| {
            RtpHeader {
                marker: false,
                payload_type: pt,
                seq: 0,
                timestamp: 0,
                ssrc: 1,
            }
            .to_bytes()
            .to_vec()
        };
        assert_eq!(
            t.translate(&[0x80, 96]).unwrap_err(),
            RtpError::Truncated { len: 2, needed: 12 }
        );
        let mut d = h(96);
        d[0] = 0x40;
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::BadVersion(1));
        assert_eq!(t.translate(&h(96)).unwrap_err(), RtpError::NoPayload);
        let mut d = h(0);
        d.extend_from_slice(&[0; 4]);
        assert_eq!(
            t.translate(&d).unwrap_err(),
            RtpError::UnsupportedPayloadType(0)
        );
        let mut d = h(96);
        d.extend_from_slice(&[0; 6]);
        assert_eq!(
            t.translate(&d).unwrap_err(),
            RtpError::PartialFrame {
                payload_len: 6,
                frame_bytes: 4
            }
        );
        let mut d = h(96);
        d[1] = 200;
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::Rtcp(200));
        let mut d = h(96);
        d[0] |= 0x20;
        d.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::BadPadding(9));
        assert_eq!(
            t.translate(&vec![0x80; MAX_RTP_DATAGRAM + 1]).unwrap_err(),
            RtpError::TooLong {
                len: MAX_RTP_DATAGRAM + 1
            }
        );
        assert!(RtpTranslator::new(f(48_000, 2, SampleFormat::S32Le)).is_err());
    }

    #[test]
    fn static_payload_types_carry_their_own_format() {
        // A receiver at 48 kHz gets PT 10 (44.1 kHz): the native packet says 44.1 kHz, and the
        // receiver refuses it as a format mismatch.
        let mut t = RtpTranslator::new(f(48_000, 2, SampleFormat::S16Le)).unwrap();
        let mut d = RtpHeader {
            marker: true,
            payload_type: 10,
            seq: 0,
            timestamp: 0,
            ssrc: 1,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[0; 8]);
        let native = t.translate(&d).unwrap();
        let pk = Packet::new_checked(native).unwrap();
        assert_eq!(pk.header().format, f(44_100, 2, SampleFormat::S16Le));
        assert_eq!(pk.header().frames, 2);
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
