//! A seeded network model: delay, jitter, random and burst loss, reordering and duplicates.
//! Deterministic for a seed, allocation-free after construction (packets live in a fixed slot
//! pool, arrivals in a preallocated heap).

use crate::rng::Rng;
use crate::wire::{HEADER_LEN, MAX_PACKET_LEN};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How the link behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    /// Fixed one-way delay, ms.
    pub delay_ms: f64,
    /// Extra delay, uniform in `[0, jitter_ms]`, packets staying in order.
    pub jitter_ms: f64,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Loss bursts per minute (Poisson).
    pub bursts_per_min: f64,
    /// Packets lost in a row per burst.
    pub burst_len: u32,
    /// Probability that a packet is held back behind later ones.
    pub reorder: f64,
    /// Probability that a packet arrives twice.
    pub duplicate: f64,
    /// The jitter changes over time: from `jitter_ms` at `from_s` to `to_ms` at `to_s`
    /// (linearly; `to_ms` after), seconds of link time.
    pub jitter_ramp: Option<JitterRamp>,
}

/// A change of the jitter over time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterRamp {
    /// When the change starts, s.
    pub from_s: f64,
    /// When it is complete, s.
    pub to_s: f64,
    /// Jitter from then on, ms.
    pub to_ms: f64,
}

impl NetConfig {
    /// The jitter bound at link time `t_s`, ms.
    pub fn jitter_at(&self, t_s: f64) -> f64 {
        match self.jitter_ramp {
            None => self.jitter_ms,
            Some(r) if t_s <= r.from_s => self.jitter_ms,
            Some(r) if t_s >= r.to_s || r.to_s <= r.from_s => r.to_ms,
            Some(r) => {
                self.jitter_ms + (r.to_ms - self.jitter_ms) * (t_s - r.from_s) / (r.to_s - r.from_s)
            }
        }
    }

    /// The largest jitter bound of the run, ms.
    pub fn max_jitter_ms(&self) -> f64 {
        self.jitter_ramp
            .map_or(self.jitter_ms, |r| r.to_ms.max(self.jitter_ms))
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            delay_ms: 0.5,
            jitter_ms: 0.0,
            loss: 0.0,
            bursts_per_min: 0.0,
            burst_len: 0,
            reorder: 0.0,
            duplicate: 0.0,
            jitter_ramp: None,
        }
    }
}

/// What the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Packets offered.
    pub sent: u64,
    /// Packets dropped (random, burst, or pool full).
    pub dropped: u64,
    /// Packets held back behind later ones.
    pub reordered: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

/// The link.
pub struct Network {
    cfg: NetConfig,
    rng: Rng,
    packet_interval_s: f64,
    slots: Vec<u8>,
    lens: Vec<u16>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    order: u64,
    last_arrival_ns: u64,
    burst_left: u32,
    counters: NetCounters,
}

impl Network {
    /// A link whose packets leave every `packet_interval_s`; up to `slots` packets in flight.
    pub fn new(cfg: NetConfig, seed: u64, packet_interval_s: f64, slots: usize) -> Network {
        Network {
            cfg,
            rng: Rng::new(seed ^ 0x6E65_7477_6F72_6B00),
            packet_interval_s,
            slots: vec![0; slots * MAX_PACKET_LEN],
            lens: vec![0; slots],
            free: (0..slots as u32).rev().collect(),
            heap: BinaryHeap::with_capacity(slots),
            order: 0,
            last_arrival_ns: 0,
            burst_left: 0,
            counters: NetCounters::default(),
        }
    }

