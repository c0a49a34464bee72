//! End-to-end latency across two machines, from one stereo capture.
//!
//! The sender's interface plays a test signal: a pilot sine whose phase jumps by a quarter
//! turn once per marker interval (1 s by default). A Y-cable feeds it both into the sender's
//! input (what `netaudio send` streams) and into the receiver's monitor input, **left**; the
//! receiver's output goes into the same monitor input, **right**. Both channels are then
//! sampled by one converter on one clock, so the distance between a marker on the left and the
//! same marker on the right is the end-to-end latency (sender's analog input to receiver's
//! analog output), whatever the two machines' clocks do.
//!
//! Each channel goes through a [`PilotAnalyzer`]: a marker is a discontinuity of a few frames.
//! On the right channel, a discontinuity that sits one latency after a left-channel marker is
//! that marker arriving; every other one is a gap (a silence, a fade, a jump).

use crate::pi::PilotAnalyzer;

/// Discontinuities this short (frames) can be markers; a longer one is always a gap.
pub const MARKER_MAX_FRAMES: u64 = 16;
/// The same on the played channel: a band-limited path (the receiver's resampler, 64 taps;
/// a converter's own filter) spreads a marker over its length. A gap is a packet or more of
/// concealment plus its fades, and must also sit one latency after a marker to be taken for
/// one.
pub const PLAYED_MARKER_MAX_FRAMES: u64 = MARKER_MAX_FRAMES + 64;
/// How far (frames) a marker may sit from the latency tracked so far and still be one.
pub const MATCH_TOLERANCE_FRAMES: u64 = 48;

/// The test signal: interleaved stereo S16, both channels equal.
#[derive(Clone, Debug)]
pub struct MarkerSignal {
    step: f64,
    interval: u64,
    amplitude: f64,
    frame: u64,
}

impl MarkerSignal {
    /// A pilot of `pilot_hz` at `rate` with a marker every `interval_s` seconds, peaking at
    /// `amplitude` (0..1 of full scale).
    pub fn new(rate: u32, pilot_hz: f64, interval_s: f64, amplitude: f64) -> MarkerSignal {
        MarkerSignal {
            step: std::f64::consts::TAU * pilot_hz / rate as f64,
            interval: ((interval_s * rate as f64).round() as u64).max(1),
            amplitude: amplitude.clamp(0.0, 1.0) * 32_767.0,
            frame: 0,
        }
    }

    /// Frames between markers.
    pub fn interval_frames(&self) -> u64 {
        self.interval
    }

    /// Appends the next `frames` frames to `out`.
    pub fn fill(&mut self, frames: usize, out: &mut Vec<u8>) {
        out.reserve(frames * 4);
        for _ in 0..frames {
            let n = self.frame;
            // The phase counts within the interval, so it never loses precision over hours.
            let within = (n % self.interval) as f64;
            let marker = (n / self.interval) % 4;
            let phase = self.step * within + marker as f64 * std::f64::consts::FRAC_PI_2;
            let v = (self.amplitude * phase.sin()).round() as i16;
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            self.frame += 1;
        }
    }
}

/// What the two channels showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyReport {
    /// End-to-end latency of every marker that arrived, ms, in time order, with its time (s).
    pub samples: Vec<(f64, f64)>,
    /// Discontinuities on the played channel that are not markers: the gaps.
    pub gaps: Vec<(u64, u64)>,
    /// Left-channel discontinuities that are not on the marker cadence: the reference itself
    /// broke (the player underran, a cable moved): the run's figures are then suspect.
    pub reference_breaks: u64,
    /// Markers sent (seen on the left).
    pub markers: u64,
}

impl LatencyReport {
    /// The `q` quantile (0..=1) of the latency samples, ms.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.samples.iter().map(|s| s.1).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }
}

/// The reference (left) and played (right) channels of one capture.
#[derive(Clone, Debug)]
pub struct TwoChannelMonitor {
    /// The sender's test signal.
    pub reference: PilotAnalyzer,
    /// The receiver's output.
    pub played: PilotAnalyzer,
    rate: u32,
    interval: u64,
}

impl TwoChannelMonitor {
    /// For a [`MarkerSignal`] of `pilot_hz` with markers every `interval_frames` at `rate`.
    pub fn new(pilot_hz: f64, rate: u32, interval_frames: u64) -> TwoChannelMonitor {
        TwoChannelMonitor {
            reference: PilotAnalyzer::new(pilot_hz, rate),
            played: PilotAnalyzer::new(pilot_hz, rate),
            rate,

            interval: interval_frames.max(1),
        }
    }

