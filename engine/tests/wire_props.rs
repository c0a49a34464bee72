//! Properties of the wire codec: parsing is total, emit and parse are inverse, and every
//! rejection names what is wrong.

use engine::format::{MAX_CHANNELS, MAX_RATE, MIN_RATE, SampleFormat, StreamFormat};
use engine::wire::{
    Flags, HEADER_LEN, MAGIC, MAX_PACKET_LEN, MAX_TAG_LEN, Packet, PacketHeader, VERSION, WireError,
};
use proptest::prelude::*;

/// Byte 31 of the header is reserved: emitted as 0, ignored on parse.
const RESERVED: usize = 31;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn sample_format() -> impl Strategy<Value = SampleFormat> {
    prop::sample::select(SampleFormat::ALL.to_vec())
}

fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(MIN_RATE),
        Just(MAX_RATE),
        prop::sample::select(vec![
            11_025, 22_050, 44_100, 48_000, 88_200, 96_000, 192_000
        ]),
        MIN_RATE..=MAX_RATE,
    ]
}

fn stream_format() -> impl Strategy<Value = StreamFormat> {
    (rate(), 1..=MAX_CHANNELS, sample_format())
        .prop_map(|(r, c, s)| StreamFormat::new(r, c, s).expect("in range"))
}

fn seq() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 64)..=u32::MAX, 0u32..64]
}

fn first_frame() -> impl Strategy<Value = u64> {
    let i64_max = i64::MAX as u64;
    prop_oneof![
        any::<u64>(),
        0u64..(1 << 32),
        (i64_max - 1024)..=(i64_max + 1024),
        (u64::MAX - 1024)..=u64::MAX,
    ]
}

fn flags() -> impl Strategy<Value = Flags> {
    prop_oneof![
        Just(Flags::default()),
        Just(Flags::END),
        Just(Flags::REPAIR),
        Just(Flags::END.with(Flags::REPAIR)),
        any::<u8>().prop_map(Flags),
    ]
}

/// Any header the parser accepts, with no bound on the packet length it announces.
fn any_header() -> impl Strategy<Value = PacketHeader> {
    (
        flags(),
        any::<u32>(),
        seq(),
        first_frame(),
        stream_format(),
        prop_oneof![1u16..=512, Just(u16::MAX), 1..=u16::MAX],
        prop_oneof![Just(0u16), any::<u16>()],
        0..=MAX_TAG_LEN as u8,
    )
        .prop_map(
            |(flags, stream_id, seq, first_frame, format, frames, ext_len, tag_len)| PacketHeader {
                flags,
                stream_id,
                seq,
                first_frame,
                format,
                frames,
                ext_len,
                tag_len,
            },
        )
}

/// A header whose whole packet fits one datagram of [`MAX_PACKET_LEN`] bytes.
fn fitting_header() -> impl Strategy<Value = PacketHeader> {
    (
        flags(),
        any::<u32>(),
        seq(),
        first_frame(),
        stream_format(),
        0..=MAX_TAG_LEN as u8,
    )
        .prop_flat_map(|(flags, stream_id, seq, first_frame, format, tag_len)| {
            let fb = format.frame_bytes();
            let room = MAX_PACKET_LEN - HEADER_LEN - tag_len as usize;
            let max_frames = room / fb;
            (1..=max_frames).prop_flat_map(move |frames| {
                let max_ext = room - frames * fb;
                (0..=max_ext).prop_map(move |ext_len| PacketHeader {
                    flags,
                    stream_id,
                    seq,
                    first_frame,
                    format,
                    frames: frames as u16,
                    ext_len: ext_len as u16,
                    tag_len,
                })
            })
        })
}

