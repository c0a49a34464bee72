//! Gap markers: a red line through every panel at each gap, with a tooltip naming its time and
//! length; above `GAP_DETAIL_LIMIT` gaps, a pale band over each run of pixel columns holding
//! any.
//!
//! plotters has no way to give an element a tooltip, so the markers are drawn first and their
//! `<title>` children are added to the finished document afterwards, in drawing order.

use plotters::prelude::*;

use super::GapMark;
use super::layout::{COLOR_GAP, Chart, DrawResult, Root};

/// Above this many gaps, markers are merged per pixel column and drawn thin, without tooltips.
pub(super) const GAP_DETAIL_LIMIT: usize = 500;

/// Draws the markers of `gaps` into one panel, pushing the tooltip of each marker drawn (in
/// drawing order) onto `titles`.
pub(super) fn draw(
    root: &Root<'_>,
    chart: &mut Chart<'_, '_>,
    gaps: &[GapMark],
    titles: &mut Vec<String>,
) -> DrawResult {
    let (x, y) = (chart.x_range(), chart.y_range());
    let finite = gaps.iter().filter(|g| g.t_s.is_finite());
    let marker = |t: f64| {
        [
            (t.clamp(x.start, x.end), y.start),
            (t.clamp(x.start, x.end), y.end),
        ]
    };
    if gaps.len() <= GAP_DETAIL_LIMIT {
        let style = COLOR_GAP.mix(0.8).stroke_width(1);
        for gap in finite {
            chart
                .plotting_area()
                .draw(&PathElement::new(marker(gap.t_s), style))?;
            let length = if gap.length_ms.is_finite() {
                format!(", {:.1} ms", gap.length_ms)
            } else {
                String::new()
            };
            titles.push(format!("gap at {}{length}", fmt_time(gap.t_s)));
        }
    } else {
        // Tens of thousands of markers would only repaint the same pixel columns and blow up
        // the document: each run of adjacent columns holding a gap becomes one band.
        let mut columns: Vec<i32> = finite
            .map(|g| chart.backend_coord(&marker(g.t_s)[0]).0)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let (top, bottom) = (
            chart.backend_coord(&(x.start, y.end)).1,
            chart.backend_coord(&(x.start, y.start)).1,
        );
        let style = COLOR_GAP.mix(0.25).filled();
        for (first, last) in runs(&columns) {
            root.draw(&Rectangle::new([(first, top), (last + 1, bottom)], style))?;
        }
    }
    Ok(())
}

/// Runs of consecutive values in sorted, distinct `columns`, as (first, last).
fn runs(columns: &[i32]) -> Vec<(i32, i32)> {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &c in columns {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == c => *last = c,
            _ => runs.push((c, c)),
        }
    }
    runs
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

/// The stroke attribute plotters writes for a gap marker.
fn marker_stroke() -> String {
    let RGBColor(r, g, b) = COLOR_GAP;
    format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"")
}

/// `svg` with `titles[i]` as the tooltip of the i-th detailed gap marker. The SVG backend
/// writes one element per line; a marker is a `<polyline>` in the gap colour (nothing else is
/// drawn as a line in it), so the markers are found in the order they were drawn.
pub(super) fn attach_titles(svg: String, titles: &[String]) -> String {
    if titles.is_empty() {
        return svg;
    }
    let stroke = marker_stroke();
    let mut titles = titles.iter();
    let mut out = String::with_capacity(svg.len() + titles.len() * 48);
    for line in svg.split_inclusive('\n') {
        let is_marker = line.starts_with("<polyline") && line.contains(&stroke);
        match (is_marker, line.trim_end().strip_suffix("/>")) {
            (true, Some(element)) => match titles.next() {
                Some(title) => {
                    out.push_str(element);
                    out.push_str("><title>");
                    escape_into(&mut out, title);
                    out.push_str("</title></polyline>\n");
                }
                None => out.push_str(line),
            },
            _ => out.push_str(line),
        }
    }
    out
}

/// Appends `text` with the XML special characters escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_columns_form_runs() {
        assert_eq!(runs(&[]), []);
        assert_eq!(runs(&[3]), [(3, 3)]);
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), [(1, 3), (7, 7), (9, 10)]);
    }

    #[test]
    fn tooltip_times_read_naturally() {
        assert_eq!(fmt_time(7.25), "7.25 s");
        assert_eq!(fmt_time(723.5), "12m 03.5s");
        assert_eq!(fmt_time(3.0 * 3600.0 + 12.0 * 60.0 + 5.0), "3h 12m 05s");
        assert_eq!(fmt_time(-2.0), "-2.00 s");
    }

    #[test]
    fn titles_go_to_the_markers_in_order() {
        let stroke = marker_stroke();
        let svg = format!(
            "<svg>\n<polyline fill=\"none\" {stroke} points=\"1,2 1,9 \"/>\n\
             <rect {stroke}/>\n<polyline fill=\"none\" stroke=\"#000000\" points=\"\"/>\n\
             <polyline fill=\"none\" {stroke} points=\"5,2 5,9 \"/>\n</svg>\n"
        );
        let out = attach_titles(svg, &["gap at 1.00 s".into(), "a < b".into()]);
        assert_eq!(out.matches("<title>").count(), 2);
        assert!(out.contains("points=\"1,2 1,9 \"><title>gap at 1.00 s</title></polyline>"));
        assert!(out.contains("points=\"5,2 5,9 \"><title>a &lt; b</title></polyline>"));
        assert!(out.contains(&format!("<rect {stroke}/>")));
        assert!(out.trim_end().ends_with("</svg>"));
    }
}
