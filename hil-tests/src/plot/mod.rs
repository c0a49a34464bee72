//! SVG plot of a long run for the report: end-to-end latency, receiver buffer level and drift
//! correction over audio time, with every gap marked; with a tone for a source, also its THD+N
//! per window and its frequency deviation (wow & flutter) over time.
//!
//! The output is one standalone SVG document that a browser or image viewer shows as is. Two
//! panels share the time axis: latency and buffer level on top, the drift correction below
//! (and, when fidelity was measured, two more under them: THD+N, and the tone's frequency). Each
//! series is reduced to the minimum and maximum of every pixel column, so a day-long trace stays
//! small and a single spike still shows. Nothing here panics on odd input: empty or single-point
//! traces, NaN stretches, constant or negative series all give a readable plot.

use std::fmt::{self, Write as _};

/// One sample of the trace, taken every few seconds of audio.
#[derive(Clone, Copy, Debug)]
pub struct TracePoint {
    /// Audio time since start, seconds.
    pub t_s: f64,
    /// End-to-end latency measured by the analyzer (NaN if unknown at that point).
    pub latency_ms: f64,
    /// Receiver buffer level (NaN if unknown).
    pub level_ms: f64,
    /// Drift correction the receiver applies, ppm.
    pub ratio_ppm: f64,
}

/// One gap (a discontinuity in what was played).
#[derive(Clone, Copy, Debug)]
pub struct GapMark {
    /// Audio time of the gap, seconds since start.
    pub t_s: f64,
    /// How much audio was missing or replaced, milliseconds.
    pub length_ms: f64,
}

/// Gap markers from (time in seconds, length in frames) at `rate` frames per second.
pub fn gap_marks(gaps: impl IntoIterator<Item = (f64, u64)>, rate: u32) -> Vec<GapMark> {
    gaps.into_iter()
        .map(|(t_s, frames)| GapMark {
            t_s,
            length_ms: frames as f64 * 1000.0 / rate as f64,
        })
        .collect()
}

/// One point of the fidelity series: a stretch of analysis windows.
#[derive(Clone, Copy, Debug)]
pub struct FidelityPoint {
    /// Audio time of the stretch's start, seconds.
    pub t_s: f64,
    /// Worst THD+N of its windows, dB (NaN: silence).
    pub thdn_db: f64,
    /// The tone's lowest frequency over the stretch, as a deviation from its mean, ppm.
    pub dev_lo_ppm: f64,
    /// Its highest, ppm.
    pub dev_hi_ppm: f64,
}

/// The fidelity panels' data.
pub struct FidelityPanel<'a> {
    /// The series, in time order.
    pub points: &'a [FidelityPoint],
    /// Median THD+N over the run, drawn as a dashed line if finite.
    pub median_db: f64,
    /// What was measured, e.g. "997 Hz" or "18000 + 19000 Hz".
    pub tones: &'a str,
}

/// Points of the plot from an analyzer's series, the frequency as a deviation from
/// `mean_freq_hz` (the run's mean after settling; the nominal tone when that is unknown).
pub fn fidelity_points(
    series: &[engine::sim::fidelity::WindowPoint],
    mean_freq_hz: f64,
) -> Vec<FidelityPoint> {
    let ppm = |f: f64| (f / mean_freq_hz - 1.0) * 1e6;
    series
        .iter()
        .map(|p| FidelityPoint {
            t_s: p.t_s,
            thdn_db: p.thdn_db,
            dev_lo_ppm: ppm(p.freq_min_hz),
            dev_hi_ppm: ppm(p.freq_max_hz),
        })
        .collect()
}

/// Everything one plot shows.
pub struct PlotInput<'a> {
    /// First line, e.g. "netaudio sim: 24 h, 48000 Hz, period 256, drift +500 ppm".
    pub title: &'a str,
    /// Second line, e.g. "0 gaps · latency p50 12.3 ms p99 12.9 ms · 0 lost packets".
    pub subtitle: &'a str,
    /// The trace, in time order.
    pub trace: &'a [TracePoint],
    /// Every gap of the run.
    pub gaps: &'a [GapMark],
    /// Drawn as a dashed horizontal reference line in the latency panel if `Some`.
    pub target_latency_ms: Option<f64>,
    /// THD+N and the tone's frequency over time, when a tone was measured.
    pub fidelity: Option<FidelityPanel<'a>>,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 620.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = 970.0;
const TOP_Y0: f64 = 84.0;
const TOP_Y1: f64 = 392.0;
const BOTTOM_Y0: f64 = 428.0;
const BOTTOM_Y1: f64 = 544.0;
/// The fidelity panels, under the others when drawn.
const THDN_Y0: f64 = 580.0;
const THDN_Y1: f64 = 696.0;
const DEV_Y0: f64 = 732.0;
const DEV_Y1: f64 = 848.0;
/// Room under the lowest panel for the time axis.
const FOOTER: f64 = HEIGHT - BOTTOM_Y1;

