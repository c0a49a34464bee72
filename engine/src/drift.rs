//! Clock-drift control: keeps the receive buffer at its target when the sender's and the
//! receiver's sample clocks run at slightly different rates.
//!
//! The measured buffer level (frames queued between the newest arrival and the read position)
//! is low-pass filtered, and a PI controller turns its error into a rate correction: the number
//! of input frames consumed per output frame is `1 + correction`. With the level in frames the
//! loop is `dL/dt = rate · (drift − correction)`, so `kp = 2ζω/rate` and `ki = ω²/rate` give a
//! second-order loop of natural frequency ω and damping ζ. The integral term converges to the
//! drift itself, which is the reported drift estimate.
//!
//! Realtime contract: no allocation, no syscall; `update` is a handful of float operations.

/// Tuning of the drift loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftParams {
    /// Natural frequency of the loop, rad/s.
    pub omega: f64,
    /// Damping ratio.
    pub zeta: f64,
    /// Time constant of the level filter, seconds.
    pub filter_s: f64,
    /// Largest correction, ppm.
    pub limit_ppm: f64,
}

impl Default for DriftParams {
    fn default() -> Self {
        DriftParams {
            omega: 0.25,
            zeta: 1.0,
            filter_s: 0.5,
            limit_ppm: 2000.0,
        }
    }
}

/// PI controller on the filtered buffer level.
#[derive(Clone, Debug)]
pub struct DriftController {
    kp: f64,
    ki: f64,
    params: DriftParams,
    rate: f64,
    integral: f64,
    correction: f64,
    level: f64,
    primed: bool,
}

impl DriftController {
    /// A controller for a stream at `rate` frames per second.
    pub fn new(rate: u32, params: DriftParams) -> DriftController {
        let r = rate as f64;
        DriftController {
            kp: 2.0 * params.zeta * params.omega / r,
            ki: params.omega * params.omega / r,
            params,
            rate: r,
            integral: 0.0,
            correction: 0.0,
            level: 0.0,
            primed: false,
        }
    }

    /// Forgets the level history but keeps the drift estimate (the clocks did not change).
    pub fn restart_level(&mut self) {
        self.primed = false;
        self.correction = self.integral;
    }

    /// Feeds one level measurement (`level` and `target` in frames, `dt` seconds since the
    /// previous one) and returns the correction to apply (input frames per output frame − 1).
    pub fn update(&mut self, level: f64, target: f64, dt: f64) -> f64 {
        self.update_moving(level, target, 0.0, dt)
    }

    /// As [`update`](Self::update), for a target moving at `target_velocity` frames per second
    /// (`latency = auto`): the move is fed forward — the level must grow at that pace, so
    /// `velocity / rate` less is consumed — and the integral, the drift estimate, does not
    /// take the move for drift. The move and the drift share the correction limit.
    pub fn update_moving(&mut self, level: f64, target: f64, target_velocity: f64, dt: f64) -> f64 {
        if !level.is_finite() || !dt.is_finite() || dt <= 0.0 || !target_velocity.is_finite() {
            return self.correction;
        }
        if !self.primed {
            self.level = level;
            self.primed = true;
        } else {
            let a = (dt / self.params.filter_s).min(1.0);
            self.level += a * (level - self.level);
        }
        let limit = self.params.limit_ppm * 1e-6;
        let feed_forward = -target_velocity / self.rate;
        // The filtered level lags a moving target by velocity · filter time: expect that lag.
        let e = self.level - (target - target_velocity * self.params.filter_s);
        let integral = (self.integral + self.ki * e * dt).clamp(-limit, limit);
        let c = self.kp * e + integral;
        // Anti-windup: hold the integral while the output is pinned at the limit.
        if c.abs() < limit || c.signum() != e.signum() {
            self.integral = integral;
        }
        self.correction = (self.kp * e + self.integral + feed_forward).clamp(-limit, limit);
        self.correction
    }

    /// The correction last returned.
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// The filtered level, frames.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The long-term drift estimate, ppm (positive: the sender's clock is faster).
    pub fn drift_ppm(&self) -> f64 {
        self.integral * 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer fed at `rate·(1+drift)` and drained at `rate·(1+correction)`.
    fn run(drift_ppm: f64, seconds: f64) -> (DriftController, f64) {
        let rate = 48_000;
        let dt = 256.0 / rate as f64;
        let mut c = DriftController::new(rate, DriftParams::default());
        let mut level = 960.0;
        let mut worst_late: f64 = 0.0;
        let steps = (seconds / dt) as usize;
        for i in 0..steps {
            let corr = c.update(level, 960.0, dt);
            level += rate as f64 * dt * (drift_ppm * 1e-6 - corr);
            if i > steps / 2 {
                worst_late = worst_late.max((level - 960.0).abs());
            }
        }
        (c, worst_late)
    }

    #[test]
    fn converges_to_the_drift_and_holds_the_level() {
        for ppm in [-500.0, -100.0, 0.0, 100.0, 500.0] {
            let (c, err) = run(ppm, 600.0);
            assert!(
                (c.drift_ppm() - ppm).abs() < 1.0,
                "{ppm}: {}",
                c.drift_ppm()
            );
            assert!(err < 1.0, "{ppm}: level off by {err} frames");
        }
    }

    #[test]
    fn a_moving_target_is_followed_without_overshoot_and_the_drift_estimate_holds() {
        let rate = 48_000;
        let dt = 256.0 / rate as f64;
        let mut c = DriftController::new(rate, DriftParams::default());
        let mut level = 960.0;
        let drift = 200e-6;
        // Settle, then move the target up 20 ms at 1 ms/s, hold, and down at 0.1 ms/s.
        let mut target = 960.0;
        let mut worst: f64 = 0.0;
        let mut max_level: f64 = 0.0;
        for i in 0..(400.0 / dt) as usize {
            let t = i as f64 * dt;
            let v = if (100.0..120.0).contains(&t) {
                48.0
            } else if (200.0..400.0).contains(&t) && target > 960.0 {
                -4.8
            } else {
                0.0
            };
            target += v * dt;
            let corr = c.update_moving(level, target, v, dt);
            level += rate as f64 * dt * (drift - corr);
            max_level = max_level.max(level);
            if t > 60.0 {
                worst = worst.max((level - target).abs());
                assert!(
                    (c.drift_ppm() - 200.0).abs() < 30.0,
                    "{t}: {}",
                    c.drift_ppm()
                );
            }
        }
        assert!(
            worst < 48.0,
            "level strayed {worst} frames from the moving target"
        );
        assert!(max_level < 960.0 + 960.0 + 48.0, "overshoot: {max_level}");
    }

    #[test]
    fn ignores_garbage_input() {
        let mut c = DriftController::new(48_000, DriftParams::default());
        assert_eq!(c.update(f64::NAN, 0.0, 0.01), 0.0);
        assert_eq!(c.update(1.0, 0.0, 0.0), 0.0);
        let big = c.update(1e12, 0.0, 1.0);
        assert!(big <= 2000e-6 + 1e-12);
    }
}
