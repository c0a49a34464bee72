//! One pipeline's run on the rig: start it, measure it through the monitor, stop it in order,
//! and what it measured ([`Leg`], with netaudio's own counters in [`EngineStats`]).

use super::analysis::{MonitorAnalysis, MonitorReport};
use super::jack;
use super::pipeline::{Pipeline, Started, start_pipeline};
use super::proc::{self, Proc, RigEnv};
use super::running::{Running, cpu_of, spawn_reader, spawn_source};
use super::skew::{FRAME6, RigSkew, SkewReport, ToneSkew, ToneSkewReport, split};
use super::tone::{ToneAnalysis, ToneReport};
use super::{CLIENTS, RigArgs, STALL_TIMEOUT, STARTUP_TIMEOUT, STOP_GRACE, tone_settle_s};
use engine::receiver::DriftMode;
use engine::sim::signal::{SourceKind, StepTolerance};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What one pipeline's run measured.
#[derive(Debug)]
pub struct Leg {
    /// "netaudio" or "baseline".
    pub name: &'static str,
    /// The monitor's view.
    pub mon: MonitorReport,
    /// With a tone for a source: THD+N and wow & flutter of what was played.
    pub tone: Option<ToneReport>,
    /// netaudio's counters (`--stats-json` of each side); None for the baseline.
    pub engine: Option<EngineStats>,
    /// CPU seconds over the measured span, summed over each side's processes.
    pub cpu_sender_s: f64,
    /// Receiver side.
    pub cpu_receiver_s: f64,
    /// Xrun lines jackd printed during the measured span.
    pub jackd_xruns: u64,
    /// Under-/overruns the rig's own player and monitor reported (faults of the rig).
    pub rig_xruns: u64,
    /// Xruns the baseline's arecord (sender) and aplay (receiver) reported.
    pub device_xruns: Option<(u64, u64)>,
    /// The commands of each side, for the report.
    pub sender_cmd: String,
    /// Receiver side.
    pub receiver_cmd: String,
    /// Things that went wrong without stopping the run.
    pub warnings: Vec<String>,
    /// `--receivers 2`: the second receiver, and the offset between the two.
    pub second: Option<Second>,
}

/// The second receiver of `rig --receivers 2`.
#[derive(Debug)]
pub struct Second {
    /// The monitor's view of its output.
    pub mon: MonitorReport,
    /// Its counters (`--stats-json`).
    pub engine: Option<Value>,
    /// The offset between the two outputs, frame by frame (the ramp).
    pub skew: SkewReport,
    /// With a sine: what it played, and the offset between the outputs below a frame.
    pub tone: Option<ToneReport>,
    /// With a sine: the offset below a frame.
    pub tone_skew: Option<ToneSkewReport>,
}

impl Leg {
    /// Why the run does not count, if it does not.
    pub fn void_reasons(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.jackd_xruns > 0 {
            v.push(format!("jackd reported {} xruns", self.jackd_xruns));
        }
        if self.mon.source_breaks > 0 {
            v.push(format!(
                "the test source broke {} times",
                self.mon.source_breaks
            ));
        }
        if self.rig_xruns > 0 {
            v.push(format!(
                "the rig's player or monitor reported {} xruns",
                self.rig_xruns
            ));
        }
        v
    }
}

/// Counters netaudio wrote when it stopped.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// `netaudio send --stats-json`.
    pub sender: Option<Value>,
    /// `netaudio recv --stats-json`.
    pub receiver: Option<Value>,
}

impl EngineStats {
    fn get(v: &Option<Value>, key: &str) -> Option<f64> {
        v.as_ref()?.get(key)?.as_f64()
    }

    /// A receiver counter.
    pub fn recv(&self, key: &str) -> Option<f64> {
        Self::get(&self.receiver, key)
    }

    /// A sender counter.
    pub fn send(&self, key: &str) -> Option<f64> {
        Self::get(&self.sender, key)
    }

