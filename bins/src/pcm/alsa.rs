//! ALSA devices: [`AlsaCapture`] and [`AlsaPlayback`].
//!
//! Samples move through `snd_pcm_mmap_begin`/`snd_pcm_mmap_commit` (the alsa crate's
//! [`IO::mmap`](alsa::pcm::IO::mmap)), which works on `hw:`, `plughw:`, dsnoop, dmix and plugin
//! PCMs alike. `alsa::direct::pcm::{MmapCapture, MmapPlayback}` are never used: they map the
//! kernel's status page, which ARM kernels refuse (every Pi) and plugin PCMs do not have. A
//! device that refuses mmap access falls back to `RW_INTERLEAVED` through a buffer allocated at
//! open, with one warning at open.
//!
//! Realtime contract:
//! - **Allocates and frees** only in `open` and on the device's reopener thread (alsa-lib's
//!   configuration and plugin set-up, hw/sw parameter containers, the error texts, the
//!   read/write buffer of the fallback path; closing the PCM frees them), and when the device
//!   is dropped. `wait`, `read`, `write`, `delay`, `start`, `recover` and `poll_reopen` allocate
//!   and free nothing, on the Rust or on the C side: no `hw_params_current` (it `malloc`s a
//!   parameter container), no `PollDescriptors::get` (a `Vec`); poll descriptors live in a
//!   fixed array filled at open, and the `IO` handle taken per call is a borrow flag, not an
//!   allocation. `tests/alsa_backend.rs` proves this with counting allocators on both sides,
//!   through a lost device and its reopen too.
//! - **Blocks** only in `poll(2)` inside `wait`, bounded by its timeout; and in `recover` from a
//!   suspend, which retries `snd_pcm_resume` for at most [`RESUME_TRIES`] × 10 ms.
//! - **A lost device** (ENODEV, USB unplugged) is never closed or opened on the caller's
//!   thread. Each device starts a normal-priority reopener thread at open (`na-reopen-cap`,
//!   `na-reopen-play`), asleep until needed. [`Capture::poll_reopen`] and
//!   [`Playback::poll_reopen`] hand it the dead device, boxed since open, through a lock-free
//!   ring of capacity 1 (`rtrb`) and wake it (`unpark`: an atomic exchange and at most a futex
//!   wake); it closes the device, opens it again with back-off, logs why each failed attempt
//!   failed and the fix, and hands the box back through a second ring, where a later
//!   `poll_reopen` takes it and swaps the set-up in. Nothing is dropped on the caller's side:
//!   the previous set-up (its name a `String`) rides back to the reopener with the box the next
//!   time, and `OpenError`s never leave it. [`GoneSwitch`] (tests) makes a device report
//!   ENODEV, to run this path on any device.
//! - **Syscalls**: `poll`; and what alsa-lib makes for `snd_pcm_avail_update`,
//!   `snd_pcm_mmap_begin/commit`, `snd_pcm_state`, `snd_pcm_delay`, `snd_pcm_start`,
//!   `snd_pcm_drop`, `snd_pcm_prepare`, `snd_pcm_resume` — on `hw:` devices `ioctl`s
//!   (`SYNC_PTR`/`HWSYNC`, `START`, `DROP`, `PREPARE`, `RESUME`); on plugin PCMs whatever the
//!   plugin does (the JACK plugin: `read`/`write` on a socket pair).
//!
//! Xruns: the kernel flags them on `hw:` devices (EPIPE from `snd_pcm_avail_update`). Plugins
//! built on alsa-lib's `ioplug` (JACK, PulseAudio) do not: behind `plug` the stream enters the
//! XRUN state while `avail_update` keeps succeeding, and the raw plugins never notice an over- or
//! underrun at all. So every availability check also reads the state, and applies the kernel's
//! own rule: a running stream whose available frames reach the stop threshold (the buffer size)
//! has run over or under. `wait`/`read`/`write` then report [`PcmError::Xrun`].
//!
//! Starting: capture runs from [`Capture::start`] (its start threshold is the boundary, so
//! nothing else starts it) and `recover` restarts it. Playback starts once a write fills the
//! buffer (mmap commits never start a stream by themselves, so `write` applies the start
//! threshold) or earlier at [`Playback::start`]; after `recover` it is prepared and empty again.
//!
//! Rates are never converted silently: alsa-lib's resampling in `plug` devices is switched off
//! (drift is corrected by netaudio itself), and the sample format is set exactly.

use core::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alsa::pcm::{Format, HwParams, PCM};
use alsa::poll::{Flags, pollfd};
use alsa::{Direction, PollDescriptors, ValueOr};
use engine::format::SampleFormat;

use super::{Access, Capture, DeviceRequest, DeviceSetup, PcmError, Playback, errno_text};

/// Most poll descriptors a device may need (`hw:` and most plugins use one).
pub const MAX_POLL_FDS: usize = 8;

