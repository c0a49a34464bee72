//! Raw PCM over TCP (`[network] proto = "tcp"`, `--proto tcp`): the wire of the old
//! `arecord ... -t raw | nc host port` / `nc -l port | aplay ... -t raw` pipeline, so one
//! machine at a time can move to netaudio.
//!
//! The byte stream carries nothing but interleaved little-endian PCM in the configured format
//! (S16_LE, 2 channels, 44100 Hz by default, as the old pipeline): no header, no framing, no
//! stream identity. What the two ends must agree on (rate, channels, sample format) is
//! configured on both, exactly as `arecord` and `aplay` were given the same `-f -r -c`.
//!
//! * [`TcpPcmReceiver`] (`netaudio recv --proto tcp`): listens, accepts a connection and turns
//!   its byte stream into native packets in one buffer allocated at start-up, so the engine's
//!   [`Receiver`](engine::receiver::Receiver) plays it with its buffering, concealment and
//!   drift correction. Each connection is a stream of its own (a new stream id); a packet's
//!   first frame index counts from the connection's first byte; a packet holds whatever
//!   arrived, rounded down to whole frames, the rest of a frame is carried over to the next
//!   read; its time is the kernel's arrival time of the newest bytes read (`SO_TIMESTAMPNS`,
//!   as for datagrams; the read time where the kernel gives none). The read time alone would
//!   make the buffer look up to a read interval emptier than it is, and the drift loop
//!   would start by correcting an error that is not there. A new connection (the old sender restarted)
//!   replaces the current one: the receiver switches streams and counts a resync.
//! * [`TcpPcmSender`] (`netaudio send --proto tcp`): connects to the receiver (`nc -l`, or
//!   `netaudio recv --proto tcp`) and writes each packet's payload, which is the capture
//!   device's own buffer, with one `send(MSG_DONTWAIT | MSG_NOSIGNAL)`. A write the socket
//!   cannot take (peer slow or gone) is dropped and counted, never waited for; a write taken
//!   in part is finished before anything else is written, so the byte stream stays
//!   frame-aligned. When the peer closes or restarts (`EPIPE`, `ECONNRESET`, `ECONNREFUSED`,
//!   ...) the sender reconnects with back-off (0.1 s doubling to 2 s); each new connection
//!   starts on a frame boundary.
//!
//! Design: no extra thread. Both ends run inside the realtime loops of [`crate::stream`], as
//! their [`StreamInput`] and [`DatagramOut`]. The receiver's loop sleeps only in the playback
//! device's poll and drains the socket after each wake-up (non-blocking `accept4` and `recv`);
//! meanwhile the kernel's socket buffer holds what arrives (TCP loses nothing), so bytes wait
//! at most one period, as datagrams do in native mode. The sender connects with a
//! non-blocking `connect` and completes it with `poll(.., 0)` on the following writes; the name
//! is resolved once, at start-up.
//!
//! Realtime contract: [`TcpPcmSender::connect`] and [`TcpPcmReceiver::bind`] resolve names and
//! allocate; afterwards nothing here allocates, locks or blocks: every syscall is
//! non-blocking (`socket`, `connect`, `poll` with timeout 0, `send`, `accept4`, `recv`,
//! `close`), counters are atomics and events go to the realtime event queue. Sockets are
//! made, set up and accepted through `socket2`, whose calls are one syscall each on stack
//! values; the reads and writes of the stream are written by hand, as in [`crate::net`].

use crate::net::{
    DatagramOut, StampClock, StreamInput, arrival_stamp, enable_timestamps, errno, monotonic_ns,
    resolve, set_dscp, syscall_len,
};
use core::borrow::BorrowMut;
use engine::format::StreamFormat;
use engine::receiver::Receiver;
use engine::rtlog::EventSink;
use engine::rtlog::{Event, EventProducer};
use engine::session::{PcmStreamFramer, ReceiverSession};
use engine::wire::{MAX_PACKET_LEN, PacketHeader};
use serde_json::{Value, json};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// First reconnect back-off.
pub const BACKOFF_MIN_MS: u64 = 100;
/// Longest reconnect back-off.
pub const BACKOFF_MAX_MS: u64 = 2_000;
/// A connect not completed after this long is given up and retried.
const CONNECT_TIMEOUT_NS: u64 = 3_000_000_000;
/// Reads one receiver wake-up makes at most (each up to a chunk).
const MAX_READS: usize = 64;
/// Connections one receiver wake-up accepts at most.
const MAX_ACCEPTS: usize = 8;

