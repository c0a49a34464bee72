//! When a device reached a position: the floor under the driver's readings.
//!
//! Presentation time needs to know when the sender's capture device took frame n (every
//! receiver plays by it), and when a receiver's playback device took what it holds. A driver
//! reads the device's position (frames captured or played so far) when it wakes, and the
//! wake-up is late by a varying amount: the scheduler's latency, and on a graph like JACK's,
//! the clients woken before it in the same cycle. The device's pointer moves in steps (a JACK
//! cycle, a USB packet, a DMA burst), and a reading taken after a step was reached later than
//! the step itself.
//!
//! Every reading lies on or above the line "the instant the device reached this position":
//! `t − pos · (1 s / rate)` is never below the device's own offset. So this keeps, per block
//! of [`BLOCK_NS`], the lowest reading, fits a line through the last [`BLOCKS`] blocks' lows
//! (the slope follows the device clock's rate against ours), and gives each reading's time on
//! that floor: the instant the device reached the position, to within the best wake-ups'
//! latency, the same for every receiver.
//!
//! The device's own timestamps (`snd_pcm_status`) would say the same where a driver fills them
//! at the pointer's update; user-space PCMs (the jack plugin among them) stamp the call
//! instead, so the floor is what works for all.
//!
//! Against a delay-locked loop over the same readings (which this replaced): a loop averages
//! the latency in, and a loop narrow enough to smooth the readings takes tens of seconds to
//! forget its first one, while every receiver follows the stamps' apparent rate (hundreds of
//! µs of common error at start-up on the JACK rig, the drift estimates 100 ppm off on one
//! clock). The floor is at its place after two blocks.
//!
//! A receiver reads its playback device the same way, and the floor under those readings
//! says how late its wake-ups come on average: the receiver holds its level that much
//! higher ([`Receiver::set_render_lateness_ns`](crate::receiver::Receiver::set_render_lateness_ns)).
//! Receivers woken in a fixed order in one JACK cycle differ by that order otherwise (about
//! one frame on the rig).
//!
//! Realtime contract: fixed arrays, plain arithmetic; no allocation, lock or syscall.

use heapless::Deque;

/// One block's length, ns: long enough to hold a few good wake-ups at any period.
pub const BLOCK_NS: u64 = 100_000_000;
/// Blocks the line is fitted through by default (3.2 s): a capture device's floor, which the
/// stream's clock is followed by from its first second on (an early low off the later floor,
/// a cold start's, is forgotten in seconds).
pub const BLOCKS: usize = 32;

/// Blocks a playback device's floor is fitted through with presentation time (12.8 s; see
/// [`DeviceClock::with_blocks`]). Through 3.2 s of lows, each off by the best wake-up's few
/// µs, the floor's slope was ppm off and the floor wandered by µs as lows left the window:
/// every receiver followed its own wander (wow & flutter 0.0008–0.002 % peak on the rig's
/// tone, against 0.0003–0.0008 % through 12.8 s).
pub const PLAYBACK_BLOCKS: usize = 128;

/// Most blocks a floor can be fitted through.
pub const MAX_BLOCKS: usize = 128;
/// A reading this far (ns) from the floor, either way, starts the floor afresh: the device
/// was restarted or stalled, or the clock stepped.
pub const RESTART_NS: f64 = 50_000_000.0;
/// Span of lows (ns) a line is fitted through: through lows a few blocks apart, each off by
/// µs, its slope would be hundreds of ppm off, and the floor carried forward by it tens of µs.
pub const FIT_SPAN_NS: f64 = 1_000_000_000.0;
/// Blocks whose lows place the floor until the line is fitted.
pub const EARLY_BLOCKS: usize = 1;

/// A block whose best reading lies this far (ns) above the floor starts it afresh: the
/// position no longer counts the device's frames one for one (a capture overrun skipped some).
/// A block's best wake-up is late by far less; a pointer's coarsest steps (a JACK period, a
/// USB packet) are read as they happen.
pub const STEP_NS: f64 = 5_000_000.0;

/// A block's low: reading time and offset, ns from the origin.
#[derive(Clone, Copy, Debug)]
struct Low {
    t: f64,
    y: f64,
}

/// The floor under a device's readings (see the module docs).
#[derive(Clone, Debug)]
pub struct DeviceClock {
    ns_per_frame: f64,
    /// The first reading's time, ns: times and offsets are kept relative to it.
    origin: Option<u64>,
    last_pos: u64,
    lows: Deque<Low, MAX_BLOCKS>,
    /// Blocks the line is fitted through (at most [`MAX_BLOCKS`]).
    blocks: usize,
    /// The block being filled: its start and its low so far.
    block: Option<(f64, Low)>,
    /// The fitted floor `y = a + b·(t − tm)`.
    fit: Option<(f64, f64, f64)>,
    restarts: u64,
}

