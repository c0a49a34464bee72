//! `hil-tests pi`: the stream between two real machines, orchestrated over ssh.
//!
//! 1. Checks that both hosts run the same netaudio version as this harness.
//! 2. Starts `netaudio recv` on the receiver and `netaudio send` on the sender with a test
//!    signal (by default the sender's virtual sine source, so the network, the receiver and
//!    its sound card are under test).
//! 3. With `--monitor-device`, records the receiver's own output through a loopback cable
//!    (its interface's output → its input) with `arecord`, streamed back over ssh, and checks
//!    the pilot tone's phase continuity: every discontinuity (silence, a fade, a jump) breaks
//!    the sine's recurrence `y[n+1] = 2·cos(ω)·y[n] − y[n−1]`.
//! 4. Stops the receiver first (so the end is no gap), then the sender; collects both
//!    daemons' final counters and writes the same report fields as `sim`.
//!
//! `--transport local` runs the "hosts" on this machine (how it is tested here, with the
//! virtual sound cards, whose analyzing sink hears every frame).

mod audio;
mod host;
mod pilot;

use audio::{ChildGuard, MonitorCapture, start_player};
pub use host::Host;
pub use pilot::PilotAnalyzer;

use crate::markers::{MarkerSignal, TwoChannelMonitor};
use crate::plot::TracePoint;
use crate::progress;
use serde_json::{Value, json};
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// What `hil-tests pi` does.
pub struct PiArgs {
    /// Sender host.
    pub sender: Host,
    /// Receiver host.
    pub receiver: Host,
    /// The receiver's address as the sender reaches it.
    pub receiver_address: String,
    /// Port.
    pub port: u16,
    /// Seconds of audio.
    pub duration_s: f64,
    /// The netaudio command on the hosts.
    pub netaudio: String,
    /// Sender's capture device (the test signal).
    pub sender_device: String,
    /// Receiver's playback device.
    pub receiver_device: String,
    /// Receiver's capture device cabled from its output, if any.
    pub monitor_device: Option<String>,
    /// Sender's playback device playing the marker signal into a Y-cable (its input and the
    /// monitor's left channel): end-to-end latency. See [`crate::markers`].
    pub reference_device: Option<String>,
    /// Seconds between markers.
    pub marker_interval_s: f64,
    /// Rate, period, pilot frequency.
    pub rate: u32,
    /// Frames per period.
    pub period: usize,
    /// Pilot frequency, Hz.
    pub pilot_hz: f64,
    /// Receiver latency target, ms.
    pub latency_ms: Option<f64>,
    /// No progress bar.
    pub quiet: bool,
}

fn version(host: &Host, netaudio: &str) -> Result<String, String> {
    Ok(host
        .run(&format!("{netaudio} --version"))?
        .trim()
        .to_string())
}

