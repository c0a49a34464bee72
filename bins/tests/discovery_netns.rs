//! Discovery and names between two network namespaces the test makes (a veth pair, never the
//! machine's own interfaces):
//! * a receiver in namespace A announces itself; `netaudio discover` in B lists it with its TXT
//!   fields; `netaudio send --dest NAME` in B (its announced name, no address typed) streams to
//!   it without a gap;
//! * a sender whose destination is a `.local` host name that nobody answers yet starts,
//!   captures, logs once, and streams once the receiver (whose mDNS answers for that name)
//!   appears;
//! * a receiver whose address changes (a new lease) is followed by a sender that named it.
//!
//! Making namespaces needs root and iproute2. Without them the tests skip with a loud message,
//! unless `CI=true` or `NETAUDIO_NETNS=require` (as `ci/test` sets), which makes it a failure.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

mod common;
use common::netns::{ADDR_A, Lab, ip};
use common::*;

/// The receiver's address after it moved.
const ADDR_MOVED: &str = "192.0.2.3";

/// The daemons of these tests in a [`Lab::pair`]: the receiver in A, the sender in B.
impl Lab {
    /// `netaudio recv` in namespace A with its host name set to `host` (a UTS namespace of its
    /// own, so the machine's name is left alone); it answers mDNS for `host.local`.
    fn receiver(&self, host: &str, extra: &[&str], json: &Path, log: &Path) -> Reaper {
        self.receiver_on(46000, host, extra, json, log)
    }

    /// [`receiver`](Self::receiver) on another port.
    fn receiver_on(
        &self,
        port: u16,
        host: &str,
        extra: &[&str],
        json: &Path,
        log: &Path,
    ) -> Reaper {
        let bin = env!("CARGO_BIN_EXE_netaudio");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.a, "unshare", "--uts", "sh", "-c"])
            .arg(format!("hostname {host} && exec \"$0\" \"$@\""))
            .arg(bin)
            .args(["recv", "--device", "virtual", "--listen"])
            .arg(format!("0.0.0.0:{port}"))
            .args(["--latency-ms", "60", "--stats-interval", "0"])
            .args(FMT)
            .args(extra)
            .arg("--status-socket")
            .arg(status_socket(json))
            .arg("--stats-json")
            .arg(json);
        Reaper(spawn_logged(c, log))
    }

    /// `netaudio send` in namespace B.
    fn sender(&self, dest: &str, extra: &[&str], json: &Path, log: &Path) -> Reaper {
        let mut c = self.netaudio(&self.b);
        c.args(["send", "--device", "virtual", "--dest", dest])
            .args(["--stats-interval", "0"])
            .args(FMT)
            .args(extra)
            .arg("--status-socket")
            .arg(status_socket(json))
            .arg("--stats-json")
            .arg(json);
        Reaper(spawn_logged(c, log))
    }
}

/// Stops both daemons (SIGTERM through `ip netns exec`, which `exec`s them) and checks the
/// stream had no gap and the realtime threads allocated nothing.
fn stop_and_check(mut r: Reaper, mut s: Reaper, rj: &Path, sj: &Path) -> (Value, Value) {
    terminate(&mut s);
    terminate(&mut r);
    let (rj, sj) = (read_json(rj), read_json(sj));
    assert_eq!(rj["gaps"], 0, "{rj}");
    assert_eq!(rj["allocations_rt"], 0, "{rj}");
    assert_eq!(rj["frees_rt"], 0, "{rj}");
    assert_eq!(sj["allocations_rt"], 0, "{sj}");
    assert_eq!(sj["frees_rt"], 0, "{sj}");
    (rj, sj)
}

