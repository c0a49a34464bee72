//! The daemon and the simulator run one composition: the engine's sessions. A fault injected
//! into the sender session (every tenth packet dropped on its way out) shows the same way
//! under the daemon's capture loop (`stream::run_sender_session`, on a virtual capture device)
//! and in the simulator (`engine::sim`), because both drive that very session.

use engine::format::{SampleFormat, StreamFormat};
use engine::recovery::{RecoveryMode, RetransmitHistory};
use engine::rtlog;
use engine::sender::{END_COPIES, Sender};
use engine::session::{FaultInjector, SenderSession};
use engine::sim::{Sim, SimConfig};
use engine::stats::Stats;
use engine::wire::PacketHeader;
use netaudio::net::DatagramOut;
use netaudio::pcm::DeviceRequest;
use netaudio::pcm::virtual_dev::VirtualCapture;
use netaudio::stream::run_sender_session;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

const EVERY: u32 = 10;

/// Records the sequence numbers the loop sends; stops the loop after `stop_after`.
struct Recorder {
    seqs: RefCell<Vec<u32>>,
    stop_after: usize,
    stop: &'static AtomicBool,
}

impl DatagramOut for Recorder {
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        let mut s = self.seqs.borrow_mut();
        if let Ok(h) = PacketHeader::parse(header)
            && !h.is_end_marker()
        {
            s.push(h.seq);
        }
        if s.len() >= self.stop_after {
            self.stop.store(true, Ordering::Relaxed);
        }
        Ok(header.len() + payload.len())
    }
}

#[test]
fn a_fault_in_the_sender_session_shows_under_the_daemon_loop_and_in_the_simulator() {
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();

    // The daemon's capture loop.
    static STOP: AtomicBool = AtomicBool::new(false);
    let req = DeviceRequest {
        name: "virtual".into(),
        format,
        period: 256,
        periods: 3,
    };
    let mut dev = VirtualCapture::open(&req).unwrap();
    let mut tx = Sender::new(format, 256, 7, 0).unwrap();
    let sock = Recorder {
        seqs: RefCell::new(Vec::new()),
        stop_after: 180,
        stop: &STOP,
    };
    let (mut events, _log) = rtlog::queue();
    let mut session = SenderSession::new(&mut tx, None::<&mut RetransmitHistory>, &mut events);
    session.inject(FaultInjector::drop_every(EVERY));
    let stats = Stats::default();
    let meter = netaudio::status::Meter::default();
    let beat = netaudio::watchdog::Heartbeat::new("na-capture");
    run_sender_session(&mut dev, &mut session, &sock, &STOP, &beat, &stats, &meter);
    let dropped = session.fault().dropped();
    let seqs = sock.seqs.into_inner();
    // Every tenth packet made is missing from what went out, and only those.
    let made = seqs.len() as u64 + dropped;
    assert_eq!(dropped, made / EVERY as u64, "{seqs:?}");
    for w in seqs.windows(2) {
        let step = w[1].wrapping_sub(w[0]);
        let nth = w[1] as u64 + 1;
        let expect = if nth % EVERY as u64 == 1 { 2 } else { 1 };
        assert_eq!(step, expect, "after {}: {seqs:?}", w[0]);
    }
    // What the session counted as sent: what went out, and the clean stop's END packets.
    assert_eq!(
        stats.snapshot().packets_sent,
        (seqs.len() + END_COPIES) as u64
    );

    // The simulator: the same session type, the same fault; the receiver finds the holes.
    let mut cfg = SimConfig::new(format, 256, 10.0);
    cfg.recovery = RecoveryMode::Off;
    let mut sim = Sim::new(cfg).unwrap();
    sim.sender_session_mut()
        .inject(FaultInjector::drop_every(EVERY));
    let r = sim.run(None);
    assert!(r.packets_sent > 1000, "{}", r.packets_sent);
    // The link lost nothing; the session dropped every tenth packet and the receiver counted
    // each one that fell into the stream as it plays as lost: all but those of the first
    // seconds, before the stream's first frame is played (the warm-up, at most 3 s: 57 drops).
    assert_eq!(r.net.dropped, 0);
    let dropped = (r.packets_sent + r.packets_sent / (EVERY as u64 - 1)) / EVERY as u64;
    let lost = r.engine.lost_packets;
    assert!(
        lost <= dropped + 1 && lost + 57 >= dropped && lost > 100,
        "lost {lost} of {} sent, {dropped} dropped",
        r.packets_sent
    );
}
