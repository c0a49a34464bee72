//! The command line of `netaudio`: its subcommands and their arguments (clap), and the parsers
//! of argument values that the configuration file shares.

use clap::{Args, Parser, Subcommand};
use engine::format::SampleFormat;
use engine::receiver::DriftMode;
use engine::sim::signal::SourceKind;
use netaudio::daemon;

#[derive(Parser)]
#[command(
    name = "netaudio",
    version,
    about = "Stream live audio from one machine's sound card to another's over a LAN, without gaps",
    after_help = "Exit codes: 0 success, 1 gaps were heard (demo) or check found a problem, 2 bad arguments or a device or socket that cannot be opened, 3 a realtime thread stopped while streaming (panicked or stuck)."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Capture from a sound card and send to a receiver.
    Send(SendArgs),
    /// Receive a stream and play it on a sound card.
    Recv(RecvArgs),
    /// Stream locally between two virtual sound cards with drifting clocks, and check every
    /// frame that is played.
    Demo(DemoArgs),
    /// List sound cards by stable name, with what each accepts and the line for the config.
    Devices,
    /// List the receivers announced on the LAN: name, address:port, format, key fingerprint.
    Discover(DiscoverArgs),
    /// Show a running daemon's live status: levels, buffer, latency, loss, drift, xruns, gaps.
    Status(StatusArgs),
    /// Validate a config, show the effective settings, and check this machine for them.
    Check(CheckArgs),
    /// Print a new random pre-shared key (64 hex characters) for network.key_file:
    /// `netaudio keygen > /etc/netaudio/key && chmod 600 /etc/netaudio/key`.
    Keygen,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The daemon's status socket [default: the receiver's, else the sender's].
    #[arg(long)]
    pub(crate) socket: Option<std::path::PathBuf>,
    /// Print one JSON snapshot and exit (for scripts).
    #[arg(long)]
    pub(crate) json: bool,
    /// Print one screen and exit.
    #[arg(long)]
    pub(crate) once: bool,
}

#[derive(Args)]
pub(crate) struct DiscoverArgs {
    /// How long to look: 3s, 10s, ...
    #[arg(long, default_value = "3s", value_parser = rt_config::parse_duration)]
    pub(crate) timeout: f64,
    /// Print a JSON list (name, address, port, rate, channels, format, proto, key).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// Configuration file to check.
    #[arg(long)]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Board preset: auto, pi3, pi4, pi5, zero2w, generic.
    #[arg(long)]
    pub(crate) board: Option<String>,
    /// Which side the config is for: sender or receiver [default: from network.dest].
    #[arg(long)]
    pub(crate) role: Option<String>,
}

#[derive(Args, Clone)]
pub(crate) struct AudioArgs {
    /// ALSA device (e.g. hw:CARD=CODEC,DEV=0, a dsnoop PCM), or virtual[:ppm=N,sine=HZ]
    /// [default: virtual]. recv also writes to outputs that are not sound cards:
    /// snapcast:tcp://HOST:PORT[?control=PORT] (a snapserver TCP source in mode=server; its
    /// format is read from its control port, default 1705), pipe:PATH (a FIFO, created if
    /// missing) or stdout.
    #[arg(long)]
    pub(crate) device: Option<String>,
    /// Sample rate, Hz [default: 44100].
    #[arg(long)]
    pub(crate) rate: Option<u32>,
    /// Channels [default: 2].
    #[arg(long)]
    pub(crate) channels: Option<u8>,
    /// Sample format: S16_LE, S24_3LE or S32_LE [default: S16_LE].
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// Frames per period [default: 256].
    #[arg(long)]
    pub(crate) period: Option<usize>,
    /// Periods in the device buffer [default: 3].
    #[arg(long)]
    pub(crate) periods: Option<usize>,
    /// Configuration file (TOML); command-line options win over it.
    #[arg(long)]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Board preset under the file: auto, pi3, pi4, pi5, zero2w, generic [default: auto].
    #[arg(long)]
    pub(crate) board: Option<String>,
}