/// How often `recover` retries `snd_pcm_resume` (10 ms apart) before preparing afresh.
pub const RESUME_TRIES: usize = 20;

/// Rates named in error messages when a device refuses the one asked for.
const COMMON_RATES: [u32; 13] = [
    8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000,
    352_800, 384_000,
];

/// The ALSA format of a sample format (exact: no conversion is ever asked for).
fn alsa_format(s: SampleFormat) -> Format {
    match s {
        SampleFormat::S16Le => Format::S16LE,
        SampleFormat::S24_3Le => Format::S243LE,
        SampleFormat::S32Le => Format::S32LE,
    }
}

/// Maps an alsa-crate error to the realtime error. The crate reports some errnos negated.
fn pcm_err(e: alsa::Error) -> PcmError {
    PcmError::from_errno(e.errno().abs())
}

/// Capture or playback, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// A capture device.
    Capture,
    /// A playback device.
    Playback,
}

impl Stream {
    fn direction(self) -> Direction {
        match self {
            Stream::Capture => Direction::Capture,
            Stream::Playback => Direction::Playback,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Capture => "capture",
            Stream::Playback => "playback",
        })
    }
}

/// Why a device could not be opened as requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenError {
    /// The ALSA device name as given.
    pub device: String,
    /// Capture or playback.
    pub stream: Stream,
    /// What was wrong.
    pub kind: OpenErrorKind,
}

/// What was wrong when opening a device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The request itself is unusable (e.g. a period of 0 frames).
    Request(&'static str),
    /// `snd_pcm_open` failed: no such device, busy, no permission...
    Open {
        /// The errno.
        errno: i32,
    },
    /// Neither `MMAP_INTERLEAVED` nor `RW_INTERLEAVED` access is offered.
    Access,
    /// The sample format is not offered.
    Format {
        /// Format asked for.
        wanted: SampleFormat,
        /// Those of netaudio's formats the device offers.
        supported: Vec<SampleFormat>,
        /// Every format the device offers (ALSA names), for when none of ours is among them.
        offered: Vec<String>,
    },
    /// The channel count is not offered.
    Channels {
        /// Channels asked for.
        wanted: u8,
        /// Fewest the device takes.
        min: u32,
        /// Most the device takes.
        max: u32,
    },
    /// The rate is not offered.
    Rate {
        /// Rate asked for.
        wanted: u32,
        /// Common rates the device offers.
        supported: Vec<u32>,
        /// Lowest rate offered.
        min: u32,
        /// Highest rate offered.
        max: u32,
    },
    /// No period size near the one asked for is possible.
    Period {
        /// Frames per period asked for.
        wanted: usize,
        /// Smallest period, frames.
        min: usize,
        /// Largest period, frames.
        max: usize,
    },
    /// No buffer near periods × period is possible.
    Buffer {
        /// Frames asked for.
        wanted: usize,
        /// Smallest buffer, frames.
        min: usize,
        /// Largest buffer, frames.
        max: usize,
    },
    /// The device needs more poll descriptors than [`MAX_POLL_FDS`].
    PollDescriptors {
        /// How many it needs.
        count: usize,
    },
    /// Another set-up step failed.
    Setup {
        /// The alsa-lib function.
        step: &'static str,
        /// The errno.
        errno: i32,
    },
}

impl OpenError {
    fn new(req: &DeviceRequest, stream: Stream, kind: OpenErrorKind) -> OpenError {
        OpenError {
            device: req.name.clone(),
            stream,
            kind,
        }
    }

    fn setup(req: &DeviceRequest, stream: Stream, step: &'static str, e: alsa::Error) -> Self {
        Self::new(
            req,
            stream,
            OpenErrorKind::Setup {
                step,
                errno: e.errno().abs(),
            },
        )
    }

    /// The realtime error this failure stands for.
    pub fn pcm_error(&self) -> PcmError {
        match self.kind {
            OpenErrorKind::Open { errno } => match PcmError::from_errno(errno) {
                // A name that no longer resolves (USB device unplugged) is a device gone.
                PcmError::Other(libc::ENOENT) => PcmError::Gone(libc::ENOENT),
                e => e,
            },
            OpenErrorKind::Setup { errno, .. } => PcmError::from_errno(errno),
            _ => PcmError::Other(libc::EINVAL),
        }
    }
}

/// `a, b, c`.
fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `plug:'NAME'`: the same device through alsa-lib's converting plug.
fn plug_name(dev: &str) -> String {
    format!("plug:'{dev}'")
}

