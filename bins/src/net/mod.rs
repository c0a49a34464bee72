//! UDP sockets for the realtime threads.
//!
//! * [`UdpSender::send_gather`]: one `sendmsg` with two iovecs — the packet header on the
//!   caller's stack and the payload slice, which is the capture device's own (mmap) buffer. The
//!   kernel copies straight from there into the socket buffer: no copy in user space. With a
//!   key, [`UdpSender::send_tagged`] adds a third iovec, the tag on the caller's stack.
//! * [`UdpReceiver::recv_batch`]: one non-blocking `recvmmsg` into slots preallocated at
//!   start-up, each with the kernel's arrival timestamp (`SO_TIMESTAMPNS`), converted to
//!   `CLOCK_MONOTONIC` so it compares with the playback clock.
//!
//! * Loss recovery: the receiver remembers where the stream comes from and sends NACKs back
//!   there ([`UdpReceiver::send_nack`], one non-blocking `sendto`); the sender reads them from
//!   its socket ([`DatagramOut::recv_nack_from`], one non-blocking `recvfrom`) and answers
//!   each with repairs to the receiver that asked ([`DatagramOut::send_repair`]). Either side
//!   can wait for its socket with [`wait_readable`] (one `ppoll`) instead of sleeping through a
//!   whole period, so a NACK or a packet is handled when it arrives.
//! * Several receivers: the sender's socket serves a multicast group or a list of receivers
//!   ([`UdpSender::fanout`]); a receiver whose listen address is a group joins it
//!   ([`UdpReceiver::listen`], `multicast`).
//!
//! Set-up goes through `socket2` (buffer sizes, DSCP); the one option it has no setter for,
//! `SO_TIMESTAMPNS`, is set by [`enable_timestamps`]. The realtime data path is written by
//! hand on purpose (see [`UdpSender::send_tagged`] and [`UdpReceiver::recv_batch_from`]), and
//! so is the reading of its results ([`errno`], [`arrival_stamp`], [`StampClock`]), shared with
//! raw TCP mode.
//!
//! Realtime contract: `connect`/`bind` resolve names and allocate; `send_gather`,
//! `recv_batch`, `recv_nack`, `send_nack` and `wait_readable` make exactly one syscall each,
//! never block beyond the timeout given (`MSG_DONTWAIT`) and never allocate. A failed send
//! also raises an atomic flag ([`UdpSender::failure_flag`]); [`reconnect`], which moves the
//! sender's peer, runs on a housekeeping thread on a clone of the socket.

use core::borrow::BorrowMut;
use engine::receiver::Receiver;
use engine::rtlog::EventSink;
use engine::session::{FaultInjector, ReceiverSession};
use engine::wire::MAX_PACKET_LEN;
use socket2::SockRef;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

mod multicast;
mod peers;
mod sender;
mod sys;

pub use multicast::{DEFAULT_TTL, Interface, MulticastOptions};
pub use peers::{MAX_PEERS, PeerTable};
pub use sender::{MAX_RECEIVERS, UdpSender, reconnect};
pub(crate) use sys::{StampClock, arrival_stamp, enable_timestamps, errno, set_dscp, syscall_len};
pub use sys::{clock_ns, monotonic_ns, resolve, wait_readable};
/// Where the sender's packets go: one datagram per call, header and payload gathered.
pub trait DatagramOut {
    /// Sends `header` followed by `payload` as one datagram; the bytes sent or an errno.
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32>;

    /// Sends `header`, `payload` and `tag` as one datagram. The default handles an empty tag
    /// only (`EOPNOTSUPP` otherwise); sockets override it with a three-part gather write.
    fn send_tagged(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<usize, i32> {
        if tag.is_empty() {
            self.send_gather(header, payload)
        } else {
            Err(libc::EOPNOTSUPP)
        }
    }

    /// Takes one datagram that came back (a NACK) into `buf` without blocking; its length, or
    /// `None` when nothing is waiting. The default has no return path.
    fn recv_nack(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }

    /// As [`recv_nack`](Self::recv_nack), with the receiver it came from when the socket
    /// serves several ([`UdpSender::fanout`]); `None` for a socket with one peer.
    fn recv_nack_from(&self, buf: &mut [u8]) -> Option<(usize, Option<SocketAddr>)> {
        self.recv_nack(buf).map(|n| (n, None))
    }

    /// As [`recv_nack_from`](Self::recv_nack_from), with the kernel's arrival stamp
    /// (`CLOCK_REALTIME`, see [`arrival_stamp`]) where the socket gives one.
    fn recv_nack_stamped(
        &self,
        buf: &mut [u8],
    ) -> Option<(usize, Option<SocketAddr>, Option<u64>)> {
        self.recv_nack_from(buf).map(|(n, from)| (n, from, None))
    }

    /// Sends a repair (a packet sent again) to `to`, the receiver whose NACK asked for it, or
    /// where packets go when `None`. The default sends it as a packet.
    fn send_repair(&self, to: Option<SocketAddr>, datagram: &[u8]) -> Result<usize, i32> {
        let _ = to;
        self.send_gather(datagram, &[])
    }

    /// The socket to wait on for datagrams coming back, if any.
    fn fd(&self) -> Option<i32> {
        None
    }
}

/// Where the receiver's packets come from: every packet waiting, without blocking.
pub trait DatagramIn {
    /// Calls `f(packet, arrival_ns)` for each packet waiting (arrival on `CLOCK_MONOTONIC`);
    /// returns how many, 0 when none was waiting, or an errno.
    fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, f: F) -> Result<usize, i32>;

