//! A sender's clean stop: its END packets end the stream without a gap.
//!
//! The receiver plays what it holds up to the end frame, fades out, counts `streams_ended` and
//! logs the stop; the silence after it is no gap, and the next sender's stream takes over
//! without one. END packets of other streams change nothing; with a key, an END that is not the
//! stream's own (no tag, a wrong key, altered, a replay of an older stream's) is refused and
//! counted. When every END copy is lost, the stop is a gap, as it always was.
//!
//! The schedule is in step: each step the sender captures one period, its packets arrive, and
//! the receiver renders one period, all at the time of the captured frame count.

use engine::alloc_count::{AllocScope, CountingAlloc};
use engine::auth::{self, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, PacketOutcome, Receiver, ReceiverConfig};
use engine::recovery::RecoveryMode;
use engine::rng::mix64;
use engine::rtlog::{self, Event, EventConsumer};
use engine::sender::{END_COPIES, Sender};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const RATE: u32 = 48_000;
const PERIOD: usize = 64;
const TARGET_MS: f64 = 10.0;
/// Wall-clock time of frame 0 (keyed tests): an ordinary date, ns since the epoch.
const T0: u64 = 1_700_000_000_000_000_000;

fn format() -> StreamFormat {
    StreamFormat::new(RATE, 2, SampleFormat::S16Le).unwrap()
}

fn fb() -> usize {
    format().frame_bytes()
}

fn key() -> Key {
    Key::from_bytes([0x3C; auth::KEY_LEN])
}

fn config(mode: DriftMode, recovery: RecoveryMode) -> ReceiverConfig {
    let mut cfg = ReceiverConfig::new(format(), PERIOD, TARGET_MS);
    cfg.drift_mode = mode;
    cfg.recovery = recovery;
    cfg
}

/// Time of frame `f`, ns.
fn at(f: u64) -> u64 {
    T0 + (f as u128 * 1_000_000_000 / RATE as u128) as u64
}

/// Audio whose every sample is a hash of its position (never silent for long).
fn capture(frames: usize, seed: u64) -> Vec<u8> {
    (0..frames * 2)
        .flat_map(|i| (mix64(seed ^ i as u64) as i16 | 1).to_le_bytes())
        .collect()
}

/// The datagrams of an END (each copy its own), as the daemon's sender loop sends them.
fn end_packets(tx: &mut Sender) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for _ in 0..END_COPIES {
        tx.end_packet(|head, tag| v.push([head, tag].concat()));
    }
    v
}

/// A receiver, the time (in frames) and everything it played.
struct Rig {
    rx: Receiver,
    log: EventConsumer,
    /// Frames captured so far, on one timeline across senders.
    f: u64,
    out: Vec<u8>,
    played: Vec<u8>,
}

impl Rig {
    fn new(rx: Receiver) -> Rig {
        let (events, log) = rtlog::queue();
        Rig {
            rx: rx.with_events(events),
            log,
            f: 0,
            out: vec![0; PERIOD * fb()],
            played: Vec::new(),
        }
    }

    /// `periods` periods of `tx`'s stream: its packets (those `drop` keeps), then a render.
    /// Returns what was captured.
    fn stream(
        &mut self,
        tx: &mut Sender,
        periods: usize,
        seed: u64,
        mut drop: impl FnMut(usize) -> bool,
    ) -> Vec<u8> {
        let captured = capture(periods * PERIOD, seed);
        for (k, chunk) in captured.chunks(PERIOD * fb()).enumerate() {
            let t = at(self.f);
            tx.set_wall_clock(t);
            let mut datagrams = Vec::new();
            tx.packetize_tagged(chunk, |h, p, tag| datagrams.push([h, p, tag].concat()));
            if !drop(k) {
                for d in datagrams {
                    let o = self.rx.on_packet(&d, t);
                    assert!(
                        matches!(o, PacketOutcome::Accepted | PacketOutcome::Resynced),
                        "period {k}: {o:?}"
                    );
                }
            }
            self.render(1);
        }
        captured
    }

    /// `periods` periods of output with no packet arriving (loss recovery has its turn after
    /// each; its NACKs go nowhere).
    fn render(&mut self, periods: usize) {
        let mut nack = [0u8; engine::nack::MAX_NACK_LEN];
        for _ in 0..periods {
            let t = at(self.f);
            self.rx.render(&mut self.out, t);
            self.rx.poll_nack(t, &mut nack);
            self.played.extend_from_slice(&self.out);
            self.f += PERIOD as u64;
        }
    }

