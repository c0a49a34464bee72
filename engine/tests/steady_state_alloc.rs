//! The realtime rule, proven: after construction, the sender and the receiver never allocate
//! and never free.
//!
//! A counting global allocator counts every allocation and free this thread makes while the steady-state
//! loop runs: 100 000 periods of packetize → on_packet → render in each drift mode, with loss,
//! reorder, duplicates, junk datagrams, a sender restart and a stall, so every path of the
//! receiver (concealment, slips, resampling, resync) is exercised.

use engine::alloc_count::{AllocScope, CountingAlloc};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::rng::Rng;
use engine::rtlog;
use engine::sender::Sender;
use engine::stats::Stats;
use engine::wire::HEADER_LEN;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const PERIODS: u64 = 100_000;

/// Runs the loop; returns (allocations, frees) while it ran and the receiver.
fn steady_state_allocations(mode: DriftMode, format: StreamFormat) -> ((u64, u64), Receiver) {
    let period = 128;
    let fb = format.frame_bytes();
    let mut cfg = ReceiverConfig::new(format, period, 15.0);
    cfg.drift_mode = mode;
    let (events, mut log) = rtlog::queue();
    let mut rx = Receiver::new(cfg).unwrap().with_events(events);
    let stats = Stats::default();
    let mut tx = Sender::new(format, period, 1, u32::MAX - 1000).unwrap();
    let mut capture = vec![0u8; period * fb];
    let mut out = vec![0u8; period * fb];
    let mut datagram = [0u8; 1500];
    let mut held = [0u8; 1500];
    let mut held_len = 0;
    let mut rng = Rng::new(42);
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    // The sender's clock runs 300 ppm fast: its periods are a little shorter.
    let send_ns = period_ns - period_ns * 3 / 10_000;
    let mut t_send = 0u64;
    let mut t_play = 1_000_000u64;

    let scope = AllocScope::begin();
    for k in 0..PERIODS {
        while t_send <= t_play {
            for (i, b) in capture.iter_mut().enumerate() {
                *b = (i as u64 ^ k) as u8;
            }
            if k == PERIODS / 2 {
                // The sender restarts.
                tx = Sender::new(format, period, 2, 7).unwrap();
            }
            let stalled = (PERIODS / 3..PERIODS / 3 + 40).contains(&k);
            tx.packetize(&capture, |h, payload| {
                if stalled || rng.chance(0.01) {
                    return;
                }
                let len = HEADER_LEN + payload.len();
                datagram[..HEADER_LEN].copy_from_slice(h);
                datagram[HEADER_LEN..len].copy_from_slice(payload);
                if rng.chance(0.02) {
                    // Held back and delivered after the next one.
                    held[..len].copy_from_slice(&datagram[..len]);
                    held_len = len;
                    return;
                }
                rx.on_packet(&datagram[..len], t_send);
                if rng.chance(0.01) {
                    rx.on_packet(&datagram[..len], t_send + 1);
                }
                if held_len > 0 {
                    rx.on_packet(&held[..held_len], t_send + 2);
                    held_len = 0;
                }
            });
            if rng.chance(0.01) {
                rx.on_packet(&datagram[..37], t_send);
            }
            t_send += send_ns;
        }
        rx.render(&mut out, t_play);
        rx.publish(&stats);
        t_play += period_ns;
    }
    let n = (scope.allocations(), scope.frees());
    drop(scope);
    log.drain_to_log();
    (n, rx)
}

