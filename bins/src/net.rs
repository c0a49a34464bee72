//! UDP sockets for the realtime threads.
//!
//! * [`UdpSender::send_gather`]: one `sendmsg` with two iovecs — the packet header on the
//!   caller's stack and the payload slice, which is the capture device's own (mmap) buffer. The
//!   kernel copies straight from there into the socket buffer: no copy in user space.
//! * [`UdpReceiver::recv_batch`]: one non-blocking `recvmmsg` into slots preallocated at
//!   start-up, each with the kernel's arrival timestamp (`SO_TIMESTAMPNS`), converted to
//!   `CLOCK_MONOTONIC` so it compares with the playback clock.
//!
//! Realtime contract: `connect`/`bind` resolve names and allocate; `send_gather` and
//! `recv_batch` make exactly one syscall each, never block (`MSG_DONTWAIT`) and never allocate.

use engine::wire::MAX_PACKET_LEN;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;

/// Resolves `host:port` through the system resolver (so `turntable2.local` works with
/// mDNS), IPv4 or IPv6. Not for realtime threads.
pub fn resolve(dest: &str) -> io::Result<SocketAddr> {
    let mut addrs = dest.to_socket_addrs().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot resolve {dest:?}: {e} (give host:port, e.g. turntable2.local:46000)"),
        )
    })?;
    addrs.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{dest:?} resolves to no address"),
        )
    })
}

/// Sets the DSCP bits (e.g. 46, expedited forwarding) on a socket.
fn set_dscp(sock: &UdpSocket, v6: bool, dscp: u8) -> io::Result<()> {
    let tos: libc::c_int = (dscp as libc::c_int) << 2;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&tos as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Where the sender's packets go: one datagram per call, header and payload gathered.
pub trait DatagramOut {
    /// Sends `header` followed by `payload` as one datagram; the bytes sent or an errno.
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32>;
}

impl DatagramOut for UdpSender {
    #[inline]
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        UdpSender::send_gather(self, header, payload)
    }
}

/// The sending socket, connected to one destination.
pub struct UdpSender {
    sock: UdpSocket,
    peer: SocketAddr,
}

impl UdpSender {
    /// Resolves `dest` (`host:port`) and connects a UDP socket to it, with `dscp` if given.
    pub fn connect(dest: &str, dscp: Option<u8>) -> io::Result<UdpSender> {
        let peer = resolve(dest)?;
        let bind: SocketAddr = if peer.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(peer)?;
        if let Some(d) = dscp {
            set_dscp(&sock, peer.is_ipv6(), d)?;
        }
        Ok(UdpSender { sock, peer })
    }

    /// Where packets go.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The local address packets leave from (the route to the peer).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends `header` and `payload` as one datagram with one `sendmsg` (gather write).
    /// Returns the bytes sent, or the errno (`EAGAIN` when the socket buffer is full,
    /// `ECONNREFUSED` while nobody listens — both harmless for a datagram stream).
    #[inline]
    pub fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        let mut iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: `msg` points at two iovecs that describe live, readable slices for the
        // duration of the call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(n as usize)
        }
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
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iov` and `msgs` point into `bufs`, `control` and `iov`,
// heap buffers owned by the same struct that never move or reallocate after `bind`; moving the
// struct to another thread moves their ownership with it.
unsafe impl Send for UdpReceiver {}

/// Reads a clock in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC` now, nanoseconds: the time base every driver passes to the engine.
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

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
        let one: libc::c_int = 1;
        let size: libc::c_int = rcvbuf.min(i32::MAX as usize) as libc::c_int;
        for (name, v) in [(libc::SO_TIMESTAMPNS, one), (libc::SO_RCVBUF, size)] {
            // SAFETY: setsockopt reads one c_int from a live local.
            let r = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    name,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                // Without kernel timestamps (some emulators refuse them) arrival times fall
                // back to when the batch is read: coarser, still correct on average.
                if name == libc::SO_TIMESTAMPNS && e.raw_os_error() == Some(libc::ENOPROTOOPT) {
                    log::warn!(
                        "no kernel arrival timestamps on this system ({e}); using read times"
                    );
                    continue;
                }
                return Err(e);
            }
        }
        let mut r = UdpReceiver {
            sock,
            slot,
            bufs: vec![0; BATCH * slot],
            control: vec![0; BATCH * CMSG_SPACE],
            iov: Vec::with_capacity(BATCH),
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
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

    /// The file descriptor (to poll on).
    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Takes every datagram waiting (up to [`BATCH`]) with one `recvmmsg`, calling
    /// `f(datagram, arrival_ns)` for each, the arrival time on `CLOCK_MONOTONIC`.
    /// Returns how many, 0 when none was waiting.
    pub fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, mut f: F) -> Result<usize, i32> {
        let ctl = self.control.as_mut_ptr();
        let iov = self.iov.as_mut_ptr();
        for (i, m) in self.msgs.iter_mut().enumerate() {
            // SAFETY: offsets within `iov` (BATCH entries) and `control` (BATCH slots).
            m.msg_hdr.msg_iov = unsafe { iov.add(i) };
            m.msg_hdr.msg_iovlen = 1;
            // SAFETY: as above.
            m.msg_hdr.msg_control = unsafe { ctl.add(i * CMSG_SPACE) }.cast();
            m.msg_hdr.msg_controllen = CMSG_SPACE as _;
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_len = 0;
        }
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
            let e = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        // Offset between the kernel's CLOCK_REALTIME stamps and CLOCK_MONOTONIC, now.
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as i128;
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        for i in 0..n {
            let len = self.msgs[i].msg_len as usize;
            let stamp = self.arrival_realtime(i).map(|t| t as i128 - real + mono);
            let t = stamp.map_or(mono, |s| s.clamp(0, mono)) as u64;
            let base = i * self.slot;
            f(&self.bufs[base..base + len.min(self.slot)], t);
        }
        Ok(n)
    }

    fn arrival_realtime(&self, i: usize) -> Option<u64> {
        let hdr = &self.msgs[i].msg_hdr;
        // SAFETY: the kernel filled `hdr`'s control buffer; the CMSG macros walk it within
        // `msg_controllen`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
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
