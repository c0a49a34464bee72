//! Loss recovery on the simulated rig: the acceptance scenario (1 % loss, five bursts of three
//! packets a minute, 5 ms jitter both ways, 40 ms latency) with and without NACKs.

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::recovery::RecoveryMode;
use engine::sim::net::NetConfig;
use engine::sim::{SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn scenario(recovery: RecoveryMode) -> SimReport {
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let mut cfg = SimConfig::new(f, 256, 600.0);
    cfg.latency_ms = 40.0;
    cfg.recovery = recovery;
    cfg.net = NetConfig {
        loss: 0.01,
        bursts_per_min: 5.0,
        burst_len: 3,
        jitter_ms: 5.0,
        ..NetConfig::default()
    };
    run(cfg, None).expect("valid simulation")
}

#[test]
fn nacks_recover_loss_and_bursts_inside_40_ms() {
    let off = scenario(RecoveryMode::Off);
    let on = scenario(RecoveryMode::Nack);
    // Without recovery every loss is heard.
    assert!(off.analyzer.gaps > 500, "off: {} gaps", off.analyzer.gaps);
    assert_eq!(off.recovery.retransmits, 0);
    // With it none is, and both views agree.
    assert_eq!(
        on.analyzer.gaps,
        0,
        "first gaps: {:?}",
        &on.gaps[..on.gaps.len().min(5)]
    );
    assert_eq!(on.engine.gaps, 0);
    assert_eq!(on.engine.lost_packets, 0);
    assert!(on.engine.recovered_packets > 1000, "{:?}", on.engine);
    assert_eq!(on.engine.recovered_packets, on.recovery.recovered);
    // The price: a few percent of extra bytes, and nothing allocated.
    let overhead = on.recovery.overhead_percent();
    assert!(overhead > 0.0 && overhead < 8.0, "overhead {overhead} %");
    assert_eq!(on.allocations_steady_state, Some(0));
    assert_eq!(on.frees_steady_state, Some(0));
    assert!(
        on.recovery.nacks_delivered > 0
            && on.recovery.nacks_delivered <= on.recovery.nacks_sent * 3
    );
}

#[test]
fn a_clean_link_asks_for_nothing() {
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let mut cfg = SimConfig::new(f, 256, 120.0);
    cfg.recovery = RecoveryMode::Nack;
    cfg.latency_ms = 40.0;
    let r = run(cfg, None).unwrap();
    assert_eq!(r.analyzer.gaps, 0);
    assert_eq!(r.recovery.nacks_sent, 0);
    assert_eq!(r.recovery.retransmits, 0);
}

/// With a key, the history keeps the tagged datagram byte for byte: a packet sent again passes
/// the receiver's authentication and fills the hole (and a second copy is dropped as a replay).
#[test]
fn resent_packets_of_a_keyed_stream_are_authentic() {
    use engine::auth::{KEY_LEN, Key};
    use engine::nack::MAX_NACK_LEN;
    use engine::receiver::{Receiver, ReceiverConfig};
    use engine::recovery::RetransmitHistory;
    use engine::sender::Sender;
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let key = Key::from_bytes([9; KEY_LEN]);
    let t0 = 1_000_000_000_000u64;
    let mut rx = Receiver::new(ReceiverConfig::new(f, 256, 40.0))
        .unwrap()
        .with_auth(key.clone());
    let mut tx = Sender::new(f, 256, 4, 10).unwrap().with_auth(key, t0);
    let mut history = RetransmitHistory::for_span(48_000, tx.frames_per_packet(), 250.0);
    let capture = vec![7u8; 256 * 4];
    let mut out = vec![0u8; 256 * 4];
    let mut dgram = Vec::new();
    let mut nack = [0u8; MAX_NACK_LEN];
    let period_ns = 256 * 1_000_000_000 / 48_000;
    for k in 0..400u64 {
        let t = t0 + k * period_ns;
        tx.set_wall_clock(t);
        tx.packetize_tagged(&capture, |head, payload, tag| {
            history.record_parts(head, payload, tag);
            // Every 50th packet is lost on the way.
            if k % 50 != 25 {
                dgram.clear();
                dgram.extend_from_slice(head);
                dgram.extend_from_slice(payload);
                dgram.extend_from_slice(tag);
                rx.on_packet(&dgram, t);
            }
        });
        let n = rx.poll_nack(t + 1_000_000, &mut nack);
        if n > 0 {
            let mut resent: Vec<Vec<u8>> = Vec::new();
            history
                .on_nack(t + 1_500_000, &nack[..n], |d| resent.push(d.to_vec()))
                .unwrap();
            for d in &resent {
                rx.on_packet(d, t + 2_000_000);
                // The same datagram again: a replay now.
                rx.on_packet(d, t + 2_000_000);
            }
        }
        rx.render(&mut out, t);
    }
    let c = rx.counters();
    assert_eq!(c.auth_failures, 0, "{c:?}");
    assert!(c.recovered_packets >= 7, "{c:?}");
    assert_eq!(c.lost_packets, 0, "{c:?}");
    assert_eq!(c.gaps, 0, "{c:?}");
    assert!(c.replayed_packets >= 7, "{c:?}");
}

/// With a key on both ends: the receiver seals every copy of its NACK with a nonce of its own,
/// the sender's history answers each copy of the request and refuses a replayed copy, a
/// forged one and an unsealed one, counting each.
#[test]
fn keyed_nacks_are_answered_and_replays_and_forgeries_refused() {
    use engine::auth::{KEY_LEN, Key};
    use engine::nack::{MAX_NACK_LEN, Nack, NackRun, emit_nack_round};
    use engine::receiver::{Receiver, ReceiverConfig};
    use engine::recovery::RetransmitHistory;
    use engine::sender::Sender;
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let key = Key::from_bytes([0x21; KEY_LEN]);
    let t0 = 1_700_000_000_000_000_000u64;
    let mut rx = Receiver::new(ReceiverConfig::new(f, 256, 40.0))
        .unwrap()
        .with_auth(key.clone());
    let mut tx = Sender::new(f, 256, 77, 0)
        .unwrap()
        .with_auth(key.clone(), t0);
    let mut history =
        RetransmitHistory::for_span(48_000, tx.frames_per_packet(), 250.0).with_auth(key.clone());
    let capture = vec![3u8; 256 * 4];
    let mut out = vec![0u8; 256 * 4];
    let mut nack = [0u8; MAX_NACK_LEN];
    let period_ns = 256 * 1_000_000_000 / 48_000;
    let mut copies: Vec<Vec<u8>> = Vec::new();
    let mut answered = 0;
    for k in 0..40u64 {
        let t = t0 + k * period_ns;
        tx.set_wall_clock(t);
        tx.packetize_tagged(&capture, |head, payload, tag| {
            history.record_parts(head, payload, tag);
            if k != 20 {
                rx.on_packet(&[head, payload, tag].concat(), t);
            }
        });
        let mut these = Vec::new();
        rx.poll_nack_copies(t + 1_000_000, &mut nack, |d| these.push(d.to_vec()));
        for d in &these {
            answered += history
                .on_nack(t + 1_500_000, d, |p| {
                    rx.on_packet(p, t + 2_000_000);
                })
                .unwrap();
        }
        copies.extend(these);
        rx.render(&mut out, t);
    }
    assert_eq!(copies.len(), 3, "one request, three copies");
    let nonces: Vec<u64> = copies
        .iter()
        .map(|d| Nack::new_checked(&d[..]).unwrap().nonce().unwrap())
        .collect();
    assert!(nonces[0] < nonces[1] && nonces[1] < nonces[2], "{nonces:?}");
    assert!(nonces[0] >= t0, "started from the wall clock: {nonces:?}");
    let rounds: Vec<u16> = copies
        .iter()
        .map(|d| Nack::new_checked(&d[..]).unwrap().round())
        .collect();
    assert!(rounds.iter().all(|&r| r == rounds[0] && r != 0));
    assert_eq!(answered, 3, "each copy of the request answered");
    assert_eq!(rx.counters().recovered_packets, 1);
    assert_eq!(rx.counters().lost_packets, 0);
    let before = *history.counters();
    // Replayed copies, a forged copy and an unsealed NACK: refused and counted.
    let t = t0 + 41 * period_ns;
    for d in &copies {
        assert_eq!(history.on_nack(t, d, |_| panic!("replay")), Ok(0));
    }
    let mut forged = copies[0].clone();
    forged[12 + 3] ^= 0x01;
    assert_eq!(history.on_nack(t, &forged, |_| panic!("forged")), Ok(0));
    let n = emit_nack_round(
        77,
        9,
        &[NackRun {
            first: 20,
            count: 1,
        }],
        &mut nack,
    )
    .unwrap();
    assert_eq!(
        history.on_nack(t, &nack[..n], |_| panic!("unsealed")),
        Ok(0)
    );
    let c = history.counters();
    assert_eq!(c.nack_replays - before.nack_replays, 3, "{c:?}");
    assert_eq!(c.nack_auth_failures - before.nack_auth_failures, 2, "{c:?}");
    assert_eq!(c.retransmits, before.retransmits);
}
