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
//! With a sine for a source ([`ToneSkew`]) the offset is measured below a frame: for each
//! tenth of a second, the phase of the tone in each output (a Hann-windowed correlation with
//! the tone, which is the peak of their cross-correlation for a pure tone), and their
//! difference over the tone's angular frequency. The 16-bit monitor costs a few thousandths
//! of a frame there.
//!
//! Frames are compared from [`SETTLE_S`] after both outputs first named a frame, and not
//! within [`WRAP_GUARD`] frames of a ramp channel's wrap: the wrap is a step of 65 535, and a
//! resampler's band-limited interpolation rings around it for half its kernel, so a frame
//! named there can be off by a few even when the outputs are in step.

/// Seconds after both outputs play before their frames are compared.
pub const SETTLE_S: f64 = 5.0;
/// Bytes of a 6-channel S16 monitor frame.
pub const FRAME6: usize = 12;
/// Frames on each side of a ramp channel's wrap that are not compared (half the resampler's
/// 64-tap kernel, and some).
pub const WRAP_GUARD: u16 = 40;
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

/// Whether a named frame lies within [`WRAP_GUARD`] of a wrap of either ramp channel (channel 1
/// wraps where its bits pass 0x8000, channel 2 where they pass 0x0000).
fn near_wrap(a: u16) -> bool {
    let d = |w: u16| a.wrapping_sub(w).min(w.wrapping_sub(a));
    d(0x8000) < WRAP_GUARD || d(0x0000) < WRAP_GUARD
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
            if near_wrap(a) || near_wrap(b) {
                continue;
            }
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

/// Frames of a [`ToneSkew`] block (at 48 kHz; scaled with the rate): a tenth of a second.
const TONE_BLOCK_S: f64 = 0.1;

/// `rig --receivers 2 --source sine:HZ`: the offset between the two outputs below a frame (see
/// the module docs).
#[derive(Clone, Debug)]
pub struct ToneSkew {
    omega: f64,
    block: usize,
    window: Vec<f64>,
    /// The block being summed: its position and both outputs' correlations (re, im).
    at: usize,
    sums: [(f64, f64); 2],
    /// Blocks since both outputs first held the tone.
    since_both: Option<usize>,
    settle_blocks: usize,
    /// Each compared block's offset, frames (second − first).
    offsets: Vec<f64>,
    blocks_per_second: usize,
}

/// What [`ToneSkew`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ToneSkewReport {
    /// Blocks compared.
    pub blocks: usize,
    /// Mean offset, frames (positive: the second is ahead).
    pub mean_frames: f64,
    /// Smallest and largest block offset, frames.
    pub min_frames: f64,
    /// Largest.
    pub max_frames: f64,
    /// Median and 99th percentile of the offset's size, frames.
    pub p50_abs_frames: f64,
    /// 99th percentile.
    pub p99_abs_frames: f64,
    /// Share of the blocks no more than one frame apart.
    pub within_one_share: f64,
    /// The mean of each second, frames.
    pub seconds: Vec<f64>,
}

impl ToneSkew {
    /// A comparison of a sine at `freq_hz`, monitored at `rate` Hz.
    pub fn new(rate: u32, freq_hz: f64) -> ToneSkew {
        let rate = rate.max(1) as f64;
        let block = ((TONE_BLOCK_S * rate) as usize).max(16);
        let window = (0..block)
            .map(|n| {
                let x = std::f64::consts::PI * (n as f64 + 0.5) / block as f64;
                x.sin() * x.sin()
            })
            .collect();
        ToneSkew {
            omega: 2.0 * std::f64::consts::PI * freq_hz / rate,
            block,
            window,
            at: 0,
            sums: [(0.0, 0.0); 2],
            since_both: None,
            settle_blocks: (SETTLE_S / TONE_BLOCK_S) as usize,
            offsets: Vec::new(),
            blocks_per_second: (1.0 / TONE_BLOCK_S).round() as usize,
        }
    }

    /// Monitor bytes (6-channel S16_LE, whole frames): channel 3 of the first output, 5 of the
    /// second.
    pub fn feed(&mut self, bytes: &[u8]) {
        for f in bytes.chunks_exact(FRAME6) {
            let w = self.window[self.at];
            // The reference phase starts again with each block: both outputs are measured
            // against the same one, and only their difference counts.
            let ph = self.omega * self.at as f64;
            let (c, s) = (ph.cos(), ph.sin());
            for (i, at) in [4usize, 8].into_iter().enumerate() {
                let x = i16::from_le_bytes([f[at], f[at + 1]]) as f64 * w;
                self.sums[i].0 += x * c;
                self.sums[i].1 -= x * s;
            }
            self.at += 1;
            if self.at == self.block {
                self.close_block();
            }
        }
    }

