//! SAP (RFC 2974) in RTP mode (`[network] sap`, `--sap ADDR|off`).
//!
//! * [`announce`]: `netaudio send --proto rtp` announces its SDP every few seconds, so
//!   PipeWire's `module-rtp-source` (0.3.60-0.3.67) or `module-rtp-sap` (0.3.68 on), VLC and
//!   others find the stream without an SDP file, and deletes it when it stops.
//! * [`listen`]: `netaudio recv --proto rtp --sap ADDR` waits for an announced L16/L24 stream
//!   (a PipeWire `module-rtp-sink`, another netaudio sender) and takes its port, address and
//!   format from the announcement.
//!
//! The default in RTP mode is PipeWire's group, [`SAP_GROUP_PIPEWIRE`]`:9875` (link-local) for
//! the sender, off for the receiver; `239.255.255.255:9875` is the usual global group; a unicast
//! address (`127.0.0.1:9875`) reaches one host only.
//!
//! Not realtime: both run on normal threads (the listener before the stream starts).

pub mod announce;
pub mod listen;

pub use announce::{ANNOUNCE_INTERVAL, SapAnnouncer, announce_stream};
pub use listen::{Announced, wait_for_stream};

use engine::rtp::sap::{SAP_GROUP_PIPEWIRE, SAP_PORT};
use std::net::{IpAddr, SocketAddr};

/// The SAP group of RTP mode unless told otherwise: PipeWire's default.
pub const DEFAULT_GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(SAP_GROUP_PIPEWIRE), SAP_PORT);

/// Parses `network.sap` / `--sap`: `off`, `ADDR:PORT`, `[IPV6]:PORT`, or an address alone
/// (port 9875). `None` for `off`.
pub fn parse_target(s: &str) -> Result<Option<SocketAddr>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    if let Ok(ip) = t.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, SAP_PORT)));
    }
    Err(format!(
        "SAP address {s:?} (network.sap / --sap) is not an IP address with a port: use e.g. \"224.0.0.56:9875\" (PipeWire's default), \"239.255.255.255:9875\", \"127.0.0.1:9875\" or \"off\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_name_the_fix() {
        assert_eq!(parse_target("off"), Ok(None));
        assert_eq!(parse_target(" OFF "), Ok(None));
        assert_eq!(parse_target("224.0.0.56:9875"), Ok(Some(DEFAULT_GROUP)));
        assert_eq!(
            parse_target("239.255.255.255"),
            Ok(Some("239.255.255.255:9875".parse().unwrap()))
        );
        assert_eq!(
            parse_target("[ff02::2:7ffe]"),
            Ok(Some("[ff02::2:7ffe]:9875".parse().unwrap()))
        );
        let e = parse_target("sap.local:9875").unwrap_err();
        assert!(
            e.contains("sap.local") && e.contains("224.0.0.56:9875") && e.contains("off"),
            "{e}"
        );
    }
}
