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

//!
//! The sending end is in `sender.rs`, the receiving end in `receiver.rs`.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod receiver;
mod sender;

pub use receiver::TcpPcmReceiver;
pub use sender::TcpPcmSender;

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

pub(super) fn close_fd(fd: i32) {
    if fd >= 0 {
        // SAFETY: `fd` is a socket this module opened and owns; it is closed exactly once
        // (every caller forgets it right after).
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::monotonic_ns;
    use engine::format::SampleFormat;
    use engine::format::StreamFormat;
    use engine::rtlog::Event;
    use engine::rtlog::queue;
    use std::io::{Read, Write};
    use std::net::TcpListener;
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
