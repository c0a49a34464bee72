//! Why an ALSA device could not be opened: [`OpenError`] and [`OpenErrorKind`], and their
//! messages, each naming the setting that fixes it.
//!
//! Open errors are made and formatted at open and on the reopener thread only, never on a
//! realtime thread (they allocate).

use core::fmt;

use engine::format::SampleFormat;

use super::MAX_POLL_FDS;
use super::direction::Stream;
use crate::pcm::{DeviceRequest, PcmError, errno_text};

/// Why a device could not be opened as requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenError {
    /// The ALSA device name as given.
    pub device: String,
    /// Capture or playback.
    pub stream: Stream,
    /// What was wrong.
    pub kind: OpenErrorKind,
}

/// What was wrong when opening a device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The request itself is unusable (e.g. a period of 0 frames).
    Request(&'static str),
    /// `snd_pcm_open` failed: no such device, busy, no permission...
    Open {
        /// The errno.
        errno: i32,
    },
    /// Neither `MMAP_INTERLEAVED` nor `RW_INTERLEAVED` access is offered.
    Access,
    /// The sample format is not offered.
    Format {
        /// Format asked for.
        wanted: SampleFormat,
        /// Those of netaudio's formats the device offers.
        supported: Vec<SampleFormat>,
        /// Every format the device offers (ALSA names), for when none of ours is among them.
        offered: Vec<String>,
    },
    /// The channel count is not offered.
    Channels {
        /// Channels asked for.
        wanted: u8,
        /// Fewest the device takes.
        min: u32,
        /// Most the device takes.
        max: u32,
    },
    /// The rate is not offered.
    Rate {
        /// Rate asked for.
        wanted: u32,
        /// Common rates the device offers.
        supported: Vec<u32>,
        /// Lowest rate offered.
        min: u32,
        /// Highest rate offered.
        max: u32,
    },
    /// No period size near the one asked for is possible.
    Period {
        /// Frames per period asked for.
        wanted: usize,
        /// Smallest period, frames.
        min: usize,
        /// Largest period, frames.
        max: usize,
    },
    /// No buffer near periods × period is possible.
    Buffer {
        /// Frames asked for.
        wanted: usize,
        /// Smallest buffer, frames.
        min: usize,
        /// Largest buffer, frames.
        max: usize,
    },
    /// The device needs more poll descriptors than [`MAX_POLL_FDS`].
    PollDescriptors {
        /// How many it needs.
        count: usize,
    },
    /// Another set-up step failed.
    Setup {
        /// The alsa-lib function.
        step: &'static str,
        /// The errno.
        errno: i32,
    },
}

impl OpenError {
    pub(super) fn new(req: &DeviceRequest, stream: Stream, kind: OpenErrorKind) -> OpenError {
        OpenError {
            device: req.name.clone(),
            stream,
            kind,
        }
    }

    pub(super) fn setup(
        req: &DeviceRequest,
        stream: Stream,
        step: &'static str,
        e: alsa::Error,
    ) -> Self {
        Self::new(
            req,
            stream,
            OpenErrorKind::Setup {
                step,
                errno: e.errno().abs(),
            },
        )
    }

    /// The realtime error this failure stands for.
    pub fn pcm_error(&self) -> PcmError {
        match self.kind {
            OpenErrorKind::Open { errno } => match PcmError::from_errno(errno) {
                // A name that no longer resolves (USB device unplugged) is a device gone.
                PcmError::Other(libc::ENOENT) => PcmError::Gone(libc::ENOENT),
                e => e,
            },
            OpenErrorKind::Setup { errno, .. } => PcmError::from_errno(errno),
            _ => PcmError::Other(libc::EINVAL),
        }
    }
}

/// `a, b, c`.
fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `plug:'NAME'`: the same device through alsa-lib's converting plug.
fn plug_name(dev: &str) -> String {
    format!("plug:'{dev}'")
}

fn range<T: fmt::Display + PartialEq>(min: T, max: T) -> String {
    if min == max {
        format!("{min}")
    } else {
        format!("{min}–{max}")
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = &self.device;
        let s = self.stream;
        match &self.kind {
            OpenErrorKind::Request(what) => {
                write!(f, "cannot open ALSA {s} device \"{dev}\": {what}")
            }
            OpenErrorKind::Open { errno } => {
                write!(
                    f,
                    "cannot open ALSA {s} device \"{dev}\": {}; ",
                    errno_text(*errno)
                )?;
                match *errno {
                    libc::EBUSY => write!(
                        f,
                        "another program is using it: stop that program, or share the device \
                         through {}",
                        if s == Stream::Capture {
                            "dsnoop"
                        } else {
                            "dmix"
                        }
                    ),
                    libc::EACCES | libc::EPERM => {
                        f.write_str("no permission: add the user to group audio")
                    }
                    _ => f.write_str(
                        "check that it is plugged in and its name is right (`netaudio devices` \
                         or `arecord -L` lists the names), then set audio.device to one of them",
                    ),
                }
            }
            OpenErrorKind::Access => write!(
                f,
                "ALSA {s} device \"{dev}\" offers neither MMAP_INTERLEAVED nor RW_INTERLEAVED \
                 access; use \"{}\" so alsa-lib interleaves",
                plug_name(dev)
            ),
            OpenErrorKind::Format {
                wanted,
                supported,
                offered,
            } => {
                if supported.is_empty() {
                    write!(
                        f,
                        "ALSA {s} device \"{dev}\" does not support sample format {wanted}: it \
                         offers none of S16_LE, S24_3LE, S32_LE (supported: {}); use \"{}\" so \
                         alsa-lib converts, or another device",
                        join(offered),
                        plug_name(dev)
                    )
                } else {
                    write!(
                        f,
                        "ALSA {s} device \"{dev}\" does not support sample format {wanted} \
                         (supported: {}); set audio.format to one of them",
                        join(supported)
                    )
                }
            }
            OpenErrorKind::Channels { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" does not support {wanted} channels (supported: {}); \
                 set audio.channels accordingly",
                range(min, max)
            ),
            OpenErrorKind::Rate {
                wanted,
                supported,
                min,
                max,
            } => {
                write!(f, "ALSA {s} device \"{dev}\" does not support {wanted} Hz ")?;
                if supported.is_empty() {
                    write!(f, "(supported: {} Hz)", range(min, max))?;
                } else {
                    write!(f, "(supported: {})", join(supported))?;
                }
                f.write_str("; set audio.rate to one of them")
            }
            OpenErrorKind::Period { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" cannot use periods of {wanted} frames (supported: {} \
                 frames); set audio.period accordingly",
                range(min, max)
            ),
            OpenErrorKind::Buffer { wanted, min, max } => write!(
                f,
                "ALSA {s} device \"{dev}\" cannot hold a buffer of {wanted} frames (supported: \
                 {} frames); set audio.periods or audio.period accordingly",
                range(min, max)
            ),
            OpenErrorKind::PollDescriptors { count } => write!(
                f,
                "ALSA {s} device \"{dev}\" needs {count} poll descriptors, more than the \
                 {MAX_POLL_FDS} netaudio handles; use a simpler device (hw: or plughw:)"
            ),
            OpenErrorKind::Setup { step, errno } => write!(
                f,
                "ALSA {s} device \"{dev}\" refused its set-up in {step}: {}; \
                 try another audio.period/audio.periods, or \"{}\"",
                errno_text(*errno),
                plug_name(dev)
            ),
        }
    }
}

impl std::error::Error for OpenError {}
