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

use crate::markers::{MarkerSignal, TwoChannelMonitor};
use crate::plot::TracePoint;
use crate::progress;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// How to reach a host.
#[derive(Clone, Debug)]
pub struct Host {
    /// `user@host` (or anything for local).
    pub spec: String,
    /// The ssh command (None: run locally).
    pub ssh: Option<Vec<String>>,
}

impl Host {
    fn command(&self, script: &str) -> Command {
        match &self.ssh {
            Some(ssh) => {
                let mut c = Command::new(&ssh[0]);
                c.args(&ssh[1..]).arg(&self.spec).arg(script);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
        }
    }

    /// Runs `script`, returns its stdout; errors name the host and show stderr.
    pub fn run(&self, script: &str) -> Result<String, String> {
        let out = self
            .command(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: cannot run {script:?}: {e}", self.spec))?;
        if !out.status.success() {
            return Err(format!(
                "{}: `{script}` failed ({}): {}",
                self.spec,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `script` in the background on the host; returns its pid there.
    pub fn start(&self, script: &str, log: &str) -> Result<u32, String> {
        let out = self.run(&format!(
            "nohup {script} > {log} 2>&1 < /dev/null & echo $!"
        ))?;
        out.trim()
            .parse()
            .map_err(|_| format!("{}: no pid from {script:?}: {out:?}", self.spec))
    }

    /// `Ok` while `pid` runs on the host; else an error naming `what` with the tail of `log`.
    pub fn check_running(&self, pid: u32, what: &str, log: &str) -> Result<(), String> {
        if self.run(&format!("kill -0 {pid}")).is_ok() {
            return Ok(());
        }
        let tail = self.run(&format!("tail -n 15 {log}")).unwrap_or_default();
        Err(format!(
            "{what} on {} exited at start; its log ({log}) ends:\n{tail}",
            self.spec
        ))
    }

    /// Sends SIGTERM to `pid` (background jobs of a non-interactive shell ignore SIGINT) and
    /// waits (at most 10 s) for it to leave.
    pub fn stop(&self, pid: u32) -> Result<(), String> {
        self.run(&format!(
            "kill -TERM {pid} 2>/dev/null; for i in $(seq 100); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL {pid}; exit 1"
        ))
        .map(|_| ())
        .map_err(|e| format!("{e} (it did not stop on SIGTERM within 10 s)"))
    }
}

/// Counts discontinuities of a pilot sine in interleaved S16 (channel 0 is checked).
#[derive(Clone, Debug, Default)]
pub struct PilotAnalyzer {
    coef: f64,
    y1: f64,
    y2: f64,
    seen: u64,
    amplitude: f64,
    in_gap: bool,
    gap_len: u64,
    warmup: u32,
    invariant_ref: f64,
    invariant_peak: f64,
    steady: u32,
    /// Discontinuities.
    pub gaps: u64,
    /// Frames inside them.
    pub gap_frames: u64,
    /// Longest, frames.
    pub max_gap_frames: u64,
    /// Frames checked (after the pilot was first found).
    pub frames: u64,
    /// Frames before the pilot was found.
    pub leading: u64,
    /// Every discontinuity as (first frame, length in frames), frames counted from the first
    /// frame fed; kept up to [`MAX_EVENTS`].
    pub events: Vec<(u64, u64)>,
}

/// Frames of an unbroken sine recurrence after which a new level is accepted.
const RESTEADY_FRAMES: u32 = 64;

/// Most discontinuities a [`PilotAnalyzer`] lists (a broken run would otherwise grow forever).
pub const MAX_EVENTS: usize = 1 << 20;

impl PilotAnalyzer {
    /// A pilot of `freq_hz` at `rate`.
    pub fn new(freq_hz: f64, rate: u32) -> PilotAnalyzer {
        PilotAnalyzer {
            coef: 2.0 * (std::f64::consts::TAU * freq_hz / rate as f64).cos(),
            ..Default::default()
        }
    }

    /// Feeds interleaved S16 frames of `channels` channels (channel 0 is checked).
    pub fn feed(&mut self, bytes: &[u8], channels: usize) {
        self.feed_channel(bytes, channels, 0);
    }

    /// Feeds interleaved S16 frames of `channels` channels; checks channel `ch`.
    pub fn feed_channel(&mut self, bytes: &[u8], channels: usize, ch: usize) {
        let ch = ch.min(channels.saturating_sub(1));
        for f in bytes.chunks_exact(2 * channels) {
            let y = i16::from_le_bytes([f[2 * ch], f[2 * ch + 1]]) as f64;
            self.seen += 1;
            if self.seen <= 2 {
                self.y2 = self.y1;
                self.y1 = y;
                continue;
            }
            let predicted = self.coef * self.y1 - self.y2;
            let residual = (y - predicted).abs();
            // Track the amplitude slowly (peaks of |y|).
            self.amplitude = (self.amplitude * 0.9999).max(y.abs());
            self.y2 = self.y1;
            self.y1 = y;
            // A sine keeps y[n]² + y[n−1]² − 2cos(ω)·y[n]·y[n−1] constant (A²·sin²ω): a
            // silence or a fade shows there even where the recurrence still holds.
            let invariant = y * y + self.y2 * self.y2 - self.coef * y * self.y2;
            if self.frames == 0 {
                // Start-up: wait for the pilot at a steady level (past any fade-in).
                let ok = residual <= 0.05 * self.amplitude.max(1000.0)
                    && (invariant - self.invariant_ref).abs() <= 0.2 * self.invariant_ref;
                if ok {
                    self.warmup += 1;
                } else {
                    self.warmup = 0;
                    self.invariant_ref = invariant;
                }
                if self.amplitude < 1000.0 || self.warmup < RESTEADY_FRAMES {
                    self.leading += 1;
                    continue;
                }
            }
            self.frames += 1;
            let recurrence_ok = residual <= 0.05 * self.amplitude.max(1000.0);
            self.steady = if recurrence_ok {
                self.steady.saturating_add(1)
            } else {
                0
            };
            self.invariant_peak = self.invariant_peak.max(invariant);
            // A sine again at a new, still audible, level (after a fade-in at the start of a
            // stream, or an input gain change): hold that level from here on. A silence keeps
            // the recurrence too, but its invariant is near 0, so it stays a gap.
            if self.steady >= RESTEADY_FRAMES
                && invariant >= 0.01 * self.invariant_peak
                && (invariant - self.invariant_ref).abs() > 0.2 * self.invariant_ref
            {
                self.invariant_ref = invariant;
            }
            let broken =
                !recurrence_ok || (invariant - self.invariant_ref).abs() > 0.2 * self.invariant_ref;
            if !broken {
                self.invariant_ref += 1e-3 * (invariant - self.invariant_ref);
            }
            if broken {
                if !self.in_gap {
                    self.in_gap = true;
                    self.gaps += 1;
                    self.gap_len = 0;
                    if self.events.len() < MAX_EVENTS {
                        self.events.push((self.seen - 1, 0));
                    }
                }
                self.gap_len += 1;
                self.gap_frames += 1;
                self.max_gap_frames = self.max_gap_frames.max(self.gap_len);
                if let Some(last) = self.events.last_mut() {
                    if last.0 + last.1 == self.seen - 1 {
                        last.1 += 1;
                    }
                }
            } else if self.in_gap {
                self.in_gap = false;
            }
        }
    }
}

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

/// The monitor's capture as it arrives from its reader thread, fed to the analyzers.
struct MonitorCapture {
    rx: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    carry: Vec<u8>,
    /// Bytes received so far.
    bytes: u64,
    /// The monitor's output has ended.
    closed: bool,
    /// Left = reference, right = played ([`TwoChannelMonitor`]); else the pilot on the left.
    reference: bool,
    pilot: PilotAnalyzer,
    two: TwoChannelMonitor,
}

impl MonitorCapture {
    /// Waits at most `timeout` for audio, then feeds all that has arrived.
    fn pump(&mut self, timeout: Duration) {
        let Some(rx) = &self.rx else {
            std::thread::sleep(timeout);
            return;
        };
        let mut next = match rx.recv_timeout(timeout) {
            Ok(chunk) => Some(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.closed = true;
                None
            }
        };
        while let Some(chunk) = next {
            self.bytes += chunk.len() as u64;
            self.carry.extend_from_slice(&chunk);
            next = match rx.try_recv() {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.closed = true;
                    None
                }
            };
        }
        let whole = self.carry.len() - self.carry.len() % 4;
        if self.reference {
            self.two.feed(&self.carry[..whole]);
        } else {
            self.pilot.feed(&self.carry[..whole], 2);
        }
        self.carry.drain(..whole);
    }
}

/// A local child process (or the ssh running it) killed and reaped when dropped.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    /// What the process wrote on stderr, once it has exited (its pipe then ends).
    fn stderr_after_exit(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        let s = s.trim();
        if s.is_empty() {
            format!(
                "it exited ({}) without a message",
                self.0.wait().map(|s| s.to_string()).unwrap_or_default()
            )
        } else {
            s.to_owned()
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// Plays `signal` for `seconds` on `host`'s `device` with `aplay`, fed through stdin by a
/// thread (aplay paces it).
fn start_player(
    host: &Host,
    device: &str,
    rate: u32,
    mut signal: MarkerSignal,
    seconds: f64,
) -> Result<std::process::Child, String> {
    let mut child = host
        .command(&format!(
            "aplay -q -D {device} -f S16_LE -c 2 -r {rate} -t raw"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: cannot start aplay on {device}: {e}", host.spec))?;
    let mut stdin = child.stdin.take().ok_or("aplay has no stdin")?;
    let total = (seconds * rate as f64) as usize;
    std::thread::spawn(move || {
        use std::io::Write;
        let chunk = (rate as usize / 10).max(1);
        let mut sent = 0;
        let mut buf = Vec::with_capacity(chunk * 4);
        while sent < total {
            buf.clear();
            let n = chunk.min(total - sent);
            signal.fill(n, &mut buf);
            if stdin.write_all(&buf).is_err() {
                break;
            }
            sent += n;
        }
    });
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, f: f64, rate: f64, amp: f64, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * f * (i + phase0) as f64 / rate).sin()) as i16)
            .collect()
    }

    fn stereo(mono: &[i16]) -> Vec<u8> {
        mono.iter()
            .flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()].concat())
            .collect()
    }

    #[test]
    fn a_clean_pilot_has_no_gaps_and_holes_and_jumps_are_found() {
        let mut a = PilotAnalyzer::new(997.0, 48_000);
        let mut x = vec![0i16; 4800];
        x.extend(sine(48_000, 997.0, 48_000.0, 16_000.0, 0));
        a.feed(&stereo(&x), 2);
        assert_eq!(a.gaps, 0);
        assert!((4800..=4900).contains(&a.leading), "{a:?}");
        // A 5 ms hole of silence, then a jump of phase.
        let mut y = vec![0i16; 240];
        y.extend(sine(48_000, 997.0, 48_000.0, 16_000.0, 48_000 + 240 + 13));
        y.extend(sine(24_000, 997.0, 48_000.0, 16_000.0, 77));
        a.feed(&stereo(&y), 2);
        assert_eq!(a.gaps, 2, "{a:?}");
        assert!(a.max_gap_frames >= 200, "{a:?}");
    }

    #[test]
    fn clock_drift_and_a_little_noise_are_not_gaps() {
        let mut a = PilotAnalyzer::new(997.0, 48_000);
        let mut x = sine(96_000, 997.0 * (1.0 + 500e-6), 48_000.0, 12_000.0, 5);
        for (i, v) in x.iter_mut().enumerate() {
            *v = v.saturating_add(((i * 7919) % 7) as i16 - 3);
        }
        a.feed(&stereo(&x), 2);
        assert_eq!(a.gaps, 0, "{a:?}");
    }

    #[test]
    fn local_hosts_run_commands_and_report_failures() {
        let h = Host {
            spec: "local".into(),
            ssh: None,
        };
        assert_eq!(h.run("echo hi").unwrap(), "hi\n");
        let e = h.run("exit 3").unwrap_err();
        assert!(e.contains("exit 3"), "{e}");
        let pid = h.start("sleep 30", "/dev/null").unwrap();
        h.stop(pid).unwrap();
    }
}
