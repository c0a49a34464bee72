//! The clock of a virtual device: frames elapsed at its own rate, `ppm` off
//! `CLOCK_MONOTONIC`, and the absolute sleep its `wait` blocks in; and a playback device's
//! queue against it ([`PlayQueue`]: room, the wait for a period, underruns). The outputs that
//! are not sound cards ([`crate::pcm::stream_out`]) run on both too, without an offset.
//!
//! Realtime contract: runs on the realtime thread; arithmetic only, and `clock_nanosleep`
//! (the one place a virtual device blocks). No allocation, no lock.

use crate::net::monotonic_ns;
use crate::pcm::PcmError;
use engine::format::StreamFormat;

pub(crate) fn sleep_until(t_ns: u64) {
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
pub(crate) struct DeviceClock {
    pub(crate) t0_ns: u64,
    pub(crate) rate: f64,
}

impl DeviceClock {
    pub(crate) fn new(format: StreamFormat, ppm: f64) -> DeviceClock {
        DeviceClock {
            t0_ns: 0,
            rate: format.rate as f64 * (1.0 + ppm * 1e-6),
        }
    }

    pub(crate) fn frames_at(&self, t_ns: u64) -> u64 {
        (t_ns.saturating_sub(self.t0_ns) as f64 * self.rate / 1e9) as u64
    }

    pub(crate) fn time_of(&self, frame: u64) -> u64 {
        self.t0_ns + (frame as f64 * 1e9 / self.rate).ceil() as u64
    }
}

/// A playback device's queue against its clock: the frames written and the frames the clock
/// has taken since it started; the room, the wait for a period of it, and an underrun.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlayQueue {
    pub(crate) clock: DeviceClock,
    /// Frames written in all.
    pub(crate) written: u64,
    /// Frames counted as played when the clock last started.
    pub(crate) base: u64,
    pub(crate) running: bool,
}

impl PlayQueue {
    pub(crate) fn new(clock: DeviceClock) -> PlayQueue {
        PlayQueue {
            clock,
            written: 0,
            base: 0,
            running: false,
        }
    }

    /// Frames the clock has taken in all.
    pub(crate) fn played(&self) -> u64 {
        if self.running {
            self.base + self.clock.frames_at(monotonic_ns())
        } else {
            self.base
        }
    }

    /// Starts the clock (after the buffer was primed).
    pub(crate) fn start(&mut self) {
        self.clock.t0_ns = monotonic_ns();
        self.running = true;
    }

    /// Waits up to `timeout_ms` for a `period` of room in a `buffer`; the room (0 if none came
    /// in time), or [`PcmError::Xrun`] if the clock took frames that were never written.
    pub(crate) fn wait(
        &self,
        buffer: usize,
        period: usize,
        timeout_ms: i32,
    ) -> Result<usize, PcmError> {
        let (buffer, period) = (buffer as u64, period as u64);
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

    /// Frames written but not yet taken.
    pub(crate) fn delay(&self) -> i64 {
        self.written as i64 - self.played() as i64
    }

    /// After an underrun: the clock stops; what was written counts as played, and it starts
    /// again after priming.
    pub(crate) fn stop(&mut self) {
        self.running = false;
        self.base = self.written;
    }
}
