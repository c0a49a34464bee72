//! [`StreamPlayback`]: a playback device that is not a sound card. It plays at
//! `CLOCK_MONOTONIC` (the virtual devices' clock, without an offset): its buffer drains at the
//! stream's rate, so the receiver's jitter buffer, loss recovery and drift correction work as
//! with a card, the machine's clock standing in for the card's crystal. What is written is
//! converted to the output's sample encoding, gathered into chunks of the reader's size
//! (snapserver's `chunk_ms`, 20 ms) and handed to the [`FdWriter`].
//!
//! Realtime contract: `open` allocates every buffer, checks snapserver's format, creates the
//! FIFO and starts the connector thread; `wait` sleeps in `clock_nanosleep`; `write` lends
//! the preallocated buffer, converts in place and makes at most three non-blocking `write`
//! calls per chunk: no allocation, no lock, no blocking; `delay`, `recover` and `poll_reopen`
//! are arithmetic on the clock. The device never reports [`PcmError::Gone`]: a lost reader is
//! the writer's business, counted in [`OutputStats`].

use super::connector::{self, Connector, Plan, make_fifo};
use super::names::{OutputTarget, WireSample, parse_name};
use super::snapcast::{self, Probe};
use super::stats::OutputStats;
use super::writer::{FdWriter, rings};
use crate::pcm::virtual_dev::clock::{DeviceClock, PlayQueue};
use crate::pcm::{Access, DeviceRequest, DeviceSetup, PcmError, Playback};
use engine::format::{SampleFormat, StreamFormat};
use std::sync::Arc;

/// The chunk a reader takes when it does not say (snapserver's default `chunk_ms`).
pub const DEFAULT_CHUNK_MS: u32 = 20;

/// A playback device writing to snapserver, a FIFO or stdout.
pub struct StreamPlayback {
    setup: DeviceSetup,
    target: OutputTarget,
    queue: PlayQueue,
    area: Vec<u8>,
    wire: WireSample,
    /// Samples of the area, decoded (only when the output's encoding differs).
    samples: Vec<i32>,
    chunk: Vec<u8>,
    chunk_fill: usize,
    writer: FdWriter,
    stats: Arc<OutputStats>,
    /// Stopped and joined when the device is dropped (never on the realtime thread: the loop
    /// hands the device back when it ends).
    _connector: Connector,
}

impl StreamPlayback {
    /// Opens an output (`req.name` as in [`parse_name`]) for a stream in `req.format`; the
    /// sample format it renders in ([`Playback::setup`]) is the stream's, or wider when its
    /// reader's is (an output decides that itself, from its reader).
    pub fn open(req: &DeviceRequest) -> Result<StreamPlayback, String> {
        let target = parse_name(&req.name)
            .unwrap_or_else(|| Err(format!("{:?} is not an output", req.name)))?;
        let stream = req.format;
        let mut unchecked_said = false;
        let (wire, chunk_ms) = match &target {
            OutputTarget::Snapcast {
                host,
                port,
                control,
            } => match snapcast::probe(host, *control, *port) {
                Probe::Found(src) => {
                    let wire = snapcast::check_format(stream, &src)?;
                    log::info!(
                        "snapserver's source {:?} ({}) reads {} in {} ms chunks{}",
                        src.name,
                        src.uri,
                        src.sampleformat(),
                        src.chunk_ms,
                        if wire.bits() as usize == stream.sample.bytes() * 8 {
                            String::new()
                        } else {
                            format!(": the {} stream is converted", stream.sample.name())
                        }
                    );
                    (wire, src.chunk_ms)
                }
                Probe::NoSource(e) => {
                    return Err(format!("snapserver at {host}:{control}: {e}"));
                }
                Probe::Unreachable(e) => {
                    let wire = match stream.sample {
                        SampleFormat::S24_3Le => WireSample::S24In4,
                        s => WireSample::Pcm(s),
                    };
                    let plan = Plan {
                        target: target.clone(),
                        stream,
                        wire,
                        unchecked_said: true,
                        stdout_taken: false,
                        waiting_said: String::new(),
                    };
                    log::warn!("{}", connector::unchecked_notice(host, *control, &e, &plan));
                    unchecked_said = true;
                    (wire, DEFAULT_CHUNK_MS)
                }
            },
            OutputTarget::Pipe(path) => {
                make_fifo(path)?;
                (WireSample::Pcm(stream.sample), DEFAULT_CHUNK_MS)
            }
            OutputTarget::Stdout => {
                use std::io::IsTerminal;
                if std::io::stdout().is_terminal() {
                    return Err("--device stdout writes raw PCM, and standard output is a \
                         terminal: pipe it into a program (netaudio recv --device stdout | ...)"
                        .into());
                }
                (WireSample::Pcm(stream.sample), DEFAULT_CHUNK_MS)
            }
        };
        let render = wire.render_format(stream.sample);
        let format = StreamFormat {
            sample: render,
            ..stream
        };
        let setup = DeviceSetup {
            name: req.name.clone(),
            format,
            period: req.period,
            buffer: req.period * req.periods.max(2),
            access: Access::Stream,
        };
        let ch = stream.channels as usize;
        let chunk_frames = (stream.rate as usize * chunk_ms as usize / 1000).max(1);
        let chunk_bytes = chunk_frames * ch * wire.bytes();
        let stats = Arc::new(OutputStats::default());
        let ((give, returned), (take, back)) = rings();
        let writer = FdWriter::new(chunk_bytes, ch * wire.bytes(), take, back, stats.clone());
        let plan = Plan {
            target: target.clone(),
            stream,
            wire,
            unchecked_said,
            stdout_taken: false,
            waiting_said: String::new(),
        };
        let connector = connector::spawn(plan, stats.clone(), give, returned)?;
        Ok(StreamPlayback {
            queue: PlayQueue::new(DeviceClock::new(format, 0.0)),
            area: vec![0; setup.buffer * format.frame_bytes()],
            wire,
            samples: if wire == WireSample::Pcm(render) {
                Vec::new()
            } else {
                vec![0; setup.buffer * ch]
            },
            chunk: vec![0; chunk_bytes],
            chunk_fill: 0,
            writer,
            stats,
            _connector: connector,
            target,
            setup,
        })
    }

