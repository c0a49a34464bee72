//! The receivers a sender serving several has heard from: each NACK's source address is given
//! a small index, which the retransmit history keeps its per-receiver state under
//! (`engine::recovery::RetransmitHistory::on_nack_from`).
//!
//! Realtime contract: a fixed table on the capture thread's stack; [`PeerTable::index`] is a
//! linear search of [`MAX_PEERS`] entries: no allocation, no syscall.

use std::net::SocketAddr;

/// Receivers told apart at most; beyond, the one heard from least recently gives its index
/// up (its state in the history is forgotten: the caller is told so).
pub const MAX_PEERS: usize = 32;

/// Source addresses and their indices.
#[derive(Clone, Debug)]
pub struct PeerTable {
    peers: [Option<(SocketAddr, u64)>; MAX_PEERS],
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
        let mut oldest = (0, u64::MAX);
        for (i, p) in self.peers.iter_mut().enumerate() {
            match p {
                Some((a, seen)) if *a == addr => {
                    *seen = now_ns;
                    return (i, false);
                }
                Some((_, seen)) => {
                    if *seen < oldest.1 {
                        oldest = (i, *seen);
                    }
                }
                None => {
                    *p = Some((addr, now_ns));
                    return (i, true);
                }
            }
        }
        self.peers[oldest.0] = Some((addr, now_ns));
        (oldest.0, true)
    }

    /// Receivers heard from.
    pub fn len(&self) -> usize {
        self.peers.iter().filter(|p| p.is_some()).count()
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
        for i in 2..MAX_PEERS {
            assert_eq!(t.index(addr(i), 10 + i as u64), (i, true));
        }
        assert_eq!(t.len(), MAX_PEERS);
        // Full: receiver 1 (heard from at 2) is the least recent.
        assert_eq!(t.index(addr(999), 100), (1, true));
        assert_eq!(t.index(addr(0), 101), (0, false));
        assert!(t.index(addr(1), 102).1, "it starts again");
    }
}
