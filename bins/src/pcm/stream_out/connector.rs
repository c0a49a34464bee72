//! The connector thread of an output: opens what the realtime side writes to (connects to
//! snapserver, opens the FIFO once a reader is there, takes stdout), hands the non-blocking
//! descriptor over, and when the realtime side gives it back (the reader went away), closes it
//! and tries again with back-off. Before each connect to snapserver it reads the source's
//! format from snapserver's control port again: a snapserver restarted with another format is
//! refused (and said so), not fed noise.
//!
//! A normal-priority thread: it allocates, blocks in `connect` and sleeps; it talks to the
//! realtime side only through the two descriptor rings and the atomics of [`OutputStats`].

use super::names::{OutputTarget, WireSample};
use super::snapcast::{self, Probe};
use super::stats::OutputStats;
use engine::format::StreamFormat;
use std::fs::File;
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

/// First wait after a failed open or connect; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the thread looks for a descriptor given back, and for the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// The longest a connect to snapserver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connector needs to know to open the output.
pub(super) struct Plan {
    pub(super) target: OutputTarget,
    /// The stream's format (what the output is fed).
    pub(super) stream: StreamFormat,
    /// The encoding the output writes (chosen at open).
    pub(super) wire: WireSample,
    /// Whether the "format could not be checked" notice was given already.
    pub(super) unchecked_said: bool,
    /// Whether stdout was handed over already (it is, once).
    pub(super) stdout_taken: bool,
    /// The last "waiting for a reader" notice given.
    pub(super) waiting_said: String,
}

/// The running connector thread; stopped and joined when dropped.
pub(super) struct Connector {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// A FIFO it may be waiting on in a blocking `open`.
    fifo: Option<std::path::PathBuf>,
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            // A thread waiting for a FIFO's reader is woken by a reader that comes and goes.
            while !h.is_finished() {
                if let Some(p) = &self.fifo {
                    let _ = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(p);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = h.join();
        }
    }
}

/// Why an attempt did not give a descriptor.
enum Failed {
    /// Try again after the back-off (the text is logged when it changes).
    Retry(String),
    /// Do not try again (the text is logged once).
    Never(String),
}

/// Starts the connector thread.
pub(super) fn spawn(
    mut plan: Plan,
    stats: Arc<OutputStats>,
    mut give: rtrb::Producer<File>,
    mut returned: rtrb::Consumer<File>,
) -> Result<Connector, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let fifo = match &plan.target {
        OutputTarget::Pipe(p) => Some(p.clone()),
        _ => None,
    };
    let handle = std::thread::Builder::new()
        .name("na-output".into())
        .spawn(move || {
            let mut out = false;
            let mut ever = false;
            let mut backoff = MIN_BACKOFF;
            let mut said = String::new();
            let mut never = false;
            while !flag.load(Relaxed) {
                if let Ok(f) = returned.pop() {
                    drop(f);
                    out = false;
                    log::warn!(
                        "{}: the reader went away; frames are dropped until it is back",
                        plan.target.describe()
                    );
                }
                if out || never {
                    std::thread::sleep(TICK);
                    continue;
                }
                match open(&mut plan) {
                    Ok(f) => {
                        if give.push(f).is_ok() {
                            out = true;
                            if ever {
                                stats.reconnects.fetch_add(1, Relaxed);
                            }
                            ever = true;
                            said.clear();
                            backoff = MIN_BACKOFF;
                            log::info!("writing to {}", plan.target.describe());
                        }
                    }
                    Err(Failed::Never(why)) => {
                        log::warn!("{why}");
                        never = true;
                    }
                    Err(Failed::Retry(why)) => {
                        if why != said {
                            log::warn!("{why}; trying again every {MAX_BACKOFF:?} at most");
                            said = why;
                        }
                        let until = std::time::Instant::now() + backoff;
                        while !flag.load(Relaxed) && std::time::Instant::now() < until {
                            std::thread::sleep(TICK);
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if plan.stdout_taken {
                restore_stdout();
            }
        })
        .map_err(|e| format!("cannot start the output's connector thread: {e}"))?;
    Ok(Connector {
        stop,
        handle: Some(handle),
        fifo,
    })
}

fn open(plan: &mut Plan) -> Result<File, Failed> {
    match &plan.target {
        OutputTarget::Snapcast {
            host,
            port,
            control,
        } => {
            let (host, port, control) = (host.clone(), *port, *control);
            match snapcast::probe(&host, control, port) {
                Probe::Found(src) => {
                    let wire = snapcast::check_format(plan.stream, &src).map_err(Failed::Retry)?;
                    if wire != plan.wire {
                        return Err(Failed::Retry(format!(
                            "snapserver's source {:?} now reads sampleformat {}, but netaudio \
                             writes {}-bit samples since it started: restart netaudio recv to \
                             follow",
                            src.name,
                            src.sampleformat(),
                            plan.wire.bits()
                        )));
                    }
                }
                Probe::NoSource(e) => {
                    return Err(Failed::Retry(format!(
                        "snapserver at {host}:{control}: {e}"
                    )));
                }
                Probe::Unreachable(e) => {
                    if !plan.unchecked_said {
                        plan.unchecked_said = true;
                        log::warn!("{}", unchecked_notice(&host, control, &e, plan));
                    }
                }
            }
            connect(&host, port).map_err(Failed::Retry)
        }
        OutputTarget::Pipe(path) => open_fifo(path, &mut plan.waiting_said),
        OutputTarget::Stdout => {
            if plan.stdout_taken {
                return Err(Failed::Never(
                    "the reader of standard output went away: the stream is not written any \
                     more (restart netaudio recv with a new reader)"
                        .into(),
                ));
            }
            // Once only: a closed stdout does not come back.
            plan.stdout_taken = true;
            stdout_nonblocking().map_err(Failed::Never)
        }
    }
}

/// The notice that snapserver's format could not be checked.
pub(super) fn unchecked_notice(host: &str, control: u16, why: &str, plan: &Plan) -> String {
    format!(
        "could not check snapserver's sample format at its control port {host}:{control} \
         ({why}); writing {}:{}:{}: make sure its source's sampleformat says so (give \
         ?control=PORT when the control port is not {})",
        plan.stream.rate,
        plan.wire.bits(),
        plan.stream.channels,
        super::names::SNAPCAST_CONTROL_PORT
    )
}

fn connect(host: &str, port: u16) -> Result<File, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve snapserver's host {host}: {e}"))?;
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                s.set_nonblocking(true)
                    .map_err(|e| format!("snapserver at {a}: {e}"))?;
                return Ok(File::from(OwnedFd::from(s)));
            }
            Err(e) => {
                last = format!(
                    "cannot connect to snapserver's TCP source at {a}: {e} (is snapserver running \
                     with `source = tcp://0.0.0.0:{port}?name=...&mode=server`?)"
                )
            }
        }
    }
    Err(last)
}

