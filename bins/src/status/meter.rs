//! The level meter: [`Meter`] keeps the peak and the RMS level of each channel of the last
//! period, written by the realtime thread and read by the status servers.
//!
//! Realtime contract: [`Meter::measure`] runs on the realtime threads, once per period. It
//! reads the period's samples, keeps the peaks and sums of squares in arrays on the stack and
//! stores them into atomics (relaxed): it allocates, frees and locks nothing, makes no syscall
//! and never blocks. [`Meter::peaks_db`] and [`Meter::rms_db`] run on the status servers'
//! threads and allocate their results.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Channels the meter shows.
pub const METER_CHANNELS: usize = 8;

/// Peak and RMS levels of the audio passing through, per channel, as the realtime thread saw
/// them in its last period (f32 bits, linear 0..=1 of full scale).
#[derive(Debug, Default)]
pub struct Meter {
    peaks: [AtomicU32; METER_CHANNELS],
    rms: [AtomicU32; METER_CHANNELS],
}

/// dBFS of a linear level (−120 for silence).
fn db(v: f64) -> f64 {
    if v > 0.0 {
        (20.0 * v.log10()).max(-120.0)
    } else {
        -120.0
    }
}

impl Meter {
    /// Measures one period of interleaved samples (realtime-safe: no allocation, no lock).
    #[inline]
    pub fn measure(&self, format: engine::StreamFormat, bytes: &[u8]) {
        let ch = format.channels as usize;
        let sb = format.sample.bytes();
        let mut peak = [0i64; METER_CHANNELS];
        let mut squares = [0f64; METER_CHANNELS];
        let mut frames = 0usize;
        for frame in bytes.chunks_exact(format.frame_bytes()) {
            frames += 1;
            for (c, (p, sq)) in peak
                .iter_mut()
                .zip(squares.iter_mut())
                .enumerate()
                .take(ch.min(METER_CHANNELS))
            {
                let s = format.sample.decode(&frame[c * sb..]) as i64;
                let v = s.abs();
                if v > *p {
                    *p = v;
                }
                let x = s as f64 / 2_147_483_648.0;
                *sq += x * x;
            }
        }
        for (a, p) in self.peaks.iter().zip(peak) {
            a.store((p as f32 / 2_147_483_648.0).to_bits(), Relaxed);
        }
        let n = frames.max(1) as f64;
        for (a, sq) in self.rms.iter().zip(squares) {
            a.store(((sq / n).sqrt() as f32).to_bits(), Relaxed);
        }
    }

    /// Peaks in dBFS (−120 for silence).
    pub fn peaks_db(&self, channels: usize) -> Vec<f64> {
        Self::levels_db(&self.peaks, channels)
    }

    /// RMS levels in dBFS (−120 for silence; a full-scale sine reads −3).
    pub fn rms_db(&self, channels: usize) -> Vec<f64> {
        Self::levels_db(&self.rms, channels)
    }

    fn levels_db(levels: &[AtomicU32; METER_CHANNELS], channels: usize) -> Vec<f64> {
        levels
            .iter()
            .take(channels.min(METER_CHANNELS))
            .map(|a| db(f32::from_bits(a.load(Relaxed)) as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::format::{SampleFormat, StreamFormat};

    #[test]
    fn the_meter_reads_peaks_per_channel() {
        let m = Meter::default();
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let mut bytes = Vec::new();
        for i in 0..100i16 {
            bytes.extend_from_slice(&(i * 100).to_le_bytes());
            bytes.extend_from_slice(&0i16.to_le_bytes());
        }
        m.measure(f, &bytes);
        let p = m.peaks_db(2);
        assert!(
            (p[0] - 20.0 * (9900.0f64 / 32768.0).log10()).abs() < 0.01,
            "{p:?}"
        );
        assert_eq!(p[1], -120.0);
        assert_eq!(m.rms_db(2)[1], -120.0);
    }

    #[test]
    fn the_meter_reads_rms_per_channel() {
        let m = Meter::default();
        let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        // A full-scale square wave on channel 1 (RMS 0 dBFS), a sine at half scale on
        // channel 2 (RMS −6.02 − 3.01 dBFS).
        let mut bytes = Vec::new();
        for i in 0..480 {
            let sq: i16 = if (i / 24) % 2 == 0 { 32767 } else { -32767 };
            let sine = (16384.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin()) as i16;
            bytes.extend_from_slice(&sq.to_le_bytes());
            bytes.extend_from_slice(&sine.to_le_bytes());
        }
        m.measure(f, &bytes);
        let r = m.rms_db(2);
        assert!(r[0].abs() < 0.01, "{r:?}");
        assert!((r[1] + 9.03).abs() < 0.05, "{r:?}");
        assert!(m.peaks_db(2)[0] > -0.01);
    }
}
