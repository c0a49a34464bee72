//! The JSON the daemons write at the end of a run (`--stats-json`): the receiver's counters
//! and writing the file.

use crate::rt;
use crate::status::with_fields;
use crate::stream::LoopReport;
use engine::stats::{Side, StatsSnapshot};
use serde_json::{Value, json};

pub(crate) fn write_json(path: &Option<std::path::PathBuf>, v: &Value) -> Result<(), String> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())? + "\n";
        std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

pub(crate) fn receiver_json(
    s: &StatsSnapshot,
    rep: &LoopReport,
    cpu: f64,
    outcome: &rt::RtOutcome,
) -> Value {
    with_fields(
        json!(s.side(Side::Receiver)),
        json!({
            "role": "receiver",
            "allocations_rt": rep.allocations,
            "frees_rt": rep.frees,
            "periods": rep.periods,
            "cpu_seconds": cpu,
            "rt_fifo": outcome.fifo,
            "rt_pinned": outcome.pinned,
        }),
    )
}

pub(super) fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}
