//! `hil-tests rig`: netaudio's gaps and latency measured end to end, in real time, through real
//! ALSA devices, on a machine with no sound card — and, with `--baseline seed`, the old
//! `arecord | nc` → `nc -l | mbuffer | aplay` pipeline on the same rig, for comparison.
//!
//! # The rig
//!
//! hil-tests starts its own JACK server (`jackd -R -P 70 -S -d dummy -r 48000 -p PERIOD`: the dummy
//! driver is the one clock, realtime mode is required for an unbroken stream) under a unique name
//! (`JACK_DEFAULT_SERVER=hil-rig-<pid>`, which the ALSA jack plugin honours through libjack), and
//! gives every child `ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:<repo>/hil-tests/rig/asoundrc`,
//! which defines four plug-wrapped jack PCMs:
//!
//! ```text
//!  hil-tests ─ramp─► aplay -D src ─► src ─┬──────► pin ─► sender ───┐  netaudio send, or
//!                                         │                         │  arecord -D pin | nc
//!                                         │                  127.0.0.1 (UDP / TCP)
//!                                         │                         │  netaudio recv, or
//!                                         │       pout ◄─ receiver ◄┘  nc -l | mbuffer | aplay -D pout
//!                                         ▼         ▼
//!                                    mon ch 1–2  mon ch 3–4 ─► arecord -D mon -c 4 ─► analysis
//! ```
//!
//! The dummy driver does not loop `system:playback` back to `system:capture`, so client ports
//! are wired to each other: hil-tests connects `src` to `mon` 1–2 with `jack_connect` (after
//! waiting, with `jack_lsp`, for a previous run's clients to leave and for the ports to appear);
//! `pin` pulls from `src` and `pout` pushes into `mon` 3–4 by themselves, because the pipeline
//! under test may restart its devices after an xrun (drop + prepare + start), JACK drops every
//! connection of a client that deactivates, and only the PCM's own connect-on-start puts them
//! back. Start order per run: `mon`, `src`, the receiver, the sender.
//!
//! One 4-channel capture of `mon` holds the source and the receiver's output sampled in the same
//! JACK cycle, so the latency of every played frame is read off directly and every
//! discontinuity is visible; see [`analysis`]. The source is the engine's frame-counter ramp, so
//! the check is bit-exact.
//!
//! With `--source sine:HZ` or `twotone:F1,F2` the player plays a tone instead, and [`tone`]
//! measures THD+N and wow & flutter of what the receiver played with the engine's fidelity
//! analyzer (the first quarter of the run, at most 10 s, being start-up), beside the source as
//! the monitor heard it (the rig's own floor). A tone does not name its frames: latency and
//! gaps are not measured then, and the report says so; windows of THD+N 20 dB or more above
//! the median stand for gaps.
//!
//! # A run
//!
//! For each pipeline (netaudio, then the baseline): start the monitor and the source, the
//! receiver, the sender; measure `--duration` of audio from the first valid played frame; then
//! stop the monitor, read each process's CPU time, stop the receiver (netaudio writes its
//! counters on SIGTERM; stopping it first keeps the end of the stream out of them), the sender
//! and the source. jackd's own xruns during the measured span make the run void (reported, not
//! a pass), as do faults of the rig's own source or monitor. Every child runs in its own process
//! group with a parent-death signal, and is stopped on success, on error and on Ctrl-C.

mod analysis;
mod jack;
mod leg;
mod output;
mod pipeline;
pub(crate) mod proc;
mod running;
mod setup;
mod skew;
mod tone;

use leg::{Leg, run_leg};
use pipeline::Pipeline;
use proc::RigEnv;
use setup::{RunDir, alsa_config_path, check_tools, find_netaudio};

use clap::Args;
use engine::receiver::DriftMode;
use engine::sim::signal::SourceKind;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `hil-tests rig`.
#[derive(Args, Debug)]
pub struct RigArgs {
    /// Audio to measure per pipeline, from its first played frame: 60s, 10m, 1h.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    duration: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of latency and gaps (of the netaudio run) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also measure the old pipeline on the same rig: seed (arecord | nc → nc -l | mbuffer | aplay).
    #[arg(long, value_parser = ["seed"])]
    baseline: Option<String>,
    /// Measure the baseline alone (no netaudio run).
    #[arg(long, requires = "baseline")]
    baseline_only: bool,
    /// netaudio's device period, frames.
    #[arg(long, default_value_t = 256)]
    period: usize,
    /// Sample rate, Hz (the JACK server runs at it).
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// netaudio's target latency, ms (its default when not given).
    #[arg(long)]
    latency_ms: Option<f64>,
    /// netaudio's drift correction: resample (its default), slip or off.
    #[arg(long, default_value = "resample", value_parser = crate::parse_drift_mode)]
    drift_mode: DriftMode,
    /// The netaudio binary (default: `netaudio` next to hil-tests).
    #[arg(long)]
    netaudio: Option<PathBuf>,
    /// The test signal: ramp (the frame counter: gaps and latency, frame by frame),
    /// sine[:HZ] or twotone[:F1,F2] (THD+N and wow & flutter of what was played; gaps are then
    /// not measured by the ramp analyzer, windows of THD+N far above the median stand for them).
    #[arg(long, default_value = "ramp", value_parser = crate::parse_source)]
    source: SourceKind,
    /// Keep every process's log and netaudio's counters in this directory.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    /// Receivers of the one stream: 2 plays it on two playback PCMs of the rig's one clock,
    /// both by presentation time (--latency-ms then counts from capture), and measures the
    /// offset between their outputs in one monitor capture (netaudio only: in whole frames
    /// with the ramp, below a frame with a sine).
    #[arg(long, default_value_t = 1)]
    receivers: usize,
}

