//! Wiring of `netaudio send`, `netaudio recv` and `netaudio demo`: open the devices and
//! sockets, start the realtime threads, run the housekeeping loop, stop cleanly, report.

use crate::housekeeping::{self, STOP};
use crate::net::{DatagramOut, StreamInput, UdpReceiver, UdpSender, monotonic_ns};
use crate::pcm::alsa::{AlsaCapture, AlsaPlayback, GoneSwitch};
use crate::pcm::virtual_dev::{self, Sink, VirtualCapture, VirtualPlayback};
use crate::pcm::{Capture, DeviceRequest, Playback};
use crate::rt::{self, RtSpec};
use crate::rtp::RtpInput;
use crate::status::{self, Meter};
use crate::stream::AnyPacketizer;
use crate::stream::{self, LoopReport};
use crate::tcp::{TcpPcmReceiver, TcpPcmSender};
use crate::watchdog::{Heartbeat, TestFault};
use engine::auth::Key;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::recovery::{DEFAULT_HISTORY_MS, RecoveryMode, RetransmitHistory};
use engine::rtlog;
use engine::rtlog::EventSink;
use engine::sender::Sender;
use engine::session::ReceiverSession;
use engine::sim::fidelity::{FidelityAnalyzer, FidelityReport};
use engine::sim::signal::SourceKind;
use engine::stats::{Stats, StatsSnapshot};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why `send`, `recv` or `demo` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad settings, or a device or socket that cannot be opened (exit code 2).
    Setup(String),
    /// A realtime thread stopped while streaming (panicked, or stuck past the stall limit): it
    /// has been logged and the watchdog is no longer fed (exit code 3, so that systemd's
    /// `Restart=always` starts the daemon again).
    Realtime(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Setup(e) | Failure::Realtime(e) => f.write_str(e),
        }
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Setup(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Failure {
        Failure::Setup(e.to_string())
    }
}

/// Ends a daemon whose realtime thread stopped: nothing to join (it may be stuck for good) and
/// nothing to report; the status server is let go.
fn realtime_failure(why: String, status: Option<std::thread::JoinHandle<()>>) -> Failure {
    STOP.store(true, Ordering::Relaxed);
    if let Some(h) = status {
        let _ = h.join();
    }
    Failure::Realtime(why)
}

/// Audio side of a daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioOptions {
    /// Device name (ALSA, or `virtual[:...]`).
    pub device: String,
    /// Stream format.
    pub format: StreamFormat,
    /// Frames per period.
    pub period: usize,
    /// Periods in the device buffer.
    pub periods: usize,
}

impl AudioOptions {
    pub(crate) fn request(&self) -> DeviceRequest {
        DeviceRequest {
            name: self.device.clone(),
            format: self.format,
            period: self.period,
            periods: self.periods,
        }
    }
}

/// Everything common to the daemons.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Realtime thread settings.
    pub rt: RtSpec,
    /// Lock memory.
    pub mlock: bool,
    /// Seconds between stats lines (0: none).
    pub stats_interval: f64,
    /// Write final counters here as JSON.
    pub stats_json: Option<std::path::PathBuf>,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Serve live status on this unix socket (None: the default path; daemons only).
    pub status_socket: Option<std::path::PathBuf>,
    /// Serve Prometheus text on this localhost address (off when None).
    pub metrics: Option<String>,
    /// Pre-shared key: authenticate every packet (see `engine::auth`).
    pub key: Option<Key>,
    /// Wire protocol of `send` and `recv` (`demo` always streams native).
    pub proto: Proto,
}

/// The wire protocol (`[network] proto`, `--proto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Proto {
    /// netaudio's own packets over UDP.
    #[default]
    Native,
    /// RTP (RFC 3551 L16/L24).
    Rtp,
    /// Raw PCM over TCP, as the old `arecord | nc` / `nc -l | aplay` pipeline.
    Tcp,
}

impl Proto {
    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Result<Proto, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(Proto::Native),
            "rtp" => Ok(Proto::Rtp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!(
                "unknown protocol {s:?} (network.proto / --proto): use native, rtp or tcp"
            )),
        }
    }
}

pub(crate) fn start_status(
    opts: &RunOptions,
    role: &'static str,
    setup: &crate::pcm::DeviceSetup,
    address: String,
    stats: &Arc<Stats>,
    meter: &Arc<Meter>,
) -> Option<std::thread::JoinHandle<()>> {
    let path = opts
        .status_socket
        .clone()
        .unwrap_or_else(|| status::default_socket(role));
    let source = status::Source {
        role,
        format: setup.format,
        device: setup.name.clone(),
        address,
        stats: stats.clone(),
        meter: meter.clone(),
        started: Instant::now(),
    };
    match status::serve(source, path.clone(), opts.metrics.clone(), &STOP) {
        Ok(h) => {
            log::info!("status: `netaudio status --socket {}`", path.display());
            Some(h)
        }
        Err(e) => {
            log::warn!("{e}; `netaudio status` will not reach this daemon");
            None
        }
    }
}

/// The sender, authenticated when a key is configured (its session: the wall clock now).
fn with_sender_key(tx: Sender, opts: &RunOptions) -> Sender {
    match &opts.key {
        Some(k) => {
            log::info!("packets are authenticated with the key file");
            tx.with_auth(k.clone(), crate::net::clock_ns(libc::CLOCK_REALTIME))
        }
        None => tx,
    }
}

/// The copies of the last packets a sender keeps for NACKs; with a key it answers only NACKs
/// sealed with it.
fn history_for(tx: &Sender, opts: &RunOptions) -> RetransmitHistory {
    let h =
        RetransmitHistory::for_span(tx.format().rate, tx.frames_per_packet(), DEFAULT_HISTORY_MS);
    match &opts.key {
        Some(k) => h.with_auth(k.clone()),
        None => h,
    }
}

