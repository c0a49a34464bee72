//! Loss recovery's side of the receiver: the NACKs its [`LossTracker`] writes, sealed with
//! the key when there is one, and the copies a driver sends.
//!
//! Realtime contract: `poll_nack` and `poll_nack_copies` write into the caller's buffer and
//! never allocate, lock, block or make a syscall (the driver sends the datagrams).

use super::Receiver;
use crate::recovery::LossTracker;

impl Receiver {
    /// Loss recovery's turn, at `now_ns`: writes a NACK asking for the packets that are missing
    /// and still worth asking for into `buf` (at least [`crate::nack::MAX_NACK_LEN`] bytes) and
    /// returns its length; 0 when there is nothing to send (or recovery is off).
    pub fn poll_nack(&mut self, now_ns: u64, buf: &mut [u8]) -> usize {
        let Some(tr) = self.tracker.as_mut() else {
            return 0;
        };
        let mut n = tr.poll(now_ns, self.read_pos, buf);
        if n > 0 {
            if let Some(a) = self.auth.as_mut() {
                n = a.seal_nack(now_ns, buf);
            }
            self.counters.nacks_sent += 1;
            self.counters.nack_bytes_sent += n as u64;
        }
        n
    }

    /// Loss recovery's turn with the copies a driver sends: writes the NACK as
    /// [`poll_nack`](Self::poll_nack) does and hands each of the tracker's
    /// [`nack_copies`](LossTracker::nack_copies) to `send`. With a key each copy is sealed with
    /// a nonce of its own, so the sender refuses replays without refusing copies. Returns the
    /// datagrams handed out.
    pub fn poll_nack_copies<F: FnMut(&[u8])>(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        mut send: F,
    ) -> usize {
        let n = self.poll_nack(now_ns, buf);
        if n == 0 {
            return 0;
        }
        let copies = self.tracker.as_ref().map_or(1, |t| t.nack_copies());
        send(&buf[..n]);
        for _ in 1..copies {
            let m = match self.auth.as_mut() {
                Some(a) => a.seal_nack(now_ns, buf),
                None => n,
            };
            send(&buf[..m]);
        }
        copies
    }

    /// When [`Receiver::poll_nack`] next has something to do (a packet becomes overdue, a
    /// request is due again), on the driver's clock; `None` when nothing is pending.
    pub fn next_nack_due(&self) -> Option<u64> {
        self.tracker.as_ref().and_then(|t| t.next_due_ns())
    }

    /// The loss tracker, when recovery is on.
    pub fn loss_tracker(&self) -> Option<&LossTracker> {
        self.tracker.as_ref()
    }
}
