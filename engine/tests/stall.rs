//! A stall of the whole machine, devices included (a JACK server that misses cycles halts
//! capture and playback alike): the stream resumes where it was, later, and nothing of it is
//! lost. The receiver must come out of it as it went in: no gap, the correction steady, and
//! no storm of requests for packets that are only late.

use engine::alloc_count::CountingAlloc;
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::DriftMode;
use engine::recovery::RecoveryMode;
use engine::sim::{SimConfig, SimReport, Stall, run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn stalled(mode: DriftMode, ppm: f64, ms: f64) -> SimReport {
    stalled_for(mode, ppm, ms, 60.0)
}

fn stalled_for(mode: DriftMode, ppm: f64, ms: f64, seconds: f64) -> SimReport {
    let f = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
    let mut cfg = SimConfig::new(f, 256, seconds);
    cfg.drift_mode = mode;
    cfg.drift_ppm = ppm;
    cfg.recovery = RecoveryMode::Nack;
    cfg.stall = Some(Stall { at_s: 20.0, ms });
    run(cfg, None).expect("valid simulation")
}

#[test]
fn a_stall_of_both_ends_leaves_no_gap_and_no_runaway_correction() {
    for mode in [DriftMode::Resample, DriftMode::Slip] {
        for ppm in [-100.0, 0.0, 100.0] {
            for ms in [25.0, 50.0, 110.0, 400.0] {
                let r = stalled(mode, ppm, ms);
                let what = format!("{mode:?}, {ppm} ppm, {ms} ms stall");
                assert_eq!(r.engine.gaps, 0, "{what}: {:?}", r.engine);
                assert_eq!(r.engine.concealed_frames, 0, "{what}");
                assert_eq!(r.analyzer.gaps, 0, "{what}: {:?}", r.gaps);
                // The correction stays at the drift: no glide away and back (the old loop
                // read the stall as 100+ ms of extra buffer and steered 2000 ppm for seconds).
                let worst = r
                    .trace
                    .iter()
                    .filter(|p| p.t_s > 19.0)
                    .map(|p| (p.ratio_ppm - ppm).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst < 20.0,
                    "{what}: correction {worst:.1} ppm off the drift"
                );
                // Packets only late are asked for while they are late (the receiver cannot
                // tell a stalled sender from a lossy link), not ever after: the same run cut
                // 10 s after the stall has asked for as much.
                let short = stalled_for(mode, ppm, ms, 30.0);
                assert_eq!(
                    r.recovery.nacks_sent, short.recovery.nacks_sent,
                    "{what}: NACKs went on long after the stall"
                );
                // ... and the realtime side allocates nothing through it.
                assert_eq!(r.allocations_steady_state, Some(0), "{what}");
                assert_eq!(r.frees_steady_state, Some(0), "{what}");
            }
        }
    }
}
