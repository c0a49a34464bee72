//! The daemons' audio devices, ALSA, virtual or (for playback) an output that is not a sound
//! card, by name: [`AnyCapture`], [`AnyPlayback`], opening them, and the sample formats to try
//! for playback.

use super::options::{AudioOptions, PlaybackFormat, ReceiveOptions};
use crate::pcm::Playback;
use crate::pcm::alsa::{AlsaCapture, AlsaPlayback};
use crate::pcm::stream_out::{self, StreamPlayback};
use crate::pcm::virtual_dev::{self, Sink, VirtualCapture, VirtualPlayback};
use engine::format::SampleFormat;
use engine::receiver::DriftMode;

/// Opens a capture device by name.
pub enum AnyCapture {
    /// ALSA.
    Alsa(Box<AlsaCapture>),
    /// Virtual.
    Virtual(Box<VirtualCapture>),
}

pub(crate) fn open_capture(a: &AudioOptions) -> Result<AnyCapture, String> {
    let req = a.request();
    if stream_out::parse_name(&a.device).is_some() {
        return Err(format!(
            "{:?} is an output (Snapcast, a FIFO or stdout): a sender captures from an ALSA \
             device or `virtual`; give it to `netaudio recv --device`",
            a.device
        ));
    }
    if virtual_dev::parse_name(&a.device).is_some() {
        Ok(AnyCapture::Virtual(Box::new(VirtualCapture::open(&req)?)))
    } else {
        Ok(AnyCapture::Alsa(Box::new(
            AlsaCapture::open(&req).map_err(|e| e.to_string())?,
        )))
    }
}

/// The sample formats to try for the playback device, best first.
pub(crate) fn playback_candidates(
    stream: SampleFormat,
    r: &ReceiveOptions,
    is_virtual: bool,
) -> Vec<SampleFormat> {
    match r.playback_format {
        PlaybackFormat::Fixed(f) => vec![f],
        PlaybackFormat::Auto if r.drift_mode == DriftMode::Resample && !is_virtual => {
            let mut v: Vec<SampleFormat> = [SampleFormat::S32Le, SampleFormat::S24_3Le]
                .into_iter()
                .filter(|f| f.bytes() > stream.bytes())
                .collect();
            v.push(stream);
            v
        }
        PlaybackFormat::Auto => vec![stream],
    }
}

/// Opens a playback device by name.
pub enum AnyPlayback {
    /// ALSA.
    Alsa(Box<AlsaPlayback>),
    /// Virtual.
    Virtual(Box<VirtualPlayback>),
    /// Snapcast, a FIFO or stdout.
    Stream(Box<StreamPlayback>),
}

impl AnyPlayback {
    pub(crate) fn setup(&self) -> crate::pcm::DeviceSetup {
        match self {
            AnyPlayback::Alsa(d) => d.setup().clone(),
            AnyPlayback::Virtual(d) => d.setup().clone(),
            AnyPlayback::Stream(d) => d.setup().clone(),
        }
    }

    /// The counters of an output that is not a sound card.
    pub(crate) fn output_stats(&self) -> Option<std::sync::Arc<stream_out::OutputStats>> {
        match self {
            AnyPlayback::Stream(d) => Some(d.stats()),
            _ => None,
        }
    }
}

/// Opens the playback device in the first of `formats` (sample formats, best first) it
/// takes; the error names the last one tried.
pub(crate) fn open_playback(
    a: &AudioOptions,
    sink: Option<Sink>,
    formats: &[SampleFormat],
) -> Result<AnyPlayback, String> {
    let mut req = a.request();
    let mut last = String::from("no sample format to try");
    if stream_out::parse_name(&a.device).is_some() {
        // An output decides its sample format from its reader's.
        return Ok(AnyPlayback::Stream(Box::new(StreamPlayback::open(&req)?)));
    }
    if virtual_dev::parse_name(&a.device).is_some() {
        req.format.sample = formats.first().copied().unwrap_or(a.format.sample);
        return Ok(AnyPlayback::Virtual(Box::new(VirtualPlayback::open(
            &req, sink,
        )?)));
    }
    for (i, &f) in formats.iter().enumerate() {
        req.format.sample = f;
        match AlsaPlayback::open(&req) {
            Ok(d) => return Ok(AnyPlayback::Alsa(Box::new(d))),
            Err(e) => {
                if i + 1 < formats.len() {
                    log::debug!(
                        "{}: {} not taken ({e}); trying the next format",
                        a.device,
                        f.name()
                    );
                }
                last = e.to_string();
            }
        }
    }
    Err(last)
}
