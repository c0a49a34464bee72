//! Outputs that are not sound cards: a Snapcast server's TCP source, a FIFO, standard output.
//!
//! `netaudio recv --device NAME` (and `audio.device`) takes, besides ALSA and virtual devices:
//! * `snapcast:tcp://HOST:PORT[?control=PORT]`: connects to a snapserver TCP source in server
//!   mode (`source = tcp://0.0.0.0:PORT?name=NAME&mode=server` in snapserver.conf) and writes
//!   PCM in the source's sample format, read from snapserver's JSON-RPC control port (1705
//!   unless `control=` says otherwise): rate and channels must match the stream (an error
//!   names both formats and the fix), the sample width is converted. When snapserver goes
//!   away the connection is made again with back-off; meanwhile the receiver keeps rendering
//!   and its frames are counted as dropped;
//! * `pipe:PATH`: a FIFO (Snapcast's `pipe://` source, or any reader), created if missing;
//!   the connector thread waits for a reader and hands the descriptor over non-blocking; a
//!   full pipe or no reader drops frames (counted), it never makes the receiver wait;
//! * `stdout`: standard output, for `netaudio recv --device stdout | ...` (logs go to stderr).
//!
//! The device ([`StreamPlayback`]) is clocked by `CLOCK_MONOTONIC`, so the receiver's jitter
//! buffer, loss recovery and drift correction run as for a card, the machine's clock standing
//! in for the card's. Writes go out in chunks of the reader's size (snapserver's `chunk_ms`,
//! 20 ms), a chunk of silence ahead, so snapserver always finds a chunk waiting and never
//! resyncs.
//!
//! Realtime contract: see [`device`] (the device the realtime loop drives) and [`writer`]
//! (the non-blocking writes): after `open` nothing allocates, locks, blocks or opens on the
//! realtime thread; connecting, opening the FIFO, the format check and back-off run on the
//! output's connector thread ([`connector`]).
//!
//! Layout: `names` parses output names, `snapcast` asks snapserver for its format, `writer`
//! is the realtime side's writer, `connector` the thread that opens and reopens, `stats` the
//! counters, `device` the playback device.

pub mod connector;
pub mod device;
pub mod names;
pub mod snapcast;
pub mod stats;
pub mod writer;

pub use device::StreamPlayback;
pub use names::{OutputTarget, WireSample, parse_name};
pub use stats::OutputStats;