    /// Gaps the engine counted: the receiver's, plus discontinuities of the sender's capture
    /// (its `gaps` if it reports them, else its xruns), which the receiver cannot see.
    pub fn gaps(&self) -> Option<u64> {
        let r = self.recv("gaps")?;
        let s = self.send("gaps").or(self.send("xruns")).unwrap_or(0.0);
        Some((r + s) as u64)
    }

    /// Allocations on both realtime threads after start-up.
    pub fn allocations(&self) -> Option<u64> {
        self.both_rt("allocations_rt")
    }

    /// Frees on both realtime threads after start-up.
    pub fn frees(&self) -> Option<u64> {
        self.both_rt("frees_rt")
    }

    /// A realtime-thread count summed over sender and receiver (None if neither reports it).
    fn both_rt(&self, key: &str) -> Option<u64> {
        let s = self.send(key);
        let r = self.recv(key);
        if s.is_none() && r.is_none() {
            return None;
        }
        Some((s.unwrap_or(0.0) + r.unwrap_or(0.0)) as u64)
    }
}

/// The monitor's analysis: the ramp's, frame by frame, or a tone's.
enum Analysis {
    Ramp(Box<MonitorAnalysis>),
    Tone(Box<ToneAnalysis>),
}

impl Analysis {
    fn new(args: &RigArgs, resampled: bool) -> Analysis {
        match ToneAnalysis::new(
            args.rate,
            args.source,
            tone_settle_s(args.duration),
            args.duration,
        ) {
            Some(t) => Analysis::Tone(Box::new(t)),
            None => {
                let a = MonitorAnalysis::new(args.rate, (args.duration / 2_000.0).max(0.1));
                // Resampled frames sit between source frames: the analyzer follows them so.
                Analysis::Ramp(Box::new(if resampled {
                    a.with_tolerance(StepTolerance::RESAMPLE)
                } else {
                    a
                }))
            }
        }
    }

    fn feed(&mut self, bytes: &[u8], limit: u64) -> bool {
        match self {
            Analysis::Ramp(a) => a.feed(bytes, limit),
            Analysis::Tone(a) => a.feed(bytes, limit),
        }
    }

    fn played_seen(&self) -> bool {
        match self {
            Analysis::Ramp(a) => a.played_seen(),
            Analysis::Tone(a) => a.played_seen(),
        }
    }

    fn source_seen(&self) -> bool {
        match self {
            Analysis::Ramp(a) => a.source_seen(),
            Analysis::Tone(a) => a.source_seen(),
        }
    }

    fn measured_frames(&self) -> u64 {
        match self {
            Analysis::Ramp(a) => a.measured_frames(),
            Analysis::Tone(a) => a.measured_frames(),
        }
    }

    fn report(&mut self) -> (MonitorReport, Option<ToneReport>) {
        match self {
            Analysis::Ramp(a) => (a.report(), None),
            Analysis::Tone(a) => {
                let (m, t) = a.report();
                (m, Some(t))
            }
        }
    }
}

