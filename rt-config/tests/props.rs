//! Every key of the schema: values in range pass, values out of range are rejected by a
//! message that names the key, the value and the allowed range, on the right line.

use proptest::prelude::*;
use rt_config::schema::{KEYS, Kind, check};

fn doc(section: &str, key: &str, value: &str) -> (String, usize) {
    if section.is_empty() {
        (format!("# netaudio\n{key} = {value}\n"), 2)
    } else {
        (format!("# netaudio\n[{section}]\n{key} = {value}\n"), 3)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn out_of_range_values_are_named(idx in 0..KEYS.len(), above in any::<bool>(), by in 1i64..1_000_000) {
        let spec = KEYS[idx];
        let value = match spec.kind {
            Kind::Int { min, max } => if above { max.saturating_add(by) } else { min.saturating_sub(by) }.to_string(),
            Kind::Number { min, max } => format!("{:.1}", if above { max + by as f64 } else { min - by as f64 }),
            Kind::Choice(_) => format!("\"nope{by}\""),
            Kind::Bool => format!("{by}"),
            Kind::Text => by.to_string(),
            Kind::TextList => format!("[{by}]"),
        };
        let (text, line) = doc(spec.section, spec.key, &value);
        let problems = check(&text, "t.toml");
        prop_assert_eq!(problems.len(), 1, "{:?}", problems);
        let p = &problems[0];
        let full = if spec.section.is_empty() { spec.key.to_string() } else { format!("{}.{}", spec.section, spec.key) };
        prop_assert_eq!(&p.key, &full);
        prop_assert_eq!(p.line, Some(line));
        let shown = value.trim_matches('"');
        prop_assert!(p.message.contains(shown), "{}", p);
    }

    #[test]
    fn in_range_values_pass(idx in 0..KEYS.len(), x in 0.0f64..=1.0) {
        let spec = KEYS[idx];
        let value = match spec.kind {
            Kind::Int { min, max } => ((min as f64 + x * (max - min) as f64).round() as i64).to_string(),
            Kind::Number { min, max } => format!("{}", min + x * (max - min)),
            Kind::Choice(c) => format!("\"{}\"", c[(x * (c.len() - 1) as f64).round() as usize]),
            Kind::Bool => (x > 0.5).to_string(),
            Kind::Text => "\"hw:CARD=CODEC,DEV=0\"".to_string(),
            Kind::TextList if x > 0.5 => "[\"kitchen:46000\", \"hall:46000\"]".to_string(),
            Kind::TextList => "\"turntable2.local:46000\"".to_string(),
        };
        let (text, _) = doc(spec.section, spec.key, &value);
        let problems = check(&text, "t.toml");
        prop_assert!(problems.is_empty(), "{} = {}: {:?}", spec.key, value, problems);
    }
}