#[test]
fn a_receiver_announced_in_one_namespace_is_discovered_and_streamed_to_by_name_from_another() {
    let _serial = serial();
    let Some(lab) = Lab::pair("discovery") else {
        return;
    };
    let key = key_file("disco.key");
    let key_arg = key.to_str().unwrap();
    let (rj, sj) = (tmp("named-recv.json"), tmp("named-send.json"));
    let (rlog, slog) = (tmp("named-recv.log"), tmp("named-send.log"));
    let mut r = lab.receiver(
        &format!("na-rx-{}", std::process::id()),
        &["--name", "Living room", "--key-file", key_arg],
        &rj,
        &rlog,
    );
    wait_status(
        &mut r,
        &status_socket(&rj),
        "the receiver to be ready",
        |_| true,
    );

    // `netaudio discover --json` in B lists it, with its TXT fields.
    let found = wait_for("discover to list the receiver", STATE_TIMEOUT, || {
        let out = lab
            .netaudio(&lab.b)
            .args(["discover", "--timeout", "2s", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("searching"), "progress on stderr: {err}");
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Living room")
            .cloned()
    });
    assert_eq!(found["address"], format!("{ADDR_A}:46000"), "{found}");
    assert_eq!(found["port"], 46000, "{found}");
    assert_eq!(found["rate"], 48000, "{found}");
    assert_eq!(found["channels"], 2, "{found}");
    assert_eq!(found["format"], "S16_LE", "{found}");
    assert_eq!(found["proto"], "native", "{found}");
    let engine_key = engine::auth::Key::from_hex(&"5a".repeat(32)).unwrap();
    let fp = netaudio::discovery::key_fingerprint(Some(&engine_key));
    assert_eq!(found["key"], fp.as_str(), "{found}");
    assert!(
        !found.to_string().contains(&"5a".repeat(8)),
        "never the key"
    );

    // The table on stdout, the progress on stderr.
    let out = lab
        .netaudio(&lab.b)
        .args(["discover", "--timeout", "2s"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Living room") && table.contains(&format!("{ADDR_A}:46000")),
        "{table}"
    );

    // A sender in B given only the name streams to it.
    let mut s = lab.sender("Living room", &["--key-file", key_arg], &sj, &slog);
    let sock = status_socket(&rj);
    let v = wait_status(&mut r, &sock, "2 s of the stream sent by name", |v| {
        received(v) >= 375
    });
    terminate(&mut s);
    assert_eq!(read_json(&sj)["allocations_rt"], 0);
    let log = text(&slog);
    assert!(log.contains(&format!("{ADDR_A}:46000")), "{log}");

    // `--dest auto`: the only receiver announced.
    let (sj, slog) = (tmp("auto-send.json"), tmp("auto-send.log"));
    let s = lab.sender("auto", &["--key-file", key_arg], &sj, &slog);
    let before = received(&v);
    wait_status(&mut r, &sock, "2 s of the stream sent to auto", |v| {
        received(v) >= before + 375
    });
    let (rj, _) = stop_and_check(r, s, &rj, &sj);
    assert_eq!(rj["auth_failures"].as_u64().unwrap_or(0), 0, "{rj}");
    let log = text(&slog);
    assert!(
        log.contains("the one receiver announced is \"Living room\""),
        "{log}"
    );

    // Two receivers announced: `auto` refuses to guess, and lists them.
    let host = format!("na-two-{}", std::process::id());
    let mut two = Vec::new();
    for (port, name) in [(46001, "Kitchen"), (46002, "Hall")] {
        let (j, l) = (tmp(&format!("{name}.json")), tmp(&format!("{name}.log")));
        let mut r = lab.receiver_on(port, &host, &["--name", name], &j, &l);
        wait_status(&mut r, &status_socket(&j), "a receiver to be ready", |_| {
            true
        });
        two.push(r);
    }
    let out = lab
        .netaudio(&lab.b)
        .args(["send", "--device", "virtual", "--dest", "auto"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("2 receivers")
            && err.contains(&format!("Kitchen              {ADDR_A}:46001"))
            && err.contains(&format!("Hall                 {ADDR_A}:46002"))
            && err.contains("--dest NAME"),
        "{err}"
    );
    for mut r in two {
        terminate(&mut r);
    }
}

#[test]
fn a_sender_started_before_its_receiver_retries_its_local_name_and_streams_once_it_answers() {
    let _serial = serial();
    let Some(lab) = Lab::pair("discovery") else {
        return;
    };
    let host = format!("na-late-{}", std::process::id());
    let (rj, sj) = (tmp("late-recv.json"), tmp("late-send.json"));
    let (rlog, slog) = (tmp("late-recv.log"), tmp("late-send.log"));
    // `auto` with no receiver announced: a clear error at start.
    let out = lab
        .netaudio(&lab.b)
        .args(["send", "--device", "virtual", "--dest", "auto"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no receiver announced"), "{err}");
    // No port: the default one, as `nc turntable2.local 46000` had it.
    let mut s = lab.sender(&format!("{host}.local"), &[], &sj, &slog);
    let ssock = status_socket(&sj);
    // It runs and captures meanwhile: its sends fail and are counted.
    wait_status(&mut s, &ssock, "the sender to count failed sends", |v| {
        v["send_errors"].as_u64().unwrap_or(0) > 0
    });
    let log = text(&slog);
    assert_eq!(
        log.matches("retrying in the background").count(),
        1,
        "{log}"
    );

    let mut r = lab.receiver(&host, &[], &rj, &rlog);
    let rsock = status_socket(&rj);
    wait_status(&mut r, &rsock, "the stream, once the name resolves", |v| {
        received(v) >= 375
    });
    let log = text(&slog);
    assert_eq!(
        log.matches("retrying in the background").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("resolves now").count(), 1, "{log}");
    assert!(log.contains(&format!("{ADDR_A}:46000")), "{log}");
    stop_and_check(r, s, &rj, &sj);
}

#[test]
fn a_receiver_whose_address_changes_is_followed_by_its_name() {
    let _serial = serial();
    let Some(lab) = Lab::pair("discovery") else {
        return;
    };
    let (rj, sj) = (tmp("move-recv.json"), tmp("move-send.json"));
    let (rlog, slog) = (tmp("move-recv.log"), tmp("move-send.log"));
    let mut r = lab.receiver(
        &format!("na-move-{}", std::process::id()),
        &["--name", "Mover"],
        &rj,
        &rlog,
    );
    let sock = status_socket(&rj);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    let s = lab.sender("Mover", &[], &sj, &slog);
    let v = wait_status(&mut r, &sock, "1 s of the stream", |v| received(v) >= 190);
    // The receiver's machine loses its address and gets a new one (a new DHCP lease).
    let dev = lab.va.as_str();
    let (old, new) = (format!("{ADDR_A}/24"), format!("{ADDR_MOVED}/24"));
    ip(&["-n", &lab.a, "addr", "del", &old, "dev", dev]).unwrap();
    ip(&["-n", &lab.a, "addr", "add", &new, "dev", dev]).unwrap();
    let before = received(&v);
    // Packets to the vanished address are dropped without an error the sender sees (the
    // neighbour entry is still there): the periodic look-up (every 30 s) finds the new one.
    wait_for("the sender to follow the move", 2 * STATE_TIMEOUT, || {
        text(&slog)
            .contains(&format!("moved to {ADDR_MOVED}:46000"))
            .then_some(())
    });
    wait_status(&mut r, &sock, "the stream at the new address", |v| {
        received(v) >= before + 375
    });
    let mut s = s;
    terminate(&mut s);
    terminate(&mut r);
    let (rj, sj) = (read_json(&rj), read_json(&sj));
    assert_eq!(rj["allocations_rt"], 0, "{rj}");
    assert_eq!(sj["allocations_rt"], 0, "{sj}");
    let log = text(&slog);
    assert_eq!(log.matches("moved to").count(), 1, "{log}");
}
