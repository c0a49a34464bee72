//! The realtime loops: the engine's sessions on devices and sockets.
//!
//! Every protocol decision (packetizing, the retransmit history and its NACK answers, which
//! datagrams count, the NACKs to send, the counters and events of device faults) is in the
//! engine's [`SenderSession`] and [`ReceiverSession`]; these loops only move device buffers,
//! datagrams and time, as the simulator ([`engine::sim`]) does in virtual time with the same
//! sessions.
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
//! (a rate cap it reports through the event queue when reached). A sender serving several
//! receivers (a group, a list) answers each NACK by unicast to the receiver that sent it, the
//! history keeping each receiver's limits and nonces apart (the receivers are told apart by
//! source address, [`PeerTable`]); the receiver writes NACKs
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

use crate::net::{
    BATCH, DatagramOut, PeerTable, StampClock, StreamInput, clock_ns, monotonic_ns, wait_readable,
};
use crate::pcm::{Capture, PcmError, Playback};
use crate::status::{LiveReceivers, Meter};
use crate::watchdog::Heartbeat;
use engine::alloc_count;
use engine::nack::MAX_NACK_LEN;
use engine::receiver::Receiver;
use engine::recovery::RetransmitHistory;
use engine::rtlog::EventProducer;
use engine::session::{ReceiverSession, SenderSession};
use engine::stats::Stats;
use engine::sync::DeviceClock;
use engine::sync::packet::is_time_packet;
use engine::sync::{SyncClient, SyncResponder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod deadline;

use deadline::RenderDeadline;

/// What a loop reports when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopReport {
    /// Allocations the realtime thread made after its first period.
    pub allocations: u64,
    /// Frees the realtime thread made after its first period.
    pub frees: u64,
    /// Periods run.
    pub periods: u64,
    /// A sender serving several receivers: those it heard from, with their NACKs and the
    /// packets it sent them again.
    pub peers: PeerTable,
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

pub use engine::session::{AnyPacketizer, Packetizer};

/// NACK datagrams taken per call at most: a flood of them cannot keep the thread from its
/// device (the caller checks the device between calls).
const MAX_NACKS_PER_TURN: usize = 64;

/// Answers the NACKs waiting on `sock` through the session (at most [`MAX_NACKS_PER_TURN`]),
/// each with repairs to the receiver that sent it. A socket serving several receivers says
/// which one ([`DatagramOut::recv_nack_from`]): `peers` gives it the index under which the
/// history keeps its own limits and nonces.
fn answer_nacks<T: Packetizer, S: DatagramOut>(
    sock: &S,
    session: &mut TxSession<'_, T>,
    buf: &mut [u8],
    peers: &mut PeerTable,
) {
    let now = monotonic_ns();
    for _ in 0..MAX_NACKS_PER_TURN {
        let Some((n, from, stamp)) = sock.recv_nack_stamped(buf) else {
            break;
        };
        let requester = match from {
            Some(a) => {
                let (i, new) = peers.index(a, now);
                if new {
                    session.forget_requester(i);
                }
                i
            }
            None => 0,
        };
        let data = &buf[..n.min(buf.len())];
        if is_time_packet(data) {
            // A time request: answered at once, with the kernel's arrival time (t2) and the
            // clock read again just before the answer goes (t3).
            let t2 = StampClock::now().monotonic(stamp);
            let _ = session.on_time_request(t2, requester, data, monotonic_ns, |d| {
                let _ = sock.send_repair(from, d);
            });
            continue;
        }
        let mut repairs = 0;
        session.on_nack_from(now, requester, data, |d| {
            if sock.send_repair(from, d).is_ok() {
                repairs += 1;
            }
        });
        if from.is_some() {
            peers.count(requester, repairs);
        }
    }
}

/// The sender session as the loop drives it: borrowed packetizer, history and event queue.
pub type TxSession<'a, T> =
    SenderSession<&'a mut T, &'a mut RetransmitHistory, &'a mut EventProducer>;

/// Runs the sender until `stop` is set; with a `history`, every packet is also copied there
/// and the receiver's NACKs are answered from it.
#[allow(clippy::too_many_arguments)]
pub fn run_sender_with_history<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    tx: &mut T,
    sock: &S,
    history: Option<&mut RetransmitHistory>,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    run_sender_timed(
        dev,
        tx,
        sock,
        history,
        SenderTiming::default(),
        stop,
        heartbeat,
        stats,
        meter,
        events,
    )
}

