//! The report's part for a run with several receivers: each receiver's figures and the skew
//! between them (JSON and text), and the gaps of all of them for the plot.

use crate::report::finite;
use engine::sim::skew::{ReceiverSkew, SkewHistogram, SkewReport};
use engine::sim::{SimConfig, SimReport};
use serde_json::{Value, json};

/// Every receiver's figures.
pub fn receivers_json(cfg: &SimConfig, r: &SimReport) -> Value {
    let rate = cfg.format.rate as f64;
    r.receivers
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let fwd = cfg.forward_link(&x.spec);
            let rev = cfg.reverse_link(&x.spec);
            json!({
                "receiver": i,
                "clock_ppm": finite(x.spec.clock_ppm),
                "delay_ms": finite(fwd.delay_ms),
                "reverse_delay_ms": finite(rev.delay_ms),
                "jitter_ms": finite(fwd.jitter_ms),
                "loss": finite(fwd.loss),
                "gaps": x.analyzer.gaps,
                "engine_gaps": x.engine.gaps,
                "gap_frames": x.analyzer.gap_frames,
                "max_gap_ms": finite(x.analyzer.max_gap_frames as f64 * 1000.0 / rate),
                "latency_ms": {
                    "p50": finite(x.latency_p50_ms),
                    "p99": finite(x.latency_p99_ms),
                    "max": finite(x.latency_max_ms),
                },
                "lost_packets": x.engine.lost_packets,
                "recovered_packets": x.engine.recovered_packets,
                "concealed_frames": x.engine.concealed_frames,
                "nacks_sent": x.nacks_sent,
                "nacks_delivered": x.nacks_delivered,
                "expired_requests": x.expired,
                "drift_ppm_estimated": finite(x.drift_ppm_estimated),
                "drift_ppm_actual": finite(drift_actual(cfg, i)),
                "drift_lock_s": x.drift_lock_s.map(finite),
                "in_sync_frames": x.analyzer.in_sync,
                "checked_frames": x.analyzer.frames,
                "sync": x.sync.map(|s| json!({
                    "requests": s.requests,
                    "responses": s.responses,
                    "model_error_us": s.model_error_us.map(finite),
                    "model_restarts": s.model_restarts,
                    "presentation_error_us": {
                        "rms": finite(s.presentation_error_rms_us),
                        "max": finite(s.presentation_error_max_us),
                    },
                })),
            })
        })
        .collect()
}

/// The sender's clock against receiver `i`'s, ppm (the run's drift when that one's clock is
/// true).
pub fn drift_actual(cfg: &SimConfig, i: usize) -> f64 {
    let ppm = cfg.receivers.get(i).map_or(0.0, |r| r.clock_ppm);
    if ppm == 0.0 {
        cfg.drift_ppm
    } else {
        drift_truth(cfg.drift_ppm, ppm)
    }
}

/// The sender's clock against a receiver's, ppm.
fn drift_truth(sender_ppm: f64, receiver_ppm: f64) -> f64 {
    ((1.0 + sender_ppm * 1e-6) / (1.0 + receiver_ppm * 1e-6) - 1.0) * 1e6
}

fn us(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn histogram_json(h: &SkewHistogram) -> Value {
    json!({
        "p50": us(h.percentile_us(0.5)),
        "p99": us(h.percentile_us(0.99)),
        "max": us(h.max_us()),
        "frames": h.count(),
    })
}

fn receiver_skew_json(i: usize, s: &ReceiverSkew) -> Value {
    json!({
        "receiver": i,
        "abs_us": histogram_json(&s.abs),
        "mean_us": us(s.mean_us()),
        "min_us": us(s.min_us),
        "max_us": us(s.max_us),
    })
}

/// The skew: per frame played by two or more receivers, when each one's DAC output it
/// (virtual time), after settling.
pub fn skew_json(cfg: &SimConfig, s: &SkewReport) -> Value {
    json!({
        "what": "DAC-output instants of the same frame, virtual time, after settling",
        "reference": "receiver 0 (signed: positive = later than receiver 0)",
        "settle_s": finite(cfg.settle_s),
        "frames_compared": s.frames_compared,
        "late_frames": s.late_frames,
        // The overall figure: latest minus earliest receiver per frame.
        "spread_us": histogram_json(&s.spread),
        "per_receiver": s.per_receiver.iter().enumerate().skip(1)
            .map(|(i, x)| receiver_skew_json(i, x)).collect::<Vec<_>>(),
    })
}

/// The text report's lines for the receivers and the skew.
pub fn summary(cfg: &SimConfig, r: &SimReport) -> String {
    let rate = cfg.format.rate as f64;
    let mut text = format!(
        "receivers: {} (the figures above are receiver 0's)\n",
        r.receivers.len()
    );
    for (i, x) in r.receivers.iter().enumerate() {
        let fwd = cfg.forward_link(&x.spec);
        let rev = cfg.reverse_link(&x.spec);
        text += &format!(
            "  rx {i}: clock {:+.1} ppm, delay {:.2} ms (back {:.2}): gaps {} (engine {}), max_gap_ms {:.2}, latency p50 {:.2} p99 {:.2} max {:.2} ms, lost {} recovered {}, drift est {:+.1} ppm\n",
            x.spec.clock_ppm,
            fwd.delay_ms,
            rev.delay_ms,
            x.analyzer.gaps,
            x.engine.gaps,
            x.analyzer.max_gap_frames as f64 * 1000.0 / rate,
            x.latency_p50_ms,
            x.latency_p99_ms,
            x.latency_max_ms,
            x.engine.lost_packets,
            x.engine.recovered_packets,
            x.drift_ppm_estimated,
        );
        if let Some(s) = x.sync {
            text += &format!(
                "        sync: {} requests, {} answers, model error {:.1} µs, {} restarts; presentation error (own view) rms {:.2} max {:.2} µs\n",
                s.requests,
                s.responses,
                s.model_error_us.unwrap_or(f64::NAN),
                s.model_restarts,
                s.presentation_error_rms_us,
                s.presentation_error_max_us,
            );
        }
    }
    match &r.skew {
        None => text += "skew: not measured (needs the ramp source)\n",
        Some(s) => {
            text += &format!(
                "skew_us (DAC output of the same frame; {} frames compared, {} too late): spread p50 {:.3}  p99 {:.3}  max {:.3}\n",
                s.frames_compared,
                s.late_frames,
                s.spread.percentile_us(0.5),
                s.spread.percentile_us(0.99),
                s.spread.max_us(),
            );
            for (i, x) in s.per_receiver.iter().enumerate().skip(1) {
                text += &format!(
                    "  rx {i} - rx 0: mean {:+.3}  range {:+.3}..{:+.3}  |skew| p50 {:.3}  p99 {:.3}  max {:.3}\n",
                    x.mean_us(),
                    x.min_us,
                    x.max_us,
                    x.abs.percentile_us(0.5),
                    x.abs.percentile_us(0.99),
                    x.abs.max_us(),
                );
            }
        }
    }
    text
}

/// Every receiver's gaps, in time order (for the plot's markers).
pub fn all_gaps(r: &SimReport) -> Vec<(f64, u64)> {
    let mut v: Vec<(f64, u64)> = r
        .receivers
        .iter()
        .flat_map(|x| x.gaps.iter().map(|g| (g.t_s, g.frames)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_against_a_receiver_clock() {
        assert!((drift_truth(100.0, 0.0) - 100.0).abs() < 1e-9);
        assert!((drift_truth(100.0, 100.0)).abs() < 1e-9);
        assert!((drift_truth(0.0, 100.0) + 99.99).abs() < 0.01);
    }
}