/// The receiver, accepting only authenticated packets when a key is configured.
fn with_receiver_key(rx: Receiver, opts: &RunOptions) -> Receiver {
    match &opts.key {
        Some(k) => {
            log::info!(
                "only packets authenticated with the key file are played (clocks must agree within {} s)",
                engine::auth::DEFAULT_MAX_SKEW_NS / 1_000_000_000
            );
            rx.with_auth(k.clone())
        }
        None => rx,
    }
}

/// A random stream id (new per sender start).
pub(crate) fn new_stream_id() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into a live buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        engine::rng::mix64(monotonic_ns() ^ std::process::id() as u64) as u32
    }
}

pub(crate) fn setup_rt(opts: &RunOptions) {
    if opts.mlock
        && let Err(e) = rt::lock_memory()
    {
        log::warn!("{e}");
    }
}

pub(crate) fn report_rt(name: &str, outcome: &rt::RtOutcome) {
    if !outcome.problems.is_empty() {
        log::warn!("{name} thread: {outcome}");
    } else {
        log::info!(
            "{name} thread: {}{}",
            if outcome.fifo {
                "SCHED_FIFO"
            } else {
                "normal scheduling"
            },
            if outcome.pinned { ", pinned" } else { "" }
        );
    }
}

pub(crate) fn write_json(path: &Option<std::path::PathBuf>, v: &Value) -> Result<(), String> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())? + "\n";
        std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

pub(crate) fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe_zeroed_rusage();
    // SAFETY: getrusage writes one rusage into a live local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

pub(crate) fn deadline(opts: &RunOptions) -> Option<Instant> {
    opts.duration.map(|d| Instant::now() + d)
}

/// The sender's socket, by protocol.
pub enum NetOut {
    /// Native packets over UDP.
    Udp(UdpSender),
    /// Raw PCM over TCP.
    Tcp(Box<TcpPcmSender>),
}

impl NetOut {
    fn peer(&self) -> std::net::SocketAddr {
        match self {
            NetOut::Udp(s) => s.peer(),
            NetOut::Tcp(s) => s.peer(),
        }
    }
}

// Every method forwarded: a default here would silently turn off tagging or NACKs.
impl DatagramOut for NetOut {
    #[inline]
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        match self {
            NetOut::Udp(s) => s.send_gather(header, payload),
            NetOut::Tcp(s) => s.send_gather(header, payload),
        }
    }

    #[inline]
    fn send_tagged(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<usize, i32> {
        match self {
            NetOut::Udp(s) => DatagramOut::send_tagged(s, header, payload, tag),
            NetOut::Tcp(s) => s.send_tagged(header, payload, tag),
        }
    }

    fn recv_nack(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            NetOut::Udp(s) => s.recv_nack(buf),
            NetOut::Tcp(s) => s.recv_nack(buf),
        }
    }

    fn fd(&self) -> Option<i32> {
        match self {
            NetOut::Udp(s) => DatagramOut::fd(s),
            NetOut::Tcp(s) => DatagramOut::fd(s.as_ref()),
        }
    }
}

/// The receiver's socket, by protocol.
pub enum NetIn {
    /// Native packets over UDP.
    Udp(Box<UdpReceiver>),
    /// Raw PCM over TCP.
    Tcp(Box<TcpPcmReceiver>),
    /// RTP over UDP, translated into native packets.
    Rtp(Box<RtpInput>),
}

impl NetIn {
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            NetIn::Udp(s) => s.local_addr(),
            NetIn::Tcp(s) => s.local_addr(),
            NetIn::Rtp(s) => s.sock.local_addr(),
        }
    }
}

// Every method forwarded: a default here would silently turn off NACKs.
impl StreamInput for NetIn {
    #[inline]
    fn recv_into<R: core::borrow::BorrowMut<engine::receiver::Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32> {
        match self {
            NetIn::Udp(s) => s.recv_into(session),
            NetIn::Tcp(s) => s.recv_into(session),
            NetIn::Rtp(s) => s.recv_into(session),
        }
    }

    fn send_nack(&self, nack: &[u8]) -> Result<usize, i32> {
        match self {
            NetIn::Udp(s) => StreamInput::send_nack(s.as_ref(), nack),
            NetIn::Tcp(s) => s.send_nack(nack),
            NetIn::Rtp(s) => s.send_nack(nack),
        }
    }

    fn wait_fd(&self) -> Option<i32> {
        match self {
            NetIn::Udp(s) => StreamInput::wait_fd(s.as_ref()),
            NetIn::Tcp(s) => s.wait_fd(),
            NetIn::Rtp(s) => s.wait_fd(),
        }
    }

    fn rejected(&self) -> u64 {
        match self {
            NetIn::Udp(s) => StreamInput::rejected(s.as_ref()),
            NetIn::Tcp(s) => s.rejected(),
            NetIn::Rtp(s) => s.rejected(),
        }
    }
}

/// Opens a capture device by name.
pub enum AnyCapture {
    /// ALSA.
    Alsa(Box<AlsaCapture>),
    /// Virtual.
    Virtual(Box<VirtualCapture>),
}

pub(crate) fn open_capture(a: &AudioOptions) -> Result<AnyCapture, String> {
    let req = a.request();
    if virtual_dev::parse_name(&a.device).is_some() {
        Ok(AnyCapture::Virtual(Box::new(VirtualCapture::open(&req)?)))
    } else {
        Ok(AnyCapture::Alsa(Box::new(
            AlsaCapture::open(&req).map_err(|e| e.to_string())?,
        )))
    }
}

