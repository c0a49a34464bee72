//! The rig's report: JSON (the same field names as `hil-tests sim`), a summary for people with
//! the baseline side by side, and the SVG plot.

use super::{Leg, PERIODS, RigArgs};
use crate::plot::{self, PlotInput};
use serde_json::{Value, json};

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, finite)
}

fn per_minute(cpu_s: f64, audio_s: f64) -> f64 {
    if audio_s > 0.0 {
        cpu_s / (audio_s / 60.0)
    } else {
        f64::NAN
    }
}

/// Why a tone run reports no gaps, for the JSON and the text.
pub const TONE_GAPS_NOTE: &str = "gaps are not measured by the ramp analyzer with a tone for a \
     source; windows of THD+N 20 dB or more above the median (thdn_db.outlier_windows) stand for \
     them: a gap, a slip or a burst of noise lies in each";

/// One run's JSON object.
pub fn leg_json(args: &RigArgs, leg: &Leg) -> Value {
    let mut v = leg_json_ramp(args, leg);
    v["source"] = json!(args.source.spec());
    if let Some(b) = &leg.second {
        v["receivers"] = receivers_json(args, leg, b);
        v["skew"] = skew_json(args, &b.skew);
        if let Some(t) = &b.tone_skew {
            v["skew_sub_frame"] = tone_skew_json(args, t);
        }
        if let Some(t) = &b.tone {
            v["second_thdn_db"] = crate::report::thdn_json(&t.played);
            v["second_wow_flutter_pct"] = crate::report::wow_flutter_json(&t.played);
        }
        v["config"]["sync_latency_ms"] = finite(super::pipeline::sync_latency_ms(args));
    }
    let Some(t) = &leg.tone else {
        return v;
    };
    // What a tone cannot tell: no frame-exact gaps, latency or bit-exactness.
    for key in [
        "gaps",
        "gap_frames",
        "max_gap_ms",
        "gaps_per_hour",
        "bit_exact_frames",
        "in_sync_frames",
        "counters_agree",
        "analyzer_slip_frames",
        "latency_frames",
    ] {
        v[key] = Value::Null;
    }
    v["latency_ms"] = json!({ "p50": null, "p99": null, "max": null });
    v["gaps_note"] = json!(TONE_GAPS_NOTE);
    v["thdn_db"] = crate::report::thdn_json(&t.played);
    v["wow_flutter_pct"] = crate::report::wow_flutter_json(&t.played);
    v["source_thdn_db"] = crate::report::thdn_json(&t.reference);
    v["config"]["settle_s"] = finite(super::tone_settle_s(args.duration));
    v
}

/// `--receivers 2`: each receiver's gaps and latency (capture to output) on the monitor.
fn receivers_json(args: &RigArgs, leg: &Leg, b: &super::leg::Second) -> Value {
    let rate = args.rate as f64;
    let one = |m: &super::analysis::MonitorReport, e: Option<&Value>| {
        json!({
            "gaps": m.gaps,
            "max_gap_ms": finite(m.max_gap_frames as f64 * 1000.0 / rate),
            "latency_ms": {
                "p50": finite(m.latency_p50_ms),
                "p99": finite(m.latency_p99_ms),
                "max": finite(m.latency_max_ms),
            },
            "in_sync_frames": m.in_sync_frames,
            "checked_frames": m.checked_frames,
            "engine_gaps": e.and_then(|e| e["gaps"].as_u64()),
            "xruns": e.and_then(|e| e["xruns"].as_u64()),
            "allocations_steady_state": e.and_then(|e| e["allocations_rt"].as_u64()),
            "frees_steady_state": e.and_then(|e| e["frees_rt"].as_u64()),
        })
    };
    let first = leg.engine.as_ref().and_then(|e| e.receiver.as_ref());
    let mut v = [one(&leg.mon, first), one(&b.mon, b.engine.as_ref())];
    // What a tone cannot tell (as for the run as a whole); its outlier windows stand for gaps.
    for (v, t) in v.iter_mut().zip([&leg.tone, &b.tone]) {
        let Some(t) = t else { continue };
        for key in ["gaps", "max_gap_ms", "in_sync_frames", "checked_frames"] {
            v[key] = Value::Null;
        }
        v["thdn_outlier_windows"] = json!(t.played.thdn.outlier_windows);
    }
    json!(v)
}