/// What a sender does for receivers that play by presentation time, and how it shows them.
#[derive(Default)]
pub struct SenderTiming {
    /// Answers their time requests (built before the thread starts).
    pub responder: Option<Box<SyncResponder>>,
    /// Stamps capture times on the wall clock (`sync.clock = "system"`).
    pub wall_clock: bool,
    /// Where the receivers it serves are published for the status, once a period.
    pub live: Option<Arc<LiveReceivers>>,
}

/// [`run_sender_with_history`], answering time requests and stamping capture times as
/// `timing` says.
#[allow(clippy::too_many_arguments)]
pub fn run_sender_timed<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    tx: &mut T,
    sock: &S,
    history: Option<&mut RetransmitHistory>,
    timing: SenderTiming,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let mut session = SenderSession::new(tx, history, events);
    if let Some(r) = timing.responder {
        session = session.with_sync(r);
    }
    if timing.wall_clock {
        session = session.with_wall_clock_stamps();
    }
    let live = timing.live.as_deref();
    run_sender_loop(dev, &mut session, sock, live, stop, heartbeat, stats, meter)
}

/// Runs the capture loop on a sender session until `stop` is set: the loop moves device
/// buffers, datagrams and time; the session decides the rest (the simulator drives the same
/// session type, see `engine::sim`).
pub fn run_sender_session<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    session: &mut TxSession<'_, T>,
    sock: &S,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
) -> LoopReport {
    run_sender_loop(dev, session, sock, None, stop, heartbeat, stats, meter)
}

/// [`run_sender_session`], publishing the receivers it serves to `live` once a period.
#[allow(clippy::too_many_arguments)]
fn run_sender_loop<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    session: &mut TxSession<'_, T>,
    sock: &S,
    live: Option<&LiveReceivers>,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
) -> LoopReport {
    let _running = heartbeat.running();
    let period = dev.setup().period;
    let buffer = dev.setup().buffer;
    let format = dev.setup().format;
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    let mut report = LoopReport::default();
    let mut nack_buf = [0u8; MAX_NACK_LEN + 64];
    let mut peers = PeerTable::default();
    let mut next_period_ns = 0u64;
    let _ = dev.start();
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        if report.periods == 1 {
            // Start-up is over: from here on, count every allocation and free.
            alloc_count::track_this_thread(true);
        }
        if let (true, Some(fd)) = (session.answers_nacks(), sock.fd()) {
            // Until the device is due, wake for NACKs and answer them at once.
            loop {
                answer_nacks(sock, session, &mut nack_buf, &mut peers);
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
                    let wall = clock_ns(libc::CLOCK_REALTIME);
                    // The oldest frame waiting (the period's first) was captured `avail`
                    // frames before the wake-up.
                    let waiting_ns = avail as u64 * 1_000_000_000 / format.rate as u64;
                    session.set_capture_time(
                        woke_ns.saturating_sub(waiting_ns),
                        wall as i64 - woke_ns as i64,
                    );
                    let r = dev.read(period, |frames| {
                        meter.measure(format, frames);
                        session.on_capture(monotonic_ns(), wall, frames, |head, payload, tag| {
                            sock.send_tagged(head, payload, tag)
                        });
                    });
                    match r {
                        Ok(n) => {
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
                nack_buf: &mut nack_buf,
                peers: &mut peers,
                stats,
            };
            handle_capture_error(dev, session, e, stop, heartbeat, buffer, away);
        }
        stats.publish(&session.counters());
        if let Some(l) = live {
            l.publish(&peers, session.sync(), monotonic_ns());
        }
    }
    // A clean stop: the stream ends here (copies, in case one is lost), still on this thread
    // and still counted by the allocation counter.
    session.end(clock_ns(libc::CLOCK_REALTIME), |head, tag| {
        sock.send_tagged(head, &[], tag)
    });
    stats.publish(&session.counters());
    report.peers = peers;
    report.allocations = alloc_count::this_thread_allocations();
    report.frees = alloc_count::this_thread_frees();
    alloc_count::track_this_thread(false);
    report
}

/// What the sender keeps serving while its capture device is away.
struct Away<'a, S> {
    sock: &'a S,
    nack_buf: &'a mut [u8],
    peers: &'a mut PeerTable,
    /// Where the loss shows at once (`device_lost`).
    stats: &'a Stats,
}