/// Counters of the TCP side, shared with the housekeeping thread (relaxed atomics).
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections made (sender) or accepted (receiver).
    pub connections: AtomicU64,
    /// Connections after the first: the sender reconnected, or a new sender replaced the old.
    pub reconnects: AtomicU64,
    /// Connections that ended (closed by the peer, reset, replaced).
    pub disconnects: AtomicU64,
    /// Connection attempts that failed (sender).
    pub connect_failures: AtomicU64,
    /// Writes dropped because the socket could not take them or was not connected (sender).
    pub dropped_writes: AtomicU64,
    /// Frames in those writes.
    pub dropped_frames: AtomicU64,
    /// Bytes written (sender) or read (receiver).
    pub bytes: AtomicU64,
}

impl TcpStats {
    fn bump(a: &AtomicU64, n: u64) -> u64 {
        a.fetch_add(n, Relaxed) + n
    }

    /// Adds the counters to a daemon's final JSON as `tcp_*` keys.
    pub fn add_json(&self, j: &mut Value) {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let fields = json!({
            "tcp_connections": g(&self.connections),
            "tcp_reconnects": g(&self.reconnects),
            "tcp_disconnects": g(&self.disconnects),
            "tcp_connect_failures": g(&self.connect_failures),
            "tcp_dropped_writes": g(&self.dropped_writes),
            "tcp_dropped_frames": g(&self.dropped_frames),
            "tcp_bytes": g(&self.bytes),
        });
        if let (Some(j), Value::Object(f)) = (j.as_object_mut(), fields) {
            j.extend(f);
        }
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "TCP: {} connections ({} reconnects), {} failed attempts, {} writes dropped ({} frames)",
            self.connections.load(Relaxed),
            self.reconnects.load(Relaxed),
            self.connect_failures.load(Relaxed),
            self.dropped_writes.load(Relaxed),
            self.dropped_frames.load(Relaxed)
        )
    }
}

fn close_fd(fd: i32) {
    if fd >= 0 {
        // SAFETY: `fd` is a socket this module opened and owns; it is closed exactly once
        // (every caller forgets it right after).
        unsafe { libc::close(fd) };
    }
}

/// State of the sender's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// No socket; the next attempt at `retry_at` (monotonic ns).
    Idle { retry_at: u64 },
    /// A non-blocking connect in flight since `since`.
    Connecting { fd: i32, since: u64 },
    /// Connected.
    Up { fd: i32 },
}

/// The sending end of raw TCP mode: writes raw PCM to `nc -l` (or `netaudio recv --proto
/// tcp`), reconnecting when the peer goes away. Used through [`DatagramOut`] (the packet
/// header is not sent, only the payload).
///
/// Single-threaded interior mutability (`Cell`): it lives on the capture thread only.
pub struct TcpPcmSender {
    peer: SocketAddr,
    /// `peer` as `connect` takes it, built once at start-up.
    addr: SockAddr,
    frame_bytes: usize,
    sndbuf: usize,
    dscp: Option<u8>,
    conn: Cell<Conn>,
    /// The unwritten end of a write the socket took in part, finished before anything else.
    pending: RefCell<Box<[u8]>>,
    pending_at: Cell<usize>,
    pending_end: Cell<usize>,
    backoff_ms: Cell<u64>,
    attempts: Cell<u32>,
    events: RefCell<EventProducer>,
    stats: Arc<TcpStats>,
}

