//! The sender's side of the time exchange: answer each request, remember who asked.
//!
//! [`SyncResponder`] answers a receiver's request with its own clock's `t2` (when the request
//! arrived: the kernel's receive timestamp where the socket gives one) and `t3` (read as late
//! as possible: [`accept`](SyncResponder::accept) checks the request and notes the receiver,
//! then the driver reads its clock and [`respond`](SyncResponder::respond) writes and seals
//! the response, which the driver sends at once). The response goes to the request's source
//! address, and only there: it is no longer than the request.
//!
//! Apart from answering it keeps, for the status, a fixed table of the receivers it heard
//! from: their id, the index of their address in the driver's own table, their last report
//! and when they were last heard. A full table gives the longest-silent entry to a newcomer.
//!
//! With a key, only sealed requests are answered; a request whose `t1` is not later than the
//! last one of the same receiver is a replay (a receiver's clock only moves forward) and is
//! not answered either.
//!
//! Realtime contract: no allocation (the table is inline), no lock, no syscall, no formatting.

use super::packet::{self, Report, TimePacket, TimeResponse, TsError};
use crate::auth::Key;
use heapless::Vec as HVec;

/// Receivers the table holds.
pub const MAX_RECEIVERS: usize = 32;

/// A receiver the sender heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverEntry {
    /// Its id (random for each run of a receiver).
    pub id: u32,
    /// Where the driver keeps its address.
    pub addr_index: usize,
    /// Its last report.
    pub report: Report,
    /// When its last request arrived (sender clock, ns).
    pub last_seen_ns: u64,
    /// Requests answered.
    pub requests: u64,
    /// `t1` of its last request.
    last_t1: u64,
}

/// A request that was accepted, waiting for its `t3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingAnswer {
    receiver_id: u32,
    seq: u16,
    t1: u64,
    t2: u64,
}

impl PendingAnswer {
    /// The receiver that asked.
    pub fn receiver_id(&self) -> u32 {
        self.receiver_id
    }
}

/// Why a datagram is not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedRequest {
    /// Not a time-exchange datagram.
    Malformed(TsError),
    /// A response, not a request.
    NotARequest,
    /// Not sealed with the stream's key.
    Unauthentic,
    /// A request seen before.
    Replayed,
}

/// Counters of the responder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponderCounters {
    /// Requests accepted.
    pub accepted: u64,
    /// Datagrams refused.
    pub refused: u64,
    /// Refused for want of a valid seal.
    pub unauthentic: u64,
    /// Refused as replays.
    pub replayed: u64,
}

/// The sender's side of the time exchange (see the module docs).
#[derive(Clone, Debug)]
pub struct SyncResponder {
    key: Option<Key>,
    table: HVec<ReceiverEntry, MAX_RECEIVERS>,
    counters: ResponderCounters,
}

impl SyncResponder {
    /// A responder; with a key it answers only sealed requests and seals its answers.
    pub fn new(key: Option<Key>) -> SyncResponder {
        SyncResponder {
            key,
            table: HVec::new(),
            counters: ResponderCounters::default(),
        }
    }

    /// Checks `request`, which arrived at `t2` (sender clock, ns) from the address the driver
    /// keeps at `addr_index`, and notes its receiver; the answer is then written by
    /// [`respond`](Self::respond).
    pub fn accept(
        &mut self,
        request: &[u8],
        addr_index: usize,
        t2: u64,
    ) -> Result<PendingAnswer, RefusedRequest> {
        let r = self.check(request, addr_index, t2);
        match r {
            Ok(_) => self.counters.accepted += 1,
            Err(e) => {
                self.counters.refused += 1;
                match e {
                    RefusedRequest::Unauthentic => self.counters.unauthentic += 1,
                    RefusedRequest::Replayed => self.counters.replayed += 1,
                    _ => {}
                }
            }
        }
        r
    }

