//! Loss recovery by retransmission (NACKs), inside the latency budget.
//!
//! On a LAN a round trip takes well under a millisecond plus jitter, far inside a receiver's
//! latency target, so a lost packet can simply be asked for again:
//!
//! * [`LossTracker`] (receiver side, driven by [`crate::Receiver`]) notices missing sequence
//!   numbers — holes behind the newest packet received, and packets overdue by the arrival
//!   pattern seen so far (so the tail of a burst is asked for without waiting for the next
//!   packet) — and asks for them with [`crate::nack`] packets while they can still be played,
//!   asking again on a timer from the measured round trip, and giving up once their frames'
//!   play-out time has passed.
//! * [`RetransmitHistory`] (sender side) keeps copies of the last packets sent (the first
//!   transmission stays zero-copy from the device buffer) and answers NACKs by sending them
//!   again, byte for byte: the receiver's jitter buffer already treats a copy that arrives twice
//!   or too late correctly. What a NACK can make it send is bounded (once per NACK and per
//!   request, a few times per packet, and a rate cap of half the stream's bytes), so a forged
//!   NACK cannot turn the sender into an amplifier; with a key, NACKs are sealed and replays
//!   refused.
//!
//! Why not FEC: Reed-Solomon over period-long packets (5.33 ms at 256 frames/48 kHz) needs about
//! 100 % parity to survive three packets lost in a row, and a block of packets does not fit a
//! 40 ms budget; retransmission costs about the loss rate in extra bytes.
//!
//! Realtime contract: `new` allocates the history's slots and the tracker's tables; nothing else
//! allocates, locks, blocks or reads a clock (time is passed in).

mod history;
mod tracker;

pub use history::{
    DEFAULT_HISTORY_MS, DEFAULT_MAX_COPIES, DEFAULT_MAX_REQUESTS, DEFAULT_RESEND_RATE_PERCENT,
    HistoryCounters, ResendLimits, RetransmitHistory,
};
pub use tracker::{LossTracker, MAX_PENDING, TrackerCounters, TrackerParams};

use core::fmt;

/// How a receiver recovers lost packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RecoveryMode {
    /// Conceal every loss.
    Off,
    /// Ask the sender for missing packets again (NACK). The default.
    #[default]
    Nack,
}

impl RecoveryMode {
    /// Every mode.
    pub const ALL: [RecoveryMode; 2] = [RecoveryMode::Off, RecoveryMode::Nack];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Nack => "nack",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<RecoveryMode> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
