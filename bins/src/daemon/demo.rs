//! `netaudio demo`: a sender and a receiver in one process between two virtual sound cards,
//! the played audio checked frame by frame (or, with a tone, its THD+N and wow & flutter
//! measured on a thread of its own).

use super::devices::{AnyPlayback, open_playback, playback_candidates};
use super::options::{AudioOptions, ReceiveOptions, RunOptions};
use super::recv::{receiver_for, spawn_receiver};
use super::report::{finite, write_json};
use super::setup::{
    cpu_seconds, deadline, device_fault, history_for, new_stream_id, report_rt, setup_rt,
    start_page, status_source, with_receiver_key, with_sender_key,
};
use super::sockets::NetIn;
use super::{Failure, realtime_failure};
use crate::housekeeping::{self, STOP};
use crate::net::{UdpReceiver, UdpSender, monotonic_ns};
use crate::pcm::virtual_dev::{self, Sink, VirtualCapture};
use crate::rt::{self, RtSpec};
use crate::status::Meter;
use crate::stream;
use crate::watchdog::{Heartbeat, TestFault};
use engine::rtlog;
use engine::sender::Sender;
use engine::sim::fidelity::{FidelityAnalyzer, FidelityReport};
use engine::sim::signal::SourceKind;
use engine::stats::{Side, Stats};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
pub(super) fn fidelity_settle_s(opts: &RunOptions) -> f64 {
    opts.duration
        .map_or(10.0, |d| (d.as_secs_f64() / 4.0).min(10.0))
}

/// Sets its flag when dropped.
pub(super) struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Analyzes what the tap hands over, off the realtime threads, until `stop` (then what is
/// left): returns the analyzer and the frames the realtime side had no room for.
pub(super) fn spawn_fidelity(
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
    let mut sock_rx = UdpReceiver::bind("127.0.0.1:0", 4 << 20).map_err(|e| e.to_string())?;
    if let Some(TestFault::RxDropEvery(n)) = fault {
        log::warn!("test fault: every {n}th datagram is dropped on arrival");
        sock_rx.drop_every(n);
    }
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
    // The status page, when asked, shows the receiving side.
    let source = status_source(
        opts,
        "receiver",
        &setup,
        format!("127.0.0.1:{port}"),
        &rx_stats,
        &meter,
    );
    let journal = start_page(opts, &source)?;
    let (rh, r_out) = spawn_receiver(
        dev,
        rx,
        crate::stream::Presentation::Off,
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
        journal.as_deref(),
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
        // Every counter of both engines, as the daemons' `--stats-json` gives them.
        "engine": {
            "sender": t.side(Side::Sender),
            "receiver": s.side(Side::Receiver),
        },
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
        json["thdn_db"] = json!(f.thdn_summary());
        json["wow_flutter_pct"] = json!(f.wow_flutter_summary());
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
