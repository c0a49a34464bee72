//! Properties of the receiver fed straight from a sender (no network): sequence wrap,
//! reordering, duplicates and junk datagrams leave the played stream bit-exact and gap-free,
//! and no datagram or frame index, however odd, makes it panic.
//!
//! The schedule is exactly in step: at each step the sender captures one period, its packets
//! are delivered (or held back by the test), and the receiver renders every whole playback
//! period captured so far, all at the timestamp of the captured frame count at 48 kHz. With
//! drift correction off the receiver then plays frame `j` of its output from stream frame
//! `j - lat`, where `lat` is the target level less the first packet's frames (the read
//! position is placed `target` frames behind the end of the first packet). Output before the
//! stream's first frame is silence (prefill), and the stream fades in over `fade_frames`;
//! everything after that must be the captured bytes exactly.

use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, PacketOutcome, Receiver, ReceiverConfig};
use engine::rng::mix64;
use engine::sender::Sender;
use engine::wire::{Flags, HEADER_LEN, MAX_PACKET_LEN, MAX_TAG_LEN, PacketHeader};
use proptest::prelude::*;

const RATE: u32 = 48_000;
const CHANNELS: u8 = 2;
const PERIOD: usize = 64;
const TARGET_MS: f64 = 10.0;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn format() -> StreamFormat {
    StreamFormat::new(RATE, CHANNELS, SampleFormat::S16Le).unwrap()
}

fn frame_bytes() -> usize {
    format().frame_bytes()
}

fn receiver_config(mode: DriftMode) -> ReceiverConfig {
    let mut cfg = ReceiverConfig::new(format(), PERIOD, TARGET_MS);
    cfg.drift_mode = mode;
    cfg
}

fn receiver(mode: DriftMode) -> Receiver {
    Receiver::new(receiver_config(mode)).expect("valid receiver config")
}

/// Nanoseconds at which `frames` frames have elapsed at 48 kHz.
fn at(frames: u64) -> u64 {
    (frames as u128 * 1_000_000_000 / RATE as u128) as u64
}

/// Captured audio: every sample a hash of its position, so a frame played from the wrong
/// place (or a corrupted one) cannot pass for the right one.
fn capture(frames: usize, seed: u64) -> Vec<u8> {
    (0..frames * CHANNELS as usize)
        .flat_map(|i| (mix64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9)) as i16).to_le_bytes())
        .collect()
}

/// A packet as one datagram.
fn datagram(header: &[u8; HEADER_LEN], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(header);
    v.extend_from_slice(payload);
    v
}

/// A sender's output: the captured bytes and the packets of each capture period.
struct Stream {
    captured: Vec<u8>,
    periods: Vec<Vec<Vec<u8>>>,
}

fn stream(sender: &mut Sender, periods: usize, sender_period: usize, seed: u64) -> Stream {
    let fb = frame_bytes();
    let captured = capture(periods * sender_period, seed);
    let periods = captured
        .chunks_exact(sender_period * fb)
        .map(|chunk| {
            let mut packets = Vec::new();
            sender.packetize(chunk, |h, p| packets.push(datagram(h, p)));
            packets
        })
        .collect();
    Stream { captured, periods }
}

fn header(datagram: &[u8]) -> PacketHeader {
    PacketHeader::parse(datagram).expect("a sender's packet")
}

/// Frames of output before the stream's first frame plays, given the frames that arrived at
/// once when the stream started.
fn prefill(cfg: &ReceiverConfig, first_packet_frames: usize) -> usize {
    let level = cfg
        .target_frames
        .saturating_sub(cfg.output_delay_frames)
        .max(cfg.period);
    level - first_packet_frames
}

