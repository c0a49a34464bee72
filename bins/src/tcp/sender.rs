//! The sending end of raw TCP mode: a non-blocking connection to `nc -l` (or `netaudio recv
//! --proto tcp`) that reconnects with back-off, written to from the capture thread.
//!
//! Realtime contract: as the module's (see [`super`]): after `connect`, nothing here
//! allocates, locks or blocks; every syscall is non-blocking.

use super::{BACKOFF_MAX_MS, BACKOFF_MIN_MS, CONNECT_TIMEOUT_NS, TcpStats, close_fd};
use crate::net::{DatagramOut, errno, monotonic_ns, resolve, set_dscp};
use engine::format::StreamFormat;
use engine::rtlog::{Event, EventProducer};
use engine::wire::MAX_PACKET_LEN;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

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
