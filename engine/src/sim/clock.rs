//! Virtual sample clocks: a device whose crystal runs `ppm` parts per million fast (or slow),
//! optionally wandering slowly around that offset, ticking once per period in virtual time.

/// A device clock ticking every `period` frames.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    rate: f64,
    period: usize,
    ppm: f64,
    wander_ppm: f64,
    wander_period_s: f64,
    /// Time of the next tick, seconds.
    next: f64,
    ticks: u64,
    /// A pause to take at the first tick at or after its time: (at, seconds).
    pause: Option<(f64, f64)>,
}

impl VirtualClock {
    /// A clock at nominal `rate`, `ppm` off, first ticking one period after `start_s`.
    pub fn new(rate: u32, period: usize, ppm: f64, start_s: f64) -> VirtualClock {
        let mut c = VirtualClock {
            rate: rate as f64,
            period,
            ppm,
            wander_ppm: 0.0,
            wander_period_s: 1.0,
            next: start_s,
            ticks: 0,
            pause: None,
        };
        c.next += c.period_s_at(start_s);
        c
    }

    /// Adds a slow sinusoidal wander of ±`ppm` with the given period.
    pub fn with_wander(mut self, ppm: f64, period_s: f64) -> VirtualClock {
        self.wander_ppm = ppm;
        self.wander_period_s = period_s.max(1.0);
        self
    }

    /// Stops the clock for `seconds` at the first tick at or after `at_s` (a machine stall
    /// that halts the device too, as a JACK server's missed cycles do: it resumes where it
    /// was, `seconds` late, without catching up). Replaces a pause not yet taken.
    pub fn pause_at(&mut self, at_s: f64, seconds: f64) {
        self.pause = Some((at_s, seconds.max(0.0)));
    }

    /// The true rate at time `t`, frames per second.
    pub fn rate_at(&self, t: f64) -> f64 {
        let w = if self.wander_ppm != 0.0 {
            self.wander_ppm * (core::f64::consts::TAU * t / self.wander_period_s).sin()
        } else {
            0.0
        };
        self.rate * (1.0 + (self.ppm + w) * 1e-6)
    }

    fn period_s_at(&self, t: f64) -> f64 {
        self.period as f64 / self.rate_at(t)
    }

    /// Time of the next tick, seconds.
    #[inline]
    pub fn next_tick(&self) -> f64 {
        self.next
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Frames per tick.
    pub fn period(&self) -> usize {
        self.period
    }

    /// Moves to the following tick; returns the time of the tick just passed.
    pub fn advance(&mut self) -> f64 {
        let t = self.next;
        self.next += self.period_s_at(t);
        if let Some((at, seconds)) = self.pause
            && self.next >= at
        {
            self.next += seconds;
            self.pause = None;
        }
        self.ticks += 1;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_ticks_more_often() {
        let mut fast = VirtualClock::new(48_000, 480, 500.0, 0.0);
        let mut exact = VirtualClock::new(48_000, 480, 0.0, 0.0);
        while exact.next_tick() < 3600.0 {
            exact.advance();
        }
        while fast.next_tick() < 3600.0 {
            fast.advance();
        }
        // 500 ppm of an hour at 48 kHz is 86 400 frames: 180 periods of 480.
        let diff = fast.ticks() - exact.ticks();
        assert!((179..=181).contains(&diff), "{diff}");
    }
}
