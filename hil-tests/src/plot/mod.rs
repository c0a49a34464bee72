//! SVG plot of a long run for the report: end-to-end latency, receiver buffer level and drift
//! correction over audio time, with every gap marked; with a tone for a source, also its THD+N
//! per window and its frequency deviation (wow & flutter) over time.
//!
//! The output is one standalone SVG document, drawn with plotters' SVG backend, that a browser
//! or image viewer shows as is. Two panels share the time axis: latency and buffer level on
//! top, the drift correction below (and, when fidelity was measured, two more under them:
//! THD+N, and the tone's frequency). Each series is reduced to the minimum and maximum of every
//! pixel column before plotters sees it, so a day-long trace stays small and a single spike
//! still shows. Nothing here panics on odd input: empty or single-point traces, NaN stretches,
//! constant or negative series all give a readable plot.
//!
//! The pieces: `axis` (ranges and ticks), `decimate` (what a pixel column keeps), `layout`
//! (geometry, colours, the panels' charts), `series` (lines and reference lines), `gaps` (the
//! markers and their tooltips), `legend` (title, legend row, captions) and `skew` (the panel
//! of the receivers' skew, under all the others, in a run with several receivers).

mod axis;
mod decimate;
mod gaps;
mod layout;
mod legend;
mod series;
mod skew;

pub use skew::SkewPanel;

use plotters::prelude::*;

use axis::{MAX_BOTTOM_TICKS, MAX_TOP_TICKS, TimeAxis, nice_axis, time_axis, value_range};
use decimate::{Polyline, decimate};
use layout::{
    BOTTOM, COLOR_DEV, COLOR_GAP, COLOR_LATENCY, COLOR_LEVEL, COLOR_RATIO, COLOR_TARGET,
    COLOR_THDN, Chart, DEV, DrawResult, Root, THDN, TOP, WIDTH,
};

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
    /// The skew between receivers over time, in a run with several.
    pub skew: Option<SkewPanel<'a>>,
}

/// Renders a standalone SVG document (width 1000 px, height 620 px; 924 px with the fidelity
/// panels; 152 px more with the skew panel).
pub fn render_svg(input: &PlotInput<'_>) -> String {
    let size = (
        WIDTH,
        layout::height(input.fidelity.is_some(), input.skew.is_some()),
    );
    let mut svg = String::with_capacity(64 * 1024);
    let mut titles = Vec::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        if let Err(e) = draw(&root, input, &mut titles) {
            // A plot missing a piece still beats none after a long run: say so in it.
            let _ = root.draw(&Text::new(
                format!("plot incomplete: {e}"),
                (20, 64),
                layout::font(12.0, COLOR_GAP),
            ));
        }
        // Closes the document; writing into a string cannot fail.
        let _ = root.present();
    }
    gaps::attach_titles(svg, &titles)
}

/// Pixel column of a time in `chart` (every panel maps time alike).
fn columns<'c>(chart: &'c Chart<'_, '_>) -> impl Fn(f64) -> i64 + 'c {
    |t| i64::from(chart.backend_coord(&(t, 0.0)).0)
}

