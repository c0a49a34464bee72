//! netaudio's sample formats and access kinds in ALSA's terms: the exact ALSA format of each
//! sample format, and the hw-parameter calls that set format and access (or say what the
//! device offers instead).
//!
//! Used at open only (on the opening thread or the reopener thread), never on a realtime
//! thread.

use alsa::pcm::{Format, HwParams};
use engine::format::SampleFormat;

use super::error::OpenErrorKind;
use super::open::AccessWish;
use crate::pcm::Access;

/// The ALSA format of a sample format (exact: no conversion is ever asked for).
fn alsa_format(s: SampleFormat) -> Format {
    match s {
        SampleFormat::S16Le => Format::S16LE,
        SampleFormat::S24_3Le => Format::S243LE,
        SampleFormat::S32Le => Format::S32LE,
    }
}

/// Sets the access: mmap interleaved if wished and offered, else read/write interleaved.
pub(super) fn set_access(hwp: &HwParams<'_>, wish: AccessWish) -> Option<Access> {
    if wish == AccessWish::MmapFirst && hwp.set_access(alsa::pcm::Access::MMapInterleaved).is_ok() {
        return Some(Access::Mmap);
    }
    hwp.set_access(alsa::pcm::Access::RWInterleaved)
        .ok()
        .map(|_| Access::ReadWrite)
}

/// Sets the sample format exactly, or says what the device offers.
pub(super) fn set_format(hwp: &HwParams<'_>, s: SampleFormat) -> Result<(), OpenErrorKind> {
    if hwp.set_format(alsa_format(s)).is_ok() {
        return Ok(());
    }
    Err(OpenErrorKind::Format {
        wanted: s,
        supported: SampleFormat::ALL
            .into_iter()
            .filter(|&f| hwp.test_format(alsa_format(f)).is_ok())
            .collect(),
        offered: Format::all()
            .iter()
            .filter(|&&f| f != Format::Unknown && hwp.test_format(f).is_ok())
            .map(|f| f.to_string())
            .collect(),
    })
}
