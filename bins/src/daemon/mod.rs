//! Wiring of `netaudio send`, `netaudio recv` and `netaudio demo`: open the devices and
//! sockets, start the realtime threads, run the housekeeping loop, stop cleanly, report.
//!
//! Layout: `options` holds the settings, `setup` the start-up steps the daemons share,
//! `sockets` and `devices` what they stream between, `send`, `recv` and `demo` the three
//! commands, `report` their JSON output; this file their failure.

mod demo;
mod devices;
mod options;
mod recv;
mod report;
mod send;
mod setup;
mod sockets;

pub use demo::{DemoOptions, DemoReport, demo};
pub use devices::{AnyCapture, AnyPlayback};
pub use options::{
    AudioOptions, PlaybackFormat, Proto, ReceiveOptions, RunOptions, SyncClock, SyncOptions,
};
pub use recv::recv;
pub use send::send;
pub(crate) use setup::new_stream_id;
pub use sockets::{NetIn, NetOut};

use crate::housekeeping::STOP;
use std::sync::atomic::Ordering;

/// Why `send`, `recv` or `demo` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad settings, or a device or socket that cannot be opened (exit code 2).
    Setup(String),
    /// A realtime thread stopped while streaming (panicked, or stuck past the stall limit): it
    /// has been logged and the watchdog is no longer fed (exit code 3, so that systemd's
    /// `Restart=always` starts the daemon again).
    Realtime(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Setup(e) | Failure::Realtime(e) => f.write_str(e),
        }
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Setup(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Failure {
        Failure::Setup(e.to_string())
    }
}

/// Ends a daemon whose realtime thread stopped: nothing to join (it may be stuck for good) and
/// nothing to report; the status server is let go.
pub(super) fn realtime_failure(
    why: String,
    status: Option<std::thread::JoinHandle<()>>,
) -> Failure {
    STOP.store(true, Ordering::Relaxed);
    if let Some(h) = status {
        let _ = h.join();
    }
    Failure::Realtime(why)
}
