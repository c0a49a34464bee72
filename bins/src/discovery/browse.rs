//! Looking for receivers on the LAN: a bounded DNS-SD browse for `_netaudio._udp`, and how
//! `netaudio discover` shows what it found.
//!
//! Realtime contract: runs on normal threads only (the command's, or a sender's resolver
//! thread); it blocks for the time it is given.

use super::SERVICE_TYPE;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A receiver announced on the LAN.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Its instance name.
    pub name: String,
    /// Its mDNS host name (`turntable2.local.`).
    pub host: String,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Its port.
    pub port: u16,
    /// Its TXT records.
    pub txt: BTreeMap<String, String>,
}

impl Found {
    /// Where to send to it: its first routable address (IPv4 first; IPv6 link-local
    /// addresses need a scope and are left out).
    pub fn address(&self) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|a| match a {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            })
            .map(|ip| SocketAddr::new(*ip, self.port))
    }

    fn field(&self, k: &str) -> &str {
        self.txt.get(k).map_or("?", String::as_str)
    }

    /// `44100/2/S16_LE`, from its TXT records.
    pub fn format(&self) -> String {
        format!(
            "{}/{}/{}",
            self.field("rate"),
            self.field("channels"),
            self.field("format")
        )
    }

    /// Its key fingerprint (`none` without a key).
    pub fn key(&self) -> &str {
        self.field("key")
    }

    /// One line: name, address:port, format, proto, key fingerprint.
    pub fn line(&self) -> String {
        let addr = self
            .address()
            .map_or_else(|| format!("?:{}", self.port), |a| a.to_string());
        format!(
            "{:<20} {:<22} {:<16} {:<7} {}",
            self.name,
            addr,
            self.format(),
            self.field("proto"),
            self.key()
        )
    }

    /// As JSON, for `netaudio discover --json`.
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "host": self.host,
            "address": self.address().map(|a| a.to_string()),
            "addresses": self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "port": self.port,
            "rate": self.txt.get("rate").and_then(|r| r.parse::<u32>().ok()),
            "channels": self.txt.get("channels").and_then(|r| r.parse::<u32>().ok()),
            "format": self.txt.get("format"),
            "proto": self.txt.get("proto"),
            "key": self.txt.get("key"),
        })
    }
}

/// The instance name in a DNS-SD full name (`Living\.room._netaudio._udp.local.`).
fn instance_of(fullname: &str) -> String {
    let raw = fullname
        .strip_suffix(SERVICE_TYPE)
        .unwrap_or(fullname)
        .trim_end_matches('.');
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Browses for receivers for up to `wait`, on `daemon`; calls `seen` for each one as it is
/// resolved and stops early when it returns true. Returns every receiver found, by name.
pub fn browse_on(
    daemon: &ServiceDaemon,
    wait: Duration,
    mut seen: impl FnMut(&Found) -> bool,
) -> Result<Vec<Found>, String> {
    let events = daemon
        .browse(SERVICE_TYPE)
        .map_err(|e| format!("cannot browse for receivers (mDNS): {e}"))?;
    let deadline = Instant::now() + wait;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) => {
                let mut addrs: Vec<IpAddr> = s.addresses.iter().map(|a| a.to_ip_addr()).collect();
                addrs.sort_by_key(|a| (a.is_ipv6(), *a));
                let f = Found {
                    name: instance_of(&s.fullname),
                    host: s.host.clone(),
                    addrs,
                    port: s.port,
                    txt: s
                        .txt_properties
                        .iter()
                        .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_string()))
                        .collect(),
                };
                let stop = seen(&f);
                found.insert(f.name.clone(), f);
                if stop {
                    break;
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                found.remove(&instance_of(&fullname));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    Ok(found.into_values().collect())
}

/// [`browse_on`] with a responder of its own, stopped at the end.
pub fn browse(wait: Duration, seen: impl FnMut(&Found) -> bool) -> Result<Vec<Found>, String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start mDNS: {e}"))?;
    let r = browse_on(&daemon, wait, seen);
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
    r
}

/// The list of receivers as `netaudio discover` prints it, and in error messages.
pub fn listing(found: &[Found]) -> String {
    found.iter().map(|f| format!("  {}\n", f.line())).collect()
}

/// `netaudio discover`: browses for `wait`, saying so on stderr, and prints what it found on
/// stdout (a table, or JSON). An empty result is not an error.
pub fn discover(wait: Duration, as_json: bool) -> Result<(), String> {
    eprintln!(
        "searching for receivers ({SERVICE_TYPE}) for {:.1} s...",
        wait.as_secs_f64()
    );
    let found = browse(wait, |f| {
        eprintln!("  found {:?}", f.name);
        false
    })?;
    if as_json {
        let list: Vec<Value> = found.iter().map(Found::json).collect();
        println!("{}", Value::Array(list));
    } else if found.is_empty() {
        eprintln!(
            "no receiver found: is one running with announcing on (network.announce), on this LAN?"
        );
    } else {
        println!(
            "  {:<20} {:<22} {:<16} {:<7} KEY",
            "NAME", "ADDRESS", "FORMAT", "PROTO"
        );
        print!("{}", listing(&found));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(addrs: &[&str]) -> Found {
        Found {
            name: "Living room".into(),
            host: "pi.local.".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            port: 46000,
            txt: [("rate", "48000"), ("channels", "2"), ("format", "S16_LE")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn instance_names_are_unescaped() {
        assert_eq!(
            instance_of("Living\\.room._netaudio._udp.local."),
            "Living.room"
        );
        assert_eq!(instance_of("tt2._netaudio._udp.local."), "tt2");
    }

    #[test]
    fn the_address_skips_link_local_ipv6() {
        assert_eq!(found(&["fe80::1"]).address(), None);
        assert_eq!(
            found(&["fe80::1", "2001:db8::5"]).address(),
            Some("[2001:db8::5]:46000".parse().unwrap())
        );
        assert_eq!(
            found(&["192.168.1.9"]).address(),
            Some("192.168.1.9:46000".parse().unwrap())
        );
    }

    #[test]
    fn lines_and_json_show_format_and_key() {
        let f = found(&["192.168.1.9"]);
        assert!(f.line().contains("48000/2/S16_LE"), "{}", f.line());
        assert!(f.line().ends_with(" ?"), "no key field: {}", f.line());
        assert_eq!(f.json()["rate"], 48000);
        assert_eq!(f.json()["address"], "192.168.1.9:46000");
    }
}
