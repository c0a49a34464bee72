//! The prepared rig ([`Sim`]) and its discrete-event loop: capture ticks, packet and NACK
//! arrivals and playback ticks in virtual time, through the same sessions the daemons drive.
//!
//! Everything is allocated in [`Sim::new`]; the loop in [`Sim::run`] runs under an allocation
//! and free counter and reports what it counted.

use super::clock::VirtualClock;
use super::fidelity;
use super::net::Network;
use super::signal::{Analyzer, CaptureHistory, Source, StepTolerance};
use super::{MAX_RESTARTS, RecoveryReport, Restart, SimConfig, SimReport, TracePoint};
use crate::alloc_count::{self, AllocScope};
use crate::autolatency::AutoLatency;
use crate::format::StreamFormat;
use crate::nack::MAX_NACK_LEN;
use crate::receiver::{DriftMode, Receiver, ReceiverConfig};
use crate::recovery::{DEFAULT_HISTORY_MS, RecoveryMode, RetransmitHistory};
use crate::rng::Rng;
use crate::sender::Sender;
use crate::session::{ReceiverSession, SenderSession};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A prepared run.
pub struct Sim {
    cfg: SimConfig,
    /// The same sessions the daemon's realtime loops drive.
    tx: SenderSession<Sender, RetransmitHistory, ()>,
    rx: ReceiverSession<Receiver, ()>,
    net: Network,
    back: Network,
    nack_buf: Vec<u8>,
    recovery: RecoveryReport,
    recovery_cpu_ns: u64,
    now_ns: u64,
    source: Source,
    analyzer: Analyzer,
    fidelity: Option<fidelity::FidelityAnalyzer>,
    history: CaptureHistory,
    cap_clock: VirtualClock,
    play_clock: VirtualClock,
    capture_buf: Vec<u8>,
    play_buf: Vec<u8>,
    /// The played period in the stream's format, for the signal analyzer (when the device is
    /// wider), and the samples between.
    check_buf: Vec<u8>,
    samples: Vec<i32>,
    out_format: StreamFormat,
    trace: Vec<TracePoint>,
    rng: Rng,
    restarts: heapless::Vec<Restart, MAX_RESTARTS>,
    down_until: f64,
}

fn ns(t: f64) -> u64 {
    (t * 1e9).round().max(0.0) as u64
}

