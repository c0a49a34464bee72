//! The realtime loops: the engine core on devices and sockets.
//!
//! * [`run_sender`]: poll the capture device → lend its buffer (ALSA mmap area) to the
//!   packetizer → one `sendmsg` per packet with an iovec of [header on the stack, slice of the
//!   device buffer] → release the frames. The samples are never copied in user space: the
//!   payload handed to `sendmsg` *is* the device buffer: `tests/zero_copy.rs` runs this loop
//!   with a recording socket and checks that every payload pointer lies inside the capture
//!   device's own buffer.
//! * [`run_receiver`]: poll the playback device → take the datagrams waiting, a `recvmmsg`
//!   batch at a time (kernel arrival timestamps), into the engine's receiver while the device
//!   can wait → render straight into the device buffer → commit → take the rest of the socket
//!   until the device is due again. The drift controller runs inside `render`.
//!   In raw TCP mode the socket is a [`crate::tcp::TcpPcmReceiver`], which hands over the
//!   bytes waiting as packets the same way.
//!
//! With a key the sender tags every packet (three iovecs: header and extension, device
//! buffer, tag; the tag computed over both in place) and writes the wall clock into each
//! period's packets; the receiver gives the engine the wall-clock offset once per wake-up for
//! the freshness check of new streams (see `engine::auth`).
//!
//! Loss recovery: [`run_sender_with_history`] keeps a copy of every packet in a
//! [`RetransmitHistory`] and answers the receiver's NACKs from it, within the history's limits
//! (a rate cap it reports through the event queue when reached); the receiver writes NACKs
//! (see [`Receiver::poll_nack`]) and sends them back to the stream's source. Between device
//! periods both loops wait on their socket too (one `ppoll` up to the time the device is due,
//! or the loss tracker's next deadline), so a NACK is answered, and a packet taken, when it
//! arrives rather than a period later.
//!
//! A clean stop (SIGTERM, SIGINT, the end of `--duration`): after its last period the sender
//! loop sends the stream's END packets ([`Packetizer::end_stream`]; native packets only) on its
//! normal way out, so the receiver fades out instead of counting a gap. `kill -9` sends nothing.
//!
//! Both loops: xruns (EPIPE, ESTRPIPE) are recovered and counted; counters are published to
//! [`Stats`] once per period and events go to the realtime event queue. A lost device (ENODEV,
//! USB unplugged) is counted and handed over to be closed and opened again off the realtime
//! thread ([`Capture::poll_reopen`], [`Playback::poll_reopen`]: for ALSA, the device's reopener
//! thread, with back-off); until it is back the loop keeps the network side up, waiting in
//! `ppoll` on its socket at most [`AWAY_WAIT_MS`] at a time: the receiver takes packets and
//! sends its NACKs, the sender answers NACKs from its history. Every turn of a loop (a period,
//! a device wait that timed out, a turn while the device is away) beats its [`Heartbeat`],
//! which the housekeeping thread watches before it feeds the systemd watchdog (see
//! [`crate::watchdog`]).
//!
//! Realtime contract: after the first period a loop makes no allocation and no free, takes no
//! lock, formats nothing and opens or closes no device, on the fault paths too (xrun, device
//! lost and back); it blocks only in the device's wait (ALSA's poll, the virtual
//! devices' `clock_nanosleep`) and in `ppoll` on its socket (or, with no
//! socket to wait on, in a `ppoll` on nothing). Each loop counts its own allocations and frees
//! (see [`engine::alloc_count`]) and returns the counts.
//!
//! The receiver's work per wake-up is bounded by the device's deadline, not by a count alone:
//! when the device asks for a period, its fill level (buffer less room) says how long it can
//! still play. Datagrams are taken before the render only until the device would come within a
//! guard (a quarter period) of the late line below, one batch when it already is; the monotonic
//! clock (a vDSO read, no syscall) is read between batches of [`BATCH`]. Then the period is
//! written; then the rest of the socket is taken until the device is due again (the loop's own
//! schedule), at least one batch however late. No intake takes more than 64 batches. What is
//! left waits in the socket buffer (4 MB) for the next turn, so a flood delays neither the
//! render nor the stream's own packets, as long as the thread checks datagrams faster than they
//! come.
//!
//! Late renders: a period committed when the device had fewer than half its reserve still
//! queued ahead of it (the reserve being what it holds when it asks for a period, `buffer -
//! period` frames), i.e. past halfway to an underrun, counts in `late_renders` ([`Stats`]); an
//! underrun itself counts as an xrun.

