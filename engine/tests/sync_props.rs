//! Properties of the time exchange: parsing is total, emit and parse are inverse, a sealed
//! datagram changed anywhere is not authentic, and neither end panics or is fooled by any
//! byte string: the client takes only answers to its own requests, the responder answers only
//! requests.

use engine::auth::{KEY_LEN, Key};
use engine::nack::is_nack;
use engine::sync::packet::{MAX_TS_LEN, TS_BODY_LEN, is_authentic, is_time_packet, seal};
use engine::sync::{
    Report, ResponseOutcome, SyncClient, SyncParams, SyncResponder, TimePacket, TimeRequest,
    TimeResponse,
};
use engine::wire::Packet;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn report() -> impl Strategy<Value = Report> {
    (
        prop_oneof![Just(None), any::<i32>().prop_map(Some)],
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(p, m, flags)| Report {
            // i32::MIN is the wire's "unknown".
            presentation_error_us: p.filter(|&x| x != i32::MIN),
            model_error_ns: m,
            flags,
        })
}

fn request() -> impl Strategy<Value = TimeRequest> {
    (any::<u32>(), any::<u16>(), any::<u64>(), report()).prop_map(
        |(receiver_id, seq, t1, report)| TimeRequest {
            receiver_id,
            seq,
            t1,
            report,
        },
    )
}

fn response() -> impl Strategy<Value = TimeResponse> {
    (
        any::<u32>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(receiver_id, seq, t1, t2, t3)| TimeResponse {
            receiver_id,
            seq,
            t1,
            t2,
            t3,
        })
}

fn key() -> Key {
    Key::from_bytes([0x21; KEY_LEN])
}

/// Bytes that are often nearly a time exchange: a valid head with anything after it.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        (
            prop::collection::vec(any::<u8>(), 0..60),
            1u8..=2,
            any::<u8>()
        )
            .prop_map(|(mut v, kind, flags)| {
                let mut head = vec![b'T', b'S', 1, kind, flags];
                head.append(&mut v);
                head
            }),
    ]
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn any_bytes_parse_or_fail_with_a_typed_error(b in bytes()) {
        match TimePacket::parse(&b) {
            Ok(_) => {
                prop_assert!(is_time_packet(&b));
                prop_assert!(b.len() == TS_BODY_LEN || b.len() == MAX_TS_LEN);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        prop_assert!(!is_authentic(&key(), &b) || b.len() == MAX_TS_LEN);
        // Never taken for a data packet or a NACK.
        if is_time_packet(&b) {
            prop_assert!(Packet::new_checked(&b[..]).is_err());
            prop_assert!(!is_nack(&b));
        }
    }

    #[test]
    fn requests_round_trip_sealed_or_not(q in request(), sealed in any::<bool>()) {
        let mut buf = [0u8; MAX_TS_LEN];
        let mut n = q.emit(&mut buf).unwrap();
        if sealed {
            n = seal(&key(), &mut buf).unwrap();
        }
        prop_assert_eq!(TimePacket::parse(&buf[..n]), Ok(TimePacket::Request(q)));
        prop_assert_eq!(is_authentic(&key(), &buf[..n]), sealed);
        for cut in 0..n {
            prop_assert!(TimePacket::parse(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn responses_round_trip_and_any_change_breaks_the_seal(r in response(), at in 0usize..MAX_TS_LEN, bit in 0u8..8) {
        let mut buf = [0u8; MAX_TS_LEN];
        r.emit(&mut buf).unwrap();
        let n = seal(&key(), &mut buf).unwrap();
        prop_assert_eq!(TimePacket::parse(&buf[..n]), Ok(TimePacket::Response(r)));
        prop_assert!(is_authentic(&key(), &buf[..n]));
        let mut b = buf;
        b[at] ^= 1 << bit;
        prop_assert!(!is_authentic(&key(), &b));
        let _ = TimePacket::parse(&b);
    }

    #[test]
    fn the_client_takes_only_answers_to_its_own_requests(b in bytes(), keyed in any::<bool>()) {
        let k = keyed.then(key);
        let mut c = SyncClient::new(77, k, SyncParams::default());
        let mut req = [0u8; MAX_TS_LEN];
        c.poll_transmit(1_000, &mut req).unwrap();
        let outcome = c.handle_response(2_000, &b);
        // Random bytes would have to echo the receiver id, seq and t1 (and the seal).
        prop_assert!(!matches!(outcome, ResponseOutcome::Taken { .. }), "{:?}", outcome);
        prop_assert!(c.sender_to_local(5).is_none());
    }

    #[test]
    fn the_client_survives_any_times_in_a_matching_response(t2 in any::<u64>(), t3 in any::<u64>(), t4 in any::<u64>()) {
        let mut c = SyncClient::new(77, None, SyncParams::default());
        let mut req = [0u8; MAX_TS_LEN];
        let n = c.poll_transmit(1_000, &mut req).unwrap();
        let Ok(TimePacket::Request(q)) = TimePacket::parse(&req[..n]) else {
            panic!("a request");
        };
        let r = TimeResponse { receiver_id: 77, seq: q.seq, t1: q.t1, t2, t3 };
        let mut buf = [0u8; MAX_TS_LEN];
        let m = r.emit(&mut buf).unwrap();
        let _ = c.handle_response(t4, &buf[..m]);
        for t in [0, 1_000, t2, t3, t4, u64::MAX] {
            let _ = (c.sender_to_local(t), c.local_to_sender(t));
        }
        let _ = (c.error_ns(), c.locked(), c.model().rate_ppm());
    }

    #[test]
    fn the_responder_answers_only_requests_and_never_panics(b in bytes(), keyed in any::<bool>(), t2 in any::<u64>(), t3 in any::<u64>()) {
        let mut r = SyncResponder::new(keyed.then(key));
        let mut out = [0u8; MAX_TS_LEN];
        if let Ok(n) = r.answer(&b, 0, t2, t3, &mut out) {
            prop_assert!(!keyed, "random bytes are never sealed with the key");
            prop_assert!(matches!(TimePacket::parse(&b), Ok(TimePacket::Request(_))));
            prop_assert!(matches!(TimePacket::parse(&out[..n]), Ok(TimePacket::Response(_))));
            prop_assert!(n <= b.len(), "no amplification");
        }
    }
}
