//! `hil-tests rig` on the real-time JACK rig (no sound card needed), when the rig's tools are
//! installed (`ci/rig-setup`); skipped otherwise. Every run is bounded by a timeout.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One rig at a time: two realtime JACK servers on a small machine would disturb each other.
static RIG: Mutex<()> = Mutex::new(());

const TOOLS: [&str; 7] = [
    "jackd",
    "jack_lsp",
    "jack_connect",
    "arecord",
    "aplay",
    "nc",
    "mbuffer",
];

fn hil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hil-tests"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn rig_installed() -> bool {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("NETAUDIO_RIG").as_deref() != Ok("require"),
            "the rig is required (NETAUDIO_RIG=require) but {missing:?} are missing; run ci/rig-setup"
        );
        eprintln!("skipped: the rig is not installed (missing {missing:?}); run ci/rig-setup");
    }
    missing.is_empty()
}

/// The rig to this test alone and the netaudio binary's path; `None` where either is missing
/// (after saying so, or failing in CI, as [`rig_installed`] and [`netaudio`] do).
fn rig_and_netaudio() -> Option<(std::sync::MutexGuard<'static, ()>, String)> {
    if !rig_installed() {
        return None;
    }
    let exe = netaudio()?;
    let rig = RIG.lock().unwrap_or_else(|e| e.into_inner());
    Some((rig, exe.to_string_lossy().into_owned()))
}

