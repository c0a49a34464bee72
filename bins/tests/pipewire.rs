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
//!   is the signal, bit for bit. PipeWire's own SAP announcement of that stream is read with the
//!   engine's SAP parser on the way.
//!
//! PipeWire 0.3.65's `module-rtp-source` steers its buffer by resampling its input all the time
//! (its DLL sets an active rate match, so audioconvert interpolates at ratios like 47994:48000
//! and copies only while the ratio rounds to 1). The ramp it passes on is therefore checked to
//! one step of rounding, outside the few frames around the ramp's two full-scale jumps where
//! the interpolation rings; the share of frames that come out bit-exact is printed.
//!
//! Without PipeWire the tests skip with a loud message, unless `CI=true` or
//! `NETAUDIO_PIPEWIRE=require` (as `ci/test` sets): then a missing PipeWire is a failure.

use engine::rtp::sap::{SapKind, SapMessage};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const RATE: u32 = 48_000;

fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("NETAUDIO_PIPEWIRE").as_deref() == Ok("require")
}

/// Whether PipeWire and its tools run here; fails when they are required and absent.
fn have_pipewire() -> bool {
    let missing: Vec<&str> = ["pipewire", "pw-cli", "pw-link", "pw-record", "pw-play"]
        .into_iter()
        .filter(|p| {
            !Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !required(),
        "CI=true or NETAUDIO_PIPEWIRE=require, but {missing:?} do not run: apt-get install pipewire pipewire-bin (ci/rig-setup does)"
    );
    eprintln!(
        "\n*** SKIPPED: {missing:?} not installed, PipeWire interoperability NOT tested \
         (apt-get install pipewire pipewire-bin; NETAUDIO_PIPEWIRE=require makes this a failure) ***\n"
    );
    false
}

fn even_port() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p % 2 == 0 && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free even port");
}

/// Ports that make a stream's node show its channels without a session manager.
const PORTS: &str = "adapter.auto-port-config = { mode = dsp position = preserve }";

/// A private PipeWire daemon, killed (with every client started through it) on drop.
struct PipeWire {
    dir: PathBuf,
    daemon: Reaper,
    clients: Vec<Reaper>,
}

