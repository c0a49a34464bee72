//! SAP announcements of `netaudio send --proto rtp`, read by a socket on 127.0.0.1 standing in
//! for PipeWire: the announcement carries the SDP the sender writes, repeats with the same
//! message id hash, and a stopping sender sends the deletion; `--sap off` and bad values.

use engine::rtp::sap::{SapKind, SapMessage};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The next SAP message on `sock`, within `limit`.
fn next_message(sock: &UdpSocket, what: &str, limit: Duration) -> (SapKind, u16, String) {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no SAP message within {limit:?}: waiting for {what}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = SapMessage::parse(&buf[..n])
                .unwrap_or_else(|e| panic!("{what}: not a SAP message ({e}): {:?}", &buf[..n]));
            assert_eq!(m.origin.to_string(), "127.0.0.1", "{what}");
            return (m.kind, m.msg_id_hash, m.sdp.to_string());
        }
    }
}

#[test]
fn the_sender_announces_its_sdp_and_deletes_it_when_stopping() {
    let _serial = serial();
    let sap = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sap_at = sap.local_addr().unwrap();
    let (sdp, json) = (tmp("sap.sdp"), tmp("sap-send.json"));
    let _ = std::fs::remove_file(&sdp);
    let mut sender = Reaper(
        bin()
            .args([
                "send", "--proto", "rtp", "--device", "virtual", "--rate", "48000",
            ])
            .arg("--dest")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--sap")
            .arg(sap_at.to_string())
            .arg("--sdp")
            .arg(&sdp)
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(status_socket(&json))
            .arg("--stats-json")
            .arg(&json)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (kind, hash, text) = next_message(&sap, "the first announcement", STATE_TIMEOUT);
    assert_eq!(kind, SapKind::Announce);
    let written = std::fs::read_to_string(&sdp).expect("the SDP file is written before SAP");
    assert_eq!(text, written, "SAP carries the SDP the sender writes");
    assert!(
        text.starts_with("v=0\r\no=- ") && text.contains("a=rtpmap:96 L16/48000/2\r\n"),
        "{text}"
    );
    // Announced again, unchanged, every few seconds.
    let again = next_message(&sap, "the second announcement", Duration::from_secs(30));
    assert_eq!(again, (SapKind::Announce, hash, text.clone()));
    terminate(&mut sender.0);
    let (kind, h, t) = next_message(&sap, "the deletion", Duration::from_secs(10));
    assert_eq!(
        (kind, h, t),
        (SapKind::Delete, hash, text),
        "the deletion names the announced session"
    );
    let j = read_json(&json);
    assert_eq!(j["sap"], sap_at.to_string(), "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
}

#[test]
fn sap_off_and_bad_values() {
    let _serial = serial();
    let json = tmp("sap-off.json");
    let mut sender = Reaper(
        bin()
            .args([
                "send", "--proto", "rtp", "--device", "virtual", "--sap", "off",
            ])
            .arg("--dest")
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(status_socket(&json))
            .arg("--stats-json")
            .arg(&json)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_status(
        &mut sender.0,
        &status_socket(&json),
        "the sender to run",
        |_| true,
    );
    terminate(&mut sender.0);
    let j = read_json(&json);
    assert_eq!(j["sap"], serde_json::Value::Null, "{j}");

    let cfg = tmp("sap-bad.toml");
    std::fs::write(
        &cfg,
        "[network]\nproto = \"rtp\"\nsap = \"sap.example:9875\"\n",
    )
    .unwrap();
    let send: &[&str] = &["send", "--proto", "rtp", "--dest", "127.0.0.1:9"];
    let recv: &[&str] = &["recv", "--proto", "rtp"];
    let runs: [(&[&str], &[&str]); 3] = [
        (send, &["--sap", "nowhere"]),
        (send, &["--config", cfg.to_str().unwrap()]),
        (recv, &["--sap", "239.1.2.3:port"]),
    ];
    for (cmd, args) in runs {
        let out = bin().args(cmd).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--sap") && err.contains("224.0.0.56:9875") && err.contains("off"),
            "{args:?}: {err}"
        );
    }
}
