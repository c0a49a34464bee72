//! The clock model's quality over a simulated network, in virtual time: a sender whose clock
//! runs −100..+100 ppm against the receiver's, one-way delays of 0.3–5 ms with up to 1 ms of
//! asymmetry, exponential or uniform jitter up to several ms, 1 % loss each way. The error of
//! `sender_to_local` (the model's receiver time of a sender time less the true one) must stay
//! within half the asymmetry (which no exchange can see) plus 20 µs from 5 s on, and from 60 s
//! on (when the first seconds' exchanges have left the window).
//!
//! A stress case with exponential jitter of mean 5 ms (23 ms at p99) is held to 30 µs.
//!
//! Run with `--nocapture` to see the figures: p50/p99/max of |error| and of the error beyond
//! the asymmetry's half, in µs.

use engine::auth::{KEY_LEN, Key};
use engine::rng::Rng;
use engine::sync::packet::MAX_TS_LEN;
use engine::sync::{ResponseOutcome, SyncClient, SyncParams, SyncResponder};

#[derive(Clone, Copy, Debug)]
enum Jitter {
    /// Exponential, mean in ms.
    Exp(f64),
    /// Uniform in [0, max) ms.
    Uniform(f64),
}

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    ppm: f64,
    /// Fixed one-way delays, receiver → sender and back, ms.
    fwd_ms: f64,
    bwd_ms: f64,
    jitter: Jitter,
    loss: f64,
    keyed: bool,
    seed: u64,
    /// The bound beyond half the asymmetry, µs: 20, but 30 for the stress case whose jitter
    /// (exponential, mean 5 ms: 23 ms at p99) is beyond "several ms".
    beyond_us: f64,
}

impl Case {
    /// Half the asymmetry, ns: the model's receiver times are early by it.
    fn half_asymmetry_ns(&self) -> f64 {
        (self.fwd_ms - self.bwd_ms) * 1e6 / 2.0
    }
}

const CASES: [Case; 6] = [
    Case {
        name: "lan, 0.3 ms, exp 0.1 ms, +37 ppm",
        ppm: 37.0,
        fwd_ms: 0.3,
        bwd_ms: 0.3,
        jitter: Jitter::Exp(0.1),
        loss: 0.01,
        keyed: false,
        seed: 1,
        beyond_us: 20.0,
    },
    Case {
        name: "asym 1 ms, uniform 2 ms, -100 ppm",
        ppm: -100.0,
        fwd_ms: 1.3,
        bwd_ms: 0.3,
        jitter: Jitter::Uniform(2.0),
        loss: 0.01,
        keyed: true,
        seed: 2,
        beyond_us: 20.0,
    },
    Case {
        name: "5 ms, asym 0.5, exp 1 ms, +100 ppm",
        ppm: 100.0,
        fwd_ms: 5.0,
        bwd_ms: 4.5,
        jitter: Jitter::Exp(1.0),
        loss: 0.01,
        keyed: false,
        seed: 3,
        beyond_us: 20.0,
    },
    Case {
        name: "2 ms, asym -0.8, exp 3 ms, -62 ppm",
        ppm: -62.0,
        fwd_ms: 2.0,
        bwd_ms: 2.8,
        jitter: Jitter::Exp(3.0),
        loss: 0.01,
        keyed: true,
        seed: 4,
        beyond_us: 20.0,
    },
    Case {
        name: "asym -1 ms, uniform 5 ms, +85 ppm",
        ppm: 85.0,
        fwd_ms: 0.3,
        bwd_ms: 1.3,
        jitter: Jitter::Uniform(5.0),
        loss: 0.01,
        keyed: false,
        seed: 5,
        beyond_us: 20.0,
    },
    Case {
        name: "stress: 5 ms, asym 1, exp 5 ms, -3 ppm",
        ppm: -3.0,
        fwd_ms: 4.0,
        bwd_ms: 5.0,
        jitter: Jitter::Exp(5.0),
        loss: 0.01,
        keyed: false,
        seed: 6,
        beyond_us: 30.0,
    },
];

/// The simulated network and the sender's clock; the receiver's clock is virtual time.
struct Net {
    case: Case,
    rng: Rng,
    /// Sender clock at virtual time 0, and a step added from `step_at` on (virtual ns).
    offset: f64,
    step: Option<(f64, f64)>,
}

impl Net {
    fn new(case: Case) -> Net {
        let mut rng = Rng::new(case.seed);
        let offset = 4e14 + rng.next_f64() * 1e14;
        Net {
            case,
            rng,
            offset,
            step: None,
        }
    }

