//! A receiver (48 kHz stereo S16, period 64, target 10 ms) driven by arbitrary datagrams and
//! renders at non-decreasing timestamps. It must never panic.
//!
//! Input layout: the first byte picks the drift mode (`% 3`) and, with bit 7 set, puts the
//! receiver on a key: generated packets are then tagged (see `engine::auth`), raw datagrams
//! meet the tag check first. Then a sequence of operations, each a code byte followed by its
//! arguments (missing bytes read as 0):
//!
//! * `0`: raw datagram: `len: u16 LE` (mod 1500), then up to `len` bytes.
//! * `1`: packet in the receiver's format: `stream: u8` (mod 4), `flags: u8`, `pos: u8`
//!   (even: `delta: i16 LE` after that stream's last packet; odd: absolute `first_frame:
//!   u64 LE`), `frames: u16 LE` (1..=347; with the END flag an even value makes an END
//!   packet, no frames), `fill: u8` (payload pattern seed; bit 7 set:
//!   full scale, else within a quarter of it), `dt: u8` (x 20 us). With a key, `flags` bit 6
//!   set flips a bit of the tag (a forgery), and the stream's session is its number, so
//!   higher streams are newer; the send time is `now` shifted by `pos >> 1` (signed) x 200 ms (stale when
//!   far off).
//! * `2`: render: `n: u8` (bit 7 set: one period; else `2 n` frames), `dt: u16 LE` (us).
//! * `3`: in-step stream: `count: u8` (mod 16, plus 1) periods of stream 0 in order, each
//!   followed by a render of one period, 64 frames of time apart; `fill: u8` as above.
//!
//! With the `avoid-known-bugs` feature, generated packets keep frame indices below 2^62 and
//! samples within a quarter of full scale.

#![no_main]

use engine::auth::{self, AuthExt, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::rng::mix64;
use engine::wire::{Flags, HEADER_LEN, PacketHeader};
use libfuzzer_sys::fuzz_target;

const RATE: u32 = 48_000;
const PERIOD: usize = 64;
const TARGET_MS: f64 = 10.0;
const MAX_DATAGRAM: usize = 1500;
/// Most frames a packet in this format carries in one datagram.
const MAX_FRAMES: u16 = 347;
const STREAMS: usize = 4;
const MAX_OPS: usize = 256;

struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

fn format() -> StreamFormat {
    StreamFormat::new(RATE, 2, SampleFormat::S16Le).expect("valid format")
}

/// Nanoseconds `frames` frames last.
fn frames_ns(frames: u64) -> u64 {
    frames * 1_000_000_000 / RATE as u64
}

/// Authentication of generated packets: the key, and the extension to write.
struct Tagging<'k> {
    key: &'k Key,
    ext: AuthExt,
    forge: bool,
}