use crate::net::{BATCH, DatagramIn, DatagramOut, clock_ns, monotonic_ns, wait_readable};
use crate::pcm::{Capture, PcmError, Playback};
use crate::status::Meter;
use crate::watchdog::Heartbeat;
use engine::alloc_count;
use engine::nack::MAX_NACK_LEN;
use engine::receiver::{PacketOutcome, Receiver};
use engine::recovery::RetransmitHistory;
use engine::rng::mix64;
use engine::rtlog::{Event, EventProducer};
use engine::sender::{END_COPIES, Sender};
use engine::stats::{Stats, StatsSnapshot};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a loop reports when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopReport {
    /// Allocations the realtime thread made after its first period.
    pub allocations: u64,
    /// Frees the realtime thread made after its first period.
    pub frees: u64,
    /// Periods run.
    pub periods: u64,
}

const WAIT_MS: i32 = 100;
/// Socket batches taken per call of the packet intake at most (each [`BATCH`] datagrams),
/// besides its deadline.
const MAX_BATCHES: usize = 64;
/// While the device is away, the longest wait on the socket between looks at the device.
pub const AWAY_WAIT_MS: u64 = 50;
/// After a failed `recover`, the wait before the device is tried again.
const RECOVER_RETRY_MS: u64 = 100;

/// Waits up to `ns` for `fd` to become readable, or simply `ns` without one (a `ppoll` on no
/// descriptor): the realtime loops' only way to pass time outside the device's poll.
fn wait_socket_or_idle(fd: Option<i32>, ns: u64) {
    match fd {
        Some(fd) => {
            wait_readable(fd, ns);
        }
        None => {
            let ts = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: no descriptors (a null array of length 0), a live timespec, no sigmask.
            unsafe { libc::ppoll(std::ptr::null_mut(), 0, &ts, std::ptr::null()) };
        }
    }
}

fn idle_ms(ms: u64) {
    wait_socket_or_idle(None, ms * 1_000_000);
}

/// Runs the sender until `stop` is set (no loss recovery).
#[allow(clippy::too_many_arguments)]
pub fn run_sender<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    tx: &mut T,
    sock: &S,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    run_sender_with_history(dev, tx, sock, None, stop, heartbeat, stats, meter, events)
}

/// What the sender's loop needs of a packetizer: netaudio's own packets ([`Sender`]) or RTP
/// ([`engine::rtp::RtpSender`]).
pub trait Packetizer {
    /// Cuts `captured` (whole frames) into packets and hands each to `emit` as (header and
    /// extension, payload, tag; the tag empty without a key). Returns the packets made.
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(&mut self, captured: &[u8], emit: F)
    -> usize;
    /// Leaves a hole of `frames` (captured audio that was lost) where it was.
    fn skip(&mut self, frames: u64);
    /// A new stream after the capture device came back: the receiver resyncs at once.
    fn restart_stream(&mut self, period: usize);
    /// Once per period, before packetizing.
    fn before_period(&mut self) {}
    /// The sender stops cleanly: hands each datagram that ends the stream to `emit` as (header
    /// and extension, tag; no payload) and returns how many. None by default (RTP receivers
    /// know no END).
    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, _emit: F) -> usize {
        0
    }
}

impl Packetizer for Sender {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        mut emit: F,
    ) -> usize {
        self.packetize_tagged(captured, |head, payload, tag| emit(head, payload, tag))
    }

    fn skip(&mut self, frames: u64) {
        Sender::skip(self, frames);
    }

    fn restart_stream(&mut self, period: usize) {
        let id = mix64(self.stream_id() as u64 ^ monotonic_ns()) as u32;
        *self = self
            .restarted(period, id, clock_ns(libc::CLOCK_REALTIME))
            .expect("same format and period as before");
    }

    #[inline]
    fn before_period(&mut self) {
        if self.is_authenticated() {
            self.set_wall_clock(clock_ns(libc::CLOCK_REALTIME));
        }
    }

    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, mut emit: F) -> usize {
        self.before_period();
        for _ in 0..END_COPIES {
            self.end_packet(&mut emit);
        }
        END_COPIES
    }
}

