//! SAP, the Session Announcement Protocol (RFC 2974): how an RTP sender tells the receivers on
//! its network, every few seconds, which stream it sends (its SDP), and that it stopped.
//!
//! ```text
//!  0                   1                   2                   3
//!  +-+-+-+-+-+-+-+-+---------------+-------------------------------+
//!  | V=1 |A|R|T|E|C| auth len      | message id hash               |
//!  +-----+-+-+-+-+-+---------------+-------------------------------+
//!  | originating source (4 bytes IPv4, A=0; 16 bytes IPv6, A=1)    |
//!  +---------------------------------------------------------------+
//!  | authentication data (auth len × 4 bytes)                      |
//!  +---------------------------------------------------------------+
//!  | payload type "application/sdp" NUL | payload: the SDP         |
//!  +---------------------------------------------------------------+
//! ```
//! * T = 0 announces a session, T = 1 deletes it (a sender that stops). E (encrypted) and C
//!   (zlib-compressed) payloads are refused: nothing we talk to sends them.
//! * The message id hash with the originating source identifies one version of one
//!   announcement ([`msg_id_hash`] derives it from the SDP, so it changes when the SDP does).
//! * [`SapMessage::parse`] is total and tolerant of what PipeWire, VLC and older tools send: SAP
//!   version 0 and 1, no payload type field at all (the payload starts with `v=0`), the type in
//!   any letter case, trailing NULs after the SDP, authentication data (skipped). Any byte
//!   string gives a message or a typed [`SapError`], never a panic.
//!
//! Receivers differ in what they need in the SDP: PipeWire 0.3.65's `module-rtp-source` needs
//! `v=0` first, then `o=` (its session key), `c=` (which address to listen on), `m=audio PORT
//! RTP/AVP PT` and, after it, `a=rtpmap:PT L16/RATE/CHANNELS` (also for the static types 10 and
//! 11), lines of at least two characters each; [`write_sdp`](super::write_sdp) writes exactly
//! that. PipeWire 0.3.65 reads an IPv6 originating source at the wrong offset (12 instead of
//! 20), so announce IPv4 SAP to it.
//!
//! Realtime contract: none needed (announcements run on a normal thread), but [`SapMessage`]
//! neither allocates nor makes a syscall: it emits into and parses from caller buffers.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The SAP version this code sends.
pub const SAP_VERSION: u8 = 1;
/// SAP's well-known port.
pub const SAP_PORT: u16 = 9875;
/// The payload type of an SDP payload.
pub const SAP_SDP_TYPE: &str = "application/sdp";
/// The group PipeWire's RTP modules announce on and listen to by default (link-local scope).
pub const SAP_GROUP_PIPEWIRE: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 56);
/// The usual global-scope SAP group (`sap.ip` in PipeWire, VLC's default).
pub const SAP_GROUP_GLOBAL: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 255);
/// Longest SAP datagram sent or read. RFC 2974 asks announcements to stay under 1 kB;
/// PipeWire ignores datagrams of 2048 bytes or more.
pub const MAX_SAP_DATAGRAM: usize = 2047;

/// Whether a message announces a session or deletes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SapKind {
    /// T = 0: the session exists (sent every few seconds).
    Announce,
    /// T = 1: the session has ended.
    Delete,
}

/// Why a byte string is not a SAP message we can read, or a message cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SapError {
    /// Shorter than its header says.
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// Longer than [`MAX_SAP_DATAGRAM`] (or than the buffer given to emit).
    TooLong {
        /// Bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not SAP version 0 or 1.
    BadVersion(u8),
    /// The payload is encrypted (E bit).
    Encrypted,
    /// The payload is zlib-compressed (C bit).
    Compressed,
    /// The payload type field has no terminating NUL.
    UnterminatedType,
    /// A payload type other than `application/sdp`.
    NotSdp,
    /// No payload after the header.
    NoPayload,
    /// The SDP is not UTF-8 text.
    NotText,
}

