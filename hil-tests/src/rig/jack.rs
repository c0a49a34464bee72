//! The rig's own JACK server (dummy driver, realtime) and queries of its graph.

use super::proc::{Proc, RigEnv, count_lines, run_quick};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a graph query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `jackd -R -P 70 -S -d dummy` and its log.
pub struct Jackd {
    proc: Proc,
}

impl Jackd {
    /// Starts the server under `env.server`, ticking every `period` frames (the ALSA jack
    /// plugin cannot run a shorter period than JACK's own), and waits (at most 10 s) until it
    /// answers.
    pub fn start(env: &RigEnv, rate: u32, period: usize) -> Result<Jackd, String> {
        let mut cmd = env.command("jackd");
        cmd.args(["-R", "-P", "70", "-S", "-d", "dummy", "-r"])
            .arg(rate.to_string())
            .args(["-p", &period.to_string()]);
        // Both streams go to the log; xruns are reported on stderr, which is unbuffered, so they
        // are in the file as they happen.
        let proc = Proc::spawn("jackd", cmd, env.file("jackd.log"), true)?;
        let mut jackd = Jackd { proc };
        jackd.wait_ready(env)?;
        Ok(jackd)
    }

    fn wait_ready(&mut self, env: &RigEnv) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.proc.exited() {
                return Err(format!(
                    "jackd exited at start ({s}); it needs realtime scheduling (run as root or \
                     with rtprio rights). Its log:\n{}",
                    self.proc.log_tail(15)
                ));
            }
            if run_quick(env.command("jack_lsp"), QUERY_TIMEOUT).is_ok() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "jackd did not answer within 10 s. Its log:\n{}",
                    self.proc.log_tail(15)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines of jackd's log that report an xrun ("JackTimedDriver::Process XRun = ...").
    pub fn xruns(&self) -> u64 {
        count_lines(self.proc.log(), "xrun")
    }

    /// Whether jackd is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// Stops the server (after every client has gone).
    pub fn stop(mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

/// Removes what rig runs that were killed outright (SIGKILL) left behind: JACK semaphores and
/// shared memory of their servers in /dev/shm, and their temporary directories. Only entries of
/// `hil-rig-<pid>` servers whose process is gone are touched.
pub fn sweep_stale(tmp: &std::path::Path) {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.split("hil-rig-").nth(1) else {
            return false;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !digits.is_empty()
            && digits != std::process::id().to_string()
            && !std::path::Path::new(&format!("/proc/{digits}")).exists()
    };
    for dir in [std::path::Path::new("/dev/shm"), tmp] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("jack_sem.")
                || name.starts_with("jack_hil-rig-")
                || (dir == tmp && name.starts_with("hil-rig-"));
            if ours && dead(&name) {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// Port names of the graph.
pub fn ports(env: &RigEnv) -> Result<Vec<String>, String> {
    let out =
        run_quick(env.command("jack_lsp"), QUERY_TIMEOUT).map_err(|e| format!("jack_lsp: {e}"))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Connections of the graph, each as an ordered pair (lexically smaller port first).
pub fn connections(env: &RigEnv) -> Result<BTreeSet<(String, String)>, String> {
    let out = run_quick(
        {
            let mut c = env.command("jack_lsp");
            c.arg("-c");
            c
        },
        QUERY_TIMEOUT,
    )
    .map_err(|e| format!("jack_lsp -c: {e}"))?;
    Ok(parse_connections(&out))
}

/// Parses `jack_lsp -c`: a port per line, its peers indented below it.
pub fn parse_connections(out: &str) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some(port) = current {
                set.insert(pair(port, line.trim()));
            }
        } else {
            current = Some(line.trim());
        }
    }
    set
}

/// A connection as an ordered pair.
pub fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Waits until no port of `clients` is left in the graph (a previous run's clients may take a
/// moment to leave), at most `timeout`.
pub fn wait_clients_gone(env: &RigEnv, clients: &[&str], timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        let left: BTreeSet<String> = ports(env)?
            .iter()
            .filter_map(|p| p.split_once(':').map(|(c, _)| c.to_owned()))
            .filter(|c| clients.contains(&c.as_str()))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "JACK clients {} of an earlier run are still there after {timeout:?}",
                left.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `port` exists, at most `timeout`; `alive` is asked in between and may abort.
pub fn wait_port(
    env: &RigEnv,
    port: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if ports(env)?.iter().any(|p| p == port) {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= end {
            return Err(format!(
                "JACK port {port} did not appear within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects output port `a` to input port `b` with `jack_connect`, retrying until the
/// connection shows in the graph (a client's ports can be connected only once it is active),
/// at most `timeout`.
pub fn connect(
    env: &RigEnv,
    a: &str,
    b: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let want = pair(a, b);
    let end = Instant::now() + timeout;
    loop {
        if connections(env)?.contains(&want) {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= end {
            return Err(format!("could not connect {a} to {b} within {timeout:?}"));
        }
        let mut cmd = env.command("jack_connect");
        cmd.args([a, b]);
        // Failure is normal while the client is not active yet: look again.
        if run_quick(cmd, QUERY_TIMEOUT).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_parse_both_ways_once() {
        let out = "system:capture_1\nsrc:out_000\n   mon:in_000\n   pin:in_000\n\
                   mon:in_000\n   src:out_000\npin:in_000\n   src:out_000\n";
        let c = parse_connections(out);
        assert_eq!(c.len(), 2);
        assert!(c.contains(&pair("mon:in_000", "src:out_000")));
        assert!(c.contains(&pair("pin:in_000", "src:out_000")));
    }
}
