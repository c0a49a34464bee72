//! Stream formats and the sample codec.
//!
//! Samples travel as little-endian interleaved PCM, exactly as the capture device produced them.
//! Inside the receiver every sample is held as a left-justified `i32` (an S16 sample `s` is
//! `s << 16`, an S24 sample `s << 8`, an S32 sample as is): arithmetic (concealment fades,
//! crossfades, resampling) is then format-independent, and the conversion back is exact, so a
//! path that does no arithmetic stays bit-exact.
//!
//! Realtime contract: nothing here allocates, blocks or makes a syscall.

use core::fmt;

/// Sample encodings carried on the wire (all little-endian, interleaved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 16-bit signed.
    S16Le,
    /// 24-bit signed, packed in 3 bytes.
    S24_3Le,
    /// 32-bit signed.
    S32Le,
}

impl SampleFormat {
    /// All formats, in wire-code order.
    pub const ALL: [SampleFormat; 3] = [Self::S16Le, Self::S24_3Le, Self::S32Le];

    /// Bytes one sample takes.
    pub const fn bytes(self) -> usize {
        match self {
            Self::S16Le => 2,
            Self::S24_3Le => 3,
            Self::S32Le => 4,
        }
    }

    /// The code used in the packet header.
    pub const fn code(self) -> u8 {
        match self {
            Self::S16Le => 1,
            Self::S24_3Le => 2,
            Self::S32Le => 3,
        }
    }

    /// The format for a header code, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::S16Le),
            2 => Some(Self::S24_3Le),
            3 => Some(Self::S32Le),
            _ => None,
        }
    }

    /// The ALSA-style name (`S16_LE`, `S24_3LE`, `S32_LE`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::S16Le => "S16_LE",
            Self::S24_3Le => "S24_3LE",
            Self::S32Le => "S32_LE",
        }
    }

    /// Parses an ALSA-style name, case-insensitively (`s16_le`, `S24_3LE`, `s32`).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(n) || f.name()[..3].eq_ignore_ascii_case(n))
    }

    /// Decodes one sample at the start of `b` into a left-justified `i32`.
    ///
    /// `b` must hold at least [`bytes`](Self::bytes) bytes.
    #[inline(always)]
    pub fn decode(self, b: &[u8]) -> i32 {
        match self {
            Self::S16Le => (i16::from_le_bytes([b[0], b[1]]) as i32) << 16,
            Self::S24_3Le => i32::from_le_bytes([0, b[0], b[1], b[2]]),
            Self::S32Le => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Encodes a left-justified sample into the start of `b`, rounding to nearest (ties away
    /// from zero) and saturating. Exact for values that came from [`decode`](Self::decode).
    #[inline(always)]
    pub fn encode(self, v: i32, b: &mut [u8]) {
        match self {
            Self::S16Le => {
                let s = round_shift(v, 16);
                b[..2].copy_from_slice(&(s as i16).to_le_bytes());
            }
            Self::S24_3Le => {
                let s = round_shift(v, 8);
                let le = s.to_le_bytes();
                b[..3].copy_from_slice(&le[..3]);
            }
            Self::S32Le => b[..4].copy_from_slice(&v.to_le_bytes()),
        }
    }

    /// Decodes interleaved bytes into samples; `out.len()` samples are read.
    pub fn decode_slice(self, bytes: &[u8], out: &mut [i32]) {
        let n = self.bytes();
        match self {
            // Specialised loops: the common format runs without the per-sample match.
            Self::S16Le => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = (i16::from_le_bytes([c[0], c[1]]) as i32) << 16;
                }
            }
            _ => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(n)) {
                    *o = self.decode(c);
                }
            }
        }
    }

    /// Encodes samples into interleaved bytes; `samples.len()` samples are written.
    pub fn encode_slice(self, samples: &[i32], bytes: &mut [u8]) {
        let n = self.bytes();
        match self {
            Self::S16Le => {
                for (s, c) in samples.iter().zip(bytes.chunks_exact_mut(2)) {
                    let v = round_shift(*s, 16) as i16;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                for (s, c) in samples.iter().zip(bytes.chunks_exact_mut(n)) {
                    self.encode(*s, c);
                }
            }
        }
    }
}

