//! `rig --receivers 2`: the offset between two receivers' outputs of the same stream, read off
//! a 6-channel monitor capture (1–2 the source, 3–4 the first receiver, 5–6 the second), all
//! sampled in the same JACK cycle.
//!
//! Each output plays the ramp, whose two channels name the frame (channel 2 is channel 1 plus
//! 32 768). At every monitor frame where both outputs name a frame (the two channels agree to
//! the rounding of a resampled frame, ±1), their difference is the skew in whole frames at that
//! instant: 0 when both play the same frame. The monitor's 16 bits round a resampled frame's
//! position, so one frame is the resolution: on one clock (the rig's) the receivers' fractional
//! phases hardly move, and averaging cannot recover a fraction.
//!
//! Frames are compared from [`SETTLE_S`] after both outputs first named a frame.

/// Seconds after both outputs play before their frames are compared.
pub const SETTLE_S: f64 = 5.0;
/// Bytes of a 6-channel S16 monitor frame.
pub const FRAME6: usize = 12;
/// Differences counted one by one, ±this many frames (beyond: counted as beyond).
const SPAN: i32 = 16;

/// The frame a ramp output names, if its two channels agree (to ±1, a resampled frame's
/// rounding).
fn named(a: [u8; 2], b: [u8; 2]) -> Option<u16> {
    let a = u16::from_le_bytes(a);
    let b = u16::from_le_bytes(b);
    // Silence (both 0) is −32 768 apart: no frame.
    let off = b.wrapping_sub(a ^ 0x8000) as i16 as i32;
    (off.abs() <= 1).then_some(a)
}

/// The comparison (see the module docs).
#[derive(Clone, Debug)]
pub struct RigSkew {
    settle_frames: u64,
    /// Monitor frames since both outputs first named a frame.
    since_both: Option<u64>,
    hist: Vec<u64>,
    beyond: u64,
    compared: u64,
    sum: i64,
    rate: u64,
    /// The current second's sum and count, and the means of the seconds before.
    second: (i64, u64),
    seconds: Vec<f64>,
}

/// What the comparison found.
#[derive(Clone, Debug, PartialEq)]
pub struct SkewReport {
    /// Monitor frames compared.
    pub compared: u64,
    /// The second receiver's frame less the first's, mean over the compared frames (positive:
    /// the second is ahead), frames.
    pub mean_frames: f64,
    /// Smallest and largest difference, frames (`None`: none compared).
    pub min_frames: Option<i32>,
    /// Largest.
    pub max_frames: Option<i32>,
    /// Share of the compared frames where both played the same frame.
    pub same_share: f64,
    /// Frames further apart than ±16.
    pub beyond: u64,
    /// Share of the compared frames no more than one frame apart.
    pub within_one_share: f64,
    /// The mean of each second compared, frames.
    pub seconds: Vec<f64>,
}

impl RigSkew {
    /// A comparison at `rate` Hz.
    pub fn new(rate: u32) -> RigSkew {
        RigSkew {
            settle_frames: (SETTLE_S * rate as f64) as u64,
            since_both: None,
            hist: vec![0; (2 * SPAN + 1) as usize],
            beyond: 0,
            compared: 0,
            sum: 0,
            rate: rate.max(1) as u64,
            second: (0, 0),
            seconds: Vec::new(),
        }
    }

    /// Monitor bytes (6-channel S16_LE, whole frames).
    pub fn feed(&mut self, bytes: &[u8]) {
        for f in bytes.chunks_exact(FRAME6) {
            let a = named([f[4], f[5]], [f[6], f[7]]);
            let b = named([f[8], f[9]], [f[10], f[11]]);
            if let Some(n) = self.since_both.as_mut() {
                *n += 1;
            } else if a.is_some() && b.is_some() {
                self.since_both = Some(0);
            }
            if self.since_both.is_none_or(|n| n < self.settle_frames) {
                continue;
            }
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            let d = b.wrapping_sub(a) as i16 as i32;
            self.compared += 1;
            self.sum += d as i64;
            self.second.0 += d as i64;
            self.second.1 += 1;
            if self.second.1 == self.rate {
                self.seconds.push(self.second.0 as f64 / self.rate as f64);
                self.second = (0, 0);
            }
            if d.abs() <= SPAN {
                self.hist[(d + SPAN) as usize] += 1;
            } else {
                self.beyond += 1;
            }
        }
    }

