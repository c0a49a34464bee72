//! Several receivers in step (presentation time), as processes on loopback: one sender to a
//! list of receivers whose virtual sound cards run on clocks of their own (+80 and −60 ppm;
//! the sender's at +20), each playing every frame `--sync-latency-ms` after its capture. Their
//! sinks note when each lap of the ramp began (the instant its frame 0 mod 65536 played,
//! interpolated to a fraction of a frame at the device's 32-bit width); both receivers run on
//! this host's monotonic clock, so the same lap's instants compare directly: their difference
//! is the skew between the two outputs.
//!
//! * Two receivers from the start: every lap after the first two within [`SKEW_US`].
//! * One that joins late, and then restarts: in step within a second each time, the other
//!   playing on without a gap.
//!
//! Every realtime thread allocates and frees nothing.

use serde_json::Value;
use std::path::Path;

mod common;
use common::*;

/// The common latency, capture to output, ms.
const LATENCY_MS: &str = "40";
/// How far apart two receivers may play the same frame, µs (about a frame at 48 kHz; the
/// skew measured here is a few µs: the margin is the shared machine's wake-up jitter).
const SKEW_US: f64 = 50.0;
/// A lap of the ramp at 48 kHz, s.
const LAP_S: f64 = 65_536.0 / 48_000.0;

fn receiver(port: u16, ppm: &str, f: &Files) -> Reaper {
    receiver_with(port, ppm, f, &[])
}

fn receiver_with(port: u16, ppm: &str, f: &Files, extra: &[&str]) -> Reaper {
    let mut c = bin();
    c.args([
        "recv",
        "--no-announce",
        "--priority",
        "0",
        "--stats-interval",
        "0",
    ])
    .arg("--listen")
    .arg(format!("127.0.0.1:{port}"))
    .arg("--device")
    .arg(format!("virtual:ppm={ppm}"))
    .args([
        "--sync-latency-ms",
        LATENCY_MS,
        "--playback-format",
        "S32_LE",
    ])
    .args(FMT)
    .args(extra);
    f.args(&mut c);
    Reaper(spawn_logged(c, &f.log))
}

fn sender(dest: &str, f: &Files) -> Reaper {
    sender_with(dest, f, &[])
}

fn sender_with(dest: &str, f: &Files, extra: &[&str]) -> Reaper {
    let mut c = bin();
    c.args(["send", "--priority", "0", "--stats-interval", "0"])
        .args(["--device", "virtual:ppm=20", "--dest", dest])
        .args(FMT)
        .args(extra);
    f.args(&mut c);
    Reaper(spawn_logged(c, &f.log))
}

