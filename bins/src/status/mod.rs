//! Live status of a running daemon.
//!
//! The daemon serves a snapshot of its counters as one JSON line to every client that connects
//! to its unix socket (and, when asked, as Prometheus text on a localhost TCP port). `netaudio
//! status` connects, and either prints the JSON (`--json`) or redraws a one-screen meter. When
//! asked (`[status] http`), it also serves a page a person reads at a glance (`web`), with the
//! gap log and the plot's history the housekeeping side keeps (`journal`).
//!
//! The server runs on a normal thread and only loads atomics: the realtime threads never see it.
//! The one part they call is the level meter (`meter`): [`Meter::measure`], once per period,
//! with its own realtime contract (no allocation, no lock, no syscall).

pub mod http;
pub mod journal;
mod meter;
mod receivers;
pub mod web;

pub use journal::Journal;
pub use meter::{METER_CHANNELS, Meter};
pub use receivers::{LiveReceiver, LiveReceivers};

use engine::stats::{Stats, StatsSnapshot};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Where a daemon of `role` (`sender`/`receiver`) listens by default: `/run/netaudio/` when
/// it exists and is writable (systemd's RuntimeDirectory), else `/tmp`.
pub fn default_socket(role: &str) -> PathBuf {
    let run = Path::new("/run/netaudio");
    let writable = run.is_dir()
        && std::ffi::CString::new("/run/netaudio")
            // SAFETY: access reads a NUL-terminated path.
            .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
    if writable {
        run.join(format!("{role}.sock"))
    } else {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("netaudio-{uid}-{role}.sock"))
    }
}

/// What the status server knows.
#[derive(Clone)]
pub struct Source {
    /// `sender` or `receiver`.
    pub role: &'static str,
    /// Stream format.
    pub format: engine::StreamFormat,
    /// Device name.
    pub device: String,
    /// Peer or listen address.
    pub address: String,
    /// The live counters.
    pub stats: Arc<Stats>,
    /// The live peaks.
    pub meter: Arc<Meter>,
    /// When the daemon started.
    pub started: Instant,
    /// Packets are authenticated with a key file (only this is shown of it, never the key).
    pub keyed: bool,
    /// A sender: the receivers it serves, live (see [`LiveReceivers`]).
    pub receivers: Option<Arc<LiveReceivers>>,
}

impl Source {
    /// The snapshot served to clients.
    pub fn snapshot(&self) -> Value {
        let s: StatsSnapshot = self.stats.snapshot();
        let rate = self.format.rate as f64;
        // Every counter by its name, and what a screen reads in milliseconds.
        let mut v = with_fields(
            json!(s),
            json!({
            "role": self.role,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "device": self.device,
            "address": self.address,
            "rate": self.format.rate,
            "channels": self.format.channels,
            "format": self.format.sample.name(),
            "peaks_dbfs": self.meter.peaks_db(self.format.channels as usize),
            "rms_dbfs": self.meter.rms_db(self.format.channels as usize),
            "keyed": self.keyed,
            "buffer_ms": s.level_frames * 1000.0 / rate,
            "target_ms": s.target_frames * 1000.0 / rate,
            "concealed_ms": s.concealed_frames as f64 * 1000.0 / rate,
            "correction_ppm": s.ratio_ppm,
            }),
        );
        if let Some(r) = &self.receivers {
            v["receivers"] = r.json(&self.address);
        }
        v
    }

    /// The snapshot as Prometheus text.
    pub fn prometheus(&self) -> String {
        let v = self.snapshot();
        let mut out = String::new();
        for (k, val) in v.as_object().into_iter().flatten() {
            if let Some(x) = val.as_f64() {
                out.push_str(&format!("netaudio_{k}{{role=\"{}\"}} {x}\n", self.role));
            }
        }
        out
    }
}

/// `counters` (a serialised [`StatsSnapshot`], or one side of it) with the fields of `extra`,
/// which win a name they share.
pub fn with_fields(counters: Value, extra: Value) -> Value {
    let mut v = counters;
    if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
        o.extend(extra);
    }
    v
}

