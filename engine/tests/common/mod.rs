//! What the simulated-rig tests share.

#![allow(dead_code)] // each test binary uses its own part

use engine::format::{SampleFormat, StreamFormat};
use engine::sim::skew::SkewReport;
use engine::sim::{SimConfig, SimReport};

/// 48 kHz stereo S16_LE, the usual stream of these tests.
pub fn stereo48() -> StreamFormat {
    StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap()
}

/// Mean of the trace's latency over `[from, to)` seconds.
pub fn mean_latency(r: &SimReport, from: f64, to: f64) -> f64 {
    let v: Vec<f64> = r
        .trace
        .iter()
        .filter(|p| p.t_s >= from && p.t_s < to && p.latency_ms.is_finite())
        .map(|p| p.latency_ms)
        .collect();
    assert!(!v.is_empty(), "no latency measured in [{from}, {to})");
    v.iter().sum::<f64>() / v.len() as f64
}

/// Runs a simulation that must be valid.
pub fn sim(cfg: SimConfig) -> SimReport {
    engine::sim::run(cfg, None).expect("valid simulation")
}

/// The skew of a run with several receivers and the ramp.
pub fn skew(r: &SimReport) -> &SkewReport {
    r.skew
        .as_ref()
        .expect("several receivers and a ramp: skew measured")
}