impl Packetizer for engine::rtp::RtpSender {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        mut emit: F,
    ) -> usize {
        self.packetize(captured, |header, payload| emit(header, payload, &[]))
    }

    fn skip(&mut self, frames: u64) {
        engine::rtp::RtpSender::skip(self, frames);
    }

    fn restart_stream(&mut self, _period: usize) {
        // A new synchronisation source, with the marker bit.
        self.restart(mix64(self.ssrc() as u64 ^ monotonic_ns()) as u32);
    }
}

/// Either packetizer, chosen at start-up by the wire protocol.
pub enum AnyPacketizer {
    /// netaudio's own packets.
    Native(Sender),
    /// RTP.
    Rtp(Box<engine::rtp::RtpSender>),
}

impl Packetizer for AnyPacketizer {
    #[inline]
    fn packetize_parts<F: FnMut(&[u8], &[u8], &[u8])>(
        &mut self,
        captured: &[u8],
        emit: F,
    ) -> usize {
        match self {
            AnyPacketizer::Native(t) => t.packetize_parts(captured, emit),
            AnyPacketizer::Rtp(t) => t.packetize_parts(captured, emit),
        }
    }

    fn skip(&mut self, frames: u64) {
        match self {
            AnyPacketizer::Native(t) => Packetizer::skip(t, frames),
            AnyPacketizer::Rtp(t) => Packetizer::skip(t.as_mut(), frames),
        }
    }

    fn restart_stream(&mut self, period: usize) {
        match self {
            AnyPacketizer::Native(t) => t.restart_stream(period),
            AnyPacketizer::Rtp(t) => t.restart_stream(period),
        }
    }

    #[inline]
    fn before_period(&mut self) {
        match self {
            AnyPacketizer::Native(t) => t.before_period(),
            AnyPacketizer::Rtp(t) => t.before_period(),
        }
    }

    fn end_stream<F: FnMut(&[u8], &[u8])>(&mut self, emit: F) -> usize {
        match self {
            AnyPacketizer::Native(t) => t.end_stream(emit),
            AnyPacketizer::Rtp(t) => t.end_stream(emit),
        }
    }
}

/// NACK datagrams taken per call at most: a flood of them cannot keep the thread from its
/// device (the caller checks the device between calls).
const MAX_NACKS_PER_TURN: usize = 64;

/// Answers the NACKs waiting on `sock` from `history` (at most [`MAX_NACKS_PER_TURN`]); what
/// the history has to report goes to the event queue.
fn answer_nacks<S: DatagramOut>(
    sock: &S,
    history: &mut RetransmitHistory,
    buf: &mut [u8],
    events: &mut EventProducer,
) {
    let now = monotonic_ns();
    for _ in 0..MAX_NACKS_PER_TURN {
        let Some(n) = sock.recv_nack(buf) else {
            break;
        };
        let _ = history.on_nack(now, &buf[..n.min(buf.len())], |d| {
            let _ = sock.send_gather(d, &[]);
        });
    }
    if let Some(r) = history.poll_event() {
        events.push(r.t_ns, r.event);
    }
}

