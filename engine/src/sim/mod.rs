//! The simulated rig: the real sender and receiver cores between virtual devices and a
//! modelled network, in virtual time.
//!
//! A discrete-event loop advances four event sources in time order: the capture device's
//! period ticks (the source signal is captured and packetized), packet arrivals (from the
//! [`net::Network`] model), the playback device's period ticks (the receiver renders a
//! period, which the [`signal::Analyzer`] checks frame by frame) and, with loss recovery,
//! NACK arrivals on a return path (a second seeded network with the same impairments).
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
mod report;
mod rig;
pub mod signal;

pub use config::{MAX_RESTARTS, Restart, SimConfig, Stall, default_latency_ms};
pub use report::{RecoveryReport, SimReport, TracePoint};
pub use rig::Sim;

use std::sync::atomic::AtomicU64;

/// Builds and runs a simulation.
pub fn run(cfg: SimConfig, progress: Option<&AtomicU64>) -> Result<SimReport, String> {
    Ok(Sim::new(cfg)?.run(progress))
}