#[derive(Args, Clone)]
pub(crate) struct RunArgs {
    /// CPU core for the realtime thread.
    #[arg(long)]
    pub(crate) cpu: Option<usize>,
    /// SCHED_FIFO priority of the realtime thread (1-99; 0 for normal scheduling) [default: 80].
    #[arg(long)]
    pub(crate) priority: Option<u8>,
    /// Do not lock memory (mlockall).
    #[arg(long)]
    pub(crate) no_mlock: bool,
    /// Seconds between stats lines (0: none) [default: 10].
    #[arg(long)]
    pub(crate) stats_interval: Option<f64>,
    /// Write the final counters as JSON to this file when stopping.
    #[arg(long)]
    pub(crate) stats_json: Option<std::path::PathBuf>,
    /// Log level: error, warn, info, debug, trace [default: info].
    #[arg(long)]
    pub(crate) log_level: Option<String>,
    /// Unix socket for `netaudio status` [default: /run/netaudio/ROLE.sock, or /tmp].
    #[arg(long)]
    pub(crate) status_socket: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on this localhost address (e.g. 127.0.0.1:9101); off by default.
    #[arg(long)]
    pub(crate) metrics: Option<String>,
    /// Serve the status page (live levels, buffer against target, drift, loss, the gap log;
    /// read-only, no key material) on ADDR:PORT, e.g. 0.0.0.0:8080 for the LAN; a bare PORT
    /// serves localhost only. Also `[status] http`. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Pre-shared key file (64 hex characters, mode 600; `netaudio keygen` makes one): every
    /// packet is authenticated. Both sides need the same key.
    #[arg(long)]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// Presentation time: how receivers know the sender's clock, exchange (a time exchange
    /// over the stream's sockets) or system (host clocks kept together by PTP or chrony; give
    /// it to the sender and every receiver) [default: exchange].
    #[arg(long)]
    pub(crate) sync_clock: Option<String>,
}

#[derive(Args)]
pub(crate) struct SendArgs {
    /// Receiver: host:port (e.g. turntable2.local:46000; IPv6 as [addr]:port), a host name
    /// (port 46000), a receiver's announced name (`netaudio discover`), or auto (the only one
    /// announced). A name that does not resolve yet is retried while capturing.
    #[arg(long)]
    pub(crate) dest: Option<String>,
    /// DSCP for the packets (46: expedited forwarding).
    #[arg(long)]
    pub(crate) dscp: Option<u8>,
    /// Multicast destination: hop limit of the packets [default: 1, the LAN].
    #[arg(long)]
    pub(crate) ttl: Option<u32>,
    /// Multicast destination: the interface the packets leave by, a name (eth0) or one of its
    /// addresses [default: the routing table's choice].
    #[arg(long)]
    pub(crate) interface: Option<String>,
    /// Wire protocol: native, rtp (L16/L24 for ffmpeg, VLC, PipeWire) or tcp (raw PCM into
    /// `nc -l PORT | aplay ...`) [default: native].
    #[arg(long)]
    pub(crate) proto: Option<String>,
    /// RTP: also write the stream's SDP to this file (it is always logged).
    #[arg(long)]
    pub(crate) sdp: Option<std::path::PathBuf>,
    /// RTP: announce the stream by SAP to this group or host, ADDR:PORT, or off (PipeWire's
    /// module-rtp-source and module-rtp-sap find it so) [default: 224.0.0.56:9875].
    #[arg(long)]
    pub(crate) sap: Option<String>,
    #[command(flatten)]
    pub(crate) audio: AudioArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args)]
