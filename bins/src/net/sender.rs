//! The sender's UDP socket, to one receiver or to many.
//!
//! * One receiver: the socket is *connected* to it. Each packet is one `sendmsg` gathering the
//!   header, the payload (the capture device's own buffer) and the tag; NACKs come back on the
//!   same socket (the kernel only lets the peer's datagrams in) and repairs go where packets
//!   go. A destination given by name is followed by `connect()`ing a clone of the socket to
//!   its new address ([`reconnect`], `discovery::follow`), and a refusal (ICMP port
//!   unreachable) shows as a failed send.
//! * Many receivers ([`UdpSender::fanout`]): a multicast group, or a list of unicast
//!   receivers. The socket is *unconnected*, so NACKs from any receiver come in; each packet
//!   names its destination. A group is one `sendmsg` with the group's address; a list is one
//!   `sendmmsg` whose messages share the packet's iovecs and differ only in their address: one
//!   system call per packet whatever the number of receivers (rather than one `sendmsg` per
//!   receiver: the receivers of one packet cost one kernel entry, and the packet's bytes are
//!   still gathered from where they are, never copied in user space). Each NACK is read with
//!   its source ([`DatagramOut::recv_nack_from`]) and its repairs go back to that receiver
//!   alone ([`DatagramOut::send_repair`], one `sendto`): the others are not flooded with
//!   packets they already have.
//!
//! Realtime contract: the constructors resolve, bind and set options (start-up only);
//! `send_gather`, `send_tagged`, `recv_nack`, `recv_nack_from` and `send_repair` make one
//! syscall each (a list: one `sendmmsg`, and one more per receiver that refused the packet,
//! at most one per receiver), never block (`MSG_DONTWAIT`) and never allocate: the message
//! headers of a `sendmmsg` are on the stack ([`MAX_RECEIVERS`] of them).

use super::DatagramOut;
use super::multicast::{MulticastOptions, set_sender_options};
use super::sys::{arrival_stamp, enable_timestamps, errno, resolve, set_dscp, syscall_len};
use socket2::SockAddr;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Unicast receivers a list can name at most (a multicast group serves any number).
pub const MAX_RECEIVERS: usize = 16;

/// The sending socket: connected to one destination (or not yet: see
/// [`unconnected`](Self::unconnected)), or unconnected and sending to each of several
/// ([`fanout`](Self::fanout)).
pub struct UdpSender {
    sock: UdpSocket,
    peer: SocketAddr,
    /// Unconnected: every packet goes to each of these (a multicast group, or the receivers of
    /// a list); empty for a connected socket.
    fanout: Box<[SockAddr]>,
    /// Unconnected: the address packets leave from, as the route to the first destination
    /// gives it (an unconnected socket's own is the wildcard).
    source: Option<std::net::IpAddr>,
    /// A refusal (ICMP port unreachable) that reading NACKs took off the socket: the next
    /// send reports it, so a peer that is not listening is still counted in `send_errors`.
    refused: std::sync::atomic::AtomicBool,
    /// Raised by a failed send (not a full socket buffer): whoever follows the destination's
    /// name resolves it again (see [`failure_flag`](Self::failure_flag)).
    failed: Arc<AtomicBool>,
}

fn any_addr(v6: bool) -> SocketAddr {
    if v6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    }
}

impl UdpSender {
    /// Resolves `dest` (`host:port`) and connects a UDP socket to it, with `dscp` if given.
    pub fn connect(dest: &str, dscp: Option<u8>) -> io::Result<UdpSender> {
        Self::connect_addr(resolve(dest)?, dscp)
    }

    /// Connects a UDP socket to `peer`, with `dscp` if given.
    pub fn connect_addr(peer: SocketAddr, dscp: Option<u8>) -> io::Result<UdpSender> {
        let sock = UdpSocket::bind(any_addr(peer.is_ipv6()))?;
        sock.connect(peer)?;
        if let Some(d) = dscp {
            set_dscp(&sock, peer.is_ipv6(), d)?;
        }
        Ok(UdpSender {
            sock,
            peer,
            fanout: Box::new([]),
            source: None,
            refused: Default::default(),
            failed: Default::default(),
        })
    }