/// Raw PCM and RTP have no room for netaudio's tag: a key with `proto = "tcp"` or `"rtp"` is
/// a configuration mistake, not something to ignore.
pub(crate) fn refuse_key_unless_native(opts: &RunOptions) -> Result<(), String> {
    let why = match opts.proto {
        Proto::Tcp => {
            "raw PCM, as the old pipeline sends it, has no room for an authentication tag"
        }
        Proto::Rtp => "RTP packets, as ffmpeg, VLC and PipeWire read them, carry no netaudio tag",
        Proto::Native => return Ok(()),
    };
    if opts.key.is_some() {
        let name = if opts.proto == Proto::Tcp {
            "tcp"
        } else {
            "rtp"
        };
        return Err(format!(
            "network.key_file (--key-file) cannot be used with proto = \"{name}\": {why}; remove the key file, or use proto = \"native\" on both machines"
        ));
    }
    Ok(())
}

/// The test fault switch of the daemon's ALSA device when `fault` is a device fault: it must be
/// `want` (the one for this daemon's device direction), and `switch` must give one (an ALSA
/// device); other faults need none.
fn device_fault(
    fault: Option<TestFault>,
    want: TestFault,
    switch: impl FnOnce() -> Option<GoneSwitch>,
) -> Result<Option<GoneSwitch>, String> {
    match fault {
        None | Some(TestFault::Stall | TestFault::Panic) => Ok(None),
        Some(f) if f == want => switch().map(Some).ok_or_else(|| {
            format!(
                "NETAUDIO_TEST_FAULT={f} needs an ALSA device (virtual devices simulate an \
                 unplug with virtual:unplug=AT+FOR)"
            )
        }),
        Some(f) => Err(format!(
            "NETAUDIO_TEST_FAULT={f} does not apply here: capture-gone is for netaudio send, \
             playback-gone for netaudio recv, each with an ALSA device"
        )),
    }
}

/// `netaudio send`.
pub fn send(
    audio: &AudioOptions,
    dest: &str,
    dscp: Option<u8>,
    sdp_file: Option<&std::path::Path>,
    opts: &RunOptions,
) -> Result<(), Failure> {
    if opts.proto == Proto::Rtp {
        crate::rtp::check_format(audio.format)?;
    }
    housekeeping::install_signal_handlers();
    refuse_key_unless_native(opts)?;
    let fault = TestFault::from_env()?;
    let (tcp_producer, mut tcp_consumer) = rtlog::queue();
    let mut tcp_stats = None;
    let sock = match opts.proto {
        Proto::Native => NetOut::Udp(UdpSender::connect(dest, dscp).map_err(|e| e.to_string())?),
        Proto::Tcp => {
            let s = TcpPcmSender::connect(dest, audio.format, dscp, tcp_producer)
                .map_err(|e| e.to_string())?;
            log::info!(
                "raw TCP mode: raw {} PCM to {}, as `arecord -t raw | nc`",
                audio.format,
                s.peer()
            );
            tcp_stats = Some(s.stats());
            NetOut::Tcp(Box::new(s))
        }
        Proto::Rtp => NetOut::Udp(UdpSender::connect(dest, dscp).map_err(|e| e.to_string())?),
    };
    let dev = open_capture(audio)?;
    let setup = match &dev {
        AnyCapture::Alsa(d) => d.setup().clone(),
        AnyCapture::Virtual(d) => d.setup().clone(),
    };
    let gone = device_fault(fault, TestFault::CaptureGone, || match &dev {
        AnyCapture::Alsa(d) => Some(d.gone_switch()),
        AnyCapture::Virtual(_) => None,
    })?;
    let mut rtp_json = None;
    let tx = match (&sock, opts.proto) {
        (NetOut::Udp(udp), Proto::Rtp) => {
            let tx = crate::rtp::new_sender(&setup)?;
            crate::rtp::announce(&tx, &setup, udp, sdp_file)?;
            rtp_json =
                Some(json!({"proto": "rtp", "payload_type": tx.payload_type(), "ssrc": tx.ssrc()}));
            AnyPacketizer::Rtp(Box::new(tx))
        }
        _ => {
            let tx = Sender::new(setup.format, setup.period, new_stream_id(), new_stream_id())
                .map_err(|e| e.to_string())?;
            log::info!(
                "sending {} from {:?} (period {}, buffer {} frames, {:?} access) to {}",
                setup.format,
                setup.name,
                setup.period,
                setup.buffer,
                setup.access,
                sock.peer()
            );
            AnyPacketizer::Native(with_sender_key(tx, opts))
        }
    };
    setup_rt(opts);
    let stats = Arc::new(Stats::default());
    let meter = Arc::new(Meter::default());
    let status = start_status(
        opts,
        "sender",
        &setup,
        sock.peer().to_string(),
        &stats,
        &meter,
    );
    let (mut producer, mut consumer) = rtlog::queue();
    let (st, me) = (stats.clone(), meter.clone());
    // Copies of the last packets, for the receiver's NACKs (allocated here, before the thread;
    // RTP receivers send no NACKs).
    let mut history = match &tx {
        AnyPacketizer::Native(t) => Some(history_for(t, opts)),
        AnyPacketizer::Rtp(_) => None,
    };
    let cpu0 = cpu_seconds();
    let heartbeat = Arc::new(Heartbeat::new("na-capture"));
    let hb = heartbeat.clone();
    let (handle, outcome) = rt::spawn("na-capture", opts.rt, move || {
        let mut tx = tx;
        let h = history.as_mut();
        let (p, hb) = (&mut producer, &*hb);
        match dev {
            AnyCapture::Alsa(mut d) => {
                stream::run_sender_with_history(&mut *d, &mut tx, &sock, h, &STOP, hb, &st, &me, p)
            }
            AnyCapture::Virtual(mut d) => {
                stream::run_sender_with_history(&mut *d, &mut tx, &sock, h, &STOP, hb, &st, &me, p)
            }
        }
    })
    .map_err(|e| e.to_string())?;
    report_rt("capture", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    let watched = housekeeping::run(
        &mut [&mut consumer, &mut tcp_consumer],
        &[&heartbeat],
        fault,
        gone.as_ref(),
        interval,
        deadline(opts),
        || housekeeping::sender_line(&stats.snapshot(), rate),
    );
    if let Err(why) = watched {
        return Err(realtime_failure(why, status));
    }
    STOP.store(true, Ordering::Relaxed);
    let rep = handle.join().map_err(|_| "the capture thread panicked")?;
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::sender_line(&s, rate));
    let mut j = json!({
            "role": "sender",
            "packets_sent": s.packets_sent,
            "frames_sent": s.frames_sent,
            "send_errors": s.send_errors,
            "nacks_received": s.nacks_received,
            "retransmits_sent": s.retransmits_sent,
            "retransmit_bytes_sent": s.retransmit_bytes_sent,
            "resends_capped": s.resends_capped,
            "resends_over_limit": s.resends_over_limit,
            "nack_auth_failures": s.nack_auth_failures,
            "nack_replays": s.nack_replays,
            "xruns": s.xruns,
            "device_lost": s.device_lost,
            "allocations_rt": rep.allocations,
            "frees_rt": rep.frees,
            "periods": rep.periods,
            "cpu_seconds": cpu_seconds() - cpu0,
            "rt_fifo": outcome.fifo,
            "rt_pinned": outcome.pinned,
    });
    if let Some(t) = tcp_stats {
        log::info!("{}", t.line());
        t.add_json(&mut j);
    }
    if let (Some(o), Some(r)) = (j.as_object_mut(), rtp_json) {
        o.extend(r.as_object().cloned().unwrap_or_default());
    }
    Ok(write_json(&opts.stats_json, &j)?)
}

