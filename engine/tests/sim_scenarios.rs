//! The engine on the simulated rig: drift, loss, reorder, duplicates, restarts.
//!
//! Every run is checked twice: by the signal analyzer (which sees only the played samples) and
//! by the receiver's own counters, and the two must agree. Runs are in virtual time; each test
//! streams one hour or more of audio in a few seconds.

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::recovery::RecoveryMode;
use engine::sim::net::NetConfig;
use engine::sim::{Restart, SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

mod common;
use common::{mean_latency, stereo48};

fn sim(cfg: SimConfig) -> SimReport {
    run(cfg, None).expect("valid simulation")
}

fn assert_clean(r: &SimReport, what: &str) {
    assert_eq!(
        r.analyzer.gaps,
        0,
        "{what}: analyzer saw gaps, first: {:?}",
        &r.gaps[..r.gaps.len().min(5)]
    );
    assert_eq!(r.engine.gaps, 0, "{what}: engine counted gaps");
    assert_eq!(r.engine.concealed_frames, 0, "{what}");
    assert_eq!(
        r.analyzer.in_sync + r.analyzer.leading_frames,
        r.analyzer.frames,
        "{what}: every played frame checked and in sync"
    );
    assert_eq!(r.allocations_steady_state, Some(0), "{what}");
    assert_eq!(r.frees_steady_state, Some(0), "{what}");
}

#[test]
fn clean_link_holds_latency_at_any_drift() {
    let runs = [0.0, 100.0, -100.0, 500.0, -500.0]
        .map(|ppm| (DriftMode::Resample, ppm))
        .into_iter()
        .chain([(DriftMode::Slip, 500.0), (DriftMode::Slip, -100.0)]);
    for (mode, ppm) in runs {
        let mut cfg = SimConfig::new(stereo48(), 64, 3600.0);
        cfg.drift_ppm = ppm;
        cfg.drift_mode = mode;
        let target = cfg.latency_ms + cfg.net.delay_ms;
        let r = sim(cfg);
        let what = format!("{mode} {ppm:+} ppm");
        assert_clean(&r, &what);
        // Within ±1 ms of target after settling, and no creeping over the hour.
        assert!(
            (r.latency_p50_ms - target).abs() <= 1.0,
            "{what}: p50 {} vs target {target}",
            r.latency_p50_ms
        );
        assert!(
            r.latency_max_ms - target <= 1.0,
            "{what}: max {}",
            r.latency_max_ms
        );
        let early = mean_latency(&r, 60.0, 660.0);
        let late = mean_latency(&r, 3000.0, 3600.0);
        assert!((early - late).abs() <= 1.0, "{what}: {early} -> {late}");
        assert!(
            (r.drift_ppm_estimated - ppm).abs() < 2.0,
            "{what}: estimated {}",
            r.drift_ppm_estimated
        );
        // The analyzer hears the corrections the engine made: the slips, or the frames the
        // resampler took beyond those it played (the drift over the played time).
        // (For the resampler, the frames taken beyond those played are the drift times the
        // frames played, give or take what the level moved between the first frame heard and
        // the last: half a millisecond at most on a clean link.)
        let (made, within) = match mode {
            DriftMode::Slip => (
                r.engine.slip_drops as f64 - r.engine.slip_inserts as f64,
                2.0,
            ),
            _ => (
                ppm * 1e-6 * (r.analyzer.frames - r.analyzer.leading_frames) as f64,
                24.0,
            ),
        };
        assert!(
            (r.analyzer_slip_frames - made).abs() <= within,
            "{what}: heard {} slipped frames, engine made {made}",
            r.analyzer_slip_frames
        );
    }
}

#[test]
fn every_drift_mode_and_format_streams_cleanly() {
    for mode in [DriftMode::Slip, DriftMode::Resample] {
        for sample in SampleFormat::ALL {
            for (rate, ch) in [(44_100, 2u8), (96_000, 2), (48_000, 1), (48_000, 4)] {
                let f = StreamFormat::new(rate, ch, sample).unwrap();
                let mut cfg = SimConfig::new(f, 128, 120.0);
                cfg.drift_ppm = -250.0;
                cfg.wander_ppm = 50.0;
                cfg.wander_period_s = 60.0;
                cfg.drift_mode = mode;
                let r = sim(cfg);
                assert_clean(&r, &format!("{mode} {f}"));
            }
        }
    }
    // Off is bit-exact when the clocks agree.
    let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
    cfg.drift_mode = DriftMode::Off;
    let r = sim(cfg);
    assert_clean(&r, "off");
    assert_eq!(
        r.analyzer.bit_exact + r.analyzer.leading_frames,
        r.analyzer.frames
    );
}

#[test]
#[ignore = "24 h of virtual audio, about 40 s each in a release build; CI runs it"]
fn a_day_at_plus_and_minus_500_ppm_has_no_gaps() {
    for ppm in [500.0, -500.0] {
        let mut cfg = SimConfig::new(stereo48(), 256, 86_400.0);
        cfg.drift_ppm = ppm;
        let target = cfg.latency_ms + cfg.net.delay_ms;
        let r = sim(cfg);
        assert_clean(&r, &format!("24 h at {ppm:+} ppm"));
        assert!((r.latency_p50_ms - target).abs() <= 1.0);
        let early = mean_latency(&r, 600.0, 3600.0);
        let late = mean_latency(&r, 82_800.0, 86_400.0);
        assert!((early - late).abs() <= 1.0, "{early} -> {late}");
    }
}

#[test]
fn random_loss_is_concealed_and_counted_once() {
    let mut cfg = SimConfig::new(stereo48(), 64, 3600.0);
    // Frame-exact accounting: between slips the analyzer names every played frame exactly
    // (a resampled stream's frames near a hole are smeared over the filter's taps, and the
    // analyzer may count one hole as two there; resampling is checked in the runs without
    // holes).
    cfg.drift_mode = DriftMode::Slip;
    cfg.drift_ppm = 100.0;
    cfg.net.loss = 0.01;
    let r = sim(cfg);
    // Counters and analyzer agree on every gap.
    assert_eq!(r.engine.gaps, r.analyzer.gaps);
    assert!(
        r.engine.gaps > 20_000,
        "1 % of 2.7 M packets: {}",
        r.engine.gaps
    );
    // Every lost packet was counted (the last target latency's worth may not have been
    // played yet when the run ends); nothing is recovered without loss recovery.
    let dropped = r.net.dropped;
    let lost = r.engine.lost_packets + r.engine.recovered_packets;
    // Nor were those of the first second, while the receiver measured the drift before
    // playing (silence, no gap): allow four times the loss rate's share of them.
    let warmup_packets = r.analyzer.leading_frames / 64;
    assert!(
        lost <= dropped && dropped - lost <= 8 + warmup_packets / 25,
        "dropped {dropped}, counted {lost}"
    );
    // A gap is at most the run of lost packets plus a fade; never a resync.
    assert_eq!(r.engine.resyncs, 0);
    assert!(r.analyzer.max_gap_frames < 64 * 6);
}

#[test]
fn reorder_and_duplicates_inside_the_window_make_no_gap() {
    let mut cfg = SimConfig::new(stereo48(), 64, 3600.0);
    // Frame-exact accounting: between slips the analyzer names every played frame exactly
    // (a resampled stream's frames near a hole are smeared over the filter's taps, and the
    // analyzer may count one hole as two there; resampling is checked in the runs without
    // holes).
    cfg.drift_mode = DriftMode::Slip;
    cfg.drift_ppm = -100.0;
    cfg.latency_ms = 12.0;
    cfg.net = NetConfig {
        reorder: 0.05,
        duplicate: 0.05,
        ..NetConfig::default()
    };
    let r = sim(cfg);
    assert_clean(&r, "reorder + duplicates");
    assert!(r.net.reordered > 10_000 && r.net.duplicated > 10_000);
    assert_eq!(r.engine.duplicate_packets, r.net.duplicated);
}

#[test]
fn jitter_inside_the_target_makes_no_gap() {
    let mut cfg = SimConfig::new(stereo48(), 128, 3600.0);
    cfg.drift_ppm = 300.0;
    cfg.net.jitter_ms = 5.0;
    cfg.latency_ms = 25.0;
    let r = sim(cfg);
    assert_clean(&r, "5 ms jitter");
}

#[test]
fn sender_restart_resyncs_within_one_target_latency_with_one_gap() {
    for downtime_ms in [0.0, 50.0, 2000.0] {
        let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
        cfg.drift_ppm = 200.0;
        cfg.restarts = vec![Restart {
            at_s: 300.0,
            downtime_ms,
        }];
        let target = cfg.latency_ms;
        let r = sim(cfg);
        let what = format!("restart with {downtime_ms} ms away");
        assert_eq!(r.analyzer.gaps, 1, "{what}: {:?}", r.gaps);
        assert_eq!(r.engine.gaps, 1, "{what}");
        assert_eq!(r.engine.resyncs, 1, "{what}");
        let gap_ms = r.gaps[0].frames as f64 / 48.0;
        assert!(
            gap_ms <= downtime_ms + target,
            "{what}: audio back after {gap_ms} ms"
        );
        assert_eq!(r.allocations_steady_state, Some(0));
        assert_eq!(r.frees_steady_state, Some(0));
    }
}

#[test]
fn a_clean_sender_restart_is_no_gap() {
    // The same restarts, the sender stopping cleanly (SIGTERM): its END packets end the stream,
    // which plays out and fades; the silence until the next stream is no gap, for the engine
    // and for the analyzer told where the source ended.
    let runs = [
        (0.0, RecoveryMode::Off),
        (50.0, RecoveryMode::Off),
        (2000.0, RecoveryMode::Off),
        (50.0, RecoveryMode::Nack),
    ];
    for (downtime_ms, recovery) in runs {
        let mut cfg = SimConfig::new(stereo48(), 256, 600.0);
        cfg.drift_ppm = 200.0;
        cfg.recovery = recovery;
        cfg.clean_stops = true;
        cfg.restarts = vec![Restart {
            at_s: 300.0,
            downtime_ms,
        }];
        let target = cfg.latency_ms;
        let r = sim(cfg);
        let what = format!("clean restart with {downtime_ms} ms away, recovery {recovery}");
        assert_eq!(r.analyzer.gaps, 0, "{what}: {:?}", r.gaps);
        assert_eq!(r.engine.gaps, 0, "{what}");
        assert_eq!(r.engine.concealed_frames, 0, "{what}");
        assert_eq!(r.engine.resyncs, 1, "{what}");
        assert_eq!(r.engine.streams_ended, 1, "{what}");
        assert_eq!(
            r.analyzer.in_sync + r.analyzer.leading_frames,
            r.analyzer.frames,
            "{what}: every played frame checked and in sync"
        );
        // Silence twice (at the start and at the restart), each about one target latency,
        // plus the time away, plus the first stream's wait for the drift to be measured
        // (a second and a block; later streams keep the measurement).
        let silent_ms = r.analyzer.leading_frames as f64 / 48.0;
        assert!(
            silent_ms <= 2.0 * target + downtime_ms + 20.0 + 1_100.0,
            "{what}: {silent_ms} ms of silence"
        );
        assert_eq!(r.allocations_steady_state, Some(0));
    }
}

#[test]
fn stalls_beyond_the_ring_resync_and_count_one_gap_each() {
    // Two long outages: the receiver resyncs (overflow) instead of playing stale audio.
    let mut cfg = SimConfig::new(stereo48(), 256, 120.0);
    cfg.net.bursts_per_min = 1.0;
    // Frame-exact accounting: between slips the analyzer names every played frame exactly
    // (a resampled stream's frames near a hole are smeared over the filter's taps, and the
    // analyzer may count one hole as two there; resampling is checked in the runs without
    // holes).
    cfg.drift_mode = DriftMode::Slip;
    cfg.net.burst_len = 400;
    cfg.seed = 3;
    let r = sim(cfg);
    assert_eq!(r.engine.gaps, r.analyzer.gaps);
    assert!(r.engine.gaps >= 1);
}
