//! A sender's destination given by name, followed: the sender's UDP socket is opened for it,
//! connected at once when the name resolves at start and unconnected otherwise (the sender
//! captures and runs meanwhile; its sends fail and are counted), and a housekeeping thread
//! keeps resolving the name: with back-off (1 s doubling to 30 s) until it first resolves,
//! then every 30 s, and soon after a send fails. When the answer changes, the thread
//! `connect()`s its clone of the socket to the new address: the kernel swaps the peer
//! atomically for the realtime thread sending on the other handle.
//!
//! A name that does not resolve at start is logged once, and once again when it resolves;
//! a move is logged once per move.
//!
//! Realtime contract: nothing here runs on the realtime thread. The realtime thread's only part
//! is the relaxed store of [`UdpSender::failure_flag`] when a send fails; the follower reads
//! and clears it.

use super::dest::{Dest, Resolver};
use crate::housekeeping::STOP;
use crate::net::{UdpSender, reconnect};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When the follower resolves again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// After a resolved name, the next check.
    pub refresh: Duration,
    /// The first retry of a name that does not resolve; doubled after each failure...
    pub backoff_min: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// A failed send makes the follower resolve again, but not more often than this.
    pub after_error: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            refresh: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            after_error: Duration::from_secs(5),
        }
    }
}

/// The thread that follows a destination's name; it ends with the daemon (`STOP`) or when
/// dropped.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A lookup in progress (DNS, a few seconds of mDNS at most) is not waited for.
        drop(self.thread.take());
    }
}

/// The sender's socket for `dest`, and the thread following it when it is a name. With
/// `wait_for_peer` false (RTP: its SDP names the destination), a name must resolve at start.
pub fn open(
    dest: &str,
    dscp: Option<u8>,
    wait_for_peer: bool,
) -> Result<(UdpSender, Option<Follower>), String> {
    let mut dest = Dest::parse(dest)?;
    let mut resolver = Resolver::default();
    let first = match &dest {
        Dest::Addr(a) => {
            let s = UdpSender::connect_addr(*a, dscp).map_err(|e| format!("{a}: {e}"))?;
            return Ok((s, None));
        }
        Dest::Auto => {
            let (name, a) = resolver.pick_auto()?;
            log::info!("dest = auto: the one receiver announced is {name:?}, at {a}");
            dest = Dest::Instance(name);
            Ok(a)
        }
        d => resolver.resolve(d),
    };
    let sock = match &first {
        Ok(a) => {
            log::info!("{dest} is at {a}");
            UdpSender::connect_addr(*a, dscp).map_err(|e| format!("{dest} ({a}): {e}"))?
        }
        Err(e) if wait_for_peer => {
            log::warn!(
                "{e}: capturing meanwhile and retrying in the background; sends fail (counted) until {dest} resolves"
            );
            UdpSender::unconnected(dscp).map_err(|e| format!("cannot open a UDP socket: {e}"))?
        }
        Err(e) => return Err(e.clone()),
    };
    let clone = sock
        .try_clone_socket()
        .map_err(|e| format!("cannot clone the UDP socket: {e}"))?;
    let shown = dest.to_string();
    let follower = spawn(
        clone,
        first.ok(),
        sock.failure_flag(),
        Timing::default(),
        shown,
        move || resolver.resolve(&dest),
    )?;
    Ok((sock, Some(follower)))
}

