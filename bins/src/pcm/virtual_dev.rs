//! Virtual devices: real-time-clocked capture and playback without a sound card.
//!
//! Each device has its own crystal: it runs `ppm` parts per million off `CLOCK_MONOTONIC`,
//! so two virtual devices drift apart like two USB interfaces. The capture device produces a
//! test signal (the frame-index ramp, or a sine) at its clock; the playback device consumes at
//! its clock and can hand what it plays to an analyzing [`Sink`], which checks every frame
//! against the source and measures end-to-end latency when the source's clock is known.
//!
//! Device names: `virtual`, or `virtual:ppm=50,sine=440` (options separated by commas; a
//! capture device plays the ramp, `sine[=HZ]` or `twotone[=F1+F2]`, two tones at a quarter
//! scale each).
//! `unplug=5s+2s` simulates a USB unplug: from 5 s after the device was opened, for 2 s, every
//! call returns [`PcmError::Gone`] (`ENODEV`) and `poll_reopen` says it is not back; then it
//! is.
//! A playback device given `record=FILE` also keeps what it plays (the first
//! [`RECORD_SECONDS`] s, raw interleaved frames in the stream format) and writes them to `FILE`
//! when the daemon stops: the way a test checks a stream from elsewhere bit for bit.
//!
//! Realtime contract: `open` allocates the device buffer (and the sink's analyzer); `wait`
//! sleeps in `clock_nanosleep`; `read`/`write` fill or lend the preallocated buffer and never
//! allocate or lock; `poll_reopen` reads the clock and, for playback, resets the counters.

use super::{Access, Capture, DeviceRequest, DeviceSetup, PcmError, Playback};
use crate::net::monotonic_ns;
use engine::format::StreamFormat;
use engine::sim::signal::{
    Analyzer, AnalyzerCounts, CaptureTimes, LinearCapture, Source, SourceKind, StepTolerance,
    Unanchored,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Options of a virtual device name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VirtualOptions {
    /// Clock offset, ppm.
    pub ppm: f64,
    /// Signal a capture device produces.
    pub source: SourceKind,
    /// Simulated unplug: (seconds after opening, seconds gone).
    pub unplug: Option<(f64, f64)>,
}

/// Seconds from `5s`, `1.5`, `300ms`.
fn parse_seconds(v: &str) -> Option<f64> {
    let (num, mul) = match v.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (v.strip_suffix('s').unwrap_or(v), 1.0),
    };
    num.parse::<f64>()
        .ok()
        .map(|x| x * mul)
        .filter(|x| x.is_finite() && *x >= 0.0 && *x <= 86_400.0)
}

/// When a simulated unplug happens, on `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, Default)]
struct Unplug {
    from_ns: u64,
    until_ns: u64,
}

impl Unplug {
    fn new(opts: &VirtualOptions) -> Unplug {
        let now = monotonic_ns();
        match opts.unplug {
            Some((at, gone)) => {
                let from_ns = now + (at * 1e9) as u64;
                Unplug {
                    from_ns,
                    until_ns: from_ns + (gone * 1e9) as u64,
                }
            }
            None => Unplug::default(),
        }
    }

    /// `Err(Gone)` while unplugged.
    fn check(&self) -> Result<(), PcmError> {
        let now = monotonic_ns();
        if now >= self.from_ns && now < self.until_ns {
            Err(PcmError::Gone(libc::ENODEV))
        } else {
            Ok(())
        }
    }
}

