//! `hil-tests pi` orchestrating two "hosts" on this machine (the local transport): with the
//! virtual sound cards (versions checked, both daemons started and stopped, counters
//! collected, the receiver's virtual card hearing every frame), and end to end on the JACK rig
//! (the marker reference played by aplay into the sender's input and the monitor's left
//! channel, the receiver's output on its right: latency and gaps from one capture).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One stream at a time: two realtime streams on a small machine would disturb each other.
static ONE: Mutex<()> = Mutex::new(());

#[test]
fn two_local_hosts_stream_without_gaps() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let exe = Path::new(env!("CARGO_BIN_EXE_hil-tests")).with_file_name("netaudio");
    assert!(
        exe.exists(),
        "build netaudio first: cargo build --release -p netaudio"
    );
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = std::env::temp_dir().join(format!("hil-pi-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_hil-tests"))
        .args([
            "pi",
            "--transport",
            "local",
            "--sender",
            "local-a",
            "--receiver",
            "local-b",
        ])
        .args([
            "--receiver-address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "--duration",
            "6s",
            "--receiver-device",
            "virtual",
            "--latency-ms",
            "40",
            "-q",
        ])
        .arg("--netaudio")
        .arg(&exe)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["engine_gaps"], 0, "{r}");
    assert_eq!(r["allocations_steady_state"], 0, "{r}");
    assert_eq!(r["frees_steady_state"], 0, "{r}");
    assert!(r["checked_frames"].as_u64().unwrap() > 44_100 * 5, "{r}");
    assert!(
        r["receiver"]["packets_received"].as_u64().unwrap() > 800,
        "{r}"
    );
    assert!(stdout.starts_with("gaps: 0"), "{stdout}");
}