    fn check(
        &mut self,
        request: &[u8],
        addr_index: usize,
        t2: u64,
    ) -> Result<PendingAnswer, RefusedRequest> {
        let q = match TimePacket::parse(request) {
            Ok(TimePacket::Request(q)) => q,
            Ok(TimePacket::Response(_)) => return Err(RefusedRequest::NotARequest),
            Err(e) => return Err(RefusedRequest::Malformed(e)),
        };
        if self
            .key
            .as_ref()
            .is_some_and(|k| !packet::is_authentic(k, request))
        {
            return Err(RefusedRequest::Unauthentic);
        }
        let entry = ReceiverEntry {
            id: q.receiver_id,
            addr_index,
            report: q.report,
            last_seen_ns: t2,
            requests: 1,
            last_t1: q.t1,
        };
        match self.table.iter_mut().find(|e| e.id == q.receiver_id) {
            Some(e) if q.t1 <= e.last_t1 => return Err(RefusedRequest::Replayed),
            Some(e) => {
                *e = ReceiverEntry {
                    requests: e.requests + 1,
                    ..entry
                };
            }
            None => {
                if let Err(entry) = self.table.push(entry) {
                    // Full: the longest-silent receiver gives way.
                    if let Some(oldest) = self.table.iter_mut().min_by_key(|e| e.last_seen_ns) {
                        *oldest = entry;
                    }
                }
            }
        }
        Ok(PendingAnswer {
            receiver_id: q.receiver_id,
            seq: q.seq,
            t1: q.t1,
            t2,
        })
    }

    /// Writes the answer to `pending` with `t3` (sender clock, read just now: send the answer
    /// right after) into `out` and seals it with the key; returns its length. `out` must hold
    /// [`packet::MAX_TS_LEN`] bytes.
    pub fn respond(
        &self,
        pending: &PendingAnswer,
        t3: u64,
        out: &mut [u8],
    ) -> Result<usize, TsError> {
        let r = TimeResponse {
            receiver_id: pending.receiver_id,
            seq: pending.seq,
            t1: pending.t1,
            t2: pending.t2,
            t3: t3.max(pending.t2),
        };
        let n = r.emit(out)?;
        match &self.key {
            Some(k) => packet::seal(k, out),
            None => Ok(n),
        }
    }

    /// [`accept`](Self::accept) and [`respond`](Self::respond) in one, for a driver that reads
    /// `t3` before the check.
    pub fn answer(
        &mut self,
        request: &[u8],
        addr_index: usize,
        t2: u64,
        t3: u64,
        out: &mut [u8],
    ) -> Result<usize, RefusedRequest> {
        let p = self.accept(request, addr_index, t2)?;
        self.respond(&p, t3, out).map_err(RefusedRequest::Malformed)
    }

    /// The receivers heard from (in no particular order).
    pub fn receivers(&self) -> &[ReceiverEntry] {
        &self.table
    }

    /// Forgets the receivers not heard from since `now − max_age_ns`.
    pub fn expire(&mut self, now: u64, max_age_ns: u64) {
        self.table
            .retain(|e| now.saturating_sub(e.last_seen_ns) <= max_age_ns);
    }

    /// The counters.
    pub fn counters(&self) -> &ResponderCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KEY_LEN;
    use crate::sync::packet::{MAX_TS_LEN, REPORT_LOCKED, TimeRequest};

    fn request(id: u32, seq: u16, t1: u64, key: Option<&Key>) -> ([u8; MAX_TS_LEN], usize) {
        let q = TimeRequest {
            receiver_id: id,
            seq,
            t1,
            report: Report {
                presentation_error_us: Some(seq as i32),
                model_error_ns: 500,
                flags: REPORT_LOCKED,
            },
        };
        let mut b = [0u8; MAX_TS_LEN];
        let mut n = q.emit(&mut b).unwrap();
        if let Some(k) = key {
            n = packet::seal(k, &mut b).unwrap();
        }
        (b, n)
    }