/// Receiver settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceiveOptions {
    /// Target latency, ms.
    pub latency_ms: f64,
    /// Drift correction.
    pub drift_mode: DriftMode,
    /// The playback device's sample format.
    pub playback_format: PlaybackFormat,
    /// Loss recovery.
    pub recovery: RecoveryMode,
    /// `latency = auto` between these bounds (ms); `latency_ms` is where the target starts.
    pub auto_latency: Option<(f64, f64)>,
}

/// The sample format a playback device is opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaybackFormat {
    /// With `resample`, the widest the device takes (S32_LE, S24_3LE, then the stream's):
    /// resampled audio is then not rounded back to a 16-bit stream's width, which would add
    /// its quantisation noise a second time (+3 dB). Otherwise, and on virtual devices, the
    /// stream's.
    Auto,
    /// This one (at least as wide as the stream's).
    Fixed(SampleFormat),
}

/// The sample formats to try for the playback device, best first.
pub(crate) fn playback_candidates(
    stream: SampleFormat,
    r: &ReceiveOptions,
    is_virtual: bool,
) -> Vec<SampleFormat> {
    match r.playback_format {
        PlaybackFormat::Fixed(f) => vec![f],
        PlaybackFormat::Auto if r.drift_mode == DriftMode::Resample && !is_virtual => {
            let mut v: Vec<SampleFormat> = [SampleFormat::S32Le, SampleFormat::S24_3Le]
                .into_iter()
                .filter(|f| f.bytes() > stream.bytes())
                .collect();
            v.push(stream);
            v
        }
        PlaybackFormat::Auto => vec![stream],
    }
}

/// A receiver for a stream in `stream` played on the device `setup` describes (whose sample
/// format may be wider).
pub(crate) fn receiver_for(
    setup: &crate::pcm::DeviceSetup,
    stream: StreamFormat,
    r: &ReceiveOptions,
) -> Result<Receiver, String> {
    let mut cfg = ReceiverConfig::new(stream, setup.period, r.latency_ms);
    cfg.output_sample = setup.format.sample;
    cfg.output_delay_frames = setup.buffer.saturating_sub(setup.period);
    cfg.drift_mode = r.drift_mode;
    cfg.recovery = r.recovery;
    cfg.auto_latency = r
        .auto_latency
        .map(|(lo, hi)| engine::autolatency::AutoLatency::from_ms(setup.format.rate, lo, hi));
    Receiver::new(cfg).map_err(|e| e.to_string())
}

/// Opens a playback device by name.
pub enum AnyPlayback {
    /// ALSA.
    Alsa(Box<AlsaPlayback>),
    /// Virtual.
    Virtual(Box<VirtualPlayback>),
}

impl AnyPlayback {
    pub(crate) fn setup(&self) -> crate::pcm::DeviceSetup {
        match self {
            AnyPlayback::Alsa(d) => d.setup().clone(),
            AnyPlayback::Virtual(d) => d.setup().clone(),
        }
    }
}

