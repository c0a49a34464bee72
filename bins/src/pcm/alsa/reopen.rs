//! Reopening a lost device: the test fault [`GoneSwitch`], the [`Slot`] the device travels in,
//! and the device's reopener thread, which closes and opens it again off the realtime thread.
//!
//! Realtime contract: of this file only [`GoneSwitch`]'s check (one relaxed load per call) and
//! [`Reopener::wake`] (an atomic exchange and at most a futex wake) run on the realtime
//! thread, with the ring operations of [`Handle::poll_reopen`](super::handle::Handle). The
//! reopener thread itself is a normal thread: it allocates, frees, logs and sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::device::Device;
use super::direction::Stream;
use super::error::OpenError;
use super::open::{AccessWish, open_device};
use crate::pcm::{DeviceRequest, DeviceSetup};

/// A test fault: makes a device's next `wait`, `read` or `write` report
/// [`PcmError::Gone`](crate::pcm::PcmError::Gone) (`ENODEV`), as a USB unplug does, and every
/// call after it until the device is handed over to be reopened; the close and the open that
/// follow are real. Tripping it is one relaxed store; the device checks it with one relaxed
/// load per call.
#[derive(Clone, Debug, Default)]
pub struct GoneSwitch(Arc<AtomicBool>);

impl GoneSwitch {
    /// Makes the device report that it is gone (see the type's docs).
    pub fn trip(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}

/// The device as it moves between the realtime thread and its reopener: boxed once at open,
/// so a hand-over moves one pointer through a ring, and whatever is freed is freed by the
/// reopener.
pub(super) struct Slot {
    /// `None` once the reopener closed it, until it opened it again.
    pub(super) dev: Option<Device>,
    /// What the device was last opened with.
    pub(super) setup: DeviceSetup,
}

/// Waits before the first attempt to open a lost device again, and between failures at first.
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between attempts to open a lost device again.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Stack of a reopener thread: alsa-lib's open needs little; `mlockall` keeps all of it
/// resident.
const REOPENER_STACK: usize = 512 << 10;

/// The realtime thread's ends of a device's reopener (see [`reopener`]).
pub(super) struct Reopener {
    /// Lost devices, to the reopener (capacity 1: there is one [`Slot`]).
    pub(super) lost: rtrb::Producer<Box<Slot>>,
    /// Devices open again, from the reopener.
    pub(super) back: rtrb::Consumer<Box<Slot>>,
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reopener {
    pub(super) fn spawn(
        req: &DeviceRequest,
        stream: Stream,
        wish: AccessWish,
    ) -> std::io::Result<Self> {
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
    pub(super) fn wake(&self) {
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