#[test]
fn a_version_mismatch_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_hil-tests"))
        .args([
            "pi",
            "--transport",
            "local",
            "--sender",
            "a",
            "--receiver",
            "b",
        ])
        .args([
            "--netaudio",
            "echo netaudio 0.0.1 #",
            "--duration",
            "1s",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.1") && err.contains("same version"),
        "{err}"
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A private jackd (dummy driver) stopped on drop: SIGTERM first, so it leaves the JACK
/// server registry clean (a SIGKILLed server stays registered, and JACK refuses new servers
/// once too many are).
struct Jack(std::process::Child);

impl Drop for Jack {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn end_to_end_latency_and_gaps_from_the_reference_wiring_on_the_rig() {
    let tools = ["jackd", "jack_lsp", "jack_connect", "aplay", "arecord"];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("NETAUDIO_RIG").as_deref() != Ok("require"),
            "the rig is required (NETAUDIO_RIG=require) but {missing:?} are missing; run ci/rig-setup"
        );
        eprintln!("skipped: the rig is not installed (missing {missing:?}); run ci/rig-setup");
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let exe = Path::new(env!("CARGO_BIN_EXE_hil-tests")).with_file_name("netaudio");
    assert!(
        exe.exists(),
        "build netaudio first: cargo build --release -p netaudio"
    );
    // Named like the rig's servers, so `hil-tests rig` sweeps what a crashed run leaves.
    let server = format!("hil-rig-{}", std::process::id());
    let asoundrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("rig/asoundrc");
    let alsa = format!("/usr/share/alsa/alsa.conf:{}", asoundrc.display());
    let env = |c: &mut Command| {
        c.env("JACK_DEFAULT_SERVER", &server)
            .env("JACK_NO_START_SERVER", "1")
            .env("ALSA_CONFIG_PATH", &alsa);
    };
    let mut jackd = Command::new("jackd");
    jackd
        .args([
            "-R", "-P", "70", "-S", "-d", "dummy", "-r", "48000", "-p", "256",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    env(&mut jackd);
    let _jack = Jack(jackd.spawn().expect("jackd"));
    let ports = |env: &dyn Fn(&mut Command)| -> String {
        let mut c = Command::new("jack_lsp");
        env(&mut c);
        c.stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    while !ports(&env).contains("system:") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "jackd (server {server}) did not answer jack_lsp within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The Y-cable's second leg: src (the reference player) into the monitor's left input.
    // JACK connects ports only of active clients, and a client's ports are listed before it
    // is active: try until the connection shows in the graph (the harness waits for the
    // reference on the monitor before it starts the sender), or the harness has finished.
    let harness_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wiring = {
        let (server, alsa) = (server.clone(), alsa.clone());
        let harness_done = harness_done.clone();
        std::thread::spawn(move || {
            let env = |c: &mut Command| {
                c.env("JACK_DEFAULT_SERVER", &server)
                    .env("JACK_NO_START_SERVER", "1")
                    .env("ALSA_CONFIG_PATH", &alsa);
            };
            let wired = || {
                let mut c = Command::new("jack_lsp");
                env(&mut c);
                c.arg("-c")
                    .stderr(Stdio::null())
                    .output()
                    .is_ok_and(|o| connected(&String::from_utf8_lossy(&o.stdout)))
            };
            let t0 = Instant::now();
            loop {
                if wired() {
                    return Ok(());
                }
                if harness_done.load(std::sync::atomic::Ordering::Relaxed)
                    || t0.elapsed() > Duration::from_secs(60)
                {
                    return Err(format!(
                        "src:out_000 was not connected to mon2:in_000 after {:?}",
                        t0.elapsed()
                    ));
                }
                let mut c = Command::new("jack_connect");
                env(&mut c);
                // Refused while either client is not active yet: look again.
                let _ = c
                    .args(["src:out_000", "mon2:in_000"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = std::env::temp_dir().join(format!("hil-pi-e2e-{}.json", std::process::id()));
    let svg = json.with_extension("svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil-tests"));
    env(&mut cmd);
    let out = cmd
        .args([
            "pi",
            "--transport",
            "local",
            "--sender",
            "local-a",
            "--receiver",
            "local-b",
        ])
        .args([
            "--receiver-address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["--sender-device", "pin", "--reference-device", "src"])
        .args(["--receiver-device", "pout2", "--monitor-device", "mon2"])
        .args(["--duration", "12s", "--latency-ms", "30", "-q"])
        .arg("--netaudio")
        .arg(&exe)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    harness_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Err(e) = wiring.join().unwrap() {
        panic!("{e}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let lat = &r["latency_ms"];
    assert!(
        lat["kind"].as_str().unwrap().starts_with("end-to-end"),
        "{lat}"
    );
    assert_eq!(lat["reference_breaks"], 0, "{r}");
    // Markers arrive (the first seconds are start-up), every one 30 ms target + the devices'
    // periods after it was sent.
    assert!(lat["samples"].as_u64().unwrap() >= 6, "{lat}");
    let p50 = lat["p50"].as_f64().unwrap();
    assert!((25.0..80.0).contains(&p50), "{lat}");
    assert!(lat["max"].as_f64().unwrap() - p50 < 3.0, "{lat}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["engine_gaps"], 0, "{r}");
    assert_eq!(r["allocations_steady_state"], 0, "{r}");
    assert_eq!(r["frees_steady_state"], 0, "{r}");
    assert!(r["trace"].as_array().unwrap().len() >= 6, "{r}");
    assert!(stdout.contains("latency (end-to-end"), "{stdout}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") || plot.starts_with("<?xml"),
        "{plot:.200}"
    );
    assert!(
        plot.contains("end-to-end"),
        "the subtitle names the latency kind"
    );
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
}

/// Whether `jack_lsp -c` output shows src:out_000 connected to mon2:in_000.
fn connected(lsp: &str) -> bool {
    let mut port = "";
    lsp.lines().any(|l| {
        if !l.starts_with(char::is_whitespace) {
            port = l.trim();
            false
        } else {
            port == "src:out_000" && l.trim() == "mon2:in_000"
        }
    })
}
