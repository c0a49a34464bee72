//! Virtual devices: real-time-clocked capture and playback without a sound card.
//!
//! Each device has its own crystal: it runs `ppm` parts per million off `CLOCK_MONOTONIC`,
//! so two virtual devices drift apart like two USB interfaces. The capture device produces a
//! test signal (the frame-index ramp, or a sine) at its clock; the playback device consumes at
//! its clock and can hand what it plays to an analyzing [`Sink`], which checks every frame
//! against the source and measures end-to-end latency when the source's clock is known.
//!
//! Device names: `virtual`, or `virtual:ppm=50,sine=440` (options separated by commas; a
//! capture device plays the ramp, `sine[=HZ]` or `twotone[=F1+F2]`, two tones at a quarter
//! scale each).
//! `unplug=5s+2s` simulates a USB unplug: from 5 s after the device was opened, for 2 s, every
//! call returns [`PcmError::Gone`](super::PcmError::Gone) (`ENODEV`) and `poll_reopen` says
//! it is not back; then it is.
//! A playback device given `record=FILE` also keeps what it plays (the first
//! [`RECORD_SECONDS`] s, raw interleaved frames in the stream format) and writes them to `FILE`
//! when the daemon stops: the way a test checks a stream from elsewhere bit for bit.
//!
//! Realtime contract: `open` allocates the device buffer (and the sink's analyzer); `wait`
//! sleeps in `clock_nanosleep`; `read`/`write` fill or lend the preallocated buffer and never
//! allocate or lock; `poll_reopen` reads the clock and, for playback, resets the counters.
//!
//! Layout: `names` parses device names, `clock` is a device's clock and sleep, `capture` and
//! `playback` are the two devices, `sink` what a playback device hands what it plays to.

mod capture;
pub(crate) mod clock;
mod names;
mod playback;
mod sink;

pub use capture::VirtualCapture;
pub use names::{RECORD_SECONDS, VirtualOptions, parse_name, record_path, source_option};
pub use playback::VirtualPlayback;
pub use sink::{Sink, SinkLive, Tap, TapReader, tap};

use super::{Access, DeviceRequest, DeviceSetup};

