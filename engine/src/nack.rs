//! The NACK packet: the receiver asks the sender to send some packets again.
//!
//! A NACK travels the other way on the stream's socket pair (receiver → sender). It names the
//! stream and lists runs of missing sequence numbers:
//!
//! ```text
//!  0      2   3   4           8           12                  18
//!  +------+---+---+-----------+-----------+-------------------+----
//!  |magic |ver| n | stream id | reserved  | first seq | count | ... n runs
//!  +------+---+---+-----------+-----------+-------------------+----
//! ```
//! Fields are big-endian. `magic` is `"NK"` (data packets say `"NA"`, so neither is ever taken
//! for the other, and a version-1 data packet is unchanged), `version` is 1, `n` is
//! 1..=[`MAX_NACK_RUNS`], each run is a first sequence number (wrapping) and a count of at
//! least 1. `reserved` is emitted as zero and ignored.
//!
//! Parsing is total: [`Nack::new_checked`] accepts any byte string and returns either a view
//! whose accessors cannot panic, or a [`NackError`] saying what is wrong.
//!
//! Realtime contract: nothing here allocates, blocks or makes a syscall.

use core::fmt;

/// `"NK"`.
pub const NACK_MAGIC: u16 = 0x4E4B;
/// The NACK version this code speaks.
pub const NACK_VERSION: u8 = 1;
/// Bytes before the first run.
pub const NACK_HEADER_LEN: usize = 12;
/// Bytes per run.
pub const NACK_RUN_LEN: usize = 6;
/// Most runs one NACK carries.
pub const MAX_NACK_RUNS: usize = 32;
/// Longest NACK datagram.
pub const MAX_NACK_LEN: usize = NACK_HEADER_LEN + MAX_NACK_RUNS * NACK_RUN_LEN;

/// A run of consecutive missing sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NackRun {
    /// First sequence number of the run.
    pub first: u32,
    /// Packets in the run (at least 1).
    pub count: u16,
}

impl NackRun {
    /// The sequence numbers of the run, in order (wrapping past `u32::MAX`).
    pub fn seqs(self) -> impl Iterator<Item = u32> {
        (0..self.count as u32).map(move |i| self.first.wrapping_add(i))
    }
}

/// Why a byte string is not a NACK, or a NACK cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NackError {
    /// Shorter than a NACK header.
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not a NACK.
    BadMagic(u16),
    /// A version we do not speak.
    UnsupportedVersion(u8),
    /// A NACK with no run.
    NoRuns,
    /// More runs than [`MAX_NACK_RUNS`].
    TooManyRuns(u8),
    /// A run of zero packets.
    EmptyRun {
        /// Index of the run.
        index: usize,
    },
    /// The datagram length does not match the run count.
    LengthMismatch {
        /// Length the run count announces.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// The buffer given to [`emit_nack`] is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for NackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => write!(
                f,
                "truncated NACK: {len} bytes, a NACK header is {NACK_HEADER_LEN}"
            ),
            Self::BadMagic(m) => write!(f, "not a netaudio NACK (magic {m:#06x})"),
            Self::UnsupportedVersion(v) => {
                write!(f, "NACK version {v}, this build speaks {NACK_VERSION}")
            }
            Self::NoRuns => f.write_str("NACK lists no packet"),
            Self::TooManyRuns(n) => write!(f, "NACK with {n} runs, at most {MAX_NACK_RUNS}"),
            Self::EmptyRun { index } => write!(f, "NACK run {index} has a count of 0"),
            Self::LengthMismatch { expected, actual } => {
                write!(
                    f,
                    "NACK length {actual}, its run count announces {expected}"
                )
            }
            Self::BufferTooSmall { needed, given } => {
                write!(f, "NACK needs {needed} bytes, the buffer holds {given}")
            }
        }
    }
}

impl std::error::Error for NackError {}

