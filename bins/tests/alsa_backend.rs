//! The ALSA backend on a real-time ALSA rig without a sound card: a private `jackd` (dummy
//! driver, its own server name) and alsa-plugins' `jack` PCMs wrapped in `plug`
//! (`tests/data/alsa_rig.conf`). The playback device `na_src` feeds the capture device `na_pin`
//! in the same JACK cycle, so what `AlsaPlayback` writes must arrive bit-exact at `AlsaCapture`.
//!
//! Checked:
//! 1. S16_LE, S24_3LE and S32_LE at 48 kHz stereo, 256-frame periods, through the mmap path: a
//!    frame-counter pattern (channel 1 the complement of channel 0) arrives contiguous, without a
//!    single wrong frame, for 1100 periods; the forced read/write path likewise.
//! 2. No allocation and no free in the steady-state wait/read and wait/write/delay loops
//!    (≥ 1000 periods each): neither through Rust's allocator (`CountingAlloc`) nor through C
//!    `malloc`/`calloc`/`realloc`/`free` called by alsa-lib and its plugins (interposed below),
//!    which Rust's allocator never sees.
//! 3. Open errors name the device and the bad value and say what the device supports.
//! 4. Faults: a capture thread stalled past its buffer (overrun) and a playback thread stalled
//!    past its buffer (underrun) report `Xrun`, `recover` restarts them and the pattern flows
//!    again; `jackd` stopped for 200 ms (SIGSTOP/SIGCONT) makes `wait` time out and streaming
//!    resumes by itself; a capture and then a playback device made to report ENODEV (the
//!    device's test switch, [`GoneSwitch`](netaudio::pcm::alsa::GoneSwitch)) are handed over
//!    through `poll_reopen`, really closed and opened again on their reopener threads, taken
//!    back, and the pattern flows again; the test loops make no allocation and no free outside
//!    `recover` throughout, the lost devices and their reopens included.
//! 5. The same lost devices under the daemon's own realtime loops (`stream::run_sender` on
//!    `na_pin`, `stream::run_receiver` into `na_src`), on SCHED_FIFO threads: from before the
//!    fault until the pattern has flowed again for half a second, the loop's thread makes no
//!    allocation and no free, in Rust or in C; each loop reports one device lost and back.
//!
//! All of the rig runs in one `#[test]`: the ALSA configuration and the JACK server name are
//! process-wide environment variables read once by alsa-lib. Without `jackd` or the JACK ALSA
//! plugin the test says so and passes, unless `NETAUDIO_ALSA_RIG=require`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use engine::alloc_count::{self, AllocScope, CountingAlloc};
use engine::format::{SampleFormat, StreamFormat};
use engine::receiver::{DriftMode, Receiver, ReceiverConfig};
use engine::rtlog::{self, Event, EventConsumer};
use engine::sender::Sender;
use engine::stats::Stats;
use engine::wire::MAX_PACKET_LEN;
use netaudio::net::{BATCH, DatagramIn, DatagramOut, monotonic_ns};
use netaudio::pcm::alsa::{AlsaCapture, AlsaPlayback, OpenErrorKind};
use netaudio::pcm::{Access, Capture, DeviceRequest, PcmError, Playback};
use netaudio::status::Meter;
use netaudio::stream::{run_receiver, run_sender};
use netaudio::watchdog::Heartbeat;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::cell::{Cell, RefCell};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const RATE: u32 = 48_000;
const PERIOD: usize = 256;
const PERIODS: usize = 4;
/// Periods a bit-exact run must stay contiguous for (and the zero-allocation loops run).
const CHECK_PERIODS: u64 = 1100;
/// Periods each loop runs before its allocation count starts.
const WARMUP_PERIODS: u64 = 40;

/// C-side allocation counting: `malloc`, `calloc`, `realloc` and `free` of this process are
/// these, forwarding to glibc. The linker exports them because libasound refers to them, so
/// calls from alsa-lib, its plugins and libjack land here too. Only threads that opted in are
/// counted. As on the Rust side, a `realloc` is one allocation and one free; `free(NULL)` frees
/// nothing and is not counted.
mod c_malloc {
    use std::cell::Cell;
    use std::ffi::c_void;
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::Relaxed;

    unsafe extern "C" {
        fn __libc_malloc(size: usize) -> *mut c_void;
        fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
        fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
        fn __libc_free(p: *mut c_void);
    }

    thread_local! {
        static TRACKED: Cell<bool> = const { Cell::new(false) };
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
        static FREES: Cell<u64> = const { Cell::new(0) };
        static WINDOW_ALLOCS: Cell<u64> = const { Cell::new(0) };
        static WINDOW_FREES: Cell<u64> = const { Cell::new(0) };
    }

    /// While set, tracked threads also count into their window counters ([`window_count`]):
    /// how a test counts what a thread does between two moments another thread chooses.
    pub static WINDOW: AtomicBool = AtomicBool::new(false);

    #[inline]
    fn note(allocs: u64, frees: u64) {
        if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
            let _ = FREES.try_with(|c| c.set(c.get() + frees));
            if WINDOW.load(Relaxed) {
                let _ = WINDOW_ALLOCS.try_with(|c| c.set(c.get() + allocs));
                let _ = WINDOW_FREES.try_with(|c| c.set(c.get() + frees));
            }
        }
    }

    /// # Safety
    /// The C `malloc` contract.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
        note(1, 0);
        // SAFETY: forwarded unchanged to glibc's implementation.
        unsafe { __libc_malloc(size) }
    }

    /// # Safety
    /// The C `calloc` contract.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
        note(1, 0);
        // SAFETY: forwarded unchanged to glibc's implementation.
        unsafe { __libc_calloc(n, size) }
    }

    /// # Safety
    /// The C `realloc` contract.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        note(1, 1);
        // SAFETY: forwarded unchanged to glibc's implementation.
        unsafe { __libc_realloc(p, size) }
    }

    /// # Safety
    /// The C `free` contract.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn free(p: *mut c_void) {
        if !p.is_null() {
            note(0, 1);
        }
        // SAFETY: forwarded unchanged to glibc's implementation.
        unsafe { __libc_free(p) }
    }

    /// Counts this thread's C allocations and frees until dropped.
    pub struct Scope {
        start: (u64, u64),
    }

    impl Scope {
        pub fn begin() -> Scope {
            TRACKED.with(|t| t.set(true));
            Scope { start: count() }
        }
        pub fn allocations(&self) -> u64 {
            count().0 - self.start.0
        }
        pub fn frees(&self) -> u64 {
            count().1 - self.start.1
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            TRACKED.with(|t| t.set(false));
        }
    }

    /// (allocations, frees) this thread made in C while tracked.
    pub fn count() -> (u64, u64) {
        (ALLOCS.with(|c| c.get()), FREES.with(|c| c.get()))
    }

    /// (allocations, frees) this thread made in C while tracked and [`WINDOW`] was set.
    pub fn window_count() -> (u64, u64) {
        (
            WINDOW_ALLOCS.with(|c| c.get()),
            WINDOW_FREES.with(|c| c.get()),
        )
    }
}

