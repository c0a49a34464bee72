//! RTP mode (`[network] proto = "rtp"`, `--proto rtp`): the realtime loops and the daemons, so
//! ffmpeg, VLC, GStreamer or PipeWire can receive what `netaudio send` captures, and
//! `netaudio recv` can play what they send.
//!
//! * [`run_rtp_sender`]: the loop of [`stream::run_sender`](crate::stream::run_sender) with the
//!   [`RtpSender`] as packetizer: poll the capture device → lend its buffer → each packet's
//!   samples byte-swapped to network order into the packetizer's preallocated buffer (one copy:
//!   RTP's L16/L24 are big-endian, sound cards little-endian) → one `sendmsg` of [RTP header on
//!   the stack, that buffer]. Lost capture (xruns) makes the timestamps jump; a device that
//!   comes back starts a new SSRC with the marker bit set.
//! * [`run_rtp_receiver`]: the loop of [`stream::run_receiver`](crate::stream::run_receiver)
//!   with every datagram rewritten by the [`RtpTranslator`] into a native packet (in its
//!   preallocated buffer) before [`Receiver::on_packet`]: jitter buffer, concealment and drift
//!   control are the native ones.
//! * [`send`] and [`recv`]: the daemons. The sender logs the stream's SDP and writes it to the
//!   configured file (`[network] sdp_file`, `--sdp`), for `ffplay stream.sdp` or `vlc
//!   stream.sdp`.
//!
//! Realtime contract (as in [`stream`](crate::stream)): after the first period a loop makes no
//! allocation, takes no lock and formats nothing; it blocks only in the device's poll and in
//! `clock_nanosleep` during a device back-off. Each loop counts its own allocations (see
//! [`engine::alloc_count`]) and returns the count.

use crate::daemon::{
    AnyCapture, AnyPlayback, AudioOptions, ReceiveOptions, RunOptions, cpu_seconds, deadline,
    new_stream_id, open_capture, open_playback, receiver_for, receiver_json, report_rt,
    save_recording, setup_rt, start_status, write_json,
};
use crate::housekeeping::{self, STOP};
use crate::net::{DatagramOut, UdpReceiver, UdpSender, monotonic_ns};
use crate::pcm::virtual_dev::{self, Sink};
use crate::pcm::{Capture, PcmError, Playback};
use crate::rt::{self, RtSpec};
use crate::status::Meter;
use crate::stream::LoopReport;
use engine::alloc_count;
use engine::format::StreamFormat;
use engine::receiver::Receiver;
use engine::rng::mix64;
use engine::rtlog::{self, Event, EventProducer};
use engine::rtp::{
    self, MAX_RTP_DATAGRAM, RtpError, RtpSender, RtpTranslator, SdpDirection, SdpParams,
};
use engine::stats::{Stats, StatsSnapshot};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WAIT_MS: i32 = 100;
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 2_000;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Refuses formats RTP cannot carry, naming the value and the fix.
pub fn check_format(format: StreamFormat) -> Result<(), String> {
    rtp::encoding_name(format.sample)
        .map(|_| ())
        .map_err(|e| format!("RTP mode: {e}"))
}

