//! `hil-tests sim` as a user runs it: the report's fields, the plot, and clear errors.

use std::process::Command;

fn hil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hil-tests"))
}

/// Colours of the plot's THD+N and frequency deviation series.
const THDN_COLOR: &str = "#7B3FA0";
const DEVIATION_COLOR: &str = "#A0522D";

/// Whether the plot draws a line in `color` (the series are the only lines in their colours).
fn has_line(plot: &str, color: &str) -> bool {
    let stroke = format!("stroke=\"{color}\"");
    plot.lines()
        .any(|l| l.starts_with("<polyline") && l.contains(&stroke))
}

#[test]
fn sim_writes_a_complete_report_and_a_plot() {
    let dir = std::env::temp_dir().join(format!("hil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let svg = dir.join("report.svg");
    let out = hil()
        .args([
            "sim",
            "--duration",
            "2m",
            "--rate",
            "48000",
            "--channels",
            "2",
        ])
        .args([
            "--period",
            "64",
            "--drift-ppm",
            "-500",
            "--loss",
            "0",
            "--jitter-ms",
            "0",
        ])
        .args(["--seed", "1", "--quiet", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("gaps: 0 "), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "audio_seconds",
        "gaps",
        "gap_frames",
        "max_gap_ms",
        "lost_packets",
        "recovered_packets",
        "concealed_frames",
        "drift_ppm_estimated",
        "bit_exact_frames",
        "allocations_steady_state",
        "frees_steady_state",
        "engine_gaps",
    ] {
        assert!(v.get(key).is_some(), "report lacks {key}: {text}");
    }
    for key in ["p50", "p99", "max"] {
        assert!(v["latency_ms"][key].is_number(), "latency_ms.{key}");
    }
    assert_eq!(v["gaps"], 0);
    assert_eq!(v["engine_gaps"], 0);
    assert_eq!(v["allocations_steady_state"], 0);
    assert_eq!(v["frees_steady_state"], 0);
    assert_eq!(v["audio_seconds"], 120.0);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("<svg") && plot.trim_end().ends_with("</svg>"));
    // A ramp has no tone: no fidelity panels.
    assert!(!plot.contains("THD+N"));
    assert!(!has_line(&plot, THDN_COLOR) && !has_line(&plot, DEVIATION_COLOR));
    std::fs::remove_dir_all(&dir).ok();
}

/// With a sine source the report says how much the stream changed the sound: THD+N of the tone
/// (analyzer-style windows) and its wow & flutter, in the JSON and the text.
#[test]
fn a_sine_source_reports_thdn_and_wow_and_flutter() {
    let dir = std::env::temp_dir().join(format!("hil-cli-sine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = hil()
        .args(["sim", "--duration", "40s", "--source", "sine:997"])
        .args([
            "--drift-ppm",
            "0",
            "--drift-mode",
            "off",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("thd+n_db: median"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let t = &v["thdn_db"];
    // Untouched 16-bit half-scale tone: its quantization floor.
    let median = t["median"].as_f64().unwrap();
    assert!((-95.0..-86.0).contains(&median), "{t}");
    assert!(t["p95"].as_f64().unwrap() - median < 1.0, "{t}");
    assert!(t["windows"].as_u64().unwrap() > 100, "{t}");
    let w = &v["wow_flutter_pct"];
    assert!(w["rms"].as_f64().unwrap() < 1e-4, "{w}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Two tones near the top of the band: both are taken out, what is left is the 16-bit floor
/// (two quarter-scale tones over rounding noise: −89 dB).
#[test]
fn a_two_tone_source_reports_thdn_of_what_is_left() {
    let dir = std::env::temp_dir().join(format!("hil-cli-twotone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let svg = dir.join("report.svg");
    let out = hil()
        .args([
            "sim",
            "--duration",
            "40s",
            "--source",
            "twotone:18000,19000",
        ])
        .args(["--drift-mode", "off", "--quiet", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("of 18000 + 19000 Hz"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["source"], "twotone:18000,19000");
    let t = &v["thdn_db"];
    let median = t["median"].as_f64().unwrap();
    assert!((-90.5..-87.5).contains(&median), "{t}");
    assert_eq!(t["outlier_windows"], 0, "{t}");
    assert_eq!(t["tones_hz"], serde_json::json!([18000.0, 19000.0]));
    // The plot has the THD+N and frequency panels.
    let plot = std::fs::read_to_string(&svg).unwrap();
    for (series, color) in [("THD+N", THDN_COLOR), ("deviation", DEVIATION_COLOR)] {
        assert!(has_line(&plot, color), "no {series} series in the plot");
    }
    assert!(plot.contains("THD+N of 18000 + 19000 Hz"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_sources_are_named_with_the_accepted_forms() {
    for bad in ["noise", "twotone:18000", "sine:abc"] {
        let out = hil()
            .args(["sim", "--duration", "10s", "--source", bad, "-q"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(bad) && err.contains("sine[:HZ]") && err.contains("twotone[:F1,F2]"),
            "{bad}: {err}"
        );
    }
    // A tone the analyzer cannot measure at the rate.
    let out = hil()
        .args([
            "sim",
            "--duration",
            "10s",
            "--rate",
            "8000",
            "--source",
            "twotone",
        ])
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("twotone:18000,19000") && err.contains("below"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_named_with_a_fix() {
    let out = hil().args(["sim", "--duration", "5x"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5x") && err.contains("24h"), "{err}");

    let out = hil()
        .args(["sim", "--duration", "10s", "--loss", "150", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--loss 150"), "{err}");

    let out = hil()
        .args([
            "sim",
            "--duration",
            "10s",
            "--period",
            "256",
            "--latency-ms",
            "3",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raise latency_ms"), "{err}");
}

/// Several receivers: each one's figures and the skew between them, in the JSON, the text and
/// a panel of the plot.
#[test]
fn several_receivers_report_their_skew() {
    let dir = std::env::temp_dir().join(format!("hil-cli-rx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let svg = dir.join("report.svg");
    let out = hil()
        .args(["sim", "--duration", "2m", "--receivers", "3"])
        .args(["--jitter-ms", "0.5", "--quiet", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("gaps: 0 "), "{stdout}");
    assert!(stdout.contains("receivers: 3"), "{stdout}");
    assert!(
        stdout.contains("skew_us (DAC output of the same frame"),
        "{stdout}"
    );
    assert!(stdout.contains("  rx 2 - rx 0: mean"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rx = v["receivers"].as_array().expect("receivers");
    assert_eq!(rx.len(), 3);
    let ppm: Vec<f64> = rx
        .iter()
        .map(|x| x["clock_ppm"].as_f64().unwrap())
        .collect();
    assert_eq!(ppm, [-100.0, 0.0, 100.0]);
    for x in rx {
        assert_eq!(x["gaps"], 0, "{x}");
        assert!(x["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{x}");
        let d = x["delay_ms"].as_f64().unwrap();
        assert!((0.3..=5.0).contains(&d), "{x}");
    }
    let s = &v["skew"];
    assert!(s["frames_compared"].as_u64().unwrap() > 80 * 48_000, "{s}");
    for key in ["p50", "p99", "max"] {
        assert!(s["spread_us"][key].as_f64().unwrap() > 0.0, "{s}");
    }
    assert_eq!(s["per_receiver"].as_array().unwrap().len(), 2, "{s}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("skew against receiver 0"));
    assert!(plot.contains("height=\"772\""), "taller by the skew panel");
    // Receivers 1 and 2, each in its colour.
    assert!(has_line(&plot, "#2E9D48") && has_line(&plot, "#D64DA8"));
    // Out of range: named, with the range.
    let out = hil()
        .args(["sim", "--duration", "10s", "--receivers", "17", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--receivers 17") && err.contains("1..=16"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