/// Starts following: `resolve` says where the destination (shown as `shown`) is now; `current`
/// is where `sock` is connected, if anywhere.
pub fn spawn(
    sock: UdpSocket,
    current: Option<SocketAddr>,
    failed: Arc<AtomicBool>,
    timing: Timing,
    shown: String,
    mut resolve: impl FnMut() -> Result<SocketAddr, String> + Send + 'static,
) -> Result<Follower, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("na-resolve".into())
        .spawn(move || {
            let mut current = current;
            let mut backoff = timing.backoff_min;
            let mut last = Instant::now();
            let mut next = last
                + if current.is_some() {
                    timing.refresh
                } else {
                    backoff
                };
            while !stopped.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let now = Instant::now();
                let error = failed.load(Ordering::Relaxed) && now >= last + timing.after_error;
                if now < next && !error {
                    continue;
                }
                failed.store(false, Ordering::Relaxed);
                last = now;
                match resolve() {
                    Ok(a) if Some(a) == current => next = now + timing.refresh,
                    Ok(a) => match reconnect(&sock, a) {
                        Ok(()) => {
                            match current {
                                None => log::info!("{shown} resolves now, to {a}: sending there"),
                                Some(old) => log::info!("{shown} moved to {a} (was {old})"),
                            }
                            current = Some(a);
                            backoff = timing.backoff_min;
                            next = now + timing.refresh;
                        }
                        Err(e) => {
                            log::debug!("cannot send to {a} ({shown}): {e}");
                            next = now + backoff;
                            backoff = (backoff * 2).min(timing.backoff_max);
                        }
                    },
                    Err(e) => {
                        log::debug!("{shown}: {e}");
                        if current.is_some() {
                            // Keep sending where it was: the name may be back soon.
                            next = now + timing.refresh.min(timing.backoff_max);
                        } else {
                            next = now + backoff;
                            backoff = (backoff * 2).min(timing.backoff_max);
                        }
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
    Ok(Follower {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{UdpReceiver, wait_readable};
    use std::sync::Mutex;

    fn fast() -> Timing {
        Timing {
            refresh: Duration::from_millis(100),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            after_error: Duration::from_millis(10),
        }
    }

    /// Sends until `rx` receives one datagram, within a deadline.
    fn sends_reach(tx: &UdpSender, rx: &mut UdpReceiver) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let _ = tx.send_gather(b"hdr", b"payload");
            if wait_readable(rx.fd(), 20_000_000) && rx.recv_batch(|_, _| {}).unwrap_or(0) > 0 {
                return true;
            }
        }
        false
    }

    #[test]
    fn an_unresolved_name_is_retried_then_followed_when_it_moves() {
        let mut a = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let mut b = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let answer: Arc<Mutex<Result<SocketAddr, String>>> =
            Arc::new(Mutex::new(Err("not yet".into())));
        let tx = UdpSender::unconnected(Some(46)).unwrap();
        assert!(
            tx.send_gather(b"h", b"p").is_err(),
            "no peer yet: the send fails"
        );
        assert!(tx.failure_flag().load(Ordering::Relaxed), "and says so");
        let asked = answer.clone();
        let _f = spawn(
            tx.try_clone_socket().unwrap(),
            None,
            tx.failure_flag(),
            fast(),
            "test".into(),
            move || asked.lock().unwrap().clone(),
        )
        .unwrap();
        *answer.lock().unwrap() = Ok(a.local_addr().unwrap());
        assert!(sends_reach(&tx, &mut a), "the name resolved: sends arrive");
        *answer.lock().unwrap() = Ok(b.local_addr().unwrap());
        assert!(sends_reach(&tx, &mut b), "the receiver moved: followed");
    }

    #[test]
    fn a_failed_send_makes_the_follower_look_again_before_its_refresh() {
        let mut a = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let gone = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let tx = UdpSender::connect_addr(gone_addr, None).unwrap();
        let answer: Arc<Mutex<Result<SocketAddr, String>>> = Arc::new(Mutex::new(Ok(gone_addr)));
        let asked = answer.clone();
        let timing = Timing {
            refresh: Duration::from_secs(3600),
            ..fast()
        };
        let _f = spawn(
            tx.try_clone_socket().unwrap(),
            Some(gone_addr),
            tx.failure_flag(),
            timing,
            "test".into(),
            move || asked.lock().unwrap().clone(),
        )
        .unwrap();
        *answer.lock().unwrap() = Ok(a.local_addr().unwrap());
        // Nobody listens at the old address: the refusals raise the flag, the follower
        // resolves again long before its hour is up.
        assert!(sends_reach(&tx, &mut a), "followed after send errors");
    }
}