    /// Feeds interleaved stereo S16 (left = reference, right = played).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.reference.feed_channel(bytes, 2, 0);
        self.played.feed_channel(bytes, 2, 1);
    }

    /// Matches the channels' discontinuities.
    pub fn report(&self) -> LatencyReport {
        let rate = self.rate as f64;
        // Markers on the left: short discontinuities on the cadence of the first one.
        let mut markers: Vec<u64> = Vec::new();
        let mut reference_breaks = 0;
        for &(at, len) in &self.reference.events {
            let on_cadence = match markers.first() {
                None => true,
                Some(&first) => {
                    let off = (at.abs_diff(first)) % self.interval;
                    off.min(self.interval - off) <= MARKER_MAX_FRAMES
                }
            };
            if len <= MARKER_MAX_FRAMES && on_cadence {
                markers.push(at);
            } else {
                reference_breaks += 1;
            }
        }
        // On the played side, a marker through a band-limited path rings: the pilot breaks,
        // settles for a moment and breaks again. Breaks closer than that are one event.
        let mut played: Vec<(u64, u64)> = Vec::with_capacity(self.played.events.len());
        for &(at, len) in &self.played.events {
            match played.last_mut() {
                Some((a, l)) if at <= *a + *l + PLAYED_MARKER_MAX_FRAMES => {
                    *l = (at + len).max(*a + *l) - *a;
                }
                _ => played.push((at, len)),
            }
        }
        let lag_of = |at: u64| -> Option<u64> {
            let i = markers.partition_point(|&m| m <= at);
            (i > 0).then(|| at - markers[i - 1])
        };
        // The latency: the most common lag of short right-channel discontinuities to the
        // marker before them (0.5 ms bins), so a gap before the first marker cannot set it.
        let bin = (self.rate as u64 / 2000).max(1);
        let mut bins: Vec<(u64, u32)> = Vec::new();
        for &(at, len) in &played {
            if len > PLAYED_MARKER_MAX_FRAMES {
                continue;
            }
            if let Some(lag) = lag_of(at) {
                let b = lag / bin;
                match bins.iter_mut().find(|e| e.0 == b) {
                    Some(e) => e.1 += 1,
                    None => bins.push((b, 1)),
                }
            }
        }
        let mut estimate = bins
            .iter()
            .max_by_key(|e| (e.1, u64::MAX - e.0))
            .map(|e| e.0 * bin + bin / 2);
        let mut samples = Vec::new();
        let mut gaps = Vec::new();
        for &(at, len) in &played {
            let lag = lag_of(at);
            let is_marker = len <= PLAYED_MARKER_MAX_FRAMES
                && matches!((lag, estimate), (Some(l), Some(e)) if l.abs_diff(e) <= MATCH_TOLERANCE_FRAMES + bin);
            match (is_marker, lag) {
                (true, Some(l)) => {
                    // Follow slow changes (drift correction, a slip).
                    estimate = Some(l);
                    samples.push((at as f64 / rate, l as f64 * 1000.0 / rate));
                }
                _ => gaps.push((at, len)),
            }
        }
        LatencyReport {
            samples,
            gaps,
            reference_breaks,
            markers: markers.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    /// Left: the signal from frame 0. Right: `silence` frames of nothing, then the signal,
    /// through `shape` (which may cut holes).
    fn capture(seconds: f64, delay: usize, mut shape: impl FnMut(usize, &mut i16)) -> Vec<u8> {
        let n = (seconds * RATE as f64) as usize;
        let mut sig = MarkerSignal::new(RATE, 997.0, 1.0, 0.5);
        let mut left = Vec::new();
        sig.fill(n, &mut left);
        let mut out = Vec::with_capacity(n * 4);
        for i in 0..n {
            let l = i16::from_le_bytes([left[4 * i], left[4 * i + 1]]);
            let mut r = if i >= delay {
                i16::from_le_bytes([left[4 * (i - delay)], left[4 * (i - delay) + 1]])
            } else {
                0
            };
            shape(i, &mut r);
            out.extend_from_slice(&l.to_le_bytes());
            out.extend_from_slice(&r.to_le_bytes());
        }
        out
    }

    #[test]
    fn the_latency_is_the_distance_between_the_markers() {
        let delay = 1_152; // 24 ms
        let cap = capture(10.5, delay, |_, _| {});
        let mut m = TwoChannelMonitor::new(997.0, RATE, RATE as u64);
        // Fed in odd-sized pieces, as a pipe delivers.
        for piece in cap.chunks(4 * 1_001) {
            m.feed(piece);
        }
        let r = m.report();
        assert_eq!(r.gaps, vec![], "{r:?}");
        assert_eq!(r.reference_breaks, 0);
        assert_eq!(r.markers, 10, "{r:?}");
        assert!(r.samples.len() >= 9, "{r:?}");
        for &(_, ms) in &r.samples {
            assert!((ms - 24.0).abs() < 0.1, "{r:?}");
        }
        assert!((r.quantile(0.5).unwrap() - 24.0).abs() < 0.1);
    }

    #[test]
    fn holes_and_jumps_on_the_played_side_are_gaps_and_markers_still_count() {
        let delay = 2_000;
        // A 10 ms hole at 3.3 s and a 1-frame jump at 6.6 s (a slip without crossfade).
        let cap = capture(9.5, delay, |i, r| {
            if (158_400..158_880).contains(&i) {
                *r = 0;
            }
            if i == 316_800 {
                *r = r.saturating_add(9_000);
            }
        });
        let mut m = TwoChannelMonitor::new(997.0, RATE, RATE as u64);
        m.feed(&cap);
        let r = m.report();
        assert_eq!(r.gaps.len(), 2, "{r:?}");
        assert!(r.gaps[0].0.abs_diff(158_400) < 4, "{r:?}");
        assert!(r.gaps[0].1 >= 400, "{r:?}");
        assert!(r.gaps[1].0.abs_diff(316_800) < 4, "{r:?}");
        assert!(r.samples.len() >= 8, "{r:?}");
        assert!(
            r.samples.iter().all(|s| (s.1 - 2_000.0 / 48.0).abs() < 0.1),
            "{r:?}"
        );
    }

    #[test]
    fn a_latency_that_changes_slowly_is_followed() {
        // The right channel is the left, resampled 1000 ppm slow: the latency grows 1 ms/s.
        let n = 8 * RATE as usize;
        let mut sig = MarkerSignal::new(RATE, 997.0, 1.0, 0.5);
        let mut left = Vec::new();
        sig.fill(n, &mut left);
        let l = |i: usize| i16::from_le_bytes([left[4 * i], left[4 * i + 1]]) as f64;
        let mut cap = Vec::new();
        for i in 0..n {
            let src = i as f64 * (1.0 - 1e-3) - 960.0;
            let r = if src >= 0.0 {
                let k = src.floor() as usize;
                let f = src - k as f64;
                (l(k) * (1.0 - f) + l((k + 1).min(n - 1)) * f).round() as i16
            } else {
                0
            };
            cap.extend_from_slice(&(l(i) as i16).to_le_bytes());
            cap.extend_from_slice(&r.to_le_bytes());
        }
        let mut m = TwoChannelMonitor::new(997.0, RATE, RATE as u64);
        m.feed(&cap);
        let r = m.report();
        assert_eq!(r.gaps, vec![], "{r:?}");
        assert!(r.samples.len() >= 6, "{r:?}");
        let first = r.samples.first().unwrap().1;
        let last = r.samples.last().unwrap().1;
        assert!(last - first > 4.0, "{r:?}");
    }

    #[test]
    fn markers_through_the_receivers_resampler_are_markers() {
        // The right channel is the left, 20 ms later, through the receiver's band-limited
        // resampler at a step of 1.0001: each marker's phase jump rings over the filter's
        // taps, and the latency shrinks by 0.1 ms a second.
        use engine::format::SampleFormat;
        use engine::resample::ResampleStage;
        let n = 8 * RATE as usize;
        let mut sig = MarkerSignal::new(RATE, 997.0, 1.0, 0.5);
        let mut left = Vec::new();
        sig.fill(n, &mut left);
        let l = |i: usize| (i16::from_le_bytes([left[4 * i], left[4 * i + 1]]) as i32) << 16;
        let mut rs = ResampleStage::new(1, SampleFormat::S16Le, SampleFormat::S16Le, 256).unwrap();
        let mut right = vec![0i32; 256];
        let mut cap = Vec::new();
        let (mut taken, mut i) = (0, 0);
        while i + 256 <= n {
            let m = rs.inputs_needed(256, 1.0001);
            for k in 0..m {
                let src = taken as i64 - 960;
                rs.set_input(
                    k,
                    &[if (0..n as i64).contains(&src) {
                        l(src as usize)
                    } else {
                        0
                    }],
                );
                taken += 1;
            }
            rs.process(&mut right, 256, 1.0001);
            for (k, &r) in right.iter().enumerate() {
                cap.extend_from_slice(&((l(i + k) >> 16) as i16).to_le_bytes());
                cap.extend_from_slice(&((r >> 16) as i16).to_le_bytes());
            }
            i += 256;
        }
        let mut m = TwoChannelMonitor::new(997.0, RATE, RATE as u64);
        m.feed(&cap);
        let r = m.report();
        assert_eq!(r.gaps, vec![], "{r:?}");
        assert!(r.samples.len() >= 6, "{r:?}");
    }

    #[test]
    fn a_broken_reference_is_reported() {
        let cap = capture(4.5, 500, |_, _| {});
        let mut cut = cap.clone();
        // The player underran for 20 ms at 2.5 s: a loose cable on the left only.
        for f in cut.chunks_exact_mut(4).skip(120_000).take(960) {
            f[0] = 0;
            f[1] = 0;
        }
        let mut m = TwoChannelMonitor::new(997.0, RATE, RATE as u64);
        m.feed(&cut);
        let r = m.report();
        assert_eq!(r.reference_breaks, 1, "{r:?}");
        assert_eq!(r.gaps, vec![], "{r:?}");
    }
}
