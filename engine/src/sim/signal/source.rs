//! The test signals: what the virtual capture device hears ([`SourceKind`]), the frame-index
//! ramp every frame of which names its own position ([`ramp_sample`]), and the [`Source`] that
//! writes them.
//!
//! A [`Source`] holds no buffer: `fill` writes into the caller's and allocates nothing.

use crate::format::{SampleFormat, StreamFormat};
use crate::rng::mix64;

/// What the virtual capture device hears.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceKind {
    /// Frame-index ramps (bit-exact checking).
    Ramp,
    /// A sine tone at the given frequency, half scale.
    Sine {
        /// Hz.
        freq_hz: f64,
    },
    /// Two sine tones, each at quarter scale.
    TwoTone {
        /// The first tone, Hz (wow & flutter follows it).
        f1_hz: f64,
        /// The second tone, Hz.
        f2_hz: f64,
    },
}

/// The default sine, Hz.
pub const DEFAULT_SINE_HZ: f64 = 997.0;
/// The default two-tone pair, Hz.
pub const DEFAULT_TWO_TONE_HZ: (f64, f64) = (18_000.0, 19_000.0);
/// Closest two tones may be, Hz: each needs its own ±20 Hz exclusion band and a clean fit.
pub const MIN_TONE_SPACING_HZ: f64 = 100.0;

/// The accepted forms of a source, for messages.
pub const SOURCE_FORMS: &str =
    "ramp, sine[:HZ] (e.g. sine:997) or twotone[:F1,F2] (e.g. twotone:18000,19000)";

impl SourceKind {
    /// Parses `ramp`, `sine`, `sine:HZ`, `twotone` or `twotone:F1,F2`; the error names the
    /// value and the accepted forms.
    pub fn from_spec(s: &str) -> Result<SourceKind, String> {
        let t = s.trim();
        let bad = |why: &str| format!("bad source {s:?}{why}: use {SOURCE_FORMS}");
        let hz = |v: &str| -> Result<f64, String> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| bad(&format!(" ({v:?} is not a frequency in Hz)")))
        };
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("ramp", None) => Ok(SourceKind::Ramp),
            ("sine", None) => Ok(SourceKind::Sine {
                freq_hz: DEFAULT_SINE_HZ,
            }),
            ("sine", Some(a)) => Ok(SourceKind::Sine { freq_hz: hz(a)? }),
            ("twotone", None) => Ok(SourceKind::TwoTone {
                f1_hz: DEFAULT_TWO_TONE_HZ.0,
                f2_hz: DEFAULT_TWO_TONE_HZ.1,
            }),
            ("twotone", Some(a)) => {
                let (f1, f2) = a
                    .split_once(',')
                    .ok_or_else(|| bad(" (give two frequencies, F1,F2)"))?;
                Ok(SourceKind::TwoTone {
                    f1_hz: hz(f1)?,
                    f2_hz: hz(f2)?,
                })
            }
            _ => Err(bad("")),
        }
    }

    /// The source as [`from_spec`](Self::from_spec) reads it, e.g. `sine:997`.
    pub fn spec(&self) -> String {
        match *self {
            SourceKind::Ramp => "ramp".into(),
            SourceKind::Sine { freq_hz } => format!("sine:{freq_hz}"),
            SourceKind::TwoTone { f1_hz, f2_hz } => format!("twotone:{f1_hz},{f2_hz}"),
        }
    }

    /// Whether the source is one or two tones (what a fidelity analyzer measures).
    pub fn is_tonal(&self) -> bool {
        !matches!(self, SourceKind::Ramp)
    }

    /// Whether the tones can be measured at `rate`: each above 20 Hz and at least 20 Hz under
    /// half the rate (the analyzer's exclusion bands), two tones at least
    /// [`MIN_TONE_SPACING_HZ`] apart.
    pub fn check(&self, rate: u32) -> Result<(), String> {
        let top = rate as f64 / 2.0 - 20.0;
        let ok = |f: f64| f.is_finite() && f > 20.0 && f < top;
        let out_of_range = || {
            format!(
                "source {}: a tone must be above 20 Hz and below {top} Hz at {rate} Hz",
                self.spec()
            )
        };
        match *self {
            SourceKind::Ramp => Ok(()),
            SourceKind::Sine { freq_hz } if !ok(freq_hz) => Err(out_of_range()),
            SourceKind::Sine { .. } => Ok(()),
            SourceKind::TwoTone { f1_hz, f2_hz } if !ok(f1_hz) || !ok(f2_hz) => Err(out_of_range()),
            SourceKind::TwoTone { f1_hz, f2_hz } if (f1_hz - f2_hz).abs() < MIN_TONE_SPACING_HZ => {
                Err(format!(
                    "source {}: the two tones must be at least {MIN_TONE_SPACING_HZ} Hz apart",
                    self.spec()
                ))
            }
            SourceKind::TwoTone { .. } => Ok(()),
        }
    }
}

/// Top-16-bit offset of channel `c`'s ramp.
#[inline]
fn ramp_offset(c: usize) -> u64 {
    match c {
        0 => 0,
        1 => 32_768,
        _ => (c as u64 * 40_503 + 8_192) & 0xFFFF,
    }
}

/// Low bits of frame `n` (below the top 16), shared by all channels; they repeat every ramp
/// lap, so a frame can be checked without knowing which lap it is from.
#[inline]
fn low_bits(sample: SampleFormat, n: u64) -> i32 {
    match sample {
        SampleFormat::S16Le => 0,
        SampleFormat::S24_3Le => ((mix64(n & 0xFFFF) & 0xFF) << 8) as i32,
        SampleFormat::S32Le => (mix64(n & 0xFFFF) & 0xFFFF) as i32,
    }
}

