//! The realtime loops: the engine core on devices and sockets.
//!
//! * [`run_sender`]: poll the capture device → lend its buffer (ALSA mmap area) to the
//!   packetizer → one `sendmsg` per packet with an iovec of [header on the stack, slice of the
//!   device buffer] → release the frames. The samples are never copied in user space: the
//!   payload handed to `sendmsg` *is* the device buffer: `tests/zero_copy.rs` runs this loop
//!   with a recording socket and checks that every payload pointer lies inside the capture
//!   device's own buffer.
//! * [`run_receiver`]: poll the playback device → take every datagram waiting with one
//!   `recvmmsg` (kernel arrival timestamps) into the engine's receiver → render straight into
//!   the device buffer → commit. The drift controller runs inside `render`.
//!   In raw TCP mode the socket is a [`crate::tcp::TcpPcmReceiver`], which hands over the
//!   bytes waiting as packets the same way.
//!
//! Both loops: xruns (EPIPE, ESTRPIPE) are recovered and counted; a lost device (ENODEV, USB
//! unplugged) is reopened with back-off while the network side stays up; counters are published
//! to [`Stats`] once per period and events go to the realtime event queue.
//!
//! Realtime contract: after the first period a loop makes no allocation, takes no lock and
//! formats nothing; it blocks only in the device's poll and in `clock_nanosleep` during a
//! device back-off. Each loop counts its own allocations (see [`engine::alloc_count`]) and
//! returns the count.

use crate::net::{DatagramIn, DatagramOut, monotonic_ns};
use crate::pcm::{Capture, PcmError, Playback};
use crate::status::Meter;
use engine::alloc_count;
use engine::receiver::Receiver;
use engine::rng::mix64;
use engine::rtlog::{Event, EventProducer};
use engine::sender::Sender;
use engine::stats::{Stats, StatsSnapshot};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a loop reports when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopReport {
    /// Allocations the realtime thread made after its first period.
    pub allocations: u64,
    /// Periods run.
    pub periods: u64,
}

const WAIT_MS: i32 = 100;
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 2_000;

fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Runs the sender until `stop` is set.
pub fn run_sender<C: Capture, S: DatagramOut>(
    dev: &mut C,
    tx: &mut Sender,
    sock: &S,
    stop: &AtomicBool,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let period = dev.setup().period;
    let buffer = dev.setup().buffer;
    let format = dev.setup().format;
    let mut c = StatsSnapshot::default();
    let mut report = LoopReport::default();
    let mut last_fail_ns = 0u64;
    let _ = dev.start();
    while !stop.load(Ordering::Relaxed) {
        if report.periods == 1 {
            // Start-up is over: from here on, count every allocation.
            alloc_count::track_this_thread(true);
        }
        let err = match dev.wait(WAIT_MS) {
            Ok(0) => continue,
            Ok(mut avail) => {
                let mut failed = None;
                let mut budget = buffer / period + 1;
                while avail >= period && budget > 0 {
                    budget -= 1;
                    let r = dev.read(period, |frames| {
                        meter.measure(format, frames);
                        tx.packetize(frames, |header, payload| {
                            match sock.send_gather(header, payload) {
                                Ok(_) => {
                                    c.packets_sent += 1;
                                }
                                Err(errno) => {
                                    // Tell the log at most once a second, not every time.
                                    let now = monotonic_ns();
                                    if now.saturating_sub(last_fail_ns) >= 1_000_000_000 {
                                        events.push(now, Event::SendFailed { errno });
                                        last_fail_ns = now;
                                    }
                                    c.send_errors += 1;
                                }
                            }
                        });
                    });
                    match r {
                        Ok(n) => {
                            c.frames_sent += n as u64;
                            avail = avail.saturating_sub(n);
                            if n == 0 {
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                failed
            }
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            handle_capture_error(dev, tx, e, stop, &mut c, events, buffer);
        }
        stats.publish(&c);
    }
    tx.set_ending();
    report.allocations = alloc_count::this_thread_allocations();
    alloc_count::track_this_thread(false);
    report
}

fn handle_capture_error<C: Capture>(
    dev: &mut C,
    tx: &mut Sender,
    e: PcmError,
    stop: &AtomicBool,
    c: &mut StatsSnapshot,
    events: &mut EventProducer,
    buffer: usize,
) {
    match e {
        PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
            c.xruns += 1;
            events.push(monotonic_ns(), Event::Xrun { capture: true });
            // At least a buffer's worth was lost: leave a hole where it was, so the receiver
            // conceals it instead of running time together.
            tx.skip(buffer as u64);
            if dev.recover(e).is_err() {
                sleep_ms(BACKOFF_MIN_MS);
            }
        }
        PcmError::Gone(errno) => {
            events.push(
                monotonic_ns(),
                Event::DeviceLost {
                    capture: true,
                    errno,
                },
            );
            let mut backoff = BACKOFF_MIN_MS;
            while !stop.load(Ordering::Relaxed) {
                sleep_ms(backoff);
                if dev.reopen().is_ok() && dev.start().is_ok() {
                    events.push(monotonic_ns(), Event::DeviceBack { capture: true });
                    // A new stream: the receiver resyncs at once.
                    let id = mix64(tx.stream_id() as u64 ^ monotonic_ns()) as u32;
                    *tx = Sender::new(tx.format(), dev.setup().period, id, tx.next_seq())
                        .expect("same format and period as before");
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            }
        }
    }
}

/// Runs the receiver until `stop` is set.
pub fn run_receiver<P: Playback, S: DatagramIn>(
    dev: &mut P,
    rx: &mut Receiver,
    sock: &mut S,
    stop: &AtomicBool,
    stats: &Stats,
    meter: &Meter,
    events: &mut EventProducer,
) -> LoopReport {
    let period = dev.setup().period;
    let format = dev.setup().format;
    let mut report = LoopReport::default();
    let mut xruns = 0u64;
    let mut net_errors = 0u64;
    prime_and_start(dev, rx);
    while !stop.load(Ordering::Relaxed) {
        if report.periods == 1 {
            alloc_count::track_this_thread(true);
        }
        let waited = dev.wait(WAIT_MS);
        if sock
            .recv_batch(|datagram, t| {
                rx.on_packet(datagram, t);
            })
            .is_err()
        {
            net_errors += 1;
        }
        let err = match waited {
            Ok(mut room) => {
                let now = monotonic_ns();
                let mut failed = None;
                // Bounded: never more than a buffer's worth per wake-up, whatever the device says.
                let mut budget = dev.setup().buffer / period + 1;
                while room >= period && budget > 0 {
                    budget -= 1;
                    let written = dev.write(period, |area| {
                        rx.render(area, now);
                        meter.measure(format, area);
                    });
                    match written {
                        Ok(0) => break,
                        Ok(n) => room -= n.min(room),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.periods += 1;
                failed
            }
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            match e {
                PcmError::Xrun | PcmError::Suspended | PcmError::Other(_) => {
                    xruns += 1;
                    events.push(monotonic_ns(), Event::Xrun { capture: false });
                    if dev.recover(e).is_ok() {
                        prime_and_start(dev, rx);
                    } else {
                        sleep_ms(BACKOFF_MIN_MS);
                    }
                }
                PcmError::Gone(errno) => {
                    events.push(
                        monotonic_ns(),
                        Event::DeviceLost {
                            capture: false,
                            errno,
                        },
                    );
                    let mut backoff = BACKOFF_MIN_MS;
                    while !stop.load(Ordering::Relaxed) {
                        // The network side stays up: keep taking packets meanwhile.
                        let _ = sock.recv_batch(|datagram, t| {
                            rx.on_packet(datagram, t);
                        });
                        sleep_ms(backoff);
                        if dev.reopen().is_ok() {
                            events.push(monotonic_ns(), Event::DeviceBack { capture: false });
                            prime_and_start(dev, rx);
                            break;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
                    }
                }
            }
        }
        let mut c = *rx.counters();
        c.xruns = xruns;
        c.invalid_packets += net_errors;
        stats.publish(&c);
    }
    report.allocations = alloc_count::this_thread_allocations();
    alloc_count::track_this_thread(false);
    report
}

/// Fills the playback buffer (silence until a stream arrives) and starts the device.
fn prime_and_start<P: Playback>(dev: &mut P, rx: &mut Receiver) {
    let period = dev.setup().period;
    let now = monotonic_ns();
    let mut guard = 0;
    while let Ok(room) = dev.wait(0) {
        if room < period || guard > 64 {
            break;
        }
        if dev.write(period, |area| rx.render(area, now)).is_err() {
            break;
        }
        guard += 1;
    }
    let _ = dev.start();
}
