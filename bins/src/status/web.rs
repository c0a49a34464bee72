//! The status page (`[status] http`, `--http ADDR`): one self-contained HTML page, its live
//! updates as Server-Sent Events, and the snapshot `netaudio status --json` prints, served
//! over HTTP from a normal thread of the daemon (`na-http`).
//!
//! Routes: `/` the page (everything it needs is in it: no external asset, it works offline on
//! a LAN), `/events` the updates (an event stream, [`UPDATES_PER_S`] a second, each one
//! [`update`]), `/status.json` the snapshot. Nothing else: the page is read-only, and no
//! response ever holds key material (with a key file the snapshot says only `keyed: true`).
//!
//! Bounds, so that a slow or malicious client can neither stall the daemon nor grow its
//! memory: one thread serves every client from one `poll` loop with non-blocking sockets; at
//! most [`MAX_CLIENTS`] connections at a time, each with one fixed request buffer of
//! [`MAX_REQUEST`] bytes made at start-up (more are answered 503 and closed); a request must
//! arrive whole within [`REQUEST_TIMEOUT`] (else 408), its head within [`MAX_REQUEST`] bytes
//! (else 431), and without a body (else 413); GET and HEAD only (else 405). A response a
//! client does not read within [`REQUEST_TIMEOUT`] is dropped, and an event stream whose
//! client has not taken an update when the next one is due skips it, and is closed when it
//! stays a second behind: writes never block. Requests are parsed by `httparse` (hyper's parser); one connection serves one
//! request (`Connection: close`), except the event stream. The connection handling is this
//! file's own because the small synchronous server crates do not bound what this must bound
//! (tiny_http gives every connection a pooled thread of its own, with no limit, and reads a
//! header line however long it is), and the async ones would bring a runtime into a daemon
//! that has none.
//!
//! The realtime threads never see any of this: updates are computed here from the counters
//! and the meter they publish (atomics) and from the [`Journal`] the housekeeping thread keeps.

use super::Source;
use super::http::{MAX_REQUEST, Parsed, Route, parse_request, refusal, response};
use super::journal::Journal;
use nix::poll::{PollFd, PollFlags, poll};
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Connections served at a time; more are answered 503 and closed.
pub const MAX_CLIENTS: usize = 32;
/// How long a client may take to send its request, or to read a response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Page updates a second.
pub const UPDATES_PER_S: u32 = 4;
/// Gap log entries each update carries.
pub const LOG_ENTRIES: usize = 50;

/// The page, with its style and script, as the binary carries it.
pub const PAGE: &str = include_str!("page.html");

/// One page update: the snapshot (`status --json`'s), the plot's newest point, the gap log
/// (newest first), and with `history` every point kept (the first update of a stream).
pub fn update(snapshot: Value, point: Value, log: Value, history: Option<Value>) -> Value {
    let mut v = json!({"status": snapshot, "point": point, "log": log});
    if let Some(h) = history {
        v["history"] = h;
    }
    v
}

/// One event of an event stream carrying `v`.
pub fn sse_event(v: &Value) -> String {
    // JSON text has no raw newline: one `data:` line.
    format!("data: {v}\n\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reading the request.
    Request,
    /// Writing a response, then closing.
    Respond,
    /// An event stream.
    Events,
}

/// One client's connection and its buffers (made once, reused).
struct Slot {
    conn: Option<TcpStream>,
    mode: Mode,
    since: Instant,
    req: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    /// Updates an event stream missed because its client had not taken the one before.
    missed: u32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            conn: None,
            mode: Mode::Request,
            since: Instant::now(),
            req: Vec::with_capacity(MAX_REQUEST),
            out: Vec::new(),
            pos: 0,
            missed: 0,
        }
    }

    fn close(&mut self) {
        self.conn = None;
        self.req.clear();
        self.out.clear();
        self.pos = 0;
        self.missed = 0;
        self.mode = Mode::Request;
    }

    /// Writes what is pending without blocking; closes the connection on an error, and after
    /// a whole response.
    fn flush(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        while self.pos < self.out.len() {
            match c.write(&self.out[self.pos..]) {
                Ok(0) => return self.close(),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close(),
            }
        }
        self.out.clear();
        self.pos = 0;
        if self.mode == Mode::Respond {
            self.close();
        }
    }

    fn pending(&self) -> bool {
        self.pos < self.out.len()
    }
}

