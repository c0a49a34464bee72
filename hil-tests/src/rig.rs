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
mod output;
pub(crate) mod proc;
mod tone;

use analysis::{MonitorAnalysis, MonitorReport};
use clap::Args;
use engine::receiver::DriftMode;
use engine::sim::signal::SourceKind;
use engine::sim::signal::StepTolerance;
use proc::{Proc, RigEnv};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tone::{ToneAnalysis, ToneReport};

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
}

/// JACK clients of the rig (the PCMs' names in the asoundrc).
const CLIENTS: [&str; 4] = ["src", "pin", "pout", "mon"];
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
const ASOUNDRC: &str = include_str!("../rig/asoundrc");
/// Longest wait for the first valid played frame after the sender started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the monitor may go without data.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Grace period for a process to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which pipeline a run measures.
#[derive(Clone, Copy, Debug)]
enum Pipeline<'a> {
    /// `netaudio send` → `netaudio recv`.
    Netaudio(&'a Path),
    /// The seed pipeline: `arecord | nc` → `nc -l | mbuffer | aplay`.
    Baseline,
}

impl Pipeline<'_> {
    fn name(&self) -> &'static str {
        match self {
            Pipeline::Netaudio(_) => "netaudio",
            Pipeline::Baseline => "baseline",
        }
    }
}

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

/// The rig's tools must be installed: one line naming what is missing otherwise.
fn check_tools() -> Result<(), String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|t| proc::which(t).is_none())
        .map(|t| t.to_string())
        .collect();
    if !jack_plugin_installed() {
        missing.push("the ALSA jack plugin (libasound2-plugins)".into());
    }
    if !Path::new("/usr/share/alsa/alsa.conf").exists() {
        missing.push("/usr/share/alsa/alsa.conf".into());
    }
    if missing.is_empty() && !setpriv_pdeathsig() {
        missing.push("setpriv with --pdeathsig (util-linux 2.33 or later)".into());
    }
    if missing.is_empty() && !openbsd_netcat() {
        missing.push("OpenBSD netcat (nc is another netcat)".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the rig is not installed: missing {}; run ci/rig-setup",
            missing.join(", ")
        ))
    }
}

fn jack_plugin_installed() -> bool {
    const SO: &str = "alsa-lib/libasound_module_pcm_jack.so";
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/lib64")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    dirs.iter().any(|d| d.join(SO).exists())
}

/// Every child starts through `setpriv --pdeathsig` ([`proc::RigEnv::command`]).
fn setpriv_pdeathsig() -> bool {
    let mut cmd = std::process::Command::new(proc::LAUNCHER);
    cmd.arg("--help").stdin(Stdio::null());
    cmd.output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--pdeathsig"))
}

/// The baseline's flags (`-q 0`, `-l -p`) are those of netcat-openbsd.
fn openbsd_netcat() -> bool {
    let mut cmd = std::process::Command::new("nc");
    cmd.arg("-h").stdin(Stdio::null());
    let Ok(out) = cmd.output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.contains("OpenBSD")
}

fn find_netaudio(args: &RigArgs) -> Result<PathBuf, String> {
    let path = match &args.netaudio {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find hil-tests' own path: {e}"))?
            .with_file_name("netaudio"),
    };
    if proc::is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "no netaudio binary at {}: build it (cargo build --release -p netaudio), pass \
             --netaudio PATH, or measure the old pipeline alone with --baseline seed --baseline-only",
            path.display()
        ))
    }
}

/// The repo's asoundrc if it is where hil-tests was built from, else the built-in copy.
fn alsa_config_path(dir: &Path) -> Result<String, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("rig/asoundrc");
    let path = if repo.is_file() {
        repo
    } else {
        let p = dir.join("asoundrc");
        std::fs::write(&p, ASOUNDRC).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        p
    };
    Ok(format!("/usr/share/alsa/alsa.conf:{}", path.display()))
}

/// Where logs and counters go: `--keep-logs DIR`, or a temporary directory removed at the end.
struct RunDir {
    path: PathBuf,
    remove: bool,
}

