//! netaudio's streaming core.
//!
//! A sans-IO engine: the pure layers ([`wire`], [`sender`], [`jitter`], [`conceal`], [`drift`],
//! [`receiver`], [`rtp`]) never read a clock, never touch a file descriptor and never allocate
//! after construction. Time and bytes are passed in by a driver: the realtime driver (ALSA, UDP,
//! SCHED_FIFO threads) on a Pi, or [`sim`], which runs the same code in virtual time so that a
//! day of streaming takes seconds and every played frame can be checked.
//!
//! Realtime contract of the whole crate: constructors (`new`) allocate everything they will
//! ever need; every method called per packet or per period returns without allocating,
//! locking or blocking.
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The allocator wrapper: a `GlobalAlloc` is an unsafe trait by definition.
#[allow(unsafe_code)]
pub mod alloc_count;
pub mod auth;
pub mod autolatency;
pub mod conceal;
pub mod drift;
pub mod format;
pub mod jitter;
pub mod nack;
pub mod receiver;
pub mod recovery;
// The SIMD kernels: vector loads from slices (each block states its bound).
#[allow(unsafe_code)]
pub mod resample;
pub mod rng;
pub mod rtlog;
pub mod rtp;
pub mod sender;
pub mod session;
pub mod sim;
pub mod stats;
pub mod sync;
pub mod wire;

pub use format::{SampleFormat, StreamFormat};
pub use receiver::{DriftMode, Receiver, ReceiverConfig};
pub use recovery::RecoveryMode;
pub use sender::Sender;
