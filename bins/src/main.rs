//! `netaudio`: stream live audio from one machine's sound card to another's over a LAN.
//!
//! Exit codes: 0 success; 1 the stream ran but heard gaps (`demo`), or `check` found a
//! problem; 2 bad arguments or a device/socket that cannot be opened; 3 a realtime thread
//! stopped while streaming (panicked, or stuck): the watchdog was no longer fed, and systemd's
//! `Restart=always` starts the service again.

mod cli;

use clap::Parser;
use cli::{
    AudioArgs, Cli, Cmd, RecvArgs, RunArgs, multicast_options, parse_drift_mode, parse_format,
    proto, recv_sap_target, sap_target,
};
use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::recovery::RecoveryMode;
use netaudio::daemon::{self, AudioOptions, DemoOptions, ReceiveOptions, RunOptions};
use netaudio::rt::RtSpec;
use std::process::ExitCode;
use std::time::Duration;

// Counts allocations and frees per thread, so the realtime threads can report that they made
// none.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Command line > file > board preset > defaults: the file with its preset under it (the
/// command line is applied by each option's `or`).
fn load_config(a: &AudioArgs) -> Result<rt_config::Config, String> {
    let mut file = match &a.config {
        Some(p) => rt_config::Config::load(p)?,
        None => rt_config::Config::default(),
    };
    if let Some(b) = &a.board {
        file.board = Some(b.clone());
    }
    file.with_preset()
}

impl AudioArgs {
    fn options(&self, cfg: &rt_config::Config) -> Result<AudioOptions, String> {
        let f = &cfg.audio;
        let rate = self.rate.or(f.rate).unwrap_or(44_100);
        let channels = self.channels.or(f.channels).unwrap_or(2);
        let sample = parse_format(
            self.format
                .as_deref()
                .or(f.format.as_deref())
                .unwrap_or("S16_LE"),
        )?;
        let period = self.period.or(f.period_frames).unwrap_or(256);
        let periods = self.periods.or(f.periods).unwrap_or(3);
        let format = StreamFormat::new(rate, channels, sample).ok_or_else(|| {
            format!(
                "rate {rate} / channels {channels}: the rate must be 8000..=384000 Hz and \
                 channels 1..=32"
            )
        })?;
        if !(16..=8192).contains(&period) {
            return Err(format!(
                "--period {period} is out of range; use 16..=8192 frames (256 suits USB audio on a Pi)"
            ));
        }
        if !(2..=32).contains(&periods) {
            return Err(format!(
                "--periods {periods} is out of range; use 2..=32 (3 or 4 are typical)"
            ));
        }
        Ok(AudioOptions {
            device: self
                .device
                .clone()
                .or(f.device.clone())
                .unwrap_or_else(|| "virtual".into()),
            format,
            period,
            periods,
        })
    }
}

impl RunArgs {
    fn options(
        &self,
        cfg: &rt_config::Config,
        duration: Option<Duration>,
    ) -> Result<RunOptions, String> {
        let priority = self.priority.or(cfg.rt.priority).unwrap_or(80);
        if priority > 99 {
            return Err(format!(
                "--priority {priority} is out of range; use 1..=99, or 0 for normal scheduling"
            ));
        }
        let stats_interval = self
            .stats_interval
            .or(cfg.log.stats_interval_s)
            .unwrap_or(10.0);
        if !(stats_interval >= 0.0 && stats_interval.is_finite()) {
            return Err(format!(
                "--stats-interval {stats_interval} must be 0 or more"
            ));
        }
        Ok(RunOptions {
            rt: RtSpec {
                priority: (priority > 0).then_some(priority),
                cpu: self.cpu.or(cfg.rt.cpu),
            },
            mlock: !self.no_mlock && cfg.rt.mlock.unwrap_or(true),
            stats_interval,
            stats_json: self.stats_json.clone(),
            duration,
            status_socket: self.status_socket.clone(),
            metrics: self.metrics.clone(),
            http: self
                .http
                .as_deref()
                .or(cfg.status.http.as_deref())
                .map(netaudio::status::http::listen_addr)
                .transpose()?,
            key: match self
                .key_file
                .clone()
                .or(cfg.network.key_file.as_ref().map(Into::into))
            {
                Some(p) => Some(netaudio::keyfile::load(&p)?),
                None => None,
            },
            proto: daemon::Proto::Native,
            announce_as: None,
            sap: None,
            multicast: Default::default(),
            sync_clock: match self.sync_clock.as_deref().or(cfg.sync.clock.as_deref()) {
                Some(c) => daemon::SyncClock::from_name(c)?,
                None => daemon::SyncClock::Exchange,
            },
        })
    }

