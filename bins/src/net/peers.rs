//! The receivers a sender serving several has heard from: each NACK's source address is given
//! a small index, which the retransmit history keeps its per-receiver state under
//! (`engine::recovery::RetransmitHistory::on_nack_from`), and what was asked and answered is
//! counted per receiver (the sender's `--stats-json` lists them).
//!
//! Realtime contract: a fixed table on the capture thread's stack; [`PeerTable::index`] is a
//! linear search of [`MAX_PEERS`] entries: no allocation, no syscall.

use std::net::SocketAddr;

/// Receivers told apart at most; beyond, the one heard from least recently gives its index
/// up (its state in the history is forgotten: the caller is told so).
pub const MAX_PEERS: usize = 32;

/// One receiver heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Where its NACKs come from, and its repairs go.
    pub addr: SocketAddr,
    /// When it was last heard from (the caller's clock, ns).
    pub last_ns: u64,
    /// NACK datagrams taken from it.
    pub nacks: u64,
    /// Packets sent again to it.
    pub repairs: u64,
}

/// Source addresses, their indices and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTable {
    peers: [Option<Peer>; MAX_PEERS],
}

impl Default for PeerTable {
    fn default() -> PeerTable {
        PeerTable {
            peers: [None; MAX_PEERS],
        }
    }
}

impl PeerTable {
    /// The index of `addr`, heard from at `now_ns`, and whether it is new to it (the index
    /// was free, or stood for another receiver until now).
    pub fn index(&mut self, addr: SocketAddr, now_ns: u64) -> (usize, bool) {
        let fresh = Peer {
            addr,
            last_ns: now_ns,
            nacks: 0,
            repairs: 0,
        };
        let mut oldest = (0, u64::MAX);
        for (i, p) in self.peers.iter_mut().enumerate() {
            match p {
                Some(peer) if peer.addr == addr => {
                    peer.last_ns = now_ns;
                    return (i, false);
                }
                Some(peer) => {
                    if peer.last_ns < oldest.1 {
                        oldest = (i, peer.last_ns);
                    }
                }
                None => {
                    *p = Some(fresh);
                    return (i, true);
                }
            }
        }
        self.peers[oldest.0] = Some(fresh);
        (oldest.0, true)
    }

    /// Counts a NACK from the receiver at `index`, answered with `repairs` packets.
    pub fn count(&mut self, index: usize, repairs: u64) {
        if let Some(Some(p)) = self.peers.get_mut(index) {
            p.nacks += 1;
            p.repairs += repairs;
        }
    }

    /// The receiver at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&Peer> {
        self.peers.get(index)?.as_ref()
    }

    /// The receivers heard from.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().flatten()
    }

    /// Receivers heard from.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether none was heard from.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(
            [192, 0, 2, (i % 250) as u8].into(),
            46000 + (i / 250) as u16,
        )
    }

    #[test]
    fn each_receiver_keeps_its_index_and_the_least_recent_makes_room() {
        let mut t = PeerTable::default();
        assert!(t.is_empty());
        assert_eq!(t.index(addr(0), 1), (0, true));
        assert_eq!(t.index(addr(1), 2), (1, true));
        assert_eq!(t.index(addr(0), 3), (0, false));
        t.count(0, 3);
        t.count(0, 1);
        let first = t.iter().next().unwrap();
        assert_eq!((first.addr, first.nacks, first.repairs), (addr(0), 2, 4));
        for i in 2..MAX_PEERS {
            assert_eq!(t.index(addr(i), 10 + i as u64), (i, true));
        }
        assert_eq!(t.len(), MAX_PEERS);
        // Full: receiver 1 (heard from at 2) is the least recent; its counts start again.
        assert_eq!(t.index(addr(999), 100), (1, true));
        assert_eq!(t.iter().nth(1).unwrap().nacks, 0);
        assert_eq!(t.index(addr(0), 101), (0, false));
        assert!(t.index(addr(1), 102).1, "it starts again");
    }
}
