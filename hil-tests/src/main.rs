//! `hil-tests`: measures gaps and latency of netaudio.
//!
//! `hil-tests sim ...` runs the real engine core on the simulated rig (virtual devices with
//! independent clocks, a seeded network model, virtual time) and checks every played frame
//! with a signal analyzer that is independent of the engine's own counters.

#![forbid(unsafe_code)]
// The sim report is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

mod markers;
mod pi;
mod plot;
mod progress;
mod receivers;
mod report;
mod rig;

use clap::{Args, Parser, Subcommand};
use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::recovery::RecoveryMode;
use engine::sim::net::NetConfig;
use engine::sim::signal::SourceKind;
use engine::sim::{MAX_RECEIVERS, Restart, SimConfig, SimReceiver};
use rt_config::parse_duration;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser)]
#[command(
    name = "hil-tests",
    version,
    about = "Measure netaudio's gaps and latency on a simulated rig"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stream through the simulated rig in virtual time and report gaps and latency.
    Sim(SimArgs),
    /// Measure netaudio (and the old pipeline) end to end on a realtime ALSA rig (JACK dummy).
    Rig(rig::RigArgs),
    /// Stream between two real machines over ssh (or two local "hosts" for testing) and
    /// report gaps from the receiver's output.
    Pi(PiCli),
}

