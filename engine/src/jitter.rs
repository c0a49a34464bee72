//! The receive ring: frames stored by their stream index, so loss, reorder, duplicates and late
//! packets all fall out of one rule.
//!
//! Frame `i` lives in slot `i mod capacity`; each slot remembers which frame index it holds, so
//! a slot holding an older lap's frame reads as missing without ever being cleared. A packet's
//! frames are stored when they lie in `[read_pos, read_pos + capacity)`: earlier frames are
//! late (already played), later ones too early (an outage or stall: the caller resyncs).
//!
//! Realtime contract: `new` allocates the ring; nothing else allocates, locks or blocks.

use crate::format::SampleFormat;

const EMPTY: i64 = i64::MIN;

/// What became of a packet's frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Frames stored.
    pub stored: usize,
    /// Frames already present (duplicates).
    pub duplicate: usize,
    /// Frames already played.
    pub late: usize,
    /// The packet lies beyond the ring; nothing was stored.
    pub too_early: bool,
}

/// Fixed-capacity frame ring keyed by stream frame index.
pub struct JitterBuffer {
    channels: usize,
    mask: usize,
    samples: Vec<i32>,
    tags: Vec<i64>,
}

impl JitterBuffer {
    /// A ring of at least `min_frames` frames (rounded up to a power of two).
    pub fn new(channels: usize, min_frames: usize) -> JitterBuffer {
        let cap = min_frames.max(64).next_power_of_two();
        JitterBuffer {
            channels,
            mask: cap - 1,
            samples: vec![0; cap * channels],
            tags: vec![EMPTY; cap],
        }
    }

    /// Frames the ring holds.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Samples per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Forgets every frame (on resync). O(capacity), no allocation.
    pub fn clear(&mut self) {
        self.tags.fill(EMPTY);
    }

    /// Stores the frames of a packet whose first frame is `first`, decoding `payload` (whole
    /// frames of `format` with this ring's channel count), given that the next frame to be
    /// read is `read_pos`.
    pub fn insert(
        &mut self,
        first: i64,
        payload: &[u8],
        format: SampleFormat,
        read_pos: i64,
    ) -> InsertOutcome {
        let fb = self.channels * format.bytes();
        let frames = payload.len() / fb;
        let end = first + frames as i64;
        let mut out = InsertOutcome::default();
        if end > read_pos + self.capacity() as i64 {
            out.too_early = true;
            return out;
        }
        let from = first.max(read_pos);
        out.late = (from - first).clamp(0, frames as i64) as usize;
        let mut i = from;
        while i < end {
            let slot = (i as usize) & self.mask;
            // Contiguous run up to the ring's end, split where frames are already present.
            let run_end = end.min(i + (self.capacity() - slot) as i64);
            let mut j = i;
            while j < run_end {
                let s = (j as usize) & self.mask;
                if self.tags[s] == j {
                    out.duplicate += 1;
                    j += 1;
                    continue;
                }
                // Extent of frames to store in one decode call.
                let mut k = j;
                while k < run_end && self.tags[(k as usize) & self.mask] != k {
                    self.tags[(k as usize) & self.mask] = k;
                    k += 1;
                }
                let n = (k - j) as usize;
                let src = &payload[((j - first) as usize) * fb..((k - first) as usize) * fb];
                let dst = &mut self.samples[s * self.channels..(s + n) * self.channels];
                format.decode_slice(src, dst);
                out.stored += n;
                j = k;
            }
            i = run_end;
        }
        out
    }

    /// Whether frame `i` is present.
    #[inline]
    pub fn contains(&self, i: i64) -> bool {
        self.tags[(i as usize) & self.mask] == i
    }

    /// Frame `i`, if present.
    #[inline]
    pub fn get(&self, i: i64) -> Option<&[i32]> {
        let s = (i as usize) & self.mask;
        if self.tags[s] == i {
            Some(&self.samples[s * self.channels..(s + 1) * self.channels])
        } else {
            None
        }
    }

    /// The longest run of present frames starting at `i`, at most `max` frames and not
    /// crossing the ring's end, as interleaved samples.
    pub fn run(&self, i: i64, max: usize) -> &[i32] {
        let s = (i as usize) & self.mask;
        let limit = max.min(self.capacity() - s);
        let mut n = 0;
        while n < limit && self.tags[s + n] == i + n as i64 {
            n += 1;
        }
        &self.samples[s * self.channels..(s + n) * self.channels]
    }

    /// The highest present frame index in `[from, to)`, scanning backwards; for diagnostics.
    pub fn newest_in(&self, from: i64, to: i64) -> Option<i64> {
        (from..to).rev().find(|&i| self.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(first: i64, frames: usize) -> Vec<u8> {
        // Two channels of S16: value = frame index, and its negation.
        let mut v = Vec::new();
        for i in first..first + frames as i64 {
            v.extend_from_slice(&(i as i16).to_le_bytes());
            v.extend_from_slice(&(-(i as i16)).to_le_bytes());
        }
        v
    }

    #[test]
    fn stores_reordered_duplicate_and_late_frames_correctly() {
        let mut jb = JitterBuffer::new(2, 256);
        let f = SampleFormat::S16Le;
        assert_eq!(jb.insert(64, &payload(64, 64), f, 0).stored, 64);
        assert_eq!(jb.insert(0, &payload(0, 64), f, 0).stored, 64);
        let dup = jb.insert(0, &payload(0, 64), f, 0);
        assert_eq!((dup.stored, dup.duplicate), (0, 64));
        let late = jb.insert(0, &payload(0, 64), f, 32);
        assert_eq!((late.late, late.duplicate), (32, 32));
        assert_eq!(jb.get(5), Some(&[5 << 16, -5 << 16][..]));
        assert_eq!(jb.run(0, 1000).len(), 128 * 2);
        assert!(!jb.contains(128));
        assert!(jb.insert(512, &payload(512, 64), f, 0).too_early);
    }

    #[test]
    fn stale_laps_read_as_missing() {
        let mut jb = JitterBuffer::new(2, 64);
        let f = SampleFormat::S16Le;
        jb.insert(0, &payload(0, 32), f, 0);
        assert!(jb.contains(3));
        assert!(
            !jb.contains(3 + 64),
            "the same slot one lap later is missing"
        );
        jb.insert(60, &payload(60, 8), f, 40);
        assert_eq!(
            jb.run(60, 100).len(),
            4 * 2,
            "a run stops at the ring's end"
        );
        assert!(jb.contains(67));
        jb.clear();
        assert!(!jb.contains(60));
    }
}