/// Checks the played bytes against the captured ones: silence for the first `lat` frames,
/// a fade-in over the next `fade` frames, then the capture exactly.
fn check_played(
    played: &[u8],
    captured: &[u8],
    lat: usize,
    fade: usize,
) -> Result<(), TestCaseError> {
    let fb = frame_bytes();
    let silent = (lat * fb).min(played.len());
    if let Some(i) = played[..silent].iter().position(|&b| b != 0) {
        prop_assert!(false, "prefill not silent at output frame {}", i / fb);
    }
    let from = (lat + fade) * fb;
    if played.len() > from {
        let got = &played[from..];
        let want = &captured[fade * fb..fade * fb + got.len()];
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            let frame = i / fb;
            prop_assert!(
                false,
                "output frame {} (stream frame {}) differs: got {:?}, want {:?}",
                lat + fade + frame,
                fade + frame,
                &got[frame * fb..(frame + 1) * fb],
                &want[frame * fb..(frame + 1) * fb]
            );
        }
    }
    Ok(())
}

/// Renders every whole playback period captured so far.
fn render_up_to(
    rx: &mut Receiver,
    played: &mut Vec<u8>,
    rendered: &mut usize,
    captured: usize,
    now: u64,
) {
    let fb = frame_bytes();
    let mut out = vec![0u8; PERIOD * fb];
    while *rendered + PERIOD <= captured {
        rx.render(&mut out, now);
        played.extend_from_slice(&out);
        *rendered += PERIOD;
    }
}

fn is_stored(o: PacketOutcome) -> bool {
    matches!(o, PacketOutcome::Accepted | PacketOutcome::Resynced)
}

proptest! {
    #![proptest_config(config(200))]

    /// Sequence numbers wrapping through zero change nothing: the receiver follows frames.
    #[test]
    fn sequence_wrap_plays_bit_exact(
        back in 0u32..30,
        sender_period in prop::sample::select(vec![32usize, 64, 128, 441]),
        periods in 32usize..100, // more than `back + 1`: the run crosses the wrap
        stream_id in any::<u32>(),
        first_frame in prop_oneof![Just(0u64), 0u64..(1 << 40)],
        seed in any::<u64>(),
    ) {
        let first_seq = u32::MAX - back;
        let mut sender = Sender::new(format(), sender_period, stream_id, first_seq).unwrap();
        sender.skip(first_frame);
        let s = stream(&mut sender, periods, sender_period, seed);

        let seqs: Vec<u32> = s.periods.iter().flatten().map(|p| header(p).seq).collect();
        prop_assert_eq!(seqs[0], first_seq);
        prop_assert!(seqs.contains(&u32::MAX) && seqs.contains(&0), "the run crosses the wrap");

        let cfg = receiver_config(DriftMode::Off);
        let mut rx = Receiver::new(cfg).unwrap();
        // The packets of the first capture period arrive together; the receiver anchors to
        // the newest of them.
        let first_period: usize = s.periods[0].iter().map(|p| header(p).frames as usize).sum();
        let lat = prefill(&cfg, first_period);
        let mut played = Vec::new();
        let mut rendered = 0;
        for (k, packets) in s.periods.iter().enumerate() {
            let captured = (k + 1) * sender_period;
            let now = at(captured as u64);
            for p in packets {
                let o = rx.on_packet(p, now);
                prop_assert!(is_stored(o), "packet {:?}: {:?}", header(p), o);
            }
            prop_assert_eq!(rx.stream_id(), Some(stream_id));
            render_up_to(&mut rx, &mut played, &mut rendered, captured, now);
        }
        check_played(&played, &s.captured, lat, cfg.fade_frames)?;
        let c = rx.counters();
        prop_assert_eq!(c.gaps, 0);
        prop_assert_eq!(c.concealed_frames, 0);
        prop_assert_eq!(c.lost_packets, 0);
        prop_assert_eq!(c.resyncs, 0);
        prop_assert_eq!(c.packets_received, seqs.len() as u64);
        prop_assert_eq!(c.frames_played, rendered as u64);
    }

    /// Packets held back by less than the target latency, in any order, with any number of
    /// copies arriving at any later time: no gap, and the output is bit-exact.
    #[test]
    fn reorder_and_duplicates_play_bit_exact(
        periods in 20usize..120,
        max_delay in 0usize..=6,
        delays in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 120),
        dups in prop::collection::vec(
            (any::<prop::sample::Index>(), prop_oneof![0usize..8, 0usize..200], any::<u8>()),
            0..60,
        ),
        first_seq in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let stream_id = 0x5EED_0001;
        let mut sender = Sender::new(format(), PERIOD, stream_id, first_seq).unwrap();
        let s = stream(&mut sender, periods, PERIOD, seed);
        let packets: Vec<&Vec<u8>> = s.periods.iter().map(|p| &p[0]).collect();

        // (step, order within the step, packet). The first packet arrives first and places
        // the timeline; every other is held back by up to `max_delay` periods (the window,
        // `max_delay + 1` packets, is shorter than the target latency).
        let mut deliveries: Vec<(usize, (bool, u8), usize)> = (0..periods)
            .map(|p| {
                let (d, key) = delays[p];
                let delay = if p == 0 { 0 } else { d.index(max_delay + 1) };
                (p + delay, (p != 0, key), p)
            })
            .collect();
        for (p, extra, key) in &dups {
            let p = p.index(periods);
            deliveries.push((p + extra, (true, *key), p));
        }
        deliveries.retain(|d| d.0 < periods);
        deliveries.sort_by_key(|d| (d.0, d.1));
        prop_assert_eq!(deliveries[0].2, 0);

        let cfg = receiver_config(DriftMode::Off);
        let mut rx = Receiver::new(cfg).unwrap();
        let lat = prefill(&cfg, PERIOD);
        let mut played = Vec::new();
        let mut rendered = 0;
        let mut next = 0;
        let mut seen = vec![false; periods];
        for k in 0..periods {
            let captured = (k + 1) * PERIOD;
            let now = at(captured as u64);
            while next < deliveries.len() && deliveries[next].0 == k {
                let p = deliveries[next].2;
                let o = rx.on_packet(packets[p], now);
                if seen[p] {
                    prop_assert!(
                        matches!(o, PacketOutcome::Duplicate | PacketOutcome::Late),
                        "copy of packet {} at step {}: {:?}", p, k, o
                    );
                } else {
                    prop_assert!(is_stored(o), "packet {} at step {}: {:?}", p, k, o);
                }
                seen[p] = true;
                next += 1;
            }
            render_up_to(&mut rx, &mut played, &mut rendered, captured, now);
        }
        check_played(&played, &s.captured, lat, cfg.fade_frames)?;
        let c = rx.counters();
        prop_assert_eq!(c.gaps, 0);
        prop_assert_eq!(c.concealed_frames, 0);
        prop_assert_eq!(c.lost_packets, 0);
        prop_assert_eq!(c.resyncs, 0);
        prop_assert_eq!(c.packets_received, seen.iter().filter(|&&s| s).count() as u64);
        prop_assert_eq!(
            c.packets_received + c.duplicate_packets + c.late_packets,
            deliveries.len() as u64
        );
    }
}