impl Sim {
    /// Builds the rig; all allocation happens here.
    pub fn new(cfg: SimConfig) -> Result<Sim, String> {
        let f = cfg.format;
        if cfg.period == 0 || cfg.period > 8192 {
            return Err(format!(
                "period {} frames is out of range; use 16..=8192",
                cfg.period
            ));
        }
        if !(cfg.duration_s > 0.0 && cfg.duration_s <= 30.0 * 86_400.0) {
            return Err(format!(
                "duration {} s is out of range; use up to 30 days",
                cfg.duration_s
            ));
        }
        if !(-5000.0..=5000.0).contains(&cfg.drift_ppm) {
            return Err(format!(
                "drift {} ppm is out of range; use -5000..=5000",
                cfg.drift_ppm
            ));
        }
        if cfg.restarts.len() > MAX_RESTARTS {
            return Err(format!("at most {MAX_RESTARTS} restarts per run"));
        }
        let mut rng = Rng::new(cfg.seed);
        let sender = Sender::new(f, cfg.period, rng.next_u64() as u32, rng.next_u64() as u32)
            .map_err(|e| e.to_string())?;
        let mut rc = ReceiverConfig::new(f, cfg.period, cfg.latency_ms);
        rc.output_delay_frames = cfg.output_delay_frames();
        rc.drift_mode = cfg.drift_mode;
        rc.output_sample = cfg.playback_sample.unwrap_or(f.sample);
        rc.recovery = cfg.recovery;
        rc.auto_latency = cfg
            .auto_latency
            .map(|(lo, hi)| AutoLatency::from_ms(f.rate, lo, hi));
        let out_format = StreamFormat {
            sample: rc.output_sample,
            ..f
        };
        let receiver = Receiver::new(rc).map_err(|e| e.to_string())?;
        let period_s = cfg.period as f64 / f.rate as f64;
        let packets_per_period = cfg.period.div_ceil(sender.frames_per_packet());
        let in_flight_s =
            cfg.net.delay_ms / 1000.0 + cfg.net.max_jitter_ms() / 1000.0 + 4.0 * period_s;
        let slots = ((in_flight_s / period_s).ceil() as usize + 8) * packets_per_period * 2 + 64;
        let net = Network::new(
            cfg.net,
            cfg.seed,
            period_s / packets_per_period as f64,
            slots,
        );
        // The return path: same impairments, its own seed; NACKs are few, so a small pool.
        let back = Network::new(
            cfg.net,
            cfg.seed ^ 0x7265_7475_726E,
            period_s / packets_per_period as f64,
            256,
        );
        let retransmit = (cfg.recovery == RecoveryMode::Nack).then(|| {
            RetransmitHistory::for_span(f.rate, sender.frames_per_packet(), DEFAULT_HISTORY_MS)
        });
        let tolerance = match cfg.drift_mode {
            DriftMode::Off => StepTolerance::EXACT,
            DriftMode::Slip => StepTolerance::SLIP,
            DriftMode::Resample => StepTolerance::RESAMPLE,
        };
        let analyzer = Analyzer::new(f, tolerance, 10_000);
        // Keep capture times for 4 s of audio (the analyzer anchors within one ramp lap).
        let history = CaptureHistory::new(cfg.period, (4.0 / period_s) as usize + 16);
        let cap_clock = VirtualClock::new(f.rate, cfg.period, cfg.drift_ppm, 0.0)
            .with_wander(cfg.wander_ppm, cfg.wander_period_s);
        // The playback device starts a little later, at an unrelated phase.
        let mut play_clock = VirtualClock::new(f.rate, cfg.period, 0.0, 0.000_37);
        let mut cap_clock = cap_clock;
        if let Some(st) = cfg.stall {
            cap_clock.pause_at(st.at_s, st.ms / 1000.0);
            play_clock.pause_at(st.at_s, st.ms / 1000.0);
        }
        let trace_cap = cfg.trace_points.max(2) + 2;
        let mut restarts = heapless::Vec::new();
        for r in &cfg.restarts {
            let _ = restarts.push(*r);
        }
        restarts.sort_unstable_by(|a: &Restart, b: &Restart| b.at_s.total_cmp(&a.at_s));
        Ok(Sim {
            tx: SenderSession::new(sender, retransmit, ()),
            rx: ReceiverSession::new(receiver, ()),
            net,
            back,
            nack_buf: vec![0; MAX_NACK_LEN],
            recovery: RecoveryReport {
                mode: cfg.recovery,
                ..RecoveryReport::default()
            },
            recovery_cpu_ns: 0,
            now_ns: 0,
            source: Source::new(cfg.source, f),
            analyzer,
            history,
            cap_clock,
            play_clock,
            capture_buf: vec![0; cfg.period * f.frame_bytes()],
            play_buf: vec![0; cfg.period * out_format.frame_bytes()],
            check_buf: vec![0; cfg.period * f.frame_bytes()],
            samples: vec![0; cfg.period * f.channels as usize],
            out_format,
            fidelity: fidelity::FidelityAnalyzer::for_source(out_format, cfg.source, cfg.settle_s)
                .map(|a| a.expecting(cfg.duration_s)),
            trace: Vec::with_capacity(trace_cap),
            rng,
            restarts,
            down_until: -1.0,
            cfg,
        })
    }

    /// The sender's session, as the daemon's capture loop drives it (to inject a fault).
    pub fn sender_session_mut(&mut self) -> &mut SenderSession<Sender, RetransmitHistory, ()> {
        &mut self.tx
    }

