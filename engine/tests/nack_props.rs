//! Properties of the NACK codec: parsing is total, emit and parse are inverse, and the
//! sender's history answers any NACK with work bounded by its size.

use engine::nack::{MAX_NACK_LEN, MAX_NACK_RUNS, Nack, NackError, NackRun, emit_nack, is_nack};
use engine::recovery::RetransmitHistory;
use engine::wire::Packet;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn run() -> impl Strategy<Value = NackRun> {
    (
        prop_oneof![any::<u32>(), (u32::MAX - 64)..=u32::MAX, 0u32..64],
        prop_oneof![1u16..=8, 1..=u16::MAX],
    )
        .prop_map(|(first, count)| NackRun { first, count })
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn any_bytes_parse_or_fail_with_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match Nack::new_checked(&bytes[..]) {
            Ok(n) => {
                let runs: Vec<NackRun> = n.runs().collect();
                prop_assert!(!runs.is_empty() && runs.len() <= MAX_NACK_RUNS);
                prop_assert!(runs.iter().all(|r| r.count > 0));
                prop_assert!(is_nack(&bytes));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // A NACK is never taken for a data packet.
        if is_nack(&bytes) {
            prop_assert!(Packet::new_checked(&bytes[..]).is_err());
        }
    }

    #[test]
    fn emit_then_parse_round_trips(stream_id in any::<u32>(), runs in prop::collection::vec(run(), 1..=MAX_NACK_RUNS)) {
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(stream_id, &runs, &mut buf).unwrap();
        let nack = Nack::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(nack.stream_id(), stream_id);
        prop_assert_eq!(nack.runs().collect::<Vec<_>>(), runs);
        // Any cut or extension is a length error, never a panic.
        for cut in 0..n {
            prop_assert!(Nack::new_checked(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn corrupted_nacks_never_panic(runs in prop::collection::vec(run(), 1..=4), at in 0usize..40, byte in any::<u8>()) {
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(7, &runs, &mut buf).unwrap();
        let mut b = buf[..n].to_vec();
        let i = at % n;
        b[i] = byte;
        let _ = Nack::new_checked(&b[..]).map(|x| x.runs().count());
    }

    #[test]
    fn the_history_answers_any_nack_within_its_size(stream_id in 0u32..3, runs in prop::collection::vec(run(), 1..=MAX_NACK_RUNS), start in any::<u32>()) {
        let mut h = RetransmitHistory::new(16);
        let mut header = [0u8; 32];
        header[4..8].copy_from_slice(&1u32.to_be_bytes());
        for k in 0..40u32 {
            header[8..12].copy_from_slice(&start.wrapping_add(k).to_be_bytes());
            h.record(&header, &[k as u8; 8]);
        }
        let mut buf = [0u8; MAX_NACK_LEN];
        let n = emit_nack(stream_id, &runs, &mut buf).unwrap();
        let mut sent = 0usize;
        let r = h.on_nack(&buf[..n], |d| {
            sent += 1;
            assert_eq!(d.len(), 40);
        });
        prop_assert_eq!(r, Ok(sent));
        prop_assert!(sent <= 16 * runs.len());
        if stream_id != 1 {
            prop_assert_eq!(sent, 0);
        }
    }
}

#[test]
fn errors_name_what_is_wrong() {
    assert_eq!(
        NackError::LengthMismatch {
            expected: 18,
            actual: 20
        }
        .to_string(),
        "NACK length 20, its run count announces 18"
    );
}