/// Counts `log` warnings (the read/write fallback must warn exactly once per open).
struct WarnCounter {
    warnings: AtomicUsize,
    last: Mutex<String>,
}

impl log::Log for WarnCounter {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.level() == log::Level::Warn {
            self.warnings.fetch_add(1, Relaxed);
            *self.last.lock().unwrap() = r.args().to_string();
        }
    }
    fn flush(&self) {}
}

static WARNINGS: WarnCounter = WarnCounter {
    warnings: AtomicUsize::new(0),
    last: Mutex::new(String::new()),
};

/// The frame-counter pattern: channel 0 holds `n` (16 or 24 bits), channel 1 its complement.
/// S32 carries the 24-bit value in its top bits: the JACK float path is exact to 24 bits.
fn counter_modulus(f: SampleFormat) -> u32 {
    match f {
        SampleFormat::S16Le => 1 << 16,
        _ => 1 << 24,
    }
}

fn encode_frame(f: SampleFormat, n: u32, out: &mut [u8]) {
    match f {
        SampleFormat::S16Le => {
            let v = n as u16;
            out[..2].copy_from_slice(&v.to_le_bytes());
            out[2..4].copy_from_slice(&(!v).to_le_bytes());
        }
        SampleFormat::S24_3Le => {
            let v = n & 0xFF_FFFF;
            out[..3].copy_from_slice(&v.to_le_bytes()[..3]);
            out[3..6].copy_from_slice(&(!v & 0xFF_FFFF).to_le_bytes()[..3]);
        }
        SampleFormat::S32Le => {
            let v = n & 0xFF_FFFF;
            out[..4].copy_from_slice(&(v << 8).to_le_bytes());
            out[4..8].copy_from_slice(&((!v & 0xFF_FFFF) << 8).to_le_bytes());
        }
    }
}

/// The counter in a frame, if the frame is one of the pattern's.
fn decode_frame(f: SampleFormat, b: &[u8]) -> Option<u32> {
    let (a, c) = match f {
        SampleFormat::S16Le => (
            u32::from(u16::from_le_bytes([b[0], b[1]])),
            u32::from(!u16::from_le_bytes([b[2], b[3]])),
        ),
        SampleFormat::S24_3Le => (
            u32::from_le_bytes([b[0], b[1], b[2], 0]),
            !u32::from_le_bytes([b[3], b[4], b[5], 0]) & 0xFF_FFFF,
        ),
        SampleFormat::S32Le => {
            let a = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let c = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if a & 0xFF != 0 || c & 0xFF != 0 {
                return None;
            }
            (a >> 8, !(c >> 8) & 0xFF_FFFF)
        }
    };
    (a == c).then_some(a)
}

/// Follows the pattern frame by frame: leading silence is fine, then every frame must be the
/// one after the previous; a wrong frame is a break and the checker locks on again.
#[derive(Debug, Default, Clone, Copy)]
struct Checker {
    modulus: u32,
    expect: Option<u32>,
    /// Frames checked.
    frames: u64,
    /// Contiguous frames since the last break (or the lock).
    run: u64,
    /// Breaks after the first lock.
    breaks: u64,
    /// Frame index of the first break.
    first_break: Option<u64>,
}

impl Checker {
    fn new(f: SampleFormat) -> Checker {
        Checker {
            modulus: counter_modulus(f),
            ..Checker::default()
        }
    }

    #[inline]
    fn push(&mut self, v: Option<u32>) {
        self.frames += 1;
        match (v, self.expect) {
            (Some(v), Some(e)) if v == e => self.run += 1,
            (Some(_), None) => self.run = 1,
            (None, None) => {}
            (_, Some(_)) => {
                self.breaks += 1;
                self.first_break.get_or_insert(self.frames);
                self.run = u64::from(v.is_some());
            }
        }
        self.expect = v.map(|v| (v + 1) % self.modulus);
    }
}

/// What the test threads are told and what they publish.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    capture_stall_ms: AtomicU64,
    playback_stall_ms: AtomicU64,
    capture_run: AtomicU64,
    capture_breaks: AtomicU64,
    capture_xruns: AtomicU64,
    capture_timeouts: AtomicU64,
    capture_reopens: AtomicU64,
    playback_xruns: AtomicU64,
    playback_reopens: AtomicU64,
}

/// Allocations and frees, through Rust's allocator and through C's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    rust_allocations: u64,
    rust_frees: u64,
    c_allocations: u64,
    c_frees: u64,
}

impl Counts {
    /// This thread's totals so far.
    fn now() -> Counts {
        let (c_allocations, c_frees) = c_malloc::count();
        Counts {
            rust_allocations: alloc_count::this_thread_allocations(),
            rust_frees: alloc_count::this_thread_frees(),
            c_allocations,
            c_frees,
        }
    }

    fn plus(self, o: Counts) -> Counts {
        Counts {
            rust_allocations: self.rust_allocations + o.rust_allocations,
            rust_frees: self.rust_frees + o.rust_frees,
            c_allocations: self.c_allocations + o.c_allocations,
            c_frees: self.c_frees + o.c_frees,
        }
    }

    fn minus(self, o: Counts) -> Counts {
        Counts {
            rust_allocations: self.rust_allocations - o.rust_allocations,
            rust_frees: self.rust_frees - o.rust_frees,
            c_allocations: self.c_allocations - o.c_allocations,
            c_frees: self.c_frees - o.c_frees,
        }
    }
}

#[derive(Debug, Default)]
struct LoopReport {
    /// Frames moved while allocations were counted.
    counted_frames: u64,
    /// Outside `recover` (a lost device's hand-over and take-back included): must all be zero.
    steady: Counts,
    /// Inside `recover`: Rust must be zero; C is plugin-specific (JACK re-activates its
    /// client).
    in_recover: Counts,
    xruns: u64,
    timeouts: u64,
    fatal: Option<PcmError>,
    checker: Checker,
    delay_min: i64,
    delay_max: i64,
}

/// Allocation and free counters of one realtime loop: both counting scopes, started after the
/// warm-up, and the part that `recover` accounts for.
struct Counting {
    rust: AllocScope,
    c: c_malloc::Scope,
    /// Inside `recover`.
    in_recover: Counts,
}

impl Counting {
    fn begin() -> Counting {
        Counting {
            rust: AllocScope::begin(),
            c: c_malloc::Scope::begin(),
            in_recover: Counts::default(),
        }
    }

