//! The HTTP of the status page (`web`): the address it is served on, what a request asks for
//! (parsed by `httparse`, within [`MAX_REQUEST`] bytes and [`MAX_HEADERS`] headers, no body),
//! and the bytes of a response. No I/O here: the server owns the sockets.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};

/// A request's head (request line and headers), bytes; longer ones are answered 431.
pub const MAX_REQUEST: usize = 8192;
/// Headers a request may have (more: 431).
pub const MAX_HEADERS: usize = 32;

/// The address `[status] http` / `--http` names: `ADDR:PORT`, `[V6]:PORT`, `HOST:PORT`, or a
/// bare `PORT` (then on localhost only).
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let bad = |why: String| {
        format!(
            "status page address {s:?} ([status] http / --http): {why}; give a port (8080, \
             served on localhost only) or ADDR:PORT (0.0.0.0:8080 for the whole LAN)"
        )
    };
    if let Ok(port) = t.trim_start_matches(':').parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    t.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it names no address".into()))
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The page.
    Page,
    /// The event stream.
    Events,
    /// The snapshot.
    Json,
}

/// What to do with a request's head so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A request for this (`head`: HEAD, no body in the answer).
    Get { route: Route, head: bool },
    /// Answer with this status and close.
    Refuse(u16),
}

/// Reads a request's head from the bytes received so far (`full`: the buffer is full).
pub fn parse_request(buf: &[u8], full: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if full => Parsed::Refuse(431),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refuse(431),
        Err(_) => Parsed::Refuse(400),
        Ok(httparse::Status::Complete(_)) => {
            let body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length")
                        && std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            != Some(0))
            });
            let head = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Parsed::Refuse(405),
            };
            if body {
                return Parsed::Refuse(413);
            }
            let path = req.path.unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let route = match path {
                "/" | "/index.html" => Route::Page,
                "/events" => Route::Events,
                "/status.json" => Route::Json,
                _ => return Parsed::Refuse(404),
            };
            Parsed::Get { route, head }
        }
    }
}

pub(super) fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A whole response's bytes.
pub(super) fn response(out: &mut Vec<u8>, code: u16, kind: &str, body: &[u8], head: bool) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {code} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
         style-src 'unsafe-inline'; img-src data:; connect-src 'self'\r\n\
         Connection: close\r\n\r\n",
        if code == 200 { "OK" } else { reason(code) },
        body.len()
    );
    if !head {
        out.extend_from_slice(body);
    }
}

pub(super) fn refusal(out: &mut Vec<u8>, code: u16) {
    let body = format!("{code} {}\n", reason(code));
    response(
        out,
        code,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_localhost() {
        assert_eq!(listen_addr("8080").unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(listen_addr(":8081").unwrap().to_string(), "127.0.0.1:8081");
        assert_eq!(
            listen_addr("0.0.0.0:8080").unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert_eq!(listen_addr("[::]:8080").unwrap().to_string(), "[::]:8080");
        let e = listen_addr("nonsense").unwrap_err();
        assert!(e.contains("\"nonsense\"") && e.contains("--http"), "{e}");
    }

    #[test]
    fn requests_are_bounded() {
        let get = |p: &str| {
            parse_request(
                format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                false,
            )
        };
        assert_eq!(
            get("/"),
            Parsed::Get {
                route: Route::Page,
                head: false
            }
        );
        assert_eq!(
            get("/events"),
            Parsed::Get {
                route: Route::Events,
                head: false
            }
        );
        assert_eq!(
            get("/status.json?x=1"),
            Parsed::Get {
                route: Route::Json,
                head: false
            }
        );
        assert_eq!(get("/../etc/passwd"), Parsed::Refuse(404));
        assert_eq!(
            parse_request(b"HEAD / HTTP/1.1\r\n\r\n", false),
            Parsed::Get {
                route: Route::Page,
                head: true
            }
        );
        // Incomplete: wait for more, unless the buffer is full.
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x", false),
            Parsed::Partial
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        assert_eq!(
            parse_request(&long.as_bytes()[..MAX_REQUEST], true),
            Parsed::Refuse(431)
        );
        // Bodies, other methods, too many headers, garbage.
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", false),
            Parsed::Refuse(405)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n", false),
            Parsed::Refuse(413)
        );
        assert_eq!(
            parse_request(
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Parsed::Refuse(413)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", false),
            Parsed::Get {
                route: Route::Page,
                head: false
            }
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        assert_eq!(
            parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), false),
            Parsed::Refuse(431)
        );
        assert_eq!(
            parse_request(b"\x00\x01garbage\r\n\r\n", false),
            Parsed::Refuse(400)
        );
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let mut out = Vec::new();
        response(&mut out, 200, "application/json", b"{}", false);
        let t = String::from_utf8(out.clone()).unwrap();
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(
            t.contains("Content-Length: 2\r\n") && t.ends_with("\r\n\r\n{}"),
            "{t}"
        );
        assert!(t.contains("Connection: close"), "{t}");
        response(&mut out, 200, "application/json", b"{}", true);
        assert!(String::from_utf8(out).unwrap().ends_with("\r\n\r\n"));
        let mut out = Vec::new();
        refusal(&mut out, 503);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("HTTP/1.1 503 Service Unavailable")
        );
    }

    proptest::proptest! {
        /// Whatever arrives, parsing answers without panicking; a full buffer is never left
        /// waiting for more, and a request with a body is never served.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..MAX_REQUEST)) {
            let full = bytes.len() == MAX_REQUEST;
            let p = parse_request(&bytes, full);
            proptest::prop_assert!(!(full && p == Parsed::Partial));
        }

        #[test]
        fn a_body_is_refused(len in 1u64..u64::MAX, path in "/[a-z.]{0,12}") {
            let req = format!("GET {path} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n");
            let p = parse_request(req.as_bytes(), false);
            proptest::prop_assert_eq!(p, Parsed::Refuse(413));
        }
    }
}