/// Parses `virtual[:ppm=N][,sine[=HZ]|,twotone[=F1+F2]]`; `None` when `name` is not a virtual
/// device.
pub fn parse_name(name: &str) -> Option<Result<VirtualOptions, String>> {
    let rest = name.strip_prefix("virtual")?;
    let mut o = VirtualOptions {
        ppm: 0.0,
        source: SourceKind::Ramp,
        unplug: None,
    };
    let opts = match rest.strip_prefix(':') {
        Some(r) => r,
        None if rest.is_empty() => "",
        None => return None,
    };
    for opt in opts.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        let r = match k {
            "ppm" => v
                .parse::<f64>()
                .ok()
                .filter(|p| p.abs() <= 5000.0)
                .map(|p| o.ppm = p),
            "sine" => {
                let hz = if v.is_empty() {
                    Some(997.0)
                } else {
                    v.parse().ok()
                };
                hz.map(|freq_hz| o.source = SourceKind::Sine { freq_hz })
            }
            "twotone" => {
                let spec = if v.is_empty() {
                    "twotone".to_string()
                } else {
                    format!("twotone:{}", v.replacen('+', ",", 1))
                };
                SourceKind::from_spec(&spec)
                    .ok()
                    .map(|source| o.source = source)
            }
            "ramp" => {
                o.source = SourceKind::Ramp;
                Some(())
            }
            "unplug" => v.split_once('+').and_then(|(at, gone)| {
                let w = (parse_seconds(at)?, parse_seconds(gone)?);
                o.unplug = Some(w);
                Some(())
            }),
            // The path itself is read by `record_path`.
            "record" => (!v.is_empty()).then_some(()),
            _ => None,
        };
        if r.is_none() {
            return Some(Err(format!(
                "bad virtual device option {opt:?} in {name:?}: use virtual:ppm=N (-5000..5000), \
                 virtual:sine=HZ, virtual:twotone=F1+F2, virtual:ramp, virtual:unplug=AT+FOR (e.g. unplug=5s+2s) \
                 or virtual:record=FILE"
            )));
        }
    }
    Some(Ok(o))
}

/// Seconds of audio a recording playback device keeps.
pub const RECORD_SECONDS: usize = 60;

/// The `record=FILE` option of a virtual device name, if any.
pub fn record_path(name: &str) -> Option<std::path::PathBuf> {
    let opts = name.strip_prefix("virtual:")?;
    opts.split(',')
        .find_map(|o| o.strip_prefix("record="))
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
}