/// Runs the sender until `stop` is set; with a `history`, every packet is also copied there
/// and the receiver's NACKs are answered from it.
#[allow(clippy::too_many_arguments)]
pub fn run_sender_with_history<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    tx: &mut T,
    sock: &S,
    mut history: Option<&mut RetransmitHistory>,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let _running = heartbeat.running();
    let period = dev.setup().period;
    let buffer = dev.setup().buffer;
    let format = dev.setup().format;
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    let mut c = StatsSnapshot::default();
    let mut report = LoopReport::default();
    let mut last_fail_ns = 0u64;
    let mut nack_buf = [0u8; MAX_NACK_LEN + 64];
    let mut next_period_ns = 0u64;
    let _ = dev.start();
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        if report.periods == 1 {
            // Start-up is over: from here on, count every allocation and free.
            alloc_count::track_this_thread(true);
        }
        if let (Some(h), Some(fd)) = (history.as_deref_mut(), sock.fd()) {
            // Until the device is due, wake for NACKs and answer them at once.
            loop {
                answer_nacks(sock, h, &mut nack_buf, events);
                match dev.wait(0) {
                    Ok(0) => {}
                    _ => break,
                }
                let now = monotonic_ns();
                if now >= next_period_ns {
                    break;
                }
                wait_readable(fd, next_period_ns - now);
            }
        }
        let err = match dev.wait(WAIT_MS) {
            Ok(0) => continue,
            Ok(mut avail) => {
                // The device's period is due about now: wake for it again a little before the
                // next one (anchored on the device, not on when this work ends, so the loop
                // never falls behind the device period after period).
                let woke_ns = monotonic_ns();
                let mut failed = None;
                let mut budget = buffer / period + 1;
                while avail >= period && budget > 0 {
                    budget -= 1;
                    tx.before_period();
                    let hist = &mut history;
                    let r = dev.read(period, |frames| {
                        meter.measure(format, frames);
                        tx.packetize_parts(frames, |head, payload, tag| {
                            if let Some(h) = hist.as_deref_mut() {
                                h.record_parts(head, payload, tag);
                            }
                            match sock.send_tagged(head, payload, tag) {
                                Ok(_) => {
                                    c.packets_sent += 1;
                                }
                                Err(errno) => {
                                    // Tell the log at most once a second, not every time.
                                    let now = monotonic_ns();
                                    if now.saturating_sub(last_fail_ns) >= 1_000_000_000 {
                                        events.push(now, Event::SendFailed { errno });
                                        last_fail_ns = now;
                                    }
                                    c.send_errors += 1;
                                }
                            }
                        });
                    });
                    match r {
                        Ok(n) => {
                            c.frames_sent += n as u64;
                            avail = avail.saturating_sub(n);
                            if n == 0 {
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                next_period_ns = woke_ns + period_ns - period_ns / 4;
                failed
            }
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            let away = Away {
                sock,
                history: history.as_deref_mut(),
                nack_buf: &mut nack_buf,
                stats,
            };
            handle_capture_error(dev, tx, e, stop, heartbeat, &mut c, events, buffer, away);
        }
        if let Some(h) = history.as_deref() {
            let hc = h.counters();
            c.nacks_received = hc.nacks_received;
            c.retransmits_sent = hc.retransmits;
            c.retransmit_bytes_sent = hc.retransmit_bytes;
            c.resends_capped = hc.resends_capped;
            c.resends_over_limit = hc.resends_over_limit;
            c.nack_auth_failures = hc.nack_auth_failures;
            c.nack_replays = hc.nack_replays;
        }
        stats.publish(&c);
    }
    // A clean stop: the stream ends here (copies, in case one is lost), still on this thread
    // and still counted by the allocation counter.
    tx.end_stream(|head, tag| match sock.send_tagged(head, &[], tag) {
        Ok(0) => {}
        Ok(_) => c.packets_sent += 1,
        Err(_) => c.send_errors += 1,
    });
    stats.publish(&c);
    report.allocations = alloc_count::this_thread_allocations();
    report.frees = alloc_count::this_thread_frees();
    alloc_count::track_this_thread(false);
    report
}

/// What the sender keeps serving while its capture device is away.
struct Away<'a, S> {
    sock: &'a S,
    history: Option<&'a mut RetransmitHistory>,
    nack_buf: &'a mut [u8],
    /// Where the loss shows at once (`device_lost`).
    stats: &'a Stats,
}

#[allow(clippy::too_many_arguments)]
fn handle_capture_error<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    tx: &mut T,
    e: PcmError,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    c: &mut StatsSnapshot,
    events: &mut EventProducer,
    buffer: usize,
    mut away: Away<'_, S>,
) {
    match e {
        PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
            c.xruns += 1;
            events.push(monotonic_ns(), Event::Xrun { capture: true });
            // At least a buffer's worth was lost: leave a hole where it was, so the receiver
            // conceals it instead of running time together.
            tx.skip(buffer as u64);
            if dev.recover(e).is_err() {
                idle_ms(RECOVER_RETRY_MS);
            }
        }
        PcmError::Gone(errno) => {
            c.device_lost += 1;
            events.push(
                monotonic_ns(),
                Event::DeviceLost {
                    capture: true,
                    errno,
                },
            );
            // The device goes to be closed and opened again off this thread; meanwhile the
            // NACKs of the stream sent so far are answered (a socket to wait on only then: with
            // nothing to read from it, its readiness would never be taken away).
            let fd = away.history.as_ref().and(away.sock.fd());
            away.stats.publish(c);
            while !stop.load(Ordering::Relaxed) {
                heartbeat.beat();
                if dev.poll_reopen() && dev.start().is_ok() {
                    events.push(monotonic_ns(), Event::DeviceBack { capture: true });
                    tx.restart_stream(dev.setup().period);
                    break;
                }
                if let Some(h) = away.history.as_deref_mut() {
                    answer_nacks(away.sock, h, away.nack_buf, events);
                }
                wait_socket_or_idle(fd, AWAY_WAIT_MS * 1_000_000);
            }
        }
    }
}