    /// Runs `f`, adding what it allocates and frees to `which` (if counting has begun).
    fn attribute<T>(
        counting: &mut Option<Counting>,
        which: fn(&mut Counting) -> &mut Counts,
        f: impl FnOnce() -> T,
    ) -> T {
        let before = Counts::now();
        let out = f();
        if let Some(c) = counting.as_mut() {
            let slot = which(c);
            *slot = slot.plus(Counts::now().minus(before));
        }
        out
    }

    /// Fills the counting fields of `rep`.
    fn report(self, rep: &mut LoopReport) {
        let all = Counts {
            rust_allocations: self.rust.allocations(),
            rust_frees: self.rust.frees(),
            c_allocations: self.c.allocations(),
            c_frees: self.c.frees(),
        };
        rep.steady = all.minus(self.in_recover);
        rep.in_recover = self.in_recover;
    }
}

fn make_realtime() {
    let p = libc::sched_param { sched_priority: 50 };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `me` is this live thread and `p` a valid parameter block.
    let r = unsafe { libc::pthread_setschedparam(me, libc::SCHED_FIFO, &p) };
    if r != 0 {
        eprintln!("note: SCHED_FIFO refused (errno {r}); test threads run at normal priority");
    }
}

/// Polls `poll_reopen` until the device is back (`true`) or `stop` is set (`false`).
fn lost_and_back(mut poll_reopen: impl FnMut() -> bool, stop: &AtomicBool) -> bool {
    while !stop.load(Relaxed) {
        if poll_reopen() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

fn capture_loop(cap: &mut AlsaCapture, f: SampleFormat, ctl: &Control) -> LoopReport {
    make_realtime();
    let fb = cap.setup().format.frame_bytes();
    let mut rep = LoopReport::default();
    let mut checker = Checker::new(f);
    let mut counting: Option<Counting> = None;
    let mut counted_from = 0u64;
    let mut locked_at: Option<u64> = None;
    while !ctl.stop.load(Relaxed) {
        let stall = ctl.capture_stall_ms.swap(0, Relaxed);
        if stall > 0 {
            thread::sleep(Duration::from_millis(stall));
        }
        let res = cap.wait(50).and_then(|mut avail| {
            if avail == 0 {
                rep.timeouts += 1;
            }
            while avail > 0 {
                let n = cap.read(avail, |b| {
                    for frame in b.chunks_exact(fb) {
                        checker.push(decode_frame(f, frame));
                    }
                })?;
                if n == 0 {
                    break;
                }
                avail -= n.min(avail);
            }
            Ok(())
        });
        if let Err(e) = res {
            match e {
                PcmError::Xrun | PcmError::Suspended => {
                    rep.xruns += 1;
                    ctl.capture_xruns.fetch_add(1, Relaxed);
                    let r = Counting::attribute(
                        &mut counting,
                        |c| &mut c.in_recover,
                        || cap.recover(e),
                    );
                    if let Err(e) = r {
                        rep.fatal = Some(e);
                        break;
                    }
                }
                // Lost: handed over to be closed and opened again on the device's reopener
                // thread, taken back when it is open. Counted with the steady state.
                PcmError::Gone(_) => {
                    if !lost_and_back(|| cap.poll_reopen(), &ctl.stop) {
                        break;
                    }
                    if let Err(e) = cap.start() {
                        rep.fatal = Some(e);
                        break;
                    }
                    ctl.capture_reopens.fetch_add(1, Relaxed);
                }
                e => {
                    rep.fatal = Some(e);
                    break;
                }
            }
        }
        ctl.capture_run.store(checker.run, Relaxed);
        ctl.capture_breaks.store(checker.breaks, Relaxed);
        ctl.capture_timeouts.store(rep.timeouts, Relaxed);
        if locked_at.is_none() && checker.run > 0 {
            locked_at = Some(checker.frames);
        }
        let warm = locked_at.is_some_and(|l| checker.frames - l >= WARMUP_PERIODS * PERIOD as u64);
        if warm && counting.is_none() {
            counting = Some(Counting::begin());
            counted_from = checker.frames;
        }
    }
    if let Some(c) = counting {
        rep.counted_frames = checker.frames - counted_from;
        c.report(&mut rep);
    }
    rep.checker = checker;
    rep
}

fn playback_loop(pb: &mut AlsaPlayback, f: SampleFormat, ctl: &Control) -> LoopReport {
    make_realtime();
    let fb = pb.setup().format.frame_bytes();
    let modulus = counter_modulus(f);
    let mut rep = LoopReport {
        delay_min: i64::MAX,
        delay_max: i64::MIN,
        ..LoopReport::default()
    };
    let mut next = 0u32;
    let mut written = 0u64;
    let mut counting: Option<Counting> = None;
    let mut counted_from = 0u64;
    while !ctl.stop.load(Relaxed) {
        let stall = ctl.playback_stall_ms.swap(0, Relaxed);
        if stall > 0 {
            thread::sleep(Duration::from_millis(stall));
        }
        let res = pb.wait(50).and_then(|mut room| {
            if room == 0 {
                rep.timeouts += 1;
            }
            while room > 0 {
                let n = pb.write(room, |b| {
                    for frame in b.chunks_exact_mut(fb) {
                        encode_frame(f, next, frame);
                        next = (next + 1) % modulus;
                    }
                })?;
                if n == 0 {
                    break;
                }
                written += n as u64;
                room -= n.min(room);
            }
            let d = pb.delay()?;
            if counting.is_some() {
                rep.delay_min = rep.delay_min.min(d);
                rep.delay_max = rep.delay_max.max(d);
            }
            Ok(())
        });
        if let Err(e) = res {
            match e {
                PcmError::Xrun | PcmError::Suspended => {
                    rep.xruns += 1;
                    ctl.playback_xruns.fetch_add(1, Relaxed);
                    let r =
                        Counting::attribute(&mut counting, |c| &mut c.in_recover, || pb.recover(e));
                    if let Err(e) = r {
                        rep.fatal = Some(e);
                        break;
                    }
                }
                // As for capture; the device comes back empty and starts when written full.
                PcmError::Gone(_) => {
                    if !lost_and_back(|| pb.poll_reopen(), &ctl.stop) {
                        break;
                    }
                    ctl.playback_reopens.fetch_add(1, Relaxed);
                }
                e => {
                    rep.fatal = Some(e);
                    break;
                }
            }
        }
        if counting.is_none() && written >= WARMUP_PERIODS * PERIOD as u64 {
            counting = Some(Counting::begin());
            counted_from = written;
        }
    }
    if let Some(c) = counting {
        rep.counted_frames = written - counted_from;
        c.report(&mut rep);
    }
    rep
}

/// What the fault phases watch change.
#[derive(Clone, Copy, Debug)]
struct Counters {
    breaks: u64,
    capture_xruns: u64,
    playback_xruns: u64,
    timeouts: u64,
    capture_reopens: u64,
    playback_reopens: u64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            breaks: self.breaks - before.breaks,
            capture_xruns: self.capture_xruns - before.capture_xruns,
            playback_xruns: self.playback_xruns - before.playback_xruns,
            timeouts: self.timeouts - before.timeouts,
            capture_reopens: self.capture_reopens - before.capture_reopens,
            playback_reopens: self.playback_reopens - before.playback_reopens,
        }
    }
}

