//! Child processes of a rig run, and the signals that end it.
//!
//! Every child gets the rig's environment (its own JACK server, the repo's ALSA config), its own
//! process group (so a Ctrl-C at the terminal reaches only hil-tests, which then stops the
//! children in order), stderr in a log file, and a parent-death signal so that it is told to
//! stop even if hil-tests itself is killed outright. A [`Proc`] stops its child when dropped, so
//! every error path cleans up too.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), or 0.
static INTERRUPTED: AtomicUsize = AtomicUsize::new(0);

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag that the run polls, so it can stop its
/// children in order before it exits. Registering once is enough; later calls do nothing.
pub fn catch_signals() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            let n = sig as i32;
            // The handler signal-hook installs only stores into the atomic. Should registering
            // fail, that signal keeps its default action: it ends hil-tests, and the children
            // follow by their parent-death signal.
            let _ = signal_hook::flag::register_usize(n, &INTERRUPTED, n as usize);
        }
    });
}

/// Whether a caught signal asks the run to stop.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// Sends `sig` to process `pid`; false if it is gone.
pub fn send_signal(pid: u32, sig: Signal) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    kill(Pid::from_raw(pid), sig).is_ok()
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

/// The program every child of the rig is started through (see [`RigEnv::command`]).
pub const LAUNCHER: &str = "setpriv";

/// `setpriv`'s arguments before hil-tests' pid and the program: the death signal, then a shell
/// that execs the program (`$2...`) only if its parent is still the pid in `$1`.
const LAUNCHER_ARGS: [&str; 7] = [
    "--pdeathsig",
    "TERM",
    "--",
    "sh",
    "-c",
    r#"[ "$PPID" = "$1" ] || exit 1; shift; exec "$@""#,
    "sh",
];

/// A command that runs `program` through the launcher, only while `parent` is its parent.
fn launch(parent: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(LAUNCHER);
    cmd.args(LAUNCHER_ARGS).arg(parent.to_string()).arg(program);
    cmd
}

/// The command line of `cmd` as the user would type it: without the launcher that
/// [`RigEnv::command`] puts in front.
pub fn command_line(cmd: &Command) -> String {
    let skip = if cmd.get_program() == LAUNCHER {
        // The launcher's own arguments and hil-tests' pid.
        LAUNCHER_ARGS.len() + 1
    } else {
        0
    };
    let mut words = cmd.get_args().skip(skip);
    let program = if skip > 0 {
        words.next()
    } else {
        Some(cmd.get_program())
    };
    program
        .into_iter()
        .chain(words)
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
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
    ///
    /// The parent-death signal (`PR_SET_PDEATHSIG`) can only be set by the child itself, between
    /// fork and exec, and Rust allows code there only through an unsafe hook. So the child is
    /// started through util-linux's `setpriv --pdeathsig TERM` (util-linux is essential on
    /// Debian and Raspberry Pi OS), which sets it and execs a one-line `sh` guard, which execs
    /// the program. The guard closes the window in which hil-tests could die before the signal
    /// was set: it runs the program only if its parent is still hil-tests. Both steps exec, so
    /// the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = launch(std::process::id(), program);
        cmd.env("JACK_DEFAULT_SERVER", &self.server)
            .env("JACK_NO_START_SERVER", "1")
            .env("ALSA_CONFIG_PATH", &self.alsa_config_path)
            .stdin(Stdio::null())
            .process_group(0);
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
    pub fn signal(&mut self, sig: Signal) {
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
        self.signal(Signal::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        self.signal(Signal::SIGKILL);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> RigEnv {
        RigEnv {
            server: "hil-rig-test".into(),
            alsa_config_path: String::new(),
            dir: std::env::temp_dir(),
        }
    }

    #[test]
    fn children_get_the_death_signal_and_keep_their_pid() {
        let mut cmd = env().command(LAUNCHER);
        cmd.arg("--dump");
        let dump = run_quick(cmd, Duration::from_secs(5)).expect("setpriv --dump");
        assert!(dump.contains("Parent death signal: TERM"), "{dump}");

        // The launcher and its guard exec: the pid hil-tests holds is the program's.
        let mut cmd = env().command("sh");
        cmd.args(["-c", "echo $$"]).stdout(Stdio::piped());
        let out = cmd.spawn().unwrap();
        let pid = out.id();
        let text = out.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&text.stdout).trim(),
            pid.to_string()
        );
    }

    #[test]
    fn a_child_whose_parent_is_gone_does_not_run() {
        // A parent pid that is not ours stands for a hil-tests that died before the death
        // signal was set.
        let mut cmd = launch(std::process::id() + 1, "echo");
        cmd.arg("ran").stdout(Stdio::piped());
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        // Our own pid: it runs.
        let mut cmd = launch(std::process::id(), "echo");
        cmd.arg("ran");
        assert_eq!(run_quick(cmd, Duration::from_secs(5)).unwrap(), "ran\n");
    }

    #[test]
    fn command_lines_leave_the_launcher_out() {
        let mut cmd = env().command("aplay");
        cmd.args(["-D", "pout", "-t", "raw"]);
        assert_eq!(command_line(&cmd), "aplay -D pout -t raw");
        let mut plain = Command::new("nc");
        plain.args(["-l", "-p", "4000"]);
        assert_eq!(command_line(&plain), "nc -l -p 4000");
    }

    #[test]
    fn caught_signals_only_set_the_flag() {
        catch_signals();
        catch_signals();
        assert_eq!(interrupted(), None);
        // SIGHUP would end the test process if it were not caught.
        assert!(send_signal(std::process::id(), Signal::SIGHUP));
        let end = Instant::now() + Duration::from_secs(5);
        while interrupted().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(interrupted(), Some(Signal::SIGHUP as i32));
        INTERRUPTED.store(0, Ordering::SeqCst);
    }
}
