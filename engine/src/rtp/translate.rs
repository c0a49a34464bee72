//! Receiving RTP: [`RtpTranslator`] rewrites an RTP packet as a native packet, extending
//! timestamps and sequence numbers per SSRC and converting the payload back to little-endian.
//!
//! Realtime contract: [`RtpTranslator::new`] allocates the packet buffer; `translate` never
//! allocates, locks, blocks or makes a syscall.

use super::{
    MAX_RTP_DATAGRAM, RtpError, RtpHeader, RtpPacket, encoding_name, static_format, swap_byte_order,
};
use crate::format::StreamFormat;
use crate::wire::{self, Flags, PacketHeader};

/// Timestamp and sequence extension state of one SSRC.
#[derive(Clone, Copy, Debug, Default)]
struct SourceState {
    used: bool,
    ssrc: u32,
    last_ts: u32,
    last_frame: u64,
    last_seq: u16,
    ext_seq: u32,
}

/// SSRCs whose extension state is kept at once (the stream played, a new one taking over, and
/// a stray or two).
pub const TRACKED_SOURCES: usize = 4;

/// Rewrites RTP packets as native packets for [`Receiver::on_packet`](crate::receiver::Receiver::on_packet).
pub struct RtpTranslator {
    format: StreamFormat,
    sources: [SourceState; TRACKED_SOURCES],
    next_slot: usize,
    buf: Vec<u8>,
}

impl RtpTranslator {
    /// A translator for a receiver playing `format`: dynamic payload types are taken to be in
    /// that format. Refuses formats RTP cannot carry (S32_LE).
    pub fn new(format: StreamFormat) -> Result<RtpTranslator, RtpError> {
        encoding_name(format.sample)?;
        Ok(RtpTranslator {
            format,
            sources: [SourceState::default(); TRACKED_SOURCES],
            next_slot: 0,
            buf: vec![0; wire::HEADER_LEN + MAX_RTP_DATAGRAM],
        })
    }

    /// The format dynamic payload types are read in.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The native packet for RTP datagram `bytes`, built in this translator's buffer (valid
    /// until the next call): [`frames`](Self::frames) with the header written before them.
    pub fn translate(&mut self, bytes: &[u8]) -> Result<&[u8], RtpError> {
        let (native, n) = {
            let (h, pcm) = self.frames(bytes)?;
            (h, pcm.len())
        };
        let (head, _) = self.buf.split_at_mut(wire::HEADER_LEN);
        let head: &mut [u8; wire::HEADER_LEN] = head.try_into().expect("split at HEADER_LEN");
        native.emit(head);
        Ok(&self.buf[..wire::HEADER_LEN + n])
    }

    /// The frames of RTP datagram `bytes` in the receiver's byte order (in this translator's
    /// buffer, valid until the next call) and the typed header that places them in a stream
    /// (the SSRC as stream id): what [`crate::receiver::Receiver::on_frames`] takes. The first
    /// packet of an SSRC maps its timestamp `ts` to frame `2^32 + ts`; later ones continue
    /// from there across timestamp wraps (and reorder).
    pub fn frames(&mut self, bytes: &[u8]) -> Result<(PacketHeader, &[u8]), RtpError> {
        let p = RtpPacket::parse(bytes)?;
        let h = *p.header();
        let format = match h.payload_type {
            96..=127 => self.format,
            pt => static_format(pt).ok_or(RtpError::UnsupportedPayloadType(pt))?,
        };
        let payload = p.payload();
        if payload.is_empty() {
            return Err(RtpError::NoPayload);
        }
        let fb = format.frame_bytes();
        if payload.len() % fb != 0 {
            return Err(RtpError::PartialFrame {
                payload_len: payload.len(),
                frame_bytes: fb,
            });
        }
        let frames = payload.len() / fb;
        let (first_frame, seq) = self.extend(&h);
        let native = PacketHeader {
            flags: Flags::default(),
            stream_id: h.ssrc,
            seq,
            first_frame,
            format,
            // At most MAX_RTP_DATAGRAM bytes: always fits.
            frames: frames as u16,
            ext_len: 0,
            tag_len: 0,
        };
        let body = &mut self.buf[wire::HEADER_LEN..wire::HEADER_LEN + payload.len()];
        swap_byte_order(format.sample, payload, body);
        Ok((native, body))
    }

