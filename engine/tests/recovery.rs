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
