//! Properties of the NACK codec: parsing is total, emit and parse are inverse, and the
//! sender's history answers any NACK with work bounded by its size: each packet at most once
//! per NACK, a bounded number of times in all, and no more bytes than its rate cap allows;
//! with a key, only sealed NACKs never seen before are answered.

use engine::auth::{KEY_LEN, Key};
use engine::nack::{
    MAX_NACK_LEN, MAX_NACK_RUNS, NACK_AUTH_LEN, Nack, NackError, NackRun, emit_nack,
    emit_nack_round, is_nack, seal_nack,
};
use engine::recovery::{ResendLimits, RetransmitHistory};
use engine::wire::Packet;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// Bytes of each packet the test histories keep.
const PACKET_LEN: usize = 40;

/// A history of `slots` packets of stream 1 that recorded `packets` packets from `start` on.
fn filled(slots: usize, start: u32, packets: u32) -> RetransmitHistory {
    let mut h = RetransmitHistory::new(slots);
    record(&mut h, start, packets);
    h
}

fn record(h: &mut RetransmitHistory, start: u32, packets: u32) {
    let mut header = [0u8; 32];
    header[4..8].copy_from_slice(&1u32.to_be_bytes());
    for k in 0..packets {
        header[8..12].copy_from_slice(&start.wrapping_add(k).to_be_bytes());
        h.record(&header, &[k as u8; PACKET_LEN - 32]);
    }
}

/// The sequence number of a datagram sent again.
fn seq_of(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[8], d[9], d[10], d[11]])
}

/// A history of `slots` packets whose rate cap never refuses (to look at the other bounds
/// alone), filled as [`filled`] does.
fn uncapped(slots: usize, start: u32, packets: u32) -> RetransmitHistory {
    let h = RetransmitHistory::new(slots);
    let limits = ResendLimits {
        rate_percent: 10_000,
        burst_packets: 1 << 20,
        ..h.limits()
    };
    let mut h = h.with_limits(limits);
    record(&mut h, start, packets);
    h
}