    /// 64-bit frame index and 32-bit sequence number of a packet of `h.ssrc`.
    fn extend(&mut self, h: &RtpHeader) -> (u64, u32) {
        let slot = match self.sources.iter().position(|s| s.used && s.ssrc == h.ssrc) {
            Some(i) => i,
            None => {
                let i = self.next_slot;
                self.next_slot = (i + 1) % TRACKED_SOURCES;
                self.sources[i] = SourceState {
                    used: true,
                    ssrc: h.ssrc,
                    last_ts: h.timestamp,
                    last_frame: (1u64 << 32) + h.timestamp as u64,
                    last_seq: h.seq,
                    ext_seq: h.seq as u32,
                };
                return (self.sources[i].last_frame, self.sources[i].ext_seq);
            }
        };
        let s = &mut self.sources[slot];
        let dt = h.timestamp.wrapping_sub(s.last_ts) as i32 as i64;
        let frame = (s.last_frame as i64).saturating_add(dt).max(0) as u64;
        let ds = h.seq.wrapping_sub(s.last_seq) as i16 as i32;
        let seq = (s.ext_seq as i64 + ds as i64) as u32;
        if dt > 0 {
            s.last_ts = h.timestamp;
            s.last_frame = frame;
        }
        if ds > 0 {
            s.last_seq = h.seq;
            s.ext_seq = seq;
        }
        (frame, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;
    use crate::rtp::RtpSender;
    use crate::wire::Packet;

    fn f(rate: u32, ch: u8, s: SampleFormat) -> StreamFormat {
        StreamFormat::new(rate, ch, s).unwrap()
    }

    #[test]
    fn translation_restores_the_native_packet() {
        let fmt = f(48_000, 2, SampleFormat::S16Le);
        let mut s = RtpSender::new(fmt, 300, 7, 100, u32::MAX - 299).unwrap();
        let mut t = RtpTranslator::new(fmt).unwrap();
        let captured: Vec<u8> = (0..300 * 4).map(|i| (i * 7) as u8).collect();
        let mut frames = Vec::new();
        for _ in 0..2 {
            s.packetize(&captured, |h, p| {
                let mut d = h.to_vec();
                d.extend_from_slice(p);
                let native = t.translate(&d).unwrap();
                let pk = Packet::new_checked(native).unwrap();
                assert_eq!(pk.header().stream_id, 7);
                assert_eq!(pk.header().format, fmt);
                assert_eq!(pk.payload(), &captured[..]);
                frames.push(pk.header().first_frame);
            });
        }
        // The timestamp wrapped between the two: frame indices still count up.
        assert_eq!(frames[1] - frames[0], 300);
        assert_eq!(frames[0], (1 << 32) + (u32::MAX - 299) as u64);
    }

    #[test]
    fn rejections_are_typed() {
        let fmt = f(48_000, 2, SampleFormat::S16Le);
        let mut t = RtpTranslator::new(fmt).unwrap();
        let h = |pt: u8| {
            RtpHeader {
                marker: false,
                payload_type: pt,
                seq: 0,
                timestamp: 0,
                ssrc: 1,
            }
            .to_bytes()
            .to_vec()
        };
        assert_eq!(
            t.translate(&[0x80, 96]).unwrap_err(),
            RtpError::Truncated { len: 2, needed: 12 }
        );
        let mut d = h(96);
        d[0] = 0x40;
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::BadVersion(1));
        assert_eq!(t.translate(&h(96)).unwrap_err(), RtpError::NoPayload);
        let mut d = h(0);
        d.extend_from_slice(&[0; 4]);
        assert_eq!(
            t.translate(&d).unwrap_err(),
            RtpError::UnsupportedPayloadType(0)
        );
        let mut d = h(96);
        d.extend_from_slice(&[0; 6]);
        assert_eq!(
            t.translate(&d).unwrap_err(),
            RtpError::PartialFrame {
                payload_len: 6,
                frame_bytes: 4
            }
        );
        let mut d = h(96);
        d[1] = 200;
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::Rtcp(200));
        let mut d = h(96);
        d[0] |= 0x20;
        d.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(t.translate(&d).unwrap_err(), RtpError::BadPadding(9));
        assert_eq!(
            t.translate(&vec![0x80; MAX_RTP_DATAGRAM + 1]).unwrap_err(),
            RtpError::TooLong {
                len: MAX_RTP_DATAGRAM + 1
            }
        );
        assert!(RtpTranslator::new(f(48_000, 2, SampleFormat::S32Le)).is_err());
    }

    #[test]
    fn static_payload_types_carry_their_own_format() {
        // A receiver at 48 kHz gets PT 10 (44.1 kHz): the native packet says 44.1 kHz, and the
        // receiver refuses it as a format mismatch.
        let mut t = RtpTranslator::new(f(48_000, 2, SampleFormat::S16Le)).unwrap();
        let mut d = RtpHeader {
            marker: true,
            payload_type: 10,
            seq: 0,
            timestamp: 0,
            ssrc: 1,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[0; 8]);
        let native = t.translate(&d).unwrap();
        let pk = Packet::new_checked(native).unwrap();
        assert_eq!(pk.header().format, f(44_100, 2, SampleFormat::S16Le));
        assert_eq!(pk.header().frames, 2);
    }
}
