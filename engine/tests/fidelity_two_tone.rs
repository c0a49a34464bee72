//! The fidelity analyzer's two-tone source on the simulated rig: 18 and 19 kHz at a quarter of
//! full scale each, streamed in virtual time. Near the top of the band, whatever a resampler
//! aliases or images, and the tones' intermodulation, lands in the measured band.

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::sim::fidelity::{FidelityReport, MAX_SERIES_POINTS};
use engine::sim::signal::SourceKind;
use engine::sim::{SimConfig, SimReport, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn two_tone_run(drift_ppm: f64, mode: DriftMode, seconds: f64) -> (SimReport, FidelityReport) {
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let mut cfg = SimConfig::new(format, 256, seconds);
    cfg.source = SourceKind::from_spec("twotone:18000,19000").unwrap();
    cfg.drift_ppm = drift_ppm;
    cfg.drift_mode = mode;
    cfg.settle_s = 15.0;
    let r = run(cfg, None).expect("valid simulation");
    let f = r.fidelity.expect("a two-tone source is measured");
    (r, f)
}

#[test]
fn an_untouched_16_bit_two_tone_stream_plays_at_the_quantization_floor() {
    let (r, f) = two_tone_run(0.0, DriftMode::Off, 60.0);
    println!("off, equal clocks: {f:?}");
    // Two quarter-scale tones over 16-bit rounding noise: −89.1 dB.
    assert!((-90.5..-87.5).contains(&f.thdn.median_db), "{f:?}");
    assert!(f.thdn.worst_db < -87.0, "{f:?}");
    assert_eq!(f.thdn.outlier_windows, 0, "{f:?}");
    assert_eq!(f.second_tone_hz, Some(19_000.0));
    assert!((f.mean_freq_hz - 18_000.0).abs() < 0.01, "{f:?}");
    // The series over time covers the run, one point per window, and the loop allocated
    // nothing for it.
    let windows: u32 = r.fidelity_series.iter().map(|p| p.windows).sum();
    assert!(
        (windows as usize).abs_diff(60 * 48_000 / 8192) <= 1,
        "{windows}"
    );
    assert!(r.fidelity_series.len() <= MAX_SERIES_POINTS + 1);
    assert_eq!(r.allocations_steady_state, Some(0));
    assert_eq!(r.frees_steady_state, Some(0));
}

#[test]
fn resampling_100_ppm_near_the_top_of_the_band_is_measured() {
    let (_, f0) = two_tone_run(0.0, DriftMode::Off, 60.0);
    let (r, f) = two_tone_run(100.0, DriftMode::Resample, 60.0);
    println!("floor {f0:?}\nresample +100 ppm: {f:?}");
    assert_eq!(r.analyzer.gaps, 0);
    assert!(f.thdn.windows > 200, "{f:?}");
    // The tones come out at the sender's clock, 100 ppm high on the receiver's.
    assert!(
        (f.mean_freq_hz - 18_000.0 * (1.0 + 100e-6)).abs() < 0.1,
        "{f:?}"
    );
    // Whatever the resampler adds at 18–19 kHz is measured, never below the format's floor.
    assert!(
        f.thdn.median_db >= f0.thdn.median_db - 0.5,
        "{f:?} vs {f0:?}"
    );
    assert!(f.thdn.median_db.is_finite() && f.thdn.worst_db.is_finite());
}

#[test]
fn the_default_resampler_is_transparent_near_the_top_of_the_band_at_any_drift() {
    // Played at 32 bits (as `playback_format = auto` opens a card that takes them): what the
    // resampler aliases or images at 18–19 kHz stays under the 16-bit floor, and a clock
    // offset of ±500 ppm (±9.5 Hz at 19 kHz) is followed by the analyzer's tone fit.
    let (_, f0) = two_tone_run(0.0, DriftMode::Off, 40.0);
    for ppm in [100.0, 500.0, -500.0] {
        let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut cfg = SimConfig::new(format, 256, 40.0);
        cfg.source = SourceKind::from_spec("twotone:18000,19000").unwrap();
        cfg.drift_ppm = ppm;
        cfg.playback_sample = Some(SampleFormat::S32Le);
        cfg.settle_s = 10.0;
        let r = run(cfg, None).expect("valid simulation");
        let f = r.fidelity.expect("measured");
        assert!(
            f.thdn.p95_db <= f0.thdn.p95_db + 1.0,
            "{ppm:+} ppm: {f:?} vs {f0:?}"
        );
        assert!(f.wow_flutter_rms_pct <= 0.001, "{ppm:+} ppm: {f:?}");
        assert_eq!(r.engine.gaps, 0);
    }
}