impl RunDir {
    fn new(keep: Option<&Path>) -> Result<RunDir, String> {
        let (path, remove) = match keep {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("hil-rig-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(RunDir { path, remove })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The processes and threads of one pipeline's run. Dropping it stops everything (in order:
/// receiver, sender, source, monitor), so every error path cleans up.
#[derive(Default)]
struct Running {
    sender: Vec<Proc>,
    receiver: Vec<Proc>,
    src: Option<Proc>,
    mon: Option<Proc>,
    writer_stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    fn all_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.sender
            .iter_mut()
            .chain(self.receiver.iter_mut())
            .chain(self.src.iter_mut())
            .chain(self.mon.iter_mut())
    }

    /// Err naming the first process that has exited, with the end of its log.
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(s) = proc::interrupted() {
            return Err(format!("interrupted (signal {s})"));
        }
        for p in self.all_mut() {
            if let Some(status) = p.exited() {
                return Err(format!(
                    "{} exited early ({status}); the end of its log:\n{}",
                    p.name,
                    p.log_tail(12)
                ));
            }
        }
        Ok(())
    }

    fn stop_threads(&mut self) {
        self.writer_stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for p in self.receiver.iter_mut().chain(self.sender.iter_mut()) {
            p.stop(Duration::from_secs(3));
        }
        if let Some(p) = &mut self.src {
            p.stop(Duration::from_secs(3));
        }
        if let Some(p) = &mut self.mon {
            p.stop(Duration::from_secs(3));
        }
        self.stop_threads();
    }
}

/// Feeds the test signal (the ramp, or a tone) to the player until it stops taking it.
fn spawn_source(
    mut stdin: ChildStdin,
    rate: u32,
    source: SourceKind,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        use engine::format::{SampleFormat, StreamFormat};
        use engine::sim::signal::Source;
        let Some(format) = StreamFormat::new(rate, 2, SampleFormat::S16Le) else {
            return;
        };
        let src = Source::new(source, format);
        const FRAMES: usize = 1024;
        let mut buf = vec![0u8; FRAMES * format.frame_bytes()];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            src.fill(n, &mut buf);
            // Blocks while aplay's buffer is full: aplay paces the source.
            if stdin.write_all(&buf).is_err() {
                break;
            }
            n += FRAMES as u64;
        }
    })
}

/// Reads the monitor's stdout in chunks until it ends.
fn spawn_reader(mut out: ChildStdout, tx: mpsc::Sender<Vec<u8>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// A local port nothing listens on now.
fn free_port(udp: bool) -> Result<u16, String> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| format!("no free local port: {e}"))
}

/// Whether something listens on (TCP) or is bound to (UDP) local `port`, from /proc/net.
fn port_bound(port: u16, udp: bool) -> bool {
    let files: &[&str] = if udp {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let hex = format!(":{port:04X}");
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[1].ends_with(&hex)
                    // TCP: LISTEN; UDP: any bound socket (state 07, "closed").
                    && (udp || cols[3] == "0A")
            })
        })
    })
}

