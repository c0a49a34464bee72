//! The packetizer: captured frames in, packets out, samples never copied.
//!
//! The sender hands out packets as a header (32 bytes, built on the caller's stack) plus a
//! slice of the capture buffer itself. A driver writes both with one gather write
//! (`sendmsg` with two iovecs), so the samples go from the device's mmap area to the socket
//! with no copy in user space.
//!
//! With a key ([`Sender::with_auth`]) each packet also gets the authentication extension and a
//! tag (see [`crate::auth`]): [`Sender::packetize_tagged`] hands out (header + extension on the
//! stack, payload slice, tag on the stack) for a three-iovec `sendmsg`; the tag is computed
//! with an incremental keyed BLAKE3 hasher over the two slices, so still nothing is copied.
//!
//! With [`Sender::with_capture_time`] each packet also carries its capture time (flag
//! [`Flags::TIMED`], see [`crate::wire`]): the driver tells the sender when the period's first
//! frame was captured ([`Sender::set_capture_time`]) and each packet's time follows from its
//! frame offset at the nominal rate. Off by default.
//!
//! A clean stop ends the stream with [`END_COPIES`] END packets ([`Sender::end_packet`]): no
//! payload, the index where the stream ends, each with its own sequence number (and, with a
//! key, its own tag), so that one lost datagram does not turn the stop into a gap and no copy is
//! taken for a replay.
//!
//! Realtime contract: no allocation, no syscall, no blocking; `packetize` is O(packets).

use crate::auth::{self, AuthExt, Key};
use crate::format::StreamFormat;
use crate::wire::{CAPTURE_TIME_LEN, Flags, HEADER_LEN, MAX_PACKET_LEN, PacketHeader};
use core::fmt;

/// Why a sender cannot be made for a format and period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderError {
    /// A period of zero frames.
    ZeroPeriod,
    /// One frame alone does not fit a datagram.
    FrameTooLarge {
        /// Bytes per frame.
        frame_bytes: usize,
    },
}

impl fmt::Display for SenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("period of 0 frames; use at least 16"),
            Self::FrameTooLarge { frame_bytes } => write!(
                f,
                "a frame of {frame_bytes} bytes does not fit a {MAX_PACKET_LEN}-byte datagram; use fewer channels"
            ),
        }
    }
}

impl std::error::Error for SenderError {}

/// Turns periods of captured frames into packets.
#[derive(Clone, Debug)]
pub struct Sender {
    format: StreamFormat,
    stream_id: u32,
    seq: u32,
    next_frame: u64,
    period: usize,
    frames_per_packet: usize,
    flags: Flags,
    tag_len: u8,
    auth: Option<SenderAuth>,
    /// Capture time (sender clock, ns) of frame `capture_frame`, when packets are timed.
    capture: Option<(u64, u64)>,
    /// The floor under the capture instants the driver reads (when the device took them).
    capture_clock: crate::sync::DeviceClock,
}

/// The key and the wall-clock fields of an authenticated sender.
#[derive(Clone, Debug)]
struct SenderAuth {
    key: Key,
    ext: AuthExt,
}

/// Header, capture time and authentication extension, the most a sender puts before the
/// payload.
pub const MAX_HEAD_LEN: usize = HEADER_LEN + CAPTURE_TIME_LEN + auth::EXT_LEN;

/// END packets a clean stop sends (see [`Sender::end_packet`]).
pub const END_COPIES: usize = 3;

impl Sender {
    /// A sender for `format` whose capture periods hold `period` frames. Each period is split
    /// into equal packets small enough for one datagram. `stream_id` must be new for each
    /// start (the receiver resyncs on a new id); `first_seq` is where sequence numbers begin.
    pub fn new(
        format: StreamFormat,
        period: usize,
        stream_id: u32,
        first_seq: u32,
    ) -> Result<Sender, SenderError> {
        Ok(Sender {
            format,
            stream_id,
            seq: first_seq,
            next_frame: 0,
            period,
            frames_per_packet: frames_per_packet(format, period, 0)?,
            flags: Flags::default(),
            tag_len: 0,
            auth: None,
            capture: None,
            capture_clock: crate::sync::DeviceClock::new(format.rate),
        })
    }

    /// Stamps every packet with its capture time ([`Flags::TIMED`]; see
    /// [`set_capture_time`](Self::set_capture_time)). Packets may hold fewer frames to make
    /// room for it.
    pub fn with_capture_time(mut self) -> Result<Sender, SenderError> {
        self.frames_per_packet = frames_per_packet(self.format, self.period, CAPTURE_TIME_LEN)?;
        self.flags = self.flags.with(Flags::TIMED);
        self.capture = Some((0, self.next_frame));
        Ok(self)
    }

