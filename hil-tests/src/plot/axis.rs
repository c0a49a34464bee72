//! Value and time axes: the range each panel shows and where its ticks go.
//!
//! Value axes get round bounds and 1-2-5 steps; the time axis picks a unit that reads
//! naturally for the run's length (seconds, minutes or hours) and steps natural for it, e.g.
//! every 4 h over a day. The ticks are handed to plotters as fixed key points, so its grid and
//! labels fall exactly on them.

use super::PlotInput;

/// Values beyond this magnitude are clamped; no sane latency or ppm value comes near it.
pub(super) const VALUE_LIMIT: f64 = 1e9;
/// Most horizontal ticks on the time axis.
const MAX_TIME_TICKS: f64 = 7.0;
/// Most ticks on the latency axis.
pub(super) const MAX_TOP_TICKS: f64 = 6.0;
/// Most ticks on the other, lower panels' axes.
pub(super) const MAX_BOTTOM_TICKS: f64 = 3.0;

/// Smallest and largest finite value, each clamped to ±`VALUE_LIMIT`.
pub(super) fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(-VALUE_LIMIT, VALUE_LIMIT))
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// 1, 2 or 5 times a power of ten, the smallest such at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let factor = if norm <= 1.0 + 1e-9 {
        1.0
    } else if norm <= 2.0 + 1e-9 {
        2.0
    } else if norm <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

/// Decimals needed to tell ticks `step` apart.
fn decimals_for(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 6.0) as usize
}

/// A value axis: the range shown and its ticks.
#[derive(Clone, Debug)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    step: f64,
    pub(super) ticks: Vec<f64>,
}

impl Axis {
    /// Tick label with as many decimals as the step needs.
    pub(super) fn label(&self, v: f64) -> String {
        let decimals = decimals_for(self.step);
        format!("{v:.decimals$}")
    }
}

/// Axis covering `range` with round bounds and at most about `max_ticks` intervals.
///
/// A constant (or empty) series still gets a span, so its line sits in the middle of the panel.
pub(super) fn nice_axis(range: Option<(f64, f64)>, max_ticks: f64) -> Axis {
    let (mut lo, mut hi) = range.unwrap_or((0.0, 1.0));
    let mid = (lo + hi) / 2.0;
    if hi - lo < 1e-3 * mid.abs().max(1.0) {
        let half = (mid.abs() * 0.05).max(0.5);
        lo = mid - half;
        hi = mid + half;
    } else {
        let pad = (hi - lo) * 0.05;
        lo -= pad;
        hi += pad;
    }
    let span = hi - lo;
    let mut step = nice_step(span / max_ticks);
    // Round bounds read better, but not at the price of squashing the data.
    let lo = snap_if_close((lo / step).floor() * step, lo, 0.1 * span);
    let hi = snap_if_close((hi / step).ceil() * step, hi, 0.1 * span);
    let mut ticks = ticks_between(lo, hi, step);
    for _ in 0..3 {
        if ticks.len() >= 3 {
            break;
        }
        step = nice_step(step / 2.6);
        ticks = ticks_between(lo, hi, step);
    }
    Axis {
        lo,
        hi,
        step,
        ticks,
    }
}

/// Multiples of `step` within `[lo, hi]` (with a little slack for rounding), at most 1000.
fn ticks_between(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && step.is_finite() && step > 0.0) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if last < first || last - first > 1000.0 {
        return Vec::new();
    }
    (0..=(last - first) as i64)
        .map(|i| {
            let t = (first + i as f64) * step;
            // Keep 0 from printing as "-0".
            if t == 0.0 { 0.0 } else { t }
        })
        .collect()
}

/// Unit of the time axis labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimeUnit {
    Seconds,
    Minutes,
    Hours,
}

impl TimeUnit {
    fn seconds(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1.0,
            TimeUnit::Minutes => 60.0,
            TimeUnit::Hours => 3600.0,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Minutes => "min",
            TimeUnit::Hours => "h",
        }
    }

    /// Steps that read naturally in this unit, smallest first.
    fn steps(self) -> &'static [f64] {
        match self {
            TimeUnit::Seconds => &[1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0],
            TimeUnit::Minutes => &[0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0],
            TimeUnit::Hours => &[0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 24.0, 48.0],
        }
    }
}

/// The time axis: range shown, unit of the labels and tick positions.
#[derive(Clone, Debug)]
pub(super) struct TimeAxis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    unit: TimeUnit,
    /// Distance between ticks, in `unit`.
    step: f64,
    /// Tick positions, seconds.
    pub(super) ticks_s: Vec<f64>,
}

impl TimeAxis {
    /// Tick label, e.g. "0", "4 h", "30 min", "2.5 s".
    pub(super) fn label(&self, t_s: f64) -> String {
        let v = t_s / self.unit.seconds();
        if v.abs() < self.step * 1e-6 {
            return "0".to_owned();
        }
        let decimals = decimals_for(self.step);
        format!("{v:.decimals$} {}", self.unit.suffix())
    }
}

