//! The clock of a virtual device: frames elapsed at its own rate, `ppm` off
//! `CLOCK_MONOTONIC`, and the absolute sleep its `wait` blocks in. The outputs that are not
//! sound cards ([`crate::pcm::stream_out`]) run on it too, without an offset.
//!
//! Realtime contract: runs on the realtime thread; arithmetic only, and `clock_nanosleep`
//! (the one place a virtual device blocks). No allocation, no lock.

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
