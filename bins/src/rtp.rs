//! RTP mode (`[network] proto = "rtp"`, `--proto rtp`): the realtime loops and the daemons, so
//! ffmpeg, VLC, GStreamer or PipeWire can receive what `netaudio send` captures, and
//! `netaudio recv` can play what they send.
//!
//! * The sending side is the native sender's loop
//!   ([`stream::run_sender`](crate::stream::run_sender)) with the [`RtpSender`] as packetizer: poll the capture device → lend its buffer → each packet's
//!   samples byte-swapped to network order into the packetizer's preallocated buffer (one copy:
//!   RTP's L16/L24 are big-endian, sound cards little-endian) → one `sendmsg` of [RTP header on
//!   the stack, that buffer]. Lost capture (xruns) makes the timestamps jump; a device that
//!   comes back starts a new SSRC with the marker bit set.
//! * [`RtpInput`]: the receiving side is the native receiver's own loop
//!   ([`stream::run_receiver`](crate::stream::run_receiver)) and daemon
//!   ([`daemon::recv`](crate::daemon::recv)), fed through this source, which hands each
//!   datagram's frames, byte-swapped by the [`RtpTranslator`] into its preallocated buffer,
//!   with a typed header to the receiver session: jitter buffer, concealment and drift
//!   control are the native ones.
//! * The daemons are the native ones ([`daemon::send`](crate::daemon::send),
//!   [`daemon::recv`](crate::daemon::recv)); [`announce`] logs the sender's SDP and writes it
//!   to the configured file (`[network] sdp_file`, `--sdp`), for `ffplay stream.sdp` or
//!   `vlc stream.sdp`; [`crate::sap`] announces it by SAP (PipeWire) and follows the streams
//!   others announce.
//!
//! Realtime contract (as in [`stream`](crate::stream)): after the first period a loop makes no
//! allocation and no free, takes no lock and formats nothing; it blocks only in the device's
//! poll and in `clock_nanosleep` during a device back-off. Each loop counts its own allocations
//! and frees (see [`engine::alloc_count`]) and returns the counts.

use crate::daemon::new_stream_id;
use crate::net::{StreamInput, UdpReceiver, UdpSender};
use crate::pcm::DeviceSetup;
use core::borrow::BorrowMut;
use engine::format::StreamFormat;
use engine::receiver::Receiver;
use engine::rtlog::EventSink;
use engine::rtp::{
    self, MAX_RTP_DATAGRAM, RtpError, RtpSender, RtpTranslator, SdpDirection, SdpParams,
};
use engine::session::ReceiverSession;
use std::path::{Path, PathBuf};

/// Refuses formats RTP cannot carry, naming the value and the fix.
pub fn check_format(format: StreamFormat) -> Result<(), String> {
    rtp::encoding_name(format.sample)
        .map(|_| ())
        .map_err(|e| format!("RTP mode: {e}"))
}

/// The receiving socket with the translator its datagrams go through.
pub struct RtpInput {
    /// The socket, with slots for datagrams up to [`MAX_RTP_DATAGRAM`] bytes (and one more, so
    /// a longer one is seen and refused rather than cut).
    pub sock: UdpReceiver,
    /// RTP → native packets.
    pub translator: RtpTranslator,
    /// Datagrams that were not playable RTP (RTCP aside).
    pub rejected: u64,
}

impl RtpInput {
    /// Binds `listen` for a receiver playing `format`; a multicast address is joined.
    pub fn bind(listen: &str, format: StreamFormat) -> Result<RtpInput, String> {
        let translator = RtpTranslator::new(format).map_err(|e| format!("RTP mode: {e}"))?;
        let sock = UdpReceiver::bind_with_slots(listen, 4 << 20, MAX_RTP_DATAGRAM + 1)
            .map_err(|e| e.to_string())?;
        // A multicast listen address (a stream announced to a group) joins the group.
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        if local.ip().is_multicast() {
            sock.join_multicast(local.ip(), None)
                .map_err(|e| format!("cannot join the multicast group {}: {e}", local.ip()))?;
        }
        Ok(RtpInput {
            sock,
            translator,
            rejected: 0,
        })
    }
}

