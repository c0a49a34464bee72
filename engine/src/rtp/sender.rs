//! Sending RTP: [`RtpSender`] splits captured periods into L16/L24 packets, the payload
//! byte-swapped to network order in its own buffer.
//!
//! Realtime contract: [`RtpSender::new`] allocates the payload buffer; `packetize` never
//! allocates, locks, blocks or makes a syscall (the header is built on the stack).

use super::{RTP_HEADER_LEN, RtpError, RtpHeader, payload_type, swap_byte_order};
use crate::format::StreamFormat;
use crate::wire::MAX_PACKET_LEN;
use core::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;
    use crate::rtp::RtpPacket;

    fn f(rate: u32, ch: u8, s: SampleFormat) -> StreamFormat {
        StreamFormat::new(rate, ch, s).unwrap()
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
}