    fn deliver(&mut self, datagrams: &[Vec<u8>]) -> Vec<PacketOutcome> {
        let t = at(self.f);
        datagrams.iter().map(|d| self.rx.on_packet(d, t)).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(r) = self.log.pop() {
            v.push(r.event);
        }
        v
    }
}

/// Output frames before a stream's first frame plays (drift correction off): the ring's
/// target less the first packet, which arrived at once.
fn prefill(cfg: &ReceiverConfig) -> usize {
    cfg.target_frames - cfg.output_delay_frames - PERIOD
}

fn is_silent(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[test]
fn a_clean_stop_plays_out_to_the_end_fades_and_is_no_gap() {
    let cfg = config(DriftMode::Off, RecoveryMode::Off);
    let mut rig = Rig::new(Receiver::new(cfg).unwrap());
    let mut tx = Sender::new(format(), PERIOD, 0xA1, 5).unwrap();
    let periods = 100;
    let captured = rig.stream(&mut tx, periods, 1, |_| false);
    let outcomes = rig.deliver(&end_packets(&mut tx));
    assert_eq!(outcomes, vec![PacketOutcome::Ended; END_COPIES]);
    rig.render(100);
    let c = *rig.rx.counters();
    assert_eq!(c.streams_ended, 1, "{c:?}");
    assert_eq!(
        (c.gaps, c.concealed_frames, c.lost_packets),
        (0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.packets_received, periods as u64);

    // Every frame up to the end played exactly (after the prefill and the fade-in), then the
    // last one fades out and silence follows.
    let (lat, fade, n) = (prefill(&cfg), cfg.fade_frames, periods * PERIOD);
    let fb = fb();
    assert!(is_silent(&rig.played[..lat * fb]));
    assert_eq!(
        rig.played[(lat + fade) * fb..(lat + n) * fb],
        captured[fade * fb..n * fb]
    );
    let last = i16::from_le_bytes([captured[(n - 1) * fb], captured[(n - 1) * fb + 1]]);
    let mut prev = last.unsigned_abs();
    for i in 0..fade {
        let at = (lat + n + i) * fb;
        let v = i16::from_le_bytes([rig.played[at], rig.played[at + 1]]).unsigned_abs();
        assert!(v <= prev, "the fade-out rises at frame {i}");
        prev = v;
    }
    assert!(is_silent(&rig.played[(lat + n + fade) * fb..]));

    let events = rig.events();
    assert!(
        events.contains(&Event::StreamEnd {
            stream_id: 0xA1,
            frame: n as u64
        }),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::GapStart { .. })),
        "{events:?}"
    );

    // A new sender starts: taken up at once, without a gap, and played exactly.
    let mut tx2 = Sender::new(format(), PERIOD, 0xB2, 9).unwrap();
    let from = rig.played.len() / fb;
    let captured2 = rig.stream(&mut tx2, periods, 2, |_| false);
    let c = *rig.rx.counters();
    assert_eq!((c.gaps, c.resyncs, c.streams_ended), (0, 1, 1), "{c:?}");
    assert_eq!(rig.rx.stream_id(), Some(0xB2));
    assert!(is_silent(&rig.played[from * fb..(from + lat) * fb]));
    assert_eq!(
        rig.played[(from + lat + fade) * fb..],
        captured2[fade * fb..(periods * PERIOD - lat) * fb]
    );
    let events = rig.events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::GapStart { .. })),
        "{events:?}"
    );
}

#[test]
fn a_clean_stop_is_no_gap_in_every_drift_mode() {
    for mode in DriftMode::ALL {
        for recovery in RecoveryMode::ALL {
            let cfg = config(mode, recovery);
            let mut rig = Rig::new(Receiver::new(cfg).unwrap());
            let mut tx = Sender::new(format(), PERIOD, 1, 0).unwrap();
            rig.stream(&mut tx, 400, 3, |_| false);
            rig.deliver(&end_packets(&mut tx));
            rig.render(200);
            let mut tx2 = Sender::new(format(), PERIOD, 2, 0).unwrap();
            rig.stream(&mut tx2, 400, 4, |_| false);
            rig.deliver(&end_packets(&mut tx2));
            rig.render(200);
            let c = *rig.rx.counters();
            let what = format!("{mode}, recovery {recovery}: {c:?}");
            assert_eq!((c.gaps, c.concealed_frames), (0, 0), "{what}");
            assert_eq!((c.streams_ended, c.resyncs), (2, 1), "{what}");
            assert_eq!(c.nacks_sent, 0, "{what}");
            let tail = rig.played.len() - 100 * PERIOD * fb();
            assert!(is_silent(&rig.played[tail..]), "{what}");
        }
    }
}

