//! The sender's capture times, smoothed: a delay-locked loop over the instants its driver
//! reads off the capture device.
//!
//! A driver knows when a period's first frame was captured only roughly: its wake-up time less
//! the frames waiting, each read with its own jitter (the device's pointer moves in steps, the
//! thread wakes late by varying amounts). Every receiver plays by these instants, so their
//! noise would become each receiver's; the capture clock itself is as steady as a crystal. A
//! second-order delay-locked loop (as in F. Adriaensen, "Using a DLL to filter time", 2005)
//! follows it: it predicts each instant from the last and the measured frame period, and
//! moves both by a fraction of the error. With a bandwidth of [`BANDWIDTH_HZ`] it tracks a
//! clock's rate without error and takes out the jitter of single readings.
//!
//! Realtime contract: plain arithmetic; no allocation, lock or syscall.

/// The loop's bandwidth, Hz.
pub const BANDWIDTH_HZ: f64 = 0.1;

/// A reading further than this from the prediction (ns) restarts the loop: the device was
/// restarted, or frames were skipped.
pub const RESTART_NS: f64 = 2_000_000.0;

/// The delay-locked loop (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct CaptureDll {
    rate: f64,
    /// The last smoothed instant: its frame and time (ns).
    last: Option<(u64, f64)>,
    /// Measured ns per frame.
    per_frame: f64,
    restarts: u64,
}

impl CaptureDll {
    /// A loop for a capture device nominally at `rate` frames per second.
    pub fn new(rate: u32) -> CaptureDll {
        let rate = rate.max(1) as f64;
        CaptureDll {
            rate,
            last: None,
            per_frame: 1e9 / rate,
            restarts: 0,
        }
    }

    /// Frame `frame` was read as captured at `t_ns`: returns the smoothed instant of it.
    pub fn smooth(&mut self, frame: u64, t_ns: u64) -> u64 {
        let t = t_ns as f64;
        let Some((f0, t0)) = self.last else {
            self.last = Some((frame, t));
            return t_ns;
        };
        let step = frame.wrapping_sub(f0);
        if frame <= f0 || step > self.rate as u64 {
            // Backwards, the same frame again, or more than a second on: start afresh.
            return self.restart(frame, t_ns);
        }
        let frames = step as f64;
        let predicted = t0 + frames * self.per_frame;
        let e = t - predicted;
        if !e.is_finite() || e.abs() > RESTART_NS {
            return self.restart(frame, t_ns);
        }
        // Loop gains for this step's length: ω = 2π·B·T.
        let w = 2.0 * std::f64::consts::PI * BANDWIDTH_HZ * frames / self.rate;
        let b = std::f64::consts::SQRT_2 * w.min(0.5);
        let c = (w * w).min(0.25);
        let smoothed = predicted + b * e;
        self.per_frame += c * e / frames;
        // Never further than 1 % from nominal: a wild reading cannot drag the rate away.
        let nominal = 1e9 / self.rate;
        self.per_frame = self.per_frame.clamp(nominal * 0.99, nominal * 1.01);
        self.last = Some((frame, smoothed));
        smoothed.max(0.0).round() as u64
    }

    fn restart(&mut self, frame: u64, t_ns: u64) -> u64 {
        self.restarts += 1;
        self.last = Some((frame, t_ns as f64));
        t_ns
    }

    /// Times the loop restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn takes_the_jitter_out_of_readings_of_a_clock_off_its_rate() {
        // 48 kHz at +80 ppm, read every 256 frames with ±40 µs of jitter.
        let mut dll = CaptureDll::new(48_000);
        let mut rng = Rng::new(7);
        let ns_per_frame = 1e9 / 48_000.0 / (1.0 + 80e-6);
        let mut worst = 0.0f64;
        for k in 0..20_000u64 {
            let frame = k * 256;
            let truth = 5e9 + frame as f64 * ns_per_frame;
            let jitter = (rng.next_u64() % 80_001) as f64 - 40_000.0;
            let s = dll.smooth(frame, (truth + jitter) as u64) as f64;
            if k > 4_000 {
                worst = worst.max((s - truth).abs());
            }
        }
        assert!(worst < 6_000.0, "worst error {worst} ns");
        assert_eq!(dll.restarts(), 0);
    }

    #[test]
    fn a_jump_restarts_it() {
        let mut dll = CaptureDll::new(48_000);
        for k in 0..100u64 {
            dll.smooth(k * 256, 1_000_000_000 + k * 5_333_333);
        }
        // A step of 10 ms (the device restarted).
        let t = 1_000_000_000 + 100 * 5_333_333 + 10_000_000;
        assert_eq!(dll.smooth(100 * 256, t), t);
        assert_eq!(dll.restarts(), 1);
        // Frames going backwards (a new stream): again.
        assert_eq!(dll.smooth(0, 7), 7);
        assert_eq!(dll.restarts(), 2);
    }
}