/// The bytes of a whole packet for `h`, with a body derived from `seed`.
fn packet_bytes(h: &PacketHeader, seed: u8) -> Vec<u8> {
    let mut v = h.to_bytes().to_vec();
    let body = h.packet_len() - HEADER_LEN;
    v.extend((0..body).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

fn valid_packet() -> impl Strategy<Value = Vec<u8>> {
    (fitting_header(), any::<u8>()).prop_map(|(h, seed)| packet_bytes(&h, seed))
}

/// Byte strings: mostly noise, some with a valid magic and version so parsing goes deeper.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=MAX_PACKET_LEN + 64),
        prop::collection::vec(any::<u8>(), 0..=HEADER_LEN + 1),
        prop::collection::vec(any::<u8>(), HEADER_LEN..=MAX_PACKET_LEN).prop_map(|mut v| {
            v[..2].copy_from_slice(&MAGIC.to_be_bytes());
            v[2] = VERSION;
            v
        }),
        // A plausible header over a body whose length is right or a few bytes off.
        (
            prop::collection::vec(any::<u8>(), HEADER_LEN..=HEADER_LEN + 8),
            (
                1u8..=8,
                1u8..=3,
                // 0 frames: an END packet when byte 3 has the END bit, an error otherwise.
                0u16..=64,
                0u16..=16,
                0u8..=MAX_TAG_LEN as u8
            ),
            prop_oneof![3 => Just(0isize), 1 => -2isize..=2],
            any::<u8>(),
        )
            .prop_map(|(mut v, (ch, fmt, frames, ext, tag), delta, fill)| {
                v[..2].copy_from_slice(&MAGIC.to_be_bytes());
                v[2] = VERSION;
                v[20..24].copy_from_slice(&48_000u32.to_be_bytes());
                v[24] = ch;
                v[25] = fmt;
                v[26..28].copy_from_slice(&frames.to_be_bytes());
                v[28..30].copy_from_slice(&ext.to_be_bytes());
                v[30] = tag;
                let sample = SampleFormat::from_code(fmt).map_or(1, SampleFormat::bytes);
                let len = HEADER_LEN
                    + ext as usize
                    + frames as usize * ch as usize * sample
                    + tag as usize;
                v.resize(len.saturating_add_signed(delta), fill);
                v
            }),
    ]
}

