//! The level meter: [`Meter`] keeps the peak of each channel of the last period, written by
//! the realtime thread and read by the status server.
//!
//! Realtime contract: [`Meter::measure`] runs on the realtime threads, once per period. It
//! reads the period's samples, keeps the peaks in an array on the stack and stores them into
//! atomics (relaxed): it allocates, frees and locks nothing, makes no syscall and never blocks.
//! [`Meter::peaks_db`] runs on the status server's thread and allocates its result.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Channels the meter shows.
pub const METER_CHANNELS: usize = 8;

/// Peak levels of the audio passing through, per channel, as the realtime thread saw them in
/// its last period (f32 bits, linear 0..=1).
#[derive(Debug, Default)]
pub struct Meter {
    peaks: [AtomicU32; METER_CHANNELS],
}

impl Meter {
    /// Measures one period of interleaved samples (realtime-safe: no allocation, no lock).
    #[inline]
    pub fn measure(&self, format: engine::StreamFormat, bytes: &[u8]) {
        let ch = format.channels as usize;
        let sb = format.sample.bytes();
        let mut peak = [0i64; METER_CHANNELS];
        for frame in bytes.chunks_exact(format.frame_bytes()) {
            for (c, p) in peak.iter_mut().enumerate().take(ch.min(METER_CHANNELS)) {
                let v = (format.sample.decode(&frame[c * sb..]) as i64).abs();
                if v > *p {
                    *p = v;
                }
            }
        }
        for (a, p) in self.peaks.iter().zip(peak) {
            a.store((p as f32 / 2_147_483_648.0).to_bits(), Relaxed);
        }
    }

    /// Peaks in dBFS (−120 for silence).
    pub fn peaks_db(&self, channels: usize) -> Vec<f64> {
        self.peaks
            .iter()
            .take(channels.min(METER_CHANNELS))
            .map(|a| {
                let v = f32::from_bits(a.load(Relaxed)) as f64;
                if v > 0.0 {
                    (20.0 * v.log10()).max(-120.0)
                } else {
                    -120.0
                }
            })
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
    }
}
