//! Multicast: the sender's options for a group (hop limit, outgoing interface, loopback) and
//! a receiver joining one.
//!
//! A receiver whose listen address is a group ([`UdpReceiver::listen`]) binds the *wildcard*
//! address on the group's port and joins the group there, with `IP_MULTICAST_ALL` off: it then
//! takes the group's datagrams (and no other group's that another socket of the host joined)
//! and the unicast repairs the sender answers its NACKs with, on one socket. (A socket bound to
//! the group's own address would take nothing sent to the host's unicast address.) One
//! receiver per host and port, as for unicast.
//!
//! Realtime contract: nothing here runs on a realtime thread; everything is set up before
//! streaming.

use super::UdpReceiver;
use super::sys::resolve;
use socket2::{InterfaceIndexOrAddress, SockRef};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The hop limit (IPv4 TTL, IPv6 hops) of multicast packets unless told otherwise: 1, the
/// LAN the sender is on (routers do not forward them).
pub const DEFAULT_TTL: u32 = 1;

/// A network interface, by name (`eth0`) or by one of its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// Its name.
    Name(String),
    /// One of its addresses.
    Addr(IpAddr),
}

impl Interface {
    /// An interface as given (`network.interface`, `--interface`): an address, else a name.
    pub fn parse(text: &str) -> Result<Interface, String> {
        let s = text.trim();
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(Interface::Addr(a));
        }
        let name_chars = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
        if s.is_empty() || s.len() > 15 || !s.chars().all(name_chars) {
            return Err(format!(
                "interface {text:?} (--interface / network.interface): give its name (e.g. \
                 eth0, `ip link` lists them) or one of its addresses (e.g. 192.168.1.20)"
            ));
        }
        Ok(Interface::Name(s.to_string()))
    }

    /// Its index (`ip link`'s number).
    pub fn index(&self) -> Result<u32, String> {
        match self {
            Interface::Name(n) => nix::net::if_::if_nametoindex(n.as_str())
                .map_err(|e| format!("no network interface {n:?} ({e}); `ip link` lists them")),
            Interface::Addr(a) => {
                let name = self.find(|_, addr| addr == *a)?;
                Interface::Name(name).index()
            }
        }
    }

    /// Its IPv4 address (the first one).
    pub fn ipv4(&self) -> Result<Ipv4Addr, String> {
        match self {
            Interface::Addr(IpAddr::V4(a)) => Ok(*a),
            Interface::Addr(a) => Err(format!(
                "interface {a} is an IPv6 address: an IPv4 group needs the interface's name or \
                 IPv4 address"
            )),
            Interface::Name(n) => {
                let mut found = None;
                self.find(|name, addr| {
                    if let (true, IpAddr::V4(v4), None) = (name == n.as_str(), addr, found) {
                        found = Some(v4);
                    }
                    false
                })
                .ok();
                found.ok_or_else(|| {
                    format!("network interface {n:?} has no IPv4 address (`ip addr show {n}`)")
                })
            }
        }
    }

    /// The name of the interface with an address for which `pick(name, addr)` holds.
    fn find(&self, mut pick: impl FnMut(&str, IpAddr) -> bool) -> Result<String, String> {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|e| format!("cannot list the network interfaces: {e}"))?;
        for ifa in addrs {
            let Some(sa) = ifa.address.as_ref() else {
                continue;
            };
            let ip = match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (_, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => continue,
            };
            if pick(&ifa.interface_name, ip) {
                return Ok(ifa.interface_name);
            }
        }
        Err(format!(
            "no network interface has the address {self} (`ip addr` lists them); give the \
             interface's name or one of its addresses"
        ))
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interface::Name(n) => f.write_str(n),
            Interface::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// How a sender sends to a group, and where a receiver joins it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MulticastOptions {
    /// Hop limit (`network.ttl`, `--ttl`); [`DEFAULT_TTL`] when `None`.
    pub ttl: Option<u32>,
    /// The interface packets leave by, or the group is joined on (`network.interface`,
    /// `--interface`); the routing table's choice when `None`.
    pub interface: Option<Interface>,
}

