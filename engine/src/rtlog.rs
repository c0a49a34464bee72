//! defmt-like logging for realtime threads.
//!
//! A realtime thread never formats a string or calls `log!`. It pushes a small `Copy` record
//! ([`Event`]) into a lock-free single-producer single-consumer queue; a normal thread drains
//! the queue and formats each record through the `log` crate. When the queue is full the
//! event is dropped and counted, never waited for.
//!
//! Realtime contract of [`EventProducer::push`]: no allocation, no lock, no syscall.

use heapless::spsc::{Consumer, Producer, Queue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Records the queue holds (one slot of the ring stays free).
pub const QUEUE_LEN: usize = 256;

/// What happened on a realtime thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The receiver locked onto a stream.
    StreamStart {
        /// The sender's stream id.
        stream_id: u32,
        /// Frames per second.
        rate: u32,
        /// Channels.
        channels: u8,
    },
    /// The receiver dropped its timeline and started over.
    Resync {
        /// Stream id before.
        from: u32,
        /// Stream id after.
        to: u32,
        /// Why.
        reason: ResyncReason,
    },
    /// The stream playing ended with an END packet: its sender stopped cleanly.
    StreamEnd {
        /// The sender's stream id.
        stream_id: u32,
        /// Stream frame index where it ends.
        frame: u64,
    },
    /// Played audio was interrupted at a stream frame.
    GapStart {
        /// Stream frame index where the gap begins.
        frame: i64,
    },
    /// Played audio resumed after `frames` frames of concealment.
    GapEnd {
        /// Frames the gap lasted.
        frames: u64,
    },
    /// The device over- or underran and was recovered.
    Xrun {
        /// True for capture, false for playback.
        capture: bool,
    },
    /// The device went away (e.g. USB unplugged).
    DeviceLost {
        /// True for capture, false for playback.
        capture: bool,
        /// The errno reported.
        errno: i32,
    },
    /// The device is back.
    DeviceBack {
        /// True for capture, false for playback.
        capture: bool,
    },
    /// Sending a packet failed.
    SendFailed {
        /// The errno reported.
        errno: i32,
    },
    /// Raw TCP mode: a connection is up (`accepted`: taken by the receiver's listener,
    /// otherwise made by the sender).
    TcpConnected {
        /// Accepted (receiver) or connected (sender).
        accepted: bool,
        /// Connections made so far, this one included.
        count: u32,
    },
    /// Raw TCP mode: the connection ended.
    TcpClosed {
        /// The errno that ended it; 0 when the peer closed it, -1 when a new connection
        /// replaced it.
        errno: i32,
    },
    /// Raw TCP mode: connecting failed; the next attempt follows after a back-off.
    TcpConnectFailed {
        /// The errno reported.
        errno: i32,
        /// Failed attempts since the connection was last up.
        attempts: u32,
        /// Milliseconds until the next attempt.
        retry_ms: u32,
    },
    /// The sender's resend rate cap refused packets NACKs asked for (a flood of NACKs, or
    /// more loss than the cap allows); reported at most once a second.
    ResendsCapped {
        /// Packets refused since the last report.
        refused: u32,
        /// The cap, percent of the stream's bytes.
        percent: u16,
    },
}

/// Why the receiver resynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// A new sender (new stream id) took over.
    NewStream,
    /// Packets arrived too far ahead of what is playing (a stall or outage).
    Overflow,
}

/// Where a session's events go: the realtime event queue in a daemon, nowhere (`()`) or a
/// count in the simulator. Pushing never blocks and never allocates.
pub trait EventSink {
    /// One event at `t_ns` (the driver's clock).
    fn push_event(&mut self, t_ns: u64, event: Event);
}

impl EventSink for () {
    fn push_event(&mut self, _t_ns: u64, _event: Event) {}
}

impl<T: EventSink + ?Sized> EventSink for &mut T {
    fn push_event(&mut self, t_ns: u64, event: Event) {
        (**self).push_event(t_ns, event)
    }
}

impl EventSink for EventProducer {
    fn push_event(&mut self, t_ns: u64, event: Event) {
        self.push(t_ns, event)
    }
}

/// A timestamped event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Time of the event in the driver's clock, nanoseconds.
    pub t_ns: u64,
    /// The event.
    pub event: Event,
}

/// The realtime end of an event queue.
pub struct EventProducer {
    inner: Producer<'static, Record, QUEUE_LEN>,
    dropped: Arc<AtomicU64>,
}