/// Datagrams that must not disturb the stream being played.
#[derive(Clone, Debug)]
enum Junk {
    /// Random bytes.
    Noise(Vec<u8>),
    /// The step's real packet cut short (`cut` bytes kept, modulo its length).
    Truncated { cut: usize },
    /// The step's real packet with bytes appended.
    Extended(Vec<u8>),
    /// The step's real packet with one header field made invalid.
    Corrupt(Corruption),
    /// A well-formed packet in another format, of any stream (the real one included).
    OtherFormat {
        format: StreamFormat,
        same_stream: bool,
        first_frame: u64,
        frames: u16,
    },
    /// A well-formed packet of another stream in the right format.
    Foreign {
        flags: u8,
        first_frame: u64,
        frames: u16,
    },
    /// Loss-recovery data (not understood by this build), of any stream.
    Repair {
        same_stream: bool,
        first_frame: u64,
        frames: u16,
    },
}

#[derive(Clone, Copy, Debug)]
enum Corruption {
    Magic(u16),
    Version(u8),
    Format(u8),
    Channels(u8),
    Rate(u32),
    NoFrames,
    TagLen(u8),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        any::<u16>()
            .prop_filter("bad magic", |m| *m != engine::wire::MAGIC)
            .prop_map(Corruption::Magic),
        any::<u8>()
            .prop_filter("bad version", |v| *v != engine::wire::VERSION)
            .prop_map(Corruption::Version),
        prop_oneof![Just(0u8), 4u8..=255].prop_map(Corruption::Format),
        prop_oneof![Just(0u8), 33u8..=255].prop_map(Corruption::Channels),
        prop_oneof![0u32..8_000, 384_001..=u32::MAX].prop_map(Corruption::Rate),
        Just(Corruption::NoFrames),
        (MAX_TAG_LEN as u8 + 1..=255).prop_map(Corruption::TagLen),
    ]
}