    /// Whether packets carry their capture time.
    pub fn is_timed(&self) -> bool {
        self.capture.is_some()
    }

    /// The capture time (sender clock, ns) of the next frame to be packetized, i.e. of the
    /// first frame of the period about to be handed over; call it once per period. Each
    /// packet's capture time is this plus its frames' offset at the nominal rate. Does
    /// nothing unless packets are timed.
    /// The instants given are read late by varying amounts; the floor under them
    /// ([`crate::sync::device`]) is when the device captured the frame.
    pub fn set_capture_time(&mut self, capture_ns: u64) {
        if self.capture.is_some() {
            let t = self.capture_clock.observe(capture_ns, self.next_frame);
            self.capture = Some((t, self.next_frame));
        }
    }

    /// The capture time of frame `frame` by the last [`set_capture_time`](Self::set_capture_time).
    fn capture_time_of(&self, frame: u64) -> Option<u64> {
        let (t, base) = self.capture?;
        let ns = frame.wrapping_sub(base) as u128 * 1_000_000_000 / self.format.rate as u128;
        Some(t.wrapping_add(ns as u64))
    }

    /// Bytes of extension each packet carries.
    fn ext_len(&self) -> usize {
        let time = if self.capture.is_some() {
            CAPTURE_TIME_LEN
        } else {
            0
        };
        let auth = if self.auth.is_some() {
            auth::EXT_LEN
        } else {
            0
        };
        time + auth
    }

    /// Writes the header for `frames` frames (advancing sequence and frame index) and the
    /// extension into `head`; returns the length written.
    fn next_head(&mut self, frames: usize, head: &mut [u8; MAX_HEAD_LEN]) -> usize {
        let time = self.capture_time_of(self.next_frame);
        let header = if frames == 0 {
            self.end_header()
        } else {
            self.next_header(frames)
        };
        head[..HEADER_LEN].copy_from_slice(&header);
        let mut at = HEADER_LEN;
        if let Some(t) = time {
            head[at..at + CAPTURE_TIME_LEN].copy_from_slice(&t.to_be_bytes());
            at += CAPTURE_TIME_LEN;
        }
        if let Some(a) = &self.auth {
            head[at..at + auth::EXT_LEN].copy_from_slice(&a.ext.to_bytes());
            at += auth::EXT_LEN;
        }
        at
    }

    /// Authenticates every packet with `key`. `session_ns` is the wall-clock time of this
    /// start (ns since the Unix epoch; it must grow from one start to the next), and
    /// [`set_wall_clock`](Self::set_wall_clock) keeps each packet's send time current.
    pub fn with_auth(mut self, key: Key, session_ns: u64) -> Sender {
        self.tag_len = auth::TAG_LEN as u8;
        self.auth = Some(SenderAuth {
            key,
            ext: AuthExt {
                session: session_ns,
                sent_at: session_ns,
            },
        });
        self
    }

    /// Whether packets carry a tag.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// A sender for a new start of the same stream setup (after the capture device came
    /// back): same format, period and key, a new stream id and session, sequence numbers
    /// going on.
    pub fn restarted(
        &self,
        period: usize,
        stream_id: u32,
        session_ns: u64,
    ) -> Result<Sender, SenderError> {
        let mut s = Sender::new(self.format, period, stream_id, self.seq)?;
        if self.is_timed() {
            s = s.with_capture_time()?;
        }
        Ok(match &self.auth {
            Some(a) => s.with_auth(a.key.clone(), session_ns),
            None => s,
        })
    }

    /// The wall-clock time (ns since the Unix epoch) written into the following packets;
    /// call it once per capture period. Does nothing without a key.
    pub fn set_wall_clock(&mut self, now_ns: u64) {
        if let Some(a) = self.auth.as_mut() {
            a.ext.sent_at = now_ns;
        }
    }

    /// The stream's format.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// This start's stream id.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Frames per packet (a period's last packet may hold fewer).
    pub fn frames_per_packet(&self) -> usize {
        self.frames_per_packet
    }

    /// Index the next captured frame will get.
    pub fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Sequence number of the next packet.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Marks every following packet with an `END` flag: each is then the stream's last (the
    /// receiver takes the stream to end after its frames). [`end_packet`](Self::end_packet) is
    /// the usual way to stop.
    pub fn set_ending(&mut self) {
        self.flags = self.flags.with(Flags::END);
    }

