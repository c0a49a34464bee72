//! What a virtual playback device does with what it plays: the analyzing [`Sink`] (every
//! frame checked against the source, latency measured), its live figures ([`SinkLive`]), and
//! the [`Tap`] that hands channel 0 to a thread off the realtime one.
//!
//! Realtime contract: [`Sink::new`], [`tap`] and the analyzer's set-up allocate, before the
//! stream starts; what the playback device calls per period (checking, the tap's push, the
//! live figures) only reads the period, updates the preallocated analyzer, pushes into a
//! wait-free ring and stores atomics: no allocation, no lock, no blocking.

use engine::format::StreamFormat;
use engine::sim::signal::{
    Analyzer, AnalyzerCounts, CaptureTimes, LinearCapture, StepTolerance, Unanchored,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live figures of an analyzing sink, readable from other threads.
#[derive(Debug, Default)]
pub struct SinkLive {
    /// Gaps so far.
    pub gaps: AtomicU64,
    /// Frames checked.
    pub frames: AtomicU64,
    /// Frames bit-exact.
    pub bit_exact: AtomicU64,
    /// Mean latency over the last period, ms (f64 bits; NaN when unknown).
    pub latency_ms: AtomicU64,
}

/// Hands what a sink checks to a thread off the realtime one: channel 0 of every frame, decoded
/// (left-justified), through a wait-free ring sized at creation. What does not fit is counted,
/// not waited for.
pub struct Tap {
    tx: rtrb::Producer<i32>,
    dropped: Arc<AtomicU64>,
}

/// The reading end of a [`Tap`].
pub struct TapReader {
    rx: rtrb::Consumer<i32>,
    dropped: Arc<AtomicU64>,
}

/// A tap holding up to `frames` frames between reads.
pub fn tap(frames: usize) -> (Tap, TapReader) {
    let (tx, rx) = rtrb::RingBuffer::new(frames.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Tap {
            tx,
            dropped: dropped.clone(),
        },
        TapReader { rx, dropped },
    )
}

impl Tap {
    /// Channel 0 of `bytes` (whole frames of `format`), as far as the ring has room. Never
    /// allocates, locks or waits.
    pub(super) fn push(&mut self, format: StreamFormat, bytes: &[u8]) {
        let fb = format.frame_bytes();
        let sb = format.sample.bytes();
        let frames = bytes.len() / fb;
        let n = frames.min(self.tx.slots());
        if let Ok(chunk) = self.tx.write_chunk_uninit(n) {
            chunk.fill_from_iter(
                bytes
                    .chunks_exact(fb)
                    .map(|f| format.sample.decode(&f[..sb])),
            );
        }
        if n < frames {
            self.dropped.fetch_add((frames - n) as u64, Relaxed);
        }
    }
}

impl TapReader {
    /// Hands every sample waiting to `f`, oldest first; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(i32)) -> usize {
        let n = self.rx.slots();
        let Ok(chunk) = self.rx.read_chunk(n) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        a.iter().chain(b).for_each(|&v| f(v));
        chunk.commit_all();
        n
    }

    /// Frames the realtime side had no room for.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Checks what a playback device plays.
pub struct Sink {
    analyzer: Analyzer,
    capture: Option<LinearCapture>,
    live: Arc<SinkLive>,
    settle_frames: u64,
    stream: StreamFormat,
    /// A device wider than the stream (the analyzer reads its samples at that width: an
    /// interpolated frame's position to a fraction of a frame).
    device: Option<engine::format::SampleFormat>,
    tap: Option<Tap>,
    /// When the ramp's laps began (the instant its frame 0 mod 65536 played, interpolated),
    /// on `CLOCK_MONOTONIC`, s: receivers of one stream on one host compare them
    /// (presentation time). Allocated here; the oldest are kept when it is full.
    laps: Vec<f64>,
    last_heard: Option<(f64, f64)>,
}

/// Lap starts a sink keeps (about 90 minutes of a 48 kHz ramp).
pub const MAX_LAPS: usize = 4096;

impl Sink {
    /// A sink for `format`; `capture` gives the source's capture times when the source is in
    /// this process (then latency is measured too, counting from `settle_frames` on).
    pub fn new(format: StreamFormat, capture: Option<LinearCapture>, settle_frames: u64) -> Sink {
        Sink {
            analyzer: Analyzer::new(format, StepTolerance::SLIP, 10_000),
            capture,
            live: Arc::new(SinkLive::default()),
            settle_frames,
            stream: format,
            device: None,
            tap: None,
            laps: Vec::with_capacity(MAX_LAPS),
            last_heard: None,
        }
    }

    /// Follows a receiver in `mode`: resampled frames sit between the source's.
    pub fn following(mut self, mode: engine::receiver::DriftMode) -> Sink {
        let tolerance = match mode {
            engine::receiver::DriftMode::Resample => StepTolerance::RESAMPLE,
            _ => StepTolerance::SLIP,
        };
        self.analyzer = Analyzer::new(self.stream, tolerance, 10_000);
        if let Some(d) = self.device {
            self.analyzer.set_input(d);
        }
        self
    }

    /// When the ramp's laps began (see [`MAX_LAPS`]), s on `CLOCK_MONOTONIC`.
    pub fn laps(&self) -> &[f64] {
        &self.laps
    }

    /// The device plays `device` samples, up to `max_frames` a write (at open, not on a
    /// realtime thread).
    pub(super) fn prepare(&mut self, device: engine::format::SampleFormat, max_frames: usize) {
        let _ = max_frames;
        if device != self.stream.sample {
            self.device = Some(device);
            self.analyzer.set_input(device);
        }
    }

    /// Also hands what is played to `tap` (for an analysis off the realtime thread).
    pub fn with_tap(mut self, tap: Tap) -> Sink {
        self.tap = Some(tap);
        self
    }

    /// The live figures.
    pub fn live(&self) -> Arc<SinkLive> {
        self.live.clone()
    }

    /// The analyzer (final figures).
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// The counts so far.
    pub fn counts(&self) -> AnalyzerCounts {
        self.analyzer.counts
    }

    pub(super) fn played(&mut self, played: &[u8], t_play_s: f64, dt: f64) {
        if let Some(tap) = self.tap.as_mut() {
            // The tone as the device plays it, at its width.
            let device = StreamFormat {
                sample: self.device.unwrap_or(self.stream.sample),
                ..self.stream
            };
            tap.push(device, played);
        }
        let bytes = played;
        let (laps, last) = (&mut self.laps, &mut self.last_heard);
        let mut lap = |pos: f64, t: f64| {
            const LAP: f64 = 65_536.0;
            if let Some((p0, t0)) = *last
                && pos > p0
                && pos - p0 < 2.0
                && (pos / LAP).floor() > (p0 / LAP).floor()
            {
                let k = (pos / LAP).floor() * LAP;
                let at = t0 + (k - p0) / (pos - p0) * (t - t0);
                if laps.len() < laps.capacity() {
                    laps.push(at);
                }
            }
            *last = Some((pos, t));
        };
        match self.capture {
            Some(c) => self.analyzer.played_with(bytes, t_play_s, dt, &c, &mut lap),
            None => self
                .analyzer
                .played_with(bytes, t_play_s, dt, &Unanchored, &mut lap),
        }
        let c = self.analyzer.counts;
        if self.settle_frames > 0 && c.frames >= self.settle_frames {
            self.settle_frames = 0;
            self.analyzer.reset_latency();
        }
        self.live.gaps.store(c.gaps, Relaxed);
        self.live.frames.store(c.frames, Relaxed);
        self.live.bit_exact.store(c.bit_exact, Relaxed);
        let lat = self.analyzer.take_mean_latency_ms();
        if lat.is_finite() {
            self.live.latency_ms.store(lat.to_bits(), Relaxed);
        }
    }
}

// A `CaptureTimes` may also come from another thread's device: LinearCapture is plain data.
const _: fn() = || {
    fn is_capture_times<T: CaptureTimes>() {}
    is_capture_times::<LinearCapture>();
};
