//! Hole concealment without clicks.
//!
//! Frames pass through a gain that is 1 while audio is present. When a frame is missing the
//! last good frame is held and the gain falls to 0 along a raised-cosine curve; when audio
//! returns the gain rises back the same way. Gain at full scale is an exact pass-through, so
//! concealment costs nothing to bit-exactness outside holes.
//!
//! Realtime contract: `new` allocates the gain table and the held frame; `frame` does not
//! allocate, lock or block.

/// Gains are Q30 fixed point.
const ONE: i64 = 1 << 30;

/// Crossfades between audio and silence around missing frames.
pub struct Concealer {
    channels: usize,
    held: Vec<i32>,
    gains: Vec<i64>,
    /// Position on the gain curve: `gains.len() - 1` is full scale, 0 is silence.
    g: usize,
}

impl Concealer {
    /// A concealer for `channels` channels whose fades last `fade_frames` frames.
    pub fn new(channels: usize, fade_frames: usize) -> Concealer {
        let n = fade_frames.max(1);
        let gains = (0..=n)
            .map(|i| {
                let x = (i as f64 / n as f64) * core::f64::consts::FRAC_PI_2;
                (x.sin().powi(2) * ONE as f64).round() as i64
            })
            .collect::<Vec<_>>();
        Concealer {
            channels,
            held: vec![0; channels],
            g: n,
            gains,
        }
    }

    /// Starts silent, as before the first frame of a stream.
    pub fn reset_silent(&mut self) {
        self.g = 0;
        self.held.fill(0);
    }

    /// True while frames pass through unchanged, so a caller may copy present frames in bulk
    /// (and then call [`pass_through`](Self::pass_through) with the last of them).
    #[inline]
    pub fn is_transparent(&self) -> bool {
        self.g == self.gains.len() - 1
    }

    /// True when the output has faded to silence.
    #[inline]
    pub fn is_silent(&self) -> bool {
        self.g == 0
    }

    /// Records that `last` was passed through by a bulk copy while transparent.
    #[inline]
    pub fn pass_through(&mut self, last: &[i32]) {
        self.held.copy_from_slice(last);
    }

    /// One frame: `Some` present audio, `None` missing. Writes the output frame into `out`.
    #[inline]
    pub fn frame(&mut self, input: Option<&[i32]>, out: &mut [i32]) {
        let full = self.gains.len() - 1;
        match input {
            Some(x) => {
                self.held.copy_from_slice(&x[..self.channels]);
                if self.g < full {
                    self.g += 1;
                }
            }
            None => {
                self.g = self.g.saturating_sub(1);
            }
        }
        if self.g == full {
            out.copy_from_slice(&self.held);
        } else {
            let gain = self.gains[self.g];
            for (o, &h) in out.iter_mut().zip(self.held.iter()) {
                *o = ((h as i64 * gain) >> 30) as i32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_frames_pass_unchanged() {
        let mut c = Concealer::new(2, 8);
        let mut out = [0; 2];
        for i in 0..100 {
            c.frame(Some(&[i, -i]), &mut out);
            assert_eq!(out, [i, -i]);
        }
    }

    #[test]
    fn holes_fade_out_and_back_in_without_steps() {
        let mut c = Concealer::new(1, 16);
        let mut out = [0];
        let v = 1 << 30;
        let mut prev = v;
        let mut outs = Vec::new();
        for i in 0..100 {
            let input = if (20..50).contains(&i) { None } else { Some(v) };
            c.frame(input.as_ref().map(core::slice::from_ref), &mut out);
            // No step larger than a sixteenth-fade's worth of the signal.
            assert!(
                (out[0] as i64 - prev as i64).abs() <= (v as i64) / 8,
                "step at {i}"
            );
            prev = out[0];
            outs.push(out[0]);
        }
        assert_eq!(outs[19], v);
        assert_eq!(outs[40], 0, "silent inside a long hole");
        assert_eq!(outs[99], v, "back to full scale");
        assert!(c.is_transparent());
    }
}
