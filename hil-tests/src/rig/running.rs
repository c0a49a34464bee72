//! The processes and threads of one pipeline's run: stopped in order when dropped, and the
//! threads that feed the source and read the monitor.

use super::proc::{self, Proc};
use engine::sim::signal::SourceKind;
use std::io::{Read, Write};
use std::process::{ChildStdin, ChildStdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The processes and threads of one pipeline's run. Dropping it stops everything (in order:
/// receiver, sender, source, monitor), so every error path cleans up.
#[derive(Default)]
pub(super) struct Running {
    pub(super) sender: Vec<Proc>,
    pub(super) receiver: Vec<Proc>,
    pub(super) src: Option<Proc>,
    pub(super) mon: Option<Proc>,
    pub(super) writer_stop: Arc<AtomicBool>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) reader: Option<JoinHandle<()>>,
}

impl Running {
    fn all_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.sender
            .iter_mut()
            .chain(self.receiver.iter_mut())
            .chain(self.src.iter_mut())
            .chain(self.mon.iter_mut())
    }

    /// Err naming the first process that has exited, with the end of its log.
    pub(super) fn check_alive(&mut self) -> Result<(), String> {
        if let Some(s) = proc::interrupted() {
            return Err(format!("interrupted (signal {s})"));
        }
        for p in self.all_mut() {
            if let Some(status) = p.exited() {
                return Err(format!(
                    "{} exited early ({status}); the end of its log:\n{}",
                    p.name,
                    p.log_tail(12)
                ));
            }
        }
        Ok(())
    }

    pub(super) fn stop_threads(&mut self) {
        self.writer_stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for p in self.receiver.iter_mut().chain(self.sender.iter_mut()) {
            p.stop(Duration::from_secs(3));
        }
        if let Some(p) = &mut self.src {
            p.stop(Duration::from_secs(3));
        }
        if let Some(p) = &mut self.mon {
            p.stop(Duration::from_secs(3));
        }
        self.stop_threads();
    }
}

/// Feeds the test signal (the ramp, or a tone) to the player until it stops taking it.
pub(super) fn spawn_source(
    mut stdin: ChildStdin,
    rate: u32,
    source: SourceKind,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        use engine::format::{SampleFormat, StreamFormat};
        use engine::sim::signal::Source;
        let Some(format) = StreamFormat::new(rate, 2, SampleFormat::S16Le) else {
            return;
        };
        let src = Source::new(source, format);
        const FRAMES: usize = 1024;
        let mut buf = vec![0u8; FRAMES * format.frame_bytes()];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            src.fill(n, &mut buf);
            // Blocks while aplay's buffer is full: aplay paces the source.
            if stdin.write_all(&buf).is_err() {
                break;
            }
            n += FRAMES as u64;
        }
    })
}

/// Reads the monitor's stdout in chunks until it ends.
pub(super) fn spawn_reader(mut out: ChildStdout, tx: mpsc::Sender<Vec<u8>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

pub(super) fn cpu_of(procs: &[Proc]) -> f64 {
    procs.iter().map(Proc::cpu_seconds).sum()
}
