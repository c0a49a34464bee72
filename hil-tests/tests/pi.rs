//! `hil-tests pi` orchestrating two "hosts" on this machine (the local transport) with the
//! virtual sound cards: versions checked, both daemons started and stopped, counters
//! collected, the receiver's virtual card hearing every frame.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[test]
fn two_local_hosts_stream_without_gaps() {
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