/// Most horizontal ticks on the time axis.
const MAX_TIME_TICKS: f64 = 7.0;
/// Most ticks on the latency axis and on the ppm axis.
const MAX_TOP_TICKS: f64 = 6.0;
const MAX_BOTTOM_TICKS: f64 = 3.0;
/// Above this many gaps, markers are merged per pixel column and drawn thin, without tooltips.
const GAP_DETAIL_LIMIT: usize = 500;
/// Values beyond this magnitude are clamped; no sane latency or ppm value comes near it.
const VALUE_LIMIT: f64 = 1e9;

const COLOR_LATENCY: &str = "#1f6fb4";
const COLOR_LEVEL: &str = "#e07b00";
const COLOR_RATIO: &str = "#0f7b6c";
const COLOR_THDN: &str = "#7b3fa0";
const COLOR_DEV: &str = "#a0522d";
const COLOR_TARGET: &str = "#555555";
const COLOR_GAP: &str = "#d62728";
const COLOR_GRID: &str = "#e4e4e4";
const COLOR_FRAME: &str = "#9a9a9a";
const COLOR_TEXT: &str = "#222222";
const COLOR_MUTED: &str = "#666666";

/// Renders a standalone SVG document (width ~1000 px, height ~620 px; ~920 px with the
/// fidelity panels).
pub fn render_svg(input: &PlotInput<'_>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let time = time_axis(input);
    let x = Scale::new(time.lo, time.hi, PLOT_LEFT, PLOT_RIGHT);
    let fid = input.fidelity.as_ref();
    let last_y1 = if fid.is_some() { DEV_Y1 } else { BOTTOM_Y1 };
    let height = last_y1 + FOOTER;
    let mut panels = vec![(TOP_Y0, TOP_Y1), (BOTTOM_Y0, BOTTOM_Y1)];
    if fid.is_some() {
        panels.extend([(THDN_Y0, THDN_Y1), (DEV_Y0, DEV_Y1)]);
    }

    let target = input.target_latency_ms.filter(|v| v.is_finite());
    let top_range = value_range(
        input
            .trace
            .iter()
            .flat_map(|p| [p.latency_ms, p.level_ms])
            .chain(target),
    );
    let top_axis = nice_axis(top_range, MAX_TOP_TICKS);
    let top_y = Scale::new(top_axis.lo, top_axis.hi, TOP_Y1, TOP_Y0);
    let bottom_axis = nice_axis(
        value_range(input.trace.iter().map(|p| p.ratio_ppm)),
        MAX_BOTTOM_TICKS,
    );
    let bottom_y = Scale::new(bottom_axis.lo, bottom_axis.hi, BOTTOM_Y1, BOTTOM_Y0);

    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
         font-size=\"12\" fill=\"{COLOR_TEXT}\">\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n\
         <defs>\n\
         <clipPath id=\"clip-top\"><rect x=\"{l}\" y=\"{t0}\" width=\"{pw}\" height=\"{th}\"/></clipPath>\n\
         <clipPath id=\"clip-bottom\"><rect x=\"{l}\" y=\"{b0}\" width=\"{pw}\" height=\"{bh}\"/></clipPath>\n\
         {fid_clips}</defs>\n",
        w = Num(WIDTH),
        h = Num(height),
        fid_clips = if fid.is_some() {
            format!(
                "<clipPath id=\"clip-thdn\"><rect x=\"{l}\" y=\"{f0}\" width=\"{pw}\" height=\"{bh}\"/></clipPath>\n\
                 <clipPath id=\"clip-dev\"><rect x=\"{l}\" y=\"{d0}\" width=\"{pw}\" height=\"{bh}\"/></clipPath>\n",
                l = Num(PLOT_LEFT),
                pw = Num(PLOT_RIGHT - PLOT_LEFT),
                bh = Num(THDN_Y1 - THDN_Y0),
                f0 = Num(THDN_Y0),
                d0 = Num(DEV_Y0),
            )
        } else {
            String::new()
        },
        l = Num(PLOT_LEFT),
        pw = Num(PLOT_RIGHT - PLOT_LEFT),
        t0 = Num(TOP_Y0),
        th = Num(TOP_Y1 - TOP_Y0),
        b0 = Num(BOTTOM_Y0),
        bh = Num(BOTTOM_Y1 - BOTTOM_Y0),
    );

    // Title block.
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{}</text>\n\
         <text x=\"20\" y=\"50\" font-size=\"13\" fill=\"{COLOR_MUTED}\">{}</text>",
        Escaped(input.title),
        Escaped(input.subtitle),
    );

    // Grid and value axes.
    draw_grid(&mut out, &time, &x, &top_axis, &top_y, TOP_Y0, TOP_Y1);
    draw_grid(
        &mut out,
        &time,
        &x,
        &bottom_axis,
        &bottom_y,
        BOTTOM_Y0,
        BOTTOM_Y1,
    );
    draw_y_title(&mut out, "latency, buffer level (ms)", TOP_Y0, TOP_Y1);
    draw_y_title(&mut out, "ppm", BOTTOM_Y0, BOTTOM_Y1);

    // Time axis labels under the lowest panel.
    let _ = writeln!(out, "<g font-size=\"12\" text-anchor=\"middle\">");
    for &t in &time.ticks_s {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            Num(x.map(t)),
            Num(last_y1 + 17.0),
            time.label(t),
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" fill=\"{COLOR_MUTED}\">audio time</text>\n</g>",
        Num((PLOT_LEFT + PLOT_RIGHT) / 2.0),
        Num(last_y1 + 40.0),
    );

    // Gaps go behind the series so the traces stay legible where gaps are dense.
    draw_gaps(&mut out, input.gaps, &x, &panels);
    if let Some(f) = fid {
        draw_fidelity(&mut out, f, &time, &x);
    }

    // Target latency.
    if let Some(target) = target {
        let y = top_y.map(target);
        let _ = writeln!(
            out,
            "<path class=\"target\" d=\"M{}L{}\" stroke=\"{COLOR_TARGET}\" stroke-width=\"1.3\" \
             stroke-dasharray=\"7 5\" fill=\"none\" clip-path=\"url(#clip-top)\"/>",
            Pt(PLOT_LEFT, y),
            Pt(PLOT_RIGHT, y),
        );
    }

    // Series.
    let level = decimate(input.trace.iter().map(|p| (p.t_s, p.level_ms)), &x, &top_y);
    let latency = decimate(
        input.trace.iter().map(|p| (p.t_s, p.latency_ms)),
        &x,
        &top_y,
    );
    let ratio = decimate(
        input.trace.iter().map(|p| (p.t_s, p.ratio_ppm)),
        &x,
        &bottom_y,
    );
    draw_series(&mut out, "level", COLOR_LEVEL, 1.4, &level, "clip-top");
    draw_series(
        &mut out,
        "latency",
        COLOR_LATENCY,
        1.8,
        &latency,
        "clip-top",
    );
    draw_series(&mut out, "ratio", COLOR_RATIO, 1.4, &ratio, "clip-bottom");
    if level.is_empty() && latency.is_empty() {
        draw_no_data(&mut out, TOP_Y0, TOP_Y1);
    }
    if ratio.is_empty() {
        draw_no_data(&mut out, BOTTOM_Y0, BOTTOM_Y1);
    }

    // Frames on top of everything drawn inside the panels.
    for &(y0, y1) in &panels {
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{COLOR_FRAME}\"/>",
            Num(PLOT_LEFT),
            Num(y0),
            Num(PLOT_RIGHT - PLOT_LEFT),
            Num(y1 - y0),
        );
    }

    draw_legend(&mut out, target, input.gaps.len());
    draw_bottom_caption(&mut out);

    out.push_str("</svg>\n");
    out
}