#[derive(Args, Debug)]
struct SimArgs {
    /// Audio to stream: 90s, 30m, 24h, 1h30m (a bare number is seconds).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: f64,
    /// Sample rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Channels.
    #[arg(long, default_value_t = 2)]
    channels: u8,
    /// Sample format: S16_LE, S24_3LE or S32_LE.
    #[arg(long, default_value = "S16_LE", value_parser = parse_format)]
    format: SampleFormat,
    /// Device period, frames.
    #[arg(long, default_value_t = 256)]
    period: usize,
    /// Sender clock offset against the receiver's, ppm.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    drift_ppm: f64,
    /// Slow wander of the sender clock around its offset, ±ppm (10-minute cycle).
    #[arg(long, default_value_t = 0.0)]
    wander_ppm: f64,
    /// Random packet loss, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Burst loss as BURSTS_PER_MINUTE:PACKETS, e.g. 5:3.
    #[arg(long, value_parser = parse_burst)]
    burst_loss: Option<(f64, u32)>,
    /// Network jitter: extra delay uniform in [0, N] ms, order kept.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Fixed one-way network delay, ms.
    #[arg(long, default_value_t = 0.5)]
    delay_ms: f64,
    /// Packets held back behind later ones, percent.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Packets delivered twice, percent.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Target latency, ms (default: 4 periods + 2 ms); with --latency auto, where it starts.
    /// With --sync on it counts from capture (default: 5 periods + 2 ms + the slowest
    /// receiver's delay and jitter, and one round trip of its path with NACKs).
    #[arg(long)]
    latency_ms: Option<f64>,
    /// fixed, or auto: the target follows the jitter between --latency-min-ms and
    /// --latency-max-ms.
    #[arg(long, default_value = "fixed")]
    latency: String,
    /// --latency auto: lowest target, ms.
    #[arg(long, default_value_t = 0.0)]
    latency_min_ms: f64,
    /// --latency auto: highest target, ms.
    #[arg(long, default_value_t = 200.0)]
    latency_max_ms: f64,
    /// Jitter grows (or shrinks) linearly to --jitter-to-ms between these audio times,
    /// e.g. 2m:7m.
    #[arg(long)]
    jitter_ramp: Option<String>,
    /// Jitter at the end of --jitter-ramp, ms.
    #[arg(long, default_value_t = 0.0)]
    jitter_to_ms: f64,
    /// Drift correction: resample (transparent), slip (bit-exact between single-frame
    /// slips) or off.
    #[arg(long, default_value = "resample", value_parser = parse_drift_mode)]
    drift_mode: DriftMode,
    /// Sample format the simulated playback device takes: auto (with resample, S32_LE, as a
    /// USB interface offering 24/32 bits would be opened; otherwise the stream's), or
    /// S16_LE, S24_3LE, S32_LE (at least the stream's width).
    #[arg(long, default_value = "auto")]
    playback_format: String,
    /// Loss recovery: nack (ask the sender again for lost packets, over a return path with the
    /// same impairments) or off (conceal every loss).
    #[arg(long, default_value = "nack", value_parser = parse_recovery)]
    recovery: RecoveryMode,
    /// Source signal: ramp (frame-exact check), sine[:HZ] (THD+N and wow & flutter; 997 Hz
    /// by default) or twotone[:F1,F2] (two tones at a quarter scale each, 18000,19000 by
    /// default: aliasing and intermodulation near the top of the band).
    #[arg(long, default_value = "ramp", value_parser = parse_source)]
    source: SourceKind,
    /// Restart the sender at this audio time (repeatable), e.g. 30m.
    #[arg(long, value_parser = parse_duration)]
    restart_at: Vec<f64>,
    /// The restarting sender stops cleanly (END packets, as on SIGTERM) instead of going
    /// silent: no gap.
    #[arg(long)]
    clean_stop: bool,
    /// Seed for the network model and stream ids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Receivers of the one stream (up to 16): clocks spread over -100..+100 ppm, one-way
    /// delays over 0.3..5 ms (instead of --delay-ms), reverse paths up to 1 ms longer or
    /// shorter, each with the given jitter and loss; the skew between them is reported.
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Presentation time: packets carry their capture time, each receiver models the
    /// sender's clock by a time exchange over its links and plays every frame at its capture
    /// time plus --latency-ms (then measured from capture, transit included). Default: on
    /// with several receivers.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    sync: Option<bool>,
    /// With several receivers: the largest difference between a receiver's two one-way
    /// delays, ms (the time exchange cannot see it: it costs half of it in sync).
    #[arg(long, default_value_t = 1.0)]
    asymmetry_ms: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an SVG plot of latency, buffer level and gaps here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct PiCli {
    /// The sender, as ssh reaches it (e.g. pi@turntable.local).
    #[arg(long)]
    sender: String,
    /// The receiver, as ssh reaches it (e.g. pi@turntable2.local).
    #[arg(long)]
    receiver: String,
    /// The receiver's address as the sender reaches it [default: the host of --receiver].
    #[arg(long)]
    receiver_address: Option<String>,
    /// ssh (reach hosts with `ssh -o BatchMode=yes`) or local (run both "hosts" here).
    #[arg(long, default_value = "ssh")]
    transport: String,
    /// UDP port of the stream.
    #[arg(long, default_value_t = 46_000)]
    port: u16,
    /// Audio to stream: 90s, 30m, 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: f64,
    /// The netaudio command on the hosts.
    #[arg(long, default_value = "netaudio")]
    netaudio: String,
    /// The sender's capture device: the test signal.
    #[arg(long, default_value = "virtual:sine=997")]
    sender_device: String,
    /// The receiver's playback device.
    #[arg(long, default_value = "hw:CARD=CODEC,DEV=0")]
    receiver_device: String,
    /// The receiver's capture device, cabled from its output (hil-tests/README.md).
    #[arg(long)]
    monitor_device: Option<String>,
    /// The sender's playback device: plays the marker signal into a Y-cable to the sender's
    /// input and the monitor's left channel, for end-to-end latency (hil-tests/README.md).
    #[arg(long)]
    reference_device: Option<String>,
    /// Seconds between latency markers (must exceed the end-to-end latency).
    #[arg(long, default_value_t = 1.0)]
    marker_interval: f64,
    /// Sample rate.
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Period, frames.
    #[arg(long, default_value_t = 256)]
    period: usize,
    /// Pilot frequency of the test signal, Hz.
    #[arg(long, default_value_t = 997.0)]
    pilot_hz: f64,
    /// Receiver latency target, ms.
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an SVG summary here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn run_pi(a: &PiCli) -> Result<(), String> {
    let ssh = match a.transport.as_str() {
        "ssh" => Some(vec!["ssh".to_string(), "-o".into(), "BatchMode=yes".into()]),
        "local" => None,
        t => return Err(format!("--transport {t:?}: use ssh or local")),
    };
    let host = |spec: &str| pi::Host {
        spec: spec.to_string(),
        ssh: ssh.clone(),
    };
    let receiver_address = a.receiver_address.clone().unwrap_or_else(|| {
        a.receiver
            .rsplit_once('@')
            .map_or(a.receiver.as_str(), |(_, h)| h)
            .to_string()
    });
    let args = pi::PiArgs {
        sender: host(&a.sender),
        receiver: host(&a.receiver),
        receiver_address,
        port: a.port,
        duration_s: a.duration,
        netaudio: a.netaudio.clone(),
        sender_device: a.sender_device.clone(),
        receiver_device: a.receiver_device.clone(),
        monitor_device: a.monitor_device.clone(),
        reference_device: a.reference_device.clone(),
        marker_interval_s: a.marker_interval,
        rate: a.rate,
        period: a.period,
        pilot_hz: a.pilot_hz,
        latency_ms: a.latency_ms,
        quiet: a.quiet,
    };
    let r = pi::run(&args)?;
    let lat = &r["latency_ms"];
    println!(
        "gaps: {} (engine: {}) heard by {}\nlatency ({}): p50 {} p99 {} max {} ms\nlost_packets: {}  concealed_frames: {}  drift_ppm: {}\nxruns: sender {} receiver {}  allocations_steady_state: {}  frees_steady_state: {}",
        r["gaps"],
        r["engine_gaps"],
        r["gaps_source"].as_str().unwrap_or("?"),
        lat["kind"].as_str().unwrap_or("?"),
        ms2(&lat["p50"]),
        ms2(&lat["p99"]),
        ms2(&lat["max"]),
        r["lost_packets"],
        r["concealed_frames"],
        r["drift_ppm_estimated"],
        r["xruns"]["sender"],
        r["xruns"]["receiver"],
        r["allocations_steady_state"],
        r["frees_steady_state"]
    );
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let trace: Vec<plot::TracePoint> = r["trace"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|p| plot::TracePoint {
                        t_s: num(&p["t_s"]),
                        latency_ms: num(&p["latency_ms"]),
                        level_ms: num(&p["level_ms"]),
                        ratio_ppm: num(&p["correction_ppm"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let gaps: Vec<plot::GapMark> = r["gap_list"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|g| plot::GapMark {
                        t_s: num(&g["t_s"]),
                        length_ms: num(&g["ms"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let svg = plot::render_svg(&plot::PlotInput {
            title: &format!("netaudio pi: {} -> {}", a.sender, a.receiver),
            subtitle: &format!(
                "{} gaps in {:.0} s of audio · latency ({}) p50 {} ms p99 {} ms",
                r["gaps"],
                a.duration,
                lat["kind"].as_str().unwrap_or("?"),
                ms2(&lat["p50"]),
                ms2(&lat["p99"])
            ),
            trace: &trace,
            gaps: &gaps,
            target_latency_ms: a.latency_ms,
            fidelity: None,
            skew: None,
        });
        std::fs::write(p, svg).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

fn ms2(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

fn parse_format(s: &str) -> Result<SampleFormat, String> {
    SampleFormat::from_name(s)
        .ok_or_else(|| format!("unknown sample format {s:?}: use S16_LE, S24_3LE or S32_LE"))
}

fn parse_drift_mode(s: &str) -> Result<DriftMode, String> {
    DriftMode::from_name(s)
        .ok_or_else(|| format!("unknown drift mode {s:?}: use resample, slip or off"))
}

fn parse_recovery(s: &str) -> Result<RecoveryMode, String> {
    RecoveryMode::from_name(s).ok_or_else(|| format!("unknown recovery {s:?}: use nack or off"))
}

fn parse_burst(s: &str) -> Result<(f64, u32), String> {
    let err = || format!("bad burst loss {s:?}: use BURSTS_PER_MINUTE:PACKETS, e.g. 5:3");
    let (a, b) = s.split_once(':').ok_or_else(err)?;
    let per_min: f64 = a.trim().parse().map_err(|_| err())?;
    let len: u32 = b.trim().parse().map_err(|_| err())?;
    if !(per_min.is_finite() && per_min >= 0.0) || len == 0 {
        return Err(err());
    }
    Ok((per_min, len))
}

fn parse_source(s: &str) -> Result<SourceKind, String> {
    SourceKind::from_spec(s)
}

fn percent(name: &str, v: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&v) {
        Ok(v / 100.0)
    } else {
        Err(format!("--{name} {v} is not a percentage (0..=100)"))
    }
}

impl SimArgs {
    fn config(&self) -> Result<SimConfig, String> {
        let format = StreamFormat::new(self.rate, self.channels, self.format).ok_or_else(|| {
            format!(
                "--rate {} --channels {}: rate must be 8000..=384000 Hz and channels 1..=32",
                self.rate, self.channels
            )
        })?;
        let mut cfg = SimConfig::new(format, self.period, self.duration);
        cfg.drift_ppm = self.drift_ppm;
        cfg.wander_ppm = self.wander_ppm;
        let (bursts_per_min, burst_len) = self.burst_loss.unwrap_or((0.0, 0));
        cfg.net = NetConfig {
            delay_ms: self.delay_ms,
            jitter_ms: self.jitter_ms,
            loss: percent("loss", self.loss)?,
            bursts_per_min,
            burst_len,
            reorder: percent("reorder", self.reorder)?,
            duplicate: percent("duplicate", self.duplicate)?,
            jitter_ramp: None,
        };
        if !(0.0..=10_000.0).contains(&self.delay_ms) || !(0.0..=10_000.0).contains(&self.jitter_ms)
        {
            return Err("--delay-ms and --jitter-ms must be 0..=10000".into());
        }
        if let Some(l) = self.latency_ms {
            if !(l > 0.0 && l <= 2_000.0) {
                return Err(format!("--latency-ms {l} is out of range; use 1..=2000"));
            }
            cfg.latency_ms = l;
        }
        cfg.drift_mode = self.drift_mode;
        cfg.playback_sample = match self.playback_format.trim() {
            a if a.eq_ignore_ascii_case("auto") => {
                (self.drift_mode == DriftMode::Resample).then_some(SampleFormat::S32Le)
            }
            other => {
                let p =
                    parse_format(other).map_err(|e| format!("--playback-format: {e}, or auto"))?;
                if p.bytes() < self.format.bytes() {
                    return Err(format!(
                        "--playback-format {} is narrower than --format {}: use {} or wider, or auto",
                        p.name(),
                        self.format.name(),
                        self.format.name()
                    ));
                }
                Some(p)
            }
        };
        cfg.recovery = self.recovery;
        self.source.check(format.rate)?;
        cfg.source = self.source;
        cfg.seed = self.seed;
        if !(1..=MAX_RECEIVERS).contains(&self.receivers) {
            return Err(format!(
                "--receivers {}: simulate 1..={MAX_RECEIVERS} receivers",
                self.receivers
            ));
        }
        if self.receivers > 1 {
            if !(0.0..=100.0).contains(&self.asymmetry_ms) {
                return Err(format!("--asymmetry-ms {}: use 0..=100", self.asymmetry_ms));
            }
            cfg.receivers = SimReceiver::spread_with(self.receivers, self.asymmetry_ms);
        }
        cfg.sync = self.sync.unwrap_or(self.receivers > 1);
        if cfg.sync && self.latency_ms.is_none() {
            // From capture: the network's delay is part of it.
            cfg.latency_ms = cfg.presentation_latency_ms();
        }
        cfg.clean_stops = self.clean_stop;
        cfg.restarts = self
            .restart_at
            .iter()
            .map(|&at_s| Restart {
                at_s,
                downtime_ms: 50.0,
            })
            .collect();
        cfg.auto_latency = match self.latency.as_str() {
            "fixed" => None,
            "auto" => {
                if !(0.0..=2000.0).contains(&self.latency_min_ms)
                    || !(1.0..=2000.0).contains(&self.latency_max_ms)
                    || self.latency_min_ms > self.latency_max_ms
                {
                    return Err(format!(
                        "--latency-min-ms {} / --latency-max-ms {}: give 0 <= min <= max <= 2000",
                        self.latency_min_ms, self.latency_max_ms
                    ));
                }
                Some((self.latency_min_ms, self.latency_max_ms))
            }
            other => return Err(format!("--latency {other:?}: use fixed or auto")),
        };
        if let Some(r) = &self.jitter_ramp {
            let (a, b) = r.split_once(':').ok_or_else(|| {
                format!("--jitter-ramp {r:?}: give FROM:TO audio times, e.g. 2m:7m")
            })?;
            let (from_s, to_s) = (parse_duration(a)?, parse_duration(b)?);
            if to_s < from_s || !(0.0..=10_000.0).contains(&self.jitter_to_ms) {
                return Err(format!(
                    "--jitter-ramp {r:?} --jitter-to-ms {}: FROM before TO, and 0..=10000 ms",
                    self.jitter_to_ms
                ));
            }
            cfg.net.jitter_ramp = Some(engine::sim::net::JitterRamp {
                from_s,
                to_s,
                to_ms: self.jitter_to_ms,
            });
        }
        Ok(cfg)
    }
}

fn run_sim(args: &SimArgs) -> Result<(), String> {
    let cfg = args.config()?;
    let done = Arc::new(AtomicU64::new(0));
    let total_ms = (cfg.duration_s * 1000.0) as u64;
    let started = std::time::Instant::now();
    let cpu0 = report::cpu_seconds();
    let sim = engine::sim::Sim::new(cfg.clone())?;
    let mut bar = progress::Progress::start(
        "sim",
        done.clone(),
        total_ms,
        progress::fmt_audio_ms,
        args.quiet,
    );
    let rep = sim.run(Some(&done));
    bar.finish();
    let wall = started.elapsed().as_secs_f64();
    let cpu = report::cpu_seconds() - cpu0;
    let doc = report::build(&cfg, &rep, wall, cpu);
    print!("{}", report::summary(&cfg, &rep, wall, cpu));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let svg = report::plot(&cfg, &rep);
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Sim(a) => run_sim(a),
        Cmd::Pi(a) => run_pi(a),
        Cmd::Rig(a) => rig::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hil-tests: {e}");
            ExitCode::from(2)
        }
    }
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}': use on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("24h"), Ok(86_400.0));
        assert_eq!(parse_duration("1h30m"), Ok(5_400.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("250ms"), Ok(0.25));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn bursts_and_sources_parse() {
        assert_eq!(parse_burst("5:3"), Ok((5.0, 3)));
        assert!(parse_burst("5").is_err());
        assert!(parse_burst("5:0").is_err());
        assert_eq!(
            parse_source("sine:440"),
            Ok(SourceKind::Sine { freq_hz: 440.0 })
        );
        assert!(parse_source("noise").is_err());
        assert_eq!(
            parse_source("twotone:18000,19000"),
            Ok(SourceKind::TwoTone {
                f1_hz: 18_000.0,
                f2_hz: 19_000.0
            })
        );
        let e = parse_source("twotone:18000").unwrap_err();
        assert!(
            e.contains("\"twotone:18000\"") && e.contains("twotone[:F1,F2]"),
            "{e}"
        );
        assert_eq!(parse_recovery("NACK"), Ok(RecoveryMode::Nack));
        assert!(
            parse_recovery("fec")
                .unwrap_err()
                .contains("use nack or off")
        );
    }
}
