//! A private, headless PipeWire for the tests: its own config, runtime and state folders in a
//! temp dir, the modules a graph needs without a session manager, a dummy driver as the clock;
//! and the tools (`pw-cli`, `pw-link`, `pw-record`, `pw-play`) pointed at it. Every process is
//! killed when the [`PipeWire`] is dropped.

use super::common::{Reaper, STATE_TIMEOUT, free_port};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The graph's rate.
pub const RATE: u32 = 48_000;
/// The graph's quantum: frames per cycle.
pub const QUANTUM: usize = 256;

pub fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("NETAUDIO_PIPEWIRE").as_deref() == Ok("require")
}

/// Whether PipeWire and its tools run here; fails when they are required and absent.
pub fn have_pipewire() -> bool {
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

pub fn even_port() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p % 2 == 0 && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free even port");
}

/// Ports that make a stream's node show its channels without a session manager.
pub const PORTS: &str = "adapter.auto-port-config = { mode = dsp position = preserve }";

/// A private PipeWire daemon, killed (with every client started through it) on drop.
pub struct PipeWire {
    pub dir: PathBuf,
    daemon: Reaper,
    pub clients: Vec<Reaper>,
}

impl PipeWire {
    /// Starts PipeWire with the modules a headless graph needs, `extra` module entries, and a
    /// dummy driver; returns once it answers `pw-cli`.
    pub fn start(name: &str, extra: &str) -> PipeWire {
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
    default.clock.quantum = {QUANTUM}
    log.level = 2
}}
context.spa-libs = {{
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}}
context.modules = [
    {{ name = libpipewire-module-rt args = {{ rt.prio = 70 }} flags = [ ifexists nofail ] }}
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
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.envs(env_for(&self.dir));
        c
    }

    /// Runs a tool to completion (10 s at most); its stdout when it succeeded.
    pub fn output(&self, args: &[&str]) -> Option<String> {
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
    pub fn spawn(&mut self, c: &mut Command) -> usize {
        self.clients
            .push(Reaper(c.spawn().expect("a PipeWire client starts")));
        self.clients.len() - 1
    }

    /// Polls `state` until it holds; fails naming `what`, with PipeWire's log and the ports.
    pub fn wait<T>(&mut self, what: &str, mut state: impl FnMut(&mut PipeWire) -> Option<T>) -> T {
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
    pub fn wait_ports(&mut self, node: &str, dir: &str) {
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
    pub fn link(&mut self, from: &str, to: &str) {
        for ch in ["FL", "FR"] {
            let (o, i) = (format!("{from}:output_{ch}"), format!("{to}:input_{ch}"));
            self.wait(&format!("pw-link {o} {i}"), |pw| {
                pw.output(&["pw-link", &o, &i]).map(|_| ())
            });
        }
    }

    pub fn log(&self) -> String {
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

pub fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).map_or(0, |m| m.len() as usize)
}
