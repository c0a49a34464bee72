//! Presentation time across receivers: the time exchange and the model of the sender's clock.
//!
//! Several receivers play one stream in step when each plays frame n at the same instant: the
//! sender's capture time of n (carried by every [`Flags::TIMED`](crate::wire::Flags::TIMED)
//! packet) plus a latency common to all, mapped to its own clock. The mapping is this module:
//! each receiver measures the sender's clock against its own with a small request/response
//! exchange over the stream's own sockets, NTP's four timestamps with the kernel's receive
//! timestamps on both sides, and keeps a line (offset and rate) through the exchanges whose
//! passes were quick.
//!
//! * [`packet`]: the "TS" datagram (request and response, optionally sealed with the stream's
//!   key), parsed totally.
//! * [`model`]: [`ClockModel`], minimum-delay filtering per direction, the line and its error
//!   estimate, restarts on a step.
//! * [`client`]: [`SyncClient`], the receiver's sans-IO state machine (`poll_transmit`,
//!   `poll_timeout`, `handle_response`, `sender_to_local`).
//! * [`responder`]: [`SyncResponder`], the sender's answers and its table of receivers.
//! * [`device`]: [`DeviceClock`], when a device reached a position (the sender's capture
//!   instants, a receiver's playback), under the drivers' late wake-ups.
//!
//! What no exchange can see is the asymmetry of the paths: the model is off by half the
//! difference between the two one-way delays. On one LAN segment that is a few µs; where it is
//! not, a clock disciplined by PTP or chrony can be used instead.
//!
//! Realtime contract: constructors allocate nothing on the heap (every table and window is a
//! fixed-capacity array inside the value: a [`SyncClient`] is about 33 kB, to be built off the
//! realtime thread and boxed where stacks are small); no method allocates, frees, locks,
//! formats or makes a syscall (`engine/tests/sync_alloc.rs` counts). Time comes in as
//! arguments, bytes go out through the caller's buffers.

pub mod client;
pub mod device;
mod envelope;
pub mod model;
pub mod packet;
pub mod responder;

pub use client::{ResponseOutcome, SyncClient, SyncParams};
pub use device::DeviceClock;
pub use model::{ClockModel, ClockParams};
pub use packet::{Report, TimePacket, TimeRequest, TimeResponse, TsError};
pub use responder::{PendingAnswer, ReceiverEntry, RefusedRequest, SyncResponder};
