//! The receiving end of a stream: the engine's [`Receiver`] (jitter buffer, loss recovery,
//! drift correction, rendering) with what the playback side adds to it: which datagrams count
//! as taken, the NACKs to send, the device's faults and their counters. A daemon's playback
//! loop and the simulator both drive it; they only move datagrams, device buffers and time.
//!
//! Realtime contract: no method allocates, locks or makes a system call; NACKs go out through
//! the caller's closure.

use crate::receiver::{PacketOutcome, Receiver};
use crate::rtlog::{Event, EventSink};
use crate::stats::StatsSnapshot;
use crate::sync::SyncClient;
use crate::sync::packet::{MAX_TS_LEN, is_time_packet};
use crate::wire::PacketHeader;
use core::borrow::BorrowMut;

/// The receiver's side of a stream (see the module docs). `R` is the receiver (owned or
/// borrowed), `E` where the playback side's events go (the receiver's own go where it was
/// told, [`Receiver::with_events`]).
pub struct ReceiverSession<R: BorrowMut<Receiver>, E: EventSink> {
    rx: R,
    events: E,
    late_renders: u64,
    xruns: u64,
    device_lost: u64,
    net_errors: u64,
    /// The time exchange with the sender (presentation time), when on.
    sync: Option<Box<SyncClient>>,
    /// Its model has been locked once: from then on it maps capture times.
    sync_ready: bool,
    /// Presentation time on the system clock (disciplined by PTP or chrony on both hosts):
    /// capture times are wall-clock times, mapped by the wall clock's offset.
    system_clock: bool,
    /// `CLOCK_REALTIME` − the driver's clock, ns, as last given.
    wall_offset: Option<i64>,
}

impl<R: BorrowMut<Receiver>, E: EventSink> ReceiverSession<R, E> {
    /// A session around `rx`.
    pub fn new(rx: R, events: E) -> Self {
        ReceiverSession {
            rx,
            events,
            late_renders: 0,
            xruns: 0,
            device_lost: 0,
            net_errors: 0,
            sync: None,
            sync_ready: false,
            system_clock: false,
            wall_offset: None,
        }
    }

    /// Plays by presentation time on the system clock: the sender stamps capture times on its
    /// wall clock, and both hosts' wall clocks are kept together by PTP (linuxptp) or chrony,
    /// so no time exchange is needed; capture times map through the wall clock's offset from
    /// the driver's clock ([`set_wall_offset`](Self::set_wall_offset), before each batch).
    pub fn with_system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// Plays by presentation time with `client`'s model of the sender's clock (built
    /// before, boxed: it is about 33 kB): its time requests go out with the NACKs
    /// ([`poll_transmit`](Self::poll_transmit)), its answers come in with the stream
    /// ([`handle_datagram`](Self::handle_datagram)), and before each render the newest
    /// capture time is mapped to this clock for the receiver (see
    /// [`Receiver::set_presentation`]). The receiver should be configured with
    /// [`presentation`](crate::receiver::ReceiverConfig::presentation).
    pub fn with_sync(mut self, client: Box<SyncClient>) -> Self {
        self.sync = Some(client);
        self
    }

    /// The time exchange's client, when on.
    pub fn sync(&self) -> Option<&SyncClient> {
        self.sync.as_deref()
    }

    /// The receiver.
    pub fn receiver(&self) -> &Receiver {
        self.rx.borrow()
    }

    /// The receiver, to configure it.
    pub fn receiver_mut(&mut self) -> &mut Receiver {
        self.rx.borrow_mut()
    }

    /// Whether lost packets are asked for again.
    pub fn recovers(&self) -> bool {
        self.receiver().loss_tracker().is_some()
    }

    /// Before a batch of datagrams: the wall clock's offset from the driver's clock
    /// (`CLOCK_REALTIME` − `CLOCK_MONOTONIC`, ns), for the freshness check of keyed streams.
    pub fn set_wall_offset(&mut self, offset_ns: i64) {
        self.wall_offset = Some(offset_ns);
        let rx = self.rx.borrow_mut();
        if rx.is_authenticated() {
            rx.set_wall_offset(offset_ns);
        }
    }

    /// One datagram that arrived at `now_ns`. Returns whether it was the stream's (taken:
    /// its source is where NACKs go), as opposed to junk or another stream's.
    pub fn handle_datagram(&mut self, now_ns: u64, bytes: &[u8]) -> bool {
        if let Some(sync) = self.sync.as_mut()
            && is_time_packet(bytes)
        {
            // The sender's answer to a time request (`now_ns` is its t4).
            sync.handle_response(now_ns, bytes);
            return false;
        }
        let before = self.receiver().capture_stamp();
        let taken = is_the_streams(self.rx.borrow_mut().on_packet(bytes, now_ns));
        let stamp = self.receiver().capture_stamp();
        if stamp != before
            && let Some((frame, capture)) = stamp
            && let Some(local) = self.map_capture(capture, now_ns)
        {
            let map = Mapper {
                system_clock: self.system_clock,
                wall_offset: self.wall_offset,
                sync: self.sync.as_deref(),
                now_ns,
            };
            self.rx
                .borrow_mut()
                .on_capture_point(local, frame, |c| map.map(c));
        }
        taken
    }

    /// A capture instant (the sender's clock) on this one, once it can be mapped.
    fn map_capture(&self, capture: u64, now_ns: u64) -> Option<u64> {
        if let Some(sync) = self.sync.as_deref()
            && !(self.sync_ready || sync.locked())
        {
            return None;
        }
        Mapper {
            system_clock: self.system_clock,
            wall_offset: self.wall_offset,
            sync: self.sync.as_deref(),
            now_ns,
        }
        .map(capture)
    }