fn handle_capture_error<C: Capture, T: Packetizer, S: DatagramOut>(
    dev: &mut C,
    session: &mut TxSession<'_, T>,
    e: PcmError,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    buffer: usize,
    away: Away<'_, S>,
) {
    match e {
        PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
            // At least a buffer's worth was lost: the session leaves a hole where it was.
            session.on_xrun(monotonic_ns(), buffer as u64);
            if dev.recover(e).is_err() {
                idle_ms(RECOVER_RETRY_MS);
            }
        }
        PcmError::Gone(errno) => {
            session.on_device_lost(monotonic_ns(), errno);
            // The device goes to be closed and opened again off this thread; meanwhile the
            // NACKs of the stream sent so far are answered (a socket to wait on only then: with
            // nothing to read from it, its readiness would never be taken away).
            let fd = if session.answers_nacks() {
                away.sock.fd()
            } else {
                None
            };
            away.stats.publish(&session.counters());
            while !stop.load(Ordering::Relaxed) {
                heartbeat.beat();
                if dev.poll_reopen() && dev.start().is_ok() {
                    let now = monotonic_ns();
                    session.on_device_back(
                        now,
                        dev.setup().period,
                        now,
                        clock_ns(libc::CLOCK_REALTIME),
                    );
                    break;
                }
                if session.answers_nacks() {
                    answer_nacks(away.sock, session, away.nack_buf, away.peers);
                }
                wait_socket_or_idle(fd, AWAY_WAIT_MS * 1_000_000);
            }
        }
    }
}

/// How a receiver plays by presentation time (several receivers in step).
pub enum Presentation {
    /// Each frame when it arrives, plus the latency (one receiver).
    Off,
    /// At its capture time plus the latency, the sender's clock modelled by the time
    /// exchange (the client built before the thread starts).
    Exchange(Box<SyncClient>),
    /// At its capture time plus the latency, on the wall clock, which PTP or chrony keep
    /// with the sender's.
    System,
}

/// Runs the receiver until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub fn run_receiver<P: Playback, S: StreamInput>(
    dev: &mut P,
    rx: &mut Receiver,
    sock: &mut S,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    run_receiver_timed(
        dev,
        rx,
        Presentation::Off,
        sock,
        stop,
        heartbeat,
        stats,
        meter,
        events,
    )
}

