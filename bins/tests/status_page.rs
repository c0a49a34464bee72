//! The status page (`--http`), as a person and as a hostile client see it:
//! * in a real browser: `netaudio demo` over a lossy link without recovery serves the page,
//!   headless Chromium (Debian's `chromium`) opens it and is driven over the DevTools protocol
//!   (`tungstenite`); the live updates arrive, the meters move, the gap count shown is the
//!   daemon's own and the gap log says why, and a screenshot is saved to
//!   `target/test-output/status_page.png`;
//! * under abuse: one 10 MB request and 200 idle connections while a demo streams: the stream
//!   keeps going without a gap the machine did not cause, the daemon's memory stays flat, and
//!   the page answers again afterwards;
//! * a keyed daemon's page says so and shows no key; the JSON endpoint gives what `netaudio
//!   status --json` prints; a bad address is refused naming it.
//!
//! Without Chromium the browser test skips with a loud message, unless `CI=true` or
//! `NETAUDIO_CHROMIUM=require` (as `ci/test` sets), which make it a failure.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether Chromium runs here; fails when it is required and absent.
fn have_chromium() -> bool {
    let ok = Command::new(CHROMIUM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required = std::env::var("NETAUDIO_CHROMIUM").as_deref() == Ok("require")
            || std::env::var("CI").as_deref() == Ok("true");
        assert!(
            !required,
            "Chromium is required (CI=true or NETAUDIO_CHROMIUM=require) but {CHROMIUM} does \
             not run: apt-get install chromium (ci/rig-setup does)"
        );
        eprintln!(
            "\n*** SKIPPED: {CHROMIUM} is not installed, the status page was NOT tested in a \
             browser (apt-get install chromium; NETAUDIO_CHROMIUM=require makes this a failure) ***\n"
        );
    }
    ok
}

/// A demo stream serving the page on a private port (chosen by the kernel, read from its log).
struct Demo {
    child: Reaper,
    port: u16,
    json: PathBuf,
}

fn start_demo(name: &str) -> Demo {
    start_demo_with(name, |_| {})
}

/// A demo as [`start_demo`], with more arguments or environment from `more`.
fn start_demo_with(name: &str, more: impl FnOnce(&mut Command)) -> Demo {
    let json = tmp(&format!("{name}.json"));
    let log = tmp(&format!("{name}.log"));
    let _ = std::fs::remove_file(&json);
    let mut c = bin();
    c.args(["demo", "--duration", "0", "--stats-interval", "0"])
        .args(["--http", "127.0.0.1:0"])
        .args(FMT)
        .arg("--stats-json")
        .arg(&json);
    more(&mut c);
    let mut child = Reaper(spawn_logged(c, &log));
    let port = wait_for(
        "the demo's status page address in its log",
        STATE_TIMEOUT,
        || {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the demo exited ({s}): {}", text(&log));
            }
            let t = text(&log);
            let rest = t.split("status page: http://127.0.0.1:").nth(1)?;
            rest.split('/').next()?.parse::<u16>().ok()
        },
    );
    Demo { child, port, json }
}

/// One HTTP GET on the page's port: the status and the body; None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // Read up to the length the head gives (a server may keep the connection open).
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).ok()?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                let code = head.split(' ').nth(1)?.parse().ok()?;
                return Some((code, body.to_string()));
            }
        }
        if n == 0 {
            return None;
        }
    }
}