/// Runs the whole orchestration and returns the report.
pub fn run(a: &PiArgs) -> Result<Value, String> {
    let ours = format!("netaudio {}", env!("CARGO_PKG_VERSION"));
    for (role, h) in [("sender", &a.sender), ("receiver", &a.receiver)] {
        let v = version(h, &a.netaudio)?;
        if v != ours {
            return Err(format!(
                "{role} {} runs {v:?}, this harness is {ours:?}: install the same version on both (the .deb or the image)",
                h.spec
            ));
        }
    }
    if a.reference_device.is_some() {
        if a.monitor_device.is_none() {
            return Err("--reference-device needs --monitor-device: the receiver's input that records the reference (left) and the receiver's output (right)".into());
        }
        if a.sender_device.starts_with("virtual") {
            return Err(format!(
                "--reference-device plays the test signal into the sender's input through a cable, but --sender-device is {:?}: give the sender's capture device (e.g. --sender-device hw:CARD=CODEC,DEV=0)",
                a.sender_device
            ));
        }
        if !(0.2..=10.0).contains(&a.marker_interval_s) {
            return Err(format!(
                "--marker-interval {} s: use 0.2 to 10 s (longer than the end-to-end latency)",
                a.marker_interval_s
            ));
        }
    }
    let tag = std::process::id();
    let (rlog, rjson) = (
        format!("/tmp/hil-pi-{tag}-recv.log"),
        format!("/tmp/hil-pi-{tag}-recv.json"),
    );
    let (slog, sjson) = (
        format!("/tmp/hil-pi-{tag}-send.log"),
        format!("/tmp/hil-pi-{tag}-send.json"),
    );
    let common = format!(
        "--rate {} --channels 2 --format S16_LE --period {} --stats-interval 0",
        a.rate, a.period
    );
    let latency = a
        .latency_ms
        .map(|l| format!(" --latency-ms {l}"))
        .unwrap_or_default();
    let status = format!("/tmp/hil-pi-{tag}-recv.sock");
    // The monitor first (a device that connects to it at start needs it running): the
    // receiver's output, back through a cable, streamed here. Its stdout is read by its own
    // thread, so the status polls below never hold the pipe up (arecord would overrun).
    let mut monitor = match &a.monitor_device {
        Some(dev) => Some(
            a.receiver
                .command(&format!(
                    "arecord -q -D {dev} -f S16_LE -c 2 -r {} -t raw -d {}",
                    a.rate,
                    a.duration_s.ceil() as u64 + 3
                ))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map(ChildGuard)
                .map_err(|e| format!("cannot start the monitor: {e}"))?,
        ),
        None => None,
    };
    let signal = MarkerSignal::new(a.rate, a.pilot_hz, a.marker_interval_s, 0.5);
    let mut capture = MonitorCapture {
        rx: None,
        carry: Vec::new(),
        bytes: 0,
        closed: false,
        reference: a.reference_device.is_some(),
        pilot: PilotAnalyzer::new(a.pilot_hz, a.rate),
        two: TwoChannelMonitor::new(a.pilot_hz, a.rate, signal.interval_frames()),
    };
    let reader = monitor
        .as_mut()
        .and_then(|m| m.0.stdout.take())
        .map(|mut out| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            capture.rx = Some(rx);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            })
        });
    // A device that wires itself to the monitor at start (a JACK client on the rig, a
    // loopback PCM) can do so only once the monitor runs: its first audio says it does.
    if let (Some(m), Some(dev)) = (monitor.as_mut(), &a.monitor_device) {
        wait_for(
            &format!(
                "the monitor (arecord -D {dev} on {}) to deliver audio",
                a.receiver.spec
            ),
            START_TIMEOUT,
            || {
                capture.pump(Duration::from_millis(50));
                if capture.closed && capture.bytes == 0 {
                    return Err(format!(
                        "the monitor (arecord -D {dev} on {}) stopped before delivering audio: {}",
                        a.receiver.spec,
                        m.stderr_after_exit()
                    ));
                }
                Ok(capture.bytes > 0)
            },
        )?;
    }
    let rpid = a.receiver.start(
        &format!(
            "{} recv --device {} --listen 0.0.0.0:{} {common}{latency} --status-socket {status} --stats-json {rjson}",
            a.netaudio, a.receiver_device, a.port
        ),
        &rlog,
    )?;
    // The receiver is ready when its status socket answers: the daemon opens it after its
    // device and its network socket.
    let ready = wait_for(
        &format!(
            "the receiver (netaudio recv on {}) to be ready",
            a.receiver.spec
        ),
        START_TIMEOUT,
        || {
            capture.pump(Duration::ZERO);
            if a.receiver
                .run(&format!("{} status --json --socket {status}", a.netaudio))
                .is_ok()
            {
                return Ok(true);
            }
            a.receiver
                .check_running(rpid, "the receiver (netaudio recv)", &rlog)?;
            std::thread::sleep(Duration::from_millis(50));
            Ok(false)
        },
    );
    if let Err(e) = ready {
        let _ = a.receiver.stop(rpid);
        return Err(e);
    }
    // The reference: the marker signal, streamed to the sender's player over ssh.
    let player = match &a.reference_device {
        Some(dev) => match start_player(&a.sender, dev, a.rate, signal, a.duration_s + 3.0) {
            Ok(p) => Some(ChildGuard(p)),
            Err(e) => {
                let _ = a.receiver.stop(rpid);
                return Err(e);
            }
        },
        None => None,
    };
    if let (Some(dev), Some(mon)) = (&a.reference_device, &a.monitor_device) {
        // The reference must be playing before the sender opens the input it feeds: the
        // monitor hearing it on its left channel (the Y-cable's second leg) shows it does.
        let heard = wait_for(
            &format!(
                "the reference played on {dev} ({}) to be heard on the monitor's left channel ({mon}); check the Y-cable (hil-tests/README.md)",
                a.sender.spec
            ),
            START_TIMEOUT,
            || {
                capture.pump(Duration::from_millis(50));
                if capture.closed {
                    return Err(format!(
                        "the monitor ({mon} on {}) stopped while waiting for the reference",
                        a.receiver.spec
                    ));
                }
                Ok(capture.two.reference.frames >= u64::from(a.rate / 10))
            },
        );
        if let Err(e) = heard {
            let _ = a.receiver.stop(rpid);
            return Err(e);
        }
    }
    let spid = a.sender.start(
        &format!(
            "{} send --device {} --dest {}:{} {common} --stats-json {sjson}",
            a.netaudio, a.sender_device, a.receiver_address, a.port
        ),
        &slog,
    );
    let spid = match spid {
        Ok(p) => p,
        Err(e) => {
            let _ = a.receiver.stop(rpid);
            return Err(e);
        }
    };
    // The measured time starts when the stream arrives: the receiver counts packets.
    let arrived = wait_for(
        &format!(
            "the stream from {} to reach the receiver {}:{}",
            a.sender.spec, a.receiver_address, a.port
        ),
        START_TIMEOUT,
        || {
            capture.pump(Duration::from_millis(50));
            let received = a
                .receiver
                .run(&format!("{} status --json --socket {status}", a.netaudio))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(s.trim()).ok())
                .and_then(|v| v["packets_received"].as_u64())
                .unwrap_or(0);
            if received > 0 {
                return Ok(true);
            }
            a.sender
                .check_running(spid, "the sender (netaudio send)", &slog)?;
            Ok(false)
        },
    );
    if let Err(e) = arrived {
        let _ = a.receiver.stop(rpid);
        let _ = a.sender.stop(spid);
        return Err(e);
    }
    let done = Arc::new(AtomicU64::new(0));
    let total_ms = (a.duration_s * 1000.0) as u64;
    let mut bar = progress::Progress::start(
        "pi",
        done.clone(),
        total_ms,
        progress::fmt_audio_ms,
        a.quiet,
    );
    let start = Instant::now();
    let mut trace: Vec<TracePoint> = Vec::new();
    let mut next_poll = 2.0;
    while start.elapsed().as_secs_f64() < a.duration_s {
        capture.pump(Duration::from_millis(100));
        let t = start.elapsed().as_secs_f64();
        if t >= next_poll {
            // The receiver's own view every few seconds: buffer level and drift correction.
            next_poll = t + 5.0;
            if let Some(v) = a
                .receiver
                .run(&format!("{} status --json --socket {status}", a.netaudio))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(s.trim()).ok())
            {
                trace.push(TracePoint {
                    t_s: t,
                    latency_ms: f64::NAN,
                    level_ms: v["buffer_ms"].as_f64().unwrap_or(f64::NAN),
                    ratio_ppm: v["correction_ppm"].as_f64().unwrap_or(f64::NAN),
                });
            }
        }
        done.store(
            start.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    bar.finish();
    drop(monitor);
    if let Some(r) = reader {
        let _ = r.join();
    }
    while !capture.closed && capture.rx.is_some() {
        capture.pump(Duration::from_millis(100));
    }
    let MonitorCapture { pilot, two, .. } = capture;
    drop(player);
    let live = a
        .receiver
        .run(&format!("{} status --json --socket {status}", a.netaudio))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(s.trim()).ok());
    let r_stop = a.receiver.stop(rpid);
    let s_stop = a.sender.stop(spid);
    r_stop?;
    s_stop?;
    // A daemon that wrote no counters failed: say why, from its log.
    let parse = |h: &Host, f: &str, log: &str| -> Result<Value, String> {
        let t = h.run(&format!("cat {f}")).map_err(|e| {
            let tail = h.run(&format!("tail -n 15 {log}")).unwrap_or_default();
            format!("{e}\nits log ({log}) ends:\n{tail}")
        })?;
        serde_json::from_str(&t).map_err(|e| format!("{}: bad {f}: {e}", h.spec))
    };
    let r = parse(&a.receiver, &rjson, &rlog)?;
    let s = parse(&a.sender, &sjson, &slog)?;
    let _ = a.receiver.run(&format!("rm -f {rlog} {rjson} {status}"));
    let _ = a.sender.run(&format!("rm -f {slog} {sjson}"));
    let rate = a.rate as f64;
    // The independent view: the monitor's pilot when cabled, else the virtual card's sink.
    let e2e = a.reference_device.is_some().then(|| two.report());
    let (gaps, gap_frames, max_gap_frames, checked, source) = if let Some(l) = &e2e {
        (
            l.gaps.len() as u64,
            l.gaps.iter().map(|g| g.1).sum(),
            l.gaps.iter().map(|g| g.1).max().unwrap_or(0),
            two.played.frames,
            "pilot tone on the monitor input, right (markers matched against the reference, left)",
        )
    } else if a.monitor_device.is_some() {
        (
            pilot.gaps,
            pilot.gap_frames,
            pilot.max_gap_frames,
            pilot.frames,
            "pilot tone on the monitor input",
        )
    } else if r.get("heard_gaps").is_some() {
        (
            r["heard_gaps"].as_u64().unwrap_or(0),
            0,
            0,
            r["heard_frames"].as_u64().unwrap_or(0),
            "the receiver's virtual sound card",
        )
    } else {
        return Err("nothing listens to the receiver's output: give --monitor-device (a capture device cabled from the receiver's output) or use a virtual receiver device".into());
    };
    let buffer_ms = live.as_ref().and_then(|v| v["buffer_ms"].as_f64());
    let leading = if e2e.is_some() {
        two.played.leading
    } else {
        pilot.leading
    };
    let gap_events: Vec<(u64, u64)> = match &e2e {
        Some(l) => l.gaps.clone(),
        None if a.monitor_device.is_some() => pilot.events.clone(),
        None => Vec::new(),
    };
    let gap_list: Vec<Value> = gap_events
        .iter()
        .map(|&(at, len)| json!({"t_s": at as f64 / rate, "ms": len as f64 * 1000.0 / rate}))
        .collect();
    if let Some(l) = &e2e {
        trace.extend(l.samples.iter().map(|&(t_s, ms)| TracePoint {
            t_s,
            latency_ms: ms,
            level_ms: f64::NAN,
            ratio_ppm: f64::NAN,
        }));
        trace.sort_by(|x, y| x.t_s.total_cmp(&y.t_s));
    }
    let trace_json: Vec<Value> = trace
        .iter()
        .map(|p| json!({"t_s": p.t_s, "latency_ms": finite(p.latency_ms), "level_ms": finite(p.level_ms), "correction_ppm": finite(p.ratio_ppm)}))
        .collect();
    let latency = match &e2e {
        Some(l) => json!({
            "kind": "end-to-end: sender's analog input to receiver's analog output (markers)",
            "p50": l.quantile(0.5), "p99": l.quantile(0.99), "max": l.quantile(1.0),
            "samples": l.samples.len(), "markers_sent": l.markers,
            "reference_breaks": l.reference_breaks,
            "target": a.latency_ms,
        }),
        None => json!({
            // Receiver side (buffer + device) as the daemon holds it; end-to-end needs the
            // reference wiring (--reference-device, hil-tests/README.md).
            "kind": "receiver side: its buffer and device",
            "p50": buffer_ms, "p99": Value::Null, "max": Value::Null,
            "target": a.latency_ms,
        }),
    };
    Ok(json!({
        "audio_seconds": a.duration_s,
        "gaps": gaps,
        "gap_frames": gap_frames,
        "max_gap_ms": max_gap_frames as f64 * 1000.0 / rate,
        "gaps_source": source,
        "checked_frames": checked,
        "gap_list": gap_list,
        "leading_frames": leading,
        "latency_ms": latency,
        "trace": trace_json,
        "lost_packets": r["lost_packets"],
        "recovered_packets": r["recovered_packets"],
        "concealed_frames": r["concealed_frames"],
        "drift_ppm_estimated": r["drift_ppm"],
        "bit_exact_frames": r.get("heard_bit_exact").cloned().unwrap_or(Value::Null),
        "allocations_steady_state": r["allocations_rt"].as_u64().unwrap_or(0) + s["allocations_rt"].as_u64().unwrap_or(0),
        // Null unless both daemons report it: a build that does not count frees proves nothing.
        "frees_steady_state": match (r["frees_rt"].as_u64(), s["frees_rt"].as_u64()) {
            (Some(a), Some(b)) => json!(a + b),
            _ => Value::Null,
        },
        "engine_gaps": r["gaps"],
        "xruns": { "sender": s["xruns"], "receiver": r["xruns"] },
        "cpu_seconds_per_audio_minute": {
            "sender": s["cpu_seconds"].as_f64().map(|c| c / a.duration_s * 60.0),
            "receiver": r["cpu_seconds"].as_f64().map(|c| c / a.duration_s * 60.0),
        },
        "hosts": { "sender": a.sender.spec, "receiver": a.receiver.spec },
        "receiver": r,
        "sender": s,
    }))
}

/// Longest wait for each start-up state (the monitor's first audio, the receiver ready, the
/// reference heard): generous, since a cold machine (paged-out programs, a first run after
/// idle minutes) starts slowly; a state that never comes fails with what was awaited.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks `state` until it says `Ok(true)`, at most `timeout`; an error from it ends the wait.
/// `state` paces itself (it waits on the monitor's pipe or sleeps briefly).
fn wait_for(
    what: &str,
    timeout: Duration,
    mut state: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if state()? {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!("gave up waiting {timeout:?} for {what}"));
        }
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}