fn sleep_until(t_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (t_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (t_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_nanosleep reads one timespec; no remainder is requested with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// A device clock: frames elapsed since `t0`.
#[derive(Clone, Copy, Debug)]
struct DeviceClock {
    t0_ns: u64,
    rate: f64,
}

impl DeviceClock {
    fn new(format: StreamFormat, ppm: f64) -> DeviceClock {
        DeviceClock {
            t0_ns: 0,
            rate: format.rate as f64 * (1.0 + ppm * 1e-6),
        }
    }

    fn frames_at(&self, t_ns: u64) -> u64 {
        (t_ns.saturating_sub(self.t0_ns) as f64 * self.rate / 1e9) as u64
    }

    fn time_of(&self, frame: u64) -> u64 {
        self.t0_ns + (frame as f64 * 1e9 / self.rate).ceil() as u64
    }
}

fn setup(req: &DeviceRequest) -> DeviceSetup {
    DeviceSetup {
        name: req.name.clone(),
        format: req.format,
        period: req.period,
        buffer: req.period * req.periods.max(2),
        access: Access::Virtual,
    }
}

/// A virtual capture device.
pub struct VirtualCapture {
    setup: DeviceSetup,
    clock: DeviceClock,
    source: Source,
    buf: Vec<u8>,
    consumed: u64,
    running: bool,
    epoch: Option<u64>,
    unplug: Unplug,
}

impl VirtualCapture {
    /// Opens a virtual capture device (`req.name` as in [`parse_name`]).
    pub fn open(req: &DeviceRequest) -> Result<VirtualCapture, String> {
        let opts = parse_name(&req.name)
            .unwrap_or_else(|| Err(format!("{:?} is not a virtual device", req.name)))?;
        let setup = setup(req);
        Ok(VirtualCapture {
            clock: DeviceClock::new(req.format, opts.ppm),
            source: Source::new(opts.source, req.format),
            buf: vec![0; setup.buffer * req.format.frame_bytes()],
            consumed: 0,
            running: false,
            epoch: None,
            unplug: Unplug::new(&opts),
            setup,
        })
    }

    /// Fixes the time of frame 0 (`CLOCK_MONOTONIC`, ns) before the device starts, so an
    /// analyzing sink elsewhere in the process knows the capture times in advance.
    pub fn set_epoch(&mut self, t0_ns: u64) {
        self.epoch = Some(t0_ns);
        self.clock.t0_ns = t0_ns;
    }

    /// When the analog world reached frame 0, and at what true rate (for an analyzing sink in
    /// the same process). Known once started, or after [`set_epoch`](Self::set_epoch).
    pub fn capture_times(&self) -> LinearCapture {
        LinearCapture {
            t0: self.clock.t0_ns as f64 / 1e9,
            rate: self.clock.rate,
        }
    }

    /// The device buffer's address range (to check that readers get it lent, not copied).
    pub fn buffer_range(&self) -> std::ops::Range<usize> {
        let p = self.buf.as_ptr() as usize;
        p..p + self.buf.len()
    }

    fn available(&self) -> u64 {
        self.clock
            .frames_at(monotonic_ns())
            .saturating_sub(self.consumed)
    }
}

impl Capture for VirtualCapture {
    fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        let now = monotonic_ns();
        match self.epoch {
            Some(_) => {
                // Capture begins now (or at the epoch); frames before now were never taken.
                let f = self.clock.frames_at(now);
                self.consumed = f - f % self.setup.period as u64;
            }
            None => {
                self.clock.t0_ns = now;
                self.consumed = 0;
            }
        }
        self.running = true;
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.unplug.check()?;
        if !self.running {
            return Err(PcmError::Other(libc::EBADFD));
        }
        let avail = self.available();
        if avail > self.setup.buffer as u64 {
            return Err(PcmError::Xrun);
        }
        if avail >= self.setup.period as u64 {
            return Ok(avail as usize);
        }
        let ready = self.clock.time_of(self.consumed + self.setup.period as u64);
        let limit = monotonic_ns() + timeout_ms.max(0) as u64 * 1_000_000;
        sleep_until(ready.min(limit));
        let avail = self.available();
        if avail > self.setup.buffer as u64 {
            return Err(PcmError::Xrun);
        }
        Ok(if avail >= self.setup.period as u64 {
            avail as usize
        } else {
            0
        })
    }

    fn read<F: FnOnce(&[u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.unplug.check()?;
        let fb = self.setup.format.frame_bytes();
        let at = (self.consumed % self.setup.buffer as u64) as usize;
        let n = frames
            .min(self.available() as usize)
            .min(self.setup.buffer - at);
        let area = &mut self.buf[at * fb..(at + n) * fb];
        // The analog-to-digital conversion happens here, into the device buffer.
        self.source.fill(self.consumed, area);
        f(area);
        self.consumed += n as u64;
        Ok(n)
    }

    fn recover(&mut self, _err: PcmError) -> Result<(), PcmError> {
        // An overrun loses what did not fit: continue from the newest full period.
        let now = self.clock.frames_at(monotonic_ns());
        self.consumed = now - now % self.setup.period as u64;
        Ok(())
    }

    /// Back once the simulated unplug is over (nothing to close or open).
    fn poll_reopen(&mut self) -> bool {
        self.unplug.check().is_ok()
    }
}

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

/// The device-name options that make a virtual capture device play `source`, e.g. `,sine=997`.
pub fn source_option(source: SourceKind) -> String {
    match source {
        SourceKind::Ramp => String::new(),
        SourceKind::Sine { freq_hz } => format!(",sine={freq_hz}"),
        SourceKind::TwoTone { f1_hz, f2_hz } => format!(",twotone={f1_hz}+{f2_hz}"),
    }
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
    fn push(&mut self, format: StreamFormat, bytes: &[u8]) {
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
    /// A device wider than the stream: its samples, rounded back to the stream's for the
    /// analyzer (buffers sized when the device opens).
    device: Option<engine::format::SampleFormat>,
    samples: Vec<i32>,
    narrowed: Vec<u8>,
    tap: Option<Tap>,
}

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
            samples: Vec::new(),
            narrowed: Vec::new(),
            tap: None,
        }
    }

    /// Follows a receiver in `mode`: resampled frames sit between the source's.
    pub fn following(mut self, mode: engine::receiver::DriftMode) -> Sink {
        let tolerance = match mode {
            engine::receiver::DriftMode::Resample => StepTolerance::RESAMPLE,
            _ => StepTolerance::SLIP,
        };
        self.analyzer = Analyzer::new(self.stream, tolerance, 10_000);
        self
    }

    /// The device plays `device` samples, up to `max_frames` a write (at open, not on a
    /// realtime thread).
    fn prepare(&mut self, device: engine::format::SampleFormat, max_frames: usize) {
        if device != self.stream.sample {
            self.device = Some(device);
            self.samples = vec![0; max_frames * self.stream.channels as usize];
            self.narrowed = vec![0; max_frames * self.stream.frame_bytes()];
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

    fn played(&mut self, played: &[u8], t_play_s: f64, dt: f64) {
        if let Some(tap) = self.tap.as_mut() {
            // The tone as the device plays it, at its width.
            let device = StreamFormat {
                sample: self.device.unwrap_or(self.stream.sample),
                ..self.stream
            };
            tap.push(device, played);
        }
        let bytes = played;
        let bytes = match self.device {
            Some(d) => {
                let n = (bytes.len() / (d.bytes() * self.stream.channels as usize))
                    .min(self.narrowed.len() / self.stream.frame_bytes());
                let ch = self.stream.channels as usize;
                d.decode_slice(bytes, &mut self.samples[..n * ch]);
                self.stream.sample.encode_slice(
                    &self.samples[..n * ch],
                    &mut self.narrowed[..n * self.stream.frame_bytes()],
                );
                &self.narrowed[..n * self.stream.frame_bytes()]
            }
            None => bytes,
        };
        match self.capture {
            Some(c) => self.analyzer.played(bytes, t_play_s, dt, &c),
            None => self.analyzer.played(bytes, t_play_s, dt, &Unanchored),
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

/// A virtual playback device.
pub struct VirtualPlayback {
    setup: DeviceSetup,
    clock: DeviceClock,
    buf: Vec<u8>,
    written: u64,
    /// Frames counted as played when the clock last started.
    base: u64,
    running: bool,
    sink: Option<Sink>,
    unplug: Unplug,
    record: Option<Recording>,
}

/// What a recording device played, in a buffer sized at open.
struct Recording {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
    len: usize,
}

impl VirtualPlayback {
    /// Opens a virtual playback device (`req.name` as in [`parse_name`]).
    pub fn open(req: &DeviceRequest, sink: Option<Sink>) -> Result<VirtualPlayback, String> {
        let opts = parse_name(&req.name)
            .unwrap_or_else(|| Err(format!("{:?} is not a virtual device", req.name)))?;
        let setup = setup(req);
        let fb = req.format.frame_bytes();
        let mut sink = sink;
        if let Some(s) = sink.as_mut() {
            s.prepare(req.format.sample, setup.buffer);
        }
        let record = record_path(&req.name).map(|path| Recording {
            path,
            bytes: vec![0; RECORD_SECONDS * req.format.rate as usize * fb],
            len: 0,
        });
        Ok(VirtualPlayback {
            clock: DeviceClock::new(req.format, opts.ppm),
            buf: vec![0; setup.buffer * fb],
            written: 0,
            base: 0,
            running: false,
            sink,
            unplug: Unplug::new(&opts),
            record,
            setup,
        })
    }

    /// The analyzing sink, if any.
    pub fn sink(&self) -> Option<&Sink> {
        self.sink.as_ref()
    }

    /// Writes what was played to the `record=FILE` file, if the name asked for one; returns
    /// the file and the frames written. Not for realtime threads.
    pub fn save_recording(&self) -> Result<Option<(std::path::PathBuf, usize)>, String> {
        let Some(r) = &self.record else {
            return Ok(None);
        };
        std::fs::write(&r.path, &r.bytes[..r.len])
            .map_err(|e| format!("cannot write the recording {}: {e}", r.path.display()))?;
        Ok(Some((
            r.path.clone(),
            r.len / self.setup.format.frame_bytes(),
        )))
    }

    fn played(&self) -> u64 {
        if self.running {
            self.base + self.clock.frames_at(monotonic_ns())
        } else {
            self.base
        }
    }
}

impl Playback for VirtualPlayback {
    fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        self.clock.t0_ns = monotonic_ns();
        self.running = true;
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.unplug.check()?;
        let buffer = self.setup.buffer as u64;
        let period = self.setup.period as u64;
        let played = self.played();
        if played > self.written {
            return Err(PcmError::Xrun);
        }
        let room = buffer.saturating_sub(self.written - played);
        if room >= period || !self.running {
            return Ok(room as usize);
        }
        let ready = self
            .clock
            .time_of((self.written + period).saturating_sub(buffer + self.base));
        let limit = monotonic_ns() + timeout_ms.max(0) as u64 * 1_000_000;
        sleep_until(ready.min(limit));
        let played = self.played();
        if played > self.written {
            return Err(PcmError::Xrun);
        }
        let room = buffer.saturating_sub(self.written - played);
        Ok(if room >= period { room as usize } else { 0 })
    }

    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.unplug.check()?;
        let fb = self.setup.format.frame_bytes();
        let at = (self.written % self.setup.buffer as u64) as usize;
        let n = frames.min(self.setup.buffer - at);
        let area = &mut self.buf[at * fb..(at + n) * fb];
        f(area);
        if let Some(r) = self.record.as_mut() {
            let n = area.len().min(r.bytes.len() - r.len);
            r.bytes[r.len..r.len + n].copy_from_slice(&area[..n]);
            r.len += n;
        }
        if let Some(sink) = self.sink.as_mut() {
            // Frame `written` leaves the device when the device clock reaches it.
            let t_play = if self.running {
                self.clock.time_of(self.written - self.base) as f64 / 1e9
            } else {
                // Primed before start: played right after start.
                let queued = (self.written - self.base) as f64;
                (monotonic_ns() as f64 + queued * 1e9 / self.clock.rate) / 1e9
            };
            sink.played(area, t_play, 1.0 / self.clock.rate);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn delay(&mut self) -> Result<i64, PcmError> {
        Ok(self.written as i64 - self.played() as i64)
    }

    fn recover(&mut self, _err: PcmError) -> Result<(), PcmError> {
        // An underrun: the device played silence meanwhile. It stops; what was written counts
        // as played, and it starts again after priming.
        self.running = false;
        self.base = self.written;
        Ok(())
    }

    /// Back once the simulated unplug is over, empty and stopped (nothing to close or open).
    fn poll_reopen(&mut self) -> bool {
        self.unplug.check().is_ok() && self.recover(PcmError::Xrun).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;

    fn req(name: &str) -> DeviceRequest {
        DeviceRequest {
            name: name.into(),
            format: StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
            period: 256,
            periods: 3,
        }
    }

    #[test]
    fn names_parse_with_clear_errors() {
        assert_eq!(
            parse_name("virtual:ppm=-50,sine=440"),
            Some(Ok(VirtualOptions {
                ppm: -50.0,
                source: SourceKind::Sine { freq_hz: 440.0 },
                unplug: None,
            }))
        );
        let o = parse_name("virtual:unplug=5s+300ms").unwrap().unwrap();
        assert_eq!(o.unplug, Some((5.0, 0.3)));
        let e = parse_name("virtual:unplug=5s").unwrap().unwrap_err();
        assert!(
            e.contains("unplug=5s") && e.contains("unplug=AT+FOR"),
            "{e}"
        );
        assert!(parse_name("hw:0").is_none());
        assert!(parse_name("virtualx").is_none());
        let e = parse_name("virtual:ppm=abc").unwrap().unwrap_err();
        assert!(e.contains("ppm=abc"), "{e}");
        let two = SourceKind::TwoTone {
            f1_hz: 997.0,
            f2_hz: 1997.0,
        };
        assert_eq!(
            parse_name("virtual:ppm=3,twotone=997+1997")
                .unwrap()
                .unwrap()
                .source,
            two
        );
        assert_eq!(
            parse_name(&format!("virtual:ppm=3{}", source_option(two)))
                .unwrap()
                .unwrap()
                .source,
            two
        );
        assert_eq!(
            parse_name("virtual:twotone").unwrap().unwrap().source,
            SourceKind::TwoTone {
                f1_hz: 18_000.0,
                f2_hz: 19_000.0
            }
        );
        let e = parse_name("virtual:twotone=997").unwrap().unwrap_err();
        assert!(
            e.contains("twotone=997") && e.contains("twotone=F1+F2"),
            "{e}"
        );
    }

    #[test]
    fn a_tap_hands_channel_0_over_and_counts_what_did_not_fit() {
        let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let (tap, mut reader) = tap(100);
        let mut sink = Sink::new(format, None, 0).with_tap(tap);
        let mut bytes = Vec::new();
        for n in 0..150i16 {
            bytes.extend_from_slice(&n.to_le_bytes());
            bytes.extend_from_slice(&(-n).to_le_bytes());
        }
        sink.played(&bytes, 0.0, 1.0 / 48_000.0);
        let mut got = Vec::new();
        assert_eq!(reader.drain(|v| got.push(v >> 16)), 100);
        assert_eq!(got, (0..100).collect::<Vec<i32>>());
        assert_eq!(reader.dropped(), 50);
        assert_eq!(reader.drain(|_| {}), 0);
    }

    #[test]
    fn a_recording_device_saves_what_it_played() {
        let path = std::env::temp_dir().join(format!("netaudio-rec-{}.raw", std::process::id()));
        let name = format!("virtual:ppm=10,record={}", path.display());
        assert!(matches!(parse_name(&name), Some(Ok(_))));
        assert_eq!(record_path(&name), Some(path.clone()));
        assert_eq!(record_path("virtual:ppm=10"), None);
        assert!(parse_name("virtual:record=").unwrap().is_err());
        let mut play = VirtualPlayback::open(&req(&name), None).unwrap();
        for k in 0..3u8 {
            play.write(256, |a| a.fill(k + 1)).unwrap();
        }
        assert_eq!(play.save_recording().unwrap(), Some((path.clone(), 768)));
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(bytes.len(), 768 * 4);
        assert!(bytes[..1024].iter().all(|&b| b == 1) && bytes[2048..].iter().all(|&b| b == 3));
        let plain = VirtualPlayback::open(&req("virtual"), None).unwrap();
        assert_eq!(plain.save_recording().unwrap(), None);
    }

    #[test]
    fn capture_runs_at_its_clock_and_playback_plays_what_it_gets() {
        let mut cap = VirtualCapture::open(&req("virtual:ppm=1000")).unwrap();
        let live_req = req("virtual");
        let mut play = VirtualPlayback::open(&live_req, None).unwrap();
        cap.start().unwrap();
        let t0 = monotonic_ns();
        let mut frames = 0u64;
        let mut first = Vec::new();
        while frames < 48_000 / 4 {
            let avail = cap.wait(100).unwrap();
            if avail == 0 {
                continue;
            }
            frames += cap
                .read(256, |b| {
                    if first.is_empty() {
                        first.extend_from_slice(&b[..8]);
                    }
                })
                .unwrap() as u64;
        }
        let secs = (monotonic_ns() - t0) as f64 / 1e9;
        assert!(
            (0.2..0.4).contains(&secs),
            "a quarter second of audio took {secs} s"
        );
        // Ramp frames 0 and 1.
        assert_eq!(first, [0, 0, 0, 128, 1, 0, 1, 128]);
        // Playback: prime, start, keep fed for 0.1 s without an underrun.
        while play.wait(0).unwrap() >= 256 {
            play.write(256, |a| a.fill(0)).unwrap();
        }
        play.start().unwrap();
        let end = monotonic_ns() + 100_000_000;
        while monotonic_ns() < end {
            if play.wait(50).unwrap() >= 256 {
                play.write(256, |a| a.fill(0)).unwrap();
            }
        }
        assert!(play.delay().unwrap() > 0);
        // An underrun, recovered: priming and restarting keep the arithmetic sane.
        std::thread::sleep(std::time::Duration::from_millis(40));
        let e = play.wait(0).unwrap_err();
        assert_eq!(e, PcmError::Xrun);
        play.recover(e).unwrap();
        let mut primed = 0;
        while play.wait(0).unwrap() >= 256 {
            play.write(256, |a| a.fill(0)).unwrap();
            primed += 1;
        }
        assert_eq!(primed, 3, "one buffer of room after recovery");
        play.start().unwrap();
        let room = play.wait(100).unwrap();
        assert!((256..=768).contains(&room), "{room}");
    }
}
