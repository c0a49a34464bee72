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

use crate::auth::{Key, NonceWindow};
use crate::nack::{MAX_NACK_RUNS, Nack, NackError, NackRun, emit_nack_round};
use crate::rtlog::{Event, Record};
use crate::wire::{HEADER_LEN, MAX_PACKET_LEN, PacketHeader};
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

/// Default span of the sender's history, ms: well beyond any useful receiver latency.
pub const DEFAULT_HISTORY_MS: f64 = 250.0;

/// What the sender's history did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryCounters {
    /// Valid NACKs for the current stream.
    pub nacks_received: u64,
    /// Datagrams that were not valid NACKs, or NACKs for another stream.
    pub nacks_ignored: u64,
    /// Packets sent again.
    pub retransmits: u64,
    /// Bytes sent again.
    pub retransmit_bytes: u64,
    /// Packets asked for that had already left the history.
    pub not_in_history: u64,
    /// Packets not sent again because they had been sent again as often as
    /// [`ResendLimits`] allows (requests per packet, answers per request).
    pub resends_over_limit: u64,
    /// Packets not sent again because the resend rate cap was reached.
    pub resends_capped: u64,
    /// NACKs refused for a missing or wrong tag (a history with a key).
    pub nack_auth_failures: u64,
    /// Authenticated NACKs refused as replays (a nonce taken before, or too old).
    pub nack_replays: u64,
}

/// How much the sender answers, whatever the NACKs ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResendLimits {
    /// Requests (NACK rounds) answered per packet at most; a packet asked for in more rounds
    /// is not sent again.
    pub max_requests: u8,
    /// Answers per request at most: the copies of one NACK each get an answer up to this many,
    /// as the copies of the answer protect it against loss.
    pub max_copies: u8,
    /// Bytes sent again at most, as a percentage of the stream's own bytes (the bucket earns
    /// this share of every packet recorded).
    pub rate_percent: u32,
    /// What the bucket holds when full, in packets (at least 8): what answers can send at once
    /// after a quiet time.
    pub burst_packets: u32,
}

/// Default [`ResendLimits::max_requests`]: the request, and two more after lost answers.
pub const DEFAULT_MAX_REQUESTS: u8 = 3;
/// Default [`ResendLimits::max_copies`]: the receiver's default NACK copies
/// ([`TrackerParams::nack_copies`]).
pub const DEFAULT_MAX_COPIES: u8 = 3;
/// Default [`ResendLimits::rate_percent`].
pub const DEFAULT_RESEND_RATE_PERCENT: u32 = 50;

impl ResendLimits {
    /// The defaults for a history of `slots` packets: 3 requests per packet, 3 answers per
    /// request, half the stream's bytes, a burst of half the history.
    pub fn for_slots(slots: usize) -> ResendLimits {
        ResendLimits {
            max_requests: DEFAULT_MAX_REQUESTS,
            max_copies: DEFAULT_MAX_COPIES,
            rate_percent: DEFAULT_RESEND_RATE_PERCENT,
            burst_packets: (slots as u32 * DEFAULT_RESEND_RATE_PERCENT / 100).max(8),
        }
    }

    /// Times one packet can be sent again in all.
    pub fn max_resends(&self) -> u32 {
        self.max_requests as u32 * self.max_copies.max(1) as u32
    }
}

/// Most often a [`crate::rtlog::Event::ResendsCapped`] is reported, ns.
const CAP_REPORT_NS: u64 = 1_000_000_000;

const EMPTY: u64 = u64::MAX;

