//! The NACK path under attack allocates and frees nothing: a keyed stream with loss, NACK
//! copies answered, and among them forged, replayed, unsealed and huge-run NACKs; then a
//! sender without a key flooded with whole-history NACKs until its rate cap refuses and
//! reports. Every allocation ([`AllocScope`]) and every free (counted here) on this thread
//! while the loops run is a failure.

use engine::alloc_count::{AllocScope, CountingAlloc};
use engine::auth::{KEY_LEN, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::nack::{MAX_NACK_LEN, MAX_NACK_RUNS, NackRun, emit_nack_round, seal_nack};
use engine::receiver::{Receiver, ReceiverConfig};
use engine::recovery::RetransmitHistory;
use engine::rng::Rng;
use engine::rtlog;
use engine::sender::Sender;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// [`CountingAlloc`], also counting the frees of a thread that asks for it.
struct CountingFrees;

thread_local! {
    static COUNT_FREES: Cell<bool> = const { Cell::new(false) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `CountingAlloc` with the caller's arguments unchanged; the
// bookkeeping touches only thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for CountingFrees {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        unsafe { CountingAlloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        unsafe { CountingAlloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        unsafe { CountingAlloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNT_FREES.try_with(|c| c.get()).unwrap_or(false) {
            let _ = FREES.try_with(|f| f.set(f.get() + 1));
        }
        // SAFETY: same contract as ours, forwarded.
        unsafe { CountingAlloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingFrees = CountingFrees;

/// Counts this thread's allocations and frees from `begin` on.
struct Scope {
    allocs: AllocScope,
    frees: u64,
}

impl Scope {
    fn begin() -> Scope {
        COUNT_FREES.with(|c| c.set(true));
        Scope {
            allocs: AllocScope::begin(),
            frees: FREES.with(|f| f.get()),
        }
    }

    /// (allocations, frees) so far; stops counting frees.
    fn end(self) -> (u64, u64) {
        COUNT_FREES.with(|c| c.set(false));
        (
            self.allocs.allocations(),
            FREES.with(|f| f.get()) - self.frees,
        )
    }
}

#[test]
fn the_counter_sees_frees() {
    let v = std::hint::black_box(vec![1u8; 10]);
    let scope = Scope::begin();
    drop(v);
    assert_eq!(scope.end(), (0, 1));
}

#[test]
fn the_keyed_nack_path_under_attack_never_allocates_or_frees() {
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let period = 256;
    let key = Key::from_bytes([0x61; KEY_LEN]);
    let wrong = Key::from_bytes([0x62; KEY_LEN]);
    let t0 = 1_700_000_000_000_000_000u64;
    let (mut events, mut log) = rtlog::queue();
    let mut rx = Receiver::new(ReceiverConfig::new(format, period, 40.0))
        .unwrap()
        .with_auth(key.clone());
    let mut tx = Sender::new(format, period, 5, u32::MAX - 300)
        .unwrap()
        .with_auth(key.clone(), t0);
    let mut history =
        RetransmitHistory::for_span(48_000, tx.frames_per_packet(), 250.0).with_auth(key.clone());
    let capture = vec![9u8; period * format.frame_bytes()];
    let mut out = vec![0u8; period * format.frame_bytes()];
    let mut datagram = [0u8; 1500];
    let mut nack = [0u8; MAX_NACK_LEN];
    let mut copies = [[0u8; MAX_NACK_LEN]; 4];
    let mut copy_len = [0usize; 4];
    let mut old = [0u8; MAX_NACK_LEN];
    let mut old_len = 0;
    let mut attack = [0u8; MAX_NACK_LEN];
    let mut resent = [[0u8; 1500]; 8];
    let mut resent_len = [0usize; 8];
    let huge = [NackRun {
        first: 0,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let mut rng = Rng::new(11);
    let period_ns = period as u64 * 1_000_000_000 / 48_000;

    let scope = Scope::begin();
    for k in 0..30_000u64 {
        let t = t0 + k * period_ns;
        tx.set_wall_clock(t);
        tx.packetize_tagged(&capture, |head, payload, tag| {
            history.record_parts(head, payload, tag);
            if rng.chance(0.03) {
                return;
            }
            let (a, b) = (head.len(), head.len() + payload.len());
            let len = b + tag.len();
            datagram[..a].copy_from_slice(head);
            datagram[a..b].copy_from_slice(payload);
            datagram[b..len].copy_from_slice(tag);
            rx.on_packet(&datagram[..len], t);
        });
        // The receiver's NACK copies, kept in fixed buffers.
        let mut m = 0;
        rx.poll_nack_copies(t + 1_000_000, &mut nack, |d| {
            if m < copies.len() {
                copies[m][..d.len()].copy_from_slice(d);
                copy_len[m] = d.len();
                m += 1;
            }
        });
        for i in 0..m {
            let mut r = 0;
            let _ = history.on_nack(t + 1_500_000, &copies[i][..copy_len[i]], |d| {
                if r < resent.len() {
                    resent[r][..d.len()].copy_from_slice(d);
                    resent_len[r] = d.len();
                    r += 1;
                }
            });
            for j in 0..r {
                rx.on_packet(&resent[j][..resent_len[j]], t + 2_000_000);
            }
        }
        if m > 0 && k % 7 == 0 {
            old[..copy_len[0]].copy_from_slice(&copies[0][..copy_len[0]]);
            old_len = copy_len[0];
        }
        // The attacker: a replay, a forgery, an unsealed and a wrongly sealed huge NACK.
        let now = t + 1_700_000;
        if old_len > 0 {
            let _ = history.on_nack(now, &old[..old_len], |_| panic!("replay answered"));
            let mut forged = old;
            forged[17] ^= 0x80;
            let _ = history.on_nack(now, &forged[..old_len], |_| panic!("forgery answered"));
        }
        if let Ok(n) = emit_nack_round(5, k as u16, &huge, &mut attack) {
            let _ = history.on_nack(now, &attack[..n], |_| panic!("unsealed answered"));
            if let Ok(n) = seal_nack(&wrong, k, &mut attack) {
                let _ = history.on_nack(now, &attack[..n], |_| panic!("wrong key answered"));
            }
        }
        let _ = history.on_nack(now, &datagram[..37], |_| panic!("junk answered"));
        if let Some(r) = history.poll_event() {
            events.push(r.t_ns, r.event);
        }
        rx.render(&mut out, t + 3_000_000);
    }
    let (allocations, frees) = scope.end();
    log.drain_to_log();
    let c = *history.counters();
    let rc = rx.counters();
    assert_eq!((allocations, frees), (0, 0), "allocations, frees");
    // Every path was taken.
    assert!(
        c.retransmits > 100 && rc.recovered_packets > 100,
        "{c:?} {rc:?}"
    );
    assert!(
        c.nack_replays > 1000 && c.nack_auth_failures > 10_000,
        "{c:?}"
    );
    assert!(c.nacks_ignored > 1000, "{c:?}");
    assert_eq!(rc.lost_packets, 0, "{rc:?}");
}

#[test]
fn a_flooded_sender_without_a_key_caps_and_reports_without_allocating_or_freeing() {
    let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let period = 256;
    let (mut events, mut log) = rtlog::queue();
    let mut tx = Sender::new(format, period, 8, 0).unwrap();
    let mut history = RetransmitHistory::for_span(48_000, tx.frames_per_packet(), 250.0);
    let capture = vec![1u8; period * format.frame_bytes()];
    let mut nack = [0u8; MAX_NACK_LEN];
    let huge = [NackRun {
        first: 0,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let period_ns = period as u64 * 1_000_000_000 / 48_000;
    let mut sent = 0u64;
    let mut resent = 0u64;
    let mut reported = 0u64;
    let scope = Scope::begin();
    for k in 0..20_000u64 {
        let t = k * period_ns;
        tx.packetize(&capture, |h, p| {
            history.record(h, p);
            sent += (h.len() + p.len()) as u64;
        });
        // Ten 204-byte NACKs a period, each a new request of the whole history.
        for i in 0..10u64 {
            let round = (k * 10 + i) as u16;
            if let Ok(n) = emit_nack_round(8, round, &huge, &mut nack) {
                let _ = history.on_nack(t, &nack[..n], |d| resent += d.len() as u64);
            }
        }
        if let Some(r) = history.poll_event() {
            reported += 1;
            events.push(r.t_ns, r.event);
        }
    }
    let (allocations, frees) = scope.end();
    log.drain_to_log();
    assert_eq!((allocations, frees), (0, 0), "allocations, frees");
    let c = history.counters();
    let l = history.limits();
    assert!(c.resends_capped > 100_000, "{c:?}");
    assert!(
        resent <= sent * l.rate_percent as u64 / 100 + l.burst_packets as u64 * 1056,
        "{resent} bytes sent again for {sent}"
    );
    assert!(
        resent >= sent * 45 / 100,
        "the cap lets half through: {resent} of {sent}"
    );
    // About one report a second of the 107 s streamed.
    assert!((100..=108).contains(&reported), "{reported} reports");
}