#[test]
fn sender_and_receiver_never_allocate_in_steady_state() {
    let formats = [
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
        StreamFormat::new(96_000, 2, SampleFormat::S24_3Le).unwrap(),
        StreamFormat::new(44_100, 4, SampleFormat::S32Le).unwrap(),
    ];
    for mode in DriftMode::ALL {
        for f in formats {
            let ((allocations, frees), rx) = steady_state_allocations(mode, f);
            let c = rx.counters();
            assert_eq!(allocations, 0, "{mode} {f}: {allocations} allocations");
            assert_eq!(frees, 0, "{mode} {f}: {frees} frees");
            // The loop really went through every path.
            assert!(c.lost_packets > 100, "{mode} {f}: {c:?}");
            assert!(c.duplicate_packets > 100, "{mode} {f}: {c:?}");
            assert!(c.invalid_packets > 100, "{mode} {f}: {c:?}");
            assert!(c.resyncs >= 1, "{mode} {f}: {c:?}");
            assert!(c.concealed_frames > 0, "{mode} {f}: {c:?}");
            if mode == DriftMode::Slip {
                assert!(c.slip_drops > 100, "{mode} {f}: {c:?}");
            }
            assert_eq!(c.frames_played, PERIODS * 128);
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    let scope = AllocScope::begin();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert_eq!(scope.allocations(), 1);
    assert_eq!(scope.frees(), 0);
    drop(v);
    assert_eq!(scope.frees(), 1);
}

#[test]
fn the_counter_sees_frees_per_thread_and_in_total() {
    use engine::alloc_count::{this_thread_frees, tracked_frees};
    // Made before tracking starts: only its free is counted.
    let b = std::hint::black_box(Box::new(7u64));
    let total_before = tracked_frees();
    let (allocs, frees, thread_frees) = std::thread::spawn(move || {
        let scope = AllocScope::begin();
        drop(std::hint::black_box(b));
        (scope.allocations(), scope.frees(), this_thread_frees())
    })
    .join()
    .unwrap();
    assert_eq!((allocs, frees, thread_frees), (0, 1, 1));
    // Other tests' tracked threads may add to the total meanwhile, never take from it.
    assert!(tracked_frees() > total_before);

    // An untracked thread's frees are not its to count.
    let b = std::hint::black_box(Box::new(7u64));
    let untracked = std::thread::spawn(move || {
        drop(std::hint::black_box(b));
        this_thread_frees()
    })
    .join()
    .unwrap();
    assert_eq!(untracked, 0);
}

#[test]
fn a_reallocation_is_one_allocation_and_one_free() {
    let mut v: Vec<u8> = std::hint::black_box(Vec::with_capacity(4));
    v.extend_from_slice(&[1, 2, 3, 4]);
    let scope = AllocScope::begin();
    v.reserve_exact(4096);
    let counted = (scope.allocations(), scope.frees());
    drop(scope);
    assert_eq!(counted, (1, 1));
    drop(v);
}

/// With a key: the sender tags every packet (incremental keyed BLAKE3) and the receiver
/// verifies every datagram, with forged, replayed and stale packets among the real ones,
/// a sender restart and loss: still no allocation.
fn authenticated_allocations(mode: DriftMode) -> ((u64, u64), Receiver) {
    use engine::auth::{KEY_LEN, Key};
    let format = StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap();
    let period = 128;
    let fb = format.frame_bytes();
    let mut cfg = ReceiverConfig::new(format, period, 15.0);
    cfg.drift_mode = mode;
    let key = Key::from_bytes([3; KEY_LEN]);
    let (events, mut log) = rtlog::queue();
    let mut rx = Receiver::new(cfg)
        .unwrap()
        .with_events(events)
        .with_auth(key.clone());
    let stats = Stats::default();
    let t0 = 1_000_000_000_000u64;
    let mut tx = Sender::new(format, period, 1, 5)
        .unwrap()
        .with_auth(key.clone(), t0);
    let mut capture = vec![0u8; period * fb];
    let mut out = vec![0u8; period * fb];
    let mut datagram = [0u8; 1500];
    let mut old = [0u8; 1500];
    let mut old_len = 0;
    let mut rng = Rng::new(7);
    let period_ns = period as u64 * 1_000_000_000 / format.rate as u64;
    let mut t = t0;
    let periods = PERIODS / 2;

    let scope = AllocScope::begin();
    for k in 0..periods {
        for (i, b) in capture.iter_mut().enumerate() {
            *b = (i as u64 ^ k) as u8;
        }
        if k == periods / 2 {
            tx = tx.restarted(period, 2, t).unwrap();
        }
        tx.set_wall_clock(t);
        tx.packetize_tagged(&capture, |h, payload, tag| {
            if rng.chance(0.01) {
                return;
            }
            let (a, b) = (h.len(), h.len() + payload.len());
            let len = b + tag.len();
            datagram[..a].copy_from_slice(h);
            datagram[a..b].copy_from_slice(payload);
            datagram[b..len].copy_from_slice(tag);
            rx.on_packet(&datagram[..len], t);
            if rng.chance(0.02) {
                // Forged: one bit of the payload flipped.
                datagram[a + 3] ^= 0x10;
                rx.on_packet(&datagram[..len], t);
            }
            if k % 100 == 0 {
                old[..len].copy_from_slice(&datagram[..len]);
                old_len = len;
            } else if rng.chance(0.02) && old_len > 0 {
                // A replay of an earlier packet (after the restart: of the older stream).
                rx.on_packet(&old[..old_len], t);
            }
        });
        if rng.chance(0.01) {
            // Stale against the receiver's clock: a minute off.
            rx.set_wall_offset(60_000_000_000);
            rx.on_packet(&old[..old_len], t);
            rx.set_wall_offset(0);
        }
        rx.render(&mut out, t);
        rx.publish(&stats);
        t += period_ns;
    }
    let n = (scope.allocations(), scope.frees());
    drop(scope);
    log.drain_to_log();
    (n, rx)
}

#[test]
fn authenticated_sender_and_receiver_never_allocate() {
    for mode in DriftMode::ALL {
        let ((allocations, frees), rx) = authenticated_allocations(mode);
        let c = rx.counters();
        assert_eq!(allocations, 0, "{mode}: {allocations} allocations");
        assert_eq!(frees, 0, "{mode}: {frees} frees");
        assert!(c.auth_failures > 100, "{mode}: {c:?}");
        assert!(c.replayed_packets > 100, "{mode}: {c:?}");
        assert!(c.lost_packets > 100, "{mode}: {c:?}");
        assert_eq!(c.resyncs, 1, "{mode}: {c:?}");
        assert!(c.packets_received > PERIODS / 2 * 9 / 10, "{mode}: {c:?}");
    }
}

#[test]
fn the_nack_path_never_allocates_in_steady_state() {
    use engine::nack::MAX_NACK_LEN;
    use engine::recovery::RetransmitHistory;
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let period = 256;
    let fb = format.frame_bytes();
    let mut rx = Receiver::new(ReceiverConfig::new(format, period, 40.0)).unwrap();
    let mut tx = Sender::new(format, period, 3, u32::MAX - 500).unwrap();
    let mut history = RetransmitHistory::for_span(48_000, tx.frames_per_packet(), 250.0);
    let capture = vec![5u8; period * fb];
    let mut out = vec![0u8; period * fb];
    let mut datagram = [0u8; 1500];
    let mut nack = [0u8; MAX_NACK_LEN];
    let mut resent = [[0u8; 1500]; 4];
    let mut resent_len = [0usize; 4];
    let mut rng = Rng::new(9);
    let period_ns = period as u64 * 1_000_000_000 / 48_000;
    let scope = AllocScope::begin();
    for k in 0..50_000u64 {
        let t = k * period_ns;
        tx.packetize(&capture, |h, payload| {
            history.record(h, payload);
            // 3 % lost, sometimes three in a row.
            if rng.chance(0.03) {
                return;
            }
            let len = HEADER_LEN + payload.len();
            datagram[..HEADER_LEN].copy_from_slice(h);
            datagram[HEADER_LEN..len].copy_from_slice(payload);
            rx.on_packet(&datagram[..len], t);
        });
        let n = rx.poll_nack(t + 1_000_000, &mut nack);
        if n > 0 {
            let mut m = 0;
            let _ = history.on_nack(t + 1_500_000, &nack[..n], |d| {
                if m < resent.len() {
                    resent[m][..d.len()].copy_from_slice(d);
                    resent_len[m] = d.len();
                    m += 1;
                }
            });
            for i in 0..m {
                rx.on_packet(&resent[i][..resent_len[i]], t + 2_000_000);
            }
        }
        rx.render(&mut out, t + 3_000_000);
    }
    let (n, frees) = (scope.allocations(), scope.frees());
    drop(scope);
    let c = rx.counters();
    assert_eq!(n, 0, "{n} allocations");
    assert_eq!(frees, 0, "{frees} frees");
    assert!(c.nacks_sent > 100 && c.recovered_packets > 100, "{c:?}");
    assert!(history.counters().retransmits > 100);
}