/// RTP in, frames out: the receiver's realtime loop ([`crate::stream::run_receiver`])
/// takes RTP through this, each datagram's frames (in the receiver's byte order) with the
/// typed header the [`RtpTranslator`] gives them. RTCP is ignored; other datagrams that are
/// not playable RTP are counted in `rejected`.
impl StreamInput for RtpInput {
    fn recv_into<R: BorrowMut<Receiver>, E: EventSink>(
        &mut self,
        session: &mut ReceiverSession<R, E>,
    ) -> Result<usize, i32> {
        let (translator, rejected) = (&mut self.translator, &mut self.rejected);
        self.sock
            .recv_batch(|datagram, t| match translator.frames(datagram) {
                Ok((h, pcm)) => {
                    session.handle_frames(t, &h, pcm);
                }
                Err(RtpError::Rtcp(_)) => {}
                Err(_) => *rejected += 1,
            })
    }

    fn wait_fd(&self) -> Option<i32> {
        Some(self.sock.fd())
    }

    fn rejected(&self) -> u64 {
        self.rejected
    }
}

fn random_u32() -> u32 {
    new_stream_id()
}

/// The session description of `tx`'s stream from `sock`.
pub fn sdp_for(tx: &RtpSender, sock: &UdpSender) -> Result<String, String> {
    let origin = sock.local_addr().map_err(|e| e.to_string())?.ip();
    rtp::write_sdp(&SdpParams {
        name: "netaudio",
        session_id: tx.ssrc(),
        origin,
        dest: sock.peer(),
        payload_type: tx.payload_type(),
        format: tx.format(),
        ptime_ms: tx.ptime_ms(),
        direction: SdpDirection::RecvOnly,
    })
    .map_err(|e| e.to_string())
}

/// The RTP packetizer for a capture device set up as `setup` (random SSRC, sequence number
/// and timestamp base, as RFC 3550 asks).
pub fn new_sender(setup: &DeviceSetup) -> Result<RtpSender, String> {
    RtpSender::new(
        setup.format,
        setup.period,
        new_stream_id(),
        random_u32() as u16,
        random_u32(),
    )
    .map_err(|e| format!("RTP mode: {e}"))
}

/// Logs what `netaudio send --proto rtp` sends and its SDP, and writes the SDP to `sdp_file`.
pub fn announce(
    tx: &RtpSender,
    setup: &DeviceSetup,
    sock: &UdpSender,
    sdp_file: Option<&Path>,
) -> Result<(), String> {
    let sdp = sdp_for(tx, sock)?;
    log::info!(
        "sending RTP ({} payload type {}, {} frames per packet, SSRC {:#010x}) {} from {:?} (period {}, buffer {} frames, {:?} access) to {}",
        rtp::encoding_name(setup.format.sample).map_err(|e| e.to_string())?,
        tx.payload_type(),
        tx.frames_per_packet(),
        tx.ssrc(),
        setup.format,
        setup.name,
        setup.period,
        setup.buffer,
        setup.access,
        sock.peer()
    );
    log::info!("SDP (open it with ffplay, vlc or ffmpeg on the receiving host):\n{sdp}");
    if let Some(path) = sdp_file {
        write_sdp_file(path, &sdp)?;
        log::info!("SDP written to {}", path.display());
    }
    Ok(())
}

/// Writes the SDP atomically (a reader never sees half a file).
fn write_sdp_file(path: &Path, sdp: &str) -> Result<(), String> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, sdp)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            format!(
                "cannot write the SDP to {}: {e} (network.sdp_file / --sdp)",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::SampleFormat;

    #[test]
    fn s32_is_refused_with_the_fix() {
        let f = StreamFormat::new(48_000, 2, SampleFormat::S32Le).unwrap();
        let e = check_format(f).unwrap_err();
        assert!(e.contains("S32_LE") && e.contains("S16_LE"), "{e}");
        assert!(check_format(StreamFormat::DEFAULT).is_ok());
    }

    #[test]
    fn the_sdp_names_the_route_and_the_stream() {
        let rx = UdpReceiver::bind("127.0.0.1:0", 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let sock = UdpSender::connect(&format!("127.0.0.1:{port}"), None).unwrap();
        let tx = RtpSender::new(StreamFormat::DEFAULT, 441, 5, 0, 0).unwrap();
        let sdp = sdp_for(&tx, &sock).unwrap();
        assert!(sdp.contains("o=- 5 0 IN IP4 127.0.0.1\r\n"), "{sdp}");
        assert!(
            sdp.contains(&format!("m=audio {port} RTP/AVP 10\r\n")),
            "{sdp}"
        );
        assert!(
            sdp.contains("a=rtpmap:10 L16/44100/2\r\na=ptime:5.011\r\n"),
            "{sdp}"
        );
    }
}
