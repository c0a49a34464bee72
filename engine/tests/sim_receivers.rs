//! Several receivers of one stream on the simulated rig, and the skew between them: when each
//! one's DAC puts out the same frame, in virtual time.

use engine::alloc_count::CountingAlloc;
use engine::receiver::DriftMode;
use engine::sim::{SimConfig, SimReceiver, SimReport};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

mod common;
use common::{sim, skew, stereo48};

/// Every receiver played without a gap, and nothing was allocated in the loop.
fn assert_clean(r: &SimReport, what: &str) {
    for (i, x) in r.receivers.iter().enumerate() {
        assert_eq!(x.analyzer.gaps, 0, "{what}: receiver {i} gaps {:?}", x.gaps);
        assert_eq!(x.engine.gaps, 0, "{what}: receiver {i}");
        assert_eq!(
            x.analyzer.in_sync + x.analyzer.leading_frames,
            x.analyzer.frames,
            "{what}: receiver {i}"
        );
    }
    assert_eq!(r.allocations_steady_state, Some(0), "{what}");
    assert_eq!(r.frees_steady_state, Some(0), "{what}");
}

#[test]
fn identical_receivers_play_every_frame_at_the_same_instant() {
    for mode in [DriftMode::Resample, DriftMode::Slip, DriftMode::Off] {
        let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
        cfg.drift_ppm = if mode == DriftMode::Off { 0.0 } else { 80.0 };
        cfg.drift_mode = mode;
        cfg.receivers = vec![SimReceiver::default(); 2];
        let r = sim(cfg);
        let what = format!("{mode}");
        assert_clean(&r, &what);
        let s = skew(&r);
        // Every frame after settling, of ten minutes, less the last latency's worth.
        let frames = 540.0 * 48_000.0;
        assert!(
            s.frames_compared as f64 > frames * 0.99,
            "{what}: {}",
            s.frames_compared
        );
        assert_eq!(s.late_frames, 0, "{what}");
        let one = &s.per_receiver[1];
        assert_eq!(one.abs.count(), s.frames_compared, "{what}");
        assert_eq!((one.min_us, one.max_us), (0.0, 0.0), "{what}");
        assert_eq!(s.spread.max_us(), 0.0, "{what}");
        assert_eq!(s.spread.percentile_us(0.99), 0.0, "{what}");
        // The series covers the run.
        assert!(s.series.len() > 1000, "{what}: {}", s.series.len());
    }
}

#[test]
fn a_longer_link_plays_later_by_its_delay_give_or_take_the_buffer() {
    let delay_ms = 0.5;
    // Without drift correction every frame is played as it was captured, so the skew is
    // whole frames and never changes: the longer link's packets arrive 1 ms later, so the
    // receiver behind it starts no earlier, and at most one period later than that.
    let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
    cfg.drift_mode = DriftMode::Off;
    cfg.net.delay_ms = delay_ms;
    let far = SimReceiver {
        delay_ms: Some(delay_ms + 1.0),
        ..SimReceiver::default()
    };
    cfg.receivers = vec![SimReceiver::default(), far];
    let r = sim(cfg);
    assert_clean(&r, "off");
    assert_eq!(
        r.receivers[0].analyzer.bit_exact,
        r.receivers[0].analyzer.in_sync
    );
    let one = &skew(&r).per_receiver[1];
    // Constant, to the arithmetic's rounding of instants some 10^11 ns from the start.
    assert!(
        one.max_us - one.min_us < 1e-3,
        "constant skew: {} .. {} µs",
        one.min_us,
        one.max_us
    );
    let frames = one.max_us * 48e-3;
    assert!(
        (frames - frames.round()).abs() < 1e-6,
        "whole frames: {frames}"
    );
    let period_us = 256.0 / 48e-3;
    assert!(
        one.max_us >= 1000.0 - 1e-3 && one.max_us <= 1000.0 + period_us,
        "{} µs",
        one.max_us
    );
    // The analyzer's latency says the same, to its 10 µs histogram step.
    let lat = r.receivers[1].latency_p50_ms - r.receivers[0].latency_p50_ms;
    assert!((lat * 1000.0 - one.max_us).abs() <= 10.0 + 1e-6, "{lat} ms");

    // With drift correction each receiver steers its buffer to the same level, so the one
    // behind the longer link plays 1 ms later on average; single frames read up to a frame
    // off, as the resampled output rounded to 16 bits names its position to a frame.
    let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
    cfg.drift_ppm = 50.0;
    cfg.net.delay_ms = delay_ms;
    cfg.receivers = vec![SimReceiver::default(), far];
    let r = sim(cfg);
    assert_clean(&r, "resample");
    let s = skew(&r);
    let one = &s.per_receiver[1];
    assert!(
        (one.mean_us() - 1000.0).abs() < 1.0,
        "mean {} µs",
        one.mean_us()
    );
    assert!(
        (one.abs.percentile_us(0.99) - 1000.0).abs() < 2.0,
        "p99 {} µs",
        one.abs.percentile_us(0.99)
    );
    let frame_us = 1e6 / 48_000.0;
    assert!(
        one.min_us >= 1000.0 - frame_us - 0.1 && one.max_us <= 1000.0 + frame_us + 0.1,
        "{} .. {} µs",
        one.min_us,
        one.max_us
    );
}

