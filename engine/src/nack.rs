//! The NACK packet: the receiver asks the sender to send some packets again.
//!
//! A NACK travels the other way on the stream's socket pair (receiver → sender). It names the
//! stream and lists runs of missing sequence numbers:
//!
//! ```text
//!  0      2   3   4           8     9     10      12                  18
//!  +------+---+---+-----------+-----+-----+-------+-------------------+----
//!  |magic |ver| n | stream id |flags| rsv | round | first seq | count | ... n runs
//!  +------+---+---+-----------+-----+-----+-------+-------------------+----
//!  then, with the AUTH flag:  | nonce (u64) | tag (16) |
//! ```
//! Fields are big-endian. `magic` is `"NK"` (data packets say `"NA"`, so neither is ever taken
//! for the other, and a version-1 data packet is unchanged), `version` is 1, `n` is
//! 1..=[`MAX_NACK_RUNS`], each run is a first sequence number (wrapping) and a count of at
//! least 1.
//!
//! * `round` numbers the receiver's requests: the copies of one NACK share it, a request made
//!   again gets a new one, so the sender can answer each request once however many copies
//!   arrive. 0 means "not numbered" (receivers before rounds wrote zeros here): every datagram
//!   is then a request of its own.
//! * `flags` bit 0 ([`NACK_FLAG_AUTH`]): an authentication trailer follows the runs, a nonce
//!   (a counter the receiver starts from its wall clock, new for every datagram, copies
//!   included) and a [`crate::auth::TAG_LEN`]-byte keyed BLAKE3 tag over everything before the
//!   tag (see [`seal_nack`]). Other flag bits and the reserved byte are written as zero and
//!   ignored.
//!
//! Parsing is total: [`Nack::new_checked`] accepts any byte string and returns either a view
//! whose accessors cannot panic, or a [`NackError`] saying what is wrong.
//!
//! Realtime contract: nothing here allocates, blocks or makes a syscall.

