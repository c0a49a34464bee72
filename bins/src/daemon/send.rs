//! `netaudio send`: the sender daemon.

use super::devices::{AnyCapture, open_capture};
use super::options::{AudioOptions, Proto, RunOptions, SyncClock, refuse_key_unless_native};
use super::report::{stats_json, write_json};
use super::setup::{
    cpu_seconds, deadline, device_fault, history_for, new_stream_id, report_rt, setup_rt,
    start_page, start_status, status_source, with_sender_key,
};
use super::sockets::NetOut;
use super::{Failure, realtime_failure};
use crate::discovery::{dest, follow};
use crate::housekeeping::{self, STOP};
use crate::net::{DEFAULT_TTL, MAX_PEERS, UdpSender};
use crate::pcm::Capture;
use crate::rt;
use crate::status::{LiveReceivers, Meter, with_fields};
use crate::stream::{self, AnyPacketizer, SenderTiming};
use crate::tcp::TcpPcmSender;
use crate::watchdog::{Heartbeat, TestFault};
use engine::rtlog;
use engine::sender::Sender;
use engine::stats::{Side, Stats};
use engine::sync::SyncResponder;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    if let Some(f @ TestFault::RxDropEvery(_)) = fault {
        return Err(format!("NETAUDIO_TEST_FAULT={f} is for netaudio recv").into());
    }
    let (tcp_producer, mut tcp_consumer) = rtlog::queue();
    let mut tcp_stats = None;
    // Several receivers: a multicast group, or a list.
    let targets = dest::fanout_targets(dest)?;
    if targets.is_none() && opts.multicast != Default::default() {
        log::warn!(
            "network.ttl / network.interface apply to a multicast destination; {dest} is not one"
        );
    }
    // A destination given by name is followed while streaming (discovery::follow).
    let mut _follower = None;
    let sock = match (opts.proto, &targets) {
        (Proto::Tcp, Some(_)) => {
            return Err(format!(
                "raw TCP mode (proto = \"tcp\") sends to one receiver, not to {dest}: give one \
                 host:port, or use proto = \"native\" for a group or a list"
            )
            .into());
        }
        (Proto::Rtp, Some(t)) if t.len() > 1 => {
            return Err(format!(
                "RTP mode sends to one address (its SDP names it), not to the list {dest}: give \
                 a multicast group every receiver joins, or use proto = \"native\""
            )
            .into());
        }
        (Proto::Native | Proto::Rtp, Some(t)) => {
            let s = UdpSender::fanout(t, dscp, &opts.multicast)?;
            if t[0].ip().is_multicast() {
                log::info!(
                    "multicast to {} (hop limit {}{}); NACKs answered by unicast to each receiver",
                    t[0],
                    opts.multicast.ttl.unwrap_or(DEFAULT_TTL),
                    opts.multicast
                        .interface
                        .as_ref()
                        .map_or(String::new(), |i| format!(", interface {i}"))
                );
            } else {
                log::info!(
                    "sending every packet to each of {} receivers (one sendmmsg per packet)",
                    t.len()
                );
            }
            NetOut::Udp(s)
        }
        (Proto::Native | Proto::Rtp, None) => {
            let (s, f) = follow::open(dest, dscp, opts.proto == Proto::Native)?;
            _follower = f;
            NetOut::Udp(s)
        }
        (Proto::Tcp, None) => {
            let dest = dest::resolve_once(dest)?;
            let s = TcpPcmSender::connect(&dest, audio.format, dscp, tcp_producer)
                .map_err(|e| e.to_string())?;
            log::info!(
                "raw TCP mode: raw {} PCM to {}, as `arecord -t raw | nc`",
                audio.format,
                s.peer()
            );
            tcp_stats = Some(s.stats());
            NetOut::Tcp(Box::new(s))
        }
    };
    // A destination given by name is shown by its name in the status: its address may change.
    let (to, shown) = match (&_follower, sock.peer()) {
        (None, _) if targets.as_ref().is_some_and(|t| t.len() > 1) => (dest.into(), dest.into()),
        (None, p) => (p.to_string(), p.to_string()),
        (Some(_), p) if p.port() == 0 => (format!("{dest} (not resolved yet)"), dest.into()),
        (Some(_), p) => (format!("{p} ({dest})"), dest.into()),
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
    let mut sap = None;
    let tx = match (&sock, opts.proto) {
        (NetOut::Udp(udp), Proto::Rtp) => {
            let tx = crate::rtp::new_sender(&setup)?;
            crate::rtp::announce(&tx, &setup, udp, sdp_file)?;
            sap = crate::sap::announce_stream(&tx, udp, opts.sap)?;
            let sap_to = sap.as_ref().map(|s| s.group().to_string());
            rtp_json = Some(
                json!({"proto": "rtp", "payload_type": tx.payload_type(), "ssrc": tx.ssrc(), "sap": sap_to}),
            );
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
                to
            );
            // Every packet carries its capture time, for receivers that play by
            // presentation time (several in step); others ignore it.
            let tx = tx.with_capture_time().map_err(|e| e.to_string())?;
            AnyPacketizer::Native(with_sender_key(tx, opts))
        }
    };
    // Answers receivers' time requests (the responder allocated here, before the thread), and
    // shows the receivers it serves in the status.
    let live = Arc::new(LiveReceivers::default());
    let timing = SenderTiming {
        responder: matches!(tx, AnyPacketizer::Native(_))
            .then(|| Box::new(SyncResponder::new(opts.key.clone()))),
        wall_clock: opts.sync_clock == SyncClock::System,
        live: Some(live.clone()),
    };
    if timing.wall_clock {
        log::info!(
            "capture times on the system clock (sync.clock = \"system\"): receivers map them by theirs, kept with this one by PTP or chrony"
        );
    }
    setup_rt(opts);
    let stats = Arc::new(Stats::default());
    let meter = Arc::new(Meter::default());
    let mut source = status_source(opts, "sender", &setup, shown, &stats, &meter);
    source.receivers = Some(live.clone());
    let journal = start_page(opts, &source)?;
    let status = start_status(opts, &source);
    let (mut producer, mut consumer) = rtlog::queue();
    let (st, me) = (stats.clone(), meter.clone());
    // Copies of the last packets, for the receiver's NACKs (allocated here, before the thread;
    // RTP receivers send no NACKs).
    // Several receivers: each one's requests and nonces are kept apart (see
    // `stream::answer_nacks`).
    let requesters = if sock.fans_out() { MAX_PEERS } else { 1 };
    let mut history = match &tx {
        AnyPacketizer::Native(t) => Some(history_for(t, opts).with_requesters(requesters)),
        AnyPacketizer::Rtp(_) => None,
    };
    let cpu0 = cpu_seconds();
    let heartbeat = Arc::new(Heartbeat::new("na-capture"));
    let hb = heartbeat.clone();
    let (handle, outcome) = rt::spawn("na-capture", opts.rt, move || {
        let mut tx = tx;
        let h = history.as_mut();
        let (p, hb, tm) = (&mut producer, &*hb, timing);
        match dev {
            AnyCapture::Alsa(mut d) => {
                stream::run_sender_timed(&mut *d, &mut tx, &sock, h, tm, &STOP, hb, &st, &me, p)
            }
            AnyCapture::Virtual(mut d) => {
                stream::run_sender_timed(&mut *d, &mut tx, &sock, h, tm, &STOP, hb, &st, &me, p)
            }
        }
    })
    .map_err(|e| e.to_string())?;
    report_rt("capture", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    let watched = housekeeping::run(
        &mut [&mut consumer, &mut tcp_consumer],
        journal.as_deref(),
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
    if let Some(s) = sap {
        s.stop();
    }
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::sender_line(&s, rate));
    let mut j = stats_json(Side::Sender, &s, &rep, cpu_seconds() - cpu0, &outcome);
    if let Some(t) = tcp_stats {
        log::info!("{}", t.line());
        t.add_json(&mut j);
    }
    if let Some(r) = rtp_json {
        j = with_fields(j, r);
    }
    Ok(write_json(&opts.stats_json, &j)?)
}
