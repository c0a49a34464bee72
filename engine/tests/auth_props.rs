//! The receiver with a key: whatever an attacker on the network adds to a legitimate stream
//! (forged tags, a wrong key, no tag, truncated datagrams, replays of earlier packets, a
//! recording of an older stream, a stale newer one), the played output is byte for byte what
//! a receiver hearing only the legitimate stream plays, and every added datagram is counted
//! as dropped.
//!
//! Time: the sender's wall clock and the receivers' are the same (`wall = now_ns`, offset 0),
//! and the schedule is in step: one capture period, its packets, one render.

use engine::auth::{self, AuthExt, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, PacketOutcome, Receiver, ReceiverConfig};
use engine::rng::mix64;
use engine::sender::Sender;
use engine::wire::{HEADER_LEN, PacketHeader};
use proptest::prelude::*;

const RATE: u32 = 48_000;
const PERIOD: usize = 64;
/// Wall-clock time of the test's frame 0: an ordinary date, ns since the epoch.
const T0: u64 = 1_700_000_000_000_000_000;

fn format() -> StreamFormat {
    StreamFormat::new(RATE, 2, SampleFormat::S16Le).unwrap()
}

fn key() -> Key {
    Key::from_bytes([0x5A; auth::KEY_LEN])
}

fn receiver(mode: DriftMode) -> Receiver {
    let mut cfg = ReceiverConfig::new(format(), PERIOD, 10.0);
    cfg.drift_mode = mode;
    Receiver::new(cfg).unwrap().with_auth(key())
}

/// Time of frame `f`, ns.
fn at(f: u64) -> u64 {
    T0 + (f as u128 * 1_000_000_000 / RATE as u128) as u64
}

fn capture(frames: usize, seed: u64) -> Vec<u8> {
    (0..frames * 2)
        .flat_map(|i| (mix64(seed ^ i as u64) as i16).to_le_bytes())
        .collect()
}

/// One period of packets from `tx` at time `t` (each packet as one datagram).
fn period_packets(tx: &mut Sender, captured: &[u8], t: u64) -> Vec<Vec<u8>> {
    tx.set_wall_clock(t);
    let mut v = Vec::new();
    tx.packetize_tagged(captured, |h, p, tag| v.push([h, p, tag].concat()));
    v
}

fn sender(id: u32, session: u64, k: Key) -> Sender {
    Sender::new(format(), PERIOD, id, id.wrapping_mul(77))
        .unwrap()
        .with_auth(k, session)
}

#[test]
fn an_authenticated_stream_plays_bit_exact() {
    let mut tx = sender(1, at(0), key());
    let mut rx = receiver(DriftMode::Off);
    let fb = format().frame_bytes();
    let mut out = vec![0u8; PERIOD * fb];
    let mut played = Vec::new();
    let captured = capture(PERIOD * 200, 1);
    for (k, chunk) in captured.chunks(PERIOD * fb).enumerate() {
        let t = at((k * PERIOD) as u64);
        for d in period_packets(&mut tx, chunk, t) {
            assert_eq!(
                d.len(),
                HEADER_LEN + auth::EXT_LEN + PERIOD * fb + auth::TAG_LEN
            );
            let o = rx.on_packet(&d, t);
            assert!(
                matches!(o, PacketOutcome::Accepted | PacketOutcome::Resynced),
                "{o:?}"
            );
        }
        rx.render(&mut out, t);
        played.extend_from_slice(&out);
    }
    let c = rx.counters();
    assert_eq!(c.packets_received, 200);
    assert_eq!(
        (c.auth_failures, c.replayed_packets, c.stale_packets),
        (0, 0, 0)
    );
    assert_eq!(c.gaps, 0);
    // The captured audio appears in the output, whole, after the prefill and fade-in.
    let tail = &captured[captured.len() / 2..captured.len() * 3 / 4];
    assert!(played.windows(tail.len()).any(|w| w == tail));
}

