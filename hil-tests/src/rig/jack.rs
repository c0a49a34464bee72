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

/// Removes what rig runs that were killed outright (SIGKILL) left behind: their servers' slots
/// in JACK's registry ([`reclaim_registry`]), JACK semaphores and shared memory of their
/// servers in /dev/shm, and their temporary directories. Only entries of `hil-rig-<pid>`
/// servers whose process is gone are touched.
pub fn sweep_stale(tmp: &std::path::Path) {
    reclaim_stale_servers();
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

/// JACK's shared-memory registry (jack2's `jack_shm_header_t`): a 24-byte header, then
/// `MAX_SERVERS` (8) server slots of 264 bytes each: a pid, then a name such as
/// `jack-0:hil-rig-1234:`.
const REGISTRY: &str = "/dev/shm/jack-shm-registry";
const REGISTRY_MAGIC: &[u8; 4] = b"KCAJ";
const SERVERS_AT: usize = 24;
const SERVER_SLOT: usize = 264;
const MAX_SERVERS: usize = 8;

/// Frees the registry slots of `hil-rig-…` servers whose jackd is gone, in `registry` (the
/// file's bytes); `alive` says whether a pid runs. Returns how many were freed.
///
/// jackd reclaims a dead server's slot only for a server of the same name, and every rig run
/// names its own (`hil-rig-<pid>`): a jackd that did not unregister (its run killed outright)
/// would keep its slot for good, and after eight of them no server starts ("Too many servers
/// already active"). Freeing a slot is what jackd itself does when it reclaims one: zeroes.
pub fn reclaim_registry(registry: &mut [u8], alive: impl Fn(i32) -> bool) -> usize {
    if registry.len() < SERVERS_AT || &registry[..4] != REGISTRY_MAGIC {
        return 0;
    }
    let mut freed = 0;
    for i in 0..MAX_SERVERS {
        let at = SERVERS_AT + i * SERVER_SLOT;
        let Some(slot) = registry.get_mut(at..at + SERVER_SLOT) else {
            break;
        };
        let pid = i32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]);
        let name = &slot[4..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let ours = name.windows(9).any(|w| w == b":hil-rig-");
        if pid > 0 && ours && !alive(pid) {
            slot.fill(0);
            freed += 1;
        }
    }
    freed
}

/// [`reclaim_registry`] on the machine's registry, if there is one.
fn reclaim_stale_servers() {
    let Ok(mut bytes) = std::fs::read(REGISTRY) else {
        return;
    };
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if reclaim_registry(&mut bytes, alive) > 0 {
        // Only the server slots changed: write them back in place (the file is mapped by
        // running servers, so it is not replaced).
        use std::io::{Seek, SeekFrom, Write};
        let end = (SERVERS_AT + MAX_SERVERS * SERVER_SLOT).min(bytes.len());
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(REGISTRY) {
            let _ = f
                .seek(SeekFrom::Start(SERVERS_AT as u64))
                .and_then(|_| f.write_all(&bytes[SERVERS_AT..end]));
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

    fn registry(slots: &[(i32, &str)]) -> Vec<u8> {
        let mut r = vec![0u8; SERVERS_AT + MAX_SERVERS * SERVER_SLOT + 100];
        r[..4].copy_from_slice(REGISTRY_MAGIC);
        for (i, (pid, name)) in slots.iter().enumerate() {
            let at = SERVERS_AT + i * SERVER_SLOT;
            r[at..at + 4].copy_from_slice(&pid.to_le_bytes());
            r[at + 4..at + 4 + name.len()].copy_from_slice(name.as_bytes());
        }
        r
    }

    #[test]
    fn only_dead_rig_servers_lose_their_registry_slot() {
        let mut r = registry(&[
            (100, "jack-0:hil-rig-7:"),
            (200, "jack-0:hil-rig-8:"),
            (300, "jack-0:default:"),
            (400, "jack-0:hil-rig-9:"),
        ]);
        let tail = r[SERVERS_AT + MAX_SERVERS * SERVER_SLOT..].to_vec();
        // 100 and 300 are gone, 200 and 400 run: only the rig's dead server is freed.
        let alive = |pid| pid == 200 || pid == 400;
        assert_eq!(reclaim_registry(&mut r, alive), 1);
        let pid_at = |i: usize| {
            let at = SERVERS_AT + i * SERVER_SLOT;
            i32::from_le_bytes(r[at..at + 4].try_into().unwrap())
        };
        assert_eq!(
            [pid_at(0), pid_at(1), pid_at(2), pid_at(3)],
            [0, 200, 300, 400]
        );
        assert!(
            r[SERVERS_AT..SERVERS_AT + SERVER_SLOT]
                .iter()
                .all(|&b| b == 0)
        );
        // Nothing past the server slots is touched; a file that is not a registry neither.
        assert_eq!(&r[SERVERS_AT + MAX_SERVERS * SERVER_SLOT..], &tail[..]);
        let mut junk = vec![7u8; 50];
        assert_eq!(reclaim_registry(&mut junk, |_| false), 0);
        assert!(junk.iter().all(|&b| b == 7));
    }

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