impl fmt::Display for SapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len, needed } => {
                write!(
                    f,
                    "truncated SAP packet: {len} bytes, its header needs {needed}"
                )
            }
            Self::TooLong { len, max } => write!(f, "SAP packet of {len} bytes, above {max}"),
            Self::BadVersion(v) => write!(f, "SAP version {v}, not 0 or 1"),
            Self::Encrypted => f.write_str("encrypted SAP payload (not supported)"),
            Self::Compressed => f.write_str("compressed SAP payload (not supported)"),
            Self::UnterminatedType => f.write_str("SAP payload type without its NUL"),
            Self::NotSdp => write!(f, "SAP payload is not {SAP_SDP_TYPE}"),
            Self::NoPayload => f.write_str("SAP packet without a payload"),
            Self::NotText => f.write_str("SAP payload is not UTF-8 text"),
        }
    }
}

impl std::error::Error for SapError {}

/// One SAP message, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SapMessage<'a> {
    /// Announcement or deletion.
    pub kind: SapKind,
    /// Message id hash: with `origin`, identifies this version of the announcement.
    pub msg_id_hash: u16,
    /// Originating source: the announcer's address.
    pub origin: IpAddr,
    /// The session description (SDP text), without trailing NULs.
    pub sdp: &'a str,
}

const HEADER_LEN: usize = 4;
const FLAG_A: u8 = 0x10;
const FLAG_T: u8 = 0x04;
const FLAG_E: u8 = 0x02;
const FLAG_C: u8 = 0x01;

impl<'a> SapMessage<'a> {
    /// An announcement of `sdp` from `origin`, its hash derived from the SDP.
    pub fn announce(origin: IpAddr, sdp: &'a str) -> SapMessage<'a> {
        SapMessage {
            kind: SapKind::Announce,
            msg_id_hash: msg_id_hash(sdp.as_bytes()),
            origin,
            sdp,
        }
    }

    /// The deletion of the session this message announces: same hash, origin and SDP (PipeWire
    /// 0.3.65 parses the whole SDP of a deletion and finds the session by its `o=` line).
    pub fn deletion(&self) -> SapMessage<'a> {
        SapMessage {
            kind: SapKind::Delete,
            ..*self
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn len(&self) -> usize {
        HEADER_LEN + origin_len(self.origin) + SAP_SDP_TYPE.len() + 1 + self.sdp.len()
    }

    /// Always false: a message has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message (version 1, no authentication, payload type `application/sdp`) into
    /// `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, SapError> {
        let len = self.len();
        let max = buf.len().min(MAX_SAP_DATAGRAM);
        if len > max {
            return Err(SapError::TooLong { len, max });
        }
        let mut flags = SAP_VERSION << 5;
        if self.origin.is_ipv6() {
            flags |= FLAG_A;
        }
        if self.kind == SapKind::Delete {
            flags |= FLAG_T;
        }
        buf[0] = flags;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&self.msg_id_hash.to_be_bytes());
        let mut at = HEADER_LEN;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        match self.origin {
            IpAddr::V4(a) => put(&a.octets()),
            IpAddr::V6(a) => put(&a.octets()),
        }
        put(SAP_SDP_TYPE.as_bytes());
        put(&[0]);
        put(self.sdp.as_bytes());
        Ok(at)
    }

    /// Parses any byte string: a message with an SDP payload, or what is wrong with it.
    pub fn parse(bytes: &'a [u8]) -> Result<SapMessage<'a>, SapError> {
        let len = bytes.len();
        if len > MAX_SAP_DATAGRAM {
            return Err(SapError::TooLong {
                len,
                max: MAX_SAP_DATAGRAM,
            });
        }
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(SapError::Truncated {
                len,
                needed: HEADER_LEN,
            });
        };
        let version = h[0] >> 5;
        if version > SAP_VERSION {
            return Err(SapError::BadVersion(version));
        }
        if h[0] & FLAG_E != 0 {
            return Err(SapError::Encrypted);
        }
        if h[0] & FLAG_C != 0 {
            return Err(SapError::Compressed);
        }
        let ipv6 = h[0] & FLAG_A != 0;
        let olen = if ipv6 { 16 } else { 4 };
        let needed = HEADER_LEN + olen + 4 * h[1] as usize;
        let Some(o) = bytes.get(HEADER_LEN..HEADER_LEN + olen) else {
            return Err(SapError::Truncated { len, needed });
        };
        let origin = if ipv6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(o);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
        };
        let Some(mut payload) = bytes.get(needed..) else {
            return Err(SapError::Truncated { len, needed });
        };
        // SAPv0 and some announcers have no payload type: the SDP starts right away.
        if version == 1 && !payload.starts_with(b"v=0") {
            let nul = payload
                .iter()
                .position(|&b| b == 0)
                .ok_or(SapError::UnterminatedType)?;
            let ty = core::str::from_utf8(&payload[..nul]).map_err(|_| SapError::NotSdp)?;
            if !ty.trim().eq_ignore_ascii_case(SAP_SDP_TYPE) {
                return Err(SapError::NotSdp);
            }
            payload = &payload[nul + 1..];
        }
        while let [rest @ .., 0] = payload {
            payload = rest;
        }
        if payload.is_empty() {
            return Err(SapError::NoPayload);
        }
        let sdp = core::str::from_utf8(payload).map_err(|_| SapError::NotText)?;
        Ok(SapMessage {
            kind: if h[0] & FLAG_T != 0 {
                SapKind::Delete
            } else {
                SapKind::Announce
            },
            msg_id_hash: u16::from_be_bytes([h[2], h[3]]),
            origin,
            sdp,
        })
    }
}

