//! The receivers a sender is serving, live: what its realtime thread knows of them (their NACKs
//! and repairs, and for receivers playing by presentation time their last reports through the
//! time exchange), handed to the status server lock-free.
//!
//! The capture thread [`publish`](LiveReceivers::publish)es the table once per period: each
//! slot is a few atomics guarded by a sequence count (odd while it is written), which a reader
//! ([`LiveReceivers::snapshot`], on the status thread) reads again when it changed under it.
//!
//! Realtime contract: `publish` stores into preallocated atomics only (relaxed, with release
//! and acquire on the sequence count): no allocation, lock or syscall.

use crate::net::PeerTable;
use engine::sync::SyncResponder;
use engine::sync::packet::{REPORT_LOCKED, REPORT_PLAYING};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots: as many receivers as a sender tells apart.
pub const SLOTS: usize = crate::net::MAX_PEERS;

/// No presentation error reported.
const NO_ERROR: u64 = u64::MAX;

#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    /// 0: empty; 4 or 6: the address family of `ip`.
    family: AtomicU64,
    ip_hi: AtomicU64,
    ip_lo: AtomicU64,
    port: AtomicU64,
    nacks: AtomicU64,
    repairs: AtomicU64,
    /// The receiver's id in the time exchange (0: it asks for no time).
    id: AtomicU64,
    /// Presentation error, µs, as `i64` bits ([`NO_ERROR`]: none).
    presentation_us: AtomicU64,
    model_error_ns: AtomicU64,
    flags: AtomicU64,
    requests: AtomicU64,
    /// Seconds since it was last heard from, ×1000, when published.
    last_ms_ago: AtomicU64,
}

/// One receiver as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveReceiver {
    /// Its address (`None`: the sender's one destination, whose address the status names).
    pub addr: Option<SocketAddr>,
    /// NACK datagrams taken from it.
    pub nacks: u64,
    /// Packets sent again to it.
    pub repairs: u64,
    /// With presentation time: its last reported presentation error, µs.
    pub presentation_error_us: Option<i64>,
    /// Its clock model's error, µs.
    pub model_error_us: Option<f64>,
    /// Its model is locked.
    pub locked: bool,
    /// It is playing.
    pub playing: bool,
    /// Time requests answered.
    pub time_requests: u64,
    /// Seconds since it was last heard from.
    pub last_heard_s: f64,
}

/// The table (see the module docs).
pub struct LiveReceivers {
    slots: [Slot; SLOTS],
}

