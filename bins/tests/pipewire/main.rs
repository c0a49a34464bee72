//! RTP and SAP round trips with a real PipeWire (0.3.65, Debian 12), run headless and private:
//! its own config, runtime and state folders in a temp dir, a dummy driver as the clock, no
//! session manager (streams get ports from `adapter.auto-port-config`, links come from
//! `pw-link`), SAP and RTP on 127.0.0.1 only.
//!
//! * `netaudio send --proto rtp --sap 127.0.0.1:P` (virtual capture: the frame-index ramp) →
//!   PipeWire's `module-rtp-source`, which creates its node only when the announcement arrives
//!   → `pw-record` → the ramp, in order and without a gap, for several seconds; and when the
//!   sender stops, its SAP deletion removes the node.
//! * `pw-play` of a known signal → PipeWire's `module-rtp-sink` (L16, payload type 127, 320
//!   frames a packet) → `netaudio recv --proto rtp` with a recording virtual card: what is played
//!   is the signal, bit for bit: once told the port and format (PipeWire's own SAP announcement
//!   read with the engine's parser on the way), once with `netaudio recv --sap`, which takes
//!   them from that announcement.
//!
//! PipeWire 0.3.65's `module-rtp-source` steers its buffer by resampling its input all the time
//! (its DLL sets an active rate match, so audioconvert interpolates at ratios like 47994:48000
//! and copies only while the ratio rounds to 1). The ramp it passes on is therefore checked to
//! a few steps (its interpolation rounds, and its gain is off by up to about 1e-4 at some
//! phases: 2 steps near full scale, seen on a loaded machine; a lost packet is 256 steps),
//! outside the few frames around the ramp's two full-scale jumps where the interpolation rings;
//! the share of frames that come out bit-exact and the largest deviation are printed.
//!
//! Without PipeWire the tests skip with a loud message, unless `CI=true` or
//! `NETAUDIO_PIPEWIRE=require` (as `ci/test` sets): then a missing PipeWire is a failure.

use engine::rtp::sap::{SapKind, SapMessage};
use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Instant;

#[path = "../common/mod.rs"]
mod common;
mod daemon;
mod ramp;

use common::*;
use daemon::{PORTS, PipeWire, QUANTUM, RATE, even_port, file_len, have_pipewire};
use ramp::check_ramp;

