//! The RTP packet: its fixed header, and a total parser that skips CSRCs, header extension
//! and padding.
//!
//! Realtime contract: parsing borrows the datagram; it never allocates, locks, blocks or makes
//! a syscall.

use super::{MAX_RTP_DATAGRAM, RTP_HEADER_LEN, RTP_VERSION, RtpError};

/// The fixed part of an RTP header (CSRCs and extensions are skipped on parse, never sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// Marker bit: set on the first packet of a talkspurt (here: of a stream).
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number (wraps).
    pub seq: u16,
    /// Sampling instant of the first frame, in frames (wraps).
    pub timestamp: u32,
    /// Synchronisation source: the stream id.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes the header (version 2, no padding, extension or CSRCs).
    pub fn emit(&self, h: &mut [u8; RTP_HEADER_LEN]) {
        h[0] = RTP_VERSION << 6;
        h[1] = ((self.marker as u8) << 7) | (self.payload_type & 0x7F);
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; RTP_HEADER_LEN] {
        let mut h = [0u8; RTP_HEADER_LEN];
        self.emit(&mut h);
        h
    }
}

/// A checked RTP packet: its header and where its payload lies in the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    header: RtpHeader,
    payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses any byte string: a packet, or what is wrong with it. Skips CSRCs and a header
    /// extension, strips padding; does not look at the payload type's meaning.
    pub fn parse(bytes: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let len = bytes.len();
        if len > MAX_RTP_DATAGRAM {
            return Err(RtpError::TooLong { len });
        }
        let Some(h) = bytes.get(..RTP_HEADER_LEN) else {
            return Err(RtpError::Truncated {
                len,
                needed: RTP_HEADER_LEN,
            });
        };
        let version = h[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        if (200..=204).contains(&h[1]) {
            return Err(RtpError::Rtcp(h[1]));
        }
        let padding = h[0] & 0x20 != 0;
        let extension = h[0] & 0x10 != 0;
        let csrcs = (h[0] & 0x0F) as usize;
        let mut start = RTP_HEADER_LEN + 4 * csrcs;
        if extension {
            let Some(x) = bytes.get(start..start + 4) else {
                return Err(RtpError::Truncated {
                    len,
                    needed: start + 4,
                });
            };
            start += 4 + 4 * u16::from_be_bytes([x[2], x[3]]) as usize;
        }
        if start > len {
            return Err(RtpError::Truncated { len, needed: start });
        }
        let mut end = len;
        if padding {
            let p = bytes[len - 1];
            if p == 0 || p as usize > len - start {
                return Err(RtpError::BadPadding(p));
            }
            end -= p as usize;
        }
        Ok(RtpPacket {
            header: RtpHeader {
                marker: h[1] & 0x80 != 0,
                payload_type: h[1] & 0x7F,
                seq: u16::from_be_bytes([h[2], h[3]]),
                timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            },
            payload: &bytes[start..end],
        })
    }

    /// The header.
    pub fn header(&self) -> &RtpHeader {
        &self.header
    }

    /// The payload (padding removed).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_csrcs_extensions_and_padding() {
        let mut d = RtpHeader {
            marker: false,
            payload_type: 96,
            seq: 1,
            timestamp: 2,
            ssrc: 3,
        }
        .to_bytes()
        .to_vec();
        d[0] |= 0x20 | 0x10 | 2; // padding, extension, 2 CSRCs
        d.extend_from_slice(&[0; 8]); // CSRCs
        d.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // one extension word
        d.extend_from_slice(&[1, 2, 3, 4]); // payload
        d.extend_from_slice(&[0, 0, 3]); // padding
        let p = RtpPacket::parse(&d).unwrap();
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert_eq!(p.header().ssrc, 3);
    }
}