impl DeviceClock {
    /// A floor for a device nominally at `rate` frames per second, fitted through [`BLOCKS`].
    pub fn new(rate: u32) -> DeviceClock {
        DeviceClock::with_blocks(rate, BLOCKS)
    }

    /// A floor fitted through `blocks` blocks (2 to [`MAX_BLOCKS`]).
    pub fn with_blocks(rate: u32, blocks: usize) -> DeviceClock {
        DeviceClock {
            ns_per_frame: 1e9 / rate.max(1) as f64,
            origin: None,
            last_pos: 0,
            lows: Deque::new(),
            blocks: blocks.clamp(2, MAX_BLOCKS),
            block: None,
            fit: None,
            restarts: 0,
        }
    }

    /// Forgets every reading: the device was started afresh (its position counts from 0).
    pub fn reset(&mut self) {
        self.origin = None;
        self.last_pos = 0;
        self.lows.clear();
        self.block = None;
        self.fit = None;
    }

    /// Times the floor was started afresh by a reading far from it.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The device had played (or captured) `pos` frames since its start when read at
    /// `now_ns`: returns the instant it reached `pos` by the floor, never later than `now_ns`.
    pub fn observe(&mut self, now_ns: u64, pos: u64) -> u64 {
        if pos < self.last_pos {
            self.reset();
        }
        self.last_pos = pos;
        let origin = *self.origin.get_or_insert(now_ns);
        let t = now_ns.saturating_sub(origin) as f64;
        let y = t - pos as f64 * self.ns_per_frame;
        let floor = self.floor_at(t, y);
        if (y - floor).abs() > RESTART_NS {
            self.restarts += 1;
            self.reset();
            return self.observe(now_ns, pos);
        }
        self.add(Low { t, y });
        let floor = self.floor_at(t, y);
        let back = (y - floor).max(0.0);
        now_ns.saturating_sub(back.round() as u64)
    }

    /// The floor's offset at `t`; before a line is fitted, the lowest reading of the last
    /// [`EARLY_BLOCKS`] blocks (or `y`): without a slope, older lows would put a device off its
    /// nominal rate off by that rate times their age.
    fn floor_at(&self, t: f64, y: f64) -> f64 {
        if let Some((a, b, tm)) = self.fit {
            return (a + b * (t - tm)).min(y);
        }
        let mut low = y;
        for l in self.lows.iter().rev().take(EARLY_BLOCKS) {
            low = low.min(l.y);
        }
        if let Some((_, l)) = self.block {
            low = low.min(l.y);
        }
        low
    }

    fn add(&mut self, p: Low) {
        match &mut self.block {
            Some((start, low)) if p.t < *start + BLOCK_NS as f64 => {
                if p.y < low.y {
                    *low = p;
                }
                return;
            }
            _ => {}
        }
        if let Some((_, low)) = self.block.take() {
            if let Some((a, b, tm)) = self.fit {
                if low.y - (a + b * (low.t - tm)) > STEP_NS {
                    // Keep the block that saw the step: the floor starts from it.
                    self.restarts += 1;
                    self.lows.clear();
                    self.fit = None;
                }
            }
            while self.lows.len() >= self.blocks {
                self.lows.pop_front();
            }
            let _ = self.lows.push_back(low);
            self.refit();
        }
        self.block = Some((p.t, p));
    }