#[test]
fn netaudio_announces_by_sap_and_pipewire_records_the_ramp() {
    let _serial = serial();
    if !have_pipewire() {
        return;
    }
    let sap_port = free_port();
    let rtp_port = even_port();
    let mut pw = PipeWire::start(
        "source",
        &format!(
            r#"    {{ name = libpipewire-module-rtp-source
      args = {{
        sap.ip = 127.0.0.1
        sap.port = {sap_port}
        sess.latency.msec = 100
        stream.props = {{ {PORTS} }}
      }}
    }}"#
        ),
    );
    let d = pw.dir.clone();
    let (json, rec) = (d.join("send.json"), d.join("rec.raw"));
    let t0 = Instant::now();
    let mut sender = Reaper(
        bin()
            .args([
                "send", "--proto", "rtp", "--device", "virtual", "--rate", "48000",
            ])
            .args(["--channels", "2", "--format", "S16_LE", "--period", "256"])
            .arg("--dest")
            .arg(format!("127.0.0.1:{rtp_port}"))
            .arg("--sap")
            .arg(format!("127.0.0.1:{sap_port}"))
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(status_socket(&json))
            .arg("--stats-json")
            .arg(&json)
            .stderr(std::fs::File::create(d.join("send.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // The node exists only once PipeWire has read the announcement.
    pw.wait_ports("netaudio", "output");
    let appeared = t0.elapsed();
    pw.spawn(
        pw.cmd("pw-record")
            .args([
                "--target",
                "0",
                "--format",
                "s16",
                "--rate",
                "48000",
                "--channels",
                "2",
            ])
            .arg("-P")
            .arg(format!("{{ node.name = netaudio-test-rec {PORTS} }}"))
            .arg("-")
            .stdout(std::fs::File::create(&rec).unwrap())
            .stderr(Stdio::null()),
    );
    pw.wait_ports("netaudio-test-rec", "input");
    pw.link("netaudio", "netaudio-test-rec");
    // Ten seconds of audio recorded (the first second may hold the links' set-up).
    let want = 10 * RATE as usize * 4;
    pw.wait("10 s recorded by pw-record", |_| {
        (file_len(&rec) >= want).then_some(())
    });
    let t1 = Instant::now();
    terminate(&mut sender.0);
    // The deletion removes the node.
    pw.wait("the SAP deletion to remove the node", |pw| {
        let ports = pw.output(&["pw-link", "-o"])?;
        (!ports.contains("netaudio:output_")).then_some(())
    });
    let gone = t1.elapsed();
    let j = read_json(&json);
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    eprintln!(
        "PipeWire's node appeared {:.0} ms after the sender started, and was gone {:.0} ms after SIGTERM",
        appeared.as_secs_f64() * 1e3,
        gone.as_secs_f64() * 1e3
    );

    let recorded = std::fs::read(&rec).unwrap();
    let c = check_ramp(&recorded, 8 * RATE as usize, 4, 64)
        .unwrap_or_else(|e| panic!("what PipeWire recorded is not the ramp: {e}"));
    eprintln!(
        "netaudio → PipeWire module-rtp-source → pw-record: {} frames (8 s) of the ramp in order, no gap; {} bit-exact ({:.1} %), {} skipped next to the ramp's jumps, the rest within {} step(s) of PipeWire's resampling; drift {} frames",
        c.frames,
        c.exact,
        100.0 * c.exact as f64 / (c.frames - c.near_jumps) as f64,
        c.near_jumps,
        c.worst,
        c.drift
    );
}

/// Known input: 1 s of silence (the links' set-up), then noise (every bit matters), then
/// silence again.
fn known_input(noise_s: f64) -> (Vec<u8>, std::ops::Range<usize>) {
    let fb = 4;
    let lead = RATE as usize * fb;
    let n = (RATE as f64 * noise_s) as usize * fb;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = vec![0u8; lead];
    v.extend((0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    for b in &mut v[lead..lead + fb] {
        *b |= 0x41;
    }
    v.extend(std::iter::repeat_n(0u8, RATE as usize / 2 * fb));
    (v, lead..lead + n)
}

#[test]
fn pipewire_rtp_sink_plays_into_netaudio_bit_exact() {
    pipewire_to_netaudio(false);
}

#[test]
fn netaudio_follows_a_pipewire_rtp_sink_by_its_sap_announcement() {
    pipewire_to_netaudio(true);
}

/// pw-play → `module-rtp-sink` → `netaudio recv`, told the port and format (`follow_sap`
/// false: the test reads PipeWire's announcement itself), or finding them in PipeWire's SAP
/// announcement (`--sap`, no `--listen`, no format: the default 44.1 kHz would be wrong).
fn pipewire_to_netaudio(follow_sap: bool) {
    let _serial = serial();
    if !have_pipewire() {
        return;
    }
    let sap = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sap_port = sap.local_addr().unwrap().port();
    let rtp_port = even_port();
    let sap = (!follow_sap).then_some(sap); // else netaudio listens there
    let mut pw = PipeWire::start(
        "sink",
        &format!(
            r#"    {{ name = libpipewire-module-rtp-sink
      args = {{
        sap.ip = 127.0.0.1
        sap.port = {sap_port}
        destination.ip = 127.0.0.1
        destination.port = {rtp_port}
        audio.format = "S16BE"
        audio.rate = {RATE}
        audio.channels = 2
        audio.position = [ FL FR ]
        stream.props = {{ node.name = netaudio-test-sink {PORTS} }}
      }}
    }}"#
        ),
    );
    // PipeWire's own announcement, through the engine's parser.
    if let Some(sap) = &sap {
        sap.set_read_timeout(Some(STATE_TIMEOUT)).unwrap();
        let mut buf = [0u8; 4096];
        let n = sap
            .recv(&mut buf)
            .expect("PipeWire's rtp-sink announces its stream by SAP");
        let m = SapMessage::parse(&buf[..n]).expect("PipeWire's SAP message parses");
        assert_eq!(m.kind, SapKind::Announce);
        assert!(
            m.sdp.contains(&format!("m=audio {rtp_port} RTP/AVP 127"))
                && m.sdp.contains("a=rtpmap:127 L16/48000/2"),
            "{}",
            m.sdp
        );
    }
    let route: Vec<String> = if follow_sap {
        vec!["--sap".into(), format!("127.0.0.1:{sap_port}")]
    } else {
        [
            "--listen",
            &format!("127.0.0.1:{rtp_port}"),
            "--rate",
            "48000",
        ]
        .iter()
        .chain(&["--channels", "2", "--format", "S16_LE"])
        .map(|s| s.to_string())
        .collect()
    };

    let d = pw.dir.clone();
    let (known, rec, json, log) = (
        d.join("known.raw"),
        d.join("played.raw"),
        d.join("recv.json"),
        d.join("recv.log"),
    );
    let (input, noise) = known_input(3.0);
    std::fs::write(&known, &input).unwrap();
    let sock = status_socket(&json);
    let mut receiver = Reaper(
        bin()
            .args(["recv", "--proto", "rtp", "--device"])
            .arg(format!("virtual:record={}", rec.display()))
            .args(&route)
            .args([
                "--period",
                "256",
                "--latency-ms",
                "150",
                "--drift-mode",
                "off",
            ])
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(&sock)
            .arg("--stats-json")
            .arg(&json)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_status(&mut receiver.0, &sock, "the receiver to be ready", |_| true);
    pw.wait_ports("netaudio-test-sink", "input");
    let player = pw.spawn(
        pw.cmd("pw-play")
            .args([
                "--target",
                "0",
                "--format",
                "s16",
                "--rate",
                "48000",
                "--channels",
                "2",
            ])
            .arg("-P")
            .arg(format!("{{ node.name = netaudio-test-play {PORTS} }}"))
            .arg("-")
            .stdin(std::fs::File::open(&known).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    pw.wait_ports("netaudio-test-play", "output");
    pw.link("netaudio-test-play", "netaudio-test-sink");
    pw.wait("pw-play to play the whole file", |pw| {
        pw.clients[player].try_wait().ok().flatten().map(|_| ())
    });
    let concealed = |v: &serde_json::Value| v["concealed_ms"].as_f64().unwrap_or(0.0);
    // Packets (320 frames each) up to the end of the noise and 0.1 s after it.
    let enough = noise.end + RATE as usize / 10 * 4;
    let received_noise = |v: &serde_json::Value| received(v) as usize * 320 * 4 >= enough;
    let v = wait_status(&mut receiver.0, &sock, "PipeWire's packets", received_noise);
    // pw-play is gone, so the sink's node is no longer scheduled and sends nothing: everything
    // received has been played once the buffer runs dry (concealment begins).
    let c0 = concealed(&v);
    wait_status(
        &mut receiver.0,
        &sock,
        "the receiver to play the stream out",
        |v| concealed(v) > c0,
    );
    terminate(&mut receiver.0);
    let j = read_json(&json);
    let rlog = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["invalid_packets"], 0, "{j}");
    if follow_sap {
        assert!(
            rlog.contains("following the stream") && rlog.contains("L16 payload type 127"),
            "{rlog}"
        );
    }

    let played = std::fs::read(&rec).unwrap();
    let noise = &input[noise.clone()];
    let probe = &noise[..32 * 4];
    let at = (0..played.len().saturating_sub(probe.len()) / 4)
        .map(|k| k * 4)
        .find(|&k| played[k..].starts_with(probe))
        .unwrap_or_else(|| {
            panic!(
                "the noise is not in what was played ({} bytes): {j}\n{rlog}",
                played.len()
            )
        });
    // pw-play is an ordinary client: when it misses a graph cycle on a busy machine, PipeWire
    // mixes one quantum of silence into the sink and the signal goes on after it. Such runs of
    // exactly one quantum inside the noise come from PipeWire, before RTP (netaudio counts no
    // loss, no late packet, no resync); everything else must be the noise, bit for bit, in
    // order.
    for key in ["lost_packets", "late_packets", "resyncs", "invalid_packets"] {
        assert_eq!(j[key], 0, "{key}: {j}");
    }
    let frames = noise.len() / 4;
    let frame = |n: usize| played.get(n * 4..n * 4 + 4);
    let (mut i, mut k, mut inserted) = (0, at / 4, Vec::new());
    while i < frames {
        let want = &noise[i * 4..i * 4 + 4];
        match frame(k) {
            Some(f) if f == want => {
                i += 1;
                k += 1;
            }
            Some([0, 0, 0, 0]) => {
                let run = (k..)
                    .take_while(|&n| frame(n) == Some(&[0u8; 4][..]))
                    .count();
                inserted.push((i, run));
                k += run;
            }
            f => panic!(
                "what netaudio played is not what pw-play played into PipeWire's rtp-sink: noise frame {i} of {frames} is {f:?}, {want:?} was due (silence inserted before it: {inserted:?}): {j}\n{rlog}\npipewire's log:\n{}",
                pw.log()
            ),
        }
    }
    assert!(
        inserted.iter().all(|&(_, run)| run % QUANTUM == 0),
        "silence inside the noise that is not whole quanta of PipeWire's graph (at noise frame, frames): {inserted:?}: {j}"
    );
    let before = played[..at].iter().rposition(|&b| b != 0);
    assert_eq!(before, None, "only silence before the noise: {j}");
    eprintln!(
        "PipeWire module-rtp-sink → netaudio{}: {frames} frames of noise bit-exact, in order ({} packets, payload type 127); silence PipeWire mixed in where pw-play missed a cycle (at noise frame, frames): {inserted:?}",
        if follow_sap {
            " (port and format from its SAP announcement)"
        } else {
            ""
        },
        received(&j)
    );
}
