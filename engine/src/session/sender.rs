//! The sending end of a stream: packetizer, retransmit history and NACK answers, the
//! counters and the fault handling of the capture side, in one place. A daemon's capture loop
//! and the simulator both drive it; they only move device buffers, datagrams and time.
//!
//! Realtime contract: [`SenderSession::new`] takes parts that were allocated before; no
//! method allocates, locks or makes a system call. Sending goes through the caller's closure
//! (one `sendmsg` per packet in the daemon, a simulated link in the simulator).

use super::fault::FaultInjector;
use super::packetizer::Packetizer;
use crate::recovery::RetransmitHistory;
use crate::rtlog::{Event, EventSink};
use crate::stats::StatsSnapshot;
use crate::sync::packet::{MAX_TS_LEN, is_time_packet};
use crate::sync::{RefusedRequest, SyncResponder};
use core::borrow::BorrowMut;

/// How often a failing send is told to the log at most, ns.
const SEND_FAIL_REPORT_NS: u64 = 1_000_000_000;

/// The sender's side of a stream (see the module docs). `P` is the packetizer (owned or
/// borrowed), `H` the retransmit history (owned or borrowed), `E` where events go.
pub struct SenderSession<P: Packetizer, H: BorrowMut<RetransmitHistory>, E: EventSink> {
    tx: P,
    history: Option<H>,
    events: E,
    counters: StatsSnapshot,
    last_fail_ns: Option<u64>,
    fault: FaultInjector,
    /// Answers receivers' time requests (presentation time), when on.
    sync: Option<Box<SyncResponder>>,
    /// Capture times on the wall clock.
    wall_stamps: bool,
}

impl<P: Packetizer, H: BorrowMut<RetransmitHistory>, E: EventSink> SenderSession<P, H, E> {
    /// A session sending with `tx`; with a `history` it keeps every packet and answers NACKs.
    pub fn new(tx: P, history: Option<H>, events: E) -> Self {
        SenderSession {
            tx,
            history,
            events,
            counters: StatsSnapshot::default(),
            last_fail_ns: None,
            fault: FaultInjector::off(),
            sync: None,
            wall_stamps: false,
        }
    }

    /// Capture times go out on the wall clock ([`set_capture_time`](Self::set_capture_time)
    /// adds the offset the driver gives): for receivers on `sync.clock = "system"`, whose
    /// wall clocks PTP or chrony keep with this one.
    pub fn with_wall_clock_stamps(mut self) -> Self {
        self.wall_stamps = true;
        self
    }

    /// When the next period's first frame was captured, on the driver's clock, ns;
    /// `wall_offset_ns` is the wall clock less the driver's clock (used with
    /// [`with_wall_clock_stamps`](Self::with_wall_clock_stamps)). Packets carry it when the
    /// packetizer stamps capture times.
    pub fn set_capture_time(&mut self, capture_ns: u64, wall_offset_ns: i64) {
        let t = if self.wall_stamps {
            (capture_ns as i128 + wall_offset_ns as i128).clamp(0, u64::MAX as i128) as u64
        } else {
            capture_ns
        };
        self.tx.set_capture_time(t);
    }

    /// Answers receivers' time requests with `responder` (built before, boxed: it is a few
    /// kB), so they can play in step (see [`crate::sync`]).
    pub fn with_sync(mut self, responder: Box<SyncResponder>) -> Self {
        self.sync = Some(responder);
        self
    }

    /// The time responder, when on: its table lists the receivers heard from.
    pub fn sync(&self) -> Option<&SyncResponder> {
        self.sync.as_deref()
    }

    /// The time responder, to expire its table.
    pub fn sync_mut(&mut self) -> Option<&mut SyncResponder> {
        self.sync.as_deref_mut()
    }

    /// A time request from requester `requester` (an index the driver keeps for its address)
    /// that arrived at `t2` (the sender's clock, the kernel's receive time where there is
    /// one): the answer, with `t3` read by `clock` just before it goes, to `send`. Refused
    /// requests (malformed, unsealed with a key, replayed) are counted by the responder and
    /// not answered.
    pub fn on_time_request<C: FnOnce() -> u64, F: FnOnce(&[u8])>(
        &mut self,
        t2: u64,
        requester: usize,
        bytes: &[u8],
        clock: C,
        send: F,
    ) -> Result<(), RefusedRequest> {
        let Some(r) = self.sync.as_mut() else {
            return Err(RefusedRequest::NotARequest);
        };
        let pending = r.accept(bytes, requester, t2)?;
        let mut out = [0u8; MAX_TS_LEN];
        let n = r
            .respond(&pending, clock(), &mut out)
            .map_err(RefusedRequest::Malformed)?;
        send(&out[..n]);
        Ok(())
    }

    /// Sets a fault to inject into what this session sends (see [`FaultInjector`]).
    pub fn inject(&mut self, fault: FaultInjector) {
        self.fault = fault;
    }

    /// The fault injector and what it dropped.
    pub fn fault(&self) -> &FaultInjector {
        &self.fault
    }

    /// The packetizer.
    pub fn packetizer(&self) -> &P {
        &self.tx
    }

    /// The packetizer, to replace it (a new sender process in the simulator).
    pub fn packetizer_mut(&mut self) -> &mut P {
        &mut self.tx
    }

    /// A requester's index now stands for another receiver: its state in the history is
    /// forgotten (see [`RetransmitHistory::forget_requester`]).
    pub fn forget_requester(&mut self, requester: usize) {
        if let Some(h) = self.history.as_mut() {
            h.borrow_mut().forget_requester(requester);
        }
    }

