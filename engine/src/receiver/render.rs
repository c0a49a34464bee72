//! Frames out: one period for the playback device, present frames copied bit-exact, missing
//! ones concealed, the drift corrected by slipping single frames or by the resampler.
//!
//! Realtime contract: [`Receiver::render`] never allocates, locks, blocks or makes a syscall; it
//! works in the frame and period buffers allocated by [`Receiver::new`].

use super::{DriftMode, Receiver};

impl Receiver {
    /// Writes `out.len() / frame_bytes` frames for the playback device (in
    /// [`ReceiverConfig::output_sample`](super::ReceiverConfig::output_sample)), at `now_ns`.
    pub fn render(&mut self, out: &mut [u8], now_ns: u64) {
        self.now = now_ns;
        let fb = self.cfg.output_frame_bytes();
        let n = out.len() / fb;
        let correction = self.update_drift(now_ns, n);
        match self.cfg.drift_mode {
            DriftMode::Resample => self.render_resampled(&mut out[..n * fb], correction),
            mode => {
                let warming = self.timeline.is_some_and(|t| t.warmup_from.is_some());
                if mode == DriftMode::Slip && !warming {
                    self.plan_slip(n, correction);
                }
                self.render_direct(&mut out[..n * fb]);
            }
        }
        self.counters.frames_played += n as u64;
    }

    fn plan_slip(&mut self, n: usize, correction: f64) {
        self.slip_acc += n as f64 * correction;
        // Never let a backlog of corrections pile up beyond what windows can pay back.
        self.slip_acc = self.slip_acc.clamp(-4.0, 4.0);
        if self.window_left == 0 && self.slip_acc.abs() >= 1.0 {
            let w = self.cfg.slip_window as i64;
            let one = 1i64 << 32;
            self.window_left = w as usize;
            if self.slip_acc > 0.0 {
                self.window_step = one + one / w;
                self.slip_acc -= 1.0;
                self.counters.slip_drops += 1;
            } else {
                self.window_step = one - one / w;
                self.slip_acc += 1.0;
                self.counters.slip_inserts += 1;
            }
        }
    }

    fn render_direct(&mut self, out: &mut [u8]) {
        let fmt = self.cfg.output_sample;
        let ch = self.cfg.format.channels as usize;
        let fb = self.cfg.output_frame_bytes();
        let n = out.len() / fb;
        let start = self.timeline.map_or(i64::MAX, |t| t.start);
        let mut j = 0;
        while j < n {
            // Fast path: whole runs of present frames, copied exactly.
            if self.window_left == 0
                && self.frac == 0
                && self.conceal.is_transparent()
                && self.read_pos >= start
            {
                let run = self.ring.run(self.read_pos, n - j);
                let len = run.len() / ch;
                if len > 0 {
                    fmt.encode_slice(run, &mut out[j * fb..(j + len) * fb]);
                    self.conceal.pass_through(&run[(len - 1) * ch..]);
                    self.read_pos += len as i64;
                    j += len;
                    self.account(true, self.read_pos - 1, false);
                    continue;
                }
            }
            // One frame at a time: holes, fades, slip windows.
            let mut i = self.read_pos;
            let prefill = i < start;
            let present = if prefill {
                false
            } else if self.frac == 0 {
                match self.ring.get(i) {
                    Some(a) => {
                        self.frame_a.copy_from_slice(a);
                        true
                    }
                    None => false,
                }
            } else {
                match (self.ring.get(i), self.ring.get(i + 1)) {
                    (Some(a), Some(b)) => {
                        let w = self.frac as i64;
                        for ((d, &x), &y) in self.frame_a.iter_mut().zip(a).zip(b) {
                            // i128: a full-scale step times a 32-bit fraction needs 65 bits.
                            let step = ((y as i64 - x as i64) as i128 * w as i128) >> 32;
                            *d = (x as i64 + step as i64) as i32;
                        }
                        true
                    }
                    (Some(_), None) => {
                        // The hole is the next frame: account it there.
                        i += 1;
                        false
                    }
                    _ => false,
                }
            };
            let input = if present {
                Some(&self.frame_a[..])
            } else {
                None
            };
            self.conceal.frame(input, &mut self.frame_out);
            fmt.encode_slice(&self.frame_out, &mut out[j * fb..(j + 1) * fb]);
            self.account(present, i, prefill);
            if self.window_left > 0 {
                let pos = self.frac as i64 + self.window_step;
                self.read_pos += pos >> 32;
                self.frac = (pos & 0xFFFF_FFFF) as u64;
                self.window_left -= 1;
            } else {
                self.read_pos += 1;
            }
            j += 1;
        }
    }

    fn render_resampled(&mut self, out: &mut [u8], correction: f64) {
        let Some(mut rs) = self.resampler.take() else {
            return;
        };
        let fmt = self.cfg.output_sample;
        let fb = self.cfg.output_frame_bytes();
        let ch = self.cfg.format.channels as usize;
        let start = self.timeline.map_or(i64::MAX, |t| t.start);
        let step = 1.0 + correction;
        let total = out.len() / fb;
        let mut done = 0;
        while done < total {
            let n = (total - done).min(rs.max_frames());
            // The input frames this block takes: whole runs of present frames straight from
            // the ring, the rest (holes, fades, prefill) one by one through the concealer.
            let need = rs.inputs_needed(n, step);
            let mut i = 0;
            while i < need {
                if self.conceal.is_transparent() && self.read_pos >= start {
                    let run = self.ring.run(self.read_pos, need - i);
                    let len = run.len() / ch;
                    if len > 0 {
                        for (k, frame) in run.chunks_exact(ch).enumerate() {
                            rs.set_input(i + k, frame);
                        }
                        self.conceal.pass_through(&run[(len - 1) * ch..]);
                        self.read_pos += len as i64;
                        i += len;
                        self.account(true, self.read_pos - 1, false);
                        continue;
                    }
                }
                let r = self.read_pos;
                let prefill = r < start;
                let present = !prefill
                    && match self.ring.get(r) {
                        Some(a) => {
                            self.frame_a.copy_from_slice(a);
                            true
                        }
                        None => false,
                    };
                let input = if present {
                    Some(&self.frame_a[..])
                } else {
                    None
                };
                self.conceal.frame(input, &mut self.frame_out);
                rs.set_input(i, &self.frame_out);
                self.account(present, r, prefill);
                self.read_pos += 1;
                i += 1;
            }
            rs.process(&mut self.out_samples, n, step);
            fmt.encode_slice(
                &self.out_samples[..n * ch],
                &mut out[done * fb..(done + n) * fb],
            );
            done += n;
        }
        self.resampler = Some(rs);
    }
}
