//! What the tests that run `netaudio` as a process share: the binary, a scratch folder per test
//! binary, one stream at a time, free ports, and stopping a daemon the way systemd does.

#![allow(dead_code)] // each test binary uses its own part

pub mod netns;
pub mod ramp;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The stream format the tests run at unless they say otherwise: 48 kHz, stereo, 16 bits,
/// 256-frame periods.
pub const FMT: [&str; 8] = [
    "--rate",
    "48000",
    "--channels",
    "2",
    "--format",
    "S16_LE",
    "--period",
    "256",
];

/// One test at a time: the streams run realtime threads against the clock, and on a two-core
/// machine other tests' process start-ups (and their disk reads) next to them make xruns that
/// belong to the test rig, not to netaudio.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the one-stream-at-a-time lock (a failed test does not poison it for the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `netaudio` binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netaudio"))
}

/// `name` in a scratch folder of this test binary and process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "netaudio-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A JSON file a daemon wrote (`--stats-json`).
pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// SIGTERM, and the clean exit (status 0, within 5 s) a daemon owes it.
pub fn terminate(child: &mut Child) {
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("process did not stop on SIGTERM");
}

/// A daemon's live status, as `netaudio status --json` prints it, read from its status socket;
/// `None` while nothing answers there.
pub fn status(sock: &Path) -> Option<Value> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Polls `state` until it gives a value, for at most `limit`; fails naming `what` otherwise.
pub fn wait_for<T>(what: &str, limit: Duration, mut state: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = state() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "still waiting after {limit:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends (a failed assertion must not
/// leave a daemon or a peer tool behind).
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Reaper {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Where a test daemon that writes its counters to `json` answers `netaudio status`.
pub fn status_socket(json: &Path) -> PathBuf {
    json.with_extension("sock")
}

/// Longest wait for a daemon's state: generous, a cold machine starts slowly.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the daemon `child` answers at `sock` with a snapshot for which `state` holds,
/// and returns that snapshot; fails naming `what` and the last snapshot when the daemon exits
/// or [`STATE_TIMEOUT`] passes.
pub fn wait_status(
    child: &mut Child,
    sock: &Path,
    what: &str,
    state: impl Fn(&Value) -> bool,
) -> Value {
    let end = std::time::Instant::now() + STATE_TIMEOUT;
    let mut last = None;
    loop {
        if let Some(v) = status(sock) {
            if state(&v) {
                return v;
            }
            last = Some(v);
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("waiting for {what}: the daemon exited ({s}); last status {last:?}");
        }
        assert!(
            std::time::Instant::now() < end,
            "gave up waiting {STATE_TIMEOUT:?} for {what}; last status {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Packets a receiver has counted (0 when the snapshot has none).
pub fn received(v: &Value) -> u64 {
    v["packets_received"].as_u64().unwrap_or(0)
}

/// Starts `c` with its stderr in `log` (stdout discarded).
pub fn spawn_logged(mut c: Command, log: &Path) -> std::process::Child {
    let f = std::fs::File::create(log).unwrap();
    c.stdout(Stdio::null()).stderr(f).spawn().unwrap()
}

/// A file's text, empty when it cannot be read (yet).
pub fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A key file both sides share (mode 600, as the daemons require).
pub fn key_file(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = tmp(name);
    std::fs::write(&p, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// One daemon's files in the scratch folder: its `--stats-json` and its log.
pub struct Files {
    /// Its final counters.
    pub json: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl Files {
    /// `name.json` and `name.log`.
    pub fn new(name: &str) -> Files {
        Files {
            json: tmp(&format!("{name}.json")),
            log: tmp(&format!("{name}.log")),
        }
    }

    /// Where it answers `netaudio status`.
    pub fn sock(&self) -> PathBuf {
        status_socket(&self.json)
    }

    /// `--status-socket` and `--stats-json` for it.
    pub fn args(&self, c: &mut Command) {
        c.arg("--status-socket")
            .arg(self.sock())
            .arg("--stats-json")
            .arg(&self.json);
    }
}

/// What `netaudio status --json --socket SOCK` prints (it must succeed).
pub fn status_cli_json(sock: &Path) -> Value {
    let out = bin()
        .args(["status", "--json", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
