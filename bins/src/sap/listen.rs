//! Following an announced stream: `netaudio recv --proto rtp --sap ADDR` listens for SAP
//! announcements on ADDR (joining the group when it is a multicast address) and takes the
//! first L16/L24 stream announced — its port, its address (a multicast one is joined by the RTP
//! socket) and its format — before the receiver opens its device.
//!
//! Announcements that cannot be played (another encoding, a deletion, a broken SDP) are
//! skipped, each logged once. PipeWire's `module-rtp-sink` announces every 5 s.
//!
//! Not realtime: runs on the main thread before the stream starts; it blocks in `recv` with a
//! half-second timeout so Ctrl-C and SIGTERM still stop it.

use crate::housekeeping::{STOP, install_signal_handlers};
use engine::format::StreamFormat;
use engine::rtp::SdpStream;
use engine::rtp::sap::{MAX_SAP_DATAGRAM, SapKind, SapMessage};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A stream found by its announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// Its format (`a=rtpmap`).
    pub format: StreamFormat,
    /// Where to listen for it: the announced port on any address, or the announced multicast
    /// group.
    pub listen: SocketAddr,
    /// Session name (`s=`).
    pub name: String,
    /// Payload type.
    pub payload_type: u8,
    /// Who announced it (the SAP packet's sender).
    pub from: SocketAddr,
}

/// The socket SAP arrives on: `target` bound (a multicast group joined on the default
/// interface), sharing the port with other listeners such as a local PipeWire.
fn sap_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    sock.set_reuse_address(true)?;
    match target.ip() {
        IpAddr::V4(g) if g.is_multicast() => sock.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED)?,
        IpAddr::V6(g) if g.is_multicast() => sock.join_multicast_v6(&g, 0)?,
        _ => {}
    }
    sock.bind(&target.into())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(sock.into())
}

/// Where the receiver listens for `s`: its multicast group, or its port on any address.
fn listen_for(s: &SdpStream<'_>) -> SocketAddr {
    let ip = match s.addr {
        a if a.is_multicast() => a,
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, s.port)
}

/// Waits for the first playable stream announced on `target`; `limit` bounds the wait (None:
/// until found or stopped). `None` when stopped (Ctrl-C, SIGTERM) before one came.
pub fn wait_for_stream(
    target: SocketAddr,
    limit: Option<Duration>,
) -> Result<Option<Announced>, String> {
    install_signal_handlers();
    let sock = sap_socket(target).map_err(|e| {
        format!(
            "cannot listen for SAP announcements on {target}: {e} (network.sap / --sap: another address, or \"off\")"
        )
    })?;
    log::info!("waiting for a SAP announcement of an L16/L24 stream on {target}");
    let start = std::time::Instant::now();
    let mut skipped = HashSet::new();
    let mut buf = vec![0u8; MAX_SAP_DATAGRAM + 1];
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if limit.is_some_and(|l| start.elapsed() > l) {
            return Err(format!(
                "no playable stream announced on {target} within {limit:?}: is the sender running and announcing there (PipeWire: sap.ip, sap.port)?"
            ));
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("SAP on {target}: {e}")),
        };
        let msg = match SapMessage::parse(&buf[..n]) {
            Ok(m) if m.kind == SapKind::Announce => m,
            Ok(_) => continue,
            Err(e) => {
                if skipped.insert((from, 0u16, e.to_string())) {
                    log::warn!("ignoring a datagram from {from} on the SAP port: {e}");
                }
                continue;
            }
        };
        match SdpStream::parse(msg.sdp) {
            Ok(s) => {
                let found = Announced {
                    format: s.format,
                    listen: listen_for(&s),
                    name: s.name.to_string(),
                    payload_type: s.payload_type,
                    from,
                };
                log::info!(
                    "following the stream {:?} announced by {from}: {} payload type {}, {}, on {}",
                    found.name,
                    engine::rtp::encoding_name(found.format.sample).unwrap_or("?"),
                    found.payload_type,
                    found.format,
                    found.listen
                );
                return Ok(Some(found));
            }
            Err(e) => {
                if skipped.insert((from, msg.msg_id_hash, e.to_string())) {
                    log::info!("not following the stream announced by {from}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_first_playable_announcement() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let announcer = std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 2048];
            let pcmu = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\n";
            let l24 = "v=0\r\no=- 1 0 IN IP4 127.0.0.1\r\ns=ours\r\nc=IN IP4 239.1.2.3/1\r\nm=audio 5004 RTP/AVP 96\r\na=rtpmap:96 L24/96000/2\r\n";
            let origin = "127.0.0.1".parse().unwrap();
            while !stop.load(Ordering::Relaxed) {
                for (sdp, delete) in [(l24, true), ("junk", false), (pcmu, false), (l24, false)] {
                    let m = SapMessage::announce(origin, sdp);
                    let m = if delete { m.deletion() } else { m };
                    let n = m.emit(&mut buf).unwrap();
                    s.send_to(&buf[..n], target).unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let a = wait_for_stream(target, Some(Duration::from_secs(30)))
            .unwrap()
            .unwrap();
        assert_eq!(
            a.format,
            StreamFormat::new(96_000, 2, engine::format::SampleFormat::S24_3Le).unwrap()
        );
        assert_eq!(a.listen, "239.1.2.3:5004".parse().unwrap());
        assert_eq!((a.name.as_str(), a.payload_type), ("ours", 96));
        done.store(true, Ordering::Relaxed);
        announcer.join().unwrap();
    }
}