/// A linear map from data to pixels.
#[derive(Clone, Copy, Debug)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Scale {
        Scale { d0, d1, r0, r1 }
    }

    /// Pixel position of `v`, always finite and clamped to the panel.
    fn map(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        if !(span.is_finite() && span > 0.0 && v.is_finite()) {
            return self.r0;
        }
        let p = self.r0 + (v - self.d0) / span * (self.r1 - self.r0);
        p.clamp(self.r0.min(self.r1), self.r0.max(self.r1))
    }
}

/// Compact number for attributes: at most one decimal, no trailing ".0", never NaN or inf.
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() { self.0 } else { 0.0 };
        let tenths = (v * 10.0).round();
        if tenths == 0.0 {
            f.write_str("0")
        } else if tenths % 10.0 == 0.0 && tenths.abs() < 1e15 {
            write!(f, "{}", (tenths / 10.0) as i64)
        } else {
            write!(f, "{:.1}", tenths / 10.0)
        }
    }
}

/// A point in path syntax: "x y".
struct Pt(f64, f64);

impl fmt::Display for Pt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Num(self.0), Num(self.1))
    }
}

/// Text with the XML special characters escaped.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&apos;")?,
                // Control characters are not allowed in XML 1.0 text.
                c if c.is_control() && c != '\t' && c != '\n' => f.write_char(' ')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Smallest and largest finite value, each clamped to ±`VALUE_LIMIT`.
fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
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
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