    /// The sender's clock at virtual time `t` (ns).
    fn sender_clock(&self, t: f64) -> u64 {
        let step = match self.step {
            Some((at, by)) if t >= at => by,
            _ => 0.0,
        };
        (self.offset + step + t * (1.0 + self.case.ppm * 1e-6)) as u64
    }

    /// One pass's delay (ns) over a path of `base_ms`; `None` if the datagram is lost.
    fn pass(&mut self, base_ms: f64) -> Option<f64> {
        if self.rng.chance(self.case.loss) {
            return None;
        }
        let u = self.rng.next_f64();
        let jitter_ms = match self.case.jitter {
            Jitter::Exp(mean) => -mean * (1.0 - u).ln(),
            Jitter::Uniform(max) => max * u,
        };
        Some((base_ms + jitter_ms) * 1e6)
    }
}

/// What a run measured: (virtual time s, error ns) every 10 ms once the model exists.
struct Run {
    errors: Vec<(f64, f64)>,
    /// (virtual time s, error estimate ns) alongside.
    estimates: Vec<Option<u64>>,
    locked_at_s: Option<f64>,
    restarts: u64,
    requests: u64,
    responses: u64,
}

fn run(case: Case, seconds: f64, step: Option<(f64, f64)>) -> Run {
    let mut net = Net::new(case);
    let start = 1_000_000_000u64;
    net.step = step.map(|(at_s, by)| (start as f64 + at_s * 1e9, by));
    let key = case.keyed.then(|| Key::from_bytes([0x33; KEY_LEN]));
    let id = net.rng.next_u64() as u32;
    let mut client = SyncClient::new(id, key.clone(), SyncParams::default());
    let mut responder = SyncResponder::new(key);
    let mut req = [0u8; MAX_TS_LEN];
    let mut resp = [0u8; MAX_TS_LEN];
    // Responses in flight: (arrival, bytes, length).
    let mut flight: Vec<(u64, [u8; MAX_TS_LEN], usize)> = Vec::new();
    let end = start + (seconds * 1e9) as u64;
    let sample_every = 10_000_000u64;
    let mut next_sample = start;
    let mut now = start;
    let mut out = Run {
        errors: Vec::new(),
        estimates: Vec::new(),
        locked_at_s: None,
        restarts: 0,
        requests: 0,
        responses: 0,
    };
    while now < end {
        let due = client.poll_timeout().unwrap_or(now);
        let arrival = flight.iter().map(|f| f.0).min().unwrap_or(u64::MAX);
        now = due.min(arrival).min(next_sample);
        if now == arrival {
            let i = flight.iter().position(|f| f.0 == arrival).unwrap();
            let (t4, bytes, n) = flight.swap_remove(i);
            let outcome = client.handle_response(t4, &bytes[..n]);
            assert!(
                matches!(
                    outcome,
                    ResponseOutcome::Taken { .. } | ResponseOutcome::Reordered
                ),
                "{}: {outcome:?}",
                case.name
            );
        } else if now == due {
            let n = client.poll_transmit(now, &mut req).expect("due");
            out.requests += 1;
            let Some(fwd) = net.pass(case.fwd_ms) else {
                continue;
            };
            let arrive = now as f64 + fwd;
            let turnaround = 5_000.0 + net.rng.next_f64() * 45_000.0;
            let leave = arrive + turnaround;
            let t2 = net.sender_clock(arrive);
            let t3 = net.sender_clock(leave);
            let m = responder
                .answer(&req[..n], 0, t2, t3, &mut resp)
                .expect("answered");
            if let Some(bwd) = net.pass(case.bwd_ms) {
                flight.push(((leave + bwd) as u64, resp, m));
            }
        } else {
            next_sample += sample_every;
            let s = net.sender_clock(now as f64);
            if let Some(local) = client.sender_to_local(s) {
                let t_s = (now - start) as f64 * 1e-9;
                out.errors.push((t_s, local as f64 - now as f64));
                out.estimates.push(client.error_ns());
                if out.locked_at_s.is_none() && client.locked() {
                    out.locked_at_s = Some(t_s);
                }
            }
        }
    }
    out.restarts = client.restarts();
    out.responses = client.counters().responses;
    out
}

/// p50, p99 and max of `v`, µs.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    assert!(!v.is_empty());
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1e-3;
    (at(0.5), at(0.99), at(1.0))
}

/// |error| and |error beyond half the asymmetry| over `[from, to)` s.
fn window(r: &Run, case: &Case, from: f64, to: f64) -> (Vec<f64>, Vec<f64>) {
    let bias = -case.half_asymmetry_ns();
    r.errors
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, e)| (e.abs(), (e - bias).abs()))
        .unzip()
}

