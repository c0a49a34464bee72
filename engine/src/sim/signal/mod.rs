//! Test signals and the analyzer that checks what was played against what was captured.
//!
//! **Frame-index ramps.** Channel 0 carries the capture device's frame counter `n mod 65536` in
//! its top 16 bits, channel 1 the same counter offset by half a lap (`n + 32768`), further
//! channels other offsets; bits below the top 16 (S24, S32) carry a hash of `n`, the same on
//! every channel. Every frame therefore names its own position, bit-exactly. Because the two
//! ramps wrap half a lap apart, at every position one of them is far from its wrap, so frames
//! that were interpolated (a slip crossfade, a resampler) still decode to a fractional position.
//!
//! **Sine.** An analog-like tone, for listening and for resampling modes.
//!
//! **Two tones.** Two sines at a quarter of full scale each (the sum stays within half scale),
//! by default at 18 and 19 kHz: near the top of the band, where a resampler's aliases and
//! images and the two tones' intermodulation products land in the measured band, apart from
//! both tones.
//!
//! The [`Analyzer`] looks at played samples only — never at the engine's counters — and
//! classifies every frame: in sync (the continuation of the previous one), or part of a gap.
//! It also measures end-to-end latency from the capture times the simulator records.
//!
//! A source that stops cleanly (a sender's clean stop, [`Analyzer::source_ended`]) is the one
//! thing the samples cannot tell: once the last frame sent has played, what follows (the fade,
//! silence) is counted like the silence before the first frame, and the next stream is locked
//! onto afresh.

mod analyzer;
mod capture;
mod source;

pub use analyzer::{Analyzer, AnalyzerCounts, GapRecord, StepTolerance};
pub use capture::{CaptureHistory, CaptureTimes, LinearCapture, Unanchored};
pub use source::{
    DEFAULT_SINE_HZ, DEFAULT_TWO_TONE_HZ, MIN_TONE_SPACING_HZ, SOURCE_FORMS, Source, SourceKind,
    ramp_sample,
};