impl Default for LiveReceivers {
    fn default() -> Self {
        LiveReceivers {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

fn split(addr: SocketAddr) -> (u64, u64, u64, u64) {
    let (family, v6) = match addr.ip() {
        IpAddr::V4(a) => (4, a.to_ipv6_mapped()),
        IpAddr::V6(a) => (6, a),
    };
    let b = u128::from_be_bytes(v6.octets());
    (family, (b >> 64) as u64, b as u64, addr.port() as u64)
}

fn join(family: u64, hi: u64, lo: u64, port: u64) -> Option<SocketAddr> {
    let v6 = Ipv6Addr::from(((hi as u128) << 64 | lo as u128).to_be_bytes());
    let ip = match family {
        4 => IpAddr::V4(v6.to_ipv4_mapped()?),
        6 => IpAddr::V6(v6),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port as u16))
}

impl LiveReceivers {
    /// Publishes what the capture thread knows at `now_ns`: the receivers in `peers` (a
    /// sender serving several) and those `responder` answered. A receiver of a sender with one
    /// destination has no address here (slot 0).
    pub fn publish(&self, peers: &PeerTable, responder: Option<&SyncResponder>, now_ns: u64) {
        for (i, slot) in self.slots.iter().enumerate() {
            let peer = peers.get(i);
            let entry = responder.and_then(|r| r.receivers().iter().find(|e| e.addr_index == i));
            if peer.is_none() && entry.is_none() {
                if slot.family.load(Ordering::Relaxed) != 0 || slot.id.load(Ordering::Relaxed) != 0
                {
                    slot.seq.fetch_add(1, Ordering::AcqRel);
                    slot.family.store(0, Ordering::Relaxed);
                    slot.id.store(0, Ordering::Relaxed);
                    slot.seq.fetch_add(1, Ordering::Release);
                }
                continue;
            }
            slot.seq.fetch_add(1, Ordering::AcqRel);
            let (family, hi, lo, port) = peer.map_or((1, 0, 0, 0), |p| split(p.addr));
            slot.family.store(family, Ordering::Relaxed);
            slot.ip_hi.store(hi, Ordering::Relaxed);
            slot.ip_lo.store(lo, Ordering::Relaxed);
            slot.port.store(port, Ordering::Relaxed);
            slot.nacks
                .store(peer.map_or(0, |p| p.nacks), Ordering::Relaxed);
            slot.repairs
                .store(peer.map_or(0, |p| p.repairs), Ordering::Relaxed);
            let last = entry
                .map(|e| e.last_seen_ns)
                .into_iter()
                .chain(peer.map(|p| p.last_ns))
                .max()
                .unwrap_or(now_ns);
            slot.last_ms_ago
                .store(now_ns.saturating_sub(last) / 1_000_000, Ordering::Relaxed);
            match entry {
                Some(e) => {
                    slot.id.store(e.id as u64 | 1 << 32, Ordering::Relaxed);
                    slot.presentation_us.store(
                        e.report
                            .presentation_error_us
                            .map_or(NO_ERROR, |v| v as i64 as u64),
                        Ordering::Relaxed,
                    );
                    slot.model_error_ns
                        .store(e.report.model_error_ns as u64, Ordering::Relaxed);
                    slot.flags.store(e.report.flags as u64, Ordering::Relaxed);
                    slot.requests.store(e.requests, Ordering::Relaxed);
                }
                None => slot.id.store(0, Ordering::Relaxed),
            }
            slot.seq.fetch_add(1, Ordering::Release);
        }
    }

    /// The receivers now (the status thread).
    pub fn snapshot(&self) -> Vec<LiveReceiver> {
        let mut out = Vec::new();
        for slot in &self.slots {
            // A slot changing under the reader is read again (a few tries: the writer
            // rewrites it once a period).
            for _ in 0..8 {
                let before = slot.seq.load(Ordering::Acquire);
                if before % 2 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let family = slot.family.load(Ordering::Relaxed);
                let id = slot.id.load(Ordering::Relaxed);
                let r = LiveReceiver {
                    addr: join(
                        family,
                        slot.ip_hi.load(Ordering::Relaxed),
                        slot.ip_lo.load(Ordering::Relaxed),
                        slot.port.load(Ordering::Relaxed),
                    ),
                    nacks: slot.nacks.load(Ordering::Relaxed),
                    repairs: slot.repairs.load(Ordering::Relaxed),
                    presentation_error_us: match slot.presentation_us.load(Ordering::Relaxed) {
                        NO_ERROR => None,
                        v if id != 0 => Some(v as i64),
                        _ => None,
                    },
                    model_error_us: (id != 0)
                        .then(|| slot.model_error_ns.load(Ordering::Relaxed))
                        .filter(|&e| e != u32::MAX as u64)
                        .map(|e| e as f64 / 1000.0),
                    locked: id != 0
                        && slot.flags.load(Ordering::Relaxed) & REPORT_LOCKED as u64 != 0,
                    playing: id != 0
                        && slot.flags.load(Ordering::Relaxed) & REPORT_PLAYING as u64 != 0,
                    time_requests: if id != 0 {
                        slot.requests.load(Ordering::Relaxed)
                    } else {
                        0
                    },
                    last_heard_s: slot.last_ms_ago.load(Ordering::Relaxed) as f64 / 1000.0,
                };
                if slot.seq.load(Ordering::Acquire) == before {
                    if family != 0 || id != 0 {
                        out.push(r);
                    }
                    break;
                }
            }
        }
        out
    }

    /// The receivers as the status's `receivers` list (`address` is `fallback` for a sender's
    /// one destination).
    pub fn json(&self, fallback: &str) -> Value {
        Value::Array(
            self.snapshot()
                .iter()
                .map(|r| {
                    json!({
                        "address": r.addr.map_or_else(|| fallback.to_string(), |a| a.to_string()),
                        "nacks": r.nacks,
                        "repairs": r.repairs,
                        "presentation_error_us": r.presentation_error_us,
                        "model_error_us": r.model_error_us,
                        "locked": r.locked,
                        "playing": r.playing,
                        "time_requests": r.time_requests,
                        "last_heard_s": r.last_heard_s,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_through_the_atomics_unchanged() {
        for a in ["192.0.2.7:46000", "[2001:db8::5]:46001", "[::1]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let (f, hi, lo, p) = split(a);
            assert_eq!(join(f, hi, lo, p), Some(a));
        }
    }

    #[test]
    fn an_empty_table_lists_nobody() {
        let t = LiveReceivers::default();
        t.publish(&PeerTable::default(), None, 5);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn peers_are_listed_with_their_counts() {
        let t = LiveReceivers::default();
        let mut p = PeerTable::default();
        let a: SocketAddr = "10.0.0.2:46000".parse().unwrap();
        let (i, _) = p.index(a, 1_000_000_000);
        p.count(i, 3);
        t.publish(&p, None, 3_000_000_000);
        let s = t.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].addr, Some(a));
        assert_eq!(s[0].repairs, 3);
        assert_eq!(s[0].last_heard_s, 2.0);
        assert_eq!(s[0].presentation_error_us, None);
        let j = t.json("x");
        assert_eq!(j[0]["address"], "10.0.0.2:46000");
    }
}
