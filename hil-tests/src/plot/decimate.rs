//! Reduction of a long series to what a pixel column can show.
//!
//! A day-long trace holds far more points than the plot is wide. Each pixel column keeps only
//! its minimum and maximum (in time order), so plotters receives at most two points per column
//! and a single spike still shows. NaN values (unknown at that time) are skipped; where they
//! leave a hole of at least one whole pixel column the line is broken there.

use super::axis::VALUE_LIMIT;

/// Pieces of a polyline in data coordinates (seconds, value); a piece of one point has no
/// neighbour to join and is drawn as a dot.
pub(super) type Polyline = Vec<Vec<(f64, f64)>>;

/// Reduces a series to at most two points (its minimum and maximum, in time order) per pixel
/// column, `column` giving the column of a time. Values are clamped to ±`VALUE_LIMIT`.
pub(super) fn decimate(
    points: impl Iterator<Item = (f64, f64)>,
    column: impl Fn(f64) -> i64,
) -> Polyline {
    /// Points of the current pixel column: (index, t, v) of its minimum and maximum.
    struct Bucket {
        col: i64,
        min: (usize, f64, f64),
        max: (usize, f64, f64),
    }

    fn flush(bucket: Option<Bucket>, line: &mut Vec<(f64, f64)>) {
        if let Some(b) = bucket {
            let (first, second) = if b.min.0 <= b.max.0 {
                (b.min, b.max)
            } else {
                (b.max, b.min)
            };
            line.push((first.1, first.2));
            if second.0 != first.0 {
                line.push((second.1, second.2));
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
        let col = column(t);
        let breaks = hole && last_col.is_some_and(|c| (col - c).abs() >= 2);
        hole = false;
        if breaks || bucket.as_ref().is_some_and(|b| b.col != col) {
            flush(bucket.take(), &mut line);
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
    flush(bucket, &mut line);
    if !line.is_empty() {
        pieces.push(line);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 890 columns over 0..1000 s, as a plot panel maps them.
    fn column(t: f64) -> i64 {
        (t / 1000.0 * 890.0).floor() as i64
    }

    #[test]
    fn keeps_at_most_two_points_per_column_and_the_extremes() {
        let n = 1_000_000;
        let points = (0..n).map(|i| {
            let t = i as f64 * 1000.0 / n as f64;
            let v = if i == 654_321 {
                250.0
            } else if i == 123_456 {
                -80.0
            } else {
                12.0 + (t / 50.0).sin()
            };
            (t, v)
        });
        let line = decimate(points, column);
        assert_eq!(line.len(), 1);
        let kept = &line[0];
        assert!(kept.len() <= 2 * 890, "{} points", kept.len());
        assert!(kept.iter().any(|&(_, v)| v == 250.0), "the spike is kept");
        assert!(kept.iter().any(|&(_, v)| v == -80.0), "the dip is kept");
        assert!(kept.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
    }

    #[test]
    fn nan_holes_break_the_line_and_lone_points_stay() {
        let nan = f64::NAN;
        // A hole of two samples 10 s apart spans several columns: two pieces.
        let points =
            (0..10).map(|i| (i as f64 * 10.0, if (4..6).contains(&i) { nan } else { 1.0 }));
        let line = decimate(points, column);
        assert_eq!(line.len(), 2, "{line:?}");
        // A NaN within one column does not break the line.
        let points = [(0.0, 1.0), (0.1, nan), (0.2, 2.0)].into_iter();
        assert_eq!(decimate(points, column).len(), 1);
        // A single point is one piece of one point (drawn as a dot).
        let line = decimate([(5.0, 3.0)].into_iter(), column);
        assert_eq!(line, vec![vec![(5.0, 3.0)]]);
        // Nothing finite: nothing to draw.
        let points = [(nan, 1.0), (1.0, nan), (2.0, f64::INFINITY)].into_iter();
        assert!(decimate(points, column).is_empty());
        // Values are clamped.
        let line = decimate([(1.0, f64::MAX)].into_iter(), column);
        assert_eq!(line[0][0].1, VALUE_LIMIT);
    }
}