    /// An unconnected socket sending every packet to each of `dests`: a multicast group (one
    /// address; `mcast` sets its hop limit and outgoing interface, and loops packets back to
    /// this host's own members), or up to [`MAX_RECEIVERS`] unicast receivers, all IPv4 or
    /// all IPv6. NACKs are taken from any of them.
    pub fn fanout(
        dests: &[SocketAddr],
        dscp: Option<u8>,
        mcast: &MulticastOptions,
    ) -> Result<UdpSender, String> {
        let first = *dests
            .first()
            .ok_or("no destination (--dest / network.dest)")?;
        if dests.len() > MAX_RECEIVERS {
            return Err(format!(
                "{} receivers in --dest / network.dest: at most {MAX_RECEIVERS} in a list; \
                 send to a multicast group (e.g. 239.255.46.1:46000) for more",
                dests.len()
            ));
        }
        let v6 = first.is_ipv6();
        if let Some(other) = dests.iter().find(|d| d.is_ipv6() != v6) {
            return Err(format!(
                "--dest / network.dest mixes IPv4 ({}) and IPv6 ({}): give every receiver of a \
                 list in one family",
                if v6 { other } else { &first },
                if v6 { &first } else { other }
            ));
        }
        if dests.len() > 1
            && let Some(g) = dests.iter().find(|d| d.ip().is_multicast())
        {
            return Err(format!(
                "{g} is a multicast group in a list of receivers: give the group alone (every \
                 receiver joins it), or a list of unicast receivers"
            ));
        }
        let sock =
            UdpSocket::bind(any_addr(v6)).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        if let Some(d) = dscp {
            set_dscp(&sock, v6, d).map_err(|e| format!("cannot set DSCP {d}: {e}"))?;
        }
        if first.ip().is_multicast() {
            set_sender_options(&sock, first.ip(), mcast)?;
        }
        // The source address the route gives (what an SDP or a status names as the sender).
        let probe = || -> Result<std::net::IpAddr, String> {
            let p = UdpSocket::bind(any_addr(v6)).map_err(|e| e.to_string())?;
            if first.ip().is_multicast() {
                set_sender_options(&p, first.ip(), mcast)?;
            }
            p.connect(first).map_err(|e| e.to_string())?;
            Ok(p.local_addr().map_err(|e| e.to_string())?.ip())
        };
        let source = probe().map_err(|e| format!("cannot send to {first}: {e}"))?;
        Ok(UdpSender {
            sock,
            peer: first,
            fanout: dests.iter().map(|d| SockAddr::from(*d)).collect(),
            source: Some(source),
            refused: Default::default(),
            failed: Default::default(),
        })
    }

    /// A socket with no destination yet (its name does not resolve yet): IPv6 that also
    /// reaches IPv4 (mapped) addresses, or IPv4 where the system has no IPv6. Sends fail
    /// (`EDESTADDRREQ`, counted) until [`reconnect`] gives it a peer.
    pub fn unconnected(dscp: Option<u8>) -> io::Result<UdpSender> {
        use socket2::{Domain, Socket, Type};
        let dual = Socket::new(Domain::IPV6, Type::DGRAM, None).and_then(|s| {
            s.set_only_v6(false)?;
            s.bind(&any_addr(true).into())?;
            Ok(s)
        });
        let (sock, v6) = match dual {
            Ok(s) => (UdpSocket::from(s), true),
            Err(_) => (UdpSocket::bind(any_addr(false))?, false),
        };
        if let Some(d) = dscp {
            set_dscp(&sock, v6, d)?;
            if v6 {
                // IPv4 packets of a dual-stack socket take their DSCP from IP_TOS.
                set_dscp(&sock, false, d)?;
            }
        }
        // The kernel's arrival time of what comes back (time requests are answered with it);
        // without it the time is read on waking, which only adds to the exchange's noise.
        let _ = enable_timestamps(&sock);
        let peer = sock.local_addr()?;
        Ok(UdpSender {
            sock,
            peer: SocketAddr::new(peer.ip(), 0),
            fanout: Box::new([]),
            source: None,
            refused: Default::default(),
            failed: Default::default(),
        })
    }

