//! The receiver's side of loss recovery: [`LossTracker`] notices missing sequence numbers and
//! writes the NACKs asking for them while their frames can still be played.
//!
//! Realtime contract: `new` allocates the tracker's tables; taking a packet and polling for a
//! NACK never allocate, lock, block or read a clock (time is passed in).

use crate::nack::{MAX_NACK_RUNS, NackRun, emit_nack_round};
use crate::wire::PacketHeader;

/// Beyond a round trip and four deviations, how much later an answer may still come, ns
/// (the sender answers in its loop, within a period).
const ANSWER_SLACK_NS: f64 = 5_000_000.0;

/// Tuning of the receiver's loss tracker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerParams {
    /// Slack added to a packet's latest expected arrival before it counts as overdue, ns.
    pub overdue_margin_ns: u64,
    /// Shortest wait before asking again for the same packet, ns.
    pub retry_min_ns: u64,
    /// Longest wait before asking again, ns.
    pub retry_max_ns: u64,
    /// Round trip assumed until one is measured, ns.
    pub initial_rtt_ns: u64,
    /// How fast the latest-arrival estimate forgets a late packet, as a fraction of the
    /// packet interval per packet (above any clock drift).
    pub arrival_decay: f64,
    /// The wait before asking again is the smoothed round trip plus this many times its mean
    /// deviation (0: ask again after a typical round trip, so a lost request or answer costs
    /// one round trip, not the worst case).
    pub retry_rttvar_factor: f64,
    /// Times the driver sends each NACK datagram. The copies carry the same round, and the
    /// sender answers a round once: copies protect the request against loss, asking again
    /// (after about a round trip) protects the answer.
    pub nack_copies: u8,
}

impl Default for TrackerParams {
    fn default() -> Self {
        TrackerParams {
            overdue_margin_ns: 1_000_000,
            retry_min_ns: 2_000_000,
            retry_max_ns: 20_000_000,
            initial_rtt_ns: 2_000_000,
            arrival_decay: 0.002,
            retry_rttvar_factor: -1.0,
            nack_copies: 3,
        }
    }
}

/// Most missing packets tracked at once.
pub const MAX_PENDING: usize = 128;

#[derive(Clone, Copy, Debug)]
struct Pending {
    rel: i64,
    seq: u32,
    /// First frame (estimated from the packet pattern).
    frame: i64,
    requests: u32,
    first_request_ns: u64,
    next_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Track {
    stream_id: u32,
    newest_seq: u32,
    /// Sequence numbers unwrapped, relative to the stream's first packet seen.
    newest_rel: i64,
    newest_frame: i64,
    frames_per_packet: i64,
    /// Latest expected arrival of packet `newest_rel`, ns.
    latest_ns: f64,
    /// First packet neither received nor tracked as missing.
    next_rel: i64,
    ended: bool,
}

/// What the tracker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerCounters {
    /// NACK datagrams written.
    pub nacks_sent: u64,
    /// Bytes of NACKs written.
    pub nack_bytes: u64,
    /// Packet requests (one packet asked for once).
    pub requests: u64,
    /// Packets asked for that arrived in time to be played.
    pub recovered: u64,
    /// Packets given up on because their play-out time passed.
    pub expired: u64,
}

/// The receiver's view of what is missing and when to ask for it.
pub struct LossTracker {
    params: TrackerParams,
    rate: f64,
    max_ahead: i64,
    track: Option<Track>,
    pending: heapless::Vec<Pending, MAX_PENDING>,
    runs: [NackRun; MAX_NACK_RUNS],
    /// Round of the last NACK written (never 0).
    round: u16,
    srtt_ns: f64,
    rttvar_ns: f64,
    counters: TrackerCounters,
}

impl LossTracker {
    /// A tracker for a stream at `rate` Hz whose receive buffer holds `horizon_frames` frames
    /// ahead of play-out (packets further ahead than that are not asked for).
    pub fn new(rate: u32, horizon_frames: usize, params: TrackerParams) -> LossTracker {
        LossTracker {
            params,
            rate: rate.max(1) as f64,
            max_ahead: horizon_frames as i64,
            track: None,
            pending: heapless::Vec::new(),
            runs: [NackRun { first: 0, count: 1 }; MAX_NACK_RUNS],
            round: 0,
            srtt_ns: params.initial_rtt_ns as f64,
            rttvar_ns: params.initial_rtt_ns as f64 / 2.0,
            counters: TrackerCounters::default(),
        }
    }

