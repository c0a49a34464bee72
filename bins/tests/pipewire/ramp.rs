//! Checking what PipeWire recorded of the virtual capture's ramp, with room for the rounding
//! of PipeWire's resampler.

/// What a check of the ramp found.
#[derive(Debug)]
pub struct RampCheck {
    /// Frames checked (from the first full ramp frame on).
    pub frames: usize,
    /// Frames equal to the ramp bit for bit.
    pub exact: usize,
    /// Frames skipped around the ramp's full-scale jumps.
    pub near_jumps: usize,
    /// Largest distance from the ramp, in steps (frames), elsewhere.
    pub worst: i32,
    /// How far the ramp moved against a count of frames (what resampling took or added).
    pub drift: i32,
}

/// The ramp of a virtual capture in S16 stereo: left = n, right = n + 32768 (mod 2^16).
/// Checks `frames` frames of `rec` from the first full ramp frame on: every frame one step on
/// from the last, within `tolerance` steps of rounding (resampling), outside ±`guard` frames of
/// the two places per 65536 frames where a channel jumps from full scale to its opposite.
pub fn check_ramp(
    rec: &[u8],
    frames: usize,
    tolerance: i32,
    guard: u16,
) -> Result<RampCheck, String> {
    let at = |k: usize| {
        let f = &rec[k * 4..k * 4 + 4];
        (
            u16::from_le_bytes([f[0], f[1]]),
            u16::from_le_bytes([f[2], f[3]]),
        )
    };
    let total = rec.len() / 4;
    // The ramp begins where 256 frames in a row are the ramp in both channels (before that:
    // silence, or one channel while the second link is being made).
    let start = (0..total.saturating_sub(256))
        .find(|&k| {
            let (l0, _) = at(k);
            (0..256u16).all(|i| {
                let (l, r) = at(k + i as usize);
                l == l0.wrapping_add(i) && r == l.wrapping_add(32_768)
            })
        })
        .ok_or("no ramp in the recording")?;
    if total - start < frames {
        return Err(format!(
            "the ramp starts at frame {start} of {total}: fewer than {frames} frames after it"
        ));
    }
    let (l0, _) = at(start);
    let mut c = RampCheck {
        frames,
        exact: 0,
        near_jumps: 0,
        worst: 0,
        drift: 0,
    };
    for k in 0..frames {
        let want = l0.wrapping_add(k as u16).wrapping_add(c.drift as u16);
        let (l, r) = at(start + k);
        // Distance of the frame index from a jump: left jumps at 32768, right at 0.
        let near = |n: u16, jump: u16| n.wrapping_sub(jump).min(jump.wrapping_sub(n)) <= guard;
        if near(want, 32_768) || near(want, 0) {
            c.near_jumps += 1;
            continue;
        }
        if (l, r) == (want, want.wrapping_add(32_768)) {
            c.exact += 1;
            continue;
        }
        let dl = l.wrapping_sub(want) as i16 as i32;
        let dr = r.wrapping_sub(want.wrapping_add(32_768)) as i16 as i32;
        if dl.abs() > tolerance || dr.abs() > tolerance {
            return Err(format!(
                "frame {} (ramp frame {k}): ({l}, {r}) where ({want}, {}) was due: a gap, a jump or a wrong sample",
                start + k,
                want.wrapping_add(32_768)
            ));
        }
        c.worst = c.worst.max(dl.abs()).max(dr.abs());
        // Resampling moves the ramp slowly: follow it.
        if dl == dr {
            c.drift += dl;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ramp check itself: it takes rounding, and finds a lost packet and a wrong sample.
    #[test]
    fn the_ramp_check_finds_gaps_and_takes_rounding() {
        let ramp = |n: std::ops::Range<u32>| -> Vec<u8> {
            n.flat_map(|n| {
                let l = n as u16;
                [l.to_le_bytes(), l.wrapping_add(32_768).to_le_bytes()].concat()
            })
            .collect()
        };
        let mut rec = vec![0u8; 4000];
        rec.extend(ramp(1000..200_000));
        let c = check_ramp(&rec, 150_000, 1, 64).unwrap();
        assert_eq!(c.exact + c.near_jumps, c.frames);
        // Rounding: one frame one step off in both channels.
        let mut off = rec.clone();
        let k = 4000 + 4 * 5000;
        let v: u16 = 1000 + 5000 - 1; // the ramp's 6000, rounded down
        off[k..k + 4].copy_from_slice(&[v.to_le_bytes(), (v + 32_768).to_le_bytes()].concat());
        assert!(check_ramp(&off, 150_000, 1, 64).is_ok());
        // A lost packet (256 frames).
        let mut gap = vec![0u8; 4000];
        gap.extend(ramp(1000..50_000));
        gap.extend(ramp(50_256..200_000));
        let e = check_ramp(&gap, 150_000, 1, 64).unwrap_err();
        assert!(e.contains("a gap"), "{e}");
        // A wrong sample.
        let mut bad = rec.clone();
        bad[4000 + 4 * 9000] ^= 0x40;
        assert!(check_ramp(&bad, 150_000, 1, 64).is_err());
    }
}