/// Opens the playback device in the first of `formats` (sample formats, best first) it
/// takes; the error names the last one tried.
pub(crate) fn open_playback(
    a: &AudioOptions,
    sink: Option<Sink>,
    formats: &[SampleFormat],
) -> Result<AnyPlayback, String> {
    let mut req = a.request();
    let mut last = String::from("no sample format to try");
    if virtual_dev::parse_name(&a.device).is_some() {
        req.format.sample = formats.first().copied().unwrap_or(a.format.sample);
        return Ok(AnyPlayback::Virtual(Box::new(VirtualPlayback::open(
            &req, sink,
        )?)));
    }
    for (i, &f) in formats.iter().enumerate() {
        req.format.sample = f;
        match AlsaPlayback::open(&req) {
            Ok(d) => return Ok(AnyPlayback::Alsa(Box::new(d))),
            Err(e) => {
                if i + 1 < formats.len() {
                    log::debug!(
                        "{}: {} not taken ({e}); trying the next format",
                        a.device,
                        f.name()
                    );
                }
                last = e.to_string();
            }
        }
    }
    Err(last)
}

type RecvThread = std::thread::JoinHandle<(LoopReport, AnyPlayback)>;

#[allow(clippy::too_many_arguments)]
fn spawn_receiver(
    dev: AnyPlayback,
    mut rx: Receiver,
    mut sock: NetIn,
    heartbeat: Arc<Heartbeat>,
    stats: Arc<Stats>,
    meter: Arc<Meter>,
    mut producer: rtlog::EventProducer,
    spec: RtSpec,
) -> Result<(RecvThread, rt::RtOutcome), String> {
    rt::spawn("na-playback", spec, move || {
        let mut dev = dev;
        let (hb, st, me, p) = (&*heartbeat, &*stats, &*meter, &mut producer);
        let rep = match &mut dev {
            AnyPlayback::Alsa(d) => {
                stream::run_receiver(&mut **d, &mut rx, &mut sock, &STOP, hb, st, me, p)
            }
            AnyPlayback::Virtual(d) => {
                stream::run_receiver(&mut **d, &mut rx, &mut sock, &STOP, hb, st, me, p)
            }
        };
        (rep, dev)
    })
    .map_err(|e| e.to_string())
}

pub(crate) fn receiver_json(
    s: &StatsSnapshot,
    rep: &LoopReport,
    cpu: f64,
    outcome: &rt::RtOutcome,
) -> Value {
    json!({
        "role": "receiver",
        "gaps": s.gaps,
        "target_frames": s.target_frames,
        "level_frames": s.level_frames,
        "lost_packets": s.lost_packets,
        "recovered_packets": s.recovered_packets,
        "nacks_sent": s.nacks_sent,
        "nack_bytes_sent": s.nack_bytes_sent,
        "concealed_frames": s.concealed_frames,
        "late_packets": s.late_packets,
        "duplicate_packets": s.duplicate_packets,
        "invalid_packets": s.invalid_packets,
        "foreign_packets": s.foreign_packets,
        "auth_failures": s.auth_failures,
        "replayed_packets": s.replayed_packets,
        "stale_packets": s.stale_packets,
        "device_lost": s.device_lost,
        "packets_received": s.packets_received,
        "resyncs": s.resyncs,
        "streams_ended": s.streams_ended,
        "xruns": s.xruns,
        "late_renders": s.late_renders,
        "drift_ppm": s.drift_ppm,
        "slip_drops": s.slip_drops,
        "slip_inserts": s.slip_inserts,
        "frames_played": s.frames_played,
        "allocations_rt": rep.allocations,
        "frees_rt": rep.frees,
        "periods": rep.periods,
        "cpu_seconds": cpu,
        "rt_fifo": outcome.fifo,
        "rt_pinned": outcome.pinned,
    })
}