    /// What the tracker did so far.
    pub fn counters(&self) -> &TrackerCounters {
        &self.counters
    }

    /// Smoothed round trip from a NACK to the packet it asked for, ns.
    pub fn rtt_ns(&self) -> f64 {
        self.srtt_ns
    }

    /// Times the driver should send each NACK datagram.
    pub fn nack_copies(&self) -> usize {
        self.params.nack_copies.max(1) as usize
    }

    /// Packets currently missing and still wanted.
    pub fn missing(&self) -> usize {
        self.pending.len()
    }

    fn interval_ns(t: &Track, rate: f64) -> f64 {
        t.frames_per_packet as f64 * 1e9 / rate
    }

    /// Forgets the stream (the receiver resynced or stopped following it).
    pub fn reset(&mut self) {
        self.track = None;
        self.pending.clear();
    }

    /// A packet of the followed stream arrived at `now_ns`; `stored` says whether any of its
    /// frames went into the buffer, `restarted` whether the receiver (re)started its timeline
    /// with it. Returns true if it was a packet asked for that arrived in time.
    pub fn on_packet(
        &mut self,
        h: &PacketHeader,
        now_ns: u64,
        stored: bool,
        restarted: bool,
        read_pos: i64,
    ) -> bool {
        let first = h.first_frame as i64;
        let fpp = (h.frames as i64).max(1);
        let ended = h.flags.contains(crate::wire::Flags::END);
        let t = match self.track.as_mut() {
            Some(t) if !restarted && t.stream_id == h.stream_id => t,
            _ => {
                self.pending.clear();
                self.track = Some(Track {
                    stream_id: h.stream_id,
                    newest_seq: h.seq,
                    newest_rel: 0,
                    newest_frame: first,
                    frames_per_packet: fpp,
                    latest_ns: now_ns as f64,
                    next_rel: 1,
                    ended,
                });
                return false;
            }
        };
        t.ended |= ended;
        let rel = t.newest_rel + h.seq.wrapping_sub(t.newest_seq) as i32 as i64;
        if let Some(i) = self.pending.iter().position(|p| p.rel == rel) {
            let p = self.pending.remove(i);
            if p.requests > 0 {
                // Later after the request than any answer comes: the original, only late
                // (after a stall of the sender, or of both ends). It teaches the arrival model,
                // which is what keeps the next packets from looking overdue too; it is no
                // round-trip sample.
                let waited = now_ns.saturating_sub(p.first_request_ns) as f64;
                let original = waited > self.srtt_ns + 4.0 * self.rttvar_ns + ANSWER_SLACK_NS;
                if rel > t.newest_rel {
                    let d = rel - t.newest_rel;
                    let interval = Self::interval_ns(t, self.rate);
                    t.latest_ns += d as f64 * interval * (1.0 - self.params.arrival_decay);
                    // An answer arrives a round trip after the request: its original was due
                    // about then, no earlier.
                    let learned = if original {
                        now_ns as f64
                    } else {
                        now_ns as f64 - self.srtt_ns
                    };
                    if stored {
                        t.latest_ns = t.latest_ns.max(learned);
                    }
                    t.newest_rel = rel;
                    t.newest_seq = h.seq;
                    t.newest_frame = first;
                }
                let sample = now_ns.saturating_sub(p.first_request_ns) as f64;
                if p.requests == 1 && !original {
                    // One request, one answer: a clean round-trip sample.
                    let err = sample - self.srtt_ns;
                    self.srtt_ns += err / 8.0;
                    self.rttvar_ns += (err.abs() - self.rttvar_ns) / 4.0;
                } else if !original && sample > self.srtt_ns {
                    // Asked more than once: which request this answers is not known, so it is
                    // no sample. But a round trip estimated short asks again before any answer
                    // can come, so every packet is asked for twice and no clean sample would
                    // ever correct it: the answer came no earlier than a round trip after the
                    // first request could be answered, so the estimate moves up towards it
                    // (never down), until requests are answered before they are repeated.
                    self.srtt_ns += (sample - self.srtt_ns) / 8.0;
                }
                if stored {
                    self.counters.recovered += 1;
                }
                return stored;
            }
            // Late, but before it was asked for: an original, let it teach the arrival model.
        }
        if rel > t.newest_rel {
            let d = rel - t.newest_rel;
            let interval = Self::interval_ns(t, self.rate);
            t.latest_ns += d as f64 * interval * (1.0 - self.params.arrival_decay);
            if stored {
                // (A copy of a packet already here, e.g. a second answer to a NACK, teaches
                // nothing about arrival times.)
                t.latest_ns = t.latest_ns.max(now_ns as f64);
            }
            t.newest_rel = rel;
            t.newest_seq = h.seq;
            t.newest_frame = first;
            t.frames_per_packet = fpp;
            // Holes behind it: ask for those whose frames can still be played.
            let from = t.next_rel.max(rel - MAX_PENDING as i64);
            for m in from..rel {
                let frame = first - (rel - m) * fpp;
                if frame + fpp > read_pos {
                    let seq = h.seq.wrapping_sub((rel - m) as u32);
                    let _ = self.pending.push(Pending {
                        rel: m,
                        seq,
                        frame,
                        requests: 0,
                        first_request_ns: 0,
                        next_ns: now_ns,
                    });
                }
            }
            t.next_rel = t.next_rel.max(rel + 1);
        }
        false
    }