    /// The frames of one packet from an input that is not netaudio's own (RTP, a raw PCM
    /// byte stream), described by `h`, that arrived at `now_ns`: the typed path, no native
    /// header built to be parsed again. Returns whether they were the stream's.
    pub fn handle_frames(&mut self, now_ns: u64, h: &PacketHeader, pcm: &[u8]) -> bool {
        is_the_streams(self.rx.borrow_mut().on_frames(now_ns, h, pcm))
    }

    /// A datagram could not be read (the socket's errno): counted as invalid.
    pub fn on_net_error(&mut self) {
        self.net_errors += 1;
    }

    /// Writes one period for the playback device at `now_ns` (frames in
    /// [`crate::receiver::ReceiverConfig::output_sample`]).
    pub fn render(&mut self, now_ns: u64, out: &mut [u8]) {
        if let Some(sync) = self.sync.as_deref() {
            self.sync_ready |= sync.locked();
        }
        if let Some((frame, capture)) = self.receiver().capture_stamp()
            && let Some(local) = self.map_capture(capture, now_ns)
        {
            self.rx.borrow_mut().set_presentation(Some((frame, local)));
        }
        if let Some(sync) = self.sync.as_mut() {
            let rx = self.rx.borrow_mut();
            let offset_us = sync
                .model()
                .offset_at(now_ns)
                .map_or(0.0, |o| o as f64 / 1000.0);
            let error_us = sync.error_ns().map_or(0.0, |e| e as f64 / 1000.0);
            rx.set_sync_figures(offset_us, error_us);
        }
        self.rx.borrow_mut().render(out, now_ns);
        if let Some(sync) = self.sync.as_mut() {
            let rx = self.rx.borrow();
            let error = rx
                .presentation_error_us()
                .map(|e| e.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32);
            sync.set_report(error, rx.is_playing());
        }
    }

    /// A period went to the device past halfway to an underrun.
    pub fn on_late_render(&mut self) {
        self.late_renders += 1;
    }

    /// The NACK due at `now_ns`, if any, to `send` (each copy the receiver asks for).
    /// With presentation time the time request due, if any, goes to `send` too (`buf` must
    /// hold [`MAX_TS_LEN`] bytes as well; `now_ns` becomes its t1: read it just before).
    pub fn poll_transmit<F: FnMut(&[u8])>(&mut self, now_ns: u64, buf: &mut [u8], mut send: F) {
        self.rx
            .borrow_mut()
            .poll_nack_copies(now_ns, buf, |d| send(d));
        if let Some(sync) = self.sync.as_mut()
            && buf.len() >= MAX_TS_LEN
            && let Some(n) = sync.poll_transmit(now_ns, buf)
        {
            send(&buf[..n]);
        }
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to send (with
    /// presentation time the first request is due at once: `Some(0)`).
    pub fn poll_timeout(&self) -> Option<u64> {
        let nack = self.receiver().next_nack_due();
        let Some(sync) = self.sync.as_deref() else {
            return nack;
        };
        let due = sync.poll_timeout().unwrap_or(0);
        Some(nack.map_or(due, |n| n.min(due)))
    }

    /// The playback device underran (or was suspended) at `now_ns`.
    pub fn on_xrun(&mut self, now_ns: u64) {
        self.xruns += 1;
        self.rx.borrow_mut().on_playback_restart();
        self.events
            .push_event(now_ns, Event::Xrun { capture: false });
    }

    /// The playback device is gone (`errno`); it is reopened off the realtime thread.
    pub fn on_device_lost(&mut self, now_ns: u64, errno: i32) {
        self.device_lost += 1;
        self.events.push_event(
            now_ns,
            Event::DeviceLost {
                capture: false,
                errno,
            },
        );
    }

    /// The playback device is back.
    pub fn on_device_back(&mut self, now_ns: u64) {
        self.rx.borrow_mut().on_playback_restart();
        self.events
            .push_event(now_ns, Event::DeviceBack { capture: false });
    }

    /// The receiver's counters with the playback side's; `rejected` datagrams the driver's
    /// source refused before the receiver saw them count as invalid.
    pub fn counters(&self, rejected: u64) -> StatsSnapshot {
        let mut c = *self.receiver().counters();
        c.late_renders = self.late_renders;
        c.xruns = self.xruns;
        c.device_lost = self.device_lost;
        c.invalid_packets += self.net_errors + rejected;
        c
    }
}

/// Maps the sender's capture instants to the driver's clock: by the wall clock's offset
/// (`sync.clock = "system"`), or by the time exchange's model.
struct Mapper<'a> {
    system_clock: bool,
    wall_offset: Option<i64>,
    sync: Option<&'a SyncClient>,
    now_ns: u64,
}

impl Mapper<'_> {
    fn map(&self, capture: u64) -> Option<u64> {
        let local = if self.system_clock {
            capture as i128 - self.wall_offset? as i128
        } else {
            self.sync?.sender_to_local(capture)? as i128
        };
        plausible(local, self.now_ns).then_some(local as u64)
    }
}

/// Whether a frame captured at `local` (this receiver's clock) can be playing at `now`: within
/// a minute. Further off, the sender stamps on another clock than the one mapped (one host
/// on `sync.clock = "system"`, the other not): the stamps are not used.
fn plausible(local: i128, now: u64) -> bool {
    (local - now as i128).abs() < 60_000_000_000
}

/// Whether a packet with this outcome was the stream's (its source is where NACKs go), as
/// opposed to junk or another stream's.
fn is_the_streams(outcome: PacketOutcome) -> bool {
    matches!(
        outcome,
        PacketOutcome::Accepted
            | PacketOutcome::Resynced
            | PacketOutcome::Duplicate
            | PacketOutcome::Late
            | PacketOutcome::Ended
    )
}
