//! A fault injector inside the sessions (after smoltcp's `FaultInjector`): drops every n-th
//! datagram a session would send. Because the daemon and the simulator drive the same
//! sessions, a fault set here shows in both: the test that proves they run one composition
//! uses it, and so can a field diagnosis.
//!
//! Realtime contract: a counter and a comparison per datagram; no allocation.

/// Drops every n-th datagram (off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultInjector {
    drop_every: u32,
    seen: u32,
    dropped: u64,
}

impl FaultInjector {
    /// No faults.
    pub const fn off() -> FaultInjector {
        FaultInjector {
            drop_every: 0,
            seen: 0,
            dropped: 0,
        }
    }

    /// Drops the n-th, 2n-th, ... datagram (`n` ≥ 1; 0 is off).
    pub const fn drop_every(n: u32) -> FaultInjector {
        FaultInjector {
            drop_every: n,
            seen: 0,
            dropped: 0,
        }
    }

    /// Whether the next datagram is to be dropped.
    #[inline]
    pub fn drops(&mut self) -> bool {
        if self.drop_every == 0 {
            return false;
        }
        self.seen += 1;
        if self.seen >= self.drop_every {
            self.seen = 0;
            self.dropped += 1;
            return true;
        }
        false
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_every_nth_and_counts() {
        let mut f = FaultInjector::drop_every(3);
        let pattern: Vec<bool> = (0..9).map(|_| f.drops()).collect();
        assert_eq!(
            pattern,
            [false, false, true, false, false, true, false, false, true]
        );
        assert_eq!(f.dropped(), 3);
        let mut off = FaultInjector::off();
        assert!((0..100).all(|_| !off.drops()));
    }
}
