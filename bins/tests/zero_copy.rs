//! The sender's samples go from the capture device's buffer to `sendmsg` without a copy:
//! every payload the loop hands to the socket lies inside the device's own buffer. (The END
//! packets of the clean stop that ends the loop carry no payload.)

use engine::format::{SampleFormat, StreamFormat};
use engine::rtlog;
use engine::sender::{END_COPIES, Sender};
use engine::stats::Stats;
use engine::wire::PacketHeader;
use netaudio::net::DatagramOut;
use netaudio::pcm::DeviceRequest;
use netaudio::pcm::virtual_dev::VirtualCapture;
use netaudio::stream::run_sender;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

struct Recorder {
    /// (payload address, payload length, END packet without frames).
    payloads: RefCell<Vec<(usize, usize, bool)>>,
    stop_after: usize,
    stop: &'static AtomicBool,
}

impl DatagramOut for Recorder {
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        let mut p = self.payloads.borrow_mut();
        let end = PacketHeader::parse(header).is_ok_and(|h| h.is_end_marker());
        p.push((payload.as_ptr() as usize, payload.len(), end));
        if p.len() >= self.stop_after {
            self.stop.store(true, Ordering::Relaxed);
        }
        Ok(header.len() + payload.len())
    }
}

#[test]
fn payloads_are_the_device_buffer_itself() {
    static STOP: AtomicBool = AtomicBool::new(false);
    let format = StreamFormat::new(48_000, 2, SampleFormat::S24_3Le).unwrap();
    let req = DeviceRequest {
        name: "virtual".into(),
        format,
        period: 64,
        periods: 4,
    };
    let mut dev = VirtualCapture::open(&req).unwrap();
    let range = dev.buffer_range();
    let mut tx = Sender::new(format, 64, 1, 0).unwrap();
    let sock = Recorder {
        payloads: RefCell::new(Vec::new()),
        stop_after: 200,
        stop: &STOP,
    };
    let (mut events, _log) = rtlog::queue();
    let stats = Stats::default();
    let meter = netaudio::status::Meter::default();
    let beat = netaudio::watchdog::Heartbeat::new("na-capture");
    run_sender(
        &mut dev,
        &mut tx,
        &sock,
        &STOP,
        &beat,
        &stats,
        &meter,
        &mut events,
    );
    let mut payloads = sock.payloads.into_inner();
    // The loop's way out: the stream's END packets, without payload.
    let ends = payloads.split_off(payloads.len() - END_COPIES);
    assert!(
        ends.iter().all(|&(_, len, end)| end && len == 0),
        "{ends:?}"
    );
    assert!(payloads.len() >= 200);
    for (ptr, len, end) in payloads {
        assert!(!end);
        assert_eq!(len, 64 * format.frame_bytes());
        assert!(
            range.contains(&ptr) && ptr + len <= range.end,
            "payload at {ptr:#x} is not inside the device buffer {range:x?}"
        );
    }
}
