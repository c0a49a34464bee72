//! An open, configured PCM ([`Device`]) and its realtime calls that are not transfers:
//! availability with netaudio's xrun rule, `wait`, `start`, `delay`, and the error a stream
//! state stands for.
//!
//! Realtime contract: these run on the realtime thread. They allocate, free and lock nothing
//! (poll descriptors live in a fixed array filled at open; no `hw_params_current`, no
//! `PollDescriptors::get`), block only in `poll(2)` inside `wait`, bounded by its timeout, and
//! make only the syscalls alsa-lib makes for `snd_pcm_avail_update`, `snd_pcm_state`,
//! `snd_pcm_delay` and `snd_pcm_start` (see the [module docs](super)).

use std::time::{Duration, Instant};

use alsa::PollDescriptors;
use alsa::pcm::PCM;
use alsa::poll::{Flags, pollfd};

use crate::pcm::PcmError;

/// Most poll descriptors a device may need (`hw:` and most plugins use one).
pub const MAX_POLL_FDS: usize = 8;

/// Maps an alsa-crate error to the realtime error. The crate reports some errnos negated.
pub(super) fn pcm_err(e: alsa::Error) -> PcmError {
    PcmError::from_errno(e.errno().abs())
}

/// An open, configured PCM and what the realtime calls need, all sized at open.
pub(super) struct Device {
    pub(super) pcm: PCM,
    /// Poll descriptors, filled once at open (`nfds` of them).
    pub(super) fds: [pollfd; MAX_POLL_FDS],
    pub(super) nfds: usize,
    pub(super) frame_bytes: usize,
    pub(super) period: usize,
    pub(super) buffer: usize,
    /// The copy buffer of the read/write fallback (`buffer` frames); `None` with mmap.
    pub(super) rw: Option<Vec<u8>>,
    /// Whether we started the stream since the last prepare.
    pub(super) started: bool,
}
impl Device {
    /// The stream state, raw (never panics, unlike `PCM::state`).
    pub(super) fn state(&self) -> i32 {
        self.pcm.state_raw()
    }

    /// The error the current state stands for, if it stands for one.
    pub(super) fn state_error(&self) -> Option<PcmError> {
        state_error(self.state())
    }

    /// `snd_pcm_avail_update`, then the state: alsa-lib's `plug` over `ioplug` plugins (JACK,
    /// PulseAudio) enters XRUN while `avail_update` keeps succeeding, and ioplug plugins never
    /// flag over- or underruns at all, so the kernel's rule is applied here too: a running
    /// stream whose available frames reach the stop threshold (the buffer) has run over/under.
    pub(super) fn avail(&mut self) -> Result<usize, PcmError> {
        let n = self.pcm.avail_update().map_err(pcm_err)?;
        let n = n.max(0) as usize;
        let state = self.state();
        if let Some(e) = state_error(state) {
            return Err(e);
        }
        if n >= self.buffer && state == alsa::pcm::State::Running as i32 {
            return Err(PcmError::Xrun);
        }
        Ok(n)
    }

    /// Waits until a period is available or `timeout_ms` passed (negative: no limit).
    pub(super) fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        let mut deadline: Option<Instant> = None;
        let mut timeout = timeout_ms;
        loop {
            let avail = self.avail()?;
            if avail >= self.period {
                return Ok(avail);
            }
            if timeout == 0 {
                return Ok(0);
            }
            let fds = &mut self.fds[..self.nfds];
            match alsa::poll::poll(fds, timeout) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.errno().abs() == libc::EINTR => {}
                Err(e) => return Err(pcm_err(e)),
            }
            let rev = self.pcm.revents(&self.fds[..self.nfds]).map_err(pcm_err)?;
            if rev.intersects(Flags::ERR | Flags::HUP | Flags::NVAL) {
                if let Some(e) = self.state_error() {
                    return Err(e);
                }
                if rev.intersects(Flags::HUP | Flags::NVAL) {
                    return Err(PcmError::Gone(libc::EBADFD));
                }
            }
            // Woken without a full period (plugins remap events, signals interrupt): wait for
            // the rest of the time. The clock is read only on this path.
            if timeout > 0 {
                let now = Instant::now();
                let end = *deadline.get_or_insert(now + Duration::from_millis(timeout_ms as u64));
                timeout = end.saturating_duration_since(now).as_millis() as i32;
            }
        }
    }

    /// Starts the stream if it is prepared.
    pub(super) fn start(&mut self) -> Result<(), PcmError> {
        if self.state() == alsa::pcm::State::Prepared as i32 {
            self.pcm.start().map_err(pcm_err)?;
        } else if let Some(e) = self.state_error() {
            return Err(e);
        }
        self.started = true;
        Ok(())
    }

    // `i64::from` is not useless where a C long is 32 bits (32-bit Raspberry Pi OS).
    #[allow(clippy::useless_conversion)]
    pub(super) fn delay(&mut self) -> Result<i64, PcmError> {
        self.pcm.delay().map(i64::from).map_err(pcm_err)
    }
}

/// The error a raw PCM state stands for, if it stands for one.
fn state_error(s: i32) -> Option<PcmError> {
    use alsa::pcm::State;
    if s == State::XRun as i32 {
        Some(PcmError::Xrun)
    } else if s == State::Suspended as i32 {
        Some(PcmError::Suspended)
    } else if s == State::Disconnected as i32 {
        Some(PcmError::Gone(libc::ENODEV))
    } else {
        None
    }
}
