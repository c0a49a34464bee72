//! The announcer of `netaudio send --proto rtp`: the stream's SDP sent every
//! [`ANNOUNCE_INTERVAL`] to the SAP group, and a deletion when the sender stops.
//!
//! * Multicast leaves through the interface of the RTP stream (`IP_MULTICAST_IF` set to the RTP
//!   socket's local IPv4 address), with TTL 1 (hop limit 1 for IPv6) — as PipeWire's `net.ttl`
//!   default — and loopback on, so a PipeWire on the sending host hears it too.
//! * The originating source in the SAP header is the SAP socket's local address.
//!
//! Not realtime: the announcer is a normal thread that allocates its two datagrams at start,
//! then only sends them and sleeps; the capture thread never waits for it.

use crate::net::UdpSender;
use engine::rtp::RtpSender;
use engine::rtp::sap::{MAX_SAP_DATAGRAM, SapMessage};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Time between two announcements. PipeWire drops a session it has not heard of for 90 s and
/// announces its own every 5 s; RFC 2974's bandwidth rule would give minutes, too slow for it.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);

/// A running announcer: its thread sends the announcement every [`ANNOUNCE_INTERVAL`] until
/// [`stop`](Self::stop) (or drop), then the deletion.
pub struct SapAnnouncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    group: SocketAddr,
}

/// The socket the announcements leave by, connected to `group`.
fn socket_for(group: SocketAddr, rtp_local: IpAddr) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
    match (group.ip(), rtp_local) {
        (IpAddr::V4(g), local) if g.is_multicast() => {
            sock.set_multicast_ttl_v4(1)?;
            sock.set_multicast_loop_v4(true)?;
            if let IpAddr::V4(l) = local
                && !l.is_unspecified()
            {
                sock.set_multicast_if_v4(&l)?;
                sock.bind(&SocketAddr::new(local, 0).into())?;
            }
        }
        (IpAddr::V6(g), _) if g.is_multicast() => {
            sock.set_multicast_hops_v6(1)?;
            sock.set_multicast_loop_v6(true)?;
        }
        _ => {}
    }
    sock.connect(&group.into())?;
    Ok(sock)
}

impl SapAnnouncer {
    /// Starts announcing `sdp` to `group`, from the interface of the RTP stream (whose socket's
    /// local address is `rtp_local`).
    pub fn start(group: SocketAddr, sdp: &str, rtp_local: IpAddr) -> Result<SapAnnouncer, String> {
        let fail = |e: std::io::Error| {
            format!(
                "cannot send SAP announcements to {group}: {e} (network.sap / --sap: another address, or \"off\")"
            )
        };
        let sock = socket_for(group, rtp_local).map_err(fail)?;
        let origin = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(rtp_local);
        let msg = SapMessage::announce(origin, sdp);
        let mut announce = vec![0u8; MAX_SAP_DATAGRAM];
        let n = msg.emit(&mut announce).map_err(|e| e.to_string())?;
        announce.truncate(n);
        let mut delete = vec![0u8; MAX_SAP_DATAGRAM];
        let n = msg
            .deletion()
            .emit(&mut delete)
            .map_err(|e| e.to_string())?;
        delete.truncate(n);
        // The first announcement goes out now, so a bad group is a start-up error.
        sock.send(&announce).map_err(fail)?;
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("na-sap".into())
            .spawn(move || announce_until_stopped(sock, group, &announce, &delete, rx))
            .map_err(|e| e.to_string())?;
        log::info!(
            "announcing the SDP by SAP to {group} every {} s (origin {origin}, message id hash {:#06x})",
            ANNOUNCE_INTERVAL.as_secs(),
            msg.msg_id_hash
        );
        Ok(SapAnnouncer {
            stop: Some(tx),
            thread: Some(thread),
            group,
        })
    }

    /// Where the announcements go.
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// Stops announcing and sends the deletion; returns when it has been sent.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SapAnnouncer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts announcing the stream `tx` sends through `sock` to `group` (`None`: SAP off). A
/// group that cannot be reached is an error, but for the default group: a warning, and no SAP.
pub fn announce_stream(
    tx: &RtpSender,
    sock: &UdpSender,
    group: Option<SocketAddr>,
) -> Result<Option<SapAnnouncer>, String> {
    let Some(group) = group else {
        return Ok(None);
    };
    let sdp = crate::rtp::sdp_for(tx, sock)?;
    let local = sock.local_addr().map_err(|e| e.to_string())?.ip();
    match SapAnnouncer::start(group, &sdp, local) {
        Ok(a) => Ok(Some(a)),
        // The default serves PipeWire; where it cannot go out (no IPv4 route), the stream
        // itself still can.
        Err(e) if group == super::DEFAULT_GROUP => {
            log::warn!("{e}; streaming without SAP announcements");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn announce_until_stopped(
    sock: Socket,
    group: SocketAddr,
    announce: &[u8],
    delete: &[u8],
    stop: mpsc::Receiver<()>,
) {
    let mut failing = false;
    // The first announcement was sent by `start`.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(ANNOUNCE_INTERVAL) {
        match sock.send(announce) {
            Ok(_) if failing => {
                log::info!("SAP announcements to {group} go out again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                log::warn!(
                    "SAP announcement to {group} failed: {e} (retrying every {} s)",
                    ANNOUNCE_INTERVAL.as_secs()
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
    match sock.send(delete) {
        Ok(_) => log::info!("SAP deletion sent to {group}"),
        Err(e) => log::warn!("SAP deletion to {group} failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::rtp::sap::SapKind;
    use std::net::UdpSocket;

    #[test]
    fn announces_then_deletes_on_stop() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sdp = "v=0\r\no=- 1 0 IN IP4 127.0.0.1\r\ns=t\r\n";
        let a = SapAnnouncer::start(rx.local_addr().unwrap(), sdp, "127.0.0.1".parse().unwrap())
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let m = SapMessage::parse(&buf[..n]).unwrap();
        assert_eq!((m.kind, m.sdp), (SapKind::Announce, sdp));
        assert_eq!(m.origin, "127.0.0.1".parse::<IpAddr>().unwrap());
        a.stop();
        let mut buf2 = [0u8; 2048];
        let n = rx.recv(&mut buf2).unwrap();
        let d = SapMessage::parse(&buf2[..n]).unwrap();
        assert_eq!(d, m.deletion());
    }
}
