//! `netaudio send` → `netaudio recv` as separate processes on loopback, under attack and
//! faults: an attacker with forged, foreign, replayed and truncated packets against a keyed
//! stream; a flood of junk at 100 times the packet rate; NACK floods against the sender from
//! the receiver's address (forged and replayed against a keyed sender, whole-history runs
//! against one without a key); a receiver restart; a sound card unplugged and plugged back on
//! either side, with virtual cards and with ALSA devices on a private JACK server (the same
//! rig as `tests/alsa_backend.rs`), where `NETAUDIO_TEST_FAULT=capture-gone|playback-gone`
//! makes the daemon's device report ENODEV and it is really closed and opened again off the
//! realtime thread. The receiver's virtual sound card checks every
//! frame it plays against the sender's ramp, so anything played that was not sent in order is
//! a gap it hears.
//!
//! Each test prints its figures (`cargo test -- --nocapture` shows them).

use engine::auth::{KEY_LEN, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::nack::{MAX_NACK_LEN, MAX_NACK_RUNS, NackRun, emit_nack_round, seal_nack};
use engine::recovery::{DEFAULT_HISTORY_MS, RetransmitHistory};
use engine::sender::Sender;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn sleep_s(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

const RATE: u32 = 48_000;
const PERIOD: usize = 256;
fn format() -> StreamFormat {
    StreamFormat::new(RATE, 2, SampleFormat::S16Le).unwrap()
}

/// A key file with mode 600.
fn key_file(name: &str, key: &Key) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, key.to_hex() + "\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn recv(port: u16, device: &str, json: &Path, key: Option<&Path>) -> Child {
    let mut c = bin();
    c.args(["recv", "--device", device, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--latency-ms", "40", "--stats-interval", "0"])
        .args(["--status-socket"])
        .arg(json.with_extension("sock"))
        .args(FMT)
        .arg("--stats-json")
        .arg(json)
        .stderr(Stdio::null());
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c.spawn().unwrap()
}

fn send(port: u16, device: &str, json: &Path, key: Option<&Path>) -> Child {
    let mut c = bin();
    c.args(["send", "--device", device, "--dest"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--stats-interval", "0", "--status-socket"])
        .arg(json.with_extension("sock"))
        .args(FMT)
        .arg("--stats-json")
        .arg(json)
        .stderr(Stdio::null());
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c.spawn().unwrap()
}

fn u(j: &Value, k: &str) -> u64 {
    j[k].as_u64().unwrap_or_else(|| panic!("no {k} in {j}"))
}

/// A UDP forwarder between the sender and the receiver that also records every datagram:
/// the attacker's tap.
struct Tap {
    port: u16,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tap {
    fn new(to: u16) -> Tap {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (recorded.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let out = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let _ = out.send_to(&buf[..n], ("127.0.0.1", to));
                    rec.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Tap {
            port,
            recorded,
            stop,
            thread: Some(thread),
        }
    }

    fn recorded(&self) -> Vec<Vec<u8>> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the attacker sent, by kind.
#[derive(Debug, Default)]
struct Sent {
    forged: u64,
    foreign: u64,
    untagged: u64,
    replayed: u64,
    truncated: u64,
}

/// Attacks the receiver on `port` for `secs`: each round a forged copy of a recent packet
/// (one payload bit flipped), a packet of a foreign stream made with another key, an untagged
/// packet, a replay of an earlier packet from `replay_from`, and a truncated copy.
fn attack(port: u16, tap: &Tap, replay_from: &[Vec<u8>], secs: f64, sent: &mut Sent) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    let wrong = Key::from_bytes([0xEE; KEY_LEN]);
    let mut foreign = Sender::new(format(), PERIOD, 0xF0E1, 0)
        .unwrap()
        .with_auth(wrong, now_realtime());
    let mut plain = Sender::new(format(), PERIOD, 0xF0E2, 0).unwrap();
    let pcm = vec![0x55u8; PERIOD * 4];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut k = 0usize;
    while Instant::now() < end {
        let recent = tap.recorded();
        let Some(last) = recent.last() else {
            sleep_s(0.01);
            continue;
        };
        let mut forged = last.clone();
        let i = 48 + (k * 7) % (forged.len() - 64);
        forged[i] ^= 0x01;
        sock.send_to(&forged, to).unwrap();
        sent.forged += 1;
        foreign.set_wall_clock(now_realtime());
        foreign.packetize_tagged(&pcm, |h, p, t| {
            sock.send_to(&[h, p, t].concat(), to).unwrap();
            sent.foreign += 1;
        });
        plain.packetize(&pcm, |h, p| {
            sock.send_to(&[&h[..], p].concat(), to).unwrap();
            sent.untagged += 1;
        });
        let pool = if replay_from.is_empty() {
            &recent[..]
        } else {
            replay_from
        };
        // Alternately a packet from far back and one just sent.
        let r = if k % 2 == 0 {
            &pool[(k * 13) % pool.len()]
        } else {
            &pool[pool.len() - 1]
        };
        sock.send_to(r, to).unwrap();
        sent.replayed += 1;
        let cut = (k * 31) % last.len();
        sock.send_to(&last[..cut], to).unwrap();
        sent.truncated += 1;
        k += 1;
        sleep_s(0.01);
    }
}

fn now_realtime() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn forged_foreign_replayed_and_truncated_packets_are_never_played() {
    let _serial = serial();
    let key = Key::from_bytes([0x11; KEY_LEN]);
    let kf = key_file("attack.key", &key);
    let port = free_port();
    let (rj, sj, sj2) = (tmp("a-recv.json"), tmp("a-send.json"), tmp("a-send2.json"));
    let mut r = recv(port, "virtual", &rj, Some(&kf));
    let tap = Tap::new(port);
    let rs = status_socket(&rj);
    wait_status(&mut r, &rs, "the receiver to be ready", |_| true);
    let mut s = send(tap.port, "virtual", &sj, Some(&kf));
    wait_status(&mut r, &rs, "1 s of the stream", |v| received(v) >= 187);
    let mut sent = Sent::default();
    // Phase 1: attacks on the stream playing.
    attack(port, &tap, &[], 3.0, &mut sent);
    // The sender restarts (a clean stop: its END packets end the first stream); the first
    // stream's recording, END packets included, is now a replay of an older stream.
    terminate(&mut s);
    let first_stream = tap.recorded();
    let mut s2 = send(tap.port, "virtual", &sj2, Some(&kf));
    let n0 = received(&wait_status(&mut r, &rs, "the first stream's end", |v| {
        v["streams_ended"].as_u64() >= Some(1)
    }));
    wait_status(&mut r, &rs, "1 s of the second stream", |v| {
        v["resyncs"].as_u64() >= Some(1) && received(v) >= n0 + 187
    });
    let replays_before = sent.replayed;
    attack(port, &tap, &first_stream, 3.0, &mut sent);
    let old_stream_replays = sent.replayed - replays_before;
    // Every attacking datagram has reached the receiver and been counted.
    let refused = sent.forged + sent.foreign + sent.untagged + sent.replayed + sent.truncated;
    wait_status(&mut r, &rs, "every attacking datagram counted", |v| {
        ["auth_failures", "replayed_packets", "invalid_packets"]
            .iter()
            .map(|k| v[k].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= refused
    });
    terminate(&mut r);
    terminate(&mut s2);
    let j = read_json(&rj);
    println!("attacker sent {sent:?}; receiver: {j}");
    // The old stream ended, so the new one took over at once: one resync and no gap (the
    // replayed END packets of the old stream stopped nothing). The virtual card's analyzer,
    // which knows only the samples, hears the stop-and-start as its only gap.
    assert_eq!(u(&j, "resyncs"), 1, "{j}");
    assert_eq!(u(&j, "streams_ended"), 1, "{j}");
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(
        u(&j, "heard_gaps"),
        1,
        "nothing forged or replayed was played: {j}"
    );
    assert!(u(&j, "heard_frames") > 48_000 * 6, "{j}");
    // Every attacking datagram dropped and counted.
    assert_eq!(
        u(&j, "auth_failures"),
        sent.forged + sent.foreign + sent.untagged,
        "{j}"
    );
    assert_eq!(u(&j, "replayed_packets"), sent.replayed, "{j}");
    assert_eq!(u(&j, "invalid_packets"), sent.truncated, "{j}");
    assert_eq!(u(&j, "stale_packets"), 0, "{j}");
    assert!(old_stream_replays > 100 && sent.forged > 200, "{sent:?}");
    assert_eq!(u(&j, "foreign_packets"), 0, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
}

/// Resident memory of a process, kB.
fn vm_rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_flood_at_100_times_the_packet_rate_leaves_the_stream_alone() {
    let _serial = serial();
    let key = Key::from_bytes([0x22; KEY_LEN]);
    let kf = key_file("flood.key", &key);
    let port = free_port();
    let (rj, sj) = (tmp("f-recv.json"), tmp("f-send.json"));
    let mut r = recv(port, "virtual", &rj, Some(&kf));
    let rsock = status_socket(&rj);
    wait_status(&mut r, &rsock, "the receiver up", |_| true);
    let mut s = send(port, "virtual", &sj, Some(&kf));
    wait_status(&mut r, &rsock, "the stream playing for 1.5 s", |v| {
        received(v) >= 280
    });
    // 100 x 187.5 packets/s, in bursts every 10 ms, for 5 s.
    let packet_rate = RATE as f64 / PERIOD as f64;
    let target = 100.0 * packet_rate;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    let mut foreign = Sender::new(format(), PERIOD, 0xF1, 0)
        .unwrap()
        .with_auth(Key::from_bytes([0x33; KEY_LEN]), now_realtime());
    let pcm = vec![0xA5u8; PERIOD * 4];
    let mut junk = [0u8; 1200];
    let rss_start = vm_rss_kb(r.id());
    let start = Instant::now();
    let mut sent = 0u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while start.elapsed() < Duration::from_secs(5) {
        let due = (start.elapsed().as_secs_f64() * target) as u64;
        while sent < due {
            if sent % 2 == 0 {
                // Junk of random length and content.
                x = engine::rng::mix64(x);
                let len = (x % junk.len() as u64) as usize;
                for (i, b) in junk[..len].iter_mut().enumerate() {
                    *b = (x >> (i % 8 * 8)) as u8 ^ i as u8;
                }
                let _ = sock.send_to(&junk[..len], to);
            } else {
                // Well formed, of another stream, tagged with another key.
                foreign.set_wall_clock(now_realtime());
                foreign.packetize_tagged(&pcm, |h, p, t| {
                    let _ = sock.send_to(&[h, p, t].concat(), to);
                });
            }
            sent += 1;
        }
        sleep_s(0.01);
    }
    let flood_secs = start.elapsed().as_secs_f64();
    let rss_end = vm_rss_kb(r.id());
    sleep_s(0.5);
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    let achieved = sent as f64 / flood_secs;
    println!(
        "flood: {sent} datagrams in {flood_secs:.2} s = {achieved:.0}/s ({:.0}x the packet rate); \
         receiver VmRSS {rss_start} kB -> {rss_end} kB; receiver: {j}",
        achieved / packet_rate
    );
    assert!(achieved >= 0.95 * target, "flood rate {achieved:.0}/s");
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 0, "{j}");
    assert_eq!(u(&j, "lost_packets"), 0, "{j}");
    assert_eq!(u(&j, "late_renders"), 0, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
    assert!(
        rss_end <= rss_start + 1024,
        "memory grew under the flood: {rss_start} -> {rss_end} kB"
    );
    // Every flood datagram was seen and dropped: junk as invalid (or, if it happens to parse,
    // unauthenticated), the foreign stream as unauthenticated.
    let dropped = u(&j, "invalid_packets") + u(&j, "auth_failures");
    assert_eq!(dropped, sent, "{j}");
    assert_eq!(u(&j, "resyncs"), 0, "{j}");
}

/// Frames in the largest packet a sender makes for [`format`]: the datagram limit less the
/// header and the largest tag, in whole frames.
const BIGGEST_PACKET_FRAMES: usize =
    (engine::wire::MAX_PACKET_LEN - engine::wire::HEADER_LEN - engine::wire::MAX_TAG_LEN) / 4;

#[test]
fn a_flood_that_costs_the_whole_authentication_makes_no_render_late() {
    let _serial = serial();
    let key = Key::from_bytes([0x44; KEY_LEN]);
    let kf = key_file("forged-flood.key", &key);
    let port = free_port();
    let (rj, sj) = (tmp("ff-recv.json"), tmp("ff-send.json"));
    let mut r = Reaper(recv(port, "virtual", &rj, Some(&kf)));
    let rsock = status_socket(&rj);
    wait_status(&mut r, &rsock, "the receiver up", |_| true);
    let tap = Tap::new(port);
    let mut s = Reaper(send(tap.port, "virtual", &sj, Some(&kf)));
    wait_status(&mut r, &rsock, "the stream playing for 1.5 s", |v| {
        received(v) >= 280
    });
    // The stream playing, as the tap saw it: its id and session.
    let first = wait_for("a packet through the tap", STATE_TIMEOUT, || {
        tap.recorded().first().cloned()
    });
    let id = u32::from_be_bytes(first[4..8].try_into().unwrap());
    let session = u64::from_be_bytes(first[32..40].try_into().unwrap());
    // Packets of that stream, well formed, as long as a datagram may be, tagged with another
    // key: each one costs the receiver the keyed hash over all of it before it is refused.
    let mut forger = Sender::new(format(), BIGGEST_PACKET_FRAMES, id, 1 << 20)
        .unwrap()
        .with_auth(Key::from_bytes([0x45; KEY_LEN]), session);
    let pcm = vec![0x5Au8; BIGGEST_PACKET_FRAMES * 4];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    // 100 x 187.5 packets/s, in bursts every 10 ms, for 5 s.
    let packet_rate = RATE as f64 / PERIOD as f64;
    let target = 100.0 * packet_rate;
    let mut len = 0;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        let due = (start.elapsed().as_secs_f64() * target) as u64;
        while sent < due {
            forger.set_wall_clock(now_realtime());
            forger.packetize_tagged(&pcm, |h, p, t| {
                let d = [h, p, t].concat();
                len = d.len();
                let _ = sock.send_to(&d, to);
            });
            sent += 1;
        }
        sleep_s(0.01);
    }
    let flood_secs = start.elapsed().as_secs_f64();
    // Every forged packet seen and refused.
    wait_status(&mut r, &rsock, "every forged packet refused", |v| {
        u(v, "auth_failures") >= sent
    });
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    let achieved = sent as f64 / flood_secs;
    println!(
        "forged flood: {sent} datagrams of {len} bytes of stream {id:08x} in {flood_secs:.2} s = \
         {achieved:.0}/s ({:.0}x the packet rate); receiver: {j}",
        achieved / packet_rate
    );
    assert_eq!(len, engine::wire::MAX_PACKET_LEN);
    assert!(achieved >= 0.95 * target, "flood rate {achieved:.0}/s");
    assert_eq!(u(&j, "auth_failures"), sent, "{j}");
    assert_eq!(u(&j, "late_renders"), 0, "{j}");
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 0, "{j}");
    assert_eq!(u(&j, "lost_packets"), 0, "{j}");
    assert_eq!(u(&j, "resyncs"), 0, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
}

#[test]
fn a_restarted_receiver_takes_the_keyed_stream_up_again() {
    let _serial = serial();
    let key = Key::from_bytes([0x44; KEY_LEN]);
    let kf = key_file("restart.key", &key);
    let port = free_port();
    let (rj, rj2, sj) = (tmp("r-recv.json"), tmp("r-recv2.json"), tmp("r-send.json"));
    let mut r = recv(port, "virtual", &rj, Some(&kf));
    let rs = status_socket(&rj);
    wait_status(&mut r, &rs, "the receiver to be ready", |_| true);
    let mut s = send(port, "virtual", &sj, Some(&kf));
    wait_status(&mut r, &rs, "2.5 s of the stream", |v| received(v) >= 470);
    // The receiver dies without a word; a new one starts a little later.
    r.kill().unwrap();
    r.wait().unwrap();
    // Nobody listens for a second (the sender's refused sends are counted).
    sleep_s(1.0);
    let mut r2 = recv(port, "virtual", &rj2, Some(&kf));
    wait_status(
        &mut r2,
        &status_socket(&rj2),
        "3 s of the stream taken up",
        |v| received(v) >= 560,
    );
    terminate(&mut r2);
    terminate(&mut s);
    let (j, sj) = (read_json(&rj2), read_json(&sj));
    println!("restarted receiver: {j}\nsender: {sj}");
    assert!(u(&j, "packets_received") > 400, "the stream resumed: {j}");
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 0, "{j}");
    assert_eq!(u(&j, "stale_packets") + u(&j, "auth_failures"), 0, "{j}");
    // While nobody listened the sender's packets were refused, and counted.
    assert!(u(&sj, "send_errors") > 0, "{sj}");
    assert_eq!(u(&sj, "allocations_rt"), 0, "{sj}");
    assert_eq!(u(&sj, "frees_rt"), 0, "{sj}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
}

#[test]
fn an_unplugged_capture_card_is_reopened_and_the_stream_resumes() {
    let _serial = serial();
    let port = free_port();
    let (rj, sj) = (tmp("u-recv.json"), tmp("u-send.json"));
    let mut r = recv(port, "virtual", &rj, None);
    let rs = status_socket(&rj);
    wait_status(&mut r, &rs, "the receiver to be ready", |_| true);
    let mut s = send(port, "virtual:unplug=2s+1s", &sj, None);
    // The card goes away 2 s after it opened, for 1 s.
    wait_status(&mut s, &status_socket(&sj), "the capture card lost", |v| {
        v["device_lost"].as_u64() >= Some(1)
    });
    let n0 = received(&status(&rs).expect("the receiver answers"));
    // The card back as a new stream, and 2.5 s of it.
    wait_status(
        &mut r,
        &rs,
        "2.5 s of the stream after the card came back",
        |v| v["resyncs"].as_u64() >= Some(1) && received(v) >= n0 + 470,
    );
    terminate(&mut r);
    terminate(&mut s);
    let (j, sj) = (read_json(&rj), read_json(&sj));
    println!("capture unplugged: sender {sj}\nreceiver {j}");
    assert_eq!(u(&sj, "device_lost"), 1, "{sj}");
    assert_eq!(u(&sj, "allocations_rt"), 0, "{sj}");
    assert_eq!(u(&sj, "frees_rt"), 0, "{sj}");
    // The card came back as a new stream: one resync, one gap, heard as one.
    assert_eq!(u(&j, "resyncs"), 1, "{j}");
    assert_eq!(u(&j, "gaps"), 1, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 1, "{j}");
    // About 2.5 s of the 6 were played from the card after it came back, 2 before.
    assert!(u(&j, "packets_received") > 187 * 3, "{j}");
}

#[test]
fn an_unplugged_playback_card_is_reopened_and_plays_again() {
    let _serial = serial();
    let port = free_port();
    let (rj, sj) = (tmp("p-recv.json"), tmp("p-send.json"));
    // (Late enough that the stream is heard first: the first stream plays once its drift is
    // measured, within 3 s of its first packet.)
    let mut r = recv(port, "virtual:unplug=4s+1s", &rj, None);
    let rs = status_socket(&rj);
    wait_status(&mut r, &rs, "the receiver to be ready", |_| true);
    let mut s = send(port, "virtual", &sj, None);
    // The card goes away 4 s after it opened, for 1 s; the network side stays up.
    let lost = wait_status(&mut r, &rs, "the playback card lost", |v| {
        v["device_lost"].as_u64() >= Some(1)
    });
    let n0 = received(&lost);
    let before = received(&wait_status(&mut r, &rs, "1.5 s after the loss", |v| {
        received(v) >= n0 + 280
    }));
    let after = received(&wait_status(&mut r, &rs, "2 s more of the stream", |v| {
        received(v) >= before + 375
    }));
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    println!("playback unplugged: receiver {j}");
    assert_eq!(u(&j, "device_lost"), 1, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
    assert!(after > before + 300, "playing again: {before} -> {after}");
    // The outage is heard as gaps, each counted by the engine too.
    assert!(u(&j, "heard_gaps") >= 1, "{j}");
    assert!(u(&j, "gaps") >= 1, "{j}");
    // After the card came back, more than a second of audio was played.
    assert!(u(&j, "heard_frames") > 48_000 * 3, "{j}");
}

/// A private `jackd` (dummy driver, its own server name) and the ALSA devices of
/// `tests/data/alsa_rig.conf` on it, for daemons started with [`JackRig::daemon`]. Stopped on
/// drop.
struct JackRig {
    jackd: Reaper,
    server: String,
    conf: PathBuf,
}

impl JackRig {
    /// Starts the rig, or says why it cannot and returns `None` (a failure instead with
    /// `NETAUDIO_ALSA_RIG=require`).
    fn start(name: &str) -> Option<JackRig> {
        let missing = ["jackd", "jack_lsp"].into_iter().find(|b| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
        });
        let plugin = ["/usr/lib", "/usr/lib64", "/usr/local/lib"]
            .iter()
            .any(|root| {
                Path::new(root)
                    .join("alsa-lib/libasound_module_pcm_jack.so")
                    .is_file()
                    || std::fs::read_dir(root).is_ok_and(|dirs| {
                        dirs.flatten().any(|d| {
                            d.path()
                                .join("alsa-lib/libasound_module_pcm_jack.so")
                                .is_file()
                        })
                    })
            });
        let why = match (missing, plugin) {
            (Some(b), _) => Some(format!("`{b}` not found (package jackd2)")),
            (None, false) => Some("the JACK ALSA plugin is missing (libasound2-plugins)".into()),
            (None, true) => None,
        };
        if let Some(why) = why {
            assert!(
                std::env::var("NETAUDIO_ALSA_RIG").as_deref() != Ok("require"),
                "ALSA rig required but unavailable: {why}"
            );
            eprintln!("SKIPPED: ALSA rig unavailable: {why}");
            return None;
        }
        let server = format!("netaudio-robustness-{}-{name}", std::process::id());
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/alsa_rig.conf");
        let log = std::fs::File::create(tmp(&format!("jackd-{name}.log"))).unwrap();
        let mut cmd = Command::new("jackd");
        let hook = || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling process.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec and only calls prctl(2), which
        // is async-signal-safe: jackd stops when this test process dies.
        unsafe { cmd.pre_exec(hook) };
        let jackd = cmd
            .args([
                "-R", "-P", "70", "-S", "-d", "dummy", "-r", "48000", "-p", "256",
            ])
            .env("JACK_DEFAULT_SERVER", &server)
            .env("JACK_NO_AUDIO_RESERVATION", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start jackd");
        let rig = JackRig {
            jackd: Reaper(jackd),
            server,
            conf,
        };
        wait_for("jackd's ports", STATE_TIMEOUT, || {
            let out = Command::new("jack_lsp")
                .env("JACK_DEFAULT_SERVER", &rig.server)
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let ports = String::from_utf8_lossy(&out.stdout).into_owned();
            (ports.contains("system:playback_1") && ports.contains("system:capture_1"))
                .then_some(())
        });
        Some(rig)
    }

    /// `netaudio ARGS` on this rig, with `NETAUDIO_TEST_FAULT=fault`, logging to `log`.
    fn daemon(&self, args: &[&str], fault: &str, log: &Path) -> Reaper {
        let log = std::fs::File::create(log).unwrap();
        let child = bin()
            .args(args)
            .args(FMT)
            .args(["--stats-interval", "0"])
            .env("JACK_DEFAULT_SERVER", &self.server)
            .env(
                "ALSA_CONFIG_PATH",
                format!("/usr/share/alsa/alsa.conf:{}", self.conf.display()),
            )
            .env("NETAUDIO_TEST_FAULT", fault)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Reaper(child)
    }
}

impl Drop for JackRig {
    fn drop(&mut self) {
        // SAFETY: kill sends a signal to our own child.
        unsafe { libc::kill(self.jackd.id() as i32, libc::SIGTERM) };
        let _ = self.jackd.wait();
    }
}

/// What the daemon logged to `log` says the device's reopener thread closed the lost device
/// and opened it again, and the realtime loop took it back.
fn assert_reopened_off_the_rt_thread(log: &Path, stream: &str, device: &str) {
    let text = std::fs::read_to_string(log).unwrap();
    for want in [
        format!("test fault {stream}-gone injected into the ALSA device"),
        format!("{stream} device lost (errno {})", libc::ENODEV),
        format!("ALSA {stream} device \"{device}\" lost: closed it"),
        format!("ALSA {stream} device \"{device}\" open again after 1 attempt(s)"),
        format!("{stream} device back"),
    ] {
        assert!(text.contains(&want), "no {want:?} in the log:\n{text}");
    }
}

#[test]
fn an_alsa_capture_device_lost_is_reopened_off_the_realtime_thread_and_the_stream_resumes() {
    let _serial = serial();
    let Some(rig) = JackRig::start("capture") else {
        return;
    };
    let port = free_port();
    let (rj, sj, slog) = (
        tmp("rig-c-recv.json"),
        tmp("rig-c-send.json"),
        tmp("rig-c-send.log"),
    );
    let mut r = Reaper(recv(port, "virtual", &rj, None));
    let (rsock, ssock) = (status_socket(&rj), status_socket(&sj));
    let dest = format!("127.0.0.1:{port}");
    let mut s = rig.daemon(
        &[
            "send",
            "--device",
            "na_cap",
            "--dest",
            &dest,
            "--stats-json",
            sj.to_str().unwrap(),
            "--status-socket",
            ssock.to_str().unwrap(),
        ],
        "capture-gone",
        &slog,
    );
    // The fault comes after the watchdog's second feed, about 2 s in.
    let lost = wait_status(&mut s, &ssock, "the capture device lost", |v| {
        v["device_lost"] == 1
    });
    let sent = lost["packets_sent"].as_u64().unwrap();
    // Back: a second of packets more (188 per second), and the receiver takes them up as a
    // new stream.
    wait_status(&mut s, &ssock, "the stream sent again", |v| {
        v["packets_sent"].as_u64().unwrap() > sent + 188
    });
    let got = wait_status(&mut r, &rsock, "the new stream received", |v| {
        v["resyncs"] == 1
    });
    let before = received(&got);
    wait_status(&mut r, &rsock, "the new stream playing on", |v| {
        received(v) > before + 188
    });
    terminate(&mut s);
    terminate(&mut r);
    let (sj, j) = (read_json(&sj), read_json(&rj));
    println!("ALSA capture lost: sender {sj}\nreceiver {j}");
    assert_eq!(u(&sj, "device_lost"), 1, "{sj}");
    assert_eq!(u(&sj, "xruns"), 0, "{sj}");
    assert_eq!(u(&sj, "allocations_rt"), 0, "{sj}");
    assert_eq!(u(&sj, "frees_rt"), 0, "{sj}");
    assert_eq!(u(&j, "resyncs"), 1, "{j}");
    assert_reopened_off_the_rt_thread(&slog, "capture", "na_cap");
    drop(rig);
}

#[test]
fn an_alsa_playback_device_lost_is_reopened_off_the_realtime_thread_and_plays_again() {
    let _serial = serial();
    let Some(rig) = JackRig::start("playback") else {
        return;
    };
    let port = free_port();
    let (rj, sj, rlog) = (
        tmp("rig-p-recv.json"),
        tmp("rig-p-send.json"),
        tmp("rig-p-recv.log"),
    );
    let rsock = status_socket(&rj);
    let listen = format!("127.0.0.1:{port}");
    let mut r = rig.daemon(
        &[
            "recv",
            "--device",
            "na_out",
            "--listen",
            &listen,
            "--latency-ms",
            "40",
            "--stats-json",
            rj.to_str().unwrap(),
            "--status-socket",
            rsock.to_str().unwrap(),
        ],
        "playback-gone",
        &rlog,
    );
    let mut s = Reaper(send(port, "virtual", &sj, None));
    let lost = wait_status(&mut r, &rsock, "the playback device lost", |v| {
        v["device_lost"] == 1
    });
    let played = lost["frames_played"].as_u64().unwrap();
    // Back: a second more played into the reopened device, the stream still coming in.
    wait_status(&mut r, &rsock, "playing again", |v| {
        v["frames_played"].as_u64().unwrap() > played + u64::from(RATE)
    });
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    println!("ALSA playback lost: receiver {j}");
    assert_eq!(u(&j, "device_lost"), 1, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert_eq!(u(&j, "frees_rt"), 0, "{j}");
    assert!(u(&j, "packets_received") > 0, "{j}");
    assert_reopened_off_the_rt_thread(&rlog, "playback", "na_out");
    drop(rig);
}

#[test]
fn keygen_makes_a_key_and_an_open_key_file_is_refused_with_the_fix() {
    let _serial = serial();
    let out = bin().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = Key::from_hex(&text).expect("64 hex characters");
    assert_eq!(text.len(), 65, "{text:?}");
    let p = key_file("open.key", &key);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bin()
        .args([
            "recv",
            "--device",
            "virtual",
            "--listen",
            "127.0.0.1:0",
            "--key-file",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&p.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );
    // `check` reports the key file.
    let cfg = tmp("keyed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audio]\ndevice = \"virtual\"\n[network]\nkey_file = \"{}\"\n",
            p.display()
        ),
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL key file") && text.contains("chmod 600"),
        "{text}"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok   key file") && text.contains("valid key"),
        "{text}"
    );
}

/// Waits until `cond` holds, up to `secs`; whether it did.
fn wait_until(secs: f64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// What the NACK proxy saw.
#[derive(Default)]
struct ProxyCounts {
    /// Bytes of packets seen for the first time (the stream).
    first_bytes: AtomicU64,
    /// Bytes of packets seen before (sent again on request).
    resent_bytes: AtomicU64,
    /// Packets seen before.
    resent: AtomicU64,
    /// Packets dropped on the way to the receiver.
    dropped: AtomicU64,
    /// NACKs from the receiver passed on to the sender.
    nacks: AtomicU64,
}

/// A UDP proxy standing where the sender believes its receiver is: packets from the sender go
/// on to the receiver (about one in `1 / loss` dropped, so the receiver asks for some), NACKs
/// from the receiver go back to the sender and are recorded. Datagrams a test sends with
/// [`NackProxy::inject`] reach the sender from the address it sends to: a spoofed receiver.
/// Packets whose (stream, sequence number) was seen before count as sent again.
struct NackProxy {
    port: u16,
    sock: UdpSocket,
    sender: Arc<Mutex<Option<SocketAddr>>>,
    stream_id: Arc<AtomicU64>,
    latest_seq: Arc<AtomicU64>,
    nacks: Arc<Mutex<Vec<Vec<u8>>>>,
    counts: Arc<ProxyCounts>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NackProxy {
    fn new(to: u16, loss: f64) -> NackProxy {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let sender = Arc::new(Mutex::new(None));
        let stream_id = Arc::new(AtomicU64::new(u64::MAX));
        let latest_seq = Arc::new(AtomicU64::new(0));
        let nacks = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(ProxyCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (rx_sock, snd, sid, lseq, nk, c, st) = (
            sock.try_clone().unwrap(),
            sender.clone(),
            stream_id.clone(),
            latest_seq.clone(),
            nacks.clone(),
            counts.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let receiver: SocketAddr = format!("127.0.0.1:{to}").parse().unwrap();
            let mut seen = HashSet::new();
            let mut rng = engine::rng::Rng::new(17);
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = rx_sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                if from == receiver {
                    let to_sender = *snd.lock().unwrap();
                    if let Some(s) = to_sender {
                        let _ = rx_sock.send_to(d, s);
                        c.nacks.fetch_add(1, Ordering::Relaxed);
                        nk.lock().unwrap().push(d.to_vec());
                    }
                    continue;
                }
                *snd.lock().unwrap() = Some(from);
                if n >= 32 && &d[..2] == b"NA" {
                    let id = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
                    let seq = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                    sid.store(id as u64, Ordering::Relaxed);
                    if seen.insert((id, seq)) {
                        lseq.store(seq as u64, Ordering::Relaxed);
                        c.first_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    } else {
                        c.resent_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        c.resent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if rng.chance(loss) {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = rx_sock.send_to(d, receiver);
            }
        });
        NackProxy {
            port,
            sock,
            sender,
            stream_id,
            latest_seq,
            nacks,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends `d` to the sender from the proxy's address (where its receiver is).
    fn inject(&self, d: &[u8]) {
        let to = self
            .sender
            .lock()
            .unwrap()
            .expect("the sender is streaming");
        self.sock.send_to(d, to).unwrap();
    }

    fn stream_id(&self) -> Option<u32> {
        let v = self.stream_id.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v as u32)
    }

    /// The newest sequence number the sender sent.
    fn latest_seq(&self) -> u32 {
        self.latest_seq.load(Ordering::Relaxed) as u32
    }

    fn nacks(&self) -> Vec<Vec<u8>> {
        self.nacks.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&ProxyCounts) -> &AtomicU64) -> u64 {
        f(&self.counts).load(Ordering::Relaxed)
    }
}

impl Drop for NackProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `netaudio send` as [`send`] does, its log written to `log`.
fn send_logged(port: u16, json: &Path, key: Option<&Path>, log: &Path) -> Reaper {
    let mut c = bin();
    c.args(["send", "--device", "virtual", "--dest"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--stats-interval", "0", "--status-socket"])
        .arg(json.with_extension("sock"))
        .args(FMT)
        .arg("--stats-json")
        .arg(json)
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    Reaper(c.spawn().unwrap())
}

/// A daemon's `netaudio status --json`, if it answers.
fn sender_status(socket: &Path) -> Option<Value> {
    let out = bin()
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The most the sender may send again for `first_bytes` of stream: its rate cap's share plus
/// one full bucket (and a few packets in flight when the proxy counted).
fn resend_cap_bytes(first_bytes: u64, packet_len: u64) -> u64 {
    let h = RetransmitHistory::for_span(RATE, PERIOD, DEFAULT_HISTORY_MS);
    let l = h.limits();
    first_bytes * l.rate_percent as u64 / 100 + (l.burst_packets as u64 + 4) * packet_len
}

#[test]
fn forged_and_replayed_nacks_cost_a_keyed_sender_nothing() {
    let _serial = serial();
    let key = Key::from_bytes([0x55; KEY_LEN]);
    let kf = key_file("nack.key", &key);
    let port = free_port();
    let (rj, sj, log) = (tmp("n-recv.json"), tmp("n-send.json"), tmp("n-send.log"));
    let mut r = Reaper(recv(port, "virtual", &rj, Some(&kf)));
    let proxy = NackProxy::new(port, 0.03);
    let mut s = send_logged(proxy.port, &sj, Some(&kf), &log);
    // Ready: the stream flows and the receiver has asked for a few packets again.
    assert!(
        wait_until(10.0, || proxy.nacks().len() >= 6
            && proxy.stream_id().is_some()),
        "no NACKs from the receiver"
    );
    let id = proxy.stream_id().unwrap();
    let wrong = Key::from_bytes([0x56; KEY_LEN]);
    let whole = [NackRun {
        first: 0,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let mut buf = [0u8; MAX_NACK_LEN];
    let (mut forged, mut replayed) = (0u64, 0u64);
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed() < Duration::from_secs(4) {
        // Every 10 ms: an unsealed and a wrongly sealed whole-history NACK, a real NACK with
        // one bit changed, and five replays of real NACKs (the latest and older ones).
        let round = k as u16 | 1;
        let mut runs = whole;
        runs[0].first = proxy.latest_seq().wrapping_sub(1000);
        let n = emit_nack_round(id, round, &runs, &mut buf).unwrap();
        proxy.inject(&buf[..n]);
        let n = seal_nack(&wrong, u64::MAX - k, &mut buf).unwrap();
        proxy.inject(&buf[..n]);
        let real = proxy.nacks();
        let mut changed = real[real.len() - 1].clone();
        let i = 12 + (k as usize * 5) % (changed.len() - 12);
        changed[i] ^= 0x04;
        proxy.inject(&changed);
        forged += 3;
        for j in 0..5 {
            let d = if j == 0 {
                &real[real.len() - 1]
            } else {
                &real[(k as usize * 7 + j) % real.len()]
            };
            proxy.inject(d);
            replayed += 1;
        }
        k += 1;
        sleep_s(0.01);
    }
    // Let the sender take what is queued, then stop both.
    // Ready to stop when the sender has counted every datagram the attacker sent.
    let status = sj.with_extension("sock");
    let counted = wait_until(5.0, || {
        sender_status(&status).is_some_and(|v| {
            u(&v, "nack_auth_failures") + u(&v, "nack_replays") >= forged + replayed
        })
    });
    terminate(&mut r);
    terminate(&mut s);
    let (j, sjv) = (read_json(&rj), read_json(&sj));
    let first = proxy.count(|c| &c.first_bytes);
    let resent = proxy.count(|c| &c.resent_bytes);
    println!(
        "keyed NACK attack: {forged} forged, {replayed} replayed, {} real NACKs; \
         proxy: {first} bytes of stream, {resent} sent again ({} packets), {} dropped\n\
         sender: {sjv}\nreceiver: {j}",
        proxy.count(|c| &c.nacks),
        proxy.count(|c| &c.resent),
        proxy.count(|c| &c.dropped)
    );
    assert!(counted, "the sender did not count every NACK: {sjv}");
    assert_eq!(u(&sjv, "nack_auth_failures"), forged, "{sjv}");
    assert_eq!(u(&sjv, "nack_replays"), replayed, "{sjv}");
    // The attack cost nothing: the sender took only the NACKs the receiver sent (none of the
    // attacker's reached its bucket), and what it sent again filled every hole.
    let real = proxy.count(|c| &c.nacks);
    assert!(
        u(&sjv, "nacks_received") <= real,
        "{real} real NACKs: {sjv}"
    );
    assert!(u(&sjv, "nacks_received") > 0, "{sjv}");
    assert!(
        resent <= resend_cap_bytes(first, 1088),
        "{resent} of {first}"
    );
    assert!(u(&j, "recovered_packets") > 10, "{j}");
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 0, "{j}");
    assert_eq!(u(&j, "auth_failures"), 0, "{j}");
    assert_eq!(u(&sjv, "allocations_rt"), 0, "{sjv}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
}

#[test]
fn whole_history_nacks_from_a_spoofed_receiver_are_capped_at_half_the_stream() {
    let _serial = serial();
    let port = free_port();
    let (rj, sj, log) = (tmp("w-recv.json"), tmp("w-send.json"), tmp("w-send.log"));
    let mut r = Reaper(recv(port, "virtual", &rj, None));
    let proxy = NackProxy::new(port, 0.0);
    let mut s = send_logged(proxy.port, &sj, None, &log);
    assert!(
        wait_until(10.0, || proxy.count(|c| &c.first_bytes) > 100 * 1056),
        "the stream does not flow"
    );
    let id = proxy.stream_id().unwrap();
    let whole = [NackRun {
        first: 0,
        count: u16::MAX,
    }; MAX_NACK_RUNS];
    let mut buf = [0u8; MAX_NACK_LEN];
    let mut nacks = 0u64;
    let first_before = proxy.count(|c| &c.first_bytes);
    let start = Instant::now();
    // 2000 204-byte NACKs a second, each a new request for the whole history (every run
    // covers all of it), for 4 s: without limits each would send the history 32 times over.
    while start.elapsed() < Duration::from_secs(4) {
        let due = (start.elapsed().as_secs_f64() * 2000.0) as u64;
        while nacks < due {
            // A fresh round, and every run covering the whole history (each starting at
            // another place before it).
            let mut runs = whole;
            let latest = proxy.latest_seq();
            for (i, r) in runs.iter_mut().enumerate() {
                r.first = latest.wrapping_sub(1000 + 500 * i as u32);
            }
            let n = emit_nack_round(id, (nacks as u16).max(1), &runs, &mut buf).unwrap();
            assert_eq!(n, 204);
            proxy.inject(&buf[..n]);
            nacks += 1;
        }
        sleep_s(0.005);
    }
    let attack_bytes = nacks * 204;
    // Ready to stop when the cap has been reported in the sender's log.
    let logged = wait_until(5.0, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("resending is capped"))
    });
    terminate(&mut r);
    terminate(&mut s);
    let (j, sjv) = (read_json(&rj), read_json(&sj));
    let text = std::fs::read_to_string(&log).unwrap();
    let first = proxy.count(|c| &c.first_bytes);
    let resent = proxy.count(|c| &c.resent_bytes);
    println!(
        "whole-history NACK flood: {nacks} NACKs ({attack_bytes} bytes) in 4 s; proxy: {first} \
         bytes of stream ({} during the flood), {resent} sent again ({:.1} %, {:.2}x the \
         attacker's bytes)\nsender: {sjv}\nreceiver: {j}",
        first - first_before,
        resent as f64 * 100.0 / first as f64,
        resent as f64 / attack_bytes as f64
    );
    assert!(logged, "no cap report in the log:\n{text}");
    assert!(nacks >= 7000, "{nacks} NACKs sent");
    // What was sent again stays under half the stream's bytes (plus one bucket), counted by
    // the sender and on the wire alike.
    let cap = resend_cap_bytes(first, 1056);
    assert!(resent <= cap, "{resent} bytes sent again, cap {cap}");
    assert!(u(&sjv, "retransmit_bytes_sent") <= cap, "{sjv}");
    assert!(u(&sjv, "retransmit_bytes_sent") >= resent, "{sjv}");
    // The cap did the work: most asks were refused, and counted.
    assert!(u(&sjv, "resends_capped") > 100_000, "{sjv}");
    assert!(u(&sjv, "nacks_received") >= nacks * 9 / 10, "{sjv}");
    // The receiver kept playing: copies sent again are duplicates, never a gap.
    assert_eq!(u(&j, "gaps"), 0, "{j}");
    assert_eq!(u(&j, "heard_gaps"), 0, "{j}");
    assert_eq!(u(&sjv, "allocations_rt"), 0, "{sjv}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
}