fn range<T: fmt::Display + PartialEq>(min: T, max: T) -> String {
    if min == max {
        format!("{min}")
    } else {
        format!("{min}–{max}")
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = &self.device;
        let s = self.stream;
        match &self.kind {
            OpenErrorKind::Request(what) => {
                write!(f, "cannot open ALSA {s} device \"{dev}\": {what}")
            }
            OpenErrorKind::Open { errno } => {
                write!(
                    f,
                    "cannot open ALSA {s} device \"{dev}\": {}; ",
                    errno_text(*errno)
                )?;
                match *errno {
                    libc::EBUSY => write!(
                        f,
                        "another program is using it: stop that program, or share the device \
                         through {}",
                        if s == Stream::Capture {
                            "dsnoop"
                        } else {
                            "dmix"
                        }
                    ),
                    libc::EACCES | libc::EPERM => {
                        f.write_str("no permission: add the user to group audio")
                    }
                    _ => f.write_str(
                        "check that it is plugged in and its name is right (`netaudio devices` \
                         or `arecord -L` lists the names), then set audio.device to one of them",
                    ),
                }
            }
            OpenErrorKind::Access => write!(
                f,
                "ALSA {s} device \"{dev}\" offers neither MMAP_INTERLEAVED nor RW_INTERLEAVED \
                 access; use \"{}\" so alsa-lib interleaves",
                plug_name(dev)
            ),
            OpenErrorKind::Format {
                wanted,
                supported,
                offered,
            } => {
                if supported.is_empty() {
                    write!(
                        f,
                        "ALSA {s} device \"{dev}\" does not support sample format {wanted}: it \
                         offers none of S16_LE, S24_3LE, S32_LE (supported: {}); use \"{}\" so \
                         alsa-lib converts, or another device",
                        join(offered),
                        plug_name(dev)
                    )
                } else {
                    write!(
                        f,
                        "ALSA {s} device \"{dev}\" does not support sample format {wanted} \
                         (supported: {}); set audio.format to one of them",
                        join(supported)
                    )
                }
            }
            OpenErrorKind::Channels { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" does not support {wanted} channels (supported: {}); \
                 set audio.channels accordingly",
                range(min, max)
            ),
            OpenErrorKind::Rate {
                wanted,
                supported,
                min,
                max,
            } => {
                write!(f, "ALSA {s} device \"{dev}\" does not support {wanted} Hz ")?;
                if supported.is_empty() {
                    write!(f, "(supported: {} Hz)", range(min, max))?;
                } else {
                    write!(f, "(supported: {})", join(supported))?;
                }
                f.write_str("; set audio.rate to one of them")
            }
            OpenErrorKind::Period { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" cannot use periods of {wanted} frames (supported: {} \
                 frames); set audio.period accordingly",
                range(min, max)
            ),
            OpenErrorKind::Buffer { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" cannot hold a buffer of {wanted} frames (supported: \
                 {} frames); set audio.periods or audio.period accordingly",
                range(min, max)
            ),
            OpenErrorKind::PollDescriptors { count } => write!(
                f,
                "ALSA {s} device \"{dev}\" needs {count} poll descriptors, more than the \
                 {MAX_POLL_FDS} netaudio handles; use a simpler device (hw: or plughw:)"
            ),
            OpenErrorKind::Setup { step, errno } => write!(
                f,
                "ALSA {s} device \"{dev}\" refused its set-up in {step}: {}; \
                 try another audio.period/audio.periods, or \"{}\"",
                errno_text(*errno),
                plug_name(dev)
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// Which access to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessWish {
    /// mmap, falling back to read/write with a warning.
    MmapFirst,
    /// read/write only.
    ReadWrite,
}

/// An open, configured PCM and what the realtime calls need, all sized at open.
struct Device {
    pcm: PCM,
    /// Poll descriptors, filled once at open (`nfds` of them).
    fds: [pollfd; MAX_POLL_FDS],
    nfds: usize,
    frame_bytes: usize,
    period: usize,
    buffer: usize,
    /// The copy buffer of the read/write fallback (`buffer` frames); `None` with mmap.
    rw: Option<Vec<u8>>,
    /// Whether we started the stream since the last prepare.
    started: bool,
}

impl Device {
    fn open(
        req: &DeviceRequest,
        stream: Stream,
        wish: AccessWish,
    ) -> Result<(Device, DeviceSetup), OpenError> {
        let err = |kind| OpenError::new(req, stream, kind);
        if req.period == 0 {
            return Err(err(OpenErrorKind::Request(
                "the period must be at least 1 frame",
            )));
        }
        if req.periods < 2 {
            return Err(err(OpenErrorKind::Request(
                "the buffer must hold at least 2 periods",
            )));
        }
        if req.name.contains('\0') {
            return Err(err(OpenErrorKind::Request("the name contains a NUL byte")));
        }
        // Non-blocking: open fails at once on a busy device, and no transfer call can sleep.
        let pcm = PCM::new(&req.name, stream.direction(), true).map_err(|e| {
            err(OpenErrorKind::Open {
                errno: e.errno().abs(),
            })
        })?;
        let fmt = req.format;
        let (access, period, buffer) = {
            let hwp = HwParams::any(&pcm)
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params_any", e))?;
            let access = set_access(&hwp, wish).ok_or_else(|| err(OpenErrorKind::Access))?;
            set_format(&hwp, fmt.sample).map_err(err)?;
            if hwp.set_channels(u32::from(fmt.channels)).is_err() {
                return Err(err(OpenErrorKind::Channels {
                    wanted: fmt.channels,
                    min: hwp.get_channels_min().unwrap_or(0),
                    max: hwp.get_channels_max().unwrap_or(0),
                }));
            }
            // Only `plug` resamples; elsewhere this is a no-op.
            let _ = hwp.set_rate_resample(false);
            if hwp.set_rate(fmt.rate, ValueOr::Nearest).is_err() {
                return Err(err(OpenErrorKind::Rate {
                    wanted: fmt.rate,
                    supported: COMMON_RATES
                        .into_iter()
                        .filter(|&r| hwp.test_rate(r).is_ok())
                        .collect(),
                    min: hwp.get_rate_min().unwrap_or(0),
                    max: hwp.get_rate_max().unwrap_or(0),
                }));
            }
            let want_period = req.period as alsa::pcm::Frames;
            if hwp
                .set_period_size_near(want_period, ValueOr::Nearest)
                .is_err()
            {
                return Err(err(OpenErrorKind::Period {
                    wanted: req.period,
                    min: hwp.get_period_size_min().unwrap_or(0) as usize,
                    max: hwp.get_period_size_max().unwrap_or(0) as usize,
                }));
            }
            let got_period = hwp.get_period_size().unwrap_or(want_period);
            let want_buffer = got_period * req.periods as alsa::pcm::Frames;
            if hwp.set_buffer_size_near(want_buffer).is_err() {
                return Err(err(OpenErrorKind::Buffer {
                    wanted: want_buffer as usize,
                    min: hwp.get_buffer_size_min().unwrap_or(0) as usize,
                    max: hwp.get_buffer_size_max().unwrap_or(0) as usize,
                }));
            }
            pcm.hw_params(&hwp)
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params", e))?;
            let cur = pcm
                .hw_params_current()
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params_current", e))?;
            let period = cur.get_period_size().map_err(|e| {
                OpenError::setup(req, stream, "snd_pcm_hw_params_get_period_size", e)
            })?;
            let buffer = cur.get_buffer_size().map_err(|e| {
                OpenError::setup(req, stream, "snd_pcm_hw_params_get_buffer_size", e)
            })?;
            (access, period, buffer)
        };
        {
            let swp = pcm
                .sw_params_current()
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_sw_params_current", e))?;
            let sw =
                |r: alsa::Result<()>, step| r.map_err(|e| OpenError::setup(req, stream, step, e));
            sw(swp.set_avail_min(period), "snd_pcm_sw_params_set_avail_min")?;
            // Capture starts only through `start`; playback once the buffer is full (or
            // through `start`). Both stop when the ring over- or underruns.
            let start = match stream {
                Stream::Capture => swp.get_boundary().unwrap_or(alsa::pcm::Frames::MAX / 2),
                Stream::Playback => buffer,
            };
            sw(
                swp.set_start_threshold(start),
                "snd_pcm_sw_params_set_start_threshold",
            )?;
            sw(
                swp.set_stop_threshold(buffer),
                "snd_pcm_sw_params_set_stop_threshold",
            )?;
            sw(pcm.sw_params(&swp), "snd_pcm_sw_params")?;
        }
        let count = pcm.count();
        if count == 0 || count > MAX_POLL_FDS {
            return Err(err(OpenErrorKind::PollDescriptors { count }));
        }
        let mut fds = [pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_POLL_FDS];
        let nfds = pcm
            .fill(&mut fds[..count])
            .map_err(|e| OpenError::setup(req, stream, "snd_pcm_poll_descriptors", e))?;
        let frame_bytes = fmt.frame_bytes();
        let (period, buffer) = (period as usize, buffer as usize);
        let rw = match access {
            Access::ReadWrite => {
                let mut v = vec![0u8; buffer * frame_bytes];
                // Written through an opaque pointer, so the zeroing cannot be optimised away
                // and every page is faulted in now rather than in the steady state.
                std::hint::black_box(&mut v[..]).fill(0);
                Some(v)
            }
            _ => None,
        };
        let setup = DeviceSetup {
            name: req.name.clone(),
            format: fmt,
            period,
            buffer,
            access,
        };
        let dev = Device {
            pcm,
            fds,
            nfds,
            frame_bytes,
            period,
            buffer,
            rw,
            started: false,
        };
        Ok((dev, setup))
    }

    /// The stream state, raw (never panics, unlike `PCM::state`).
    fn state(&self) -> i32 {
        self.pcm.state_raw()
    }

    /// The error the current state stands for, if it stands for one.
    fn state_error(&self) -> Option<PcmError> {
        state_error(self.state())
    }

    /// `snd_pcm_avail_update`, then the state: alsa-lib's `plug` over `ioplug` plugins (JACK,
    /// PulseAudio) enters XRUN while `avail_update` keeps succeeding, and ioplug plugins never
    /// flag over- or underruns at all, so the kernel's rule is applied here too: a running
    /// stream whose available frames reach the stop threshold (the buffer) has run over/under.
    fn avail(&mut self) -> Result<usize, PcmError> {
        let n = self.pcm.avail_update().map_err(pcm_err)?;
        let n = n.max(0) as usize;
        let state = self.state();
        if let Some(e) = state_error(state) {
            return Err(e);
        }
        if n >= self.buffer && state == alsa::pcm::State::Running as i32 {
            return Err(PcmError::Xrun);
        }
        Ok(n)
    }

    /// Waits until a period is available or `timeout_ms` passed (negative: no limit).
    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        let mut deadline: Option<Instant> = None;
        let mut timeout = timeout_ms;
        loop {
            let avail = self.avail()?;
            if avail >= self.period {
                return Ok(avail);
            }
            if timeout == 0 {
                return Ok(0);
            }
            let fds = &mut self.fds[..self.nfds];
            match alsa::poll::poll(fds, timeout) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.errno().abs() == libc::EINTR => {}
                Err(e) => return Err(pcm_err(e)),
            }
            let rev = self.pcm.revents(&self.fds[..self.nfds]).map_err(pcm_err)?;
            if rev.intersects(Flags::ERR | Flags::HUP | Flags::NVAL) {
                if let Some(e) = self.state_error() {
                    return Err(e);
                }
                if rev.intersects(Flags::HUP | Flags::NVAL) {
                    return Err(PcmError::Gone(libc::EBADFD));
                }
            }
            // Woken without a full period (plugins remap events, signals interrupt): wait for
            // the rest of the time. The clock is read only on this path.
            if timeout > 0 {
                let now = Instant::now();
                let end = *deadline.get_or_insert(now + Duration::from_millis(timeout_ms as u64));
                timeout = end.saturating_duration_since(now).as_millis() as i32;
            }
        }
    }

    /// Starts the stream if it is prepared.
    fn start(&mut self) -> Result<(), PcmError> {
        if self.state() == alsa::pcm::State::Prepared as i32 {
            self.pcm.start().map_err(pcm_err)?;
        } else if let Some(e) = self.state_error() {
            return Err(e);
        }
        self.started = true;
        Ok(())
    }

    /// Brings the stream back to prepared after an xrun or a suspend.
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        self.started = false;
        match err {
            PcmError::Xrun => {}
            PcmError::Suspended => {
                for _ in 0..RESUME_TRIES {
                    match self.pcm.resume() {
                        // Resumed where it was: nothing more to do.
                        Ok(()) => {
                            self.started = self.state() == alsa::pcm::State::Running as i32;
                            return Ok(());
                        }
                        Err(e) if e.errno().abs() == libc::EAGAIN => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        // The device cannot resume: start afresh.
                        Err(_) => break,
                    }
                }
            }
            PcmError::Gone(_) | PcmError::Other(_) => return Err(err),
        }
        // `drop` first: a running stream (our own xrun rule) cannot be prepared.
        let _ = self.pcm.drop();
        self.pcm.prepare().map_err(pcm_err)
    }

    /// Lends up to `frames` captured frames to `f`.
    fn read<F: FnOnce(&[u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        let avail = self.avail()?;
        let want = frames.min(avail);
        if want == 0 {
            return Ok(0);
        }
        let fb = self.frame_bytes;
        match self.rw.as_mut() {
            None => {
                let io = self.pcm.io_bytes();
                io.mmap(want, |area: &mut [u8]| {
                    let n = area.len() / fb;
                    f(&area[..n * fb]);
                    n
                })
                .map_err(pcm_err)
            }
            Some(buf) => {
                let want = want.min(buf.len() / fb);
                let io = self.pcm.io_bytes();
                let n = io.readi(&mut buf[..want * fb]).map_err(pcm_err)?;
                f(&buf[..n * fb]);
                Ok(n)
            }
        }
    }

    /// Lends room for up to `frames` frames to `f`, commits it, and starts playback once the
    /// buffer is full.
    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        let avail = self.avail()?;
        let want = frames.min(avail);
        if want == 0 {
            return Ok(0);
        }
        let fb = self.frame_bytes;
        let n = match self.rw.as_mut() {
            None => {
                let io = self.pcm.io_bytes();
                io.mmap(want, |area: &mut [u8]| {
                    let n = area.len() / fb;
                    f(&mut area[..n * fb]);
                    n
                })
                .map_err(pcm_err)?
            }
            Some(buf) => {
                let want = want.min(buf.len() / fb);
                f(&mut buf[..want * fb]);
                let io = self.pcm.io_bytes();
                io.writei(&buf[..want * fb]).map_err(pcm_err)?
            }
        };
        // The start threshold as the kernel applies it to writes: mmap commits never start a
        // stream by themselves.
        if !self.started && n >= avail {
            self.start()?;
        }
        Ok(n)
    }

    // `i64::from` is not useless where a C long is 32 bits (32-bit Raspberry Pi OS).
    #[allow(clippy::useless_conversion)]
    fn delay(&mut self) -> Result<i64, PcmError> {
        self.pcm.delay().map(i64::from).map_err(pcm_err)
    }
}