/// Draws every panel, the gap markers (pushing their tooltips onto `titles`) and the text.
fn draw(root: &Root<'_>, input: &PlotInput<'_>, titles: &mut Vec<String>) -> DrawResult {
    root.fill(&WHITE)?;
    legend::title_block(root, input.title, input.subtitle)?;
    let time = time_axis(input);
    let trace = input.trace;
    let fidelity = input.fidelity.as_ref();

    // Top: latency and buffer level, the target latency dashed.
    let target = input.target_latency_ms.filter(|v| v.is_finite());
    let top_axis = nice_axis(
        value_range(
            trace
                .iter()
                .flat_map(|p| [p.latency_ms, p.level_ms])
                .chain(target),
        ),
        MAX_TOP_TICKS,
    );
    let mut top = layout::panel(
        root,
        TOP,
        &time,
        &top_axis,
        "latency, buffer level (ms)",
        false,
    )?;
    let level = decimate(trace.iter().map(|p| (p.t_s, p.level_ms)), columns(&top));
    let latency = decimate(trace.iter().map(|p| (p.t_s, p.latency_ms)), columns(&top));
    // Gaps go behind the series so the traces stay legible where gaps are dense.
    gaps::draw(root, &mut top, input.gaps, titles)?;
    if let Some(target) = target {
        series::reference(&mut top, target, COLOR_TARGET)?;
    }
    series::draw(&mut top, &level, COLOR_LEVEL, 1)?;
    series::draw(&mut top, &latency, COLOR_LATENCY, 2)?;
    if level.is_empty() && latency.is_empty() {
        layout::no_data(root, TOP)?;
    }
    layout::frame(&top)?;
    let target_label = target.map(|t| format!("target {t:.1} ms"));
    let mut entries = vec![
        (COLOR_LATENCY, false, "end-to-end latency"),
        (COLOR_LEVEL, false, "receiver buffer level"),
    ];
    if let Some(label) = &target_label {
        entries.push((COLOR_TARGET, true, label));
    }
    legend::top_row(root, TOP.y0, &entries, input.gaps.len())?;

    // Below: the drift correction.
    let bottom_axis = nice_axis(
        value_range(trace.iter().map(|p| p.ratio_ppm)),
        MAX_BOTTOM_TICKS,
    );
    let lowest = fidelity.is_none() && input.skew.is_none();
    let mut bottom = layout::panel(root, BOTTOM, &time, &bottom_axis, "ppm", lowest)?;
    let ratio = decimate(trace.iter().map(|p| (p.t_s, p.ratio_ppm)), columns(&bottom));
    simple_panel(
        root,
        &mut bottom,
        BOTTOM,
        input.gaps,
        titles,
        &ratio,
        COLOR_RATIO,
    )?;
    legend::caption(
        root,
        BOTTOM.y0,
        COLOR_RATIO,
        "drift correction applied by the receiver (ppm)",
    )?;

    if let Some(f) = fidelity {
        draw_fidelity(root, f, &time, input.gaps, titles, input.skew.is_none())?;
    }
    if let Some(s) = &input.skew {
        let rows = layout::skew_rows(fidelity.is_some());
        skew::draw(root, s, rows, &time, input.gaps, titles)?;
    }
    Ok(())
}

/// The rest of a panel holding one series: gap markers behind it, the series, a note if it is
/// empty, the frame on top.
fn simple_panel(
    root: &Root<'_>,
    chart: &mut Chart<'_, '_>,
    rows: layout::Rows,
    gaps: &[GapMark],
    titles: &mut Vec<String>,
    line: &Polyline,
    color: RGBColor,
) -> DrawResult {
    gaps::draw(root, chart, gaps, titles)?;
    series::draw(chart, line, color, 1)?;
    if line.is_empty() {
        layout::no_data(root, rows)?;
    }
    layout::frame(chart)
}

