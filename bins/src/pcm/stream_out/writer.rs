//! [`FdWriter`]: the realtime side of an output: writes whole chunks to a non-blocking
//! descriptor (a TCP socket, a FIFO, stdout) that the connector thread hands over, and hands
//! it back when it fails.
//!
//! A chunk is written whole, in part (the rest is kept in a carry buffer and finished before
//! anything else, so the reader always gets whole frames), or not at all (counted as dropped:
//! no descriptor yet, a full pipe or socket buffer, a carry not yet finished). A descriptor that
//! fails (`EPIPE`, `ECONNRESET`, ...) goes back to the connector thread, which closes it and
//! opens or connects again; until a new one comes, chunks are counted as dropped. Each new
//! descriptor first gets one chunk of silence: the reader (snapserver reads a chunk every
//! `chunk_ms`, paced by its own clock) then always finds the next chunk waiting instead of
//! catching up with the writer, which it would answer with a resync.
//!
//! Realtime contract: construction allocates the carry and silence buffers; [`FdWriter::write_chunk`]
//! makes at most three `write` calls on a non-blocking descriptor, pops and pushes wait-free
//! rings and adds to atomics: no allocation, no lock, never blocks, never opens or closes a
//! descriptor (the one exception: if the ring back to the connector were full, which its
//! size of two rules out, the descriptor would be closed here).

use super::stats::OutputStats;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The descriptor rings between a writer and its connector thread: (connector's ends,
/// writer's ends).
pub(super) type Rings = (
    (rtrb::Producer<File>, rtrb::Consumer<File>),
    (rtrb::Consumer<File>, rtrb::Producer<File>),
);

/// A pair of rings, two descriptors deep each way.
pub(super) fn rings() -> Rings {
    let (give, take) = rtrb::RingBuffer::new(2);
    let (back, returned) = rtrb::RingBuffer::new(2);
    ((give, returned), (take, back))
}

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// All of it handed over, or the rest kept to finish.
    Taken,
    /// Nothing handed over.
    Refused,
}

/// Writes chunks to a descriptor the connector thread provides.
pub struct FdWriter {
    fd: Option<File>,
    from_connector: rtrb::Consumer<File>,
    to_connector: rtrb::Producer<File>,
    carry: Vec<u8>,
    carry_at: usize,
    carry_len: usize,
    silence: Vec<u8>,
    frame_bytes: usize,
    stats: Arc<OutputStats>,
}

impl FdWriter {
    /// A writer for chunks of up to `chunk_bytes` bytes of `frame_bytes`-byte frames, taking
    /// descriptors from `from_connector` and giving failed ones back to `to_connector`.
    pub(super) fn new(
        chunk_bytes: usize,
        frame_bytes: usize,
        from_connector: rtrb::Consumer<File>,
        to_connector: rtrb::Producer<File>,
        stats: Arc<OutputStats>,
    ) -> FdWriter {
        FdWriter {
            fd: None,
            from_connector,
            to_connector,
            carry: vec![0; chunk_bytes],
            carry_at: 0,
            carry_len: 0,
            silence: vec![0; chunk_bytes],
            frame_bytes,
            stats,
        }
    }

    /// Hands `chunk` (whole frames, at most the chunk size) to the reader, or counts its frames
    /// as dropped. Never blocks.
    pub fn write_chunk(&mut self, chunk: &[u8]) {
        let frames = (chunk.len() / self.frame_bytes) as u64;
        if self.fd.is_none() {
            self.take_new();
        }
        let taken = self.fd.is_some()
            && self.finish_carry()
            && self.write_or_carry(chunk) == Outcome::Taken;
        if taken {
            self.stats.frames_written.fetch_add(frames, Relaxed);
        } else {
            self.stats.frames_dropped.fetch_add(frames, Relaxed);
        }
    }

    /// A descriptor from the connector thread, if one is waiting; it first gets a chunk of
    /// silence.
    fn take_new(&mut self) {
        let Ok(f) = self.from_connector.pop() else {
            return;
        };
        self.fd = Some(f);
        self.carry_len = 0;
        self.stats.connected.store(true, Relaxed);
        // A chunk in reserve for the reader (see the module docs).
        let silence = std::mem::take(&mut self.silence);
        self.write_or_carry(&silence);
        self.silence = silence;
    }

    /// Whether a descriptor is in hand.
    pub fn is_connected(&self) -> bool {
        self.fd.is_some()
    }