/// `--receivers 2`: the offset between the two outputs, frame by frame.
fn skew_json(args: &RigArgs, s: &super::skew::SkewReport) -> Value {
    let us = 1e6 / args.rate as f64;
    json!({
        "frames_compared": s.compared,
        "mean_frames": finite(s.mean_frames),
        "min_frames": s.min_frames,
        "max_frames": s.max_frames,
        "mean_us": finite(s.mean_frames * us),
        "same_frame_share": finite(s.same_share),
        "within_one_frame_share": finite(s.within_one_share),
        "beyond_16_frames": s.beyond,
        "per_second_mean_frames": s.seconds.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
        "resolution_frames": 1,
    })
}

/// `--receivers 2 --source sine:HZ`: the offset between the two outputs below a frame.
fn tone_skew_json(args: &RigArgs, s: &super::skew::ToneSkewReport) -> Value {
    let us = 1e6 / args.rate as f64;
    json!({
        "blocks_compared": s.blocks,
        "block_s": 0.1,
        "mean_frames": finite(s.mean_frames),
        "min_frames": finite(s.min_frames),
        "max_frames": finite(s.max_frames),
        "p50_abs_us": finite(s.p50_abs_frames * us),
        "p99_abs_us": finite(s.p99_abs_frames * us),
        "max_abs_us": finite(s.min_frames.abs().max(s.max_frames.abs()) * us),
        "within_one_frame_share": finite(s.within_one_share),
        "per_second_mean_frames": s.seconds.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
    })
}

/// One run's JSON object as the ramp measures it.
fn leg_json_ramp(args: &RigArgs, leg: &Leg) -> Value {
    let m = &leg.mon;
    let rate = args.rate as f64;
    let hours = m.audio_seconds / 3600.0;
    let e = leg.engine.as_ref();
    let recv = |k: &str| opt(e.and_then(|e| e.recv(k)));
    let engine_gaps = e.and_then(|e| e.gaps());
    let void = leg.void_reasons();
    json!({
        "pipeline": leg.name,
        "audio_seconds": finite(m.audio_seconds),
        "gaps": m.gaps,
        "gap_frames": m.gap_frames,
        "max_gap_ms": finite(m.max_gap_frames as f64 * 1000.0 / rate),
        "gaps_per_hour": finite(if hours > 0.0 { m.gaps as f64 / hours } else { 0.0 }),
        "latency_ms": {
            "p50": finite(m.latency_p50_ms),
            "p99": finite(m.latency_p99_ms),
            "max": finite(m.latency_max_ms),
        },
        "lost_packets": recv("lost_packets"),
        "recovered_packets": recv("recovered_packets"),
        "concealed_frames": recv("concealed_frames"),
        "drift_ppm_estimated": recv("drift_ppm"),
        "bit_exact_frames": m.bit_exact_frames,
        "checked_frames": m.checked_frames,
        "in_sync_frames": m.in_sync_frames,
        "leading_silence_frames": m.leading_frames,
        "allocations_steady_state": e.and_then(|e| e.allocations()),
        "frees_steady_state": e.and_then(|e| e.frees()),
        "engine_gaps": engine_gaps,
        "counters_agree": engine_gaps.map(|g| g == m.gaps),
        "cpu_seconds_per_audio_minute": {
            "sender": finite(per_minute(leg.cpu_sender_s, m.audio_seconds)),
            "receiver": finite(per_minute(leg.cpu_receiver_s, m.audio_seconds)),
        },
        "jackd_xruns": leg.jackd_xruns,
        "void": !void.is_empty(),
        "void_reasons": void,
        "source_breaks": m.source_breaks,
        "rig_xruns": leg.rig_xruns,
        "device_xruns": match (e, leg.device_xruns) {
            (Some(e), _) => json!({
                "sender": opt(e.send("xruns")),
                "receiver": opt(e.recv("xruns")),
            }),
            (None, Some((s, r))) => json!({ "sender": s, "receiver": r }),
            (None, None) => Value::Null,
        },
        "analyzer_slip_frames": finite(m.slip_frames),
        "latency_frames": m.latency_frames,
        "gap_list": m.gap_list.iter().take(1000).map(|g| json!({
            "t_s": finite(g.t_s),
            "ms": finite(g.frames as f64 * 1000.0 / rate),
        })).collect::<Vec<_>>(),
        "engine": e.map(|e| json!({ "sender": e.sender, "receiver": e.receiver })),
        "commands": { "sender": leg.sender_cmd, "receiver": leg.receiver_cmd },
        "warnings": leg.warnings,
        "config": {
            "rate": args.rate,
            "channels": 2,
            "format": "S16_LE",
            "period": args.period,
            "periods": PERIODS,
            "latency_ms": opt(args.latency_ms),
            "jack_period": args.period,
            "duration_s": finite(args.duration),
        },
    })
}