/// Serves snapshots on `path` (and Prometheus text on `metrics` when given) until `stop`.
pub fn serve(
    source: Source,
    path: PathBuf,
    metrics: Option<String>,
    stop: &'static AtomicBool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot open the status socket {}: {e}", path.display()),
        )
    })?;
    listener.set_nonblocking(true)?;
    let tcp = match metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(&addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
            })?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    std::thread::Builder::new()
        .name("na-status".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                let mut busy = false;
                if let Ok((mut c, _)) = listener.accept() {
                    busy = true;
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = writeln!(c, "{}", source.snapshot());
                }
                if let Some(l) = &tcp
                    && let Ok((mut c, _)) = l.accept()
                {
                    busy = true;
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut req = [0u8; 1024];
                    let _ = c.read(&mut req);
                    let body = source.prometheus();
                    let _ = write!(
                        c,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
                if !busy {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = std::fs::remove_file(&path);
        })
}

/// Reads one snapshot from a daemon's socket.
pub fn fetch(path: &Path) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "no netaudio daemon answers on {} ({e}); is `netaudio send` or `netaudio recv` \
             running? Give its socket with --socket",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    serde_json::from_str(text.trim()).map_err(|e| format!("bad status from the daemon: {e}"))
}

fn bar(db: f64) -> String {
    let n = ((db + 60.0) / 60.0 * 30.0).clamp(0.0, 30.0) as usize;
    format!("{}{}", "#".repeat(n), ".".repeat(30 - n))
}