/// The error a raw PCM state stands for, if it stands for one.
fn state_error(s: i32) -> Option<PcmError> {
    use alsa::pcm::State;
    if s == State::XRun as i32 {
        Some(PcmError::Xrun)
    } else if s == State::Suspended as i32 {
        Some(PcmError::Suspended)
    } else if s == State::Disconnected as i32 {
        Some(PcmError::Gone(libc::ENODEV))
    } else {
        None
    }
}

/// Sets the access: mmap interleaved if wished and offered, else read/write interleaved.
fn set_access(hwp: &HwParams<'_>, wish: AccessWish) -> Option<Access> {
    if wish == AccessWish::MmapFirst && hwp.set_access(alsa::pcm::Access::MMapInterleaved).is_ok() {
        return Some(Access::Mmap);
    }
    hwp.set_access(alsa::pcm::Access::RWInterleaved)
        .ok()
        .map(|_| Access::ReadWrite)
}

/// Sets the sample format exactly, or says what the device offers.
fn set_format(hwp: &HwParams<'_>, s: SampleFormat) -> Result<(), OpenErrorKind> {
    if hwp.set_format(alsa_format(s)).is_ok() {
        return Ok(());
    }
    Err(OpenErrorKind::Format {
        wanted: s,
        supported: SampleFormat::ALL
            .into_iter()
            .filter(|&f| hwp.test_format(alsa_format(f)).is_ok())
            .collect(),
        offered: Format::all()
            .iter()
            .filter(|&&f| f != Format::Unknown && hwp.test_format(f).is_ok())
            .map(|f| f.to_string())
            .collect(),
    })
}

