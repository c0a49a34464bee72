//! The fidelity analyzer on the simulated rig: a 997 Hz half-scale tone streamed in virtual
//! time, THD+N and wow & flutter read from the played samples alone.
//!
//! These runs pin down what the analyzer sees today: the floor of an untouched 16-bit stream,
//! and the distortion that slip correction adds when the clocks differ (the defect the
//! transparent drift correction is to remove; `slip` stays available as an option, and this
//! is what it costs).

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::sim::fidelity::FidelityReport;
use engine::sim::signal::SourceKind;
use engine::sim::{SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn tone_run(drift_ppm: f64, mode: DriftMode, seconds: f64) -> (SimReport, FidelityReport) {
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let mut cfg = SimConfig::new(format, 256, seconds);
    cfg.source = SourceKind::Sine { freq_hz: 997.0 };
    cfg.drift_ppm = drift_ppm;
    cfg.drift_mode = mode;
    cfg.settle_s = 15.0;
    let r = run(cfg, None).expect("valid simulation");
    let f = r.fidelity.expect("a sine source is measured");
    (r, f)
}

#[test]
fn equal_clocks_without_correction_play_at_the_16_bit_floor() {
    let (r, f) = tone_run(0.0, DriftMode::Off, 120.0);
    println!("off, equal clocks: {f:?}");
    assert_eq!(r.analyzer.gaps, 0);
    assert!(f.thdn.windows > 500, "{f:?}");
    // A half-scale 16-bit tone: quantization alone, about −89 dB.
    assert!((-95.0..-86.0).contains(&f.thdn.median_db), "{f:?}");
    assert!(f.thdn.p95_db - f.thdn.median_db < 1.0, "{f:?}");
    assert!(f.thdn.worst_db < -85.0, "{f:?}");
    // The tone comes out at its own frequency, without wobble.
    assert!((f.mean_freq_hz - 997.0).abs() < 0.001, "{f:?}");
    assert!(f.wow_flutter_rms_pct < 1e-4, "{f:?}");
    assert_eq!(r.allocations_steady_state, Some(0));
    assert_eq!(r.frees_steady_state, Some(0));
}

#[test]
fn slips_at_100_ppm_are_seen_as_distortion() {
    let (floor, f0) = tone_run(0.0, DriftMode::Off, 60.0);
    let (r, f) = tone_run(100.0, DriftMode::Slip, 60.0);
    println!("floor {f0:?}\nslip +100 ppm: {f:?}");
    assert_eq!(floor.analyzer.gaps, 0);
    assert_eq!(r.analyzer.gaps, 0, "slips are no gaps");
    assert!(
        r.engine.slip_drops + r.engine.slip_inserts > 50,
        "{:?}",
        r.engine
    );
    // Every slip's window stands far above the floor.
    assert!(f.thdn.p95_db > f0.thdn.p95_db + 20.0, "{f:?} vs {f0:?}");
    assert!(f.thdn.worst_db > -60.0, "{f:?}");
    // Dropping one frame in 10 000 keeps pace with the faster sender, and plays the tone
    // 100 ppm higher on the receiver's clock: the mean frequency shows the clock offset.
    assert!(
        (f.mean_freq_hz - 997.0 * (1.0 + 100e-6)).abs() < 0.02,
        "{f:?}"
    );
}