    /// Runs to the end; `progress` receives audio milliseconds done.
    pub fn run(mut self, progress: Option<&AtomicU64>) -> SimReport {
        let f = self.cfg.format;
        let rate = f.rate as f64;
        let duration = self.cfg.duration_s;
        let trace_every = duration / self.cfg.trace_points.max(1) as f64;
        let mut next_trace = trace_every;
        let mut settled = false;
        let play_delay_s = self.cfg.output_delay_frames() as f64 / rate;
        let mut first_packet: Option<f64> = None;
        let mut off_since: Option<f64> = None;
        let mut unlocked_at_end = true;
        let scope = AllocScope::begin();
        let mut ticks = 0u64;
        loop {
            let t_cap = self.cap_clock.next_tick();
            let t_play = self.play_clock.next_tick();
            let t_net = self.net.next_arrival();
            let first_device = ns(t_cap.min(t_play));
            if t_net.is_some_and(|t| t <= ns(t_cap) && t <= ns(t_play)) {
                let rx = &mut self.rx;
                let mut at = 0;
                self.net.deliver_next(|t, bytes| {
                    rx.handle_datagram(t, bytes);
                    at = t;
                });
                self.now_ns = self.now_ns.max(at);
                self.nack_turn(at);
                continue;
            }
            if self.cfg.recovery == RecoveryMode::Nack {
                // A NACK reaches the sender: it wakes and answers at once.
                if let Some(tb) = self.back.next_arrival()
                    && tb <= first_device
                {
                    self.now_ns = self.now_ns.max(tb);
                    let clock = Instant::now();
                    let (net, tx) = (&mut self.net, &mut self.tx);
                    self.back.deliver_next(|_, nack| {
                        tx.on_nack(tb, nack, |d| net.send_datagram(tb, d));
                    });
                    self.recovery.nacks_delivered += 1;
                    self.recovery_cpu_ns += clock.elapsed().as_nanos() as u64;
                    continue;
                }
                // The receiver's timer: a packet became overdue or a request is due again.
                if let Some(due) = self.rx.poll_timeout() {
                    let at = due.max(self.now_ns);
                    if at <= first_device && t_net.is_none_or(|t| at < t) {
                        self.now_ns = at;
                        self.nack_turn(at);
                        continue;
                    }
                }
            }
            if t_cap <= t_play {
                self.capture_tick();
                continue;
            }
            // Playback tick.
            let t = self.play_clock.advance();
            if t >= duration {
                break;
            }
            self.now_ns = self.now_ns.max(ns(t));
            self.rx.render(ns(t), &mut self.play_buf);
            if self.rx.receiver().stream_id().is_some() {
                let first = *first_packet.get_or_insert(t);
                let truth = (self.cap_clock.rate_at(t) / rate - 1.0) * 1e6;
                if (self.rx.receiver().drift_ppm() - truth).abs() >= 1.0 {
                    off_since = Some(t - first);
                    unlocked_at_end = true;
                } else {
                    unlocked_at_end = false;
                }
            }
            self.nack_turn(ns(t));
            let dt = 1.0 / rate;
            let played = if self.out_format == f {
                &self.play_buf[..]
            } else {
                // The ramp analyzer checks the stream's samples: round the device's back.
                self.out_format
                    .sample
                    .decode_slice(&self.play_buf, &mut self.samples);
                f.sample.encode_slice(&self.samples, &mut self.check_buf);
                &self.check_buf[..]
            };
            self.analyzer
                .played(played, t + play_delay_s, dt, &self.history);
            if let Some(fa) = &mut self.fidelity {
                fa.feed(&self.play_buf);
            }
            if !settled && t >= self.cfg.settle_s {
                settled = true;
                self.analyzer.reset_latency();
            }
            if t >= next_trace {
                next_trace += trace_every;
                if self.trace.len() < self.trace.capacity() {
                    self.trace.push(TracePoint {
                        t_s: t,
                        latency_ms: self.analyzer.take_mean_latency_ms(),
                        level_ms: f.ms_for_frames(self.rx.receiver().level_frames()),
                        ratio_ppm: self.rx.receiver().correction_ppm(),
                    });
                }
            }
            ticks += 1;
            if ticks % 4096 == 0
                && let Some(p) = progress
            {
                p.store((t * 1000.0) as u64, Ordering::Relaxed);
            }
        }
        let allocations = alloc_count::installed().then(|| scope.allocations());
        let frees = alloc_count::installed().then(|| scope.frees());
        drop(scope);
        if let Some(p) = progress {
            p.store((duration * 1000.0) as u64, Ordering::Relaxed);
        }
        let mut recovery = self.recovery;
        if let Some(tr) = self.rx.receiver().loss_tracker() {
            let c = tr.counters();
            recovery.nacks_sent = c.nacks_sent;
            recovery.nack_bytes = c.nack_bytes;
            recovery.recovered = c.recovered;
            recovery.expired = c.expired;
            recovery.rtt_ms = tr.rtt_ns() / 1e6;
        }
        let h = self.tx.counters();
        recovery.retransmits = h.retransmits_sent;
        recovery.retransmit_bytes = h.retransmit_bytes_sent;
        recovery.resends_over_limit = h.resends_over_limit;
        recovery.resends_capped = h.resends_capped;
        recovery.cpu_s = self.recovery_cpu_ns as f64 * 1e-9;
        SimReport {
            recovery,
            audio_seconds: duration,
            analyzer: self.analyzer.counts,
            gaps: self.analyzer.gap_records().to_vec(),
            latency_p50_ms: self.analyzer.latency_percentile_ms(0.5),
            latency_p99_ms: self.analyzer.latency_percentile_ms(0.99),
            latency_max_ms: self.analyzer.latency_max_ms(),
            engine: self.rx.counters(0),
            net: self.net.counters(),
            analyzer_slip_frames: self.analyzer.slip_frames(),
            drift_ppm_estimated: self.rx.receiver().drift_ppm(),
            allocations_steady_state: allocations,
            frees_steady_state: frees,
            trace: self.trace,
            packets_sent: self.net.counters().sent,
            fidelity: self.fidelity.as_ref().map(|f| f.report()),
            drift_lock_s: (!unlocked_at_end).then(|| off_since.unwrap_or(0.0)),
            fidelity_series: self.fidelity.as_ref().map_or_else(Vec::new, |f| f.series()),
        }
    }

