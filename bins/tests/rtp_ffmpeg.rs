//! RTP interoperability with a real ffmpeg, both ways, checked bit for bit:
//! * `netaudio send --proto rtp` (virtual capture: the frame-index ramp) → ffmpeg opens the SDP
//!   the sender wrote and decodes to raw PCM, which must be the ramp, every frame, from the
//!   first one ffmpeg heard to the last (L16 at 48 kHz with payload type 96 and at 44.1 kHz
//!   with the static type 10, L24 at 48 kHz);
//! * ffmpeg's RTP muxer (`-f rtp`, its own SSRC and payload type) → `netaudio recv --proto rtp`
//!   with a recording virtual card: what is played must contain the input file exactly, with
//!   only silence before it and the receiver's 1 ms fade-in at its start (L16 at 48 kHz,
//!   ffmpeg's payload type 97, and at 44.1 kHz, type 10; L24 at 48 kHz).
//!
//! Without ffmpeg the tests skip with a loud message, unless `NETAUDIO_FFMPEG=require` (as
//! `ci/test` sets), which makes a missing ffmpeg a failure.

use engine::format::{SampleFormat, StreamFormat};
use engine::sim::signal::{Source, SourceKind};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Whether ffmpeg can run here; fails when it is required and absent.
fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("NETAUDIO_FFMPEG").as_deref() != Ok("require"),
            "NETAUDIO_FFMPEG=require but ffmpeg does not run: apt-get install ffmpeg (ci/setup does)"
        );
        eprintln!(
            "\n*** SKIPPED: ffmpeg is not installed, RTP interoperability NOT tested \
             (apt-get install ffmpeg; NETAUDIO_FFMPEG=require makes this a failure) ***\n"
        );
    }
    ok
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netaudio-rtp-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    // An even port whose odd neighbour (RTCP) is free too, as RTP tools expect.
    for _ in 0..100 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p % 2 == 0 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free even port");
}