/// Measures one pipeline.
pub(super) fn run_leg(
    env: &RigEnv,
    jackd: &mut jack::Jackd,
    args: &RigArgs,
    pipeline: Pipeline<'_>,
) -> Result<Leg, String> {
    let name = pipeline.name();
    let resampled =
        matches!(pipeline, Pipeline::Netaudio(_)) && args.drift_mode == DriftMode::Resample;
    let rate = args.rate;
    let rate_s = rate.to_string();
    jack::wait_clients_gone(env, &CLIENTS, Duration::from_secs(10))?;
    let mut run = Running::default();

    // The monitor first: the source and pout connect to it. Two receivers: a 6-channel one.
    let two = args.receivers == 2;
    let (mon_pcm, mon_ch) = if two { ("mon6", "6") } else { ("mon", "4") };
    let mut mon = env.command("arecord");
    mon.args([
        "-D", mon_pcm, "-c", mon_ch, "-f", "S16_LE", "-r", &rate_s, "-t", "raw",
    ])
    // A long buffer: a busy hil-tests must never make the monitor overrun.
    .arg("--buffer-time=1000000")
    .stdout(Stdio::piped());
    let mut mon = Proc::spawn(
        "arecord mon",
        mon,
        env.file(&format!("{name}-mon.log")),
        false,
    )?;
    let out = mon
        .child_mut()
        .stdout
        .take()
        .ok_or("arecord mon: no stdout")?;
    run.mon = Some(mon);
    let (tx, rx) = mpsc::channel();
    run.reader = Some(spawn_reader(out, tx));
    let last_port = if two { "mon6:in_005" } else { "mon:in_003" };
    jack::wait_port(env, last_port, Duration::from_secs(10), || {
        run.check_alive()
    })?;

    // The source, wired to the monitor before anything else starts.
    let mut src = env.command("aplay");
    src.args([
        "-D", "src", "-t", "raw", "-f", "S16_LE", "-r", &rate_s, "-c", "2",
    ])
    .stdin(Stdio::piped());
    let mut src = Proc::spawn("aplay src", src, env.file(&format!("{name}-src.log")), true)?;
    let stdin = src.child_mut().stdin.take().ok_or("aplay src: no stdin")?;
    run.src = Some(src);
    run.writer = Some(spawn_source(
        stdin,
        rate,
        args.source,
        run.writer_stop.clone(),
    ));
    let (in0, in1) = if two {
        ("mon6:in_000", "mon6:in_001")
    } else {
        ("mon:in_000", "mon:in_001")
    };
    for (a, b) in [("src:out_000", in0), ("src:out_001", in1)] {
        jack::connect(env, a, b, Duration::from_secs(10), || run.check_alive())?;
    }

    let Started {
        sender_cmd,
        receiver_cmd,
        stats,
        second_stats,
    } = start_pipeline(env, args, pipeline, &mut run)?;

    // Measure.
    let target = (args.duration * rate as f64).round() as u64;
    let mut analysis = Analysis::new(args, resampled);
    // Two receivers: each one's output with the source, frame by frame, and the two compared.
    let mut second = two.then(|| {
        let tone = match args.source {
            SourceKind::Sine { freq_hz } => Some(ToneSkew::new(rate, freq_hz)),
            _ => None,
        };
        (Analysis::new(args, resampled), RigSkew::new(rate), tone)
    });
    let (mut part, mut first_bytes, mut second_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let done = Arc::new(AtomicU64::new(0));
    let mut bar = crate::progress::Progress::start(
        &format!("rig {name}"),
        done.clone(),
        (args.duration * 1000.0) as u64,
        crate::progress::fmt_audio_ms,
        args.quiet,
    );
    let started = Instant::now();
    let mut last_data = Instant::now();
    let mut last_check = Instant::now();
    let mut at_start: Option<(f64, f64, u64)> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => {
                last_data = Instant::now();
                let was_playing = analysis.played_seen();
                let reached = match second.as_mut() {
                    None => analysis.feed(&chunk, target),
                    Some((b, skew, tone)) => {
                        // Whole 6-channel frames; the rest waits for the next chunk.
                        part.extend_from_slice(&chunk);
                        let whole = part.len() / FRAME6 * FRAME6;
                        split(&part[..whole], &mut first_bytes, &mut second_bytes);
                        skew.feed(&part[..whole]);
                        if let Some(t) = tone.as_mut() {
                            t.feed(&part[..whole]);
                        }
                        part.drain(..whole);
                        b.feed(&second_bytes, target);
                        analysis.feed(&first_bytes, target)
                    }
                };
                if !was_playing && analysis.played_seen() {
                    at_start = Some((cpu_of(&run.sender), cpu_of(&run.receiver), jackd.xruns()));
                }
                done.store(
                    analysis.measured_frames() * 1000 / rate as u64,
                    Ordering::Relaxed,
                );
                if reached {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                run.check_alive()?;
                return Err("the monitor's stream ended".into());
            }
        }
        if last_check.elapsed() >= Duration::from_millis(250) {
            last_check = Instant::now();
            run.check_alive()?;
            if !jackd.alive() {
                return Err(format!("jackd stopped; its log:\n{}", jackd.log_tail(12)));
            }
            if last_data.elapsed() > STALL_TIMEOUT {
                return Err(format!("the monitor sent nothing for {STALL_TIMEOUT:?}"));
            }
            if !analysis.played_seen() && started.elapsed() > STARTUP_TIMEOUT {
                let what = if analysis.source_seen() {
                    "nothing of the source came out of pout"
                } else {
                    "the source never reached the monitor"
                };
                let logs: String = run
                    .sender
                    .iter()
                    .chain(run.receiver.iter())
                    .map(|p| format!("  {}:\n{}", p.name, p.log_tail(6)))
                    .collect();
                return Err(format!("{name}: {what} within {STARTUP_TIMEOUT:?}\n{logs}"));
            }
        }
    }
    bar.finish();

    // Stop: the monitor first, so nothing of the teardown is measured; CPU times just before.
    let (cpu_s0, cpu_r0, xruns0) = at_start.unwrap_or((f64::NAN, f64::NAN, 0));
    let cpu_sender_s = cpu_of(&run.sender) - cpu_s0;
    let cpu_receiver_s = cpu_of(&run.receiver) - cpu_r0;
    let jackd_xruns = jackd.xruns().saturating_sub(xruns0);
    let mut warnings = Vec::new();
    if let Some(m) = &mut run.mon {
        m.stop(STOP_GRACE);
    }
    // The receiver before the sender: its counters must not include the end of the stream.
    for p in run.receiver.iter_mut().chain(run.sender.iter_mut()) {
        match p.stop(STOP_GRACE) {
            Some(s) if s.success() => {}
            // SIGTERM is how the baseline's tools stop; they exit 1 or by the signal.
            Some(_) if matches!(pipeline, Pipeline::Baseline) => {}
            Some(s) => warnings.push(format!("{} exited with {s}", p.name)),
            None => warnings.push(format!(
                "{} did not stop within {STOP_GRACE:?} of SIGTERM and was killed",
                p.name
            )),
        }
    }
    if let Some(p) = &mut run.src {
        p.stop(STOP_GRACE);
    }
    run.stop_threads();

    let engine = stats.map(|(send, recv)| {
        let read = |p: &Path, warnings: &mut Vec<String>| match std::fs::read_to_string(p) {
            Ok(t) => match serde_json::from_str::<Value>(&t) {
                Ok(v) => Some(v),
                Err(e) => {
                    warnings.push(format!("{} is not JSON: {e}", p.display()));
                    None
                }
            },
            Err(_) => {
                warnings.push(format!("no counters in {} (--stats-json)", p.display()));
                None
            }
        };
        EngineStats {
            sender: read(&send, &mut warnings),
            receiver: read(&recv, &mut warnings),
        }
    });
    let count = |file: &str, what: &str| proc::count_lines(&env.file(file), what);
    let rig_xruns = count(&format!("{name}-src.log"), "underrun")
        + count(&format!("{name}-mon.log"), "overrun");
    let device_xruns = matches!(pipeline, Pipeline::Baseline).then(|| {
        (
            count(&format!("{name}-arecord-pin.log"), "overrun"),
            count(&format!("{name}-aplay-pout.log"), "underrun"),
        )
    });
    let (mon, tone) = analysis.report();
    let second = second.map(|(mut b, skew, tone_skew)| {
        let (mon, tone) = b.report();
        Second {
            mon,
            engine: second_stats.and_then(|p| {
                std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
            }),
            skew: skew.report(),
            tone,
            tone_skew: tone_skew.map(|t| t.report()),
        }
    });
    Ok(Leg {
        name,
        mon,
        tone,
        engine,
        cpu_sender_s,
        cpu_receiver_s,
        jackd_xruns,
        rig_xruns,
        device_xruns,
        sender_cmd,
        receiver_cmd,
        warnings,
        second,
    })
}