    #[test]
    fn answers_with_t2_and_t3_and_keeps_the_report() {
        let mut r = SyncResponder::new(None);
        let (q, n) = request(7, 3, 1_000, None);
        let mut out = [0u8; MAX_TS_LEN];
        let p = r.accept(&q[..n], 2, 5_000).unwrap();
        assert_eq!(p.receiver_id(), 7);
        let m = r.respond(&p, 5_400, &mut out).unwrap();
        assert_eq!(m, n, "no longer than the request");
        assert_eq!(
            TimePacket::parse(&out[..m]),
            Ok(TimePacket::Response(TimeResponse {
                receiver_id: 7,
                seq: 3,
                t1: 1_000,
                t2: 5_000,
                t3: 5_400
            }))
        );
        let e = r.receivers()[0];
        assert_eq!(
            (e.id, e.addr_index, e.last_seen_ns, e.requests),
            (7, 2, 5_000, 1)
        );
        assert_eq!(e.report.presentation_error_us, Some(3));
        let (q, n) = request(7, 4, 2_000, None);
        r.answer(&q[..n], 2, 6_000, 6_100, &mut out).unwrap();
        assert_eq!(r.receivers()[0].requests, 2);
        assert_eq!(r.receivers()[0].report.presentation_error_us, Some(4));
        assert_eq!(
            r.answer(&q[..n], 2, 6_000, 6_100, &mut out),
            Err(RefusedRequest::Replayed)
        );
        assert_eq!(
            r.answer(&out[..m], 2, 6_000, 6_100, &mut [0u8; MAX_TS_LEN]),
            Err(RefusedRequest::NotARequest)
        );
        assert!(matches!(
            r.answer(&q[..3], 2, 6_000, 6_100, &mut out),
            Err(RefusedRequest::Malformed(TsError::Truncated { len: 3 }))
        ));
    }

    #[test]
    fn with_a_key_only_sealed_requests_are_answered_and_answers_are_sealed() {
        let key = Key::from_bytes([8; KEY_LEN]);
        let mut r = SyncResponder::new(Some(key.clone()));
        let mut out = [0u8; MAX_TS_LEN];
        let (q, n) = request(1, 0, 10, None);
        assert_eq!(
            r.answer(&q[..n], 0, 20, 30, &mut out),
            Err(RefusedRequest::Unauthentic)
        );
        let (q, n) = request(1, 0, 10, Some(&Key::from_bytes([9; KEY_LEN])));
        assert_eq!(
            r.answer(&q[..n], 0, 20, 30, &mut out),
            Err(RefusedRequest::Unauthentic)
        );
        assert!(r.receivers().is_empty());
        let (q, n) = request(1, 0, 10, Some(&key));
        let m = r.answer(&q[..n], 0, 20, 30, &mut out).unwrap();
        assert!(packet::is_authentic(&key, &out[..m]));
        assert_eq!(
            r.answer(&q[..n], 0, 21, 31, &mut out),
            Err(RefusedRequest::Replayed)
        );
        let c = r.counters();
        assert_eq!(
            (c.accepted, c.refused, c.unauthentic, c.replayed),
            (1, 3, 2, 1)
        );
    }

    #[test]
    fn a_full_table_gives_the_longest_silent_place_to_a_newcomer() {
        let mut r = SyncResponder::new(None);
        let mut out = [0u8; MAX_TS_LEN];
        for id in 0..MAX_RECEIVERS as u32 {
            let (q, n) = request(id, 0, 1, None);
            r.answer(&q[..n], id as usize, 100 + id as u64, 200, &mut out)
                .unwrap();
        }
        // Receiver 0 asks again: receiver 1 is now the longest silent.
        let (q, n) = request(0, 1, 2, None);
        r.answer(&q[..n], 0, 1_000, 1_001, &mut out).unwrap();
        let (q, n) = request(99, 0, 1, None);
        r.answer(&q[..n], 99, 1_002, 1_003, &mut out).unwrap();
        assert_eq!(r.receivers().len(), MAX_RECEIVERS);
        let ids: Vec<u32> = r.receivers().iter().map(|e| e.id).collect();
        assert!(ids.contains(&99) && ids.contains(&0) && !ids.contains(&1));
        r.expire(1_100, 200);
        let mut ids: Vec<u32> = r.receivers().iter().map(|e| e.id).collect();
        ids.sort();
        assert_eq!(ids, vec![0, 99]);
    }
}