    /// As [`recv_batch`](Self::recv_batch); `f` says whether the packet belongs to the stream
    /// played, whose source is then where [`send_nack`](Self::send_nack) answers.
    fn recv_batch_from<F: FnMut(&[u8], u64) -> bool>(&mut self, mut f: F) -> Result<usize, i32> {
        self.recv_batch(|d, t| {
            f(d, t);
        })
    }

    /// Sends a NACK back to the stream's source; the default has no return path.
    fn send_nack(&self, _nack: &[u8]) -> Result<usize, i32> {
        Err(libc::EOPNOTSUPP)
    }

    /// A descriptor to wait on for packets, if the source has one.
    fn wait_fd(&self) -> Option<i32> {
        None
    }

    /// Datagrams the source refused before they reached the receiver (not its protocol), so
    /// far; counted with the receiver's invalid packets.
    fn rejected(&self) -> u64 {
        0
    }
}

/// The receiver loop's input: whatever feeds a [`ReceiverSession`]. Datagram sources
/// ([`DatagramIn`]: netaudio's own UDP packets) hand over datagrams; adapters hand over typed
/// frames ([`ReceiverSession::handle_frames`]): RTP ([`crate::rtp::RtpInput`]) and raw PCM
/// over TCP ([`crate::tcp::TcpPcmReceiver`]), with no native header built to be parsed again.
pub trait StreamInput {
    /// Hands everything waiting (a batch at most) to `session`, without blocking; returns how
    /// many packets, 0 when none was waiting, or an errno.
    fn recv_into<R: BorrowMut<Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32>;

    /// Sends a NACK back to the stream's source; the default has no return path.
    fn send_nack(&self, _nack: &[u8]) -> Result<usize, i32> {
        Err(libc::EOPNOTSUPP)
    }

    /// A descriptor to wait on for input, if the source has one.
    fn wait_fd(&self) -> Option<i32> {
        None
    }

    /// Input the source refused before it reached the receiver (not its protocol), so far;
    /// counted with the receiver's invalid packets.
    fn rejected(&self) -> u64 {
        0
    }
}

impl<T: DatagramIn> StreamInput for T {
    #[inline]
    fn recv_into<R: BorrowMut<Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32> {
        self.recv_batch_from(|datagram, t| session.handle_datagram(t, datagram))
    }

    fn send_nack(&self, nack: &[u8]) -> Result<usize, i32> {
        DatagramIn::send_nack(self, nack)
    }

    fn wait_fd(&self) -> Option<i32> {
        DatagramIn::wait_fd(self)
    }

    fn rejected(&self) -> u64 {
        DatagramIn::rejected(self)
    }
}

impl DatagramIn for UdpReceiver {
    #[inline]
    fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, f: F) -> Result<usize, i32> {
        UdpReceiver::recv_batch(self, f)
    }

    #[inline]
    fn recv_batch_from<F: FnMut(&[u8], u64) -> bool>(&mut self, f: F) -> Result<usize, i32> {
        UdpReceiver::recv_batch_from(self, f)
    }

    fn send_nack(&self, nack: &[u8]) -> Result<usize, i32> {
        UdpReceiver::send_nack(self, nack)
    }

    fn wait_fd(&self) -> Option<i32> {
        Some(UdpReceiver::fd(self))
    }
}

/// Datagrams one `recv_batch` call takes at most.
pub const BATCH: usize = 32;
const CMSG_SPACE: usize = 64;

/// The receiving socket with its preallocated slots.
pub struct UdpReceiver {
    sock: UdpSocket,
    slot: usize,
    bufs: Vec<u8>,
    control: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    source: Option<(libc::sockaddr_storage, libc::socklen_t)>,
    /// Tests only: datagrams dropped on arrival, as a lossy link would lose them.
    fault: FaultInjector,
}

// SAFETY: the raw pointers inside `iov` and `msgs` point into `bufs`, `control`, `names` and
// `iov`,
// heap buffers owned by the same struct that never move or reallocate after `bind`; moving the
// struct to another thread moves their ownership with it.
unsafe impl Send for UdpReceiver {}