    /// Whether datagrams from receivers are answered: NACKs (a history is kept) or time
    /// requests (a responder is on).
    pub fn answers_nacks(&self) -> bool {
        self.history.is_some() || self.sync.is_some()
    }

    /// One captured period at `now_ns` (the driver's clock; `wall_ns` the wall clock): cuts it
    /// into packets, keeps each in the history and hands it to `send` as (header and
    /// extension, payload, tag). `send` returns the bytes sent or an errno. Returns the
    /// packets made.
    pub fn on_capture<F>(&mut self, now_ns: u64, wall_ns: u64, frames: &[u8], mut send: F) -> usize
    where
        F: FnMut(&[u8], &[u8], &[u8]) -> Result<usize, i32>,
    {
        self.tx.before_period(wall_ns);
        let history = &mut self.history;
        let c = &mut self.counters;
        let events = &mut self.events;
        let last_fail = &mut self.last_fail_ns;
        let fault = &mut self.fault;
        let n = self.tx.packetize_parts(frames, |head, payload, tag| {
            if let Some(h) = history.as_mut() {
                h.borrow_mut().record_parts(head, payload, tag);
            }
            if fault.drops() {
                // Lost on its way out, as a lossy link would lose it: the history kept it.
                return;
            }
            match send(head, payload, tag) {
                Ok(_) => c.packets_sent += 1,
                Err(errno) => {
                    // Tell the log at most once a second, not every time.
                    if last_fail.is_none_or(|t| now_ns.saturating_sub(t) >= SEND_FAIL_REPORT_NS) {
                        events.push_event(now_ns, Event::SendFailed { errno });
                        *last_fail = Some(now_ns);
                    }
                    c.send_errors += 1;
                }
            }
        });
        c.frames_sent += (frames.len() / self.tx.frame_bytes().max(1)) as u64;
        n
    }

    /// A datagram from the receiver at `now_ns`: if it is a NACK for this stream, the packets
    /// it asks for that are still kept go to `send` again (within the history's limits).
    pub fn on_nack<F: FnMut(&[u8])>(&mut self, now_ns: u64, bytes: &[u8], send: F) {
        self.on_nack_from(now_ns, 0, bytes, send);
    }

    /// As [`on_nack`](Self::on_nack) for a NACK from requester `requester`, one of several
    /// receivers the driver tells apart (see [`RetransmitHistory::on_nack_from`]).
    pub fn on_nack_from<F: FnMut(&[u8])>(
        &mut self,
        now_ns: u64,
        requester: usize,
        bytes: &[u8],
        mut send: F,
    ) {
        if is_time_packet(bytes) {
            // A time request on the NACKs' way: answered at once (the sender's clock read
            // again as the answer goes is `now_ns` here; a daemon reads it with
            // `on_time_request`).
            let _ = self.on_time_request(now_ns, requester, bytes, || now_ns, |d| send(d));
            return;
        }
        let Some(h) = self.history.as_mut() else {
            return;
        };
        let h = h.borrow_mut();
        let _ = h.on_nack_from(now_ns, requester, bytes, send);
        if let Some(r) = h.poll_event() {
            self.events.push_event(r.t_ns, r.event);
        }
    }

    /// The capture device overran at `now_ns`: at least `lost_frames` were lost. A hole is
    /// left where they were, so the receiver conceals it instead of running time together.
    pub fn on_xrun(&mut self, now_ns: u64, lost_frames: u64) {
        self.counters.xruns += 1;
        self.events
            .push_event(now_ns, Event::Xrun { capture: true });
        self.tx.skip(lost_frames);
    }

    /// The capture device is gone (`errno`); it is reopened off the realtime thread.
    pub fn on_device_lost(&mut self, now_ns: u64, errno: i32) {
        self.counters.device_lost += 1;
        self.events.push_event(
            now_ns,
            Event::DeviceLost {
                capture: true,
                errno,
            },
        );
    }

    /// The capture device is back, with `period`: a new stream starts (the receiver resyncs
    /// at once). `seed` varies the new stream id.
    pub fn on_device_back(&mut self, now_ns: u64, period: usize, seed: u64, wall_ns: u64) {
        self.events
            .push_event(now_ns, Event::DeviceBack { capture: true });
        self.tx.restart_stream(period, seed, wall_ns);
    }

    /// A clean stop: the stream's END datagrams (native packets only) go to `send` as (header
    /// and extension, tag).
    pub fn end<F>(&mut self, wall_ns: u64, mut send: F)
    where
        F: FnMut(&[u8], &[u8]) -> Result<usize, i32>,
    {
        let c = &mut self.counters;
        self.tx
            .end_stream(wall_ns, |head, tag| match send(head, tag) {
                Ok(0) => {}
                Ok(_) => c.packets_sent += 1,
                Err(_) => c.send_errors += 1,
            });
    }

    /// The sender's counters, the history's included.
    pub fn counters(&self) -> StatsSnapshot {
        let mut c = self.counters;
        if let Some(h) = self.history.as_ref() {
            let hc = h.borrow().counters();
            c.nacks_received = hc.nacks_received;
            c.retransmits_sent = hc.retransmits;
            c.retransmit_bytes_sent = hc.retransmit_bytes;
            c.resends_capped = hc.resends_capped;
            c.resends_over_limit = hc.resends_over_limit;
            c.nack_auth_failures = hc.nack_auth_failures;
            c.nack_replays = hc.nack_replays;
        }
        c
    }
}