/// Writes a packet of `frames` frames into `buf` and returns its length.
#[allow(clippy::too_many_arguments)]
fn packet(
    buf: &mut [u8],
    flags: Flags,
    stream_id: u32,
    seq: u32,
    first_frame: u64,
    frames: u16,
    fill: u8,
    tagging: Option<Tagging<'_>>,
) -> usize {
    let (ext_len, tag_len) = match tagging {
        Some(_) => (auth::EXT_LEN, auth::TAG_LEN),
        None => (0, 0),
    };
    let h = PacketHeader {
        flags,
        stream_id,
        seq,
        first_frame,
        format: format(),
        frames,
        ext_len: ext_len as u16,
        tag_len: tag_len as u8,
    };
    let len = h.packet_len();
    h.emit((&mut buf[..HEADER_LEN]).try_into().expect("header slice"));
    let loud = fill & 0x80 != 0 && !cfg!(feature = "avoid-known-bugs");
    let shift = if loud { 0 } else { 2 };
    let seed = (u64::from(fill) << 56) ^ first_frame;
    let payload = HEADER_LEN + ext_len..len - tag_len;
    for (i, s) in buf[payload].chunks_exact_mut(2).enumerate() {
        let v = (mix64(seed ^ i as u64) as i16) >> shift;
        s.copy_from_slice(&v.to_le_bytes());
    }
    if let Some(t) = tagging {
        buf[HEADER_LEN..HEADER_LEN + ext_len].copy_from_slice(&t.ext.to_bytes());
        let mut tag = t.key.tag(&[&buf[..len - tag_len]]);
        if t.forge {
            tag[0] ^= 1;
        }
        buf[len - tag_len..len].copy_from_slice(&tag);
    }
    len
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let first = input.u8();
    let mode = DriftMode::ALL[(first & 0x7F) as usize % DriftMode::ALL.len()];
    let mut cfg = ReceiverConfig::new(format(), PERIOD, TARGET_MS);
    cfg.drift_mode = mode;
    let key = Key::from_bytes([0x42; auth::KEY_LEN]);
    let keyed = first & 0x80 != 0;
    let mut rx = Receiver::new(cfg).expect("valid receiver config");
    if keyed {
        rx = rx.with_auth(key.clone());
    }
    let tagging = |stream: usize, now: u64, shift: i64, forge: bool| {
        keyed.then(|| Tagging {
            key: &key,
            ext: AuthExt {
                session: stream as u64 + 1,
                sent_at: now.wrapping_add_signed(shift * 200_000_000),
            },
            forge,
        })
    };

    let fb = format().frame_bytes();
    let mut out = vec![0u8; 256 * fb];
    let mut buf = vec![0u8; HEADER_LEN + auth::EXT_LEN + MAX_FRAMES as usize * fb + auth::TAG_LEN];
    let mut now = 0u64;
    let mut next_frame = [0u64; STREAMS];
    let mut seq = [0u32; STREAMS];

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 4 {
            0 => {
                let len = input.u16() as usize % MAX_DATAGRAM;
                let bytes = input.bytes(len);
                rx.on_packet(bytes, now);
            }
            1 => {
                let s = input.u8() as usize % STREAMS;
                let flags = Flags(input.u8());
                let pos = input.u8();
                let mut first = if pos & 1 == 0 {
                    let delta = input.u16() as i16;
                    next_frame[s].wrapping_add_signed(i64::from(delta))
                } else {
                    input.u64()
                };
                if cfg!(feature = "avoid-known-bugs") {
                    first &= (1 << 62) - 1;
                }
                let raw = input.u16();
                let frames = if flags.contains(Flags::END) && raw % 2 == 0 {
                    0
                } else {
                    raw % MAX_FRAMES + 1
                };
                let fill = input.u8();
                now = now.saturating_add(u64::from(input.u8()) * 20_000);
                let tag = tagging(s, now, (pos as i8 >> 1) as i64, flags.0 & 0x40 != 0);
                let len = packet(&mut buf, flags, s as u32, seq[s], first, frames, fill, tag);
                seq[s] = seq[s].wrapping_add(1);
                next_frame[s] = first.wrapping_add(u64::from(frames));
                rx.on_packet(&buf[..len], now);
            }
            2 => {
                let n = input.u8();
                let frames = if n & 0x80 != 0 {
                    PERIOD
                } else {
                    2 * n as usize
                };
                now = now.saturating_add(u64::from(input.u16()) * 1_000);
                rx.render(&mut out[..frames * fb], now);
            }
            _ => {
                let count = input.u8() % 16 + 1;
                let fill = input.u8();
                for _ in 0..count {
                    now = now.saturating_add(frames_ns(PERIOD as u64));
                    let first = next_frame[0];
                    let len = packet(
                        &mut buf,
                        Flags::default(),
                        0,
                        seq[0],
                        first,
                        PERIOD as u16,
                        fill,
                        tagging(0, now, 0, false),
                    );
                    seq[0] = seq[0].wrapping_add(1);
                    next_frame[0] = first.wrapping_add(PERIOD as u64);
                    rx.on_packet(&buf[..len], now);
                    rx.render(&mut out[..PERIOD * fb], now);
                }
            }
        }
    }
});
