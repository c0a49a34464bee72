//! Benchmarks (figures, not assertions): `cargo bench -p netaudio-engine`.
//!
//! * CPU time per period of the sender (packetize) and of the receiver (on_packet + render)
//!   in each drift mode (the default one marked), 48 kHz stereo S16, period 256; `resample`
//!   also at S24_3LE.
//! * CPU time of the resampler alone (`ResampleStage`) per 256-frame period at a step of
//!   1.0001 input frames per output frame: stereo S16, stereo S24_3LE, mono S16.
//! * Virtual audio hours the simulated rig streams per CPU second.
//!
//! `NETAUDIO_BENCH_QUICK=1` divides every iteration count by 100 and skips the simulated rig:
//! a smoke run of a few seconds, also under qemu (`ci/cross`), whose figures mean little.

use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::resample::ResampleStage;
use engine::sender::Sender;
use engine::sim::{SimConfig, run};
use engine::wire::HEADER_LEN;
use std::hint::black_box;
use std::time::Instant;

const PERIOD: usize = 256;
const RATE: u32 = 48_000;
/// The resampler's step in the stage benchmark: input frames per output frame (100 ppm).
const STEP: f64 = 1.0001;

/// Whether `NETAUDIO_BENCH_QUICK` asks for the smoke run.
fn quick() -> bool {
    std::env::var("NETAUDIO_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An iteration count, divided by 100 in the smoke run.
fn iters(n: usize) -> usize {
    if quick() { (n / 100).max(1) } else { n }
}

fn stream_format(channels: u8, sample: SampleFormat) -> StreamFormat {
    StreamFormat::new(RATE, channels, sample).unwrap()
}

fn format() -> StreamFormat {
    stream_format(2, SampleFormat::S16Le)
}

fn sender_ns_per_period() -> f64 {
    let f = format();
    let mut tx = Sender::new(f, PERIOD, 1, 0).unwrap();
    let capture = vec![7u8; PERIOD * f.frame_bytes()];
    let n = iters(2_000_000);
    let t = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        tx.packetize(black_box(&capture), |h, p| bytes += h.len() + p.len());
    }
    black_box(bytes);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn receiver_ns_per_period(f: StreamFormat, mode: DriftMode) -> f64 {
    let mut cfg = ReceiverConfig::new(f, PERIOD, 20.0);
    cfg.drift_mode = mode;
    let mut rx = Receiver::new(cfg).unwrap();
    let mut tx = Sender::new(f, PERIOD, 1, 0).unwrap();
    let capture = vec![7u8; PERIOD * f.frame_bytes()];
    let mut out = vec![0u8; PERIOD * f.frame_bytes()];
    let mut datagram = vec![0u8; 1500];
    let period_ns = PERIOD as u64 * 1_000_000_000 / RATE as u64;
    // Sender 200 ppm fast, so the drift loop works.
    let send_ns = period_ns - period_ns / 5000;
    let (mut ts, mut tp) = (0u64, 3_000_000u64);
    let n = iters(300_000);
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

/// The resampler alone: ns per `PERIOD` output frames at `STEP`, fed from a 997 Hz tone at
/// half scale (left-justified `i32`, as the receiver's jitter ring hands it over).
fn resample_ns_per_period(channels: usize, out_format: SampleFormat) -> f64 {
    let mut rs = ResampleStage::new(channels, out_format, out_format, PERIOD).unwrap();
    let len = 4800; // 100 ms: a whole number of the tone's cycles is not needed
    let input: Vec<i32> = (0..len)
        .flat_map(|n| {
            let x = (2.0 * std::f64::consts::PI * 997.0 * n as f64 / RATE as f64).sin();
            let s = (x * 0.5 * 2_147_483_648.0) as i32;
            (0..channels).map(move |c| if c % 2 == 0 { s } else { s / 3 })
        })
        .collect();
    let mut out = vec![0i32; PERIOD * channels];
    let mut next = 0usize;
    let mut period = |rs: &mut ResampleStage, out: &mut [i32]| {
        let need = rs.inputs_needed(PERIOD, black_box(STEP));
        for i in 0..need {
            rs.set_input(i, &input[next * channels..(next + 1) * channels]);
            next += 1;
            if next == len {
                next = 0;
            }
        }
        rs.process(out, PERIOD, black_box(STEP));
        black_box(&*out);
    };
    for _ in 0..iters(1_000) {
        period(&mut rs, &mut out);
    }
    let n = iters(100_000);
    let t = Instant::now();
    for _ in 0..n {
        period(&mut rs, &mut out);
    }
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
    let period_ns = PERIOD as f64 / RATE as f64 * 1e9;
    let share = |ns: f64| ns / period_ns * 100.0;
    let default_mode = ReceiverConfig::new(format(), PERIOD, 20.0).drift_mode;
    println!(
        "netaudio engine benchmarks (48 kHz, 2 ch, S16_LE, period {PERIOD} = {:.2} ms){}",
        period_ns / 1e6,
        if quick() {
            "; NETAUDIO_BENCH_QUICK: iterations / 100, no simulated rig"
        } else {
            ""
        }
    );
    let s = sender_ns_per_period();
    println!("sender   packetize                        {s:>9.0} ns/period");
    for mode in DriftMode::ALL {
        let r = receiver_ns_per_period(format(), mode);
        let label = if mode == default_mode {
            format!("{} (default)", mode.name())
        } else {
            mode.name().to_string()
        };
        println!(
            "receiver on_packet+render {label:<20}  {r:>9.0} ns/period  ({:.3} % of one core)",
            share(r)
        );
    }
    // The resampler's cost at the other common device format (its output is rounded to 24 bits).
    let r = receiver_ns_per_period(stream_format(2, SampleFormat::S24_3Le), DriftMode::Resample);
    println!(
        "receiver on_packet+render {:<20}  {r:>9.0} ns/period  ({:.3} % of one core)",
        "resample, S24_3LE",
        share(r)
    );
    for (channels, out_format, label) in [
        (2, SampleFormat::S16Le, "stereo S16_LE"),
        (2, SampleFormat::S24_3Le, "stereo S24_3LE"),
        (1, SampleFormat::S16Le, "mono S16_LE"),
    ] {
        let r = resample_ns_per_period(channels, out_format);
        println!(
            "resampler ResampleStage {label:<15} step {STEP}  {r:>9.0} ns/period  ({:.3} % of one core)",
            share(r)
        );
    }
    if quick() {
        println!("sim rig: skipped (NETAUDIO_BENCH_QUICK)");
        return;
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