    fn log_level<'a>(&'a self, cfg: &'a rt_config::Config) -> &'a str {
        self.log_level
            .as_deref()
            .or(cfg.log.level.as_deref())
            .unwrap_or("info")
    }
}

/// Presentation time, when `--sync-latency-ms` or `sync.latency_ms` asks for it.
fn sync_options(
    cli: Option<f64>,
    cfg: &rt_config::Config,
    clock: daemon::SyncClock,
) -> Result<Option<daemon::SyncOptions>, String> {
    let Some(latency_ms) = cli.or(cfg.sync.latency_ms) else {
        return Ok(None);
    };
    if !(latency_ms.is_finite() && (1.0..=2000.0).contains(&latency_ms)) {
        return Err(format!(
            "sync latency {latency_ms} ms (sync.latency_ms / --sync-latency-ms) is out of range; use 1..=2000 ms, the same on every receiver of the stream"
        ));
    }
    Ok(Some(daemon::SyncOptions { latency_ms, clock }))
}

fn output_delay_us(cli: Option<f64>, cfg: &rt_config::Config) -> Result<f64, String> {
    let us = cli.or(cfg.receiver.output_delay_us).unwrap_or(0.0);
    if !(us.is_finite() && (0.0..=100_000.0).contains(&us)) {
        return Err(format!(
            "output delay {us} µs (receiver.output_delay_us / --output-delay-us) is out of range; use 0..=100000"
        ));
    }
    Ok(us)
}

fn drift_mode(cli: &Option<String>, cfg: &rt_config::Config) -> Result<DriftMode, String> {
    parse_drift_mode(
        cli.as_deref()
            .or(cfg.receiver.drift_mode.as_deref())
            .unwrap_or("resample"),
    )
}

fn playback_format(
    cli: &Option<String>,
    cfg: &rt_config::Config,
    stream: SampleFormat,
) -> Result<daemon::PlaybackFormat, String> {
    let s = cli
        .as_deref()
        .or(cfg.receiver.playback_format.as_deref())
        .unwrap_or("auto");
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(daemon::PlaybackFormat::Auto);
    }
    let f = SampleFormat::from_name(s).ok_or_else(|| {
        format!(
            "unknown playback format {s:?} (receiver.playback_format / --playback-format): use auto, S16_LE, S24_3LE or S32_LE"
        )
    })?;
    if f.bytes() < stream.bytes() {
        return Err(format!(
            "playback format {} (receiver.playback_format / --playback-format) is narrower than the stream's {}: bits would be lost; use auto, {} or wider",
            f.name(),
            stream.name(),
            stream.name()
        ));
    }
    Ok(daemon::PlaybackFormat::Fixed(f))
}

fn recovery_mode(cli: &Option<String>, cfg: &rt_config::Config) -> Result<RecoveryMode, String> {
    let s = cli
        .as_deref()
        .or(cfg.receiver.recovery.as_deref())
        .unwrap_or("nack");
    RecoveryMode::from_name(s).ok_or_else(|| {
        format!("unknown loss recovery {s:?} (receiver.recovery / --recovery): use nack or off")
    })
}

