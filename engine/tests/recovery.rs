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
                .on_nack(&nack[..n], |d| resent.push(d.to_vec()))
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
