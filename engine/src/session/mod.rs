//! Sessions: each end of a stream as one state machine that owns every protocol decision,
//! driven from outside with bytes, device buffers and time (as quinn-proto's `Connection` is).
//! The daemon's realtime loops (`netaudio`'s `stream` module) and the simulator ([`crate::sim`])
//! are two drivers of the same sessions, so a simulated day exercises the composition the
//! daemon runs.

pub mod fault;
pub mod packetizer;
pub mod pcm_stream;
pub mod receiver;
pub mod sender;

pub use fault::FaultInjector;
pub use packetizer::{AnyPacketizer, Packetizer};
pub use pcm_stream::PcmStreamFramer;
pub use receiver::ReceiverSession;
pub use sender::SenderSession;
