//! What the sockets share with the operating system: name resolution, socket options set at
//! start-up, `errno`, the kernel's arrival stamps in control messages, and the clocks.
//!
//! Realtime contract: `resolve` and the option setters run at start-up only; `errno`,
//! `arrival_stamp`, `StampClock`, `clock_ns` and `monotonic_ns` make no syscall (vDSO clock
//! reads) and never allocate; `wait_readable` is one `ppoll`.

use socket2::SockRef;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};

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

/// Sets the DSCP bits (e.g. 46, expedited forwarding) on a socket: `IP_TOS`, or
/// `IPV6_TCLASS` for IPv6.
pub(crate) fn set_dscp(sock: &impl AsFd, v6: bool, dscp: u8) -> io::Result<()> {
    let sock = SockRef::from(sock);
    let tos = u32::from(dscp) << 2;
    if v6 {
        sock.set_tclass_v6(tos)
    } else {
        sock.set_tos_v4(tos)
    }
}

/// Asks the kernel for the arrival time of what a socket receives (`SO_TIMESTAMPNS`: a control
/// message on each datagram or read, see [`arrival_stamp`]). By hand: `socket2` has no setter
/// for it.
pub(crate) fn enable_timestamps(sock: &impl AsFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's `errno` after a failed syscall (`EIO` if there is none). Realtime-safe:
/// reads a thread-local, allocates nothing.
#[inline]
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A byte count returned by a syscall: the count, or the `errno` when negative.
#[inline]
pub(crate) fn syscall_len(n: isize) -> Result<usize, i32> {
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// The kernel's arrival stamp (`SCM_TIMESTAMPNS`, nanoseconds on `CLOCK_REALTIME`) among the
/// control messages of a received message, if it carries one.
///
/// # Safety
///
/// `msg` is a header the kernel filled in (`recvmsg`, `recvmmsg`): its `msg_control` points at
/// a live buffer of at least `msg_controllen` bytes.
pub(crate) unsafe fn arrival_stamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: per the contract, `msg_control` points at a live buffer of `msg_controllen`
    // bytes, which CMSG_FIRSTHDR only reads the bounds of.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies inside the buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: the data of an SCM_TIMESTAMPNS message is one timespec, inside the
            // buffer; CMSG_DATA only computes its address.
            let data = unsafe { libc::CMSG_DATA(c) } as *const libc::timespec;
            // SAFETY: as above; the kernel does not align it, hence the unaligned read.
            let ts = unsafe { std::ptr::read_unaligned(data) };
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        // SAFETY: `c` is a header inside the buffer; CMSG_NXTHDR stays within
        // `msg_controllen` and returns null past the last one.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// `CLOCK_MONOTONIC` and `CLOCK_REALTIME` read together: turns the kernel's arrival stamps
/// (realtime) into times on the monotonic clock the playback clock is compared with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StampClock {
    mono: u64,
    real: u64,
}

impl StampClock {
    /// Both clocks, now.
    #[inline]
    pub(crate) fn now() -> StampClock {
        StampClock {
            mono: clock_ns(libc::CLOCK_MONOTONIC),
            real: clock_ns(libc::CLOCK_REALTIME),
        }
    }

    /// The arrival time on `CLOCK_MONOTONIC` of what the kernel stamped `stamp` ([`arrival_stamp`]);
    /// now when there is no stamp; never later than now.
    #[inline]
    pub(crate) fn monotonic(&self, stamp: Option<u64>) -> u64 {
        let mono = self.mono as i128;
        stamp.map_or(mono, |s| {
            (s as i128 - self.real as i128 + mono).clamp(0, mono)
        }) as u64
    }
}

/// Waits up to `timeout_ns` for `fd` to become readable (one `ppoll`); whether it is.
pub fn wait_readable(fd: i32, timeout_ns: u64) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: one live pollfd and a live timespec for the duration of the call; no sigmask.
    let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    r > 0 && pfd.revents & libc::POLLIN != 0
}

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