#[test]
fn without_an_end_packet_the_stop_is_a_gap_as_before() {
    let cfg = config(DriftMode::Slip, RecoveryMode::Nack);
    let mut rig = Rig::new(Receiver::new(cfg).unwrap());
    let mut tx = Sender::new(format(), PERIOD, 1, 0).unwrap();
    // Long enough to be heard: the first stream plays once the drift is measured (~1 s).
    rig.stream(&mut tx, 2000, 1, |_| false);
    // The END packets are all lost (or the sender was killed).
    rig.render(100);
    let c = *rig.rx.counters();
    assert_eq!((c.gaps, c.streams_ended), (1, 0), "{c:?}");
    let mut tx2 = Sender::new(format(), PERIOD, 2, 0).unwrap();
    rig.stream(&mut tx2, 200, 2, |_| false);
    let c = *rig.rx.counters();
    assert_eq!((c.gaps, c.resyncs, c.streams_ended), (1, 1, 0), "{c:?}");
}

#[test]
fn an_end_of_another_stream_changes_nothing() {
    let cfg = config(DriftMode::Off, RecoveryMode::Nack);
    let mut rig = Rig::new(Receiver::new(cfg).unwrap());
    let mut tx = Sender::new(format(), PERIOD, 7, 0).unwrap();
    rig.stream(&mut tx, 100, 1, |_| false);
    // Another sender's stream, at the same frame index, ends; and one far away.
    let mut other = Sender::new(format(), PERIOD, 8, 0).unwrap();
    other.skip(100 * PERIOD as u64);
    let mut far = Sender::new(format(), PERIOD, 9, 0).unwrap();
    far.skip(1 << 40);
    let mut ends = end_packets(&mut other);
    ends.extend(end_packets(&mut far));
    for o in rig.deliver(&ends) {
        assert_eq!(o, PacketOutcome::Foreign);
    }
    // The stream playing itself, claiming an end beyond anything the buffer could hold.
    let mut own = Sender::new(format(), PERIOD, 7, 100).unwrap();
    own.skip(1 << 40);
    let mut d = Vec::new();
    own.end_packet(|head, _| d = head.to_vec());
    assert_eq!(rig.deliver(&[d]), vec![PacketOutcome::FrameIndexOutOfRange]);
    rig.stream(&mut tx, 100, 2, |_| false);
    let c = *rig.rx.counters();
    assert_eq!(rig.rx.stream_id(), Some(7));
    assert_eq!((c.gaps, c.streams_ended, c.resyncs), (0, 0, 0), "{c:?}");
    assert_eq!((c.foreign_packets, c.invalid_packets), (6, 1), "{c:?}");
}

#[test]
fn a_lost_last_packet_before_the_end_is_concealed_and_only_it() {
    let cfg = config(DriftMode::Off, RecoveryMode::Nack);
    let mut rig = Rig::new(Receiver::new(cfg).unwrap());
    let mut tx = Sender::new(format(), PERIOD, 3, 0).unwrap();
    rig.stream(&mut tx, 100, 1, |k| k == 99);
    rig.deliver(&end_packets(&mut tx));
    let nacks = rig.rx.counters().nacks_sent;
    let mut nack = [0u8; engine::nack::MAX_NACK_LEN];
    for _ in 0..100 {
        assert_eq!(
            rig.rx.poll_nack(at(rig.f), &mut nack),
            0,
            "the sender is gone"
        );
        rig.render(1);
    }
    let c = *rig.rx.counters();
    assert_eq!(c.nacks_sent, nacks);
    assert_eq!(c.streams_ended, 1, "{c:?}");
    assert_eq!((c.gaps, c.lost_packets), (1, 1), "{c:?}");
    assert_eq!(
        c.concealed_frames, PERIOD as u64,
        "the silence after the end is not concealment"
    );
}

/// A receiver with a key, playing a keyed stream that started at `at(0)`.
fn keyed_rig() -> Rig {
    let cfg = config(DriftMode::Slip, RecoveryMode::Nack);
    Rig::new(Receiver::new(cfg).unwrap().with_auth(key()))
}