    /// What the link did so far.
    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    fn lost(&mut self) -> bool {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            return true;
        }
        if self.cfg.bursts_per_min > 0.0 && self.cfg.burst_len > 0 {
            let p = self.cfg.bursts_per_min * self.packet_interval_s / 60.0;
            if self.rng.chance(p) {
                self.burst_left = self.cfg.burst_len - 1;
                return true;
            }
        }
        self.rng.chance(self.cfg.loss)
    }

    fn enqueue(&mut self, at_ns: u64, header: &[u8], payload: &[u8]) -> bool {
        let Some(slot) = self.free.pop() else {
            return false;
        };
        let len = header.len() + payload.len();
        let base = slot as usize * MAX_PACKET_LEN;
        self.slots[base..base + header.len()].copy_from_slice(header);
        self.slots[base + header.len()..base + len].copy_from_slice(payload);
        self.lens[slot as usize] = len as u16;
        self.order += 1;
        self.heap.push(Reverse((at_ns, self.order, slot)));
        true
    }

    /// Offers a packet (header and payload, as a gather write would) at `now_ns`.
    pub fn send(&mut self, now_ns: u64, header: &[u8; HEADER_LEN], payload: &[u8]) {
        self.send_parts(now_ns, header, payload);
    }

    /// Offers a whole datagram (a NACK, a packet sent again) at `now_ns`.
    pub fn send_datagram(&mut self, now_ns: u64, datagram: &[u8]) {
        self.send_parts(now_ns, datagram, &[]);
    }

    /// Offers a datagram made of two parts (a header, then the rest) at `now_ns`.
    pub fn send_parts(&mut self, now_ns: u64, header: &[u8], payload: &[u8]) {
        self.counters.sent += 1;
        if header.len() + payload.len() > MAX_PACKET_LEN || self.lost() {
            self.counters.dropped += 1;
            return;
        }
        let ms = 1e6;
        let base = now_ns + (self.cfg.delay_ms * ms) as u64;
        let jitter_ms = self.cfg.jitter_at(now_ns as f64 * 1e-9);
        let jitter = (self.rng.next_f64() * jitter_ms * ms) as u64;
        let mut at = base + jitter;
        if self.rng.chance(self.cfg.reorder) {
            // Held back one to three packet intervals, behind packets sent after it.
            self.counters.reordered += 1;
            at += ((1.0 + 2.0 * self.rng.next_f64()) * self.packet_interval_s * 1e9) as u64;
        } else {
            at = at.max(self.last_arrival_ns);
            self.last_arrival_ns = at;
        }
        if !self.enqueue(at, header, payload) {
            self.counters.dropped += 1;
            return;
        }
        if self.rng.chance(self.cfg.duplicate) {
            let extra = (self.rng.next_f64() * 2.0 * self.packet_interval_s * 1e9) as u64;
            if self.enqueue(at + extra, header, payload) {
                self.counters.duplicated += 1;
            }
        }
    }

    /// Arrival time of the next packet, if any is in flight.
    #[inline]
    pub fn next_arrival(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Delivers the next packet to `deliver` and frees its slot.
    pub fn deliver_next<F: FnMut(u64, &[u8])>(&mut self, mut deliver: F) {
        if let Some(Reverse((t, _, slot))) = self.heap.pop() {
            let base = slot as usize * MAX_PACKET_LEN;
            let len = self.lens[slot as usize] as usize;
            deliver(t, &self.slots[base..base + len]);
            self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rates_come_out_as_configured() {
        let cfg = NetConfig {
            loss: 0.01,
            bursts_per_min: 5.0,
            burst_len: 3,
            ..Default::default()
        };
        let interval = 256.0 / 48_000.0;
        let mut net = Network::new(cfg, 1, interval, 64);
        let h = [0u8; HEADER_LEN];
        let minutes = 60.0;
        let n = (minutes * 60.0 / interval) as u64;
        for i in 0..n {
            net.send((i as f64 * interval * 1e9) as u64, &h, &[0; 16]);
            while net.next_arrival().is_some() {
                net.deliver_next(|_, _| {});
            }
        }
        let c = net.counters();
        let expected = n as f64 * 0.01 + minutes * 5.0 * 3.0;
        let got = c.dropped as f64;
        assert!(
            (got - expected).abs() < expected * 0.1,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn jitter_alone_keeps_order() {
        let cfg = NetConfig {
            jitter_ms: 20.0,
            ..Default::default()
        };
        let mut net = Network::new(cfg, 7, 0.001, 256);
        for i in 0..200u64 {
            let mut h = [0u8; HEADER_LEN];
            h[..8].copy_from_slice(&i.to_be_bytes());
            net.send(i * 1_000_000, &h, &[]);
        }
        let mut last = None;
        while net.next_arrival().is_some() {
            net.deliver_next(|_, b| {
                let i = u64::from_be_bytes(b[..8].try_into().unwrap());
                assert!(last.is_none_or(|l| i > l));
                last = Some(i);
            });
        }
        assert_eq!(last, Some(199));
    }
}
