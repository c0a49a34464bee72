//! What a sender session needs of a packetizer: netaudio's own packets ([`Sender`]) or RTP
//! ([`RtpSender`]), chosen at start-up by the wire protocol ([`AnyPacketizer`]).
//!
//! Realtime contract: every method runs on the capture thread; none allocates, locks or makes
//! a system call (time comes in as arguments).

use crate::rng::mix64;
use crate::rtp::RtpSender;
use crate::sender::{END_COPIES, Sender};

/// A packetizer, as the sender session drives it.
pub trait Packetizer {
    /// Cuts `captured` (whole frames) into packets and hands each to `emit` as (header and
    /// extension, payload, tag; the tag empty without a key). Returns the packets made.
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(&mut self, captured: &[u8], emit: F)
    -> usize;
    /// Bytes per frame of the stream.
    fn frame_bytes(&self) -> usize;
    /// Leaves a hole of `frames` (captured audio that was lost) where it was.
    fn skip(&mut self, frames: u64);
    /// A new stream after the capture device came back: the receiver resyncs at once. `seed`
    /// makes the new stream id (any value that differs between starts, e.g. the monotonic
    /// clock), `wall_ns` is the wall clock (ns since the Unix epoch).
    fn restart_stream(&mut self, period: usize, seed: u64, wall_ns: u64);
    /// Once per period, before packetizing, with the wall clock (ns since the Unix epoch).
    fn before_period(&mut self, _wall_ns: u64) {}
    /// Once per period, before packetizing: when the period's first frame was captured (the
    /// sender's clock, ns), for packets that carry their capture time. Nothing by default.
    fn set_capture_time(&mut self, _capture_ns: u64) {}
    /// The sender stops cleanly: hands each datagram that ends the stream to `emit` as (header
    /// and extension, tag; no payload) and returns how many. None by default (RTP receivers
    /// know no END).
    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, _wall_ns: u64, _emit: F) -> usize {
        0
    }
}

impl<T: Packetizer + ?Sized> Packetizer for &mut T {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        emit: F,
    ) -> usize {
        (**self).packetize_parts(captured, emit)
    }
    fn frame_bytes(&self) -> usize {
        (**self).frame_bytes()
    }
    fn skip(&mut self, frames: u64) {
        (**self).skip(frames)
    }
    fn restart_stream(&mut self, period: usize, seed: u64, wall_ns: u64) {
        (**self).restart_stream(period, seed, wall_ns)
    }
    #[inline]
    fn before_period(&mut self, wall_ns: u64) {
        (**self).before_period(wall_ns)
    }
    #[inline]
    fn set_capture_time(&mut self, capture_ns: u64) {
        (**self).set_capture_time(capture_ns)
    }
    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, wall_ns: u64, emit: F) -> usize {
        (**self).end_stream(wall_ns, emit)
    }
}

impl Packetizer for Sender {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        mut emit: F,
    ) -> usize {
        self.packetize_tagged(captured, |head, payload, tag| emit(head, payload, tag))
    }

    fn frame_bytes(&self) -> usize {
        self.format().frame_bytes()
    }

    fn skip(&mut self, frames: u64) {
        Sender::skip(self, frames);
    }

    fn restart_stream(&mut self, period: usize, seed: u64, wall_ns: u64) {
        let id = mix64(self.stream_id() as u64 ^ seed) as u32;
        *self = self
            .restarted(period, id, wall_ns)
            .expect("same format and period as before");
    }

    #[inline]
    fn before_period(&mut self, wall_ns: u64) {
        if self.is_authenticated() {
            self.set_wall_clock(wall_ns);
        }
    }

    #[inline]
    fn set_capture_time(&mut self, capture_ns: u64) {
        Sender::set_capture_time(self, capture_ns);
    }

    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, wall_ns: u64, mut emit: F) -> usize {
        self.before_period(wall_ns);
        for _ in 0..END_COPIES {
            self.end_packet(&mut emit);
        }
        END_COPIES
    }
}

impl Packetizer for RtpSender {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        mut emit: F,
    ) -> usize {
        self.packetize(captured, |header, payload| emit(header, payload, &[]))
    }

    fn frame_bytes(&self) -> usize {
        self.format().frame_bytes()
    }

    fn skip(&mut self, frames: u64) {
        RtpSender::skip(self, frames);
    }

    fn restart_stream(&mut self, _period: usize, seed: u64, _wall_ns: u64) {
        // A new synchronisation source, with the marker bit.
        self.restart(mix64(self.ssrc() as u64 ^ seed) as u32);
    }
}

/// Either packetizer, chosen at start-up by the wire protocol.
// Not boxed: a packetizer is built in place for each stream, a sender restart in the loop
// included, and a box would be an allocation there. It lives in one place for the stream's
// life, so the RTP variant's unused bytes cost nothing but memory (under a kilobyte).
#[allow(clippy::large_enum_variant)]
pub enum AnyPacketizer {
    /// netaudio's own packets.
    Native(Sender),
    /// RTP.
    Rtp(Box<RtpSender>),
}

impl Packetizer for AnyPacketizer {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        emit: F,
    ) -> usize {
        match self {
            AnyPacketizer::Native(t) => t.packetize_parts(captured, emit),
            AnyPacketizer::Rtp(t) => t.packetize_parts(captured, emit),
        }
    }

    fn frame_bytes(&self) -> usize {
        match self {
            AnyPacketizer::Native(t) => Packetizer::frame_bytes(t),
            AnyPacketizer::Rtp(t) => Packetizer::frame_bytes(t.as_ref()),
        }
    }

    fn skip(&mut self, frames: u64) {
        match self {
            AnyPacketizer::Native(t) => Packetizer::skip(t, frames),
            AnyPacketizer::Rtp(t) => Packetizer::skip(t.as_mut(), frames),
        }
    }

    fn restart_stream(&mut self, period: usize, seed: u64, wall_ns: u64) {
        match self {
            AnyPacketizer::Native(t) => t.restart_stream(period, seed, wall_ns),
            AnyPacketizer::Rtp(t) => t.restart_stream(period, seed, wall_ns),
        }
    }

    #[inline]
    fn before_period(&mut self, wall_ns: u64) {
        match self {
            AnyPacketizer::Native(t) => t.before_period(wall_ns),
            AnyPacketizer::Rtp(t) => t.before_period(wall_ns),
        }
    }

    #[inline]
    fn set_capture_time(&mut self, capture_ns: u64) {
        if let AnyPacketizer::Native(t) = self {
            Packetizer::set_capture_time(t, capture_ns);
        }
    }

    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, wall_ns: u64, emit: F) -> usize {
        match self {
            AnyPacketizer::Native(t) => t.end_stream(wall_ns, emit),
            AnyPacketizer::Rtp(t) => t.end_stream(wall_ns, emit),
        }
    }
}
