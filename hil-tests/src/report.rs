//! The report of a run: JSON for scripts, a summary for people, an SVG plot.

use crate::plot::{self, PlotInput, TracePoint};
use crate::receivers;
use engine::sim::fidelity::FidelityReport;
use engine::sim::{SimConfig, SimReport};
use engine::stats::Side;
use serde_json::{Value, json};

/// CPU seconds this process has used (user + system), from /proc.
pub fn cpu_seconds() -> f64 {
    crate::rig::proc::cpu_seconds(std::process::id())
}

/// `v` rounded to a thousandth, or null when it is not finite.
pub fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// `v` serialised, its non-integer numbers rounded to `decimals` (the fidelity figures are read
/// to a thousandth of a dB; wow & flutter to a millionth of a percent).
fn rounded(v: impl serde::Serialize, decimals: i32) -> Value {
    fn round(v: &mut Value, scale: f64) {
        match v {
            Value::Number(n) if n.is_f64() => {
                *v = n
                    .as_f64()
                    .map_or(Value::Null, |x| json!((x * scale).round() / scale));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| round(x, scale)),
            Value::Object(o) => o.values_mut().for_each(|x| round(x, scale)),
            _ => {}
        }
    }
    let mut v = json!(v);
    round(&mut v, 10f64.powi(decimals));
    v
}

/// THD+N percentiles of a tone, as the JSON reports of sim, rig and demo give them.
pub fn thdn_json(f: &FidelityReport) -> Value {
    rounded(f.thdn_summary(), 3)
}

/// Wow & flutter of the (first) tone.
pub fn wow_flutter_json(f: &FidelityReport) -> Value {
    rounded(f.wow_flutter_summary(), 6)
}

/// The THD+N and wow & flutter line of the text reports.
pub fn fidelity_line(f: &FidelityReport) -> String {
    format!("{f}\n")
}

/// The JSON report.
pub fn build(cfg: &SimConfig, r: &SimReport, wall_s: f64, cpu_s: f64) -> Value {
    let mut v = build_one(cfg, r, wall_s, cpu_s);
    if r.receivers.len() > 1 {
        v["receivers"] = receivers::receivers_json(cfg, r);
        v["skew"] = r
            .skew
            .as_ref()
            .map_or(Value::Null, |s| receivers::skew_json(cfg, s));
    }
    v
}

/// The report of a one-receiver run (receiver 0's of several).
fn build_one(cfg: &SimConfig, r: &SimReport, wall_s: f64, cpu_s: f64) -> Value {
    let rate = cfg.format.rate as f64;
    let a = &r.analyzer;
    let e = &r.engine;
    let hours = r.audio_seconds / 3600.0;
    json!({
        "audio_seconds": finite(r.audio_seconds),
        "gaps": a.gaps,
        "gap_frames": a.gap_frames,
        "max_gap_ms": finite(a.max_gap_frames as f64 * 1000.0 / rate),
        "gaps_per_hour": finite(if hours > 0.0 { a.gaps as f64 / hours } else { 0.0 }),
        "latency_ms": {
            "p50": finite(r.latency_p50_ms),
            "p99": finite(r.latency_p99_ms),
            "max": finite(r.latency_max_ms),
            "target": finite(cfg.latency_ms),
            // latency = auto: the bounds, and where the target ended (whole latency, ms).
            "auto": cfg.auto_latency.map(|(lo, hi)| json!({
                "min": finite(lo), "max": finite(hi),
                "final_target": finite(e.target_frames * 1000.0 / rate),
            })),
        },
        "lost_packets": e.lost_packets,
        "recovered_packets": e.recovered_packets,
        "concealed_frames": e.concealed_frames,
        "drift_ppm_estimated": finite(r.drift_ppm_estimated),
        "drift_ppm_actual": finite(receivers::drift_actual(cfg, 0)),
        "drift_lock_s": r.drift_lock_s.map(finite),
        "bit_exact_frames": a.bit_exact,
        "checked_frames": a.frames,
        "in_sync_frames": a.in_sync,
        "leading_silence_frames": a.leading_frames,
        "allocations_steady_state": r.allocations_steady_state,
        "frees_steady_state": r.frees_steady_state,
        // With a sine source: how much the stream changed the sound (engine::sim::fidelity).
        "source": cfg.source.spec(),
        "thdn_db": r.fidelity.map(|f| thdn_json(&f)),
        "wow_flutter_pct": r.fidelity.map(|f| wow_flutter_json(&f)),
        "engine_gaps": e.gaps,
        "counters_agree": e.gaps == a.gaps,
        // Every receiver counter, as the receiver's `--stats-json` names them.
        "engine": e.side(Side::Receiver),
        "analyzer_slip_frames": finite(r.analyzer_slip_frames),
        "gap_list": r.gaps.iter().take(1000).map(|g| json!({
            "t_s": finite(g.t_s),
            "ms": finite(g.frames as f64 * 1000.0 / rate),
        })).collect::<Vec<_>>(),
        "recovery": {
            "mode": r.recovery.mode.name(),
            "recovered_packets": r.recovery.recovered,
            "expired_requests": r.recovery.expired,
            "nacks_sent": r.recovery.nacks_sent,
            "nacks_delivered": r.recovery.nacks_delivered,
            "retransmits": r.recovery.retransmits,
            "audio_bytes": r.recovery.audio_bytes,
            "nack_bytes": r.recovery.nack_bytes,
            "retransmit_bytes": r.recovery.retransmit_bytes,
            "resends_over_limit": r.recovery.resends_over_limit,
            "resends_capped": r.recovery.resends_capped,
            "overhead_percent": finite(r.recovery.overhead_percent()),
            "rtt_ms": finite(r.recovery.rtt_ms),
            "cpu_seconds": finite(r.recovery.cpu_s),
            "cpu_percent_of_realtime": finite(recovery_cpu_percent(r)),
            "cpu_percent_of_run": finite(if cpu_s > 0.0 { r.recovery.cpu_s * 100.0 / cpu_s } else { 0.0 }),
        },
        "network": {
            "sent": r.net.sent,
            "dropped": r.net.dropped,
            "reordered": r.net.reordered,
            "duplicated": r.net.duplicated,
        },
        "config": {
            "rate": cfg.format.rate,
            "channels": cfg.format.channels,
            "format": cfg.format.sample.name(),
            "period": cfg.period,
            "drift_ppm": finite(cfg.drift_ppm),
            "wander_ppm": finite(cfg.wander_ppm),
            "drift_mode": cfg.drift_mode.name(),
            "playback_format": cfg.playback_sample.unwrap_or(cfg.format.sample).name(),
            "recovery": cfg.recovery.name(),
            "latency_ms": finite(cfg.latency_ms),
            "loss": finite(cfg.net.loss),
            "bursts_per_min": finite(cfg.net.bursts_per_min),
            "burst_len": cfg.net.burst_len,
            "jitter_ms": finite(cfg.net.jitter_ms),
            "delay_ms": finite(cfg.net.delay_ms),
            "reorder": finite(cfg.net.reorder),
            "duplicate": finite(cfg.net.duplicate),
            "seed": cfg.seed,
        },
        "wall_seconds": finite(wall_s),
        "cpu_seconds": finite(cpu_s),
        "audio_hours_per_cpu_second": finite(hours / cpu_s),
    })
}

