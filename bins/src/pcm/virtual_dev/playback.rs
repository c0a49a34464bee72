//! [`VirtualPlayback`]: a timer-driven playback device that consumes at its own clock, hands
//! what it plays to an analyzing [`Sink`] if it has one, and can record it (`record=FILE`).
//!
//! Realtime contract: `open` allocates the device buffer, the recording buffer and the sink's
//! analyzer; `wait` sleeps in `clock_nanosleep`; `write` lends the preallocated buffer and
//! never allocates or locks; `poll_reopen` reads the clock and resets the counters. Saving
//! the recording (file I/O) happens after the stream stopped.

use super::clock::{DeviceClock, PlayQueue};
use super::names::{RECORD_SECONDS, Unplug, parse_name, record_path};
use super::setup;
use super::sink::Sink;
use crate::net::monotonic_ns;
use crate::pcm::{DeviceRequest, DeviceSetup, PcmError, Playback};

/// A virtual playback device.
pub struct VirtualPlayback {
    setup: DeviceSetup,
    queue: PlayQueue,
    buf: Vec<u8>,
    sink: Option<Sink>,
    unplug: Unplug,
    record: Option<Recording>,
}

/// What a recording device played, in a buffer sized at open.
struct Recording {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
    len: usize,
}

impl VirtualPlayback {
    /// Opens a virtual playback device (`req.name` as in [`parse_name`]).
    pub fn open(req: &DeviceRequest, sink: Option<Sink>) -> Result<VirtualPlayback, String> {
        let opts = parse_name(&req.name)
            .unwrap_or_else(|| Err(format!("{:?} is not a virtual device", req.name)))?;
        let setup = setup(req);
        let fb = req.format.frame_bytes();
        let mut sink = sink;
        if let Some(s) = sink.as_mut() {
            s.prepare(req.format.sample, setup.buffer);
        }
        let record = record_path(&req.name).map(|path| Recording {
            path,
            bytes: vec![0; RECORD_SECONDS * req.format.rate as usize * fb],
            len: 0,
        });
        Ok(VirtualPlayback {
            queue: PlayQueue::new(DeviceClock::new(req.format, opts.ppm)),
            buf: vec![0; setup.buffer * fb],
            sink,
            unplug: Unplug::new(&opts),
            record,
            setup,
        })
    }

    /// The analyzing sink, if any.
    pub fn sink(&self) -> Option<&Sink> {
        self.sink.as_ref()
    }

    /// Writes what was played to the `record=FILE` file, if the name asked for one; returns
    /// the file and the frames written. Not for realtime threads.
    pub fn save_recording(&self) -> Result<Option<(std::path::PathBuf, usize)>, String> {
        let Some(r) = &self.record else {
            return Ok(None);
        };
        std::fs::write(&r.path, &r.bytes[..r.len])
            .map_err(|e| format!("cannot write the recording {}: {e}", r.path.display()))?;
        Ok(Some((
            r.path.clone(),
            r.len / self.setup.format.frame_bytes(),
        )))
    }
}

impl Playback for VirtualPlayback {
    fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        self.queue.start();
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.unplug.check()?;
        self.queue
            .wait(self.setup.buffer, self.setup.period, timeout_ms)
    }

    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        self.unplug.check()?;
        let fb = self.setup.format.frame_bytes();
        let q = self.queue;
        let at = (q.written % self.setup.buffer as u64) as usize;
        let n = frames.min(self.setup.buffer - at);
        let area = &mut self.buf[at * fb..(at + n) * fb];
        f(area);
        if let Some(r) = self.record.as_mut() {
            let n = area.len().min(r.bytes.len() - r.len);
            r.bytes[r.len..r.len + n].copy_from_slice(&area[..n]);
            r.len += n;
        }
        if let Some(sink) = self.sink.as_mut() {
            // Frame `written` leaves the device when the device clock reaches it.
            let t_play = if q.running {
                q.clock.time_of(q.written - q.base) as f64 / 1e9
            } else {
                // Primed before start: played right after start.
                let queued = (q.written - q.base) as f64;
                (monotonic_ns() as f64 + queued * 1e9 / q.clock.rate) / 1e9
            };
            sink.played(area, t_play, 1.0 / q.clock.rate);
        }
        self.queue.written += n as u64;
        Ok(n)
    }

    fn delay(&mut self) -> Result<i64, PcmError> {
        Ok(self.queue.delay())
    }

    fn recover(&mut self, _err: PcmError) -> Result<(), PcmError> {
        // An underrun: the device played silence meanwhile. It stops; what was written counts
        // as played, and it starts again after priming.
        self.queue.stop();
        Ok(())
    }

    /// Back once the simulated unplug is over, empty and stopped (nothing to close or open).
    fn poll_reopen(&mut self) -> bool {
        self.unplug.check().is_ok() && self.recover(PcmError::Xrun).is_ok()
    }
}
