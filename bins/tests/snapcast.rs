//! Outputs that are not sound cards, with real programs at the other end:
//! * `netaudio send` (virtual capture: the frame-index ramp) → `netaudio recv --device
//!   snapcast:tcp://...` → a real `snapserver` (TCP source in server mode, `codec=pcm`) → a real
//!   `snapclient` writing what it plays to its stdout: the ramp, every frame in order, for more
//!   than 60 s of audio, with the latency Snapcast adds measured; then snapserver is restarted
//!   mid-stream: the receiver connects again (counted), does not stop, the stream goes on into
//!   the new snapserver, and its realtime thread allocated and freed nothing;
//! * `netaudio recv --device pipe:FIFO` read by this test: the ramp in order; a reader that
//!   stops reading fills the pipe, the frames that do not fit are counted as dropped while the
//!   receiver goes on (its status keeps advancing), and a reader that goes away and a new one
//!   are counted too;
//! * `netaudio recv --device stdout` piped into this test: nothing but the ramp on stdout.
//!
//! The receivers run with `--drift-mode off` (sender and receiver share this machine's clock)
//! so the ramp arrives bit for bit and every frame can be checked.
//!
//! Without snapserver/snapclient the Snapcast test skips with a loud message, unless `CI=true`
//! or `NETAUDIO_SNAPCAST=require` (as `ci/test` sets), which make their absence a failure.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::ramp::{FADE_IN, Heard, RATE, lap_of, latency, listen};
use common::*;

/// Whether snapserver and snapclient run here; fails when they are required and absent.
fn have_snapcast() -> bool {
    let runs = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = runs("snapserver") && runs("snapclient");
    if !ok {
        let required = std::env::var("CI").as_deref() == Ok("true")
            || std::env::var("NETAUDIO_SNAPCAST").as_deref() == Ok("require");
        assert!(
            !required,
            "snapserver/snapclient are required (CI=true or NETAUDIO_SNAPCAST=require) but do \
             not run: apt-get install snapserver snapclient (ci/rig-setup does)"
        );
        eprintln!(
            "\n*** SKIPPED: snapserver/snapclient are not installed, the Snapcast output is NOT \
             tested (apt-get install snapserver snapclient; NETAUDIO_SNAPCAST=require makes \
             this a failure) ***\n"
        );
    }
    ok
}