impl PipeWire {
    /// Starts PipeWire with the modules a headless graph needs, `extra` module entries, and a
    /// dummy driver; returns once it answers `pw-cli`.
    fn start(name: &str, extra: &str) -> PipeWire {
        let dir = std::env::temp_dir().join(format!("netaudio-pw-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["run", "config", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let conf = dir.join("pipewire.conf");
        std::fs::write(
            &conf,
            format!(
                r#"context.properties = {{
    support.dbus = false
    core.daemon = true
    core.name = pipewire-0
    default.clock.rate = {RATE}
    default.clock.quantum = 256
    log.level = 2
}}
context.spa-libs = {{
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}}
context.modules = [
    {{ name = libpipewire-module-protocol-native }}
    {{ name = libpipewire-module-metadata }}
    {{ name = libpipewire-module-spa-node-factory }}
    {{ name = libpipewire-module-client-node }}
    {{ name = libpipewire-module-adapter }}
    {{ name = libpipewire-module-link-factory }}
    {{ name = libpipewire-module-access args = {{ }} }}
{extra}
]
context.objects = [
    {{ factory = spa-node-factory
      args = {{
        factory.name    = support.node.driver
        node.name       = Dummy-Driver
        node.group      = pipewire.dummy
        priority.driver = 20000
      }}
    }}
]
"#
            ),
        )
        .unwrap();
        let mut pw = PipeWire {
            daemon: Reaper(
                Command::new("pipewire")
                    .arg("-c")
                    .arg(&conf)
                    .envs(env_for(&dir))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("pipewire.log")).unwrap())
                    .spawn()
                    .expect("pipewire starts"),
            ),
            dir,
            clients: Vec::new(),
        };
        pw.wait("PipeWire to answer pw-cli", |pw| {
            pw.output(&["pw-cli", "info", "0"])
                .filter(|o| o.contains("core"))
                .map(|_| ())
        });
        pw
    }

    /// A command of PipeWire's tools talking to this daemon.
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.envs(env_for(&self.dir));
        c
    }

    /// Runs a tool to completion (10 s at most); its stdout when it succeeded.
    fn output(&self, args: &[&str]) -> Option<String> {
        let mut child = self
            .cmd(args[0])
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let out = child.wait_with_output().ok()?;
                return out
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Keeps a client running until the end of the test.
    fn spawn(&mut self, c: &mut Command) -> usize {
        self.clients
            .push(Reaper(c.spawn().expect("a PipeWire client starts")));
        self.clients.len() - 1
    }

    /// Polls `state` until it holds; fails naming `what`, with PipeWire's log and the ports.
    fn wait<T>(&mut self, what: &str, mut state: impl FnMut(&mut PipeWire) -> Option<T>) -> T {
        let end = Instant::now() + STATE_TIMEOUT;
        loop {
            if let Some(v) = state(self) {
                return v;
            }
            if let Ok(Some(s)) = self.daemon.try_wait() {
                panic!("waiting for {what}: pipewire exited ({s})\n{}", self.log());
            }
            if Instant::now() > end {
                panic!(
                    "gave up waiting {STATE_TIMEOUT:?} for {what}\nports:\n{}\n{}\npipewire's log:\n{}",
                    self.output(&["pw-link", "-o"]).unwrap_or_default(),
                    self.output(&["pw-link", "-i"]).unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the ports `node:output_FL`/`_FR` (or `input_`) exist.
    fn wait_ports(&mut self, node: &str, dir: &str) {
        let flag = if dir == "output" { "-o" } else { "-i" };
        let want = [format!("{node}:{dir}_FL"), format!("{node}:{dir}_FR")];
        self.wait(&format!("the ports {want:?}"), |pw| {
            let ports = pw.output(&["pw-link", flag])?;
            want.iter()
                .all(|p| ports.lines().any(|l| l.trim() == p))
                .then_some(())
        });
    }

    /// Links `from`'s outputs to `to`'s inputs, channel by channel.
    fn link(&mut self, from: &str, to: &str) {
        for ch in ["FL", "FR"] {
            let (o, i) = (format!("{from}:output_{ch}"), format!("{to}:input_{ch}"));
            self.wait(&format!("pw-link {o} {i}"), |pw| {
                pw.output(&["pw-link", &o, &i]).map(|_| ())
            });
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pipewire.log")).unwrap_or_default()
    }
}

impl Drop for PipeWire {
    fn drop(&mut self) {
        self.clients.clear(); // each Reaper kills its client
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Kept for a look when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The environment that points PipeWire and its clients at the private folders (and nowhere
/// else: no user config, no session bus).
fn env_for(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("XDG_RUNTIME_DIR", dir.join("run")),
        ("PIPEWIRE_RUNTIME_DIR", dir.join("run")),
        ("XDG_CONFIG_HOME", dir.join("config")),
        ("XDG_STATE_HOME", dir.join("state")),
        ("PIPEWIRE_REMOTE", "pipewire-0".into()),
        ("DBUS_SESSION_BUS_ADDRESS", "disabled:".into()),
    ]
}

fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).map_or(0, |m| m.len() as usize)
}

/// What a check of the ramp found.
#[derive(Debug)]
struct RampCheck {
    /// Frames checked (from the first full ramp frame on).
    frames: usize,
    /// Frames equal to the ramp bit for bit.
    exact: usize,
    /// Frames skipped around the ramp's full-scale jumps.
    near_jumps: usize,
    /// Largest distance from the ramp, in steps (frames), elsewhere.
    worst: i32,
    /// How far the ramp moved against a count of frames (what resampling took or added).
    drift: i32,
}

/// The ramp of a virtual capture in S16 stereo: left = n, right = n + 32768 (mod 2^16).
/// Checks `frames` frames of `rec` from the first full ramp frame on: every frame one step on
/// from the last, within `tolerance` steps of rounding (resampling), outside ±`guard` frames of
/// the two places per 65536 frames where a channel jumps from full scale to its opposite.
fn check_ramp(rec: &[u8], frames: usize, tolerance: i32, guard: u16) -> Result<RampCheck, String> {
    let at = |k: usize| {
        let f = &rec[k * 4..k * 4 + 4];
        (
            u16::from_le_bytes([f[0], f[1]]),
            u16::from_le_bytes([f[2], f[3]]),
        )
    };
    let total = rec.len() / 4;
    // The ramp begins where 256 frames in a row are the ramp in both channels (before that:
    // silence, or one channel while the second link is being made).
    let start = (0..total.saturating_sub(256))
        .find(|&k| {
            let (l0, _) = at(k);
            (0..256u16).all(|i| {
                let (l, r) = at(k + i as usize);
                l == l0.wrapping_add(i) && r == l.wrapping_add(32_768)
            })
        })
        .ok_or("no ramp in the recording")?;
    if total - start < frames {
        return Err(format!(
            "the ramp starts at frame {start} of {total}: fewer than {frames} frames after it"
        ));
    }
    let (l0, _) = at(start);
    let mut c = RampCheck {
        frames,
        exact: 0,
        near_jumps: 0,
        worst: 0,
        drift: 0,
    };
    for k in 0..frames {
        let want = l0.wrapping_add(k as u16).wrapping_add(c.drift as u16);
        let (l, r) = at(start + k);
        // Distance of the frame index from a jump: left jumps at 32768, right at 0.
        let near = |n: u16, jump: u16| n.wrapping_sub(jump).min(jump.wrapping_sub(n)) <= guard;
        if near(want, 32_768) || near(want, 0) {
            c.near_jumps += 1;
            continue;
        }
        if (l, r) == (want, want.wrapping_add(32_768)) {
            c.exact += 1;
            continue;
        }
        let dl = l.wrapping_sub(want) as i16 as i32;
        let dr = r.wrapping_sub(want.wrapping_add(32_768)) as i16 as i32;
        if dl.abs() > tolerance || dr.abs() > tolerance {
            return Err(format!(
                "frame {} (ramp frame {k}): ({l}, {r}) where ({want}, {}) was due: a gap, a jump or a wrong sample",
                start + k,
                want.wrapping_add(32_768)
            ));
        }
        c.worst = c.worst.max(dl.abs()).max(dr.abs());
        // Resampling moves the ramp slowly: follow it.
        if dl == dr {
            c.drift += dl;
        }
    }
    Ok(c)
}

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
    let c = check_ramp(&recorded, 8 * RATE as usize, 1, 64)
        .unwrap_or_else(|e| panic!("what PipeWire recorded is not the ramp: {e}"));
    eprintln!(
        "netaudio → PipeWire module-rtp-source → pw-record: {} frames (8 s) of the ramp in order, no gap; {} bit-exact ({:.1} %), {} skipped next to the ramp's jumps, the rest within {} step of PipeWire's resampling; drift {} frames",
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
    let played_enough = |v: &serde_json::Value| received(v) as usize * 320 * 4 >= input.len();
    let v = wait_status(&mut receiver.0, &sock, "PipeWire's packets", played_enough);
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
    assert!(
        played.len() >= at + noise.len(),
        "played {} bytes, the noise needs {} from {at}: {j}",
        played.len(),
        noise.len()
    );
    let got = &played[at..at + noise.len()];
    let bad = (0..noise.len() / 4).find(|&k| got[k * 4..k * 4 + 4] != noise[k * 4..k * 4 + 4]);
    assert_eq!(
        bad, None,
        "what netaudio played is what pw-play played into PipeWire's rtp-sink, bit for bit: {j}"
    );
    let before = played[..at].iter().rposition(|&b| b != 0);
    assert_eq!(before, None, "only silence before the noise: {j}");
    eprintln!(
        "PipeWire module-rtp-sink → netaudio{}: {} frames of noise bit-exact ({} packets, payload type 127)",
        if follow_sap {
            " (port and format from its SAP announcement)"
        } else {
            ""
        },
        noise.len() / 4,
        received(&j)
    );
}

/// The ramp check itself: it takes rounding, and finds a lost packet and a wrong sample.
#[test]
fn the_ramp_check_finds_gaps_and_takes_rounding() {
    let ramp = |n: std::ops::Range<u32>| -> Vec<u8> {
        n.flat_map(|n| {
            let l = n as u16;
            [l.to_le_bytes(), l.wrapping_add(32_768).to_le_bytes()].concat()
        })
        .collect()
    };
    let mut rec = vec![0u8; 4000];
    rec.extend(ramp(1000..200_000));
    let c = check_ramp(&rec, 150_000, 1, 64).unwrap();
    assert_eq!(c.exact + c.near_jumps, c.frames);
    // Rounding: one frame one step off in both channels.
    let mut off = rec.clone();
    let k = 4000 + 4 * 5000;
    let v: u16 = 1000 + 5000 - 1; // the ramp's 6000, rounded down
    off[k..k + 4].copy_from_slice(&[v.to_le_bytes(), (v + 32_768).to_le_bytes()].concat());
    assert!(check_ramp(&off, 150_000, 1, 64).is_ok());
    // A lost packet (256 frames).
    let mut gap = vec![0u8; 4000];
    gap.extend(ramp(1000..50_000));
    gap.extend(ramp(50_256..200_000));
    let e = check_ramp(&gap, 150_000, 1, 64).unwrap_err();
    assert!(e.contains("a gap"), "{e}");
    // A wrong sample.
    let mut bad = rec.clone();
    bad[4000 + 4 * 9000] ^= 0x40;
    assert!(check_ramp(&bad, 150_000, 1, 64).is_err());
}
