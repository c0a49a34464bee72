//! Text around the panels: the title block, the legend row above the top panel (its series on
//! the left, the gap count on the right) and the caption above each lower panel, which doubles
//! as its legend.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::gaps::GAP_DETAIL_LIMIT;
use super::layout::{
    COLOR_GAP, COLOR_MUTED, COLOR_TEXT, DrawResult, PLOT_LEFT, PLOT_RIGHT, Root, font, printable,
    styled,
};

/// Length of a legend's colour sample, pixels.
const SAMPLE: i32 = 22;
/// From a sample's start to its text.
const SAMPLE_TO_TEXT: i32 = 28;

/// Title and subtitle at the top left.
pub(super) fn title_block(root: &Root<'_>, title: &str, subtitle: &str) -> DrawResult {
    let bottom_left = Pos::new(HPos::Left, VPos::Bottom);
    root.draw(&Text::new(
        printable(title),
        (20, 32),
        styled(18.0, COLOR_TEXT, FontStyle::Bold).pos(bottom_left),
    ))?;
    root.draw(&Text::new(
        printable(subtitle),
        (20, 54),
        font(13.0, COLOR_MUTED).pos(bottom_left),
    ))
}

/// A legend entry at `x`, its text's baseline near `y`: a colour sample (dashed if `dashed`)
/// and the text. Returns the width it takes.
fn entry(
    root: &Root<'_>,
    x: i32,
    y: i32,
    color: RGBColor,
    dashed: bool,
    text: &str,
) -> Result<i32, DrawingAreaErrorKind<std::io::Error>> {
    // The sample is a thin filled bar rather than a line, so that the only lines in a series'
    // colour are the series themselves.
    let (y0, y1) = (y - 6, y - 3);
    if dashed {
        for start in (0..SAMPLE).step_by(8) {
            let end = (start + 5).min(SAMPLE);
            root.draw(&Rectangle::new(
                [(x + start, y0), (x + end, y1)],
                color.filled(),
            ))?;
        }
    } else {
        root.draw(&Rectangle::new([(x, y0), (x + SAMPLE, y1)], color.filled()))?;
    }
    let style = font(12.0, COLOR_TEXT).pos(Pos::new(HPos::Left, VPos::Bottom));
    root.draw(&Text::new(
        text.to_owned(),
        (x + SAMPLE_TO_TEXT, y + 3),
        style.clone(),
    ))?;
    let (w, _) = root.estimate_text_size(text, &style)?;
    Ok(SAMPLE_TO_TEXT + w as i32)
}

/// Legend row above the top panel (whose top is at `top`): the series and the target latency
/// on the left, the gap count on the right.
pub(super) fn top_row(
    root: &Root<'_>,
    top: i32,
    entries: &[(RGBColor, bool, &str)],
    gap_count: usize,
) -> DrawResult {
    let y = top - 10;
    let mut x = PLOT_LEFT;
    for &(color, dashed, text) in entries {
        x += entry(root, x, y, color, dashed, text)? + 18;
    }

    let label = match gap_count {
        0 => "no gaps".to_owned(),
        n if n > GAP_DETAIL_LIMIT => format!("gaps: {n} (merged per pixel column)"),
        n => format!("gaps: {n}"),
    };
    // Green when the run had none, red otherwise.
    let (fill, stroke, text) = if gap_count == 0 {
        (
            RGBColor(0xe3, 0xf4, 0xe6),
            RGBColor(0x2e, 0x9d, 0x48),
            RGBColor(0x1d, 0x7a, 0x35),
        )
    } else {
        (RGBColor(0xfd, 0xe7, 0xe7), COLOR_GAP, COLOR_GAP)
    };
    let style = styled(13.0, text, FontStyle::Bold).pos(Pos::new(HPos::Center, VPos::Center));
    let (w, _) = root.estimate_text_size(&label, &style)?;
    // The estimate is for regular text; bold runs wider.
    let w = w as i32 * 11 / 10 + 20;
    let (x0, y0, y1) = (PLOT_RIGHT - w, y - 15, y + 5);
    root.draw(&Rectangle::new([(x0, y0), (PLOT_RIGHT, y1)], fill.filled()))?;
    root.draw(&Rectangle::new(
        [(x0, y0), (PLOT_RIGHT, y1)],
        stroke.stroke_width(1),
    ))?;
    root.draw(&Text::new(
        label,
        (PLOT_RIGHT - w / 2, (y0 + y1) / 2),
        style,
    ))
}

/// A small legend entry at `x`, its baseline near `y`: a colour sample and a short text.
pub(super) fn swatch(root: &Root<'_>, x: i32, y: i32, color: RGBColor, text: &str) -> DrawResult {
    entry(root, x, y, color, false, text).map(|_| ())
}

/// Caption above a lower panel (whose top is at `top`), with its series' colour.
pub(super) fn caption(root: &Root<'_>, top: i32, color: RGBColor, text: &str) -> DrawResult {
    entry(root, PLOT_LEFT, top - 8, color, false, &printable(text)).map(|_| ())
}
