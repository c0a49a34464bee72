//! Network namespaces a test makes and deletes (never the machine's own interfaces): two
//! joined by a veth pair ([`Lab::pair`]), or a sender's namespace whose bridge joins several
//! receivers' ([`Lab::star`]), for multicast to more than one.
//!
//! Making namespaces needs root and iproute2. Without them the lab is `None` (the test skips
//! with a loud message), unless `CI=true` or `NETAUDIO_NETNS=require` (as `ci/test` sets),
//! which makes it a failure.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The two ends of [`Lab::pair`] (TEST-NET-1, inside the namespaces only).
pub const ADDR_A: &str = "192.0.2.1";
/// See [`ADDR_A`].
pub const ADDR_B: &str = "192.0.2.2";
/// The hub's address on its bridge in [`Lab::star`] (TEST-NET-2); receiver `i` is at
/// `198.51.100.(11 + i)`.
pub const HUB_ADDR: &str = "198.51.100.1";
/// The hub's IPv6 address in [`Lab::star`] (the documentation prefix); receiver `i` is at
/// `2001:db8:46::(11 + i)`.
pub const HUB_ADDR6: &str = "2001:db8:46::1";

/// `ip ARGS`; its error output when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces made for one test, deleted when dropped (with their veth pairs and bridge).
pub struct Lab {
    /// [`pair`](Self::pair): the receiver's side. [`star`](Self::star): the hub (sender).
    pub a: String,
    /// [`pair`](Self::pair): the sender's side. [`star`](Self::star): empty.
    pub b: String,
    /// The veth end in `a` ([`pair`](Self::pair)).
    pub va: String,
    /// [`star`](Self::star): every receiver's namespace, and its veth end there.
    pub receivers: Vec<(String, String)>,
    /// Veth ends made in this namespace (deleted if a failed set-up left them here).
    links: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        for (ns, _) in &self.receivers {
            let _ = ip(&["netns", "del", ns]);
        }
        if !self.b.is_empty() {
            let _ = ip(&["netns", "del", &self.b]);
        }
        // A pair that never made it into the namespaces (a failed set-up) is left in this
        // one: deleting one end deletes both.
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
    }
}

static LABS: AtomicU32 = AtomicU32::new(0);

/// Whether namespaces are required (a failure, not a skip, when they cannot be made).
pub fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("NETAUDIO_NETNS").as_deref() == Ok("require")
}

fn made(lab: Lab, built: Result<(), String>, what: &str) -> Option<Lab> {
    match built {
        Ok(()) => Some(lab),
        Err(e) => {
            assert!(
                !required(),
                "network namespaces are required (CI=true or NETAUDIO_NETNS=require) but cannot be made: {e} (run as root with iproute2 installed; ci/rig-setup installs it)"
            );
            eprintln!(
                "\n*** SKIPPED: cannot make network namespaces ({e}); {what} NOT tested \
                 (run as root; NETAUDIO_NETNS=require makes this a failure) ***\n"
            );
            None
        }
    }
}

/// A name unique to this process and lab.
fn unique() -> String {
    let n = LABS.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}", std::process::id())
}

impl Lab {
    /// Two namespaces, `a` at [`ADDR_A`] and `b` at [`ADDR_B`], joined by a veth pair, with a
    /// multicast route each; `None` (skipped, `what` not tested) when namespaces cannot be
    /// made here and they are not required.
    pub fn pair(what: &str) -> Option<Lab> {
        let id = unique();
        let (va, vb) = (format!("nv{id}a"), format!("nv{id}b"));
        let lab = Lab {
            a: format!("na-lab-{id}-a"),
            b: format!("na-lab-{id}-b"),
            va: va.clone(),
            receivers: Vec::new(),
            links: vec![va.clone()],
        };
        let built = lab.build_pair(&va, &vb);
        made(lab, built, what)
    }

    fn build_pair(&self, va: &str, vb: &str) -> Result<(), String> {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&["link", "add", va, "type", "veth", "peer", "name", vb])?;
        ip(&["link", "set", va, "netns", a])?;
        ip(&["link", "set", vb, "netns", b])?;
        for (ns, dev, addr) in [(a, va, ADDR_A), (b, vb, ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(())
    }

    /// A hub namespace `a` (the sender's) with a bridge `br0` at [`HUB_ADDR`], and `n`
    /// receiver namespaces each joined to the bridge by a veth pair, receiver `i` at
    /// [`receiver_addr`](Self::receiver_addr)`(i)`. Multicast snooping is off: the bridge
    /// floods a group to every port, as a plain switch does. `None` as for
    /// [`pair`](Self::pair).
    pub fn star(n: usize, what: &str) -> Option<Lab> {
        let id = unique();
        let mut lab = Lab {
            a: format!("na-lab-{id}-hub"),
            b: String::new(),
            va: String::new(),
            receivers: (0..n)
                .map(|i| (format!("na-lab-{id}-r{i}"), format!("nv{id}r{i}")))
                .collect(),
            links: Vec::new(),
        };
        lab.links = (0..n).map(|i| format!("nv{id}h{i}")).collect();
        let built = lab.build_star();
        made(lab, built, what)
    }

    fn build_star(&self) -> Result<(), String> {
        let hub = self.a.as_str();
        let (hub4, hub6) = (format!("{HUB_ADDR}/24"), format!("{HUB_ADDR6}/64"));
        ip(&["netns", "add", hub])?;
        let bridge = ["type", "bridge", "mcast_snooping", "0"];
        ip(&[&["-n", hub, "link", "add", "br0"][..], &bridge].concat())?;
        ip(&["-n", hub, "addr", "add", &hub4, "dev", "br0"])?;
        // No duplicate address detection: the IPv6 addresses are usable at once.
        ip(&["-n", hub, "addr", "add", &hub6, "dev", "br0", "nodad"])?;
        ip(&["-n", hub, "link", "set", "lo", "up"])?;
        ip(&["-n", hub, "link", "set", "br0", "up"])?;
        ip(&["-n", hub, "route", "add", "224.0.0.0/4", "dev", "br0"])?;
        for (i, ((ns, dev), hub_end)) in self.receivers.iter().zip(&self.links).enumerate() {
            ip(&["netns", "add", ns])?;
            ip(&["link", "add", hub_end, "type", "veth", "peer", "name", dev])?;
            ip(&["link", "set", hub_end, "netns", hub])?;
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", hub, "link", "set", hub_end, "master", "br0"])?;
            ip(&["-n", hub, "link", "set", hub_end, "up"])?;
            let addr = format!("{}/24", Self::receiver_addr(i));
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            let addr6 = format!("{}/64", Self::receiver_addr6(i));
            ip(&["-n", ns, "addr", "add", &addr6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(())
    }

    /// Receiver `i`'s address in a [`star`](Self::star).
    pub fn receiver_addr(i: usize) -> String {
        format!("198.51.100.{}", 11 + i)
    }

    /// Receiver `i`'s IPv6 address in a [`star`](Self::star).
    pub fn receiver_addr6(i: usize) -> String {
        format!("2001:db8:46::{}", 11 + i)
    }

    /// `netaudio` run in namespace `ns` (`ip netns exec`, which `exec`s it: a signal to the
    /// child reaches netaudio).
    pub fn netaudio(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_netaudio")]);
        c
    }
}
