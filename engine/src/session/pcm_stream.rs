//! Raw PCM over a byte stream (the old pipeline's `arecord | nc`): what turns a connection's
//! bytes into frames for a [`super::ReceiverSession`]. Whole frames are handed on as they
//! arrive, the start of a frame cut by a read waits for the next one, and every connection is
//! a stream of its own (a new id, never the previous one's), so the receiver resyncs to a new
//! connection at once instead of running two senders' audio together.
//!
//! Sans-IO: the driver reads into [`PcmStreamFramer::read_buf`] and says how much it read;
//! the framer keeps no clock and no descriptor.
//!
//! Realtime contract: the buffer is allocated at construction; no method allocates, locks or
//! makes a system call.

use crate::format::StreamFormat;
use crate::rng::mix64;
use crate::wire::{Flags, PacketHeader};

/// Frames cut out of a raw PCM byte stream (see the module docs).
pub struct PcmStreamFramer {
    format: StreamFormat,
    frame_bytes: usize,
    /// A chunk of stream bytes, the carried-over part of a frame first.
    buf: Box<[u8]>,
    carry: usize,
    stream_id: u32,
    seq: u32,
    next_frame: u64,
    connections: u64,
}

impl PcmStreamFramer {
    /// A framer for `format`, reading up to `chunk_frames` frames at a time (at most
    /// `u16::MAX`, a packet's count).
    pub fn new(format: StreamFormat, chunk_frames: usize) -> PcmStreamFramer {
        let frame_bytes = format.frame_bytes();
        let chunk = chunk_frames.clamp(1, u16::MAX as usize) * frame_bytes;
        PcmStreamFramer {
            format,
            frame_bytes,
            buf: vec![0; chunk].into_boxed_slice(),
            carry: 0,
            stream_id: 0,
            seq: 0,
            next_frame: 0,
            connections: 0,
        }
    }

    /// A new connection at `now_ns`: a new stream, never with the id of the one before.
    /// Returns how many connections there were in all.
    pub fn connect(&mut self, now_ns: u64) -> u64 {
        self.connections += 1;
        let mut id = mix64(now_ns ^ (self.connections << 32) ^ self.stream_id as u64) as u32;
        if id == self.stream_id {
            id = id.wrapping_add(1);
        }
        self.stream_id = id;
        self.carry = 0;
        self.next_frame = 0;
        self.connections
    }

    /// The connection closed: a frame begun is dropped.
    pub fn disconnect(&mut self) {
        self.carry = 0;
    }

    /// Where the next read goes (after the carried-over bytes).
    pub fn read_buf(&mut self) -> &mut [u8] {
        &mut self.buf[self.carry..]
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf), arriving at `now_ns`: the whole
    /// frames among what is buffered go to `frames` as one packet (header, frames); the rest
    /// waits for the next read. Returns whether a packet was handed on.
    pub fn on_read<F: FnOnce(&PacketHeader, &[u8])>(&mut self, n: usize, frames: F) -> bool {
        let total = (self.carry + n).min(self.buf.len());
        let count = total / self.frame_bytes;
        let whole = count * self.frame_bytes;
        if count > 0 {
            let h = PacketHeader {
                flags: Flags::default(),
                stream_id: self.stream_id,
                seq: self.seq,
                first_frame: self.next_frame,
                format: self.format,
                // At most a chunk: u16::MAX frames.
                frames: count as u16,
                ext_len: 0,
                tag_len: 0,
            };
            frames(&h, &self.buf[..whole]);
            self.seq = self.seq.wrapping_add(1);
            self.next_frame += count as u64;
        }
        self.buf.copy_within(whole..total, 0);
        self.carry = total - whole;
        count > 0
    }

    /// The stream's format.
    pub fn format(&self) -> StreamFormat {
        self.format
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    #[test]
    fn frames_cut_by_reads_are_joined_and_each_connection_is_a_new_stream() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut fr = PcmStreamFramer::new(f, 256);
        fr.connect(1);
        let first_id = fr.stream_id;
        // 2.5 frames, then 1.5: two frames, then two more.
        let bytes: Vec<u8> = (0..16).collect();
        fr.read_buf()[..10].copy_from_slice(&bytes[..10]);
        let mut got = Vec::new();
        assert!(fr.on_read(10, |h, pcm| got.push((
            h.first_frame,
            h.frames,
            pcm.to_vec()
        ))));
        fr.read_buf()[..6].copy_from_slice(&bytes[10..]);
        assert!(fr.on_read(6, |h, pcm| got.push((
            h.first_frame,
            h.frames,
            pcm.to_vec()
        ))));
        assert_eq!(got[0], (0, 2, bytes[..8].to_vec()));
        assert_eq!(got[1], (2, 2, bytes[8..16].to_vec()));
        // Less than a frame: nothing handed on yet.
        fr.read_buf()[..3].copy_from_slice(&[1, 2, 3]);
        assert!(!fr.on_read(3, |_, _| panic!("no whole frame")));
        // A new connection drops the frame begun and starts a new stream at frame 0.
        assert_eq!(fr.connect(1), 2);
        assert_ne!(fr.stream_id, first_id);
        fr.read_buf()[..4].copy_from_slice(&[9, 9, 9, 9]);
        assert!(fr.on_read(4, |h, pcm| {
            assert_eq!((h.first_frame, h.frames), (0, 1));
            assert_eq!(pcm, [9, 9, 9, 9]);
        }));
    }
}