pub(crate) struct RecvArgs {
    /// Address to listen on (e.g. 0.0.0.0:46000 or [::]:46000), or a multicast group to join
    /// (e.g. 239.255.46.1:46000) [default: 0.0.0.0:46000].
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Multicast listen address: the interface to join the group on, a name (eth0) or one of
    /// its addresses [default: the routing table's choice].
    #[arg(long)]
    pub(crate) interface: Option<String>,
    /// The name this receiver is announced under on the LAN [default: the host name].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Do not announce this receiver on the LAN (mDNS/DNS-SD).
    #[arg(long)]
    pub(crate) no_announce: bool,
    /// Target latency, ms (from a frame's arrival to leaving the sound card) [default: four
    /// periods + 2 ms for the network's jitter, plus the resampler's delay with resample].
    #[arg(long)]
    pub(crate) latency_ms: Option<f64>,
    /// Drift correction: resample (transparent), slip (bit-exact between single-frame slips)
    /// or off (one clock) [default: resample].
    #[arg(long)]
    pub(crate) drift_mode: Option<String>,
    /// Sample format the playback device is opened in: auto (with resample, the widest the
    /// device takes, S32_LE or S24_3LE, so the resampler's output is not rounded back to a
    /// 16-bit stream's width; else the stream's), or S16_LE, S24_3LE, S32_LE (at least the
    /// stream's width) [default: auto].
    #[arg(long)]
    pub(crate) playback_format: Option<String>,
    /// Latency: fixed (at --latency-ms) or auto (follows the network's jitter between
    /// --latency-min-ms and --latency-max-ms, starting at --latency-ms) [default: fixed].
    #[arg(long)]
    pub(crate) latency: Option<String>,
    /// latency auto: lowest target, ms [default: what the devices need].
    #[arg(long)]
    pub(crate) latency_min_ms: Option<f64>,
    /// latency auto: highest target, ms [default: 200].
    #[arg(long)]
    pub(crate) latency_max_ms: Option<f64>,
    /// Loss recovery: nack (ask the sender again for lost packets) or off [default: nack].
    #[arg(long)]
    pub(crate) recovery: Option<String>,
    /// Several receivers in step: play every frame this long after the sender captured it
    /// (the same on every receiver; the network's delay is part of it), ms. Replaces
    /// --latency-ms [default: off].
    #[arg(long)]
    pub(crate) sync_latency_ms: Option<f64>,
    /// With --sync-latency-ms: the delay after the sound card (converter, amplifier DSP), µs;
    /// this receiver plays that much earlier [default: 0].
    #[arg(long)]
    pub(crate) output_delay_us: Option<f64>,
    /// Wire protocol: native, rtp (from ffmpeg, PipeWire, ...) or tcp (raw PCM from
    /// `arecord ... | nc HOST PORT`)
    /// [default: native].
    #[arg(long)]
    pub(crate) proto: Option<String>,
    /// RTP: wait for a stream announced by SAP on this group or address, ADDR:PORT (e.g.
    /// 224.0.0.56:9875, PipeWire's), and play it in its announced format on its port [default:
    /// off].
    #[arg(long)]
    pub(crate) sap: Option<String>,
    #[command(flatten)]
    pub(crate) audio: AudioArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// How long to stream: 30s, 10m, 1h; 0 streams until Ctrl-C.
    #[arg(long, default_value = "30s", value_parser = rt_config::parse_duration)]
    pub(crate) duration: f64,
    /// How far the sending card's clock is off, ppm.
    #[arg(long, default_value_t = 100.0, allow_hyphen_values = true)]
    pub(crate) drift_ppm: f64,
    /// Target latency, ms.
    #[arg(long)]
    pub(crate) latency_ms: Option<f64>,
    /// Drift correction: resample, slip or off [default: resample].
    #[arg(long)]
    pub(crate) drift_mode: Option<String>,
    /// CPU core for the sender's realtime thread (the receiver's is --cpu).
    #[arg(long)]
    pub(crate) sender_cpu: Option<usize>,
    /// The virtual capture's test signal: ramp (every frame checked: gaps, latency), sine[:HZ]
    /// or twotone[:F1,F2] (THD+N and wow & flutter of what was played, off the realtime
    /// threads; gaps are not measured frame by frame then).
    #[arg(long, default_value = "ramp", value_parser = SourceKind::from_spec)]
    pub(crate) source: SourceKind,
    #[command(flatten)]
    pub(crate) audio: AudioArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// The multicast options from the command line, else the configuration.
pub(crate) fn multicast_options(
    ttl: Option<u32>,
    interface: &Option<String>,
    cfg: &rt_config::Config,
) -> Result<netaudio::net::MulticastOptions, String> {
    let ttl = ttl.or(cfg.network.ttl);
    if let Some(t) = ttl
        && !(1..=255).contains(&t)
    {
        return Err(format!(
            "--ttl {t} is out of range; use 1..=255 (1: the LAN, routers do not forward it)"
        ));
    }
    let interface = interface
        .clone()
        .or(cfg.network.interface.clone())
        .map(|i| netaudio::net::Interface::parse(&i))
        .transpose()?;
    Ok(netaudio::net::MulticastOptions { ttl, interface })
}

pub(crate) fn parse_format(s: &str) -> Result<SampleFormat, String> {
    // Also used for values from the config file, so the message names the key.
    SampleFormat::from_name(s).ok_or_else(|| {
        format!(
            "unknown sample format {s:?} (audio.format / --format): use S16_LE, S24_3LE or S32_LE"
        )
    })
}

pub(crate) fn parse_drift_mode(s: &str) -> Result<DriftMode, String> {
    DriftMode::from_name(s)
        .ok_or_else(|| {
            format!("unknown drift mode {s:?} (receiver.drift_mode / --drift-mode): use resample, slip or off")
        })
}

/// The SAP target of an RTP sender (`--sap`, `network.sap`); always off in the other modes.
pub(crate) fn sap_target(
    cli: &Option<String>,
    cfg: &rt_config::Config,
    proto: daemon::Proto,
) -> Result<Option<std::net::SocketAddr>, String> {
    match cli.as_deref().or(cfg.network.sap.as_deref()) {
        _ if proto != daemon::Proto::Rtp => Ok(None),
        Some(s) => netaudio::sap::parse_target(s),
        None => Ok(Some(netaudio::sap::DEFAULT_GROUP)),
    }
}

/// The SAP group an RTP receiver follows a stream on (`--sap`, `network.sap`); off unless
/// given, and always off in the other modes.
pub(crate) fn recv_sap_target(
    cli: &Option<String>,
    cfg: &rt_config::Config,
    proto: daemon::Proto,
) -> Result<Option<std::net::SocketAddr>, String> {
    match cli.as_deref().or(cfg.network.sap.as_deref()) {
        Some(s) if proto == daemon::Proto::Rtp => netaudio::sap::parse_target(s),
        _ => Ok(None),
    }
}

pub(crate) fn proto(
    cli: &Option<String>,
    cfg: &rt_config::Config,
) -> Result<daemon::Proto, String> {
    daemon::Proto::from_name(
        cli.as_deref()
            .or(cfg.network.proto.as_deref())
            .unwrap_or("native"),
    )
}
