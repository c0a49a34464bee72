//! The time-exchange datagram ("TS"): a receiver's request and the sender's response.
//!
//! ```text
//!  0      2   3    4    5    6     8            12               20                        36
//!  +------+---+----+----+----+-----+------------+----------------+------------------------+
//!  |magic |ver|kind|flg |rflg| seq | receiver id|       t1       | request: report, padding|
//!  +------+---+----+----+----+-----+------------+----------------+ response: t2, t3        |
//!                                                                 +------------------------+
//!  [ tag (16), when flg has AUTH ]
//! ```
//! Big-endian. `magic` is `"TS"`, `version` 1, `kind` 1 (request) or 2 (response).
//!
//! * **Request** (receiver → sender): the receiver's id (random for each run of a receiver),
//!   the exchange's sequence number, `t1` (the receiver's clock when it sent the request, ns)
//!   and a report for the sender's status: `rflg` ([`REPORT_LOCKED`], [`REPORT_PLAYING`]),
//!   the receiver's last presentation error (i32 µs at 20..24, `i32::MIN` when unknown) and
//!   its clock model's error estimate (u32 ns at 24..28). Bytes 28..36 are zero padding: a
//!   request is as long as its response, so a responder sends back no more than it got.
//! * **Response** (sender → that receiver, unicast): id, sequence number and `t1` echoed,
//!   `t2` (the sender's clock when the request arrived, ns, at 20..28) and `t3` (its clock just
//!   before the response left, at 28..36).
//!
//! With a key the datagram carries [`FLAG_AUTH`] and a 16-byte tag: keyed BLAKE3 (the stream's
//! key) over the 36 bytes before it. No nonce is needed, unlike a NACK's trailer: `t1` is a new
//! nanosecond reading of a monotonic clock in every request, and a response counts only for
//! the one outstanding request whose `seq` and `t1` it echoes, once.
//!
//! Parsing is total: [`TimePacket::parse`] accepts any byte string and returns a packet or a
//! [`TsError`] saying what is wrong.
//!
//! Realtime contract: nothing here allocates, blocks or makes a syscall.

use crate::auth::{Key, TAG_LEN};
use core::fmt;

/// `"TS"`.
pub const TS_MAGIC: u16 = 0x5453;
/// The time-exchange version this code speaks.
pub const TS_VERSION: u8 = 1;
/// Bytes of a request or a response without the tag.
pub const TS_BODY_LEN: usize = 36;
/// Longest time-exchange datagram (with a tag).
pub const MAX_TS_LEN: usize = TS_BODY_LEN + TAG_LEN;
/// Flag: a tag follows the body.
pub const FLAG_AUTH: u8 = 0x01;
/// Report flag: the receiver's clock model is locked.
pub const REPORT_LOCKED: u8 = 0x01;
/// Report flag: the receiver is playing the stream.
pub const REPORT_PLAYING: u8 = 0x02;

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: usize = 4;
    pub const REPORT_FLAGS: usize = 5;
    pub const SEQ: Range<usize> = 6..8;
    pub const RECEIVER: Range<usize> = 8..12;
    pub const T1: Range<usize> = 12..20;
    pub const PRESENTATION: Range<usize> = 20..24;
    pub const MODEL_ERROR: Range<usize> = 24..28;
    pub const PADDING: Range<usize> = 28..36;
    pub const T2: Range<usize> = 20..28;
    pub const T3: Range<usize> = 28..36;
}

