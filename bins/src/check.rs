//! `netaudio check`: validates a configuration, shows the effective settings, and checks the
//! host for what a gap-free stream needs. Every finding comes with its fix.

use crate::pcm::DeviceRequest;
use crate::pcm::alsa::{AlsaCapture, AlsaPlayback};
use crate::pcm::stream_out;
use crate::pcm::virtual_dev::{self, VirtualCapture, VirtualPlayback};
use crate::rt::{self, RtSpec};
use engine::format::{SampleFormat, StreamFormat};
use rt_config::Config;
use std::fmt::Write as _;
use std::path::Path;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but gaps are likelier.
    Warn,
    /// Will not work.
    Fail,
}

/// One finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// What was checked and found, with the fix.
    pub text: String,
}

fn push(out: &mut Vec<Finding>, level: Level, text: impl Into<String>) {
    out.push(Finding {
        level,
        text: text.into(),
    });
}

/// Which side the configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Captures and sends.
    Sender,
    /// Receives and plays.
    Receiver,
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses a CPU list like `2-3,5`.
fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<usize>().ok()),
        }
    }
    v
}

/// Checks the host for `cfg` (already merged with its preset) in `role`.
pub fn host(cfg: &Config, role: Role) -> Vec<Finding> {
    let mut out = Vec::new();
    match &cfg.network.key_file {
        Some(k) => match crate::keyfile::load(Path::new(k)) {
            Ok(_) => push(
                &mut out,
                Level::Ok,
                format!(
                    "key file {k}: a valid key, private to its owner (the other machine needs the same file; both clocks synchronised within 10 s)"
                ),
            ),
            Err(e) => push(&mut out, Level::Fail, e),
        },
        None => push(
            &mut out,
            Level::Warn,
            "no network.key_file: packets are not authenticated (anyone on the LAN can play into the receiver); `netaudio keygen` makes a key",
        ),
    }
    let priority = cfg.rt.priority.unwrap_or(80);
    let cpu = cfg.rt.cpu;
    // Realtime scheduling, tried for real on a short-lived thread.
    if priority > 0 {
        let spec = RtSpec {
            priority: Some(priority),
            cpu: None,
        };
        match rt::spawn("na-check", spec, || ()) {
            Ok((h, o)) => {
                let _ = h.join();
                if o.fifo {
                    push(
                        &mut out,
                        Level::Ok,
                        format!("SCHED_FIFO priority {priority} is granted"),
                    );
                } else {
                    push(&mut out, Level::Warn, o.to_string());
                }
            }
            Err(e) => push(&mut out, Level::Warn, format!("cannot start a thread: {e}")),
        }
    }
    // Isolated cores and the audio core.
    let isolated = read_trim("/sys/devices/system/cpu/isolated").unwrap_or_default();
    let iso = cpu_list(&isolated);
    match cpu {
        Some(c) if iso.contains(&c) => push(&mut out, Level::Ok, format!("CPU {c} is isolated")),
        Some(c) => push(
            &mut out,
            Level::Warn,
            format!(
                "CPU {c} (rt.cpu) is not isolated (isolated: {}): other tasks share it. Add \
                 isolcpus={c} irqaffinity=<the other cores> to /boot/firmware/cmdline.txt and reboot",
                if isolated.is_empty() {
                    "none"
                } else {
                    &isolated
                }
            ),
        ),
        None => push(
            &mut out,
            Level::Warn,
            "rt.cpu is not set: the audio thread may run on any core. Isolate one (isolcpus=) \
             and set rt.cpu to it",
        ),
    }
    // Frequency governor of the audio core.
    let c = cpu.unwrap_or(0);
    match read_trim(&format!(
        "/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"
    )) {
        Some(g) if g == "performance" => push(
            &mut out,
            Level::Ok,
            format!("CPU {c} governor is performance"),
        ),
        Some(g) => push(
            &mut out,
            Level::Warn,
            format!(
                "CPU {c} governor is {g}: clock changes add latency spikes. Set it: echo \
                 performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
            ),
        ),
        None => push(
            &mut out,
            Level::Ok,
            format!("CPU {c} has no frequency scaling (no governor to set)"),
        ),
    }
    // Memory locking.
    if cfg.rt.mlock.unwrap_or(true) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into a live local.
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if lim.rlim_cur == libc::RLIM_INFINITY || root {
            push(&mut out, Level::Ok, "memory can be locked (mlockall)");
        } else {
            push(
                &mut out,
                Level::Warn,
                format!(
                    "the memlock limit is {} KiB: mlockall will fail and pages may be swapped \
                     out. Grant it: LimitMEMLOCK=infinity (systemd) or `@audio - memlock \
                     unlimited` in /etc/security/limits.d/audio.conf",
                    lim.rlim_cur / 1024
                ),
            );
        }
    }
    // The device, opened with the configured format.
    let format = cfg
        .audio
        .format
        .as_deref()
        .and_then(SampleFormat::from_name)
        .unwrap_or(SampleFormat::S16Le);
    let Some(sf) = StreamFormat::new(
        cfg.audio.rate.unwrap_or(44_100),
        cfg.audio.channels.unwrap_or(2),
        format,
    ) else {
        push(&mut out, Level::Fail, "audio.rate/channels out of range");
        return out;
    };
    if cfg
        .network
        .proto
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("rtp"))
        && let Err(e) = crate::rtp::check_format(sf)
    {
        push(&mut out, Level::Fail, e);
    }
    let req = DeviceRequest {
        name: cfg.audio.device.clone().unwrap_or_else(|| "virtual".into()),
        format: sf,
        period: cfg.audio.period_frames.unwrap_or(256),
        periods: cfg.audio.periods.unwrap_or(3),
    };
    let what = match role {
        Role::Sender => "capture",
        Role::Receiver => "playback",
    };
    if let Some(target) = stream_out::parse_name(&req.name) {
        let (level, text) = check_output(role, target, sf);
        push(&mut out, level, text);
        return out;
    }
    let opened = if virtual_dev::parse_name(&req.name).is_some() {
        match role {
            Role::Sender => VirtualCapture::open(&req).map(|_| ()),
            Role::Receiver => VirtualPlayback::open(&req, None).map(|_| ()),
        }
    } else {
        match role {
            Role::Sender => AlsaCapture::open(&req)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Role::Receiver => AlsaPlayback::open(&req)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    };
    match opened {
        Ok(()) => push(
            &mut out,
            Level::Ok,
            format!(
                "{what} device {:?} accepts {sf}, period {} x {}",
                req.name, req.period, req.periods
            ),
        ),
        Err(e) => push(
            &mut out,
            Level::Fail,
            format!("{e} (see `netaudio devices` for the names and what each accepts)"),
        ),
    }
    out
}

