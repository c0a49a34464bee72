//! The sender's side of loss recovery: [`RetransmitHistory`] keeps copies of the last packets
//! sent and answers NACKs with them, within the limits of [`ResendLimits`].
//!
//! Realtime contract: `new` allocates the history's slots; recording a packet and answering a
//! NACK never allocate, lock, block or read a clock (time is passed in).

use crate::auth::{Key, NonceWindow};
use crate::nack::{MAX_NACK_RUNS, Nack, NackError};
use crate::rtlog::{Event, Record};
use crate::wire::{HEADER_LEN, MAX_PACKET_LEN};

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
/// ([`TrackerParams::nack_copies`](super::TrackerParams::nack_copies)).
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
///
/// Several receivers (a multicast group, a list of receivers): each asks for its own losses,
/// with its own rounds and its own nonces. With [`with_requesters`](Self::with_requesters) the
/// history keeps the per-packet limits and the nonce window per requester (an index the driver
/// gives each NACK's source, [`on_nack_from`](Self::on_nack_from)), so one receiver's requests
/// neither use up another's answers nor make its nonces look like replays. The rate cap stays
/// one for all: it bounds what loss recovery adds to the network, whoever asks.
pub struct RetransmitHistory {
    slots: u32,
    bytes: Vec<u8>,
    lens: Vec<u16>,
    tags: Vec<u64>,
    /// Requesters told apart (1: every NACK is one receiver's).
    requesters: usize,
    /// Requests answered for each slot's packet, per requester (`r * slots + slot`).
    requests: Vec<u8>,
    /// Answers to the last request answered, per requester and slot.
    copies: Vec<u8>,
    /// The round of the last request answered, per requester and slot (0: none, or not
    /// numbered).
    rounds: Vec<u16>,
    stream_id: u32,
    newest: Option<u32>,
    limits: ResendLimits,
    /// Token bucket, bytes.
    tokens: u64,
    bucket_cap: u64,
    key: Option<Key>,
    /// One window per requester.
    nonces: Vec<NonceWindow>,
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
            requesters: 1,
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
            nonces: vec![NonceWindow::default()],
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

    /// Tells `n` requesters apart (at least 1; see [`on_nack_from`](Self::on_nack_from)): the
    /// per-packet limits and the nonce window are kept for each. Allocates; call it before
    /// streaming.
    pub fn with_requesters(mut self, n: usize) -> RetransmitHistory {
        let n = n.clamp(1, 256);
        let slots = self.slots as usize;
        self.requesters = n;
        self.requests = vec![0; slots * n];
        self.copies = vec![0; slots * n];
        self.rounds = vec![0; slots * n];
        self.nonces = vec![NonceWindow::default(); n];
        self
    }

    /// Requesters told apart.
    pub fn requesters(&self) -> usize {
        self.requesters
    }

    /// Forgets what requester `r` asked so far (its index now stands for another receiver):
    /// its nonce window and its per-packet counts. Bounded by the history's size; no
    /// allocation.
    pub fn forget_requester(&mut self, r: usize) {
        if r >= self.requesters {
            return;
        }
        let slots = self.slots as usize;
        let span = r * slots..(r + 1) * slots;
        self.requests[span.clone()].fill(0);
        self.copies[span.clone()].fill(0);
        self.rounds[span].fill(0);
        self.nonces[r].reset();
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
            self.nonces.iter_mut().for_each(NonceWindow::reset);
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
        for r in 0..self.requesters {
            let i = r * self.slots as usize + slot;
            self.requests[i] = 0;
            self.copies[i] = 0;
            self.rounds[i] = 0;
        }
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
        send: F,
    ) -> Result<usize, NackError> {
        self.on_nack_from(now_ns, 0, bytes, send)
    }

    /// As [`on_nack`](Self::on_nack) for a NACK from requester `requester` (an index below
    /// [`requesters`](Self::requesters), given by the driver to each receiver it tells apart,
    /// e.g. by source address; larger ones count as the last): its own per-packet limits and
    /// nonce window apply.
    pub fn on_nack_from<F: FnMut(&[u8])>(
        &mut self,
        now_ns: u64,
        requester: usize,
        bytes: &[u8],
        mut send: F,
    ) -> Result<usize, NackError> {
        let r = requester.min(self.requesters - 1);
        let base_r = r * self.slots as usize;
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
            if !self.nonces[r].take(nack.nonce().unwrap_or(0)) {
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
                let i = base_r + slot;
                let same_request = round != 0 && self.rounds[i] == round;
                if same_request && self.copies[i] >= self.limits.max_copies
                    || !same_request && self.requests[i] >= self.limits.max_requests
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
                    self.copies[i] += 1;
                } else {
                    self.requests[i] += 1;
                    self.copies[i] = 1;
                    self.rounds[i] = round;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{SampleFormat, StreamFormat};
    use crate::nack::{MAX_NACK_LEN, NackRun, emit_nack};
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

    #[test]
    fn each_requester_has_its_own_limits_and_nonces() {
        use crate::nack::{emit_nack_round, seal_nack};
        let key = Key::from_bytes([3; 32]);
        let mut tx = Sender::new(fmt(), 64, 9, 100).unwrap();
        let mut hist = RetransmitHistory::new(8)
            .with_auth(key.clone())
            .with_requesters(2);
        assert_eq!(hist.requesters(), 2);
        let capture = vec![7u8; 64 * 4];
        for _ in 0..4 {
            tx.packetize(&capture, |h, p| hist.record(h, p));
        }
        let runs = [NackRun {
            first: 101,
            count: 1,
        }];
        // Round 1 from each of two receivers, three copies each, their nonces far apart (each
        // receiver starts its nonces at its own wall clock).
        let mut answered = [0usize; 2];
        for (r, start) in [(0usize, 1_000u64), (1, 9_000_000_000)] {
            for copy in 0..3 {
                let mut nack = [0u8; MAX_NACK_LEN];
                emit_nack_round(9, 1, &runs, &mut nack).unwrap();
                let n = seal_nack(&key, start + copy, &mut nack[..]).unwrap();
                answered[r] += hist.on_nack_from(0, r, &nack[..n], |_| {}).unwrap();
            }
        }
        assert_eq!(answered, [3, 3], "each receiver's copies answered");
        assert_eq!(hist.counters().nack_replays, 0);
        assert_eq!(hist.counters().resends_over_limit, 0);
        // Requester 0 asks once more in the same round: over its limit, not requester 1's.
        let mut nack = [0u8; MAX_NACK_LEN];
        emit_nack_round(9, 1, &runs, &mut nack).unwrap();
        let n = seal_nack(&key, 1_010, &mut nack[..]).unwrap();
        assert_eq!(hist.on_nack_from(0, 0, &nack[..n], |_| {}), Ok(0));
        assert_eq!(hist.counters().resends_over_limit, 1);
        // Its index given to another receiver: a fresh start, whose nonces are its own.
        hist.forget_requester(0);
        emit_nack_round(9, 1, &runs, &mut nack).unwrap();
        let n = seal_nack(&key, 5, &mut nack[..]).unwrap();
        assert_eq!(hist.on_nack_from(0, 0, &nack[..n], |_| {}), Ok(1));
    }
}