    /// Where packets went when the socket was made (unspecified, port 0, while unconnected;
    /// [`reconnect`] may have moved it since); the group, or the first receiver of a list.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether packets go to several receivers (a group or a list), on an unconnected socket.
    pub fn fans_out(&self) -> bool {
        !self.fanout.is_empty()
    }

    /// Where every packet goes, when it [fans out](Self::fans_out).
    pub fn destinations(&self) -> Vec<SocketAddr> {
        self.fanout.iter().filter_map(SockAddr::as_socket).collect()
    }

    /// A second handle on the same socket, for [`reconnect`] from another thread.
    pub fn try_clone_socket(&self) -> io::Result<UdpSocket> {
        self.sock.try_clone()
    }

    /// The flag a failed send raises (a peer refusing, a network unreachable, no peer yet):
    /// the thread following the destination's name clears it and resolves the name again.
    pub fn failure_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// The local address packets leave from (the route to the peer, or to the first
    /// destination).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let local = self.sock.local_addr()?;
        Ok(match self.source {
            Some(ip) => SocketAddr::new(ip, local.port()),
            None => local,
        })
    }

    /// Sends `header` and `payload` as one datagram with one `sendmsg` (gather write).
    /// Returns the bytes sent, or the errno (`EAGAIN` when the socket buffer is full,
    /// `ECONNREFUSED` while nobody listens — both harmless for a datagram stream).
    #[inline]
    pub fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        self.send_tagged(header, payload, &[])
    }

    /// Sends `header`, `payload` and `tag` as one datagram with one `sendmsg` of three
    /// iovecs (two when the tag is empty); to several receivers, one `sendmmsg`. Errors as
    /// [`send_gather`](Self::send_gather); with several receivers, the first receiver's
    /// error, if any refused it.
    #[inline]
    pub fn send_tagged(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<usize, i32> {
        if self.refused.swap(false, Ordering::Relaxed) {
            self.failed.store(true, Ordering::Relaxed);
            return Err(libc::ECONNREFUSED);
        }
        let part = |b: &[u8]| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        let mut iov = [part(header), part(payload), part(tag)];
        let parts = if tag.is_empty() { 2 } else { 3 };
        let sent = if self.fanout.len() > 1 {
            self.send_each(&mut iov[..parts])
        } else {
            // SAFETY: an all-zero msghdr is valid (no name, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = parts as _;
            if let Some(to) = self.fanout.first() {
                // A multicast group: the socket is unconnected, the packet names it.
                msg.msg_name = to.as_ptr() as *mut libc::c_void;
                msg.msg_namelen = to.len();
            }
            // By hand on purpose: this is the capture thread's send, one `sendmsg` gathering
            // slices that are borrowed, not copied (the payload is the capture device's mmap
            // buffer), with MSG_DONTWAIT and the errno handed back as is. It allocates, locks
            // and formats nothing, and stays beside `recvmmsg` so the realtime data path reads
            // in one place.
            // SAFETY: `msg` points at `parts` iovecs that describe live, readable slices, and
            // at most at one address owned by `self`, for the duration of the call; the
            // kernel only reads them.
            syscall_len(unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT) })
        };
        if let Err(e) = sent
            && e != libc::EAGAIN
        {
            // One relaxed store: the follower of the destination's name looks at it.
            self.failed.store(true, Ordering::Relaxed);
        }
        sent
    }

    /// One datagram (`iov`) to each receiver of the list: one `sendmmsg` whose messages share
    /// the iovecs. A receiver the kernel refused ends the call early (its error is lost, as
    /// `sendmmsg` reports only the count): the call is made again from the next receiver, so
    /// each refusal costs one call more and the others still get the packet.
    fn send_each(&self, iov: &mut [libc::iovec]) -> Result<usize, i32> {
        let n = self.fanout.len().min(MAX_RECEIVERS);
        let bytes: usize = iov.iter().map(|v| v.iov_len).sum();
        // SAFETY: an all-zero mmsghdr is valid (no name, no iovecs, no control data).
        let mut msgs: [libc::mmsghdr; MAX_RECEIVERS] = unsafe { std::mem::zeroed() };
        for (m, to) in msgs.iter_mut().zip(self.fanout.iter()) {
            m.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = to.len();
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = iov.len() as _;
        }
        let mut first_error = None;
        let mut at = 0;
        while at < n {
            // SAFETY: `msgs[at..n]` are headers pointing at live addresses owned by `self` and
            // at `iov`, whose slices are live and readable for the call; the kernel only
            // reads them (and writes each header's `msg_len`).
            let r = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    msgs[at..n].as_mut_ptr(),
                    (n - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                // The receiver at `at` refused it: counted, and the rest still get it.
                first_error.get_or_insert(errno());
                at += 1;
            } else if r == 0 {
                break;
            } else {
                at += r as usize;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(bytes),
        }
    }
}