/// The sender's copies of its last packets, answering NACKs.
///
/// What NACKs can make it send is bounded, so a NACK from a spoofed address cannot turn the
/// sender into an amplifier:
/// * each packet at most once per NACK (overlapping runs are merged in place);
/// * per request: the copies of one NACK share a round number and each gets an answer, up to
///   [`ResendLimits::max_copies`]; at most [`ResendLimits::max_requests`] rounds are answered
///   per packet (a datagram without a round is a request of its own);
/// * the bytes sent again come out of a token bucket that earns
///   [`ResendLimits::rate_percent`] of every packet recorded. The bucket is clocked by the
///   stream itself rather than a timer: whatever the format, key or packet size, and however
///   the capture stalls, the bytes sent again never exceed that share of the bytes sent plus
///   one burst. Refusals are counted, and reported as an event at most once a second.
///
/// Answering every copy is what recovers a lost answer in time: at 40 ms latency a packet's
/// frames are rendered about 22 ms after it was sent (the rest is the output buffer), too soon
/// for a request made again after a lost answer to be sure to arrive; answering one copy per
/// round gave 24 gaps in the simulated hour of 1 % loss with bursts, answering each copy none.
///
/// With a key ([`with_auth`](Self::with_auth)) a NACK must be sealed with it and carry a
/// nonce not taken before ([`NonceWindow`]), else it is refused (and counted) before it costs
/// anything.
pub struct RetransmitHistory {
    slots: u32,
    bytes: Vec<u8>,
    lens: Vec<u16>,
    tags: Vec<u64>,
    /// Requests answered for each slot's packet.
    requests: Vec<u8>,
    /// Answers to the last request answered, per slot.
    copies: Vec<u8>,
    /// The round of the last request answered, per slot (0: none, or not numbered).
    rounds: Vec<u16>,
    stream_id: u32,
    newest: Option<u32>,
    limits: ResendLimits,
    /// Token bucket, bytes.
    tokens: u64,
    bucket_cap: u64,
    key: Option<Key>,
    nonces: NonceWindow,
    capped_unreported: u64,
    last_cap_report_ns: Option<u64>,
    event: Option<Record>,
    counters: HistoryCounters,
}

impl RetransmitHistory {
    /// A history of the last `slots` packets (at least 4) with the default
    /// [`ResendLimits`].
    pub fn new(slots: usize) -> RetransmitHistory {
        let slots = slots.clamp(4, 1 << 16);
        RetransmitHistory {
            slots: slots as u32,
            bytes: vec![0; slots * MAX_PACKET_LEN],
            lens: vec![0; slots],
            tags: vec![EMPTY; slots],
            requests: vec![0; slots],
            copies: vec![0; slots],
            rounds: vec![0; slots],
            stream_id: 0,
            newest: None,
            limits: ResendLimits::for_slots(slots),
            tokens: 0,
            bucket_cap: 0,
            key: None,
            nonces: NonceWindow::default(),
            capped_unreported: 0,
            last_cap_report_ns: None,
            event: None,
            counters: HistoryCounters::default(),
        }
    }

    /// A history spanning `ms` of packets of `frames_per_packet` frames at `rate` Hz.
    pub fn for_span(rate: u32, frames_per_packet: usize, ms: f64) -> RetransmitHistory {
        let packet_ms = frames_per_packet.max(1) as f64 * 1000.0 / rate.max(1) as f64;
        RetransmitHistory::new((ms.max(0.0) / packet_ms).ceil() as usize + 4)
    }

    /// Answers only NACKs sealed with `key` (see [`crate::nack::seal_nack`]), each nonce once.
    pub fn with_auth(mut self, key: Key) -> RetransmitHistory {
        self.key = Some(key);
        self
    }

