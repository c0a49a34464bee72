//! Counters shared between a realtime thread and the rest of the program.
//!
//! The realtime side keeps plain counters and publishes them here once per period with relaxed
//! atomic stores; readers (the housekeeping thread, `netaudio status`, the harness) take a
//! [`StatsSnapshot`]. No locks; a snapshot may mix two consecutive periods, never torn values.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which daemon a counter belongs to: its end-of-run report (`--stats-json`) lists that side's
/// counters only (a sender's report has no `gaps`: it plays nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The daemon that captures and sends.
    Sender,
    /// The daemon that receives and plays.
    Receiver,
}

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident in $side:ident ),* $(,)?) => {
        /// Live counters, one atomic each.
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of [`Stats`] at one moment. It serialises as one JSON object, the counters'
        /// names for keys (all of them; [`StatsSnapshot::side`] for one daemon's).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
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

        impl Serialize for SideCounters<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                $(
                    if stats!(@on $side, self.side) {
                        map.serialize_entry(stringify!($name), &self.snapshot.$name)?;
                    }
                )*
                map.end()
            }
        }
    };
    (@ty count) => { u64 };
    (@ty real) => { f64 };
    (@load count, $a:expr) => { $a.load(Relaxed) };
    (@load real, $a:expr) => { f64::from_bits($a.load(Relaxed)) };
    (@store count, $a:expr, $v:expr) => { $a.store($v, Relaxed) };
    (@store real, $a:expr, $v:expr) => { $a.store(f64::to_bits($v), Relaxed) };
    (@on sender, $s:expr) => { $s == Side::Sender };
    (@on receiver, $s:expr) => { $s == Side::Receiver };
    (@on both, $s:expr) => { true };
}

/// The counters of one [`Side`] of a [`StatsSnapshot`]: serialises as a JSON object like the
/// snapshot's, without the other side's keys.
#[derive(Clone, Copy, Debug)]
pub struct SideCounters<'a> {
    snapshot: &'a StatsSnapshot,
    side: Side,
}

impl StatsSnapshot {
    /// The counters `side` keeps, to serialise.
    pub fn side(&self, side: Side) -> SideCounters<'_> {
        SideCounters {
            snapshot: self,
            side,
        }
    }
}

