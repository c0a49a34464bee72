//! Child processes of a rig run, and the signals that end it.
//!
//! Every child gets the rig's environment (its own JACK server, the repo's ALSA config), its own
//! process group (so a Ctrl-C at the terminal reaches only hil-tests, which then stops the
//! children in order), stderr in a log file, and `PR_SET_PDEATHSIG` so that it is told to stop
//! even if hil-tests itself is killed outright. A [`Proc`] stops its child when dropped, so every
//! error path cleans up too.

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

mod sys {
    use std::ffi::{c_int, c_ulong};

    pub const SIGINT: c_int = 2;
    pub const SIGKILL: c_int = 9;
    pub const SIGTERM: c_int = 15;
    pub const SIGHUP: c_int = 1;
    pub const PR_SET_PDEATHSIG: c_int = 1;
    pub const ESRCH: i32 = 3;

    // The C library std already links: no crate needed for these few calls.
    unsafe extern "C" {
        pub fn kill(pid: c_int, sig: c_int) -> c_int;
        pub fn getppid() -> c_int;
        pub fn prctl(option: c_int, ...) -> c_int;
        pub fn signal(sig: c_int, handler: extern "C" fn(c_int)) -> usize;
    }

    pub fn pdeathsig(sig: c_int) -> c_int {
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) only sets a flag of the calling process.
        unsafe { prctl(PR_SET_PDEATHSIG, sig as c_ulong) }
    }
}

pub use sys::{SIGKILL, SIGTERM};

/// The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(sig, Ordering::Relaxed);
}

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag that the run polls, so it can stop its
/// children in order before it exits.
pub fn catch_signals() {
    for sig in [sys::SIGINT, sys::SIGTERM, sys::SIGHUP] {
        // SAFETY: the handler only stores into an atomic.
        unsafe {
            sys::signal(sig, on_signal);
        }
    }
}

/// Whether a caught signal asks the run to stop.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Sends `sig` to process `pid`; false if it is gone.
pub fn send_signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = c_int::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) on a positive pid of our own child.
    unsafe { sys::kill(pid, sig) == 0 }
}

/// User + system CPU seconds of a running process (all its threads), from /proc; NaN if gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The full path of `tool` on PATH, if it is an executable file there.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

/// Whether `p` is a file someone may execute.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The environment every child of the rig gets.
#[derive(Clone, Debug)]
pub struct RigEnv {
    /// JACK server name (JACK_DEFAULT_SERVER).
    pub server: String,
    /// ALSA_CONFIG_PATH.
    pub alsa_config_path: String,
    /// Directory for logs and stats files.
    pub dir: PathBuf,
}

impl RigEnv {
    /// A command for `program` with the rig's environment, in its own process group, told to
    /// stop (SIGTERM) when hil-tests dies. Must be spawned from the main thread (the death
    /// signal follows the thread that spawned the child).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("JACK_DEFAULT_SERVER", &self.server)
            .env("JACK_NO_START_SERVER", "1")
            .env("ALSA_CONFIG_PATH", &self.alsa_config_path)
            .stdin(Stdio::null())
            .process_group(0);
        let parent = std::process::id() as c_int;
        // SAFETY: the closure makes only async-signal-safe system calls and does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if sys::pdeathsig(sys::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // hil-tests may have died between fork and prctl.
                if sys::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(sys::ESRCH));
                }
                Ok(())
            });
        }
        cmd
    }

    /// Path of a file in the run's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A running child that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    /// Short name for messages, e.g. "netaudio recv".
    pub name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stderr (and stdout unless the caller set it) going to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: PathBuf,
        stdout_to_log: bool,
    ) -> Result<Proc, String> {
        let file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        if stdout_to_log {
            let out = file
                .try_clone()
                .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            cmd.stdout(out);
        }
        cmd.stderr(file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
            status: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's handle, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// CPU seconds so far (NaN once it has exited).
    pub fn cpu_seconds(&self) -> f64 {
        if self.status.is_some() {
            f64::NAN
        } else {
            cpu_seconds(self.pid())
        }
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `sig` unless the child is known to have exited.
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            send_signal(self.pid(), sig);
        }
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns the exit status (None if it had to
    /// be killed).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            return Some(s);
        }
        self.signal(SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        self.signal(SIGKILL);
        self.status = self.child.wait().ok();
        None
    }

    /// The last `n` lines of the log, indented, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The last `n` lines of a log file, each indented by four spaces ("" if empty or unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// Runs a short command to completion, at most `timeout`; its stdout on success.
pub fn run_quick(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut out = child.stdout.take();
    // Read on a thread so a chatty child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(format!("exited with {s}")),
        None => Err(format!("timed out after {timeout:?}")),
    }
}

/// Counts lines of a log file that contain `needle` (case-insensitive).
pub fn count_lines(path: &Path, needle: &str) -> u64 {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let needle = needle.to_ascii_lowercase();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains(&needle))
        .count() as u64
}
