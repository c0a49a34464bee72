//! SAP parsing is total: any bytes give a message or a typed error; a message emits to bytes
//! that parse back to it.

#![no_main]

use engine::rtp::sap::SapMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match SapMessage::parse(data) {
        Ok(m) => {
            let mut buf = [0u8; 4096];
            if let Ok(n) = m.emit(&mut buf) {
                assert_eq!(SapMessage::parse(&buf[..n]), Ok(m));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
