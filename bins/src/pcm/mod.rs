//! Audio devices behind one interface: ALSA ([`alsa`]), the virtual, timer-driven devices
//! ([`virtual_dev`]) used where there is no sound card, and the outputs that are not sound
//! cards ([`stream_out`]: Snapcast, a FIFO, stdout).
//!
//! The interface lends the device's own buffer (the ALSA mmap area) to a closure, so the sender
//! reads captured frames in place and the receiver renders straight into the playback buffer.
//!
//! Realtime contract for implementations: `open` allocates; `wait`, `read`, `write`, `delay`,
//! `recover` and `poll_reopen` do not allocate, free or lock, and block only in `poll`/ALSA
//! calls (or, for the virtual devices, `clock_nanosleep`). A lost device is never closed or
//! opened on the thread that calls `poll_reopen`: the work is handed over (for ALSA, to a
//! normal-priority thread per device, started at open, through lock-free rings).

pub mod alsa;
pub mod stream_out;
pub mod virtual_dev;

use core::fmt;
use engine::format::StreamFormat;

/// What went wrong with a device. Small and `Copy`: it travels on the realtime path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmError {
    /// Over- or underrun (EPIPE): recover and count.
    Xrun,
    /// The system suspended the device (ESTRPIPE): recover.
    Suspended,
    /// The device went away (ENODEV, e.g. USB unplugged): close and reopen.
    Gone(i32),
    /// Any other errno.
    Other(i32),
}

impl PcmError {
    /// Maps an errno from ALSA.
    pub fn from_errno(errno: i32) -> PcmError {
        match errno {
            libc::EPIPE => PcmError::Xrun,
            libc::ESTRPIPE => PcmError::Suspended,
            libc::ENODEV | libc::ENXIO | libc::EBADFD => PcmError::Gone(errno),
            e => PcmError::Other(e),
        }
    }

    /// The errno behind the error.
    pub fn errno(self) -> i32 {
        match self {
            PcmError::Xrun => libc::EPIPE,
            PcmError::Suspended => libc::ESTRPIPE,
            PcmError::Gone(e) | PcmError::Other(e) => e,
        }
    }
}

impl fmt::Display for PcmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcmError::Xrun => f.write_str("xrun (over- or underrun)"),
            PcmError::Suspended => f.write_str("device suspended"),
            PcmError::Gone(e) => write!(f, "device gone (errno {e})"),
            PcmError::Other(e) => write!(f, "device error (errno {e}: {})", errno_text(*e)),
        }
    }
}

impl std::error::Error for PcmError {}

/// The text of an errno (not for realtime threads: it formats).
pub fn errno_text(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// How a device moves samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `snd_pcm_mmap_begin/commit`: the device buffer is lent out, no copy.
    Mmap,
    /// `readi/writei` through a preallocated buffer: only for devices that refuse mmap.
    ReadWrite,
    /// A virtual device.
    Virtual,
    /// An output that is not a sound card (Snapcast, a FIFO, stdout), clocked by
    /// `CLOCK_MONOTONIC`.
    Stream,
}

/// What a device was opened with.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSetup {
    /// Device name as opened (e.g. `hw:CARD=CODEC,DEV=0`).
    pub name: String,
    /// Format in use.
    pub format: StreamFormat,
    /// Frames per period.
    pub period: usize,
    /// Frames in the device buffer.
    pub buffer: usize,
    /// Access in use.
    pub access: Access,
}

/// A capture device.
pub trait Capture {
    /// What the device was opened with.
    fn setup(&self) -> &DeviceSetup;
    /// Starts capturing.
    fn start(&mut self) -> Result<(), PcmError>;
    /// Waits up to `timeout_ms` for at least one period; returns the frames ready (0 on timeout).
    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError>;
    /// Lends up to `frames` captured frames (contiguous; fewer at the end of the device ring) to
    /// `f` and releases them afterwards. Returns the frames consumed.
    fn read<F: FnOnce(&[u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError>;
    /// Recovers from [`PcmError::Xrun`] or [`PcmError::Suspended`] and restarts.
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError>;
    /// After [`PcmError::Gone`]: gets the device back, closed and opened again with the same
    /// request, without blocking (see [`Playback::poll_reopen`]). Once it returns `true`, the
    /// device is open and prepared but not started: call [`start`](Self::start).
    fn poll_reopen(&mut self) -> bool;
}

/// A playback device.
pub trait Playback {
    /// What the device was opened with.
    fn setup(&self) -> &DeviceSetup;
    /// Starts playing (after the buffer was primed).
    fn start(&mut self) -> Result<(), PcmError>;
    /// Waits up to `timeout_ms` until at least one period of room; returns the frames of room.
    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError>;
    /// Lends room for up to `frames` frames (contiguous; fewer at the end of the device ring) to
    /// `f`, which must fill all of it, then commits it. Returns the frames written.
    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError>;
    /// Frames queued in the device (what is written but not yet heard).
    fn delay(&mut self) -> Result<i64, PcmError>;
    /// Recovers from [`PcmError::Xrun`] or [`PcmError::Suspended`].
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError>;
    /// After [`PcmError::Gone`]: gets the device back, closed and opened again with the same
    /// request, without blocking. The first call after the loss hands the device over to be
    /// closed and opened again elsewhere (for ALSA, on the device's reopener thread, with
    /// back-off); every call then looks whether it is back: `true` once it is (open, prepared
    /// and empty, its [`setup`](Self::setup) that of the new open), `false` while it is away.
    /// Call it once per turn of the loop until `true`; the device's other calls report
    /// [`PcmError::Gone`] meanwhile.
    fn poll_reopen(&mut self) -> bool;
}

/// What to open.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRequest {
    /// ALSA device name, `virtual` (see [`virtual_dev`]), or an output (see [`stream_out`]).
    pub name: String,
    /// Format wanted.
    pub format: StreamFormat,
    /// Frames per period wanted.
    pub period: usize,
    /// Periods in the device buffer.
    pub periods: usize,
}