#[test]
fn unauthenticated_and_stale_streams_never_start() {
    let captured = capture(PERIOD, 2);
    let now = at(48_000 * 60);
    let mut rx = receiver(DriftMode::Slip);
    // No key at all.
    let mut plain = Sender::new(format(), PERIOD, 9, 0).unwrap();
    let mut d = Vec::new();
    plain.packetize(&captured, |h, p| d = [&h[..], p].concat());
    assert_eq!(rx.on_packet(&d, now), PacketOutcome::Unauthenticated);
    // Another key.
    let mut other = sender(3, now, Key::from_bytes([1; auth::KEY_LEN]));
    for d in period_packets(&mut other, &captured, now) {
        assert_eq!(rx.on_packet(&d, now), PacketOutcome::Unauthenticated);
    }
    // The right key, but recorded 11 s ago and replayed now.
    let mut old = sender(4, now - 20_000_000_000, key());
    for d in period_packets(&mut old, &captured, now - 11_000_000_000) {
        assert_eq!(rx.on_packet(&d, now), PacketOutcome::Stale);
    }
    // Or sent from a clock 11 s ahead.
    let mut ahead = sender(5, now, key());
    for d in period_packets(&mut ahead, &captured, now + 11_000_000_000) {
        assert_eq!(rx.on_packet(&d, now), PacketOutcome::Stale);
    }
    assert_eq!(rx.stream_id(), None);
    let c = rx.counters();
    assert_eq!(
        (c.auth_failures, c.stale_packets, c.packets_received),
        (2, 2, 0)
    );
    // Fresh within the tolerance, the clocks 9 s apart: it plays. The wall clock is the
    // driver's: here 1 s ahead of the `now` timeline.
    rx.set_wall_offset(1_000_000_000);
    let mut live = sender(6, now, key());
    for d in period_packets(&mut live, &captured, now + 10_000_000_000) {
        assert_eq!(rx.on_packet(&d, now), PacketOutcome::Resynced);
    }
    assert_eq!(rx.stream_id(), Some(6));
}

#[test]
fn an_older_stream_never_takes_over_and_a_newer_one_does() {
    let fb = format().frame_bytes();
    let mut rx = receiver(DriftMode::Slip);
    let mut out = vec![0u8; PERIOD * fb];
    let mut first = sender(10, at(0), key());
    let mut recording = Vec::new();
    let mut f = 0u64;
    for k in 0..100 {
        let t = at(f);
        for d in period_packets(&mut first, &capture(PERIOD, k), t) {
            rx.on_packet(&d, t);
            recording.push(d);
        }
        rx.render(&mut out, t);
        f += PERIOD as u64;
    }
    // The sender restarts (later session), with a new stream id.
    let mut second = sender(11, at(f), key());
    for k in 0..100 {
        let t = at(f);
        for d in period_packets(&mut second, &capture(PERIOD, 1000 + k), t) {
            rx.on_packet(&d, t);
        }
        // The attacker replays the first stream, fresh enough by the clock.
        let d = &recording[k as usize];
        assert_eq!(rx.on_packet(d, t), PacketOutcome::Replayed);
        rx.render(&mut out, t);
        f += PERIOD as u64;
    }
    assert_eq!(rx.stream_id(), Some(11));
    // Replays of the stream playing: taken sequence numbers, or behind the window.
    let mut replays = 0;
    let t = at(f);
    for d in period_packets(&mut second, &capture(PERIOD, 7), t) {
        rx.on_packet(&d, t);
        assert_eq!(rx.on_packet(&d, t), PacketOutcome::Replayed);
        replays += 1;
    }
    let c = rx.counters();
    assert_eq!(c.resyncs, 1, "{c:?}");
    assert_eq!(c.replayed_packets, 100 + replays, "{c:?}");
    assert_eq!(c.auth_failures + c.stale_packets, 0);
}

/// What an attacker sends between two legitimate datagrams.
#[derive(Clone, Debug)]
enum Attack {
    /// A legitimate datagram with one bit flipped (header, extension, payload or tag).
    Flip { back: usize, bit: usize },
    /// An earlier legitimate datagram again.
    Replay { back: usize },
    /// A copy cut short.
    Truncate { back: usize, len: usize },
    /// A packet made with another key (fresh, newer session).
    WrongKey { id: u32 },
    /// A packet without a tag.
    Untagged { id: u32 },
    /// A recording of an older stream with the right key.
    OlderStream { age_ms: u64 },
    /// A newer stream with the right key, but sent long ago by the wall clock.
    StaleStream { age_s: u64 },
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        (0..64usize, 0..12_000usize).prop_map(|(back, bit)| Attack::Flip { back, bit }),
        (0..400usize).prop_map(|back| Attack::Replay { back }),
        (0..64usize, 0..1500usize).prop_map(|(back, len)| Attack::Truncate { back, len }),
        any::<u32>().prop_map(|id| Attack::WrongKey { id }),
        any::<u32>().prop_map(|id| Attack::Untagged { id }),
        (1..5_000u64).prop_map(|age_ms| Attack::OlderStream { age_ms }),
        (11..100_000u64).prop_map(|age_s| Attack::StaleStream { age_s }),
    ]
}