// Each counter: its docs, `name: count|real in sender|receiver|both` (the side whose report
// lists it, see [`Side`]).
stats! {
    /// Packets sent.
    packets_sent: count in sender,
    /// Frames sent.
    frames_sent: count in sender,
    /// Packets the socket refused (nobody listening, buffer full).
    send_errors: count in sender,
    /// Packets accepted into the jitter buffer.
    packets_received: count in receiver,
    /// Packets that arrived twice.
    duplicate_packets: count in receiver,
    /// Packets that arrived after their frames were played.
    late_packets: count in receiver,
    /// Packets of another stream (not the one playing).
    foreign_packets: count in receiver,
    /// Datagrams that are not valid packets.
    invalid_packets: count in receiver,
    /// Packets never received in time (before recovery).
    lost_packets: count in receiver,
    /// Lost packets rebuilt by loss recovery.
    recovered_packets: count in receiver,
    /// NACK datagrams sent (receiver).
    nacks_sent: count in receiver,
    /// Bytes of NACKs sent (receiver).
    nack_bytes_sent: count in receiver,
    /// NACKs received for the current stream (sender).
    nacks_received: count in sender,
    /// Packets sent again on request (sender).
    retransmits_sent: count in sender,
    /// Bytes sent again on request (sender).
    retransmit_bytes_sent: count in sender,
    /// Packets asked for again but not sent: the resend rate cap was reached (sender).
    resends_capped: count in sender,
    /// Packets asked for again but not sent: already sent again as often as allowed (sender).
    resends_over_limit: count in sender,
    /// NACKs refused for a missing or wrong tag (sender with a key).
    nack_auth_failures: count in sender,
    /// Authenticated NACKs refused as replays (sender with a key).
    nack_replays: count in sender,
    /// Frames played as concealment (silence or fades in place of missing audio).
    concealed_frames: count in receiver,
    /// Discontinuities in the played audio.
    gaps: count in receiver,
    /// Times the receiver restarted its timeline (new sender, or overflow).
    resyncs: count in receiver,
    /// Streams that ended with an END packet (a sender stopped cleanly); the silence after
    /// one is not a gap.
    streams_ended: count in receiver,
    /// Frames dropped by drift correction.
    slip_drops: count in receiver,
    /// Frames inserted by drift correction.
    slip_inserts: count in receiver,
    /// Frames played.
    frames_played: count in receiver,
    /// Device overruns/underruns recovered.
    xruns: count in both,
    /// Periods written to the playback device late: when the period was committed, the device
    /// had already played more than half of the reserve it held when it asked for it (fewer than
    /// `(buffer - period) / 2` frames were still queued ahead of it), i.e. it was past halfway
    /// to an underrun. Counted by the receiver's loop (see `netaudio`'s `stream` module).
    late_renders: count in receiver,
    /// Realtime events lost because the event queue was full.
    events_dropped: count in both,
    /// Datagrams dropped because their tag was missing or wrong (with a key only).
    auth_failures: count in receiver,
    /// Authenticated packets dropped as replays: a sequence number already taken or behind the
    /// replay window, or a stream older than the one playing.
    replayed_packets: count in receiver,
    /// Authenticated packets of a new stream dropped because their send time is too far from
    /// this receiver's clock (a late replay, or unsynchronised clocks).
    stale_packets: count in receiver,
    /// Times the audio device went away (e.g. USB unplugged) and was reopened.
    device_lost: count in both,
    /// Receive buffer level, frames (filtered).
    level_frames: real in receiver,
    /// Receive buffer level target, frames.
    target_frames: real in receiver,
    /// Drift correction applied, ppm (positive: the sender's clock is faster).
    ratio_ppm: real in receiver,
    /// Long-term drift estimate, ppm.
    drift_ppm: real in receiver,
    /// Presentation error with presentation time (multiroom sync): how much later than its
    /// capture time plus the common latency the frame being played leaves, µs (0 without).
    presentation_error_us: real in receiver,
    /// The sender's clock minus this receiver's by the time exchange, µs (0 without).
    sync_offset_us: real in receiver,
    /// The clock model's error estimate, µs (0 without; not counting the paths' asymmetry).
    sync_model_error_us: real in receiver,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_snapshot_serialises_every_counter_by_name() {
        let snap = StatsSnapshot {
            gaps: 3,
            packets_sent: 5,
            ratio_ppm: -12.5,
            ..Default::default()
        };
        let v = serde_json::to_value(snap).unwrap();
        assert_eq!(v["gaps"], 3);
        assert_eq!(v["packets_sent"], 5);
        assert_eq!(v["ratio_ppm"], -12.5);
        assert_eq!(v["device_lost"], 0);
    }

    #[test]
    fn each_side_serialises_its_own_counters() {
        let snap = StatsSnapshot {
            gaps: 3,
            packets_sent: 5,
            xruns: 2,
            ..Default::default()
        };
        let all = serde_json::to_value(snap).unwrap();
        let tx = serde_json::to_value(snap.side(Side::Sender)).unwrap();
        let rx = serde_json::to_value(snap.side(Side::Receiver)).unwrap();
        // The sender plays nothing: no `gaps` (readers fall back to its xruns).
        assert!(tx.get("gaps").is_none(), "{tx}");
        assert_eq!(tx["packets_sent"], 5);
        assert_eq!(rx["gaps"], 3);
        assert!(rx.get("packets_sent").is_none(), "{rx}");
        assert_eq!(
            (tx["xruns"].clone(), rx["xruns"].clone()),
            (json!(2), json!(2))
        );
        // Every counter is on one side or both.
        for key in all.as_object().unwrap().keys() {
            assert!(tx.get(key).is_some() || rx.get(key).is_some(), "{key}");
        }
    }
}
