//! Any bytes through both ends of the time exchange: `TimePacket::parse` never panics and what
//! it accepts emits back to the same packet; a client with a request outstanding and a
//! responder (keyed and not) take the bytes without panicking, and the client's model stays
//! readable.

#![no_main]

use engine::auth::{KEY_LEN, Key};
use engine::sync::packet::MAX_TS_LEN;
use engine::sync::{SyncClient, SyncParams, SyncResponder, TimePacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; MAX_TS_LEN];
    match TimePacket::parse(data) {
        Ok(p) => {
            let n = match p {
                TimePacket::Request(q) => q.emit(&mut buf),
                TimePacket::Response(r) => r.emit(&mut buf),
            }
            .expect("a body fits");
            assert_eq!(TimePacket::parse(&buf[..n]), Ok(p));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for key in [None, Some(Key::from_bytes([7; KEY_LEN]))] {
        let mut client = SyncClient::new(1, key.clone(), SyncParams::default());
        let _ = client.poll_transmit(1_000, &mut buf);
        let _ = client.handle_response(2_000, data);
        let _ = (client.sender_to_local(1_500), client.local_to_sender(1_500));
        let mut responder = SyncResponder::new(key);
        let _ = responder.answer(data, 0, 3_000, 3_001, &mut buf);
    }
});
