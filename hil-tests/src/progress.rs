//! Progress display for long runs.
//!
//! The worker only stores its position into an [`AtomicU64`]; a separate thread loads it
//! (`Relaxed`) and draws a bar on stderr, so the run itself is never slowed by the display. On a
//! terminal the bar is redrawn in place a few times per second; otherwise (CI logs, redirected
//! output) a plain line is printed every few seconds of wall time so logs stay short.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Redraw interval on a terminal (at most 5 redraws per second).
const TERMINAL_INTERVAL: Duration = Duration::from_millis(200);
/// Interval between plain lines when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest the display thread sleeps before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);
/// Characters inside the brackets of the bar.
const BAR_WIDTH: usize = 20;

/// Shows progress of a long run on stderr from its own thread; the worker only stores into an atomic.
#[must_use = "dropping a Progress stops the display at once"]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How the display thread writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Redraw one line in place (`\r` + clear to end of line).
    Terminal,
    /// Append a plain line now and then.
    Plain,
}

/// Everything needed to render one progress line.
struct View {
    label: String,
    total: u64,
    unit_fmt: fn(u64) -> String,
    started: Instant,
    /// Terminal width, when known, so a redrawn line never wraps.
    max_chars: Option<usize>,
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
            Mode::Terminal
        } else {
            Mode::Plain
        };
        let max_chars = match mode {
            Mode::Terminal => terminal_columns().map(|c| c.saturating_sub(1).max(20)),
            Mode::Plain => None,
        };
        Self::start_with(
            label,
            done,
            total,
            unit_fmt,
            mode,
            max_chars,
            Box::new(stderr),
        )
    }

    fn start_with(
        label: &str,
        done: Arc<AtomicU64>,
        total: u64,
        unit_fmt: fn(u64) -> String,
        mode: Mode,
        max_chars: Option<usize>,
        sink: Box<dyn Write + Send>,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let view = View {
            label: label.to_owned(),
            total,
            unit_fmt,
            started: Instant::now(),
            max_chars,
        };
        let thread_stop = Arc::clone(&stop);
        // Without a thread there is simply no display; the run itself is unaffected.
        let thread = thread::Builder::new()
            .name("progress".to_owned())
            .spawn(move || run(&view, &done, &thread_stop, mode, sink))
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

/// Body of the display thread.
fn run(
    view: &View,
    done: &AtomicU64,
    stop: &AtomicBool,
    mode: Mode,
    mut sink: Box<dyn Write + Send>,
) {
    let interval = match mode {
        Mode::Terminal => TERMINAL_INTERVAL,
        Mode::Plain => PLAIN_INTERVAL,
    };
    let mut next = match mode {
        Mode::Terminal => view.started,
        Mode::Plain => view.started + interval,
    };
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            let line = view.line(done.load(Ordering::Relaxed), now);
            emit(&mut *sink, mode, &line, false);
            next = now + interval;
        }
        thread::park_timeout(
            POLL.min(next.saturating_duration_since(now))
                .max(Duration::from_millis(1)),
        );
    }
    let line = view.line(done.load(Ordering::Relaxed), Instant::now());
    emit(&mut *sink, mode, &line, true);
}

/// Writes one state; errors on stderr are ignored (there is nowhere left to report them).
fn emit(sink: &mut dyn Write, mode: Mode, line: &str, last: bool) {
    let _ = match mode {
        Mode::Terminal if last => write!(sink, "\r{line}\x1b[K\n"),
        Mode::Terminal => write!(sink, "\r{line}\x1b[K"),
        Mode::Plain => writeln!(sink, "{line}"),
    };
    let _ = sink.flush();
}

/// Width of the terminal as exported by the shell, if it is.
fn terminal_columns() -> Option<usize> {
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

impl View {
    fn line(&self, done: u64, now: Instant) -> String {
        let line = render_line(
            &self.label,
            done,
            self.total,
            self.unit_fmt,
            now.saturating_duration_since(self.started),
        );
        match self.max_chars {
            Some(max) if line.chars().count() > max => line.chars().take(max).collect(),
            _ => line,
        }
    }
}

/// One progress line, e.g.
/// `sim [##########..........]  52%  12h 29m / 24h 00m audio · 41.2 s elapsed · ETA 38 s · 1310x realtime`.
fn render_line(
    label: &str,
    done: u64,
    total: u64,
    unit_fmt: fn(u64) -> String,
    elapsed: Duration,
) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        done.min(total) as f64 / total as f64
    };
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let percent = (fraction * 100.0) as u32;
    let mut line = format!(
        "{label} [{}{}] {percent:>3}%  {} / {} audio",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        unit_fmt(done),
        unit_fmt(total),
    );
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

    #[test]
    fn terminal_mode_redraws_in_place_and_finishes_promptly() {
        let done = Arc::new(AtomicU64::new(0));
        let sink = Shared::default();
        let mut progress = Progress::start_with(
            "sim",
            Arc::clone(&done),
            1000,
            fmt_audio_ms,
            Mode::Terminal,
            None,
            Box::new(sink.clone()),
        );
        thread::sleep(Duration::from_millis(30));
        done.store(1000, Ordering::Relaxed);
        let t0 = Instant::now();
        progress.finish();
        assert!(t0.elapsed() < Duration::from_millis(250));
        progress.finish();
        drop(progress);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(out.starts_with("\rsim ["), "{out:?}");
        assert!(
            out.contains("[####################] 100%  1.0 s / 1.0 s audio"),
            "{out:?}"
        );
        assert!(out.ends_with("\x1b[K\n"), "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
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
            Mode::Plain,
            None,
            Box::new(sink.clone()),
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

    #[test]
    fn long_lines_are_cut_to_the_terminal_width() {
        let view = View {
            label: "sim".to_owned(),
            total: 1000,
            unit_fmt: fmt_audio_ms,
            started: Instant::now(),
            max_chars: Some(30),
        };
        assert_eq!(view.line(500, Instant::now()).chars().count(), 30);
    }
}
