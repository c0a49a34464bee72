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
//!   ([`daemon::recv`](crate::daemon::recv)), fed through this source, which rewrites every
//!   datagram with the [`RtpTranslator`] into a native packet (in its preallocated buffer):
//!   jitter buffer, concealment and drift control are the native ones.
//! * [`send`]: the sending daemon. It logs the stream's SDP and writes it to the configured
//!   file (`[network] sdp_file`, `--sdp`), for `ffplay stream.sdp` or `vlc stream.sdp`.
//!
//! Realtime contract (as in [`stream`](crate::stream)): after the first period a loop makes no
//! allocation, takes no lock and formats nothing; it blocks only in the device's poll and in
//! `clock_nanosleep` during a device back-off. Each loop counts its own allocations (see
//! [`engine::alloc_count`]) and returns the count.

use crate::daemon::{
    AnyCapture, AudioOptions, RunOptions, cpu_seconds, deadline, new_stream_id, open_capture,
    report_rt, setup_rt, start_status, write_json,
};
use crate::housekeeping::{self, STOP};
use crate::net::{DatagramIn, UdpReceiver, UdpSender};
use crate::pcm::Capture;
use crate::rt;
use crate::status::Meter;
use engine::format::StreamFormat;
use engine::rtlog;
use engine::rtp::{
    self, MAX_RTP_DATAGRAM, RtpError, RtpSender, RtpTranslator, SdpDirection, SdpParams,
};
use engine::stats::Stats;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    /// Binds `listen` for a receiver playing `format`.
    pub fn bind(listen: &str, format: StreamFormat) -> Result<RtpInput, String> {
        let translator = RtpTranslator::new(format).map_err(|e| format!("RTP mode: {e}"))?;
        let sock = UdpReceiver::bind_with_slots(listen, 4 << 20, MAX_RTP_DATAGRAM + 1)
            .map_err(|e| e.to_string())?;
        Ok(RtpInput {
            sock,
            translator,
            rejected: 0,
        })
    }
}

/// RTP in, native packets out: the receiver's realtime loop ([`crate::stream::run_receiver`])
/// takes RTP through this as it takes native datagrams. RTCP is ignored; other datagrams that
/// are not playable RTP are counted in `rejected`.
impl DatagramIn for RtpInput {
    fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, mut f: F) -> Result<usize, i32> {
        let (translator, rejected) = (&mut self.translator, &mut self.rejected);
        self.sock
            .recv_batch(|datagram, t| match translator.translate(datagram) {
                Ok(native) => f(native, t),
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

/// `netaudio send --proto rtp`: like [`crate::daemon::send`], with RTP packets and an SDP.
pub fn send(
    audio: &AudioOptions,
    dest: &str,
    dscp: Option<u8>,
    sdp_file: Option<&Path>,
    opts: &RunOptions,
) -> Result<(), String> {
    check_format(audio.format)?;
    crate::daemon::refuse_key_unless_native(opts)?;
    housekeeping::install_signal_handlers();
    let sock = UdpSender::connect(dest, dscp).map_err(|e| e.to_string())?;
    let dev = open_capture(audio)?;
    let setup = match &dev {
        AnyCapture::Alsa(d) => d.setup().clone(),
        AnyCapture::Virtual(d) => d.setup().clone(),
    };
    let tx = RtpSender::new(
        setup.format,
        setup.period,
        new_stream_id(),
        random_u32() as u16,
        random_u32(),
    )
    .map_err(|e| format!("RTP mode: {e}"))?;
    let sdp = sdp_for(&tx, &sock)?;
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
    setup_rt(opts);
    let stats = Arc::new(Stats::default());
    let meter = Arc::new(Meter::default());
    let status = start_status(
        opts,
        "sender",
        &setup,
        sock.peer().to_string(),
        &stats,
        &meter,
    );
    let (mut producer, mut consumer) = rtlog::queue();
    let (st, me) = (stats.clone(), meter.clone());
    let (pt, ssrc) = (tx.payload_type(), tx.ssrc());
    let cpu0 = cpu_seconds();
    let (handle, outcome) = rt::spawn("na-capture", opts.rt, move || {
        let mut tx = tx;
        match dev {
            AnyCapture::Alsa(mut d) => {
                crate::stream::run_sender(&mut *d, &mut tx, &sock, &STOP, &st, &me, &mut producer)
            }
            AnyCapture::Virtual(mut d) => {
                crate::stream::run_sender(&mut *d, &mut tx, &sock, &STOP, &st, &me, &mut producer)
            }
        }
    })
    .map_err(|e| e.to_string())?;
    report_rt("capture", &outcome);
    let rate = setup.format.rate;
    let interval = Duration::from_secs_f64(opts.stats_interval.max(0.0));
    housekeeping::run(&mut [&mut consumer], interval, deadline(opts), || {
        housekeeping::sender_line(&stats.snapshot(), rate)
    });
    STOP.store(true, Ordering::Relaxed);
    let rep = handle.join().map_err(|_| "the capture thread panicked")?;
    if let Some(h) = status {
        let _ = h.join();
    }
    let s = stats.snapshot();
    log::info!("stopped: {}", housekeeping::sender_line(&s, rate));
    write_json(
        &opts.stats_json,
        &json!({
            "role": "sender",
            "proto": "rtp",
            "payload_type": pt,
            "ssrc": ssrc,
            "packets_sent": s.packets_sent,
            "frames_sent": s.frames_sent,
            "send_errors": s.send_errors,
            "xruns": s.xruns,
            "allocations_rt": rep.allocations,
            "periods": rep.periods,
            "cpu_seconds": cpu_seconds() - cpu0,
            "rt_fifo": outcome.fifo,
            "rt_pinned": outcome.pinned,
        }),
    )
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
