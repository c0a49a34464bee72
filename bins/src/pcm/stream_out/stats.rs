//! The counters of an output that is not a sound card: what reached the reader, what was
//! dropped (no reader, a full pipe, snapserver away), and how often it was connected again.
//!
//! Realtime contract: the realtime thread only adds to the atomics (relaxed); reading them
//! and formatting the line and the JSON happen on other threads.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Live counters of a stream output, shared by the realtime thread, the connector thread and
/// the daemon.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Frames of the stream handed to the reader.
    pub frames_written: AtomicU64,
    /// Bytes handed to the reader (lead silence included).
    pub bytes_written: AtomicU64,
    /// Frames of the stream not handed over: no reader or connection, or a full pipe.
    pub frames_dropped: AtomicU64,
    /// Times a connection (or reader) was lost.
    pub disconnects: AtomicU64,
    /// Connections (or FIFO opens) made after one was lost.
    pub reconnects: AtomicU64,
    /// Whether a connection (or reader) is there now.
    pub connected: AtomicBool,
}

impl OutputStats {
    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "output: {} frames written ({} bytes), {} dropped, {} disconnects, {} reconnects",
            self.frames_written.load(Relaxed),
            self.bytes_written.load(Relaxed),
            self.frames_dropped.load(Relaxed),
            self.disconnects.load(Relaxed),
            self.reconnects.load(Relaxed)
        )
    }

    /// Adds the counters to a daemon's `--stats-json`, prefixed `output_`.
    pub fn add_json(&self, j: &mut Value) {
        j["output_frames_written"] = json!(self.frames_written.load(Relaxed));
        j["output_bytes_written"] = json!(self.bytes_written.load(Relaxed));
        j["output_frames_dropped"] = json!(self.frames_dropped.load(Relaxed));
        j["output_disconnects"] = json!(self.disconnects.load(Relaxed));
        j["output_reconnects"] = json!(self.reconnects.load(Relaxed));
        j["output_connected"] = json!(self.connected.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_line_and_the_json() {
        let s = OutputStats::default();
        s.frames_dropped.fetch_add(960, Relaxed);
        s.reconnects.fetch_add(1, Relaxed);
        let mut j = json!({"gaps": 0});
        s.add_json(&mut j);
        assert_eq!(j["output_frames_dropped"], 960);
        assert_eq!(j["output_reconnects"], 1);
        assert_eq!(j["gaps"], 0);
        assert!(
            s.line()
                .contains("960 dropped, 0 disconnects, 1 reconnects")
        );
    }
}