    /// Least squares through the blocks' lows (two at least), then lowered so that none lies
    /// below it.
    fn refit(&mut self) {
        let n = self.lows.len();
        let span = match (self.lows.front(), self.lows.back()) {
            (Some(first), Some(last)) => last.t - first.t,
            _ => 0.0,
        };
        if n < 2 || span < FIT_SPAN_NS {
            return;
        }
        let tm = self.lows.iter().map(|l| l.t).sum::<f64>() / n as f64;
        let ym = self.lows.iter().map(|l| l.y).sum::<f64>() / n as f64;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for l in self.lows.iter() {
            sxy += (l.t - tm) * (l.y - ym);
            sxx += (l.t - tm) * (l.t - tm);
        }
        let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        // A device more than 1 % off its rate is not a clock to follow.
        let b = b.clamp(-0.01, 0.01);
        let mut a = ym;
        for l in self.lows.iter() {
            a = a.min(l.y - b * (l.t - tm));
        }
        if a.is_finite() && b.is_finite() {
            self.fit = Some((a, b, tm));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device at `ppm` that moves in steps of `step` frames at 48 kHz, read by a thread
    /// woken `late(k)` ns after the k-th step.
    fn run(ppm: f64, step: u64, steps: u64, late: impl Fn(u64) -> u64) -> Vec<(u64, u64)> {
        let mut clock = DeviceClock::new(48_000);
        let per_frame = 1e9 / 48_000.0 / (1.0 + ppm * 1e-6);
        let start = 1_000_000_000u64;
        let mut out = Vec::new();
        for k in 1..=steps {
            let pos = k * step;
            let reached = start + (pos as f64 * per_frame).round() as u64;
            let got = clock.observe(reached + late(k), pos);
            out.push((reached, got));
        }
        out
    }

    fn lcg(k: u64) -> u64 {
        k.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 33
    }

    #[test]
    fn finds_the_steps_under_late_wake_ups() {
        // Woken 20–420 µs late, and now and then 2 ms.
        for ppm in [-100.0, 0.0, 100.0] {
            let out = run(ppm, 256, 20_000, |k| {
                20_000 + lcg(k) % 400_000 + if k % 97 == 0 { 2_000_000 } else { 0 }
            });
            for &(reached, got) in &out[2_000..] {
                let err = got as i64 - reached as i64;
                assert!(
                    (0..=40_000).contains(&err),
                    "{ppm} ppm: {err} ns from the step"
                );
            }
        }
    }

    #[test]
    fn a_step_in_the_count_moves_the_floor_within_a_few_blocks() {
        // 20 ms of frames skipped at 10 s (a capture overrun): the readings move 20 ms up.
        let mut clock = DeviceClock::new(48_000);
        for k in 1..4_000u64 {
            let skipped = if k > 1_875 { 20_000_000 } else { 0 };
            let reached = 1_000_000_000 + k * 5_333_333 + skipped;
            let got = clock.observe(reached + 30_000 + lcg(k) % 200_000, k * 256);
            if k > 1_875 + 60 {
                let err = got as i64 - reached as i64;
                assert!((0..=240_000).contains(&err), "{k}: {err} ns");
            }
        }
        assert_eq!(clock.restarts(), 1);
    }

    #[test]
    fn never_later_than_the_reading_and_restarts_on_a_new_start() {
        let mut clock = DeviceClock::new(48_000);
        let mut now = 5_000_000u64;
        for k in 1..2_000u64 {
            now += 5_333_333 + lcg(k) % 100_000;
            let got = clock.observe(now, k * 256);
            assert!(got <= now);
        }
        // The device restarted: its position counts from 0 again.
        now += 10_000_000;
        assert_eq!(clock.observe(now, 256), now);
        // A stall far beyond the floor starts it afresh.
        now += 200_000_000;
        assert_eq!(clock.observe(now, 512), now);
        assert_eq!(clock.restarts(), 1);
    }

    #[test]
    fn follows_a_device_read_as_a_virtual_card_is_at_minus_60_ppm() {
        // played(t) = floor((t - t0) * rate * (1 - 60e-6)); woken at the time 'played' reaches
        // written + period - buffer, plus 20..80 µs.
        for blocks in [BLOCKS, PLAYBACK_BLOCKS] {
            let rate = 48_000.0 * (1.0 - 60e-6);
            let t0 = 5_000_000_000u64;
            let mut c = DeviceClock::with_blocks(48_000, blocks);
            let (buffer, period) = (768u64, 256u64);
            let mut written = buffer; // primed
            let mut worst: i64 = 0;
            let mut seed = 1u64;
            for k in 0..3000u64 {
                let need = written + period - buffer; // played count at which room >= period
                let ready = t0 + ((need as f64) / rate * 1e9).ceil() as u64;
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let now = ready + 20_000 + (seed >> 33) % 60_000;
                let played = (((now - t0) as f64) * 1e-9 * rate).floor() as u64;
                let room = buffer - (written - played);
                let held = buffer - room;
                let pos = written - held;
                let got = c.observe(now, pos);
                let truth = t0 + ((pos as f64) / rate * 1e9) as u64;
                let err = got as i64 - truth as i64;
                if k > 300 && err.abs() > worst.abs() {
                    worst = err;
                }
                written += room / period * period;
            }
            assert!(worst.abs() < 30_000, "{blocks} blocks: worst {worst} ns");
        }
    }
}