/// Runs the receiver until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub fn run_receiver<P: Playback, S: DatagramIn>(
    dev: &mut P,
    rx: &mut Receiver,
    sock: &mut S,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let _running = heartbeat.running();
    let period = dev.setup().period;
    let format = dev.setup().format;
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    let recovery = rx.loss_tracker().is_some();
    let mut report = LoopReport::default();
    let mut late_renders = 0u64;
    let mut xruns = 0u64;
    let mut device_lost = 0u64;
    let mut net_errors = 0u64;
    let mut nack_buf = [0u8; MAX_NACK_LEN];
    let mut next_period_ns = 0u64;
    prime_and_start(dev, rx);
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        if report.periods == 1 {
            alloc_count::track_this_thread(true);
        }
        if recovery {
            // Until the device is due, take packets as they arrive and ask for missing ones
            // as soon as they are overdue.
            loop {
                if take_packets(sock, rx, next_period_ns).is_err() {
                    net_errors += 1;
                }
                nack_turn(sock, rx, &mut nack_buf);
                match dev.wait(0) {
                    Ok(0) => {}
                    _ => break,
                }
                let now = monotonic_ns();
                if now >= next_period_ns {
                    break;
                }
                let until = rx
                    .next_nack_due()
                    .map_or(next_period_ns, |d| d.clamp(now, next_period_ns));
                // A source with nothing to poll leaves the waiting to the device's own poll.
                let Some(fd) = sock.wait_fd() else { break };
                if until > now {
                    wait_readable(fd, until - now);
                }
            }
        }
        let waited = dev.wait(WAIT_MS);
        let woke_ns = monotonic_ns();
        let err = match waited {
            Ok(mut room) => {
                let buffer = dev.setup().buffer;
                let deadline = RenderDeadline::new(woke_ns, room, buffer, period, format.rate);
                // Packets first, to render the freshest: one batch whatever the time (a packet
                // waiting in the socket is played, not concealed), more only while the device
                // can wait.
                if take_packets(sock, rx, deadline.intake_until()).is_err() {
                    net_errors += 1;
                }
                let now = monotonic_ns();
                let mut failed = None;
                // Bounded: never more than a buffer's worth per wake-up, whatever the device says.
                let mut budget = buffer / period + 1;
                let mut done = 0u64;
                while room >= period && budget > 0 {
                    budget -= 1;
                    let written = dev.write(period, |area| {
                        rx.render(area, now);
                        meter.measure(format, area);
                    });
                    match written {
                        Ok(0) => break,
                        Ok(n) => {
                            if deadline.is_late(done, monotonic_ns()) {
                                late_renders += 1;
                            }
                            done += n as u64;
                            room -= n.min(room);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                // Anchored on the device (see the sender): wake a little before it is due.
                next_period_ns = woke_ns + period_ns - period_ns / 4;
                // The rest of the socket, until the device is due again.
                if take_packets(sock, rx, next_period_ns).is_err() {
                    net_errors += 1;
                }
                nack_turn(sock, rx, &mut nack_buf);
                failed
            }
            Err(e) => {
                // The network side goes on while the device is recovered: a period's worth.
                if take_packets(sock, rx, woke_ns + period_ns).is_err() {
                    net_errors += 1;
                }
                Some(e)
            }
        };
        if let Some(e) = err {
            match e {
                PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
                    xruns += 1;
                    events.push(monotonic_ns(), Event::Xrun { capture: false });
                    if dev.recover(e).is_ok() {
                        prime_and_start(dev, rx);
                    } else {
                        idle_ms(RECOVER_RETRY_MS);
                    }
                }
                PcmError::Gone(errno) => {
                    device_lost += 1;
                    events.push(
                        monotonic_ns(),
                        Event::DeviceLost {
                            capture: false,
                            errno,
                        },
                    );
                    // The device goes to be closed and opened again off this thread; the
                    // network side stays up meanwhile: packets are taken and NACKs sent as they
                    // fall due, waiting on the socket between.
                    while !stop.load(Ordering::Relaxed) {
                        heartbeat.beat();
                        if dev.poll_reopen() {
                            events.push(monotonic_ns(), Event::DeviceBack { capture: false });
                            prime_and_start(dev, rx);
                            break;
                        }
                        // Nothing to render meanwhile: the intake is bounded by its batch
                        // count alone.
                        if take_packets(sock, rx, u64::MAX).is_err() {
                            net_errors += 1;
                        }
                        nack_turn(sock, rx, &mut nack_buf);
                        let own = [late_renders, xruns, device_lost, net_errors];
                        publish_receiver(stats, rx, sock, own);
                        let now = monotonic_ns();
                        let until = rx
                            .next_nack_due()
                            .map_or(u64::MAX, |d| d.max(now + 1_000_000))
                            .min(now + AWAY_WAIT_MS * 1_000_000);
                        wait_socket_or_idle(sock.wait_fd(), until - now);
                    }
                }
            }
        }
        publish_receiver(
            stats,
            rx,
            sock,
            [late_renders, xruns, device_lost, net_errors],
        );
    }
    report.allocations = alloc_count::this_thread_allocations();
    report.frees = alloc_count::this_thread_frees();
    alloc_count::track_this_thread(false);
    report
}