    /// Writes what is left of a partly written chunk; `true` once nothing is left.
    fn finish_carry(&mut self) -> bool {
        while self.carry_at < self.carry_len {
            let Some(fd) = self.fd.as_mut() else {
                return false;
            };
            match fd.write(&self.carry[self.carry_at..self.carry_len]) {
                Ok(n) => {
                    self.stats.bytes_written.fetch_add(n as u64, Relaxed);
                    self.carry_at += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.lose();
                    return false;
                }
            }
        }
        self.carry_at = 0;
        self.carry_len = 0;
        true
    }

    /// Writes `data`; what the descriptor did not take after it took some is kept to finish.
    fn write_or_carry(&mut self, data: &[u8]) -> Outcome {
        let mut at = 0;
        while at < data.len() {
            let Some(fd) = self.fd.as_mut() else {
                return Outcome::Refused;
            };
            match fd.write(&data[at..]) {
                Ok(n) => {
                    self.stats.bytes_written.fetch_add(n as u64, Relaxed);
                    at += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if at == 0 {
                        return Outcome::Refused;
                    }
                    // Part of a frame may be out: the rest goes first next time.
                    let rest = &data[at..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_at = 0;
                    self.carry_len = rest.len();
                    return Outcome::Taken;
                }
                Err(_) => {
                    self.lose();
                    return Outcome::Refused;
                }
            }
        }
        Outcome::Taken
    }

    /// The descriptor failed: back to the connector thread, to be closed and opened again.
    fn lose(&mut self) {
        self.carry_at = 0;
        self.carry_len = 0;
        if let Some(fd) = self.fd.take() {
            self.stats.connected.store(false, Relaxed);
            self.stats.disconnects.fetch_add(1, Relaxed);
            // The ring holds two and the connector empties it: this does not fail in practice.
            let _ = self.to_connector.push(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    fn socket_pair() -> (File, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (File::from(OwnedFd::from(a)), b)
    }

    #[test]
    fn chunks_go_whole_or_are_counted_and_a_failed_descriptor_goes_back() {
        let stats = Arc::new(OutputStats::default());
        let ((mut give, mut returned), (take, back)) = rings();
        let mut w = FdWriter::new(400, 4, take, back, stats.clone());
        let chunk: Vec<u8> = (0..400).map(|i| (i % 251) as u8).collect();
        // No descriptor yet: dropped.
        w.write_chunk(&chunk);
        assert_eq!(stats.frames_dropped.load(Relaxed), 100);
        let (fd, mut reader) = socket_pair();
        give.push(fd).unwrap();
        // Fill the socket until it refuses: the last write is partial, then the next refused.
        let mut written = 0;
        while stats.frames_dropped.load(Relaxed) == 100 {
            w.write_chunk(&chunk);
            written += 1;
            assert!(written < 100_000, "the socket never filled");
        }
        assert!(w.is_connected());
        assert_eq!(stats.frames_written.load(Relaxed), (written - 1) * 100);
        // The reader gets silence first, then whole chunks, the carried rest in its place.
        reader.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {
                    // Drained: let the writer finish its carry, then read again.
                    let before = got.len();
                    w.write_chunk(&chunk);
                    match reader.read(&mut buf) {
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(_) if got.len() == before => break,
                        Err(_) => {}
                    }
                }
            }
            if got.len() > 400 * (written as usize + 8) {
                break;
            }
        }
        assert!(got[..400].iter().all(|&b| b == 0));
        assert_eq!(
            (got.len() - 400) % 400,
            0,
            "the reader gets whole chunks: {} bytes",
            got.len()
        );
        for c in got[400..].chunks(400) {
            assert_eq!(c, &chunk[..]);
        }
        assert_eq!(
            stats.bytes_written.load(Relaxed) as usize,
            got.len(),
            "every byte counted once"
        );
        // The reader goes away: the descriptor goes back, chunks are dropped meanwhile.
        drop(reader);
        let dropped = stats.frames_dropped.load(Relaxed);
        w.write_chunk(&chunk);
        w.write_chunk(&chunk);
        assert!(!w.is_connected());
        assert!(stats.frames_dropped.load(Relaxed) >= dropped + 100);
        assert_eq!(stats.disconnects.load(Relaxed), 1);
        assert!(returned.pop().is_ok(), "the failed descriptor came back");
    }
}
