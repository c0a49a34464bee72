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

use crate::auth::{self, AuthExt, Key, ReplayWindow};
use crate::autolatency::{AutoLatency, JitterTracker, MovingTarget};
use crate::conceal::Concealer;
use crate::drift::{DriftController, DriftParams};
use crate::format::{SampleFormat, StreamFormat};
use crate::jitter::JitterBuffer;
use crate::recovery::{LossTracker, RecoveryMode, TrackerParams};
use crate::resample::ResampleStage;
use crate::rtlog::{Event, EventProducer, ResyncReason};
use crate::stats::{Stats, StatsSnapshot};
use crate::wire::{Flags, Packet, PacketHeader, WireError};
use core::fmt;

/// Highest first-frame index accepted; keeps every frame computation far from overflow.
pub const MAX_FRAME_INDEX: u64 = 1 << 60;

/// Longest the first stream waits for the drift to be measured before it plays anyway, ns.
pub const WARMUP_MAX_NS: u64 = 3_000_000_000;

/// A render later than this many periods after the previous one is a stall.
const STALL_PERIODS: f64 = 4.0;
/// ... and later than this, seconds (short periods wake with relatively more jitter).
const STALL_MIN_S: f64 = 0.02;

/// Margin over the target while the receiver warms up, ms.
pub const WARMUP_MARGIN_MS: f64 = 5.0;

/// Consecutive packets a new stream must deliver before it takes over.
pub const SWITCH_PACKETS: u32 = 3;

/// How the receiver follows the sender's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriftMode {
    /// No correction: bit-exact, for two devices on one clock.
    Off,
    /// Drop or repeat a single frame now and then, crossfaded over a short window; bit-exact
    /// outside those windows, but each slip is a distortion product (−30 dB THD+N at 100 ppm
    /// on a 997 Hz tone).
    Slip,
    /// Windowed-sinc resampling at the measured ratio, steered smoothly: transparent (THD+N at
    /// the format's floor, no wow). The default.
    Resample,
}

impl DriftMode {
    /// Every mode.
    pub const ALL: [DriftMode; 3] = [DriftMode::Off, DriftMode::Slip, DriftMode::Resample];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Slip => "slip",
            Self::Resample => "resample",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<DriftMode> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for DriftMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a receiver is built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceiverConfig {
    /// Format of the playback device; streams of another format are refused.
    pub format: StreamFormat,
    /// Sample format of the playback device: the stream's, or a wider one. Frames are
    /// written to the device in it; a wider one keeps the resampler's output from being
    /// rounded back to the stream's width (a second rounding adds the format's quantisation
    /// noise again: +3 dB on a 16-bit stream). Bit-exact paths stay bit-exact in any width.
    pub output_sample: SampleFormat,
    /// Frames per [`Receiver::render`] call (the playback period).
    pub period: usize,
    /// Latency to hold, frames: from a frame's arrival to its leaving the playback device.
    pub target_frames: usize,
    /// Frames the playback device holds after render (its buffer minus one period); the ring
    /// itself holds `target_frames - output_delay_frames`.
    pub output_delay_frames: usize,
    /// Ring capacity, frames (at least twice the target; bounds the latency).
    pub capacity_frames: usize,
    /// Drift correction.
    pub drift_mode: DriftMode,
    /// Drift loop tuning.
    pub drift: DriftParams,
    /// Length of concealment fades, frames.
    pub fade_frames: usize,
    /// Length of a slip crossfade, frames (rounded to a power of two).
    pub slip_window: usize,
    /// `latency = auto`: the target follows the observed jitter within these bounds (on the
    /// whole latency, like `target_frames`, which is then where it starts).
    pub auto_latency: Option<AutoLatency>,
    /// Loss recovery.
    pub recovery: RecoveryMode,
    /// Loss tracker tuning.
    pub recovery_params: TrackerParams,
}

impl ReceiverConfig {
    /// Sensible settings for `format`, a playback period and a target latency in ms.
    pub fn new(format: StreamFormat, period: usize, target_ms: f64) -> ReceiverConfig {
        let target_frames = format.frames_for_ms(target_ms);
        ReceiverConfig {
            format,
            output_sample: format.sample,
            period,
            target_frames,
            output_delay_frames: 0,
            capacity_frames: (target_frames * 4)
                .max(period * 8)
                .max(format.rate as usize / 2),
            drift_mode: DriftMode::Resample,
            drift: DriftParams::default(),
            fade_frames: (format.rate as usize / 1000).max(8),
            slip_window: 64,
            auto_latency: None,
            recovery: RecoveryMode::Nack,
            recovery_params: TrackerParams::default(),
        }
    }

