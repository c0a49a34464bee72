//! Any byte string through the packet parser: it never panics, an accepted packet's accessors
//! tile the datagram exactly, and its header re-emits to the bytes it came from.

#![no_main]

use engine::wire::{Flags, HEADER_LEN, Packet, PacketHeader, WireError};
use libfuzzer_sys::fuzz_target;

/// Byte 31 of the header is reserved: emitted as 0 and ignored on parse.
const RESERVED: usize = 31;

fuzz_target!(|data: &[u8]| {
    let header = PacketHeader::parse(data);
    match Packet::new_checked(data) {
        Ok(p) => {
            let h = *p.header();
            assert_eq!(header, Ok(h));
            assert_eq!(h.packet_len(), data.len());
            // No frames only in an END packet (a clean stop's end marker).
            assert!(h.frames > 0 || h.flags.contains(Flags::END));
            assert_eq!(h.is_end_marker(), h.frames == 0);

            let ext = p.ext();
            let payload = p.payload();
            let authenticated = p.authenticated();
            let tag = p.tag();
            assert_eq!(ext.len(), h.ext_len as usize);
            assert_eq!(payload.len(), h.payload_len());
            assert_eq!(tag.len(), h.tag_len as usize);
            assert_eq!(
                HEADER_LEN + ext.len() + payload.len() + tag.len(),
                data.len()
            );
            assert_eq!(authenticated.len() + tag.len(), data.len());
            assert_eq!(&data[HEADER_LEN..HEADER_LEN + ext.len()], ext);
            assert_eq!(&data[data.len() - tag.len()..], tag);
            assert_eq!(&data[..authenticated.len()], authenticated);

            let mut emitted = [0xFFu8; HEADER_LEN];
            h.emit(&mut emitted);
            assert_eq!(emitted[..RESERVED], data[..RESERVED]);
            assert_eq!(emitted[RESERVED], 0);
            assert_eq!(PacketHeader::parse(&emitted), Ok(h));
            assert_eq!(emitted, h.to_bytes());
            assert_eq!(p.into_inner().len(), data.len());
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            match header {
                Ok(h) => assert_eq!(
                    e,
                    WireError::LengthMismatch {
                        expected: h.packet_len(),
                        actual: data.len(),
                    }
                ),
                Err(he) => assert_eq!(he, e),
            }
        }
    }
});
