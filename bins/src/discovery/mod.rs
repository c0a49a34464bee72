//! Finding receivers on the LAN, and the names a sender is given.
//!
//! * [`announce`]: a receiver announces itself over mDNS/DNS-SD as `_netaudio._udp`, with its
//!   format, protocol, port and key fingerprint in TXT records.
//! * [`browse`]: `netaudio discover` lists the receivers announced; a sender's `--dest NAME`
//!   and `--dest auto` pick one of them.
//! * [`dest`]: what `--dest` / `network.dest` names (an address, a host name with or without
//!   a port, a receiver's announced name, `auto`) and how it resolves.
//! * [`follow`]: a sender whose destination is a name keeps following it: a name that does not
//!   resolve at start is retried with back-off while the sender captures, and it is resolved
//!   again periodically and after send errors, so a receiver whose address changed is followed.
//!
//! Realtime contract: nothing here runs on a realtime thread. The mDNS daemon runs on its own
//! thread, names are resolved on a housekeeping thread, and the one thing the realtime thread
//! sees of it is its UDP socket's peer: the housekeeping thread `connect()`s a clone of the
//! socket to a new address, which the kernel swaps atomically for the sending thread. The
//! realtime thread only raises an atomic flag when a send fails (see
//! [`crate::net::UdpSender::failure_flag`]).

pub mod announce;
pub mod browse;
pub mod dest;
pub mod follow;

use engine::auth::Key;

/// The DNS-SD service type receivers announce.
pub const SERVICE_TYPE: &str = "_netaudio._udp.local.";

/// The port a receiver listens on unless told otherwise, and the one a destination without a
/// port is given.
pub const DEFAULT_PORT: u16 = 46000;

/// A short public fingerprint of the key, for telling which receivers share a sender's key:
/// the first 8 hex digits of the key's own tag over a fixed label, which tells nothing about
/// the key. `"none"` without a key.
pub fn key_fingerprint(key: Option<&Key>) -> String {
    match key {
        Some(k) => k.tag(&[b"netaudio key fingerprint"])[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        None => "none".into(),
    }
}

/// This machine's host name, the first label of it (the default name a receiver is announced
/// under, and its mDNS host name); `"netaudio"` if the system has none.
pub fn host_name() -> String {
    let full = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let label = full.split('.').next().unwrap_or("").trim();
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "netaudio".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_and_say_none_without_a_key() {
        assert_eq!(key_fingerprint(None), "none");
        let k = Key::from_bytes([7; 32]);
        let f = key_fingerprint(Some(&k));
        assert_eq!(f.len(), 8);
        assert_eq!(f, key_fingerprint(Some(&Key::from_bytes([7; 32]))));
        assert_ne!(f, key_fingerprint(Some(&Key::from_bytes([8; 32]))));
        assert!(
            !k.to_hex().contains(&f),
            "the fingerprint is not a piece of the key"
        );
    }

    #[test]
    fn host_name_is_one_clean_label() {
        let h = host_name();
        assert!(!h.is_empty() && !h.contains('.'), "{h}");
        assert!(
            h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{h}"
        );
    }
}
