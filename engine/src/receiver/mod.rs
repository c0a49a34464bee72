//! The receiver: packets in, a continuous stream of frames out, at the receiver's own clock.
//!
//! * [`Receiver::on_packet`] checks a datagram, picks the stream to follow and stores the
//!   frames in the [`JitterBuffer`] by their stream index.
//! * [`Receiver::render`] writes one period for the playback device: present frames are copied
//!   (bit-exact), missing ones concealed ([`Concealer`]), and the [`DriftController`] keeps the
//!   buffer at its target either by steering a resampler ([`DriftMode::Resample`], the
//!   default) or by slipping single frames with a short crossfade ([`DriftMode::Slip`]).
//!   The first stream after start is held silent until the drift is measured (about a
//!   second on a clean link, at most [`WARMUP_MAX_NS`]), so it starts at the right pitch.
//!
//! Timeline: when a stream starts, the read position is placed `target` frames behind the
//! newest frame received, and frames before the stream's first frame play as silence (prefill,
//! not a gap). A new stream id takes over at once when the current stream has been quiet for
//! two packet intervals, and otherwise once it delivers [`SWITCH_PACKETS`] packets in a row
//! with none from the current stream between them; that resync is one gap. Packets too far
//! ahead of the read position (an outage, a stall) also resync.
//!
//! End of a stream: a sender that stops cleanly sends END packets (see [`crate::wire`]). On
//! the first one of the stream playing the receiver counts `streams_ended`, logs the event
//! ([`Event::StreamEnd`]) and stops asking for lost packets; it plays what it holds up to the
//! end frame, then the concealer fades out. The silence after the end is not a gap, and the
//! next stream takes over, once the last frame has played, without one either. An END of
//! another stream is ignored (counted as foreign); with a key an END is authenticated like any
//! packet, so a forged one, or a replay of an older stream's, cannot end the stream playing.
//! When every END copy is lost the stop looks like a stall, as before: one gap.
//!
//! Gap accounting: a gap is a maximal run of output that is not the continuation of the
//! stream (concealed frames, or the silence and jump of a resync); each is counted once, when
//! it begins. The harness's signal analyzer counts the same thing from the samples alone.
//!
//! Authentication ([`Receiver::with_auth`], see [`crate::auth`]): with a key, a datagram
//! must carry the extension and a valid tag before anything else is looked at; a packet of
//! the stream playing must have a sequence number not taken before and inside the replay
//! window; a packet of another stream is considered only when that stream started later than
//! the one playing and the packet is fresh against this receiver's wall clock. Everything else
//! is dropped and counted (`auth_failures`, `replayed_packets`, `stale_packets`), never stored.
//!
//! Loss recovery: with [`RecoveryMode::Nack`] a [`LossTracker`] follows the stream's sequence
//! numbers; the driver calls [`Receiver::poll_nack`] whenever it wakes (after taking packets,
//! after rendering, and at [`Receiver::next_nack_due`]) and sends the NACK it writes (if any)
//! back to the sender. A packet asked for that arrives before its frames are played is
//! counted in `recovered_packets`; holes that stay are lost and concealed as before. With a
//! key the NACKs are sealed too (see [`crate::nack`]); [`Receiver::poll_nack_copies`] hands out
//! the copies a driver sends, each with its own nonce.
//!
//! Realtime contract: `new` allocates the ring, the concealer, the resampler and the loss
//! tracker; `on_packet`, `render` and `poll_nack` never allocate, lock, block or make a
//! syscall. Counters are plain fields,
//! copied to shared atomics by [`Receiver::publish`].

mod authn;
mod config;
mod drift_glue;
mod ingest;
mod loss;
mod render;
mod timeline;

pub use config::{DriftMode, ReceiverConfig, ReceiverError};
pub use ingest::PacketOutcome;

use crate::autolatency::{JitterTracker, MovingTarget};
use crate::conceal::Concealer;
use crate::drift::DriftController;
use crate::jitter::JitterBuffer;
use crate::recovery::{LossTracker, RecoveryMode};
use crate::resample::ResampleStage;
use crate::rtlog::{Event, EventProducer};
use crate::stats::{Stats, StatsSnapshot};
use authn::ReceiverAuth;
use timeline::Timeline;

/// Highest first-frame index accepted; keeps every frame computation far from overflow.
pub const MAX_FRAME_INDEX: u64 = 1 << 60;