    /// Bytes of one frame written to the playback device.
    pub fn output_frame_bytes(&self) -> usize {
        self.output_sample.bytes() * self.format.channels as usize
    }

    fn ring_target(&self) -> f64 {
        self.target_frames.saturating_sub(self.output_delay_frames) as f64
    }

    /// What the ring holds at target, less what a resampler holds.
    fn level_target(&self, resampler_delay: usize) -> f64 {
        (self.ring_target() - resampler_delay as f64).max(self.period as f64)
    }

    /// Ring level for a whole latency of `frames`.
    fn level_for(&self, frames: f64, resampler_delay: usize) -> f64 {
        frames - self.output_delay_frames as f64 - resampler_delay as f64
    }

    /// The lowest level that plays a perfect network without underruns: a period being
    /// rendered and a packet on its way, and never under two periods.
    fn level_floor(&self, frames_per_packet: usize) -> usize {
        (2 * self.period).max(self.period + frames_per_packet)
    }
}

/// Why a receiver cannot be built.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverError {
    /// Period of zero frames.
    ZeroPeriod,
    /// The target does not leave room for a period plus a packet.
    TargetTooSmall {
        /// Frames the ring would hold.
        ring_target: usize,
        /// Frames it must hold at least.
        minimum: usize,
    },
    /// The resampler could not be built.
    Resampler(String),
    /// The playback device's samples are narrower than the stream's.
    OutputNarrower {
        /// The stream's sample format.
        stream: SampleFormat,
        /// The device's.
        output: SampleFormat,
    },
}

impl fmt::Display for ReceiverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("period of 0 frames; use at least 16"),
            Self::TargetTooSmall {
                ring_target,
                minimum,
            } => write!(
                f,
                "target latency leaves {ring_target} frames in the receive buffer, at least {minimum} are needed (two periods); raise latency_ms"
            ),
            Self::Resampler(e) => f.write_str(e),
            Self::OutputNarrower { stream, output } => write!(
                f,
                "the playback format {} is narrower than the stream's {}: bits would be lost; play the stream at {} or wider",
                output.name(),
                stream.name(),
                stream.name()
            ),
        }
    }
}

impl std::error::Error for ReceiverError {}

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketOutcome {
    /// Stored (some frames may have been late or duplicate).
    Accepted,
    /// Every frame was already present.
    Duplicate,
    /// Every frame had already been played.
    Late,
    /// From another stream, not followed (yet).
    Foreign,
    /// Accepted and the receiver resynced to it.
    Resynced,
    /// Valid, but in a format this receiver does not play.
    FormatMismatch,
    /// Not a valid packet.
    Invalid(WireError),
    /// A first-frame index above [`MAX_FRAME_INDEX`].
    FrameIndexOutOfRange,
    /// No tag, or a wrong one (a receiver with a key only).
    Unauthenticated,
    /// Authenticated, but a replay: a sequence number already taken or behind the window, or
    /// a stream older than the one playing.
    Replayed,
    /// Authenticated, of a new stream, but sent too long ago (or ahead) by this receiver's
    /// wall clock.
    Stale,
    /// An END packet of the stream playing (the first one, or a copy of it).
    Ended,
}

/// Authentication state of a receiver with a key.
#[derive(Clone, Debug)]
struct ReceiverAuth {
    key: Key,
    window: ReplayWindow,
    max_skew_ns: u64,
    /// Wall-clock time minus the `now_ns` clock.
    wall_offset_ns: i64,
    /// Nonce of the next NACK datagram: started from the wall clock at the first NACK (so a
    /// restarted receiver's NACKs are newer than its predecessor's), one more for each.
    nack_nonce: u64,
}

impl ReceiverAuth {
    /// Seals the NACK in `buf` with the next nonce; its new length (0 if it cannot be sealed,
    /// which a buffer of [`crate::nack::MAX_NACK_LEN`] bytes rules out).
    fn seal_nack(&mut self, now_ns: u64, buf: &mut [u8]) -> usize {
        if self.nack_nonce == 0 {
            let wall = now_ns as i128 + self.wall_offset_ns as i128;
            self.nack_nonce = wall.clamp(1, u64::MAX as i128 / 2) as u64;
        }
        let nonce = self.nack_nonce;
        self.nack_nonce += 1;
        crate::nack::seal_nack(&self.key, nonce, buf).unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug)]