impl DatagramOut for UdpSender {
    #[inline]
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        UdpSender::send_gather(self, header, payload)
    }

    #[inline]
    fn send_tagged(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<usize, i32> {
        UdpSender::send_tagged(self, header, payload, tag)
    }

    fn recv_nack(&self, buf: &mut [u8]) -> Option<usize> {
        self.recv_nack_from(buf).map(|(n, _)| n)
    }

    fn recv_nack_from(&self, buf: &mut [u8]) -> Option<(usize, Option<SocketAddr>)> {
        self.recv_nack_stamped(buf).map(|(n, from, _)| (n, from))
    }

    fn recv_nack_stamped(
        &self,
        buf: &mut [u8],
    ) -> Option<(usize, Option<SocketAddr>, Option<u64>)> {
        // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // Room for one SCM_TIMESTAMPNS message (a timespec), 8-byte aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` refers to a live local or to `buf`, with its length,
        // for the duration of the call; the kernel writes within those lengths.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        // Errors mean nothing to take: EAGAIN, or ECONNREFUSED while nobody listens, which
        // the next send reports instead.
        if n < 0 {
            if errno() == libc::ECONNREFUSED {
                self.refused.store(true, Ordering::Relaxed);
            }
            return None;
        }
        // SAFETY: the kernel filled `msg` in; its control buffer is `control`, live.
        let stamp = unsafe { arrival_stamp(&msg) };
        // Connected: the peer's (repairs go where packets go). Unconnected: the receiver's.
        let source = if self.fans_out() {
            socket_addr(&from, msg.msg_namelen)
        } else {
            None
        };
        Some((n as usize, source, stamp))
    }

    fn send_repair(&self, to: Option<SocketAddr>, datagram: &[u8]) -> Result<usize, i32> {
        let Some(to) = to else {
            return UdpSender::send_gather(self, datagram, &[]);
        };
        let to = SockAddr::from(to);
        // SAFETY: `datagram` is a live readable slice and `to` a live address of `to.len()`
        // bytes, for the duration of the call.
        syscall_len(unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                libc::MSG_DONTWAIT,
                to.as_ptr().cast(),
                to.len(),
            )
        })
    }

    fn fd(&self) -> Option<i32> {
        Some(self.sock.as_raw_fd())
    }
}

/// The address the kernel wrote into `from` (`len` bytes), if IPv4 or IPv6; an IPv4 address
/// mapped into IPv6 is given as IPv4. No allocation.
fn socket_addr(from: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match from.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, of at least its size.
            let a =
                unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, of at least its size.
            let a =
                unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), port),
                None => SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, 0, a.sin6_scope_id)),
            })
        }
        _ => None,
    }
}