/// Time range of the data (trace and gaps), starting at 0 when the data starts near it.
pub(super) fn time_axis(input: &PlotInput<'_>) -> TimeAxis {
    let range = value_range(
        input
            .trace
            .iter()
            .map(|p| p.t_s)
            .chain(input.gaps.iter().map(|g| g.t_s))
            .chain(
                input
                    .fidelity
                    .iter()
                    .flat_map(|f| f.points.iter().map(|p| p.t_s)),
            ),
    );
    let (mut lo, mut hi) = range.unwrap_or((0.0, 60.0));
    if lo > 0.0 && lo <= 0.1 * hi {
        lo = 0.0;
    }
    if hi - lo < 1e-6 * hi.abs().max(1.0) {
        // A single instant: show a second around it, without going below 0 for a run that
        // starts there.
        lo = if lo >= 0.0 {
            (lo - 0.5).max(0.0)
        } else {
            lo - 0.5
        };
        hi = lo + 1.0;
    }
    time_ticks(lo, hi)
}

/// Unit and ticks for the time span `[lo, hi]` seconds: seconds up to 3 minutes, minutes up to
/// 3 hours, hours beyond; steps that are natural for the unit (e.g. every 4 h over a day).
fn time_ticks(lo: f64, hi: f64) -> TimeAxis {
    let span = (hi - lo).max(0.0);
    let unit = if span <= 180.0 {
        TimeUnit::Seconds
    } else if span <= 3.0 * 3600.0 {
        TimeUnit::Minutes
    } else {
        TimeUnit::Hours
    };
    let span_u = span / unit.seconds();
    let steps = unit.steps();
    let step = if span_u < steps[0] * 3.0 {
        nice_step(span_u / 5.0)
    } else {
        steps
            .iter()
            .copied()
            .find(|&s| span_u / s <= MAX_TIME_TICKS)
            .unwrap_or_else(|| nice_step(span_u / MAX_TIME_TICKS))
    };
    // Stretch to a tick just beyond either end (a trace sampled every 5 s ends at 23:59:55,
    // yet its axis should end at 24 h).
    let step_s = step * unit.seconds();
    let (lo, hi) = (
        snap_if_close((lo / step_s).floor() * step_s, lo, 0.02 * span),
        snap_if_close((hi / step_s).ceil() * step_s, hi, 0.02 * span),
    );
    let ticks_s = ticks_between(lo / unit.seconds(), hi / unit.seconds(), step)
        .into_iter()
        .map(|t| t * unit.seconds())
        .collect();
    TimeAxis {
        lo,
        hi,
        unit,
        step,
        ticks_s,
    }
}

/// `snapped` if it is at most `tolerance` away from `value`, else `value`.
fn snap_if_close(snapped: f64, value: f64, tolerance: f64) -> f64 {
    if (snapped - value).abs() <= tolerance {
        snapped
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ticks_pick_human_units() {
        let day = time_ticks(0.0, 86_400.0);
        assert_eq!(day.unit, TimeUnit::Hours);
        let hours: Vec<f64> = day.ticks_s.iter().map(|t| t / 3600.0).collect();
        assert_eq!(hours, [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0]);
        assert_eq!(day.label(0.0), "0");
        assert_eq!(day.label(4.0 * 3600.0), "4 h");

        let hour = time_ticks(0.0, 3600.0);
        assert_eq!(hour.unit, TimeUnit::Minutes);
        assert_eq!(hour.step, 10.0);
        assert_eq!(hour.label(1800.0), "30 min");

        let minute = time_ticks(0.0, 60.0);
        assert_eq!(minute.unit, TimeUnit::Seconds);
        assert_eq!(minute.step, 10.0);

        let short = time_ticks(4.5, 5.5);
        assert_eq!(short.unit, TimeUnit::Seconds);
        assert!(short.ticks_s.len() >= 3);
        assert_eq!(short.label(5.0), "5.0 s");

        let week = time_ticks(0.0, 7.0 * 86_400.0);
        assert_eq!(week.step, 24.0);
        let long = time_ticks(0.0, 1000.0 * 86_400.0);
        assert!(long.ticks_s.len() >= 3 && long.ticks_s.len() <= 8);

        for (lo, hi) in [(0.0, 0.0), (10.0, 10.5), (0.0, 200.0), (0.0, 11_000.0)] {
            let axis = time_ticks(lo, hi);
            assert!(!axis.ticks_s.is_empty() || hi == lo, "{lo}..{hi}");
            assert!(axis.ticks_s.len() <= 12, "{lo}..{hi}: {:?}", axis.ticks_s);
        }
    }

    #[test]
    fn nice_steps_and_axes() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.2), 2.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(decimals_for(0.1), 1);
        assert_eq!(decimals_for(0.5), 1);
        assert_eq!(decimals_for(0.02), 2);
        assert_eq!(decimals_for(5.0), 0);
        let axis = nice_axis(Some((11.7, 12.9)), MAX_TOP_TICKS);
        assert!(axis.lo <= 11.7 && axis.hi >= 12.9);
        assert!(axis.ticks.len() >= 3 && axis.ticks.len() <= 9, "{axis:?}");
        assert!(nice_axis(None, MAX_TOP_TICKS).ticks.len() >= 2);
    }

    #[test]
    fn constant_and_negative_ranges_get_a_span() {
        let axis = nice_axis(Some((12.0, 12.0)), MAX_TOP_TICKS);
        assert!(axis.lo < 12.0 && axis.hi > 12.0 && axis.ticks.len() >= 2);
        let axis = nice_axis(Some((0.0, 0.0)), MAX_BOTTOM_TICKS);
        assert!(axis.lo < 0.0 && axis.hi > 0.0 && axis.ticks.contains(&0.0));
        let axis = nice_axis(Some((-54.0, -1.0)), MAX_TOP_TICKS);
        assert!(axis.lo <= -54.0 && axis.hi >= -1.0);
    }
}
