//! `netaudio recv`: the receiver daemon, with the receiver and its realtime thread that
//! `netaudio demo` shares.

use super::devices::{AnyPlayback, open_playback, playback_candidates};
use super::options::{
    AudioOptions, Proto, ReceiveOptions, RunOptions, SyncClock, refuse_key_unless_native,
};
use super::report::{stats_json, write_json};
use super::setup::{
    cpu_seconds, deadline, device_fault, report_rt, setup_rt, start_page, start_status,
    status_source, with_receiver_key,
};
use super::sockets::NetIn;
use super::{Failure, realtime_failure};
use crate::discovery::announce::{self, Announcement};
use crate::housekeeping::{self, STOP};
use crate::net::UdpReceiver;
use crate::pcm::virtual_dev::{self, Sink};
use crate::rt::{self, RtSpec};
use crate::rtp::RtpInput;
use crate::status::Meter;
use crate::stream::{self, LoopReport, Presentation};
use crate::tcp::TcpPcmReceiver;
use crate::watchdog::{Heartbeat, TestFault};
use engine::format::StreamFormat;
use engine::receiver::{Receiver, ReceiverConfig};
use engine::recovery::RecoveryMode;
use engine::rtlog;
use engine::stats::{Side, Stats};
use engine::sync::{SyncClient, SyncParams};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A receiver for a stream in `stream` played on the device `setup` describes (whose sample
/// format may be wider).
pub(crate) fn receiver_for(
    setup: &crate::pcm::DeviceSetup,
    stream: StreamFormat,
    r: &ReceiveOptions,
) -> Result<Receiver, String> {
    // Presentation time counts from capture to the converter's output: the card is reached
    // the converter's delay earlier.
    let latency_ms = match r.sync {
        Some(s) => s.latency_ms - r.output_delay_us / 1000.0,
        None => r.latency_ms,
    };
    let mut cfg = ReceiverConfig::new(stream, setup.period, latency_ms);
    cfg.presentation = r.sync.is_some();
    cfg.output_sample = setup.format.sample;
    cfg.output_delay_frames = setup.buffer.saturating_sub(setup.period);
    cfg.drift_mode = r.drift_mode;
    cfg.recovery = r.recovery;
    cfg.auto_latency = r
        .auto_latency
        .map(|(lo, hi)| engine::autolatency::AutoLatency::from_ms(setup.format.rate, lo, hi));
    Receiver::new(cfg).map_err(|e| match (r.sync, e) {
        (Some(s), engine::receiver::ReceiverError::TargetTooSmall { minimum, .. }) => format!(
            "sync latency {} ms leaves the receive buffer less than the {minimum} frames (two periods) it needs beyond the sound card's {} frames and the converter's {} µs: the smallest that works here is {:.1} ms, plus the slowest receiver's network delay; raise sync.latency_ms (--sync-latency-ms) on every receiver",
            s.latency_ms,
            cfg.output_delay_frames,
            r.output_delay_us,
            (minimum + cfg.output_delay_frames) as f64 * 1000.0 / setup.format.rate as f64
                + r.output_delay_us / 1000.0
        ),
        (_, e) => e.to_string(),
    })
}

pub(super) type RecvThread = std::thread::JoinHandle<(LoopReport, AnyPlayback)>;

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_receiver(
    dev: AnyPlayback,
    mut rx: Receiver,
    presentation: Presentation,
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
        let pr = presentation;
        let rep = match &mut dev {
            AnyPlayback::Alsa(d) => {
                stream::run_receiver_timed(&mut **d, &mut rx, pr, &mut sock, &STOP, hb, st, me, p)
            }
            AnyPlayback::Virtual(d) => {
                stream::run_receiver_timed(&mut **d, &mut rx, pr, &mut sock, &STOP, hb, st, me, p)
            }
            AnyPlayback::Stream(d) => {
                stream::run_receiver_timed(&mut **d, &mut rx, pr, &mut sock, &STOP, hb, st, me, p)
            }
        };
        (rep, dev)
    })
    .map_err(|e| e.to_string())
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
    if r.sync.is_some() && opts.proto != Proto::Native {
        return Err(format!(
            "sync.latency_ms (--sync-latency-ms) needs proto = \"native\": {} packets carry no capture time; remove it, or use native on the sender and every receiver",
            opts.proto.name()
        )
        .into());
    }
    let (tcp_producer, mut tcp_consumer) = rtlog::queue();
    let mut tcp_stats = None;
    let sock = match opts.proto {
        Proto::Native => {
            let mut s = UdpReceiver::listen(listen, 4 << 20, opts.multicast.interface.as_ref())?;
            if let Some(TestFault::RxDropEvery(n)) = fault {
                log::warn!("test fault: every {n}th datagram is dropped on arrival");
                s.drop_every(n);
            }
            NetIn::Udp(Box::new(s))
        }
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
        AnyPlayback::Virtual(_) | AnyPlayback::Stream(_) => None,
    })?;
    let (producer, mut consumer) = rtlog::queue();
    let rx = with_receiver_key(
        receiver_for(&setup, audio.format, r)?.with_events(producer),
        opts,
    );
    let (producer2, mut consumer2) = rtlog::queue();
    let presentation = match r.sync {
        None => Presentation::Off,
        Some(s) if s.clock == SyncClock::System => {
            log::info!(
                "presentation time: every frame {} ms after its capture on the system clock (keep it with the sender's by PTP or chrony)",
                s.latency_ms
            );
            Presentation::System
        }
        Some(s) => {
            log::info!(
                "presentation time: every frame {} ms after its capture, the sender's clock measured by a time exchange",
                s.latency_ms
            );
            let id =
                (engine::rng::mix64(crate::net::monotonic_ns() ^ (std::process::id() as u64) << 32)
                    as u32)
                    | 1;
            Presentation::Exchange(Box::new(SyncClient::new(
                id,
                opts.key.clone(),
                SyncParams::default(),
            )))
        }
    };
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
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let source = status_source(opts, "receiver", &setup, local.to_string(), &stats, &meter);
    let journal = start_page(opts, &source)?;
    let status = start_status(opts, &source);
    // On the LAN for `netaudio discover` and senders' `dest = NAME` / `auto`, until the end.
    let _announcer = opts.announce_as.as_deref().and_then(|name| {
        let a = Announcement::new(
            name,
            local,
            audio.format,
            opts.proto.name(),
            opts.key.as_ref(),
        );
        announce::start(&a)
            .inspect_err(|e| log::warn!("not announced on the LAN: {e}"))
            .ok()
            .flatten()
    });
    let cpu0 = cpu_seconds();
    let heartbeat = Arc::new(Heartbeat::new("na-playback"));
    let (handle, outcome) = spawn_receiver(
        dev,
        rx,
        presentation,
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
        journal.as_deref(),
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
    let mut j = stats_json(Side::Receiver, &s, &rep, cpu_seconds() - cpu0, &outcome);
    if let Some(o) = dev.output_stats() {
        log::info!("{}", o.line());
        o.add_json(&mut j);
    }
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
        // When the ramp's laps began here (CLOCK_MONOTONIC, s): receivers of one stream on
        // one host compare them.
        j["heard_laps_s"] = json!(sink.laps());
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