    /// Other limits than the defaults.
    pub fn with_limits(mut self, limits: ResendLimits) -> RetransmitHistory {
        self.limits = ResendLimits {
            burst_packets: limits.burst_packets.max(8),
            ..limits
        };
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> ResendLimits {
        self.limits
    }

    /// Packets kept.
    pub fn capacity(&self) -> usize {
        self.slots as usize
    }

    /// What the history did so far.
    pub fn counters(&self) -> &HistoryCounters {
        &self.counters
    }

    /// An event for the log, if one is waiting: the rate cap refused packets (reported at most
    /// once a second, with how many since the last report). For the driver's event queue.
    pub fn poll_event(&mut self) -> Option<Record> {
        self.event.take()
    }

    /// Keeps a copy of a packet just sent (header and payload as the gather write sent them).
    /// A packet of another stream (a sender restart) forgets the previous stream's packets.
    pub fn record(&mut self, header: &[u8; HEADER_LEN], payload: &[u8]) {
        self.record_parts(header, payload, &[]);
    }

    /// As [`record`](Self::record) for an authenticated packet: `head` is the header and its
    /// extension, `tag` the authentication tag; the copy is the datagram byte for byte.
    pub fn record_parts(&mut self, head: &[u8], payload: &[u8], tag: &[u8]) {
        let len = head.len() + payload.len() + tag.len();
        if len > MAX_PACKET_LEN || head.len() < HEADER_LEN {
            return;
        }
        let header = &head[..HEADER_LEN];
        let stream_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let seq = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let burst = self.limits.burst_packets as u64 * len as u64;
        if stream_id != self.stream_id || self.newest.is_none() {
            // A new stream: nothing kept, no NACK taken, a full bucket.
            self.tags.fill(EMPTY);
            self.stream_id = stream_id;
            self.nonces.reset();
            self.bucket_cap = burst;
            self.tokens = burst;
        }
        self.bucket_cap = self.bucket_cap.max(burst);
        self.tokens =
            (self.tokens + len as u64 * self.limits.rate_percent as u64 / 100).min(self.bucket_cap);
        let slot = (seq % self.slots) as usize;
        let base = slot * MAX_PACKET_LEN;
        let (h, p) = (head.len(), payload.len());
        self.bytes[base..base + h].copy_from_slice(head);
        self.bytes[base + h..base + h + p].copy_from_slice(payload);
        self.bytes[base + h + p..base + len].copy_from_slice(tag);
        self.lens[slot] = len as u16;
        self.tags[slot] = seq as u64;
        self.requests[slot] = 0;
        self.copies[slot] = 0;
        self.rounds[slot] = 0;
        self.newest = Some(seq);
    }

    /// The packet with sequence number `seq`, if still kept.
    pub fn get(&self, seq: u32) -> Option<&[u8]> {
        let slot = (seq % self.slots) as usize;
        if self.tags[slot] != seq as u64 {
            return None;
        }
        let base = slot * MAX_PACKET_LEN;
        Some(&self.bytes[base..base + self.lens[slot] as usize])
    }

    /// Handles one datagram that came back from the receiver at `now_ns` (the driver's clock,
    /// used only to pace reports): if it is a NACK for this stream (authentic and new, with a
    /// key), hands every packet it asks for that is still kept, and within the limits (see
    /// [`RetransmitHistory`]), to `send`. Returns the packets sent again. Work is bounded by
    /// the history's size whatever the NACK says.
    pub fn on_nack<F: FnMut(&[u8])>(
        &mut self,
        now_ns: u64,
        bytes: &[u8],
        mut send: F,
    ) -> Result<usize, NackError> {
        let nack = match Nack::new_checked(bytes) {
            Ok(n) => n,
            Err(e) => {
                self.counters.nacks_ignored += 1;
                return Err(e);
            }
        };
        if let Some(key) = &self.key {
            if !nack.is_authentic(key) {
                self.counters.nack_auth_failures += 1;
                return Ok(0);
            }
            // Authentic, so sealed: the nonce is there.
            if !self.nonces.take(nack.nonce().unwrap_or(0)) {
                self.counters.nack_replays += 1;
                return Ok(0);
            }
        }
        let Some(newest) = self.newest else {
            self.counters.nacks_ignored += 1;
            return Ok(0);
        };
        if nack.stream_id() != self.stream_id {
            self.counters.nacks_ignored += 1;
            return Ok(0);
        }
        self.counters.nacks_received += 1;
        // Each run clipped to the history, as offsets from its oldest packet: [start, end).
        let window_start = newest.wrapping_sub(self.slots - 1);
        let mut spans = [(0u32, 0u32); MAX_NACK_RUNS];
        let mut k = 0;
        for run in nack.runs() {
            let count = run.count as u32;
            // The part of the run inside [window_start, newest], in wrapping arithmetic.
            let at = run.first.wrapping_sub(window_start);
            let (start, n) = if at < self.slots {
                (at, count.min(self.slots - at))
            } else {
                let skip = window_start.wrapping_sub(run.first);
                if skip < count {
                    self.counters.not_in_history += skip as u64;
                    (0, (count - skip).min(self.slots))
                } else {
                    self.counters.not_in_history += count as u64;
                    (0, 0)
                }
            };
            if n > 0 && k < spans.len() {
                spans[k] = (start, start + n);
                k += 1;
            }
        }
        // Merged: overlapping runs ask for each packet once (in place, no allocation).
        let spans = &mut spans[..k];
        spans.sort_unstable();
        let round = nack.round();
        let mut sent = 0;
        let mut capped = 0u64;
        let mut done = 0u32;
        for &(a, b) in spans.iter() {
            for off in a.max(done)..b {
                let seq = window_start.wrapping_add(off);
                let slot = (seq % self.slots) as usize;
                if self.tags[slot] != seq as u64 {
                    self.counters.not_in_history += 1;
                    continue;
                }
                let same_request = round != 0 && self.rounds[slot] == round;
                if same_request && self.copies[slot] >= self.limits.max_copies
                    || !same_request && self.requests[slot] >= self.limits.max_requests
                {
                    self.counters.resends_over_limit += 1;
                    continue;
                }
                let len = self.lens[slot] as usize;
                if self.tokens < len as u64 {
                    capped += 1;
                    continue;
                }
                self.tokens -= len as u64;
                if same_request {
                    self.copies[slot] += 1;
                } else {
                    self.requests[slot] += 1;
                    self.copies[slot] = 1;
                    self.rounds[slot] = round;
                }
                let base = slot * MAX_PACKET_LEN;
                send(&self.bytes[base..base + len]);
                self.counters.retransmits += 1;
                self.counters.retransmit_bytes += len as u64;
                sent += 1;
            }
            done = done.max(b);
        }
        if capped > 0 {
            self.counters.resends_capped += capped;
            self.capped_unreported += capped;
            let due = self
                .last_cap_report_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= CAP_REPORT_NS);
            if due && self.event.is_none() {
                self.event = Some(Record {
                    t_ns: now_ns,
                    event: Event::ResendsCapped {
                        refused: self.capped_unreported.min(u32::MAX as u64) as u32,
                        percent: self.limits.rate_percent.min(u16::MAX as u32) as u16,
                    },
                });
                self.capped_unreported = 0;
                self.last_cap_report_ns = Some(now_ns);
            }
        }
        Ok(sent)
    }
}

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
            retry_rttvar_factor: 0.0,
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
                if p.requests == 1 && !original {
                    // One request, one answer: a clean round-trip sample.
                    let sample = now_ns.saturating_sub(p.first_request_ns) as f64;
                    let err = sample - self.srtt_ns;
                    self.srtt_ns += err / 8.0;
                    self.rttvar_ns += (err.abs() - self.rttvar_ns) / 4.0;
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
    use crate::nack::{MAX_NACK_LEN, emit_nack};
    use crate::sender::Sender;

    fn fmt() -> StreamFormat {
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap()
    }

    #[test]
    fn history_answers_nacks_for_what_it_kept() {
        let mut tx = Sender::new(fmt(), 64, 9, u32::MAX - 2).unwrap();
        let mut hist = RetransmitHistory::new(4);
        let capture = vec![7u8; 64 * 4];
        let mut sent = Vec::new();
        for _ in 0..6 {
            tx.packetize(&capture, |h, p| {
                hist.record(h, p);
                let mut v = h.to_vec();
                v.extend_from_slice(p);
                sent.push(v);
            });
        }
        // Sequence numbers u32::MAX-2 ..= 2; the last four are kept.
        let mut nack = [0u8; MAX_NACK_LEN];
        let runs = [NackRun {
            first: u32::MAX - 2,
            count: 6,
        }];
        let n = emit_nack(9, &runs, &mut nack).unwrap();
        let mut again = Vec::new();
        assert_eq!(
            hist.on_nack(0, &nack[..n], |b| again.push(b.to_vec())),
            Ok(4)
        );
        assert_eq!(again, sent[2..].to_vec(), "byte-identical copies, in order");
        assert_eq!(hist.counters().not_in_history, 2);
        // Another stream's NACK and junk are ignored.
        let n = emit_nack(8, &runs, &mut nack).unwrap();
        assert_eq!(hist.on_nack(0, &nack[..n], |_| panic!("foreign")), Ok(0));
        assert!(hist.on_nack(0, b"junk", |_| panic!("junk")).is_err());
        assert_eq!(hist.counters().nacks_ignored, 2);
        // A huge run costs no more than the history's size.
        let big = [NackRun {
            first: 5,
            count: u16::MAX,
        }; MAX_NACK_RUNS];
        let n = emit_nack(9, &big, &mut nack).unwrap();
        assert_eq!(hist.on_nack(0, &nack[..n], |_| {}), Ok(0));
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