/// Axis covering `range` with round bounds and at most about `max_ticks` intervals.
///
/// A constant (or empty) series still gets a span, so its line sits in the middle of the panel.
fn nice_axis(range: Option<(f64, f64)>, max_ticks: f64) -> Axis {
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
enum TimeUnit {
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
struct TimeAxis {
    lo: f64,
    hi: f64,
    unit: TimeUnit,
    /// Distance between ticks, in `unit`.
    step: f64,
    /// Tick positions, seconds.
    ticks_s: Vec<f64>,
}

impl TimeAxis {
    /// Tick label, e.g. "0", "4 h", "30 min", "2.5 s".
    fn label(&self, t_s: f64) -> String {
        let v = t_s / self.unit.seconds();
        if v.abs() < self.step * 1e-6 {
            return "0".to_owned();
        }
        let decimals = decimals_for(self.step);
        format!("{v:.decimals$} {}", self.unit.suffix())
    }
}

/// Time range of the data (trace and gaps), starting at 0 when the data starts near it.
fn time_axis(input: &PlotInput<'_>) -> TimeAxis {
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

/// Grid lines and value labels of one panel.
fn draw_grid(
    out: &mut String,
    time: &TimeAxis,
    x: &Scale,
    axis: &Axis,
    y: &Scale,
    y0: f64,
    y1: f64,
) {
    let _ = write!(out, "<path class=\"grid\" d=\"");
    for &t in &time.ticks_s {
        let px = x.map(t);
        let _ = write!(out, "M{}V{}", Pt(px, y0), Num(y1));
    }
    for &v in &axis.ticks {
        let py = y.map(v);
        let _ = write!(out, "M{}H{}", Pt(PLOT_LEFT, py), Num(PLOT_RIGHT));
    }
    let _ = writeln!(
        out,
        "\" stroke=\"{COLOR_GRID}\" stroke-width=\"1\" fill=\"none\"/>"
    );

    let decimals = decimals_for(axis.step);
    let _ = writeln!(
        out,
        "<g font-size=\"11\" text-anchor=\"end\" fill=\"{COLOR_MUTED}\">"
    );
    for &v in &axis.ticks {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{v:.decimals$}</text>",
            Num(PLOT_LEFT - 6.0),
            Num(y.map(v) + 4.0),
        );
    }
    let _ = writeln!(out, "</g>");
}

/// Rotated axis title left of a panel.
fn draw_y_title(out: &mut String, title: &str, y0: f64, y1: f64) {
    let cy = (y0 + y1) / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"22\" y=\"{cy}\" transform=\"rotate(-90 22 {cy})\" text-anchor=\"middle\" \
         fill=\"{COLOR_MUTED}\">{}</text>",
        Escaped(title),
        cy = Num(cy),
    );
}

/// Grey "no data" note in the middle of a panel.
fn draw_no_data(out: &mut String, y0: f64, y1: f64) {
    let cx = (PLOT_LEFT + PLOT_RIGHT) / 2.0;
    let cy = (y0 + y1) / 2.0;
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"80\" height=\"24\" fill=\"#ffffff\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" font-style=\"italic\" \
         fill=\"#999999\">no data</text>",
        Num(cx - 40.0),
        Num(cy - 12.0),
        Num(cx),
        Num(cy + 5.0),
    );
}

/// The fidelity panels: THD+N per window (worst of each point, the run's median dashed) and
/// the tone's frequency deviation (the range of each point), with their grids and captions.
fn draw_fidelity(out: &mut String, f: &FidelityPanel<'_>, time: &TimeAxis, x: &Scale) {
    let median = Some(f.median_db).filter(|v| v.is_finite());
    let thdn_axis = nice_axis(
        value_range(f.points.iter().map(|p| p.thdn_db).chain(median)),
        MAX_BOTTOM_TICKS,
    );
    let thdn_y = Scale::new(thdn_axis.lo, thdn_axis.hi, THDN_Y1, THDN_Y0);
    let dev_axis = nice_axis(
        value_range(f.points.iter().flat_map(|p| [p.dev_lo_ppm, p.dev_hi_ppm])),
        MAX_BOTTOM_TICKS,
    );
    let dev_y = Scale::new(dev_axis.lo, dev_axis.hi, DEV_Y1, DEV_Y0);
    draw_grid(out, time, x, &thdn_axis, &thdn_y, THDN_Y0, THDN_Y1);
    draw_grid(out, time, x, &dev_axis, &dev_y, DEV_Y0, DEV_Y1);
    draw_y_title(out, "THD+N (dB)", THDN_Y0, THDN_Y1);
    draw_y_title(out, "ppm", DEV_Y0, DEV_Y1);
    if let Some(m) = median {
        let y = thdn_y.map(m);
        let _ = writeln!(
            out,
            "<path class=\"thdn-median\" d=\"M{}L{}\" stroke=\"{COLOR_TARGET}\" \
             stroke-width=\"1.1\" stroke-dasharray=\"7 5\" fill=\"none\" clip-path=\"url(#clip-thdn)\"/>",
            Pt(PLOT_LEFT, y),
            Pt(PLOT_RIGHT, y),
        );
    }
    let thdn = decimate(f.points.iter().map(|p| (p.t_s, p.thdn_db)), x, &thdn_y);
    let dev = decimate(
        f.points
            .iter()
            .flat_map(|p| [(p.t_s, p.dev_lo_ppm), (p.t_s, p.dev_hi_ppm)]),
        x,
        &dev_y,
    );
    draw_series(out, "thdn", COLOR_THDN, 1.4, &thdn, "clip-thdn");
    draw_series(out, "deviation", COLOR_DEV, 1.4, &dev, "clip-dev");
    if thdn.is_empty() {
        draw_no_data(out, THDN_Y0, THDN_Y1);
    }
    if dev.is_empty() {
        draw_no_data(out, DEV_Y0, DEV_Y1);
    }
    let median_text = median.map_or(String::new(), |m| format!(", median {m:.1} dB dashed"));
    for (y0, color, text) in [
        (
            THDN_Y0,
            COLOR_THDN,
            format!(
                "THD+N of {} per {}-frame window, the worst of each point (dB){median_text}",
                f.tones,
                engine::sim::fidelity::WINDOW
            ),
        ),
        (
            DEV_Y0,
            COLOR_DEV,
            "wow & flutter: the tone's frequency, deviation from its mean (ppm)".to_string(),
        ),
    ] {
        let y = y0 - 8.0;
        let _ = writeln!(
            out,
            "<path d=\"M{}h22\" stroke=\"{color}\" stroke-width=\"2.5\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            Pt(PLOT_LEFT, y - 4.0),
            Num(PLOT_LEFT + 28.0),
            Num(y),
            Escaped(&text),
        );
    }
}

