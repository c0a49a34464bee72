//! Virtual device names: `virtual[:opt,...]` parsed into [`VirtualOptions`] (clock offset,
//! source signal, simulated unplug) and the `record=FILE` option; and the options that name a
//! source signal.
//!
//! Parsed at open, never on a realtime thread, except [`Unplug::check`] (two clock reads and
//! comparisons: no allocation, no lock, no blocking).

use crate::net::monotonic_ns;
use crate::pcm::PcmError;
use engine::sim::signal::SourceKind;

/// Options of a virtual device name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VirtualOptions {
    /// Clock offset, ppm.
    pub ppm: f64,
    /// Signal a capture device produces.
    pub source: SourceKind,
    /// Simulated unplug: (seconds after opening, seconds gone).
    pub unplug: Option<(f64, f64)>,
}

/// Seconds from `5s`, `1.5`, `300ms`.
fn parse_seconds(v: &str) -> Option<f64> {
    let (num, mul) = match v.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (v.strip_suffix('s').unwrap_or(v), 1.0),
    };
    num.parse::<f64>()
        .ok()
        .map(|x| x * mul)
        .filter(|x| x.is_finite() && *x >= 0.0 && *x <= 86_400.0)
}

/// When a simulated unplug happens, on `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Unplug {
    from_ns: u64,
    until_ns: u64,
}

impl Unplug {
    pub(super) fn new(opts: &VirtualOptions) -> Unplug {
        let now = monotonic_ns();
        match opts.unplug {
            Some((at, gone)) => {
                let from_ns = now + (at * 1e9) as u64;
                Unplug {
                    from_ns,
                    until_ns: from_ns + (gone * 1e9) as u64,
                }
            }
            None => Unplug::default(),
        }
    }

    /// `Err(Gone)` while unplugged.
    pub(super) fn check(&self) -> Result<(), PcmError> {
        let now = monotonic_ns();
        if now >= self.from_ns && now < self.until_ns {
            Err(PcmError::Gone(libc::ENODEV))
        } else {
            Ok(())
        }
    }
}

/// Parses `virtual[:ppm=N][,sine[=HZ]|,twotone[=F1+F2]]`; `None` when `name` is not a virtual
/// device.
pub fn parse_name(name: &str) -> Option<Result<VirtualOptions, String>> {
    let rest = name.strip_prefix("virtual")?;
    let mut o = VirtualOptions {
        ppm: 0.0,
        source: SourceKind::Ramp,
        unplug: None,
    };
    let opts = match rest.strip_prefix(':') {
        Some(r) => r,
        None if rest.is_empty() => "",
        None => return None,
    };
    for opt in opts.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        let r = match k {
            "ppm" => v
                .parse::<f64>()
                .ok()
                .filter(|p| p.abs() <= 5000.0)
                .map(|p| o.ppm = p),
            "sine" => {
                let hz = if v.is_empty() {
                    Some(997.0)
                } else {
                    v.parse().ok()
                };
                hz.map(|freq_hz| o.source = SourceKind::Sine { freq_hz })
            }
            "twotone" => {
                let spec = if v.is_empty() {
                    "twotone".to_string()
                } else {
                    format!("twotone:{}", v.replacen('+', ",", 1))
                };
                SourceKind::from_spec(&spec)
                    .ok()
                    .map(|source| o.source = source)
            }
            "ramp" => {
                o.source = SourceKind::Ramp;
                Some(())
            }
            "unplug" => v.split_once('+').and_then(|(at, gone)| {
                let w = (parse_seconds(at)?, parse_seconds(gone)?);
                o.unplug = Some(w);
                Some(())
            }),
            // The path itself is read by `record_path`.
            "record" => (!v.is_empty()).then_some(()),
            _ => None,
        };
        if r.is_none() {
            return Some(Err(format!(
                "bad virtual device option {opt:?} in {name:?}: use virtual:ppm=N (-5000..5000), \
                 virtual:sine=HZ, virtual:twotone=F1+F2, virtual:ramp, virtual:unplug=AT+FOR (e.g. unplug=5s+2s) \
                 or virtual:record=FILE"
            )));
        }
    }
    Some(Ok(o))
}

/// Seconds of audio a recording playback device keeps.
pub const RECORD_SECONDS: usize = 60;

/// The `record=FILE` option of a virtual device name, if any.
pub fn record_path(name: &str) -> Option<std::path::PathBuf> {
    let opts = name.strip_prefix("virtual:")?;
    opts.split(',')
        .find_map(|o| o.strip_prefix("record="))
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
}

/// The device-name options that make a virtual capture device play `source`, e.g. `,sine=997`.
pub fn source_option(source: SourceKind) -> String {
    match source {
        SourceKind::Ramp => String::new(),
        SourceKind::Sine { freq_hz } => format!(",sine={freq_hz}"),
        SourceKind::TwoTone { f1_hz, f2_hz } => format!(",twotone={f1_hz}+{f2_hz}"),
    }
}
