//! Counters shared between a realtime thread and the rest of the program.
//!
//! The realtime side keeps plain counters and publishes them here once per period with relaxed
//! atomic stores; readers (the housekeeping thread, `netaudio status`, the harness) take a
//! [`StatsSnapshot`]. No locks; a snapshot may mix two consecutive periods, never torn values.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident ),* $(,)?) => {
        /// Live counters, one atomic each.
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of [`Stats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: stats!(@ty $kind), )*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $( $name: stats!(@load $kind, self.$name), )*
                }
            }

            /// Stores every counter of `s`.
            pub fn publish(&self, s: &StatsSnapshot) {
                $( stats!(@store $kind, self.$name, s.$name); )*
            }
        }
    };
    (@ty count) => { u64 };
    (@ty real) => { f64 };
    (@load count, $a:expr) => { $a.load(Relaxed) };
    (@load real, $a:expr) => { f64::from_bits($a.load(Relaxed)) };
    (@store count, $a:expr, $v:expr) => { $a.store($v, Relaxed) };
    (@store real, $a:expr, $v:expr) => { $a.store(f64::to_bits($v), Relaxed) };
}

stats! {
    /// Packets sent.
    packets_sent: count,
    /// Frames sent.
    frames_sent: count,
    /// Packets the socket refused (nobody listening, buffer full).
    send_errors: count,
    /// Packets accepted into the jitter buffer.
    packets_received: count,
    /// Packets that arrived twice.
    duplicate_packets: count,
    /// Packets that arrived after their frames were played.
    late_packets: count,
    /// Packets of another stream (not the one playing).
    foreign_packets: count,
    /// Datagrams that are not valid packets.
    invalid_packets: count,
    /// Packets never received in time (before recovery).
    lost_packets: count,
    /// Lost packets rebuilt by loss recovery.
    recovered_packets: count,
    /// NACK datagrams sent (receiver).
    nacks_sent: count,
    /// Bytes of NACKs sent (receiver).
    nack_bytes_sent: count,
    /// NACKs received for the current stream (sender).
    nacks_received: count,
    /// Packets sent again on request (sender).
    retransmits_sent: count,
    /// Bytes sent again on request (sender).
    retransmit_bytes_sent: count,
    /// Packets asked for again but not sent: the resend rate cap was reached (sender).
    resends_capped: count,
    /// Packets asked for again but not sent: already sent again as often as allowed (sender).
    resends_over_limit: count,
    /// NACKs refused for a missing or wrong tag (sender with a key).
    nack_auth_failures: count,
    /// Authenticated NACKs refused as replays (sender with a key).
    nack_replays: count,
    /// Frames played as concealment (silence or fades in place of missing audio).
    concealed_frames: count,
    /// Discontinuities in the played audio.
    gaps: count,
    /// Times the receiver restarted its timeline (new sender, or overflow).
    resyncs: count,
    /// Streams that ended with an END packet (a sender stopped cleanly); the silence after
    /// one is not a gap.
    streams_ended: count,
    /// Frames dropped by drift correction.
    slip_drops: count,
    /// Frames inserted by drift correction.
    slip_inserts: count,
    /// Frames played.
    frames_played: count,
    /// Device overruns/underruns recovered.
    xruns: count,
    /// Periods written to the playback device late: when the period was committed, the device
    /// had already played more than half of the reserve it held when it asked for it (fewer than
    /// `(buffer - period) / 2` frames were still queued ahead of it), i.e. it was past halfway
    /// to an underrun. Counted by the receiver's loop (see `netaudio`'s `stream` module).
    late_renders: count,
    /// Realtime events lost because the event queue was full.
    events_dropped: count,
    /// Datagrams dropped because their tag was missing or wrong (with a key only).
    auth_failures: count,
    /// Authenticated packets dropped as replays: a sequence number already taken or behind the
    /// replay window, or a stream older than the one playing.
    replayed_packets: count,
    /// Authenticated packets of a new stream dropped because their send time is too far from
    /// this receiver's clock (a late replay, or unsynchronised clocks).
    stale_packets: count,
    /// Times the audio device went away (e.g. USB unplugged) and was reopened.
    device_lost: count,
    /// Receive buffer level, frames (filtered).
    level_frames: real,
    /// Receive buffer level target, frames.
    target_frames: real,
    /// Drift correction applied, ppm (positive: the sender's clock is faster).
    ratio_ppm: real,
    /// Long-term drift estimate, ppm.
    drift_ppm: real,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_snapshot_round_trips() {
        let s = Stats::default();
        let snap = StatsSnapshot {
            gaps: 3,
            ratio_ppm: -12.5,
            ..Default::default()
        };
        s.publish(&snap);
        assert_eq!(s.snapshot(), snap);
    }
}