/// An output that is not a sound card (`snapcast:`, `pipe:`, `stdout`): what it is and, for
/// Snapcast, whether snapserver reads the stream's format.
fn check_output(
    role: Role,
    target: Result<stream_out::OutputTarget, String>,
    sf: StreamFormat,
) -> (Level, String) {
    use stream_out::OutputTarget;
    use stream_out::snapcast::{self, Probe};
    let t = match target {
        Ok(t) => t,
        Err(e) => return (Level::Fail, e),
    };
    if role == Role::Sender {
        return (
            Level::Fail,
            format!(
                "{} is an output: a sender captures from an ALSA device or `virtual`",
                t.describe()
            ),
        );
    }
    match &t {
        OutputTarget::Snapcast {
            host,
            port,
            control,
        } => match snapcast::probe(host, *control, *port) {
            Probe::Found(src) => match snapcast::check_format(sf, &src) {
                Ok(w) => (
                    Level::Ok,
                    format!(
                        "output: {}: its source {:?} reads {}, the stream ({sf}) goes as {}",
                        t.describe(),
                        src.name,
                        src.sampleformat(),
                        w.name()
                    ),
                ),
                Err(e) => (Level::Fail, e),
            },
            Probe::NoSource(e) => (Level::Fail, format!("snapserver at {host}:{control}: {e}")),
            Probe::Unreachable(e) => (
                Level::Warn,
                format!(
                    "output: {}: its control port does not answer ({e}), so its format cannot \
                     be checked; netaudio recv connects when snapserver is up",
                    t.describe()
                ),
            ),
        },
        OutputTarget::Pipe(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                (
                    Level::Fail,
                    format!(
                        "output: the folder of the FIFO {} does not exist",
                        p.display()
                    ),
                )
            } else {
                (
                    Level::Ok,
                    format!(
                        "output: {} (created if missing), raw {sf}: a reader opens it, e.g. \
                         snapserver's `source = pipe://{}?name=netaudio&sampleformat={}:{}:{}`",
                        t.describe(),
                        p.display(),
                        sf.rate,
                        sf.sample.bytes() * 8,
                        sf.channels
                    ),
                )
            }
        }
        OutputTarget::Stdout => (
            Level::Ok,
            format!("output: standard output, raw {sf} (logs go to stderr)"),
        ),
    }
}