/// `netaudio recv`.
pub fn recv(
    audio: &AudioOptions,
    listen: &str,
    r: &ReceiveOptions,
    opts: &RunOptions,
) -> Result<(), Failure> {
    housekeeping::install_signal_handlers();
    refuse_key_unless_native(opts)?;
    let fault = TestFault::from_env()?;
    // Raw PCM over TCP: nothing is lost on the way, and there are no sequence numbers to ask
    // for; RTP senders (ffmpeg, PipeWire) do not answer NACKs.
    let tcp_r;
    let r = if opts.proto != Proto::Native {
        tcp_r = ReceiveOptions {
            recovery: RecoveryMode::Off,
            ..*r
        };
        &tcp_r
    } else {
        r
    };
    let (tcp_producer, mut tcp_consumer) = rtlog::queue();
    let mut tcp_stats = None;
    let sock = match opts.proto {
        Proto::Native => NetIn::Udp(Box::new(
            UdpReceiver::bind(listen, 4 << 20).map_err(|e| e.to_string())?,
        )),
        Proto::Tcp => {
            let s = TcpPcmReceiver::bind(listen, audio.format, audio.period, tcp_producer)
                .map_err(|e| e.to_string())?;
            log::info!(
                "raw TCP mode: listening on TCP {} for raw {} PCM, as `nc -l | aplay -t raw`",
                s.local_addr().map_err(|e| e.to_string())?,
                audio.format
            );
            tcp_stats = Some(s.stats());
            NetIn::Tcp(Box::new(s))
        }
        Proto::Rtp => {
            crate::rtp::check_format(audio.format)?;
            let s = RtpInput::bind(listen, audio.format)?;
            let enc = engine::rtp::encoding_name(audio.format.sample).map_err(|e| e.to_string())?;
            log::info!(
                "RTP mode: dynamic payload types (96-127) are read as {enc}/{}/{}, static 10/11 as L16/44100",
                audio.format.rate,
                audio.format.channels
            );
            NetIn::Rtp(Box::new(s))
        }
    };
    let sink = virtual_dev::parse_name(&audio.device)
        .is_some()
        .then(|| Sink::new(audio.format, None, 0).following(r.drift_mode));
    let is_virtual = virtual_dev::parse_name(&audio.device).is_some();
    let formats = playback_candidates(audio.format.sample, r, is_virtual);
    let dev = open_playback(audio, sink, &formats)?;
    let setup = dev.setup();
    let gone = device_fault(fault, TestFault::PlaybackGone, || match &dev {
        AnyPlayback::Alsa(d) => Some(d.gone_switch()),
        AnyPlayback::Virtual(_) => None,
    })?;
    let (producer, mut consumer) = rtlog::queue();
    let rx = with_receiver_key(
        receiver_for(&setup, audio.format, r)?.with_events(producer),
        opts,
    );
    let (producer2, mut consumer2) = rtlog::queue();
    log::info!(
        "receiving on {} into {:?}: {}{} (period {}, buffer {} frames, {:?} access), latency {} ms, drift {}, recovery {}",
        sock.local_addr().map_err(|e| e.to_string())?,
        setup.name,
        setup.format,
        if setup.format.sample == audio.format.sample {
            String::new()
        } else {
            format!(
                " (the {} stream played at the device's width)",
                audio.format.sample.name()
            )
        },
        setup.period,
        setup.buffer,
        setup.access,
        r.latency_ms,
        r.drift_mode,
        r.recovery
    );
    setup_rt(opts);
    let stats = Arc::new(Stats::default());
    let meter = Arc::new(Meter::default());
    let address = sock.local_addr().map_err(|e| e.to_string())?.to_string();
    let status = start_status(opts, "receiver", &setup, address, &stats, &meter);
    let cpu0 = cpu_seconds();
    let heartbeat = Arc::new(Heartbeat::new("na-playback"));
    let (handle, outcome) = spawn_receiver(
        dev,
        rx,
        sock,
        heartbeat.clone(),
        stats.clone(),
        meter,
        producer2,
        opts.rt,
    )?;
    report_rt("playback", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    let watched = housekeeping::run(
        &mut [&mut consumer, &mut consumer2, &mut tcp_consumer],
        &[&heartbeat],
        fault,
        gone.as_ref(),
        interval,
        deadline(opts),
        || housekeeping::receiver_line(&stats.snapshot(), rate),
    );
    if let Err(why) = watched {
        return Err(realtime_failure(why, status));
    }
    STOP.store(true, Ordering::Relaxed);
    let (rep, dev) = handle.join().map_err(|_| "the playback thread panicked")?;
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::receiver_line(&s, rate));
    let mut j = receiver_json(&s, &rep, cpu_seconds() - cpu0, &outcome);
    if opts.proto == Proto::Rtp {
        j["proto"] = json!("rtp");
    }
    if let Some(t) = tcp_stats {
        log::info!("{}", t.line());
        t.add_json(&mut j);
    }
    if let AnyPlayback::Virtual(v) = &dev
        && let Some(sink) = v.sink()
    {
        // What the virtual device heard, checked frame by frame.
        let c = sink.counts();
        j["heard_gaps"] = json!(c.gaps);
        j["heard_frames"] = json!(c.frames);
        j["heard_bit_exact"] = json!(c.bit_exact);
        j["heard_leading_silence"] = json!(c.leading_frames);
        j["heard_gap_frames"] = json!(c.gap_frames);
        log::info!("heard: {} gaps in {} frames checked", c.gaps, c.frames);
    }
    save_recording(&dev)?;
    Ok(write_json(&opts.stats_json, &j)?)
}

/// Writes a `virtual:record=FILE` device's recording, if any.
pub(crate) fn save_recording(dev: &AnyPlayback) -> Result<(), String> {
    if let AnyPlayback::Virtual(v) = dev
        && let Some((path, frames)) = v.save_recording()?
    {
        log::info!("recorded {frames} frames to {}", path.display());
    }
    Ok(())
}

/// `netaudio demo` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoOptions {
    /// Format, period, periods (devices are virtual).
    pub audio: AudioOptions,
    /// Sender clock offset, ppm.
    pub drift_ppm: f64,
    /// Receiver settings.
    pub receive: ReceiveOptions,
    /// Realtime settings of the sender thread.
    pub sender_rt: RtSpec,
    /// What the virtual capture plays: the ramp (every frame checked), or a tone (THD+N and
    /// wow & flutter of what was played).
    pub source: SourceKind,
}

/// What a demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// JSON of everything.
    pub json: Value,
    /// Gaps the analyzer heard.
    pub gaps: u64,
    /// Gaps the engine counted.
    pub engine_gaps: u64,
    /// Allocations on the realtime threads after start-up.
    pub allocations_rt: u64,
    /// Frees on the realtime threads after start-up.
    pub frees_rt: u64,
    /// With a tone for a source: THD+N and wow & flutter of what was played (gaps are not
    /// measured then).
    pub fidelity: Option<FidelityReport>,
}

