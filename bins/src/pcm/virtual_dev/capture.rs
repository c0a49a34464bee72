//! [`VirtualCapture`]: a timer-driven capture device that produces a test signal at its own
//! clock.
//!
//! Realtime contract: `open` allocates the device buffer; `wait` sleeps in
//! `clock_nanosleep`; `read` fills the preallocated buffer and lends it, never allocating or
//! locking; `poll_reopen` reads the clock.

use super::clock::{DeviceClock, sleep_until};
use super::names::{Unplug, parse_name};
use super::setup;
use crate::net::monotonic_ns;
use crate::pcm::{Capture, DeviceRequest, DeviceSetup, PcmError};
use engine::sim::signal::{LinearCapture, Source};

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