#[test]
fn with_a_key_only_the_stream_s_own_end_ends_it() {
    let mut rig = keyed_rig();
    let mut tx = Sender::new(format(), PERIOD, 21, 0)
        .unwrap()
        .with_auth(key(), at(0));
    rig.stream(&mut tx, 100, 1, |_| false);
    let f = tx.next_frame();
    // Without a tag, as an unkeyed sender would send it, with the right id, sequence number
    // and end frame.
    let mut plain = Sender::new(format(), PERIOD, 21, tx.next_seq()).unwrap();
    plain.skip(f);
    // Tagged with another key.
    let mut wrong = Sender::new(format(), PERIOD, 21, tx.next_seq())
        .unwrap()
        .with_auth(Key::from_bytes([1; auth::KEY_LEN]), at(0));
    wrong.skip(f);
    // The stream's own END, altered on the way (it moves the end).
    let mut real = tx.clone();
    let mut altered = end_packets(&mut real).remove(0);
    altered[19] ^= 0x40;
    let mut forged = end_packets(&mut plain);
    forged.extend(end_packets(&mut wrong));
    forged.push(altered);
    for o in rig.deliver(&forged) {
        assert_eq!(o, PacketOutcome::Unauthenticated);
    }
    rig.stream(&mut tx, 100, 2, |_| false);
    let c = *rig.rx.counters();
    assert_eq!(c.auth_failures, 2 * END_COPIES as u64 + 1, "{c:?}");
    assert_eq!((c.streams_ended, c.gaps), (0, 0), "{c:?}");

    // The real END, all copies taken (each its own sequence number).
    let ends = end_packets(&mut tx);
    assert_eq!(rig.deliver(&ends), vec![PacketOutcome::Ended; END_COPIES]);
    // A copy replayed.
    assert_eq!(rig.deliver(&ends[..1]), vec![PacketOutcome::Replayed]);
    rig.render(100);
    let c = *rig.rx.counters();
    assert_eq!(
        (c.streams_ended, c.gaps, c.replayed_packets),
        (1, 0, 1),
        "{c:?}"
    );

    // A newer stream plays; the older stream's END replayed cannot stop it.
    let mut tx2 = Sender::new(format(), PERIOD, 22, 0)
        .unwrap()
        .with_auth(key(), at(rig.f));
    rig.stream(&mut tx2, 100, 3, |_| false);
    assert_eq!(
        rig.deliver(&ends),
        vec![PacketOutcome::Replayed; END_COPIES]
    );
    rig.stream(&mut tx2, 100, 4, |_| false);
    let c = *rig.rx.counters();
    assert_eq!(rig.rx.stream_id(), Some(22));
    assert_eq!((c.streams_ended, c.gaps, c.resyncs), (1, 0, 1), "{c:?}");
    assert_eq!(c.replayed_packets, 1 + END_COPIES as u64, "{c:?}");
}

#[test]
fn a_clean_stop_and_a_restart_never_allocate() {
    let cfg = config(DriftMode::Slip, RecoveryMode::Nack);
    let (events, mut log) = rtlog::queue();
    let mut rx = Receiver::new(cfg)
        .unwrap()
        .with_events(events)
        .with_auth(key());
    let mut out = vec![0u8; PERIOD * fb()];
    let captured = capture(PERIOD, 1);
    let mut datagram = [0u8; 1500];
    let mut nack = [0u8; engine::nack::MAX_NACK_LEN];
    let mut senders: Vec<Sender> = (0..20)
        .map(|i| {
            Sender::new(format(), PERIOD, 100 + i, 0)
                .unwrap()
                .with_auth(key(), at(i as u64 * 1_000_000))
        })
        .collect();
    let scope = AllocScope::begin();
    let mut f = 0u64;
    for tx in senders.iter_mut() {
        for _ in 0..300 {
            let t = at(f);
            tx.set_wall_clock(t);
            tx.packetize_tagged(&captured, |h, p, tag| {
                let (a, b) = (h.len(), h.len() + p.len());
                datagram[..a].copy_from_slice(h);
                datagram[a..b].copy_from_slice(p);
                datagram[b..b + tag.len()].copy_from_slice(tag);
                rx.on_packet(&datagram[..b + tag.len()], t);
            });
            rx.render(&mut out, t);
            rx.poll_nack(t, &mut nack);
            f += PERIOD as u64;
        }
        for _ in 0..END_COPIES {
            tx.end_packet(|head, tag| {
                datagram[..head.len()].copy_from_slice(head);
                datagram[head.len()..head.len() + tag.len()].copy_from_slice(tag);
                rx.on_packet(&datagram[..head.len() + tag.len()], at(f));
            });
        }
        for _ in 0..50 {
            rx.render(&mut out, at(f));
            rx.poll_nack(at(f), &mut nack);
            f += PERIOD as u64;
        }
    }
    let n = scope.allocations();
    drop(scope);
    log.drain_to_log();
    let c = rx.counters();
    assert_eq!(n, 0, "{n} allocations");
    assert_eq!((c.streams_ended, c.resyncs, c.gaps), (20, 19, 0), "{c:?}");
}