/// Points `sock` (a clone of a [`UdpSender`]'s socket) at `peer`: one `connect`, which the
/// kernel applies atomically for the thread sending on the other handle. An IPv4 `peer` of a
/// dual-stack IPv6 socket is given as its mapped address. Not for realtime threads.
pub fn reconnect(sock: &UdpSocket, peer: SocketAddr) -> io::Result<()> {
    let to = match (sock.local_addr()?, peer) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        (SocketAddr::V4(_), SocketAddr::V6(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{peer} is IPv6 and the socket IPv4 (the system has no IPv6)"),
            ));
        }
        _ => peer,
    };
    sock.connect(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{UdpReceiver, wait_readable};

    fn drain(rx: &mut UdpReceiver) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        assert!(wait_readable(rx.fd(), 1_000_000_000), "a datagram arrives");
        rx.recv_batch_from(|d, _| {
            got.push(d.to_vec());
            true
        })
        .unwrap();
        got
    }

    #[test]
    fn a_list_gets_every_packet_and_each_nack_is_answered_to_its_sender_alone() {
        let mut a = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let mut b = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let dests = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        let tx = UdpSender::fanout(&dests, None, &MulticastOptions::default()).unwrap();
        assert!(tx.fans_out());
        assert_eq!(tx.destinations(), dests.to_vec());
        assert_eq!(
            tx.local_addr().unwrap().ip(),
            dests[0].ip(),
            "the route's source"
        );
        assert_eq!(tx.send_tagged(b"head", b"payload", b"tag"), Ok(14));
        assert_eq!(drain(&mut a), vec![b"headpayloadtag".to_vec()]);
        assert_eq!(drain(&mut b), vec![b"headpayloadtag".to_vec()]);
        // B asks: the sender sees where from, and the repair goes to B only.
        assert_eq!(b.send_nack(b"NKfromB"), Ok(7));
        let mut buf = [0u8; 64];
        assert!(wait_readable(tx.fd().unwrap(), 1_000_000_000));
        let (n, from) = tx.recv_nack_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"NKfromB"[..], Some(dests[1])));
        assert_eq!(tx.send_repair(from, b"repair"), Ok(6));
        assert_eq!(drain(&mut b), vec![b"repair".to_vec()]);
        assert!(!wait_readable(a.fd(), 50_000_000), "A got no repair");
        assert_eq!(tx.recv_nack_from(&mut buf), None, "nothing more waiting");
    }

    #[test]
    fn a_list_that_mixes_families_or_is_too_long_is_refused_by_name() {
        let m = MulticastOptions::default();
        let v4: SocketAddr = "127.0.0.1:46000".parse().unwrap();
        let v6: SocketAddr = "[::1]:46000".parse().unwrap();
        let e = UdpSender::fanout(&[v4, v6], None, &m).err().unwrap();
        assert!(
            e.contains("mixes IPv4 (127.0.0.1:46000) and IPv6 ([::1]:46000)"),
            "{e}"
        );
        let many = vec![v4; MAX_RECEIVERS + 1];
        let e = UdpSender::fanout(&many, None, &m).err().unwrap();
        assert!(e.contains("multicast group"), "{e}");
        let g: SocketAddr = "239.255.46.1:46000".parse().unwrap();
        let e = UdpSender::fanout(&[v4, g], None, &m).err().unwrap();
        assert!(e.contains("239.255.46.1:46000 is a multicast group"), "{e}");
    }

    #[test]
    fn a_connected_sender_answers_nacks_where_packets_go() {
        let mut rx = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let tx = UdpSender::connect_addr(rx.local_addr().unwrap(), None).unwrap();
        assert!(!tx.fans_out());
        tx.send_gather(b"hdr", b"payload").unwrap();
        drain(&mut rx);
        rx.send_nack(b"NK").unwrap();
        assert!(wait_readable(tx.fd().unwrap(), 1_000_000_000));
        let mut buf = [0u8; 16];
        let (n, from) = tx.recv_nack_from(&mut buf).unwrap();
        assert_eq!((n, from), (2, None));
        assert_eq!(tx.send_repair(None, b"again"), Ok(5));
        assert_eq!(drain(&mut rx), vec![b"again".to_vec()]);
    }
}
