//! The native packet format.
//!
//! One UDP datagram carries one packet: a fixed 32-byte header, an optional extension area
//! (reserved for loss-recovery data), the PCM payload exactly as the capture device produced it
//! (little-endian, interleaved), and an optional authentication tag.
//!
//! ```text
//!  0      2   3   4           8          12                    20          24  25  26    28      30  31  32
//!  +------+---+---+-----------+-----------+---------------------+-----------+---+---+-----+-------+---+---+
//!  |magic |ver|flg| stream id | sequence  | first frame index   |   rate    |ch |fmt|frms | ext   |tag|rsv|
//!  +------+---+---+-----------+-----------+---------------------+-----------+---+---+-----+-------+---+---+
//!  | extension (ext bytes) | payload (frms * ch * bytes per sample) | tag (tag bytes) |
//! ```
//! Header fields are big-endian (network order). `magic` is `"NA"`, `version` is 1.
//!
//! **Capture time.** With [`Flags::TIMED`] the extension area begins with the packet's capture
//! time: the sender's clock (its `CLOCK_MONOTONIC`, ns, u64 big-endian) when the packet's first
//! frame entered the ADC ([`Packet::capture_time`]). Whatever else the extension carries (the
//! authentication extension of a keyed stream) follows it ([`Packet::ext_after_time`]), and
//! `ext` counts both. A receiver that predates the flag ignores an unkeyed extension. A TIMED
//! packet whose extension is shorter than the capture time has none (it parses, untimed).
//!
//! **END.** A sender that stops cleanly sends END packets: flag [`Flags::END`], no payload
//! (`frms` = 0, the one case where 0 frames is valid) and `first frame index` = the index one
//! past the last frame it sent, the frame where the stream ends; with a key they carry the
//! extension and a tag like every packet. An END-flagged packet that does carry frames is the
//! stream's last audio packet: the stream ends after its frames. Either way the stream ends at
//! `first_frame + frames` ([`PacketHeader::end_frame`]).
//!
//! Parsing is total: [`Packet::new_checked`] accepts any byte string and either returns a packet
//! whose every accessor is then panic-free, or a [`WireError`] saying what is wrong.
//!
//! Realtime contract: nothing here allocates, blocks or makes a syscall.

use crate::format::{MAX_CHANNELS, MAX_RATE, MIN_RATE, SampleFormat, StreamFormat};
use core::fmt;
use core::ops::Range;

/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// `"NA"`.
pub const MAGIC: u16 = 0x4E41;
/// The version this code speaks.
pub const VERSION: u8 = 1;
/// Largest authentication tag a packet may carry.
pub const MAX_TAG_LEN: usize = 32;
/// Bytes of the capture time at the start of a [`Flags::TIMED`] packet's extension.
pub const CAPTURE_TIME_LEN: usize = 8;
/// Largest datagram we send or accept (fits an Ethernet MTU with room for IPv6 + UDP headers:
/// 1500 - 40 - 8).
pub const MAX_PACKET_LEN: usize = 1452;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const FLAGS: usize = 3;
    pub const STREAM_ID: Range<usize> = 4..8;
    pub const SEQ: Range<usize> = 8..12;
    pub const FIRST_FRAME: Range<usize> = 12..20;
    pub const RATE: Range<usize> = 20..24;
    pub const CHANNELS: usize = 24;
    pub const FORMAT: usize = 25;
    pub const FRAMES: Range<usize> = 26..28;
    pub const EXT_LEN: Range<usize> = 28..30;
    pub const TAG_LEN: usize = 30;
}