/// A checked view of one NACK datagram over a buffer the caller owns.
#[derive(Clone, Copy, Debug)]
pub struct Nack<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Nack<T> {
    /// Checks that `buffer` is exactly one valid NACK; after this no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Nack<T>, NackError> {
        let b = buffer.as_ref();
        let Some(h) = b.get(..NACK_HEADER_LEN) else {
            return Err(NackError::Truncated { len: b.len() });
        };
        let magic = u16::from_be_bytes([h[0], h[1]]);
        if magic != NACK_MAGIC {
            return Err(NackError::BadMagic(magic));
        }
        if h[2] != NACK_VERSION {
            return Err(NackError::UnsupportedVersion(h[2]));
        }
        let n = h[3];
        if n == 0 {
            return Err(NackError::NoRuns);
        }
        if n as usize > MAX_NACK_RUNS {
            return Err(NackError::TooManyRuns(n));
        }
        let expected = NACK_HEADER_LEN + n as usize * NACK_RUN_LEN;
        if b.len() != expected {
            return Err(NackError::LengthMismatch {
                expected,
                actual: b.len(),
            });
        }
        let nack = Nack { buffer };
        if let Some(index) = nack.runs().position(|r| r.count == 0) {
            return Err(NackError::EmptyRun { index });
        }
        Ok(nack)
    }

    /// The stream the runs belong to.
    pub fn stream_id(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The runs of missing packets.
    pub fn runs(&self) -> impl Iterator<Item = NackRun> + '_ {
        let b = self.buffer.as_ref();
        b[NACK_HEADER_LEN..]
            .chunks_exact(NACK_RUN_LEN)
            .take(b[3] as usize)
            .map(|c| NackRun {
                first: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                count: u16::from_be_bytes([c[4], c[5]]),
            })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// Writes a NACK for `stream_id` listing `runs` into `buf`; returns its length.
pub fn emit_nack(stream_id: u32, runs: &[NackRun], buf: &mut [u8]) -> Result<usize, NackError> {
    if runs.is_empty() {
        return Err(NackError::NoRuns);
    }
    if runs.len() > MAX_NACK_RUNS {
        return Err(NackError::TooManyRuns(runs.len().min(255) as u8));
    }
    if let Some(index) = runs.iter().position(|r| r.count == 0) {
        return Err(NackError::EmptyRun { index });
    }
    let needed = NACK_HEADER_LEN + runs.len() * NACK_RUN_LEN;
    let given = buf.len();
    let Some(out) = buf.get_mut(..needed) else {
        return Err(NackError::BufferTooSmall { needed, given });
    };
    out[0..2].copy_from_slice(&NACK_MAGIC.to_be_bytes());
    out[2] = NACK_VERSION;
    out[3] = runs.len() as u8;
    out[4..8].copy_from_slice(&stream_id.to_be_bytes());
    out[8..12].fill(0);
    for (r, c) in runs
        .iter()
        .zip(out[NACK_HEADER_LEN..].chunks_exact_mut(NACK_RUN_LEN))
    {
        c[0..4].copy_from_slice(&r.first.to_be_bytes());
        c[4..6].copy_from_slice(&r.count.to_be_bytes());
    }
    Ok(needed)
}

/// Whether a datagram looks like a NACK (its first two bytes are the NACK magic); a cheap test
/// to tell NACKs from data packets before parsing either.
pub fn is_nack(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == NACK_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips() {
        let runs = [
            NackRun {
                first: u32::MAX,
                count: 3,
            },
            NackRun {
                first: 10,
                count: 1,
            },
        ];
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(0xDEAD_BEEF, &runs, &mut buf).unwrap();
        assert_eq!(n, NACK_HEADER_LEN + 2 * NACK_RUN_LEN);
        assert!(is_nack(&buf[..n]));
        let nack = Nack::new_checked(&buf[..n]).unwrap();
        assert_eq!(nack.stream_id(), 0xDEAD_BEEF);
        let got: Vec<NackRun> = nack.runs().collect();
        assert_eq!(got, runs);
        let seqs: Vec<u32> = got[0].seqs().collect();
        assert_eq!(
            seqs,
            vec![u32::MAX, 0, 1],
            "runs wrap like sequence numbers"
        );
    }

    #[test]
    fn rejects_with_typed_errors() {
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(1, &[NackRun { first: 5, count: 2 }], &mut buf).unwrap();
        let good = buf[..n].to_vec();
        assert_eq!(
            Nack::new_checked(&good[..5]).unwrap_err(),
            NackError::Truncated { len: 5 }
        );
        let mut b = good.clone();
        b[1] = b'A';
        assert_eq!(
            Nack::new_checked(&b[..]).unwrap_err(),
            NackError::BadMagic(0x4E41)
        );
        let mut b = good.clone();
        b[2] = 2;
        assert_eq!(
            Nack::new_checked(&b[..]).unwrap_err(),
            NackError::UnsupportedVersion(2)
        );
        let mut b = good.clone();
        b[3] = 0;
        assert_eq!(Nack::new_checked(&b[..]).unwrap_err(), NackError::NoRuns);
        let mut b = good.clone();
        b[3] = 200;
        assert_eq!(
            Nack::new_checked(&b[..]).unwrap_err(),
            NackError::TooManyRuns(200)
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            Nack::new_checked(&b[..]).unwrap_err(),
            NackError::LengthMismatch {
                expected: n,
                actual: n + 1
            }
        );
        let mut b = good.clone();
        b[16..18].fill(0);
        assert_eq!(
            Nack::new_checked(&b[..]).unwrap_err(),
            NackError::EmptyRun { index: 0 }
        );
        assert_eq!(
            emit_nack(1, &[NackRun { first: 0, count: 1 }], &mut [0u8; 4]).unwrap_err(),
            NackError::BufferTooSmall {
                needed: 18,
                given: 4
            }
        );
    }

    #[test]
    fn a_data_packet_is_not_a_nack() {
        let h = crate::wire::PacketHeader {
            flags: crate::wire::Flags::default(),
            stream_id: 1,
            seq: 2,
            first_frame: 3,
            format: crate::format::StreamFormat::new(48_000, 2, crate::SampleFormat::S16Le)
                .unwrap(),
            frames: 4,
            ext_len: 0,
            tag_len: 0,
        };
        let bytes = h.to_bytes();
        assert!(!is_nack(&bytes));
        assert!(matches!(
            Nack::new_checked(&bytes[..]),
            Err(NackError::BadMagic(_))
        ));
    }
}