/// The JSON report: netaudio's fields at top level, or `netaudio` and `baseline` objects.
pub fn json(args: &RigArgs, main: Option<&Leg>, baseline: Option<&Leg>) -> Value {
    match (main, baseline) {
        (Some(m), None) => leg_json(args, m),
        (m, b) => json!({
            "netaudio": m.map(|l| leg_json(args, l)),
            "baseline": b.map(|l| leg_json(args, l)),
        }),
    }
}

/// Rows of the summary: label and one cell per run.
fn rows(args: &RigArgs, leg: &Leg) -> Vec<(&'static str, String)> {
    let m = &leg.mon;
    let rate = args.rate as f64;
    let e = leg.engine.as_ref();
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "-".into()
        }
    };
    let void = leg.void_reasons();
    let db = |v: f64| {
        if v.is_finite() {
            format!("{v:.1}")
        } else {
            "-".into()
        }
    };
    let measured: Vec<(&'static str, String)> = match &leg.tone {
        None => vec![
            ("gaps", m.gaps.to_string()),
            ("gap_frames", m.gap_frames.to_string()),
            ("max_gap_ms", ms(m.max_gap_frames as f64 * 1000.0 / rate)),
            ("latency_ms p50", ms(m.latency_p50_ms)),
            ("latency_ms p99", ms(m.latency_p99_ms)),
            ("latency_ms max", ms(m.latency_max_ms)),
        ],
        Some(t) => {
            let f = &t.played;
            vec![
                ("gaps", "not measured (tone)".into()),
                ("thd+n_db median", db(f.thdn.median_db)),
                ("thd+n_db p95", db(f.thdn.p95_db)),
                ("thd+n_db worst", db(f.thdn.worst_db)),
                ("thd+n outlier windows", f.thdn.outlier_windows.to_string()),
                (
                    "wow_flutter_pct peak",
                    format!("{:.5}", f.wow_flutter_peak_pct),
                ),
                (
                    "wow_flutter_pct rms",
                    format!("{:.5}", f.wow_flutter_rms_pct),
                ),
                ("source thd+n_db (rig)", db(t.reference.thdn.median_db)),
            ]
        }
    };
    let mut rows = vec![("audio_seconds", format!("{:.1}", m.audio_seconds))];
    rows.extend(measured);
    rows.extend([
        (
            "lost_packets",
            num(e.and_then(|e| e.recv("lost_packets")), 0),
        ),
        (
            "recovered_packets",
            num(e.and_then(|e| e.recv("recovered_packets")), 0),
        ),
        (
            "concealed_frames",
            num(e.and_then(|e| e.recv("concealed_frames")), 0),
        ),
        (
            "drift_ppm_estimated",
            num(e.and_then(|e| e.recv("drift_ppm")), 1),
        ),
        (
            "bit_exact_frames",
            if leg.tone.is_some() {
                "-".to_string()
            } else {
                format!("{} of {}", m.bit_exact_frames, m.checked_frames)
            },
        ),
        (
            "allocations_steady",
            num(e.and_then(|e| e.allocations()).map(|a| a as f64), 0),
        ),
        (
            "frees_steady",
            num(e.and_then(|e| e.frees()).map(|a| a as f64), 0),
        ),
        (
            "engine_gaps",
            num(e.and_then(|e| e.gaps()).map(|g| g as f64), 0),
        ),
        (
            "cpu s/audio min send",
            ms(per_minute(leg.cpu_sender_s, m.audio_seconds)),
        ),
        (
            "cpu s/audio min recv",
            ms(per_minute(leg.cpu_receiver_s, m.audio_seconds)),
        ),
        ("jackd_xruns", leg.jackd_xruns.to_string()),
        (
            "void",
            if void.is_empty() {
                "no".into()
            } else {
                format!("YES: {}", void.join("; "))
            },
        ),
    ]);
    rows
}

