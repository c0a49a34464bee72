//! Packets in: a datagram is checked and authenticated, then its frames are stored in the
//! jitter buffer by their stream index, following the stream playing or switching to a new one
//! (see the timeline in the [module documentation](super)).
//!
//! Realtime contract: [`Receiver::on_packet`] and [`Receiver::on_frames`] never allocate, lock,
//! block or make a syscall; frames are copied into the ring allocated by [`Receiver::new`].

use super::{MAX_FRAME_INDEX, Receiver, SWITCH_PACKETS};
use crate::rtlog::ResyncReason;
use crate::wire::{Flags, Packet, PacketHeader, WireError};

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketOutcome {
    /// Stored (some frames may have been late or duplicate).
    Accepted,
    /// Every frame was already present.
    Duplicate,
    /// Every frame had already been played.
    Late,
    /// From another stream, not followed (yet).
    Foreign,
    /// Accepted and the receiver resynced to it.
    Resynced,
    /// Valid, but in a format this receiver does not play.
    FormatMismatch,
    /// Not a valid packet.
    Invalid(WireError),
    /// A first-frame index above [`MAX_FRAME_INDEX`].
    FrameIndexOutOfRange,
    /// No tag, or a wrong one (a receiver with a key only).
    Unauthenticated,
    /// Authenticated, but a replay: a sequence number already taken or behind the window, or
    /// a stream older than the one playing.
    Replayed,
    /// Authenticated, of a new stream, but sent too long ago (or ahead) by this receiver's
    /// wall clock.
    Stale,
    /// An END packet of the stream playing (the first one, or a copy of it).
    Ended,
}

impl Receiver {
    /// Handles one datagram received at `now_ns` (the driver's monotonic clock).
    pub fn on_packet(&mut self, bytes: &[u8], now_ns: u64) -> PacketOutcome {
        self.now = now_ns;
        let packet = match Packet::new_checked(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.counters.invalid_packets += 1;
                return PacketOutcome::Invalid(e);
            }
        };
        if let Some(dropped) = self.authenticate(&packet, now_ns) {
            return dropped;
        }
        let h = *packet.header();
        let outcome = self.on_frames(now_ns, &h, packet.payload());
        if let Some(capture) = packet.capture_time()
            && matches!(outcome, PacketOutcome::Accepted | PacketOutcome::Resynced)
        {
            let first = h.first_frame as i64;
            if outcome == PacketOutcome::Resynced
                || self.capture_stamp.is_none_or(|(f, _)| f < first)
            {
                self.capture_stamp = Some((first, capture));
                if !self.capture_clock {
                    if self.stamps.is_full() {
                        self.stamps.pop_front();
                    }
                    let _ = self.stamps.push_back((first, capture));
                }
            }
        }
        outcome
    }

    /// Handles the frames of one packet that arrived at `now_ns`, described by `h` (format,
    /// stream, sequence number, first frame index, flags), `pcm` being its frames in the
    /// stream's sample format: the typed path of inputs that are not netaudio datagrams (RTP,
    /// a raw PCM byte stream), which need no native header built only to be parsed again.
    /// A native datagram comes here from [`on_packet`](Self::on_packet) once parsed and
    /// authenticated. `pcm` must hold `h.frames` whole frames.
    pub fn on_frames(&mut self, now_ns: u64, h: &PacketHeader, pcm: &[u8]) -> PacketOutcome {
        self.now = now_ns;
        let h = *h;
        let expected = h.frames as usize * h.format.frame_bytes();
        if pcm.len() != expected {
            self.counters.invalid_packets += 1;
            return PacketOutcome::Invalid(WireError::LengthMismatch {
                expected,
                actual: pcm.len(),
            });
        }
        if h.flags.contains(Flags::REPAIR) {
            // Loss-recovery data is not understood by this build: ignore it quietly.
            return PacketOutcome::Foreign;
        }
        if h.format != self.cfg.format {
            self.counters.invalid_packets += 1;
            return PacketOutcome::FormatMismatch;
        }
        if h.first_frame > MAX_FRAME_INDEX {
            // No sender counts this far (10^11 years at 384 kHz): a forged or broken packet.
            self.counters.invalid_packets += 1;
            return PacketOutcome::FrameIndexOutOfRange;
        }
        if h.is_end_marker() {
            return self.on_end(&h);
        }
        let first = h.first_frame as i64;
        let frames = h.frames as i64;
        let mut outcome = PacketOutcome::Accepted;
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id => {
                self.candidate = None;
                if t.end.is_some_and(|end| first + frames > end) {
                    // The stream goes on past an end it announced: forget the end.
                    if let Some(t) = self.timeline.as_mut() {
                        t.end = None;
                    }
                }
                if first + frames > self.read_pos + self.ring.capacity() as i64 {
                    self.resync(&h, now_ns, ResyncReason::Overflow);
                    outcome = PacketOutcome::Resynced;
                }
            }
            Some(t) if t.end.is_some_and(|end| self.read_pos < end) => {
                // The stream playing has ended but is still playing out its last frames: the
                // new one takes over once they have played.
                self.counters.foreign_packets += 1;
                return PacketOutcome::Foreign;
            }
            Some(t) => {
                let count = match self.candidate {
                    Some((id, n)) if id == h.stream_id => n + 1,
                    _ => 1,
                };
                self.candidate = Some((h.stream_id, count));
                // The current stream has gone quiet (a sender restart): switch at once.
                let interval_ns =
                    t.frames_per_packet as u64 * 1_000_000_000 / self.cfg.format.rate as u64;
                let quiet = now_ns.saturating_sub(t.newest_t) > 2 * interval_ns;
                if count < SWITCH_PACKETS && t.end.is_none() && !quiet {
                    self.counters.foreign_packets += 1;
                    return PacketOutcome::Foreign;
                }
                self.resync(&h, now_ns, ResyncReason::NewStream);
                outcome = PacketOutcome::Resynced;
            }
            None => {
                self.resync(&h, now_ns, ResyncReason::NewStream);
                outcome = PacketOutcome::Resynced;
            }
        }
        let ins = self.ring.insert(first, pcm, h.format.sample, self.read_pos);
        let ended = self.timeline.is_some_and(|t| t.end.is_some());
        if let Some(tr) = self.tracker.as_mut()
            && !ended
        {
            let restarted = outcome == PacketOutcome::Resynced;
            if tr.on_packet(&h, now_ns, ins.stored > 0, restarted, self.read_pos) {
                self.counters.recovered_packets += 1;
            }
        }
        let n = frames as usize;
        if ins.too_early {
            self.counters.late_packets += 1;
            return PacketOutcome::Late;
        }
        if ins.duplicate == n {
            self.counters.duplicate_packets += 1;
            return PacketOutcome::Duplicate;
        }
        if ins.late == n || ins.late + ins.duplicate == n {
            self.counters.late_packets += 1;
            return PacketOutcome::Late;
        }
        self.counters.packets_received += 1;
        if h.flags.contains(Flags::END) {
            // The stream's last audio packet.
            self.end_stream(first + frames);
        }
        if let Some(t) = self.timeline.as_mut() {
            if first + frames > t.newest_end {
                // The newest frame so far: its transit measures the network's jitter (a packet
                // sent again, or held back, fills a hole below and would not).
                if t.newest_end == first {
                    self.jitter.observe(h.first_frame, now_ns);
                }
                t.newest_end = first + frames;
                t.newest_t = now_ns;
                if !self.capture_clock {
                    self.drift.on_arrival(now_ns, first + frames);
                }
            }
        }
        outcome
    }
}
