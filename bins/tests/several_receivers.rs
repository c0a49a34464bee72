//! One stream to several receivers, as processes:
//! * a multicast group, in network namespaces the test makes (a hub namespace whose bridge
//!   joins two receivers' namespaces; never the machine's own interfaces): the sender in the
//!   hub sends to the group out of the bridge, two receivers join it (one naming its
//!   interface, one its address), both with the same key. One receiver's socket drops every
//!   25th datagram (`NETAUDIO_TEST_FAULT=rx-drop-every=25`): its NACKs are answered by unicast
//!   repairs and it plays without a gap; the other plays without a gap too and gets no repair
//!   it did not ask for (the sender's list of receivers says where each repair went: every
//!   packet the other had twice was sent to it for a NACK of its own — on a busy machine a
//!   packet can be overdue — and the lossy receiver's repairs all went to the lossy one);
//!   The same to an IPv6 group (`[ff05::46]:46000`), without a key;
//! * a list of two unicast receivers on loopback (`--dest A,B`): the same, without namespaces.
//!
//! Every realtime thread allocates and frees nothing. Making namespaces needs root and
//! iproute2: without them the multicast test skips with a loud message, unless `CI=true` or
//! `NETAUDIO_NETNS=require` (as `ci/test` sets), which makes it a failure.

use serde_json::Value;
use std::process::Command;

mod common;
use common::netns::Lab;
use common::*;

const GROUP: &str = "239.255.46.1:46000";
/// The lossy receiver drops every this many datagrams (4 %).
const DROP_EVERY: &str = "25";
/// Packets (of 256 frames at 48 kHz) each receiver must have taken: 4 s of the stream.
const PACKETS: u64 = 750;

/// `netaudio recv` on `listen`, with `extra` arguments, dropping every [`DROP_EVERY`]th
/// datagram when `lossy`.
fn receiver(mut c: Command, listen: &str, extra: &[&str], lossy: bool, f: &Files) -> Reaper {
    c.args([
        "recv",
        "--device",
        "virtual",
        "--no-announce",
        "--listen",
        listen,
    ])
    .args(["--latency-ms", "60", "--stats-interval", "0"])
    .args(FMT)
    .args(extra);
    if lossy {
        c.env("NETAUDIO_TEST_FAULT", format!("rx-drop-every={DROP_EVERY}"));
    }
    f.args(&mut c);
    Reaper(spawn_logged(c, &f.log))
}

fn sender(mut c: Command, dest: &str, extra: &[&str], f: &Files) -> Reaper {
    c.args(["send", "--device", "virtual", "--dest", dest])
        .args(["--stats-interval", "0"])
        .args(FMT)
        .args(extra);
    f.args(&mut c);
    Reaper(spawn_logged(c, &f.log))
}

fn ready(r: &mut Reaper, f: &Files) {
    wait_status(r, &status_socket(&f.json), "a receiver to be ready", |_| {
        true
    });
}

/// Waits until both receivers took [`PACKETS`] packets and the lossy one recovered some; then
/// stops everything (sender first) and checks the counters; returns the lossy receiver's, the
/// other's and the sender's. `other` is the other receiver's address as the sender sees it.
fn stream_and_check(
    mut lossy: (Reaper, Files),
    mut clean: (Reaper, Files),
    mut s: (Reaper, Files),
    other: &str,
    what: &str,
) -> (Value, Value, Value) {
    let sock = status_socket(&lossy.1.json);
    wait_status(&mut lossy.0, &sock, "the lossy receiver to recover", |v| {
        received(v) >= PACKETS && v["recovered_packets"].as_u64().unwrap_or(0) > 0
    });
    let sock = status_socket(&clean.1.json);
    wait_status(&mut clean.0, &sock, "the other receiver's stream", |v| {
        received(v) >= PACKETS
    });
    terminate(&mut s.0);
    terminate(&mut lossy.0);
    terminate(&mut clean.0);
    let (l, c, sj) = (
        read_json(&lossy.1.json),
        read_json(&clean.1.json),
        read_json(&s.1.json),
    );
    let logs = || {
        format!(
            "\nlossy receiver: {}\nother receiver: {}\nsender: {}",
            text(&lossy.1.log),
            text(&clean.1.log),
            text(&s.1.log)
        )
    };
    for (who, j) in [
        ("lossy receiver", &l),
        ("other receiver", &c),
        ("sender", &sj),
    ] {
        assert_eq!(j["allocations_rt"], 0, "{who}: {j}");
        assert_eq!(j["frees_rt"], 0, "{who}: {j}");
    }
    for (who, j) in [("lossy receiver", &l), ("other receiver", &c)] {
        assert_eq!(j["gaps"], 0, "{who}: {j}{}", logs());
        assert!(received(j) >= PACKETS, "{who}: {j}");
        assert_eq!(j["auth_failures"].as_u64().unwrap_or(0), 0, "{who}: {j}");
    }
    let n = |j: &Value, k: &str| j[k].as_u64().unwrap_or(0);
    // The lossy receiver asked, and was answered.
    assert!(n(&l, "nacks_sent") > 0, "{l}");
    assert!(n(&l, "recovered_packets") > 0, "{l}");
    // The sender answered NACKs, refusing none, and sent every repair by unicast to the
    // receiver that asked: its list of receivers accounts for all of them.
    assert!(n(&sj, "nacks_received") > 0, "{sj}");
    for k in ["nack_auth_failures", "nack_replays", "send_errors"] {
        assert_eq!(n(&sj, k), 0, "sender's {k}: {sj}");
    }
    let peers = sj["receivers"].as_array().cloned().unwrap_or_default();
    let repairs_to = |addr: &str| -> u64 {
        peers
            .iter()
            .filter(|p| p["address"] == addr)
            .map(|p| n(p, "repairs"))
            .sum()
    };
    let all: u64 = peers.iter().map(|p| n(p, "repairs")).sum();
    assert_eq!(all, n(&sj, "retransmits_sent"), "{sj}");
    assert!(all >= n(&l, "recovered_packets"), "{sj} {l}");
    // The other receiver got no repair it did not ask for: every packet it had twice (a
    // duplicate, or with a key a replay) was a repair sent to it, for its own NACK (a packet
    // overdue on a busy machine). Repairs sent to everyone would have given it as many as the
    // lossy receiver got.
    let to_other = repairs_to(other);
    let twice = n(&c, "duplicate_packets") + n(&c, "replayed_packets");
    assert!(
        twice <= to_other,
        "other receiver: {c}\nsender: {sj}{}",
        logs()
    );
    if n(&c, "nacks_sent") == 0 {
        assert_eq!(to_other, 0, "{sj}");
        assert_eq!(n(&c, "recovered_packets"), 0, "{c}");
    }
    assert!(
        to_other < all,
        "the lossy receiver's repairs went to it: {sj}"
    );
    eprintln!(
        "{what}: lossy receiver: {} packets, {} recovered, {} NACKs; other: {} packets, {} NACKs, {} \
         packets twice; sender: {} NACKs, {} repairs ({} to the other receiver)",
        received(&l),
        n(&l, "recovered_packets"),
        n(&l, "nacks_sent"),
        received(&c),
        n(&c, "nacks_sent"),
        twice,
        n(&sj, "nacks_received"),
        all,
        to_other
    );
    (l, c, sj)
}