/// Creates the FIFO `path` if it is missing; an error when something else is there.
pub(super) fn make_fifo(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(format!(
            "{} exists and is not a FIFO: remove it, or give pipe: another path",
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o660)).map_err(
                |e| {
                    format!(
                        "cannot create the FIFO {}: {e} (does its folder exist and may this user write there?)",
                        path.display()
                    )
                },
            )
        }
        Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
    }
}

/// Opens the FIFO for writing, non-blocking once open. With a reader there it opens at once;
/// without, it says so (once) and waits in a blocking `open` until one comes: a writer waiting
/// there already counts as a writer, so a reader that opens non-blocking and gives up on EOF
/// (snapserver's pipe source, every 100 ms) finds it and stays.
fn open_fifo(path: &std::path::Path, said: &mut String) -> Result<File, Failed> {
    make_fifo(path).map_err(Failed::Retry)?;
    match try_open_fifo(path) {
        Err(Failed::Retry(why)) if why.starts_with(NO_READER) => {
            if *said != why {
                log::info!("{why}");
                *said = why;
            }
        }
        other => return other,
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Failed::Retry(format!("cannot open the FIFO {}: {e}", path.display())))?;
    set_nonblocking(&f).map_err(Failed::Retry)?;
    Ok(f)
}

const NO_READER: &str = "no reader on the FIFO";

fn try_open_fifo(path: &std::path::Path) -> Result<File, Failed> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                Failed::Retry(format!(
                    "{NO_READER} {} yet: waiting for one (frames are dropped meanwhile)",
                    path.display()
                ))
            } else {
                Failed::Retry(format!("cannot open the FIFO {}: {e}", path.display()))
            }
        })
}

fn set_nonblocking(fd: &impl AsFd) -> Result<(), String> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// A non-blocking duplicate of standard output (the flag is on the open file description,
/// shared with whoever gave us stdout: [`restore_stdout`] takes it off again).
fn stdout_nonblocking() -> Result<File, String> {
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot use standard output: {e}"))?;
    set_nonblocking(&fd).map_err(|e| format!("standard output: {e}"))?;
    Ok(File::from(fd))
}

/// Takes `O_NONBLOCK` off standard output again.
fn restore_stdout() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let out = std::io::stdout();
    if let Ok(flags) = fcntl(out.as_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(
            out.as_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_made_when_missing_and_anything_else_refused() {
        let d = std::env::temp_dir().join(format!("netaudio-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        make_fifo(&p).unwrap();
        make_fifo(&p).unwrap();
        // No reader: the non-blocking open is refused at once.
        match try_open_fifo(&p) {
            Err(Failed::Retry(e)) => assert!(e.contains("no reader"), "{e}"),
            _ => panic!("a FIFO without reader opened"),
        }
        let file = d.join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = make_fifo(&file).unwrap_err();
        assert!(e.contains("not a FIFO"), "{e}");
        let e = make_fifo(&d.join("no/such/dir")).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