fn key() -> Key {
    Key::from_bytes([0x5A; KEY_LEN])
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn run() -> impl Strategy<Value = NackRun> {
    (
        prop_oneof![any::<u32>(), (u32::MAX - 64)..=u32::MAX, 0u32..64],
        prop_oneof![1u16..=8, 1..=u16::MAX],
    )
        .prop_map(|(first, count)| NackRun { first, count })
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn any_bytes_parse_or_fail_with_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match Nack::new_checked(&bytes[..]) {
            Ok(n) => {
                let runs: Vec<NackRun> = n.runs().collect();
                prop_assert!(!runs.is_empty() && runs.len() <= MAX_NACK_RUNS);
                prop_assert!(runs.iter().all(|r| r.count > 0));
                prop_assert!(is_nack(&bytes));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // A NACK is never taken for a data packet.
        if is_nack(&bytes) {
            prop_assert!(Packet::new_checked(&bytes[..]).is_err());
        }
    }

    #[test]
    fn emit_then_parse_round_trips(stream_id in any::<u32>(), runs in prop::collection::vec(run(), 1..=MAX_NACK_RUNS)) {
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(stream_id, &runs, &mut buf).unwrap();
        let nack = Nack::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(nack.stream_id(), stream_id);
        prop_assert_eq!(nack.runs().collect::<Vec<_>>(), runs);
        // Any cut or extension is a length error, never a panic.
        for cut in 0..n {
            prop_assert!(Nack::new_checked(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn corrupted_nacks_never_panic(runs in prop::collection::vec(run(), 1..=4), at in 0usize..40, byte in any::<u8>()) {
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(7, &runs, &mut buf).unwrap();
        let mut b = buf[..n].to_vec();
        let i = at % n;
        b[i] = byte;
        let _ = Nack::new_checked(&b[..]).map(|x| x.runs().count());
    }

    #[test]
    fn the_history_answers_any_nack_within_its_size(stream_id in 0u32..3, runs in prop::collection::vec(run(), 1..=MAX_NACK_RUNS), start in any::<u32>()) {
        let mut h = RetransmitHistory::new(16);
        let mut header = [0u8; 32];
        header[4..8].copy_from_slice(&1u32.to_be_bytes());
        for k in 0..40u32 {
            header[8..12].copy_from_slice(&start.wrapping_add(k).to_be_bytes());
            h.record(&header, &[k as u8; 8]);
        }
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(stream_id, &runs, &mut buf).unwrap();
        let mut sent = 0usize;
        let r = h.on_nack(0, &buf[..n], |d| {
            sent += 1;
            assert_eq!(d.len(), 40);
        });
        prop_assert_eq!(r, Ok(sent));
        prop_assert!(sent <= 16 * runs.len());
        // Overlapping runs are merged: the history's size, not per run.
        prop_assert!(sent <= 16);
        if stream_id != 1 {
            prop_assert_eq!(sent, 0);
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn overlapping_runs_resend_each_packet_once(
        runs in prop::collection::vec((0u32..80, 1u16..80), 1..=MAX_NACK_RUNS),
        start in any::<u32>(),
        round in any::<u16>(),
    ) {
        // 48 packets recorded, the last 32 kept: [start + 16, start + 47].
        let mut h = uncapped(32, start, 48);
        let runs: Vec<NackRun> = runs
            .into_iter()
            .map(|(first, count)| NackRun { first: start.wrapping_add(first), count })
            .collect();
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack_round(1, round, &runs, &mut buf).unwrap();
        let mut sent = Vec::new();
        let r = h.on_nack(0, &buf[..n], |d| sent.push(seq_of(d)));
        prop_assert_eq!(r, Ok(sent.len()));
        let unique: HashSet<u32> = sent.iter().copied().collect();
        prop_assert_eq!(unique.len(), sent.len(), "a packet sent twice for one NACK: {:?}", sent);
        // Exactly the kept packets some run asks for.
        let wanted: HashSet<u32> = runs
            .iter()
            .flat_map(|r| r.seqs())
            .filter(|s| (16..48).contains(&s.wrapping_sub(start)))
            .collect();
        prop_assert_eq!(unique, wanted);
    }

    #[test]
    fn repeated_nacks_resend_each_packet_a_bounded_number_of_times(
        nacks in prop::collection::vec(
            (prop::collection::vec((0u32..40, 1u16..=u16::MAX), 1..=MAX_NACK_RUNS), 0u16..6),
            1..40,
        ),
        start in any::<u32>(),
    ) {
        let mut h = uncapped(32, start, 40);
        let limits = h.limits();
        let mut times: HashMap<u32, u32> = HashMap::new();
        let mut rounds: HashMap<u32, HashSet<u16>> = HashMap::new();
        // Per packet: the round of its last answer and the answers since that round began.
        let mut streak: HashMap<u32, (u16, u32)> = HashMap::new();
        let mut buf = [0u8; MAX_NACK_LEN];
        for (runs, round) in nacks {
            let runs: Vec<NackRun> = runs
                .into_iter()
                .map(|(first, count)| NackRun { first: start.wrapping_add(first), count })
                .collect();
            let n = emit_nack_round(1, round, &runs, &mut buf).unwrap();
            let mut sent = Vec::new();
            h.on_nack(0, &buf[..n], |d| sent.push(seq_of(d))).unwrap();
            for s in sent {
                *times.entry(s).or_default() += 1;
                let e = streak.entry(s).or_insert((round, 0));
                if round == 0 || e.0 != round {
                    *e = (round, 0);
                }
                e.1 += 1;
                prop_assert!(
                    round == 0 || e.1 <= limits.max_copies as u32,
                    "seq {} answered {} times in round {}", s, e.1, round
                );
                prop_assert!(round != 0 || e.1 == 1);
                if round != 0 {
                    rounds.entry(s).or_default().insert(round);
                }
            }
        }
        for (s, t) in &times {
            prop_assert!(*t <= limits.max_resends(), "seq {} sent {} times", s, t);
        }
        for (s, r) in &rounds {
            prop_assert!(r.len() <= limits.max_requests as usize, "seq {} in rounds {:?}", s, r);
        }
    }

    #[test]
    fn the_rate_cap_holds_whatever_the_nacks(
        steps in prop::collection::vec((0u32..4, 1usize..=8, any::<u16>()), 1..200),
    ) {
        // A flood: every step records a few packets, then NACKs of whole-history runs arrive.
        let mut h = RetransmitHistory::new(48);
        let limits = h.limits();
        let big = [NackRun { first: 0, count: u16::MAX }; MAX_NACK_RUNS];
        let mut buf = [0u8; MAX_NACK_LEN];
        let (mut recorded, mut resent, mut next) = (0u64, 0u64, 0u32);
        for (packets, nacks, round) in steps {
            record(&mut h, next, packets);
            next += packets;
            recorded += packets as u64 * PACKET_LEN as u64;
            for i in 0..nacks {
                let n = emit_nack_round(1, round.wrapping_add(i as u16), &big, &mut buf).unwrap();
                h.on_nack(0, &buf[..n], |d| resent += d.len() as u64).unwrap();
            }
            let burst = limits.burst_packets as u64 * PACKET_LEN as u64;
            prop_assert!(
                resent <= burst + recorded * limits.rate_percent as u64 / 100,
                "{} bytes sent again for {} recorded", resent, recorded
            );
        }
        let c = h.counters();
        prop_assert_eq!(c.retransmit_bytes, resent);
    }

    #[test]
    fn sealed_nacks_parse_and_verify_totally(
        runs in prop::collection::vec(run(), 1..=MAX_NACK_RUNS),
        nonce in any::<u64>(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let mut buf = [0u8; MAX_NACK_LEN];
        emit_nack_round(3, 9, &runs, &mut buf).unwrap();
        let n = seal_nack(&key(), nonce, &mut buf).unwrap();
        let nack = Nack::new_checked(&buf[..n]).unwrap();
        prop_assert!(nack.is_authentic(&key()));
        prop_assert_eq!(nack.nonce(), Some(nonce));
        prop_assert_eq!(nack.runs().collect::<Vec<_>>(), runs);
        // Changed or cut anywhere: an error or a NACK that is not authentic, never a panic.
        let mut b = buf;
        let i = at % n;
        if b[i] != byte {
            b[i] = byte;
            if let Ok(x) = Nack::new_checked(&b[..n]) {
                prop_assert!(!x.is_authentic(&key()));
            }
        }
        let c = cut % n;
        if let Ok(x) = Nack::new_checked(&buf[..c]) {
            prop_assert!(!x.is_authentic(&key()) && c == n - NACK_AUTH_LEN);
        }
    }
}

#[test]
fn thirty_two_whole_history_runs_resend_each_packet_once() {
    let runs = [NackRun {
        first: 1000,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let mut buf = [0u8; MAX_NACK_LEN];
    let n = emit_nack(1, &runs, &mut buf).unwrap();
    assert_eq!(n, 204, "the review's 204-byte NACK");
    // Without a rate cap: each of the 51 packets kept, once.
    let mut h = uncapped(51, 1000, 200);
    let mut sent = Vec::new();
    assert_eq!(h.on_nack(0, &buf[..n], |d| sent.push(seq_of(d))), Ok(51));
    sent.sort_unstable();
    assert_eq!(
        sent,
        (1149..1200).collect::<Vec<u32>>(),
        "each kept packet once"
    );
    // The same NACK again and again: every packet at most max_requests times in all (an
    // unnumbered datagram is a request of its own), then nothing.
    let max = h.limits().max_requests as usize;
    let mut total = sent.len();
    for _ in 0..20 {
        total += h.on_nack(0, &buf[..n], |_| {}).unwrap();
    }
    assert_eq!(total, 51 * max);
    assert_eq!(h.counters().resends_over_limit, 51 * (20 + 1 - max as u64));
    assert_eq!(h.on_nack(0, &buf[..n], |_| panic!("answered again")), Ok(0));
    // With the default cap, one answer sends half the history at most, each packet once.
    let mut h = filled(51, 1000, 200);
    let mut sent = HashSet::new();
    let got = h
        .on_nack(0, &buf[..n], |d| assert!(sent.insert(seq_of(d))))
        .unwrap();
    assert_eq!(got, h.limits().burst_packets as usize);
    assert_eq!(got, 25);
    assert_eq!(h.counters().resends_capped, 51 - 25);
}

#[test]
fn the_copies_of_a_request_are_answered_up_to_the_limit_and_requests_are_counted() {
    let mut h = uncapped(32, 0, 32);
    let l = h.limits();
    let runs = [NackRun { first: 5, count: 2 }];
    let mut buf = [0u8; MAX_NACK_LEN];
    let mut answers = 0;
    for round in 1..=l.max_requests as u16 + 2 {
        let n = emit_nack_round(1, round, &runs, &mut buf).unwrap();
        // Five copies of each request; the first max_copies are answered.
        for copy in 0..5 {
            let got = h.on_nack(0, &buf[..n], |_| {}).unwrap();
            let expected = if round <= l.max_requests as u16 && copy < l.max_copies {
                2
            } else {
                0
            };
            assert_eq!(got, expected, "round {round} copy {copy}");
            answers += got;
        }
    }
    assert_eq!(answers, 2 * l.max_resends() as usize);
    // A packet recorded again (the slot reused) starts afresh.
    record(&mut h, 32, 10);
    let n = emit_nack_round(
        1,
        1,
        &[NackRun {
            first: 37,
            count: 1,
        }],
        &mut buf,
    )
    .unwrap();
    assert_eq!(h.on_nack(0, &buf[..n], |_| {}), Ok(1));
}

#[test]
fn the_rate_cap_refuses_counts_and_reports_once_a_second() {
    let mut h = filled(51, 0, 51);
    let l = h.limits();
    assert_eq!(l.rate_percent, 50);
    let big = [NackRun {
        first: 0,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let mut buf = [0u8; MAX_NACK_LEN];
    let mut resent = 0u64;
    let mut events = Vec::new();
    for i in 0..200u64 {
        // A NACK every 10 ms, each a new request; a packet recorded every 5 ms.
        record(&mut h, 51 + 2 * i as u32, 2);
        let n = emit_nack_round(1, i as u16 + 1, &big, &mut buf).unwrap();
        h.on_nack(i * 10_000_000, &buf[..n], |d| resent += d.len() as u64)
            .unwrap();
        if let Some(r) = h.poll_event() {
            events.push(r);
        }
    }
    let recorded = (51 + 400) * PACKET_LEN as u64;
    let burst = l.burst_packets as u64 * PACKET_LEN as u64;
    assert!(
        resent <= burst + recorded / 2,
        "{resent} > {burst} + {recorded} / 2"
    );
    let c = *h.counters();
    assert!(c.resends_capped > 0, "{c:?}");
    // Reported through events: at most one a second, and every refusal but the last second's.
    assert!((1..=2).contains(&events.len()), "{events:?}");
    let reported: u64 = events
        .iter()
        .map(|r| match r.event {
            engine::rtlog::Event::ResendsCapped { refused, percent } => {
                assert_eq!(percent, 50);
                refused as u64
            }
            e => panic!("{e:?}"),
        })
        .sum();
    assert!(reported > 0 && reported <= c.resends_capped);
    assert!(
        events
            .windows(2)
            .all(|w| w[1].t_ns - w[0].t_ns >= 1_000_000_000)
    );
}

#[test]
fn with_a_key_only_sealed_new_nacks_are_answered() {
    let mut h = filled(32, 0, 32).with_auth(key());
    let runs = [NackRun { first: 3, count: 2 }];
    let mut buf = [0u8; MAX_NACK_LEN];
    // Untagged: refused and counted.
    let n = emit_nack_round(1, 1, &runs, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..n], |_| panic!("untagged")), Ok(0));
    assert_eq!(h.counters().nack_auth_failures, 1);
    // Sealed with another key, or changed after sealing: refused and counted.
    let m = seal_nack(&Key::from_bytes([1; KEY_LEN]), 100, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| panic!("wrong key")), Ok(0));
    let m = seal_nack(&key(), 100, &mut buf).unwrap();
    let mut forged = buf;
    forged[13] ^= 1;
    assert_eq!(h.on_nack(0, &forged[..m], |_| panic!("forged")), Ok(0));
    assert_eq!(h.counters().nack_auth_failures, 3);
    // The valid one is answered.
    let mut sent = Vec::new();
    assert_eq!(h.on_nack(0, &buf[..m], |d| sent.push(seq_of(d))), Ok(2));
    assert_eq!(sent, vec![3, 4]);
    // Replayed: refused and counted, whatever its round or runs say.
    assert_eq!(h.on_nack(0, &buf[..m], |_| panic!("replayed")), Ok(0));
    assert_eq!(h.counters().nack_replays, 1);
    // Another copy (a nonce of its own), then a later request: answered.
    let m = seal_nack(&key(), 101, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| {}), Ok(2));
    emit_nack_round(1, 2, &runs, &mut buf).unwrap();
    let m = seal_nack(&key(), 150, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| {}), Ok(2));
    // An old one that was never seen, but behind the replay window: refused.
    emit_nack_round(1, 3, &runs, &mut buf).unwrap();
    let m = seal_nack(&key(), 50, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| panic!("too old")), Ok(0));
    let c = *h.counters();
    assert_eq!((c.nack_auth_failures, c.nack_replays), (3, 2), "{c:?}");
    assert_eq!(c.nacks_received, 3, "{c:?}");
    // A new stream forgets the nonces: its first NACK is taken whatever its nonce.
    let mut header = [0u8; 32];
    header[4..8].copy_from_slice(&2u32.to_be_bytes());
    h.record(&header, &[0; 8]);
    emit_nack_round(2, 1, &[NackRun { first: 0, count: 1 }], &mut buf).unwrap();
    let m = seal_nack(&key(), 7, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| {}), Ok(1));
}

#[test]
fn without_a_key_sealed_and_unnumbered_nacks_are_answered_as_before() {
    // A receiver with a key talking to a sender without one, and a receiver of an earlier
    // version (no round): both still answered.
    let mut h = filled(16, 0, 16);
    let mut buf = [0u8; MAX_NACK_LEN];
    emit_nack_round(1, 4, &[NackRun { first: 2, count: 3 }], &mut buf).unwrap();
    let m = seal_nack(&key(), 1, &mut buf).unwrap();
    assert_eq!(h.on_nack(0, &buf[..m], |_| {}), Ok(3));
    let n = emit_nack(1, &[NackRun { first: 8, count: 1 }], &mut buf).unwrap();
    assert_eq!(&buf[8..12], &[0; 4], "flags, reserved and round all zero");
    assert_eq!(h.on_nack(0, &buf[..n], |_| {}), Ok(1));
}

#[test]
fn errors_name_what_is_wrong() {
    assert_eq!(
        NackError::LengthMismatch {
            expected: 18,
            actual: 20
        }
        .to_string(),
        "NACK length 20, its run count announces 18"
    );
}