/// Red markers through every panel, one per gap (merged per pixel column when there are many).
fn draw_gaps(out: &mut String, gaps: &[GapMark], x: &Scale, panels: &[(f64, f64)]) {
    if gaps.is_empty() {
        return;
    }
    let marker = |out: &mut String, px: f64| {
        let _ = write!(out, "<path class=\"gap\" d=\"");
        for &(y0, y1) in panels {
            let _ = write!(out, "M{}V{}", Pt(px, y0), Num(y1));
        }
        out.push('"');
    };
    if gaps.len() <= GAP_DETAIL_LIMIT {
        let _ = writeln!(
            out,
            "<g stroke=\"{COLOR_GAP}\" stroke-width=\"1.2\" stroke-opacity=\"0.8\" fill=\"none\">"
        );
        for gap in gaps.iter().filter(|g| g.t_s.is_finite()) {
            marker(out, x.map(gap.t_s));
            let length = if gap.length_ms.is_finite() {
                format!(", {:.1} ms", gap.length_ms)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "><title>gap at {}{length}</title></path>",
                fmt_time(gap.t_s)
            );
        }
    } else {
        let mut columns: Vec<i64> = gaps
            .iter()
            .filter(|g| g.t_s.is_finite())
            .map(|g| x.map(g.t_s).round() as i64)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let _ = writeln!(
            out,
            "<g stroke=\"{COLOR_GAP}\" stroke-width=\"0.6\" stroke-opacity=\"0.4\" fill=\"none\">"
        );
        for px in columns {
            marker(out, px as f64);
            let _ = writeln!(out, "/>");
        }
    }
    let _ = writeln!(out, "</g>");
}

/// Time for a tooltip, e.g. "3h 12m 05s", "12m 03.5s", "7.25 s".
fn fmt_time(t_s: f64) -> String {
    let sign = if t_s < 0.0 { "-" } else { "" };
    let t = t_s.abs();
    if t >= 3600.0 {
        let whole = t as u64;
        format!(
            "{sign}{}h {:02}m {:02}s",
            whole / 3600,
            whole % 3600 / 60,
            whole % 60
        )
    } else if t >= 60.0 {
        let minutes = (t / 60.0).floor();
        format!("{sign}{}m {:04.1}s", minutes as u64, t - minutes * 60.0)
    } else {
        format!("{sign}{t:.2} s")
    }
}

/// Pieces of a polyline in pixel coordinates.
type Polyline = Vec<Vec<(f64, f64)>>;

/// Reduces a series to at most two points (its minimum and maximum, in time order) per pixel
/// column. NaN values are skipped; where they leave a hole of at least one whole pixel column the
/// line is broken.
fn decimate(points: impl Iterator<Item = (f64, f64)>, x: &Scale, y: &Scale) -> Polyline {
    /// Points of the current pixel column: (index, t, v) of its minimum and maximum.
    struct Bucket {
        col: i64,
        min: (usize, f64, f64),
        max: (usize, f64, f64),
    }

    fn flush(bucket: Option<Bucket>, line: &mut Vec<(f64, f64)>, x: &Scale, y: &Scale) {
        if let Some(b) = bucket {
            let (first, second) = if b.min.0 <= b.max.0 {
                (b.min, b.max)
            } else {
                (b.max, b.min)
            };
            line.push((x.map(first.1), y.map(first.2)));
            if second.0 != first.0 {
                line.push((x.map(second.1), y.map(second.2)));
            }
        }
    }

    let mut pieces: Polyline = Vec::new();
    let mut line = Vec::new();
    let mut bucket: Option<Bucket> = None;
    let mut last_col: Option<i64> = None;
    let mut hole = false;
    for (i, (t, v)) in points.enumerate() {
        if !t.is_finite() {
            continue;
        }
        if !v.is_finite() {
            hole = true;
            continue;
        }
        let v = v.clamp(-VALUE_LIMIT, VALUE_LIMIT);
        let col = (x.map(t) - PLOT_LEFT).floor() as i64;
        let breaks = hole && last_col.is_some_and(|c| (col - c).abs() >= 2);
        hole = false;
        if breaks || bucket.as_ref().is_some_and(|b| b.col != col) {
            flush(bucket.take(), &mut line, x, y);
        }
        if breaks && !line.is_empty() {
            pieces.push(std::mem::take(&mut line));
        }
        match &mut bucket {
            Some(b) => {
                if v < b.min.2 {
                    b.min = (i, t, v);
                }
                if v > b.max.2 {
                    b.max = (i, t, v);
                }
            }
            None => {
                bucket = Some(Bucket {
                    col,
                    min: (i, t, v),
                    max: (i, t, v),
                });
            }
        }
        last_col = Some(col);
    }
    flush(bucket, &mut line, x, y);
    if !line.is_empty() {
        pieces.push(line);
    }
    pieces
}