fn first_frame() -> impl Strategy<Value = u64> {
    let i64_max = i64::MAX as u64;
    prop_oneof![
        any::<u64>(),
        0u64..100_000,
        (i64_max - 1_000)..=(i64_max + 1_000),
        (u64::MAX - 1_000)..=u64::MAX,
    ]
}

fn other_format() -> impl Strategy<Value = StreamFormat> {
    (
        prop::sample::select(vec![44_100u32, 48_000, 96_000]),
        1u8..=8,
        prop::sample::select(SampleFormat::ALL.to_vec()),
    )
        .prop_filter_map("not the stream's format", |(r, c, s)| {
            StreamFormat::new(r, c, s).filter(|f| *f != format())
        })
}

/// Frames of a packet in `f` that fits a datagram.
fn fitting_frames(f: StreamFormat, frames: u16) -> u16 {
    let max = (MAX_PACKET_LEN - HEADER_LEN) / f.frame_bytes();
    (frames as usize % max + 1) as u16
}

fn junk() -> impl Strategy<Value = Junk> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1500).prop_map(Junk::Noise),
        any::<usize>().prop_map(|cut| Junk::Truncated { cut }),
        prop::collection::vec(any::<u8>(), 1..32).prop_map(Junk::Extended),
        corruption().prop_map(Junk::Corrupt),
        (other_format(), any::<bool>(), first_frame(), any::<u16>()).prop_map(
            |(format, same_stream, first_frame, frames)| Junk::OtherFormat {
                format,
                same_stream,
                first_frame,
                frames: fitting_frames(format, frames),
            }
        ),
        (any::<u8>(), first_frame(), any::<u16>()).prop_map(|(flags, first_frame, frames)| {
            Junk::Foreign {
                flags: flags & !Flags::REPAIR.0,
                first_frame,
                frames: fitting_frames(format(), frames),
            }
        }),
        (any::<bool>(), first_frame(), any::<u16>()).prop_map(
            |(same_stream, first_frame, frames)| Junk::Repair {
                same_stream,
                first_frame,
                frames: fitting_frames(format(), frames),
            }
        ),
    ]
}

/// A well-formed packet with a deterministic full-scale body.
fn made_packet(
    flags: Flags,
    stream_id: u32,
    first_frame: u64,
    format: StreamFormat,
    frames: u16,
) -> Vec<u8> {
    made_packet_at(flags, stream_id, first_frame, format, frames, true)
}