/// The daemon's snapshot from the page's JSON endpoint.
fn snapshot(port: u16) -> Option<Value> {
    match get(port, "/status.json")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Headless Chromium in its own process group and profile, all of it killed when dropped.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill signals the process group this test started (Chromium and its helpers).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts Chromium on `url`; returns it and its DevTools port.
fn start_browser(url: &str) -> (Browser, u16) {
    let profile = tmp(&format!("chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let log = std::fs::File::create(tmp("chromium.log")).unwrap();
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let b = Browser { child, profile };
    let file = b.profile.join("DevToolsActivePort");
    let port = wait_for("Chromium's DevToolsActivePort file", STATE_TIMEOUT, || {
        text(&file).lines().next()?.trim().parse::<u16>().ok()
    });
    (b, port)
}

/// A DevTools protocol client on one page.
struct Cdp {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl Cdp {
    /// Connects to the page of `devtools` (Chromium's DevTools port) that shows `url`.
    fn connect(devtools: u16, url: &str) -> Cdp {
        let ws_url = wait_for("the page in Chromium's target list", STATE_TIMEOUT, || {
            let (_, body) = get(devtools, "/json/list")?;
            let list: Value = serde_json::from_str(&body).ok()?;
            list.as_array()?
                .iter()
                .find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        let s = TcpStream::connect(("127.0.0.1", devtools)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (ws, _) = tungstenite::client::client(ws_url.as_str(), s).expect("CDP handshake");
        Cdp { ws, next: 1 }
    }

    /// Calls `method`; returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().expect("CDP reply");
            let Ok(t) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t) else {
                continue;
            };
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Where tests leave what a person may want to look at.
fn output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-output");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the page shows: updates received, gap count, per-channel peak and RMS texts.
const SHOWN: &str = "(() => { \
    const t = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; }; \
    const all = (sel) => [...document.querySelectorAll(sel)].map(e => e.textContent); \
    return JSON.stringify({updates: window.netaudio ? window.netaudio.updates() : 0, \
        gaps: t('gaps'), keyed: t('keyed'), role: t('role'), state: t('state'), log: t('log'), \
        peaks: all('.meter .peak'), rms: all('.meter .rmsv')}); })()";

#[test]
fn the_page_shows_the_live_stream_in_a_browser() {
    let _serial = serial();
    if !have_chromium() {
        return;
    }
    // A lossy link without loss recovery: gaps, for the count and the log to show.
    let config = tmp("lossy.toml");
    std::fs::write(&config, "[receiver]\nrecovery = \"off\"\n").unwrap();
    let mut demo = start_demo_with("browser", |c| {
        c.arg("--config")
            .arg(&config)
            .env("NETAUDIO_TEST_FAULT", "rx-drop-every=150");
    });
    let url = format!("http://127.0.0.1:{}/", demo.port);
    let (_browser, devtools) = start_browser(&url);
    let mut cdp = Cdp::connect(devtools, &url);
    let mut shown =
        || -> Value { serde_json::from_str(cdp.eval(SHOWN).as_str().unwrap()).unwrap() };

    // Live: updates keep arriving, and the meters' figures change between them.
    let first = wait_for(
        "the page's first live updates",
        Duration::from_secs(20),
        || {
            let v = shown();
            (v["updates"].as_u64()? >= 2 && v["peaks"].as_array()?.len() == 2).then_some(v)
        },
    );
    let moved = wait_for("the meters to move", Duration::from_secs(15), || {
        let v = shown();
        (v["updates"].as_u64()? > first["updates"].as_u64()?
            && (v["peaks"] != first["peaks"] || v["rms"] != first["rms"]))
            .then_some(v)
    });
    for level in moved["peaks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(moved["rms"].as_array().unwrap())
    {
        let db: f64 = level.as_str().unwrap().parse().unwrap();
        assert!((-120.0..=0.0).contains(&db), "a level in dBFS: {moved}");
    }
    assert_eq!(moved["role"], "receiver", "{moved}");
    assert_eq!(moved["keyed"], "no", "{moved}");
    assert_eq!(moved["state"], "live", "{moved}");

    // The gap count shown is the daemon's own (read between two of its snapshots, so that a
    // gap in between cannot make them differ), and the gap log lists them, with their cause.
    let gaps = wait_for(
        "the page's gap count to equal the daemon's, gaps heard",
        Duration::from_secs(15),
        || {
            let before = snapshot(demo.port)?["gaps"].as_u64()?;
            let page: u64 = shown()["gaps"].as_str()?.parse().ok()?;
            let after = snapshot(demo.port)?["gaps"].as_u64()?;
            (before == after && page == after && page > 0).then_some(page)
        },
    );
    let v = shown();
    assert!(v["log"].as_str().unwrap().contains("loss"), "{v}");
    eprintln!("the page shows {gaps} gaps, as the daemon counts them");

    let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = output_dir().join("status_page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());

    // Gaps were made on purpose: the demo exits 1 for them (not 0), cleanly.
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGTERM) };
    let status = wait_for("the demo to stop", STATE_TIMEOUT, || {
        demo.child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(1), "gaps heard: exit 1");
    let j = read_json(&demo.json);
    assert_eq!(
        (j["allocations_rt"].clone(), j["frees_rt"].clone()),
        (json!(0), json!(0)),
        "{j}"
    );
    assert!(j["engine_gaps"].as_u64().unwrap() >= gaps, "{j}");
}

#[test]
fn idle_connections_and_a_huge_request_do_not_disturb_the_stream() {
    let _serial = serial();
    let mut demo = start_demo("abuse");
    let port = demo.port;
    let pid = demo.child.id();
    // Streaming, and the page served once (its buffers made).
    wait_for("the stream to play", STATE_TIMEOUT, || {
        let v = snapshot(port)?;
        (received(&v) > 500).then_some(())
    });
    for path in ["/", "/status.json"] {
        assert_eq!(get(port, path).map(|r| r.0), Some(200), "{path}");
    }
    let before = snapshot(port).unwrap();
    let rss_before = rss_kb(pid);

    // One 10 MB request: refused after its first 8 KB, the connection closed.
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ".to_vec();
    request.resize(10 << 20, b'a');
    // The kernel's socket buffers may take much of it before the server reads its first 8 KB;
    // the server then answers 431 and closes, which resets a connection with data unread: the
    // client sees the answer, a failed write or a reset read, but never waits.
    let written = big.write_all(&request);
    let mut answer = Vec::new();
    let read = big.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let reset = matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(
        answer.starts_with("HTTP/1.1 431") || written.is_err() || reset,
        "a 10 MB request head is refused: wrote {written:?}, read {read:?} {answer:?}"
    );
    eprintln!(
        "10 MB request: write {}, answer {:?}",
        if written.is_ok() { "whole" } else { "cut off" },
        answer
            .lines()
            .next()
            .unwrap_or(if reset { "(reset)" } else { "" })
    );
    drop(big);

    // 200 idle connections: the first ones hold every slot, the others are refused at once.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    // (Refused before it sends anything, a client reads the answer whole.)
    wait_for(
        "a connection beyond the bound to be refused",
        Duration::from_secs(10),
        || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 503").then_some(())
        },
    );
    // Idle connections are let go after the request timeout: the page answers again while
    // they are still open on this side.
    let after = wait_for("the page to answer again", Duration::from_secs(30), || {
        snapshot(port)
    });
    drop(idle);
    let rss_after = rss_kb(pid);

    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    eprintln!(
        "during the abuse: {} gaps, {} xruns, {} packets received; RSS {rss_before} kB -> \
         {rss_after} kB",
        d("gaps"),
        d("xruns"),
        d("packets_received")
    );
    assert!(d("packets_received") > 0, "the stream went on: {after}");
    // A stall of the whole (shared) machine shows as xruns on the virtual cards, each costing
    // at most one gap: those are the machine's, not the page's.
    assert!(
        d("gaps") <= d("xruns"),
        "{} gaps with {} xruns while the page was abused: {after}",
        d("gaps"),
        d("xruns")
    );
    assert!(
        rss_after <= rss_before + 2048,
        "the daemon's memory grew from {rss_before} kB to {rss_after} kB"
    );
    terminate(&mut demo.child);
    let j = read_json(&demo.json);
    assert_eq!(
        (j["allocations_rt"].clone(), j["frees_rt"].clone()),
        (json!(0), json!(0)),
        "{j}"
    );
}

/// The first update of the page's event stream.
fn first_event(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(rest) = text.split("\ndata: ").nth(1)
            && let Some((data, _)) = rest.split_once("\n\n")
        {
            return serde_json::from_str(data).ok();
        }
    }
}

#[test]
fn a_keyed_daemons_page_says_so_and_shows_no_key() {
    let _serial = serial();
    let key = key_file("page.key");
    let secret = std::fs::read_to_string(&key).unwrap().trim().to_string();
    let json = tmp("keyed.json");
    let log = tmp("keyed.log");
    let mut c = bin();
    c.args(["demo", "--duration", "0", "--stats-interval", "0"])
        .args(["--http", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .args(FMT)
        .arg("--stats-json")
        .arg(&json);
    let mut child = Reaper(spawn_logged(c, &log));
    let port = wait_for("the status page address in the log", STATE_TIMEOUT, || {
        let t = text(&log);
        let rest = t.split("status page: http://127.0.0.1:").nth(1)?;
        rest.split('/').next()?.parse::<u16>().ok()
    });
    let v = wait_for("a keyed stream playing", STATE_TIMEOUT, || {
        snapshot(port).filter(|v| received(v) > 0)
    });
    assert_eq!(v["keyed"], true, "{v}");
    let ev = wait_for("the first update", STATE_TIMEOUT, || first_event(port));
    assert_eq!(ev["status"]["keyed"], true);
    let (code, page) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    for shown in [v.to_string(), ev.to_string(), page, text(&log)] {
        assert!(!shown.contains(&secret), "the key is shown");
        assert!(!shown.contains(&secret[..16]), "part of the key is shown");
    }
    terminate(&mut child);
}

#[test]
fn a_bad_page_address_names_the_value_and_the_fix() {
    let out = bin()
        .args(["demo", "--duration", "1s", "--http", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"nonsense\"") && err.contains("0.0.0.0:8080"),
        "{err}"
    );
    // A port another program holds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = bin()
        .args(["demo", "--duration", "1s", "--http"])
        .arg(port.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("choose another port"),
        "{err}"
    );
}

#[test]
fn the_json_endpoint_gives_what_status_json_prints() {
    let _serial = serial();
    let sock = tmp("recv.sock");
    let log = tmp("recv.log");
    let mut c = bin();
    c.args([
        "recv",
        "--device",
        "virtual",
        "--no-announce",
        "--stats-interval",
        "0",
    ])
    .args(["--listen", &format!("127.0.0.1:{}", free_port())])
    .args(["--http", "127.0.0.1:0", "--status-socket"])
    .arg(&sock)
    .args(FMT);
    let mut child = Reaper(spawn_logged(c, &log));
    let port = wait_for(
        "the receiver's status page address in its log",
        STATE_TIMEOUT,
        || {
            let t = text(&log);
            let rest = t.split("status page: http://127.0.0.1:").nth(1)?;
            rest.split('/').next()?.parse::<u16>().ok()
        },
    );
    let page = wait_for("the JSON endpoint", STATE_TIMEOUT, || snapshot(port));
    let cli = status_cli_json(&sock);
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&page), keys(&cli));
    for k in [
        "role", "address", "device", "rate", "channels", "format", "keyed",
    ] {
        assert_eq!(page[k], cli[k], "{k}");
    }
    terminate(&mut child);
}