    /// The output's counters.
    pub fn stats(&self) -> Arc<OutputStats> {
        self.stats.clone()
    }

    /// Where it writes.
    pub fn target(&self) -> &OutputTarget {
        &self.target
    }

    /// The encoding it writes.
    pub fn wire(&self) -> WireSample {
        self.wire
    }

    /// Frames per chunk handed to the reader.
    pub fn chunk_frames(&self) -> usize {
        self.chunk.len() / (self.setup.format.channels as usize * self.wire.bytes())
    }

    /// Moves `frames` frames of the area into chunks, handing each full one to the writer.
    fn push(&mut self, frames: usize) {
        let ch = self.setup.format.channels as usize;
        let fb = self.setup.format.frame_bytes();
        let wb = ch * self.wire.bytes();
        let mut done = 0;
        while done < frames {
            let room = (self.chunk.len() - self.chunk_fill) / wb;
            let n = room.min(frames - done);
            let src = &self.area[done * fb..(done + n) * fb];
            let dst = &mut self.chunk[self.chunk_fill..self.chunk_fill + n * wb];
            if self.samples.is_empty() {
                dst.copy_from_slice(src);
            } else {
                let s = &mut self.samples[..n * ch];
                self.setup.format.sample.decode_slice(src, s);
                self.wire.encode_slice(s, dst);
            }
            self.chunk_fill += n * wb;
            done += n;
            if self.chunk_fill == self.chunk.len() {
                self.writer.write_chunk(&self.chunk);
                self.chunk_fill = 0;
            }
        }
    }
}

impl Playback for StreamPlayback {
    fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    fn start(&mut self) -> Result<(), PcmError> {
        self.queue.start();
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32) -> Result<usize, PcmError> {
        self.queue
            .wait(self.setup.buffer, self.setup.period, timeout_ms)
    }

    fn write<F: FnOnce(&mut [u8])>(&mut self, frames: usize, f: F) -> Result<usize, PcmError> {
        let fb = self.setup.format.frame_bytes();
        let n = frames.min(self.setup.buffer);
        f(&mut self.area[..n * fb]);
        self.push(n);
        self.queue.written += n as u64;
        Ok(n)
    }

    fn delay(&mut self) -> Result<i64, PcmError> {
        Ok(self.queue.delay())
    }

    fn recover(&mut self, _err: PcmError) -> Result<(), PcmError> {
        // The loop came late: the clock stops; what was written counts as played, and it
        // starts again after priming (the reader got no frames meanwhile).
        self.queue.stop();
        Ok(())
    }

    fn poll_reopen(&mut self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    fn req(name: &str, sample: SampleFormat) -> DeviceRequest {
        DeviceRequest {
            name: name.into(),
            format: StreamFormat::new(48_000, 2, sample).unwrap(),
            period: 240,
            periods: 3,
        }
    }

    #[test]
    fn a_fifo_output_hands_over_20_ms_chunks_after_a_chunk_of_silence() {
        let d = std::env::temp_dir().join(format!("netaudio-out-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("fifo");
        let name = format!("pipe:{}", path.display());
        let mut dev = StreamPlayback::open(&req(&name, SampleFormat::S16Le)).unwrap();
        assert_eq!(dev.chunk_frames(), 960);
        assert_eq!(dev.setup().access, Access::Stream);
        // A reader comes; the connector opens the FIFO for writing soon after.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let stats = dev.stats();
        let mut k = 0u16;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stats
            .frames_written
            .load(std::sync::atomic::Ordering::Relaxed)
            < 960 * 3
        {
            assert!(
                std::time::Instant::now() < end,
                "nothing reached the reader"
            );
            dev.write(240, |a| {
                for f in a.chunks_exact_mut(4) {
                    f[..2].copy_from_slice(&k.to_le_bytes());
                    f[2..].copy_from_slice(&k.to_le_bytes());
                    k = k.wrapping_add(1);
                }
            })
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        assert_eq!(got.len() % (960 * 4), 0, "whole chunks: {}", got.len());
        assert!(got[..960 * 4].iter().all(|&b| b == 0), "silence first");
        // Then consecutive frames, from wherever the reader came in.
        let frames: Vec<u16> = got[960 * 4..]
            .chunks_exact(4)
            .map(|f| u16::from_le_bytes([f[0], f[1]]))
            .collect();
        assert!(frames.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        drop(dev);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_wider_output_gets_the_stream_converted() {
        // Snapcast's 24 bits in 4 bytes, from a 16-bit stream rendered at 24 bits.
        let w = WireSample::S24In4;
        assert_eq!(w.render_format(SampleFormat::S16Le), SampleFormat::S24_3Le);
        let mut s = [0i32; 2];
        SampleFormat::S24_3Le.decode_slice(&[0x00, 0x34, 0x12, 0x00, 0x00, 0x80], &mut s);
        let mut out = [0u8; 8];
        w.encode_slice(&s, &mut out);
        assert_eq!(out, [0x00, 0x34, 0x12, 0, 0, 0, 0x80, 0xFF]);
    }
}
