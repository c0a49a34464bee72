//! [`Handle`], the body both device types share: the device (or nothing while it is away),
//! what it was opened with, the test fault switch and the realtime ends of its reopener.
//!
//! Realtime contract: everything but [`Handle::open`] runs on the realtime thread and
//! allocates, frees, locks and blocks on nothing itself: a hand-over moves a box through a
//! lock-free ring and wakes the reopener; the device calls it forwards to keep their own
//! contracts ([`device`](super::device), [`transfer`](super::transfer),
//! [`recover`](super::recover)).

use core::fmt;

use super::device::Device;
use super::direction::Stream;
use super::error::{OpenError, OpenErrorKind};
use super::open::{AccessWish, open_device};
use super::reopen::{GoneSwitch, Reopener, Slot};
use crate::pcm::{DeviceRequest, DeviceSetup, PcmError};

/// Shared body of the two device types: the device (or nothing while it is away), what it was
/// opened with, and the realtime ends of its reopener.
pub(super) struct Handle {
    /// `None` while the device is with the reopener.
    slot: Option<Box<Slot>>,
    pub(super) setup: DeviceSetup,
    pub(super) gone: GoneSwitch,
    /// The [`GoneSwitch`] tripped: report the device gone until it is handed over.
    injected_gone: bool,
    reopener: Reopener,
}

impl Handle {
    pub(super) fn open(
        req: &DeviceRequest,
        stream: Stream,
        wish: AccessWish,
    ) -> Result<Handle, OpenError> {
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
    pub(super) fn dev(&mut self) -> Result<&mut Device, PcmError> {
        self.slot
            .as_mut()
            .and_then(|s| s.dev.as_mut())
            .ok_or(PcmError::Gone(libc::ENODEV))
    }

    /// The device, for `wait`, `read` and `write`, which the test fault switch applies to.
    #[inline]
    pub(super) fn dev_io(&mut self) -> Result<&mut Device, PcmError> {
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
    pub(super) fn poll_reopen(&mut self) -> bool {
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
