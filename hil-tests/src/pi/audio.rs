//! Audio streamed between this machine and the hosts: the monitor's capture as it arrives, fed
//! to the analyzers, and the reference played on the sender; and the guard that ends the local
//! processes (ssh, or sh for local hosts) carrying them.

use super::host::Host;
use super::pilot::PilotAnalyzer;
use crate::markers::{MarkerSignal, TwoChannelMonitor};
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// The monitor's capture as it arrives from its reader thread, fed to the analyzers.
pub(super) struct MonitorCapture {
    pub(super) rx: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    pub(super) carry: Vec<u8>,
    /// Bytes received so far.
    pub(super) bytes: u64,
    /// The monitor's output has ended.
    pub(super) closed: bool,
    /// Left = reference, right = played ([`TwoChannelMonitor`]); else the pilot on the left.
    pub(super) reference: bool,
    pub(super) pilot: PilotAnalyzer,
    pub(super) two: TwoChannelMonitor,
}

impl MonitorCapture {
    /// Waits at most `timeout` for audio, then feeds all that has arrived.
    pub(super) fn pump(&mut self, timeout: Duration) {
        let Some(rx) = &self.rx else {
            std::thread::sleep(timeout);
            return;
        };
        let mut next = match rx.recv_timeout(timeout) {
            Ok(chunk) => Some(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.closed = true;
                None
            }
        };
        while let Some(chunk) = next {
            self.bytes += chunk.len() as u64;
            self.carry.extend_from_slice(&chunk);
            next = match rx.try_recv() {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.closed = true;
                    None
                }
            };
        }
        let whole = self.carry.len() - self.carry.len() % 4;
        if self.reference {
            self.two.feed(&self.carry[..whole]);
        } else {
            self.pilot.feed(&self.carry[..whole], 2);
        }
        self.carry.drain(..whole);
    }
}

/// A local child process (or the ssh running it) killed and reaped when dropped.
pub(super) struct ChildGuard(pub(super) std::process::Child);

impl ChildGuard {
    /// What the process wrote on stderr, once it has exited (its pipe then ends).
    pub(super) fn stderr_after_exit(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        let s = s.trim();
        if s.is_empty() {
            format!(
                "it exited ({}) without a message",
                self.0.wait().map(|s| s.to_string()).unwrap_or_default()
            )
        } else {
            s.to_owned()
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays `signal` for `seconds` on `host`'s `device` with `aplay`, fed through stdin by a
/// thread (aplay paces it).
pub(super) fn start_player(
    host: &Host,
    device: &str,
    rate: u32,
    mut signal: MarkerSignal,
    seconds: f64,
) -> Result<std::process::Child, String> {
    let mut child = host
        .command(&format!(
            "aplay -q -D {device} -f S16_LE -c 2 -r {rate} -t raw"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: cannot start aplay on {device}: {e}", host.spec))?;
    let mut stdin = child.stdin.take().ok_or("aplay has no stdin")?;
    let total = (seconds * rate as f64) as usize;
    std::thread::spawn(move || {
        use std::io::Write;
        let chunk = (rate as usize / 10).max(1);
        let mut sent = 0;
        let mut buf = Vec::with_capacity(chunk * 4);
        while sent < total {
            buf.clear();
            let n = chunk.min(total - sent);
            signal.fill(n, &mut buf);
            if stdin.write_all(&buf).is_err() {
                break;
            }
            sent += n;
        }
    });
    Ok(child)
}