/// The name a receiver is announced under, None when announcing is off.
fn announce_as(a: &RecvArgs, cfg: &rt_config::Config) -> Result<Option<String>, String> {
    if a.no_announce || cfg.network.announce == Some(false) {
        return Ok(None);
    }
    let name = a
        .name
        .clone()
        .or(cfg.network.name.clone())
        .unwrap_or_else(netaudio::discovery::host_name);
    netaudio::discovery::announce::check_name(&name)?;
    Ok(Some(name))
}

/// `latency = auto` (`--latency auto`) and its bounds; None for a fixed target.
fn auto_latency(
    a: &RecvArgs,
    cfg: &rt_config::Config,
    start_ms: f64,
) -> Result<Option<(f64, f64)>, String> {
    let mode = a
        .latency
        .as_deref()
        .or(cfg.receiver.latency.as_deref())
        .unwrap_or("fixed");
    match mode.trim().to_ascii_lowercase().as_str() {
        "fixed" => Ok(None),
        "auto" => {
            let lo = a
                .latency_min_ms
                .or(cfg.receiver.latency_min_ms)
                .unwrap_or(0.0);
            let hi = a
                .latency_max_ms
                .or(cfg.receiver.latency_max_ms)
                .unwrap_or(DEFAULT_AUTO_MAX_MS.max(start_ms));
            if !(0.0..=2000.0).contains(&lo) || !(1.0..=2000.0).contains(&hi) || lo > hi {
                return Err(format!(
                    "latency = auto between {lo} and {hi} ms: give 0 <= latency_min_ms <= latency_max_ms <= 2000 (--latency-min-ms, --latency-max-ms)"
                ));
            }
            Ok(Some((lo, hi)))
        }
        other => Err(format!(
            "unknown latency mode {other:?} (receiver.latency / --latency): use fixed or auto"
        )),
    }
}

/// `latency = auto`: the highest target unless told otherwise, ms.
const DEFAULT_AUTO_MAX_MS: f64 = 200.0;

/// Four periods and 2 ms for the network's jitter; with `resample`, plus the resampler's own
/// delay (half its kernel), so the jitter keeps its 2 ms.
fn default_latency(audio: &AudioOptions, mode: DriftMode) -> f64 {
    let base = engine::sim::default_latency_ms(audio.format, audio.period);
    match mode {
        DriftMode::Resample => {
            let frames = engine::resample::delay_frames_for(audio.format.sample);
            base + audio.format.ms_for_frames(frames as f64)
        }
        _ => base,
    }
}

