//! The JSON the daemons write at the end of a run (`--stats-json`): the receiver's counters,
//! a tone's THD+N, and writing the file.

use crate::rt;
use crate::stream::LoopReport;
use engine::sim::fidelity::FidelityReport;
use engine::stats::StatsSnapshot;
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
    json!({
        "role": "receiver",
        "gaps": s.gaps,
        "target_frames": s.target_frames,
        "level_frames": s.level_frames,
        "lost_packets": s.lost_packets,
        "recovered_packets": s.recovered_packets,
        "nacks_sent": s.nacks_sent,
        "nack_bytes_sent": s.nack_bytes_sent,
        "concealed_frames": s.concealed_frames,
        "late_packets": s.late_packets,
        "duplicate_packets": s.duplicate_packets,
        "invalid_packets": s.invalid_packets,
        "foreign_packets": s.foreign_packets,
        "auth_failures": s.auth_failures,
        "replayed_packets": s.replayed_packets,
        "stale_packets": s.stale_packets,
        "device_lost": s.device_lost,
        "packets_received": s.packets_received,
        "resyncs": s.resyncs,
        "streams_ended": s.streams_ended,
        "xruns": s.xruns,
        "late_renders": s.late_renders,
        "drift_ppm": s.drift_ppm,
        "slip_drops": s.slip_drops,
        "slip_inserts": s.slip_inserts,
        "frames_played": s.frames_played,
        "allocations_rt": rep.allocations,
        "frees_rt": rep.frees,
        "periods": rep.periods,
        "cpu_seconds": cpu,
        "rt_fifo": outcome.fifo,
        "rt_pinned": outcome.pinned,
    })
}

/// THD+N of a tone, as `hil-tests` reports it.
pub(super) fn fidelity_json(f: &FidelityReport) -> Value {
    json!({
        "median": finite(f.thdn.median_db),
        "p95": finite(f.thdn.p95_db),
        "worst": finite(f.thdn.worst_db),
        "worst_with_startup": finite(f.thdn.worst_with_startup_db),
        "windows": f.thdn.windows,
        "silent_windows": f.thdn.silent_windows,
        "outlier_windows": f.thdn.outlier_windows,
        "tones_hz": std::iter::once(f.tone_hz).chain(f.second_tone_hz).collect::<Vec<_>>(),
    })
}

pub(super) fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}
