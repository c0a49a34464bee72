//! One simulated receiver ([`Node`]): the receiver session the daemon drives, its own links to
//! and from the sender, its playback device's clock, and the analyzers of what it plays.
//!
//! Everything is allocated in [`Node::new`]; a playback tick ([`Node::play`]) allocates
//! nothing.

use super::clock::VirtualClock;
use super::config::SimReceiver;
use super::fidelity::FidelityAnalyzer;
use super::net::Network;
use super::report::{ReceiverReport, SyncFigures};
use super::signal::{Analyzer, CaptureHistory, StepTolerance};
use super::skew::SkewMeter;
use super::{SimConfig, ns};
use crate::autolatency::AutoLatency;
use crate::format::StreamFormat;
use crate::nack::MAX_NACK_LEN;
use crate::receiver::{DriftMode, Receiver, ReceiverConfig};
use crate::session::ReceiverSession;
use crate::sync::{SyncClient, SyncParams};

/// A host's monotonic clock: local ns = true ns · `scale` + `offset_ns`.
#[derive(Clone, Copy, Debug)]
pub(super) struct HostClock {
    scale: f64,
    offset_ns: f64,
}

impl HostClock {
    /// The clock's reading at true time `t_ns`.
    pub(super) fn local(&self, t_ns: u64) -> u64 {
        (t_ns as f64 * self.scale + self.offset_ns).round().max(0.0) as u64
    }

    /// The earliest true time at which the clock reads `local` or later.
    pub(super) fn true_of(&self, local: u64) -> u64 {
        let mut t = ((local as f64 - self.offset_ns) / self.scale)
            .ceil()
            .max(0.0) as u64;
        while self.local(t) < local {
            t += 1;
        }
        t
    }
}

/// One receiver and everything around it.
pub(super) struct Node {
    pub(super) index: usize,
    pub(super) spec: SimReceiver,
    /// The same session the daemon's realtime loop drives.
    pub(super) rx: ReceiverSession<Receiver, ()>,
    /// Sender to this receiver.
    pub(super) net: Network,
    /// This receiver to the sender (its NACKs).
    pub(super) back: Network,
    pub(super) clock: VirtualClock,
    pub(super) analyzer: Analyzer,
    pub(super) fidelity: Option<FidelityAnalyzer>,
    pub(super) nack_buf: Vec<u8>,
    /// NACKs of this receiver its reverse link delivered to the sender.
    pub(super) nacks_delivered: u64,
    play_buf: Vec<u8>,
    settled: bool,
    first_packet: Option<f64>,
    off_since: Option<f64>,
    unlocked_at_end: bool,
    /// Its host clock.
    pub(super) host: HostClock,
    /// The receiver that takes over at [`SimReceiver::restart_s`] (built here; the one it
    /// replaces is kept in its place, so nothing is freed in the loop).
    spare: Option<ReceiverSession<Receiver, ()>>,
    restarted: bool,
    /// When it joins, ns.
    pub(super) join_ns: u64,
    /// Presentation error seen at the renders after settling, µs: sum of squares, largest
    /// magnitude, count.
    pe_sq: f64,
    pe_max: f64,
    pe_n: u64,
}