/// The effective settings, as TOML a person can read (and paste).
pub fn effective(cfg: &Config, role: Role) -> String {
    let mut s = String::new();
    let q = |v: &Option<String>, d: &str| format!("{:?}", v.clone().unwrap_or_else(|| d.into()));
    let _ = writeln!(s, "board = {}", q(&cfg.board, "auto"));
    let _ = writeln!(s, "[audio]");
    let _ = writeln!(s, "device = {}", q(&cfg.audio.device, "virtual"));
    let _ = writeln!(s, "rate = {}", cfg.audio.rate.unwrap_or(44_100));
    let _ = writeln!(s, "channels = {}", cfg.audio.channels.unwrap_or(2));
    let _ = writeln!(s, "format = {}", q(&cfg.audio.format, "S16_LE"));
    let _ = writeln!(
        s,
        "period_frames = {}",
        cfg.audio.period_frames.unwrap_or(256)
    );
    let _ = writeln!(s, "periods = {}", cfg.audio.periods.unwrap_or(3));
    let _ = writeln!(s, "[network]");
    match role {
        Role::Sender => {
            let _ = writeln!(
                s,
                "dest = {}",
                q(&cfg.network.dest.as_ref().map(|d| d.joined()), "(not set)")
            );
        }
        Role::Receiver => {
            let _ = writeln!(s, "listen = {}", q(&cfg.network.listen, "0.0.0.0:46000"));
            let host = crate::discovery::host_name();
            let _ = writeln!(s, "name = {}", q(&cfg.network.name, &host));
            let _ = writeln!(s, "announce = {}", cfg.network.announce.unwrap_or(true));
        }
    }
    if let Some(d) = cfg.network.dscp {
        let _ = writeln!(s, "dscp = {d}");
    }
    match &cfg.network.key_file {
        Some(k) => {
            let _ = writeln!(s, "key_file = {k:?}");
        }
        None => {
            let _ = writeln!(s, "# key_file = (none: packets are not authenticated)");
        }
    }
    let _ = writeln!(s, "proto = {}", q(&cfg.network.proto, "native"));
    if let (Role::Sender, Some(f)) = (role, &cfg.network.sdp_file) {
        let _ = writeln!(s, "sdp_file = {f:?}");
    }
    if let (Role::Sender, Some(a)) = (role, &cfg.network.sap) {
        let _ = writeln!(s, "sap = {a:?}");
    }
    if role == Role::Receiver {
        let _ = writeln!(s, "[receiver]");
        match cfg.receiver.latency_ms {
            Some(l) => {
                let _ = writeln!(s, "latency_ms = {l}");
            }
            None => {
                let _ = writeln!(s, "# latency_ms = four periods + 2 ms");
            }
        }
        let _ = writeln!(
            s,
            "drift_mode = {}",
            q(&cfg.receiver.drift_mode, "resample")
        );
    }
    let _ = writeln!(s, "[rt]");
    match cfg.rt.cpu {
        Some(c) => {
            let _ = writeln!(s, "cpu = {c}");
        }
        None => {
            let _ = writeln!(s, "# cpu = (any)");
        }
    }
    let _ = writeln!(s, "priority = {}", cfg.rt.priority.unwrap_or(80));
    let _ = writeln!(s, "mlock = {}", cfg.rt.mlock.unwrap_or(true));
    let _ = writeln!(s, "[log]");
    let _ = writeln!(s, "level = {}", q(&cfg.log.level, "info"));
    let _ = writeln!(
        s,
        "stats_interval_s = {}",
        cfg.log.stats_interval_s.unwrap_or(10.0)
    );
    s
}