    /// The END packet of a clean stop, handed to `emit` as (header and extension, tag; the tag
    /// empty without a key): the datagram is the two concatenated. It carries no frames; its
    /// first frame index is where the stream ends (the next frame this sender would have
    /// sent). Each call takes a new sequence number: send [`END_COPIES`] of them.
    pub fn end_packet<F: FnOnce(&[u8], &[u8])>(&mut self, emit: F) {
        let mut head = [0u8; MAX_HEAD_LEN];
        let len = self.next_head(0, &mut head);
        let head = &head[..len];
        match &self.auth {
            Some(a) => emit(head, &a.key.tag(&[head])),
            None => emit(head, &[]),
        }
    }

    /// The header of an END packet; advances the sequence number.
    fn end_header(&mut self) -> [u8; HEADER_LEN] {
        let h = PacketHeader {
            flags: self.flags.with(Flags::END),
            stream_id: self.stream_id,
            seq: self.seq,
            first_frame: self.next_frame,
            format: self.format,
            frames: 0,
            ext_len: self.ext_len() as u16,
            tag_len: self.tag_len,
        };
        self.seq = self.seq.wrapping_add(1);
        h.to_bytes()
    }

    /// Skips `frames` frames of the stream (captured audio that was lost, e.g. in an overrun),
    /// so the receiver sees a hole in the right place instead of time running together.
    pub fn skip(&mut self, frames: u64) {
        self.next_frame = self.next_frame.wrapping_add(frames);
    }

    /// The header for the next packet of `frames` frames; advances sequence and frame index.
    pub fn next_header(&mut self, frames: usize) -> [u8; HEADER_LEN] {
        debug_assert!(frames > 0 && frames <= u16::MAX as usize);
        let h = PacketHeader {
            flags: self.flags,
            stream_id: self.stream_id,
            seq: self.seq,
            first_frame: self.next_frame,
            format: self.format,
            frames: frames as u16,
            ext_len: self.ext_len() as u16,
            tag_len: self.tag_len,
        };
        self.seq = self.seq.wrapping_add(1);
        self.next_frame = self.next_frame.wrapping_add(frames as u64);
        h.to_bytes()
    }

    /// Splits `captured` (whole interleaved frames in the stream format) into packets and
    /// hands each to `emit` as (header, payload), the payload being a sub-slice of `captured`.
    /// Returns the number of packets. Trailing bytes that do not make a whole frame are ignored.
    ///
    /// For a sender without a key; an authenticated one needs
    /// [`packetize_tagged`](Self::packetize_tagged) (here its packets would lack the
    /// extension and the tag, and every receiver would drop them).
    pub fn packetize<'a, F>(&mut self, captured: &'a [u8], mut emit: F) -> usize
    where
        F: FnMut(&[u8; HEADER_LEN], &'a [u8]),
    {
        debug_assert!(self.auth.is_none(), "use packetize_tagged with a key");
        self.packetize_tagged(captured, |head, payload, _| {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&head[..HEADER_LEN]);
            emit(&h, payload)
        })
    }

    /// As [`packetize`](Self::packetize), handing each packet to `emit` as (header and
    /// extension, payload, tag): the datagram is the three concatenated. Without a key the
    /// head is the bare header and the tag is empty.
    pub fn packetize_tagged<'a, F>(&mut self, captured: &'a [u8], mut emit: F) -> usize
    where
        F: FnMut(&[u8], &'a [u8], &[u8]),
    {
        let fb = self.format.frame_bytes();
        let mut frames = captured.len() / fb;
        let mut at = 0;
        let mut n = 0;
        let mut head = [0u8; MAX_HEAD_LEN];
        while frames > 0 {
            let take = frames.min(self.frames_per_packet);
            let len = self.next_head(take, &mut head);
            let payload = &captured[at..at + take * fb];
            match &self.auth {
                Some(a) => {
                    let tag = a.key.tag(&[&head[..len], payload]);
                    emit(&head[..len], payload, &tag);
                }
                None => emit(&head[..len], payload, &[]),
            }
            at += take * fb;
            frames -= take;
            n += 1;
        }
        n
    }
}

