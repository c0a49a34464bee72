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
//!
//! Layout: this file holds the device types ([`AlsaCapture`], [`AlsaPlayback`]: one generic
//! [`AlsaPcm`] over its direction); `open` negotiates hw/sw parameters, `format` maps formats
//! and access, `device` holds the open PCM and its waits, `transfer` its reads and writes,
//! `recover` the recovery from xruns and suspends, `reopen` the reopener thread of a lost
//! device, `handle` the body both device types share, `error` the open errors, `direction`
//! capture or playback.

mod device;
mod direction;
mod error;
mod format;
mod handle;
mod open;
mod recover;
mod reopen;
mod transfer;

use core::fmt;
use core::marker::PhantomData;

pub use device::MAX_POLL_FDS;
pub use direction::{CaptureKind, PlaybackKind, Stream, StreamKind};
pub use error::{OpenError, OpenErrorKind};
pub use recover::RESUME_TRIES;
pub use reopen::{GoneSwitch, REOPEN_BACKOFF_MAX, REOPEN_BACKOFF_MIN};

use super::{Capture, DeviceRequest, DeviceSetup, PcmError, Playback};
use handle::Handle;
use open::AccessWish;

/// An ALSA device of the direction `K` ([`CaptureKind`] or [`PlaybackKind`]): use it as
/// [`AlsaCapture`] or [`AlsaPlayback`] (see the module docs for its realtime contract). Opening,
/// the test fault switch and the reopen are one piece of code for both directions; only the
/// device traits differ.
pub struct AlsaPcm<K: StreamKind> {
    handle: Handle,
    kind: PhantomData<K>,
}

/// An ALSA capture device (see the module docs for its realtime contract).
pub type AlsaCapture = AlsaPcm<CaptureKind>;

/// An ALSA playback device (see the module docs for its realtime contract).
pub type AlsaPlayback = AlsaPcm<PlaybackKind>;

impl<K: StreamKind> AlsaPcm<K> {
    /// Opens and configures a device: mmap interleaved access (read/write with a warning if
    /// mmap is refused), the exact format, rate and channels, the period nearest the one asked
    /// for, `periods` periods of buffer. Also starts the device's reopener thread (see
    /// [`Capture::poll_reopen`], [`Playback::poll_reopen`]). Capture begins with
    /// [`Capture::start`]; playback when the buffer is full, or earlier with
    /// [`Playback::start`].
    pub fn open(req: &DeviceRequest) -> Result<Self, OpenError> {
        Self::open_as(req, AccessWish::MmapFirst)
    }

    /// Like [`open`](Self::open), but with `RW_INTERLEAVED` access even where mmap is offered:
    /// for devices whose mmap path misbehaves, and to test the fallback.
    pub fn open_read_write(req: &DeviceRequest) -> Result<Self, OpenError> {
        Self::open_as(req, AccessWish::ReadWrite)
    }

    fn open_as(req: &DeviceRequest, wish: AccessWish) -> Result<Self, OpenError> {
        Ok(AlsaPcm {
            handle: Handle::open(req, K::STREAM, wish)?,
            kind: PhantomData,
        })
    }

    /// The device's test fault switch (see [`GoneSwitch`]).
    pub fn gone_switch(&self) -> GoneSwitch {
        self.handle.gone.clone()
    }
}

impl<K: StreamKind> fmt::Debug for AlsaPcm<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(K::TYPE_NAME).field(&self.handle).finish()
    }
}

/// The calls [`Capture`] and [`Playback`] have in common, forwarded alike in both impls.
macro_rules! shared_calls {
    () => {
        fn setup(&self) -> &DeviceSetup {
            &self.handle.setup
        }

        fn start(&mut self) -> Result<(), PcmError> {
            self.handle.dev()?.start()
        }

        fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
            self.handle.dev_io()?.wait(timeout_ms)
        }
    };
}

impl Capture for AlsaCapture {
    shared_calls!();

    fn read<F: FnOnce(&[u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.handle.dev_io()?.read(frames, f)
    }

    /// Prepares the stream again (resuming it first after a suspend) and restarts capture.
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        let dev = self.handle.dev()?;
        dev.recover(err)?;
        dev.start()
    }

    /// Hands the device to its reopener thread, which closes it and opens it again with
    /// back-off; takes it back, prepared and not started, once it is open.
    fn poll_reopen(&mut self) -> bool {
        self.handle.poll_reopen()
    }
}

impl Playback for AlsaPlayback {
    shared_calls!();

    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.handle.dev_io()?.write(frames, f)
    }

    fn delay(&mut self) -> Result<i64, PcmError> {
        self.handle.dev()?.delay()
    }

    /// Prepares the stream again (resuming it first after a suspend). Unless it resumed, the
    /// stream is then empty and stopped: write to it, and it starts when full (or at `start`).
    fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        self.handle.dev()?.recover(err)
    }

    /// Hands the device to its reopener thread, which closes it and opens it again with
    /// back-off; takes it back, prepared and empty, once it is open.
    fn poll_reopen(&mut self) -> bool {
        self.handle.poll_reopen()
    }
}
