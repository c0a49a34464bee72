//! Properties of the RTP codec: parsing and translation are total, the packetizer and the
//! translator are inverse (bit-exact payload, contiguous frame indices across timestamp and
//! sequence wraps, under reorder), and every packet fits a datagram.

use engine::format::{SampleFormat, StreamFormat};
use engine::rtp::{
    MAX_RTP_DATAGRAM, RTP_HEADER_LEN, RtpError, RtpHeader, RtpPacket, RtpSender, RtpTranslator,
};
use engine::wire::{MAX_PACKET_LEN, Packet};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn rtp_format() -> impl Strategy<Value = StreamFormat> {
    (
        prop::sample::select(vec![8_000u32, 44_100, 48_000, 96_000, 192_000]),
        1u8..=8,
        prop::sample::select(vec![SampleFormat::S16Le, SampleFormat::S24_3Le]),
    )
        .prop_map(|(r, c, s)| StreamFormat::new(r, c, s).expect("in range"))
}

/// Byte strings: noise, and plausible RTP headers over noise with the flag bits varied.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=MAX_RTP_DATAGRAM + 16),
        prop::collection::vec(any::<u8>(), 0..=RTP_HEADER_LEN + 8),
        (
            prop::collection::vec(any::<u8>(), RTP_HEADER_LEN..=200),
            0u8..16,
            prop::sample::select(vec![10u8, 11, 96, 127, 0, 8]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(mut v, cc, pt, pad, ext)| {
                v[0] = 0x80 | cc | if pad { 0x20 } else { 0 } | if ext { 0x10 } else { 0 };
                v[1] = (v[1] & 0x80) | pt;
                v
            }),
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn any_bytes_parse_and_translate_without_panic(
        bytes in datagram(),
        fmt in rtp_format(),
    ) {
        match RtpPacket::parse(&bytes) {
            Ok(p) => {
                // The payload is a sub-slice of the datagram after the fixed header.
                let start = p.payload().as_ptr() as usize - bytes.as_ptr() as usize;
                prop_assert!(start >= RTP_HEADER_LEN);
                prop_assert!(start + p.payload().len() <= bytes.len());
                prop_assert_eq!(p.header().payload_type, bytes[1] & 0x7F);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let mut t = RtpTranslator::new(fmt).unwrap();
        match t.translate(&bytes) {
            Ok(native) => {
                let p = Packet::new_checked(native);
                prop_assert!(p.is_ok(), "translation gives a valid native packet: {:?}", p.err());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn header_emit_parse_round_trips(
        marker in any::<bool>(),
        payload_type in 0u8..=127,
        seq in any::<u16>(),
        timestamp in any::<u32>(),
        ssrc in any::<u32>(),
    ) {
        let h = RtpHeader { marker, payload_type, seq, timestamp, ssrc };
        let mut d = h.to_bytes().to_vec();
        d.push(1);
        match RtpPacket::parse(&d) {
            Ok(p) => {
                prop_assert_eq!(*p.header(), h);
                prop_assert_eq!(p.payload(), &[1u8][..]);
            }
            // Marker + PT 72..=76 read as RTCP types 200..=204 (RFC 5761 §4).
            Err(e) => prop_assert_eq!(e, RtpError::Rtcp(d[1])),
        }
    }

    #[test]
    fn packetize_then_translate_is_the_identity(
        fmt in rtp_format(),
        period in 16usize..=2048,
        ssrc in any::<u32>(),
        seq0 in prop_oneof![any::<u16>(), (u16::MAX - 8)..=u16::MAX],
        ts0 in prop_oneof![any::<u32>(), (u32::MAX - 5000)..=u32::MAX],
        swap_seed in any::<u64>(),
    ) {
        let mut s = RtpSender::new(fmt, period, ssrc, seq0, ts0).unwrap();
        let mut t = RtpTranslator::new(fmt).unwrap();
        let fb = fmt.frame_bytes();
        let periods = 6;
        let captured: Vec<u8> = (0..period * fb * periods).map(|i| (i * 131 + 7) as u8).collect();
        let mut datagrams = Vec::new();
        for chunk in captured.chunks(period * fb) {
            s.packetize(chunk, |h, p| {
                let mut d = h.to_vec();
                d.extend_from_slice(p);
                datagrams.push(d);
            });
        }
        for d in &datagrams {
            prop_assert!(d.len() <= MAX_PACKET_LEN);
        }
        prop_assert!(datagrams.iter().skip(1).all(|d| d[1] & 0x80 == 0));
        prop_assert_eq!(datagrams[0][1] & 0x80, 0x80);
        // Swap a few neighbours (reorder) before translating.
        let mut order: Vec<usize> = (0..datagrams.len()).collect();
        let mut x = swap_seed;
        for i in 1..order.len() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if x >> 62 == 0 {
                order.swap(i - 1, i);
            }
        }
        let mut got = Vec::new();
        for &i in &order {
            let native = t.translate(&datagrams[i]).unwrap();
            let p = Packet::new_checked(native).unwrap();
            let h = p.header();
            prop_assert_eq!(h.stream_id, ssrc);
            prop_assert_eq!(h.format, fmt);
            got.push((i, h.first_frame, p.payload().to_vec()));
        }
        // Frame indices count from the first datagram's, whichever arrived first.
        let first = got.iter().find(|g| g.0 == 0).map(|g| g.1).unwrap();
        let mut rebuilt = vec![0u8; captured.len()];
        for (_, frame, payload) in &got {
            let at = frame.wrapping_sub(first) as usize;
            prop_assert!(at * fb + payload.len() <= rebuilt.len(), "frame {} out of place", at);
            rebuilt[at * fb..at * fb + payload.len()].copy_from_slice(payload);
        }
        prop_assert!(rebuilt == captured, "payload round trip is bit-exact");
    }
}

#[test]
fn timestamps_extend_across_many_wraps() {
    let fmt = StreamFormat::new(8_000, 1, SampleFormat::S16Le).unwrap();
    let mut t = RtpTranslator::new(fmt).unwrap();
    let mut last = None;
    // Steps of 2^30 frames: four per wrap, through three wraps.
    for k in 0u64..13 {
        let mut d = RtpHeader {
            marker: k == 0,
            payload_type: 96,
            seq: k as u16,
            timestamp: (k << 30) as u32,
            ssrc: 9,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[0, 0]);
        let native = t.translate(&d).unwrap();
        let f = Packet::new_checked(native).unwrap().header().first_frame;
        if let Some(prev) = last {
            assert_eq!(f - prev, 1 << 30, "packet {k}");
        }
        last = Some(f);
    }
}