/// Opens a device for `AlsaCapture`/`AlsaPlayback`, warning once if mmap was refused.
fn open_device(
    req: &DeviceRequest,
    stream: Stream,
    wish: AccessWish,
    warn: bool,
) -> Result<(Device, DeviceSetup), OpenError> {
    let (dev, setup) = Device::open(req, stream, wish)?;
    if warn && setup.access == Access::ReadWrite {
        match wish {
            AccessWish::MmapFirst => log::warn!(
                "ALSA {stream} device \"{}\" refuses mmap access: using RW_INTERLEAVED, one \
                 extra copy per period through a buffer of {} frames",
                req.name,
                setup.buffer
            ),
            AccessWish::ReadWrite => log::warn!(
                "ALSA {stream} device \"{}\": RW_INTERLEAVED access as asked, one extra copy \
                 per period through a buffer of {} frames",
                req.name,
                setup.buffer
            ),
        }
    }
    Ok((dev, setup))
}

/// A test fault: makes a device's next `wait`, `read` or `write` report [`PcmError::Gone`]
/// (`ENODEV`), as a USB unplug does, and every call after it until the device is handed over
/// to be reopened; the close and the open that follow are real. Tripping it is one relaxed
/// store; the device checks it with one relaxed load per call.
#[derive(Clone, Debug, Default)]
pub struct GoneSwitch(Arc<AtomicBool>);

