//! The time exchange allocates and frees nothing after construction: a keyed receiver's
//! client and a sender's responder run 100 000 exchanges with loss, late and duplicated
//! responses, forged and unsealed datagrams, junk, a step of the sender's clock and a table of
//! receivers that overflows, while the model is read as a driver would (`sender_to_local`,
//! `local_to_sender`, the error estimate). Every allocation and every free on this thread
//! while the loop runs is a failure.

use engine::alloc_count::{AllocScope, CountingAlloc};
use engine::auth::{KEY_LEN, Key};
use engine::rng::Rng;
use engine::sync::packet::{MAX_TS_LEN, TimeRequest, seal};
use engine::sync::{Report, ResponseOutcome, SyncClient, SyncParams, SyncResponder};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn handle_response_and_poll_transmit_never_allocate_or_free() {
    let key = Key::from_bytes([0x44; KEY_LEN]);
    let wrong = Key::from_bytes([0x45; KEY_LEN]);
    let mut client = SyncClient::new(0xC0FFEE, Some(key.clone()), SyncParams::default());
    let mut responder = SyncResponder::new(Some(key.clone()));
    let mut rng = Rng::new(9);
    let mut req = [0u8; MAX_TS_LEN];
    let mut resp = [0u8; MAX_TS_LEN];
    let mut late = [0u8; MAX_TS_LEN];
    let mut late_len = 0usize;
    let mut other = [0u8; MAX_TS_LEN];
    let offset = 123_456_789_000u64;
    let mut now = 1_000_000_000u64;
    let mut taken = 0u64;
    let mut refused = 0u64;
    let mut mapped = 0u64;
    let mut stale = 0u64;

    let scope = AllocScope::begin();
    for k in 0..100_000u64 {
        now = client.poll_timeout().unwrap_or(now).max(now + 1);
        let step = if k >= 60_000 { 7_000_000 } else { 0 };
        let Some(n) = client.poll_transmit(now, &mut req) else {
            continue;
        };
        client.set_report(Some((k % 1000) as i32 - 500), k % 3 == 0);
        let fwd = 300_000 + rng.next_u64() % 2_000_000;
        let t2 = now + fwd + offset + step;
        let t3 = t2 + 20_000;
        let m = match responder.answer(&req[..n], 1, t2, t3, &mut resp) {
            Ok(m) => m,
            Err(e) => panic!("refused {e:?}"),
        };
        let t4 = now + fwd + 20_000 + 300_000 + rng.next_u64() % 2_000_000;
        if !rng.chance(0.01) {
            match client.handle_response(t4, &resp[..m]) {
                ResponseOutcome::Taken { .. } => taken += 1,
                _ => refused += 1,
            }
        }
        // A duplicate, a late copy, a forgery, an unsealed copy and junk: all refused.
        if rng.chance(0.05) {
            let _ = client.handle_response(t4 + 1, &resp[..m]);
        }
        if late_len > 0 {
            stale += matches!(
                client.handle_response(t4 + 2, &late[..late_len]),
                ResponseOutcome::Unmatched
            ) as u64;
            late_len = 0;
        }
        if rng.chance(0.02) {
            late[..m].copy_from_slice(&resp[..m]);
            late_len = m;
        }
        let mut forged = resp;
        forged[25] ^= 1;
        let _ = client.handle_response(t4, &forged[..m]);
        let _ = client.handle_response(t4, &resp[..36]);
        let _ = client.handle_response(t4, &req[..7]);
        // Other receivers (more than the table holds), unsealed and wrongly sealed requests.
        let q = TimeRequest {
            receiver_id: (k % 50) as u32,
            seq: k as u16,
            t1: now,
            report: Report::default(),
        };
        let len = q.emit(&mut other).unwrap();
        let _ = responder.answer(&other[..len], 2, t2, t3, &mut resp);
        let sealed = seal(&wrong, &mut other).unwrap();
        let _ = responder.answer(&other[..sealed], 2, t2, t3, &mut resp);
        let sealed = seal(&key, &mut other).unwrap();
        let _ = responder.answer(&other[..sealed], 2, t2, t3, &mut resp);
        let _ = responder.answer(&other[..sealed], 2, t2, t3, &mut resp);
        if k % 1000 == 0 {
            responder.expire(t2, 1_000_000_000);
        }
        // What a driver reads.
        if let Some(l) = client.sender_to_local(t2) {
            mapped += client.local_to_sender(l).is_some() as u64;
        }
        let _ = client.error_ns();
        let _ = client.locked();
    }
    let (allocations, frees) = (scope.allocations(), scope.frees());
    drop(scope);
    assert_eq!((allocations, frees), (0, 0), "allocations, frees");
    assert!(
        taken > 95_000 && refused < 2_000,
        "{taken} taken, {refused} refused"
    );
    assert!(stale > 1_000, "{stale} late copies refused");
    assert_eq!(client.restarts(), 1, "the step");
    assert!(client.locked());
    assert!(mapped > 99_000, "{mapped}");
    let c = responder.counters();
    assert!(c.unauthentic >= 200_000 && c.replayed >= 100_000, "{c:?}");
    assert!(responder.receivers().iter().any(|e| e.id == 0xC0FFEE));
}
