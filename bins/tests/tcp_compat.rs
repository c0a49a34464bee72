//! Raw TCP mode against the real old pipeline's tool, OpenBSD `nc`, both ways:
//!
//! 1. `netaudio send --proto tcp` into `nc -l 127.0.0.1 PORT > out.raw` (the old receiver's
//!    `nc -l PORT | aplay`): the file is the capture source bit for bit; nc is killed and
//!    restarted, netaudio reconnects and the new file is again a continuous, frame-aligned
//!    piece of the source.
//! 2. Raw PCM written at the audio rate into `nc 127.0.0.1 PORT` (the old sender's
//!    `arecord -t raw | nc HOST PORT`) into `netaudio recv --proto tcp` on a virtual sound card
//!    whose analyzer checks every frame played: bit-exact, no gap; then the nc sender restarts
//!    and the receiver takes the new connection, counted, and plays again.
//!
//! Without OpenBSD netcat the tests say so and pass, unless `NETAUDIO_NC=require` (ci/test sets
//! it), which makes them fail.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;

const RATE: usize = 48_000;
const FB: usize = 4; // S16_LE, 2 channels
/// Whether OpenBSD netcat is here; panics when it is not and `NETAUDIO_NC=require`.
fn have_nc() -> bool {
    let out = Command::new("nc").arg("-h").output();
    let ok = out.is_ok_and(|o| {
        let text =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        text.contains("OpenBSD netcat")
    });
    if !ok {
        let msg = "OpenBSD netcat (`nc`) not found: apt-get install netcat-openbsd (ci/rig-setup)";
        if std::env::var("NETAUDIO_NC").is_ok_and(|v| v == "require") {
            panic!("{msg}; NETAUDIO_NC=require");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Waits until something listens on TCP `port` on loopback (read from /proc/net/tcp: a test
/// connection would take nc's one connection).
fn wait_listening(port: u16) {
    let end = Instant::now() + STATE_TIMEOUT;
    let want = format!(":{port:04X} ");
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // Fields: sl, local_address, rem_address, st (0A = LISTEN), ...
        if table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
        }) {
            return;
        }
        assert!(
            Instant::now() < end,
            "nothing listens on TCP port {port} after {STATE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).map_or(0, |m| m.len() as usize)
}

/// Waits until `p` holds at least `bytes`; panics after `limit`.
fn wait_len(p: &Path, bytes: usize, limit: Duration) {
    let end = Instant::now() + limit;
    while file_len(p) < bytes {
        assert!(
            Instant::now() < end,
            "{} holds {} bytes after {limit:?}, expected {bytes}",
            p.display(),
            file_len(p)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Frame `n` of the virtual capture device's ramp (S16_LE stereo): left `n`, right
/// `n + 32768`, both mod 65536.
fn ramp_frame(n: u64) -> [u8; 4] {
    let l = (n as u16).to_le_bytes();
    let r = ((n + 32_768) as u16).to_le_bytes();
    [l[0], l[1], r[0], r[1]]
}

/// Checks that `bytes` is the ramp bit for bit from some frame on, starting on a frame
/// boundary (a cut-off last frame, from killing nc mid-write, must still match its prefix).
/// Returns the first frame (mod 65536) and the whole frames.
fn check_ramp(name: &str, bytes: &[u8]) -> (u64, usize) {
    assert!(bytes.len() >= FB, "{name}: only {} bytes", bytes.len());
    let n0 = u16::from_le_bytes([bytes[0], bytes[1]]) as u64;
    for (k, chunk) in bytes.chunks(FB).enumerate() {
        let want = ramp_frame(n0 + k as u64);
        assert_eq!(
            chunk,
            &want[..chunk.len()],
            "{name}: frame {k} (byte {}) is not the source's frame {}: not bit-exact or not \
             frame-aligned",
            k * FB,
            n0 + k as u64
        );
    }
    (n0, bytes.len() / FB)
}

fn nc_listen(port: u16, out: &Path) -> Reaper {
    Reaper(
        Command::new("nc")
            .args(["-l", "127.0.0.1", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc -l"),
    )
}

#[test]
fn send_into_nc_listen_is_bit_exact_and_reconnects_when_nc_restarts() {
    let _serial = serial();
    if !have_nc() {
        return;
    }
    let port = free_tcp_port();
    let (out1, out2, sj) = (tmp("out1.raw"), tmp("out2.raw"), tmp("send.json"));
    let mut nc1 = nc_listen(port, &out1);
    // The first connection must carry frame 0: nc listens before the sender starts.
    wait_listening(port);
    let mut s = Reaper(
        bin()
            .args(["send", "--proto", "tcp", "--device", "virtual", "--dest"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(tmp("send.sock"))
            .args(FMT)
            .arg("--stats-json")
            .arg(&sj)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Two seconds of audio reach the file.
    wait_len(&out1, 2 * RATE * FB, Duration::from_secs(20));
    // The old receiver restarts: nc dies, a new one listens a moment later.
    signal(&nc1, libc::SIGTERM);
    wait_for(&mut nc1, Duration::from_secs(5)).expect("nc exits on SIGTERM");
    // The receiver is down for a moment (the sender's reconnect back-off is what is tested).
    std::thread::sleep(Duration::from_millis(300));
    let mut nc2 = nc_listen(port, &out2);
    wait_len(&out2, RATE * FB, Duration::from_secs(20));
    terminate(&mut s);
    // The sender's close ends nc's input: it exits by itself.
    wait_for(&mut nc2, Duration::from_secs(5)).expect("nc -l exits when the sender closes");

    let b1 = std::fs::read(&out1).unwrap();
    let b2 = std::fs::read(&out2).unwrap();
    let (first1, frames1) = check_ramp("out1.raw", &b1);
    let (first2, frames2) = check_ramp("out2.raw", &b2);
    assert_eq!(
        first1, 0,
        "the first connection carries the stream from its first frame"
    );
    assert_eq!(
        b2.len() % FB,
        0,
        "after a clean stop the file ends on a frame boundary"
    );
    assert!(
        frames1 >= 2 * RATE && frames2 >= RATE,
        "{frames1} {frames2}"
    );
    let j = read_json(&sj);
    assert_eq!(j["tcp_connections"], 2, "{j}");
    assert_eq!(j["tcp_reconnects"], 1, "{j}");
    assert_eq!(j["tcp_disconnects"], 1, "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["xruns"], 0, "{j}");
    // Everything written reached a file, but for what was in flight when nc died.
    let written = j["tcp_bytes"].as_u64().unwrap() as usize;
    assert!(
        written >= b1.len() + b2.len(),
        "{written} {} {}",
        b1.len(),
        b2.len()
    );
    eprintln!(
        "out1: {frames1} frames from frame {first1}; out2: {frames2} frames from frame {first2} \
         (mod 65536); {} writes dropped while reconnecting ({} failed attempts)",
        j["tcp_dropped_writes"], j["tcp_connect_failures"]
    );
}

/// The old sender: raw ramp PCM written at the audio rate into `nc 127.0.0.1 PORT`, as
/// `arecord -t raw | nc` writes what the card captures.
struct PacedSender {
    nc: Reaper,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl PacedSender {
    fn start(port: u16) -> PacedSender {
        let mut nc = Reaper(
            Command::new("nc")
                .args(["127.0.0.1", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nc"),
        );
        let mut pipe = nc.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            // 5 ms chunks on an absolute schedule: the average rate is exact.
            const CHUNK: u64 = RATE as u64 / 200;
            let t0 = Instant::now();
            let mut buf = Vec::with_capacity(CHUNK as usize * FB);
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                buf.clear();
                for k in n..n + CHUNK {
                    buf.extend_from_slice(&ramp_frame(k));
                }
                if pipe.write_all(&buf).is_err() {
                    break;
                }
                n += CHUNK;
                let due = t0 + Duration::from_secs_f64(n as f64 / RATE as f64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            n
        });
        PacedSender {
            nc,
            stop,
            thread: Some(thread),
        }
    }

    /// Kills nc (the old sender dies) and returns the frames written.
    fn kill(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.nc.kill();
        let _ = self.nc.wait();
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn recv_plays_raw_pcm_from_nc_bit_exact_and_takes_a_restarted_sender() {
    let _serial = serial();
    if !have_nc() {
        return;
    }
    let port = free_tcp_port();
    let (rj, st) = (tmp("recv.json"), tmp("recv.sock"));
    let mut r = Reaper(
        bin()
            .args(["recv", "--proto", "tcp", "--device", "virtual", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--latency-ms",
                "200",
                "--stats-interval",
                "0",
                "--status-socket",
            ])
            .arg(&st)
            // The test's sender and the virtual card share one clock: no drift to correct,
            // so every frame can be checked bit for bit (slip windows interpolate).
            .args(["--drift-mode", "off"])
            .args(FMT)
            .arg("--stats-json")
            .arg(&rj)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !st.exists() {
        assert!(Instant::now() < end, "the receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = PacedSender::start(port);
    // 4 s of the first sender's stream (187.5 packets a second).
    let before = wait_status(&mut r, &st, "4 s of the first sender", |v| {
        received(v) >= 750
    });
    eprintln!("before the restart: {before}");
    assert_eq!(
        before["gaps"], 0,
        "no gap while the first sender plays: {before}"
    );
    assert_eq!(before["resyncs"], 0, "{before}");
    assert!(
        before["packets_received"].as_u64().unwrap() > 300,
        "{before}"
    );
    // The old sender restarts (arecord | nc under systemd's Restart=always).
    let frames_old = old.kill();
    // The sender is down for a moment, as a restarting unit is.
    std::thread::sleep(Duration::from_millis(300));
    let new = PacedSender::start(port);
    // 3 s of the new sender's stream.
    let n0 = received(&before);
    wait_status(&mut r, &st, "3 s of the new sender", |v| {
        v["resyncs"].as_u64() >= Some(1) && received(v) >= n0 + 560
    });
    terminate(&mut r);
    let frames_new = new.kill();
    let j = read_json(&rj);
    eprintln!("wrote {frames_old} + {frames_new} frames; receiver: {j}");
    assert_eq!(j["tcp_connections"], 2, "{j}");
    assert_eq!(j["tcp_reconnects"], 1, "{j}");
    assert_eq!(j["resyncs"], 1, "the new connection is a new stream: {j}");
    assert_eq!(j["gaps"], 1, "one gap, at the restart: {j}");
    assert_eq!(j["heard_gaps"], 1, "the virtual card heard the same: {j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["xruns"], 0, "{j}");
    assert_eq!(j["invalid_packets"], 0, "{j}");
    let heard = j["heard_frames"].as_u64().unwrap();
    assert!(heard > 5 * RATE as u64, "{j}");
    // Every frame played is the input bit for bit, but for the silence before the first
    // connection and the one gap at the restart.
    let n = |k: &str| j[k].as_u64().unwrap();
    assert_eq!(
        n("heard_bit_exact") + n("heard_leading_silence") + n("heard_gap_frames"),
        heard,
        "{j}"
    );
}

#[test]
fn protocol_errors_name_the_value_and_the_fix() {
    // A key with raw PCM: there is no room for a tag, and the error says what to do.
    let key = std::env::temp_dir().join(format!("tcp-key-{}", std::process::id()));
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = key.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 3] = [
        (&["recv", "--proto", "udp"], "unknown protocol \"udp\""),
        (
            &[
                "send",
                "--proto",
                "tcp",
                "--dest",
                "127.0.0.1:9",
                "--key-file",
                &key,
            ],
            "cannot be used with proto = \"tcp\"",
        ),
        (
            &[
                "recv",
                "--proto",
                "tcp",
                "--listen",
                "127.0.0.1:0",
                "--key-file",
                &key,
            ],
            "remove the key file, or use proto = \"native\"",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
