//! The playback device's deadline at a wake-up: how long packet intake may go on before the
//! period is written, and whether a period was written late.
//!
//! Realtime contract: arithmetic on values read at the wake-up; no allocation, no syscall.

/// Where the playback device stands when it asks for a period: how long packet intake may go on
/// before the period is written, and whether a period was written late. Estimated from the
/// device's fill level at the wake-up and the monotonic clock (a vDSO read, no syscall), so
/// neither costs a call into the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RenderDeadline {
    /// When the device said how much room it has.
    woke_ns: u64,
    /// Frames queued in the device then (its buffer less its room).
    queued: u64,
    /// Frames per second.
    rate: u64,
    /// The late line: a period committed with fewer frames than this still queued ahead of it
    /// is late. Half the reserve the device holds when it asks for a period (`buffer - period`).
    late_frames: u64,
    /// Intake before the render stops this many frames above the late line: time for the
    /// batch under way and the render itself.
    guard_frames: u64,
}

impl RenderDeadline {
    pub(super) fn new(
        woke_ns: u64,
        room: usize,
        buffer: usize,
        period: usize,
        rate: u32,
    ) -> RenderDeadline {
        RenderDeadline {
            woke_ns,
            queued: buffer.saturating_sub(room) as u64,
            rate: rate.max(1) as u64,
            late_frames: (buffer.saturating_sub(period) as u64 / 2).max(1),
            guard_frames: period as u64 / 4,
        }
    }

    /// Frames still queued ahead of the next one written, at `t_ns`, when `written` frames were
    /// written since the wake-up.
    fn queued_at(&self, written: u64, t_ns: u64) -> u64 {
        let elapsed = t_ns.saturating_sub(self.woke_ns) as u128;
        let played = (elapsed * self.rate as u128 / 1_000_000_000) as u64;
        (self.queued + written).saturating_sub(played)
    }

    /// Until when (monotonic clock, ns) packets may be taken before the render.
    pub(super) fn intake_until(&self) -> u64 {
        let spare = self
            .queued
            .saturating_sub(self.late_frames + self.guard_frames);
        self.woke_ns + spare * 1_000_000_000 / self.rate
    }

    /// Whether a period committed at `t_ns`, after `written` frames since the wake-up, is late.
    pub(super) fn is_late(&self, written: u64, t_ns: u64) -> bool {
        self.queued_at(written, t_ns) < self.late_frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 48 kHz, periods of 240 frames (5 ms), a buffer of three periods: the device asks for a
    // period with two (10 ms) still queued, and a period is late with less than one queued.
    const MS: u64 = 1_000_000;

    fn woke_on_time() -> RenderDeadline {
        RenderDeadline::new(1_000 * MS, 240, 720, 240, 48_000)
    }

    #[test]
    fn intake_before_the_render_stops_a_guard_above_the_late_line() {
        let d = woke_on_time();
        assert_eq!(d.late_frames, 240);
        // 480 queued, late at 240, guard 60: 180 frames (3.75 ms) to take packets.
        assert_eq!(d.intake_until(), 1_000 * MS + 3_750_000);
        // A device that woke the loop late leaves less time, or none.
        let late = RenderDeadline::new(1_000 * MS, 480, 720, 240, 48_000);
        assert_eq!(late.intake_until(), 1_000 * MS);
    }

    #[test]
    fn a_period_is_late_past_halfway_to_an_underrun() {
        let d = woke_on_time();
        assert!(!d.is_late(0, 1_000 * MS));
        assert!(!d.is_late(0, 1_004 * MS + 999_000));
        assert!(d.is_late(0, 1_005 * MS + 100_000));
        // A second period in the same wake-up has the first one ahead of it.
        assert!(!d.is_late(240, 1_005 * MS + 100_000));
        // Catching up after a stall: room for two periods and more, 220 queued: the first is
        // late, the second has it ahead.
        let stalled = RenderDeadline::new(1_000 * MS, 500, 720, 240, 48_000);
        assert!(stalled.is_late(0, 1_000 * MS));
        assert!(!stalled.is_late(240, 1_000 * MS));
    }

    #[test]
    fn a_two_period_buffer_is_late_with_less_than_half_a_period_queued() {
        let d = RenderDeadline::new(0, 240, 480, 240, 48_000);
        assert_eq!(d.late_frames, 120);
        assert!(!d.is_late(0, 2 * MS));
        assert!(d.is_late(0, 2_600_000));
        // Late line 120 + guard 60: 60 frames (1.25 ms) of intake.
        assert_eq!(d.intake_until(), 1_250_000);
    }
}