fn origin_len(a: IpAddr) -> usize {
    if a.is_ipv4() { 4 } else { 16 }
}

/// A message id hash for an SDP: FNV-1a folded to 16 bits, never 0 (which RFC 2974 reserves for
/// announcers that send no hash).
pub fn msg_id_hash(sdp: &[u8]) -> u16 {
    let h = sdp.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    match ((h >> 16) ^ (h & 0xFFFF)) as u16 {
        0 => 1,
        x => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 42 0 IN IP4 192.168.1.10\r\ns=netaudio\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\nm=audio 46000 RTP/AVP 96\r\na=rtpmap:96 L16/48000/2\r\n";

    #[test]
    fn an_announcement_is_what_rfc_2974_and_pipewire_expect() {
        let origin: IpAddr = "192.168.1.10".parse().unwrap();
        let m = SapMessage::announce(origin, SDP);
        let mut buf = [0u8; 1024];
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(n, m.len());
        assert_eq!(buf[0], 0x20, "V=1, IPv4, announcement");
        assert_eq!(buf[1], 0, "no authentication");
        assert_eq!(
            u16::from_be_bytes([buf[2], buf[3]]),
            msg_id_hash(SDP.as_bytes())
        );
        assert_eq!(&buf[4..8], &[192, 168, 1, 10]);
        assert_eq!(&buf[8..24], b"application/sdp\0");
        assert_eq!(&buf[24..n], SDP.as_bytes());
        assert_eq!(SapMessage::parse(&buf[..n]), Ok(m));

        let d = m.deletion();
        let n = d.emit(&mut buf).unwrap();
        assert_eq!(buf[0], 0x24, "T=1");
        let back = SapMessage::parse(&buf[..n]).unwrap();
        assert_eq!(back.kind, SapKind::Delete);
        assert_eq!(back.msg_id_hash, m.msg_id_hash);
        assert_eq!(back.sdp, SDP);
    }

    #[test]
    fn ipv6_origins_set_the_a_bit() {
        let origin: IpAddr = "fe80::1".parse().unwrap();
        let m = SapMessage::announce(origin, SDP);
        let mut buf = [0u8; 1024];
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(buf[0], 0x30);
        assert_eq!(&buf[20..36], b"application/sdp\0");
        assert_eq!(SapMessage::parse(&buf[..n]), Ok(m));
    }

    #[test]
    fn what_pipewire_and_older_tools_send_is_read() {
        // PipeWire's rtp-sink: origin 0.0.0.0, LF line ends, a random hash.
        let pw = "v=0\no=root 3910000000 0 IN IP4 0.0.0.0\ns=PipeWire RTP Stream on host\nc=IN IP4 127.0.0.1\nt=3910000000 0\na=recvonly\na=tool:PipeWire 0.3.65\nm=audio 46000 RTP/AVP 127\na=rtpmap:127 L16/48000/2\na=type:broadcast\na=ptime:6\n";
        let mut d = vec![0x20, 0, 0xBE, 0xEF, 0, 0, 0, 0];
        d.extend_from_slice(b"application/sdp\0");
        d.extend_from_slice(pw.as_bytes());
        let m = SapMessage::parse(&d).unwrap();
        assert_eq!(m.msg_id_hash, 0xBEEF);
        assert_eq!(m.origin, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(m.sdp, pw);
        // No payload type, a trailing NUL, authentication data, SAPv0, upper case type.
        let mut bare = vec![0x20, 0, 0, 1, 10, 0, 0, 1];
        bare.extend_from_slice(SDP.as_bytes());
        bare.push(0);
        assert_eq!(SapMessage::parse(&bare).unwrap().sdp, SDP);
        let mut auth = vec![0x20, 2, 0, 1, 10, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
        auth.extend_from_slice(b"Application/SDP\0");
        auth.extend_from_slice(SDP.as_bytes());
        assert_eq!(SapMessage::parse(&auth).unwrap().sdp, SDP);
        let mut v0 = vec![0x00, 0, 0, 1, 10, 0, 0, 1];
        v0.extend_from_slice(SDP.as_bytes());
        assert_eq!(SapMessage::parse(&v0).unwrap().sdp, SDP);
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let ok = {
            let mut v = vec![0x20, 0, 0, 1, 10, 0, 0, 1];
            v.extend_from_slice(b"application/sdp\0");
            v.extend_from_slice(SDP.as_bytes());
            v
        };
        assert_eq!(
            SapMessage::parse(&ok[..3]),
            Err(SapError::Truncated { len: 3, needed: 4 })
        );
        assert!(matches!(
            SapMessage::parse(&[0x30, 0, 0, 0, 1, 2]),
            Err(SapError::Truncated { .. })
        ));
        assert!(matches!(
            SapMessage::parse(&[0x20, 9, 0, 0, 1, 2, 3, 4]),
            Err(SapError::Truncated { .. })
        ));
        let mut bad = ok.clone();
        bad[0] = 0x40;
        assert_eq!(SapMessage::parse(&bad), Err(SapError::BadVersion(2)));
        bad[0] = 0x22;
        assert_eq!(SapMessage::parse(&bad), Err(SapError::Encrypted));
        bad[0] = 0x21;
        assert_eq!(SapMessage::parse(&bad), Err(SapError::Compressed));
        let mut other = vec![0x20, 0, 0, 1, 10, 0, 0, 1];
        other.extend_from_slice(b"text/plain\0hello");
        assert_eq!(SapMessage::parse(&other), Err(SapError::NotSdp));
        assert_eq!(
            SapMessage::parse(&ok[..20]),
            Err(SapError::UnterminatedType)
        );
        assert_eq!(SapMessage::parse(&ok[..24]), Err(SapError::NoPayload));
        let mut bin = ok[..24].to_vec();
        bin.extend_from_slice(&[0xFF, 0xFE, b'x']);
        assert_eq!(SapMessage::parse(&bin), Err(SapError::NotText));
        assert!(matches!(
            SapMessage::parse(&[0x20; MAX_SAP_DATAGRAM + 1]),
            Err(SapError::TooLong { .. })
        ));
        let big = "x".repeat(MAX_SAP_DATAGRAM);
        let m = SapMessage::announce(IpAddr::V4(Ipv4Addr::LOCALHOST), &big);
        assert!(matches!(
            m.emit(&mut [0u8; 4096]),
            Err(SapError::TooLong { .. })
        ));
        assert!(matches!(
            SapMessage::announce(IpAddr::V4(Ipv4Addr::LOCALHOST), SDP).emit(&mut [0u8; 16]),
            Err(SapError::TooLong { len: _, max: 16 })
        ));
    }

    #[test]
    fn no_byte_string_panics() {
        // Every prefix and many corruptions of a valid message: a message or an error.
        let mut buf = [0u8; 512];
        let n = SapMessage::announce("fe80::2".parse().unwrap(), SDP)
            .emit(&mut buf)
            .unwrap();
        for k in 0..=n {
            let _ = SapMessage::parse(&buf[..k]);
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = buf;
            b[(x as usize) % n] = (x >> 32) as u8;
            b[((x >> 8) as usize) % n] ^= (x >> 40) as u8;
            let _ = SapMessage::parse(&b[..(x >> 16) as usize % (n + 1)]);
        }
    }

    #[test]
    fn the_hash_follows_the_sdp_and_is_never_zero() {
        assert_ne!(msg_id_hash(b"a"), msg_id_hash(b"b"));
        assert_eq!(msg_id_hash(SDP.as_bytes()), msg_id_hash(SDP.as_bytes()));
        for k in 0..5000u32 {
            assert_ne!(msg_id_hash(&k.to_le_bytes()), 0);
        }
    }
}
