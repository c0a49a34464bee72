//! The asynchronous resampler stage used by the `resample` drift mode: a band-limited sinc
//! resampler (rubato) whose ratio the drift controller nudges every period.
//!
//! Realtime contract: `new` builds the resampler and every buffer; `process` calls rubato's
//! `process_into_buffer` on those buffers and does not allocate (the zero-allocation tests run
//! this mode too).

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// Largest relative ratio change the stage accepts (±1 %).
const MAX_RELATIVE: f64 = 1.01;
const SCALE: f32 = 1.0 / 2_147_483_648.0;

/// Interleaved i32 frames in, interleaved i32 frames out, at an adjustable ratio.
pub struct ResampleStage {
    rs: Async<f32>,
    channels: usize,
    period: usize,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl ResampleStage {
    /// A stage producing `period` frames per call for `channels` channels.
    pub fn new(channels: usize, period: usize) -> Result<ResampleStage, String> {
        let params = SincInterpolationParameters::new(64, WindowFunction::BlackmanHarris2)
            .oversampling_factor(128)
            .interpolation(SincInterpolationType::Linear)
            .f_cutoff(0.92);
        let rs = Async::<f32>::new_sinc(
            1.0,
            MAX_RELATIVE,
            &params,
            period,
            channels,
            FixedAsync::Output,
        )
        .map_err(|e| format!("cannot build the resampler: {e}"))?;
        let max_in = rs.input_frames_max();
        Ok(ResampleStage {
            rs,
            channels,
            period,
            input: vec![0.0; max_in * channels],
            output: vec![0.0; period * channels],
        })
    }

    /// Input frames the next [`process`](Self::process) consumes.
    pub fn input_frames_next(&self) -> usize {
        self.rs.input_frames_next()
    }

    /// Frames of delay the resampler adds.
    pub fn delay_frames(&self) -> usize {
        self.rs.output_delay()
    }

    /// Stores input frame `k` (of the next call's [`input_frames_next`](Self::input_frames_next)).
    #[inline]
    pub fn set_input(&mut self, k: usize, frame: &[i32]) {
        let base = k * self.channels;
        for (d, &s) in self.input[base..base + self.channels].iter_mut().zip(frame) {
            *d = s as f32 * SCALE;
        }
    }

    /// Sets the ratio for the next call: `input_per_output` input frames per output frame.
    /// Call before [`input_frames_next`](Self::input_frames_next).
    pub fn set_ratio(&mut self, input_per_output: f64) {
        let rel = (1.0 / input_per_output).clamp(1.0 / MAX_RELATIVE, MAX_RELATIVE);
        if let Some(adj) = self.rs.as_adjustable() {
            let _ = adj.set_resample_ratio_relative(rel, true);
        }
    }

    /// Resamples the stored input into `out` (`period × channels` left-justified samples).
    pub fn process(&mut self, out: &mut [i32]) {
        let n_in = self.rs.input_frames_next();
        let ch = self.channels;
        let ok = match (
            InterleavedSlice::new(&self.input[..n_in * ch], ch, n_in),
            InterleavedSlice::new_mut(&mut self.output[..], ch, self.period),
        ) {
            (Ok(i), Ok(mut o)) => self.rs.process_into_buffer(&i, &mut o, None).is_ok(),
            _ => false,
        };
        if !ok {
            out.fill(0);
            return;
        }
        for (o, &s) in out.iter_mut().zip(self.output.iter()) {
            let v = (s as f64 * 2_147_483_648.0).round();
            *o = v.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
        }
    }
}
