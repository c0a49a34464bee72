//! The pipelines under test (netaudio, or the old `arecord | nc` baseline): starting the
//! receiver side, then the sender side, on free local ports.

use super::proc::{self, Proc, RigEnv};
use super::running::Running;
use super::{PERIODS, RigArgs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// SCHED_FIFO priority of netaudio's realtime threads on the rig: below jackd's (70) and its
/// clients' (69), which stand for the sound card (see where it is passed).
const RT_PRIORITY: &str = "60";

/// Which pipeline a run measures.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pipeline<'a> {
    /// `netaudio send` → `netaudio recv`.
    Netaudio(&'a Path),
    /// The seed pipeline: `arecord | nc` → `nc -l | mbuffer | aplay`.
    Baseline,
}

impl Pipeline<'_> {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Pipeline::Netaudio(_) => "netaudio",
            Pipeline::Baseline => "baseline",
        }
    }
}

/// A local port nothing listens on now.
fn free_port(udp: bool) -> Result<u16, String> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| format!("no free local port: {e}"))
}

/// Whether something listens on (TCP) or is bound to (UDP) local `port`, from /proc/net.
fn port_bound(port: u16, udp: bool) -> bool {
    let files: &[&str] = if udp {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let hex = format!(":{port:04X}");
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[1].ends_with(&hex)
                    // TCP: LISTEN; UDP: any bound socket (state 07, "closed").
                    && (udp || cols[3] == "0A")
            })
        })
    })
}