/// A private jackd, stopped (and waited for) on drop.
struct Jackd {
    child: Child,
    log: PathBuf,
}

impl Jackd {
    fn start(dir: &Path) -> Jackd {
        let log = dir.join("jackd.log");
        let out = std::fs::File::create(&log).expect("jackd log");
        let err = out.try_clone().expect("jackd log");
        let mut cmd = Command::new("jackd");
        let hook = || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling process.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec and only calls prctl(2), which
        // is async-signal-safe. It makes the kernel stop jackd if this test is killed outright.
        unsafe { cmd.pre_exec(hook) };
        let child = cmd
            .args([
                "-R", "-P", "70", "-S", "-d", "dummy", "-r", "48000", "-p", "256",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start jackd");
        let jackd = Jackd { child, log };
        let t0 = Instant::now();
        loop {
            let lsp = Command::new("jack_lsp").stderr(Stdio::null()).output();
            if lsp.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("system:playback_1")) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "jackd did not come up; its log:\n{}",
                jackd.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        jackd
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// XRun reports in jackd's log so far.
    fn xruns(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("xrun"))
            .count()
    }
}

impl Drop for Jackd {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = kill(self.pid(), Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(name: &str, sample: SampleFormat) -> DeviceRequest {
    DeviceRequest {
        name: name.to_string(),
        format: StreamFormat::new(RATE, 2, sample).unwrap(),
        period: PERIOD,
        periods: PERIODS,
    }
}

fn rig_available() -> Result<(), String> {
    let on_path = |b: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
    };
    for b in ["jackd", "jack_lsp", "jack_connect"] {
        if !on_path(b) {
            return Err(format!("`{b}` not found (package jackd2)"));
        }
    }
    let plugin = ["/usr/lib", "/usr/lib64", "/usr/local/lib"]
        .iter()
        .any(|root| {
            std::fs::read_dir(root).is_ok_and(|dirs| {
                dirs.flatten().any(|d| {
                    d.path()
                        .join("alsa-lib/libasound_module_pcm_jack.so")
                        .is_file()
                }) || Path::new(root)
                    .join("alsa-lib/libasound_module_pcm_jack.so")
                    .is_file()
            })
        });
    if !plugin {
        return Err("the JACK ALSA plugin is missing (package libasound2-plugins)".into());
    }
    Ok(())
}

struct Run {
    capture: LoopReport,
    playback: LoopReport,
    jackd_xruns: usize,
    access: (Access, Access),
    period: usize,
    buffer: usize,
}

/// Streams the pattern from `na_src` to `na_pin` until the capture side has seen
/// `CHECK_PERIODS` contiguous periods (or 15 s passed).
fn bit_exact_run(jackd: &Jackd, f: SampleFormat, read_write: bool) -> Run {
    let (mut pb, mut cap) = if read_write {
        (
            AlsaPlayback::open_read_write(&request("na_src", f)).expect("open na_src"),
            AlsaCapture::open_read_write(&request("na_pin", f)).expect("open na_pin"),
        )
    } else {
        (
            AlsaPlayback::open(&request("na_src", f)).expect("open na_src"),
            AlsaCapture::open(&request("na_pin", f)).expect("open na_pin"),
        )
    };
    cap.start().expect("start capture");
    let access = (pb.setup().access, cap.setup().access);
    let (period, buffer) = (cap.setup().period, cap.setup().buffer);
    let xruns_before = jackd.xruns();
    let ctl = Control::default();
    let want = CHECK_PERIODS * PERIOD as u64;
    let (capture, playback) = thread::scope(|s| {
        let c = s.spawn(|| capture_loop(&mut cap, f, &ctl));
        let p = s.spawn(|| playback_loop(&mut pb, f, &ctl));
        let t0 = Instant::now();
        while ctl.capture_run.load(Relaxed) < want && t0.elapsed() < Duration::from_secs(60) {
            if c.is_finished() || p.is_finished() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        ctl.stop.store(true, Relaxed);
        (c.join().unwrap(), p.join().unwrap())
    });
    Run {
        capture,
        playback,
        jackd_xruns: jackd.xruns() - xruns_before,
        access,
        period,
        buffer,
    }
}

fn check_bit_exact(jackd: &Jackd, f: SampleFormat, read_write: bool) {
    let t0 = Instant::now();
    let mut tries = 0;
    let run = loop {
        tries += 1;
        let run = bit_exact_run(jackd, f, read_write);
        let clean =
            run.capture.checker.breaks == 0 && run.capture.xruns == 0 && run.playback.xruns == 0;
        // A run during which jackd itself reported an xrun is void, not a failure.
        if clean || run.jackd_xruns == 0 || tries == 3 {
            break run;
        }
        eprintln!(
            "  {f}: jackd reported {} xrun(s): run void, again",
            run.jackd_xruns
        );
    };
    let want_access = if read_write {
        Access::ReadWrite
    } else {
        Access::Mmap
    };
    assert_eq!(run.access, (want_access, want_access), "{f}");
    assert_eq!((run.period, run.buffer), (PERIOD, PERIOD * PERIODS), "{f}");
    let (c, p) = (&run.capture, &run.playback);
    assert_eq!(c.fatal, None, "{f} capture");
    assert_eq!(p.fatal, None, "{f} playback");
    assert_eq!(
        c.checker.breaks, 0,
        "{f}: capture not contiguous (first break at frame {:?}, jackd xruns {})",
        c.checker.first_break, run.jackd_xruns
    );
    assert!(
        c.checker.run >= CHECK_PERIODS * PERIOD as u64,
        "{f}: {:?}",
        c.checker
    );
    assert_eq!((c.xruns, p.xruns), (0, 0), "{f}: xruns");
    for (side, r) in [("capture wait/read", c), ("playback wait/write/delay", p)] {
        assert!(
            r.counted_frames >= 1000 * PERIOD as u64,
            "{f} {side}: only {} periods counted",
            r.counted_frames / PERIOD as u64
        );
        assert_eq!(r.steady.rust_allocations, 0, "{f} {side}: Rust allocations");
        assert_eq!(r.steady.c_allocations, 0, "{f} {side}: C allocations");
        assert_eq!(r.steady.rust_frees, 0, "{f} {side}: Rust frees");
        assert_eq!(r.steady.c_frees, 0, "{f} {side}: C frees");
    }
    assert!(
        p.delay_min >= 0 && p.delay_max <= (PERIOD * PERIODS) as i64 + 512,
        "{f}: playback delay {}..{}",
        p.delay_min,
        p.delay_max
    );
    eprintln!(
        "  {f} {:?}: {} frames contiguous ({} checked), {} / {} periods counted with 0 \
         allocations and 0 frees (Rust and C), playback delay {}..{} frames, jackd xruns {}, {:.1} s",
        want_access,
        c.checker.run,
        c.checker.frames,
        c.counted_frames / PERIOD as u64,
        p.counted_frames / PERIOD as u64,
        p.delay_min,
        p.delay_max,
        run.jackd_xruns,
        t0.elapsed().as_secs_f64()
    );
}

fn check_open_errors() {
    // A device that does not exist.
    let e = AlsaCapture::open(&request("na_no_such_device", SampleFormat::S16Le)).unwrap_err();
    assert!(matches!(e.kind, OpenErrorKind::Open { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("\"na_no_such_device\"") && text.contains("audio.device"),
        "{text}"
    );
    assert_eq!(e.pcm_error(), PcmError::Gone(libc::ENOENT));
    eprintln!("  {text}");

    // A rate the device does not run at (JACK runs at 48 kHz; plug may not resample).
    let mut req = request("na_pin", SampleFormat::S16Le);
    req.format.rate = 44_100;
    let e = AlsaCapture::open(&req).unwrap_err();
    match &e.kind {
        OpenErrorKind::Rate {
            wanted, supported, ..
        } => assert_eq!((*wanted, supported.as_slice()), (44_100, &[48_000][..])),
        k => panic!("{k:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("\"na_pin\"")
            && text.contains("44100 Hz")
            && text.contains("supported: 48000")
            && text.contains("audio.rate"),
        "{text}"
    );
    eprintln!("  {text}");

    // A sample format the device does not take (the raw JACK PCM is FLOAT_LE only).
    let e = AlsaPlayback::open(&request("na_src_raw", SampleFormat::S24_3Le)).unwrap_err();
    match &e.kind {
        OpenErrorKind::Format {
            wanted,
            supported,
            offered,
        } => {
            assert_eq!(*wanted, SampleFormat::S24_3Le);
            assert!(supported.is_empty());
            assert_eq!(offered, &["FLOAT_LE".to_string()]);
        }
        k => panic!("{k:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("S24_3LE") && text.contains("FLOAT_LE") && text.contains("plug:'na_src_raw'"),
        "{text}"
    );
    eprintln!("  {text}");
    // ... and the fix the message names works.
    let pb = AlsaPlayback::open(&request("plug:'na_src_raw'", SampleFormat::S24_3Le))
        .expect("the suggested plug device opens");
    assert_eq!(pb.setup().access, Access::Mmap);
    drop(pb);

    // A request no device can take.
    let mut req = request("na_pin", SampleFormat::S16Le);
    req.period = 0;
    let e = AlsaCapture::open(&req).unwrap_err();
    assert!(matches!(e.kind, OpenErrorKind::Request(_)), "{e:?}");
    eprintln!("  {e}");
}

/// Wires `na_src`'s outputs to `na_pin`'s inputs again, once `na_src` is active: JACK drops
/// every connection of a client that deactivates (recovering from an underrun) or closes (a
/// device reopened), and only `na_pin` connects them by itself, when it starts.
fn rewire_src_to_pin() {
    let t0 = Instant::now();
    loop {
        // Fails until the client is active again; "already connected" is success.
        let ok = ["0", "1"].iter().all(|ch| {
            Command::new("jack_connect")
                .args([format!("na_src:out_00{ch}"), format!("na_pin:in_00{ch}")])
                .output()
                .is_ok_and(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("already")
                })
        });
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "could not re-wire na_src"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Overrun, underrun, a stalled clock, and a lost capture and playback device (the test fault
/// switch: ENODEV, then a real close and open on the reopener thread), one after the other on
/// one stream.
fn check_faults(jackd: &Jackd) {
    let f = SampleFormat::S16Le;
    let mut pb = AlsaPlayback::open(&request("na_src", f)).expect("open na_src");
    let mut cap = AlsaCapture::open(&request("na_pin", f)).expect("open na_pin");
    let (cap_gone, pb_gone) = (cap.gone_switch(), pb.gone_switch());
    cap.start().expect("start capture");
    let ctl = Control::default();
    let half_second = u64::from(RATE) / 2;
    let run = || ctl.capture_run.load(Relaxed);
    let counters = || Counters {
        breaks: ctl.capture_breaks.load(Relaxed),
        capture_xruns: ctl.capture_xruns.load(Relaxed),
        playback_xruns: ctl.playback_xruns.load(Relaxed),
        timeouts: ctl.capture_timeouts.load(Relaxed),
        capture_reopens: ctl.capture_reopens.load(Relaxed),
        playback_reopens: ctl.playback_reopens.load(Relaxed),
    };
    // Waits (at most 5 s) until `done(change since before)`; returns the change.
    let wait_for = |what: &str, before: Counters, done: &dyn Fn(Counters) -> bool| {
        let t0 = Instant::now();
        loop {
            let d = counters().since(before);
            if done(d) {
                eprintln!(
                    "  {what}: {} contiguous frames after {:.2} s; capture breaks {}, capture \
                     xruns {}, playback xruns {}, wait timeouts {}",
                    run(),
                    t0.elapsed().as_secs_f64(),
                    d.breaks,
                    d.capture_xruns,
                    d.playback_xruns,
                    d.timeouts
                );
                return d;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what}: streaming did not resume (capture run {}, changes {d:?})",
                run()
            );
            thread::sleep(Duration::from_millis(10));
        }
    };
    let (capture, playback) = thread::scope(|s| {
        let c = s.spawn(|| capture_loop(&mut cap, f, &ctl));
        let p = s.spawn(|| playback_loop(&mut pb, f, &ctl));
        wait_for("start", counters(), &|_| run() >= half_second);

        // 1. The capture thread sleeps 100 ms (the buffer holds 21 ms): overrun.
        let before = counters();
        ctl.capture_stall_ms.store(100, Relaxed);
        wait_for("capture stalled 100 ms", before, &|d| {
            d.capture_xruns >= 1 && d.breaks >= 1 && run() >= half_second
        });

        // 2. The playback thread sleeps 100 ms: underrun. Recovering re-activates the JACK
        //    client, which drops its connections (a JACK rig quirk): wire it again.
        let before = counters();
        ctl.playback_stall_ms.store(100, Relaxed);
        wait_for("playback stalled 100 ms (xrun)", before, &|d| {
            d.playback_xruns >= 1
        });
        rewire_src_to_pin();
        wait_for("playback stalled 100 ms (resumed)", before, &|d| {
            d.breaks >= 1 && run() >= half_second
        });

        // 3. The clock stops: jackd stopped for 200 ms. Both ends stall in the same cycle:
        //    `wait` times out, nothing is lost, streaming goes on by itself.
        let before = counters();
        let run0 = run();
        kill(jackd.pid(), Signal::SIGSTOP).unwrap();
        thread::sleep(Duration::from_millis(200));
        kill(jackd.pid(), Signal::SIGCONT).unwrap();
        let d = wait_for("jackd stopped 200 ms", before, &|d| {
            d.timeouts >= 1 && run() >= run0 + half_second
        });
        assert_eq!(
            (d.breaks, d.capture_xruns, d.playback_xruns),
            (0, 0, 0),
            "a stopped clock must not look like an xrun"
        );

        // 4. The capture device is lost (ENODEV): the loop hands it over, its reopener closes
        //    and opens it again, the loop takes it back and starts it; capture resumes.
        let before = counters();
        cap_gone.trip();
        wait_for("capture lost and reopened", before, &|d| {
            d.capture_reopens == 1 && d.breaks >= 1 && run() >= half_second
        });

        // 5. The playback device is lost likewise; once open again it is wired to na_pin anew
        //    (closing it dropped its JACK connections) and the pattern flows again.
        let before = counters();
        pb_gone.trip();
        wait_for("playback lost and reopened", before, &|d| {
            d.playback_reopens == 1
        });
        rewire_src_to_pin();
        wait_for("playback lost and reopened (resumed)", before, &|d| {
            d.breaks >= 1 && run() >= half_second
        });

        ctl.stop.store(true, Relaxed);
        (c.join().unwrap(), p.join().unwrap())
    });
    assert_eq!(capture.fatal, None);
    assert_eq!(playback.fatal, None);
    assert!(capture.xruns >= 1 && playback.xruns >= 1);
    assert_eq!(ctl.capture_reopens.load(Relaxed), 1);
    assert_eq!(ctl.playback_reopens.load(Relaxed), 1);
    for (side, r) in [("capture", &capture), ("playback", &playback)] {
        let s = r.steady;
        let what = "loop outside recover (lost device and reopen included)";
        assert_eq!(s.rust_allocations, 0, "{side} {what}: Rust allocations");
        assert_eq!(s.c_allocations, 0, "{side} {what}: C allocations");
        assert_eq!(s.rust_frees, 0, "{side} {what}: Rust frees");
        assert_eq!(s.c_frees, 0, "{side} {what}: C frees");
        assert_eq!(r.in_recover.rust_allocations, 0, "{side} recover: Rust");
        assert_eq!(r.in_recover.rust_frees, 0, "{side} recover: Rust frees");
    }
    eprintln!(
        "  faults: capture xruns {}, playback xruns {}, capture timeouts {}, capture breaks {}; \
         in recover: Rust 0 allocations and 0 frees, C {}/{} (capture) and {}/{} (playback) \
         allocations/frees; outside recover, lost devices and reopens included: 0 allocations \
         and 0 frees (Rust and C, {} / {} periods counted); jackd xruns logged {}",
        capture.xruns,
        playback.xruns,
        capture.timeouts,
        capture.checker.breaks,
        capture.in_recover.c_allocations,
        capture.in_recover.c_frees,
        playback.in_recover.c_allocations,
        playback.in_recover.c_frees,
        capture.counted_frames / PERIOD as u64,
        playback.counted_frames / PERIOD as u64,
        jackd.xruns()
    );
}

/// What a realtime loop under test publishes for the test to watch.
#[derive(Default)]
struct Watched {
    /// Contiguous frames of the pattern since the last break (or the lock).
    run: AtomicU64,
    /// Breaks after the first lock.
    breaks: AtomicU64,
}

/// The sender loop's socket in this test: checks the frame-counter pattern in every payload,
/// on the loop's own thread (nothing allocated), and publishes the checker's figures.
struct PatternSink<'a> {
    format: SampleFormat,
    checker: Cell<Checker>,
    watched: &'a Watched,
}

impl DatagramOut for PatternSink<'_> {
    fn send_gather(&self, header: &[u8], payload: &[u8]) -> Result<usize, i32> {
        let mut c = self.checker.get();
        let fb = self.format.bytes() * 2;
        for frame in payload.chunks_exact(fb) {
            c.push(decode_frame(self.format, frame));
        }
        self.checker.set(c);
        self.watched.run.store(c.run, Relaxed);
        self.watched.breaks.store(c.breaks, Relaxed);
        Ok(header.len() + payload.len())
    }
}

/// The receiver loop's socket in this test: the frame-counter pattern as native packets, made
/// when due by the monotonic clock (on the loop's own thread, into buffers sized here).
struct PatternSource {
    tx: Sender,
    format: SampleFormat,
    next: u32,
    t0_ns: u64,
    made: u64,
    pcm: Vec<u8>,
    packet: Vec<u8>,
}

impl PatternSource {
    fn new(format: SampleFormat) -> PatternSource {
        let stream = StreamFormat::new(RATE, 2, format).unwrap();
        PatternSource {
            tx: Sender::new(stream, PERIOD, 0x5eed, 0).unwrap(),
            format,
            next: 0,
            t0_ns: monotonic_ns(),
            made: 0,
            pcm: vec![0; PERIOD * stream.frame_bytes()],
            packet: vec![0; MAX_PACKET_LEN],
        }
    }
}

impl DatagramIn for PatternSource {
    fn recv_batch<F: FnMut(&[u8], u64)>(&mut self, mut f: F) -> Result<usize, i32> {
        let now = monotonic_ns();
        let due = (now - self.t0_ns) as u128 * u128::from(RATE) / 1_000_000_000;
        let modulus = counter_modulus(self.format);
        let fb = self.pcm.len() / PERIOD;
        let mut n = 0;
        while n < BATCH && u128::from(self.made + PERIOD as u64) <= due {
            for frame in self.pcm.chunks_exact_mut(fb) {
                encode_frame(self.format, self.next, frame);
                self.next = (self.next + 1) % modulus;
            }
            let packet = &mut self.packet;
            self.tx.packetize(&self.pcm, |h, p| {
                let len = h.len() + p.len();
                packet[..h.len()].copy_from_slice(h);
                packet[h.len()..len].copy_from_slice(p);
                f(&packet[..len], now);
                n += 1;
            });
            self.made += PERIOD as u64;
        }
        Ok(n)
    }
}

/// What a realtime loop of the daemon reported, and what its thread did in C while the test's
/// window ([`c_malloc::WINDOW`]) was open.
struct LoopOutcome {
    report: netaudio::stream::LoopReport,
    window_c: (u64, u64),
}

/// Waits (at most 20 s) for `done`, failing with `what` and `state()` otherwise.
fn wait_until(what: &str, done: impl Fn() -> bool, state: impl Fn() -> String) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: gave up after 20 s; {}",
            state()
        );
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "  {what}: after {:.2} s; {}",
        t0.elapsed().as_secs_f64(),
        state()
    );
}

/// Device-lost events and device-back events in `events` (drained).
fn lost_and_back_events(events: &mut EventConsumer, seen: &mut (u64, u64)) {
    while let Some(r) = events.pop() {
        match r.event {
            Event::DeviceLost { .. } => seen.0 += 1,
            Event::DeviceBack { .. } => seen.1 += 1,
            _ => {}
        }
    }
}

/// The device's reopener thread (not the loop) said once, since `before` warnings, that it
/// closed the lost device.
fn assert_reopener_said(stream: &str, device: &str, before: usize) {
    assert_eq!(
        WARNINGS.warnings.load(Relaxed),
        before + 1,
        "one warning per loss"
    );
    let last = WARNINGS.last.lock().unwrap().clone();
    assert!(
        last.contains(&format!(
            "ALSA {stream} device \"{device}\" lost: closed it"
        )),
        "{last}"
    );
}

fn assert_quiet(side: &str, o: &LoopOutcome) {
    assert_eq!(
        o.report.allocations, 0,
        "{side}: Rust allocations on the loop"
    );
    assert_eq!(o.report.frees, 0, "{side}: Rust frees on the loop");
    assert_eq!(
        o.window_c.0, 0,
        "{side}: C allocations on the loop across the fault"
    );
    assert_eq!(
        o.window_c.1, 0,
        "{side}: C frees on the loop across the fault"
    );
}

/// A lost capture device under the daemon's sender loop (`stream::run_sender`), on its own
/// SCHED_FIFO thread: the pattern captured from `na_pin` goes through the loop's packetizer
/// into a checking socket; the device reports ENODEV (the test switch), the loop hands it
/// over, its reopener closes and opens it for real, the loop takes it back and restarts the
/// stream, and the pattern flows again. Across all of it (from before the fault until the
/// pattern has flowed for half a second again) the loop's thread makes no allocation and no
/// free, in Rust or in C.
fn check_capture_lost_in_the_sender_loop() {
    let f = SampleFormat::S16Le;
    let mut pb = AlsaPlayback::open(&request("na_src", f)).expect("open na_src");
    let mut cap = AlsaCapture::open(&request("na_pin", f)).expect("open na_pin");
    let gone = cap.gone_switch();
    let stream = StreamFormat::new(RATE, 2, f).unwrap();
    let mut tx = Sender::new(stream, cap.setup().period, 0xca97, 0).unwrap();
    let ctl = Control::default();
    let watched = Watched::default();
    let stop = AtomicBool::new(false);
    let stats = Stats::default();
    let heartbeat = Heartbeat::new("na-capture");
    let (mut producer, mut events) = rtlog::queue();
    let half_second = u64::from(RATE) / 2;
    let mut seen = (0, 0);
    let warnings = WARNINGS.warnings.load(Relaxed);
    let outcome = thread::scope(|s| {
        let p = s.spawn(|| playback_loop(&mut pb, f, &ctl));
        let sender = s.spawn(|| {
            make_realtime();
            let _c = c_malloc::Scope::begin();
            let sink = PatternSink {
                format: f,
                checker: Cell::new(Checker::new(f)),
                watched: &watched,
            };
            let meter = Meter::default();
            let report = run_sender(
                &mut cap,
                &mut tx,
                &sink,
                &stop,
                &heartbeat,
                &stats,
                &meter,
                &mut producer,
            );
            LoopOutcome {
                report,
                window_c: c_malloc::window_count(),
            }
        });
        let state = || {
            format!(
                "pattern run {} frames, breaks {}, device_lost {}, sender periods {}",
                watched.run.load(Relaxed),
                watched.breaks.load(Relaxed),
                stats.snapshot().device_lost,
                heartbeat.beats()
            )
        };
        wait_until(
            "sender loop streaming",
            || watched.run.load(Relaxed) >= half_second,
            state,
        );
        c_malloc::WINDOW.store(true, Relaxed);
        gone.trip();
        wait_until(
            "capture lost under the sender loop, reopened, streaming again",
            || {
                stats.snapshot().device_lost == 1
                    && watched.breaks.load(Relaxed) >= 1
                    && watched.run.load(Relaxed) >= half_second
            },
            state,
        );
        c_malloc::WINDOW.store(false, Relaxed);
        stop.store(true, Relaxed);
        ctl.stop.store(true, Relaxed);
        let o = sender.join().unwrap();
        let p = p.join().unwrap();
        assert_eq!(p.fatal, None);
        o
    });
    lost_and_back_events(&mut events, &mut seen);
    assert_eq!(seen, (1, 1), "device-lost and device-back events");
    assert_eq!(stats.snapshot().device_lost, 1);
    assert_reopener_said("capture", "na_pin", warnings);
    assert_quiet("sender loop", &outcome);
    eprintln!(
        "  sender loop: {} periods; device lost once and back; Rust {} allocations / {} frees \
         after the first period, C {} allocations / {} frees across the fault",
        outcome.report.periods,
        outcome.report.allocations,
        outcome.report.frees,
        outcome.window_c.0,
        outcome.window_c.1
    );
}

/// A lost playback device under the daemon's receiver loop (`stream::run_receiver`): the
/// pattern arrives as native packets, the loop renders it into `na_src` (no drift correction:
/// one clock, bit-exact), and `na_pin` checks what plays. The device reports ENODEV, the loop
/// hands it over and keeps taking packets while its reopener closes and opens it, takes it back
/// and primes it, and the pattern plays again (once `na_src` is wired to `na_pin` anew).
/// Across all of it the loop's thread makes no allocation and no free, in Rust or in C.
fn check_playback_lost_in_the_receiver_loop() {
    let f = SampleFormat::S16Le;
    let mut pb = AlsaPlayback::open(&request("na_src", f)).expect("open na_src");
    let mut cap = AlsaCapture::open(&request("na_pin", f)).expect("open na_pin");
    cap.start().expect("start capture");
    let gone = pb.gone_switch();
    let stream = StreamFormat::new(RATE, 2, f).unwrap();
    let mut cfg = ReceiverConfig::new(stream, pb.setup().period, 40.0);
    cfg.output_delay_frames = pb.setup().buffer - pb.setup().period;
    cfg.drift_mode = DriftMode::Off;
    let mut rx = Receiver::new(cfg).unwrap();
    let mut source = PatternSource::new(f);
    let ctl = Control::default();
    let stop = AtomicBool::new(false);
    let stats = Stats::default();
    let heartbeat = Heartbeat::new("na-playback");
    let (mut producer, events) = rtlog::queue();
    let events = RefCell::new(events);
    let half_second = u64::from(RATE) / 2;
    let seen = RefCell::new((0, 0));
    let warnings = WARNINGS.warnings.load(Relaxed);
    let outcome = thread::scope(|s| {
        let c = s.spawn(|| capture_loop(&mut cap, f, &ctl));
        let receiver = s.spawn(|| {
            make_realtime();
            let _c = c_malloc::Scope::begin();
            let meter = Meter::default();
            let report = run_receiver(
                &mut pb,
                &mut rx,
                &mut source,
                &stop,
                &heartbeat,
                &stats,
                &meter,
                &mut producer,
            );
            LoopOutcome {
                report,
                window_c: c_malloc::window_count(),
            }
        });
        let state = || {
            let st = stats.snapshot();
            format!(
                "played pattern run {} frames, breaks {}, device_lost {}, packets received {}",
                ctl.capture_run.load(Relaxed),
                ctl.capture_breaks.load(Relaxed),
                st.device_lost,
                st.packets_received
            )
        };
        wait_until(
            "receiver loop playing",
            || ctl.capture_run.load(Relaxed) >= half_second,
            state,
        );
        let breaks = ctl.capture_breaks.load(Relaxed);
        c_malloc::WINDOW.store(true, Relaxed);
        gone.trip();
        wait_until(
            "playback lost under the receiver loop, reopened",
            || {
                lost_and_back_events(&mut events.borrow_mut(), &mut seen.borrow_mut());
                *seen.borrow() == (1, 1)
            },
            state,
        );
        let received = stats.snapshot().packets_received;
        rewire_src_to_pin();
        wait_until(
            "playback lost under the receiver loop: playing again",
            || {
                ctl.capture_breaks.load(Relaxed) > breaks
                    && ctl.capture_run.load(Relaxed) >= half_second
                    && stats.snapshot().packets_received > received
            },
            state,
        );
        c_malloc::WINDOW.store(false, Relaxed);
        stop.store(true, Relaxed);
        ctl.stop.store(true, Relaxed);
        let o = receiver.join().unwrap();
        let c = c.join().unwrap();
        assert_eq!(c.fatal, None);
        o
    });
    assert_eq!(stats.snapshot().device_lost, 1);
    assert_reopener_said("playback", "na_src", warnings);
    assert_quiet("receiver loop", &outcome);
    eprintln!(
        "  receiver loop: {} periods; device lost once and back; Rust {} allocations / {} frees \
         after the first period, C {} allocations / {} frees across the fault",
        outcome.report.periods,
        outcome.report.allocations,
        outcome.report.frees,
        outcome.window_c.0,
        outcome.window_c.1
    );
}

fn check_c_counter_sees_alsa_lib() {
    // The interposed malloc and free must see alsa-lib's allocations and frees, or zero would
    // prove nothing. (na_pin connects to na_src's ports when it is prepared: na_src must exist.)
    let _src = AlsaPlayback::open(&request("na_src", SampleFormat::S16Le)).expect("open");
    let scope = c_malloc::Scope::begin();
    let cap = AlsaCapture::open(&request("na_pin", SampleFormat::S16Le)).expect("open");
    let n = scope.allocations();
    let frees_before_close = scope.frees();
    drop(cap);
    let freed = scope.frees() - frees_before_close;
    drop(scope);
    assert!(
        n > 0,
        "C allocations by alsa-lib are not seen: the malloc interposer is inert"
    );
    assert!(
        freed > 0,
        "C frees by alsa-lib are not seen: the free interposer is inert"
    );
    eprintln!(
        "  instrument: opening na_pin made {n} C allocations, closing it {freed} C frees (counted)"
    );
}

fn check_read_write_warns_once() {
    let _src = AlsaPlayback::open(&request("na_src", SampleFormat::S16Le)).expect("open");
    let before = WARNINGS.warnings.load(Relaxed);
    let cap = AlsaCapture::open(&request("na_pin", SampleFormat::S16Le)).unwrap();
    assert_eq!(
        WARNINGS.warnings.load(Relaxed),
        before,
        "mmap open must not warn"
    );
    drop(cap);
    let cap = AlsaCapture::open_read_write(&request("na_pin", SampleFormat::S16Le)).unwrap();
    assert_eq!(cap.setup().access, Access::ReadWrite);
    assert_eq!(
        WARNINGS.warnings.load(Relaxed),
        before + 1,
        "one warning per open"
    );
    let last = WARNINGS.last.lock().unwrap().clone();
    assert!(
        last.contains("na_pin") && last.contains("RW_INTERLEAVED"),
        "{last}"
    );
}

// The devices move into realtime threads; errors travel to the thread that opened them.
const _: () = {
    const fn send<T: Send>() {}
    send::<AlsaCapture>();
    send::<AlsaPlayback>();
    send::<netaudio::pcm::alsa::OpenError>();
};

#[test]
fn alsa_backend_on_a_jack_rig() {
    let t_all = Instant::now();
    if let Err(why) = rig_available() {
        if std::env::var("NETAUDIO_ALSA_RIG").as_deref() == Ok("require") {
            panic!("ALSA rig required but unavailable: {why}");
        }
        eprintln!(
            "SKIPPED: ALSA rig unavailable: {why}. Install: DEBIAN_FRONTEND=noninteractive \
             apt-get install -y jackd2 libasound2-plugins alsa-utils"
        );
        return;
    }
    let _ = log::set_logger(&WARNINGS);
    log::set_max_level(log::LevelFilter::Warn);

    let server = format!("netaudio-test-{}", std::process::id());
    let dir = std::env::temp_dir().join(&server);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/alsa_rig.conf");
    for (name, value) in [
        ("JACK_DEFAULT_SERVER", server.clone()),
        ("JACK_NO_AUDIO_RESERVATION", "1".to_string()),
        (
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        ),
    ] {
        // SAFETY: set before any ALSA or JACK call, while this test (the only one in this
        // binary) is the only thread of the process reading the environment.
        unsafe { std::env::set_var(name, value) };
    }
    let jackd = Jackd::start(&dir);
    eprintln!(
        "jackd \"{server}\" up in {:.1} s",
        t_all.elapsed().as_secs_f64()
    );

    eprintln!("open errors:");
    check_open_errors();
    check_c_counter_sees_alsa_lib();
    check_read_write_warns_once();

    eprintln!("bit-exact, zero allocations:");
    for f in SampleFormat::ALL {
        check_bit_exact(&jackd, f, false);
    }
    check_bit_exact(&jackd, SampleFormat::S24_3Le, true);

    eprintln!("faults:");
    check_faults(&jackd);

    eprintln!("lost devices under the daemon's realtime loops:");
    check_capture_lost_in_the_sender_loop();
    check_playback_lost_in_the_receiver_loop();

    drop(jackd);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("all in {:.1} s", t_all.elapsed().as_secs_f64());
}