/// A TCP port free on loopback right now.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `netaudio send` of the ramp to `port`.
fn send(port: u16) -> Reaper {
    Reaper(
        bin()
            .args(["send", "--device", "virtual", "--dest"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--rate", "48000", "--channels", "2", "--format", "S16_LE"])
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(tmp(&format!("send-{port}.sock")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `netaudio recv --device DEVICE` on `port`; it answers `netaudio status` at
/// `status_socket(json)`.
fn recv(port: u16, device: &str, json: &Path, stdout: Stdio) -> Reaper {
    Reaper(
        bin()
            .args(["recv", "--device", device, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--rate", "48000", "--channels", "2", "--format", "S16_LE"])
            .args(["--drift-mode", "off", "--latency-ms", "40"])
            .args(["--stats-interval", "0", "--status-socket"])
            .arg(status_socket(json))
            .arg("--stats-json")
            .arg(json)
            .stdout(stdout)
            .stderr(std::fs::File::create(json.with_extension("log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn log_of(json: &Path) -> String {
    std::fs::read_to_string(json.with_extension("log")).unwrap_or_default()
}

/// A TCP source in server mode on `port`, reading `sampleformat` (e.g. `48000:16:2`).
fn tcp_source(port: u16, sampleformat: &str) -> String {
    format!(
        "tcp://127.0.0.1:{port}?name=netaudio&mode=server&codec=pcm&sampleformat={sampleformat}"
    )
}

/// A snapserver on private ports with its own data folder, killed when dropped.
struct SnapServer {
    child: Reaper,
    log: PathBuf,
    control: u16,
}

impl SnapServer {
    /// Starts one reading `source` (a snapserver source URI, e.g. [`tcp_source`]).
    fn start(dir: &Path, source: &str, [stream, control, http]: [u16; 3]) -> SnapServer {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!(
            "snapserver-{}.log",
            std::fs::read_dir(dir).unwrap().count()
        ));
        let child = Command::new("snapserver")
            // Not /etc/snapserver.conf: its idle default FIFO stream would be the first one.
            .args(["-c", "/dev/null"])
            .arg(format!("--server.datadir={}", dir.display()))
            .args(["--stream.bind_to_address", "127.0.0.1", "--stream.port"])
            .arg(stream.to_string())
            .args(["--tcp.bind_to_address", "127.0.0.1", "--tcp.port"])
            .arg(control.to_string())
            .args(["--http.bind_to_address", "127.0.0.1", "--http.port"])
            .arg(http.to_string())
            .arg("--stream.source")
            .arg(source)
            .args(["--logging.sink", "stderr"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("snapserver");
        let mut s = SnapServer {
            child: Reaper(child),
            log,
            control,
        };
        wait_for("snapserver's control port", STATE_TIMEOUT, || {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("snapserver exited ({st}): {}", s.log_text());
            }
            s.source_status()
        });
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status of its source `netaudio` ("idle", "playing"), asked over JSON-RPC.
    fn source_status(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.control)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"Server.GetStatus\"}\r\n")
            .ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        let v: Value = serde_json::from_str(&line).ok()?;
        v["result"]["server"]["streams"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == "netaudio")
            .and_then(|s| s["status"].as_str().map(String::from))
    }

    /// SIGTERM, and waits for it to exit.
    fn stop(mut self) -> String {
        // SAFETY: kill sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_for("snapserver to exit", STATE_TIMEOUT, || {
            self.child.try_wait().unwrap()
        });
        self.log_text()
    }
}

/// A snapclient writing what it plays (samples of `bits`) to its stdout, read into a [`Heard`].
fn snapclient(stream: u16, bits: u16) -> (Reaper, Arc<Mutex<Heard>>) {
    let mut c = Command::new("snapclient")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(stream.to_string())
        .arg("--hostID")
        .arg(format!("netaudio-test-{}", std::process::id()))
        .args(["--player", "file:filename=stdout", "--logsink", "stderr"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("snapclient");
    let heard = listen(c.stdout.take().unwrap(), bits);
    (Reaper(c), heard)
}

/// Runs that this shared machine spoils (the receiver's realtime thread not run for longer
/// than its device buffer: an xrun, and the gap it leaves in the ramp) are repeated rather
/// than counted, at most this many; the last one is checked in full.
const ATTEMPTS: usize = 3;

/// The Snapcast path end to end, with a snapserver restart in the middle.
#[test]
fn snapcast_plays_the_ramp_in_order_and_survives_a_snapserver_restart() {
    if !have_snapcast() {
        return;
    }
    let _serial = serial();
    for attempt in 1..=ATTEMPTS {
        match snapcast_round_trip(attempt == ATTEMPTS) {
            Ok(()) => return,
            Err(why) => eprintln!("attempt {attempt} void: {why}"),
        }
    }
}

/// Why a run is void: the receiver counted xruns or gaps of its own (this machine stalled it),
/// unless it is the `last` attempt, which is checked in full.
fn stalled(json: &Path, last: bool) -> Option<String> {
    let st = status(&status_socket(json))?;
    let n = |k: &str| st[k].as_u64().unwrap_or(0);
    (!last && n("xruns") + n("gaps") > 0).then(|| {
        format!(
            "the receiver stalled ({} xruns, {} gaps)",
            n("xruns"),
            n("gaps")
        )
    })
}

/// One run of the round trip; `Err` when the machine spoiled it (see [`stalled`]).
fn snapcast_round_trip(last: bool) -> Result<(), String> {
    let dir = tmp("snapserver");
    let (source, stream, control) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let ports = [stream, control, free_tcp_port()];
    let server = SnapServer::start(&dir, &tcp_source(source, "48000:16:2"), ports);
    let (mut client, heard) = snapclient(stream, 16);
    wait_for("snapclient to play (silence)", STATE_TIMEOUT, || {
        (heard.lock().unwrap().silence > 48_000).then_some(())
    });
    let port = free_port();
    let json = tmp("recv-snapcast.json");
    let device = format!("snapcast:tcp://127.0.0.1:{source}?control={control}");
    let mut r = recv(port, &device, &json, Stdio::null());
    wait_for("the receiver to feed snapserver", STATE_TIMEOUT, || {
        if let Ok(Some(st)) = r.try_wait() {
            panic!("netaudio recv exited ({st}): {}", log_of(&json));
        }
        (server.source_status().as_deref() == Some("playing")).then_some(())
    });
    let t0 = Instant::now();
    let _s = send(port);
    // More than 60 s of audio through snapserver and snapclient, every frame in order.
    let minute = 61.0 * RATE;
    wait_for(
        "61 s of the ramp from snapclient",
        Duration::from_secs(150),
        || {
            let h = heard.lock().unwrap();
            let o = h.in_order(0);
            if o.broke_at.is_some() || h.other > FADE_IN {
                if let Some(why) = stalled(&json, last) {
                    return Some(Err(why));
                }
            }
            assert!(
                o.broke_at.is_none() && h.other <= FADE_IN,
                "the ramp lost or repeated frames before the restart: {}\n{}",
                h.describe(),
                log_of(&json)
            );
            (o.frames as f64 >= minute).then_some(Ok(()))
        },
    )?;
    let run1 = heard.lock().unwrap().runs[0].clone();
    // The sender started after snapclient played: its first frames are in the first lap.
    let (lat_min, lat_med) = latency(&run1, 0, t0);
    assert!(
        (0.0..5.0).contains(&lat_min),
        "latency {lat_min} s: the first frame heard was not the stream's first lap"
    );
    let log1 = server.stop();
    let resyncs1 = log1.matches("onResync").count();
    let server = SnapServer::start(&dir, &tcp_source(source, "48000:16:2"), ports);
    wait_for(
        "the receiver to feed the new snapserver",
        STATE_TIMEOUT,
        || {
            if let Ok(Some(st)) = r.try_wait() {
                panic!("netaudio recv exited ({st}): {}", log_of(&json));
            }
            (server.source_status().as_deref() == Some("playing")).then_some(())
        },
    );
    // The stream goes on through the new snapserver: 5 s more in order, from where the
    // receiver came back (what was sent meanwhile is lost: the ramp jumps once).
    let (before, after) = wait_for(
        "5 s of the ramp after the restart",
        Duration::from_secs(90),
        || {
            let h = heard.lock().unwrap();
            let before = h.in_order(0);
            let after = h.in_order(before.broke_at?);
            if after.broke_at.is_some() {
                if let Some(why) = stalled(&json, last) {
                    return Some(Err(why));
                }
            }
            assert!(
                after.broke_at.is_none(),
                "the ramp broke after the restart: {}",
                h.describe()
            );
            (after.frames as f64 >= 5.0 * RATE).then_some(Ok((before, after)))
        },
    )?;
    terminate(&mut r);
    let h = heard.lock().unwrap();
    let after_run = h.runs[before.broke_at.unwrap()].clone();
    let lap = lap_of(&after_run, t0, lat_med);
    let (_, lat2_med) = latency(&after_run, lap, t0);
    let other = h.other;
    drop(h);
    let log2 = server.stop();
    let _ = client.kill();
    let j = read_json(&json);
    let resyncs2 = log2.matches("onResync").count();
    eprintln!(
        "snapcast: {} frames ({:.1} s) in order before the restart ({} pauses of silence, {} \
         single-frame slips; snapserver resyncs {resyncs1}), {} after ({} pauses, {} slips; \
         resyncs {resyncs2}); capture to snapclient output {:.0} ms (min {:.0} ms), after the \
         restart {:.0} ms; receiver: {} reconnects, {} frames dropped, {} written",
        before.frames,
        before.frames as f64 / RATE,
        before.pauses,
        before.slips,
        after.frames,
        after.pauses,
        after.slips,
        lat_med * 1e3,
        lat_min * 1e3,
        lat2_med * 1e3,
        j["output_reconnects"],
        j["output_frames_dropped"],
        j["output_frames_written"]
    );
    // A pause is snapserver's resync (it read a chunk late: this machine stalled it), never
    // the receiver's.
    assert!(
        before.pauses <= resyncs1 && after.pauses <= resyncs2,
        "pauses of silence that snapserver did not log as resyncs"
    );
    assert!(
        other <= FADE_IN,
        "snapclient played {other} frames that are not the ramp (besides the fade-in)"
    );
    assert!(j["output_reconnects"].as_u64() >= Some(1), "{j}");
    assert!(j["output_disconnects"].as_u64() >= Some(1), "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
    assert_eq!(j["gaps"], 0, "{j}");
    Ok(())
}

/// A FIFO read by this test: the ramp in order; a stalled reader costs counted frames, not
/// the receiver's pace; a reader that goes away and a new one are counted.
#[test]
fn a_fifo_output_feeds_a_reader_and_counts_what_a_stalled_one_misses() {
    let _serial = serial();
    let fifo = tmp("out.fifo");
    let _ = std::fs::remove_file(&fifo);
    let port = free_port();
    let json = tmp("recv-pipe.json");
    let mut r = recv(
        port,
        &format!("pipe:{}", fifo.display()),
        &json,
        Stdio::null(),
    );
    let sock = status_socket(&json);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    assert!(fifo.exists(), "the receiver made the FIFO");
    // A reader that can be told to stop reading.
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (h, go, path) = (heard.clone(), reading.clone(), fifo.clone());
    let reader = std::thread::spawn(move || {
        // Blocks until the receiver opens its end.
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        while go.load(std::sync::atomic::Ordering::Relaxed) {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => h.lock().unwrap().feed(&buf[..n], Instant::now()),
            }
        }
        f
    });
    wait_for("the receiver to open the FIFO", STATE_TIMEOUT, || {
        (heard.lock().unwrap().silence > 0).then_some(())
    });
    let t0 = Instant::now();
    let _s = send(port);
    wait_for("5 s of the ramp", STATE_TIMEOUT, || {
        (heard.lock().unwrap().longest() as f64 >= 5.0 * RATE).then_some(())
    });
    let (lat_min, lat_med) = latency(&heard.lock().unwrap().runs[0], 0, t0);
    {
        let h = heard.lock().unwrap();
        assert!(
            h.runs.len() == 1 && h.other <= FADE_IN,
            "the ramp broke: {} runs, {} other frames",
            h.runs.len(),
            h.other
        );
    }
    // The reader stops reading, its end still open: the pipe fills; the receiver goes on.
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let f = reader.join().unwrap();
    let before = received(&wait_status(&mut r, &sock, "a status", |_| true));
    wait_status(
        &mut r,
        &sock,
        "the receiver to go on (3 s of packets)",
        |v| received(v) > before + 3 * 48_000 / 256,
    );
    // The reader goes away (the receiver notices at its next write); a new one comes and gets
    // the stream again.
    drop(f);
    wait_for("the receiver to see the reader go", STATE_TIMEOUT, || {
        log_of(&json).contains("the reader went away").then_some(())
    });
    let heard2 = Arc::new(Mutex::new(Heard::default()));
    let (h2, path) = (heard2.clone(), fifo.clone());
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            h2.lock().unwrap().feed(&buf[..n], Instant::now());
        }
    });
    wait_for("2 s of the ramp for a new reader", STATE_TIMEOUT, || {
        (heard2.lock().unwrap().longest() as f64 >= 2.0 * RATE).then_some(())
    });
    terminate(&mut r);
    let j = read_json(&json);
    eprintln!(
        "pipe: capture to FIFO reader {:.0} ms (min {:.0} ms); {} frames dropped while the \
         reader stalled, {} disconnects, {} reconnects",
        lat_med * 1e3,
        lat_min * 1e3,
        j["output_frames_dropped"],
        j["output_disconnects"],
        j["output_reconnects"]
    );
    assert_eq!(heard2.lock().unwrap().other, 0);
    // 3 s stalled, less what the pipe held.
    assert!(
        j["output_frames_dropped"].as_u64() > Some(2 * 48_000),
        "{j}"
    );
    assert!(j["output_disconnects"].as_u64() >= Some(1), "{j}");
    assert!(j["output_reconnects"].as_u64() >= Some(1), "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
}

/// `netaudio recv --device stdout | this test`: the ramp and nothing else.
#[test]
fn stdout_carries_the_ramp_and_nothing_else() {
    let _serial = serial();
    let port = free_port();
    let json = tmp("recv-stdout.json");
    let mut r = recv(port, "stdout", &json, Stdio::piped());
    let heard = listen(r.stdout.take().unwrap(), 16);
    let sock = status_socket(&json);
    wait_status(&mut r, &sock, "the receiver to be ready", |_| true);
    let _s = send(port);
    wait_for("3 s of the ramp on stdout", STATE_TIMEOUT, || {
        (heard.lock().unwrap().longest() as f64 >= 3.0 * RATE).then_some(())
    });
    terminate(&mut r);
    let h = heard.lock().unwrap();
    assert!(
        h.runs.len() == 1 && h.other <= FADE_IN,
        "stdout had more than silence, the fade-in and one run of the ramp: {:?}, {} other \
         frames",
        h.runs
            .iter()
            .map(|r| (r.first, r.frames))
            .collect::<Vec<_>>(),
        h.other
    );
    let j = read_json(&json);
    assert!(
        j["output_frames_written"].as_u64() >= Some(3 * 48_000),
        "{j}"
    );
    assert_eq!(j["allocations_rt"], 0, "{j}");
    assert_eq!(j["frees_rt"], 0, "{j}");
}

/// Snapserver reading another rate: the receiver refuses to start, naming both formats and the
/// fix. Reading wider samples (32 bits, and 24 in 4 bytes): the stream is converted, and
/// snapclient plays the ramp widened, every frame in order.
#[test]
fn snapcast_formats_are_checked_and_the_width_converted() {
    if !have_snapcast() {
        return;
    }
    let _serial = serial();
    let dir = tmp("snapserver-formats");
    let source = free_tcp_port();
    let ports = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let device = format!("snapcast:tcp://127.0.0.1:{source}?control={}", ports[1]);
    let server = SnapServer::start(&dir, &tcp_source(source, "44100:16:2"), ports);
    let json = tmp("recv-mismatch.json");
    let mut r = recv(free_port(), &device, &json, Stdio::null());
    let status = wait_for("the receiver to refuse", STATE_TIMEOUT, || {
        r.try_wait().unwrap()
    });
    let err = log_of(&json);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("44100:16:2")
            && err.contains("48000:16:2")
            && err.contains("sampleformat=48000:16:2")
            && err.contains("--rate 44100"),
        "{err}"
    );
    server.stop();
    for bits in [32u16, 24] {
        let server =
            SnapServer::start(&dir, &tcp_source(source, &format!("48000:{bits}:2")), ports);
        let (_client, heard) = snapclient(ports[0], bits);
        let json = tmp(&format!("recv-{bits}.json"));
        let port = free_port();
        let mut r = recv(port, &device, &json, Stdio::null());
        wait_for("the receiver to feed snapserver", STATE_TIMEOUT, || {
            if let Ok(Some(st)) = r.try_wait() {
                panic!("netaudio recv exited ({st}): {}", log_of(&json));
            }
            (server.source_status().as_deref() == Some("playing")).then_some(())
        });
        let _s = send(port);
        wait_for(
            &format!("5 s of the ramp at {bits} bits"),
            Duration::from_secs(60),
            || {
                let h = heard.lock().unwrap();
                let o = h.in_order(0);
                assert!(
                    o.broke_at.is_none() && h.other <= FADE_IN,
                    "{bits} bits: {}",
                    h.describe()
                );
                (o.frames as f64 >= 5.0 * RATE).then_some(())
            },
        );
        terminate(&mut r);
        server.stop();
        let log = log_of(&json);
        assert!(
            log.contains(&format!("reads 48000:{bits}:2")) && log.contains("converted"),
            "{log}"
        );
        let j = read_json(&json);
        assert_eq!(j["allocations_rt"], 0, "{j}");
        eprintln!("snapcast at {bits} bits: the 16-bit ramp widened, in order");
    }
}

/// `pipe:` into snapserver's pipe source (which opens the FIFO non-blocking and, finding no
/// writer, closes it and tries again every 100 ms): the ramp reaches snapclient in order.
#[test]
fn snapcast_reads_the_fifo_output() {
    if !have_snapcast() {
        return;
    }
    let _serial = serial();
    let dir = tmp("snapserver-fifo");
    let fifo = dir.join("snapfifo");
    let ports = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let source = format!(
        "pipe://{}?name=netaudio&codec=pcm&sampleformat=48000:16:2",
        fifo.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let server = SnapServer::start(&dir, &source, ports);
    let (_client, heard) = snapclient(ports[0], 16);
    let json = tmp("recv-snapfifo.json");
    let port = free_port();
    let mut r = recv(
        port,
        &format!("pipe:{}", fifo.display()),
        &json,
        Stdio::null(),
    );
    wait_for("the receiver to feed snapserver", STATE_TIMEOUT, || {
        if let Ok(Some(st)) = r.try_wait() {
            panic!("netaudio recv exited ({st}): {}", log_of(&json));
        }
        (server.source_status().as_deref() == Some("playing")).then_some(())
    });
    let _s = send(port);
    wait_for("5 s of the ramp", Duration::from_secs(60), || {
        let h = heard.lock().unwrap();
        let o = h.in_order(0);
        assert!(
            o.broke_at.is_none() && h.other <= FADE_IN,
            "{}",
            h.describe()
        );
        (o.frames as f64 >= 5.0 * RATE).then_some(())
    });
    terminate(&mut r);
    server.stop();
    let j = read_json(&json);
    assert_eq!(j["output_disconnects"], 0, "{j}");
    assert_eq!(j["allocations_rt"], 0, "{j}");
}
