//! Recovery from an xrun or a suspend: [`Device::recover`] brings the stream back to
//! prepared (resuming it first after a suspend). A lost device is not recovered here but
//! reopened (see [`reopen`](super::reopen)).
//!
//! Realtime contract: runs on the realtime thread; allocates, frees and locks nothing. Blocks
//! only after a suspend, retrying `snd_pcm_resume` for at most [`RESUME_TRIES`] × 10 ms
//! (`clock_nanosleep` between tries). Syscalls: what alsa-lib makes for `snd_pcm_resume`,
//! `snd_pcm_state`, `snd_pcm_drop` and `snd_pcm_prepare`.

use std::time::Duration;

use super::device::{Device, pcm_err};
use crate::pcm::PcmError;

/// How often `recover` retries `snd_pcm_resume` (10 ms apart) before preparing afresh.
pub const RESUME_TRIES: usize = 20;

impl Device {
    /// Brings the stream back to prepared after an xrun or a suspend.
    pub(super) fn recover(&mut self, err: PcmError) -> Result<(), PcmError> {
        self.started = false;
        match err {
            PcmError::Xrun => {}
            PcmError::Suspended => {
                for _ in 0..RESUME_TRIES {
                    match self.pcm.resume() {
                        // Resumed where it was: nothing more to do.
                        Ok(()) => {
                            self.started = self.state() == alsa::pcm::State::Running as i32;
                            return Ok(());
                        }
                        Err(e) if e.errno().abs() == libc::EAGAIN => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        // The device cannot resume: start afresh.
                        Err(_) => break,
                    }
                }
            }
            PcmError::Gone(_) | PcmError::Other(_) => return Err(err),
        }
        // `drop` first: a running stream (our own xrun rule) cannot be prepared.
        let _ = self.pcm.drop();
        self.pcm.prepare().map_err(pcm_err)
    }
}