/// Why a byte string is not a time-exchange datagram, or one cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TsError {
    /// Shorter than a body.
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not a time-exchange datagram.
    BadMagic(u16),
    /// A version we do not speak.
    UnsupportedVersion(u8),
    /// Neither a request nor a response.
    BadKind(u8),
    /// The datagram length does not match its flags.
    LengthMismatch {
        /// Length the flags announce.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// The buffer to write into is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for TsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => write!(
                f,
                "truncated time exchange: {len} bytes, one is at least {TS_BODY_LEN}"
            ),
            Self::BadMagic(m) => write!(f, "not a netaudio time exchange (magic {m:#06x})"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "time-exchange version {v}, this build speaks {TS_VERSION}"
            ),
            Self::BadKind(k) => write!(f, "time-exchange kind {k}, neither request nor response"),
            Self::LengthMismatch { expected, actual } => write!(
                f,
                "time-exchange length {actual}, its flags announce {expected}"
            ),
            Self::BufferTooSmall { needed, given } => write!(
                f,
                "time exchange needs {needed} bytes, the buffer holds {given}"
            ),
        }
    }
}

impl std::error::Error for TsError {}

/// What a receiver tells its sender with each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Report {
    /// Its last presentation error, µs (positive: late), when known.
    pub presentation_error_us: Option<i32>,
    /// Its clock model's error estimate, ns (saturated).
    pub model_error_ns: u32,
    /// [`REPORT_LOCKED`], [`REPORT_PLAYING`]; other bits are kept as they come.
    pub flags: u8,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            presentation_error_us: None,
            model_error_ns: u32::MAX,
            flags: 0,
        }
    }
}

/// A receiver's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRequest {
    /// The receiver (random for each run).
    pub receiver_id: u32,
    /// The exchange's sequence number.
    pub seq: u16,
    /// The receiver's clock when it sent the request, ns.
    pub t1: u64,
    /// The receiver's report.
    pub report: Report,
}

/// The sender's response to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeResponse {
    /// The requesting receiver.
    pub receiver_id: u32,
    /// The request's sequence number.
    pub seq: u16,
    /// The request's `t1`, echoed.
    pub t1: u64,
    /// The sender's clock when the request arrived, ns.
    pub t2: u64,
    /// The sender's clock just before the response left, ns.
    pub t3: u64,
}

/// A parsed time-exchange datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimePacket {
    /// Receiver → sender.
    Request(TimeRequest),
    /// Sender → receiver.
    Response(TimeResponse),
}

fn be_u16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn be_u32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let s = r.start;
    u32::from_be_bytes([b[s], b[s + 1], b[s + 2], b[s + 3]])
}

fn be_u64(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[r]);
    u64::from_be_bytes(x)
}