    /// The receiver's loss recovery at `now`: a NACK, if any, goes onto the return path.
    fn nack_turn(&mut self, now: u64) {
        if self.cfg.recovery == RecoveryMode::Off {
            return;
        }
        let clock = Instant::now();
        let back = &mut self.back;
        self.rx
            .poll_transmit(now, &mut self.nack_buf, |d| back.send_datagram(now, d));
        self.recovery_cpu_ns += clock.elapsed().as_nanos() as u64;
    }

    fn capture_tick(&mut self) {
        let t = self.cap_clock.advance();
        let rate_now = self.cap_clock.rate_at(t);
        let first = self.history.frames();
        self.history.record(t, rate_now);
        self.source.fill(first, &mut self.capture_buf);
        if let Some(r) = self.restarts.last().copied()
            && t >= r.at_s
        {
            self.restarts.pop();
            self.down_until = t + r.downtime_ms / 1000.0;
            if self.cfg.clean_stops {
                // A clean stop: the END packets go out after the last period, and the source
                // the analyzer follows ends at the first frame not sent.
                let (net, now) = (&mut self.net, ns(t));
                self.tx.end(now, |head, tag| {
                    net.send_parts(now, head, tag);
                    Ok(head.len() + tag.len())
                });
                self.analyzer.source_ended(first);
            }
            // A new sender process: a new stream (the history forgets the old one when the
            // first packet of the new one is kept).
            *self.tx.packetizer_mut() = Sender::new(
                self.cfg.format,
                self.cfg.period,
                self.rng.next_u64() as u32,
                self.rng.next_u64() as u32,
            )
            .expect("same parameters as at start");
        }
        if t < self.down_until {
            return;
        }
        let now = ns(t);
        self.now_ns = self.now_ns.max(now);
        let net = &mut self.net;
        let audio = &mut self.recovery.audio_bytes;
        let timed = self.cfg.recovery != RecoveryMode::Off;
        let mut net_ns = 0u64;
        // The simulated sender has no key: its packets have no tag.
        let send = |head: &[u8], payload: &[u8], tag: &[u8]| {
            debug_assert!(tag.is_empty());
            let clock = timed.then(Instant::now);
            net.send_parts(now, head, payload);
            if let Some(c) = clock {
                net_ns += c.elapsed().as_nanos() as u64;
            }
            *audio += (head.len() + payload.len()) as u64;
            Ok(head.len() + payload.len())
        };
        if !timed {
            self.tx.on_capture(now, now, &self.capture_buf, send);
            return;
        }
        // With recovery the capture turn also keeps every packet in the history: its time,
        // less the simulated link's, counts as the recovery's (packetizing included: the
        // session does both in one pass).
        let clock = Instant::now();
        self.tx.on_capture(now, now, &self.capture_buf, send);
        self.recovery_cpu_ns += (clock.elapsed().as_nanos() as u64).saturating_sub(net_ns);
    }
}
