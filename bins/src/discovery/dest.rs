//! What a sender's destination (`--dest`, `network.dest`) names, and how it resolves.
//!
//! * an address, with or without a port: `192.168.1.20:46000`, `[2001:db8::20]:46000`,
//!   `192.168.1.20` (the default port);
//! * a host name, with or without a port: `turntable2.local:46000`, `turntable2.local` (the
//!   default port), as the old `nc turntable2.local 46000` pipeline named it. The system
//!   resolver answers first; a `.local` name it cannot resolve (no nss-mdns) is asked over
//!   mDNS;
//! * a receiver's announced name (`netaudio discover` lists them): `Living room`, or a single
//!   word that no host is called (`turntable2`: the host name first, then the announced name);
//! * `auto`: the only receiver announced on the LAN.
//!
//! Realtime contract: resolving blocks (DNS, mDNS) and runs on normal threads only.

use super::DEFAULT_PORT;
use super::browse::{self, Found};
use mdns_sd::{HostnameResolutionEvent, ServiceDaemon};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long a lookup by announced name (or `auto`) browses at most.
pub const BROWSE_WAIT: Duration = Duration::from_secs(3);

/// How long a `.local` host name is asked over mDNS at most.
pub const MDNS_HOST_WAIT: Duration = Duration::from_secs(2);

/// A destination as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// An address: nothing to resolve.
    Addr(SocketAddr),
    /// A host name and port (the default port when none was given).
    Host {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
    /// A single word: a host name if one resolves, else a receiver's announced name.
    Word(String),
    /// A receiver's announced name (not a host name: it has characters host names cannot).
    Instance(String),
    /// The only receiver announced on the LAN.
    Auto,
}

fn host_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

impl Dest {
    /// Parses a destination; errors name the value and the forms accepted.
    pub fn parse(text: &str) -> Result<Dest, String> {
        let s = text.trim();
        let bad = |why: &str| {
            format!(
                "destination {text:?} (--dest / network.dest): {why}; give host:port \
                 (e.g. turntable2.local:46000), a host name (the port is then {DEFAULT_PORT}), \
                 a receiver's name as `netaudio discover` lists it, or auto"
            )
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Dest::Auto);
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Dest::Addr(a));
        }
        let bare = s.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        if let Ok(ip) = bare.unwrap_or(s).parse::<IpAddr>() {
            return Ok(Dest::Addr(SocketAddr::new(ip, DEFAULT_PORT)));
        }
        if let Some((host, port)) = s.rsplit_once(':')
            && host_chars(host)
        {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(&format!("the port {port:?} is not 1..=65535")))?;
            return Ok(Dest::Host {
                host: host.to_string(),
                port,
            });
        }
        if host_chars(s) && s.contains('.') {
            return Ok(Dest::Host {
                host: s.to_string(),
                port: DEFAULT_PORT,
            });
        }
        if host_chars(s) {
            return Ok(Dest::Word(s.to_string()));
        }
        if s.len() > 63 || s.chars().any(char::is_control) {
            return Err(bad("not an address, a host name or a receiver's name"));
        }
        Ok(Dest::Instance(s.to_string()))
    }

    /// Whether it may resolve to another address later (a name, not an address).
    pub fn is_name(&self) -> bool {
        !matches!(self, Dest::Addr(_))
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Addr(a) => write!(f, "{a}"),
            Dest::Host { host, port } => write!(f, "{host}:{port}"),
            Dest::Word(w) | Dest::Instance(w) => write!(f, "{w:?}"),
            Dest::Auto => f.write_str("auto"),
        }
    }
}

/// Resolves destinations: the system resolver, and an mDNS responder started the first time
/// it is needed and kept (its cache follows receivers' announcements).
#[derive(Default)]
pub struct Resolver {
    mdns: Option<ServiceDaemon>,
}

impl Resolver {
    fn mdns(&mut self) -> Result<&ServiceDaemon, String> {
        if self.mdns.is_none() {
            self.mdns = Some(ServiceDaemon::new().map_err(|e| format!("cannot start mDNS: {e}"))?);
        }
        Ok(self.mdns.as_ref().expect("just set"))
    }

    /// Where `dest` is now. `Auto` is resolved by [`pick_auto`](Self::pick_auto) first.
    pub fn resolve(&mut self, dest: &Dest) -> Result<SocketAddr, String> {
        match dest {
            Dest::Addr(a) => Ok(*a),
            Dest::Host { host, port } => self.host(host, *port),
            Dest::Word(w) => match system((w.as_str(), DEFAULT_PORT)) {
                Ok(a) => Ok(a),
                Err(e) => self.instance(w).map_err(|e2| {
                    format!("{w:?} is neither a host name ({e}) nor an announced receiver ({e2})")
                }),
            },
            Dest::Instance(n) => self.instance(n),
            Dest::Auto => Ok(self.pick_auto()?.1),
        }
    }