/// Runs `cmd` to completion within `limit`; returns its stdout and stderr.
fn run(mut cmd: Command, limit: Duration) -> (String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let (o, e) = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
            assert!(status.success(), "{cmd:?}: {status}\n{o}\n{e}");
            return (o, e);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {limit:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn format_args(f: StreamFormat) -> Vec<String> {
    vec![
        "--rate".into(),
        f.rate.to_string(),
        "--channels".into(),
        f.channels.to_string(),
        "--format".into(),
        f.sample.name().into(),
        "--period".into(),
        "256".into(),
    ]
}

/// ffmpeg's raw sample format and codec for our little-endian format.
fn ffmpeg_raw(s: SampleFormat) -> (&'static str, &'static str, &'static str) {
    match s {
        SampleFormat::S16Le => ("s16le", "pcm_s16le", "pcm_s16be"),
        SampleFormat::S24_3Le => ("s24le", "pcm_s24le", "pcm_s24be"),
        SampleFormat::S32Le => unreachable!("RTP has no S32"),
    }
}

fn netaudio_to_ffmpeg(format: StreamFormat, expected_pt: u8) {
    let _serial = serial();
    if !have_ffmpeg() {
        return;
    }
    let d = dir(&format!("send-{}-{}", format.rate, format.sample));
    let (sdp, raw, json) = (d.join("stream.sdp"), d.join("out.raw"), d.join("send.json"));
    let _ = std::fs::remove_file(&sdp);
    let port = free_port();
    let mut sender = Reaper(
        bin()
            .args(["send", "--proto", "rtp", "--device", "virtual", "--dest"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--sdp")
            .arg(&sdp)
            .args(format_args(format))
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(d.join("status.sock"))
            .arg("--stats-json")
            .arg(&json)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while !sdp.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no SDP written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&sdp).unwrap();
    let enc = if format.sample == SampleFormat::S16Le {
        "L16"
    } else {
        "L24"
    };
    assert!(
        text.contains(&format!("m=audio {port} RTP/AVP {expected_pt}\r\n"))
            && text.contains(&format!(
                "a=rtpmap:{expected_pt} {enc}/{}/{}\r\n",
                format.rate, format.channels
            )),
        "{text}"
    );
    let (fmt, codec, _) = ffmpeg_raw(format.sample);
    let mut ff = Command::new("ffmpeg");
    ff.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
        .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(&sdp)
        .args(["-t", "2", "-c:a", codec, "-f", fmt, "-y"])
        .arg(&raw);
    let (_, ff_err) = run(ff, Duration::from_secs(60));
    terminate(&mut sender.0);
    let j = read_json(&json);
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["payload_type"], expected_pt, "{j}");

    let got = std::fs::read(&raw).unwrap();
    let fb = format.frame_bytes();
    let frames = got.len() / fb;
    assert!(
        frames as u32 >= format.rate * 3 / 2,
        "ffmpeg decoded {frames} frames\n{ff_err}"
    );
    assert_eq!(got.len() % fb, 0);
    // The ramp names its own position: the first frame says where ffmpeg started hearing.
    let sb = format.sample.bytes();
    let n0 = u16::from_le_bytes([got[sb - 2], got[sb - 1]]) as u64;
    let mut want = vec![0u8; got.len()];
    Source::new(SourceKind::Ramp, format).fill(n0, &mut want);
    let bad = (0..frames)
        .find(|&k| got[k * fb..(k + 1) * fb] != want[k * fb..(k + 1) * fb])
        .map(|k| {
            format!(
                "frame {k} of {frames} differs: {:?} != {:?}",
                &got[k * fb..(k + 1) * fb],
                &want[k * fb..(k + 1) * fb]
            )
        });
    assert_eq!(
        bad, None,
        "what ffmpeg decoded is the captured ramp, bit for bit\n{ff_err}"
    );
    eprintln!("netaudio → ffmpeg, {format}, payload type {expected_pt}: {frames} frames bit-exact");
}

#[test]
fn netaudio_sends_l16_48k_to_ffmpeg_bit_exact() {
    netaudio_to_ffmpeg(
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
        96,
    );
}

#[test]
fn netaudio_sends_l16_44k1_static_type_10_to_ffmpeg_bit_exact() {
    netaudio_to_ffmpeg(StreamFormat::DEFAULT, 10);
}

#[test]
fn netaudio_sends_l24_48k_to_ffmpeg_bit_exact() {
    netaudio_to_ffmpeg(
        StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap(),
        96,
    );
}

/// Known input: noise (every byte matters, so byte order and sample width are checked), with a
/// loud first frame that cannot be mistaken for the receiver's leading silence.
fn known_input(format: StreamFormat, seconds: f64) -> Vec<u8> {
    let n = (format.rate as f64 * seconds) as usize * format.frame_bytes();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    for b in &mut v[..format.frame_bytes()] {
        *b |= 0x41;
    }
    v
}

fn ffmpeg_to_netaudio(format: StreamFormat, expected_pt: u8) {
    let _serial = serial();
    if !have_ffmpeg() {
        return;
    }
    let d = dir(&format!("recv-{}-{}", format.rate, format.sample));
    let (known, rec, json) = (
        d.join("known.raw"),
        d.join("played.raw"),
        d.join("recv.json"),
    );
    let log = d.join("recv.log");
    let input = known_input(format, 2.0);
    std::fs::write(&known, &input).unwrap();
    let port = free_port();
    let mut receiver = Reaper(
        bin()
            .args(["recv", "--proto", "rtp", "--device"])
            .arg(format!("virtual:record={}", rec.display()))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(format_args(format))
            // Same clock on both sides: no drift correction, so the path is bit-exact.
            .args(["--latency-ms", "150", "--drift-mode", "off"])
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(d.join("status.sock"))
            .arg("--stats-json")
            .arg(&json)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_status(
        &mut receiver.0,
        &d.join("status.sock"),
        "the receiver to be ready",
        |_| true,
    );
    let (fmt, _, codec) = ffmpeg_raw(format.sample);
    let mut ff = Command::new("ffmpeg");
    ff.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", fmt, "-ar", &format.rate.to_string()])
        .args(["-ac", &format.channels.to_string(), "-i"])
        .arg(&known)
        .args(["-c:a", codec, "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{port}"));
    let (sdp, _) = run(ff, Duration::from_secs(60));
    // ffmpeg prints the SDP of what it sent: the payload type we meant to test.
    assert!(
        sdp.contains(&format!("m=audio {port} RTP/AVP {expected_pt}")),
        "{sdp}"
    );
    // Let the receive buffer play out: the receiver runs past the stream's last frame (the
    // silence after it is concealed), so everything received was played.
    // ffmpeg has sent everything: concealment from here on is the buffer running dry.
    let concealed = |v: &serde_json::Value| v["concealed_ms"].as_f64().unwrap_or(0.0);
    let c0 = concealed(&status(&d.join("status.sock")).expect("the receiver answers"));
    wait_status(
        &mut receiver.0,
        &d.join("status.sock"),
        "the receiver to play the stream out",
        |v| concealed(v) > c0,
    );
    terminate(&mut receiver.0);
    let j = read_json(&json);
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(
        j["xruns"],
        0,
        "{j}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(j["invalid_packets"], 0, "{j}");
    assert!(j["packets_received"].as_u64().unwrap() > 50, "{j}");

    let played = std::fs::read(&rec).unwrap();
    let fb = format.frame_bytes();
    // The receiver fades a new stream in over its concealment fade (1 ms) after the start-up
    // silence; every frame after that must be the input's.
    let fade = (format.rate as usize / 1000).max(8);
    let probe = &input[fade * fb..(fade + 32) * fb];
    let at = played
        .chunks_exact(fb)
        .enumerate()
        .position(|(k, _)| played[k * fb..].starts_with(probe))
        .unwrap_or_else(|| {
            let first = played.iter().position(|&b| b != 0);
            panic!(
                "the input is not in what was played ({} bytes, first non-zero byte at {first:?}): {j}\n{}",
                played.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert!(at >= fade, "the stream starts after its fade-in");
    let start = (at - fade) * fb;
    assert!(
        played[..start].iter().all(|&b| b == 0),
        "only silence before the stream"
    );
    assert!(
        played.len() >= start + input.len(),
        "played {} bytes from {start}, the input has {}",
        played.len(),
        input.len()
    );
    let got = &played[start..start + input.len()];
    let sb = format.sample.bytes();
    for (g, w) in got[..fade * fb]
        .chunks_exact(sb)
        .zip(input[..fade * fb].chunks_exact(sb))
    {
        let (g, w) = (
            format.sample.decode(g) as i64,
            format.sample.decode(w) as i64,
        );
        assert!(
            g.abs() <= w.abs() && g * w >= 0,
            "a fade-in scales the input: {g} from {w}"
        );
    }
    let bad = (fade..input.len() / fb)
        .find(|&k| got[k * fb..(k + 1) * fb] != input[k * fb..(k + 1) * fb])
        .map(|k| format!("frame {k} differs"));
    assert_eq!(
        bad, None,
        "what was played is ffmpeg's input, bit for bit: {j}"
    );
    eprintln!(
        "ffmpeg → netaudio, {format}, payload type {expected_pt}: {} frames bit-exact after a {fade}-frame fade-in",
        input.len() / fb - fade
    );
}

#[test]
fn ffmpeg_sends_l16_48k_to_netaudio_bit_exact() {
    // ffmpeg's dynamic payload type for audio is 97.
    ffmpeg_to_netaudio(
        StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
        97,
    );
}

#[test]
fn ffmpeg_sends_l16_44k1_static_type_10_to_netaudio_bit_exact() {
    ffmpeg_to_netaudio(StreamFormat::DEFAULT, 10);
}

#[test]
fn ffmpeg_sends_l24_48k_to_netaudio_bit_exact() {
    ffmpeg_to_netaudio(
        StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap(),
        97,
    );
}

#[test]
fn s32_in_rtp_mode_is_refused_with_the_fix() {
    let _serial = serial();
    let cases: [&[&str]; 2] = [
        &["send", "--dest", "127.0.0.1:9"],
        &["recv", "--listen", "127.0.0.1:0"],
    ];
    for args in cases {
        let out = bin()
            .args(args)
            .args(["--proto", "rtp", "--format", "S32_LE"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("S32_LE") && err.contains("S16_LE") && err.contains("S24_3LE"),
            "{args:?}: {err}"
        );
    }
}
