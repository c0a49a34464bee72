//! `netaudio send` → `netaudio recv` as separate processes on loopback, under attack and
//! faults: an attacker with forged, foreign, replayed and truncated packets against a keyed
//! stream; a flood of junk at 100 times the packet rate; a receiver restart; a sound card
//! unplugged and plugged back on either side. The receiver's virtual sound card checks every
//! frame it plays against the sender's ramp, so anything played that was not sent in order is
//! a gap it hears.
//!
//! Each test prints its figures (`cargo test -- --nocapture` shows them).

use engine::auth::{KEY_LEN, Key};
use engine::format::{SampleFormat, StreamFormat};
use engine::sender::Sender;
use serde_json::Value;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn sleep_s(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

const RATE: u32 = 48_000;
const PERIOD: usize = 256;
const FMT: [&str; 8] = [
    "--rate",
    "48000",
    "--channels",
    "2",
    "--format",
    "S16_LE",
    "--period",
    "256",
];

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
    sleep_s(0.3);
    let mut s = send(tap.port, "virtual", &sj, Some(&kf));
    sleep_s(1.0);
    let mut sent = Sent::default();
    // Phase 1: attacks on the stream playing.
    attack(port, &tap, &[], 3.0, &mut sent);
    // The sender restarts (a clean stop: its END packets end the first stream); the first
    // stream's recording, END packets included, is now a replay of an older stream.
    terminate(&mut s);
    let first_stream = tap.recorded();
    let mut s2 = send(tap.port, "virtual", &sj2, Some(&kf));
    sleep_s(1.0);
    let replays_before = sent.replayed;
    attack(port, &tap, &first_stream, 3.0, &mut sent);
    let old_stream_replays = sent.replayed - replays_before;
    sleep_s(0.5);
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
    sleep_s(0.3);
    let mut s = send(port, "virtual", &sj, Some(&kf));
    sleep_s(1.5);
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
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
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

#[test]
fn a_restarted_receiver_takes_the_keyed_stream_up_again() {
    let _serial = serial();
    let key = Key::from_bytes([0x44; KEY_LEN]);
    let kf = key_file("restart.key", &key);
    let port = free_port();
    let (rj, rj2, sj) = (tmp("r-recv.json"), tmp("r-recv2.json"), tmp("r-send.json"));
    let mut r = recv(port, "virtual", &rj, Some(&kf));
    sleep_s(0.3);
    let mut s = send(port, "virtual", &sj, Some(&kf));
    sleep_s(2.5);
    // The receiver dies without a word; a new one starts a little later.
    r.kill().unwrap();
    r.wait().unwrap();
    sleep_s(1.0);
    let mut r2 = recv(port, "virtual", &rj2, Some(&kf));
    sleep_s(3.0);
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
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
}

#[test]
fn an_unplugged_capture_card_is_reopened_and_the_stream_resumes() {
    let _serial = serial();
    let port = free_port();
    let (rj, sj) = (tmp("u-recv.json"), tmp("u-send.json"));
    let mut r = recv(port, "virtual", &rj, None);
    sleep_s(0.3);
    let mut s = send(port, "virtual:unplug=2s+1s", &sj, None);
    sleep_s(6.0);
    terminate(&mut r);
    terminate(&mut s);
    let (j, sj) = (read_json(&rj), read_json(&sj));
    println!("capture unplugged: sender {sj}\nreceiver {j}");
    assert_eq!(u(&sj, "device_lost"), 1, "{sj}");
    assert_eq!(u(&sj, "allocations_rt"), 0, "{sj}");
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
    let mut r = recv(port, "virtual:unplug=2s+1s", &rj, None);
    sleep_s(0.3);
    let mut s = send(port, "virtual", &sj, None);
    let status = rj.with_extension("sock");
    sleep_s(4.0);
    let heard = |p: &Path| {
        let out = bin()
            .args(["status", "--json", "--socket"])
            .arg(p)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        u(&v, "packets_received")
    };
    let before = heard(&status);
    sleep_s(2.0);
    let after = heard(&status);
    terminate(&mut r);
    terminate(&mut s);
    let j = read_json(&rj);
    println!("playback unplugged: receiver {j}");
    assert_eq!(u(&j, "device_lost"), 1, "{j}");
    assert_eq!(u(&j, "allocations_rt"), 0, "{j}");
    assert!(after > before + 300, "playing again: {before} -> {after}");
    // The outage is heard as gaps, each counted by the engine too.
    assert!(u(&j, "heard_gaps") >= 1, "{j}");
    assert!(u(&j, "gaps") >= 1, "{j}");
    // After the card came back, more than a second of audio was played.
    assert!(u(&j, "heard_frames") > 48_000 * 3, "{j}");
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