/// Path commands drawing a small ring around the current point, for points without neighbours.
const DOT: &str = "m-2 0a2 2 0 1 0 4 0a2 2 0 1 0 -4 0";

/// One series as a single path; isolated points show as dots.
fn draw_series(
    out: &mut String,
    class: &str,
    color: &str,
    width: f64,
    line: &Polyline,
    clip: &str,
) {
    if line.is_empty() {
        return;
    }
    let _ = write!(out, "<path class=\"series {class}\" d=\"");
    for piece in line {
        for (i, &(px, py)) in piece.iter().enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            let _ = write!(out, "{cmd}{}", Pt(px, py));
        }
        if piece.len() == 1 {
            out.push_str(DOT);
        }
    }
    let _ = writeln!(
        out,
        "\" stroke=\"{color}\" stroke-width=\"{}\" fill=\"none\" stroke-linejoin=\"round\" \
         stroke-linecap=\"round\" clip-path=\"url(#{clip})\"/>",
        Num(width),
    );
}

/// Approximate width of `text` at `font_size` in a sans-serif font, for laying out the legend.
fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * 0.6
}

/// Legend row above the top panel: series on the left, gap count on the right.
fn draw_legend(out: &mut String, target: Option<f64>, gap_count: usize) {
    let y = TOP_Y0 - 10.0;
    let mut x = PLOT_LEFT;
    let mut item = |out: &mut String, color: &str, dash: Option<&str>, label: &str| {
        let dash = dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<path d=\"M{}h22\" stroke=\"{color}\" stroke-width=\"2.5\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            Pt(x, y - 4.0),
            Num(x + 28.0),
            Num(y),
            Escaped(label),
        );
        x += 28.0 + text_width(label, 12.0) + 18.0;
    };
    item(out, COLOR_LATENCY, None, "end-to-end latency");
    item(out, COLOR_LEVEL, None, "receiver buffer level");
    if let Some(target) = target {
        item(
            out,
            COLOR_TARGET,
            Some("5 3"),
            &format!("target {target:.1} ms"),
        );
    }

    let label = match gap_count {
        0 => "no gaps".to_owned(),
        n if n > GAP_DETAIL_LIMIT => format!("gaps: {n} (merged per pixel column)"),
        n => format!("gaps: {n}"),
    };
    let (class, fill, stroke, text) = if gap_count == 0 {
        ("no-gaps", "#e3f4e6", "#2e9d48", "#1d7a35")
    } else {
        ("gap-count", "#fde7e7", COLOR_GAP, COLOR_GAP)
    };
    let w = text_width(&label, 13.0) + 20.0;
    let _ = writeln!(
        out,
        "<g class=\"{class}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"20\" rx=\"10\" \
         fill=\"{fill}\" stroke=\"{stroke}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
         font-size=\"13\" font-weight=\"bold\" fill=\"{text}\">{label}</text></g>",
        Num(PLOT_RIGHT - w),
        Num(y - 15.0),
        Num(w),
        Num(PLOT_RIGHT - w / 2.0),
        Num(y),
    );
}

