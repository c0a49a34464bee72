//! The default drift correction leaves the sound as it was: on the simulated rig, a 997 Hz
//! half-scale tone through clocks tens to hundreds of ppm apart measures, with the analyzer
//! of `engine::sim::fidelity`, like the same tone through equal clocks with no correction at
//! all; the correction does not wobble; the drift is measured within a ppm in seconds, through
//! jitter too; and nothing is allocated on the way.

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::sim::fidelity::FidelityReport;
use engine::sim::signal::SourceKind;
use engine::sim::{SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const TONE: SourceKind = SourceKind::Sine { freq_hz: 997.0 };

fn tone_run(
    rate: u32,
    sample: SampleFormat,
    ppm: f64,
    mode: DriftMode,
    playback: Option<SampleFormat>,
    seconds: f64,
) -> SimConfig {
    let f = StreamFormat::new(rate, 2, sample).unwrap();
    let mut cfg = SimConfig::new(f, 256, seconds);
    cfg.drift_ppm = ppm;
    cfg.drift_mode = mode;
    cfg.playback_sample = playback;
    cfg.source = TONE;
    cfg
}

fn sim(cfg: SimConfig) -> SimReport {
    let r = run(cfg, None).expect("valid simulation");
    assert_eq!(r.engine.gaps, 0, "{:?}", r.engine);
    assert_eq!(r.allocations_steady_state, Some(0));
    assert_eq!(r.frees_steady_state, Some(0));
    r
}

fn fidelity(r: &SimReport) -> FidelityReport {
    r.fidelity.expect("a tone was played")
}

/// The floor: equal clocks, no correction, bit-exact.
fn floor(rate: u32, sample: SampleFormat) -> FidelityReport {
    fidelity(&sim(tone_run(
        rate,
        sample,
        0.0,
        DriftMode::Off,
        None,
        30.0,
    )))
}

#[test]
fn resampling_16_bit_streams_is_as_clean_as_equal_clocks() {
    for rate in [44_100, 48_000] {
        let base = floor(rate, SampleFormat::S16Le);
        for ppm in [10.0, -10.0, 100.0, -100.0, 500.0, -500.0] {
            // Played at 32 bits, as `playback_format = auto` opens a card that takes them.
            let cfg = tone_run(
                rate,
                SampleFormat::S16Le,
                ppm,
                DriftMode::Resample,
                Some(SampleFormat::S32Le),
                30.0,
            );
            let r = sim(cfg);
            let f = fidelity(&r);
            let what = format!("{rate} Hz, {ppm:+} ppm: {f:?} against {base:?}");
            assert!(f.thdn.p95_db <= base.thdn.p95_db + 1.0, "{what}");
            assert!(f.thdn.worst_with_startup_db <= -80.0, "{what}");
            assert!(f.wow_flutter_rms_pct <= 0.001, "{what}");
            let lock = r.drift_lock_s.expect("locked");
            assert!(lock <= 5.0, "{what}: locked after {lock} s");
        }
    }
}

#[test]
fn on_a_16_bit_card_the_only_cost_is_the_second_rounding() {
    // Rounding the resampled tone back to 16 bits adds the format's rounding noise once more:
    // 3 dB over the bit-exact floor, and nothing else.
    let base = floor(48_000, SampleFormat::S16Le);
    let cfg = tone_run(
        48_000,
        SampleFormat::S16Le,
        100.0,
        DriftMode::Resample,
        None,
        30.0,
    );
    let f = fidelity(&sim(cfg));
    assert!(
        f.thdn.p95_db <= base.thdn.p95_db + 3.5,
        "{f:?} against {base:?}"
    );
    assert!(
        f.thdn.p95_db >= base.thdn.p95_db + 2.0,
        "{f:?} against {base:?}"
    );
    assert!(f.wow_flutter_rms_pct <= 0.001, "{f:?}");
}

#[test]
fn resampling_24_bit_streams_stays_under_minus_110_db() {
    for ppm in [100.0, -500.0] {
        let cfg = tone_run(
            48_000,
            SampleFormat::S24_3Le,
            ppm,
            DriftMode::Resample,
            None,
            30.0,
        );
        let f = fidelity(&sim(cfg));
        assert!(f.thdn.p95_db <= -110.0, "{ppm:+} ppm: {f:?}");
        assert!(f.thdn.worst_with_startup_db <= -100.0, "{ppm:+} ppm: {f:?}");
        assert!(f.wow_flutter_rms_pct <= 0.001, "{ppm:+} ppm: {f:?}");
    }
}

#[test]
fn with_5_ms_of_jitter_the_figures_hold_and_the_drift_locks_within_20_s() {
    let base = floor(48_000, SampleFormat::S16Le);
    for ppm in [100.0, -500.0] {
        let mut cfg = tone_run(
            48_000,
            SampleFormat::S16Le,
            ppm,
            DriftMode::Resample,
            Some(SampleFormat::S32Le),
            90.0,
        );
        cfg.net.jitter_ms = 5.0;
        cfg.latency_ms = 35.0;
        let r = sim(cfg);
        let f = fidelity(&r);
        let what = format!("{ppm:+} ppm: {f:?}, lock {:?}", r.drift_lock_s);
        assert!(f.thdn.p95_db <= base.thdn.p95_db + 1.0, "{what}");
        assert!(f.thdn.worst_with_startup_db <= -80.0, "{what}");
        assert!(f.wow_flutter_rms_pct <= 0.001, "{what}");
        assert!(r.drift_lock_s.is_some_and(|s| s <= 20.0), "{what}");
    }
}

#[test]
fn slip_stays_available_and_each_slip_is_heard() {
    // The trade-off the README states: every slip is a distortion product.
    let cfg = tone_run(
        48_000,
        SampleFormat::S16Le,
        100.0,
        DriftMode::Slip,
        None,
        30.0,
    );
    let r = sim(cfg);
    let f = fidelity(&r);
    assert!(r.engine.slip_drops > 100, "{:?}", r.engine);
    assert!(f.thdn.p95_db > -40.0, "{f:?}");
}