    /// `auto`: the one receiver announced; errors list what was found when it is not one.
    pub fn pick_auto(&mut self) -> Result<(String, SocketAddr), String> {
        let found = browse::browse_on(self.mdns()?, BROWSE_WAIT, |_| false)?;
        match found.as_slice() {
            [] => Err(format!(
                "dest = auto: no receiver announced itself on the LAN within {} s; start one \
                 (announcing is on by default), or give --dest host:port",
                BROWSE_WAIT.as_secs()
            )),
            [one] => one
                .address()
                .map(|a| (one.name.clone(), a))
                .ok_or_else(|| format!("dest = auto: {:?} has no usable address", one.name)),
            many => Err(format!(
                "dest = auto: {} receivers announce themselves; pick one with --dest NAME:\n{}",
                many.len(),
                browse::listing(many).trim_end()
            )),
        }
    }

    /// A host name: the system resolver, then mDNS for `.local` names.
    fn host(&mut self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let err = match system((host, port)) {
            Ok(a) => return Ok(a),
            Err(e) => e,
        };
        let local = host.trim_end_matches('.');
        if !local.to_ascii_lowercase().ends_with(".local") {
            return Err(format!("cannot resolve {host:?}: {err}"));
        }
        let name = format!("{local}.");
        let events = self
            .mdns()?
            .resolve_hostname(&name, Some(MDNS_HOST_WAIT.as_millis() as u64))
            .map_err(|e| format!("cannot resolve {host:?}: {err}; over mDNS: {e}"))?;
        let deadline = Instant::now() + MDNS_HOST_WAIT;
        let mut got: Option<IpAddr> = None;
        while let Ok(ev) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            match ev {
                HostnameResolutionEvent::AddressesFound(_, addrs) => {
                    let mut v: Vec<IpAddr> = addrs.iter().map(|a| a.to_ip_addr()).collect();
                    v.sort_by_key(|a| (a.is_ipv6(), *a));
                    got = v.into_iter().find(|a| a.is_ipv4() || !is_link_local(a));
                    if got.is_some() {
                        break;
                    }
                }
                HostnameResolutionEvent::SearchTimeout(_)
                | HostnameResolutionEvent::SearchStopped(_) => break,
                _ => {}
            }
        }
        if let Some(m) = &self.mdns {
            let _ = m.stop_resolve_hostname(&name);
        }
        got.map(|ip| SocketAddr::new(ip, port)).ok_or_else(|| {
            format!(
                "cannot resolve {host:?}: {err}; and no answer over mDNS within {} s",
                MDNS_HOST_WAIT.as_secs()
            )
        })
    }

    /// A receiver's announced name (case-insensitive).
    fn instance(&mut self, name: &str) -> Result<SocketAddr, String> {
        let is = |f: &Found| f.name.eq_ignore_ascii_case(name);
        let found = browse::browse_on(self.mdns()?, BROWSE_WAIT, |f| is(f))?;
        let f = found.iter().find(|f| is(f)).ok_or_else(|| {
            let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
            if names.is_empty() {
                format!("no receiver announced as {name:?} (none found)")
            } else {
                format!(
                    "no receiver announced as {name:?} (found: {})",
                    names.join(", ")
                )
            }
        })?;
        f.address()
            .ok_or_else(|| format!("receiver {name:?} announced no usable address"))
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if let Some(m) = self.mdns.take()
            && let Ok(done) = m.shutdown()
        {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// Where a destination that names several receivers sends: a multicast group (one address),
/// or each receiver of a comma-separated list of addresses and host names (`a:46000,b:46000`;
/// a `network.dest` array comes here joined so). Host names in a list are resolved once, at
/// start: following a name that moves is for a single receiver. `None`: one unicast receiver
/// (an address or any name, see [`Dest`]); a name containing a comma whose first part is not
/// an address or host name stays a receiver's announced name.
pub fn fanout_targets(text: &str) -> Result<Option<Vec<SocketAddr>>, String> {
    let is_host = |d: &Dest| matches!(d, Dest::Addr(_) | Dest::Host { .. });
    if !text.contains(',') {
        return Ok(match Dest::parse(text)? {
            Dest::Addr(a) if a.ip().is_multicast() => Some(vec![a]),
            _ => None,
        });
    }
    let pieces: Vec<&str> = text.split(',').map(str::trim).collect();
    if !Dest::parse(pieces[0]).is_ok_and(|d| is_host(&d)) {
        return Ok(None);
    }
    let mut resolver = Resolver::default();
    let mut out: Vec<SocketAddr> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let d = Dest::parse(p).ok().filter(is_host).ok_or_else(|| {
            format!(
                "{p:?} in the list of receivers {text:?} (--dest / network.dest): each must \
                     be host:port or an address (e.g. 192.168.1.21:46000,192.168.1.22:46000)"
            )
        })?;
        let a = resolver
            .resolve(&d)
            .map_err(|e| format!("{e} (in the list of receivers {text:?})"))?;
        if out.contains(&a) {
            return Err(format!(
                "{p:?} ({a}) is listed twice in --dest / network.dest {text:?}"
            ));
        }
        out.push(a);
    }
    Ok(Some(out))
}

/// Resolves `dest` once, at start (raw TCP mode connects to one address); `host:port` text.
pub fn resolve_once(dest: &str) -> Result<String, String> {
    let d = Dest::parse(dest)?;
    Ok(Resolver::default().resolve(&d)?.to_string())
}

fn is_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The system resolver (`getaddrinfo`: /etc/hosts, DNS, nss-mdns where installed), IPv4 first.
fn system(target: (&str, u16)) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Dest {
        Dest::parse(s).unwrap()
    }

    #[test]
    fn destinations_parse_as_the_old_pipeline_named_them() {
        assert_eq!(
            p("10.0.0.2:5000"),
            Dest::Addr("10.0.0.2:5000".parse().unwrap())
        );
        assert_eq!(p("10.0.0.2"), Dest::Addr("10.0.0.2:46000".parse().unwrap()));
        assert_eq!(p("[::1]:7"), Dest::Addr("[::1]:7".parse().unwrap()));
        assert_eq!(p("[::1]"), Dest::Addr("[::1]:46000".parse().unwrap()));
        assert_eq!(
            p("turntable2.local"),
            Dest::Host {
                host: "turntable2.local".into(),
                port: 46000
            }
        );
        assert_eq!(
            p("turntable2.local:46001"),
            Dest::Host {
                host: "turntable2.local".into(),
                port: 46001
            }
        );
        assert_eq!(
            p("pi:9"),
            Dest::Host {
                host: "pi".into(),
                port: 9
            }
        );
        assert_eq!(p("turntable2"), Dest::Word("turntable2".into()));
        assert_eq!(p("Living room"), Dest::Instance("Living room".into()));
        assert_eq!(p("AUTO"), Dest::Auto);
        assert!(!p("10.0.0.2").is_name() && p("auto").is_name());
    }

    #[test]
    fn bad_destinations_name_the_value_and_the_forms() {
        for bad in ["", "pi:0", "pi:99999", "pi:x"] {
            let e = Dest::parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("host:port"),
                "{e}"
            );
        }
    }

    #[test]
    fn addresses_and_resolvable_hosts_resolve_without_mdns() {
        let mut r = Resolver::default();
        assert_eq!(
            r.resolve(&p("127.0.0.1:9")).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            r.resolve(&p("localhost:9")).unwrap().port(),
            9,
            "through the system resolver"
        );
        assert_eq!(r.resolve(&p("localhost")).unwrap().port(), DEFAULT_PORT);
        assert!(r.mdns.is_none(), "no mDNS responder was needed");
    }

    #[test]
    fn groups_and_lists_name_several_receivers() {
        let g: SocketAddr = "239.255.46.1:46000".parse().unwrap();
        assert_eq!(fanout_targets("239.255.46.1:46000"), Ok(Some(vec![g])));
        let g6: SocketAddr = "[ff02::46]:46000".parse().unwrap();
        assert_eq!(fanout_targets("[ff02::46]:46000"), Ok(Some(vec![g6])));
        assert_eq!(fanout_targets("10.0.0.2:5000"), Ok(None));
        assert_eq!(fanout_targets("turntable2.local"), Ok(None));
        assert_eq!(
            fanout_targets("127.0.0.1:46001, localhost:46002"),
            Ok(Some(vec![
                "127.0.0.1:46001".parse().unwrap(),
                "127.0.0.1:46002".parse().unwrap()
            ]))
        );
        // An announced name with a comma stays a name.
        assert_eq!(fanout_targets("Living room, upstairs"), Ok(None));
        let e = fanout_targets("127.0.0.1:46001,Living room").unwrap_err();
        assert!(
            e.contains("\"Living room\"") && e.contains("host:port"),
            "{e}"
        );
        let e = fanout_targets("127.0.0.1:46001,127.0.0.1:46001").unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = fanout_targets("127.0.0.1:46001,").unwrap_err();
        assert!(e.contains("\"\""), "{e}");
    }
}