impl Node {
    /// Receiver `index` of `cfg`, as `spec` describes it; `packet_interval_s` is how often
    /// the sender sends.
    pub(super) fn new(
        cfg: &SimConfig,
        index: usize,
        spec: SimReceiver,
        packet_interval_s: f64,
        packets_per_period: usize,
    ) -> Result<Node, String> {
        let f = cfg.format;
        let mut rc = ReceiverConfig::new(f, cfg.period, cfg.latency_ms);
        rc.output_delay_frames = cfg.output_delay_frames();
        rc.drift_mode = cfg.drift_mode;
        rc.output_sample = cfg.playback_sample.unwrap_or(f.sample);
        rc.recovery = cfg.recovery;
        rc.auto_latency = cfg
            .auto_latency
            .map(|(lo, hi)| AutoLatency::from_ms(f.rate, lo, hi));
        rc.presentation = cfg.sync;
        let out_format = StreamFormat {
            sample: rc.output_sample,
            ..f
        };
        let session = |seed: u64| -> Result<ReceiverSession<Receiver, ()>, String> {
            let mut rx = ReceiverSession::new(Receiver::new(rc).map_err(|e| e.to_string())?, ());
            if cfg.sync {
                let id = (seed ^ 0x7379_6E63) as u32 | 1;
                rx = rx.with_sync(Box::new(SyncClient::new(id, None, SyncParams::default())));
            }
            Ok(rx)
        };
        let period_s = cfg.period as f64 / f.rate as f64;
        let fwd = cfg.forward_link(&spec);
        let in_flight_s = fwd.delay_ms / 1000.0 + fwd.max_jitter_ms() / 1000.0 + 4.0 * period_s;
        let slots = ((in_flight_s / period_s).ceil() as usize + 8) * packets_per_period * 2 + 64;
        // Receiver 0's links have the seeds a one-receiver run always had; the others', their
        // own.
        let seed = cfg.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let net = Network::new(fwd, seed, packet_interval_s, slots);
        // The return path: its own seed; NACKs are few, so a small pool.
        let back = Network::new(
            cfg.reverse_link(&spec),
            seed ^ 0x7265_7475_726E,
            packet_interval_s,
            256,
        );
        let tolerance = match cfg.drift_mode {
            DriftMode::Off => StepTolerance::EXACT,
            DriftMode::Slip => StepTolerance::SLIP,
            DriftMode::Resample => StepTolerance::RESAMPLE,
        };
        // The playback device starts a little later than the capture device, at an
        // unrelated phase.
        let mut clock = VirtualClock::new(f.rate, cfg.period, spec.clock_ppm, spec.start_s);
        if let Some(st) = cfg.stall {
            clock.pause_at(st.at_s, st.ms / 1000.0);
        }
        // The tone's analyzer is receiver 0's alone (the others are checked by the ramp).
        let fidelity = (index == 0)
            .then(|| FidelityAnalyzer::for_source(out_format, cfg.source, cfg.settle_s))
            .flatten()
            .map(|a| a.expecting(cfg.duration_s));
        let rx = session(seed)?;
        let spare = match spec.restart_s {
            Some(_) => Some(session(seed ^ 0x5245_5354)?),
            None => None,
        };
        Ok(Node {
            index,
            spec,
            rx,
            net,
            back,
            clock,
            analyzer: Analyzer::new(f, tolerance, 10_000).with_input(out_format.sample),
            fidelity,
            nack_buf: vec![0; MAX_NACK_LEN],
            nacks_delivered: 0,
            play_buf: vec![0; cfg.period * out_format.frame_bytes()],
            settled: false,
            first_packet: None,
            off_since: None,
            unlocked_at_end: true,
            spare,
            restarted: false,
            join_ns: ns(spec.join_s),
            host: HostClock {
                scale: 1.0 + spec.system_ppm * 1e-6,
                offset_ns: spec.system_offset_s * 1e9,
            },
            pe_sq: 0.0,
            pe_max: 0.0,
            pe_n: 0,
        })
    }

    /// This receiver's host clock at true time `t_ns`.
    pub(super) fn local(&self, t_ns: u64) -> u64 {
        self.host.local(t_ns)
    }