/// The left-justified sample of channel `c` of ramp frame `n`.
#[inline]
pub fn ramp_sample(sample: SampleFormat, n: u64, c: usize) -> i32 {
    let top = ((n + ramp_offset(c)) & 0xFFFF) as u16 as i16 as i32;
    (top << 16) | low_bits(sample, n)
}

/// Generates the source signal in the wire format.
#[derive(Clone, Debug)]
pub struct Source {
    kind: SourceKind,
    format: StreamFormat,
}

impl Source {
    /// A source of `kind` in `format`.
    pub fn new(kind: SourceKind, format: StreamFormat) -> Source {
        Source { kind, format }
    }

    /// Writes frames `first..` (device frame counter) into `out`, whole frames.
    pub fn fill(&self, first: u64, out: &mut [u8]) {
        let f = self.format;
        let ch = f.channels as usize;
        let fb = f.frame_bytes();
        let sb = f.sample.bytes();
        match self.kind {
            SourceKind::Ramp if f.sample == SampleFormat::S16Le && ch == 2 => {
                for (k, frame) in out.chunks_exact_mut(4).enumerate() {
                    let n = first + k as u64;
                    frame[..2].copy_from_slice(&(n as u16).to_le_bytes());
                    frame[2..].copy_from_slice(&((n + 32_768) as u16).to_le_bytes());
                }
            }
            SourceKind::Ramp => {
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = first + k as u64;
                    for c in 0..ch {
                        f.sample
                            .encode(ramp_sample(f.sample, n, c), &mut frame[c * sb..]);
                    }
                }
            }
            SourceKind::Sine { freq_hz } => {
                let w = core::f64::consts::TAU * freq_hz / f.rate as f64;
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = first + k as u64;
                    // Phase from n mod one cycle-ish window keeps precision over days.
                    let v = ((w * n as f64).sin() * 0.5 * i32::MAX as f64) as i32;
                    for c in 0..ch {
                        f.sample.encode(v, &mut frame[c * sb..]);
                    }
                }
            }
            SourceKind::TwoTone { f1_hz, f2_hz } => {
                let w1 = core::f64::consts::TAU * f1_hz / f.rate as f64;
                let w2 = core::f64::consts::TAU * f2_hz / f.rate as f64;
                for (k, frame) in out.chunks_exact_mut(fb).enumerate() {
                    let n = (first + k as u64) as f64;
                    let x = 0.25 * ((w1 * n).sin() + (w2 * n).sin());
                    let v = (x * i32::MAX as f64) as i32;
                    for c in 0..ch {
                        f.sample.encode(v, &mut frame[c * sb..]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(sample: SampleFormat, ch: u8) -> StreamFormat {
        StreamFormat::new(48_000, ch, sample).unwrap()
    }

    #[test]
    fn sources_parse_and_bad_ones_are_named() {
        assert_eq!(SourceKind::from_spec("ramp"), Ok(SourceKind::Ramp));
        assert_eq!(
            SourceKind::from_spec("sine"),
            Ok(SourceKind::Sine { freq_hz: 997.0 })
        );
        assert_eq!(
            SourceKind::from_spec("sine:440"),
            Ok(SourceKind::Sine { freq_hz: 440.0 })
        );
        let two = SourceKind::from_spec("twotone:997,1997").unwrap();
        assert_eq!(
            two,
            SourceKind::TwoTone {
                f1_hz: 997.0,
                f2_hz: 1997.0
            }
        );
        assert_eq!(SourceKind::from_spec(&two.spec()), Ok(two));
        assert_eq!(
            SourceKind::from_spec("twotone"),
            Ok(SourceKind::TwoTone {
                f1_hz: 18_000.0,
                f2_hz: 19_000.0
            })
        );
        for bad in [
            "noise",
            "sine:",
            "sine:abc",
            "sine:-5",
            "sine:nan",
            "twotone:5",
            "twotone:1,x",
            "ramp:3",
            "",
        ] {
            let e = SourceKind::from_spec(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("twotone[:F1,F2]"),
                "{bad}: {e}"
            );
        }
        assert!(SourceKind::Sine { freq_hz: 997.0 }.check(48_000).is_ok());
        assert!(SourceKind::Sine { freq_hz: 10.0 }.check(48_000).is_err());
        assert!(
            SourceKind::Sine { freq_hz: 23_990.0 }
                .check(48_000)
                .is_err()
        );
        let e = SourceKind::from_spec("twotone")
            .unwrap()
            .check(8_000)
            .unwrap_err();
        assert!(
            e.contains("twotone:18000,19000") && e.contains("3980"),
            "{e}"
        );
        let e = SourceKind::from_spec("twotone:1000,1050")
            .unwrap()
            .check(48_000)
            .unwrap_err();
        assert!(e.contains("100 Hz apart"), "{e}");
    }

    #[test]
    fn two_tones_stay_within_half_scale() {
        let f = fmt(SampleFormat::S32Le, 2);
        let src = Source::new(SourceKind::from_spec("twotone").unwrap(), f);
        let mut buf = vec![0u8; 48_000 * f.frame_bytes()];
        src.fill(0, &mut buf);
        let peak = buf
            .chunks_exact(4)
            .map(|b| (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / i32::MAX as f64).abs())
            .fold(0.0, f64::max);
        assert!((0.45..=0.5).contains(&peak), "{peak}");
    }
}
