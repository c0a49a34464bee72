//! The simulated rig: the real sender and receiver cores between virtual devices and a
//! modelled network, in virtual time.
//!
//! A discrete-event loop advances four event sources in time order: the capture device's
//! period ticks (the source signal is captured and packetized), packet arrivals (from the
//! [`net::Network`] model), the playback device's period ticks (the receiver renders a
//! period, which the [`signal::Analyzer`] checks frame by frame) and, with loss recovery,
//! NACK arrivals on a return path (a second seeded network with the same impairments).
//!
//! Several receivers ([`SimConfig::receivers`]) each have their own playback clock, forward
//! link and return path: one sender feeds them all, as a multicast group would (each packet
//! goes through every receiver's link), a receiver's NACKs reach the sender through its own
//! return path and the packets sent again go to it alone. The [`skew::SkewMeter`] pairs the
//! frames they play and measures, in virtual time, how far apart the same frame leaves their
//! DACs.
//!
//! Loss recovery is modelled as the daemons do it: the receiver's realtime thread waits on its
//! socket as well as on its device, so it takes each packet as it arrives, and it also wakes
//! when its [`crate::recovery::LossTracker`] has a packet overdue or a request due again; it
//! then writes a NACK onto the return path. The sender's thread likewise wakes when a NACK
//! arrives and sends the packets asked for from its
//! [`RetransmitHistory`](crate::recovery::RetransmitHistory) (within its limits) through the
//! forward link at once. The two devices have independent clocks with ppm offsets and optional
//! wander, so a day of drift runs in seconds, deterministically for a seed.
//!
//! Everything is allocated in [`Sim::new`]; the loop in [`Sim::run`] runs under an allocation
//! and free counter and reports what it counted.

pub mod clock;
mod config;
pub mod fidelity;
pub mod net;
mod node;
mod report;
mod rig;
pub mod signal;
pub mod skew;

pub use config::{
    MAX_RECEIVERS, MAX_RESTARTS, Restart, SimConfig, SimReceiver, Stall, default_latency_ms,
};
pub use report::{ReceiverReport, RecoveryReport, SimReport, SyncFigures, TracePoint};
pub use rig::Sim;

/// Seconds of virtual time as nanoseconds.
fn ns(t: f64) -> u64 {
    (t * 1e9).round().max(0.0) as u64
}

/// Whether the source is the frame-index ramp (which names every played frame).
fn source_is_ramp(s: signal::SourceKind) -> bool {
    matches!(s, signal::SourceKind::Ramp)
}

use std::sync::atomic::AtomicU64;

/// Builds and runs a simulation.
pub fn run(cfg: SimConfig, progress: Option<&AtomicU64>) -> Result<SimReport, String> {
    Ok(Sim::new(cfg)?.run(progress))
}