impl TcpPcmSender {
    /// Resolves `dest` (`host:port`) for raw PCM in `format`; connects on the first write.
    /// `dscp` marks the packets; `events` receives connection events.
    pub fn connect(
        dest: &str,
        format: StreamFormat,
        dscp: Option<u8>,
        events: EventProducer,
    ) -> io::Result<TcpPcmSender> {
        let peer = resolve(dest)?;
        // About half a second of audio in the socket at most (the kernel doubles the value):
        // a peer that stalls makes writes drop instead of piling up latency.
        let sndbuf = (format.rate as usize * format.frame_bytes() / 4).clamp(16 << 10, 4 << 20);
        Ok(TcpPcmSender {
            peer,
            addr: SockAddr::from(peer),
            frame_bytes: format.frame_bytes(),
            sndbuf,
            dscp,
            conn: Cell::new(Conn::Idle { retry_at: 0 }),
            pending: RefCell::new(vec![0; MAX_PACKET_LEN].into_boxed_slice()),
            pending_at: Cell::new(0),
            pending_end: Cell::new(0),
            backoff_ms: Cell::new(BACKOFF_MIN_MS),
            attempts: Cell::new(0),
            events: RefCell::new(events),
            stats: Arc::new(TcpStats::default()),
        })
    }

    /// Where the stream goes.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The counters.
    pub fn stats(&self) -> Arc<TcpStats> {
        self.stats.clone()
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.conn.get(), Conn::Up { .. })
    }

    fn event(&self, now: u64, e: Event) {
        if let Ok(mut q) = self.events.try_borrow_mut() {
            q.push(now, e);
        }
    }

    /// Moves the connection forward: starts an attempt when one is due, completes one in
    /// flight. Never blocks.
    fn advance(&self, now: u64) {
        match self.conn.get() {
            Conn::Idle { retry_at } if now >= retry_at => self.start_connect(now),
            Conn::Connecting { fd, since } => self.check_connect(fd, since, now),
            _ => {}
        }
    }

    fn start_connect(&self, now: u64) {
        // socket2's calls are one syscall each on stack values (no allocation; an error is the
        // errno in an io::Error), so they may run here, on the capture thread.
        let v6 = self.peer.is_ipv6();
        let ty = Type::STREAM.nonblocking().cloexec();
        let sock = match Socket::new(Domain::for_address(self.peer), ty, None) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(e.raw_os_error().unwrap_or(libc::EIO), now),
        };
        // Raw PCM in small writes: no Nagle delay; a bounded send buffer (see `connect`).
        let _ = sock.set_tcp_nodelay(true);
        let _ = sock.set_send_buffer_size(self.sndbuf);
        if let Some(d) = self.dscp {
            let _ = set_dscp(&sock, v6, d);
        }
        let e = match sock.connect(&self.addr) {
            Ok(()) => return self.connected(sock.into_raw_fd(), now),
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        };
        match e {
            libc::EINPROGRESS | libc::EINTR => {
                let fd = sock.into_raw_fd();
                self.conn.set(Conn::Connecting { fd, since: now });
                // On a LAN it is often complete already.
                self.check_connect(fd, now, now);
            }
            // Dropping `sock` closes it.
            e => self.connect_failed(e, now),
        }
    }

    fn check_connect(&self, fd: i32, since: u64, now: u64) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one live pollfd; timeout 0, so poll never sleeps.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r > 0 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
            // SAFETY: `fd` is the live socket of the connect in flight, owned by `self.conn`.
            let sock = unsafe { BorrowedFd::borrow_raw(fd) };
            let err = match SockRef::from(&sock).take_error() {
                Ok(None) => 0,
                Ok(Some(e)) | Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            if err == 0 {
                self.connected(fd, now);
            } else {
                close_fd(fd);
                self.connect_failed(err, now);
            }
        } else if now.saturating_sub(since) > CONNECT_TIMEOUT_NS {
            close_fd(fd);
            self.connect_failed(libc::ETIMEDOUT, now);
        }
    }

    fn connected(&self, fd: i32, now: u64) {
        self.conn.set(Conn::Up { fd });
        // A new connection starts on a frame boundary: nothing of an older one carries over.
        self.pending_at.set(0);
        self.pending_end.set(0);
        self.attempts.set(0);
        self.backoff_ms.set(BACKOFF_MIN_MS);
        let count = TcpStats::bump(&self.stats.connections, 1);
        if count > 1 {
            self.stats.reconnects.fetch_add(1, Relaxed);
        }
        self.event(
            now,
            Event::TcpConnected {
                accepted: false,
                count: count.min(u32::MAX as u64) as u32,
            },
        );
    }

    fn connect_failed(&self, errno: i32, now: u64) {
        let attempts = self.attempts.get().saturating_add(1);
        self.attempts.set(attempts);
        self.stats.connect_failures.fetch_add(1, Relaxed);
        let backoff = self.backoff_ms.get();
        // Log the 1st, 2nd, 4th, 8th... failure: every few seconds at first, then rarely.
        if attempts.is_power_of_two() {
            self.event(
                now,
                Event::TcpConnectFailed {
                    errno,
                    attempts,
                    retry_ms: backoff as u32,
                },
            );
        }
        self.conn.set(Conn::Idle {
            retry_at: now + backoff * 1_000_000,
        });
        self.backoff_ms.set((backoff * 2).min(BACKOFF_MAX_MS));
    }

    fn lost(&self, fd: i32, errno: i32, now: u64) {
        close_fd(fd);
        self.stats.disconnects.fetch_add(1, Relaxed);
        self.event(now, Event::TcpClosed { errno });
        self.pending_at.set(0);
        self.pending_end.set(0);
        self.attempts.set(0);
        self.backoff_ms.set(BACKOFF_MIN_MS);
        self.conn.set(Conn::Idle {
            retry_at: now + BACKOFF_MIN_MS * 1_000_000,
        });
    }

    fn dropped(&self, bytes: usize) {
        self.stats.dropped_writes.fetch_add(1, Relaxed);
        self.stats
            .dropped_frames
            .fetch_add((bytes / self.frame_bytes.max(1)) as u64, Relaxed);
    }

    /// Writes `payload` (whole frames) to the stream; the bytes taken or an errno (`ENOTCONN`
    /// while there is no connection, `EAGAIN` when the socket could not take it: both mean
    /// the write was dropped and counted).
    pub fn write(&self, payload: &[u8]) -> Result<usize, i32> {
        let now = monotonic_ns();
        self.advance(now);
        let Conn::Up { fd } = self.conn.get() else {
            self.dropped(payload.len());
            return Err(libc::ENOTCONN);
        };
        // First the end of a write taken in part: the stream stays frame-aligned.
        let (at, end) = (self.pending_at.get(), self.pending_end.get());
        if at < end {
            let r = {
                let pending = self.pending.borrow();
                send_some(fd, &pending[at..end])
            };
            match r {
                Ok(n) => {
                    self.pending_at.set(at + n);
                    self.stats.bytes.fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    self.lost(fd, e, now);
                    self.dropped(payload.len());
                    return Err(e);
                }
            }
            if self.pending_at.get() < end {
                self.dropped(payload.len());
                return Err(libc::EAGAIN);
            }
        }
        match send_some(fd, payload) {
            Ok(0) if !payload.is_empty() => {
                self.dropped(payload.len());
                Err(libc::EAGAIN)
            }
            Ok(n) => {
                let rest = &payload[n..];
                if !rest.is_empty() {
                    let mut pending = self.pending.borrow_mut();
                    if rest.len() > pending.len() {
                        // Larger than any packet: cannot be finished later; start over
                        // aligned on a new connection.
                        drop(pending);
                        self.lost(fd, libc::EMSGSIZE, now);
                        return Err(libc::EMSGSIZE);
                    }
                    pending[..rest.len()].copy_from_slice(rest);
                    self.pending_at.set(0);
                    self.pending_end.set(rest.len());
                }
                self.stats.bytes.fetch_add(n as u64, Relaxed);
                Ok(payload.len())
            }
            Err(e) => {
                self.lost(fd, e, now);
                self.dropped(payload.len());
                Err(e)
            }
        }
    }
}