/// Runs the RTP sender until `stop` is set.
pub fn run_rtp_sender<C: Capture, S: DatagramOut>(
    dev: &mut C,
    tx: &mut RtpSender,
    sock: &S,
    stop: &AtomicBool,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let period = dev.setup().period;
    let buffer = dev.setup().buffer;
    let format = dev.setup().format;
    let mut c = StatsSnapshot::default();
    let mut report = LoopReport::default();
    let mut last_fail_ns = 0u64;
    let _ = dev.start();
    while !stop.load(Ordering::Relaxed) {
        if report.periods == 1 {
            // Start-up is over: from here on, count every allocation.
            alloc_count::track_this_thread(true);
        }
        let err = match dev.wait(WAIT_MS) {
            Ok(0) => continue,
            Ok(mut avail) => {
                let mut failed = None;
                let mut budget = buffer / period + 1;
                while avail >= period && budget > 0 {
                    budget -= 1;
                    let r = dev.read(period, |frames| {
                        meter.measure(format, frames);
                        tx.packetize(frames, |header, payload| {
                            match sock.send_gather(header, payload) {
                                Ok(_) => c.packets_sent += 1,
                                Err(errno) => {
                                    // Tell the log at most once a second, not every time.
                                    let now = monotonic_ns();
                                    if now.saturating_sub(last_fail_ns) >= 1_000_000_000 {
                                        events.push(now, Event::SendFailed { errno });
                                        last_fail_ns = now;
                                    }
                                    c.send_errors += 1;
                                }
                            }
                        });
                    });
                    match r {
                        Ok(n) => {
                            c.frames_sent += n as u64;
                            avail = avail.saturating_sub(n);
                            if n == 0 {
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                failed
            }
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            handle_capture_error(dev, tx, e, stop, &mut c, events, buffer);
        }
        stats.publish(&c);
    }
    report.allocations = alloc_count::this_thread_allocations();
    alloc_count::track_this_thread(false);
    report
}

fn handle_capture_error<C: Capture>(
    dev: &mut C,
    tx: &mut RtpSender,
    e: PcmError,
    stop: &AtomicBool,
    c: &mut StatsSnapshot,
    events: &mut EventProducer,
    buffer: usize,
) {
    match e {
        PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
            c.xruns += 1;
            events.push(monotonic_ns(), Event::Xrun { capture: true });
            // At least a buffer's worth was lost: the timestamps jump over it.
            tx.skip(buffer as u64);
            if dev.recover(e).is_err() {
                sleep_ms(BACKOFF_MIN_MS);
            }
        }
        PcmError::Gone(errno) => {
            events.push(
                monotonic_ns(),
                Event::DeviceLost {
                    capture: true,
                    errno,
                },
            );
            let mut backoff = BACKOFF_MIN_MS;
            while !stop.load(Ordering::Relaxed) {
                sleep_ms(backoff);
                if dev.reopen().is_ok() && dev.start().is_ok() {
                    events.push(monotonic_ns(), Event::DeviceBack { capture: true });
                    // A new synchronisation source: receivers resync at once.
                    tx.restart(mix64(tx.ssrc() as u64 ^ monotonic_ns()) as u32);
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            }
        }
    }
}

/// The receiving socket with the translator its datagrams go through.
pub struct RtpInput {
    /// The socket, with slots for datagrams up to [`MAX_RTP_DATAGRAM`] bytes (and one more, so
    /// a longer one is seen and refused rather than cut).
    pub sock: UdpReceiver,
    /// RTP → native packets.
    pub translator: RtpTranslator,
    /// Datagrams that were not playable RTP (RTCP aside).
    pub rejected: u64,
}

impl RtpInput {
    /// Binds `listen` for a receiver playing `format`.
    pub fn bind(listen: &str, format: StreamFormat) -> Result<RtpInput, String> {
        let translator = RtpTranslator::new(format).map_err(|e| format!("RTP mode: {e}"))?;
        let sock = UdpReceiver::bind_with_slots(listen, 4 << 20, MAX_RTP_DATAGRAM + 1)
            .map_err(|e| e.to_string())?;
        Ok(RtpInput {
            sock,
            translator,
            rejected: 0,
        })
    }

    /// Every datagram waiting, translated and handed to the receiver. RTCP is ignored; other
    /// datagrams that are not playable RTP are counted in `rejected`.
    pub fn take(&mut self, rx: &mut Receiver) -> Result<usize, i32> {
        let (translator, rejected) = (&mut self.translator, &mut self.rejected);
        self.sock
            .recv_batch(|datagram, t| match translator.translate(datagram) {
                Ok(native) => {
                    rx.on_packet(native, t);
                }
                Err(RtpError::Rtcp(_)) => {}
                Err(_) => *rejected += 1,
            })
    }
}

/// Runs the RTP receiver until `stop` is set.
pub fn run_rtp_receiver<P: Playback>(
    dev: &mut P,
    rx: &mut Receiver,
    input: &mut RtpInput,
    stop: &AtomicBool,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let period = dev.setup().period;
    let format = dev.setup().format;
    let mut report = LoopReport::default();
    let mut xruns = 0u64;
    let mut net_errors = 0u64;
    prime_and_start(dev, rx);
    while !stop.load(Ordering::Relaxed) {
        if report.periods == 1 {
            alloc_count::track_this_thread(true);
        }
        let waited = dev.wait(WAIT_MS);
        if input.take(rx).is_err() {
            net_errors += 1;
        }
        let err = match waited {
            Ok(mut room) => {
                let now = monotonic_ns();
                let mut failed = None;
                // Bounded: never more than a buffer's worth per wake-up, whatever the device says.
                let mut budget = dev.setup().buffer / period + 1;
                while room >= period && budget > 0 {
                    budget -= 1;
                    let written = dev.write(period, |area| {
                        rx.render(area, now);
                        meter.measure(format, area);
                    });
                    match written {
                        Ok(0) => break,
                        Ok(n) => room -= n.min(room),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                failed
            }
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            match e {
                PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
                    xruns += 1;
                    events.push(monotonic_ns(), Event::Xrun { capture: false });
                    if dev.recover(e).is_ok() {
                        prime_and_start(dev, rx);
                    } else {
                        sleep_ms(BACKOFF_MIN_MS);
                    }
                }
                PcmError::Gone(errno) => {
                    events.push(
                        monotonic_ns(),
                        Event::DeviceLost {
                            capture: false,
                            errno,
                        },
                    );
                    let mut backoff = BACKOFF_MIN_MS;
                    while !stop.load(Ordering::Relaxed) {
                        // The network side stays up: keep taking packets meanwhile.
                        let _ = input.take(rx);
                        sleep_ms(backoff);
                        if dev.reopen().is_ok() {
                            events.push(monotonic_ns(), Event::DeviceBack { capture: false });
                            prime_and_start(dev, rx);
                            break;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
                    }
                }
            }
        }
        let mut c = *rx.counters();
        c.xruns = xruns;
        c.invalid_packets += net_errors + input.rejected;
        stats.publish(&c);
    }
    report.allocations = alloc_count::this_thread_allocations();
    alloc_count::track_this_thread(false);
    report
}

/// Fills the playback buffer (silence until a stream arrives) and starts the device.
fn prime_and_start<P: Playback>(dev: &mut P, rx: &mut Receiver) {
    let period = dev.setup().period;
    let now = monotonic_ns();
    let mut guard = 0;
    while let Ok(room) = dev.wait(0) {
        if room < period || guard > 64 {
            break;
        }
        if dev.write(period, |area| rx.render(area, now)).is_err() {
            break;
        }
        guard += 1;
    }
    let _ = dev.start();
}

fn random_u32() -> u32 {
    new_stream_id()
}

/// The session description of `tx`'s stream from `sock`.
pub fn sdp_for(tx: &RtpSender, sock: &UdpSender) -> Result<String, String> {
    let origin = sock.local_addr().map_err(|e| e.to_string())?.ip();
    rtp::write_sdp(&SdpParams {
        name: "netaudio",
        session_id: tx.ssrc(),
        origin,
        dest: sock.peer(),
        payload_type: tx.payload_type(),
        format: tx.format(),
        ptime_ms: tx.ptime_ms(),
        direction: SdpDirection::RecvOnly,
    })
    .map_err(|e| e.to_string())
}

/// `netaudio send --proto rtp`: like [`crate::daemon::send`], with RTP packets and an SDP.
pub fn send(
    audio: &AudioOptions,
    dest: &str,
    dscp: Option<u8>,
    sdp_file: Option<&Path>,
    opts: &RunOptions,
) -> Result<(), String> {
    check_format(audio.format)?;
    crate::daemon::refuse_key_unless_native(opts)?;
    housekeeping::install_signal_handlers();
    let sock = UdpSender::connect(dest, dscp).map_err(|e| e.to_string())?;
    let dev = open_capture(audio)?;
    let setup = match &dev {
        AnyCapture::Alsa(d) => d.setup().clone(),
        AnyCapture::Virtual(d) => d.setup().clone(),
    };
    let tx = RtpSender::new(
        setup.format,
        setup.period,
        new_stream_id(),
        random_u32() as u16,
        random_u32(),
    )
    .map_err(|e| format!("RTP mode: {e}"))?;
    let sdp = sdp_for(&tx, &sock)?;
    log::info!(
        "sending RTP ({} payload type {}, {} frames per packet, SSRC {:#010x}) {} from {:?} (period {}, buffer {} frames, {:?} access) to {}",
        rtp::encoding_name(setup.format.sample).map_err(|e| e.to_string())?,
        tx.payload_type(),
        tx.frames_per_packet(),
        tx.ssrc(),
        setup.format,
        setup.name,
        setup.period,
        setup.buffer,
        setup.access,
        sock.peer()
    );
    log::info!("SDP (open it with ffplay, vlc or ffmpeg on the receiving host):\n{sdp}");
    if let Some(path) = sdp_file {
        write_sdp_file(path, &sdp)?;
        log::info!("SDP written to {}", path.display());
    }
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
    let (pt, ssrc) = (tx.payload_type(), tx.ssrc());
    let cpu0 = cpu_seconds();
    let (handle, outcome) = rt::spawn("na-capture", opts.rt, move || {
        let mut tx = tx;
        match dev {
            AnyCapture::Alsa(mut d) => {
                run_rtp_sender(&mut *d, &mut tx, &sock, &STOP, &st, &me, &mut producer)
            }
            AnyCapture::Virtual(mut d) => {
                run_rtp_sender(&mut *d, &mut tx, &sock, &STOP, &st, &me, &mut producer)
            }
        }
    })
    .map_err(|e| e.to_string())?;
    report_rt("capture", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    housekeeping::run(&mut [&mut consumer], interval, deadline(opts), || {
        housekeeping::sender_line(&stats.snapshot(), rate)
    });
    STOP.store(true, Ordering::Relaxed);
    let rep = handle.join().map_err(|_| "the capture thread panicked")?;
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::sender_line(&s, rate));
    write_json(
        &opts.stats_json,
        &json!({
            "role": "sender",
            "proto": "rtp",
            "payload_type": pt,
            "ssrc": ssrc,
            "packets_sent": s.packets_sent,
            "frames_sent": s.frames_sent,
            "send_errors": s.send_errors,
            "xruns": s.xruns,
            "allocations_rt": rep.allocations,
            "periods": rep.periods,
            "cpu_seconds": cpu_seconds() - cpu0,
            "rt_fifo": outcome.fifo,
            "rt_pinned": outcome.pinned,
        }),
    )
}

/// Writes the SDP atomically (a reader never sees half a file).
fn write_sdp_file(path: &Path, sdp: &str) -> Result<(), String> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, sdp)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            format!(
                "cannot write the SDP to {}: {e} (network.sdp_file / --sdp)",
                path.display()
            )
        })
}

type RecvThread = std::thread::JoinHandle<(LoopReport, AnyPlayback)>;

fn spawn_receiver(
    dev: AnyPlayback,
    mut rx: Receiver,
    mut input: RtpInput,
    stats: Arc<Stats>,
    meter: Arc<Meter>,
    mut producer: EventProducer,
    spec: RtSpec,
) -> Result<(RecvThread, rt::RtOutcome), String> {
    rt::spawn("na-playback", spec, move || {
        let mut dev = dev;
        let (st, me, p, inp) = (&*stats, &*meter, &mut producer, &mut input);
        let rep = match &mut dev {
            AnyPlayback::Alsa(d) => run_rtp_receiver(&mut **d, &mut rx, inp, &STOP, st, me, p),
            AnyPlayback::Virtual(d) => run_rtp_receiver(&mut **d, &mut rx, inp, &STOP, st, me, p),
        };
        (rep, dev)
    })
    .map_err(|e| e.to_string())
}

/// `netaudio recv --proto rtp`: like [`crate::daemon::recv`], taking RTP.
pub fn recv(
    audio: &AudioOptions,
    listen: &str,
    r: &ReceiveOptions,
    opts: &RunOptions,
) -> Result<(), String> {
    check_format(audio.format)?;
    crate::daemon::refuse_key_unless_native(opts)?;
    housekeeping::install_signal_handlers();
    let input = RtpInput::bind(listen, audio.format)?;
    let sock = &input.sock;
    let sink = virtual_dev::parse_name(&audio.device)
        .is_some()
        .then(|| Sink::new(audio.format, None, 0));
    let dev = open_playback(audio, sink)?;
    let setup = dev.setup();
    let (producer, mut consumer) = rtlog::queue();
    let rx = receiver_for(&setup, r)?.with_events(producer);
    let (producer2, mut consumer2) = rtlog::queue();
    let enc = rtp::encoding_name(setup.format.sample).map_err(|e| e.to_string())?;
    log::info!(
        "receiving RTP on {} into {:?}: {} (period {}, buffer {} frames, {:?} access), latency {} ms, drift {}; dynamic payload types (96-127) are read as {enc}/{}/{}, static 10/11 as L16/44100",
        sock.local_addr().map_err(|e| e.to_string())?,
        setup.name,
        setup.format,
        setup.period,
        setup.buffer,
        setup.access,
        r.latency_ms,
        r.drift_mode,
        setup.format.rate,
        setup.format.channels,
    );
    setup_rt(opts);
    let stats = Arc::new(Stats::default());
    let meter = Arc::new(Meter::default());
    let address = sock.local_addr().map_err(|e| e.to_string())?.to_string();
    let status = start_status(opts, "receiver", &setup, address, &stats, &meter);
    let cpu0 = cpu_seconds();
    let (handle, outcome) =
        spawn_receiver(dev, rx, input, stats.clone(), meter, producer2, opts.rt)?;
    report_rt("playback", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    housekeeping::run(
        &mut [&mut consumer, &mut consumer2],
        interval,
        deadline(opts),
        || housekeeping::receiver_line(&stats.snapshot(), rate),
    );
    STOP.store(true, Ordering::Relaxed);
    let (rep, dev) = handle.join().map_err(|_| "the playback thread panicked")?;
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::receiver_line(&s, rate));
    let mut j = receiver_json(&s, &rep, cpu_seconds() - cpu0, &outcome);
    j["proto"] = json!("rtp");
    save_recording(&dev)?;
    write_json(&opts.stats_json, &j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;

    #[test]
    fn s32_is_refused_with_the_fix() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S32Le).unwrap();
        let e = check_format(f).unwrap_err();
        assert!(e.contains("S32_LE") && e.contains("S16_LE"), "{e}");
        assert!(check_format(StreamFormat::DEFAULT).is_ok());
    }

    #[test]
    fn the_sdp_names_the_route_and_the_stream() {
        let rx = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let sock = UdpSender::connect(&format!("127.0.0.1:{port}"), None).unwrap();
        let tx = RtpSender::new(StreamFormat::DEFAULT, 441, 5, 0, 0).unwrap();
        let sdp = sdp_for(&tx, &sock).unwrap();
        assert!(sdp.contains("o=- 5 0 IN IP4 127.0.0.1\r\n"), "{sdp}");
        assert!(
            sdp.contains(&format!("m=audio {port} RTP/AVP 10\r\n")),
            "{sdp}"
        );
        assert!(
            sdp.contains("a=rtpmap:10 L16/44100/2\r\na=ptime:5.011\r\n"),
            "{sdp}"
        );
    }
}