/// `v >> shift`, rounded to nearest and saturated to the narrower range.
#[inline(always)]
fn round_shift(v: i32, shift: u32) -> i32 {
    let half = 1i64 << (shift - 1);
    let r = (v as i64 + half) >> shift;
    let max = (1i64 << (31 - shift)) - 1;
    r.clamp(-max - 1, max) as i32
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Lowest sample rate a stream may have.
pub const MIN_RATE: u32 = 8_000;
/// Highest sample rate a stream may have.
pub const MAX_RATE: u32 = 384_000;
/// Most channels a stream may have.
pub const MAX_CHANNELS: u8 = 32;

/// What a stream carries: rate, channel count and sample encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamFormat {
    /// Frames per second.
    pub rate: u32,
    /// Samples per frame.
    pub channels: u8,
    /// Encoding of each sample.
    pub sample: SampleFormat,
}

impl StreamFormat {
    /// The old pipeline's format and our default: 44.1 kHz, stereo, S16_LE.
    pub const DEFAULT: StreamFormat = StreamFormat {
        rate: 44_100,
        channels: 2,
        sample: SampleFormat::S16Le,
    };

    /// A format, or `None` when rate or channel count is out of range.
    pub const fn new(rate: u32, channels: u8, sample: SampleFormat) -> Option<Self> {
        if rate < MIN_RATE || rate > MAX_RATE || channels == 0 || channels > MAX_CHANNELS {
            None
        } else {
            Some(StreamFormat {
                rate,
                channels,
                sample,
            })
        }
    }

    /// Bytes of one interleaved frame.
    pub const fn frame_bytes(&self) -> usize {
        self.channels as usize * self.sample.bytes()
    }

    /// Frames in `ms` milliseconds (rounded to nearest).
    pub fn frames_for_ms(&self, ms: f64) -> usize {
        (ms * self.rate as f64 / 1000.0).round().max(0.0) as usize
    }

    /// Milliseconds that `frames` frames last.
    pub fn ms_for_frames(&self, frames: f64) -> f64 {
        frames * 1000.0 / self.rate as f64
    }
}

impl Default for StreamFormat {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz, {} ch, {}", self.rate, self.channels, self.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact_for_every_format() {
        for f in SampleFormat::ALL {
            let n = f.bytes();
            let mut b = [0u8; 4];
            let mut back = [0u8; 4];
            for seed in 0u32..5000 {
                let x = seed.wrapping_mul(2_654_435_761);
                b[..n].copy_from_slice(&x.to_le_bytes()[..n]);
                let v = f.decode(&b);
                f.encode(v, &mut back);
                assert_eq!(b[..n], back[..n], "{f} sample {x:#x}");
            }
        }
    }

    #[test]
    fn encode_rounds_and_saturates() {
        let mut b = [0u8; 2];
        SampleFormat::S16Le.encode(i32::MAX, &mut b);
        assert_eq!(i16::from_le_bytes(b), i16::MAX);
        SampleFormat::S16Le.encode(i32::MIN, &mut b);
        assert_eq!(i16::from_le_bytes(b), i16::MIN);
        SampleFormat::S16Le.encode((5 << 16) + (1 << 15), &mut b);
        assert_eq!(i16::from_le_bytes(b), 6);
    }

    #[test]
    fn names_parse() {
        assert_eq!(SampleFormat::from_name("s16_le"), Some(SampleFormat::S16Le));
        assert_eq!(
            SampleFormat::from_name("S24_3LE"),
            Some(SampleFormat::S24_3Le)
        );
        assert_eq!(SampleFormat::from_name("s32"), Some(SampleFormat::S32Le));
        assert_eq!(SampleFormat::from_name("U8"), None);
        for f in SampleFormat::ALL {
            assert_eq!(SampleFormat::from_code(f.code()), Some(f));
        }
    }

    #[test]
    fn slices_match_single_samples() {
        for f in SampleFormat::ALL {
            let bytes: Vec<u8> = (0..f.bytes() * 6).map(|i| (i * 37 + 11) as u8).collect();
            let mut s = [0i32; 6];
            f.decode_slice(&bytes, &mut s);
            let mut back = vec![0u8; bytes.len()];
            f.encode_slice(&s, &mut back);
            assert_eq!(bytes, back);
        }
    }
}