/// The summary: a `gaps:` line first (scripts grep for it), then a table.
pub fn summary(args: &RigArgs, main: Option<&Leg>, baseline: Option<&Leg>) -> String {
    let mut out = String::new();
    let first = main.or(baseline).expect("at least one run");
    let engine = first.engine.as_ref().and_then(|e| e.gaps());
    match &first.tone {
        None => {
            out += &format!("gaps: {}", first.mon.gaps);
            match engine {
                Some(g) if g == first.mon.gaps => out += &format!(" (engine: {g}, agree)"),
                Some(g) => out += &format!(" (engine: {g}, DISAGREE)"),
                None => out += &format!(" ({})", first.name),
            }
        }
        Some(t) => {
            out += &format!(
                "gaps: not measured with a tone ({} THD+N outlier windows)",
                t.played.thdn.outlier_windows
            );
            match engine {
                Some(g) => out += &format!(" (engine: {g})"),
                None => out += &format!(" ({})", first.name),
            }
        }
    }
    if let (Some(_), Some(b)) = (main, baseline) {
        match &b.tone {
            None => out += &format!("  baseline: {}", b.mon.gaps),
            Some(t) => {
                out += &format!(
                    "  baseline: {} outlier windows",
                    t.played.thdn.outlier_windows
                )
            }
        }
    }
    if !first.void_reasons().is_empty() {
        out += "  VOID";
    }
    out += "\n";
    let legs: Vec<&Leg> = main.into_iter().chain(baseline).collect();
    let cols: Vec<Vec<(&str, String)>> = legs.iter().map(|l| rows(args, l)).collect();
    out += &format!("{:<22}", "");
    for l in &legs {
        out += &format!("{:<21}", l.name);
    }
    out = out.trim_end().to_string() + "\n";
    for i in 0..cols[0].len() {
        let mut line = format!("{:<22}", cols[0][i].0);
        for c in &cols {
            line += &format!("{:<21}", c[i].1);
        }
        out += line.trim_end();
        out += "\n";
    }
    for l in &legs {
        if let Some(t) = &l.tone {
            out += &format!("{}: ", l.name);
            out += &crate::report::fidelity_line(&t.played);
        }
        if let Some(b) = &l.second {
            let s = &b.skew;
            let e = |v: &Option<Value>, k: &str| {
                v.as_ref()
                    .and_then(|v| v[k].as_u64())
                    .map_or("?".to_string(), |n| n.to_string())
            };
            out += &format!(
                "second receiver: gaps {} (engine {}), latency p50 {:.2} ms, xruns {}\n",
                b.mon.gaps,
                e(&b.engine, "gaps"),
                b.mon.latency_p50_ms,
                e(&b.engine, "xruns"),
            );
            if s.compared > 0 {
                out += &format!(
                    "skew (second − first, whole frames at the monitor's 16 bits, {} frames compared): mean {:+.3}, min {}, max {}, same frame {:.1} %, within ±1 frame {:.3} %\n",
                    s.compared,
                    s.mean_frames,
                    s.min_frames.map_or("–".into(), |v| format!("{v:+}")),
                    s.max_frames.map_or("–".into(), |v| format!("{v:+}")),
                    s.same_share * 100.0,
                    s.within_one_share * 100.0,
                );
            }
            if let Some(t) = &b.tone {
                out += "second receiver: ";
                out += &crate::report::fidelity_line(&t.played);
            }
            if let Some(t) = &b.tone_skew {
                let us = 1e6 / args.rate as f64;
                out += &format!(
                    "skew (second − first, below a frame by the tone's phase, {} blocks of 0.1 s): mean {:+.3} frames, min {:+.3}, max {:+.3}, |skew| p50 {:.1} µs, p99 {:.1} µs, within ±1 frame {:.2} %\n",
                    t.blocks,
                    t.mean_frames,
                    t.min_frames,
                    t.max_frames,
                    t.p50_abs_frames * us,
                    t.p99_abs_frames * us,
                    t.within_one_share * 100.0,
                );
            }
        }
    }
    if first.tone.is_some() {
        out += &format!("note: {TONE_GAPS_NOTE}\n");
    }
    out
}

