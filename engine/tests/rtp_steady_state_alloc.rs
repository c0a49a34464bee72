//! The realtime rule for RTP, proven: after construction, the RTP packetizer, the translator
//! and the receiver behind it never allocate and never free.
//!
//! A counting global allocator counts every allocation and free this thread makes while 50 000 periods
//! run through packetize → translate → on_packet → render, with loss, reorder, junk datagrams
//! (RTCP, bad versions, foreign payload types), a sender restart with a new SSRC and the 32-bit
//! timestamp wrapping.

use engine::alloc_count::{AllocScope, CountingAlloc};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::rng::Rng;
use engine::rtp::{RtpSender, RtpTranslator};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const PERIODS: u64 = 50_000;

/// Runs the loop; returns (allocations, frees) while it ran, the receiver and the datagrams
/// the translator refused.
fn steady_state_allocations(format: StreamFormat) -> ((u64, u64), Receiver, u64) {
    let period = 128;
    let fb = format.frame_bytes();
    let mut cfg = ReceiverConfig::new(format, period, 15.0);
    cfg.drift_mode = DriftMode::Slip;
    let mut rx = Receiver::new(cfg).unwrap();
    // The timestamp wraps a few seconds in.
    let mut tx = RtpSender::new(format, period, 1, u16::MAX - 10, u32::MAX - 200_000).unwrap();
    let mut tr = RtpTranslator::new(format).unwrap();
    let mut capture = vec![0u8; period * fb];
    let mut out = vec![0u8; period * fb];
    let mut datagram = [0u8; 1500];
    let mut held = [0u8; 1500];
    let mut held_len = 0;
    let mut rejected = 0u64;
    let mut rng = Rng::new(7);
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    let mut t = 1_000_000u64;

    let scope = AllocScope::begin();
    for k in 0..PERIODS {
        for (i, b) in capture.iter_mut().enumerate() {
            *b = (i as u64 ^ k) as u8;
        }
        if k == PERIODS / 2 {
            tx.restart(2);
        }
        tx.packetize(&capture, |h, payload| {
            if rng.chance(0.01) {
                return;
            }
            let len = h.len() + payload.len();
            datagram[..h.len()].copy_from_slice(h);
            datagram[h.len()..len].copy_from_slice(payload);
            if rng.chance(0.02) {
                held[..len].copy_from_slice(&datagram[..len]);
                held_len = len;
                return;
            }
            match tr.translate(&datagram[..len]) {
                Ok(native) => {
                    rx.on_packet(native, t);
                }
                Err(_) => rejected += 1,
            }
            if held_len > 0 {
                if let Ok(native) = tr.translate(&held[..held_len]) {
                    rx.on_packet(native, t + 1);
                }
                held_len = 0;
            }
        });
        if rng.chance(0.01) {
            // RTCP, a bad version, PCMU: all refused without allocating.
            for junk in [[0x80u8, 200], [0x40, 96], [0x80, 0]] {
                datagram[..2].copy_from_slice(&junk);
                if tr.translate(&datagram[..40]).is_err() {
                    rejected += 1;
                }
            }
        }
        rx.render(&mut out, t);
        t += period_ns;
    }
    let n = (scope.allocations(), scope.frees());
    drop(scope);
    (n, rx, rejected)
}

#[test]
fn rtp_path_never_allocates_in_steady_state() {
    for f in [
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
        StreamFormat::new(96_000, 2, SampleFormat::S24_3Le).unwrap(),
        StreamFormat::new(44_100, 2, SampleFormat::S16Le).unwrap(),
    ] {
        let ((allocations, frees), rx, rejected) = steady_state_allocations(f);
        let c = rx.counters();
        assert_eq!(allocations, 0, "{f}: {allocations} allocations");
        assert_eq!(frees, 0, "{f}: {frees} frees");
        assert!(c.lost_packets > 100, "{f}: {c:?}");
        assert!(c.resyncs >= 1, "{f}: the new SSRC took over: {c:?}");
        assert!(c.concealed_frames > 0, "{f}: {c:?}");
        assert!(rejected > 100, "{f}: junk went through the rejecting paths");
        assert_eq!(c.frames_played, PERIODS * 128);
        assert!(c.packets_received > PERIODS * 9 / 10, "{f}: {c:?}");
    }
}