struct Timeline {
    stream_id: u32,
    /// First frame of the stream we play (frames before it are prefill; `i64::MAX` while the
    /// receiver warms up).
    start: i64,
    /// The stream's first frame, while the receiver warms up: the drift is not measured yet,
    /// so nothing is played until it is (see [`WARMUP_MAX_NS`]).
    warmup_from: Option<(i64, u64)>,
    /// The stream's first frame taken up: packets are counted from here.
    origin: i64,
    frames_per_packet: i64,
    /// Where the stream ends, once an END packet said so.
    end: Option<i64>,
    /// Start time of the stream (authenticated streams; 0 otherwise).
    session: u64,
    /// Newest frame end received and when.
    newest_end: i64,
    newest_t: u64,
}

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
}

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
            cfg,
        })
    }

    /// Sends realtime events (stream start, resync, gaps) to `events`.
    pub fn with_events(mut self, events: EventProducer) -> Receiver {
        self.events = Some(events);
        self
    }

    /// Accepts only packets authenticated with `key` (see [`crate::auth`]). New streams must be
    /// fresh within [`auth::DEFAULT_MAX_SKEW_NS`] of the wall clock given by
    /// [`set_wall_offset`](Self::set_wall_offset).
    pub fn with_auth(mut self, key: Key) -> Receiver {
        self.auth = Some(ReceiverAuth {
            key,
            window: ReplayWindow::default(),
            max_skew_ns: auth::DEFAULT_MAX_SKEW_NS,
            wall_offset_ns: 0,
            nack_nonce: 0,
        });
        self
    }

    /// How far a new stream's send times may be from the wall clock, ns.
    pub fn set_max_clock_skew(&mut self, ns: u64) {
        if let Some(a) = self.auth.as_mut() {
            a.max_skew_ns = ns;
        }
    }

    /// The wall clock (ns since the Unix epoch) minus the clock of `now_ns`, for the freshness
    /// check of authenticated streams. A driver updates it every period (it moves when NTP
    /// steps the clock).
    pub fn set_wall_offset(&mut self, offset_ns: i64) {
        if let Some(a) = self.auth.as_mut() {
            a.wall_offset_ns = offset_ns;
        }
    }

    /// Whether packets must be authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// Checks a packet's tag, and its freshness against the stream playing; `Some(outcome)`
    /// when it is to be dropped (already counted).
    fn authenticate(&mut self, packet: &Packet<&[u8]>, now_ns: u64) -> Option<PacketOutcome> {
        let a = self.auth.as_mut()?;
        let h = packet.header();
        let tagged = h.tag_len as usize == auth::TAG_LEN
            && h.ext_len as usize == auth::EXT_LEN
            && a.key.verify(packet.authenticated(), packet.tag());
        if !tagged {
            self.counters.auth_failures += 1;
            return Some(PacketOutcome::Unauthenticated);
        }
        let ext = AuthExt::parse(packet.ext()).unwrap_or_default();
        self.packet_session = ext.session;
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id && t.session == ext.session => {
                if !a.window.take(h.seq) {
                    self.counters.replayed_packets += 1;
                    return Some(PacketOutcome::Replayed);
                }
            }
            Some(t) if ext.session <= t.session => {
                // A stream that started before the one playing: a recording.
                self.counters.replayed_packets += 1;
                return Some(PacketOutcome::Replayed);
            }
            _ => {
                let wall = now_ns as i128 + a.wall_offset_ns as i128;
                if (ext.sent_at as i128 - wall).unsigned_abs() > a.max_skew_ns as u128 {
                    self.counters.stale_packets += 1;
                    return Some(PacketOutcome::Stale);
                }
            }
        }
        None
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

    fn event(&mut self, e: Event) {
        if let Some(q) = self.events.as_mut() {
            q.push(self.now, e);
        }
    }

    /// Handles one datagram received at `now_ns` (the driver's monotonic clock).
    pub fn on_packet(&mut self, bytes: &[u8], now_ns: u64) -> PacketOutcome {
        self.now = now_ns;
        let packet = match Packet::new_checked(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.counters.invalid_packets += 1;
                return PacketOutcome::Invalid(e);
            }
        };
        if let Some(dropped) = self.authenticate(&packet, now_ns) {
            return dropped;
        }
        let h = *packet.header();
        self.on_frames(now_ns, &h, packet.payload())
    }

    /// Handles the frames of one packet that arrived at `now_ns`, described by `h` (format,
    /// stream, sequence number, first frame index, flags), `pcm` being its frames in the
    /// stream's sample format: the typed path of inputs that are not netaudio datagrams (RTP,
    /// a raw PCM byte stream), which need no native header built only to be parsed again.
    /// A native datagram comes here from [`on_packet`](Self::on_packet) once parsed and
    /// authenticated. `pcm` must hold `h.frames` whole frames.
    pub fn on_frames(&mut self, now_ns: u64, h: &PacketHeader, pcm: &[u8]) -> PacketOutcome {
        self.now = now_ns;
        let h = *h;
        let expected = h.frames as usize * h.format.frame_bytes();
        if pcm.len() != expected {
            self.counters.invalid_packets += 1;
            return PacketOutcome::Invalid(WireError::LengthMismatch {
                expected,
                actual: pcm.len(),
            });
        }
        if h.flags.contains(Flags::REPAIR) {
            // Loss-recovery data is not understood by this build: ignore it quietly.
            return PacketOutcome::Foreign;
        }
        if h.format != self.cfg.format {
            self.counters.invalid_packets += 1;
            return PacketOutcome::FormatMismatch;
        }
        if h.first_frame > MAX_FRAME_INDEX {
            // No sender counts this far (10^11 years at 384 kHz): a forged or broken packet.
            self.counters.invalid_packets += 1;
            return PacketOutcome::FrameIndexOutOfRange;
        }
        if h.is_end_marker() {
            return self.on_end(&h);
        }
        let first = h.first_frame as i64;
        let frames = h.frames as i64;
        let mut outcome = PacketOutcome::Accepted;
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id => {
                self.candidate = None;
                if t.end.is_some_and(|end| first + frames > end) {
                    // The stream goes on past an end it announced: forget the end.
                    if let Some(t) = self.timeline.as_mut() {
                        t.end = None;
                    }
                }
                if first + frames > self.read_pos + self.ring.capacity() as i64 {
                    self.resync(&h, now_ns, ResyncReason::Overflow);
                    outcome = PacketOutcome::Resynced;
                }
            }
            Some(t) if t.end.is_some_and(|end| self.read_pos < end) => {
                // The stream playing has ended but is still playing out its last frames: the
                // new one takes over once they have played.
                self.counters.foreign_packets += 1;
                return PacketOutcome::Foreign;
            }
            Some(t) => {
                let count = match self.candidate {
                    Some((id, n)) if id == h.stream_id => n + 1,
                    _ => 1,
                };
                self.candidate = Some((h.stream_id, count));
                // The current stream has gone quiet (a sender restart): switch at once.
                let interval_ns =
                    t.frames_per_packet as u64 * 1_000_000_000 / self.cfg.format.rate as u64;
                let quiet = now_ns.saturating_sub(t.newest_t) > 2 * interval_ns;
                if count < SWITCH_PACKETS && t.end.is_none() && !quiet {
                    self.counters.foreign_packets += 1;
                    return PacketOutcome::Foreign;
                }
                self.resync(&h, now_ns, ResyncReason::NewStream);
                outcome = PacketOutcome::Resynced;
            }
            None => {
                self.resync(&h, now_ns, ResyncReason::NewStream);
                outcome = PacketOutcome::Resynced;
            }
        }
        let ins = self.ring.insert(first, pcm, h.format.sample, self.read_pos);
        let ended = self.timeline.is_some_and(|t| t.end.is_some());
        if let Some(tr) = self.tracker.as_mut()
            && !ended
        {
            let restarted = outcome == PacketOutcome::Resynced;
            if tr.on_packet(&h, now_ns, ins.stored > 0, restarted, self.read_pos) {
                self.counters.recovered_packets += 1;
            }
        }
        let n = frames as usize;
        if ins.too_early {
            self.counters.late_packets += 1;
            return PacketOutcome::Late;
        }
        if ins.duplicate == n {
            self.counters.duplicate_packets += 1;
            return PacketOutcome::Duplicate;
        }
        if ins.late == n || ins.late + ins.duplicate == n {
            self.counters.late_packets += 1;
            return PacketOutcome::Late;
        }
        self.counters.packets_received += 1;
        if h.flags.contains(Flags::END) {
            // The stream's last audio packet.
            self.end_stream(first + frames);
        }
        if let Some(t) = self.timeline.as_mut() {
            if first + frames > t.newest_end {
                // The newest frame so far: its transit measures the network's jitter (a packet
                // sent again, or held back, fills a hole below and would not).
                if t.newest_end == first {
                    self.jitter.observe(h.first_frame, now_ns);
                }
                t.newest_end = first + frames;
                t.newest_t = now_ns;
                self.drift.on_arrival(now_ns, first + frames);
            }
        }
        outcome
    }

    /// An END packet (no frames): the stream playing ends at its first frame index.
    fn on_end(&mut self, h: &crate::wire::PacketHeader) -> PacketOutcome {
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id => {
                let end = h.first_frame as i64;
                if end > self.read_pos + self.ring.capacity() as i64 {
                    // Further ahead than anything the ring could hold: not this stream's end.
                    self.counters.invalid_packets += 1;
                    return PacketOutcome::FrameIndexOutOfRange;
                }
                self.end_stream(end);
                PacketOutcome::Ended
            }
            _ => {
                self.counters.foreign_packets += 1;
                PacketOutcome::Foreign
            }
        }
    }

    /// The stream playing ends at frame `end` (once; later copies change nothing).
    fn end_stream(&mut self, end: i64) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        if t.end.is_some() {
            return;
        }
        t.end = Some(end);
        // Frames missing before the end are lost packets, concealed as ever.
        t.newest_end = t.newest_end.max(end);
        let stream_id = t.stream_id;
        self.counters.streams_ended += 1;
        // The sender is gone: nothing more to ask it for.
        if let Some(tr) = self.tracker.as_mut() {
            tr.reset();
        }
        self.event(Event::StreamEnd {
            stream_id,
            frame: end as u64,
        });
    }

    /// Loss recovery's turn, at `now_ns`: writes a NACK asking for the packets that are missing
    /// and still worth asking for into `buf` (at least [`crate::nack::MAX_NACK_LEN`] bytes) and
    /// returns its length; 0 when there is nothing to send (or recovery is off).
    pub fn poll_nack(&mut self, now_ns: u64, buf: &mut [u8]) -> usize {
        let Some(tr) = self.tracker.as_mut() else {
            return 0;
        };
        let mut n = tr.poll(now_ns, self.read_pos, buf);
        if n > 0 {
            if let Some(a) = self.auth.as_mut() {
                n = a.seal_nack(now_ns, buf);
            }
            self.counters.nacks_sent += 1;
            self.counters.nack_bytes_sent += n as u64;
        }
        n
    }

    /// Loss recovery's turn with the copies a driver sends: writes the NACK as
    /// [`poll_nack`](Self::poll_nack) does and hands each of the tracker's
    /// [`nack_copies`](LossTracker::nack_copies) to `send`. With a key each copy is sealed with
    /// a nonce of its own, so the sender refuses replays without refusing copies. Returns the
    /// datagrams handed out.
    pub fn poll_nack_copies<F: FnMut(&[u8])>(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        mut send: F,
    ) -> usize {
        let n = self.poll_nack(now_ns, buf);
        if n == 0 {
            return 0;
        }
        let copies = self.tracker.as_ref().map_or(1, |t| t.nack_copies());
        send(&buf[..n]);
        for _ in 1..copies {
            let m = match self.auth.as_mut() {
                Some(a) => a.seal_nack(now_ns, buf),
                None => n,
            };
            send(&buf[..m]);
        }
        copies
    }

    /// When [`Receiver::poll_nack`] next has something to do (a packet becomes overdue, a
    /// request is due again), on the driver's clock; `None` when nothing is pending.
    pub fn next_nack_due(&self) -> Option<u64> {
        self.tracker.as_ref().and_then(|t| t.next_due_ns())
    }

    /// The loss tracker, when recovery is on.
    pub fn loss_tracker(&self) -> Option<&LossTracker> {
        self.tracker.as_ref()
    }

    fn resync(&mut self, h: &crate::wire::PacketHeader, now_ns: u64, reason: ResyncReason) {
        let first = h.first_frame as i64;
        let end = first + h.frames as i64;
        let old = self.timeline.map(|t| t.stream_id);
        // The stream before ended and played out to its end: taking up the next is no gap.
        let clean = self.idle
            || self
                .timeline
                .is_some_and(|t| t.end.is_some_and(|end| self.read_pos >= end));
        self.ring.clear();
        // The first stream since start: hold it silent until the clocks are measured, so the
        // music starts at the right pitch instead of gliding there (a slip mode slips at the
        // right rate from the first frame). Later streams keep the estimate.
        let warm = self.cfg.drift_mode != DriftMode::Off && !self.drift.measured();
        self.timeline = Some(Timeline {
            stream_id: h.stream_id,
            start: if warm { i64::MAX } else { first },
            warmup_from: warm.then_some((first, now_ns)),
            origin: first,
            frames_per_packet: (h.frames as i64).max(1),
            end: None,
            session: self.packet_session,
            newest_end: end,
            newest_t: now_ns,
        });
        self.candidate = None;
        if reason == ResyncReason::NewStream
            && let Some(a) = self.auth.as_mut()
        {
            a.window = ReplayWindow::starting_at(h.seq);
        }
        self.jitter.restart_block();
        self.read_pos = end - self.moving.value.round() as i64;
        if warm {
            self.read_pos -= self.warmup_margin() as i64;
        }
        self.frac = 0;
        self.window_left = 0;
        self.slip_acc = 0.0;
        self.drift.restart_arrivals();
        self.drift.on_arrival(now_ns, end);
        self.last_lost_packet = i64::MIN;
        match old {
            Some(from) => {
                self.counters.resyncs += 1;
                self.event(Event::Resync {
                    from,
                    to: h.stream_id,
                    reason,
                });
                if clean {
                    // Silence until the new stream's first frame: no gap.
                    self.idle = true;
                } else if self.ever_played && !self.in_gap {
                    self.begin_gap(first);
                }
            }
            None => self.event(Event::StreamStart {
                stream_id: h.stream_id,
                rate: h.format.rate,
                channels: h.format.channels,
            }),
        }
    }

    /// How far above its target the level is held while warming up, frames (the level's
    /// measure may still move by the network's jitter; the read position only moves forward).
    fn warmup_margin(&self) -> f64 {
        (self.cfg.format.rate as f64 * WARMUP_MARGIN_MS / 1000.0).round()
    }

    fn begin_gap(&mut self, frame: i64) {
        self.in_gap = true;
        self.gap_len = 0;
        self.counters.gaps += 1;
        self.event(Event::GapStart { frame });
    }

    /// Accounts one output frame: `present` says whether it carried stream audio.
    #[inline]
    fn account(&mut self, present: bool, frame: i64, prefill: bool) {
        if present {
            self.ever_played = true;
            self.idle = false;
            if self.in_gap {
                self.in_gap = false;
                let frames = self.gap_len;
                self.event(Event::GapEnd { frames });
            }
            return;
        }
        if self.idle {
            return;
        }
        if let Some(t) = self.timeline
            && t.end.is_some_and(|end| frame >= end)
        {
            // Played out to the end of a stream that ended: silence follows, no gap (and a
            // gap running into the end stops there).
            self.idle = true;
            if self.in_gap {
                self.in_gap = false;
                let frames = self.gap_len;
                self.event(Event::GapEnd { frames });
            }
            return;
        }
        if !prefill {
            self.counters.concealed_frames += 1;
            // A hole below the newest frame received is a lost packet; beyond it, the stream
            // has stalled (an underrun), which is concealed the same way but lost nothing.
            if let Some(t) = self.timeline
                && frame < t.newest_end
            {
                let p = (frame - t.origin).div_euclid(t.frames_per_packet);
                if p != self.last_lost_packet {
                    self.last_lost_packet = p;
                    self.counters.lost_packets += 1;
                }
            }
        }
        if self.ever_played {
            if !self.in_gap {
                self.begin_gap(frame);
            }
            self.gap_len += 1;
        }
    }

    /// The level to hold now: fixed, or with `latency = auto` moved `dt` seconds further
    /// towards what the jitter calls for.
    fn level_target_now(&mut self, frames_per_packet: usize, dt: f64) -> f64 {
        let Some(auto) = self.cfg.auto_latency else {
            return self.moving.value;
        };
        // Two seconds of measurements before the first move.
        if self.jitter.seconds_seen() >= 2 {
            let d = self.resampler_delay;
            let floor = self.cfg.level_floor(frames_per_packet);
            let level_bounds = AutoLatency {
                min_frames: (self.cfg.level_for(auto.min_frames as f64, d).max(0.0)) as usize,
                max_frames: (self.cfg.level_for(auto.max_frames as f64, d).max(0.0)) as usize,
                ..auto
            };
            let goal = self.jitter.recommend(floor, &level_bounds).max(floor) as f64;
            let rate = self.cfg.format.rate as f64;
            self.moving.step(
                goal,
                dt,
                auto.rise_ms_per_s * rate / 1000.0,
                auto.fall_ms_per_s * rate / 1000.0,
            );
            self.counters.target_frames =
                self.moving.value + self.cfg.output_delay_frames as f64 + d as f64;
        }
        self.moving.value
    }

    fn update_drift(&mut self, now_ns: u64, out_frames: usize) -> f64 {
        let Some(t) = self.timeline else {
            return 0.0;
        };
        let rate = self.cfg.format.rate as f64;
        let nominal = out_frames as f64 / rate;
        let mut dt = match self.last_render_t {
            Some(prev) if now_ns > prev => (now_ns - prev) as f64 * 1e-9,
            _ => nominal,
        };
        self.last_render_t = Some(now_ns);
        if dt > (STALL_PERIODS * self.cfg.period as f64 / rate).max(STALL_MIN_S) {
            // The render came far too late: the receiver (and on a shared clock the sender
            // too) stalled. Both clocks' lines are suspect until they are measured again,
            // and the time lost is no time for filters and slews to act in.
            self.drift.restart_clocks();
            self.resumed_ns = now_ns;
            dt = nominal;
        }
        if t.end.is_some() {
            // No more packets will come: the falling level says nothing about the clocks.
            // Hold the correction as it is until the next stream; report what is left.
            let left = (t.newest_end - self.read_pos).max(0) as f64;
            self.counters.level_frames = left + self.cfg.output_delay_frames as f64;
            return self.drift.correction();
        }
        self.drift.on_playout(now_ns, self.counters.frames_played);

        // Extrapolate the newest arrival to now (bounded, so a stalled sender shows as a
        // falling level rather than being hidden): the level until the arrival line exists.
        // (Nothing was seen during a stall: extrapolate from its end at most.)
        let since = now_ns.saturating_sub(t.newest_t.max(self.resumed_ns)) as f64 * 1e-9 * rate;
        let extrapolated = since.min((2 * t.frames_per_packet.max(self.cfg.period as i64)) as f64);
        let mut fallback = (t.newest_end - self.read_pos) as f64 + extrapolated;
        let mut position = self.read_pos as f64
            + match &self.resampler {
                Some(rs) => rs.position_offset(),
                None => self.frac as f64 / 4_294_967_296.0,
            };
        let target = self.level_target_now(t.frames_per_packet as usize, dt);
        // Still in the silence before the stream's first frame: nothing of it has been heard,
        // so jump to the target instead of slipping there (a sender that starts with a burst of
        // buffered periods must not leave the stream above its target for seconds).
        let level = self.drift.line_level(now_ns, position).unwrap_or(fallback);
        let excess = level - target;
        if let Some((first, since)) = t.warmup_from {
            // Warming up, nothing heard yet: hold the level a margin above its target, moving
            // the read position only forward (frames behind it were not stored), and at the
            // end step forward onto the target, so the stream starts there.
            let done = self.drift.trusted() || now_ns.saturating_sub(since) >= WARMUP_MAX_NS;
            let margin = if done { 0.0 } else { self.warmup_margin() };
            let jump = (excess - margin).round().max(0.0);
            self.read_pos += jump as i64;
            position += jump;
            fallback -= jump;
            if done {
                // Measured: the stream plays from the next frame read on.
                if let Some(tl) = self.timeline.as_mut() {
                    tl.start = first.max(self.read_pos);
                    tl.warmup_from = None;
                }
                // Nothing heard yet: start at the estimated pitch, not at a guess (through
                // heavy jitter it is still rough; the correction glides on from there).
                self.drift.take_estimate();
            }
        } else if self.read_pos < t.start && self.frac == 0 && excess > self.cfg.period as f64 / 2.0
        {
            self.read_pos += excess.round() as i64;
            position += excess.round();
            fallback -= excess.round();
            self.drift.restart_level();
        }
        let c = self
            .drift
            .update(now_ns, position, fallback, target, self.moving.velocity, dt);
        self.counters.level_frames = self.level_frames();
        self.counters.ratio_ppm = c * 1e6;
        self.counters.drift_ppm = self.drift.drift_ppm();
        c
    }

    /// Writes `out.len() / frame_bytes` frames for the playback device (in
    /// [`ReceiverConfig::output_sample`]), at `now_ns`.
    pub fn render(&mut self, out: &mut [u8], now_ns: u64) {
        self.now = now_ns;
        let fb = self.cfg.output_frame_bytes();
        let n = out.len() / fb;
        let correction = self.update_drift(now_ns, n);
        match self.cfg.drift_mode {
            DriftMode::Resample => self.render_resampled(&mut out[..n * fb], correction),
            mode => {
                let warming = self.timeline.is_some_and(|t| t.warmup_from.is_some());
                if mode == DriftMode::Slip && !warming {
                    self.plan_slip(n, correction);
                }
                self.render_direct(&mut out[..n * fb]);
            }
        }
        self.counters.frames_played += n as u64;
    }

    fn plan_slip(&mut self, n: usize, correction: f64) {
        self.slip_acc += n as f64 * correction;
        // Never let a backlog of corrections pile up beyond what windows can pay back.
        self.slip_acc = self.slip_acc.clamp(-4.0, 4.0);
        if self.window_left == 0 && self.slip_acc.abs() >= 1.0 {
            let w = self.cfg.slip_window as i64;
            let one = 1i64 << 32;
            self.window_left = w as usize;
            if self.slip_acc > 0.0 {
                self.window_step = one + one / w;
                self.slip_acc -= 1.0;
                self.counters.slip_drops += 1;
            } else {
                self.window_step = one - one / w;
                self.slip_acc += 1.0;
                self.counters.slip_inserts += 1;
            }
        }
    }

    fn render_direct(&mut self, out: &mut [u8]) {
        let fmt = self.cfg.output_sample;
        let ch = self.cfg.format.channels as usize;
        let fb = self.cfg.output_frame_bytes();
        let n = out.len() / fb;
        let start = self.timeline.map_or(i64::MAX, |t| t.start);
        let mut j = 0;
        while j < n {
            // Fast path: whole runs of present frames, copied exactly.
            if self.window_left == 0
                && self.frac == 0
                && self.conceal.is_transparent()
                && self.read_pos >= start
            {
                let run = self.ring.run(self.read_pos, n - j);
                let len = run.len() / ch;
                if len > 0 {
                    fmt.encode_slice(run, &mut out[j * fb..(j + len) * fb]);
                    self.conceal.pass_through(&run[(len - 1) * ch..]);
                    self.read_pos += len as i64;
                    j += len;
                    self.account(true, self.read_pos - 1, false);
                    continue;
                }
            }
            // One frame at a time: holes, fades, slip windows.
            let mut i = self.read_pos;
            let prefill = i < start;
            let present = if prefill {
                false
            } else if self.frac == 0 {
                match self.ring.get(i) {
                    Some(a) => {
                        self.frame_a.copy_from_slice(a);
                        true
                    }
                    None => false,
                }
            } else {
                match (self.ring.get(i), self.ring.get(i + 1)) {
                    (Some(a), Some(b)) => {
                        let w = self.frac as i64;
                        for ((d, &x), &y) in self.frame_a.iter_mut().zip(a).zip(b) {
                            // i128: a full-scale step times a 32-bit fraction needs 65 bits.
                            let step = ((y as i64 - x as i64) as i128 * w as i128) >> 32;
                            *d = (x as i64 + step as i64) as i32;
                        }
                        true
                    }
                    (Some(_), None) => {
                        // The hole is the next frame: account it there.
                        i += 1;
                        false
                    }
                    _ => false,
                }
            };
            let input = if present {
                Some(&self.frame_a[..])
            } else {
                None
            };
            self.conceal.frame(input, &mut self.frame_out);
            fmt.encode_slice(&self.frame_out, &mut out[j * fb..(j + 1) * fb]);
            self.account(present, i, prefill);
            if self.window_left > 0 {
                let pos = self.frac as i64 + self.window_step;
                self.read_pos += pos >> 32;
                self.frac = (pos & 0xFFFF_FFFF) as u64;
                self.window_left -= 1;
            } else {
                self.read_pos += 1;
            }
            j += 1;
        }
    }

    fn render_resampled(&mut self, out: &mut [u8], correction: f64) {
        let Some(mut rs) = self.resampler.take() else {
            return;
        };
        let fmt = self.cfg.output_sample;
        let fb = self.cfg.output_frame_bytes();
        let ch = self.cfg.format.channels as usize;
        let start = self.timeline.map_or(i64::MAX, |t| t.start);
        let step = 1.0 + correction;
        let total = out.len() / fb;
        let mut done = 0;
        while done < total {
            let n = (total - done).min(rs.max_frames());
            // The input frames this block takes: whole runs of present frames straight from
            // the ring, the rest (holes, fades, prefill) one by one through the concealer.
            let need = rs.inputs_needed(n, step);
            let mut i = 0;
            while i < need {
                if self.conceal.is_transparent() && self.read_pos >= start {
                    let run = self.ring.run(self.read_pos, need - i);
                    let len = run.len() / ch;
                    if len > 0 {
                        for (k, frame) in run.chunks_exact(ch).enumerate() {
                            rs.set_input(i + k, frame);
                        }
                        self.conceal.pass_through(&run[(len - 1) * ch..]);
                        self.read_pos += len as i64;
                        i += len;
                        self.account(true, self.read_pos - 1, false);
                        continue;
                    }
                }
                let r = self.read_pos;
                let prefill = r < start;
                let present = !prefill
                    && match self.ring.get(r) {
                        Some(a) => {
                            self.frame_a.copy_from_slice(a);
                            true
                        }
                        None => false,
                    };
                let input = if present {
                    Some(&self.frame_a[..])
                } else {
                    None
                };
                self.conceal.frame(input, &mut self.frame_out);
                rs.set_input(i, &self.frame_out);
                self.account(present, r, prefill);
                self.read_pos += 1;
                i += 1;
            }
            rs.process(&mut self.out_samples, n, step);
            fmt.encode_slice(
                &self.out_samples[..n * ch],
                &mut out[done * fb..(done + n) * fb],
            );
            done += n;
        }
        self.resampler = Some(rs);
    }
}