/// The fidelity panels: THD+N per window (worst of each point, the run's median dashed) and
/// the tone's frequency deviation (the range of each point), with their captions.
fn draw_fidelity(
    root: &Root<'_>,
    f: &FidelityPanel<'_>,
    time: &TimeAxis,
    gaps: &[GapMark],
    titles: &mut Vec<String>,
    lowest: bool,
) -> DrawResult {
    let median = Some(f.median_db).filter(|v| v.is_finite());
    let thdn_axis = nice_axis(
        value_range(f.points.iter().map(|p| p.thdn_db).chain(median)),
        MAX_BOTTOM_TICKS,
    );
    let mut thdn = layout::panel(root, THDN, time, &thdn_axis, "THD+N (dB)", false)?;
    let line = decimate(f.points.iter().map(|p| (p.t_s, p.thdn_db)), columns(&thdn));
    if let Some(m) = median {
        series::reference(&mut thdn, m, COLOR_TARGET)?;
    }
    simple_panel(root, &mut thdn, THDN, gaps, titles, &line, COLOR_THDN)?;
    let median_text = median.map_or(String::new(), |m| format!(", median {m:.1} dB dashed"));
    legend::caption(
        root,
        THDN.y0,
        COLOR_THDN,
        &format!(
            "THD+N of {} per {}-frame window, the worst of each point (dB){median_text}",
            f.tones,
            engine::sim::fidelity::WINDOW
        ),
    )?;

    let dev_axis = nice_axis(
        value_range(f.points.iter().flat_map(|p| [p.dev_lo_ppm, p.dev_hi_ppm])),
        MAX_BOTTOM_TICKS,
    );
    let mut dev = layout::panel(root, DEV, time, &dev_axis, "ppm", lowest)?;
    let line = decimate(
        f.points
            .iter()
            .flat_map(|p| [(p.t_s, p.dev_lo_ppm), (p.t_s, p.dev_hi_ppm)]),
        columns(&dev),
    );
    simple_panel(root, &mut dev, DEV, gaps, titles, &line, COLOR_DEV)?;
    legend::caption(
        root,
        DEV.y0,
        COLOR_DEV,
        "wow & flutter: the tone's frequency, deviation from its mean (ppm)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::gaps::GAP_DETAIL_LIMIT;

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
            skew: None,
        })
    }

    /// Structural checks every output must pass.
    fn check(svg: &str) {
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN"), "NaN in output");
        assert!(!svg.to_ascii_lowercase().contains("inf"), "inf in output");
        assert!(!svg.contains("plot incomplete"), "drawing failed");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    /// The stroke or fill attribute value plotters writes for `color`.
    fn hex(color: RGBColor) -> String {
        let RGBColor(r, g, b) = color;
        format!("\"#{r:02X}{g:02X}{b:02X}\"")
    }

    /// Every line (polyline) drawn in `color`, as its points in pixels. Series, reference lines
    /// and gap markers are the only lines in their colours (legend samples are filled bars).
    fn lines(svg: &str, color: RGBColor) -> Vec<Vec<(f64, f64)>> {
        let stroke = format!("stroke={}", hex(color));
        svg.lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
            .map(|l| {
                let p = &l[l.find("points=\"").unwrap() + 8..];
                p[..p.find('"').unwrap()]
                    .split_whitespace()
                    .map(|xy| {
                        let (x, y) = xy.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    /// Dots (points without neighbours) drawn in `color`.
    fn dots(svg: &str, color: RGBColor) -> usize {
        let stroke = format!("stroke={}", hex(color));
        svg.lines()
            .filter(|l| l.starts_with("<circle") && l.contains(&stroke))
            .count()
    }

    /// Whether some text element reads exactly `text`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    /// Highest point (smallest y) of the lines drawn in `color`.
    fn top_of(svg: &str, color: RGBColor) -> f64 {
        lines(svg, color)
            .iter()
            .flatten()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
    }

    /// Pixel row of `v` in a panel at `rows` showing `axis` (plotters rounds to whole pixels).
    fn row_of(v: f64, axis: &axis::Axis, rows: layout::Rows) -> f64 {
        rows.y1 as f64 - (v - axis.lo) / (axis.hi - axis.lo) * (rows.y1 - rows.y0) as f64
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
        // Each gap has a marker in both panels, each with its tooltip.
        assert_eq!(lines(&svg, COLOR_GAP).len(), 2 * 2);
        assert_eq!(
            svg.matches("<title>gap at 1h 00m 00s, 5.3 ms</title>")
                .count(),
            2
        );
        assert_eq!(
            svg.matches("<title>gap at 13h 53m 20s, 1.0 ms</title>")
                .count(),
            2
        );
        assert!(has_text(&svg, "gaps: 2"));
        assert!(!svg.contains("no gaps"));
        assert!(!lines(&svg, COLOR_TARGET).is_empty(), "target line");
        assert!(has_text(&svg, "target 12.0 ms"));
        assert!(has_text(&svg, "4 h") && has_text(&svg, "24 h"));
        assert!(has_text(&svg, "audio time"));
        assert!(has_text(&svg, "latency, buffer level (ms)"));
        assert!(has_text(&svg, "end-to-end latency"));
        assert!(has_text(&svg, "receiver buffer level"));
        assert!(has_text(
            &svg,
            "drift correction applied by the receiver (ppm)"
        ));
        for (name, color) in [
            ("latency", COLOR_LATENCY),
            ("level", COLOR_LEVEL),
            ("ratio", COLOR_RATIO),
        ] {
            assert!(!lines(&svg, color).is_empty(), "{name} missing");
        }
    }

    #[test]
    fn no_gaps_label() {
        let svg = render(&day_trace(100), &[], None);
        check(&svg);
        assert!(has_text(&svg, "no gaps"));
        assert!(lines(&svg, COLOR_GAP).is_empty());
        assert!(lines(&svg, COLOR_TARGET).is_empty());
        assert!(!svg.contains("target"));
    }

    #[test]
    fn empty_and_single_point() {
        let svg = render(&[], &[], Some(f64::NAN));
        check(&svg);
        assert!(svg.contains("no data"));
        assert!(lines(&svg, COLOR_TARGET).is_empty());

        let svg = render(&[point(5.0, 12.0, 8.0, -3.0)], &[], Some(12.0));
        check(&svg);
        assert!(!svg.contains("no data"));
        // A single point is drawn as a dot.
        assert!(lines(&svg, COLOR_LATENCY).is_empty());
        assert_eq!(dots(&svg, COLOR_LATENCY), 1);
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
        let latency = lines(&svg, COLOR_LATENCY);
        assert_eq!(latency.len(), 2, "{latency:?}");
        assert!(lines(&svg, COLOR_LEVEL).is_empty() && dots(&svg, COLOR_LEVEL) == 0);
        assert!(lines(&svg, COLOR_RATIO).is_empty() && dots(&svg, COLOR_RATIO) == 0);
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
        // The constant line sits inside the panel, not on its edge.
        let y = top_of(&svg, COLOR_LATENCY);
        assert!(
            y > layout::TOP.y0 as f64 + 10.0 && y < layout::TOP.y1 as f64 - 10.0,
            "{y}"
        );

        let trace: Vec<_> = (0..50)
            .map(|i| point(i as f64, -5.0 - i as f64, -1.0, -500.0))
            .collect();
        let svg = render(&trace, &[], None);
        check(&svg);
        assert!(svg.contains("\n-500"));
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
        for (name, color) in [
            ("latency", COLOR_LATENCY),
            ("level", COLOR_LEVEL),
            ("ratio", COLOR_RATIO),
        ] {
            let points: usize = lines(&svg, color).iter().map(Vec::len).sum();
            assert!(points <= 2000, "{name}: {points} points");
        }
        // The spike's maximum is kept: some latency point sits at its height.
        let axis = nice_axis(Some((8.0, 250.0)), MAX_TOP_TICKS);
        let spike_y = row_of(250.0, &axis, layout::TOP);
        let top = top_of(&svg, COLOR_LATENCY);
        assert!(
            (top - spike_y).abs() <= 1.0,
            "highest latency point at y={top}, not {spike_y}"
        );
        // And the dip of the drift correction.
        let axis = nice_axis(Some((-2000.0, 501.0)), MAX_BOTTOM_TICKS);
        let dip_y = row_of(-2000.0, &axis, layout::BOTTOM);
        let bottom = lines(&svg, COLOR_RATIO)
            .iter()
            .flatten()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((bottom - dip_y).abs() <= 1.0, "{bottom} vs {dip_y}");
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
        // Merged into bands over the pixel columns holding a gap, in both panels: the columns
        // they cover are those of the gaps, one per column.
        let fill = format!("fill={}", hex(COLOR_GAP));
        let widths: Vec<i64> = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains(&fill))
            .map(|l| {
                let w = &l[l.find("width=\"").unwrap() + 7..];
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len() % 2, 0);
        let columns: i64 = widths.iter().sum::<i64>() / 2;
        assert!(columns > 500 && columns <= 900, "{columns}");
        assert!(lines(&svg, COLOR_GAP).is_empty());
        assert!(!svg.contains("<title>"));
        assert!(svg.len() < 300_000, "{} bytes", svg.len());

        let gaps = &gaps[..GAP_DETAIL_LIMIT];
        let svg = render(&trace, gaps, None);
        assert_eq!(lines(&svg, COLOR_GAP).len(), 2 * GAP_DETAIL_LIMIT);
        assert_eq!(svg.matches("<title>").count(), 2 * GAP_DETAIL_LIMIT);
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
            skew: None,
        });
        check(&svg);
        assert!(svg.contains("a &lt; b &amp;&amp; c &gt; &quot;d&quot; &apos;e&apos;"));
        assert!(svg.contains("0 gaps · p50 &lt;12 ms&gt; "));
        assert!(!svg.contains("<12"));
        assert!(!svg.contains('\u{1}'));
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
            skew: None,
        });
        check(&svg);
        assert!(svg.contains("height=\"924\""), "taller");
        assert!(svg.contains("THD+N of 997 Hz per 8192-frame window"));
        assert!(svg.contains("median -92.0 dB dashed"));
        assert!(has_text(&svg, "THD+N (dB)"));
        assert!(svg.contains("wow &amp; flutter: the tone&apos;s frequency"));
        // The median, dashed (no target latency here).
        assert!(!lines(&svg, COLOR_TARGET).is_empty());
        for (name, color) in [
            ("thdn", COLOR_THDN),
            ("deviation", COLOR_DEV),
            ("latency", COLOR_LATENCY),
            ("ratio", COLOR_RATIO),
        ] {
            let lines = lines(&svg, color);
            assert!(!lines.is_empty(), "{name} missing");
            let points: usize = lines.iter().map(Vec::len).sum();
            assert!(points <= 2000, "{name}: {points}");
        }
        // The gap's marker runs through all four panels, at one time.
        let markers = lines(&svg, COLOR_GAP);
        assert_eq!(markers.len(), 4);
        assert!(markers.iter().all(|m| m[0].0 == markers[0][0].0));
        for (marker, rows) in markers.iter().zip([layout::TOP, layout::BOTTOM, THDN, DEV]) {
            let (lo, hi) = (marker[0].1.min(marker[1].1), marker[0].1.max(marker[1].1));
            assert!((lo - rows.y0 as f64).abs() <= 1.0 && (hi - rows.y1 as f64).abs() <= 1.0);
        }
        // The bad window's spike survives decimation: some THD+N point sits at −35 dB.
        let axis = nice_axis(Some((-92.0, -35.0)), MAX_BOTTOM_TICKS);
        let spike = row_of(-35.0, &axis, THDN);
        let top = top_of(&svg, COLOR_THDN);
        assert!((top - spike).abs() <= 1.0, "{top} vs {spike}");

        // Without fidelity the plot keeps its size; silence only: "no data", no NaN.
        let svg = render(&trace, &[], None);
        assert!(svg.contains("height=\"620\"") && !svg.contains("THD+N"));
        assert!(lines(&svg, COLOR_THDN).is_empty() && lines(&svg, COLOR_DEV).is_empty());
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
            skew: None,
        });
        check(&svg);
        assert_eq!(svg.matches("no data").count(), 4);
    }
}
