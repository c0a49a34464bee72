//! The daemons' sockets, one type per direction over the wire protocols: [`NetOut`] for the
//! sender (native UDP or raw TCP), [`NetIn`] for the receiver (native UDP, raw TCP or RTP).
//!
//! Realtime contract: the [`DatagramOut`]/[`DatagramIn`] methods run on the realtime threads
//! and only forward to the socket they hold (a `match`): they add no allocation, lock or
//! blocking of their own.

use crate::net::{DatagramOut, StreamInput, UdpReceiver, UdpSender};
use crate::rtp::RtpInput;
use crate::tcp::{TcpPcmReceiver, TcpPcmSender};
use core::borrow::BorrowMut;
use engine::receiver::Receiver;
use engine::rtlog::EventSink;
use engine::session::ReceiverSession;

/// The sender's socket, by protocol.
pub enum NetOut {
    /// Native packets over UDP.
    Udp(UdpSender),
    /// Raw PCM over TCP.
    Tcp(Box<TcpPcmSender>),
}

impl NetOut {
    pub(super) fn peer(&self) -> std::net::SocketAddr {
        match self {
            NetOut::Udp(s) => s.peer(),
            NetOut::Tcp(s) => s.peer(),
        }
    }

    /// Whether packets go to several receivers (a multicast group or a list).
    pub(super) fn fans_out(&self) -> bool {
        matches!(self, NetOut::Udp(s) if s.fans_out())
    }
}

// Every method forwarded: a default here would silently turn off tagging or NACKs.
impl DatagramOut for NetOut {
    #[inline]
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        match self {
            NetOut::Udp(s) => s.send_gather(header, payload),
            NetOut::Tcp(s) => s.send_gather(header, payload),
        }
    }

    #[inline]
    fn send_tagged(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<usize, i32> {
        match self {
            NetOut::Udp(s) => DatagramOut::send_tagged(s, header, payload, tag),
            NetOut::Tcp(s) => s.send_tagged(header, payload, tag),
        }
    }

    fn recv_nack(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            NetOut::Udp(s) => s.recv_nack(buf),
            NetOut::Tcp(s) => s.recv_nack(buf),
        }
    }

    fn recv_nack_from(&self, buf: &mut [u8]) -> Option<(usize, Option<std::net::SocketAddr>)> {
        match self {
            NetOut::Udp(s) => s.recv_nack_from(buf),
            NetOut::Tcp(s) => s.recv_nack_from(buf),
        }
    }

    fn send_repair(&self, to: Option<std::net::SocketAddr>, datagram: &[u8]) -> Result<usize, i32> {
        match self {
            NetOut::Udp(s) => s.send_repair(to, datagram),
            NetOut::Tcp(s) => s.send_repair(to, datagram),
        }
    }

    fn fd(&self) -> Option<i32> {
        match self {
            NetOut::Udp(s) => DatagramOut::fd(s),
            NetOut::Tcp(s) => DatagramOut::fd(s.as_ref()),
        }
    }
}

/// The receiver's socket, by protocol.
pub enum NetIn {
    /// Native packets over UDP.
    Udp(Box<UdpReceiver>),
    /// Raw PCM over TCP.
    Tcp(Box<TcpPcmReceiver>),
    /// RTP over UDP, translated into native packets.
    Rtp(Box<RtpInput>),
}

impl NetIn {
    pub(super) fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            NetIn::Udp(s) => s.local_addr(),
            NetIn::Tcp(s) => s.local_addr(),
            NetIn::Rtp(s) => s.sock.local_addr(),
        }
    }
}

// Every method forwarded: a default here would silently turn off NACKs.
impl StreamInput for NetIn {
    #[inline]
    fn recv_into<R: BorrowMut<Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32> {
        match self {
            NetIn::Udp(s) => s.recv_into(session),
            NetIn::Tcp(s) => s.recv_into(session),
            NetIn::Rtp(s) => s.recv_into(session),
        }
    }

    fn send_nack(&self, nack: &[u8]) -> Result<usize, i32> {
        match self {
            NetIn::Udp(s) => StreamInput::send_nack(s.as_ref(), nack),
            NetIn::Tcp(s) => s.send_nack(nack),
            NetIn::Rtp(s) => s.send_nack(nack),
        }
    }

    fn wait_fd(&self) -> Option<i32> {
        match self {
            NetIn::Udp(s) => StreamInput::wait_fd(s.as_ref()),
            NetIn::Tcp(s) => s.wait_fd(),
            NetIn::Rtp(s) => s.wait_fd(),
        }
    }

    fn rejected(&self) -> u64 {
        match self {
            NetIn::Udp(s) => StreamInput::rejected(s.as_ref()),
            NetIn::Tcp(s) => s.rejected(),
            NetIn::Rtp(s) => s.rejected(),
        }
    }
}
