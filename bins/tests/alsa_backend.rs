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
//!    resumes by itself; `reopen` brings capture back.
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
use netaudio::pcm::alsa::{AlsaCapture, AlsaPlayback, OpenErrorKind};
use netaudio::pcm::{Access, Capture, DeviceRequest, PcmError, Playback};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    }

    #[inline]
    fn note(allocs: u64, frees: u64) {
        if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
            let _ = FREES.try_with(|c| c.set(c.get() + frees));
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
    capture_reopen: AtomicBool,
    capture_run: AtomicU64,
    capture_breaks: AtomicU64,
    capture_xruns: AtomicU64,
    capture_timeouts: AtomicU64,
    capture_reopens: AtomicU64,
    playback_xruns: AtomicU64,
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
    /// Outside `recover` and `reopen`: must all be zero.
    steady: Counts,
    /// Inside `recover`: Rust must be zero; C is plugin-specific (JACK re-activates its
    /// client).
    in_recover: Counts,
    /// Inside `reopen` + `start` (allowed).
    in_reopen: Counts,
    xruns: u64,
    timeouts: u64,
    fatal: Option<PcmError>,
    checker: Checker,
    delay_min: i64,
    delay_max: i64,
}

/// Allocation and free counters of one realtime loop: both counting scopes, started after the
/// warm-up, and the parts that `recover` and `reopen` account for.
struct Counting {
    rust: AllocScope,
    c: c_malloc::Scope,
    /// Inside `recover`.
    in_recover: Counts,
    /// Inside `reopen`.
    in_reopen: Counts,
}

impl Counting {
    fn begin() -> Counting {
        Counting {
            rust: AllocScope::begin(),
            c: c_malloc::Scope::begin(),
            in_recover: Counts::default(),
            in_reopen: Counts::default(),
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
        rep.steady = all.minus(self.in_recover).minus(self.in_reopen);
        rep.in_recover = self.in_recover;
        rep.in_reopen = self.in_reopen;
    }
}

fn make_realtime() {
    let p = libc::sched_param { sched_priority: 50 };
    // SAFETY: `pthread_self()` is this live thread and `p` a valid parameter block.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &p) };
    if r != 0 {
        eprintln!("note: SCHED_FIFO refused (errno {r}); test threads run at normal priority");
    }
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
        if ctl.capture_reopen.swap(false, Relaxed) {
            // Off the steady-state path: counted apart.
            let res = Counting::attribute(
                &mut counting,
                |c| &mut c.in_reopen,
                || cap.reopen().and_then(|_| cap.start()),
            );
            if let Err(e) = res {
                rep.fatal = Some(e);
                break;
            }
            ctl.capture_reopens.fetch_add(1, Relaxed);
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
    reopens: u64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            breaks: self.breaks - before.breaks,
            capture_xruns: self.capture_xruns - before.capture_xruns,
            playback_xruns: self.playback_xruns - before.playback_xruns,
            timeouts: self.timeouts - before.timeouts,
            reopens: self.reopens - before.reopens,
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
        // SAFETY: the hook runs in the forked child before exec and only calls prctl(2), which
        // is async-signal-safe. It makes the kernel stop jackd if this test is killed outright.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
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

/// Overrun, underrun, a stalled clock and a reopen, one after the other on one stream.
fn check_faults(jackd: &Jackd) {
    let f = SampleFormat::S16Le;
    let mut pb = AlsaPlayback::open(&request("na_src", f)).expect("open na_src");
    let mut cap = AlsaCapture::open(&request("na_pin", f)).expect("open na_pin");
    cap.start().expect("start capture");
    let ctl = Control::default();
    let half_second = u64::from(RATE) / 2;
    let run = || ctl.capture_run.load(Relaxed);
    let counters = || Counters {
        breaks: ctl.capture_breaks.load(Relaxed),
        capture_xruns: ctl.capture_xruns.load(Relaxed),
        playback_xruns: ctl.playback_xruns.load(Relaxed),
        timeouts: ctl.capture_timeouts.load(Relaxed),
        reopens: ctl.capture_reopens.load(Relaxed),
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
        let t0 = Instant::now();
        loop {
            // Fails until the recovered client is active again; "already connected" is success.
            let ok = ["0", "1"].iter().all(|ch| {
                Command::new("jack_connect")
                    .args([format!("na_src:out_00{ch}"), format!("na_pin:in_00{ch}")])
                    .output()
                    .is_ok_and(|o| {
                        o.status.success() || String::from_utf8_lossy(&o.stderr).contains("already")
                    })
            });
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "could not re-wire na_src"
            );
            thread::sleep(Duration::from_millis(20));
        }
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

        // 4. reopen (what follows a lost device) brings capture back.
        let before = counters();
        ctl.capture_reopen.store(true, Relaxed);
        wait_for("capture reopened", before, &|d| {
            d.reopens >= 1 && d.breaks >= 1 && run() >= half_second
        });

        ctl.stop.store(true, Relaxed);
        (c.join().unwrap(), p.join().unwrap())
    });
    assert_eq!(capture.fatal, None);
    assert_eq!(playback.fatal, None);
    assert!(capture.xruns >= 1 && playback.xruns >= 1);
    for (side, r) in [("capture", &capture), ("playback", &playback)] {
        let s = r.steady;
        let what = "loop outside recover/reopen";
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
         allocations/frees; in reopen: C {}/{} allocations/frees; jackd xruns logged {}",
        capture.xruns,
        playback.xruns,
        capture.timeouts,
        capture.checker.breaks,
        capture.in_recover.c_allocations,
        capture.in_recover.c_frees,
        playback.in_recover.c_allocations,
        playback.in_recover.c_frees,
        capture.in_reopen.c_allocations,
        capture.in_reopen.c_frees,
        jackd.xruns()
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
    // SAFETY: set before any ALSA or JACK call, while this test (the only one in this binary)
    // is the only thread of the process reading the environment.
    unsafe {
        std::env::set_var("JACK_DEFAULT_SERVER", &server);
        std::env::set_var("JACK_NO_AUDIO_RESERVATION", "1");
        std::env::set_var(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        );
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

    drop(jackd);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("all in {:.1} s", t_all.elapsed().as_secs_f64());
}