/// CPU time spent in loss recovery as a percentage of the audio time streamed (one core of
/// the machine running the simulation).
fn recovery_cpu_percent(r: &SimReport) -> f64 {
    if r.audio_seconds > 0.0 {
        r.recovery.cpu_s * 100.0 / r.audio_seconds
    } else {
        0.0
    }
}

/// A few lines for people; `gaps:` leads, as scripts grep for it.
pub fn summary(cfg: &SimConfig, r: &SimReport, wall_s: f64, cpu_s: f64) -> String {
    let a = &r.analyzer;
    let e = &r.engine;
    let rate = cfg.format.rate as f64;
    let counted = |n: Option<u64>| n.map_or("not counted".to_string(), |n| n.to_string());
    let (alloc, frees) = (
        counted(r.allocations_steady_state),
        counted(r.frees_steady_state),
    );
    let mut text = format!(
        "gaps: {} (engine: {}{})\n\
         gap_frames: {}  max_gap_ms: {:.2}\n\
         latency_ms: p50 {:.2}  p99 {:.2}  max {:.2}  (target {})\n\
         lost_packets: {}  recovered: {}  concealed_frames: {}\n\
         recovery: {}  overhead: {:.2} % of the audio bytes ({} packets sent again, {} NACKs; refused: {} over the per-packet limit, {} by the rate cap)  cpu: {:.4} % of realtime ({:.2} s)\n\
         drift_ppm: actual {:+.1}  estimated {:+.1}  locked to 1 ppm {}  ({} mode, played as {}: {} slips dropped, {} inserted)\n\
         checked_frames: {}  bit_exact: {}  in_sync: {}\n\
         allocations_steady_state: {}  frees_steady_state: {}\n\
         {:.1} h of audio in {:.1} s wall, {:.1} s CPU ({:.2} audio hours per CPU second)\n",
        a.gaps,
        e.gaps,
        if e.gaps == a.gaps {
            ", agree"
        } else {
            ", DISAGREE"
        },
        a.gap_frames,
        a.max_gap_frames as f64 * 1000.0 / rate,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        match cfg.auto_latency {
            None if cfg.sync => format!("{:.2} from capture", cfg.latency_ms),
            None => format!("{:.2} + network", cfg.latency_ms),
            Some((lo, hi)) => format!(
                "auto in {lo:.0}..{hi:.0} ms: {:.2} at the start, {:.2} at the end, + network",
                cfg.latency_ms,
                e.target_frames * 1000.0 / rate
            ),
        },
        e.lost_packets,
        e.recovered_packets,
        e.concealed_frames,
        r.recovery.mode,
        r.recovery.overhead_percent(),
        r.recovery.retransmits,
        r.recovery.nacks_sent,
        r.recovery.resends_over_limit,
        r.recovery.resends_capped,
        recovery_cpu_percent(r),
        r.recovery.cpu_s,
        receivers::drift_actual(cfg, 0),
        r.drift_ppm_estimated,
        r.drift_lock_s.map_or_else(
            || "never".to_string(),
            |s| format!("{s:.1} s after the first packet")
        ),
        cfg.drift_mode,
        cfg.playback_sample.unwrap_or(cfg.format.sample).name(),
        e.slip_drops,
        e.slip_inserts,
        a.frames,
        a.bit_exact,
        a.in_sync,
        alloc,
        frees,
        r.audio_seconds / 3600.0,
        wall_s,
        cpu_s,
        r.audio_seconds / 3600.0 / cpu_s,
    );
    if let Some(f) = &r.fidelity {
        text += &fidelity_line(f);
    }
    if r.receivers.len() > 1 {
        text += &receivers::summary(cfg, r);
    }
    text
}

