//! Opening and negotiating a device: the hw parameters (access, format, channels, rate,
//! period, buffer) and sw parameters (thresholds), the poll descriptors, and the read/write
//! fallback's buffer, all set at open.
//!
//! Runs when a device is opened and on its reopener thread, never on a realtime thread: it
//! allocates (alsa-lib's configuration and parameter containers, the error texts, the
//! fallback buffer) and logs.

use alsa::pcm::{HwParams, PCM};
use alsa::poll::pollfd;
use alsa::{PollDescriptors, ValueOr};

use super::MAX_POLL_FDS;
use super::device::Device;
use super::direction::Stream;
use super::error::{OpenError, OpenErrorKind};
use super::format::{set_access, set_format};
use crate::pcm::{Access, DeviceRequest, DeviceSetup};

/// Rates named in error messages when a device refuses the one asked for.
const COMMON_RATES: [u32; 13] = [
    8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000,
    352_800, 384_000,
];

/// Which access to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AccessWish {
    /// mmap, falling back to read/write with a warning.
    MmapFirst,
    /// read/write only.
    ReadWrite,
}

impl Device {
    pub(super) fn open(
        req: &DeviceRequest,
        stream: Stream,
        wish: AccessWish,
    ) -> Result<(Device, DeviceSetup), OpenError> {
        let err = |kind| OpenError::new(req, stream, kind);
        if req.period == 0 {
            return Err(err(OpenErrorKind::Request(
                "the period must be at least 1 frame",
            )));
        }
        if req.periods < 2 {
            return Err(err(OpenErrorKind::Request(
                "the buffer must hold at least 2 periods",
            )));
        }
        if req.name.contains('\0') {
            return Err(err(OpenErrorKind::Request("the name contains a NUL byte")));
        }
        // Non-blocking: open fails at once on a busy device, and no transfer call can sleep.
        let pcm = PCM::new(&req.name, stream.direction(), true).map_err(|e| {
            err(OpenErrorKind::Open {
                errno: e.errno().abs(),
            })
        })?;
        let fmt = req.format;
        let (access, period, buffer) = {
            let hwp = HwParams::any(&pcm)
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params_any", e))?;
            let access = set_access(&hwp, wish).ok_or_else(|| err(OpenErrorKind::Access))?;
            set_format(&hwp, fmt.sample).map_err(err)?;
            if hwp.set_channels(u32::from(fmt.channels)).is_err() {
                return Err(err(OpenErrorKind::Channels {
                    wanted: fmt.channels,
                    min: hwp.get_channels_min().unwrap_or(0),
                    max: hwp.get_channels_max().unwrap_or(0),
                }));
            }
            // Only `plug` resamples; elsewhere this is a no-op.
            let _ = hwp.set_rate_resample(false);
            if hwp.set_rate(fmt.rate, ValueOr::Nearest).is_err() {
                return Err(err(OpenErrorKind::Rate {
                    wanted: fmt.rate,
                    supported: COMMON_RATES
                        .into_iter()
                        .filter(|&r| hwp.test_rate(r).is_ok())
                        .collect(),
                    min: hwp.get_rate_min().unwrap_or(0),
                    max: hwp.get_rate_max().unwrap_or(0),
                }));
            }
            let want_period = req.period as alsa::pcm::Frames;
            if hwp
                .set_period_size_near(want_period, ValueOr::Nearest)
                .is_err()
            {
                return Err(err(OpenErrorKind::Period {
                    wanted: req.period,
                    min: hwp.get_period_size_min().unwrap_or(0) as usize,
                    max: hwp.get_period_size_max().unwrap_or(0) as usize,
                }));
            }
            let got_period = hwp.get_period_size().unwrap_or(want_period);
            let want_buffer = got_period * req.periods as alsa::pcm::Frames;
            if hwp.set_buffer_size_near(want_buffer).is_err() {
                return Err(err(OpenErrorKind::Buffer {
                    wanted: want_buffer as usize,
                    min: hwp.get_buffer_size_min().unwrap_or(0) as usize,
                    max: hwp.get_buffer_size_max().unwrap_or(0) as usize,
                }));
            }
            pcm.hw_params(&hwp)
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params", e))?;
            let cur = pcm
                .hw_params_current()
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_hw_params_current", e))?;
            let period = cur.get_period_size().map_err(|e| {
                OpenError::setup(req, stream, "snd_pcm_hw_params_get_period_size", e)
            })?;
            let buffer = cur.get_buffer_size().map_err(|e| {
                OpenError::setup(req, stream, "snd_pcm_hw_params_get_buffer_size", e)
            })?;
            (access, period, buffer)
        };
        {
            let swp = pcm
                .sw_params_current()
                .map_err(|e| OpenError::setup(req, stream, "snd_pcm_sw_params_current", e))?;
            let sw =
                |r: alsa::Result<()>, step| r.map_err(|e| OpenError::setup(req, stream, step, e));
            sw(swp.set_avail_min(period), "snd_pcm_sw_params_set_avail_min")?;
            // Capture starts only through `start`; playback once the buffer is full (or
            // through `start`). Both stop when the ring over- or underruns.
            let start = match stream {
                Stream::Capture => swp.get_boundary().unwrap_or(alsa::pcm::Frames::MAX / 2),
                Stream::Playback => buffer,
            };
            sw(
                swp.set_start_threshold(start),
                "snd_pcm_sw_params_set_start_threshold",
            )?;
            sw(
                swp.set_stop_threshold(buffer),
                "snd_pcm_sw_params_set_stop_threshold",
            )?;
            sw(pcm.sw_params(&swp), "snd_pcm_sw_params")?;
        }
        let count = pcm.count();
        if count == 0 || count > MAX_POLL_FDS {
            return Err(err(OpenErrorKind::PollDescriptors { count }));
        }
        let mut fds = [pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_POLL_FDS];
        let nfds = pcm
            .fill(&mut fds[..count])
            .map_err(|e| OpenError::setup(req, stream, "snd_pcm_poll_descriptors", e))?;
        let frame_bytes = fmt.frame_bytes();
        let (period, buffer) = (period as usize, buffer as usize);
        let rw = match access {
            Access::ReadWrite => {
                let mut v = vec![0u8; buffer * frame_bytes];
                // Written through an opaque pointer, so the zeroing cannot be optimised away
                // and every page is faulted in now rather than in the steady state.
                std::hint::black_box(&mut v[..]).fill(0);
                Some(v)
            }
            _ => None,
        };
        let setup = DeviceSetup {
            name: req.name.clone(),
            format: fmt,
            period,
            buffer,
            access,
        };
        let dev = Device {
            pcm,
            fds,
            nfds,
            frame_bytes,
            period,
            buffer,
            rw,
            started: false,
        };
        Ok((dev, setup))
    }
}

/// Opens a device for `AlsaCapture`/`AlsaPlayback`, warning once if mmap was refused.
pub(super) fn open_device(
    req: &DeviceRequest,
    stream: Stream,
    wish: AccessWish,
    warn: bool,
) -> Result<(Device, DeviceSetup), OpenError> {
    let (dev, setup) = Device::open(req, stream, wish)?;
    if warn && setup.access == Access::ReadWrite {
        match wish {
            AccessWish::MmapFirst => log::warn!(
                "ALSA {stream} device \"{}\" refuses mmap access: using RW_INTERLEAVED, one \
                 extra copy per period through a buffer of {} frames",
                req.name,
                setup.buffer
            ),
            AccessWish::ReadWrite => log::warn!(
                "ALSA {stream} device \"{}\": RW_INTERLEAVED access as asked, one extra copy \
                 per period through a buffer of {} frames",
                req.name,
                setup.buffer
            ),
        }
    }
    Ok((dev, setup))
}
