//! The pilot tone's continuity check: every discontinuity of the receiver's output (silence, a
//! fade, a jump) breaks the sine's recurrence.

/// Counts discontinuities of a pilot sine in interleaved S16 (channel 0 is checked).
#[derive(Clone, Debug, Default)]
pub struct PilotAnalyzer {
    coef: f64,
    y1: f64,
    y2: f64,
    seen: u64,
    amplitude: f64,
    in_gap: bool,
    gap_len: u64,
    warmup: u32,
    invariant_ref: f64,
    invariant_peak: f64,
    steady: u32,
    /// Discontinuities.
    pub gaps: u64,
    /// Frames inside them.
    pub gap_frames: u64,
    /// Longest, frames.
    pub max_gap_frames: u64,
    /// Frames checked (after the pilot was first found).
    pub frames: u64,
    /// Frames before the pilot was found.
    pub leading: u64,
    /// Every discontinuity as (first frame, length in frames), frames counted from the first
    /// frame fed; kept up to [`MAX_EVENTS`].
    pub events: Vec<(u64, u64)>,
}

/// Frames of an unbroken sine recurrence after which a new level is accepted.
const RESTEADY_FRAMES: u32 = 64;

/// Most discontinuities a [`PilotAnalyzer`] lists (a broken run would otherwise grow forever).
pub const MAX_EVENTS: usize = 1 << 20;

impl PilotAnalyzer {
    /// A pilot of `freq_hz` at `rate`.
    pub fn new(freq_hz: f64, rate: u32) -> PilotAnalyzer {
        PilotAnalyzer {
            coef: 2.0 * (std::f64::consts::TAU * freq_hz / rate as f64).cos(),
            ..Default::default()
        }
    }

    /// Feeds interleaved S16 frames of `channels` channels (channel 0 is checked).
    pub fn feed(&mut self, bytes: &[u8], channels: usize) {
        self.feed_channel(bytes, channels, 0);
    }

    /// Feeds interleaved S16 frames of `channels` channels; checks channel `ch`.
    pub fn feed_channel(&mut self, bytes: &[u8], channels: usize, ch: usize) {
        let ch = ch.min(channels.saturating_sub(1));
        for f in bytes.chunks_exact(2 * channels) {
            let y = i16::from_le_bytes([f[2 * ch], f[2 * ch + 1]]) as f64;
            self.seen += 1;
            if self.seen <= 2 {
                self.y2 = self.y1;
                self.y1 = y;
                continue;
            }
            let predicted = self.coef * self.y1 - self.y2;
            let residual = (y - predicted).abs();
            // Track the amplitude slowly (peaks of |y|).
            self.amplitude = (self.amplitude * 0.9999).max(y.abs());
            self.y2 = self.y1;
            self.y1 = y;
            // A sine keeps y[n]² + y[n−1]² − 2cos(ω)·y[n]·y[n−1] constant (A²·sin²ω): a
            // silence or a fade shows there even where the recurrence still holds.
            let invariant = y * y + self.y2 * self.y2 - self.coef * y * self.y2;
            if self.frames == 0 {
                // Start-up: wait for the pilot at a steady level (past any fade-in).
                let ok = residual <= 0.05 * self.amplitude.max(1000.0)
                    && (invariant - self.invariant_ref).abs() <= 0.2 * self.invariant_ref;
                if ok {
                    self.warmup += 1;
                } else {
                    self.warmup = 0;
                    self.invariant_ref = invariant;
                }
                if self.amplitude < 1000.0 || self.warmup < RESTEADY_FRAMES {
                    self.leading += 1;
                    continue;
                }
            }
            self.frames += 1;
            let recurrence_ok = residual <= 0.05 * self.amplitude.max(1000.0);
            self.steady = if recurrence_ok {
                self.steady.saturating_add(1)
            } else {
                0
            };
            self.invariant_peak = self.invariant_peak.max(invariant);
            // A sine again at a new, still audible, level (after a fade-in at the start of a
            // stream, or an input gain change): hold that level from here on. A silence keeps
            // the recurrence too, but its invariant is near 0, so it stays a gap.
            if self.steady >= RESTEADY_FRAMES
                && invariant >= 0.01 * self.invariant_peak
                && (invariant - self.invariant_ref).abs() > 0.2 * self.invariant_ref
            {
                self.invariant_ref = invariant;
            }
            let broken =
                !recurrence_ok || (invariant - self.invariant_ref).abs() > 0.2 * self.invariant_ref;
            if !broken {
                self.invariant_ref += 1e-3 * (invariant - self.invariant_ref);
            }
            if broken {
                if !self.in_gap {
                    self.in_gap = true;
                    self.gaps += 1;
                    self.gap_len = 0;
                    if self.events.len() < MAX_EVENTS {
                        self.events.push((self.seen - 1, 0));
                    }
                }
                self.gap_len += 1;
                self.gap_frames += 1;
                self.max_gap_frames = self.max_gap_frames.max(self.gap_len);
                if let Some(last) = self.events.last_mut() {
                    if last.0 + last.1 == self.seen - 1 {
                        last.1 += 1;
                    }
                }
            } else if self.in_gap {
                self.in_gap = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, f: f64, rate: f64, amp: f64, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * f * (i + phase0) as f64 / rate).sin()) as i16)
            .collect()
    }

    fn stereo(mono: &[i16]) -> Vec<u8> {
        mono.iter()
            .flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()].concat())
            .collect()
    }

    #[test]
    fn a_clean_pilot_has_no_gaps_and_holes_and_jumps_are_found() {
        let mut a = PilotAnalyzer::new(997.0, 48_000);
        let mut x = vec![0i16; 4800];
        x.extend(sine(48_000, 997.0, 48_000.0, 16_000.0, 0));
        a.feed(&stereo(&x), 2);
        assert_eq!(a.gaps, 0);
        assert!((4800..=4900).contains(&a.leading), "{a:?}");
        // A 5 ms hole of silence, then a jump of phase.
        let mut y = vec![0i16; 240];
        y.extend(sine(48_000, 997.0, 48_000.0, 16_000.0, 48_000 + 240 + 13));
        y.extend(sine(24_000, 997.0, 48_000.0, 16_000.0, 77));
        a.feed(&stereo(&y), 2);
        assert_eq!(a.gaps, 2, "{a:?}");
        assert!(a.max_gap_frames >= 200, "{a:?}");
    }

    #[test]
    fn clock_drift_and_a_little_noise_are_not_gaps() {
        let mut a = PilotAnalyzer::new(997.0, 48_000);
        let mut x = sine(96_000, 997.0 * (1.0 + 500e-6), 48_000.0, 12_000.0, 5);
        for (i, v) in x.iter_mut().enumerate() {
            *v = v.saturating_add(((i * 7919) % 7) as i16 - 3);
        }
        a.feed(&stereo(&x), 2);
        assert_eq!(a.gaps, 0, "{a:?}");
    }
}
