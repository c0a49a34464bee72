//! The prepared rig ([`Sim`]) and its discrete-event loop: capture ticks, packet and NACK
//! arrivals and playback ticks in virtual time, through the same sessions the daemons drive:
//! one sender, one or more receivers ([`Node`]s), each receiver with its own links and clock.
//!
//! Everything is allocated in [`Sim::new`]; the loop in [`Sim::run`] runs under an allocation
//! and free counter and reports what it counted.

use super::clock::VirtualClock;
use super::node::Node;
use super::signal::{CaptureHistory, Source};
use super::skew::SkewMeter;
use super::source_is_ramp;
use super::{
    MAX_RECEIVERS, MAX_RESTARTS, RecoveryReport, Restart, SimConfig, SimReport, TracePoint, ns,
};
use crate::alloc_count::{self, AllocScope};
use crate::recovery::{DEFAULT_HISTORY_MS, RecoveryMode, RetransmitHistory};
use crate::rng::Rng;
use crate::sender::Sender;
use crate::session::SenderSession;
use crate::sync::SyncResponder;
use crate::sync::packet::is_time_packet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A prepared run.
pub struct Sim {
    cfg: SimConfig,
    /// The same session the daemon's capture loop drives.
    tx: SenderSession<Sender, RetransmitHistory, ()>,
    /// The receivers, each with its links, clock and analyzers.
    nodes: Vec<Node>,
    skew: Option<SkewMeter>,
    recovery: RecoveryReport,
    recovery_cpu_ns: u64,
    now_ns: u64,
    source: Source,
    history: CaptureHistory,
    cap_clock: VirtualClock,
    capture_buf: Vec<u8>,
    trace: Vec<TracePoint>,
    rng: Rng,
    restarts: heapless::Vec<Restart, MAX_RESTARTS>,
    down_until: f64,
}

/// What the event loop does next.
enum Event {
    /// A packet reaches receiver `i`.
    Packet(usize),
    /// A NACK of receiver `i` reaches the sender, at the time given.
    Nack(usize, u64),
    /// Receiver `i`'s timer (a packet overdue, a request due again), at the time given.
    Timer(usize, u64),
    /// The capture device's period.
    Capture,
    /// Receiver `i`'s playback device's period.
    Play(usize),
}