fn check_latency(l: f64) -> Result<f64, String> {
    if l > 0.0 && l <= 2000.0 {
        Ok(l)
    } else {
        Err(format!("--latency-ms {l} is out of range; use 1..=2000"))
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Status(a) => {
            use netaudio::status;
            let path = match a.socket {
                Some(p) => p,
                None => {
                    // A service's socket in /run/netaudio (readable by group audio) first,
                    // then this user's own daemons.
                    let candidates = [
                        std::path::PathBuf::from("/run/netaudio/receiver.sock"),
                        std::path::PathBuf::from("/run/netaudio/sender.sock"),
                        status::default_socket("receiver"),
                        status::default_socket("sender"),
                    ];
                    candidates
                        .iter()
                        .find(|p| p.exists())
                        .cloned()
                        .unwrap_or_else(|| status::default_socket("receiver"))
                }
            };
            if a.json {
                println!("{}", status::fetch(&path)?);
                return Ok(ExitCode::SUCCESS);
            }
            netaudio::housekeeping::install_signal_handlers();
            let interactive = !a.once && std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let v = status::fetch(&path)?;
                if interactive {
                    // Clear the screen and draw from the top.
                    print!("\x1b[H\x1b[2J{}", status::render(&v));
                    println!("\n  (Ctrl-C to leave)");
                } else {
                    print!("{}", status::render(&v));
                }
                if !interactive
                    || netaudio::housekeeping::STOP.load(std::sync::atomic::Ordering::Relaxed)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Cmd::Discover(a) => {
            let wait = Duration::from_secs_f64(a.timeout);
            netaudio::discovery::browse::discover(wait, a.json)?;
        }
        Cmd::Keygen => {
            println!("{}", netaudio::keyfile::generate()?.to_hex());
        }
        Cmd::Devices => {
            print!("{}", netaudio::devices::report(&netaudio::devices::list()));
        }
        Cmd::Check(a) => {
            let role = match a.role.as_deref() {
                Some("sender") => netaudio::check::Role::Sender,
                Some("receiver") => netaudio::check::Role::Receiver,
                Some(r) => return Err(format!("--role {r:?}: use sender or receiver")),
                None => {
                    // A file with a destination is a sender's.
                    let dest = a
                        .config
                        .as_deref()
                        .and_then(|p| rt_config::Config::load(p).ok())
                        .is_some_and(|c| c.network.dest.is_some());
                    if dest {
                        netaudio::check::Role::Sender
                    } else {
                        netaudio::check::Role::Receiver
                    }
                }
            };
            let (report, ok) = netaudio::check::run(a.config.as_deref(), a.board.as_deref(), role);
            print!("{report}");
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Send(a) => {
            let cfg = load_config(&a.audio)?;
            let audio = a.audio.options(&cfg)?;
            let mut run = a.run.options(&cfg, None)?;
            run.proto = proto(&a.proto, &cfg)?;
            run.sap = sap_target(&a.sap, &cfg, run.proto)?;
            let dest = a
                .dest
                .clone()
                .or(cfg.network.dest.as_ref().map(|d| d.joined()))
                .ok_or(
                    "no destination: give --dest host:port (e.g. turntable2.local:46000), a \
                 receiver's name (`netaudio discover` lists them) or auto, or network.dest in \
                 the config",
                )?;
            netaudio::housekeeping::init_logging(a.run.log_level(&cfg), cfg.log.file.as_deref())?;
            let dscp = a.dscp.or(cfg.network.dscp);
            run.multicast = multicast_options(a.ttl, &a.interface, &cfg)?;
            let sdp = a
                .sdp
                .clone()
                .or(cfg.network.sdp_file.clone().map(Into::into));
            if let Err(f) = daemon::send(&audio, &dest, dscp, sdp.as_deref(), &run) {
                return failed(f);
            }
        }
        Cmd::Recv(a) => {
            let cfg = load_config(&a.audio)?;
            let mut audio = a.audio.options(&cfg)?;
            let mut run = a.run.options(&cfg, None)?;
            run.proto = proto(&a.proto, &cfg)?;
            run.announce_as = announce_as(&a, &cfg)?;
            run.multicast = multicast_options(None, &a.interface, &cfg)?;
            netaudio::housekeeping::init_logging(a.run.log_level(&cfg), cfg.log.file.as_deref())?;
            // RTP: follow a stream announced by SAP (its port and format).
            let followed = match recv_sap_target(&a.sap, &cfg, run.proto)? {
                Some(t) => {
                    let Some(found) = netaudio::sap::wait_for_stream(t, None)? else {
                        return Ok(ExitCode::SUCCESS); // stopped while waiting
                    };
                    audio.format = found.format;
                    Some(found.listen.to_string())
                }
                None => None,
            };
            let mode = drift_mode(&a.drift_mode, &cfg)?;
            let latency_ms = check_latency(
                a.latency_ms
                    .or(cfg.receiver.latency_ms)
                    .unwrap_or_else(|| default_latency(&audio, mode)),
            )?;
            let listen = followed
                .or(a.listen.clone())
                .or(cfg.network.listen.clone())
                .unwrap_or_else(|| "0.0.0.0:46000".into());
            let r = ReceiveOptions {
                latency_ms,
                drift_mode: mode,
                playback_format: playback_format(&a.playback_format, &cfg, audio.format.sample)?,
                recovery: recovery_mode(&a.recovery, &cfg)?,
                auto_latency: auto_latency(&a, &cfg, latency_ms)?,
                sync: sync_options(a.sync_latency_ms, &cfg, run.sync_clock)?,
                output_delay_us: output_delay_us(a.output_delay_us, &cfg)?,
            };
            if let Err(f) = daemon::recv(&audio, &listen, &r, &run) {
                return failed(f);
            }
        }
        Cmd::Demo(a) => {
            let cfg = load_config(&a.audio)?;
            let audio = a.audio.options(&cfg)?;
            let duration = (a.duration > 0.0).then(|| Duration::from_secs_f64(a.duration));
            let mut run = a.run.options(&cfg, duration)?;
            if a.run.stats_interval.is_none() {
                run.stats_interval = 1.0;
            }
            let mode = drift_mode(&a.drift_mode, &cfg)?;
            let latency_ms = check_latency(
                a.latency_ms
                    .unwrap_or_else(|| default_latency(&audio, mode)),
            )?;
            if !(-5000.0..=5000.0).contains(&a.drift_ppm) {
                return Err(format!(
                    "--drift-ppm {} is out of range; use -5000..=5000",
                    a.drift_ppm
                ));
            }
            let playback = playback_format(&None, &cfg, audio.format.sample)?;
            a.source.check(audio.format.rate)?;
            netaudio::housekeeping::init_logging(a.run.log_level(&cfg), cfg.log.file.as_deref())?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if run.rt.cpu.is_none() && cores > 1 {
                run.rt.cpu = Some(cores - 1);
            }
            let d = DemoOptions {
                audio,
                drift_ppm: a.drift_ppm,
                receive: ReceiveOptions {
                    latency_ms,
                    drift_mode: mode,
                    playback_format: playback,
                    recovery: recovery_mode(&None, &cfg)?,
                    auto_latency: None,
                    sync: None,
                    output_delay_us: 0.0,
                },
                sender_rt: RtSpec {
                    priority: run.rt.priority,
                    cpu: a.sender_cpu.or((cores > 2).then_some(cores - 2)),
                },
                source: a.source,
            };
            let rep = match daemon::demo(&d, &run) {
                Ok(rep) => rep,
                Err(f) => return failed(f),
            };
            let j = &rep.json;
            match &rep.fidelity {
                None => println!(
                    "gaps: {} (engine: {}{})",
                    rep.gaps,
                    rep.engine_gaps,
                    if rep.gaps == rep.engine_gaps {
                        ", agree"
                    } else {
                        ", DISAGREE"
                    }
                ),
                Some(f) => println!(
                    "gaps: not measured with a tone ({} THD+N outlier windows) (engine: {})",
                    f.thdn.outlier_windows, rep.engine_gaps
                ),
            }
            let ms = |k: &str| {
                j["latency_ms"][k]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.2}"))
            };
            println!(
                "latency_ms: p50 {}  p99 {}  max {}",
                ms("p50"),
                ms("p99"),
                ms("max")
            );
            println!(
                "audio_seconds: {:.1}  checked_frames: {}  bit_exact: {}",
                j["audio_seconds"].as_f64().unwrap_or(0.0),
                j["checked_frames"],
                j["bit_exact_frames"]
            );
            println!(
                "drift_ppm: actual {}  estimated {:.1}  | lost_packets {}  xruns {}",
                j["drift_ppm_actual"],
                j["drift_ppm_estimated"].as_f64().unwrap_or(f64::NAN),
                j["lost_packets"],
                j["xruns"]
            );
            println!(
                "allocations on realtime threads after start-up: {}  frees: {}  | CPU {:.2} s",
                rep.allocations_rt,
                rep.frees_rt,
                j["cpu_seconds"].as_f64().unwrap_or(0.0)
            );
            if let Some(f) = &rep.fidelity {
                println!("{f}");
            }
            if rep.gaps > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit of a daemon that failed: 2 for its settings, devices or sockets (said by `main`);
/// 3 when a realtime thread stopped (already logged by the housekeeping thread).
fn failed(f: daemon::Failure) -> Result<ExitCode, String> {
    match f {
        daemon::Failure::Setup(e) => Err(e),
        daemon::Failure::Realtime(_) => Ok(ExitCode::from(3)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netaudio: {e}");
            ExitCode::from(2)
        }
    }
}