/// The set-up of a virtual device: what was asked for, `periods` (at least 2) periods of buffer.
fn setup(req: &DeviceRequest) -> DeviceSetup {
    DeviceSetup {
        name: req.name.clone(),
        format: req.format,
        period: req.period,
        buffer: req.period * req.periods.max(2),
        access: Access::Virtual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::monotonic_ns;
    use crate::pcm::{Capture, PcmError, Playback};
    use engine::format::{SampleFormat, StreamFormat};
    use engine::sim::signal::SourceKind;

    fn req(name: &str) -> DeviceRequest {
        DeviceRequest {
            name: name.into(),
            format: StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap(),
            period: 256,
            periods: 3,
        }
    }

    #[test]
    fn names_parse_with_clear_errors() {
        assert_eq!(
            parse_name("virtual:ppm=-50,sine=440"),
            Some(Ok(VirtualOptions {
                ppm: -50.0,
                source: SourceKind::Sine { freq_hz: 440.0 },
                unplug: None,
            }))
        );
        let o = parse_name("virtual:unplug=5s+300ms").unwrap().unwrap();
        assert_eq!(o.unplug, Some((5.0, 0.3)));
        let e = parse_name("virtual:unplug=5s").unwrap().unwrap_err();
        assert!(
            e.contains("unplug=5s") && e.contains("unplug=AT+FOR"),
            "{e}"
        );
        assert!(parse_name("hw:0").is_none());
        assert!(parse_name("virtualx").is_none());
        let e = parse_name("virtual:ppm=abc").unwrap().unwrap_err();
        assert!(e.contains("ppm=abc"), "{e}");
        let two = SourceKind::TwoTone {
            f1_hz: 997.0,
            f2_hz: 1997.0,
        };
        assert_eq!(
            parse_name("virtual:ppm=3,twotone=997+1997")
                .unwrap()
                .unwrap()
                .source,
            two
        );
        assert_eq!(
            parse_name(&format!("virtual:ppm=3{}", source_option(two)))
                .unwrap()
                .unwrap()
                .source,
            two
        );
        assert_eq!(
            parse_name("virtual:twotone").unwrap().unwrap().source,
            SourceKind::TwoTone {
                f1_hz: 18_000.0,
                f2_hz: 19_000.0
            }
        );
        let e = parse_name("virtual:twotone=997").unwrap().unwrap_err();
        assert!(
            e.contains("twotone=997") && e.contains("twotone=F1+F2"),
            "{e}"
        );
    }

    #[test]
    fn a_tap_hands_channel_0_over_and_counts_what_did_not_fit() {
        let format = StreamFormat::new(48_000, 2, SampleFormat::S16Le).unwrap();
        let (tap, mut reader) = tap(100);
        let mut sink = Sink::new(format, None, 0).with_tap(tap);
        let mut bytes = Vec::new();
        for n in 0..150i16 {
            bytes.extend_from_slice(&n.to_le_bytes());
            bytes.extend_from_slice(&(-n).to_le_bytes());
        }
        sink.played(&bytes, 0.0, 1.0 / 48_000.0);
        let mut got = Vec::new();
        assert_eq!(reader.drain(|v| got.push(v >> 16)), 100);
        assert_eq!(got, (0..100).collect::<Vec<i32>>());
        assert_eq!(reader.dropped(), 50);
        assert_eq!(reader.drain(|_| {}), 0);
    }

    #[test]
    fn a_recording_device_saves_what_it_played() {
        let path = std::env::temp_dir().join(format!("netaudio-rec-{}.raw", std::process::id()));
        let name = format!("virtual:ppm=10,record={}", path.display());
        assert!(matches!(parse_name(&name), Some(Ok(_))));
        assert_eq!(record_path(&name), Some(path.clone()));
        assert_eq!(record_path("virtual:ppm=10"), None);
        assert!(parse_name("virtual:record=").unwrap().is_err());
        let mut play = VirtualPlayback::open(&req(&name), None).unwrap();
        for k in 0..3u8 {
            play.write(256, |a| a.fill(k + 1)).unwrap();
        }
        assert_eq!(play.save_recording().unwrap(), Some((path.clone(), 768)));
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(bytes.len(), 768 * 4);
        assert!(bytes[..1024].iter().all(|&b| b == 1) && bytes[2048..].iter().all(|&b| b == 3));
        let plain = VirtualPlayback::open(&req("virtual"), None).unwrap();
        assert_eq!(plain.save_recording().unwrap(), None);
    }

    #[test]
    fn capture_runs_at_its_clock_and_playback_plays_what_it_gets() {
        let mut cap = VirtualCapture::open(&req("virtual:ppm=1000")).unwrap();
        let live_req = req("virtual");
        let mut play = VirtualPlayback::open(&live_req, None).unwrap();
        cap.start().unwrap();
        let t0 = monotonic_ns();
        let mut frames = 0u64;
        let mut first = Vec::new();
        while frames < 48_000 / 4 {
            let avail = cap.wait(100).unwrap();
            if avail == 0 {
                continue;
            }
            frames += cap
                .read(256, |b| {
                    if first.is_empty() {
                        first.extend_from_slice(&b[..8]);
                    }
                })
                .unwrap() as u64;
        }
        let secs = (monotonic_ns() - t0) as f64 / 1e9;
        assert!(
            (0.2..0.4).contains(&secs),
            "a quarter second of audio took {secs} s"
        );
        // Ramp frames 0 and 1.
        assert_eq!(first, [0, 0, 0, 128, 1, 0, 1, 128]);
        // Playback: prime, start, keep fed for 0.1 s without an underrun.
        while play.wait(0).unwrap() >= 256 {
            play.write(256, |a| a.fill(0)).unwrap();
        }
        play.start().unwrap();
        let end = monotonic_ns() + 100_000_000;
        while monotonic_ns() < end {
            if play.wait(50).unwrap() >= 256 {
                play.write(256, |a| a.fill(0)).unwrap();
            }
        }
        assert!(play.delay().unwrap() > 0);
        // An underrun, recovered: priming and restarting keep the arithmetic sane.
        std::thread::sleep(std::time::Duration::from_millis(40));
        let e = play.wait(0).unwrap_err();
        assert_eq!(e, PcmError::Xrun);
        play.recover(e).unwrap();
        let mut primed = 0;
        while play.wait(0).unwrap() >= 256 {
            play.write(256, |a| a.fill(0)).unwrap();
            primed += 1;
        }
        assert_eq!(primed, 3, "one buffer of room after recovery");
        play.start().unwrap();
        let room = play.wait(100).unwrap();
        assert!((256..=768).contains(&room), "{room}");
    }
}