/// Frames per packet for periods of `period` frames, packets split equally, with `extra`
/// bytes of extension beyond the authentication's.
fn frames_per_packet(
    format: StreamFormat,
    period: usize,
    extra: usize,
) -> Result<usize, SenderError> {
    if period == 0 {
        return Err(SenderError::ZeroPeriod);
    }
    // Room for the authentication extension and tag (16 + 16) is kept whether or not there
    // is a key, so a keyed stream splits its periods as an unkeyed one does.
    let room = MAX_PACKET_LEN - HEADER_LEN - crate::wire::MAX_TAG_LEN - extra;
    let max_frames = (room / format.frame_bytes()).min(u16::MAX as usize);
    if max_frames == 0 {
        return Err(SenderError::FrameTooLarge {
            frame_bytes: format.frame_bytes(),
        });
    }
    let packets = period.div_ceil(max_frames);
    Ok(period.div_ceil(packets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;
    use crate::wire::Packet;

    #[test]
    fn packets_point_into_the_capture_buffer() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut s = Sender::new(f, 256, 7, u32::MAX - 1).unwrap();
        let buf: Vec<u8> = (0..256 * 4).map(|i| i as u8).collect();
        let mut seen = Vec::new();
        let n = s.packetize(&buf, |h, payload| {
            let hdr = crate::wire::PacketHeader::parse(h).unwrap();
            // The payload is the capture buffer itself, not a copy.
            assert!(std::ptr::eq(payload.as_ptr(), buf[..].as_ptr()));
            seen.push((hdr.seq, hdr.first_frame, hdr.frames));
        });
        assert_eq!(n, 1);
        assert_eq!(seen, vec![(u32::MAX - 1, 0, 256)]);
        s.packetize(&buf, |h, _| {
            let hdr = crate::wire::PacketHeader::parse(h).unwrap();
            seen.push((hdr.seq, hdr.first_frame, hdr.frames));
        });
        assert_eq!(seen[1], (u32::MAX, 256, 256));
        s.packetize(&buf, |_, _| {});
        assert_eq!(s.next_seq(), 1, "sequence numbers wrap");
    }

    #[test]
    fn large_periods_split_into_equal_datagrams() {
        let f = StreamFormat::new(96_000, 2, SampleFormat::S32Le).unwrap();
        let mut s = Sender::new(f, 512, 1, 0).unwrap();
        let buf = vec![0u8; 512 * 8];
        let mut sizes = Vec::new();
        s.packetize(&buf, |h, p| {
            let mut whole = h.to_vec();
            whole.extend_from_slice(p);
            assert!(whole.len() <= MAX_PACKET_LEN);
            let pkt = Packet::new_checked(&whole[..]).unwrap();
            sizes.push(pkt.header().frames);
        });
        assert_eq!(sizes.iter().map(|&x| x as usize).sum::<usize>(), 512);
        assert!(sizes.len() >= 3);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn keyed_packets_carry_the_extension_and_a_tag_over_everything_before_it() {
        use crate::auth::{AuthExt, EXT_LEN, KEY_LEN, Key, TAG_LEN};
        let f = StreamFormat::new(48_000, 2, SampleFormat::S32Le).unwrap();
        let key = Key::from_bytes([9; KEY_LEN]);
        let mut s = Sender::new(f, 512, 3, 0)
            .unwrap()
            .with_auth(key.clone(), 1000);
        s.set_wall_clock(2000);
        let buf: Vec<u8> = (0..512 * 8).map(|i| i as u8).collect();
        let mut n = 0;
        s.packetize_tagged(&buf, |head, payload, tag| {
            assert_eq!((head.len(), tag.len()), (HEADER_LEN + EXT_LEN, TAG_LEN));
            let whole = [head, payload, tag].concat();
            assert!(whole.len() <= MAX_PACKET_LEN);
            let p = Packet::new_checked(&whole[..]).unwrap();
            assert_eq!(
                AuthExt::parse(p.ext()),
                Some(AuthExt {
                    session: 1000,
                    sent_at: 2000
                })
            );
            assert!(key.verify(p.authenticated(), p.tag()));
            assert!(std::ptr::eq(payload.as_ptr(), buf[..].as_ptr()) || n > 0);
            n += 1;
        });
        assert!(n >= 3);
        let r = s.restarted(512, 4, 5000).unwrap();
        assert!(r.is_authenticated());
        assert_eq!((r.stream_id(), r.next_seq(), r.next_frame()), (4, n, 0));
    }

    #[test]
    fn end_packets_say_where_the_stream_ends_each_with_its_own_sequence_number() {
        use crate::auth::{AuthExt, EXT_LEN, KEY_LEN, Key, TAG_LEN};
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut s = Sender::new(f, 256, 7, u32::MAX).unwrap();
        s.packetize(&[0u8; 256 * 4], |_, _| {});
        let mut seen = Vec::new();
        for _ in 0..END_COPIES {
            s.end_packet(|head, tag| {
                assert!(tag.is_empty());
                let p = Packet::new_checked(head).unwrap();
                let h = *p.header();
                assert!(h.is_end_marker());
                assert_eq!((h.stream_id, h.first_frame, h.frames), (7, 256, 0));
                seen.push(h.seq);
            });
        }
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(s.next_frame(), 256, "an END takes no frames");

        let key = Key::from_bytes([4; KEY_LEN]);
        let mut s = Sender::new(f, 256, 8, 0)
            .unwrap()
            .with_auth(key.clone(), 1000);
        s.set_wall_clock(3000);
        s.packetize_tagged(&[0u8; 256 * 4], |_, _, _| {});
        s.end_packet(|head, tag| {
            assert_eq!((head.len(), tag.len()), (HEADER_LEN + EXT_LEN, TAG_LEN));
            let whole = [head, tag].concat();
            let p = Packet::new_checked(&whole[..]).unwrap();
            assert!(p.header().is_end_marker());
            assert_eq!((p.header().seq, p.header().end_frame()), (1, 256));
            assert_eq!(
                AuthExt::parse(p.ext()),
                Some(AuthExt {
                    session: 1000,
                    sent_at: 3000
                })
            );
            assert!(key.verify(p.authenticated(), p.tag()));
        });
    }

    #[test]
    fn timed_packets_carry_their_capture_time_then_the_authentication_extension() {
        use crate::auth::{AuthExt, EXT_LEN, KEY_LEN, Key, TAG_LEN};
        let f = StreamFormat::new(48_000, 2, SampleFormat::S32Le).unwrap();
        for key in [None, Some(Key::from_bytes([3; KEY_LEN]))] {
            let mut s = Sender::new(f, 1024, 3, 0).unwrap();
            if let Some(k) = &key {
                s = s.with_auth(k.clone(), 1000);
                s.set_wall_clock(2000);
            }
            let mut s = s.with_capture_time().unwrap();
            assert!(s.is_timed());
            s.skip(480);
            s.set_capture_time(5_000_000_000);
            let buf = vec![7u8; 1024 * 8];
            let mut seen = Vec::new();
            s.packetize_tagged(&buf, |head, payload, tag| {
                let whole = [head, payload, tag].concat();
                assert!(whole.len() <= MAX_PACKET_LEN);
                let p = Packet::new_checked(&whole[..]).unwrap();
                let h = *p.header();
                assert!(h.flags.contains(Flags::TIMED));
                let expect = 5_000_000_000 + (h.first_frame - 480) * 1_000_000_000 / 48_000;
                assert_eq!(p.capture_time(), Some(expect));
                match &key {
                    Some(k) => {
                        assert_eq!((head.len(), tag.len()), (MAX_HEAD_LEN, TAG_LEN));
                        assert_eq!(
                            AuthExt::parse(p.ext_after_time()),
                            Some(AuthExt {
                                session: 1000,
                                sent_at: 2000
                            })
                        );
                        assert!(k.verify(p.authenticated(), p.tag()));
                    }
                    None => assert_eq!(p.ext().len(), CAPTURE_TIME_LEN),
                }
                seen.push(h.frames as usize);
            });
            assert_eq!(seen.iter().sum::<usize>(), 1024);
            assert!(seen.len() >= 6, "{seen:?}");
            let mut end = 0;
            s.end_packet(|head, tag| {
                let whole = [head, tag].concat();
                let p = Packet::new_checked(&whole[..]).unwrap();
                assert!(p.header().is_end_marker());
                let expect = 5_000_000_000 + 1024 * 1_000_000_000 / 48_000;
                assert_eq!(p.capture_time(), Some(expect));
                assert_eq!(
                    p.ext_after_time().len(),
                    key.as_ref().map_or(0, |_| EXT_LEN)
                );
                end += 1;
            });
            assert_eq!(end, 1);
            let r = s.restarted(1024, 4, 5000).unwrap();
            assert!(r.is_timed() && r.is_authenticated() == key.is_some());
        }
        // Untimed senders are as before: no flag, no capture time, the same split.
        let plain = Sender::new(f, 1024, 3, 0).unwrap();
        assert!(!plain.is_timed());
        let mut p = plain.clone();
        p.set_capture_time(1);
        p.packetize(&[0u8; 1024 * 8], |h, _| {
            let h = PacketHeader::parse(h).unwrap();
            assert!(!h.flags.contains(Flags::TIMED) && h.ext_len == 0);
        });
        let timed = plain.clone().with_capture_time().unwrap();
        assert!(timed.frames_per_packet() <= plain.frames_per_packet());
    }

    #[test]
    fn rejects_impossible_setups() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        assert_eq!(
            Sender::new(f, 0, 1, 0).unwrap_err(),
            SenderError::ZeroPeriod
        );
    }
}