fn wait_bound(port: u16, udp: bool, run: &mut Running) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    while !port_bound(port, udp) {
        run.check_alive()?;
        if Instant::now() >= end {
            return Err(format!("nothing listened on port {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A started pipeline: its commands, and where netaudio writes its counters (sender, receiver).
pub(super) struct Started {
    pub(super) sender_cmd: String,
    pub(super) receiver_cmd: String,
    pub(super) stats: Option<(PathBuf, PathBuf)>,
    /// With two receivers, the second one's counters.
    pub(super) second_stats: Option<PathBuf>,
}

/// With two receivers, their common latency from capture, ms: as given, or six periods and
/// 2 ms (the default's four and 2 ms, a period of capture, a period of margin).
pub(super) fn sync_latency_ms(args: &RigArgs) -> f64 {
    args.latency_ms
        .unwrap_or(6.0 * args.period as f64 * 1000.0 / args.rate as f64 + 2.0)
}

/// Starts the pipeline's receiver side, then its sender side.
pub(super) fn start_pipeline(
    env: &RigEnv,
    args: &RigArgs,
    pipeline: Pipeline<'_>,
    run: &mut Running,
) -> Result<Started, String> {
    let rate = args.rate.to_string();
    let name = pipeline.name();
    match pipeline {
        Pipeline::Netaudio(exe) => {
            let port = free_port(true)?;
            let period = args.period.to_string();
            let periods = PERIODS.to_string();
            // The rig's "sound card" is jackd (SCHED_FIFO 70) and the jack plugin's client
            // threads (69), which move each PCM's pointer: like a card's interrupt, they run
            // before the programs they serve. At a priority above them, the first receiver
            // woken in a cycle would hold off the second one's client thread, and the second's
            // pointer would move late by the first one's render.
            let common = [
                "--priority",
                RT_PRIORITY,
                "--rate",
                &rate,
                "--channels",
                "2",
                "--format",
                "S16_LE",
                "--period",
                &period,
                "--periods",
                &periods,
            ];
            let recv_stats = env.file("netaudio-recv.json");
            let send_stats = env.file("netaudio-send.json");
            let _ = std::fs::remove_file(&recv_stats);
            let _ = std::fs::remove_file(&send_stats);

            let two = args.receivers == 2;
            let mut recv = env.command(exe);
            recv.args(["recv", "--device", if two { "pouta" } else { "pout" }])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(common);
            if two {
                recv.arg("--sync-latency-ms")
                    .arg(sync_latency_ms(args).to_string());
            } else if let Some(l) = args.latency_ms {
                recv.arg("--latency-ms").arg(l.to_string());
            }
            recv.args(["--drift-mode", args.drift_mode.name()]);
            recv.arg("--stats-json").arg(&recv_stats);
            let recv_cmd = proc::command_line(&recv);
            run.receiver.push(Proc::spawn(
                "netaudio recv",
                recv,
                env.file("netaudio-recv.log"),
                true,
            )?);
            wait_bound(port, true, run)?;
            let mut dest = format!("127.0.0.1:{port}");
            let mut second_stats = None;
            if two {
                // The second receiver, on its own PCM of the same clock.
                let port_b = free_port(true)?;
                let stats_b = env.file("netaudio-recv-b.json");
                let _ = std::fs::remove_file(&stats_b);
                let mut b = env.command(exe);
                b.args(["recv", "--device", "poutb", "--listen"])
                    .arg(format!("127.0.0.1:{port_b}"))
                    .args(common)
                    .arg("--sync-latency-ms")
                    .arg(sync_latency_ms(args).to_string())
                    .args(["--drift-mode", args.drift_mode.name()])
                    .arg("--stats-json")
                    .arg(&stats_b)
                    .args(["--status-socket"])
                    .arg(env.file("netaudio-recv-b.sock"));
                run.receiver.push(Proc::spawn(
                    "netaudio recv (second)",
                    b,
                    env.file("netaudio-recv-b.log"),
                    true,
                )?);
                wait_bound(port_b, true, run)?;
                dest = format!("{dest},127.0.0.1:{port_b}");
                second_stats = Some(stats_b);
            }

            let mut send = env.command(exe);
            send.args(["send", "--device", "pin", "--dest"])
                .arg(&dest)
                .args(common)
                .arg("--stats-json")
                .arg(&send_stats);
            let send_cmd = proc::command_line(&send);
            run.sender.push(Proc::spawn(
                "netaudio send",
                send,
                env.file("netaudio-send.log"),
                true,
            )?);
            Ok(Started {
                sender_cmd: send_cmd,
                receiver_cmd: recv_cmd,
                stats: Some((send_stats, recv_stats)),
                second_stats,
            })
        }
        Pipeline::Baseline => {
            let port = free_port(false)?;
            let port_s = port.to_string();
            let fmt = ["-t", "raw", "-f", "S16_LE", "-r", &rate, "-c", "2"];

            let mut nc_l = env.command("nc");
            nc_l.args(["-l", "-p", &port_s]).stdout(Stdio::piped());
            let mut mbuffer = env.command("mbuffer");
            mbuffer
                .args(["-q", "-m", "2M", "-P", "5"])
                .stdout(Stdio::piped());
            let mut aplay = env.command("aplay");
            aplay.args(["-D", "pout"]).args(fmt);
            let recv_cmd = format!(
                "{} | {} | {}",
                proc::command_line(&nc_l),
                proc::command_line(&mbuffer),
                proc::command_line(&aplay)
            );
            let mut p = Proc::spawn("nc -l", nc_l, env.file(&format!("{name}-nc-l.log")), false)?;
            let out = p.child_mut().stdout.take().ok_or("nc -l: no stdout")?;
            run.receiver.push(p);
            mbuffer.stdin(Stdio::from(out));
            let mut p = Proc::spawn(
                "mbuffer",
                mbuffer,
                env.file(&format!("{name}-mbuffer.log")),
                false,
            )?;
            let out = p.child_mut().stdout.take().ok_or("mbuffer: no stdout")?;
            run.receiver.push(p);
            aplay.stdin(Stdio::from(out));
            run.receiver.push(Proc::spawn(
                "aplay pout",
                aplay,
                env.file(&format!("{name}-aplay-pout.log")),
                true,
            )?);
            wait_bound(port, false, run)?;

            let mut arecord = env.command("arecord");
            arecord
                .args([
                    "-D", "pin", "-f", "S16_LE", "-r", &rate, "-c", "2", "-t", "raw",
                ])
                .stdout(Stdio::piped());
            let mut nc = env.command("nc");
            nc.args(["-q", "0", "127.0.0.1", &port_s]);
            let send_cmd = format!(
                "{} | {}",
                proc::command_line(&arecord),
                proc::command_line(&nc)
            );
            let mut p = Proc::spawn(
                "arecord pin",
                arecord,
                env.file(&format!("{name}-arecord-pin.log")),
                false,
            )?;
            let out = p.child_mut().stdout.take().ok_or("arecord: no stdout")?;
            run.sender.push(p);
            nc.stdin(Stdio::from(out));
            run.sender.push(Proc::spawn(
                "nc",
                nc,
                env.file(&format!("{name}-nc.log")),
                true,
            )?);
            Ok(Started {
                sender_cmd: send_cmd,
                receiver_cmd: recv_cmd,
                stats: None,
                second_stats: None,
            })
        }
    }
}