    /// When [`LossTracker::poll`] next has something to do: the next packet becomes overdue, or
    /// a request is due again. `None` when there is nothing to wait for.
    pub fn next_due_ns(&self) -> Option<u64> {
        let t = self.track.as_ref()?;
        let mut due = self.pending.iter().map(|p| p.next_ns).min();
        let horizon = t.newest_rel + (self.max_ahead / t.frames_per_packet).max(1);
        if !t.ended && t.next_rel <= horizon && !self.pending.is_full() {
            let ahead = (t.next_rel - t.newest_rel) as f64;
            let at = t.latest_ns
                + ahead * Self::interval_ns(t, self.rate)
                + self.params.overdue_margin_ns as f64;
            let at = at.max(0.0).ceil() as u64;
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        due
    }

    /// Looks at the time: marks overdue packets missing, gives up on those whose frames were
    /// played (`read_pos` is the next frame to play), and writes a NACK for everything due to
    /// be asked for into `buf` (at least [`crate::nack::MAX_NACK_LEN`] bytes). Returns the
    /// NACK's length, 0 when there is nothing to ask.
    pub fn poll(&mut self, now_ns: u64, read_pos: i64, buf: &mut [u8]) -> usize {
        let Some(t) = self.track.as_mut() else {
            return 0;
        };
        let interval = Self::interval_ns(t, self.rate);
        // Overdue: later than the latest arrival the pattern so far predicts.
        if !t.ended {
            let horizon = t.newest_rel + (self.max_ahead / t.frames_per_packet).max(1);
            while t.next_rel <= horizon && !self.pending.is_full() {
                let ahead = t.next_rel - t.newest_rel;
                let due =
                    t.latest_ns + ahead as f64 * interval + self.params.overdue_margin_ns as f64;
                if (now_ns as f64) < due {
                    break;
                }
                let frame = t.newest_frame + ahead * t.frames_per_packet;
                let _ = self.pending.push(Pending {
                    rel: t.next_rel,
                    seq: t.newest_seq.wrapping_add(ahead as u32),
                    frame,
                    requests: 0,
                    first_request_ns: 0,
                    next_ns: now_ns,
                });
                t.next_rel += 1;
            }
        }
        // Give up on what has been played.
        let fpp = t.frames_per_packet;
        let before = self.pending.len();
        self.pending.retain(|p| p.frame + fpp > read_pos);
        self.counters.expired += (before - self.pending.len()) as u64;
        // Ask for what is due, in runs of consecutive sequence numbers.
        let retry = (self.srtt_ns + self.params.retry_rttvar_factor * self.rttvar_ns).clamp(
            self.params.retry_min_ns as f64,
            self.params.retry_max_ns as f64,
        ) as u64;
        let mut n = 0usize;
        for p in self.pending.iter_mut() {
            if p.next_ns > now_ns {
                continue;
            }
            if n > 0 {
                let last = &mut self.runs[n - 1];
                if last.first.wrapping_add(last.count as u32) == p.seq && last.count < u16::MAX {
                    last.count += 1;
                } else if n == MAX_NACK_RUNS {
                    break;
                } else {
                    self.runs[n] = NackRun {
                        first: p.seq,
                        count: 1,
                    };
                    n += 1;
                }
            } else {
                self.runs[0] = NackRun {
                    first: p.seq,
                    count: 1,
                };
                n = 1;
            }
            if p.requests == 0 {
                p.first_request_ns = now_ns;
            }
            p.requests += 1;
            p.next_ns = now_ns + retry;
            self.counters.requests += 1;
        }
        if n == 0 {
            return 0;
        }
        // A new request: the sender answers it once however many copies arrive.
        self.round = self.round.wrapping_add(1).max(1);
        match emit_nack_round(t.stream_id, self.round, &self.runs[..n], buf) {
            Ok(len) => {
                self.counters.nacks_sent += 1;
                self.counters.nack_bytes += len as u64;
                len
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{SampleFormat, StreamFormat};
    use crate::nack::{MAX_NACK_LEN, Nack};

    fn fmt() -> StreamFormat {
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap()
    }

    fn header(seq: u32, frame: u64) -> PacketHeader {
        PacketHeader {
            flags: crate::wire::Flags::default(),
            stream_id: 1,
            seq,
            first_frame: frame,
            format: fmt(),
            frames: 256,
            ext_len: 0,
            tag_len: 0,
        }
    }

    fn runs_of(buf: &[u8]) -> Vec<NackRun> {
        Nack::new_checked(buf).unwrap().runs().collect()
    }

    #[test]
    fn tracker_asks_for_holes_and_overdue_packets_until_they_are_played() {
        let interval = 256 * 1_000_000_000 / 48_000; // 5.33 ms
        let params = TrackerParams {
            retry_min_ns: 8_000_000,
            ..TrackerParams::default()
        };
        let mut tr = LossTracker::new(48_000, 2048, params);
        let mut buf = [0u8; MAX_NACK_LEN];
        let at = |k: u64| k * interval;
        for k in 0..10u64 {
            tr.on_packet(&header(k as u32, k * 256), at(k), true, k == 0, 0);
            assert_eq!(tr.poll(at(k), 0, &mut buf), 0, "nothing missing");
        }
        // 10 and 11 lost, 12 arrives: both are asked for at once.
        tr.on_packet(&header(12, 12 * 256), at(12), true, false, 0);
        let n = tr.poll(at(12), 0, &mut buf);
        assert_eq!(
            runs_of(&buf[..n]),
            vec![NackRun {
                first: 10,
                count: 2
            }]
        );
        // 13 is late: overdue after its expected arrival plus the margin, not before.
        assert_eq!(tr.poll(at(13) + 500_000, 0, &mut buf), 0);
        let n = tr.poll(at(13) + 1_100_000, 0, &mut buf);
        assert_eq!(
            runs_of(&buf[..n]),
            vec![NackRun {
                first: 13,
                count: 1
            }]
        );
        // 10 comes back: recovered. 11 is asked for again after the retry time.
        assert!(tr.on_packet(&header(10, 10 * 256), at(13) + 2_000_000, true, false, 0));
        let n = tr.poll(at(13) + 5_000_000, 0, &mut buf);
        assert_eq!(
            runs_of(&buf[..n]),
            vec![NackRun {
                first: 11,
                count: 1
            }]
        );
        // Once 11's frames are played it is given up; 13 is still wanted, 14 is now overdue.
        let n = tr.poll(at(14) + 3_000_000, 12 * 256, &mut buf);
        assert_eq!(
            runs_of(&buf[..n]),
            vec![NackRun {
                first: 14,
                count: 1
            }]
        );
        assert_eq!(tr.counters().expired, 1);
        assert_eq!(tr.counters().recovered, 1);
        assert_eq!(tr.missing(), 2);
        // A new stream forgets everything.
        tr.on_packet(&header(500, 0), at(15), true, true, 0);
        assert_eq!(tr.missing(), 0);
    }
}