/// JACK clients of the rig (the PCMs' names in the asoundrc).
const CLIENTS: [&str; 7] = ["src", "pin", "pout", "mon", "pouta", "poutb", "mon6"];
/// Tools the rig runs; `ci/rig-setup` installs them (setpriv and sh come with every Debian).
const TOOLS: [&str; 9] = [
    proc::LAUNCHER,
    "sh",
    "jackd",
    "jack_lsp",
    "jack_connect",
    "arecord",
    "aplay",
    "nc",
    "mbuffer",
];
/// netaudio's device buffer, periods.
const PERIODS: u32 = 3;
/// The rig's ALSA config, as built in (used when the repo's copy is not where it was built).
const ASOUNDRC: &str = include_str!("../../rig/asoundrc");
/// Longest wait for the first valid played frame after the sender started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the monitor may go without data.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Grace period for a process to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `hil-tests rig`.
pub fn run(args: &RigArgs) -> Result<(), String> {
    check_args(args)?;
    check_tools()?;
    let netaudio = if args.baseline_only {
        None
    } else {
        Some(find_netaudio(args)?)
    };
    proc::catch_signals();
    jack::sweep_stale(&std::env::temp_dir());
    let dir = RunDir::new(args.keep_logs.as_deref())?;
    let env = RigEnv {
        server: format!("hil-rig-{}", std::process::id()),
        alsa_config_path: alsa_config_path(&dir.path)?,
        dir: dir.path.clone(),
    };
    let logs_hint = |e: String| match &args.keep_logs {
        Some(d) => format!(
            "{}\n(every process's log is in {})",
            e.trim_end(),
            d.display()
        ),
        None => format!(
            "{}\n(--keep-logs DIR keeps every process's log)",
            e.trim_end()
        ),
    };
    let mut jackd = jack::Jackd::start(&env, args.rate, args.period).map_err(logs_hint)?;
    let mut legs = Vec::new();
    if let Some(exe) = &netaudio {
        legs.push(run_leg(&env, &mut jackd, args, Pipeline::Netaudio(exe)).map_err(logs_hint)?);
    }
    if args.baseline.is_some() {
        legs.push(run_leg(&env, &mut jackd, args, Pipeline::Baseline).map_err(logs_hint)?);
    }
    let _ = jack::wait_clients_gone(&env, &CLIENTS, Duration::from_secs(5));
    jackd.stop();

    let (main, baseline) = match (netaudio.is_some(), legs.len()) {
        (true, 2) => (Some(&legs[0]), Some(&legs[1])),
        (true, _) => (Some(&legs[0]), None),
        (false, _) => (None, Some(&legs[0])),
    };
    for leg in &legs {
        for w in &leg.warnings {
            eprintln!("hil-tests rig: {}: {w}", leg.name);
        }
    }
    print!("{}", output::summary(args, main, baseline));
    if let Some(path) = &args.json {
        let doc = output::json(args, main, baseline);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let leg = main.or(baseline).expect("at least one run");
        let svg = output::plot(args, leg, baseline.filter(|_| main.is_some()));
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(d) = &args.keep_logs {
        eprintln!("hil-tests rig: logs in {}", d.display());
    }
    Ok(())
}

fn check_args(args: &RigArgs) -> Result<(), String> {
    if args.duration.is_nan() || args.duration <= 0.0 {
        return Err("--duration must be more than 0".into());
    }
    if engine::format::StreamFormat::new(args.rate, 2, engine::format::SampleFormat::S16Le)
        .is_none()
    {
        return Err(format!("--rate {} is out of range", args.rate));
    }
    if !(16..=8192).contains(&args.period) {
        return Err(format!(
            "--period {} is out of range; use 16..=8192",
            args.period
        ));
    }
    if !(1..=2).contains(&args.receivers) {
        return Err(format!(
            "--receivers {}: the rig plays one or two receivers",
            args.receivers
        ));
    }
    if args.receivers == 2
        && (args.baseline.is_some()
            || !matches!(args.source, SourceKind::Ramp | SourceKind::Sine { .. }))
    {
        return Err(
            "--receivers 2 measures netaudio with the ramp or a sine: drop --baseline, use --source ramp or sine:HZ".into(),
        );
    }
    if let Some(l) = args.latency_ms.filter(|l| !(*l > 0.0 && *l <= 2_000.0)) {
        return Err(format!("--latency-ms {l} is out of range; use 1..=2000"));
    }
    args.source.check(args.rate)
}

/// With a tone: windows starting within this much of the first played frame count only
/// towards the start-up worst case (a quarter of the run, at most 10 s).
pub fn tone_settle_s(duration_s: f64) -> f64 {
    (duration_s / 4.0).min(10.0)
}