impl UdpReceiver {
    /// Binds `addr` (`host:port`, e.g. `0.0.0.0:46000` or `[::]:46000`) with a receive buffer
    /// of `rcvbuf` bytes and kernel arrival timestamps.
    pub fn bind(addr: &str, rcvbuf: usize) -> io::Result<UdpReceiver> {
        Self::bind_with_slots(addr, rcvbuf, MAX_PACKET_LEN)
    }

    /// [`bind`](Self::bind) with receive slots of `slot` bytes: longer datagrams are cut to
    /// `slot` bytes (RTP senders such as ffmpeg send up to 1472 bytes).
    pub fn bind_with_slots(addr: &str, rcvbuf: usize, slot: usize) -> io::Result<UdpReceiver> {
        let local = resolve(addr)?;
        let sock = UdpSocket::bind(local).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {local}: {e} (is another receiver running?)"),
            )
        })?;
        // Without kernel timestamps (some emulators refuse them) arrival times fall back to
        // when the batch is read: coarser, still correct on average.
        match enable_timestamps(&sock) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                log::warn!("no kernel arrival timestamps on this system ({e}); using read times");
            }
            r => r?,
        }
        SockRef::from(&sock).set_recv_buffer_size(rcvbuf)?;
        let mut r = UdpReceiver {
            sock,
            slot,
            bufs: vec![0; BATCH * slot],
            control: vec![0; BATCH * CMSG_SPACE],
            // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
            names: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iov: Vec::with_capacity(BATCH),
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            source: None,
            fault: FaultInjector::off(),
        };
        for i in 0..BATCH {
            r.iov.push(libc::iovec {
                // SAFETY: offset within `bufs`, which holds BATCH slots.
                iov_base: unsafe { r.bufs.as_mut_ptr().add(i * slot) }.cast(),
                iov_len: slot,
            });
        }
        Ok(r)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Drops every `n`-th datagram on arrival, before the receiver sees it (tests: a lossy
    /// link in front of this receiver alone, `NETAUDIO_TEST_FAULT=rx-drop-every=N`).
    pub fn drop_every(&mut self, n: u32) {
        self.fault = FaultInjector::drop_every(n);
    }

    /// Datagrams dropped by [`drop_every`](Self::drop_every) so far.
    pub fn dropped(&self) -> u64 {
        self.fault.dropped()
    }

    /// The file descriptor (to poll on).
    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Takes every datagram waiting (up to [`BATCH`]) with one `recvmmsg`, calling
    /// `f(datagram, arrival_ns)` for each, the arrival time on `CLOCK_MONOTONIC`.
    /// Returns how many, 0 when none was waiting.
    pub fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, mut f: F) -> Result<usize, i32> {
        self.recv_batch_from(|d, t| {
            f(d, t);
            false
        })
    }

    /// Like [`recv_batch`](Self::recv_batch); when `f` returns true the datagram's source
    /// becomes where [`send_nack`](Self::send_nack) sends (the stream being played).
    pub fn recv_batch_from<F: FnMut(&[u8], u64) -> bool>(
        &mut self,
        mut f: F,
    ) -> Result<usize, i32> {
        let ctl = self.control.as_mut_ptr();
        let iov = self.iov.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        for (i, m) in self.msgs.iter_mut().enumerate() {
            // SAFETY: offsets within `iov` (BATCH entries) and `control` (BATCH slots).
            m.msg_hdr.msg_iov = unsafe { iov.add(i) };
            m.msg_hdr.msg_iovlen = 1;
            // SAFETY: as above.
            m.msg_hdr.msg_control = unsafe { ctl.add(i * CMSG_SPACE) }.cast();
            m.msg_hdr.msg_controllen = CMSG_SPACE as _;
            // SAFETY: offset within `names` (BATCH entries).
            m.msg_hdr.msg_name = unsafe { names.add(i) }.cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_len = 0;
        }
        // By hand on purpose: no crate offers what the receiver's realtime thread needs here,
        // one `recvmmsg` into slots and control buffers preallocated at start-up, with each
        // datagram's arrival stamp read in place. socket2 has no `recvmmsg`; nix's decodes
        // control messages into owned values, allocating for any kind it does not know.
        // SAFETY: `msgs` holds BATCH headers whose iovecs and control buffers point into
        // buffers owned by `self`, all live and writable for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = errno();
            return if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        // Offset between the kernel's CLOCK_REALTIME stamps and CLOCK_MONOTONIC, now.
        let clock = StampClock::now();
        for i in 0..n {
            let len = self.msgs[i].msg_len as usize;
            // SAFETY: the kernel filled this header; its control buffer is in `self.control`.
            let t = clock.monotonic(unsafe { arrival_stamp(&self.msgs[i].msg_hdr) });
            if self.fault.drops() {
                continue;
            }
            let base = i * self.slot;
            if f(&self.bufs[base..base + len.min(self.slot)], t) {
                self.source = Some((self.names[i], self.msgs[i].msg_hdr.msg_namelen));
            }
        }
        Ok(n)
    }

    /// Whether a stream's source is known (NACKs have somewhere to go).
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// Sends `nack` to the stream's source with one non-blocking `sendto`; the bytes sent or
    /// an errno (`ENOTCONN` while no stream's source is known).
    pub fn send_nack(&self, nack: &[u8]) -> Result<usize, i32> {
        let Some((addr, len)) = self.source.as_ref() else {
            return Err(libc::ENOTCONN);
        };
        // SAFETY: `nack` is a live readable slice and `addr` a live address of `len` bytes
        // as the kernel filled it in.
        syscall_len(unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                nack.as_ptr().cast(),
                nack.len(),
                libc::MSG_DONTWAIT,
                (addr as *const libc::sockaddr_storage).cast(),
                *len,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_write_arrives_as_one_datagram_with_a_timestamp() {
        let mut rx = UdpReceiver::bind("127.0.0.1:0", 1 << 20).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSender::connect(&format!("127.0.0.1:{port}"), Some(46)).unwrap();
        let before = monotonic_ns();
        let payload: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        for k in 0..3u8 {
            assert_eq!(tx.send_gather(&[k; 32], &payload), Ok(1032));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut got = Vec::new();
        let n = rx.recv_batch(|d, t| got.push((d.to_vec(), t))).unwrap();
        assert_eq!(n, 3);
        for (k, (d, t)) in got.iter().enumerate() {
            assert_eq!(&d[..32], &[k as u8; 32]);
            assert_eq!(&d[32..], &payload[..]);
            assert!(
                *t >= before && *t <= monotonic_ns(),
                "arrival time on the monotonic clock"
            );
        }
        assert_eq!(rx.recv_batch(|_, _| {}), Ok(0), "non-blocking when empty");
    }

    #[test]
    fn tagged_write_arrives_as_one_datagram() {
        let mut rx = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSender::connect(&format!("127.0.0.1:{port}"), None).unwrap();
        assert_eq!(tx.send_tagged(b"head", b"payload", b"tag"), Ok(14));
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut got = Vec::new();
        rx.recv_batch(|d, _| got.push(d.to_vec())).unwrap();
        assert_eq!(got, vec![b"headpayloadtag".to_vec()]);
    }

    #[test]
    fn nacks_go_back_to_the_source_and_the_sender_reads_them() {
        let mut rx = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSender::connect(&format!("127.0.0.1:{port}"), None).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(tx.recv_nack(&mut buf), None, "nothing waiting");
        assert_eq!(rx.send_nack(b"x"), Err(libc::ENOTCONN), "no source yet");
        tx.send_gather(b"hdr", b"payload").unwrap();
        assert!(wait_readable(rx.fd(), 1_000_000_000));
        rx.recv_batch_from(|_, _| true).unwrap();
        assert!(rx.has_source());
        assert_eq!(rx.send_nack(b"NKnack"), Ok(6));
        assert!(wait_readable(tx.fd().unwrap(), 1_000_000_000));
        assert_eq!(tx.recv_nack(&mut buf), Some(6));
        assert_eq!(&buf[..6], b"NKnack");
    }

    #[test]
    fn ipv6_loopback_works() {
        let Ok(mut rx) = UdpReceiver::bind("[::1]:0", 1 << 16) else {
            return; // no IPv6 on this host
        };
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSender::connect(&format!("[::1]:{port}"), None).unwrap();
        tx.send_gather(b"hdr", b"payload").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut n = 0;
        rx.recv_batch(|d, _| {
            assert_eq!(d, b"hdrpayload");
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn larger_slots_take_datagrams_above_max_packet_len_whole() {
        let mut rx = UdpReceiver::bind_with_slots("127.0.0.1:0", 1 << 20, 2049).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSender::connect(&format!("127.0.0.1:{port}"), None).unwrap();
        let payload = vec![7u8; 1460];
        tx.send_gather(&[1; 12], &payload).unwrap();
        tx.send_gather(&[2; 12], &payload).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut lens = Vec::new();
        rx.recv_batch(|d, _| lens.push((d[0], d.len()))).unwrap();
        assert_eq!(lens, vec![(1, 1472), (2, 1472)]);
    }

    #[test]
    fn bad_destinations_are_named() {
        let e = UdpSender::connect("no-port-here", None).err().unwrap();
        assert!(e.to_string().contains("no-port-here"), "{e}");
    }
}