/// One non-blocking, SIGPIPE-free `send`: the bytes taken (0 when the socket is full) or an
/// errno.
fn send_some(fd: i32, bytes: &[u8]) -> Result<usize, i32> {
    if bytes.is_empty() {
        return Ok(0);
    }
    // SAFETY: `bytes` is a live readable slice for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    match errno() {
        libc::EAGAIN | libc::EINTR => Ok(0),
        e => Err(e),
    }
}

impl DatagramOut for TcpPcmSender {
    /// Raw PCM: the header stays behind, the payload (whole frames) goes out. A packet without
    /// frames (the END of a clean stop) has nothing for raw PCM: closing the connection ends
    /// the stream.
    #[inline]
    fn send_gather(&self, _header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        if payload.is_empty() {
            return Ok(0);
        }
        self.write(payload)
    }
}

impl Drop for TcpPcmSender {
    fn drop(&mut self) {
        match self.conn.get() {
            Conn::Up { fd } | Conn::Connecting { fd, .. } => close_fd(fd),
            Conn::Idle { .. } => {}
        }
    }
}

/// The receiving end of raw TCP mode: a listener whose connections' byte streams become
/// frames for the engine's receiver session (the engine's [`PcmStreamFramer`] cuts them and
/// makes each connection a stream of its own). Used through [`StreamInput`].
pub struct TcpPcmReceiver {
    listener: TcpListener,
    fd: i32,
    framer: PcmStreamFramer,
    /// Control buffer for the arrival timestamp (u64s: aligned for `cmsghdr`).
    control: [u64; 8],
    events: EventProducer,
    stats: Arc<TcpStats>,
}