use crate::auth::{Key, TAG_LEN};
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
/// Flag: an authentication trailer (nonce and tag) follows the runs.
pub const NACK_FLAG_AUTH: u8 = 0x01;
/// Bytes of the authentication trailer: nonce (8) and tag.
pub const NACK_AUTH_LEN: usize = 8 + TAG_LEN;
/// Longest NACK datagram (authenticated, with every run).
pub const MAX_NACK_LEN: usize = NACK_HEADER_LEN + MAX_NACK_RUNS * NACK_RUN_LEN + NACK_AUTH_LEN;

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
        let mut expected = NACK_HEADER_LEN + n as usize * NACK_RUN_LEN;
        if h[8] & NACK_FLAG_AUTH != 0 {
            expected += NACK_AUTH_LEN;
        }
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

    /// The request this datagram is a copy of (0: not numbered).
    pub fn round(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[10], b[11]])
    }

    /// Whether the datagram carries an authentication trailer.
    pub fn is_sealed(&self) -> bool {
        self.buffer.as_ref()[8] & NACK_FLAG_AUTH != 0
    }

    /// The trailer's nonce, when sealed.
    pub fn nonce(&self) -> Option<u64> {
        let b = self.buffer.as_ref();
        if !self.is_sealed() {
            return None;
        }
        let at = b.len() - NACK_AUTH_LEN;
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[at..at + 8]);
        Some(u64::from_be_bytes(n))
    }

    /// Whether the datagram is sealed with `key`: its tag is the keyed BLAKE3 tag of everything
    /// before it (compared in constant time). An unsealed NACK is never authentic.
    pub fn is_authentic(&self, key: &Key) -> bool {
        let b = self.buffer.as_ref();
        self.is_sealed() && key.verify(&b[..b.len() - TAG_LEN], &b[b.len() - TAG_LEN..])
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

/// Writes a NACK for `stream_id` listing `runs` into `buf` (not numbered, not sealed); returns
/// its length.
pub fn emit_nack(stream_id: u32, runs: &[NackRun], buf: &mut [u8]) -> Result<usize, NackError> {
    emit_nack_round(stream_id, 0, runs, buf)
}

/// Writes a NACK for `stream_id` listing `runs` as request `round` into `buf` (not sealed);
/// returns its length.
pub fn emit_nack_round(
    stream_id: u32,
    round: u16,
    runs: &[NackRun],
    buf: &mut [u8],
) -> Result<usize, NackError> {
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
    out[8..10].fill(0);
    out[10..12].copy_from_slice(&round.to_be_bytes());
    for (r, c) in runs
        .iter()
        .zip(out[NACK_HEADER_LEN..].chunks_exact_mut(NACK_RUN_LEN))
    {
        c[0..4].copy_from_slice(&r.first.to_be_bytes());
        c[4..6].copy_from_slice(&r.count.to_be_bytes());
    }
    Ok(needed)
}

/// Seals the NACK at the start of `buf` with `key`: sets [`NACK_FLAG_AUTH`] and writes the
/// trailer (`nonce`, then the tag of everything before it). A NACK sealed before is sealed
/// again with the new nonce (each copy of a request gets its own). Returns the new length.
pub fn seal_nack(key: &Key, nonce: u64, buf: &mut [u8]) -> Result<usize, NackError> {
    let Some(h) = buf.get(..NACK_HEADER_LEN) else {
        return Err(NackError::BufferTooSmall {
            needed: NACK_HEADER_LEN,
            given: buf.len(),
        });
    };
    let n = h[3] as usize;
    if n == 0 || n > MAX_NACK_RUNS {
        return Err(if n == 0 {
            NackError::NoRuns
        } else {
            NackError::TooManyRuns(h[3])
        });
    }
    let body = NACK_HEADER_LEN + n * NACK_RUN_LEN;
    let needed = body + NACK_AUTH_LEN;
    let given = buf.len();
    let Some(out) = buf.get_mut(..needed) else {
        return Err(NackError::BufferTooSmall { needed, given });
    };
    out[8] |= NACK_FLAG_AUTH;
    out[body..body + 8].copy_from_slice(&nonce.to_be_bytes());
    let tag = key.tag(&[&out[..body + 8]]);
    out[body + 8..].copy_from_slice(&tag);
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
    fn rounds_and_seals_round_trip() {
        let runs = [NackRun { first: 7, count: 2 }];
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack_round(5, 0xBEEF, &runs, &mut buf).unwrap();
        let plain = Nack::new_checked(&buf[..n]).unwrap();
        assert_eq!(plain.round(), 0xBEEF);
        assert!(!plain.is_sealed() && plain.nonce().is_none());
        let key = Key::from_bytes([4; crate::auth::KEY_LEN]);
        assert!(!plain.is_authentic(&key), "unsealed is never authentic");
        let m = seal_nack(&key, 77, &mut buf).unwrap();
        assert_eq!(m, n + NACK_AUTH_LEN);
        let sealed = Nack::new_checked(&buf[..m]).unwrap();
        assert!(sealed.is_sealed() && sealed.is_authentic(&key));
        assert_eq!(sealed.nonce(), Some(77));
        assert_eq!((sealed.stream_id(), sealed.round()), (5, 0xBEEF));
        assert_eq!(sealed.runs().collect::<Vec<_>>(), runs);
        assert!(!sealed.is_authentic(&Key::from_bytes([5; crate::auth::KEY_LEN])));
        // Sealed again for another copy: a new nonce, a new tag, the same length.
        let first_tag = buf[m - TAG_LEN..m].to_vec();
        assert_eq!(seal_nack(&key, 78, &mut buf).unwrap(), m);
        let again = Nack::new_checked(&buf[..m]).unwrap();
        assert!(again.is_authentic(&key) && again.nonce() == Some(78));
        assert_ne!(&buf[m - TAG_LEN..m], &first_tag[..]);
        // Any bit changed anywhere breaks the tag.
        for i in 0..m {
            let mut b = buf;
            b[i] ^= 0x40;
            if let Ok(x) = Nack::new_checked(&b[..m]) {
                assert!(!x.is_authentic(&key), "byte {i}");
            }
        }
        // The sealed length without the trailer, or the trailer without the flag: errors.
        assert!(Nack::new_checked(&buf[..n]).is_err());
        let mut b = buf;
        b[8] = 0;
        assert!(Nack::new_checked(&b[..m]).is_err());
        assert_eq!(
            seal_nack(&key, 1, &mut buf[..m - 1]).unwrap_err(),
            NackError::BufferTooSmall {
                needed: m,
                given: m - 1
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
