//! The receiving end of raw TCP mode: a listener whose newest connection's bytes become
//! frames for the receiver session.
//!
//! Realtime contract: as the module's (see [`super`]): after `bind`, nothing here allocates,
//! locks or blocks; `accept4` and `recvmsg` are non-blocking.

use super::{MAX_ACCEPTS, MAX_READS, TcpStats, close_fd};
use crate::net::{
    StampClock, StreamInput, arrival_stamp, enable_timestamps, monotonic_ns, resolve, syscall_len,
};
use core::borrow::BorrowMut;
use engine::format::StreamFormat;
use engine::receiver::Receiver;
use engine::rtlog::{Event, EventProducer, EventSink};
use engine::session::{PcmStreamFramer, ReceiverSession};
use engine::wire::PacketHeader;
use socket2::SockRef;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The receiving end of raw TCP mode: a listener whose connections' byte streams become
/// frames for the engine's receiver session (the engine's [`PcmStreamFramer`] cuts them and
/// makes each connection a stream of its own). Used through [`StreamInput`]. a stream of its own). Used through [`StreamInput`].
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
