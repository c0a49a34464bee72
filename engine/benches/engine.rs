//! Benchmarks (figures, not assertions): `cargo bench -p netaudio-engine`.
//!
//! * CPU time per period of the sender (packetize) and of the receiver (on_packet + render)
//!   in each drift mode, 48 kHz stereo S16, period 256.
//! * Virtual audio hours the simulated rig streams per CPU second.

use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::sender::Sender;
use engine::sim::{SimConfig, run};
use engine::wire::HEADER_LEN;
use std::hint::black_box;
use std::time::Instant;

const PERIOD: usize = 256;

fn format() -> StreamFormat {
    StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap()
}

fn sender_ns_per_period() -> f64 {
    let f = format();
    let mut tx = Sender::new(f, PERIOD, 1, 0).unwrap();
    let capture = vec![7u8; PERIOD * f.frame_bytes()];
    let n = 2_000_000;
    let t = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        tx.packetize(black_box(&capture), |h, p| bytes += h.len() + p.len());
    }
    black_box(bytes);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn receiver_ns_per_period(mode: DriftMode) -> f64 {
    let f = format();
    let mut cfg = ReceiverConfig::new(f, PERIOD, 20.0);
    cfg.drift_mode = mode;
    let mut rx = Receiver::new(cfg).unwrap();
    let mut tx = Sender::new(f, PERIOD, 1, 0).unwrap();
    let capture = vec![7u8; PERIOD * f.frame_bytes()];
    let mut out = vec![0u8; PERIOD * f.frame_bytes()];
    let mut datagram = vec![0u8; 1500];
    let period_ns = PERIOD as u64 * 1_000_000_000 / 48_000;
    // Sender 200 ppm fast, so the drift loop works.
    let send_ns = period_ns - period_ns / 5000;
    let (mut ts, mut tp) = (0u64, 3_000_000u64);
    let n = 300_000;
    let t = Instant::now();
    for _ in 0..n {
        while ts <= tp {
            tx.packetize(&capture, |h, p| {
                datagram[..HEADER_LEN].copy_from_slice(h);
                datagram[HEADER_LEN..HEADER_LEN + p.len()].copy_from_slice(p);
                rx.on_packet(&datagram[..HEADER_LEN + p.len()], ts);
            });
            ts += send_ns;
        }
        rx.render(black_box(&mut out), tp);
        tp += period_ns;
    }
    // Includes the sender's share (a few percent of the total).
    t.elapsed().as_nanos() as f64 / n as f64
}

fn sim_audio_hours_per_cpu_second(mode: DriftMode, minutes: f64) -> f64 {
    let mut cfg = SimConfig::new(format(), PERIOD, minutes * 60.0);
    cfg.drift_ppm = 500.0;
    cfg.drift_mode = mode;
    let t = Instant::now();
    let r = run(cfg, None).unwrap();
    assert_eq!(r.analyzer.gaps, 0);
    (minutes / 60.0) / t.elapsed().as_secs_f64()
}

fn main() {
    let period_ns = PERIOD as f64 / 48_000.0 * 1e9;
    println!(
        "netaudio engine benchmarks (48 kHz, 2 ch, S16_LE, period {PERIOD} = {:.2} ms)",
        period_ns / 1e6
    );
    let s = sender_ns_per_period();
    println!("sender   packetize              {s:>9.0} ns/period");
    for mode in DriftMode::ALL {
        let r = receiver_ns_per_period(mode);
        println!(
            "receiver on_packet+render {:<9}{r:>9.0} ns/period  ({:.3} % of one core)",
            mode.name(),
            r / period_ns * 100.0
        );
    }
    for (mode, minutes) in [(DriftMode::Slip, 60.0), (DriftMode::Resample, 10.0)] {
        let h = sim_audio_hours_per_cpu_second(mode, minutes);
        println!(
            "sim rig ({:<8}) incl. analyzer  {h:>7.2} audio hours per CPU second ({:.0}x realtime)",
            mode.name(),
            h * 3600.0
        );
    }
}
