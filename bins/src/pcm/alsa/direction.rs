//! Capture or playback: [`Stream`], the value that names a device's direction in messages and
//! at open, and the marker types [`CaptureKind`] and [`PlaybackKind`] that give
//! [`AlsaPcm`](super::AlsaPcm) its direction at compile time.
//!
//! Nothing here runs on a realtime thread beyond reading constants.

use alsa::Direction;
use core::fmt;

/// Capture or playback, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// A capture device.
    Capture,
    /// A playback device.
    Playback,
}

impl Stream {
    pub(super) fn direction(self) -> Direction {
        match self {
            Stream::Capture => Direction::Capture,
            Stream::Playback => Direction::Playback,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Capture => "capture",
            Stream::Playback => "playback",
        })
    }
}

/// The direction of an [`AlsaPcm`](super::AlsaPcm): [`CaptureKind`] or [`PlaybackKind`].
pub trait StreamKind {
    /// Capture or playback.
    const STREAM: Stream;
    /// The name of the device type, for `Debug`.
    const TYPE_NAME: &'static str;
}

/// Marks an [`AlsaPcm`](super::AlsaPcm) as a capture device ([`AlsaCapture`](super::AlsaCapture)).
#[derive(Debug)]
pub enum CaptureKind {}

/// Marks an [`AlsaPcm`](super::AlsaPcm) as a playback device
/// ([`AlsaPlayback`](super::AlsaPlayback)).
#[derive(Debug)]
pub enum PlaybackKind {}

impl StreamKind for CaptureKind {
    const STREAM: Stream = Stream::Capture;
    const TYPE_NAME: &'static str = "AlsaCapture";
}

impl StreamKind for PlaybackKind {
    const STREAM: Stream = Stream::Playback;
    const TYPE_NAME: &'static str = "AlsaPlayback";
}