/// A well-formed packet with a deterministic body; `loud` false keeps 16-bit samples within a
/// quarter of full scale.
fn made_packet_at(
    flags: Flags,
    stream_id: u32,
    first_frame: u64,
    format: StreamFormat,
    frames: u16,
    loud: bool,
) -> Vec<u8> {
    let h = PacketHeader {
        flags,
        stream_id,
        seq: 0,
        first_frame,
        format,
        frames,
        ext_len: 0,
        tag_len: 0,
    };
    let mut body = capture(h.payload_len().div_ceil(4), first_frame);
    if !loud {
        for s in body.chunks_exact_mut(2) {
            let v = i16::from_le_bytes([s[0], s[1]]) >> 2;
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
    datagram(&h.to_bytes(), &body[..h.payload_len()])
}

impl Junk {
    /// The datagram, given the step's real packet, the real stream id and a stream id no
    /// other junk uses.
    fn bytes(&self, real: &[u8], real_id: u32, other_id: u32) -> Vec<u8> {
        match self {
            Junk::Noise(v) => v.clone(),
            Junk::Truncated { cut } => real[..cut % real.len()].to_vec(),
            Junk::Extended(tail) => [real, tail].concat(),
            Junk::Corrupt(c) => {
                let mut v = real.to_vec();
                match *c {
                    Corruption::Magic(m) => v[0..2].copy_from_slice(&m.to_be_bytes()),
                    Corruption::Version(x) => v[2] = x,
                    Corruption::Format(x) => v[25] = x,
                    Corruption::Channels(x) => v[24] = x,
                    Corruption::Rate(r) => v[20..24].copy_from_slice(&r.to_be_bytes()),
                    Corruption::NoFrames => v[26..28].copy_from_slice(&[0, 0]),
                    Corruption::TagLen(t) => v[30] = t,
                }
                v
            }
            Junk::OtherFormat {
                format,
                same_stream,
                first_frame,
                frames,
            } => {
                let id = if *same_stream { real_id } else { other_id };
                made_packet(Flags::default(), id, *first_frame, *format, *frames)
            }
            Junk::Foreign {
                flags,
                first_frame,
                frames,
            } => made_packet(Flags(*flags), other_id, *first_frame, format(), *frames),
            Junk::Repair {
                same_stream,
                first_frame,
                frames,
            } => {
                let id = if *same_stream { real_id } else { other_id };
                made_packet(Flags::REPAIR, id, *first_frame, format(), *frames)
            }
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// Junk between the packets of a stream is counted and ignored: it never panics, never
    /// changes the stream followed and never makes a gap, and the output stays bit-exact.
    #[test]
    fn junk_datagrams_leave_the_stream_alone(
        periods in 20usize..80,
        junk in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<bool>(), junk()),
            1..60,
        ),
        stream_id in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let mut sender = Sender::new(format(), PERIOD, stream_id, 0).unwrap();
        let s = stream(&mut sender, periods, PERIOD, seed);

        // (step, after the real packet, junk number); none before the stream's first packet.
        let mut plan: Vec<(usize, bool, usize)> = junk
            .iter()
            .enumerate()
            .map(|(n, (step, after, _))| {
                let step = step.index(periods);
                (step, *after || step == 0, n)
            })
            .collect();
        plan.sort();

        let cfg = receiver_config(DriftMode::Off);
        let mut rx = Receiver::new(cfg).unwrap();
        let lat = prefill(&cfg, PERIOD);
        let mut played = Vec::new();
        let mut rendered = 0;
        let mut counted = 0u64;
        let mut next = 0;
        for k in 0..periods {
            let captured = (k + 1) * PERIOD;
            let now = at(captured as u64);
            let real = &s.periods[k][0];
            for after in [false, true] {
                if after {
                    let o = rx.on_packet(real, now);
                    prop_assert!(is_stored(o), "real packet {}: {:?}", k, o);
                }
                while next < plan.len() && plan[next].0 == k && plan[next].1 == after {
                    let n = plan[next].2;
                    let j = &junk[n].2;
                    let other_id = stream_id.wrapping_add(1 + n as u32);
                    let bytes = j.bytes(real, stream_id, other_id);
                    let o = rx.on_packet(&bytes, now);
                    match o {
                        PacketOutcome::Invalid(_)
                        | PacketOutcome::FormatMismatch
                        | PacketOutcome::FrameIndexOutOfRange => counted += 1,
                        PacketOutcome::Foreign if !matches!(j, Junk::Repair { .. }) => counted += 1,
                        PacketOutcome::Foreign => {}
                        _ => prop_assert!(false, "junk {:?} taken as {:?}", j, o),
                    }
                    prop_assert_eq!(rx.stream_id(), Some(stream_id));
                    next += 1;
                }
            }
            render_up_to(&mut rx, &mut played, &mut rendered, captured, now);
        }
        prop_assert_eq!(next, plan.len());
        check_played(&played, &s.captured, lat, cfg.fade_frames)?;
        let c = rx.counters();
        prop_assert_eq!(c.gaps, 0);
        prop_assert_eq!(c.concealed_frames, 0);
        prop_assert_eq!(c.resyncs, 0);
        prop_assert_eq!(c.packets_received, periods as u64);
        prop_assert_eq!(c.invalid_packets + c.foreign_packets, counted);
    }
}

/// One step of an arbitrary receiver workload.
#[derive(Clone, Debug)]
enum Op {
    Packet {
        stream: usize,
        flags: u8,
        first_frame: u64,
        frames: u16,
        dt_us: u32,
    },
    Render {
        frames: usize,
        dt_us: u32,
    },
}

fn ops(first_frame: impl Strategy<Value = u64> + Clone) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (
            0usize..3,
            prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
            first_frame,
            1u16..=347,
            0u32..3_000,
        )
            .prop_map(|(stream, flags, first_frame, frames, dt_us)| Op::Packet {
                stream,
                flags,
                first_frame,
                frames,
                dt_us,
            }),
        (prop_oneof![Just(PERIOD), 0usize..=4 * PERIOD], 0u32..3_000)
            .prop_map(|(frames, dt_us)| Op::Render { frames, dt_us }),
    ];
    prop::collection::vec(op, 1..200)
}