/// Publishes the engine receiver's counters with the loop's own: `[late_renders, xruns,
/// device_lost, net_errors]` (a copy into atomics: no allocation, no lock).
fn publish_receiver<S: DatagramIn>(stats: &Stats, rx: &Receiver, sock: &S, own: [u64; 4]) {
    let [late_renders, xruns, device_lost, net_errors] = own;
    let mut c = *rx.counters();
    c.late_renders = late_renders;
    c.xruns = xruns;
    c.device_lost = device_lost;
    c.invalid_packets += net_errors + sock.rejected();
    stats.publish(&c);
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, ns (two vDSO reads, no syscall).
fn wall_offset_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) as i64 - clock_ns(libc::CLOCK_MONOTONIC) as i64
}

/// Where the playback device stands when it asks for a period: how long packet intake may go on
/// before the period is written, and whether a period was written late. Estimated from the
/// device's fill level at the wake-up and the monotonic clock (a vDSO read, no syscall), so
/// neither costs a call into the device.
#[derive(Clone, Copy, Debug, PartialEq)]
struct RenderDeadline {
    /// When the device said how much room it has.
    woke_ns: u64,
    /// Frames queued in the device then (its buffer less its room).
    queued: u64,
    /// Frames per second.
    rate: u64,
    /// The late line: a period committed with fewer frames than this still queued ahead of it
    /// is late. Half the reserve the device holds when it asks for a period (`buffer - period`).
    late_frames: u64,
    /// Intake before the render stops this many frames above the late line: time for the
    /// batch under way and the render itself.
    guard_frames: u64,
}

impl RenderDeadline {
    fn new(woke_ns: u64, room: usize, buffer: usize, period: usize, rate: u32) -> RenderDeadline {
        RenderDeadline {
            woke_ns,
            queued: buffer.saturating_sub(room) as u64,
            rate: rate.max(1) as u64,
            late_frames: (buffer.saturating_sub(period) as u64 / 2).max(1),
            guard_frames: period as u64 / 4,
        }
    }

    /// Frames still queued ahead of the next one written, at `t_ns`, when `written` frames were
    /// written since the wake-up.
    fn queued_at(&self, written: u64, t_ns: u64) -> u64 {
        let elapsed = t_ns.saturating_sub(self.woke_ns) as u128;
        let played = (elapsed * self.rate as u128 / 1_000_000_000) as u64;
        (self.queued + written).saturating_sub(played)
    }

    /// Until when (monotonic clock, ns) packets may be taken before the render.
    fn intake_until(&self) -> u64 {
        let spare = self
            .queued
            .saturating_sub(self.late_frames + self.guard_frames);
        self.woke_ns + spare * 1_000_000_000 / self.rate
    }

    /// Whether a period committed at `t_ns`, after `written` frames since the wake-up, is late.
    fn is_late(&self, written: u64, t_ns: u64) -> bool {
        self.queued_at(written, t_ns) < self.late_frames
    }
}