/// Seconds of this host's monotonic clock (the clock the sinks note laps on).
fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn laps(j: &Value) -> Vec<f64> {
    j["heard_laps_s"]
        .as_array()
        .unwrap_or_else(|| panic!("no laps in {j}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// For each lap of `b` from `from_s` on: its instant less the same lap's in `a`, µs.
fn skews(a: &[f64], b: &[f64], from_s: f64) -> Vec<(f64, f64)> {
    b.iter()
        .filter(|&&t| t >= from_s)
        .filter_map(|&t| {
            let m = a
                .iter()
                .copied()
                .min_by(|x, y| (x - t).abs().total_cmp(&(y - t).abs()))?;
            ((m - t).abs() < LAP_S / 2.0).then_some((t, (t - m) * 1e6))
        })
        .collect()
}

/// Waits until the receiver at `f` has played `seconds` of the stream in step (by its
/// packet count and its presentation error being measured).
fn played(r: &mut Reaper, f: &Files, seconds: f64, what: &str) -> Value {
    let packets = (seconds * 48_000.0 / 256.0) as u64;
    wait_status(r, &f.sock(), what, |v| {
        let timed = v["sync_model_error_us"].as_f64().unwrap_or(0.0) > 0.0
            || v["presentation_error_us"].as_f64().unwrap_or(0.0) != 0.0;
        received(v) >= packets && timed
    })
}

/// A run in which a receiver's device underran (the shared machine stalled a thread, as a
/// process starting beside it can): its sound and its skew say nothing of netaudio. Such a
/// run is repeated, not judged.
struct Void(String);

fn void_if_xruns(j: &Value, who: &str) -> Result<(), Void> {
    match j["xruns"].as_u64().unwrap_or(0) {
        0 => Ok(()),
        n => Err(Void(format!("{who}: {n} xruns"))),
    }
}

fn clean(j: &Value, who: &str, log: &Path) {
    assert_eq!(j["allocations_rt"], 0, "{who}: {j}");
    assert_eq!(j["frees_rt"], 0, "{who}: {j}");
    assert_eq!(j["gaps"], 0, "{who}: {j}\n{}", text(log));
    assert_eq!(j["heard_gaps"], 0, "{who}: {j}\n{}", text(log));
}

/// Runs `attempt` until one is not void, three times at most.
fn judged(what: &str, attempt: impl Fn() -> Result<(), Void>) {
    let mut voids = Vec::new();
    for _ in 0..3 {
        match attempt() {
            Ok(()) => return,
            Err(Void(why)) => {
                eprintln!("{what}: void run ({why}), again");
                voids.push(why);
            }
        }
    }
    panic!("{what}: every run was void: {voids:?}");
}

#[test]
fn two_receivers_on_their_own_clocks_play_each_frame_together() {
    let _one = serial();
    judged("two receivers", two_receivers);
}

fn two_receivers() -> Result<(), Void> {
    let (pa, pb) = (free_port(), free_port());
    let (fa, fb, fs) = (Files::new("a"), Files::new("b"), Files::new("send"));
    let mut a = receiver(pa, "80", &fa);
    let mut b = receiver(pb, "-60", &fb);
    for (r, f) in [(&mut a, &fa), (&mut b, &fb)] {
        wait_status(r, &f.sock(), "a receiver to be ready", |_| true);
    }
    let mut s = sender(&format!("127.0.0.1:{pa},127.0.0.1:{pb}"), &fs);
    // Ten laps of the ramp.
    let va = played(&mut a, &fa, 14.0, "receiver a's stream");
    played(&mut b, &fb, 14.0, "receiver b's stream");
    // The sender's status lists both, playing, with the presentation errors they report.
    let vs = wait_status(
        &mut s,
        &fs.sock(),
        "the sender to list both receivers",
        |v| {
            v["receivers"].as_array().is_some_and(|l| {
                l.len() == 2
                    && l.iter()
                        .all(|r| r["playing"] == true && r["presentation_error_us"].is_i64())
            })
        },
    );
    for r in vs["receivers"].as_array().unwrap() {
        assert!(
            r["presentation_error_us"].as_i64().unwrap().abs() < 1000,
            "{vs}"
        );
        assert!(r["time_requests"].as_u64().unwrap() > 10, "{vs}");
    }
    let shown = bin()
        .args(["status", "--once", "--socket"])
        .arg(fs.sock())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("to 127.0.0.1:{pa}")) && shown.contains("presentation error"),
        "{shown}"
    );
    // Its status shows the time exchange: an offset from a clock it shares (a few µs of the
    // two paths' difference) and the model's error.
    assert!(va["sync_offset_us"].as_f64().unwrap().abs() < 100.0, "{va}");
    assert!(va["sync_model_error_us"].as_f64().unwrap() < 100.0, "{va}");
    assert!(va["presentation_error_us"].is_number(), "{va}");
    // The receivers first: a stream that ends is silence after it, which their sinks, not
    // knowing the source stopped, would hear as a gap.
    terminate(&mut a);
    terminate(&mut b);
    terminate(&mut s);
    let (ja, jb, js) = (
        read_json(&fa.json),
        read_json(&fb.json),
        read_json(&fs.json),
    );
    assert_eq!(js["allocations_rt"], 0, "{js}");
    assert_eq!(js["frees_rt"], 0, "{js}");
    in_step((&ja, &fa), (&jb, &fb), 6, "two receivers")
}

/// Both receivers played without a gap (a run with an xrun is void), and every lap of `b`
/// from its third on (at least `laps` of them) within [`SKEW_US`] of the same lap of `a`.
fn in_step(
    a: (&Value, &Files),
    b: (&Value, &Files),
    laps_at_least: usize,
    what: &str,
) -> Result<(), Void> {
    let ((ja, fa), (jb, fb)) = (a, b);
    void_if_xruns(ja, "receiver a")?;
    void_if_xruns(jb, "receiver b")?;
    clean(ja, "receiver a", &fa.log);
    clean(jb, "receiver b", &fb.log);
    let (la, lb) = (laps(ja), laps(jb));
    assert!(lb.len() > 2, "{la:?} {lb:?}");
    let d = skews(&la, &lb, lb[2]);
    assert!(d.len() >= laps_at_least, "{d:?}");
    for (t, us) in &d {
        assert!(
            us.abs() <= SKEW_US,
            "lap at {t:.3} s: receiver b {us:+.1} µs from receiver a; all: {d:?}"
        );
    }
    eprintln!(
        "{what}: skew per lap, µs: {:?}",
        d.iter().map(|x| x.1).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_late_joiner_and_a_restarted_receiver_are_in_step_within_a_second() {
    let _one = serial();
    judged("a late joiner", late_joiner);
}

fn late_joiner() -> Result<(), Void> {
    let (pa, pb) = (free_port(), free_port());
    let (fa, fs) = (Files::new("late-a"), Files::new("late-send"));
    let mut a = receiver(pa, "80", &fa);
    wait_status(&mut a, &fa.sock(), "receiver a to be ready", |_| true);
    let mut s = sender(&format!("127.0.0.1:{pa},127.0.0.1:{pb}"), &fs);
    played(&mut a, &fa, 4.0, "receiver a's stream");
    // Receiver b joins the stream playing, then restarts.
    let mut joins = Vec::new();
    for name in ["late-b1", "late-b2"] {
        let f = Files::new(name);
        let at = monotonic_s();
        let mut b = receiver(pb, "-60", &f);
        played(&mut b, &f, 6.0, "the late receiver's stream");
        terminate(&mut b);
        joins.push((at, f));
    }
    terminate(&mut a);
    terminate(&mut s);
    let ja = read_json(&fa.json);
    void_if_xruns(&ja, "receiver a")?;
    for (_, f) in &joins {
        void_if_xruns(&read_json(&f.json), "the late receiver")?;
    }
    clean(&ja, "receiver a, playing on", &fa.log);
    let la = laps(&ja);
    for (at, f) in &joins {
        let jb = read_json(&f.json);
        assert_eq!(jb["allocations_rt"], 0, "{jb}");
        assert_eq!(jb["frees_rt"], 0, "{jb}");
        // Joining is no gap: it starts from silence with one fade-in.
        assert_eq!(jb["gaps"], 0, "{jb}\n{}", text(&f.log));
        let lb = laps(&jb);
        // Every lap from a second after it started on is in step.
        let d = skews(&la, &lb, at + 1.0);
        assert!(d.len() >= 3, "{d:?} (laps {lb:?}, joined at {at})");
        eprintln!(
            "joined: (s after, µs) {:?}",
            skews(&la, &lb, 0.0)
                .iter()
                .map(|(t, us)| (((t - at) * 100.0).round() / 100.0, us.round()))
                .collect::<Vec<_>>()
        );
        for (t, us) in &d {
            assert!(
                us.abs() <= SKEW_US,
                "lap {:.2} s after joining: {us:+.1} µs from receiver a; all: {d:?}",
                t - at
            );
        }
    }
    Ok(())
}

#[test]
fn on_the_system_clock_two_receivers_play_each_frame_together() {
    let _one = serial();
    judged("the system clock", system_clock);
}

/// `sync.clock = "system"`: no time exchange; the hosts' wall clocks (here one host's) map the
/// capture times.
fn system_clock() -> Result<(), Void> {
    let system = ["--sync-clock", "system"];
    let (pa, pb) = (free_port(), free_port());
    let (fa, fb, fs) = (
        Files::new("sys-a"),
        Files::new("sys-b"),
        Files::new("sys-send"),
    );
    let mut a = receiver_with(pa, "80", &fa, &system);
    let mut b = receiver_with(pb, "-60", &fb, &system);
    for (r, f) in [(&mut a, &fa), (&mut b, &fb)] {
        wait_status(r, &f.sock(), "a receiver to be ready", |_| true);
    }
    let mut s = sender_with(&format!("127.0.0.1:{pa},127.0.0.1:{pb}"), &fs, &system);
    let va = played(&mut a, &fa, 10.0, "receiver a's stream");
    played(&mut b, &fb, 10.0, "receiver b's stream");
    // No time exchange: no model, no requests.
    assert_eq!(va["sync_model_error_us"], 0.0, "{va}");
    terminate(&mut a);
    terminate(&mut b);
    terminate(&mut s);
    let (ja, jb) = (read_json(&fa.json), read_json(&fb.json));
    assert!(text(&fs.log).contains("capture times on the system clock"));
    in_step((&ja, &fa), (&jb, &fb), 4, "system clock")
}