    /// The receiver renders the period of the device tick at `t`, and the analyzers check
    /// it; `cap` is the sender's capture clock (for the drift's truth), `skew` the meter the
    /// played frames go to when there are several receivers.
    pub(super) fn play(
        &mut self,
        t: f64,
        cfg: &SimConfig,
        cap: &VirtualClock,
        history: &CaptureHistory,
        skew: Option<&mut SkewMeter>,
    ) {
        if let (Some(at), Some(spare)) = (self.spec.restart_s, self.spare.as_mut())
            && t >= at
            && !self.restarted
        {
            // The process restarts: a fresh receiver, from this period on (the old one is
            // kept where the fresh one was: nothing is freed in the loop).
            std::mem::swap(&mut self.rx, spare);
            self.restarted = true;
        }
        let local = self.local(ns(t));
        self.rx.render(local, &mut self.play_buf);
        if self.settled
            && self.rx.receiver().is_playing()
            && let Some(e) = self.rx.receiver().presentation_error_us()
        {
            self.pe_sq += e * e;
            self.pe_max = self.pe_max.max(e.abs());
            self.pe_n += 1;
        }
        let play_rate = self.clock.rate_at(t);
        if self.rx.receiver().stream_id().is_some() {
            let first = *self.first_packet.get_or_insert(t);
            let truth = (cap.rate_at(t) / play_rate - 1.0) * 1e6;
            if (self.rx.receiver().drift_ppm() - truth).abs() >= 1.0 {
                self.off_since = Some(t - first);
                self.unlocked_at_end = true;
            } else {
                self.unlocked_at_end = false;
            }
        }
        // The period's first frame leaves the DAC once the device has played what it holds.
        let dt = 1.0 / play_rate;
        let t_dac = t + cfg.output_delay_frames() as f64 / play_rate;
        // At the device's width: a resampled frame's position to a fraction of a frame.
        let played = &self.play_buf[..];
        match skew {
            None => self.analyzer.played(played, t_dac, dt, history),
            Some(m) => {
                let r = self.index;
                self.analyzer
                    .played_with(played, t_dac, dt, history, |pos, at| {
                        m.played(r, pos, at, dt)
                    })
            }
        }
        if let Some(fa) = &mut self.fidelity {
            fa.feed(&self.play_buf);
        }
        if !self.settled && t >= cfg.settle_s {
            self.settled = true;
            self.analyzer.reset_latency();
        }
    }

    /// Seconds from the first packet until the drift estimate came within 1 ppm of the truth
    /// for good; `None` if it was not within 1 ppm at the end.
    pub(super) fn drift_lock_s(&self) -> Option<f64> {
        (!self.unlocked_at_end).then(|| self.off_since.unwrap_or(0.0))
    }

    /// This receiver's figures.
    pub(super) fn report(&self) -> ReceiverReport {
        let tracker = self.rx.receiver().loss_tracker();
        ReceiverReport {
            spec: self.spec,
            analyzer: self.analyzer.counts,
            gaps: self.analyzer.gap_records().to_vec(),
            latency_p50_ms: self.analyzer.latency_percentile_ms(0.5),
            latency_p99_ms: self.analyzer.latency_percentile_ms(0.99),
            latency_max_ms: self.analyzer.latency_max_ms(),
            engine: self.rx.counters(0),
            net: self.net.counters(),
            drift_ppm_estimated: self.rx.receiver().drift_ppm(),
            drift_lock_s: self.drift_lock_s(),
            nacks_sent: tracker.map_or(0, |t| t.counters().nacks_sent),
            nacks_delivered: self.nacks_delivered,
            recovered: tracker.map_or(0, |t| t.counters().recovered),
            expired: tracker.map_or(0, |t| t.counters().expired),
            sync: self.rx.sync().map(|c| SyncFigures {
                requests: c.counters().requests,
                responses: c.counters().responses,
                model_error_us: c.error_ns().map(|e| e as f64 / 1000.0),
                model_restarts: c.restarts(),
                presentation_error_rms_us: if self.pe_n > 0 {
                    (self.pe_sq / self.pe_n as f64).sqrt()
                } else {
                    f64::NAN
                },
                presentation_error_max_us: if self.pe_n > 0 { self.pe_max } else { f64::NAN },
            }),
        }
    }
}