/// [`run_receiver`] with presentation time.
#[allow(clippy::too_many_arguments)]
pub fn run_receiver_timed<P: Playback, S: StreamInput>(
    dev: &mut P,
    rx: &mut Receiver,
    presentation: Presentation,
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
    let timed = !matches!(presentation, Presentation::Off);
    let mut session = match presentation {
        Presentation::Off => ReceiverSession::new(rx, events),
        Presentation::Exchange(c) => ReceiverSession::new(rx, events).with_sync(c),
        Presentation::System => ReceiverSession::new(rx, events).with_system_clock(),
    };
    // Time requests go out between periods as NACKs do.
    let recovery = session.recovers() || session.sync().is_some();
    let mut report = LoopReport::default();
    let mut nack_buf = [0u8; MAX_NACK_LEN];
    let mut next_period_ns = 0u64;
    // With presentation time, when the device took what it played: the floor under the
    // wake-ups (frames written since the device's start less what it holds).
    let mut playout = Playout::new(format.rate);
    prime_and_start(dev, &mut session, timed, &mut playout);
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        if report.periods == 1 {
            alloc_count::track_this_thread(true);
        }
        if recovery {
            // Until the device is due, take packets as they arrive and ask for missing ones
            // as soon as they are overdue.
            loop {
                take_packets(sock, &mut session, next_period_ns);
                nack_turn(sock, &mut session, &mut nack_buf);
                match dev.wait(0) {
                    Ok(0) => {}
                    _ => break,
                }
                let now = monotonic_ns();
                if now >= next_period_ns {
                    break;
                }
                let until = session
                    .poll_timeout()
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
                // How late the wake-ups come after the device reached what they read, on
                // average (on a JACK graph, the clients woken before this one in the cycle add
                // to it): the receiver holds its level that much higher.
                if timed {
                    let (mean, late) = playout.lateness_ns(woke_ns, room, buffer);
                    session.receiver_mut().set_render_lateness_ns(mean, late);
                }
                // Packets first, to render the freshest: one batch whatever the time (a packet
                // waiting in the socket is played, not concealed), more only while the device
                // can wait.
                take_packets(sock, &mut session, deadline.intake_until());
                let now = monotonic_ns();
                let mut failed = None;
                // Bounded: never more than a buffer's worth per wake-up, whatever the device says.
                let mut budget = buffer / period + 1;
                let mut done = 0u64;
                while room >= period && budget > 0 {
                    budget -= 1;
                    // With presentation time the render's time is when the device would
                    // have asked for this period on time: the frames written now play after
                    // what it still holds (`buffer - room`), which a late wake-up shortens.
                    let at = if timed {
                        let late = (room - period) as u64 * 1_000_000_000 / format.rate as u64;
                        woke_ns.saturating_sub(late)
                    } else {
                        now
                    };
                    let written = dev.write(period, |area| {
                        session.render(at, area);
                        meter.measure(format, area);
                    });
                    match written {
                        Ok(0) => break,
                        Ok(n) => {
                            playout.wrote(n);
                            if deadline.is_late(done, monotonic_ns()) {
                                session.on_late_render();
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
                take_packets(sock, &mut session, next_period_ns);
                nack_turn(sock, &mut session, &mut nack_buf);
                failed
            }
            Err(e) => {
                // The network side goes on while the device is recovered: a period's worth.
                take_packets(sock, &mut session, woke_ns + period_ns);
                Some(e)
            }
        };
        if let Some(e) = err {
            match e {
                PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
                    session.on_xrun(monotonic_ns());
                    if dev.recover(e).is_ok() {
                        prime_and_start(dev, &mut session, timed, &mut playout);
                    } else {
                        idle_ms(RECOVER_RETRY_MS);
                    }
                }
                PcmError::Gone(errno) => {
                    session.on_device_lost(monotonic_ns(), errno);
                    // The device goes to be closed and opened again off this thread; the
                    // network side stays up meanwhile: packets are taken and NACKs sent as they
                    // fall due, waiting on the socket between.
                    while !stop.load(Ordering::Relaxed) {
                        heartbeat.beat();
                        if dev.poll_reopen() {
                            session.on_device_back(monotonic_ns());
                            prime_and_start(dev, &mut session, timed, &mut playout);
                            break;
                        }
                        // Nothing to render meanwhile: the intake is bounded by its batch
                        // count alone.
                        take_packets(sock, &mut session, u64::MAX);
                        nack_turn(sock, &mut session, &mut nack_buf);
                        stats.publish(&session.counters(sock.rejected()));
                        let now = monotonic_ns();
                        let until = session
                            .poll_timeout()
                            .map_or(u64::MAX, |d| d.max(now + 1_000_000))
                            .min(now + AWAY_WAIT_MS * 1_000_000);
                        wait_socket_or_idle(sock.wait_fd(), until - now);
                    }
                }
            }
        }
        stats.publish(&session.counters(sock.rejected()));
    }
    report.allocations = alloc_count::this_thread_allocations();
    report.frees = alloc_count::this_thread_frees();
    alloc_count::track_this_thread(false);
    report
}

/// The receiver session as the loop drives it: borrowed receiver and event queue.
type RxSession<'a> = ReceiverSession<&'a mut Receiver, &'a mut EventProducer>;

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, ns (two vDSO reads, no syscall).
fn wall_offset_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) as i64 - clock_ns(libc::CLOCK_MONOTONIC) as i64
}

/// Takes the datagrams waiting into the receiver, a batch at a time, until the socket is
/// empty, the monotonic clock reaches `until_ns` (read between batches) or [`MAX_BATCHES`]
/// were taken; the first batch always, so intake never stalls. The source of the stream it
/// plays is where NACKs go. Everything waiting, not just one batch, as far as the deadline
/// allows: under a flood of junk the stream's own packets must not be pushed out of the socket
/// buffer. Bounded, so a flood cannot keep the thread from the device.
fn take_packets<S: StreamInput>(sock: &mut S, session: &mut RxSession<'_>, until_ns: u64) -> usize {
    // For the freshness check of keyed streams and capture times on the wall clock.
    session.set_wall_offset(wall_offset_ns());
    let mut total = 0;
    for i in 0..MAX_BATCHES {
        if i > 0 && monotonic_ns() >= until_ns {
            break;
        }
        match sock.recv_into(session) {
            Ok(n) => {
                total += n;
                if n < BATCH {
                    break;
                }
            }
            Err(_) => {
                session.on_net_error();
                break;
            }
        }
    }
    total
}