fn run_ops(mode: DriftMode, loud: bool, ops: &[Op]) {
    let mut rx = receiver(mode);
    let fb = frame_bytes();
    let mut out = vec![0u8; 4 * PERIOD * fb];
    let mut now = 0u64;
    for op in ops {
        match *op {
            Op::Packet {
                stream,
                flags,
                first_frame,
                frames,
                dt_us,
            } => {
                now += dt_us as u64 * 1000;
                let id = 0xA000_0000 + stream as u32;
                let p = made_packet_at(Flags(flags), id, first_frame, format(), frames, loud);
                rx.on_packet(&p, now);
            }
            Op::Render { frames, dt_us } => {
                now += dt_us as u64 * 1000;
                rx.render(&mut out[..frames * fb], now);
            }
        }
    }
}

fn drift_mode() -> impl Strategy<Value = DriftMode> {
    prop::sample::select(DriftMode::ALL.to_vec())
}

/// Frame indices a sender can reach in a realistic lifetime (2^62 frames is over 3 million
/// years at 48 kHz), often close together so packets overlap, follow and overtake each other.
fn sane_first_frame() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        0u64..2_000,
        0u64..100_000,
        (1u64 << 40)..(1u64 << 40) + 2_000,
        0u64..(1 << 62),
    ]
}

/// Any 64-bit frame index, including those that do not fit an `i64`.
fn any_first_frame() -> impl Strategy<Value = u64> + Clone {
    let i64_max = i64::MAX as u64;
    prop_oneof![
        any::<u64>(),
        (i64_max - 2_000)..=(i64_max + 2_000),
        (u64::MAX - 2_000)..=u64::MAX,
        0u64..2_000,
    ]
}

proptest! {
    #![proptest_config(config(300))]

    /// Packets of a few streams at arbitrary positions, interleaved with renders of any length:
    /// nothing panics.
    #[test]
    fn arbitrary_frame_positions_never_panic(mode in drift_mode(), ops in ops(sane_first_frame())) {
        run_ops(mode, false, &ops);
    }

    /// The same with full-scale audio, whose neighbouring samples may lie almost the whole
    /// range apart.
    #[test]
    fn full_scale_audio_at_arbitrary_positions_never_panics(
        mode in drift_mode(),
        ops in ops(sane_first_frame()),
    ) {
        run_ops(mode, true, &ops);
    }

    /// The same with frame indices anywhere in `u64`, including above `i64::MAX`.
    #[test]
    fn any_u64_frame_position_never_panics(mode in drift_mode(), ops in ops(any_first_frame())) {
        run_ops(mode, false, &ops);
    }
}