/// The page server's state.
struct Server {
    source: Source,
    journal: Arc<Journal>,
    slots: Vec<Slot>,
    refused: u64,
}

impl Server {
    /// The newest update, with the history when `first`.
    fn update(&self, first: bool) -> Value {
        let snap = self.source.snapshot();
        let point = self.journal.sample(&snap).json();
        let (log, _) = self.journal.log_json(LOG_ENTRIES);
        update(snap, point, log, first.then(|| self.journal.history_json()))
    }

    fn accept(&mut self, l: &TcpListener) {
        loop {
            let Ok((c, _)) = l.accept() else { return };
            if c.set_nonblocking(true).is_err() {
                continue;
            }
            match self.slots.iter_mut().find(|s| s.conn.is_none()) {
                Some(s) => {
                    s.close();
                    s.conn = Some(c);
                    s.since = Instant::now();
                }
                None => {
                    // Best effort, never waited for.
                    self.refused += 1;
                    let mut out = Vec::new();
                    refusal(&mut out, 503);
                    let mut c = c;
                    let _ = c.write(&out);
                }
            }
        }
    }

    /// Reads what a client sent.
    fn read(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let Some(c) = s.conn.as_mut() else { return };
        if s.mode != Mode::Request {
            // Nothing is expected: read and drop it, notice a close.
            let mut scratch = [0u8; 512];
            match c.read(&mut scratch) {
                Ok(0) => s.close(),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => s.close(),
            }
            return;
        }
        let len = s.req.len();
        s.req.resize(MAX_REQUEST, 0);
        let r = c.read(&mut s.req[len..]);
        match r {
            Ok(0) => return s.close(),
            Ok(n) => s.req.truncate(len + n),
            Err(e) => {
                s.req.truncate(len);
                if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                    s.close();
                }
                return;
            }
        }
        match parse_request(&s.req, s.req.len() == MAX_REQUEST) {
            Parsed::Partial => {}
            Parsed::Refuse(code) => {
                s.mode = Mode::Respond;
                refusal(&mut s.out, code);
                s.flush();
            }
            Parsed::Get { route, head } => self.answer(i, route, head),
        }
    }

    fn answer(&mut self, i: usize, route: Route, head: bool) {
        let first = (route == Route::Events && !head).then(|| sse_event(&self.update(true)));
        let snapshot = (route == Route::Json).then(|| self.source.snapshot().to_string() + "\n");
        let s = &mut self.slots[i];
        s.since = Instant::now();
        match route {
            Route::Page => {
                s.mode = Mode::Respond;
                response(
                    &mut s.out,
                    200,
                    "text/html; charset=utf-8",
                    PAGE.as_bytes(),
                    head,
                );
            }
            Route::Json => {
                s.mode = Mode::Respond;
                let body = snapshot.unwrap_or_default();
                response(&mut s.out, 200, "application/json", body.as_bytes(), head);
            }
            Route::Events if head => {
                s.mode = Mode::Respond;
                response(&mut s.out, 200, "text/event-stream", b"", true);
            }
            Route::Events => {
                s.mode = Mode::Events;
                s.out.clear();
                s.out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                      Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
                      Connection: close\r\n\r\nretry: 2000\n\n",
                );
                s.out
                    .extend_from_slice(first.unwrap_or_default().as_bytes());
            }
        }
        s.flush();
    }

    /// Sends `event` to every event stream; one that still holds the update before skips this
    /// one, and is closed when that lasts a second.
    fn broadcast(&mut self, event: &str) {
        for s in &mut self.slots {
            if s.conn.is_none() || s.mode != Mode::Events {
                continue;
            }
            if s.pending() {
                // Never waited for: a client a second behind is let go.
                s.missed += 1;
                if s.missed >= UPDATES_PER_S {
                    s.close();
                }
                continue;
            }
            s.missed = 0;
            s.out.clear();
            s.pos = 0;
            s.out.extend_from_slice(event.as_bytes());
            s.flush();
        }
    }

    /// Closes requests and responses that took too long.
    fn expire(&mut self, now: Instant) {
        for s in &mut self.slots {
            if s.conn.is_none() || now.duration_since(s.since) < REQUEST_TIMEOUT {
                continue;
            }
            match s.mode {
                Mode::Request => {
                    s.mode = Mode::Respond;
                    refusal(&mut s.out, 408);
                    s.flush();
                    if s.conn.is_some() {
                        s.close();
                    }
                }
                Mode::Respond => s.close(),
                Mode::Events => {}
            }
        }
    }
}

