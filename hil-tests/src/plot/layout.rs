//! Geometry, colours and fonts of the plot, and the panels: each panel is one plotters chart
//! with its grid, value labels and axis title, sharing the time axis with the others.
//!
//! Panels sit at fixed pixel rows, one above the other, all with the same left and right edge
//! so their time axes line up; only the lowest carries the time labels.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{Axis, TimeAxis};

/// The drawing area of the whole document.
pub(super) type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// One panel: time in seconds against its value.
pub(super) type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// A linear axis whose grid lines and labels sit exactly on the ticks the `axis` module chose: plotters'
/// own choice knows nothing of hours, and the value axes' bounds are already round.
#[derive(Clone)]
pub(super) struct Ticked {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(lo: f64, hi: f64, ticks: &[f64]) -> Ticked {
        Ticked {
            linear: (lo..hi).into(),
            ticks: ticks.to_vec(),
        }
    }
}

impl Ranged for Ticked {
    // Labels always come from the panel's own formatters.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Only the ticks, and no finer grid between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// What drawing returns; the SVG backend only fails on a broken layout.
pub(super) type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

pub(super) const WIDTH: u32 = 1000;
/// Height without the fidelity panels.
pub(super) const HEIGHT: u32 = 620;
pub(super) const PLOT_LEFT: i32 = 80;
pub(super) const PLOT_RIGHT: i32 = 970;

/// Pixel rows of one panel's plotting area.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rows {
    pub(super) y0: i32,
    pub(super) y1: i32,
}

pub(super) const TOP: Rows = Rows { y0: 84, y1: 392 };
pub(super) const BOTTOM: Rows = Rows { y0: 428, y1: 544 };
/// The fidelity panels, under the others when drawn.
pub(super) const THDN: Rows = Rows { y0: 580, y1: 696 };
pub(super) const DEV: Rows = Rows { y0: 732, y1: 848 };
/// Room under the lowest panel for the time axis.
const FOOTER: i32 = HEIGHT as i32 - BOTTOM.y1;
/// Height of the time labels and the axis title under the lowest panel; the rest of the
/// footer stays blank.
const TIME_LABELS: i32 = 48;
/// Blank left of the value axis' title.
const TITLE_MARGIN: i32 = 14;

/// The skew panel, under all the others.
pub(super) fn skew_rows(fidelity: bool) -> Rows {
    let above = if fidelity { DEV } else { BOTTOM };
    let gap = THDN.y0 - BOTTOM.y1;
    Rows {
        y0: above.y1 + gap,
        y1: above.y1 + gap + (BOTTOM.y1 - BOTTOM.y0),
    }
}

/// Document height: the fidelity and skew panels make it taller.
pub(super) fn height(fidelity: bool, skew: bool) -> u32 {
    let last = match (fidelity, skew) {
        (f, true) => skew_rows(f),
        (true, false) => DEV,
        (false, false) => BOTTOM,
    };
    (last.y1 + FOOTER) as u32
}

pub(super) const COLOR_LATENCY: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
pub(super) const COLOR_LEVEL: RGBColor = RGBColor(0xe0, 0x7b, 0x00);
pub(super) const COLOR_RATIO: RGBColor = RGBColor(0x0f, 0x7b, 0x6c);
pub(super) const COLOR_THDN: RGBColor = RGBColor(0x7b, 0x3f, 0xa0);
pub(super) const COLOR_DEV: RGBColor = RGBColor(0xa0, 0x52, 0x2d);
pub(super) const COLOR_TARGET: RGBColor = RGBColor(0x55, 0x55, 0x55);
pub(super) const COLOR_GAP: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const COLOR_GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const COLOR_FRAME: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
pub(super) const COLOR_TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub(super) const COLOR_MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
const COLOR_NO_DATA: RGBColor = RGBColor(0x99, 0x99, 0x99);

const FAMILY: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// A font of `px` pixels. The SVG backend writes a font's size divided by 1.24 (its estimate
/// of the em box); asking for 1.24 times as much gives the size wanted in the document.
pub(super) fn font(px: f64, color: RGBColor) -> TextStyle<'static> {
    styled(px, color, FontStyle::Normal)
}

/// `font` in bold or italic.
pub(super) fn styled(px: f64, color: RGBColor, style: FontStyle) -> TextStyle<'static> {
    FontDesc::new(FontFamily::Name(FAMILY), px * 1.24, style).color(&color)
}

/// Text as it may appear in the document: XML 1.0 allows no control characters.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// One panel at `rows`: grid on the time ticks and on `axis`'s ticks, value labels, the axis
/// title on the left, and the time labels under it if it is the lowest.
pub(super) fn panel<'a, 'b>(
    root: &'a Root<'b>,
    rows: Rows,
    time: &TimeAxis,
    axis: &Axis,
    title: &str,
    lowest: bool,
) -> Result<Chart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
    let label_area = if lowest { TIME_LABELS } else { 0 };
    let (width, height) = root.dim_in_pixel();
    let mut chart = ChartBuilder::on(root)
        .margin_top(rows.y0)
        .margin_bottom(height as i32 - rows.y1 - label_area)
        .margin_right(width as i32 - PLOT_RIGHT)
        .margin_left(TITLE_MARGIN)
        .y_label_area_size(PLOT_LEFT - TITLE_MARGIN)
        .x_label_area_size(label_area)
        .build_cartesian_2d(
            Ticked::new(time.lo, time.hi, &time.ticks_s),
            Ticked::new(axis.lo, axis.hi, &axis.ticks),
        )?;
    let time_label = |t: &f64| time.label(*t);
    let value_label = |v: &f64| axis.label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.bold_line_style(COLOR_GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(COLOR_FRAME)
        .set_all_tick_mark_size(0)
        .x_label_formatter(&time_label)
        .y_label_formatter(&value_label)
        .x_label_style(font(12.0, COLOR_TEXT))
        .y_label_style(font(11.0, COLOR_MUTED))
        .y_desc(title)
        .axis_desc_style(font(12.0, COLOR_MUTED));
    if lowest {
        mesh.x_desc("audio time");
    }
    mesh.draw()?;
    Ok(chart)
}

/// The panel's frame, drawn last so it sits on top of everything inside.
pub(super) fn frame(chart: &Chart<'_, '_>) -> DrawResult {
    let (x, y) = (chart.x_range(), chart.y_range());
    chart.plotting_area().draw(&Rectangle::new(
        [(x.start, y.start), (x.end, y.end)],
        COLOR_FRAME.stroke_width(1),
    ))
}

/// Grey "no data" note in the middle of a panel that has nothing to show.
pub(super) fn no_data(root: &Root<'_>, rows: Rows) -> DrawResult {
    let (cx, cy) = ((PLOT_LEFT + PLOT_RIGHT) / 2, (rows.y0 + rows.y1) / 2);
    root.draw(&Rectangle::new(
        [(cx - 40, cy - 12), (cx + 40, cy + 12)],
        WHITE.filled(),
    ))?;
    let style =
        styled(14.0, COLOR_NO_DATA, FontStyle::Italic).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new("no data", (cx, cy), style))
}