/// The housekeeping end of an event queue.
pub struct EventConsumer {
    inner: Consumer<'static, Record, QUEUE_LEN>,
    dropped: Arc<AtomicU64>,
}

/// Makes a queue. Allocates once; the queue lives for the rest of the process.
pub fn queue() -> (EventProducer, EventConsumer) {
    let q: &'static mut Queue<Record, QUEUE_LEN> = Box::leak(Box::new(Queue::new()));
    let (p, c) = q.split();
    let dropped = Arc::new(AtomicU64::new(0));
    (
        EventProducer {
            inner: p,
            dropped: dropped.clone(),
        },
        EventConsumer { inner: c, dropped },
    )
}

impl EventProducer {
    /// Queues an event; drops and counts it when the queue is full.
    #[inline]
    pub fn push(&mut self, t_ns: u64, event: Event) {
        if self.inner.enqueue(Record { t_ns, event }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl EventConsumer {
    /// The next queued record.
    pub fn pop(&mut self) -> Option<Record> {
        self.inner.dequeue()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Formats every queued record through `log`; returns how many.
    pub fn drain_to_log(&mut self) -> usize {
        let mut n = 0;
        while let Some(r) = self.pop() {
            log_record(&r);
            n += 1;
        }
        n
    }
}

/// Formats one record through `log` at a level that fits it.
pub fn log_record(r: &Record) {
    let t = r.t_ns as f64 / 1e9;
    match r.event {
        Event::StreamStart {
            stream_id,
            rate,
            channels,
        } => log::info!("[{t:.3}] stream {stream_id:08x} started: {rate} Hz, {channels} ch"),
        Event::Resync { from, to, reason } => {
            log::warn!("[{t:.3}] resync {from:08x} -> {to:08x} ({reason:?})")
        }
        Event::StreamEnd { stream_id, frame } => log::info!(
            "[{t:.3}] sender stopped: stream {stream_id:08x} ends at frame {frame}; silence until a sender starts (not a gap)"
        ),
        Event::GapStart { frame } => log::warn!("[{t:.3}] gap begins at frame {frame}"),
        Event::GapEnd { frames } => log::warn!("[{t:.3}] gap ended after {frames} frames"),
        Event::Xrun { capture } => log::warn!(
            "[{t:.3}] {} xrun recovered",
            if capture { "capture" } else { "playback" }
        ),
        Event::DeviceLost { capture, errno } => log::error!(
            "[{t:.3}] {} device lost (errno {errno}); reopening with back-off",
            if capture { "capture" } else { "playback" }
        ),
        Event::DeviceBack { capture } => log::info!(
            "[{t:.3}] {} device back",
            if capture { "capture" } else { "playback" }
        ),
        Event::SendFailed { errno } => log::warn!(
            "[{t:.3}] sending fails: {} (is the receiver running and reachable?)",
            std::io::Error::from_raw_os_error(errno)
        ),
        Event::TcpConnected { accepted, count } => log::info!(
            "[{t:.3}] TCP connection {count} {}",
            if accepted { "accepted" } else { "connected" }
        ),
        Event::TcpClosed { errno } => match errno {
            0 => log::warn!("[{t:.3}] TCP connection closed by the peer"),
            -1 => log::warn!("[{t:.3}] TCP connection replaced by a new one"),
            e => log::warn!(
                "[{t:.3}] TCP connection lost: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        },
        Event::TcpConnectFailed {
            errno,
            attempts,
            retry_ms,
        } => log::warn!(
            "[{t:.3}] TCP connect failed ({attempts} attempts): {}; retrying every {retry_ms} ms \
             (is the receiver listening?)",
            std::io::Error::from_raw_os_error(errno)
        ),
        Event::ResendsCapped { refused, percent } => log::warn!(
            "[{t:.3}] {refused} packets asked for again were not sent: resending is capped at \
             {percent} % of the stream's bytes (forged NACKs, or a link losing that much)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_and_counts() {
        let (mut p, mut c) = queue();
        for i in 0..QUEUE_LEN as u64 + 10 {
            p.push(i, Event::Xrun { capture: true });
        }
        assert_eq!(c.dropped(), 11);
        let mut n = 0;
        while let Some(r) = c.pop() {
            assert_eq!(r.t_ns, n);
            n += 1;
        }
        assert_eq!(n, QUEUE_LEN as u64 - 1);
    }
}
