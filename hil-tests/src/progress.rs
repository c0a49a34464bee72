//! Progress display for long runs.
//!
//! The worker only stores its position into an [`AtomicU64`]; a separate thread loads it
//! (`Relaxed`) and hands it to the display, so the run itself is never slowed by it. On a
//! terminal an [`indicatif`] bar is redrawn in place a few times per second (indicatif fits it
//! to the terminal's width); otherwise (CI logs, redirected output) indicatif would draw
//! nothing, so a plain line is printed every few seconds of wall time instead, so that logs stay
//! short and readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Redraw interval on a terminal (at most 5 redraws per second).
const TERMINAL_INTERVAL: Duration = Duration::from_millis(200);
/// Redraws per second indicatif allows itself on a terminal (one per [`TERMINAL_INTERVAL`]).
const TERMINAL_HZ: u8 = 5;
/// Interval between plain lines when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest the display thread sleeps before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);
/// Characters inside the brackets of the bar.
const BAR_WIDTH: usize = 20;
/// The line on a terminal, as [`render_line`] writes it. `wide_msg` is the part after the
/// percentage: indicatif cuts it so that the line never wraps.
const TEMPLATE: &str = "{prefix} [{bar:20}] {floor_percent:>3}%  {wide_msg}";

/// Shows progress of a long run on stderr from its own thread; the worker only stores into an atomic.
#[must_use = "dropping a Progress stops the display at once"]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How the display thread shows progress.
enum Mode {
    /// An indicatif bar, redrawn in place.
    Terminal(ProgressDrawTarget),
    /// A plain line now and then, appended to this sink.
    Plain(Box<dyn Write + Send>),
}

/// Everything needed to render one progress line.
struct View {
    label: String,
    total: u64,
    unit_fmt: fn(u64) -> String,
    started: Instant,
}

impl Progress {
    /// `done` is updated by the worker (units are arbitrary, e.g. audio milliseconds), `total` is the
    /// value at completion, `label` e.g. "sim", `unit_fmt` formats a value of the unit for humans
    /// (e.g. audio ms -> "3h 12m"). Starts a thread that redraws at most ~5 times per second.
    /// When stderr is not a terminal (std::io::IsTerminal), prints a plain line at most every ~10 s
    /// instead of redrawing (so CI logs stay short), and nothing at all if `quiet`.
    ///
    /// The line ends with a realtime factor, `done` divided by elapsed wall-clock milliseconds:
    /// it reads correctly when the unit is milliseconds of audio, as it is for every run of the
    /// harness.
    pub fn start(
        label: &str,
        done: Arc<AtomicU64>,
        total: u64,
        unit_fmt: fn(u64) -> String,
        quiet: bool,
    ) -> Progress {
        if quiet {
            return Progress {
                stop: Arc::new(AtomicBool::new(true)),
                thread: None,
            };
        }
        let stderr = std::io::stderr();
        let mode = if stderr.is_terminal() {
            Mode::Terminal(ProgressDrawTarget::stderr_with_hz(TERMINAL_HZ))
        } else {
            Mode::Plain(Box::new(stderr))
        };
        Self::start_with(label, done, total, unit_fmt, mode)
    }

    fn start_with(
        label: &str,
        done: Arc<AtomicU64>,
        total: u64,
        unit_fmt: fn(u64) -> String,
        mode: Mode,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let view = View {
            label: label.to_owned(),
            total,
            unit_fmt,
            started: Instant::now(),
        };
        let thread_stop = Arc::clone(&stop);
        // Without a thread there is simply no display; the run itself is unaffected.
        let thread = thread::Builder::new()
            .name("progress".to_owned())
            .spawn(move || match mode {
                Mode::Terminal(target) => run_terminal(&view, &done, &thread_stop, target),
                Mode::Plain(sink) => run_plain(&view, &done, &thread_stop, sink),
            })
            .ok();
        Progress { stop, thread }
    }