/// Header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// The payload is loss-recovery data, not PCM for `first_frame`.
    pub const REPAIR: Flags = Flags(0x01);
    /// The sender stopped: the stream ends at `first_frame + frames` (an END packet carries no
    /// frames; see the module documentation).
    pub const END: Flags = Flags(0x02);
    /// The extension area begins with the capture time ([`CAPTURE_TIME_LEN`] bytes; see the
    /// module documentation).
    pub const TIMED: Flags = Flags(0x04);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union of two flag sets.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// Why a byte string is not a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Shorter than a header.
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not a netaudio packet.
    BadMagic(u16),
    /// A version we do not speak.
    UnsupportedVersion(u8),
    /// Unknown sample-format code.
    BadFormat(u8),
    /// Channel count 0 or above [`MAX_CHANNELS`].
    BadChannels(u8),
    /// Rate outside [`MIN_RATE`]..=[`MAX_RATE`].
    BadRate(u32),
    /// A packet with no frames that is not an END packet.
    NoFrames,
    /// Tag length above [`MAX_TAG_LEN`].
    BadTagLen(u8),
    /// The datagram length does not match what the header announces.
    LengthMismatch {
        /// Length the header announces.
        expected: usize,
        /// Length received.
        actual: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => {
                write!(f, "truncated packet: {len} bytes, a header is {HEADER_LEN}")
            }
            Self::BadMagic(m) => write!(f, "not a netaudio packet (magic {m:#06x})"),
            Self::UnsupportedVersion(v) => {
                write!(f, "packet version {v}, this build speaks {VERSION}")
            }
            Self::BadFormat(c) => write!(f, "unknown sample format code {c}"),
            Self::BadChannels(c) => write!(f, "bad channel count {c} (1..={MAX_CHANNELS})"),
            Self::BadRate(r) => write!(f, "bad rate {r} Hz ({MIN_RATE}..={MAX_RATE})"),
            Self::NoFrames => f.write_str("packet carries no frames and is not an END packet"),
            Self::BadTagLen(t) => write!(f, "tag length {t} above {MAX_TAG_LEN}"),
            Self::LengthMismatch { expected, actual } => {
                write!(f, "packet length {actual}, header announces {expected}")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// The decoded header of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    /// Flags.
    pub flags: Flags,
    /// Chosen anew each time a sender starts.
    pub stream_id: u32,
    /// Packet sequence number (wraps).
    pub seq: u32,
    /// Stream index of the first frame of the payload.
    pub first_frame: u64,
    /// Format of the payload.
    pub format: StreamFormat,
    /// Frames in the payload.
    pub frames: u16,
    /// Bytes of extension data between header and payload.
    pub ext_len: u16,
    /// Bytes of authentication tag after the payload.
    pub tag_len: u8,
}

impl PacketHeader {
    /// Bytes of PCM payload.
    pub const fn payload_len(&self) -> usize {
        self.frames as usize * self.format.frame_bytes()
    }

    /// Whether this is an END packet without frames (the stream's end marker).
    pub const fn is_end_marker(&self) -> bool {
        self.flags.contains(Flags::END) && self.frames == 0
    }

    /// Where the stream ends, for a packet with [`Flags::END`]: the index one past its frames.
    pub const fn end_frame(&self) -> u64 {
        self.first_frame.wrapping_add(self.frames as u64)
    }

    /// Length of the whole datagram.
    pub const fn packet_len(&self) -> usize {
        HEADER_LEN + self.ext_len as usize + self.payload_len() + self.tag_len as usize
    }

    /// Parses and validates the header at the start of `bytes` (the rest is not looked at).
    pub fn parse(bytes: &[u8]) -> Result<PacketHeader, WireError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(WireError::Truncated { len: bytes.len() });
        };
        let magic = u16::from_be_bytes([h[0], h[1]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = h[field::VERSION];
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let code = h[field::FORMAT];
        let sample = SampleFormat::from_code(code).ok_or(WireError::BadFormat(code))?;
        let channels = h[field::CHANNELS];
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(WireError::BadChannels(channels));
        }
        let rate = be_u32(h, field::RATE);
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(WireError::BadRate(rate));
        }
        let frames = be_u16(h, field::FRAMES);
        let flags = Flags(h[field::FLAGS]);
        if frames == 0 && !flags.contains(Flags::END) {
            return Err(WireError::NoFrames);
        }
        let tag_len = h[field::TAG_LEN];
        if tag_len as usize > MAX_TAG_LEN {
            return Err(WireError::BadTagLen(tag_len));
        }
        Ok(PacketHeader {
            flags,
            stream_id: be_u32(h, field::STREAM_ID),
            seq: be_u32(h, field::SEQ),
            first_frame: u64::from_be_bytes(h[field::FIRST_FRAME].try_into().unwrap_or([0; 8])),
            format: StreamFormat {
                rate,
                channels,
                sample,
            },
            frames,
            ext_len: be_u16(h, field::EXT_LEN),
            tag_len,
        })
    }

    /// Writes the header.
    pub fn emit(&self, h: &mut [u8; HEADER_LEN]) {
        h[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        h[field::VERSION] = VERSION;
        h[field::FLAGS] = self.flags.0;
        h[field::STREAM_ID].copy_from_slice(&self.stream_id.to_be_bytes());
        h[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        h[field::FIRST_FRAME].copy_from_slice(&self.first_frame.to_be_bytes());
        h[field::RATE].copy_from_slice(&self.format.rate.to_be_bytes());
        h[field::CHANNELS] = self.format.channels;
        h[field::FORMAT] = self.format.sample.code();
        h[field::FRAMES].copy_from_slice(&self.frames.to_be_bytes());
        h[field::EXT_LEN].copy_from_slice(&self.ext_len.to_be_bytes());
        h[field::TAG_LEN] = self.tag_len;
        h[31] = 0;
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        self.emit(&mut h);
        h
    }
}

fn be_u16(h: &[u8], r: Range<usize>) -> u16 {
    u16::from_be_bytes([h[r.start], h[r.start + 1]])
}

fn be_u32(h: &[u8], r: Range<usize>) -> u32 {
    let s = r.start;
    u32::from_be_bytes([h[s], h[s + 1], h[s + 2], h[s + 3]])
}

/// A checked view of a whole datagram over a buffer the caller owns.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    header: PacketHeader,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that `buffer` is exactly one valid packet; after this no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let bytes = buffer.as_ref();
        let header = PacketHeader::parse(bytes)?;
        let expected = header.packet_len();
        if bytes.len() != expected {
            return Err(WireError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        Ok(Packet { buffer, header })
    }

    /// The header.
    pub fn header(&self) -> &PacketHeader {
        &self.header
    }

    /// The extension area.
    pub fn ext(&self) -> &[u8] {
        let start = HEADER_LEN;
        &self.buffer.as_ref()[start..start + self.header.ext_len as usize]
    }

    /// The capture time of the first frame (sender clock, ns), for a [`Flags::TIMED`] packet
    /// whose extension holds one.
    pub fn capture_time(&self) -> Option<u64> {
        if !self.header.flags.contains(Flags::TIMED) {
            return None;
        }
        let t: [u8; CAPTURE_TIME_LEN] = self.ext().get(..CAPTURE_TIME_LEN)?.try_into().ok()?;
        Some(u64::from_be_bytes(t))
    }

    /// The extension after the capture time: the authentication extension of a keyed stream.
    /// The whole extension when the packet carries no capture time.
    pub fn ext_after_time(&self) -> &[u8] {
        let ext = self.ext();
        if self.capture_time().is_some() {
            &ext[CAPTURE_TIME_LEN..]
        } else {
            ext
        }
    }

    /// The PCM payload (or repair data when [`Flags::REPAIR`] is set).
    pub fn payload(&self) -> &[u8] {
        let start = HEADER_LEN + self.header.ext_len as usize;
        &self.buffer.as_ref()[start..start + self.header.payload_len()]
    }

    /// Everything the authentication tag covers: header, extension and payload.
    pub fn authenticated(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..b.len() - self.header.tag_len as usize]
    }

    /// The authentication tag (empty when there is none).
    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - self.header.tag_len as usize..]
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PacketHeader {
        PacketHeader {
            flags: Flags::default(),
            stream_id: 0xDEAD_BEEF,
            seq: u32::MAX,
            first_frame: 0x0102_0304_0506_0708,
            format: StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap(),
            frames: 64,
            ext_len: 0,
            tag_len: 0,
        }
    }

    fn packet_bytes(h: &PacketHeader) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.resize(h.packet_len(), 0);
        for (i, b) in v[HEADER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let mut h = header();
        h.ext_len = 7;
        h.tag_len = 16;
        h.flags = Flags::END;
        let bytes = packet_bytes(&h);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(*p.header(), h);
        assert_eq!(p.ext().len(), 7);
        assert_eq!(p.payload().len(), 64 * 6);
        assert_eq!(p.tag().len(), 16);
        assert_eq!(p.authenticated().len(), bytes.len() - 16);
        assert_eq!(p.payload()[0], 7);
    }

    #[test]
    fn rejects_with_typed_errors() {
        let h = header();
        let good = packet_bytes(&h);
        assert_eq!(
            Packet::new_checked(&good[..10]).unwrap_err(),
            WireError::Truncated { len: 10 }
        );
        let mut b = good.clone();
        b[0] = 0;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::BadMagic(_))
        ));
        let mut b = good.clone();
        b[2] = 9;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::UnsupportedVersion(9)
        );
        let mut b = good.clone();
        b[25] = 0;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadFormat(0)
        );
        let mut b = good.clone();
        b[24] = 0;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadChannels(0)
        );
        let mut b = good.clone();
        b[20..24].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadRate(1)
        );
        let mut b = good.clone();
        b[26..28].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::NoFrames
        );
        let mut b = good.clone();
        b[30] = 200;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadTagLen(200)
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::LengthMismatch {
                expected: good.len(),
                actual: good.len() + 1
            }
        );
    }

    #[test]
    fn end_packets_carry_no_frames_and_say_where_the_stream_ends() {
        let mut h = header();
        h.flags = Flags::END;
        h.frames = 0;
        h.ext_len = 16;
        h.tag_len = 16;
        let bytes = packet_bytes(&h);
        assert_eq!(bytes.len(), HEADER_LEN + 32);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(*p.header(), h);
        assert!(p.header().is_end_marker());
        assert_eq!(p.header().end_frame(), h.first_frame);
        assert!(p.payload().is_empty());
        assert_eq!(p.tag().len(), 16);
        // The last audio packet may carry the flag too: the stream ends after its frames.
        h.frames = 64;
        assert!(!h.is_end_marker());
        assert_eq!(h.end_frame(), h.first_frame + 64);
        // Without the flag, no frames is still an error.
        let mut b = bytes.clone();
        b[3] = Flags::REPAIR.0;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::NoFrames
        );
    }

    #[test]
    fn timed_packets_carry_the_capture_time_before_the_rest_of_the_extension() {
        let mut h = header();
        h.flags = Flags::TIMED;
        h.ext_len = (CAPTURE_TIME_LEN + 16) as u16;
        h.tag_len = 16;
        let mut bytes = packet_bytes(&h);
        bytes[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.capture_time(), Some(0x1122_3344_5566_7788));
        assert_eq!(p.ext_after_time(), &bytes[HEADER_LEN + 8..HEADER_LEN + 24]);
        assert_eq!(p.payload().len(), 64 * 6);
        // Unkeyed: the capture time is the whole extension.
        h.ext_len = CAPTURE_TIME_LEN as u16;
        let bytes = packet_bytes(&h);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.capture_time().is_some() && p.ext_after_time().is_empty());
        // Too short an extension, or no flag: no capture time, the extension as it is.
        h.ext_len = 7;
        let bytes = packet_bytes(&h);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.capture_time(), p.ext_after_time().len()), (None, 7));
        h.flags = Flags::default();
        h.ext_len = 24;
        let bytes = packet_bytes(&h);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.capture_time(), p.ext_after_time().len()), (None, 24));
    }

    #[test]
    fn errors_print_what_is_wrong() {
        let e = WireError::LengthMismatch {
            expected: 100,
            actual: 90,
        };
        assert_eq!(e.to_string(), "packet length 90, header announces 100");
    }
}
