//! Moving samples: [`Device::read`] lends captured frames in place, [`Device::write`] lends
//! room in the playback buffer and commits it, both through `snd_pcm_mmap_begin/commit`, or
//! through the read/write fallback's buffer allocated at open.
//!
//! Realtime contract: runs on the realtime thread; allocates, frees and locks nothing (the
//! `IO` handle taken per call is a borrow flag, not an allocation), never blocks (the PCM is
//! non-blocking). Syscalls: what alsa-lib makes for `snd_pcm_avail_update`,
//! `snd_pcm_mmap_begin/commit`, `snd_pcm_readi/writei`, `snd_pcm_state` and `snd_pcm_start`.

use super::device::{Device, pcm_err};
use crate::pcm::PcmError;

impl Device {
    /// Lends up to `frames` captured frames to `f`.
    pub(super) fn read<F: FnOnce(&[u8])>(
        &mut self,
        frames: usize,
        f: F,
    ) -> Result<usize, PcmError> {
        let (_, want) = self.transferable(frames)?;
        if want == 0 {
            return Ok(0);
        }
        let fb = self.frame_bytes;
        match self.rw.as_mut() {
            None => self.mmap(want, |area| f(area)),
            Some(buf) => {
                let want = want.min(buf.len() / fb);
                let io = self.pcm.io_bytes();
                let n = io.readi(&mut buf[..want * fb]).map_err(pcm_err)?;
                f(&buf[..n * fb]);
                Ok(n)
            }
        }
    }

    /// Lends room for up to `frames` frames to `f`, commits it, and starts playback once the
    /// buffer is full.
    pub(super) fn write<F: FnOnce(&mut [u8])>(
        &mut self,
        frames: usize,
        f: F,
    ) -> Result<usize, PcmError> {
        let (avail, want) = self.transferable(frames)?;
        if want == 0 {
            return Ok(0);
        }
        let fb = self.frame_bytes;
        let n = match self.rw.as_mut() {
            None => self.mmap(want, f)?,
            Some(buf) => {
                let want = want.min(buf.len() / fb);
                f(&mut buf[..want * fb]);
                let io = self.pcm.io_bytes();
                io.writei(&buf[..want * fb]).map_err(pcm_err)?
            }
        };
        // The start threshold as the kernel applies it to writes: mmap commits never start a
        // stream by themselves.
        if !self.started && n >= avail {
            self.start()?;
        }
        Ok(n)
    }

    /// The frames available, and how many of them a transfer of up to `frames` moves now (with
    /// the xrun check of [`avail`](Device::avail)).
    #[inline]
    fn transferable(&mut self, frames: usize) -> Result<(usize, usize), PcmError> {
        let avail = self.avail()?;
        Ok((avail, frames.min(avail)))
    }

    /// The mmap path of both directions: lends the contiguous part of the next `want` frames
    /// of the device buffer to `f` (`snd_pcm_mmap_begin`), then commits the frames lent
    /// (`snd_pcm_mmap_commit`). Returns the frames committed.
    #[inline]
    fn mmap<F: FnOnce(&mut [u8])>(&mut self, want: usize, f: F) -> Result<usize, PcmError> {
        let fb = self.frame_bytes;
        let io = self.pcm.io_bytes();
        io.mmap(want, |area: &mut [u8]| {
            let n = area.len() / fb;
            f(&mut area[..n * fb]);
            n
        })
        .map_err(pcm_err)
    }
}
