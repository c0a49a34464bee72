//! The packetizer: captured frames in, packets out, samples never copied.
//!
//! The sender hands out packets as a header (32 bytes, built on the caller's stack) plus a
//! slice of the capture buffer itself. A driver writes both with one gather write
//! (`sendmsg` with two iovecs), so the samples go from the device's mmap area to the socket
//! with no copy in user space.
//!
//! Realtime contract: no allocation, no syscall, no blocking; `packetize` is O(packets).

use crate::format::StreamFormat;
use crate::wire::{Flags, HEADER_LEN, MAX_PACKET_LEN, PacketHeader};
use core::fmt;

/// Why a sender cannot be made for a format and period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderError {
    /// A period of zero frames.
    ZeroPeriod,
    /// One frame alone does not fit a datagram.
    FrameTooLarge {
        /// Bytes per frame.
        frame_bytes: usize,
    },
}

impl fmt::Display for SenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("period of 0 frames; use at least 16"),
            Self::FrameTooLarge { frame_bytes } => write!(
                f,
                "a frame of {frame_bytes} bytes does not fit a {MAX_PACKET_LEN}-byte datagram; use fewer channels"
            ),
        }
    }
}

impl std::error::Error for SenderError {}

/// Turns periods of captured frames into packets.
#[derive(Clone, Debug)]
pub struct Sender {
    format: StreamFormat,
    stream_id: u32,
    seq: u32,
    next_frame: u64,
    frames_per_packet: usize,
    flags: Flags,
    tag_len: u8,
}

impl Sender {
    /// A sender for `format` whose capture periods hold `period` frames. Each period is split
    /// into equal packets small enough for one datagram. `stream_id` must be new for each
    /// start (the receiver resyncs on a new id); `first_seq` is where sequence numbers begin.
    pub fn new(
        format: StreamFormat,
        period: usize,
        stream_id: u32,
        first_seq: u32,
    ) -> Result<Sender, SenderError> {
        if period == 0 {
            return Err(SenderError::ZeroPeriod);
        }
        let room = MAX_PACKET_LEN - HEADER_LEN - crate::wire::MAX_TAG_LEN;
        let max_frames = (room / format.frame_bytes()).min(u16::MAX as usize);
        if max_frames == 0 {
            return Err(SenderError::FrameTooLarge {
                frame_bytes: format.frame_bytes(),
            });
        }
        let packets = period.div_ceil(max_frames);
        Ok(Sender {
            format,
            stream_id,
            seq: first_seq,
            next_frame: 0,
            frames_per_packet: period.div_ceil(packets),
            flags: Flags::default(),
            tag_len: 0,
        })
    }

    /// The stream's format.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// This start's stream id.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Frames per packet (a period's last packet may hold fewer).
    pub fn frames_per_packet(&self) -> usize {
        self.frames_per_packet
    }

    /// Index the next captured frame will get.
    pub fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Sequence number of the next packet.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Marks every following packet with an `END` flag (the sender is stopping).
    pub fn set_ending(&mut self) {
        self.flags = self.flags.with(Flags::END);
    }

    /// Skips `frames` frames of the stream (captured audio that was lost, e.g. in an overrun),
    /// so the receiver sees a hole in the right place instead of time running together.
    pub fn skip(&mut self, frames: u64) {
        self.next_frame = self.next_frame.wrapping_add(frames);
    }

    /// The header for the next packet of `frames` frames; advances sequence and frame index.
    pub fn next_header(&mut self, frames: usize) -> [u8; HEADER_LEN] {
        debug_assert!(frames > 0 && frames <= u16::MAX as usize);
        let h = PacketHeader {
            flags: self.flags,
            stream_id: self.stream_id,
            seq: self.seq,
            first_frame: self.next_frame,
            format: self.format,
            frames: frames as u16,
            ext_len: 0,
            tag_len: self.tag_len,
        };
        self.seq = self.seq.wrapping_add(1);
        self.next_frame = self.next_frame.wrapping_add(frames as u64);
        h.to_bytes()
    }

    /// Splits `captured` (whole interleaved frames in the stream format) into packets and
    /// hands each to `emit` as (header, payload), the payload being a sub-slice of `captured`.
    /// Returns the number of packets. Trailing bytes that do not make a whole frame are ignored.
    pub fn packetize<'a, F>(&mut self, captured: &'a [u8], mut emit: F) -> usize
    where
        F: FnMut(&[u8; HEADER_LEN], &'a [u8]),
    {
        let fb = self.format.frame_bytes();
        let mut frames = captured.len() / fb;
        let mut at = 0;
        let mut n = 0;
        while frames > 0 {
            let take = frames.min(self.frames_per_packet);
            let header = self.next_header(take);
            emit(&header, &captured[at..at + take * fb]);
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
    use crate::wire::Packet;

    #[test]
    fn packets_point_into_the_capture_buffer() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut s = Sender::new(f, 256, 7, u32::MAX - 1).unwrap();
        let buf: Vec<u8> = (0..256 * 4).map(|i| i as u8).collect();
        let mut seen = Vec::new();
        let n = s.packetize(&buf, |h, payload| {
            let hdr = crate::wire::PacketHeader::parse(h).unwrap();
            // The payload is the capture buffer itself, not a copy.
            assert!(std::ptr::eq(payload.as_ptr(), buf[..].as_ptr()));
            seen.push((hdr.seq, hdr.first_frame, hdr.frames));
        });
        assert_eq!(n, 1);
        assert_eq!(seen, vec![(u32::MAX - 1, 0, 256)]);
        s.packetize(&buf, |h, _| {
            let hdr = crate::wire::PacketHeader::parse(h).unwrap();
            seen.push((hdr.seq, hdr.first_frame, hdr.frames));
        });
        assert_eq!(seen[1], (u32::MAX, 256, 256));
        s.packetize(&buf, |_, _| {});
        assert_eq!(s.next_seq(), 1, "sequence numbers wrap");
    }

    #[test]
    fn large_periods_split_into_equal_datagrams() {
        let f = StreamFormat::new(96_000, 2, SampleFormat::S32Le).unwrap();
        let mut s = Sender::new(f, 512, 1, 0).unwrap();
        let buf = vec![0u8; 512 * 8];
        let mut sizes = Vec::new();
        s.packetize(&buf, |h, p| {
            let mut whole = h.to_vec();
            whole.extend_from_slice(p);
            assert!(whole.len() <= MAX_PACKET_LEN);
            let pkt = Packet::new_checked(&whole[..]).unwrap();
            sizes.push(pkt.header().frames);
        });
        assert_eq!(sizes.iter().map(|&x| x as usize).sum::<usize>(), 512);
        assert!(sizes.len() >= 3);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn rejects_impossible_setups() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        assert_eq!(
            Sender::new(f, 0, 1, 0).unwrap_err(),
            SenderError::ZeroPeriod
        );
    }
}
