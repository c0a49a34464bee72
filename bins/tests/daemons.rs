//! `netaudio` as a user runs it: the demo, a sender and a receiver as separate processes over
//! loopback with virtual sound cards, a sender restart, and errors that name the fix.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

mod common;
use common::*;

#[test]
fn demo_streams_without_gaps_or_allocations() {
    let _serial = serial();
    let json = tmp("demo.json");
    let out = bin()
        .args([
            "demo",
            "--duration",
            "6s",
            "--drift-ppm",
            "-300",
            "--latency-ms",
            "40",
        ])
        .args(FMT)
        .arg("--stats-json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("gaps: 0 (engine: 0, agree)"), "{stdout}");
    let j = read_json(&json);
    assert_eq!(j["gaps"], 0);
    assert_eq!(j["engine_gaps"], 0);
    assert_eq!(j["allocations_rt"], 0);
    assert_eq!(j["frees_rt"], 0);
    assert!(j["checked_frames"].as_u64().unwrap() > 48_000 * 5);
    let p50 = j["latency_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - 40.0).abs() < 2.0, "latency {p50}");
}

/// The README's first command (`./run`) is this demo with every default: 44.1 kHz, a sender
/// card 100 ppm fast, the default target latency. The realtime loops must keep pace with the
/// devices period after period (a loop that re-arms its wake-up from when its work ends falls
/// behind a fast card until packets leave in bursts).
#[test]
fn the_default_demo_streams_without_gaps() {
    let _serial = serial();
    let json = tmp("demo-default.json");
    let out = bin()
        .args(["demo", "--duration", "12s", "--stats-interval", "0"])
        .arg("--stats-json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let j = read_json(&json);
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["engine_gaps"], j["gaps"], "{j}");
    // The loops falling behind the devices shows as gaps without xruns. A stall of the whole
    // machine (this shared VM stops both realtime threads longer than the device buffer now
    // and then) shows as xruns on the virtual cards, each costing at most one gap: those are
    // the rig's, not the loops'.
    let (gaps, xruns) = (j["gaps"].as_u64().unwrap(), j["xruns"].as_u64().unwrap());
    assert!(gaps <= xruns, "{gaps} gaps with {xruns} xruns: {j}");
    if gaps == 0 {
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("the machine stalled: {xruns} xruns, {gaps} gaps");
    }
}

/// The demo playing a tone: THD+N and wow & flutter of what the receiver's virtual card played,
/// measured off the realtime threads; gaps are not measured frame by frame then, and it says so.
#[test]
fn a_demo_of_a_tone_reports_thdn_and_wow_and_flutter() {
    let _serial = serial();
    for (source, tones) in [
        ("sine:997", serde_json::json!([997.0])),
        ("twotone:997,1997", serde_json::json!([997.0, 1997.0])),
    ] {
        let json = tmp("demo-tone.json");
        // Equal clocks and no drift correction: the stream plays every frame as sent.
        let out = bin()
            .args(["demo", "--duration", "8s", "--drift-ppm", "0"])
            .args([
                "--drift-mode",
                "off",
                "--source",
                source,
                "--latency-ms",
                "40",
            ])
            .args(["--stats-interval", "0"])
            .args(FMT)
            .arg("--stats-json")
            .arg(&json)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{source}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("gaps: not measured with a tone"),
            "{stdout}"
        );
        assert!(stdout.contains("thd+n_db: median"), "{stdout}");
        let j = read_json(&json);
        assert_eq!(j["source"], source);
        assert!(j["gaps"].is_null() && j["gaps_note"].is_string(), "{j}");
        assert_eq!(j["allocations_rt"], 0, "{j}");
        assert_eq!(j["frees_rt"], 0, "{j}");
        assert_eq!(j["fidelity_dropped_frames"], 0, "{j}");
        let t = &j["thdn_db"];
        assert_eq!(t["tones_hz"], tones, "{j}");
        // 8 s of audio, the first 2 s start-up: about 35 windows measured.
        let windows = t["windows"].as_u64().unwrap();
        assert!((25..=45).contains(&windows), "{j}");
        // Nothing touched the samples: the median window is 16-bit rounding noise (−92 dB
        // for one half-scale tone, −89 dB for two at a quarter each). A stall of this shared
        // machine may cost a window (an xrun on a virtual card), never the median.
        let median = t["median"].as_f64().unwrap();
        assert!((-93.5..-88.0).contains(&median), "{source}: {j}");
        // The first tone's frequency; a stall's gap moves one window's by at most
        // rate / (2 · 8192) = 2.9 Hz, the mean over 25 windows or more by 0.12 Hz.
        let mean = j["wow_flutter_pct"]["mean_freq_hz"].as_f64().unwrap();
        assert!((mean - 997.0).abs() < 0.15, "{j}");
    }
    // A tone the analyzer cannot measure is refused with the reason.
    let out = bin()
        .args(["demo", "--duration", "1s", "--source", "sine:30000"])
        .args(FMT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sine:30000") && err.contains("below"), "{err}");
}

/// A receiver on virtual cards; it answers `netaudio status` at `status_socket(json)`.
fn recv(port: u16, json: &PathBuf) -> Child {
    bin()
        .args(["recv", "--device", "virtual", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--latency-ms", "40", "--stats-interval", "0"])
        .arg("--status-socket")
        .arg(status_socket(json))
        .args(FMT)
        .arg("--stats-json")
        .arg(json)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn send(port: u16, json: &PathBuf) -> Child {
    bin()
        .args(["send", "--device", "virtual:ppm=250", "--dest"])
        .arg(format!("localhost:{port}"))
        .args(["--stats-interval", "0"])
        .args(FMT)
        .arg("--stats-json")
        .arg(json)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sender_and_receiver_processes_stream_and_survive_a_sender_restart() {
    let _serial = serial();
    // A playback xrun is the machine stalling the receiver's thread (a process starting beside
    // it on this 2-core machine, its memory being locked): that run says nothing of netaudio
    // and is repeated, three times at most.
    let mut voids = Vec::new();
    for _ in 0..3 {
        match restart_run() {
            Ok(()) => return,
            Err(why) => {
                eprintln!("void run: {why}");
                voids.push(why);
            }
        }
    }
    panic!("every run was void: {voids:?}");
}

fn restart_run() -> Result<(), String> {
    let port = free_port();
    let (rj, sj, sj2) = (tmp("recv.json"), tmp("send.json"), tmp("send2.json"));
    let mut r = recv(port, &rj);
    let sock = status_socket(&rj);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    let mut s = send(port, &sj);
    // 3 s of stream (187.5 packets a second).
    let v = wait_status(&mut r, &sock, "3 s of the stream", |v| received(v) >= 560);
    // The sender dies without a word, and a new one starts.
    s.kill().unwrap();
    s.wait().unwrap();
    let mut s2 = send(port, &sj2);
    let before = received(&v);
    wait_status(&mut r, &sock, "2.5 s of the new stream", |v| {
        v["resyncs"].as_u64() >= Some(1) && received(v) >= before + 470
    });
    terminate(&mut r);
    terminate(&mut s2);
    let rj = read_json(&rj);
    let sj2 = read_json(&sj2);
    if rj["xruns"] != 0 {
        return Err(format!("the receiver's card had {} xruns", rj["xruns"]));
    }
    assert_eq!(rj["resyncs"], 1, "{rj}");
    assert_eq!(rj["gaps"], 1, "one gap, at the restart: {rj}");
    assert_eq!(rj["heard_gaps"], 1, "the virtual card heard the same: {rj}");
    assert_eq!(rj["allocations_rt"], 0);
    assert_eq!(rj["frees_rt"], 0);
    assert_eq!(sj2["allocations_rt"], 0);
    assert_eq!(sj2["frees_rt"], 0);
    assert_eq!(rj["xruns"], 0);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root the realtime threads got SCHED_FIFO (read back from the kernel in rt.rs).
        assert_eq!(rj["rt_fifo"], true);
        assert_eq!(sj2["rt_fifo"], true);
    }
    assert!(rj["packets_received"].as_u64().unwrap() > 900, "{rj}");
    assert!(sj2["packets_sent"].as_u64().unwrap() > 400, "{sj2}");
    Ok(())
}

/// A sender stopped cleanly (SIGTERM) sends END packets: the receiver plays out and fades,
/// counts no gap but `streams_ended`, logs "sender stopped", and takes up the next sender
/// without a gap. A sender killed with SIGKILL sends nothing: that stop is one gap, as before.
#[test]
fn a_clean_sender_stop_is_no_gap_and_a_killed_sender_one() {
    let _serial = serial();
    let port = free_port();
    let (rj, rlog, rsock) = (
        tmp("end-recv.json"),
        tmp("end-recv.log"),
        tmp("end-recv.sock"),
    );
    let mut r = Reaper(
        bin()
            .args(["recv", "--device", "virtual", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--latency-ms", "40", "--stats-interval", "0"])
            .args(FMT)
            .arg("--status-socket")
            .arg(&rsock)
            .arg("--stats-json")
            .arg(&rj)
            .stderr(std::fs::File::create(&rlog).unwrap())
            .spawn()
            .unwrap(),
    );
    let sender = |n: u32| {
        let json = tmp(&format!("end-send{n}.json"));
        let child = bin()
            .args(["send", "--device", "virtual:ppm=250", "--dest"])
            .arg(format!("localhost:{port}"))
            .args(["--stats-interval", "0"])
            .args(FMT)
            .arg("--status-socket")
            .arg(tmp(&format!("end-send{n}.sock")))
            .arg("--stats-json")
            .arg(&json)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (Reaper(child), json)
    };
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let silent = |v: &Value| {
        let peaks = v["peaks_dbfs"].as_array().unwrap();
        peaks.iter().all(|p| p.as_f64().unwrap() <= -119.0)
    };
    let playing = |v: &Value| {
        let peaks = v["peaks_dbfs"].as_array().unwrap();
        peaks.iter().any(|p| p.as_f64().unwrap() > -60.0)
    };
    let long = Duration::from_secs(15);
    wait_for("the receiver's status socket", long, || status(&rsock));

    let (mut s1, sj1) = sender(1);
    wait_for("packets from the first sender", long, || {
        status(&rsock).filter(|v| u(v, "packets_received") > 300 && playing(v))
    });
    terminate(&mut s1);
    // The END packets arrive; what the receiver held plays out, fades, then silence.
    let v = wait_for("the end of the first stream, played out", long, || {
        status(&rsock).filter(|v| u(v, "streams_ended") == 1 && silent(v))
    });
    assert_eq!(u(&v, "gaps"), 0, "{v}");
    assert_eq!(v["concealed_ms"].as_f64(), Some(0.0), "{v}");
    let sj1 = read_json(&sj1);
    assert_eq!(
        sj1["allocations_rt"], 0,
        "the END path allocates nothing: {sj1}"
    );
    // `netaudio status` shows it, in JSON and on the screen.
    let out = bin()
        .args(["status", "--json", "--socket"])
        .arg(&rsock)
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["streams_ended"].as_u64(), j["gaps"].as_u64()),
        (Some(1), Some(0))
    );
    let out = bin()
        .args(["status", "--once", "--socket"])
        .arg(&rsock)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("1 senders stopped cleanly"), "{screen}");

    // The next sender is taken up without a gap.
    let received = u(&v, "packets_received");
    let (mut s2, _) = sender(2);
    wait_for("packets from the second sender", long, || {
        status(&rsock).filter(|v| u(v, "packets_received") > received + 300 && playing(v))
    });
    // Killed: no END, the receiver runs dry and conceals: one gap.
    s2.kill().unwrap();
    s2.wait().unwrap();
    wait_for("the gap after the killed sender", long, || {
        status(&rsock).filter(|v| u(v, "gaps") >= 1 && silent(v))
    });
    terminate(&mut r);
    let j = read_json(&rj);
    assert_eq!(j["gaps"], 1, "only the killed sender's stop is a gap: {j}");
    assert_eq!(j["streams_ended"], 1, "{j}");
    assert_eq!(j["resyncs"], 1, "{j}");
    // The virtual card's analyzer knows only the samples: it hears the music stop twice.
    assert_eq!(j["heard_gaps"], 2, "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    let log = std::fs::read_to_string(&rlog).unwrap();
    assert_eq!(log.matches("sender stopped").count(), 1, "{log}");
}

#[test]
fn bad_arguments_name_the_value_and_the_fix() {
    let _serial = serial();
    let cases: [(&[&str], &str); 7] = [
        (&["recv", "--latency", "sometimes"], "use fixed or auto"),
        (
            &[
                "recv",
                "--latency",
                "auto",
                "--latency-min-ms",
                "50",
                "--latency-max-ms",
                "10",
            ],
            "latency_min_ms <= latency_max_ms",
        ),
        (
            &["send", "--dest", "no-port-here:99999"],
            "no-port-here:99999",
        ),
        (&["recv", "--period", "5"], "--period 5"),
        (&["demo", "--drift-ppm", "9000"], "--drift-ppm 9000"),
        (&["demo", "--source", "square"], "twotone[:F1,F2]"),
        (&["recv", "--device", "virtual:ppm=x"], "ppm=x"),
    ];
    for (args, needle) in cases {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// One notification datagram as text: `VAR=value` lines, each ended by a newline or not (as
/// `sd_notify(3)` allows); one variable a datagram here.
fn notification(datagram: &[u8]) -> String {
    let text = String::from_utf8_lossy(datagram);
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

#[test]
fn under_systemd_it_notifies_ready_and_feeds_the_watchdog() {
    let _serial = serial();
    let path = tmp("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = bin()
        .args(["recv", "--device", "virtual", "--listen", "127.0.0.1:0"])
        .args(["--stats-interval", "0.2", "--log-level", "warn"])
        .env("NOTIFY_SOCKET", &path)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m == "READY=1")
        && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2)
    {
        let n = sock.recv(&mut buf).expect("a notification within 5 s");
        seen.push(notification(&buf[..n]));
    }
    terminate(&mut r);
    let n = sock.recv(&mut buf).unwrap();
    let mut last = notification(&buf[..n]);
    while last == "WATCHDOG=1" {
        let n = sock.recv(&mut buf).unwrap();
        last = notification(&buf[..n]);
    }
    assert_eq!(last, "STOPPING=1");
}

/// What a daemon told systemd, and how it ended, when its realtime thread failed on purpose.
struct FaultRun {
    /// Notifications up to the second `WATCHDOG=1`, right after which the daemon arms the fault.
    before: Vec<String>,
    /// Every notification after that, until the daemon exited.
    after: Vec<String>,
    code: Option<i32>,
    stderr: String,
}

/// Runs `netaudio args` under a fake systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC` of 6 s: the
/// daemon feeds the watchdog every 3 s and gives up on a silent realtime thread after 3 s) with
/// `NETAUDIO_TEST_FAULT=fault`.
fn run_with_fault(fault: &str, args: &[&str]) -> FaultRun {
    use std::io::Read;
    let path = tmp(&format!("notify-{fault}.sock"));
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    // The deadline of each notification awaited.
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Reaper(
        bin()
            .args(args)
            .args(["--stats-interval", "0", "--log-level", "warn"])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "6000000")
            .env("NETAUDIO_TEST_FAULT", fault)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 1024];
    let mut before: Vec<String> = Vec::new();
    // Ready, and the watchdog fed twice.
    while before.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{fault}: no notification within 10 s ({e}): {before:?}"));
        before.push(notification(&buf[..n]));
    }
    // The daemon gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = d.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{fault}: the daemon still runs 30 s after the fault"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // All it sent is waiting in the socket now.
    sock.set_nonblocking(true).unwrap();
    let mut after = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        after.push(notification(&buf[..n]));
    }
    let mut stderr = String::new();
    d.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    FaultRun {
        before,
        after,
        code: status.code(),
        stderr,
    }
}

/// The watchdog proves the realtime thread is alive: once it is stuck or has panicked, the
/// daemon feeds the watchdog no more, says why (in the log and to systemd), and exits with
/// code 3 so that systemd's `Restart=always` starts it again.
#[test]
fn the_watchdog_is_fed_only_while_the_realtime_thread_runs() {
    let _serial = serial();
    let port = free_port().to_string();
    let dest = format!("127.0.0.1:{port}");
    let cases: [(&str, &[&str], &str); 2] = [
        (
            "rt-stall",
            &["recv", "--device", "virtual", "--listen", "127.0.0.1:0"],
            "the realtime thread na-playback stopped: no heartbeat",
        ),
        (
            "rt-panic",
            &["send", "--device", "virtual", "--dest", &dest],
            "the realtime thread na-capture stopped: it panicked",
        ),
    ];
    for (fault, args, why) in cases {
        let r = run_with_fault(fault, args);
        assert_eq!(r.before[0], "READY=1", "{fault}: {:?}", r.before);
        assert!(
            !r.after.iter().any(|m| m == "WATCHDOG=1"),
            "{fault}: the watchdog was fed after the fault: {:?}",
            r.after
        );
        assert!(
            r.after
                .iter()
                .any(|m| m.starts_with("STATUS=") && m.contains(why)),
            "{fault}: {:?}",
            r.after
        );
        assert_eq!(r.code, Some(3), "{fault}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{fault}: {}", r.stderr);
    }
}

#[test]
fn check_reports_every_problem_of_a_config_with_its_line() {
    let _serial = serial();
    let bad = tmp("bad.toml");
    std::fs::write(
        &bad,
        "# sender\n[audio]\ndevice = \"virtual\"\nrate = 1234567\nperiod_frame = 256\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.toml:4: audio.rate: 1234567 is out of range"),
        "{text}"
    );
    assert!(text.contains("8000..=384000"), "{text}");
    assert!(
        text.contains(
            "bad.toml:5: audio.period_frame: unknown key; did you mean \"period_frames\"?"
        ),
        "{text}"
    );

    let good = tmp("good.toml");
    std::fs::write(&good, "[audio]\ndevice = \"virtual\"\nrate = 48000\n").unwrap();
    let out = bin()
        .args(["check", "--board", "generic", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("rate = 48000") && text.contains("accepts 48000 Hz"),
        "{text}"
    );
}

#[test]
fn devices_runs_with_or_without_a_sound_card() {
    let _serial = serial();
    let out = bin().arg("devices").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No sound cards found") || text.contains("device = \"hw:CARD="),
        "{text}"
    );
}

#[test]
fn status_attaches_to_a_running_daemon() {
    let _serial = serial();
    let port = free_port();
    let sock = tmp("status.sock");
    let metrics_port = free_port();
    // Reaped on every way out, a failed assertion included (a leaked daemon's realtime
    // threads would disturb every test after it).
    let mut r = Reaper(
        bin()
            .args(["recv", "--device", "virtual", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(&sock)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(FMT)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sj = tmp("status-send.json");
    let mut s = Reaper(send(port, &sj));
    // Packets, and the stream heard on both channels (the first stream plays once the drift
    // is measured, about a second after its first packet).
    let heard = |v: &Value| {
        v["peaks_dbfs"].as_array().is_some_and(|p| {
            p.len() == 2 && p.iter().all(|x| x.as_f64().is_some_and(|d| d > -60.0))
        })
    };
    wait_status(&mut r.0, &sock, "100 packets, heard", |v| {
        received(v) > 100 && heard(v)
    });
    let v = status_cli_json(&sock);
    assert_eq!(v["role"], "receiver");
    assert!(v["packets_received"].as_u64().unwrap() > 100, "{v}");
    // The meter shows the last period's peaks. The test signal is two sawtooth ramps half a
    // lap apart, so whenever one is near zero the other is near full scale: the louder channel
    // is always above half scale (-6 dBFS), and both carry signal.
    let peaks = v["peaks_dbfs"].as_array().unwrap();
    assert_eq!(peaks.len(), 2);
    let (p0, p1) = (peaks[0].as_f64().unwrap(), peaks[1].as_f64().unwrap());
    assert!(p0.max(p1) > -6.1, "{v}");
    assert!(p0.min(p1) > -60.0, "{v}");
    let screen = bin()
        .args(["status", "--once", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&screen.stdout);
    assert!(
        text.contains("buffer") && text.contains("dBFS") && text.contains("gaps"),
        "{text}"
    );
    // Prometheus text on localhost.
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("netaudio_packets_received{role=\"receiver\"}"),
        "{body}"
    );
    terminate(&mut r.0);
    terminate(&mut s.0);
    // Nobody there: a clear message.
    let out = bin()
        .args(["status", "--json", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no netaudio daemon answers"));
}

/// A seeded loss-injecting UDP proxy: datagrams from the sender go on to the receiver, except
/// about one in `1 / loss`; datagrams from the receiver (NACKs) go back to the sender. Returns
/// its port and a counter of datagrams dropped; stops when `stop` is set.
fn lossy_proxy(
    to: u16,
    loss: f64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::Ordering;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = dropped.clone();
    std::thread::spawn(move || {
        let receiver: std::net::SocketAddr = format!("127.0.0.1:{to}").parse().unwrap();
        let mut sender = None;
        let mut rng = engine::rng::Rng::new(5);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if from == receiver {
                if let Some(s) = sender {
                    let _ = sock.send_to(&buf[..n], s);
                }
                continue;
            }
            sender = Some(from);
            if rng.chance(loss) {
                d.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = sock.send_to(&buf[..n], receiver);
        }
    });
    (port, dropped)
}

#[test]
fn nacks_recover_packets_a_lossy_link_drops() {
    use std::sync::atomic::Ordering;
    let _serial = serial();
    let port = free_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (proxy, dropped) = lossy_proxy(port, 0.03, stop.clone());
    let (rj, sj) = (tmp("lossy-recv.json"), tmp("lossy-send.json"));
    let mut r = recv(port, &rj);
    let sock = status_socket(&rj);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    let mut s = send(proxy, &sj);
    // 5 s of stream through the lossy link (187.5 packets a second).
    wait_status(&mut r, &sock, "5 s of the stream", |v| received(v) >= 930);
    terminate(&mut r);
    terminate(&mut s);
    stop.store(true, Ordering::Relaxed);
    let rj = read_json(&rj);
    let sj = read_json(&sj);
    let dropped = dropped.load(Ordering::Relaxed);
    assert!(dropped > 10, "the proxy dropped {dropped}");
    assert!(rj["recovered_packets"].as_u64().unwrap() > 5, "{rj}");
    assert!(rj["nacks_sent"].as_u64().unwrap() > 0, "{rj}");
    assert!(sj["retransmits_sent"].as_u64().unwrap() > 0, "{sj}");
    assert_eq!(rj["gaps"], 0, "every drop recovered: {rj}");
    assert_eq!(rj["heard_gaps"], 0, "{rj}");
    assert_eq!(rj["allocations_rt"], 0);
    assert_eq!(rj["frees_rt"], 0);
    assert_eq!(sj["allocations_rt"], 0);
    assert_eq!(sj["frees_rt"], 0);
}

/// `recv --latency auto`: on a quiet loopback the target comes down from where it started,
/// without a gap on the way.
#[test]
fn an_automatic_latency_comes_down_on_a_quiet_link() {
    let _serial = serial();
    // A playback xrun is the machine stalling the receiver's thread: the link was not quiet
    // (the target rightly goes up after it), so that run is void and repeated, three times at
    // most, as the other realtime tests do.
    let mut voids = Vec::new();
    for _ in 0..3 {
        match auto_latency_run() {
            Ok(()) => return,
            Err(why) => {
                eprintln!("void run: {why}");
                voids.push(why);
            }
        }
    }
    panic!("every run was void: {voids:?}");
}

fn auto_latency_run() -> Result<(), String> {
    let port = free_port();
    let (rj, sj) = (tmp("auto-recv.json"), tmp("auto-send.json"));
    // Reaped on every way out: a failed wait must not leave realtime daemons running into
    // the next tests.
    let mut r = Reaper(
        bin()
            .args(["recv", "--device", "virtual", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--latency-ms",
                "60",
                "--latency",
                "auto",
                "--latency-min-ms",
                "5",
            ])
            .args(["--stats-interval", "0"])
            .args(FMT)
            .arg("--stats-json")
            .arg(&rj)
            .arg("--status-socket")
            .arg(status_socket(&rj))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = status_socket(&rj);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    let mut s = Reaper(send(port, &sj));
    // The target on its way down, after at least 8 s of stream (187.5 packets a second); or
    // an xrun, which voids the run.
    let xruns = |v: &Value| v["xruns"].as_u64().unwrap_or(0);
    let v = wait_status(&mut r, &sock, "the target to come down", |v| {
        xruns(v) > 0 || (received(v) >= 1500 && v["target_ms"].as_f64().is_some_and(|t| t < 59.0))
    });
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    if xruns(&v) > 0 || xruns(&j) > 0 {
        return Err(format!(
            "the receiver's card had {} xrun(s)",
            xruns(&j).max(xruns(&v))
        ));
    }
    let target_ms = j["target_frames"].as_f64().unwrap() / 48.0;
    assert!(
        (20.0..59.5).contains(&target_ms),
        "target {target_ms} ms: {j}"
    );
    assert_eq!(j["gaps"], 0, "{j}");
    assert_eq!(j["heard_gaps"], 0, "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    Ok(())
}