/// Longest the first stream waits for the drift to be measured before it plays anyway, ns.
pub const WARMUP_MAX_NS: u64 = 3_000_000_000;

/// Margin over the target while the receiver warms up, ms.
pub const WARMUP_MARGIN_MS: f64 = 5.0;

/// The most a render's lateness beyond the mean moves its level, ns (a stall longer than this
/// is the stall detection's).
pub const MAX_WAKE_EXCESS_NS: f64 = 5_000_000.0;

/// With presentation time, the span of points after which the clocks' lines are taken, s.
pub const PRESENTATION_SPAN_S: f64 = 0.5;

/// With presentation time, the time over which a level (presentation) error is paid back, s.
pub const PRESENTATION_LEVEL_TIME_S: f64 = 5.0;

/// With presentation time, the level time just after the stream starts to play in step, s: it
/// grows to [`PRESENTATION_LEVEL_TIME_S`] over [`PRESENTATION_EARLY_S`].
pub const PRESENTATION_EARLY_LEVEL_TIME_S: f64 = 1.0;

/// With presentation time, the seconds after the start over which the level is paid back
/// faster (see [`PRESENTATION_EARLY_LEVEL_TIME_S`]).
pub const PRESENTATION_EARLY_S: f64 = 10.0;

/// Consecutive packets a new stream must deliver before it takes over.
pub const SWITCH_PACKETS: u32 = 3;

/// The receiving end of a stream.
pub struct Receiver {
    cfg: ReceiverConfig,
    ring: JitterBuffer,
    conceal: Concealer,
    drift: DriftController,
    resampler: Option<ResampleStage>,
    resampler_delay: usize,
    timeline: Option<Timeline>,
    candidate: Option<(u32, u32)>,
    /// Next input frame to read.
    read_pos: i64,
    /// Fraction of a frame past `read_pos` (Q32), non-zero only inside a slip window.
    frac: u64,
    window_left: usize,
    window_step: i64,
    slip_acc: f64,
    last_render_t: Option<u64>,
    /// When the receiver last resumed from a stall (ns; 0: never).
    resumed_ns: u64,
    in_gap: bool,
    gap_len: u64,
    ever_played: bool,
    /// The stream played has ended and played out: silence until the next is no gap.
    idle: bool,
    last_lost_packet: i64,
    counters: StatsSnapshot,
    frame_a: Vec<i32>,
    frame_out: Vec<i32>,
    /// One period of resampled output.
    out_samples: Vec<i32>,
    events: Option<EventProducer>,
    now: u64,
    auth: Option<ReceiverAuth>,
    /// Session of the packet being handled (0 without a key).
    packet_session: u64,
    tracker: Option<LossTracker>,
    /// `latency = auto`: the jitter seen and the level target moving after it.
    jitter: JitterTracker,
    moving: MovingTarget,
    /// The newest capture time of the stream playing: its frame and the sender-clock ns.
    capture_stamp: Option<(i64, u64)>,
    /// The stream's clock is followed by its capture instants, not by arrivals.
    capture_clock: bool,
    /// Presentation time: how late the render times come after the device reached what they
    /// read, frames (see [`set_render_lateness_ns`](Self::set_render_lateness_ns)).
    render_lateness: f64,
    /// How much later than the mean this render came, frames (see
    /// [`set_render_lateness_ns`](Self::set_render_lateness_ns)).
    wake_excess: f64,
    /// Presentation time: when the stream started to play in step (ns), for the quicker
    /// payback of its first seconds.
    presenting_since: Option<u64>,
    /// The stream's recent capture stamps (frame, sender ns), oldest first: when they can
    /// first be mapped to this clock, the capture line starts from all of them at once.
    stamps: heapless::Deque<(i64, u64), STAMPS>,
}

/// Capture stamps a receiver keeps for the start of its capture line.
pub const STAMPS: usize = 1024;