/// Checks everything a successfully parsed packet promises about `bytes`.
fn check_accepted(bytes: &[u8], p: &Packet<&[u8]>) -> Result<(), TestCaseError> {
    let h = *p.header();
    prop_assert_eq!(h.packet_len(), bytes.len());
    prop_assert_eq!(h.payload_len(), h.frames as usize * h.format.frame_bytes());
    // No frames only for an END packet (the stream's end marker).
    prop_assert!(h.frames > 0 || h.flags.contains(Flags::END));
    prop_assert_eq!(h.is_end_marker(), h.frames == 0);
    prop_assert!(h.tag_len as usize <= MAX_TAG_LEN);
    prop_assert!(StreamFormat::new(h.format.rate, h.format.channels, h.format.sample).is_some());
    let ext = HEADER_LEN..HEADER_LEN + h.ext_len as usize;
    let payload = ext.end..ext.end + h.payload_len();
    let tag = payload.end..bytes.len();
    prop_assert_eq!(p.ext(), &bytes[ext]);
    prop_assert_eq!(p.payload(), &bytes[payload.clone()]);
    prop_assert_eq!(p.tag(), &bytes[tag]);
    prop_assert_eq!(p.tag().len(), h.tag_len as usize);
    prop_assert_eq!(p.authenticated(), &bytes[..payload.end]);
    // The header re-emits to the bytes it was parsed from, bar the reserved byte.
    let emitted = h.to_bytes();
    prop_assert_eq!(&emitted[..RESERVED], &bytes[..RESERVED]);
    prop_assert_eq!(emitted[RESERVED], 0);
    prop_assert_eq!(PacketHeader::parse(&emitted), Ok(h));
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Overwrite { at: usize, byte: u8 },
    Truncate { keep: usize },
    Extend { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        // Header bytes are where parsing decides: hit them often.
        4 => (0..HEADER_LEN, any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn apply(v: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, bit } if !v.is_empty() => {
            let i = at % v.len();
            v[i] ^= 1 << bit;
        }
        Mutation::Overwrite { at, byte } if !v.is_empty() => {
            let i = at % v.len();
            v[i] = *byte;
        }
        Mutation::Truncate { keep } => {
            let n = keep % (v.len() + 1);
            v.truncate(n);
        }
        Mutation::Extend { bytes } => v.extend_from_slice(bytes),
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_bytes_parse_without_panic(bytes in datagram()) {
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            check_accepted(&bytes, &p)?;
        }
        // The header parser alone is total too, and agrees with the packet parser.
        match (PacketHeader::parse(&bytes), Packet::new_checked(&bytes[..])) {
            (Ok(h), Ok(p)) => prop_assert_eq!(h, *p.header()),
            (Ok(h), Err(e)) => prop_assert_eq!(
                e,
                WireError::LengthMismatch { expected: h.packet_len(), actual: bytes.len() }
            ),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (Err(e), Ok(_)) => prop_assert!(false, "header rejected ({e}) but packet accepted"),
        }
    }

    #[test]
    fn header_emit_parse_round_trips(h in any_header(), reserved in any::<u8>()) {
        let mut bytes = [0xA5u8; HEADER_LEN];
        h.emit(&mut bytes);
        prop_assert_eq!(bytes, h.to_bytes());
        prop_assert_eq!(bytes[RESERVED], 0);
        prop_assert_eq!(PacketHeader::parse(&bytes), Ok(h));
        // The reserved byte is not looked at.
        bytes[RESERVED] = reserved;
        prop_assert_eq!(PacketHeader::parse(&bytes), Ok(h));
        // Trailing bytes are not looked at by the header parser.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[reserved; 5]);
        prop_assert_eq!(PacketHeader::parse(&longer), Ok(h));
    }

    #[test]
    fn whole_packet_round_trips(h in fitting_header(), seed in any::<u8>()) {
        let bytes = packet_bytes(&h, seed);
        prop_assert!(bytes.len() <= MAX_PACKET_LEN);
        prop_assert_eq!(bytes.len(), h.packet_len());
        let p = Packet::new_checked(&bytes[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(*p.header(), h);
        check_accepted(&bytes, &p)?;
        // An owned buffer gives the same view and hands the buffer back unchanged.
        let owned = Packet::new_checked(bytes.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(*owned.header(), h);
        prop_assert_eq!(owned.payload(), p.payload());
        prop_assert_eq!(owned.into_inner(), bytes);
    }

    #[test]
    fn end_markers_round_trip(
        h in fitting_header(),
        extra in any::<u8>(),
        seed in any::<u8>(),
    ) {
        let h = PacketHeader { flags: Flags(extra).with(Flags::END), frames: 0, ..h };
        let bytes = packet_bytes(&h, seed);
        prop_assert_eq!(bytes.len(), HEADER_LEN + h.ext_len as usize + h.tag_len as usize);
        let p = Packet::new_checked(&bytes[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(*p.header(), h);
        prop_assert!(p.header().is_end_marker());
        prop_assert_eq!(p.header().end_frame(), h.first_frame);
        prop_assert!(p.payload().is_empty());
        check_accepted(&bytes, &p)?;
        // The same header without the END bit is no packet.
        let mut plain = bytes.clone();
        plain[3] &= !Flags::END.0;
        prop_assert_eq!(Packet::new_checked(&plain[..]).unwrap_err(), WireError::NoFrames);
    }

    #[test]
    fn mutated_packets_never_panic(
        original in valid_packet(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            check_accepted(&bytes, &p)?;
            // Same length and an unchanged header: the same header comes out.
            if bytes.len() == original.len() && bytes[..RESERVED] == original[..RESERVED] {
                prop_assert_eq!(Ok(*p.header()), PacketHeader::parse(&original));
            }
        }
    }
}

/// A valid packet's bytes, from which each error case corrupts one field.
fn base() -> (PacketHeader, Vec<u8>) {
    let h = PacketHeader {
        flags: Flags::default(),
        stream_id: 7,
        seq: 1,
        first_frame: 0,
        format: StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
        frames: 16,
        ext_len: 0,
        tag_len: 0,
    };
    let bytes = packet_bytes(&h, 0);
    (h, bytes)
}

fn rejected(bytes: &[u8]) -> Result<WireError, TestCaseError> {
    match Packet::new_checked(bytes) {
        Ok(p) => Err(TestCaseError::fail(format!(
            "accepted a bad packet: {:?}",
            p.header()
        ))),
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(e)
        }
    }
}

fn mentions(e: &WireError, what: &str) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(
        text.contains(what),
        "{:?} prints {:?}, which does not mention {:?}",
        e,
        text,
        what
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn truncated_is_reported(len in 0..HEADER_LEN) {
        let (_, bytes) = base();
        let e = rejected(&bytes[..len])?;
        prop_assert_eq!(e, WireError::Truncated { len });
        mentions(&e, &format!("{len} bytes"))?;
    }

    #[test]
    fn bad_magic_is_reported(magic in any::<u16>().prop_filter("not the magic", |m| *m != MAGIC)) {
        let (_, mut bytes) = base();
        bytes[0..2].copy_from_slice(&magic.to_be_bytes());
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::BadMagic(magic));
        mentions(&e, &format!("{magic:#06x}"))?;
    }

    #[test]
    fn bad_version_is_reported(v in any::<u8>().prop_filter("not ours", |v| *v != VERSION)) {
        let (_, mut bytes) = base();
        bytes[2] = v;
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::UnsupportedVersion(v));
        mentions(&e, &v.to_string())?;
    }

    #[test]
    fn bad_format_is_reported(
        code in any::<u8>().prop_filter("unknown", |c| SampleFormat::from_code(*c).is_none()),
    ) {
        let (_, mut bytes) = base();
        bytes[25] = code;
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::BadFormat(code));
        mentions(&e, &code.to_string())?;
    }

    #[test]
    fn bad_channels_are_reported(ch in prop_oneof![Just(0u8), (MAX_CHANNELS + 1)..=u8::MAX]) {
        let (_, mut bytes) = base();
        bytes[24] = ch;
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::BadChannels(ch));
        mentions(&e, &ch.to_string())?;
    }

    #[test]
    fn bad_rate_is_reported(rate in prop_oneof![0..MIN_RATE, (MAX_RATE + 1)..=u32::MAX]) {
        let (_, mut bytes) = base();
        bytes[20..24].copy_from_slice(&rate.to_be_bytes());
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::BadRate(rate));
        mentions(&e, &rate.to_string())?;
    }

    #[test]
    fn no_frames_is_reported(rest in prop::collection::vec(any::<u8>(), 0..64)) {
        let (_, mut bytes) = base();
        bytes[26..28].copy_from_slice(&0u16.to_be_bytes());
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&rest);
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::NoFrames);
        mentions(&e, "no frames")?;
    }

    #[test]
    fn bad_tag_len_is_reported(tag in (MAX_TAG_LEN as u8 + 1)..=u8::MAX) {
        let (_, mut bytes) = base();
        bytes[30] = tag;
        let e = rejected(&bytes)?;
        prop_assert_eq!(e, WireError::BadTagLen(tag));
        mentions(&e, &tag.to_string())?;
    }

    #[test]
    fn length_mismatch_is_reported(
        actual in (HEADER_LEN..=MAX_PACKET_LEN + 64)
            .prop_filter("not the right length", |n| *n != HEADER_LEN + 16 * 4),
    ) {
        let (h, mut bytes) = base();
        bytes.resize(actual, 0x5A);
        let e = rejected(&bytes)?;
        let expected = h.packet_len();
        prop_assert_eq!(e, WireError::LengthMismatch { expected, actual });
        mentions(&e, &expected.to_string())?;
        mentions(&e, &actual.to_string())?;
    }
}
