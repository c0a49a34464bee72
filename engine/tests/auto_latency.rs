//! `latency = auto` on the simulated rig: the target follows the network's jitter, down when
//! the network is calm and up when it gets worse, and moving it never makes a gap (the level
//! follows by slips or resampling, paced by the drift loop's feed-forward).

use engine::alloc_count::CountingAlloc;
use engine::receiver::DriftMode;
use engine::sim::net::{JitterRamp, NetConfig};
use engine::sim::{SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

mod common;
use common::{mean_latency, stereo48};

fn assert_no_gaps(r: &SimReport, what: &str) {
    assert_eq!(r.analyzer.gaps, 0, "{what}: heard {:?}", r.gaps.first());
    assert_eq!(r.engine.gaps, 0, "{what}: engine {:?}", r.engine);
    assert_eq!(r.allocations_steady_state, Some(0), "{what}");
    assert_eq!(r.frees_steady_state, Some(0), "{what}");
}

#[test]
fn on_a_calm_network_the_target_comes_down_without_a_gap() {
    for mode in [DriftMode::Slip, DriftMode::Resample] {
        let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
        cfg.drift_mode = mode;
        cfg.drift_ppm = 150.0;
        cfg.latency_ms = 60.0;
        cfg.auto_latency = Some((10.0, 120.0));
        cfg.net = NetConfig {
            jitter_ms: 3.0,
            ..NetConfig::default()
        };
        let r = run(cfg, None).unwrap();
        assert_no_gaps(&r, &format!("{mode}"));
        let early = mean_latency(&r, 0.0, 10.0);
        let late = mean_latency(&r, 540.0, 600.0);
        assert!(
            early > 55.0,
            "{mode}: starts at its initial target: {early}"
        );
        // floor (2 periods + the device's 2) 21.3 ms + 1.25 × 3 ms + 1 ms + 0.5 ms network.
        assert!((24.0..30.0).contains(&late), "{mode}: settled at {late} ms");
        let target_ms = r.engine.target_frames / 48.0;
        assert!(
            (24.0..30.0).contains(&target_ms),
            "{mode}: target {target_ms}"
        );
    }
}

#[test]
fn when_the_jitter_grows_the_target_rises_ahead_of_it_without_a_gap() {
    let mut cfg = SimConfig::new(stereo48(), 256, 900.0);
    cfg.drift_ppm = -300.0;
    cfg.latency_ms = 25.0;
    cfg.auto_latency = Some((10.0, 150.0));
    // From 1 ms to 30 ms of jitter over five minutes, then held.
    cfg.net = NetConfig {
        jitter_ms: 1.0,
        jitter_ramp: Some(JitterRamp {
            from_s: 120.0,
            to_s: 420.0,
            to_ms: 30.0,
        }),
        ..NetConfig::default()
    };
    let r = run(cfg, None).unwrap();
    assert_no_gaps(&r, "rising jitter");
    let before = mean_latency(&r, 60.0, 120.0);
    let after = mean_latency(&r, 800.0, 900.0);
    assert!(before < 26.0, "calm: {before}");
    // 21.3 + 1.25 × 30 + 1 = 59.8 ms target, + 0.5 ms delay + about half the jitter.
    assert!((55.0..80.0).contains(&after), "after: {after}");
}

#[test]
fn the_bounds_hold() {
    let mut cfg = SimConfig::new(stereo48(), 256, 300.0);
    cfg.latency_ms = 30.0;
    cfg.auto_latency = Some((28.0, 40.0));
    cfg.net = NetConfig {
        jitter_ms: 0.0,
        ..NetConfig::default()
    };
    let r = run(cfg.clone(), None).unwrap();
    assert_no_gaps(&r, "min bound");
    let t = r.engine.target_frames / 48.0;
    assert!((27.9..28.1).contains(&t), "held at the lower bound: {t}");

    cfg.net.jitter_ms = 40.0;
    cfg.latency_ms = 40.0;
    let r = run(cfg, None).unwrap();
    let t = r.engine.target_frames / 48.0;
    assert!((39.9..40.1).contains(&t), "held at the upper bound: {t}");
}