impl Receiver {
    /// Builds a receiver; everything it will use is allocated here.
    pub fn new(cfg: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        if cfg.period == 0 {
            return Err(ReceiverError::ZeroPeriod);
        }
        let minimum = 2 * cfg.period;
        if (cfg.ring_target() as usize) < minimum {
            return Err(ReceiverError::TargetTooSmall {
                ring_target: cfg.ring_target() as usize,
                minimum,
            });
        }
        if cfg.output_sample.bytes() < cfg.format.sample.bytes() {
            return Err(ReceiverError::OutputNarrower {
                stream: cfg.format.sample,
                output: cfg.output_sample,
            });
        }
        let ch = cfg.format.channels as usize;
        let resampler = match cfg.drift_mode {
            DriftMode::Resample => Some(
                ResampleStage::new(ch, cfg.format.sample, cfg.output_sample, cfg.period)
                    .map_err(ReceiverError::Resampler)?,
            ),
            _ => None,
        };
        let capacity = cfg
            .capacity_frames
            .max(cfg.target_frames * 2)
            .max(cfg.period * 4)
            .max(cfg.auto_latency.map_or(0, |a| a.max_frames * 2));
        let resampler_delay = resampler.as_ref().map_or(0, |r| r.delay_frames());
        let mut conceal = Concealer::new(ch, cfg.fade_frames);
        conceal.reset_silent();
        let mut cfg = cfg;
        if cfg.presentation {
            // A receiver joining others starts in step within a second: half a second of
            // points measures the clocks well enough to start (the estimate goes on improving).
            cfg.drift.min_span_s = cfg.drift.min_span_s.min(PRESENTATION_SPAN_S);
            // The presentation error is paid back in seconds, not tens of seconds: it is tens
            // of µs (a few ppm for a few seconds, far below what pitch can hear), and every
            // second it lasts is skew between rooms.
            cfg.drift.level_time_s = cfg.drift.level_time_s.min(PRESENTATION_LEVEL_TIME_S);
        }
        cfg.slip_window = cfg.slip_window.clamp(2, 1 << 16).next_power_of_two();
        let counters = StatsSnapshot {
            target_frames: cfg.target_frames as f64,
            ..Default::default()
        };
        Ok(Receiver {
            ring: JitterBuffer::new(ch, capacity),
            conceal,
            drift: DriftController::new(cfg.format.rate, cfg.drift),
            resampler_delay,
            resampler,
            timeline: None,
            candidate: None,
            read_pos: 0,
            frac: 0,
            window_left: 0,
            window_step: 0,
            slip_acc: 0.0,
            last_render_t: None,
            resumed_ns: 0,
            in_gap: false,
            gap_len: 0,
            ever_played: false,
            idle: false,
            last_lost_packet: i64::MIN,
            counters,
            frame_a: vec![0; ch],
            frame_out: vec![0; ch],
            out_samples: vec![0; cfg.period * ch],
            events: None,
            now: 0,
            auth: None,
            packet_session: 0,
            tracker: match cfg.recovery {
                RecoveryMode::Off => None,
                RecoveryMode::Nack => Some(LossTracker::new(
                    cfg.format.rate,
                    (cfg.ring_target() as usize).max(cfg.auto_latency.map_or(0, |a| a.max_frames))
                        + cfg.period,
                    cfg.recovery_params,
                )),
            },
            jitter: JitterTracker::new(cfg.format.rate),
            moving: MovingTarget::new(cfg.level_target(resampler_delay)),
            capture_stamp: None,
            capture_clock: false,
            render_lateness: 0.0,
            wake_excess: 0.0,
            presenting_since: None,
            stamps: heapless::Deque::new(),
            cfg,
        })
    }

    /// Sends realtime events (stream start, resync, gaps) to `events`.
    pub fn with_events(mut self, events: EventProducer) -> Receiver {
        self.events = Some(events);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn counters(&self) -> &StatsSnapshot {
        &self.counters
    }

    /// Copies the counters to shared atomics (relaxed stores only).
    pub fn publish(&self, stats: &Stats) {
        stats.publish(&self.counters);
    }

    /// The stream being played, if any.
    pub fn stream_id(&self) -> Option<u32> {
        self.timeline.map(|t| t.stream_id)
    }

    /// Whether a stream is playing: taken up, warmed up, not ended.
    pub fn is_playing(&self) -> bool {
        self.timeline
            .is_some_and(|t| t.warmup_from.is_none() && t.end.is_none())
    }

    /// Filtered receive-buffer level in frames (what the drift loop holds at its target),
    /// plus the playback device's share.
    pub fn level_frames(&self) -> f64 {
        self.drift.level() + self.cfg.output_delay_frames as f64
    }

    /// Correction currently applied, ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.drift.correction() * 1e6
    }