#[test]
fn the_model_stays_within_half_the_asymmetry_plus_20_us() {
    println!(
        "{:<38} {:>9} | {:^26} | {:^26} | {:^20} | locked",
        "case", "window", "|error| p50/p99/max µs", "beyond asym p50/p99/max", "within estimate"
    );
    let mut failures = Vec::new();
    for case in CASES {
        let r = run(case, 300.0, None);
        // 1-5 s is shown, not held to the bound.
        for (from, to) in [(1.0, 5.0), (5.0, 60.0), (60.0, 300.0)] {
            let (abs, beyond) = window(&r, &case, from, to);
            let (a50, a99, amax) = percentiles(abs);
            let (b50, b99, bmax) = percentiles(beyond.clone());
            let bias = -case.half_asymmetry_ns();
            let covered = r
                .errors
                .iter()
                .zip(&r.estimates)
                .filter(|((t, _), _)| *t >= from && *t < to)
                .filter(|((_, e), est)| est.is_some_and(|x| (e - bias).abs() <= x as f64))
                .count() as f64
                / beyond.len() as f64;
            println!(
                "{:<38} {:>4}-{:<3} s | {:>7.1} {:>7.1} {:>8.1} | {:>7.1} {:>7.1} {:>8.1} | {:>18.1} % | {}",
                case.name,
                from,
                to,
                a50,
                a99,
                amax,
                b50,
                b99,
                bmax,
                covered * 100.0,
                r.locked_at_s
                    .map_or("never".to_string(), |t| format!("{t:.2} s")),
            );
            let bound = case.half_asymmetry_ns().abs() * 1e-3 + case.beyond_us;
            if from >= 5.0 && amax > bound {
                failures.push(format!(
                    "{} over {from}-{to} s: max |error| {amax:.1} µs above {bound:.1} µs",
                    case.name
                ));
            }
        }
        println!(
            "{:<38} requests {} ({:.1}/s), responses {}, restarts {}",
            "",
            r.requests,
            r.requests as f64 / 300.0,
            r.responses,
            r.restarts
        );
        assert_eq!(r.restarts, 0, "{}: no step, no restart", case.name);
        assert!(
            r.locked_at_s.is_some_and(|t| t <= 5.0),
            "{}: locked at {:?}",
            case.name,
            r.locked_at_s
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_step_of_the_senders_clock_restarts_the_model_which_starts_afresh() {
    for (case, by) in [(CASES[0], 2.5e9), (CASES[2], -40e6), (CASES[1], 3e6)] {
        let r = run(case, 60.0, Some((30.0, by)));
        assert_eq!(r.restarts, 1, "{}: one restart", case.name);
        let bound = case.half_asymmetry_ns().abs() * 1e-3 + case.beyond_us;
        // As good 5 s after the step as 5 s after the start.
        for (from, to) in [(5.0, 30.0), (31.0, 35.0), (35.0, 60.0)] {
            let (abs, _) = window(&r, &case, from, to);
            let (a50, a99, amax) = percentiles(abs);
            println!(
                "step {by:e} ns, {}: {from}-{to} s: |error| {a50:.1} / {a99:.1} / {amax:.1} µs",
                case.name
            );
            if from != 31.0 {
                assert!(
                    amax <= bound,
                    "{}: {amax:.1} µs above {bound:.1}",
                    case.name
                );
            }
        }
    }
}

/// Diagnostics: the largest error beyond half the asymmetry in each second of two cases, and
/// the model's estimate (`--ignored --nocapture`).
#[test]
#[ignore]
fn trace() {
    for case in [CASES[0], CASES[4]] {
        let r = run(case, 120.0, None);
        let bias = -case.half_asymmetry_ns();
        for sec in 0..120 {
            let v: Vec<(f64, Option<u64>)> = r
                .errors
                .iter()
                .zip(&r.estimates)
                .filter(|((t, _), _)| *t >= sec as f64 && *t < sec as f64 + 1.0)
                .map(|((_, e), est)| ((e - bias).abs(), *est))
                .collect();
            if v.is_empty() {
                continue;
            }
            let max = v.iter().map(|x| x.0).fold(0.0, f64::max);
            let est = v.last().unwrap().1;
            println!(
                "{} {sec:>3} s max {:>7.1} µs est {:?}",
                case.name,
                max * 1e-3,
                est.map(|e| e / 1000)
            );
        }
    }
}