impl GoneSwitch {
    /// Makes the device report that it is gone (see the type's docs).
    pub fn trip(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    #[inline]
    fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}

/// The device as it moves between the realtime thread and its reopener: boxed once at open,
/// so a hand-over moves one pointer through a ring, and whatever is freed is freed by the
/// reopener.
struct Slot {
    /// `None` once the reopener closed it, until it opened it again.
    dev: Option<Device>,
    /// What the device was last opened with.
    setup: DeviceSetup,
}

/// Waits before the first attempt to open a lost device again, and between failures at first.
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between attempts to open a lost device again.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Stack of a reopener thread: alsa-lib's open needs little; `mlockall` keeps all of it
/// resident.
const REOPENER_STACK: usize = 512 << 10;

/// The realtime thread's ends of a device's reopener (see [`reopener`]).
struct Reopener {
    /// Lost devices, to the reopener (capacity 1: there is one [`Slot`]).
    lost: rtrb::Producer<Box<Slot>>,
    /// Devices open again, from the reopener.
    back: rtrb::Consumer<Box<Slot>>,
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reopener {
    fn spawn(req: &DeviceRequest, stream: Stream, wish: AccessWish) -> std::io::Result<Self> {
        let (lost, lost_rx) = rtrb::RingBuffer::new(1);
        let (back_tx, back) = rtrb::RingBuffer::new(1);
        let quit = Arc::new(AtomicBool::new(false));
        let (req, q) = (req.clone(), quit.clone());
        let name = match stream {
            Stream::Capture => "na-reopen-cap",
            Stream::Playback => "na-reopen-play",
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .stack_size(REOPENER_STACK)
            .spawn(move || reopener(req, stream, wish, lost_rx, back_tx, q))?;
        Ok(Reopener {
            lost,
            back,
            quit,
            thread: Some(thread),
        })
    }

    /// Wakes the reopener (an atomic exchange, and a futex wake if it sleeps).
    #[inline]
    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Reopener {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The body of a device's reopener thread, a normal (not realtime) thread started when the
/// device is opened. It sleeps until the realtime thread hands it a lost device, closes it,
/// then opens it again as first asked, after [`REOPEN_BACKOFF_MIN`] and then with back-off up
/// to [`REOPEN_BACKOFF_MAX`], until that succeeds, and hands it back. Every allocation and
/// free of the reopen (alsa-lib's close and open, the error texts, the old set-up's name) is
/// made here, and so is the logging: why an attempt failed and what fixes it, each time the
/// reason changes.
fn reopener(
    req: DeviceRequest,
    stream: Stream,
    wish: AccessWish,
    mut lost: rtrb::Consumer<Box<Slot>>,
    mut back: rtrb::Producer<Box<Slot>>,
    quit: Arc<AtomicBool>,
) {
    // Sleeps up to `d`, or until told to quit; whether to go on.
    let pause = |d: Duration| {
        let end = Instant::now() + d;
        loop {
            if quit.load(Ordering::Acquire) {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::park_timeout(end - now);
        }
    };
    while !quit.load(Ordering::Acquire) {
        let Ok(mut slot) = lost.pop() else {
            // Woken by a hand-over or by the device's owner going away.
            std::thread::park();
            continue;
        };
        // Close first: the device may be exclusive.
        slot.dev = None;
        log::warn!(
            "ALSA {stream} device \"{}\" lost: closed it; opening it again until it is back \
             (every {:.1}–{:.0} s)",
            req.name,
            REOPEN_BACKOFF_MIN.as_secs_f64(),
            REOPEN_BACKOFF_MAX.as_secs_f64()
        );
        let mut backoff = REOPEN_BACKOFF_MIN;
        let mut tries = 0u32;
        let mut last: Option<OpenError> = None;
        loop {
            if !pause(backoff) {
                return;
            }
            tries += 1;
            match open_device(&req, stream, wish, false) {
                Ok((dev, setup)) => {
                    log::info!(
                        "ALSA {stream} device \"{}\" open again after {tries} attempt(s): period \
                         {}, buffer {} frames, {:?} access",
                        req.name,
                        setup.period,
                        setup.buffer,
                        setup.access
                    );
                    slot.dev = Some(dev);
                    // The old set-up (its name a String) is dropped here, not on the realtime
                    // thread.
                    slot.setup = setup;
                    if back.push(slot).is_err() {
                        // Only one slot exists, so the ring is empty: unreachable.
                        log::error!("ALSA {stream} device \"{}\": hand-back failed", req.name);
                    }
                    break;
                }
                Err(e) => {
                    if last.as_ref() != Some(&e) {
                        log::error!(
                            "{e} (attempt {tries}; trying again every {:.0} s at most)",
                            REOPEN_BACKOFF_MAX.as_secs_f64()
                        );
                    }
                    last = Some(e);
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                }
            }
        }
    }
}

/// Shared body of the two device types: the device (or nothing while it is away), what it was
/// opened with, and the realtime ends of its reopener.
struct Handle {
    /// `None` while the device is with the reopener.
    slot: Option<Box<Slot>>,
    setup: DeviceSetup,
    gone: GoneSwitch,
    /// The [`GoneSwitch`] tripped: report the device gone until it is handed over.
    injected_gone: bool,
    reopener: Reopener,
}

impl Handle {
    fn open(req: &DeviceRequest, stream: Stream, wish: AccessWish) -> Result<Handle, OpenError> {
        let (dev, setup) = open_device(req, stream, wish, true)?;
        let reopener = Reopener::spawn(req, stream, wish).map_err(|e| {
            OpenError::new(
                req,
                stream,
                OpenErrorKind::Setup {
                    step: "spawning its reopener thread",
                    errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
                },
            )
        })?;
        Ok(Handle {
            slot: Some(Box::new(Slot {
                dev: Some(dev),
                setup: setup.clone(),
            })),
            setup,
            gone: GoneSwitch::default(),
            injected_gone: false,
            reopener,
        })
    }

    /// The device, for calls that are not transfers.
    #[inline]
    fn dev(&mut self) -> Result<&mut Device, PcmError> {
        self.slot
            .as_mut()
            .and_then(|s| s.dev.as_mut())
            .ok_or(PcmError::Gone(libc::ENODEV))
    }

    /// The device, for `wait`, `read` and `write`, which the test fault switch applies to.
    #[inline]
    fn dev_io(&mut self) -> Result<&mut Device, PcmError> {
        if self.gone.take() {
            self.injected_gone = true;
        }
        if self.injected_gone {
            return Err(PcmError::Gone(libc::ENODEV));
        }
        self.dev()
    }

    /// Realtime side of a reopen: hands the device to the reopener (the first call after a
    /// loss), then takes it back once it is open again. Moves a box through a ring, swaps the
    /// set-up and wakes the reopener: no allocation, no free, no lock, no blocking.
    fn poll_reopen(&mut self) -> bool {
        if let Some(slot) = self.slot.take() {
            match self.reopener.lost.push(slot) {
                Ok(()) => {
                    self.injected_gone = false;
                    self.reopener.wake();
                }
                // Cannot happen (one slot, the ring empty), but never drop it here.
                Err(rtrb::PushError::Full(slot)) => self.slot = Some(slot),
            }
            return false;
        }
        match self.reopener.back.pop() {
            Ok(mut slot) => {
                // The old set-up goes back with the box the next time, and is dropped there.
                std::mem::swap(&mut self.setup, &mut slot.setup);
                self.slot = Some(slot);
                true
            }
            Err(_) => false,
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlsaDevice")
            .field("setup", &self.setup)
            .field("open", &self.slot.as_ref().is_some_and(|s| s.dev.is_some()))
            .finish()
    }
}

/// An ALSA capture device (see the module docs for its realtime contract).
#[derive(Debug)]
pub struct AlsaCapture(Handle);

impl AlsaCapture {
    /// Opens and configures a capture device: mmap interleaved access (read/write with a warning
    /// if mmap is refused), the exact format, rate and channels, the period nearest the one
    /// asked for, `periods` periods of buffer. Capture begins with [`Capture::start`]. Also
    /// starts the device's reopener thread (see [`Capture::poll_reopen`]).
    pub fn open(req: &DeviceRequest) -> Result<AlsaCapture, OpenError> {
        Handle::open(req, Stream::Capture, AccessWish::MmapFirst).map(AlsaCapture)
    }

    /// Like [`open`](Self::open), but with `RW_INTERLEAVED` access even where mmap is offered:
    /// for devices whose mmap path misbehaves, and to test the fallback.
    pub fn open_read_write(req: &DeviceRequest) -> Result<AlsaCapture, OpenError> {
        Handle::open(req, Stream::Capture, AccessWish::ReadWrite).map(AlsaCapture)
    }

    /// The device's test fault switch (see [`GoneSwitch`]).
    pub fn gone_switch(&self) -> GoneSwitch {
        self.0.gone.clone()
    }
}

impl Capture for AlsaCapture {
    fn setup(&self) -> &DeviceSetup {
        &self.0.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        self.0.dev()?.start()
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.0.dev_io()?.wait(timeout_ms)
    }

    fn read<F: FnOnce(&[u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.0.dev_io()?.read(frames, f)
    }

    /// Prepares the stream again (resuming it first after a suspend) and restarts capture.
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        let dev = self.0.dev()?;
        dev.recover(err)?;
        dev.start()
    }

    /// Hands the device to its reopener thread, which closes it and opens it again with
    /// back-off; takes it back, prepared and not started, once it is open.
    fn poll_reopen(&mut self) -> bool {
        self.0.poll_reopen()
    }
}

/// An ALSA playback device (see the module docs for its realtime contract).
#[derive(Debug)]
pub struct AlsaPlayback(Handle);

impl AlsaPlayback {
    /// Opens and configures a playback device, like [`AlsaCapture::open`]. Playback begins
    /// when the buffer is full, or earlier with [`Playback::start`].
    pub fn open(req: &DeviceRequest) -> Result<AlsaPlayback, OpenError> {
        Handle::open(req, Stream::Playback, AccessWish::MmapFirst).map(AlsaPlayback)
    }

    /// Like [`open`](Self::open), but with `RW_INTERLEAVED` access even where mmap is offered.
    pub fn open_read_write(req: &DeviceRequest) -> Result<AlsaPlayback, OpenError> {
        Handle::open(req, Stream::Playback, AccessWish::ReadWrite).map(AlsaPlayback)
    }

    /// The device's test fault switch (see [`GoneSwitch`]).
    pub fn gone_switch(&self) -> GoneSwitch {
        self.0.gone.clone()
    }
}

impl Playback for AlsaPlayback {
    fn setup(&self) -> &DeviceSetup {
        &self.0.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        self.0.dev()?.start()
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.0.dev_io()?.wait(timeout_ms)
    }

    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.0.dev_io()?.write(frames, f)
    }

    fn delay(&mut self) -> Result<i64, PcmError> {
        self.0.dev()?.delay()
    }

    /// Prepares the stream again (resuming it first after a suspend). Unless it resumed, the
    /// stream is then empty and stopped: write to it, and it starts when full (or at `start`).
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        self.0.dev()?.recover(err)
    }

    /// Hands the device to its reopener thread, which closes it and opens it again with
    /// back-off; takes it back, prepared and empty, once it is open.
    fn poll_reopen(&mut self) -> bool {
        self.0.poll_reopen()
    }
}
