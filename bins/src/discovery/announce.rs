//! A receiver announces itself on the LAN: one DNS-SD service `_netaudio._udp` over mDNS,
//! with its stream format, protocol, port and key fingerprint in TXT records.
//!
//! The announcement is made on the interfaces the receiver listens on: every IPv4 interface
//! for `0.0.0.0`, every interface for `[::]`, and only the interface of a specific address.
//! A receiver listening on loopback only is not announced (no other machine could reach it).
//!
//! Realtime contract: runs at start-up and at the end, on the daemon's main thread; the mDNS
//! responder runs on its own (normal) thread.

use super::{SERVICE_TYPE, host_name, key_fingerprint};
use engine::auth::Key;
use engine::format::StreamFormat;
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use std::net::SocketAddr;
use std::time::Duration;

/// TXT keys, in the order they are written.
pub const TXT_KEYS: [&str; 7] = [
    "txtvers", "rate", "channels", "format", "proto", "port", "key",
];

/// What a receiver announces.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    /// The instance name (`network.name` / `--name`, by default the host name).
    pub name: String,
    /// Where the receiver listens.
    pub listen: SocketAddr,
    /// The stream format it plays.
    pub format: StreamFormat,
    /// Its wire protocol (`native`, `rtp`, `tcp`).
    pub proto: &'static str,
    /// Its key's fingerprint ([`key_fingerprint`]).
    pub key: String,
}

impl Announcement {
    /// The announcement of a receiver listening on `listen`.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        format: StreamFormat,
        proto: &'static str,
        key: Option<&Key>,
    ) -> Announcement {
        Announcement {
            name: name.to_string(),
            listen,
            format,
            proto,
            key: key_fingerprint(key),
        }
    }

    /// The TXT records, in the order of [`TXT_KEYS`].
    pub fn txt(&self) -> Vec<(&'static str, String)> {
        let values = [
            "1".to_string(),
            self.format.rate.to_string(),
            self.format.channels.to_string(),
            self.format.sample.name().to_string(),
            self.proto.to_string(),
            self.listen.port().to_string(),
            self.key.clone(),
        ];
        TXT_KEYS.into_iter().zip(values).collect()
    }
}

/// A running announcement; dropping it withdraws it (a goodbye on the LAN) and stops the
/// responder.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Checks an instance name: DNS-SD allows up to 63 bytes of UTF-8, without control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
        return Err(format!(
            "receiver name {name:?} (network.name / --name): give 1 to 63 bytes without control characters, e.g. \"turntable2\""
        ));
    }
    Ok(())
}

/// Starts announcing `a`; `Ok(None)` when its listen address is loopback only.
pub fn start(a: &Announcement) -> Result<Option<Announcer>, String> {
    check_name(&a.name)?;
    let ip = a.listen.ip();
    if ip.is_loopback() {
        log::info!(
            "not announced on the LAN: listening on {} (loopback) only",
            a.listen
        );
        return Ok(None);
    }
    let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start mDNS: {e}"))?;
    // Announce where the socket can be reached: loopback is of no use to other machines, and
    // an IPv4-only socket must not be announced with IPv6 addresses.
    let mut off = vec![IfKind::LoopbackV4, IfKind::LoopbackV6];
    if ip.is_unspecified() {
        if ip.is_ipv4() {
            off.push(IfKind::IPv6);
        }
        daemon.disable_interface(off).map_err(|e| e.to_string())?;
    } else {
        off.push(IfKind::All);
        daemon.disable_interface(off).map_err(|e| e.to_string())?;
        daemon
            .enable_interface(IfKind::Addr(ip))
            .map_err(|e| e.to_string())?;
    }
    let txt = a.txt();
    let props: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let host = format!("{}.local.", host_name());
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        &a.name,
        &host,
        "",
        a.listen.port(),
        &props[..],
    )
    .map_err(|e| format!("cannot announce {:?}: {e}", a.name))?
    .enable_addr_auto();
    let fullname = info.get_fullname().to_string();
    daemon
        .register(info)
        .map_err(|e| format!("cannot announce {:?}: {e}", a.name))?;
    log::info!(
        "announced on the LAN as {:?} ({SERVICE_TYPE} port {}, {}, key {})",
        a.name,
        a.listen.port(),
        a.format,
        a.key
    );
    Ok(Some(Announcer { daemon, fullname }))
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // The goodbye is sent by the responder's thread; wait for it a little, never for long.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;

    #[test]
    fn txt_records_carry_format_proto_port_and_fingerprint_never_the_key() {
        let key = Key::from_bytes([3; 32]);
        let f = StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap();
        let a = Announcement::new(
            "turntable2",
            "0.0.0.0:46001".parse().unwrap(),
            f,
            "native",
            Some(&key),
        );
        let txt = a.txt();
        let get = |k: &str| txt.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("rate"), "48000");
        assert_eq!(get("channels"), "2");
        assert_eq!(get("format"), "S24_3LE");
        assert_eq!(get("proto"), "native");
        assert_eq!(get("port"), "46001");
        assert_eq!(get("key"), key_fingerprint(Some(&key)));
        assert!(
            txt.iter()
                .all(|(_, v)| !key.to_hex().contains(v.as_str()) || v.len() < 8)
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_fix() {
        assert!(check_name("Living room").is_ok());
        let e = check_name(&"x".repeat(64)).unwrap_err();
        assert!(e.contains("network.name"), "{e}");
        assert!(check_name("  ").is_err());
    }

    #[test]
    fn loopback_receivers_are_not_announced() {
        let f = StreamFormat::new(44_100, 2, SampleFormat::S16Le).unwrap();
        let a = Announcement::new("x", "127.0.0.1:46000".parse().unwrap(), f, "native", None);
        assert!(start(&a).unwrap().is_none());
    }
}