/// Sets a sender's socket up for `group`: hop limit, outgoing interface, and loopback on (a
/// receiver on the sender's own host is a member like any other).
pub(super) fn set_sender_options(
    sock: &UdpSocket,
    group: IpAddr,
    o: &MulticastOptions,
) -> Result<(), String> {
    let s = SockRef::from(sock);
    let ttl = o.ttl.unwrap_or(DEFAULT_TTL);
    let set = match group {
        IpAddr::V4(_) => s
            .set_multicast_ttl_v4(ttl)
            .and_then(|()| s.set_multicast_loop_v4(true)),
        IpAddr::V6(_) => s
            .set_multicast_hops_v6(ttl)
            .and_then(|()| s.set_multicast_loop_v6(true)),
    };
    set.map_err(|e| format!("cannot set the multicast hop limit {ttl} for {group}: {e}"))?;
    if let Some(i) = &o.interface {
        let set = match group {
            IpAddr::V4(_) => s.set_multicast_if_v4(&i.ipv4()?),
            IpAddr::V6(_) => s.set_multicast_if_v6(i.index()?),
        };
        set.map_err(|e| format!("cannot send {group} out of interface {i}: {e}"))?;
    }
    Ok(())
}

impl UdpReceiver {
    /// The receiver's socket for `listen` (`addr:port`) with a receive buffer of `rcvbuf`
    /// bytes: bound there; or, when the address is a multicast group, bound to the wildcard
    /// address on its port and joined to the group on `interface` (the routing table's choice
    /// when `None`), see the module docs.
    pub fn listen(
        listen: &str,
        rcvbuf: usize,
        interface: Option<&Interface>,
    ) -> Result<UdpReceiver, String> {
        let at = resolve(listen).map_err(|e| e.to_string())?;
        if !at.ip().is_multicast() {
            return UdpReceiver::bind(&at.to_string(), rcvbuf).map_err(|e| e.to_string());
        }
        let any: IpAddr = if at.is_ipv6() {
            "::".parse().expect("literal")
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let r = UdpReceiver::bind(&SocketAddr::new(any, at.port()).to_string(), rcvbuf)
            .map_err(|e| e.to_string())?;
        let s = SockRef::from(&r.sock);
        let only_joined = match at.ip() {
            IpAddr::V4(_) => s.set_multicast_all_v4(false),
            IpAddr::V6(_) => s.set_multicast_all_v6(false),
        };
        if let Err(e) = only_joined {
            // Older kernels: other groups joined on this port by other programs come in too,
            // and are refused as foreign packets.
            log::debug!("IP_MULTICAST_ALL cannot be turned off ({e})");
        }
        r.join_multicast(at.ip(), interface).map_err(|e| {
            format!(
                "cannot join the multicast group {} (--listen / network.listen){}: {e}",
                at.ip(),
                interface.map_or(String::new(), |i| format!(" on interface {i}"))
            )
        })?;
        log::info!(
            "joined the multicast group {}{}; listening on port {}",
            at.ip(),
            interface.map_or(String::new(), |i| format!(" on {i}")),
            at.port()
        );
        Ok(r)
    }

    /// Joins the multicast `group` on `interface` (the routing table's choice when `None`).
    pub fn join_multicast(
        &self,
        group: IpAddr,
        interface: Option<&Interface>,
    ) -> Result<(), String> {
        let s = SockRef::from(&self.sock);
        let joined = match (group, interface) {
            (IpAddr::V4(g), None) => s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED),
            (IpAddr::V4(g), Some(Interface::Addr(IpAddr::V4(a)))) => s.join_multicast_v4(&g, a),
            (IpAddr::V4(g), Some(i)) => {
                s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(i.index()?))
            }
            (IpAddr::V6(g), None) => s.join_multicast_v6(&g, 0),
            (IpAddr::V6(g), Some(i)) => s.join_multicast_v6(&g, i.index()?),
        };
        joined.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_parse_as_addresses_or_names_and_bad_ones_are_named() {
        assert_eq!(
            Interface::parse("192.0.2.1"),
            Ok(Interface::Addr("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            Interface::parse(" eth0 "),
            Ok(Interface::Name("eth0".into()))
        );
        for bad in ["", "a b", "sixteen-chars-xx"] {
            let e = Interface::parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("ip link"),
                "{e}"
            );
        }
    }

    #[test]
    fn loopback_resolves_by_name_and_by_address() {
        let lo = Interface::Name("lo".into());
        assert!(lo.index().unwrap() > 0);
        assert_eq!(lo.ipv4().unwrap(), Ipv4Addr::LOCALHOST);
        let by_addr = Interface::Addr(Ipv4Addr::LOCALHOST.into());
        assert_eq!(by_addr.index().unwrap(), lo.index().unwrap());
        let e = Interface::Name("na-nonesuch0".into()).index().unwrap_err();
        assert!(e.contains("na-nonesuch0"), "{e}");
    }

    #[test]
    fn a_unicast_listen_address_is_bound_as_it_is() {
        let r = UdpReceiver::listen("127.0.0.1:0", 1 << 16, None).unwrap();
        assert_eq!(r.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
    }
}
