//! The skew panel: how far apart the receivers play the same frame, over time. Each receiver's
//! skew against receiver 0 is drawn as the range it took over each point of the series (in its
//! own colour), so a steady offset reads as a line and jitter as its thickness.

use plotters::prelude::*;

use super::axis::{MAX_BOTTOM_TICKS, TimeAxis, nice_axis, value_range};
use super::decimate::decimate;
use super::layout::{self, DrawResult, PLOT_LEFT, PLOT_RIGHT, Root, Rows};
use super::{GapMark, columns, legend, series};

/// Colours of receivers 1, 2, ... (repeating beyond eight), none of the other panels'.
pub(super) const RECEIVER_COLORS: [RGBColor; 8] = [
    RGBColor(0x2e, 0x9d, 0x48),
    RGBColor(0xd6, 0x4d, 0xa8),
    RGBColor(0x17, 0xa2, 0xb8),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x39, 0x3b, 0x79),
    RGBColor(0xe3, 0x77, 0xc2),
];

/// The skew panel's data.
pub struct SkewPanel<'a> {
    /// The meter's series, in time order.
    pub points: &'a [engine::sim::skew::SkewPoint],
    /// Receivers in the run.
    pub receivers: usize,
}

/// Draws the panel at `rows`, with its caption and gap markers.
pub(super) fn draw(
    root: &Root<'_>,
    s: &SkewPanel<'_>,
    rows: Rows,
    time: &TimeAxis,
    gaps: &[GapMark],
    titles: &mut Vec<String>,
) -> DrawResult {
    let receivers = s.receivers.min(engine::sim::MAX_RECEIVERS);
    let axis = nice_axis(
        value_range(
            s.points
                .iter()
                .flat_map(|p| (1..receivers).flat_map(|r| [p.min_us[r], p.max_us[r]])),
        ),
        MAX_BOTTOM_TICKS,
    );
    let mut chart = layout::panel(root, rows, time, &axis, "skew (µs)", true)?;
    super::gaps::draw(root, &mut chart, gaps, titles)?;
    let mut empty = true;
    for r in 1..receivers {
        let line = decimate(
            s.points
                .iter()
                .flat_map(|p| [(p.t_s, p.min_us[r]), (p.t_s, p.max_us[r])]),
            columns(&chart),
        );
        empty &= line.is_empty();
        series::draw(&mut chart, &line, color(r), 1)?;
    }
    if empty {
        layout::no_data(root, rows)?;
    }
    layout::frame(&chart)?;
    legend::caption(
        root,
        rows.y0,
        color(1),
        "skew against receiver 0: when each receiver's DAC outputs the same frame (µs)",
    )?;
    // The receivers' colours, right-aligned above the panel.
    let mut x = PLOT_RIGHT - 60 * (receivers as i32 - 1);
    for r in 1..receivers {
        x = x.max(PLOT_LEFT);
        legend::swatch(root, x, rows.y0 - 8, color(r), &format!("rx {r}"))?;
        x += 60;
    }
    Ok(())
}

/// Receiver `r`'s colour.
pub(super) fn color(r: usize) -> RGBColor {
    RECEIVER_COLORS[(r.max(1) - 1) % RECEIVER_COLORS.len()]
}
