//! The timeline of the stream played: where it starts (after warming up), where it ends (END
//! packets), how a new stream takes over (resync), and the accounting of gaps in the output.
//!
//! Realtime contract: nothing here allocates, locks, blocks or makes a syscall; events go to the
//! preallocated realtime log.

use super::{DriftMode, PacketOutcome, Receiver, WARMUP_MARGIN_MS};
use crate::auth::ReplayWindow;
use crate::rtlog::{Event, ResyncReason};

#[derive(Clone, Copy, Debug)]
pub(super) struct Timeline {
    pub(super) stream_id: u32,
    /// First frame of the stream we play (frames before it are prefill; `i64::MAX` while the
    /// receiver warms up).
    pub(super) start: i64,
    /// The stream's first frame, while the receiver warms up: the drift is not measured yet,
    /// so nothing is played until it is (see [`WARMUP_MAX_NS`](super::WARMUP_MAX_NS)).
    pub(super) warmup_from: Option<(i64, u64)>,
    /// The stream's first frame taken up: packets are counted from here.
    pub(super) origin: i64,
    pub(super) frames_per_packet: i64,
    /// Where the stream ends, once an END packet said so.
    pub(super) end: Option<i64>,
    /// Start time of the stream (authenticated streams; 0 otherwise).
    pub(super) session: u64,
    /// Newest frame end received and when.
    pub(super) newest_end: i64,
    pub(super) newest_t: u64,
}

impl Receiver {
    /// An END packet (no frames): the stream playing ends at its first frame index.
    pub(super) fn on_end(&mut self, h: &crate::wire::PacketHeader) -> PacketOutcome {
        match self.timeline {
            Some(t) if t.stream_id == h.stream_id => {
                let end = h.first_frame as i64;
                if end > self.read_pos + self.ring.capacity() as i64 {
                    // Further ahead than anything the ring could hold: not this stream's end.
                    self.counters.invalid_packets += 1;
                    return PacketOutcome::FrameIndexOutOfRange;
                }
                self.end_stream(end);
                PacketOutcome::Ended
            }
            _ => {
                self.counters.foreign_packets += 1;
                PacketOutcome::Foreign
            }
        }
    }

    /// The stream playing ends at frame `end` (once; later copies change nothing).
    pub(super) fn end_stream(&mut self, end: i64) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        if t.end.is_some() {
            return;
        }
        t.end = Some(end);
        // Frames missing before the end are lost packets, concealed as ever.
        t.newest_end = t.newest_end.max(end);
        let stream_id = t.stream_id;
        self.counters.streams_ended += 1;
        // The sender is gone: nothing more to ask it for.
        if let Some(tr) = self.tracker.as_mut() {
            tr.reset();
        }
        self.event(Event::StreamEnd {
            stream_id,
            frame: end as u64,
        });
    }

    pub(super) fn resync(
        &mut self,
        h: &crate::wire::PacketHeader,
        now_ns: u64,
        reason: ResyncReason,
    ) {
        let first = h.first_frame as i64;
        let end = first + h.frames as i64;
        let old = self.timeline.map(|t| t.stream_id);
        // The stream before ended and played out to its end: taking up the next is no gap.
        let clean = self.idle
            || self
                .timeline
                .is_some_and(|t| t.end.is_some_and(|end| self.read_pos >= end));
        self.ring.clear();
        // The first stream since start: hold it silent until the clocks are measured, so the
        // music starts at the right pitch instead of gliding there (a slip mode slips at the
        // right rate from the first frame). Later streams keep the estimate.
        let warm = self.cfg.drift_mode != DriftMode::Off && !self.drift.measured();
        self.timeline = Some(Timeline {
            stream_id: h.stream_id,
            start: if warm { i64::MAX } else { first },
            warmup_from: warm.then_some((first, now_ns)),
            origin: first,
            frames_per_packet: (h.frames as i64).max(1),
            end: None,
            session: self.packet_session,
            newest_end: end,
            newest_t: now_ns,
        });
        self.candidate = None;
        if reason == ResyncReason::NewStream
            && let Some(a) = self.auth.as_mut()
        {
            a.window = ReplayWindow::starting_at(h.seq);
        }
        self.jitter.restart_block();
        self.read_pos = end - self.moving.value.round() as i64;
        if warm {
            self.read_pos -= self.warmup_margin() as i64;
        }
        self.frac = 0;
        self.window_left = 0;
        self.slip_acc = 0.0;
        self.drift.restart_arrivals();
        self.drift.on_arrival(now_ns, end);
        // Another stream's frames: its capture times are given afresh.
        self.capture_stamp = None;
        self.capture_clock = false;
        self.stamps.clear();
        self.drift.set_reference(None);
        self.presenting_since = None;
        self.last_lost_packet = i64::MIN;
        match old {
            Some(from) => {
                self.counters.resyncs += 1;
                self.event(Event::Resync {
                    from,
                    to: h.stream_id,
                    reason,
                });
                if clean {
                    // Silence until the new stream's first frame: no gap.
                    self.idle = true;
                } else if self.ever_played && !self.in_gap {
                    self.begin_gap(first);
                }
            }
            None => self.event(Event::StreamStart {
                stream_id: h.stream_id,
                rate: h.format.rate,
                channels: h.format.channels,
            }),
        }
    }

    /// How far above its target the level is held while warming up, frames (the level's
    /// measure may still move by the network's jitter; the read position only moves forward).
    pub(super) fn warmup_margin(&self) -> f64 {
        (self.cfg.format.rate as f64 * WARMUP_MARGIN_MS / 1000.0).round()
    }

    pub(super) fn begin_gap(&mut self, frame: i64) {
        self.in_gap = true;
        self.gap_len = 0;
        self.counters.gaps += 1;
        self.event(Event::GapStart { frame });
    }

    /// Accounts one output frame: `present` says whether it carried stream audio.
    #[inline]
    pub(super) fn account(&mut self, present: bool, frame: i64, prefill: bool) {
        if present {
            self.ever_played = true;
            self.idle = false;
            if self.in_gap {
                self.in_gap = false;
                let frames = self.gap_len;
                self.event(Event::GapEnd { frames });
            }
            return;
        }
        if self.idle {
            return;
        }
        if let Some(t) = self.timeline
            && t.end.is_some_and(|end| frame >= end)
        {
            // Played out to the end of a stream that ended: silence follows, no gap (and a
            // gap running into the end stops there).
            self.idle = true;
            if self.in_gap {
                self.in_gap = false;
                let frames = self.gap_len;
                self.event(Event::GapEnd { frames });
            }
            return;
        }
        if !prefill {
            self.counters.concealed_frames += 1;
            // A hole below the newest frame received is a lost packet; beyond it, the stream
            // has stalled (an underrun), which is concealed the same way but lost nothing.
            if let Some(t) = self.timeline
                && frame < t.newest_end
            {
                let p = (frame - t.origin).div_euclid(t.frames_per_packet);
                if p != self.last_lost_packet {
                    self.last_lost_packet = p;
                    self.counters.lost_packets += 1;
                }
            }
        }
        if self.ever_played {
            if !self.in_gap {
                self.begin_gap(frame);
            }
            self.gap_len += 1;
        }
    }
}