    /// Stops the thread, draws the final 100% state (or the last state) and a newline. Idempotent; also done on Drop.
    pub fn finish(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            thread.thread().unpark();
            // A panic in the display thread must not take the run down with it.
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sleeps until `next` (or [`POLL`], or an unpark from [`Progress::finish`]).
fn nap(next: Instant, now: Instant) {
    thread::park_timeout(
        POLL.min(next.saturating_duration_since(now))
            .max(Duration::from_millis(1)),
    );
}

/// The display thread on a terminal: hands the worker's position to an indicatif bar.
fn run_terminal(view: &View, done: &AtomicU64, stop: &AtomicBool, target: ProgressDrawTarget) {
    let bar = ProgressBar::with_draw_target(Some(view.total), target)
        .with_style(bar_style())
        .with_prefix(view.label.clone());
    // indicatif's own ticker redraws, so that setting the position does not: the position
    // and the message of one update then always show together (the message redraws).
    bar.enable_steady_tick(TERMINAL_INTERVAL);
    let update = |now: Instant| {
        let d = done.load(Ordering::Relaxed);
        bar.update(|s| s.set_pos(d));
        bar.set_message(view.detail(d, now));
    };
    let mut next = view.started;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            update(now);
            next = now + TERMINAL_INTERVAL;
        }
        nap(next, now);
    }
    update(Instant::now());
    // Leaves the last state on screen as it is (`finish` would show 100% of a run that was cut
    // short). indicatif pads the line to the terminal's width, so the next output starts on a
    // line of its own.
    bar.abandon();
}

/// The display thread when stderr is not a terminal: a plain line every [`PLAIN_INTERVAL`].
fn run_plain(view: &View, done: &AtomicU64, stop: &AtomicBool, mut sink: Box<dyn Write + Send>) {
    // Errors on stderr are ignored: there is nowhere left to report them.
    let mut emit = |now: Instant| {
        let _ = writeln!(sink, "{}", view.line(done.load(Ordering::Relaxed), now));
        let _ = sink.flush();
    };
    let mut next = view.started + PLAIN_INTERVAL;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            emit(now);
            next = now + PLAIN_INTERVAL;
        }
        nap(next, now);
    }
    emit(Instant::now());
}

/// The indicatif style that draws [`render_line`]'s line.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(TEMPLATE)
        .expect("the progress template is valid")
        .progress_chars("#.")
        // Truncated, as the plain line's: 100% only once the run is complete.
        .with_key(
            "floor_percent",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", percent(s.pos(), s.len().unwrap_or(0)));
            },
        )
}

impl View {
    fn line(&self, done: u64, now: Instant) -> String {
        render_line(
            &self.label,
            done,
            self.total,
            self.unit_fmt,
            now.saturating_duration_since(self.started),
        )
    }

    /// The part of the line after the percentage.
    fn detail(&self, done: u64, now: Instant) -> String {
        render_detail(
            done,
            self.total,
            self.unit_fmt,
            now.saturating_duration_since(self.started),
        )
    }
}

/// Share of `total` that is done, 0..=1 (1 when there is nothing to do).
fn fraction(done: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        done.min(total) as f64 / total as f64
    }
}

/// Whole percent done, truncated.
fn percent(done: u64, total: u64) -> u32 {
    (fraction(done, total) * 100.0) as u32
}