/// Holding one packet back by a whole target latency does make a gap: the schedule above is
/// tight, not so loose that nothing could fail.
#[test]
fn a_packet_later_than_the_target_is_a_gap() {
    let periods = 40;
    let held = 10;
    let cfg = receiver_config(DriftMode::Off);
    let window = cfg.target_frames / PERIOD;
    let mut sender = Sender::new(format(), PERIOD, 1, 0).unwrap();
    let s = stream(&mut sender, periods, PERIOD, 7);
    for delay in [window - 1, window] {
        let mut rx = Receiver::new(cfg).unwrap();
        let mut played = Vec::new();
        let mut rendered = 0;
        for k in 0..periods {
            let captured = (k + 1) * PERIOD;
            let now = at(captured as u64);
            if k != held {
                rx.on_packet(&s.periods[k][0], now);
            }
            if k == held + delay {
                rx.on_packet(&s.periods[held][0], now);
            }
            render_up_to(&mut rx, &mut played, &mut rendered, captured, now);
        }
        let gaps = rx.counters().gaps;
        if delay < window {
            assert_eq!(gaps, 0, "held back {delay} periods");
        } else {
            assert_eq!(gaps, 1, "held back {delay} periods");
        }
    }
}

/// A full-scale square wave (every frame flips between the extremes) through a slip window.
#[test]
fn slip_crossfade_of_full_scale_audio() {
    let mut cfg = receiver_config(DriftMode::Slip);
    cfg.drift.limit_ppm = 2000.0;
    let mut rx = Receiver::new(cfg).unwrap();
    let fb = frame_bytes();
    // Long enough to play for a while after the first stream's warm-up (the drift measured).
    let frames = 3000 * PERIOD;
    let square: Vec<u8> = (0..frames)
        .flat_map(|f| {
            let s: i16 = if f % 2 == 0 { i16::MAX } else { i16::MIN };
            [s.to_le_bytes(), s.to_le_bytes()].concat()
        })
        .collect();
    let mut sender = Sender::new(format(), PERIOD, 3, 0).unwrap();
    let mut packets = Vec::new();
    for chunk in square.chunks_exact(PERIOD * fb) {
        sender.packetize(chunk, |h, p| packets.push(datagram(h, p)));
    }
    // The stream plays for a while, then a burst arrives early (a queue in the network
    // letting go): the buffer is well above its target, so the loop slips frames. (A burst
    // before anything was heard would not do: the receiver just starts later then.)
    let lead = 48_000 * 3 / 2 / PERIOD;
    let burst = 20;
    let mut out = vec![0u8; PERIOD * fb];
    let mut next = 0;
    for k in 0..packets.len() {
        let now = at(((k + 1) * PERIOD) as u64);
        let upto = if k == lead { k + burst } else { k.max(next) };
        while next <= upto && next < packets.len() {
            rx.on_packet(&packets[next], now);
            next += 1;
        }
        rx.render(&mut out, now);
    }
    assert_eq!(rx.counters().gaps, 0);
    assert!(rx.counters().slip_drops > 0, "the burst made the loop slip");
}

/// A stream whose frame indices start near `i64::MAX`.
#[test]
fn first_frame_near_i64_max() {
    let mut rx = receiver(DriftMode::Off);
    let p = made_packet(Flags::default(), 1, i64::MAX as u64 - 2_000, format(), 1);
    rx.on_packet(&p, 0);
    let mut out = vec![0u8; PERIOD * frame_bytes()];
    rx.render(&mut out, 1_000_000);
}

/// A stream whose frame indices start just above `i64::MAX`.
#[test]
fn first_frame_above_i64_max() {
    let mut rx = receiver(DriftMode::Off);
    let p = made_packet(Flags::default(), 1, 1 << 63, format(), 1);
    rx.on_packet(&p, 0);
    let mut out = vec![0u8; PERIOD * frame_bytes()];
    rx.render(&mut out, 1_000_000);
}

/// A packet of the playing stream whose frame index, read as `i64`, lies far behind.
#[test]
fn frame_above_i64_max_in_a_running_stream() {
    let mut rx = receiver(DriftMode::Off);
    let p = made_packet(Flags::default(), 1, 10_000, format(), 64);
    rx.on_packet(&p, 0);
    let p = made_packet(Flags::default(), 1, 1 << 63, format(), 1);
    rx.on_packet(&p, 0);
}