    /// Long-term drift estimate, ppm.
    pub fn drift_ppm(&self) -> f64 {
        self.drift.drift_ppm()
    }

    /// The newest capture time the stream playing carried ([`Flags::TIMED`](crate::wire::Flags::TIMED)
    /// packets): a frame index and its capture instant on the sender's clock, ns.
    pub fn capture_stamp(&self) -> Option<(i64, u64)> {
        self.capture_stamp
    }

    /// Presentation time: `Some((frame, local_ns))` says frame `frame` of the stream playing
    /// was captured at `local_ns` on the driver's clock (a capture stamp through the model of
    /// the sender's clock); `None` while there is no model. Once given, the level is measured
    /// from capture (see [`DriftController::set_reference`]) for as long as the stream plays.
    pub fn set_presentation(&mut self, anchor: Option<(i64, u64)>) {
        self.drift
            .set_reference(anchor.map(|(frame, t)| (t, frame as f64)));
    }

    /// Presentation time: frame `frame` of the stream playing was captured at `local_ns` on
    /// the driver's clock. From the first such point on, the stream's clock (the drift
    /// estimate's sender side) is fitted to capture instants instead of arrival times: the
    /// sender smooths them, while arrivals carry its wake-ups' and the network's jitter, so
    /// the drift is measured in a fraction of the time.
    ///
    /// `map` turns a capture stamp into this clock's time: the first time, the stamps of the
    /// last packets (up to [`STAMPS`]) are mapped too, so the line starts with their span.
    pub fn on_capture_point<M: Fn(u64) -> Option<u64>>(
        &mut self,
        local_ns: u64,
        frame: i64,
        map: M,
    ) {
        if self.timeline.is_none() {
            return;
        }
        if !self.capture_clock {
            self.capture_clock = true;
            self.drift.restart_arrival_line();
            for &(f, stamp) in self.stamps.iter() {
                if f < frame
                    && let Some(t) = map(stamp)
                {
                    self.drift.on_arrival(t, f);
                }
            }
            self.stamps.clear();
        }
        self.drift.on_arrival(local_ns, frame);
    }

    /// Presentation time: the render times given come `mean_ns` after the device reached the
    /// position they were read with, on average, and this one `this_ns` after (a driver's
    /// wake-ups are late by the scheduler's latency, and on a JACK graph by the clients woken
    /// before it). The level is then held that much higher: measured that late, it counts
    /// frames captured in the meantime. And this render's level is taken less what its own
    /// lateness adds beyond the mean: the wake-ups' jitter (tens of µs) no longer moves the
    /// level term, nor where a stream starts. A target and a level moved, not the times: their
    /// jitter is what the drift estimate's lower envelope takes out, and a lateness that
    /// changes would be taken for rate.
    pub fn set_render_lateness_ns(&mut self, mean_ns: f64, this_ns: f64) {
        if mean_ns.is_finite() && this_ns.is_finite() {
            let per_ns = 1e-9 * self.cfg.format.rate as f64;
            let mean = mean_ns.clamp(0.0, 1e8);
            self.render_lateness = mean * per_ns;
            self.wake_excess = (this_ns.clamp(0.0, 1e8) - mean)
                .clamp(-MAX_WAKE_EXCESS_NS, MAX_WAKE_EXCESS_NS)
                * per_ns;
        }
    }

    /// Whether the stream's clock is followed by capture instants.
    pub fn follows_capture_clock(&self) -> bool {
        self.capture_clock
    }

    /// The time exchange's figures for the counters: the sender's clock minus this one's and
    /// the model's error estimate, µs.
    pub fn set_sync_figures(&mut self, offset_us: f64, model_error_us: f64) {
        self.counters.sync_offset_us = offset_us;
        self.counters.sync_model_error_us = model_error_us;
    }

    /// How late the frame being played leaves against its capture time plus the latency, µs,
    /// with presentation time.
    pub fn presentation_error_us(&self) -> Option<f64> {
        self.drift
            .has_reference()
            .then_some(self.counters.presentation_error_us)
    }

    /// The playback device restarted: an xrun recovered, or the device came back after it
    /// was lost. Its clock's line starts afresh (the drift estimate is kept).
    pub fn on_playback_restart(&mut self) {
        self.drift.restart_playout();
    }

    fn event(&mut self, e: Event) {
        if let Some(q) = self.events.as_mut() {
            q.push(self.now, e);
        }
    }
}
