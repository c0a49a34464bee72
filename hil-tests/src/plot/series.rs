//! Drawing the decimated series and the dashed reference lines into a panel.

use plotters::prelude::*;

use super::decimate::Polyline;
use super::layout::{Chart, DrawResult};

/// Radius of the dot standing for a point without neighbours, pixels.
const DOT_RADIUS: u32 = 2;
/// Dash and space of a reference line, pixels.
const DASH: (i32, i32) = (7, 5);

/// One decimated series: a line per piece, a ring for a piece of a single point (no neighbour
/// to join, yet it must not vanish). Points beyond the panel's range are drawn at its edge.
pub(super) fn draw(
    chart: &mut Chart<'_, '_>,
    line: &Polyline,
    color: RGBColor,
    width: u32,
) -> DrawResult {
    let (x, y) = (chart.x_range(), chart.y_range());
    let clamp = |&(t, v): &(f64, f64)| (t.clamp(x.start, x.end), v.clamp(y.start, y.end));
    let style = color.stroke_width(width);
    for piece in line {
        if let [point] = piece.as_slice() {
            chart.draw_series(std::iter::once(Circle::new(
                clamp(point),
                DOT_RADIUS,
                style,
            )))?;
        } else {
            chart.draw_series(LineSeries::new(piece.iter().map(clamp), style))?;
        }
    }
    Ok(())
}

/// A dashed horizontal line across the panel at `value` (at its edge if out of range).
pub(super) fn reference(chart: &mut Chart<'_, '_>, value: f64, color: RGBColor) -> DrawResult {
    let (x, y) = (chart.x_range(), chart.y_range());
    let value = value.clamp(y.start, y.end);
    chart.draw_series(DashedLineSeries::new(
        [(x.start, value), (x.end, value)],
        DASH.0,
        DASH.1,
        color.stroke_width(1),
    ))?;
    Ok(())
}
