//! Authentication of a receiver with a key (see [`crate::auth`]): the key, the replay window of
//! the stream playing, the freshness check of new streams against the wall clock, and the
//! sealing of the NACKs it sends.
//!
//! Realtime contract: [`Receiver::with_auth`] stores the key; the per-packet check and the
//! sealing of NACKs never allocate, lock, block or make a syscall (the wall clock is passed in
//! by the driver as an offset).

use super::{PacketOutcome, Receiver};
use crate::auth::{self, AuthExt, Key, ReplayWindow};
use crate::wire::Packet;

/// Authentication state of a receiver with a key.
#[derive(Clone, Debug)]
pub(super) struct ReceiverAuth {
    key: Key,
    pub(super) window: ReplayWindow,
    max_skew_ns: u64,
    /// Wall-clock time minus the `now_ns` clock.
    wall_offset_ns: i64,
    /// Nonce of the next NACK datagram: started from the wall clock at the first NACK (so a
    /// restarted receiver's NACKs are newer than its predecessor's), one more for each.
    nack_nonce: u64,
}

impl ReceiverAuth {
    /// Seals the NACK in `buf` with the next nonce; its new length (0 if it cannot be sealed,
    /// which a buffer of [`crate::nack::MAX_NACK_LEN`] bytes rules out).
    pub(super) fn seal_nack(&mut self, now_ns: u64, buf: &mut [u8]) -> usize {
        if self.nack_nonce == 0 {
            let wall = now_ns as i128 + self.wall_offset_ns as i128;
            self.nack_nonce = wall.clamp(1, u64::MAX as i128 / 2) as u64;
        }
        let nonce = self.nack_nonce;
        self.nack_nonce += 1;
        crate::nack::seal_nack(&self.key, nonce, buf).unwrap_or(0)
    }
}

impl Receiver {
    /// Accepts only packets authenticated with `key` (see [`crate::auth`]). New streams must be
    /// fresh within [`auth::DEFAULT_MAX_SKEW_NS`] of the wall clock given by
    /// [`set_wall_offset`](Self::set_wall_offset).
    pub fn with_auth(mut self, key: Key) -> Receiver {
        self.auth = Some(ReceiverAuth {
            key,
            window: ReplayWindow::default(),
            max_skew_ns: auth::DEFAULT_MAX_SKEW_NS,
            wall_offset_ns: 0,
            nack_nonce: 0,
        });
        self
    }

    /// How far a new stream's send times may be from the wall clock, ns.
    pub fn set_max_clock_skew(&mut self, ns: u64) {
        if let Some(a) = self.auth.as_mut() {
            a.max_skew_ns = ns;
        }
    }

    /// The wall clock (ns since the Unix epoch) minus the clock of `now_ns`, for the freshness
    /// check of authenticated streams. A driver updates it every period (it moves when NTP
    /// steps the clock).
    pub fn set_wall_offset(&mut self, offset_ns: i64) {
        if let Some(a) = self.auth.as_mut() {
            a.wall_offset_ns = offset_ns;
        }
    }

    /// Whether packets must be authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// Checks a packet's tag, and its freshness against the stream playing; `Some(outcome)`
    /// when it is to be dropped (already counted).
    pub(super) fn authenticate(
        &mut self,
        packet: &Packet<&[u8]>,
        now_ns: u64,
    ) -> Option<PacketOutcome> {
        let a = self.auth.as_mut()?;
        let h = packet.header();
        let tagged = h.tag_len as usize == auth::TAG_LEN
            && packet.ext_after_time().len() == auth::EXT_LEN
            && a.key.verify(packet.authenticated(), packet.tag());
        if !tagged {
            self.counters.auth_failures += 1;
            return Some(PacketOutcome::Unauthenticated);
        }
        let ext = AuthExt::parse(packet.ext_after_time()).unwrap_or_default();
        self.packet_session = ext.session;
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id && t.session == ext.session => {
                if !a.window.take(h.seq) {
                    self.counters.replayed_packets += 1;
                    return Some(PacketOutcome::Replayed);
                }
            }
            Some(t) if ext.session <= t.session => {
                // A stream that started before the one playing: a recording.
                self.counters.replayed_packets += 1;
                return Some(PacketOutcome::Replayed);
            }
            _ => {
                let wall = now_ns as i128 + a.wall_offset_ns as i128;
                if (ext.sent_at as i128 - wall).unsigned_abs() > a.max_skew_ns as u128 {
                    self.counters.stale_packets += 1;
                    return Some(PacketOutcome::Stale);
                }
            }
        }
        None
    }
}
