//! Durations on the command line (`netaudio demo --duration`, the harness's `--duration`,
//! `--jitter-ramp`): one parser for every tool.

use humantime::DurationError;

/// The forms a duration takes, for messages.
const FORMS: &str = "use e.g. 30s, 10m, 1h30m, 24h, 1.5s, 250ms, or a number of seconds";

/// Seconds in `s`: a number of seconds (`90`, `1.5`) or durations with units, concatenated or
/// spaced (`30s`, `10m`, `1h30m`, `1h 30m`, `2d`, `250ms`, `1.5s`; the units of
/// [`humantime::parse_duration`]). Negative and non-finite values are refused.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        return if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("bad duration {s:?}: {FORMS}"))
        };
    }
    humantime::parse_duration(t)
        .map(|d| d.as_secs_f64())
        .map_err(|e| match e {
            DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("bad duration {s:?}: a unit is missing after {value}; {FORMS}")
            }
            DurationError::UnknownUnit { unit, .. } => {
                format!("bad duration {s:?}: unknown unit {unit:?}; {FORMS}")
            }
            DurationError::NumberOverflow => format!("bad duration {s:?}: too long; {FORMS}"),
            _ => format!("bad duration {s:?}: {FORMS}"),
        })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn the_forms_both_tools_took_parse() {
        assert_eq!(parse_duration("24h"), Ok(86_400.0));
        assert_eq!(parse_duration("1h30m"), Ok(5_400.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("250ms"), Ok(0.25));
        assert_eq!(parse_duration("60s"), Ok(60.0));
        assert_eq!(parse_duration("10m"), Ok(600.0));
        assert_eq!(parse_duration("1h"), Ok(3_600.0));
        assert_eq!(parse_duration("2d"), Ok(172_800.0));
        assert_eq!(parse_duration("1.5s"), Ok(1.5));
        assert_eq!(parse_duration("1.5"), Ok(1.5));
        assert_eq!(parse_duration("0"), Ok(0.0));
        assert_eq!(parse_duration("0s"), Ok(0.0));
        assert_eq!(parse_duration(" 30s "), Ok(30.0));
    }

    #[test]
    fn bad_durations_name_the_value_and_the_forms() {
        for bad in ["5x", "h", "-5s", "-1", "inf", "NaN", "", "1h30"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("bad duration {bad:?}"))
                    && e.contains("30s")
                    && e.contains("24h"),
                "{e}"
            );
        }
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
    }
}