/// The one-screen meter for a snapshot.
pub fn render(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut s = format!(
        "netaudio {} — {} — {} Hz {} ch {} — {} — up {:.0} s\n\n",
        v["role"].as_str().unwrap_or("?"),
        v["device"].as_str().unwrap_or("?"),
        u("rate"),
        u("channels"),
        v["format"].as_str().unwrap_or("?"),
        v["address"].as_str().unwrap_or("?"),
        f("uptime_s"),
    );
    for (c, db) in v["peaks_dbfs"].as_array().into_iter().flatten().enumerate() {
        let db = db.as_f64().unwrap_or(-120.0);
        s.push_str(&format!("  ch{:<2} [{}] {:6.1} dBFS\n", c + 1, bar(db), db));
    }
    if v["role"] == "receiver" {
        s.push_str(&format!(
            "\n  buffer   {:7.2} ms (target {:.2} ms)\n  drift    {:+7.1} ppm (correcting {:+.1})\n  \
             packets  {} received, {} lost, {} recovered, {} late, {} duplicate, {} invalid\n  \
             recovery {} NACKs sent\n  \
             refused  {} bad or missing tags, {} replayed, {} stale\n  \
             gaps     {}  (concealed {:.1} ms, resyncs {})\n  \
             stops    {} senders stopped cleanly (no gap)\n  xruns    {} (devices lost {})\n  \
             late     {} periods written past halfway to an underrun\n",
            f("buffer_ms"),
            f("target_ms"),
            f("drift_ppm"),
            f("correction_ppm"),
            u("packets_received"),
            u("lost_packets"),
            u("recovered_packets"),
            u("late_packets"),
            u("duplicate_packets"),
            u("invalid_packets"),
            u("nacks_sent"),
            u("auth_failures"),
            u("replayed_packets"),
            u("stale_packets"),
            u("gaps"),
            f("concealed_ms"),
            u("resyncs"),
            u("streams_ended"),
            u("xruns"),
            u("device_lost"),
            u("late_renders"),
        ));
        if f("sync_model_error_us") > 0.0 {
            // Presentation time: the sender's clock as the time exchange measures it.
            s.push_str(&format!(
                "  sync     presentation error {:+.1} µs; sender's clock {:+.1} µs from this one (model error {:.1} µs)\n",
                f("presentation_error_us"),
                f("sync_offset_us"),
                f("sync_model_error_us"),
            ));
        }
    } else {
        s.push_str(&format!(
            "\n  packets  {} sent, {} refused\n  recovery {} NACKs answered, {} packets sent again \
             ({} not: {} over the per-packet limit, {} over the rate cap)\n  \
             refused  {} NACKs with bad or missing tags, {} replayed\n  xruns    {} (devices lost {})\n",
            u("packets_sent"),
            u("send_errors"),
            u("nacks_received"),
            u("retransmits_sent"),
            u("resends_over_limit") + u("resends_capped"),
            u("resends_over_limit"),
            u("resends_capped"),
            u("nack_auth_failures"),
            u("nack_replays"),
            u("xruns"),
            u("device_lost"),
        ));
        for r in v["receivers"].as_array().into_iter().flatten() {
            let pe = r["presentation_error_us"]
                .as_f64()
                .map_or("—".to_string(), |e| format!("{e:+.0} µs"));
            s.push_str(&format!(
                "  to {:<24} {} NACKs, {} sent again; presentation error {}{}\n",
                r["address"].as_str().unwrap_or("?"),
                r["nacks"].as_u64().unwrap_or(0),
                r["repairs"].as_u64().unwrap_or(0),
                pe,
                if r["playing"] == true {
                    ", playing"
                } else {
                    ""
                },
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_shows_what_matters() {
        let v = json!({"role": "receiver", "device": "virtual", "rate": 48000, "channels": 2,
            "format": "S16_LE", "address": "0.0.0.0:46000", "uptime_s": 3.0,
            "peaks_dbfs": [-6.0, -120.0], "buffer_ms": 20.0, "target_ms": 20.0, "gaps": 2,
            "recovered_packets": 7, "nacks_sent": 5, "auth_failures": 3, "device_lost": 1,
            "streams_ended": 4, "late_renders": 6});
        let r = render(&v);
        assert!(
            r.contains("ch1") && r.contains("-6.0 dBFS") && r.contains("gaps     2"),
            "{r}"
        );
        assert!(
            r.contains("7 recovered") && r.contains("5 NACKs sent"),
            "{r}"
        );
        assert!(
            r.contains("3 bad or missing tags") && r.contains("devices lost 1"),
            "{r}"
        );
        assert!(r.contains("4 senders stopped cleanly"), "{r}");
        assert!(
            r.contains("late     6 periods written past halfway to an underrun"),
            "{r}"
        );
        let s = render(
            &json!({"role": "sender", "packets_sent": 9, "nacks_received": 4,
            "retransmits_sent": 6, "resends_capped": 2, "nack_auth_failures": 5,
            "nack_replays": 1}),
        );
        assert!(s.contains("4 NACKs answered, 6 packets sent again"), "{s}");
        assert!(s.contains("2 over the rate cap"), "{s}");
        assert!(
            s.contains("5 NACKs with bad or missing tags, 1 replayed"),
            "{s}"
        );
    }

    #[test]
    fn the_snapshot_names_every_counter_and_converts_frames_to_ms() {
        let stats = Arc::new(Stats::default());
        stats.publish(&StatsSnapshot {
            gaps: 2,
            packets_sent: 9,
            level_frames: 960.0,
            target_frames: 480.0,
            concealed_frames: 48,
            ratio_ppm: -3.5,
            slip_drops: 1,
            ..Default::default()
        });
        let format = engine::StreamFormat::new(48_000, 2, engine::format::SampleFormat::S16Le)
            .expect("a valid format");
        let source = Source {
            role: "receiver",
            format,
            device: "virtual".into(),
            address: "0.0.0.0:46000".into(),
            stats,
            meter: Arc::new(Meter::default()),
            started: Instant::now(),
            keyed: true,
            receivers: None,
        };
        let v = source.snapshot();
        assert_eq!(v["role"], "receiver");
        assert_eq!(
            (v["gaps"].clone(), v["packets_sent"].clone()),
            (json!(2), json!(9))
        );
        assert_eq!(v["buffer_ms"], 20.0);
        assert_eq!(v["target_ms"], 10.0);
        assert_eq!(v["concealed_ms"], 1.0);
        assert_eq!(v["correction_ppm"], -3.5);
        // Of a key, only that there is one.
        assert_eq!(v["keyed"], true);
        assert_eq!(v["rms_dbfs"], json!([-120.0, -120.0]));
        // Every counter, by its name.
        assert_eq!(v["slip_drops"], 1);
        assert_eq!(v["device_lost"], 0);
        assert!(
            source
                .prometheus()
                .contains("netaudio_gaps{role=\"receiver\"} 2\n")
        );
    }
}