/// One progress line, e.g.
/// `sim [##########..........]  52%  12h 29m / 24h 00m audio · 41.2 s elapsed · ETA 38 s · 1310x realtime`.
/// On a terminal indicatif draws the same line from [`TEMPLATE`].
fn render_line(
    label: &str,
    done: u64,
    total: u64,
    unit_fmt: fn(u64) -> String,
    elapsed: Duration,
) -> String {
    let filled = ((fraction(done, total) * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    format!(
        "{label} [{}{}] {:>3}%  {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        percent(done, total),
        render_detail(done, total, unit_fmt, elapsed),
    )
}

/// The line after the percentage: `12h 29m / 24h 00m audio · 41.2 s elapsed · ETA 38 s · 1310x realtime`.
fn render_detail(done: u64, total: u64, unit_fmt: fn(u64) -> String, elapsed: Duration) -> String {
    let mut line = format!("{} / {} audio", unit_fmt(done), unit_fmt(total));
    let secs = elapsed.as_secs_f64();
    line.push_str(" · ");
    line.push_str(&fmt_wall(secs, 1));
    line.push_str(" elapsed");
    if done > 0 && done < total && secs >= 1.0 {
        let eta = secs * (total - done) as f64 / done as f64;
        line.push_str(" · ETA ");
        line.push_str(&fmt_wall(eta, 0));
    }
    if done > 0 && secs >= 0.05 {
        let factor = done as f64 / (secs * 1000.0);
        if factor < 10.0 {
            line.push_str(&format!(" · {factor:.1}x realtime"));
        } else {
            line.push_str(&format!(" · {factor:.0}x realtime"));
        }
    }
    line
}

/// Formats wall-clock seconds: "41.2 s" (with `decimals` below a minute), "3m 12s", "1h 05m".
fn fmt_wall(secs: f64, decimals: usize) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    if secs < 60.0 {
        return format!("{secs:.decimals$} s");
    }
    let whole = secs as u64;
    if whole < 3600 {
        format!("{}m {:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h {:02}m", whole / 3600, whole % 3600 / 60)
    }
}

/// Formats audio milliseconds as e.g. "59.9 s", "12m 03s", "23h 59m".
///
/// Values are truncated, never rounded up, so a run short of a boundary never shows it.
pub fn fmt_audio_ms(ms: u64) -> String {
    if ms < 60_000 {
        let tenths = ms / 100;
        return format!("{}.{} s", tenths / 10, tenths % 10);
    }
    let secs = ms / 1000;
    if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn audio_time_formatting() {
        assert_eq!(fmt_audio_ms(0), "0.0 s");
        assert_eq!(fmt_audio_ms(999), "0.9 s");
        assert_eq!(fmt_audio_ms(12_345), "12.3 s");
        assert_eq!(fmt_audio_ms(59_999), "59.9 s");
        assert_eq!(fmt_audio_ms(60_000), "1m 00s");
        assert_eq!(fmt_audio_ms(723_000), "12m 03s");
        assert_eq!(fmt_audio_ms(3_599_999), "59m 59s");
        assert_eq!(fmt_audio_ms(3_600_000), "1h 00m");
        assert_eq!(fmt_audio_ms(44_940_000), "12h 29m");
        assert_eq!(fmt_audio_ms(86_399_999), "23h 59m");
        assert_eq!(fmt_audio_ms(86_400_000), "24h 00m");
        assert_eq!(fmt_audio_ms(360_000_000), "100h 00m");
        // No overflow at the extreme.
        assert!(fmt_audio_ms(u64::MAX).ends_with('m'));
    }

    #[test]
    fn wall_time_formatting() {
        assert_eq!(fmt_wall(41.23, 1), "41.2 s");
        assert_eq!(fmt_wall(37.6, 0), "38 s");
        assert_eq!(fmt_wall(192.0, 0), "3m 12s");
        assert_eq!(fmt_wall(3900.0, 1), "1h 05m");
        assert_eq!(fmt_wall(f64::NAN, 1), "0.0 s");
        assert_eq!(fmt_wall(-3.0, 0), "0 s");
    }

    #[test]
    fn line_shows_bar_percent_eta_and_realtime() {
        let total = 86_400_000;
        let done = total * 52 / 100;
        let line = render_line("sim", done, total, fmt_audio_ms, Duration::from_secs(40));
        assert!(line.starts_with("sim [##########..........]  52%  12h 28m / 24h 00m audio"));
        assert!(line.contains("40.0 s elapsed"), "{line}");
        assert!(line.contains("ETA 37 s"), "{line}");
        assert!(line.contains("1123x realtime"), "{line}");
    }

    #[test]
    fn line_edge_cases() {
        let start = render_line("sim", 0, 1000, fmt_audio_ms, Duration::ZERO);
        assert!(start.contains("[....................]   0%"), "{start}");
        assert!(
            !start.contains("ETA") && !start.contains("realtime"),
            "{start}"
        );
        let end = render_line("sim", 1000, 1000, fmt_audio_ms, Duration::from_secs(2));
        assert!(end.contains("[####################] 100%"), "{end}");
        assert!(!end.contains("ETA"), "{end}");
        let empty = render_line("x", 0, 0, fmt_audio_ms, Duration::from_secs(1));
        assert!(empty.contains("100%"), "{empty}");
        let over = render_line("x", 5000, 1000, fmt_audio_ms, Duration::from_secs(1));
        assert!(over.contains("100%"), "{over}");
    }

    #[test]
    fn quiet_start_and_finish_are_prompt_and_idempotent() {
        let done = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let mut progress = Progress::start("sim", Arc::clone(&done), 1000, fmt_audio_ms, true);
        done.store(1000, Ordering::Relaxed);
        progress.finish();
        progress.finish();
        drop(progress);
        assert!(t0.elapsed() < Duration::from_millis(250));
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A terminal of `width` columns that records what indicatif does to it: text as written,
    /// `\r` for a cleared line, `^N` for the cursor moved up N lines.
    #[derive(Clone, Debug)]
    struct Screen {
        width: u16,
        out: Arc<Mutex<String>>,
    }

    impl Screen {
        fn new(width: u16) -> Screen {
            Screen {
                width,
                out: Arc::default(),
            }
        }

        fn text(&self) -> String {
            self.out.lock().unwrap().clone()
        }

        fn push(&self, s: &str) -> std::io::Result<()> {
            self.out.lock().unwrap().push_str(s);
            Ok(())
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            if n > 0 {
                self.push(&format!("^{n}"))?;
            }
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(s)?;
            self.push("\n")
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("\r")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn terminal(screen: &Screen) -> Mode {
        Mode::Terminal(ProgressDrawTarget::term_like_with_hz(
            Box::new(screen.clone()),
            TERMINAL_HZ,
        ))
    }

    #[test]
    fn terminal_mode_redraws_in_place_and_finishes_promptly() {
        let done = Arc::new(AtomicU64::new(0));
        let screen = Screen::new(200);
        let mut progress = Progress::start_with(
            "sim",
            Arc::clone(&done),
            1000,
            fmt_audio_ms,
            terminal(&screen),
        );
        thread::sleep(Duration::from_millis(30));
        done.store(1000, Ordering::Relaxed);
        let t0 = Instant::now();
        progress.finish();
        assert!(t0.elapsed() < Duration::from_millis(250));
        progress.finish();
        drop(progress);
        let out = screen.text();
        assert!(out.starts_with("sim ["), "{out:?}");
        // Every state is drawn over the last one, never below it.
        assert!(!out.contains('\n'), "{out:?}");
        let last = out.rsplit('\r').next().unwrap();
        assert!(
            last.starts_with("sim [####################] 100%  1.0 s / 1.0 s audio"),
            "{out:?}"
        );
        // The final state fills the line, so the next output starts on a line of its own.
        assert_eq!(last.chars().count(), 200, "{last:?}");
    }

    #[test]
    fn terminal_lines_are_those_of_the_plain_mode() {
        let done = Arc::new(AtomicU64::new(0));
        let screen = Screen::new(300);
        let mut progress = Progress::start_with(
            "rig netaudio",
            Arc::clone(&done),
            60_000,
            fmt_audio_ms,
            terminal(&screen),
        );
        done.store(8_600, Ordering::Relaxed);
        progress.finish();
        let out = screen.text();
        let last = out.rsplit('\r').next().unwrap().trim_end();
        let expected = render_line("rig netaudio", 8_600, 60_000, fmt_audio_ms, Duration::ZERO);
        // Equal up to the elapsed time, which the two did not read at the same instant.
        let cut = |l: &str| l.split(" · ").next().unwrap().to_owned();
        assert_eq!(cut(last), cut(&expected), "{out:?}");
        assert!(
            last.starts_with("rig netaudio [##..................]  14%  8.6 s / 1m 00s audio · "),
            "{last:?}"
        );
    }

    #[test]
    fn plain_mode_prints_only_the_final_line_for_a_short_run() {
        let done = Arc::new(AtomicU64::new(0));
        let sink = Shared::default();
        let progress = Progress::start_with(
            "sim",
            Arc::clone(&done),
            1000,
            fmt_audio_ms,
            Mode::Plain(Box::new(sink.clone())),
        );
        done.store(400, Ordering::Relaxed);
        let t0 = Instant::now();
        drop(progress);
        assert!(t0.elapsed() < Duration::from_millis(250));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.starts_with("sim [########............]  40%"),
            "{out:?}"
        );
        assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
    }

    /// What `Progress` drew on a terminal of `width` columns for a run half done.
    fn drawn_half_way(width: u16) -> String {
        let done = Arc::new(AtomicU64::new(500));
        let screen = Screen::new(width);
        let mut progress = Progress::start_with("sim", done, 1000, fmt_audio_ms, terminal(&screen));
        progress.finish();
        screen.text()
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal_width() {
        // The line is cut after the percentage, so it never wraps on a terminal wider than
        // the bar itself.
        let out = drawn_half_way(40);
        let lines: Vec<&str> = out.split(['\r', '\n']).filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "{out:?}");
        for l in lines {
            assert!(l.chars().count() <= 40, "{l:?} in {out:?}");
        }
        // Narrower still, the bar wraps, and each state is drawn over all of the last one.
        let out = drawn_half_way(30);
        let states: Vec<&str> = out.split("\r\r").collect();
        assert!(states.len() > 1, "{out:?}");
        for s in &states[..states.len() - 1] {
            assert!(s.ends_with("^1"), "{s:?} in {out:?}");
        }
    }
}
