//! The realtime driver of netaudio: audio devices, sockets, realtime threads, and the sender
//! and receiver loops that run the engine core on them.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod check;
pub mod daemon;
pub mod devices;
pub mod discovery;
pub mod housekeeping;
pub mod keyfile;
pub mod net;
pub mod pcm;
pub mod rt;
pub mod rtp;
pub mod sap;
pub mod status;
pub mod stream;
pub mod tcp;
pub mod watchdog;