    fn close_block(&mut self) {
        let [(ar, ai), (br, bi)] = self.sums;
        self.sums = [(0.0, 0.0); 2];
        self.at = 0;
        // Both outputs hold the tone: at least −60 dBFS (a full-scale tone sums to a quarter
        // of the block times 32 768).
        let floor = 1e-3 * 32_768.0 * self.block as f64 / 4.0;
        let present = ar.hypot(ai) > floor && br.hypot(bi) > floor;
        if let Some(n) = self.since_both.as_mut() {
            *n += 1;
        } else if present {
            self.since_both = Some(0);
        }
        if !present || self.since_both.is_none_or(|n| n < self.settle_blocks) {
            return;
        }
        // arg(B · conj A): the second output's phase lead, the frames it is ahead times ω.
        let (re, im) = (br * ar + bi * ai, bi * ar - br * ai);
        self.offsets.push(im.atan2(re) / self.omega);
    }

    /// The figures so far.
    pub fn report(&self) -> ToneSkewReport {
        let n = self.offsets.len();
        let mut abs: Vec<f64> = self.offsets.iter().map(|d| d.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            if n == 0 {
                f64::NAN
            } else {
                abs[((q * (n - 1) as f64).round() as usize).min(n - 1)]
            }
        };
        let fold = |init: f64, f: fn(f64, f64) -> f64| {
            if n == 0 {
                f64::NAN
            } else {
                self.offsets.iter().copied().fold(init, f)
            }
        };
        ToneSkewReport {
            blocks: n,
            mean_frames: if n == 0 {
                f64::NAN
            } else {
                self.offsets.iter().sum::<f64>() / n as f64
            },
            min_frames: fold(f64::INFINITY, f64::min),
            max_frames: fold(f64::NEG_INFINITY, f64::max),
            p50_abs_frames: pct(0.5),
            p99_abs_frames: pct(0.99),
            within_one_share: if n == 0 {
                f64::NAN
            } else {
                abs.iter().filter(|&&d| d <= 1.0).count() as f64 / n as f64
            },
            seconds: self
                .offsets
                .chunks_exact(self.blocks_per_second)
                .map(|c| c.iter().sum::<f64>() / c.len() as f64)
                .collect(),
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
    fn frames_beside_a_ramp_wrap_are_not_compared() {
        let mut s = RigSkew::new(1_000);
        // 8 s from 60 000: the comparison starts at 65 000 and crosses channel 2's wrap.
        let bytes: Vec<u8> = (0..8_000u32)
            .flat_map(|m| {
                let p = (m as u16).wrapping_add(60_000);
                // Ringing beside the wrap: the second output names a frame 3 off there.
                let ring = if near_wrap(p) { 3 } else { 0 };
                frame(p, Some(p), Some(p.wrapping_add(ring)))
            })
            .collect();
        s.feed(&bytes);
        let r = s.report();
        assert_eq!(r.compared, 3_000 - 2 * WRAP_GUARD as u64 + 1);
        assert_eq!((r.min_frames, r.max_frames), (Some(0), Some(0)));
    }

    #[test]
    fn a_tone_reads_its_offset_below_a_frame() {
        let rate = 48_000;
        for offset in [0.0f64, 0.37, -1.25] {
            let mut t = ToneSkew::new(rate, 997.0);
            let w = 2.0 * std::f64::consts::PI * 997.0 / rate as f64;
            // 1 s of silence, then 8 s of tone; the second output is `offset` frames ahead.
            let bytes: Vec<u8> = (0..9 * rate as usize)
                .flat_map(|m| {
                    let on = m >= rate as usize;
                    let s = |d: f64| {
                        if on {
                            ((w * (m as f64 + d)).sin() * 16_384.0).round() as i16
                        } else {
                            0
                        }
                    };
                    let (a, b) = (s(0.0), s(offset));
                    let mut f = [0u8; FRAME6];
                    f[4..6].copy_from_slice(&a.to_le_bytes());
                    f[8..10].copy_from_slice(&b.to_le_bytes());
                    f
                })
                .collect();
            t.feed(&bytes);
            let r = t.report();
            assert_eq!(r.blocks, 30, "8 s of tone, 5 of them settling");
            assert!((r.mean_frames - offset).abs() < 0.002, "{offset}: {r:?}");
            assert!((r.max_frames - r.min_frames) < 0.004, "{r:?}");
            assert_eq!(r.seconds.len(), 3);
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