/// Takes the datagrams waiting into the receiver, a batch at a time, until the socket is
/// empty, the monotonic clock reaches `until_ns` (read between batches) or [`MAX_BATCHES`]
/// were taken; the first batch always, so intake never stalls. The source of the stream it
/// plays is where NACKs go. Everything waiting, not just one batch, as far as the deadline
/// allows: under a flood of junk the stream's own packets must not be pushed out of the socket
/// buffer. Bounded, so a flood cannot keep the thread from the device.
fn take_packets<S: DatagramIn>(
    sock: &mut S,
    rx: &mut Receiver,
    until_ns: u64,
) -> Result<usize, i32> {
    if rx.is_authenticated() {
        rx.set_wall_offset(wall_offset_ns());
    }
    let mut total = 0;
    for i in 0..MAX_BATCHES {
        if i > 0 && monotonic_ns() >= until_ns {
            break;
        }
        let n = sock.recv_batch_from(|datagram, t| {
            matches!(
                rx.on_packet(datagram, t),
                PacketOutcome::Accepted
                    | PacketOutcome::Resynced
                    | PacketOutcome::Duplicate
                    | PacketOutcome::Late
                    | PacketOutcome::Ended
            )
        })?;
        total += n;
        if n < BATCH {
            break;
        }
    }
    Ok(total)
}

/// Loss recovery's turn: sends the NACK the receiver writes, if any, to the stream's source
/// (each copy the receiver hands out).
fn nack_turn<S: DatagramIn>(sock: &S, rx: &mut Receiver, buf: &mut [u8]) {
    rx.poll_nack_copies(monotonic_ns(), buf, |d| {
        let _ = sock.send_nack(d);
    });
}

/// Fills the playback buffer (silence until a stream arrives) and starts the device.
fn prime_and_start<P: Playback>(dev: &mut P, rx: &mut Receiver) {
    let period = dev.setup().period;
    let now = monotonic_ns();
    let mut guard = 0;
    while let Ok(room) = dev.wait(0) {
        if room < period || guard > 64 {
            break;
        }
        if dev.write(period, |area| rx.render(area, now)).is_err() {
            break;
        }
        guard += 1;
    }
    let _ = dev.start();
}

#[cfg(test)]
mod tests {
    use super::*;

    // 48 kHz, periods of 240 frames (5 ms), a buffer of three periods: the device asks for a
    // period with two (10 ms) still queued, and a period is late with less than one queued.
    const MS: u64 = 1_000_000;

    fn woke_on_time() -> RenderDeadline {
        RenderDeadline::new(1_000 * MS, 240, 720, 240, 48_000)
    }

    #[test]
    fn intake_before_the_render_stops_a_guard_above_the_late_line() {
        let d = woke_on_time();
        assert_eq!(d.late_frames, 240);
        // 480 queued, late at 240, guard 60: 180 frames (3.75 ms) to take packets.
        assert_eq!(d.intake_until(), 1_000 * MS + 3_750_000);
        // A device that woke the loop late leaves less time, or none.
        let late = RenderDeadline::new(1_000 * MS, 480, 720, 240, 48_000);
        assert_eq!(late.intake_until(), 1_000 * MS);
    }

    #[test]
    fn a_period_is_late_past_halfway_to_an_underrun() {
        let d = woke_on_time();
        assert!(!d.is_late(0, 1_000 * MS));
        assert!(!d.is_late(0, 1_004 * MS + 999_000));
        assert!(d.is_late(0, 1_005 * MS + 100_000));
        // A second period in the same wake-up has the first one ahead of it.
        assert!(!d.is_late(240, 1_005 * MS + 100_000));
        // Catching up after a stall: room for two periods and more, 220 queued: the first is
        // late, the second has it ahead.
        let stalled = RenderDeadline::new(1_000 * MS, 500, 720, 240, 48_000);
        assert!(stalled.is_late(0, 1_000 * MS));
        assert!(!stalled.is_late(240, 1_000 * MS));
    }

    #[test]
    fn a_two_period_buffer_is_late_with_less_than_half_a_period_queued() {
        let d = RenderDeadline::new(0, 240, 480, 240, 48_000);
        assert_eq!(d.late_frames, 120);
        assert!(!d.is_late(0, 2 * MS));
        assert!(d.is_late(0, 2_600_000));
        // Late line 120 + guard 60: 60 frames (1.25 ms) of intake.
        assert_eq!(d.intake_until(), 1_250_000);
    }
}