/// With a tone, windows starting this long into the demo count only towards the start-up
/// worst case: a quarter of the run, at most 10 s.
fn fidelity_settle_s(opts: &RunOptions) -> f64 {
    opts.duration
        .map_or(10.0, |d| (d.as_secs_f64() / 4.0).min(10.0))
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Analyzes what the tap hands over, off the realtime threads, until `stop` (then what is
/// left): returns the analyzer and the frames the realtime side had no room for.
fn spawn_fidelity(
    mut fa: FidelityAnalyzer,
    mut reader: virtual_dev::TapReader,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<(FidelityAnalyzer, u64)>, String> {
    std::thread::Builder::new()
        .name("na-fidelity".into())
        .spawn(move || {
            loop {
                let last = stop.load(Ordering::Acquire);
                reader.drain(|v| fa.push(v as f64 / 2_147_483_648.0));
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let dropped = reader.dropped();
            (fa, dropped)
        })
        .map_err(|e| format!("cannot start the fidelity thread: {e}"))
}

/// `netaudio demo`: a local sender → receiver stream over UDP on loopback between two virtual
/// sound cards whose clocks differ by `drift_ppm`, both realtime threads in this process,
/// the played audio checked frame by frame.
pub fn demo(d: &DemoOptions, opts: &RunOptions) -> Result<DemoReport, Failure> {
    housekeeping::install_signal_handlers();
    let fault = TestFault::from_env()?;
    // Virtual devices only: no device fault applies (they have virtual:unplug=AT+FOR).
    let gone = device_fault(fault, TestFault::PlaybackGone, || None)?;
    let sock_rx = UdpReceiver::bind("127.0.0.1:0", 4 << 20).map_err(|e| e.to_string())?;
    let port = sock_rx.local_addr().map_err(|e| e.to_string())?.port();
    let sock_tx =
        UdpSender::connect(&format!("127.0.0.1:{port}"), None).map_err(|e| e.to_string())?;
    d.source.check(d.audio.format.rate)?;
    let mut cap_audio = d.audio.clone();
    cap_audio.device = format!(
        "virtual:ppm={}{}",
        d.drift_ppm,
        virtual_dev::source_option(d.source)
    );
    let mut play_audio = d.audio.clone();
    play_audio.device = "virtual".into();
    let mut cap = VirtualCapture::open(&cap_audio.request())?;
    // Frame 0 is captured 50 ms from now; the sink knows the source's clock.
    cap.set_epoch(monotonic_ns() + 50_000_000);
    // Latency statistics start after the drift loop has settled (10 s).
    let sink = Sink::new(
        d.audio.format,
        Some(cap.capture_times()),
        d.audio.format.rate as u64 * 10,
    )
    .following(d.receive.drift_mode);
    let live = sink.live();
    // With a tone: what is played goes through a tap to an analyzer on its own thread (4 s of
    // room, read every 20 ms).
    let fidelity_stop = Arc::new(AtomicBool::new(false));
    let (sink, fidelity) =
        match FidelityAnalyzer::for_source(d.audio.format, d.source, fidelity_settle_s(opts)) {
            Some(fa) => {
                let (tap, reader) = virtual_dev::tap(d.audio.format.rate as usize * 4);
                let t = spawn_fidelity(fa, reader, fidelity_stop.clone())?;
                (sink.with_tap(tap), Some(t))
            }
            None => (sink, None),
        };
    // Whatever way the demo ends, the fidelity thread ends too.
    let _stop_fidelity = StopOnDrop(fidelity_stop.clone());
    let finish_fidelity = move || -> Result<Option<(FidelityAnalyzer, u64)>, String> {
        fidelity_stop.store(true, Ordering::Release);
        fidelity
            .map(|t| {
                t.join()
                    .map_err(|_| "the fidelity thread panicked".to_string())
            })
            .transpose()
    };
    let formats = playback_candidates(d.audio.format.sample, &d.receive, true);
    let dev = open_playback(&play_audio, Some(sink), &formats)?;
    let setup = dev.setup();
    let (p1, mut c1) = rtlog::queue();
    let (p2, mut c2) = rtlog::queue();
    let (p3, mut c3) = rtlog::queue();
    let rx = with_receiver_key(
        receiver_for(&setup, d.audio.format, &d.receive)?.with_events(p1),
        opts,
    );
    let tx = Sender::new(
        d.audio.format,
        setup.period,
        new_stream_id(),
        new_stream_id(),
    )
    .map_err(|e| e.to_string())?;
    let tx = with_sender_key(tx, opts);
    setup_rt(opts);
    let rx_stats = Arc::new(Stats::default());
    let tx_stats = Arc::new(Stats::default());
    let cpu0 = cpu_seconds();
    let meter = Arc::new(Meter::default());
    let (rx_beat, tx_beat) = (
        Arc::new(Heartbeat::new("na-playback")),
        Arc::new(Heartbeat::new("na-capture")),
    );
    let (rh, r_out) = spawn_receiver(
        dev,
        rx,
        NetIn::Udp(Box::new(sock_rx)),
        rx_beat.clone(),
        rx_stats.clone(),
        meter,
        p2,
        opts.rt,
    )?;
    report_rt("playback", &r_out);
    let st = tx_stats.clone();
    // The sender stops after the receiver, so the end of the run is no gap.
    static SENDER_STOP: AtomicBool = AtomicBool::new(false);
    SENDER_STOP.store(false, Ordering::Relaxed);
    let mut history = history_for(&tx, opts);
    let hb = tx_beat.clone();
    let (th, t_out) = rt::spawn("na-capture", d.sender_rt, move || {
        let (mut cap, mut tx, mut p3) = (cap, tx, p3);
        let meter = Meter::default();
        stream::run_sender_with_history(
            &mut cap,
            &mut tx,
            &sock_tx,
            Some(&mut history),
            &SENDER_STOP,
            &hb,
            &st,
            &meter,
            &mut p3,
        )
    })
    .map_err(|e| e.to_string())?;
    report_rt("capture", &t_out);
    log::info!(
        "demo: virtual capture ({:+} ppm) -> UDP 127.0.0.1:{port} -> virtual playback, {}, period {}, latency {} ms, drift {}",
        d.drift_ppm,
        setup.format,
        setup.period,
        d.receive.latency_ms,
        d.receive.drift_mode
    );
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    let watched = housekeeping::run(
        &mut [&mut c1, &mut c2, &mut c3],
        &[&rx_beat, &tx_beat],
        fault,
        gone.as_ref(),
        interval,
        deadline(opts),
        || {
            let lat = f64::from_bits(live.latency_ms.load(Ordering::Relaxed));
            format!(
                "heard: {} gaps, latency {:.2} ms | {}",
                live.gaps.load(Ordering::Relaxed),
                lat,
                housekeeping::receiver_line(&rx_stats.snapshot(), rate)
            )
        },
    );
    if let Err(why) = watched {
        SENDER_STOP.store(true, Ordering::Relaxed);
        return Err(realtime_failure(why, None));
    }
    STOP.store(true, Ordering::Relaxed);
    let (rrep, dev) = rh.join().map_err(|_| "the playback thread panicked")?;
    SENDER_STOP.store(true, Ordering::Relaxed);
    let trep = th.join().map_err(|_| "the capture thread panicked")?;
    // Nothing is played any more: the analyzer reads the rest and reports.
    let fidelity = finish_fidelity()?;
    let cpu = cpu_seconds() - cpu0;
    let s = rx_stats.snapshot();
    let t = tx_stats.snapshot();
    let AnyPlayback::Virtual(vdev) = dev else {
        return Err("demo playback is virtual".into());
    };
    let sink = vdev.sink().ok_or("demo playback has a sink")?;
    let a = sink.analyzer();
    let c = a.counts;
    let mut json = json!({
        "audio_seconds": c.frames as f64 / rate as f64,
        "gaps": c.gaps,
        "gap_frames": c.gap_frames,
        "max_gap_ms": c.max_gap_frames as f64 * 1000.0 / rate as f64,
        "latency_ms": {
            "p50": finite(a.latency_percentile_ms(0.5)),
            "p99": finite(a.latency_percentile_ms(0.99)),
            "max": finite(a.latency_max_ms()),
        },
        "engine_gaps": s.gaps,
        "lost_packets": s.lost_packets,
        "recovered_packets": s.recovered_packets,
        "concealed_frames": s.concealed_frames,
        "drift_ppm_estimated": s.drift_ppm,
        "drift_ppm_actual": d.drift_ppm,
        "bit_exact_frames": c.bit_exact,
        "checked_frames": c.frames,
        "leading_silence_frames": c.leading_frames,
        "xruns": s.xruns + t.xruns,
        "late_renders": s.late_renders,
        "packets_sent": t.packets_sent,
        "packets_received": s.packets_received,
        "allocations_rt": rrep.allocations + trep.allocations,
        "frees_rt": rrep.frees + trep.frees,
        "allocations_steady_state": rrep.allocations + trep.allocations,
        "frees_steady_state": rrep.frees + trep.frees,
        "cpu_seconds": cpu,
        "rt_fifo": r_out.fifo && t_out.fifo,
        "source": d.source.spec(),
    });
    let fidelity = fidelity.map(|(fa, dropped)| {
        let f = fa.report();
        // A tone does not name its frames: neither gaps nor latency are measured.
        for key in ["gaps", "gap_frames", "max_gap_ms", "bit_exact_frames"] {
            json[key] = Value::Null;
        }
        json["latency_ms"] = json!({ "p50": null, "p99": null, "max": null });
        json["gaps_note"] = json!(
            "gaps are not measured frame by frame with a tone for a source; windows of THD+N \
             20 dB or more above the median (thdn_db.outlier_windows) stand for them"
        );
        json["thdn_db"] = fidelity_json(&f);
        json["wow_flutter_pct"] = json!({
            "peak": finite(f.wow_flutter_peak_pct),
            "rms": finite(f.wow_flutter_rms_pct),
            "mean_freq_hz": finite(f.mean_freq_hz),
        });
        json["fidelity_dropped_frames"] = json!(dropped);
        json["fidelity_settle_s"] = json!(fidelity_settle_s(opts));
        f
    });
    write_json(&opts.stats_json, &json)?;
    Ok(DemoReport {
        json,
        gaps: if fidelity.is_some() { 0 } else { c.gaps },
        engine_gaps: s.gaps,
        allocations_rt: rrep.allocations + trep.allocations,
        frees_rt: rrep.frees + trep.frees,
        fidelity,
    })
}

/// THD+N of a tone, as `hil-tests` reports it.
fn fidelity_json(f: &FidelityReport) -> Value {
    json!({
        "median": finite(f.thdn.median_db),
        "p95": finite(f.thdn.p95_db),
        "worst": finite(f.thdn.worst_db),
        "worst_with_startup": finite(f.thdn.worst_with_startup_db),
        "windows": f.thdn.windows,
        "silent_windows": f.thdn.silent_windows,
        "outlier_windows": f.thdn.outlier_windows,
        "tones_hz": std::iter::once(f.tone_hz).chain(f.second_tone_hz).collect::<Vec<_>>(),
    })
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_faults_need_the_daemons_own_alsa_device() {
        let g = GoneSwitch::default();
        let alsa = || Some(g.clone());
        let want = TestFault::CaptureGone;
        assert!(device_fault(None, want, alsa).unwrap().is_none());
        assert!(
            device_fault(Some(TestFault::Stall), want, alsa)
                .unwrap()
                .is_none()
        );
        assert!(device_fault(Some(want), want, alsa).unwrap().is_some());
        let e = device_fault(Some(want), want, || None).unwrap_err();
        assert!(
            e.contains("capture-gone needs an ALSA device") && e.contains("unplug=AT+FOR"),
            "{e}"
        );
        let e = device_fault(Some(TestFault::PlaybackGone), want, alsa).unwrap_err();
        assert!(e.contains("playback-gone for netaudio recv"), "{e}");
    }
}