#[test]
fn receivers_with_their_own_clocks_and_links_all_play_and_are_compared() {
    let mut cfg = SimConfig::new(stereo48(), 256, 1200.0);
    cfg.net.jitter_ms = 1.0;
    cfg.receivers = SimReceiver::spread(4);
    let r = sim(cfg);
    assert_clean(&r, "four receivers");
    assert_eq!(r.receivers.len(), 4);
    for (i, x) in r.receivers.iter().enumerate() {
        let truth = -x.spec.clock_ppm;
        assert!(
            (x.drift_ppm_estimated - truth).abs() < 2.0,
            "receiver {i}: {} vs {truth}",
            x.drift_ppm_estimated
        );
        assert!(x.drift_lock_s.is_some(), "receiver {i}");
    }
    let s = skew(&r);
    assert_eq!(s.late_frames, 0);
    assert!(s.frames_compared as f64 > 1000.0 * 48_000.0);
    // Each receiver's mean skew is its extra latency over receiver 0's, which the analyzer
    // measures on its own.
    for i in 1..4 {
        let x = &s.per_receiver[i];
        let lat_us = (r.receivers[i].latency_p50_ms - r.receivers[0].latency_p50_ms) * 1000.0;
        assert!(
            (x.mean_us() - lat_us).abs() < 20.0,
            "receiver {i}: skew {} µs, latency difference {lat_us} µs",
            x.mean_us()
        );
    }
    // The spread is the links' (0.3 to 5 ms), give or take the buffers' control.
    assert!(
        (4600.0..4800.0).contains(&s.spread.max_us()),
        "{}",
        s.spread.max_us()
    );
}

#[test]
fn one_receiver_measures_no_skew_and_bad_receivers_are_refused() {
    let cfg = SimConfig::new(stereo48(), 256, 10.0);
    let r = sim(cfg.clone());
    assert!(r.skew.is_none());
    assert_eq!(r.receivers.len(), 1);

    let mut bad = cfg.clone();
    bad.receivers.clear();
    let e = engine::sim::Sim::new(bad).err().expect("no receiver");
    assert!(e.contains("1..=16"), "{e}");
    let mut bad = cfg.clone();
    bad.receivers = vec![SimReceiver {
        asymmetry_ms: -2.0,
        ..SimReceiver::default()
    }];
    let e = engine::sim::Sim::new(bad)
        .err()
        .expect("negative reverse delay");
    assert!(e.contains("asymmetry -2 ms"), "{e}");
}