/// Caption of the bottom panel, doubling as its legend.
fn draw_bottom_caption(out: &mut String) {
    let y = BOTTOM_Y0 - 8.0;
    let _ = writeln!(
        out,
        "<path d=\"M{}h22\" stroke=\"{COLOR_RATIO}\" stroke-width=\"2.5\"/>\
         <text x=\"{}\" y=\"{}\">drift correction applied by the receiver (ppm)</text>",
        Pt(PLOT_LEFT, y - 4.0),
        Num(PLOT_LEFT + 28.0),
        Num(y),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_s: f64, latency_ms: f64, level_ms: f64, ratio_ppm: f64) -> TracePoint {
        TracePoint {
            t_s,
            latency_ms,
            level_ms,
            ratio_ppm,
        }
    }

    fn render(trace: &[TracePoint], gaps: &[GapMark], target: Option<f64>) -> String {
        render_svg(&PlotInput {
            title: "netaudio sim",
            subtitle: "test",
            trace,
            gaps,
            target_latency_ms: target,
            fidelity: None,
        })
    }

    /// Structural checks every output must pass.
    fn check(svg: &str) {
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN"), "NaN in output");
        assert!(!svg.to_ascii_lowercase().contains("inf"), "inf in output");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    }

    /// The `d` attribute of the series path with class `name`, if drawn.
    fn series_path<'a>(svg: &'a str, name: &str) -> Option<&'a str> {
        let start = svg.find(&format!("class=\"series {name}\" d=\""))?;
        let rest = &svg[start..];
        let d = &rest[rest.find("d=\"")? + 3..];
        Some(&d[..d.find('"')?])
    }

    fn day_trace(n: usize) -> Vec<TracePoint> {
        (0..n)
            .map(|i| {
                let t = i as f64 * 86_400.0 / n as f64;
                point(
                    t,
                    12.3 + (t / 5000.0).sin() * 0.3,
                    8.0,
                    500.0 + (t / 9000.0).cos(),
                )
            })
            .collect()
    }

    #[test]
    fn typical_day_renders() {
        let trace = day_trace(17_280);
        let gaps = [
            GapMark {
                t_s: 3600.0,
                length_ms: 5.3,
            },
            GapMark {
                t_s: 50_000.0,
                length_ms: 1.0,
            },
        ];
        let svg = render(&trace, &gaps, Some(12.0));
        check(&svg);
        assert_eq!(svg.matches("class=\"gap\"").count(), 2);
        assert!(svg.contains("gaps: 2"));
        assert!(!svg.contains("no gaps"));
        assert!(svg.contains("class=\"target\""));
        assert!(svg.contains(">4 h<") && svg.contains(">24 h<"));
        for name in ["latency", "level", "ratio"] {
            assert!(series_path(&svg, name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn no_gaps_label() {
        let svg = render(&day_trace(100), &[], None);
        check(&svg);
        assert!(svg.contains("no gaps"));
        assert_eq!(svg.matches("class=\"gap\"").count(), 0);
        assert!(!svg.contains("class=\"target\""));
    }

    #[test]
    fn empty_and_single_point() {
        let svg = render(&[], &[], Some(f64::NAN));
        check(&svg);
        assert!(svg.contains("no data"));
        assert!(!svg.contains("class=\"target\""));

        let svg = render(&[point(5.0, 12.0, 8.0, -3.0)], &[], Some(12.0));
        check(&svg);
        assert!(!svg.contains("no data"));
        // A single point is drawn as a dot.
        assert!(series_path(&svg, "latency").unwrap().ends_with(DOT));
    }

    #[test]
    fn nan_series_are_skipped_and_break_the_line() {
        let nan = f64::NAN;
        let trace: Vec<_> = (0..10)
            .map(|i| {
                let latency = if (4..6).contains(&i) { nan } else { 12.0 };
                point(i as f64 * 10.0, latency, nan, f64::INFINITY)
            })
            .collect();
        let svg = render(&trace, &[], Some(f64::INFINITY));
        check(&svg);
        let latency = series_path(&svg, "latency").unwrap();
        assert_eq!(latency.matches('M').count(), 2, "{latency}");
        assert!(series_path(&svg, "level").is_none());
        assert!(series_path(&svg, "ratio").is_none());
        // The ratio panel has nothing to show.
        assert_eq!(svg.matches("no data").count(), 1);

        // Only NaN everywhere, including time.
        let trace = [point(nan, nan, nan, nan), point(1.0, nan, nan, nan)];
        let svg = render(
            &trace,
            &[GapMark {
                t_s: nan,
                length_ms: nan,
            }],
            None,
        );
        check(&svg);
        assert_eq!(svg.matches("no data").count(), 2);
    }

    #[test]
    fn constant_and_negative_series_get_a_span() {
        let trace: Vec<_> = (0..50).map(|i| point(i as f64, 12.0, 12.0, 0.0)).collect();
        let svg = render(&trace, &[], None);
        check(&svg);
        let axis = nice_axis(Some((12.0, 12.0)), MAX_TOP_TICKS);
        assert!(axis.lo < 12.0 && axis.hi > 12.0 && axis.ticks.len() >= 2);
        let axis = nice_axis(Some((0.0, 0.0)), MAX_BOTTOM_TICKS);
        assert!(axis.lo < 0.0 && axis.hi > 0.0 && axis.ticks.contains(&0.0));

        let trace: Vec<_> = (0..50)
            .map(|i| point(i as f64, -5.0 - i as f64, -1.0, -500.0))
            .collect();
        let svg = render(&trace, &[], None);
        check(&svg);
        let axis = nice_axis(Some((-54.0, -1.0)), MAX_TOP_TICKS);
        assert!(axis.lo <= -54.0 && axis.hi >= -1.0);
        assert!(svg.contains(">-500"));
    }

    #[test]
    fn extreme_values_stay_finite() {
        let trace = [
            point(0.0, f64::MAX, -f64::MAX, 1e300),
            point(f64::MAX, 1.0, 2.0, 3.0),
            point(-1e12, f64::MIN_POSITIVE, 0.0, -0.0),
        ];
        let svg = render(
            &trace,
            &[GapMark {
                t_s: 1e20,
                length_ms: f64::MAX,
            }],
            Some(1e308),
        );
        check(&svg);
    }

    #[test]
    fn huge_trace_is_decimated_and_spikes_survive() {
        let n = 1_000_000;
        let mut trace = day_trace(n);
        trace[654_321].latency_ms = 250.0;
        trace[123_456].ratio_ppm = -2000.0;
        let svg = render(&trace, &[], Some(12.0));
        check(&svg);
        for name in ["latency", "level", "ratio"] {
            let d = series_path(&svg, name).unwrap();
            let points = d.matches(['M', 'L']).count();
            assert!(points <= 2000, "{name}: {points} points");
        }
        // The spike's maximum is kept: some latency point sits at its height.
        let axis = nice_axis(Some((8.0, 250.0)), MAX_TOP_TICKS);
        let spike_y = Scale::new(axis.lo, axis.hi, TOP_Y1, TOP_Y0).map(250.0);
        let latency = series_path(&svg, "latency").unwrap();
        let top = latency
            .split(['M', 'L'])
            .filter_map(|p| p.split(' ').nth(1)?.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min);
        assert!(
            (top - spike_y).abs() < 0.2,
            "highest latency point at y={top}, not {spike_y}"
        );
        assert!(svg.len() < 300_000, "{} bytes", svg.len());
    }

    #[test]
    fn many_gaps_are_all_drawn_without_blowing_up() {
        let trace = day_trace(1000);
        let gaps: Vec<_> = (0..20_000)
            .map(|i| GapMark {
                t_s: i as f64 * 4.3,
                length_ms: 2.0,
            })
            .collect();
        let svg = render(&trace, &gaps, None);
        check(&svg);
        assert!(svg.contains("gaps: 20000"));
        let markers = svg.matches("class=\"gap\"").count();
        assert!(markers > 500 && markers <= 900, "{markers}");

        let gaps = &gaps[..GAP_DETAIL_LIMIT];
        let svg = render(&trace, gaps, None);
        assert_eq!(svg.matches("class=\"gap\"").count(), GAP_DETAIL_LIMIT);
        assert_eq!(svg.matches("<title>").count(), GAP_DETAIL_LIMIT);
    }

    #[test]
    fn text_is_escaped() {
        let svg = render_svg(&PlotInput {
            title: "a < b && c > \"d\" 'e'",
            subtitle: "0 gaps · p50 <12 ms>\u{1}",
            trace: &[],
            gaps: &[],
            target_latency_ms: None,
            fidelity: None,
        });
        check(&svg);
        assert!(svg.contains("a &lt; b &amp;&amp; c &gt; &quot;d&quot; &apos;e&apos;"));
        assert!(svg.contains("0 gaps · p50 &lt;12 ms&gt; "));
        assert!(!svg.contains("<12"));
    }

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
    fn fidelity_panels_show_thdn_and_the_tones_frequency() {
        let trace = day_trace(200);
        let points: Vec<FidelityPoint> = (0..2000)
            .map(|i| {
                let t = i as f64 * 43.2;
                let wobble = (t / 3000.0).sin() * 5.0;
                FidelityPoint {
                    t_s: t,
                    thdn_db: if i == 1234 { -35.0 } else { -92.0 },
                    dev_lo_ppm: wobble - 0.5,
                    dev_hi_ppm: wobble + 0.5,
                }
            })
            .collect();
        let gaps = [GapMark {
            t_s: 50_000.0,
            length_ms: 2.0,
        }];
        let svg = render_svg(&PlotInput {
            title: "t",
            subtitle: "s",
            trace: &trace,
            gaps: &gaps,
            target_latency_ms: None,
            fidelity: Some(FidelityPanel {
                points: &points,
                median_db: -92.0,
                tones: "997 Hz",
            }),
        });
        check(&svg);
        assert!(svg.contains("height=\"924\""), "taller");
        assert!(svg.contains("THD+N of 997 Hz per 8192-frame window"));
        assert!(svg.contains("class=\"thdn-median\""));
        for name in ["thdn", "deviation", "latency", "ratio"] {
            let d = series_path(&svg, name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(d.matches(['M', 'L']).count() <= 2000, "{name}");
        }
        // The gap's marker runs through all four panels.
        let pat = "class=\"gap\" d=\"";
        let gap = &svg[svg.find(pat).unwrap() + pat.len()..];
        assert_eq!(gap[..gap.find('"').unwrap()].matches('M').count(), 4);
        // The bad window's spike survives decimation: some THD+N point sits at −35 dB.
        let axis = nice_axis(Some((-92.0, -35.0)), MAX_BOTTOM_TICKS);
        let spike = Scale::new(axis.lo, axis.hi, THDN_Y1, THDN_Y0).map(-35.0);
        let top = series_path(&svg, "thdn")
            .unwrap()
            .split(['M', 'L'])
            .filter_map(|p| p.split(' ').nth(1)?.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min);
        assert!((top - spike).abs() < 0.2, "{top} vs {spike}");

        // Without fidelity the plot keeps its size; silence only: "no data", no NaN.
        let svg = render(&trace, &[], None);
        assert!(svg.contains("height=\"620\"") && !svg.contains("thdn"));
        let nan = [FidelityPoint {
            t_s: 1.0,
            thdn_db: f64::NAN,
            dev_lo_ppm: f64::NAN,
            dev_hi_ppm: f64::NAN,
        }];
        let svg = render_svg(&PlotInput {
            title: "t",
            subtitle: "s",
            trace: &[],
            gaps: &[],
            target_latency_ms: None,
            fidelity: Some(FidelityPanel {
                points: &nan,
                median_db: f64::NAN,
                tones: "997 Hz",
            }),
        });
        check(&svg);
        assert_eq!(svg.matches("no data").count(), 4);
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(Num(12.34).to_string(), "12.3");
        assert_eq!(Num(12.0).to_string(), "12");
        assert_eq!(Num(-0.04).to_string(), "0");
        assert_eq!(Num(-3.96).to_string(), "-4");
        assert_eq!(Num(f64::NAN).to_string(), "0");
        assert_eq!(Num(f64::NEG_INFINITY).to_string(), "0");
    }
}
