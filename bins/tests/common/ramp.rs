//! The frame-index ramp (`engine::sim::signal`, channel 0 = frame index, channel 1 = frame
//! index + 32768, modulo 65536) as a reader of a stream gets it: runs of consecutive frames,
//! when they were read, and the breaks between them.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The tests' rate.
pub const RATE: f64 = 48_000.0;
/// The receiver fades a new stream in over 1 ms: its first frames are neither silence nor
/// the ramp.
pub const FADE_IN: u64 = 48;

/// The frame-index ramp as heard: runs of consecutive frames, read times, what else came.
#[derive(Default)]
pub struct Heard {
    /// Bits per sample as the reader gets them: 16 (S16_LE), 24 (in 4 bytes, Snapcast's) or
    /// 32 (S32_LE); 0 is 16.
    pub bits: u16,
    /// Frames of silence (both channels 0).
    pub silence: u64,
    /// Frames that are neither silence nor the ramp.
    pub other: u64,
    /// Where the first of them were (frames read before them).
    pub other_at: Vec<u64>,
    /// Frames read.
    pub total: u64,
    pub runs: Vec<Run>,
    pub in_run: bool,
    pub last: u16,
    pub rest: Vec<u8>,
    /// Frames since the last ramp frame.
    pub pause: u64,
}

/// Consecutive ramp frames.
#[derive(Clone, Debug)]
pub struct Run {
    /// The ramp value of the first frame (the frame index modulo 65536).
    pub first: u16,
    /// Frames in the run.
    pub frames: u64,
    /// (frame of the run, when the block holding it was read) for the first frame of every
    /// block read.
    pub marks: Vec<(u64, Instant)>,
    /// Whether it goes on from the previous run's last frame (only silence between: nothing
    /// lost, nothing repeated).
    pub joined: bool,
    /// Frames of silence or else between it and the previous run.
    pub after_pause: u64,
}

impl Heard {
    /// Takes what a reader read at `t` (S16_LE stereo).
    pub fn feed(&mut self, bytes: &[u8], t: Instant) {
        self.rest.extend_from_slice(bytes);
        let sb = if self.bits <= 16 { 2 } else { 4 };
        let whole = self.rest.len() / (2 * sb) * (2 * sb);
        let mut first_of_block = true;
        let bits = self.bits;
        // The top 16 bits of a sample, and whether the rest is what a 16-bit ramp widened gives.
        let top = |c: &[u8]| -> (u16, bool) {
            if sb == 2 {
                return (u16::from_le_bytes([c[0], c[1]]), true);
            }
            let v = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let shift = if bits == 24 { 8 } else { 16 };
            let fits = bits != 24 || (v >> 23 == 0 || v >> 23 == -1);
            ((v >> shift) as u16, fits && v & ((1 << shift) - 1) == 0)
        };
        for f in self.rest[..whole].chunks_exact(2 * sb) {
            self.total += 1;
            let ((a, a_ok), (b, b_ok)) = (top(&f[..sb]), top(&f[sb..]));
            if a == 0 && b == 0 && a_ok && b_ok {
                self.silence += 1;
                self.in_run = false;
                self.pause += 1;
                continue;
            }
            if b != a.wrapping_add(32_768) || !a_ok || !b_ok {
                self.other += 1;
                if self.other_at.len() < 200 {
                    self.other_at.push(self.total - 1);
                }
                self.in_run = false;
                self.pause += 1;
                continue;
            }
            if self.in_run && a == self.last.wrapping_add(1) {
                self.runs.last_mut().unwrap().frames += 1;
            } else {
                let joined = !self.runs.is_empty() && a == self.last.wrapping_add(1);
                self.runs.push(Run {
                    first: a,
                    frames: 1,
                    marks: Vec::new(),
                    joined,
                    after_pause: self.pause,
                });
                self.in_run = true;
                first_of_block = true;
            }
            if first_of_block {
                let r = self.runs.last_mut().unwrap();
                r.marks.push((r.frames - 1, t));
                first_of_block = false;
            }
            self.last = a;
            self.pause = 0;
        }
        self.rest.drain(..whole);
    }

    pub fn longest(&self) -> u64 {
        self.runs.iter().map(|r| r.frames).max().unwrap_or(0)
    }

    /// The ramp from run `from` on, as long as every break between runs is one Snapcast
    /// makes without losing the stream: a pause of silence after which the ramp goes on where
    /// it stopped (snapserver resynced), or one frame repeated or skipped (snapclient's soft
    /// sync). Stops at the first other break (frames lost or repeated), whose run it names.
    pub fn in_order(&self, from: usize) -> InOrder {
        let mut o = InOrder::default();
        for (i, r) in self.runs.iter().enumerate().skip(from) {
            if i > from {
                let prev = &self.runs[i - 1];
                let end = prev.first.wrapping_add((prev.frames - 1) as u16);
                let step = r.first.wrapping_sub(end) as i16;
                if r.joined && r.after_pause > 0 {
                    o.pauses += 1;
                } else if r.after_pause == 0 && matches!(step, 0 | 2) {
                    o.slips += 1;
                } else {
                    o.broke_at = Some(i);
                    return o;
                }
            }
            o.frames += r.frames;
        }
        o
    }

    /// The runs, for messages.
    pub fn describe(&self) -> String {
        format!(
            "runs (first, frames, joined, pause before) {:?}; {} other frames at {:?}",
            self.runs
                .iter()
                .map(|r| (r.first, r.frames, r.joined, r.after_pause))
                .collect::<Vec<_>>(),
            self.other,
            self.other_at
        )
    }
}

/// What [`Heard::in_order`] found.
#[derive(Clone, Copy, Debug, Default)]
pub struct InOrder {
    /// Ramp frames heard.
    pub frames: u64,
    /// Pauses of silence after which the ramp went on where it stopped.
    pub pauses: usize,
    /// Single frames repeated or skipped.
    pub slips: usize,
    /// The first run that does not go on from the one before.
    pub broke_at: Option<usize>,
}

/// Reads `r` (samples of `bits`, see [`Heard::bits`]) into a shared [`Heard`] on a thread
/// until EOF.
pub fn listen(mut r: impl Read + Send + 'static, bits: u16) -> Arc<Mutex<Heard>> {
    let heard = Arc::new(Mutex::new(Heard {
        bits,
        ..Heard::default()
    }));
    let h = heard.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            h.lock().unwrap().feed(&buf[..n], Instant::now());
        }
    });
    heard
}

/// Latency of a run (s): when its frames were read, against when the sender captured them
/// (frame n at `t0 + n / rate`, `t0` the sender's start), its first frame taken as frame
/// `lap * 65536 + first`. The earliest reads of each block: (minimum, median).
pub fn latency(run: &Run, lap: u64, t0: Instant) -> (f64, f64) {
    let base = lap * 65_536 + run.first as u64;
    let mut v: Vec<f64> = run
        .marks
        .iter()
        .map(|&(k, t)| t.duration_since(t0).as_secs_f64() - (base + k) as f64 / RATE)
        .collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// The lap (multiple of 65536 frames) of a run heard at about `latency` s after capture.
pub fn lap_of(run: &Run, t0: Instant, latency: f64) -> u64 {
    let (_, t) = run.marks[0];
    let expected = (t.duration_since(t0).as_secs_f64() - latency) * RATE;
    ((expected - run.first as f64) / 65_536.0).round().max(0.0) as u64
}