/// Loss recovery's turn: sends the NACK the receiver writes, if any, to the stream's source
/// (each copy the receiver hands out).
fn nack_turn<S: StreamInput>(sock: &S, session: &mut RxSession<'_>, buf: &mut [u8]) {
    session.poll_transmit(monotonic_ns(), buf, |d| {
        let _ = sock.send_nack(d);
    });
}

/// Fills the playback buffer (silence until a stream arrives) and starts the device.
///
/// With presentation time (`timed`) each period is rendered at the time the device, started
/// now, will have asked for it: the k-th plays k periods after the start, and a render's frames
/// play a buffer less a period after it. (Rendered all at the time of priming, a buffer's worth
/// of frames would look taken at one instant, a point the drift loop's playback line would be
/// fitted through, and the first presentation errors measured against.)
fn prime_and_start<P: Playback>(
    dev: &mut P,
    session: &mut RxSession<'_>,
    timed: bool,
    playout: &mut Playout,
) {
    playout.restart();
    let period = dev.setup().period;
    let (buffer, rate) = (dev.setup().buffer, dev.setup().format.rate as u64);
    let now = monotonic_ns();
    let lead = buffer.saturating_sub(period) as u64 * 1_000_000_000 / rate;
    let mut guard = 0u64;
    while let Ok(room) = dev.wait(0) {
        if room < period || guard > 64 {
            break;
        }
        let at = if timed {
            (now + guard * period as u64 * 1_000_000_000 / rate).saturating_sub(lead)
        } else {
            now
        };
        match dev.write(period, |area| session.render(at, area)) {
            Ok(n) => playout.wrote(n),
            Err(_) => break,
        }
        guard += 1;
    }
    let _ = dev.start();
}

/// The playback device's timing for presentation time: frames written since it started, and
/// the floor under its readings ([`DeviceClock`]).
struct Playout {
    clock: DeviceClock,
    written: u64,
    /// The wake-ups' mean lateness, ns, and the readings it was taken from.
    late_ns: Option<f64>,
    readings: u64,
}

/// Weight of each wake-up in the mean lateness (a time constant of 512 wake-ups, about 3 s
/// at 256-frame periods).
const LATE_SMOOTHING: f64 = 1.0 / 512.0;

/// How much later than the mean lateness a wake-up counts, ns.
const LATE_OUTLIER_NS: f64 = 200_000.0;

impl Playout {
    fn new(rate: u32) -> Playout {
        Playout {
            clock: DeviceClock::with_blocks(rate, engine::sync::device::PLAYBACK_BLOCKS),
            written: 0,
            late_ns: None,
            readings: 0,
        }
    }

    /// The device starts afresh: nothing written, nothing played.
    fn restart(&mut self) {
        self.clock.reset();
        self.written = 0;
        self.late_ns = None;
        self.readings = 0;
    }

    fn wrote(&mut self, frames: usize) {
        self.written += frames as u64;
    }

    /// Read at `now_ns` with `room` of `buffer` free: the wake-ups' mean lateness after the
    /// device reached the positions they read, and this one's, ns.
    ///
    /// The mean, and as a lateness, not as moved render times: the engine fits the device's
    /// rate to the render times through their own lower envelope, and times moved onto the
    /// floor, whose line is refitted block by block, would show it kinks it takes for rate
    /// (a receiver joining a playing stream was tens of ppm and µs off for seconds that way).
    fn lateness_ns(&mut self, now_ns: u64, room: usize, buffer: usize) -> (f64, f64) {
        let held = buffer.saturating_sub(room) as u64;
        let floor = self
            .clock
            .observe(now_ns, self.written.saturating_sub(held));
        let late = now_ns.saturating_sub(floor) as f64;
        // A plain mean of the readings so far until there are enough for the running one, so
        // a receiver that starts (or joins) has its lateness within a second.
        self.readings = self.readings.saturating_add(1);
        let weight = (1.0 / self.readings as f64).max(LATE_SMOOTHING);
        // A wake-up delayed far beyond the usual (a page fault, a busy core) is an accident,
        // not how late this receiver's readings come: it counts as the usual plus a bound.
        let mean = match self.late_ns {
            Some(m) => m + (late.min(m + LATE_OUTLIER_NS) - m) * weight,
            None => late.min(LATE_OUTLIER_NS),
        };
        self.late_ns = Some(mean);
        (mean, late)
    }
}
