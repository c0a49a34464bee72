//! Any byte string through the RTP parser and the RTP → native translator: neither panics, a
//! parsed payload lies inside the datagram, and every translation is a valid native packet.

#![no_main]

use engine::format::{SampleFormat, StreamFormat};
use engine::rtp::{RTP_HEADER_LEN, RtpPacket, RtpTranslator};
use engine::wire::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        let start = p.payload().as_ptr() as usize - data.as_ptr() as usize;
        assert!(start >= RTP_HEADER_LEN && start + p.payload().len() <= data.len());
    }
    for sample in [SampleFormat::S16Le, SampleFormat::S24_3Le] {
        let format = StreamFormat::new(48_000, 2, sample).unwrap();
        let mut t = RtpTranslator::new(format).unwrap();
        match t.translate(data) {
            Ok(native) => assert!(Packet::new_checked(native).is_ok()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