/// The SVG plot of `leg` (latency over time, the receiver's slips as ppm, every gap).
pub fn plot(args: &RigArgs, leg: &Leg, baseline: Option<&Leg>) -> String {
    let m = &leg.mon;
    let gaps = plot::gap_marks(m.gap_list.iter().map(|g| (g.t_s, g.frames)), args.rate);
    let title = format!(
        "{} on the JACK rig: {} of audio, {} Hz 2 ch S16_LE, period {}",
        leg.name,
        crate::progress::fmt_audio_ms((m.audio_seconds * 1000.0) as u64),
        args.rate,
        args.period
    );
    let mut subtitle = match &leg.tone {
        None => format!(
            "{} gaps · latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            m.gaps, m.latency_p50_ms, m.latency_p99_ms, m.latency_max_ms
        ),
        Some(t) => format!(
            "{}: gaps and latency not measured · {} THD+N outlier windows{}",
            args.source.spec(),
            t.played.thdn.outlier_windows,
            crate::report::fidelity_subtitle(&t.played)
        ),
    };
    if let Some(lost) = leg.engine.as_ref().and_then(|e| e.recv("lost_packets")) {
        subtitle += &format!(" · {lost} lost packets");
    }
    if let Some(b) = baseline {
        match &b.tone {
            None => {
                subtitle += &format!(
                    " · baseline: {} gaps, p50 {:.0} ms",
                    b.mon.gaps, b.mon.latency_p50_ms
                )
            }
            Some(t) => {
                subtitle += &format!(
                    " · baseline: THD+N median {:.1} dB",
                    t.played.thdn.median_db
                )
            }
        }
    }
    if !leg.void_reasons().is_empty() {
        subtitle += " · VOID";
    }
    let fidelity = leg.tone.as_ref().map(|t| {
        (
            plot::fidelity_points(&t.series, crate::report::reference_hz(&t.played)),
            t.played.thdn.median_db,
            crate::report::tones_label(&t.played),
        )
    });
    plot::render_svg(&PlotInput {
        title: &title,
        subtitle: &subtitle,
        trace: &m.trace,
        gaps: &gaps,
        target_latency_ms: args.latency_ms,
        fidelity: fidelity
            .as_ref()
            .map(|(points, median_db, tones)| plot::FidelityPanel {
                points,
                median_db: *median_db,
                tones,
            }),
        skew: None,
    })
}