impl TimePacket {
    /// Checks that `bytes` is exactly one time-exchange datagram and decodes it (the tag, if
    /// any, is not checked here: see [`is_authentic`]).
    pub fn parse(bytes: &[u8]) -> Result<TimePacket, TsError> {
        let Some(b) = bytes.get(..TS_BODY_LEN) else {
            return Err(TsError::Truncated { len: bytes.len() });
        };
        let magic = be_u16(b, field::MAGIC);
        if magic != TS_MAGIC {
            return Err(TsError::BadMagic(magic));
        }
        if b[field::VERSION] != TS_VERSION {
            return Err(TsError::UnsupportedVersion(b[field::VERSION]));
        }
        let kind = b[field::KIND];
        if kind != KIND_REQUEST && kind != KIND_RESPONSE {
            return Err(TsError::BadKind(kind));
        }
        let expected = if is_sealed(b) {
            MAX_TS_LEN
        } else {
            TS_BODY_LEN
        };
        if bytes.len() != expected {
            return Err(TsError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        let receiver_id = be_u32(b, field::RECEIVER);
        let seq = be_u16(b, field::SEQ);
        let t1 = be_u64(b, field::T1);
        Ok(if kind == KIND_REQUEST {
            let pe = be_u32(b, field::PRESENTATION) as i32;
            TimePacket::Request(TimeRequest {
                receiver_id,
                seq,
                t1,
                report: Report {
                    presentation_error_us: (pe != i32::MIN).then_some(pe),
                    model_error_ns: be_u32(b, field::MODEL_ERROR),
                    flags: b[field::REPORT_FLAGS],
                },
            })
        } else {
            TimePacket::Response(TimeResponse {
                receiver_id,
                seq,
                t1,
                t2: be_u64(b, field::T2),
                t3: be_u64(b, field::T3),
            })
        })
    }
}

/// Writes the common part of a body; the caller fills 20..36.
fn emit_head(kind: u8, receiver_id: u32, seq: u16, t1: u64, report_flags: u8, out: &mut [u8]) {
    out[field::MAGIC].copy_from_slice(&TS_MAGIC.to_be_bytes());
    out[field::VERSION] = TS_VERSION;
    out[field::KIND] = kind;
    out[field::FLAGS] = 0;
    out[field::REPORT_FLAGS] = report_flags;
    out[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    out[field::RECEIVER].copy_from_slice(&receiver_id.to_be_bytes());
    out[field::T1].copy_from_slice(&t1.to_be_bytes());
}

fn body(buf: &mut [u8]) -> Result<&mut [u8], TsError> {
    let given = buf.len();
    buf.get_mut(..TS_BODY_LEN).ok_or(TsError::BufferTooSmall {
        needed: TS_BODY_LEN,
        given,
    })
}

impl TimeRequest {
    /// Writes the request (not sealed) into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, TsError> {
        let out = body(buf)?;
        let r = &self.report;
        emit_head(
            KIND_REQUEST,
            self.receiver_id,
            self.seq,
            self.t1,
            r.flags,
            out,
        );
        let pe = r.presentation_error_us.unwrap_or(i32::MIN);
        out[field::PRESENTATION].copy_from_slice(&pe.to_be_bytes());
        out[field::MODEL_ERROR].copy_from_slice(&r.model_error_ns.to_be_bytes());
        out[field::PADDING].fill(0);
        Ok(TS_BODY_LEN)
    }
}

impl TimeResponse {
    /// Writes the response (not sealed) into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, TsError> {
        let out = body(buf)?;
        emit_head(KIND_RESPONSE, self.receiver_id, self.seq, self.t1, 0, out);
        out[field::T2].copy_from_slice(&self.t2.to_be_bytes());
        out[field::T3].copy_from_slice(&self.t3.to_be_bytes());
        Ok(TS_BODY_LEN)
    }
}

/// Seals the datagram written at the start of `buf` with `key`: sets [`FLAG_AUTH`] and
/// appends the tag. Returns the new length.
pub fn seal(key: &Key, buf: &mut [u8]) -> Result<usize, TsError> {
    let given = buf.len();
    let Some(out) = buf.get_mut(..MAX_TS_LEN) else {
        return Err(TsError::BufferTooSmall {
            needed: MAX_TS_LEN,
            given,
        });
    };
    out[field::FLAGS] |= FLAG_AUTH;
    let tag = key.tag(&[&out[..TS_BODY_LEN]]);
    out[TS_BODY_LEN..].copy_from_slice(&tag);
    Ok(MAX_TS_LEN)
}

/// Whether the body at the start of `bytes` has [`FLAG_AUTH`] set.
fn is_sealed(bytes: &[u8]) -> bool {
    bytes.get(field::FLAGS).is_some_and(|f| f & FLAG_AUTH != 0)
}

/// Whether `bytes` is a datagram sealed with `key` (its tag checked in constant time). An
/// unsealed one is never authentic.
pub fn is_authentic(key: &Key, bytes: &[u8]) -> bool {
    bytes.len() == MAX_TS_LEN
        && is_sealed(bytes)
        && key.verify(&bytes[..TS_BODY_LEN], &bytes[TS_BODY_LEN..])
}

/// Whether a datagram looks like a time exchange (its first two bytes are the magic); a cheap
/// test to tell it from data packets and NACKs before parsing.
pub fn is_time_packet(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == TS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KEY_LEN;

    fn request() -> TimeRequest {
        TimeRequest {
            receiver_id: 0xDEAD_BEEF,
            seq: 0xFFFE,
            t1: 0x0102_0304_0506_0708,
            report: Report {
                presentation_error_us: Some(-42),
                model_error_ns: 12_345,
                flags: REPORT_LOCKED,
            },
        }
    }

    fn response() -> TimeResponse {
        TimeResponse {
            receiver_id: 7,
            seq: 1,
            t1: u64::MAX,
            t2: 1,
            t3: 2,
        }
    }

    #[test]
    fn requests_and_responses_round_trip_at_the_same_length() {
        let mut buf = [0xAAu8; MAX_TS_LEN];
        let n = request().emit(&mut buf).unwrap();
        assert_eq!(n, TS_BODY_LEN);
        assert!(is_time_packet(&buf[..n]));
        assert_eq!(
            TimePacket::parse(&buf[..n]),
            Ok(TimePacket::Request(request()))
        );
        assert!(buf[28..36].iter().all(|&b| b == 0), "padding is zero");
        let mut unknown = request();
        unknown.report.presentation_error_us = None;
        unknown.emit(&mut buf).unwrap();
        assert_eq!(
            TimePacket::parse(&buf[..n]),
            Ok(TimePacket::Request(unknown))
        );
        let m = response().emit(&mut buf).unwrap();
        assert_eq!(m, n, "a response is no longer than its request");
        assert_eq!(
            TimePacket::parse(&buf[..m]),
            Ok(TimePacket::Response(response()))
        );
    }

    #[test]
    fn seals_are_checked_and_any_change_breaks_them() {
        let key = Key::from_bytes([3; KEY_LEN]);
        let mut buf = [0u8; MAX_TS_LEN];
        let n = response().emit(&mut buf).unwrap();
        assert!(
            !is_authentic(&key, &buf[..n]),
            "unsealed is never authentic"
        );
        let m = seal(&key, &mut buf).unwrap();
        assert_eq!(m, MAX_TS_LEN);
        assert_eq!(
            TimePacket::parse(&buf[..m]),
            Ok(TimePacket::Response(response()))
        );
        assert!(is_authentic(&key, &buf[..m]));
        assert!(!is_authentic(&Key::from_bytes([4; KEY_LEN]), &buf[..m]));
        for i in 0..m {
            let mut b = buf;
            b[i] ^= 0x10;
            assert!(!is_authentic(&key, &b), "byte {i}");
        }
        // The flag without the tag, or the tag without the flag: a length error.
        assert_eq!(
            TimePacket::parse(&buf[..n]),
            Err(TsError::LengthMismatch {
                expected: m,
                actual: n
            })
        );
        let mut b = buf;
        b[4] = 0;
        assert!(TimePacket::parse(&b).is_err());
        assert_eq!(
            seal(&key, &mut buf[..m - 1]),
            Err(TsError::BufferTooSmall {
                needed: m,
                given: m - 1
            })
        );
    }

    #[test]
    fn rejects_with_typed_errors() {
        let mut good = [0u8; TS_BODY_LEN];
        request().emit(&mut good).unwrap();
        assert_eq!(
            TimePacket::parse(&good[..3]),
            Err(TsError::Truncated { len: 3 })
        );
        let mut b = good;
        b[0] = b'N';
        assert_eq!(TimePacket::parse(&b), Err(TsError::BadMagic(0x4E53)));
        let mut b = good;
        b[2] = 2;
        assert_eq!(TimePacket::parse(&b), Err(TsError::UnsupportedVersion(2)));
        let mut b = good;
        b[3] = 3;
        assert_eq!(TimePacket::parse(&b), Err(TsError::BadKind(3)));
        let mut long = [0u8; TS_BODY_LEN + 1];
        long[..TS_BODY_LEN].copy_from_slice(&good);
        assert_eq!(
            TimePacket::parse(&long),
            Err(TsError::LengthMismatch {
                expected: TS_BODY_LEN,
                actual: TS_BODY_LEN + 1
            })
        );
        assert_eq!(
            request().emit(&mut [0u8; 10]),
            Err(TsError::BufferTooSmall {
                needed: TS_BODY_LEN,
                given: 10
            })
        );
        assert!(TsError::BadKind(3).to_string().contains("kind 3"));
    }
}