impl TcpPcmReceiver {
    /// Listens on `addr` (`host:port`, e.g. `0.0.0.0:46000` or `[::]:46000`) for raw PCM in
    /// `format`; a read takes up to four playback periods (`period` frames each).
    pub fn bind(
        addr: &str,
        format: StreamFormat,
        period: usize,
        events: EventProducer,
    ) -> io::Result<TcpPcmReceiver> {
        let local = resolve(addr)?;
        let listener = TcpListener::bind(local).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on TCP {local}: {e} (is another receiver, or nc -l, running?)"
                ),
            )
        })?;
        listener.set_nonblocking(true)?;
        let chunk_frames = (period * 4).clamp(256, u16::MAX as usize);
        Ok(TcpPcmReceiver {
            listener,
            fd: -1,
            framer: PcmStreamFramer::new(format, chunk_frames),
            control: [0; 8],
            events,
            stats: Arc::new(TcpStats::default()),
        })
    }

    /// One non-blocking read into the framer's free space: the bytes read (0 at the end of
    /// the stream) and their arrival time on `CLOCK_MONOTONIC`, or an errno.
    fn read(&mut self) -> Result<(usize, u64), i32> {
        let buf = self.framer.read_buf();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&self.control) as _;
        // By hand on purpose, like the datagram path (`crate::net`): one non-blocking
        // `recvmsg` straight into the framer's buffer, with the arrival stamp in a control
        // buffer owned by `self`; socket2's `recvmsg` would parse no control message for us.
        // SAFETY: `msg` points at one iovec over the framer's live writable buffer and at the
        // live control buffer, both owned by `self` for the duration of the call.
        let n = syscall_len(unsafe { libc::recvmsg(self.fd, &mut msg, libc::MSG_DONTWAIT) })?;
        // SAFETY: the kernel filled `msg`; its control buffer is `self.control`.
        let t = StampClock::now().monotonic(unsafe { arrival_stamp(&msg) });
        Ok((n, t))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<TcpStats> {
        self.stats.clone()
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.fd >= 0
    }

    fn close(&mut self, errno: i32) {
        close_fd(self.fd);
        self.fd = -1;
        self.framer.disconnect();
        self.stats.disconnects.fetch_add(1, Relaxed);
        self.events.push(monotonic_ns(), Event::TcpClosed { errno });
    }

    /// Takes every connection waiting; the newest replaces the current one.
    fn accept_new(&mut self) {
        for _ in 0..MAX_ACCEPTS {
            // One accept4 making the socket non-blocking; the peer's address stays on the
            // stack (socket2 allocates nothing here).
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            let Ok((sock, _)) = SockRef::from(&self.listener).accept4(flags) else {
                // EAGAIN: none waiting; anything else (ECONNABORTED, EMFILE): try next time.
                return;
            };
            if self.fd >= 0 {
                self.close(-1);
            }
            let now = monotonic_ns();
            // Kernel arrival times of what is read (best effort: read times otherwise).
            let _ = enable_timestamps(&sock);
            self.fd = sock.into_raw_fd();
            // A stream of its own, never the id of the one before.
            let count = self.framer.connect(now);
            TcpStats::bump(&self.stats.connections, 1);
            if count > 1 {
                self.stats.reconnects.fetch_add(1, Relaxed);
            }
            self.events.push(
                now,
                Event::TcpConnected {
                    accepted: true,
                    count: count.min(u32::MAX as u64) as u32,
                },
            );
        }
    }

    /// Accepts a new connection if one waits, then reads what the current one has and hands
    /// its whole frames to `f` as (typed header, frames, arrival time on `CLOCK_MONOTONIC`).
    /// Returns how many packets of frames.
    pub fn recv_frames<F: FnMut(&PacketHeader, &[u8], u64)>(
        &mut self,
        mut f: F,
    ) -> Result<usize, i32> {
        self.accept_new();
        let mut packets = 0;
        for _ in 0..MAX_READS {
            if self.fd < 0 {
                break;
            }
            let room = self.framer.read_buf().len();
            let (n, now) = match self.read() {
                Ok((0, _)) => {
                    self.close(0);
                    break;
                }
                Ok(r) => r,
                Err(libc::EAGAIN | libc::EINTR) => break,
                Err(e) => {
                    self.close(e);
                    break;
                }
            };
            self.stats.bytes.fetch_add(n as u64, Relaxed);
            if self.framer.on_read(n, |h, pcm| f(h, pcm, now)) {
                packets += 1;
            }
            if n < room {
                break; // drained: no need for a read that says EAGAIN
            }
        }
        Ok(packets)
    }
}