fn wait_bound(port: u16, udp: bool, run: &mut Running) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    while !port_bound(port, udp) {
        run.check_alive()?;
        if Instant::now() >= end {
            return Err(format!("nothing listened on port {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn cpu_of(procs: &[Proc]) -> f64 {
    procs.iter().map(Proc::cpu_seconds).sum()
}

/// A started pipeline: its commands, and where netaudio writes its counters (sender, receiver).
struct Started {
    sender_cmd: String,
    receiver_cmd: String,
    stats: Option<(PathBuf, PathBuf)>,
}

/// Starts the pipeline's receiver side, then its sender side.
fn start_pipeline(
    env: &RigEnv,
    args: &RigArgs,
    pipeline: Pipeline<'_>,
    run: &mut Running,
) -> Result<Started, String> {
    let rate = args.rate.to_string();
    let name = pipeline.name();
    match pipeline {
        Pipeline::Netaudio(exe) => {
            let port = free_port(true)?;
            let period = args.period.to_string();
            let periods = PERIODS.to_string();
            let common = [
                "--rate",
                &rate,
                "--channels",
                "2",
                "--format",
                "S16_LE",
                "--period",
                &period,
                "--periods",
                &periods,
            ];
            let recv_stats = env.file("netaudio-recv.json");
            let send_stats = env.file("netaudio-send.json");
            let _ = std::fs::remove_file(&recv_stats);
            let _ = std::fs::remove_file(&send_stats);

            let mut recv = env.command(exe);
            recv.args(["recv", "--device", "pout", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(common);
            if let Some(l) = args.latency_ms {
                recv.arg("--latency-ms").arg(l.to_string());
            }
            recv.args(["--drift-mode", args.drift_mode.name()]);
            recv.arg("--stats-json").arg(&recv_stats);
            let recv_cmd = proc::command_line(&recv);
            run.receiver.push(Proc::spawn(
                "netaudio recv",
                recv,
                env.file("netaudio-recv.log"),
                true,
            )?);
            wait_bound(port, true, run)?;

            let mut send = env.command(exe);
            send.args(["send", "--device", "pin", "--dest"])
                .arg(format!("127.0.0.1:{port}"))
                .args(common)
                .arg("--stats-json")
                .arg(&send_stats);
            let send_cmd = proc::command_line(&send);
            run.sender.push(Proc::spawn(
                "netaudio send",
                send,
                env.file("netaudio-send.log"),
                true,
            )?);
            Ok(Started {
                sender_cmd: send_cmd,
                receiver_cmd: recv_cmd,
                stats: Some((send_stats, recv_stats)),
            })
        }
        Pipeline::Baseline => {
            let port = free_port(false)?;
            let port_s = port.to_string();
            let fmt = ["-t", "raw", "-f", "S16_LE", "-r", &rate, "-c", "2"];

            let mut nc_l = env.command("nc");
            nc_l.args(["-l", "-p", &port_s]).stdout(Stdio::piped());
            let mut mbuffer = env.command("mbuffer");
            mbuffer
                .args(["-q", "-m", "2M", "-P", "5"])
                .stdout(Stdio::piped());
            let mut aplay = env.command("aplay");
            aplay.args(["-D", "pout"]).args(fmt);
            let recv_cmd = format!(
                "{} | {} | {}",
                proc::command_line(&nc_l),
                proc::command_line(&mbuffer),
                proc::command_line(&aplay)
            );
            let mut p = Proc::spawn("nc -l", nc_l, env.file(&format!("{name}-nc-l.log")), false)?;
            let out = p.child_mut().stdout.take().ok_or("nc -l: no stdout")?;
            run.receiver.push(p);
            mbuffer.stdin(Stdio::from(out));
            let mut p = Proc::spawn(
                "mbuffer",
                mbuffer,
                env.file(&format!("{name}-mbuffer.log")),
                false,
            )?;
            let out = p.child_mut().stdout.take().ok_or("mbuffer: no stdout")?;
            run.receiver.push(p);
            aplay.stdin(Stdio::from(out));
            run.receiver.push(Proc::spawn(
                "aplay pout",
                aplay,
                env.file(&format!("{name}-aplay-pout.log")),
                true,
            )?);
            wait_bound(port, false, run)?;

            let mut arecord = env.command("arecord");
            arecord
                .args([
                    "-D", "pin", "-f", "S16_LE", "-r", &rate, "-c", "2", "-t", "raw",
                ])
                .stdout(Stdio::piped());
            let mut nc = env.command("nc");
            nc.args(["-q", "0", "127.0.0.1", &port_s]);
            let send_cmd = format!(
                "{} | {}",
                proc::command_line(&arecord),
                proc::command_line(&nc)
            );
            let mut p = Proc::spawn(
                "arecord pin",
                arecord,
                env.file(&format!("{name}-arecord-pin.log")),
                false,
            )?;
            let out = p.child_mut().stdout.take().ok_or("arecord: no stdout")?;
            run.sender.push(p);
            nc.stdin(Stdio::from(out));
            run.sender.push(Proc::spawn(
                "nc",
                nc,
                env.file(&format!("{name}-nc.log")),
                true,
            )?);
            Ok(Started {
                sender_cmd: send_cmd,
                receiver_cmd: recv_cmd,
                stats: None,
            })
        }
    }
}

/// Measures one pipeline.
fn run_leg(
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

    // The monitor first: the source and pout connect to it.
    let mut mon = env.command("arecord");
    mon.args([
        "-D", "mon", "-c", "4", "-f", "S16_LE", "-r", &rate_s, "-t", "raw",
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
    jack::wait_port(env, "mon:in_003", Duration::from_secs(10), || {
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
    for (a, b) in [("src:out_000", "mon:in_000"), ("src:out_001", "mon:in_001")] {
        jack::connect(env, a, b, Duration::from_secs(10), || run.check_alive())?;
    }

    let Started {
        sender_cmd,
        receiver_cmd,
        stats,
    } = start_pipeline(env, args, pipeline, &mut run)?;

    // Measure.
    let target = (args.duration * rate as f64).round() as u64;
    let mut analysis = Analysis::new(args, resampled);
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
                let reached = analysis.feed(&chunk, target);
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
    })
}