fn check_receivers(cfg: &SimConfig) -> Result<(), String> {
    let n = cfg.receivers.len();
    if !(1..=MAX_RECEIVERS).contains(&n) {
        return Err(format!(
            "{n} receivers: simulate 1..={MAX_RECEIVERS} receivers"
        ));
    }
    for (i, r) in cfg.receivers.iter().enumerate() {
        let fwd = cfg.forward_link(r);
        if !(-5000.0..=5000.0).contains(&r.clock_ppm) {
            return Err(format!(
                "receiver {i}: clock {} ppm is out of range; use -5000..=5000",
                r.clock_ppm
            ));
        }
        if !(0.0..=1.0).contains(&r.start_s) {
            return Err(format!(
                "receiver {i}: device start {} s is out of range; use 0..=1",
                r.start_s
            ));
        }
        if !(0.0..=10_000.0).contains(&fwd.delay_ms)
            || !(0.0..=10_000.0).contains(&fwd.jitter_ms)
            || !(0.0..=1.0).contains(&fwd.loss)
        {
            return Err(format!(
                "receiver {i}: delay {} ms, jitter {} ms, loss {}: use 0..=10000 ms and a loss \
                 of 0..=1",
                fwd.delay_ms, fwd.jitter_ms, fwd.loss
            ));
        }
        if !(r.asymmetry_ms.abs() <= 10_000.0 && fwd.delay_ms + r.asymmetry_ms >= 0.0) {
            return Err(format!(
                "receiver {i}: asymmetry {} ms makes the reverse path's delay negative; use at \
                 least -{} ms",
                r.asymmetry_ms, fwd.delay_ms
            ));
        }
    }
    Ok(())
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
        check_receivers(&cfg)?;
        let mut rng = Rng::new(cfg.seed);
        let mut sender = Sender::new(f, cfg.period, rng.next_u64() as u32, rng.next_u64() as u32)
            .map_err(|e| e.to_string())?;
        if cfg.sync {
            sender = sender.with_capture_time().map_err(|e| e.to_string())?;
        }
        let period_s = cfg.period as f64 / f.rate as f64;
        let packets_per_period = cfg.period.div_ceil(sender.frames_per_packet());
        let interval = period_s / packets_per_period as f64;
        let nodes = cfg
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| Node::new(&cfg, i, *r, interval, packets_per_period))
            .collect::<Result<Vec<_>, _>>()?;
        let retransmit = (cfg.recovery == RecoveryMode::Nack).then(|| {
            RetransmitHistory::for_span(f.rate, sender.frames_per_packet(), DEFAULT_HISTORY_MS)
        });
        // Keep capture times for 4 s of audio (the analyzer anchors within one ramp lap).
        let history = CaptureHistory::new(cfg.period, (4.0 / period_s) as usize + 16);
        let mut cap_clock = VirtualClock::new(f.rate, cfg.period, cfg.drift_ppm, 0.0)
            .with_wander(cfg.wander_ppm, cfg.wander_period_s);
        if let Some(st) = cfg.stall {
            cap_clock.pause_at(st.at_s, st.ms / 1000.0);
        }
        let skew = (nodes.len() >= 2 && source_is_ramp(cfg.source)).then(|| {
            SkewMeter::new(
                nodes.len(),
                f.rate,
                cfg.settle_s,
                cfg.duration_s,
                cfg.trace_points,
            )
        });
        let trace_cap = cfg.trace_points.max(2) + 2;
        let mut restarts = heapless::Vec::new();
        for r in &cfg.restarts {
            let _ = restarts.push(*r);
        }
        restarts.sort_unstable_by(|a: &Restart, b: &Restart| b.at_s.total_cmp(&a.at_s));
        let mut tx = SenderSession::new(sender, retransmit, ());
        if cfg.sync {
            tx = tx.with_sync(Box::new(SyncResponder::new(None)));
        }
        Ok(Sim {
            tx,
            nodes,
            skew,
            recovery: RecoveryReport {
                mode: cfg.recovery,
                ..RecoveryReport::default()
            },
            recovery_cpu_ns: 0,
            now_ns: 0,
            source: Source::new(cfg.source, f),
            history,
            cap_clock,
            capture_buf: vec![0; cfg.period * f.frame_bytes()],
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

    /// The next event, earliest first. Packets reaching a receiver come first when they
    /// arrive before both devices' next periods (or with them); then NACKs reaching the
    /// sender, then receivers' timers, both before the devices' next periods; then the
    /// capture period, if not after every playback period; ties between receivers go to the
    /// lowest index. (With one receiver: the order the one-receiver rig always had.)
    fn next_event(&self) -> Event {
        let t_cap = self.cap_clock.next_tick();
        let (mut play, mut t_play) = (0, f64::INFINITY);
        let (mut pkt, mut t_net) = (0, None::<u64>);
        for (i, n) in self.nodes.iter().enumerate() {
            let t = n.clock.next_tick();
            if t < t_play {
                (play, t_play) = (i, t);
            }
            if let Some(a) = n.net.next_arrival()
                && t_net.is_none_or(|b| a < b)
            {
                (pkt, t_net) = (i, Some(a));
            }
        }
        let first_device = ns(t_cap.min(t_play));
        if t_net.is_some_and(|t| t <= first_device) {
            return Event::Packet(pkt);
        }
        if self.cfg.recovery == RecoveryMode::Nack || self.cfg.sync {
            let mut nack: Option<(usize, u64)> = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(tb) = n.back.next_arrival()
                    && tb <= first_device
                    && nack.is_none_or(|(_, b)| tb < b)
                {
                    nack = Some((i, tb));
                }
            }
            if let Some((i, tb)) = nack {
                return Event::Nack(i, tb);
            }
            let mut timer: Option<(usize, u64)> = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(due) = n.rx.poll_timeout() {
                    // Due on the receiver's own clock (and not before it runs).
                    let at = n.host.true_of(due).max(self.now_ns).max(n.join_ns);
                    if at <= first_device
                        && n.net.next_arrival().is_none_or(|t| at < t)
                        && timer.is_none_or(|(_, b)| at < b)
                    {
                        timer = Some((i, at));
                    }
                }
            }
            if let Some((i, at)) = timer {
                return Event::Timer(i, at);
            }
        }
        if t_cap <= t_play {
            Event::Capture
        } else {
            Event::Play(play)
        }
    }

    /// Runs to the end; `progress` receives audio milliseconds done.
    pub fn run(mut self, progress: Option<&AtomicU64>) -> SimReport {
        let f = self.cfg.format;
        let duration = self.cfg.duration_s;
        let trace_every = duration / self.cfg.trace_points.max(1) as f64;
        let mut next_trace = trace_every;
        let scope = AllocScope::begin();
        let mut ticks = 0u64;
        loop {
            match self.next_event() {
                Event::Packet(i) => {
                    let node = &mut self.nodes[i];
                    let (rx, host) = (&mut node.rx, node.host);
                    let mut at = 0;
                    node.net.deliver_next(|t, bytes| {
                        rx.handle_datagram(host.local(t), bytes);
                        at = t;
                    });
                    self.now_ns = self.now_ns.max(at);
                    self.nack_turn(i, at);
                }
                Event::Nack(i, tb) => {
                    // A NACK reaches the sender: it wakes and answers at once, to this
                    // receiver alone.
                    self.now_ns = self.now_ns.max(tb);
                    let clock = Instant::now();
                    let node = &mut self.nodes[i];
                    let (net, tx) = (&mut node.net, &mut self.tx);
                    let mut nack = false;
                    node.back.deliver_next(|_, d| {
                        // A time request is answered on the same way (the sender's clock is
                        // true time).
                        nack = !is_time_packet(d);
                        tx.on_nack(tb, d, |d| net.send_datagram(tb, d));
                    });
                    if nack {
                        node.nacks_delivered += 1;
                        self.recovery.nacks_delivered += 1;
                    }
                    self.recovery_cpu_ns += clock.elapsed().as_nanos() as u64;
                }
                Event::Timer(i, at) => {
                    self.now_ns = at;
                    self.nack_turn(i, at);
                }
                Event::Capture => self.capture_tick(),
                Event::Play(i) => {
                    let t = self.nodes[i].clock.advance();
                    if t >= duration {
                        break;
                    }
                    self.now_ns = self.now_ns.max(ns(t));
                    let node = &mut self.nodes[i];
                    node.play(
                        t,
                        &self.cfg,
                        &self.cap_clock,
                        &self.history,
                        self.skew.as_mut(),
                    );
                    self.nack_turn(i, ns(t));
                    if i != 0 {
                        continue;
                    }
                    if t >= next_trace {
                        next_trace += trace_every;
                        if self.trace.len() < self.trace.capacity() {
                            let node = &mut self.nodes[0];
                            self.trace.push(TracePoint {
                                t_s: t,
                                latency_ms: node.analyzer.take_mean_latency_ms(),
                                level_ms: f.ms_for_frames(node.rx.receiver().level_frames()),
                                ratio_ppm: node.rx.receiver().correction_ppm(),
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
            }
        }
        let allocations = alloc_count::installed().then(|| scope.allocations());
        let frees = alloc_count::installed().then(|| scope.frees());
        drop(scope);
        if let Some(p) = progress {
            p.store((duration * 1000.0) as u64, Ordering::Relaxed);
        }
        let receivers: Vec<_> = self.nodes.iter().map(Node::report).collect();
        let mut recovery = self.recovery;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(tr) = n.rx.receiver().loss_tracker() {
                let c = tr.counters();
                recovery.nacks_sent += c.nacks_sent;
                recovery.nack_bytes += c.nack_bytes;
                if i == 0 {
                    recovery.recovered = c.recovered;
                    recovery.expired = c.expired;
                    recovery.rtt_ms = tr.rtt_ns() / 1e6;
                }
            }
        }
        let h = self.tx.counters();
        recovery.retransmits = h.retransmits_sent;
        recovery.retransmit_bytes = h.retransmit_bytes_sent;
        recovery.resends_over_limit = h.resends_over_limit;
        recovery.resends_capped = h.resends_capped;
        recovery.cpu_s = self.recovery_cpu_ns as f64 * 1e-9;
        let r0 = &receivers[0];
        let n0 = &self.nodes[0];
        SimReport {
            recovery,
            audio_seconds: duration,
            analyzer: r0.analyzer,
            gaps: r0.gaps.clone(),
            latency_p50_ms: r0.latency_p50_ms,
            latency_p99_ms: r0.latency_p99_ms,
            latency_max_ms: r0.latency_max_ms,
            engine: r0.engine,
            net: r0.net,
            analyzer_slip_frames: n0.analyzer.slip_frames(),
            drift_ppm_estimated: r0.drift_ppm_estimated,
            allocations_steady_state: allocations,
            frees_steady_state: frees,
            trace: self.trace,
            packets_sent: r0.net.sent,
            fidelity: n0.fidelity.as_ref().map(|f| f.report()),
            drift_lock_s: r0.drift_lock_s,
            fidelity_series: n0.fidelity.as_ref().map_or_else(Vec::new, |f| f.series()),
            skew: self.skew.map(SkewMeter::finish),
            receivers,
        }
    }

    /// Receiver `i`'s loss recovery at `now`: a NACK, if any, goes onto its return path.
    fn nack_turn(&mut self, i: usize, now: u64) {
        if self.cfg.recovery == RecoveryMode::Off && !self.cfg.sync {
            return;
        }
        let clock = Instant::now();
        let node = &mut self.nodes[i];
        if now < node.join_ns {
            return;
        }
        let back = &mut node.back;
        let local = node.host.local(now);
        node.rx
            .poll_transmit(local, &mut node.nack_buf, |d| back.send_datagram(now, d));
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
                let (nodes, now) = (&mut self.nodes, ns(t));
                self.tx.end(now, |head, tag| {
                    for n in nodes.iter_mut() {
                        n.net.send_parts(now, head, tag);
                    }
                    Ok(head.len() + tag.len())
                });
                for n in &mut self.nodes {
                    n.analyzer.source_ended(first);
                }
            }
            // A new sender process: a new stream (the history forgets the old one when the
            // first packet of the new one is kept).
            let mut sender = Sender::new(
                self.cfg.format,
                self.cfg.period,
                self.rng.next_u64() as u32,
                self.rng.next_u64() as u32,
            )
            .expect("same parameters as at start");
            if self.cfg.sync {
                sender = sender
                    .with_capture_time()
                    .expect("same parameters as at start");
            }
            *self.tx.packetizer_mut() = sender;
        }
        if t < self.down_until {
            return;
        }
        let now = ns(t);
        self.now_ns = self.now_ns.max(now);
        if self.cfg.sync {
            // The period's first frame entered the converter a period before its end (what
            // a sender reads off the device's timestamps).
            let first = t - self.cfg.period as f64 / rate_now;
            self.tx.packetizer_mut().set_capture_time(ns(first));
        }
        let nodes = &mut self.nodes;
        let audio = &mut self.recovery.audio_bytes;
        let timed = self.cfg.recovery != RecoveryMode::Off;
        let mut net_ns = 0u64;
        // The simulated sender has no key: its packets have no tag.
        let send = |head: &[u8], payload: &[u8], tag: &[u8]| {
            debug_assert!(tag.is_empty());
            let clock = timed.then(Instant::now);
            // One packet to the group: each receiver's link carries a copy (a receiver that
            // has not joined yet gets none).
            for n in nodes.iter_mut().filter(|n| now >= n.join_ns) {
                n.net.send_parts(now, head, payload);
            }
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