/// Runs the whole check: returns the report and whether everything needed is there.
pub fn run(config: Option<&Path>, board: Option<&str>, role: Role) -> (String, bool) {
    let mut s = String::new();
    let file = match config {
        Some(p) => match Config::load(p) {
            Ok(c) => {
                let _ = writeln!(s, "config {}: valid", p.display());
                c
            }
            Err(problems) => {
                let _ = writeln!(s, "config {}: INVALID", p.display());
                for line in problems.lines() {
                    let _ = writeln!(s, "  FAIL {line}");
                }
                return (s, false);
            }
        },
        None => Config::default(),
    };
    let mut file = file;
    if let Some(b) = board {
        file.board = Some(b.to_string());
    }
    let cfg = match file.with_preset() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(s, "  FAIL {e}");
            return (s, false);
        }
    };
    let _ = writeln!(
        s,
        "\neffective settings ({} preset under the file; command-line options win over both):",
        match cfg.board.as_deref() {
            None | Some("auto") => rt_config::detect_board(),
            Some(b) => b,
        }
    );
    s.push_str(&effective(&cfg, role));
    let _ = writeln!(s, "\nhost:");
    let mut ok = true;
    for f in host(&cfg, role) {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => {
                ok = false;
                "FAIL"
            }
        };
        let _ = writeln!(s, "  {tag} {}", f.text);
    }
    (s, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(cpu_list("2-3,5"), vec![2, 3, 5]);
        assert_eq!(cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn a_virtual_setup_checks_out() {
        let cfg = Config::parse("[audio]\ndevice = \"virtual\"\n", "t").unwrap();
        let f = host(&cfg.with_preset().unwrap(), Role::Receiver);
        assert!(f.iter().all(|f| f.level != Level::Fail), "{f:?}");
        assert!(f.iter().any(|f| f.text.contains("accepts")));
    }

    #[test]
    fn rtp_with_s32_fails_with_the_fix() {
        let cfg = Config::parse(
            "[audio]\ndevice = \"virtual\"\nformat = \"S32_LE\"\n[network]\nproto = \"rtp\"\n",
            "t",
        )
        .unwrap();
        let f = host(&cfg, Role::Sender);
        assert!(
            f.iter()
                .any(|f| f.level == Level::Fail && f.text.contains("S24_3LE")),
            "{f:?}"
        );
    }

    #[test]
    fn a_missing_device_fails_with_the_hint() {
        let cfg = Config::parse("[audio]\ndevice = \"hw:CARD=NoSuchCard,DEV=0\"\n", "t").unwrap();
        let f = host(&cfg, Role::Sender);
        let fail = f
            .iter()
            .find(|f| f.level == Level::Fail)
            .expect("a failure");
        assert!(fail.text.contains("NoSuchCard") && fail.text.contains("netaudio devices"));
    }

    #[test]
    fn outputs_that_are_not_cards_are_described() {
        let find = |dev: &str, role: Role| {
            let cfg = Config::parse(&format!("[audio]\ndevice = {dev:?}\n"), "t").unwrap();
            host(&cfg, role)
                .into_iter()
                .find(|f| f.text.contains("output") || f.text.contains("snapserver"))
                .unwrap_or_else(|| panic!("no finding for {dev}"))
        };
        let f = find("stdout", Role::Receiver);
        assert_eq!(f.level, Level::Ok, "{f:?}");
        let f = find("pipe:/tmp/snapfifo", Role::Receiver);
        assert!(
            f.level == Level::Ok && f.text.contains("pipe:///tmp/snapfifo"),
            "{f:?}"
        );
        let f = find("pipe:/no/such/folder/fifo", Role::Receiver);
        assert_eq!(f.level, Level::Fail, "{f:?}");
        // Nothing listens on port 1 of loopback: the format cannot be checked.
        let f = find("snapcast:tcp://127.0.0.1:4953?control=1", Role::Receiver);
        assert!(f.level == Level::Warn && f.text.contains("cannot"), "{f:?}");
        let f = find("snapcast:tcp://127.0.0.1:4953", Role::Sender);
        assert_eq!(f.level, Level::Fail, "{f:?}");
        let f = find("snapcast:udp://x", Role::Receiver);
        assert!(
            f.level == Level::Fail && f.text.contains("mode=server"),
            "{f:?}"
        );
    }
}
