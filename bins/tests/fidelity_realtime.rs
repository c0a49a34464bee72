//! The transparent drift correction in real time, through two processes: `netaudio send`
//! plays a 997 Hz half-scale tone on a virtual card 100 ppm fast, `netaudio recv` plays it on
//! a virtual card that records at 32 bits (as `playback_format = auto` opens a card that takes
//! them), with the default drift correction; the recording measures like the bit-exact tone
//! (THD+N within 1 dB of the 16-bit floor) and does not wobble.

use engine::format::{SampleFormat, StreamFormat};
use engine::sim::fidelity::FidelityAnalyzer;
use serde_json::Value;
use std::process::Stdio;

mod common;
use common::*;

/// A half-scale 16-bit tone measures −91.8 dB p95 bit-exact (the format's rounding noise).
const FLOOR_P95_DB: f64 = -91.8;

/// Runs on this shared machine that a stall (an xrun: the receiver's process was not run for
/// tens of milliseconds) spoils, and are repeated rather than counted, at most this many.
const ATTEMPTS: usize = 3;

#[test]
fn a_drifting_tone_comes_out_as_it_went_in() {
    let _serial = serial();
    for attempt in 1..=ATTEMPTS {
        let (bytes, j, v) = play_the_tone();
        let stalls = ["xruns", "late_renders", "gaps"]
            .iter()
            .map(|k| j[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if stalls > 0 && attempt < ATTEMPTS {
            eprintln!(
                "attempt {attempt} void: the machine stalled a process ({stalls} xruns, late renders, gaps)"
            );
            continue;
        }
        check(&bytes, &j, &v);
        return;
    }
}

/// Streams the tone for 25 s; returns the recording, the receiver's final counters and its
/// last status.
fn play_the_tone() -> (Vec<u8>, Value, Value) {
    let port = free_port();
    let rec = tmp("played-s32.raw");
    let sock = tmp("fidelity-recv.sock");
    let json = tmp("fidelity-recv.json");
    let _ = std::fs::remove_file(&rec);
    let mut r = Reaper(
        bin()
            .args(["recv", "--device"])
            .arg(format!("virtual:record={}", rec.display()))
            .args(["--playback-format", "S32_LE", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(FMT)
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(&sock)
            .arg("--stats-json")
            .arg(&json)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_status(&mut r.0, &sock, "the receiver to be ready", |_| true);
    let mut s = Reaper(
        bin()
            .args(["send", "--device", "virtual:ppm=100,sine=997", "--dest"])
            .arg(format!("127.0.0.1:{port}"))
            .args(FMT)
            .args(["--stats-interval", "0"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // 25 s of the tone played (the first second is the receiver measuring the drift).
    let played = |v: &Value| v["frames_played"].as_u64().unwrap_or(0);
    let v = wait_status(&mut r.0, &sock, "25 s of audio played", |v| {
        played(v) > 26 * 48_000
    });
    terminate(&mut s.0);
    terminate(&mut r.0);
    let j = read_json(&json);
    (std::fs::read(&rec).unwrap(), j, v)
}

fn check(bytes: &[u8], j: &Value, v: &Value) {
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    let drift = j["drift_ppm"].as_f64().unwrap();
    assert!((drift - 100.0).abs() < 2.0, "drift estimate {drift}: {j}");

    let f = StreamFormat::new(48_000, 2, SampleFormat::S32Le).unwrap();
    let mut a = FidelityAnalyzer::new(f, 997.0, 8.0);
    a.feed(&bytes[..bytes.len() / f.frame_bytes() * f.frame_bytes()]);
    let rep = a.report();
    eprintln!("real time, two processes, +100 ppm, resample, played at S32_LE: {rep:?}\n{v}");
    assert!(rep.thdn.windows >= 50, "{rep:?}");
    // A stall of this shared machine (an xrun) spoils a window or two, not the 95th
    // percentile.
    assert!(rep.thdn.p95_db <= FLOOR_P95_DB + 1.0, "{rep:?}\n{j}");
    assert!(rep.wow_flutter_rms_pct <= 0.001, "{rep:?}\n{j}");
    // The tone's frequency as heard: the sender's card's 997 Hz, 100 ppm fast.
    assert!(
        (rep.mean_freq_hz - 997.0 * (1.0 + 100e-6)).abs() < 0.01,
        "{rep:?}"
    );
}
