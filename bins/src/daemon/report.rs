//! The JSON the daemons write at the end of a run (`--stats-json`): their counters and writing
//! the file.

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

/// A daemon's `--stats-json`: every counter of its side, and what its realtime thread reported;
/// a sender serving several receivers also lists those it heard from (`receivers`: address,
/// NACKs taken, packets sent again to it).
pub(crate) fn stats_json(
    side: Side,
    s: &StatsSnapshot,
    rep: &LoopReport,
    cpu: f64,
    outcome: &rt::RtOutcome,
) -> Value {
    let mut j = with_fields(
        json!(s.side(side)),
        json!({
            "role": match side {
                Side::Sender => "sender",
                Side::Receiver => "receiver",
            },
            "allocations_rt": rep.allocations,
            "frees_rt": rep.frees,
            "periods": rep.periods,
            "cpu_seconds": cpu,
            "rt_fifo": outcome.fifo,
            "rt_pinned": outcome.pinned,
        }),
    );
    if !rep.peers.is_empty() {
        let peers: Vec<Value> = rep
            .peers
            .iter()
            .map(|p| json!({"address": p.addr.to_string(), "nacks": p.nacks, "repairs": p.repairs}))
            .collect();
        j["receivers"] = json!(peers);
    }
    j
}

pub(super) fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_daemon_reports_its_sides_counters_and_its_loop() {
        let s = StatsSnapshot {
            gaps: 2,
            packets_sent: 9,
            xruns: 1,
            drift_ppm: 4.5,
            ..Default::default()
        };
        let rep = LoopReport {
            allocations: 0,
            frees: 0,
            periods: 100,
            ..Default::default()
        };
        let outcome = rt::RtOutcome {
            fifo: true,
            ..Default::default()
        };
        let rx = stats_json(Side::Receiver, &s, &rep, 0.5, &outcome);
        assert_eq!(rx["role"], "receiver");
        assert_eq!(
            (rx["gaps"].clone(), rx["drift_ppm"].clone()),
            (json!(2), json!(4.5))
        );
        assert_eq!(
            (rx["periods"].clone(), rx["rt_fifo"].clone()),
            (json!(100), json!(true))
        );
        assert!(rx.get("packets_sent").is_none(), "{rx}");
        let tx = stats_json(Side::Sender, &s, &rep, 0.5, &outcome);
        assert_eq!(tx["role"], "sender");
        assert_eq!(
            (tx["packets_sent"].clone(), tx["xruns"].clone()),
            (json!(9), json!(1))
        );
        // A sender plays nothing: readers take its xruns for its gaps.
        assert!(tx.get("gaps").is_none(), "{tx}");
        assert!(tx.get("receivers").is_none(), "one receiver: no list");
        let mut rep = rep;
        let (i, _) = rep.peers.index("192.0.2.1:46000".parse().unwrap(), 1);
        rep.peers.count(i, 3);
        let tx = stats_json(Side::Sender, &s, &rep, 0.5, &outcome);
        assert_eq!(
            tx["receivers"],
            json!([{"address": "192.0.2.1:46000", "nacks": 1, "repairs": 3}])
        );
    }
}