/// Serves the status page on `addr` from a thread of its own, until `stop`: the snapshot from
/// `source`, the plot and the gap log from `journal`.
pub fn serve_page(
    source: Source,
    journal: Arc<Journal>,
    addr: SocketAddr,
    stop: &'static AtomicBool,
) -> std::io::Result<(std::thread::JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot serve the status page on {addr} ([status] http / --http): {e}; \
                 choose another port"
            ),
        )
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let mut server = Server {
        source,
        journal,
        slots: (0..MAX_CLIENTS).map(|_| Slot::new()).collect(),
        refused: 0,
    };
    let every = Duration::from_secs(1) / UPDATES_PER_S;
    let h = std::thread::Builder::new()
        .name("na-http".into())
        .spawn(move || {
            let mut next = Instant::now();
            let mut ready = [PollFlags::empty(); MAX_CLIENTS + 1];
            while !stop.load(Relaxed) {
                let now = Instant::now();
                if now >= next {
                    next = now + every;
                    let any = server
                        .slots
                        .iter()
                        .any(|s| s.conn.is_some() && s.mode == Mode::Events);
                    if any {
                        let ev = sse_event(&server.update(false));
                        server.broadcast(&ev);
                    } else {
                        // The plot's history goes on with nobody watching.
                        server.journal.sample(&server.source.snapshot());
                    }
                    server.expire(now);
                }
                // Wake for the next update, and at least every 100 ms for `stop`.
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                {
                    let mut fds = Vec::with_capacity(MAX_CLIENTS + 1);
                    let mut which = Vec::with_capacity(MAX_CLIENTS);
                    fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
                    for (i, s) in server.slots.iter().enumerate() {
                        if let Some(c) = &s.conn {
                            let mut f = PollFlags::POLLIN;
                            if s.pending() {
                                f |= PollFlags::POLLOUT;
                            }
                            fds.push(PollFd::new(c.as_fd(), f));
                            which.push(i);
                        }
                    }
                    if poll(&mut fds, wait.as_millis().min(100) as u16).is_err() {
                        continue;
                    }
                    ready[0] = fds[0].revents().unwrap_or(PollFlags::empty());
                    for r in &mut ready[1..] {
                        *r = PollFlags::empty();
                    }
                    for (k, &i) in which.iter().enumerate() {
                        ready[i + 1] = fds[k + 1].revents().unwrap_or(PollFlags::empty());
                    }
                }
                for i in 0..MAX_CLIENTS {
                    let r = ready[i + 1];
                    if r.intersects(PollFlags::POLLOUT) {
                        server.slots[i].flush();
                    }
                    if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                        server.read(i);
                    }
                }
                if ready[0].intersects(PollFlags::POLLIN) {
                    server.accept(&listener);
                }
            }
            if server.refused > 0 {
                log::info!(
                    "status page: {} connections refused (more than {MAX_CLIENTS} at a time)",
                    server.refused
                );
            }
        })?;
    Ok((h, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_is_one_event_with_the_snapshot_the_point_and_the_log() {
        let snap = json!({"role": "receiver", "gaps": 3, "keyed": true,
            "peaks_dbfs": [-6.0], "rms_dbfs": [-9.0]});
        let u = update(
            snap.clone(),
            json!([1.0, 20.0, 20.0, 0.5, 0, 3]),
            json!([]),
            None,
        );
        let ev = sse_event(&u);
        assert!(ev.starts_with("data: {") && ev.ends_with("}\n\n"), "{ev}");
        assert_eq!(ev.matches('\n').count(), 2, "one data line: {ev}");
        let back: Value = serde_json::from_str(ev["data: ".len()..].trim()).unwrap();
        assert_eq!(back["status"], snap);
        assert_eq!(back["point"][5], 3);
        assert!(back.get("history").is_none());
        let first = update(snap, json!([]), json!([]), Some(json!([[0.0]])));
        assert_eq!(first["history"], json!([[0.0]]));
    }

    fn server() -> Server {
        let format = engine::StreamFormat::new(48_000, 2, engine::format::SampleFormat::S16Le)
            .expect("a valid format");
        Server {
            source: Source {
                role: "receiver",
                format,
                device: "virtual".into(),
                address: "127.0.0.1:46000".into(),
                stats: Default::default(),
                meter: Default::default(),
                started: Instant::now(),
                keyed: false,
                receivers: None,
            },
            journal: Arc::new(Journal::new(true, 48_000, Instant::now())),
            slots: (0..MAX_CLIENTS).map(|_| Slot::new()).collect(),
            refused: 0,
        }
    }

    #[test]
    fn an_event_stream_that_is_not_read_is_dropped_without_blocking() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        conn.set_nonblocking(true).unwrap();
        let mut srv = server();
        srv.slots[0].conn = Some(conn);
        srv.slots[0].mode = Mode::Events;
        // Updates far bigger than the socket buffers, never read: each broadcast returns at
        // once, and the client is let go after a second's worth of missed updates.
        let event = sse_event(&json!({"x": "y".repeat(4 << 20)}));
        let t0 = Instant::now();
        let mut sent = 0;
        while srv.slots[0].conn.is_some() {
            srv.broadcast(&event);
            sent += 1;
            assert!(
                sent <= 1 + UPDATES_PER_S,
                "still served after {sent} updates"
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // A client that keeps up is served every update.
        drop(client);
        let _reader = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        conn.set_nonblocking(true).unwrap();
        srv.slots[1].conn = Some(conn);
        srv.slots[1].mode = Mode::Events;
        for _ in 0..10 {
            srv.broadcast("data: {}\n\n");
            assert!(srv.slots[1].conn.is_some());
        }
    }

    #[test]
    fn connections_beyond_the_bound_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let mut srv = server();
        let clients: Vec<TcpStream> = (0..MAX_CLIENTS + 3)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        while srv.slots.iter().any(|s| s.conn.is_none()) || srv.refused < 3 {
            srv.accept(&l);
        }
        assert_eq!(srv.refused, 3);
        let mut answer = String::new();
        let mut last = &clients[MAX_CLIENTS + 2];
        last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = last.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["http://", "https://", "//cdn", "src=\"http"] {
            assert!(!PAGE.contains(external), "the page refers to {external}");
        }
        assert!(PAGE.contains("EventSource(\"events\")"));
        for id in [
            "id=\"gaps\"",
            "id=\"meters\"",
            "id=\"plot\"",
            "id=\"log\"",
            "id=\"keyed\"",
        ] {
            assert!(PAGE.contains(id), "{id}");
        }
    }
}
