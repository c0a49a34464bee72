//! Timed packets (the capture time at the head of the extension) play as any other: receivers
//! with and without a key take them, the key's extension found after the capture time.

use engine::auth::{KEY_LEN, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{PacketOutcome, Receiver, ReceiverConfig};
use engine::sender::Sender;

#[test]
fn receivers_take_timed_packets_with_or_without_a_key() {
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    for key in [None, Some(Key::from_bytes([5; KEY_LEN]))] {
        let mut rx = Receiver::new(ReceiverConfig::new(f, 256, 20.0)).unwrap();
        let mut tx = Sender::new(f, 256, 9, 0).unwrap();
        if let Some(k) = &key {
            rx = rx.with_auth(k.clone());
            tx = tx.with_auth(k.clone(), t0);
            tx.set_wall_clock(t0);
        }
        let mut tx = tx.with_capture_time().unwrap();
        let mut outcomes = Vec::new();
        for k in 0..4u64 {
            tx.set_capture_time(k * 5_333_333);
            tx.packetize_tagged(&[1u8; 256 * 4], |head, payload, tag| {
                let whole = [head, payload, tag].concat();
                outcomes.push(rx.on_packet(&whole, t0));
            });
        }
        assert_eq!(outcomes[0], PacketOutcome::Resynced, "{key:?}");
        assert!(
            outcomes[1..].iter().all(|o| *o == PacketOutcome::Accepted),
            "{outcomes:?}"
        );
    }
}