struct Attacker {
    captured: Vec<u8>,
    older: Vec<Vec<u8>>,
}

impl Attacker {
    /// The datagram of `a`, given the legitimate ones so far, at time `t`.
    fn datagram(&self, a: &Attack, sent: &[Vec<u8>], t: u64) -> Option<Vec<u8>> {
        let pick = |back: usize| sent.len().checked_sub(back + 1).map(|i| sent[i].clone());
        Some(match *a {
            Attack::Flip { back, bit } => {
                let mut d = pick(back)?;
                let b = bit % (d.len() * 8);
                d[b / 8] ^= 1 << (b % 8);
                d
            }
            Attack::Replay { back } => pick(back)?,
            Attack::Truncate { back, len } => {
                let d = pick(back)?;
                d[..len % d.len()].to_vec()
            }
            Attack::WrongKey { id } => {
                let mut s = sender(id, t, Key::from_bytes([0xA5; auth::KEY_LEN]));
                period_packets(&mut s, &self.captured, t).pop()?
            }
            Attack::Untagged { id } => {
                let mut s = Sender::new(format(), PERIOD, id, 0).unwrap();
                let mut d = Vec::new();
                s.packetize(&self.captured, |h, p| d = [&h[..], p].concat());
                d
            }
            Attack::OlderStream { age_ms } => {
                let i = (age_ms as usize) % self.older.len();
                self.older[i].clone()
            }
            Attack::StaleStream { age_s } => {
                let then = t - age_s * 1_000_000_000;
                let mut s = sender(0xBAD, t + 1, key());
                period_packets(&mut s, &self.captured, then).pop()?
            }
        })
    }
}

fn run(mode: DriftMode, periods: usize, attacks: &[(usize, Attack)]) -> Result<(), TestCaseError> {
    let fb = format().frame_bytes();
    let mut clean = receiver(mode);
    let mut attacked = receiver(mode);
    let mut out_clean = vec![0u8; PERIOD * fb];
    let mut out_attacked = vec![0u8; PERIOD * fb];
    // An older stream, recorded before this one started.
    let mut old = sender(0x01D, at(0), key());
    let older = period_packets(&mut old, &capture(PERIOD * 8, 99), at(0));
    let attacker = Attacker {
        captured: capture(PERIOD, 5),
        older,
    };
    let mut tx = sender(0x600D, at(PERIOD as u64 * 8), key());
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut injected = 0u64;
    let mut next = 0;
    for k in 0..periods {
        let t = at(PERIOD as u64 * (8 + k as u64));
        for d in period_packets(&mut tx, &capture(PERIOD, k as u64), t) {
            clean.on_packet(&d, t);
            attacked.on_packet(&d, t);
            sent.push(d);
        }
        while next < attacks.len() && attacks[next].0 <= k {
            if let Some(d) = attacker.datagram(&attacks[next].1, &sent, t) {
                let o = attacked.on_packet(&d, t);
                prop_assert!(
                    matches!(
                        o,
                        PacketOutcome::Unauthenticated
                            | PacketOutcome::Replayed
                            | PacketOutcome::Stale
                            | PacketOutcome::Invalid(_)
                    ),
                    "{:?} was {:?}",
                    attacks[next].1,
                    o
                );
                injected += 1;
            }
            next += 1;
        }
        clean.render(&mut out_clean, t);
        attacked.render(&mut out_attacked, t);
        prop_assert!(out_clean == out_attacked, "output differs in period {}", k);
    }
    let (c, a) = (clean.counters(), attacked.counters());
    prop_assert_eq!(a.gaps, c.gaps);
    prop_assert_eq!(a.packets_received, c.packets_received);
    prop_assert_eq!(a.resyncs, 0);
    prop_assert_eq!(
        a.auth_failures + a.replayed_packets + a.stale_packets + a.invalid_packets,
        injected
    );
    // The datagram header of every legitimate packet is intact: a sanity check of the test.
    prop_assert!(sent.iter().all(|d| PacketHeader::parse(d).is_ok()));
    prop_assert!(
        sent.iter()
            .all(|d| AuthExt::parse(&d[HEADER_LEN..HEADER_LEN + 16]).is_some())
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn attacks_never_change_what_is_played(
        mode in prop_oneof![Just(DriftMode::Off), Just(DriftMode::Slip), Just(DriftMode::Resample)],
        mut attacks in proptest::collection::vec((0..300usize, attack()), 0..200),
    ) {
        attacks.sort_by_key(|a| a.0);
        run(mode, 300, &attacks)?;
    }
}