/// The SVG plot.
pub fn plot(cfg: &SimConfig, r: &SimReport) -> String {
    let trace: Vec<TracePoint> = r
        .trace
        .iter()
        .map(|p| TracePoint {
            t_s: p.t_s,
            latency_ms: p.latency_ms,
            level_ms: p.level_ms,
            ratio_ppm: p.ratio_ppm,
        })
        .collect();
    let several = r.receivers.len() > 1;
    // With several receivers, every receiver's gaps are marked.
    let gaps = if several {
        plot::gap_marks(receivers::all_gaps(r), cfg.format.rate)
    } else {
        plot::gap_marks(r.gaps.iter().map(|g| (g.t_s, g.frames)), cfg.format.rate)
    };
    let title = format!(
        "netaudio sim: {} of audio, {} Hz {} ch {}, period {}, drift {:+} ppm, {} mode",
        crate::progress::fmt_audio_ms((r.audio_seconds * 1000.0) as u64),
        cfg.format.rate,
        cfg.format.channels,
        cfg.format.sample,
        cfg.period,
        cfg.drift_ppm,
        cfg.drift_mode
    );
    let gaps_text = if several {
        let all: u64 = r.receivers.iter().map(|x| x.analyzer.gaps).sum();
        format!("{} gaps (receiver 0; {all} on all)", r.analyzer.gaps)
    } else {
        format!("{} gaps", r.analyzer.gaps)
    };
    let mut subtitle = format!(
        "{gaps_text} · latency p50 {:.2} ms, p99 {:.2} ms · {} lost packets · loss {}% jitter {} ms",
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.engine.lost_packets,
        cfg.net.loss * 100.0,
        cfg.net.jitter_ms
    );
    if let Some(s) = r.skew.as_ref().filter(|_| several) {
        subtitle += &format!(
            " · {} receivers, skew p99 {:.0} µs",
            r.receivers.len(),
            s.spread.percentile_us(0.99)
        );
    }
    let fidelity = r.fidelity.map(|f| {
        subtitle += &fidelity_subtitle(&f);
        (
            plot::fidelity_points(&r.fidelity_series, reference_hz(&f)),
            f.thdn.median_db,
            tones_label(&f),
        )
    });
    plot::render_svg(&PlotInput {
        title: &title,
        subtitle: &subtitle,
        trace: &trace,
        gaps: &gaps,
        target_latency_ms: Some(cfg.latency_ms + cfg.forward_link(&cfg.receivers[0]).delay_ms),
        fidelity: fidelity
            .as_ref()
            .map(|(points, median_db, tones)| plot::FidelityPanel {
                points,
                median_db: *median_db,
                tones,
            }),
        skew: r
            .skew
            .as_ref()
            .filter(|_| several)
            .map(|s| plot::SkewPanel {
                points: &s.series,
                receivers: s.receivers,
            }),
    })
}

/// The frequency deviations are plotted against: the run's mean after settling, or the
/// nominal tone when there was none.
pub fn reference_hz(f: &FidelityReport) -> f64 {
    if f.mean_freq_hz.is_finite() {
        f.mean_freq_hz
    } else {
        f.tone_hz
    }
}

/// "997 Hz" or "18000 + 19000 Hz".
pub fn tones_label(f: &FidelityReport) -> String {
    f.tones_label()
}

/// The plot subtitle's THD+N and wow & flutter part.
pub fn fidelity_subtitle(f: &FidelityReport) -> String {
    format!(
        " · THD+N median {:.1} dB, worst {:.1} dB · W&F rms {:.4} %",
        f.thdn.median_db, f.thdn.worst_db, f.wow_flutter_rms_pct
    )
}