    /// The figures so far.
    pub fn report(&self) -> SkewReport {
        let seen = |i: usize| self.hist[i] > 0;
        let at = |i: usize| i as i32 - SPAN;
        SkewReport {
            compared: self.compared,
            mean_frames: if self.compared > 0 {
                self.sum as f64 / self.compared as f64
            } else {
                f64::NAN
            },
            min_frames: (0..self.hist.len()).find(|&i| seen(i)).map(at),
            max_frames: (0..self.hist.len()).rev().find(|&i| seen(i)).map(at),
            same_share: if self.compared > 0 {
                self.hist[SPAN as usize] as f64 / self.compared as f64
            } else {
                f64::NAN
            },
            beyond: self.beyond,
            within_one_share: if self.compared > 0 {
                (SPAN as usize - 1..=SPAN as usize + 1)
                    .map(|i| self.hist[i])
                    .sum::<u64>() as f64
                    / self.compared as f64
            } else {
                f64::NAN
            },
            seconds: self.seconds.clone(),
        }
    }
}

/// Splits 6-channel monitor frames into the 4-channel frames of each receiver (the source's
/// two channels with its output's two), for the frame-by-frame analysis of each.
pub fn split(bytes: &[u8], first: &mut Vec<u8>, second: &mut Vec<u8>) {
    first.clear();
    second.clear();
    for f in bytes.chunks_exact(FRAME6) {
        first.extend_from_slice(&f[0..8]);
        second.extend_from_slice(&f[0..4]);
        second.extend_from_slice(&f[8..12]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: u16, a: Option<u16>, b: Option<u16>) -> [u8; FRAME6] {
        let mut f = [0u8; FRAME6];
        let put = |f: &mut [u8; FRAME6], at: usize, v: Option<u16>| {
            if let Some(v) = v {
                f[at..at + 2].copy_from_slice(&v.to_le_bytes());
                f[at + 2..at + 4].copy_from_slice(&(v ^ 0x8000).to_le_bytes());
            }
        };
        put(&mut f, 0, Some(src));
        put(&mut f, 4, a);
        put(&mut f, 8, b);
        f
    }

    #[test]
    fn in_step_outputs_read_zero_and_an_offset_reads_itself() {
        for offset in [0i32, 1, -3] {
            let mut s = RigSkew::new(1_000);
            let bytes: Vec<u8> = (0..8_000u32)
                .flat_map(|m| {
                    let p = (m as u16).wrapping_add(40_000);
                    frame(p, Some(p), Some((p as i32 + offset) as u16))
                })
                .collect();
            s.feed(&bytes);
            let r = s.report();
            assert_eq!(r.compared, 3_000, "5 s of 8 settle");
            assert_eq!(r.mean_frames, offset as f64);
            assert_eq!((r.min_frames, r.max_frames), (Some(offset), Some(offset)));
            assert_eq!(r.same_share, if offset == 0 { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn silence_is_not_compared_and_splitting_keeps_the_source() {
        let mut s = RigSkew::new(1_000);
        let bytes: Vec<u8> = (0..8_000u32)
            .flat_map(|m| frame(m as u16, Some(m as u16), None))
            .collect();
        s.feed(&bytes);
        assert_eq!(s.report().compared, 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        split(&frame(7, Some(5), Some(6)), &mut a, &mut b);
        assert_eq!(&a[0..2], &7u16.to_le_bytes());
        assert_eq!(&b[0..2], &7u16.to_le_bytes());
        assert_eq!(&a[4..6], &5u16.to_le_bytes());
        assert_eq!(&b[4..6], &6u16.to_le_bytes());
    }
}