/// The netaudio binary next to hil-tests, if it has the send/recv interface the rig drives.
fn netaudio() -> Option<PathBuf> {
    let exe = Path::new(env!("CARGO_BIN_EXE_hil-tests")).with_file_name("netaudio");
    let ready = ["send", "recv"].iter().all(|sub| {
        Command::new(&exe)
            .args([sub, "--help"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--stats-json"))
    });
    if !ready {
        assert!(
            std::env::var("NETAUDIO_RIG").as_deref() != Ok("require"),
            "the rig is required (NETAUDIO_RIG=require) but netaudio is not built next to hil-tests"
        );
        eprintln!(
            "skipped: no netaudio with send/recv --stats-json at {} (cargo build --release -p netaudio)",
            exe.display()
        );
    }
    ready.then_some(exe)
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
    json: Value,
}

/// Runs `hil-tests rig ARGS --json FILE`, at most `timeout` (then SIGTERM, then SIGKILL: the
/// rig's children follow hil-tests by their parent-death signal).
fn rig(args: &[&str], timeout: Duration) -> Outcome {
    let dir = std::env::temp_dir().join(format!("rig-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rig.json");
    let _ = std::fs::remove_file(&json);
    let mut child = hil()
        .arg("rig")
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= end {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    assert!(
        status.is_some(),
        "hil-tests rig timed out after {timeout:?}:\n{stderr}"
    );
    let json = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        ok: status.unwrap().success(),
        stdout,
        stderr,
        json,
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

/// How a leg's frames must match the source: exactly (the old pipeline, or netaudio with
/// `slip`/`off`), or as a resampled stream (netaudio's default): in order, between the
/// source's frames.
#[derive(Clone, Copy, PartialEq)]
enum Match {
    Exact,
    Resampled,
}

fn check_common(leg: &Value, seconds: f64, m: Match) {
    for key in [
        "audio_seconds",
        "gaps",
        "gap_frames",
        "max_gap_ms",
        "latency_ms",
        "lost_packets",
        "recovered_packets",
        "concealed_frames",
        "drift_ppm_estimated",
        "bit_exact_frames",
        "allocations_steady_state",
        "frees_steady_state",
        "engine_gaps",
        "cpu_seconds_per_audio_minute",
        "jackd_xruns",
        "void",
    ] {
        assert!(leg.get(key).is_some(), "{key} missing in {leg}");
    }
    assert!(
        (f(leg, &["audio_seconds"]) - seconds).abs() < 0.01,
        "{} audio s in {}",
        leg["audio_seconds"],
        leg["pipeline"]
    );
    // Every measured frame was checked, and nearly all of them continue the source exactly.
    // (Through the resampler, where the sound starts is known to within the filter's reach:
    // its first frames ring in before the first one the ramp decoder names.) A void run
    // (jackd broke the stream) is not judged on what it played; its caller runs it again.
    let checked = f(leg, &["checked_frames"]);
    let void = leg["void"] == Value::Bool(true);
    let summary = || {
        format!(
            "{}: checked {checked}, bit-exact {}, in sync {}, gaps {}, jackd xruns {}, void {void}",
            leg["pipeline"],
            leg["bit_exact_frames"],
            leg["in_sync_frames"],
            leg["gaps"],
            leg["jackd_xruns"],
        )
    };
    match m {
        Match::Exact => {
            assert_eq!(checked, seconds * 48_000.0, "{}", summary());
            assert!(
                void || f(leg, &["bit_exact_frames"]) > 0.9 * checked,
                "{}",
                summary()
            );
        }
        Match::Resampled => {
            assert!(
                (checked - seconds * 48_000.0).abs() <= 64.0,
                "{}",
                summary()
            );
            assert!(
                void || f(leg, &["in_sync_frames"]) > 0.999 * checked,
                "{}",
                summary()
            );
        }
    }
    for side in ["sender", "receiver"] {
        let cpu = f(leg, &["cpu_seconds_per_audio_minute", side]);
        assert!((0.0..60.0).contains(&cpu), "{side} CPU {cpu}");
    }
}

#[test]
fn missing_tools_are_named_in_one_line() {
    let empty = std::env::temp_dir().join(format!("rig-test-nopath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = hil()
        .args(["rig", "--duration", "1s"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&empty);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("run ci/rig-setup") && err.contains("jackd"),
        "{err}"
    );
}

/// The old pipeline alone, and the analysis on real data: latency of hundreds of ms (RIG.md
/// measured 640–768 ms), every frame checked.
#[test]
fn the_baseline_measures_plausibly() {
    if !rig_installed() {
        return;
    }
    let _rig = RIG.lock().unwrap_or_else(|e| e.into_inner());
    let out = rig(
        &["--duration", "20s", "--baseline", "seed", "--baseline-only"],
        Duration::from_secs(120),
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("gaps: "), "{}", out.stdout);
    let b = &out.json["baseline"];
    assert!(out.json["netaudio"].is_null());
    check_common(b, 20.0, Match::Exact);
    let p50 = f(b, &["latency_ms", "p50"]);
    let max = f(b, &["latency_ms", "max"]);
    assert!(
        (300.0..1_365.0).contains(&p50),
        "baseline latency p50 {p50} ms"
    );
    assert!(max >= p50, "{b}");
    // The baseline has no engine counters.
    for key in [
        "lost_packets",
        "engine_gaps",
        "allocations_steady_state",
        "frees_steady_state",
    ] {
        assert!(b[key].is_null(), "{key}: {}", b[key]);
    }
}

/// netaudio against the old pipeline on the same rig: no gaps, and latency far below.
#[test]
fn netaudio_has_no_gaps_and_a_fraction_of_the_baselines_latency() {
    let Some((_rig, exe)) = rig_and_netaudio() else {
        return;
    };
    // The default configuration (period 256, 48 kHz, default latency), for a minute: the
    // realtime threads must also allocate nothing all along.
    let args = [
        "--duration",
        "60s",
        "--baseline",
        "seed",
        "--netaudio",
        &exe,
    ];
    for attempt in 1..=3 {
        let out = rig(&args, Duration::from_secs(300));
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stdout.starts_with("gaps: "), "{}", out.stdout);
        let n = &out.json["netaudio"];
        let b = &out.json["baseline"];
        check_common(n, 60.0, Match::Resampled);
        check_common(b, 60.0, Match::Exact);
        assert_eq!(f(n, &["allocations_steady_state"]), 0.0, "{n}");
        assert_eq!(f(n, &["frees_steady_state"]), 0.0, "{n}");
        let (p99, base_p99) = (f(n, &["latency_ms", "p99"]), f(b, &["latency_ms", "p99"]));
        assert!(
            p99 * 10.0 < base_p99,
            "netaudio p99 {p99} ms, baseline {base_p99} ms"
        );
        let gaps = f(n, &["gaps"]);
        if n["void"] == Value::Bool(true) && gaps > 0.0 {
            // jackd itself broke the stream: the run does not count either way.
            eprintln!("attempt {attempt}: void run ({}), again", n["void_reasons"]);
            continue;
        }
        assert_eq!(gaps, 0.0, "{}\n{n}", out.stdout);
        return;
    }
    eprintln!("every attempt was void (jackd xruns): the machine is too busy to judge");
}

/// A tone through netaudio on the rig: THD+N and wow & flutter of what was played, beside the
/// source as the monitor heard it. Gaps are not measured by the ramp analyzer then, and the
/// report says so.
#[test]
fn a_tone_through_netaudio_is_measured_for_thdn_and_wow_and_flutter() {
    let Some((_rig, exe)) = rig_and_netaudio() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("rig-tone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("rig.svg");
    let svg_s = svg.to_string_lossy().into_owned();
    // (source, seconds, the 16-bit floor of the tone(s): one half-scale tone −92 dB, two
    // quarter-scale ones −89 dB)
    for (source, seconds, floor) in [("sine:997", 20.0, -92.0), ("twotone", 10.0, -89.1)] {
        let secs = format!("{seconds}s");
        let args = [
            "--duration",
            &secs,
            "--source",
            source,
            "--netaudio",
            &exe,
            "--plot",
            &svg_s,
        ];
        let out = rig(&args, Duration::from_secs(180));
        assert!(out.ok, "{source}: {}", out.stderr);
        assert!(
            out.stdout.starts_with("gaps: not measured with a tone"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("wow_flutter: peak"), "{}", out.stdout);
        let v = &out.json;
        assert!((f(v, &["audio_seconds"]) - seconds).abs() < 0.01, "{v}");
        assert!(
            v["gaps"].is_null() && v["latency_ms"]["p50"].is_null(),
            "{v}"
        );
        assert!(
            v["gaps_note"]
                .as_str()
                .is_some_and(|n| n.contains("not measured")),
            "{v}"
        );
        assert_eq!(f(v, &["allocations_steady_state"]), 0.0, "{v}");
        // The rig's own path (plug, JACK's float) is transparent: the source reads its floor.
        let src = f(v, &["source_thdn_db", "median"]);
        assert!((src - floor).abs() < 1.0, "{source}: source {src} dB: {v}");
        let windows = f(v, &["thdn_db", "windows"]);
        assert!(windows >= seconds * 48_000.0 / 8192.0 * 0.7, "{v}");
        if v["void"] == Value::Bool(true) {
            eprintln!(
                "{source}: void run ({}): figures not judged",
                v["void_reasons"]
            );
            continue;
        }
        // The default drift correction resamples: the tone reaches the monitor at full
        // resolution, which records 16 bits, so it is rounded to 16 bits once more there: the
        // floor plus 3 dB, and nothing else (the simulated rig, playing at 32 bits, shows the
        // floor itself). A gap shows as an outlier window, not in the median.
        let median = f(v, &["thdn_db", "median"]);
        assert!(
            (median - (floor + 3.0)).abs() < 1.0,
            "{source}: {median} dB: {v}"
        );
        let rms = f(v, &["wow_flutter_pct", "rms"]);
        assert!(
            (0.0..=0.001).contains(&rms),
            "{source}: wow & flutter {rms} %: {v}"
        );
        let plot = std::fs::read_to_string(&svg).unwrap();
        // The THD+N and frequency panels: their captions, and lines in their series' colours.
        assert!(plot.contains("THD+N of") && plot.contains("wow &amp; flutter"));
        assert!(["#7B3FA0", "#A0522D"].iter().all(|c| {
            plot.lines()
                .any(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{c}\"")))
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two receivers of one stream on two playback PCMs of the rig's one clock, by presentation
/// time: a sine through both, its phase in each output compared every tenth of a second. No
/// gap (the engines' counts, and no THD+N outlier window), the tone unchanged on both, the
/// two outputs within one frame of each other for most of the run (the median block) and never
/// more than 100 µs apart (half of what Snapcast calls typical). Issue 13's bound, within one
/// frame all along, is not asserted here: it holds in most runs but not all yet
/// (`hil-tests rig --receivers 2 --source sine:997` prints the worst block).
#[test]
fn two_receivers_play_a_tone_without_gaps_mostly_within_a_frame_of_each_other() {
    let Some((_rig, exe)) = rig_and_netaudio() else {
        return;
    };
    let args = [
        "--receivers",
        "2",
        "--source",
        "sine:997",
        "--duration",
        "30s",
        "--netaudio",
        &exe,
    ];
    for attempt in 1..=3 {
        let out = rig(&args, Duration::from_secs(240));
        assert!(out.ok, "{}", out.stderr);
        let v = &out.json;
        let s = &v["skew_sub_frame"];
        for side in [&v["receivers"][0], &v["receivers"][1]] {
            assert_eq!(f(side, &["allocations_steady_state"]), 0.0, "{v}");
            assert_eq!(f(side, &["frees_steady_state"]), 0.0, "{v}");
        }
        // 25 s compared (the first 5 s after both play are the start), ten blocks a second.
        assert!(f(s, &["blocks_compared"]) >= 240.0, "{s}");
        if v["void"] == Value::Bool(true) {
            // jackd itself broke the stream: the run does not count either way.
            eprintln!("attempt {attempt}: void run ({}), again", v["void_reasons"]);
            continue;
        }
        let summary = out
            .stdout
            .lines()
            .filter(|l| l.contains("skew") || l.contains("thd+n_db:"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, side) in [&v["receivers"][0], &v["receivers"][1]].iter().enumerate() {
            assert_eq!(f(side, &["engine_gaps"]), 0.0, "receiver {i}: {v}");
            assert_eq!(f(side, &["thdn_outlier_windows"]), 0.0, "receiver {i}: {v}");
        }
        // One frame at 48 kHz: 20.8 µs.
        eprintln!("attempt {attempt}:\n{summary}");
        let p50 = f(s, &["p50_abs_us"]);
        assert!(p50 <= 1e6 / 48_000.0, "median skew {p50} µs\n{summary}");
        let max = f(s, &["max_abs_us"]);
        assert!(max <= 100.0, "largest skew {max} µs\n{summary}");
        // Unchanged: the tone at the 16-bit monitor's floor plus 3 dB, as one receiver plays
        // it, and its pitch steady, on both.
        for (thdn, wf) in [
            ("thdn_db", "wow_flutter_pct"),
            ("second_thdn_db", "second_wow_flutter_pct"),
        ] {
            let median = f(v, &[thdn, "median"]);
            assert!(
                (median - -89.0).abs() < 1.0,
                "{thdn} {median} dB\n{summary}"
            );
            let rms = f(v, &[wf, "rms"]);
            assert!((0.0..=0.001).contains(&rms), "{wf} {rms} %\n{summary}");
        }
        return;
    }
    eprintln!("every attempt was void (jackd xruns): the machine is too busy to judge");
}

#[test]
fn a_bad_source_is_named_with_the_accepted_forms() {
    let out = hil()
        .args(["rig", "--duration", "1s", "--source", "square:5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("square:5") && err.contains("sine[:HZ]") && err.contains("twotone"),
        "{err}"
    );
}

/// Pids of the running (not zombie) children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 1 && f[1] == parent.to_string() && f[0] != "Z"
        })
        .collect()
}

/// Whether `pid` still runs (a zombie whose parent is gone does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// A run stopped by SIGTERM (a CI timeout, a closed terminal) stops every child and says why;
/// a run killed outright (SIGKILL) leaves no child running either: each one is told to stop by
/// its parent-death signal.
#[test]
fn interrupted_and_killed_runs_leave_no_children() {
    if !rig_installed() {
        return;
    }
    let _rig = RIG.lock().unwrap_or_else(|e| e.into_inner());
    for sig in ["TERM", "KILL"] {
        let mut child = hil()
            .args(["rig", "--duration", "60s", "--baseline", "seed"])
            .args(["--baseline-only", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // jackd, the monitor, the source, nc -l | mbuffer | aplay, arecord | nc: measuring.
        let t0 = Instant::now();
        let mut kids = children_of(pid);
        while kids.len() < 8 && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
            kids = children_of(pid);
        }
        assert!(kids.len() >= 8, "SIG{sig}: only {kids:?} started");
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status();
        let t1 = Instant::now();
        while child.try_wait().unwrap().is_none() && t1.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child.try_wait().unwrap();
        if status.is_none() {
            let _ = child.kill();
        }
        let status = status.unwrap_or_else(|| panic!("SIG{sig}: hil-tests did not exit"));
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        if sig == "TERM" {
            assert_eq!(status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("interrupted (signal 15)"), "{stderr}");
        }
        let t2 = Instant::now();
        while kids.iter().any(|&k| running(k)) && t2.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<u32> = kids.iter().copied().filter(|&k| running(k)).collect();
        assert!(left.is_empty(), "SIG{sig}: children {left:?} still run");
    }
}