#[test]
fn a_multicast_group_reaches_two_receivers_and_only_the_lossy_one_gets_repairs() {
    let _serial = serial();
    let Some(lab) = Lab::star(2, "multicast to several receivers") else {
        return;
    };
    let key = key_file("group.key");
    let key = key.to_str().unwrap();
    let (r0, r1) = (&lab.receivers[0], &lab.receivers[1]);
    // Receiver 0 joins on its interface by name, receiver 1 by its address.
    let f0 = Files::new("group-r0");
    let mut rx0 = receiver(
        lab.netaudio(&r0.0),
        GROUP,
        &["--interface", r0.1.as_str(), "--key-file", key],
        true,
        &f0,
    );
    let addr1 = Lab::receiver_addr(1);
    let f1 = Files::new("group-r1");
    let mut rx1 = receiver(
        lab.netaudio(&r1.0),
        GROUP,
        &["--interface", addr1.as_str(), "--key-file", key],
        false,
        &f1,
    );
    ready(&mut rx0, &f0);
    ready(&mut rx1, &f1);
    let fs = Files::new("group-send");
    let tx = sender(
        lab.netaudio(&lab.a),
        GROUP,
        &["--interface", "br0", "--ttl", "1", "--key-file", key],
        &fs,
    );
    let other = format!("{addr1}:46000");
    stream_and_check((rx0, f0), (rx1, f1), (tx, fs), &other, "multicast");
    let log = text(&tmp("group-r0.log"));
    assert!(
        log.contains("joined the multicast group 239.255.46.1"),
        "{log}"
    );
    let send_log = text(&tmp("group-send.log"));
    assert!(
        send_log.contains("multicast to 239.255.46.1:46000 (hop limit 1, interface br0)"),
        "{send_log}"
    );
}

#[test]
fn an_ipv6_group_reaches_two_receivers_and_only_the_lossy_one_gets_repairs() {
    let _serial = serial();
    let Some(lab) = Lab::star(2, "IPv6 multicast to several receivers") else {
        return;
    };
    let group = "[ff05::46]:46000";
    let (r0, r1) = (&lab.receivers[0], &lab.receivers[1]);
    let f0 = Files::new("group6-r0");
    let mut rx0 = receiver(
        lab.netaudio(&r0.0),
        group,
        &["--interface", r0.1.as_str()],
        true,
        &f0,
    );
    let addr1 = Lab::receiver_addr6(1);
    let f1 = Files::new("group6-r1");
    let mut rx1 = receiver(
        lab.netaudio(&r1.0),
        group,
        &["--interface", addr1.as_str()],
        false,
        &f1,
    );
    ready(&mut rx0, &f0);
    ready(&mut rx1, &f1);
    let fs = Files::new("group6-send");
    let tx = sender(lab.netaudio(&lab.a), group, &["--interface", "br0"], &fs);
    let other = format!("[{addr1}]:46000");
    stream_and_check((rx0, f0), (rx1, f1), (tx, fs), &other, "IPv6 multicast");
}

#[test]
fn a_list_of_two_receivers_on_loopback_each_get_the_stream_and_only_their_own_repairs() {
    let _serial = serial();
    let (p0, p1) = (free_port(), free_port());
    let (a0, a1) = (format!("127.0.0.1:{p0}"), format!("127.0.0.1:{p1}"));
    let f0 = Files::new("list-r0");
    let mut rx0 = receiver(bin(), &a0, &[], true, &f0);
    let f1 = Files::new("list-r1");
    let mut rx1 = receiver(bin(), &a1, &[], false, &f1);
    ready(&mut rx0, &f0);
    ready(&mut rx1, &f1);
    let fs = Files::new("list-send");
    let tx = sender(bin(), &format!("{a0},{a1}"), &[], &fs);
    stream_and_check((rx0, f0), (rx1, f1), (tx, fs), &a1, "list");
    let send_log = text(&tmp("list-send.log"));
    assert!(
        send_log.contains("each of 2 receivers (one sendmmsg per packet)"),
        "{send_log}"
    );
}