impl StreamInput for TcpPcmReceiver {
    fn recv_into<R: BorrowMut<Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32> {
        self.recv_frames(|h, pcm, t| {
            session.handle_frames(t, h, pcm);
        })
    }
}

impl Drop for TcpPcmReceiver {
    fn drop(&mut self) {
        close_fd(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;
    use engine::rtlog::queue;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn fmt() -> StreamFormat {
        StreamFormat::new(44_100, 2, SampleFormat::S16Le).unwrap()
    }

    fn drain(rx: &mut TcpPcmReceiver, got: &mut Vec<(u32, u64, Vec<u8>)>) {
        rx.recv_frames(|h, pcm, _| {
            assert_eq!(pcm.len(), h.frames as usize * h.format.frame_bytes());
            got.push((h.stream_id, h.first_frame, pcm.to_vec()));
        })
        .unwrap();
    }

    /// Drains until `got` holds `n` packets (or `state` holds), at most 10 s.
    fn drain_until(
        rx: &mut TcpPcmReceiver,
        got: &mut Vec<(u32, u64, Vec<u8>)>,
        mut state: impl FnMut(&TcpPcmReceiver, &[(u32, u64, Vec<u8>)]) -> bool,
    ) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            drain(rx, got);
            if state(rx, got) {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "the receiver did not reach the expected state: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn byte_stream_becomes_whole_frame_packets_and_a_new_connection_a_new_stream() {
        let (p, mut c) = queue();
        let mut rx = TcpPcmReceiver::bind("127.0.0.1:0", fmt(), 64, p).unwrap();
        let addr = rx.local_addr().unwrap();
        let mut a = std::net::TcpStream::connect(addr).unwrap();
        // 2.5 frames, then the rest of the third frame and one more.
        a.write_all(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        let mut got = Vec::new();
        drain_until(&mut rx, &mut got, |_, g| !g.is_empty());
        a.write_all(&[11, 12, 13, 14, 15, 16]).unwrap();
        drain_until(&mut rx, &mut got, |_, g| g.len() >= 2);
        assert_eq!(got.len(), 2, "{got:?}");
        let id = got[0].0;
        assert_eq!(
            (got[0].1, &got[0].2[..]),
            (0, &[1, 2, 3, 4, 5, 6, 7, 8][..])
        );
        assert_eq!((got[1].0, got[1].1), (id, 2));
        assert_eq!(&got[1].2[..], &[9, 10, 11, 12, 13, 14, 15, 16]);
        // A second sender replaces the first: new stream, frames counted from 0 again.
        let mut b = std::net::TcpStream::connect(addr).unwrap();
        b.write_all(&[0xAA; 4]).unwrap();
        got.clear();
        drain_until(&mut rx, &mut got, |_, g| !g.is_empty());
        assert_eq!(got.len(), 1);
        assert_ne!(got[0].0, id);
        assert_eq!(got[0].1, 0);
        // The replaced connection was closed by the receiver.
        let mut buf = [0u8; 1];
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(a.read(&mut buf).unwrap(), 0);
        let s = rx.stats();
        assert_eq!(s.connections.load(Relaxed), 2);
        assert_eq!(s.reconnects.load(Relaxed), 1);
        let mut events = Vec::new();
        while let Some(r) = c.pop() {
            events.push(r.event);
        }
        assert!(
            events.contains(&Event::TcpClosed { errno: -1 }),
            "{events:?}"
        );
        drop(b);
        drain_until(&mut rx, &mut got, |rx, _| !rx.is_connected());
        assert!(!rx.is_connected(), "EOF closes the connection");
    }

    #[test]
    fn sender_connects_without_blocking_drops_while_down_and_reconnects() {
        let (p, _c) = queue();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tx = TcpPcmSender::connect(&addr.to_string(), fmt(), Some(46), p).unwrap();
        let frames = [7u8; 64];
        // The first write connects (loopback completes at once) or is dropped while connecting.
        let mut sent = 0;
        for _ in 0..50 {
            if tx.write(&frames).is_ok() {
                sent += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sent, 1);
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(buf, frames);
        // The peer goes away: writes fail, are counted, and the sender reconnects.
        drop(conn);
        let mut failed = false;
        for _ in 0..100 {
            if tx.write(&frames).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(failed, "a closed peer is noticed");
        let s = tx.stats();
        assert_eq!(s.disconnects.load(Relaxed), 1);
        let mut up = false;
        for _ in 0..200 {
            let _ = tx.write(&frames);
            if tx.is_connected() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(up, "reconnected after the back-off");
        assert_eq!(s.reconnects.load(Relaxed), 1);
        assert!(s.dropped_writes.load(Relaxed) >= 1);
    }

    #[test]
    fn refused_connections_back_off() {
        let (p, mut c) = queue();
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tx = TcpPcmSender::connect(&format!("127.0.0.1:{port}"), fmt(), None, p).unwrap();
        let t0 = monotonic_ns();
        while monotonic_ns() - t0 < 350_000_000 {
            assert_eq!(tx.write(&[0; 4]).unwrap_err(), libc::ENOTCONN);
            std::thread::sleep(Duration::from_millis(2));
        }
        let s = tx.stats();
        let fails = s.connect_failures.load(Relaxed);
        // Attempts at 0, 0.1, 0.3 s at the earliest: a few, not one per write.
        assert!((1..=3).contains(&fails), "{fails} attempts");
        let r = c.pop().unwrap();
        assert!(matches!(
            r.event,
            Event::TcpConnectFailed {
                errno: libc::ECONNREFUSED,
                attempts: 1,
                ..
            }
        ));
    }
}
