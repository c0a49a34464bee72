//! Properties of SAP and of reading an SDP: parsing is total (any bytes, any text), and an
//! emitted message parses back to itself, whatever its origin, hash, kind and SDP.

use engine::rtp::SdpStream;
use engine::rtp::sap::{MAX_SAP_DATAGRAM, SapKind, SapMessage};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn origin() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_bytes_parse_or_fail_cleanly(
        head in prop::sample::select(vec![0x20u8, 0x30, 0x24, 0x00, 0x21, 0x22, 0x40]),
        auth in 0u8..4,
        rest in prop::collection::vec(any::<u8>(), 0..=600),
    ) {
        let mut d = vec![head, auth];
        d.extend_from_slice(&rest);
        if let Ok(m) = SapMessage::parse(&d) {
            prop_assert!(!m.sdp.ends_with('\0'));
            let _ = SdpStream::parse(m.sdp);
        }
        let _ = SapMessage::parse(&rest);
    }

    #[test]
    fn emitted_messages_parse_back(
        origin in origin(),
        hash in any::<u16>(),
        delete in any::<bool>(),
        sdp in "v=0\r\n[ -~\r\n]{0,400}[ -~]",
    ) {
        let m = SapMessage {
            kind: if delete { SapKind::Delete } else { SapKind::Announce },
            msg_id_hash: hash,
            origin,
            sdp: &sdp,
        };
        let mut buf = [0u8; MAX_SAP_DATAGRAM];
        let n = m.emit(&mut buf).unwrap();
        prop_assert_eq!(n, m.len());
        prop_assert_eq!(SapMessage::parse(&buf[..n]), Ok(m));
    }

    #[test]
    fn any_text_reads_as_a_stream_or_an_error(
        lines in prop::collection::vec(
            prop_oneof![
                Just("v=0".to_string()),
                "[cmoas]=[ -~]{0,40}",
                Just("c=IN IP4 239.1.2.3/1".to_string()),
                "m=audio [0-9]{1,6} RTP/AVP [0-9]{1,4}",
                "a=rtpmap:[0-9]{1,3} L(16|24|8)/[0-9]{0,7}(/[0-9]{0,4})?",
            ],
            0..12,
        ),
    ) {
        let text = lines.join("\n");
        if let Ok(s) = SdpStream::parse(&text) {
            prop_assert!(s.port > 0 && s.payload_type < 128);
        }
    }
}
