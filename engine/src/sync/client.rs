//! The receiver's side of the time exchange: when to ask, what to ask, what the answers say.
//!
//! [`SyncClient`] is a sans-IO state machine in the manner of the sessions: the driver calls
//! [`poll_transmit`](SyncClient::poll_transmit) when [`poll_timeout`](SyncClient::poll_timeout)
//! is due and sends what it writes to the sender; it hands every response to
//! [`handle_response`](SyncClient::handle_response) with its kernel receive timestamp. The
//! model ([`ClockModel`]) maps the sender's capture times to the receiver's clock.
//!
//! How often to ask: an envelope fit is as good as the quickest passes it has seen, so
//! accuracy is bought with exchanges. The client asks every [`SyncParams::burst_interval_ns`]
//! (10 ms) for the first [`SyncParams::burst_ns`] (10 s) after it starts or its model restarts;
//! then, until the model's error estimate is within [`SyncParams::settled_error_ns`], every
//! [`SyncParams::fast_interval_ns`] (25 ms); once settled, every
//! [`SyncParams::interval_ns`] (250 ms). On a quiet LAN it settles within seconds and asks 4
//! times a second; with jitter of several ms it keeps asking 40 times a second (an 88-byte
//! datagram each way with a key: about 3.5 kB/s). Each interval is varied by up to ±1/8, so
//! requests do not beat with the stream's packets.
//!
//! Timestamps: `t1` is the `now` given to `poll_transmit`, read just before the request is
//! sent (as the sender reads `t3` just before its response leaves, so the two send paths cost
//! the same both ways); `t4` is the receive timestamp of the response, the kernel's where the
//! socket gives one.
//!
//! Realtime contract: [`SyncClient::new`] allocates nothing on the heap either; no method
//! allocates, locks, formats or makes a syscall.

use super::model::{ClockModel, ClockParams, Observed};
use super::packet::{self, REPORT_LOCKED, Report, TimePacket, TimeRequest, TimeResponse, TsError};
use crate::auth::Key;
use crate::rng::Rng;

/// Requests whose responses are awaited at once; an older one's response no longer counts.
pub const OUTSTANDING: usize = 8;

/// Tuning of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncParams {
    /// Interval between requests in the first [`burst_ns`](Self::burst_ns) after the start
    /// and after a restart of the model, ns.
    pub burst_interval_ns: u64,
    /// How long a burst lasts, ns.
    pub burst_ns: u64,
    /// Interval between requests after the burst until the model settles, ns.
    pub fast_interval_ns: u64,
    /// Interval between requests once it has, ns.
    pub interval_ns: u64,
    /// The model has settled when its error estimate is at most this, ns.
    pub settled_error_ns: u64,
    /// Exchanges whose round trip (less the sender's turnaround) took longer are ignored, ns.
    pub max_delay_ns: u64,
    /// The clock model.
    pub clock: ClockParams,
}

impl Default for SyncParams {
    fn default() -> Self {
        SyncParams {
            burst_interval_ns: 10_000_000,
            burst_ns: 10_000_000_000,
            fast_interval_ns: 25_000_000,
            interval_ns: 250_000_000,
            settled_error_ns: 5_000,
            max_delay_ns: 200_000_000,
            clock: ClockParams::default(),
        }
    }
}

/// What became of a datagram given to [`SyncClient::handle_response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// An answer to an outstanding request, taken into the model.
    Taken {
        /// Its offset sample, sender clock − receiver clock, ns.
        offset_ns: i128,
        /// Its round trip less the sender's turnaround, ns.
        delay_ns: u64,
        /// The clock stepped: the model restarted with this exchange.
        restarted: bool,
    },
    /// An answer taken but left out of the fit (a reordered response).
    Reordered,
    /// Not a time-exchange datagram, or a request.
    Invalid(Option<TsError>),
    /// For another receiver.
    NotOurs,
    /// No outstanding request matches (late, duplicate or replayed).
    Unmatched,
    /// Not sealed with the stream's key.
    Unauthentic,
    /// Times that cannot be (a negative delay or turnaround).
    BadTimes,
    /// A round trip above [`SyncParams::max_delay_ns`].
    TooSlow,
}

/// Counters of the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Requests written.
    pub requests: u64,
    /// Responses taken into the model.
    pub responses: u64,
    /// Datagrams refused (every outcome but `Taken` and `Reordered`).
    pub refused: u64,
    /// Refused for want of a valid seal.
    pub unauthentic: u64,
}

/// The receiver's side of the time exchange (see the module docs).
#[derive(Clone, Debug)]
pub struct SyncClient {
    id: u32,
    key: Option<Key>,
    params: SyncParams,
    seq: u16,
    next_send: Option<u64>,
    /// The burst of requests lasts until then.
    burst_until: Option<u64>,
    /// Requests awaiting their response: (seq, t1).
    outstanding: [Option<(u16, u64)>; OUTSTANDING],
    report: Report,
    model: ClockModel,
    rng: Rng,
    counters: SyncCounters,
    last_delay_ns: Option<u64>,
}

impl SyncClient {
    /// A client for a receiver whose id for this run is `receiver_id` (random); with a key,
    /// requests are sealed and only sealed responses count.
    pub fn new(receiver_id: u32, key: Option<Key>, params: SyncParams) -> SyncClient {
        SyncClient {
            id: receiver_id,
            key,
            params,
            seq: 0,
            next_send: None,
            burst_until: None,
            outstanding: [None; OUTSTANDING],
            report: Report::default(),
            model: ClockModel::new(params.clock),
            rng: Rng::new(0x5EED ^ receiver_id as u64),
            counters: SyncCounters::default(),
            last_delay_ns: None,
        }
    }

    /// This receiver's id.
    pub fn receiver_id(&self) -> u32 {
        self.id
    }

    /// The tuning.
    pub fn params(&self) -> &SyncParams {
        &self.params
    }

    /// What the next requests report: the presentation error (µs, positive: late) and
    /// [`packet::REPORT_PLAYING`]; the model's lock and error are added by the client.
    pub fn set_report(&mut self, presentation_error_us: Option<i32>, playing: bool) {
        self.report.presentation_error_us = presentation_error_us;
        self.report.flags = if playing { packet::REPORT_PLAYING } else { 0 };
    }

    /// When the next request is due (receiver clock, ns); `None` before the first one, which
    /// is due at once.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_send
    }

    /// Writes the next request into `buf` if one is due at `now` (which becomes its `t1`:
    /// read the clock just before, send just after); returns its length. `buf` must hold
    /// [`packet::MAX_TS_LEN`] bytes.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<usize> {
        if self.next_send.is_some_and(|t| now < t) {
            return None;
        }
        let mut report = self.report;
        report.model_error_ns = self
            .model
            .error_ns()
            .map_or(u32::MAX, |e| e.min(u32::MAX as u64) as u32);
        if self.model.locked() {
            report.flags |= REPORT_LOCKED;
        }
        let request = TimeRequest {
            receiver_id: self.id,
            seq: self.seq,
            t1: now,
            report,
        };
        let mut len = request.emit(buf).ok()?;
        if let Some(k) = &self.key {
            len = packet::seal(k, buf).ok()?;
        }
        let slot = self.seq as usize % OUTSTANDING;
        self.outstanding[slot] = Some((self.seq, now));
        self.seq = self.seq.wrapping_add(1);
        self.counters.requests += 1;
        let settled = self
            .model
            .error_ns()
            .is_some_and(|e| e <= self.params.settled_error_ns);
        let burst_until = *self
            .burst_until
            .get_or_insert(now.saturating_add(self.params.burst_ns));
        // The whole burst, settled or not: the model's error estimate leaves out how far its
        // slope is off, and over the first seconds' span a few µs of excess delay in the
        // quickest passes are a ppm of slope, which the offset carries forward by µs a second
        // (skew between receivers for tens of seconds). A hundred passes a second make each
        // block's best a quick one.
        let base = if now < burst_until {
            self.params.burst_interval_ns
        } else if settled {
            self.params.interval_ns
        } else {
            self.params.fast_interval_ns
        };
        // ±1/8 of the interval.
        let spread = base / 4;
        let jitter = if spread > 0 {
            self.rng.next_u64() % spread
        } else {
            0
        };
        self.next_send = Some(now.saturating_add((base - base / 8 + jitter).max(1)));
        Some(len)
    }

    /// Takes a datagram from the sender that arrived at `t4` (receiver clock, ns).
    pub fn handle_response(&mut self, t4: u64, bytes: &[u8]) -> ResponseOutcome {
        let outcome = self.take(t4, bytes);
        match outcome {
            ResponseOutcome::Taken { .. } | ResponseOutcome::Reordered => {
                self.counters.responses += 1
            }
            ResponseOutcome::Unauthentic => {
                self.counters.refused += 1;
                self.counters.unauthentic += 1;
            }
            _ => self.counters.refused += 1,
        }
        outcome
    }

    fn take(&mut self, t4: u64, bytes: &[u8]) -> ResponseOutcome {
        let r: TimeResponse = match TimePacket::parse(bytes) {
            Ok(TimePacket::Response(r)) => r,
            Ok(TimePacket::Request(_)) => return ResponseOutcome::Invalid(None),
            Err(e) => return ResponseOutcome::Invalid(Some(e)),
        };
        if r.receiver_id != self.id {
            return ResponseOutcome::NotOurs;
        }
        if self
            .key
            .as_ref()
            .is_some_and(|k| !packet::is_authentic(k, bytes))
        {
            return ResponseOutcome::Unauthentic;
        }
        let slot = r.seq as usize % OUTSTANDING;
        if self.outstanding[slot] != Some((r.seq, r.t1)) {
            return ResponseOutcome::Unmatched;
        }
        self.outstanding[slot] = None;
        let (Some(round), Some(turn)) = (t4.checked_sub(r.t1), r.t3.checked_sub(r.t2)) else {
            return ResponseOutcome::BadTimes;
        };
        let Some(delay) = round.checked_sub(turn) else {
            return ResponseOutcome::BadTimes;
        };
        if delay > self.params.max_delay_ns {
            return ResponseOutcome::TooSlow;
        }
        self.last_delay_ns = Some(delay);
        let offset_ns = ((r.t2 as i128 - r.t1 as i128) + (r.t3 as i128 - t4 as i128)) / 2;
        match self.model.observe(r.t1, r.t2, r.t3, t4) {
            Observed::Dropped => ResponseOutcome::Reordered,
            Observed::Restarted => {
                // Ask often again until the new fit settles.
                self.burst_until = Some(t4.saturating_add(self.params.burst_ns));
                if let Some(n) = self.next_send.as_mut() {
                    *n = (*n).min(t4.saturating_add(self.params.burst_interval_ns));
                }
                ResponseOutcome::Taken {
                    offset_ns,
                    delay_ns: delay,
                    restarted: true,
                }
            }
            Observed::Taken => ResponseOutcome::Taken {
                offset_ns,
                delay_ns: delay,
                restarted: false,
            },
        }
    }

    /// The model of the sender's clock.
    pub fn model(&self) -> &ClockModel {
        &self.model
    }

    /// Whether the model is locked (see [`ClockModel::locked`]).
    pub fn locked(&self) -> bool {
        self.model.locked()
    }

    /// The model's error estimate, ns (see [`ClockModel::error_ns`]).
    pub fn error_ns(&self) -> Option<u64> {
        self.model.error_ns()
    }

    /// The receiver-clock time of sender-clock time `t` (a capture time).
    pub fn sender_to_local(&self, t: u64) -> Option<u64> {
        self.model.sender_to_local(t)
    }

    /// The sender-clock time of receiver-clock time `t`.
    pub fn local_to_sender(&self, t: u64) -> Option<u64> {
        self.model.local_to_sender(t)
    }

    /// Times the model restarted on a step of the sender's clock.
    pub fn restarts(&self) -> u64 {
        self.model.restarts()
    }

    /// The round trip of the last exchange taken, less the sender's turnaround, ns.
    pub fn last_delay_ns(&self) -> Option<u64> {
        self.last_delay_ns
    }

    /// The counters.
    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KEY_LEN;
    use crate::sync::packet::MAX_TS_LEN;

    /// Answers `req` as a sender whose clock is the receiver's plus `offset`, `fwd` ns after
    /// it was sent; returns the response and its arrival time.
    fn answer(
        req: &[u8],
        key: Option<&Key>,
        offset: u64,
        fwd: u64,
        bwd: u64,
    ) -> ([u8; MAX_TS_LEN], usize, u64) {
        let Ok(TimePacket::Request(q)) = TimePacket::parse(req) else {
            panic!("not a request");
        };
        let t2 = q.t1 + fwd + offset;
        let resp = TimeResponse {
            receiver_id: q.receiver_id,
            seq: q.seq,
            t1: q.t1,
            t2,
            t3: t2 + 10_000,
        };
        let mut out = [0u8; MAX_TS_LEN];
        let mut n = resp.emit(&mut out).unwrap();
        if let Some(k) = key {
            n = packet::seal(k, &mut out).unwrap();
        }
        (out, n, q.t1 + fwd + 10_000 + bwd)
    }

    #[test]
    fn asks_in_a_burst_then_slowly_once_settled() {
        let mut c = SyncClient::new(9, None, SyncParams::default());
        let mut buf = [0u8; MAX_TS_LEN];
        let mut now = 1_000_000_000u64;
        let mut sent = Vec::new();
        while now < 13_000_000_000 {
            if let Some(n) = c.poll_transmit(now, &mut buf) {
                sent.push(now);
                let (resp, m, t4) = answer(&buf[..n], None, 77_000_000, 300_000, 300_000);
                assert!(matches!(
                    c.handle_response(t4, &resp[..m]),
                    ResponseOutcome::Taken { .. }
                ));
            }
            now = c.poll_timeout().unwrap().max(now + 1);
        }
        assert!(c.locked());
        let first: Vec<u64> = sent.windows(2).take(10).map(|w| w[1] - w[0]).collect();
        assert!(
            first.iter().all(|&d| (8_750_000..=11_250_000).contains(&d)),
            "{first:?}"
        );
        let last = sent[sent.len() - 1] - sent[sent.len() - 2];
        assert!((218_000_000..=282_000_000).contains(&last), "{last}");
        let off = c.local_to_sender(now).unwrap() as i128 - now as i128;
        assert!((off - 77_000_000).abs() < 100, "{off}");
        assert_eq!(c.counters().refused, 0);
    }

    #[test]
    fn an_unsettled_model_is_asked_in_a_burst_then_often_and_again_after_a_step() {
        let params = SyncParams {
            settled_error_ns: 0,
            ..SyncParams::default()
        };
        let mut c = SyncClient::new(9, None, params);
        let mut buf = [0u8; MAX_TS_LEN];
        let mut now = 0u64;
        let mut gaps = Vec::new();
        let mut offset = 5_000_000_000;
        let mut rng = Rng::new(3);
        while now < 30_000_000_000 {
            if now >= 20_000_000_000 {
                offset = 6_000_000_000;
            }
            if let Some(n) = c.poll_transmit(now, &mut buf) {
                let fwd = 300_000 + rng.next_u64() % 1_000_000;
                let bwd = 300_000 + rng.next_u64() % 1_000_000;
                let (resp, m, t4) = answer(&buf[..n], None, offset, fwd, bwd);
                c.handle_response(t4, &resp[..m]);
            }
            let next = c.poll_timeout().unwrap().max(now + 1);
            gaps.push((now, next - now));
            now = next;
        }
        assert_eq!(c.restarts(), 1);
        let mean = |from: u64, to: u64| {
            let v: Vec<u64> = gaps
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|g| g.1)
                .collect();
            v.iter().sum::<u64>() / v.len() as u64
        };
        let ms = 1_000_000;
        assert!((9 * ms..=11 * ms).contains(&mean(0, 10_000 * ms)));
        assert!((23 * ms..=27 * ms).contains(&mean(10_100 * ms, 20_000 * ms)));
        assert!((9 * ms..=11 * ms).contains(&mean(20_100 * ms, 30_000 * ms)));
    }

    #[test]
    fn refuses_what_does_not_answer_its_own_requests() {
        let key = Key::from_bytes([1; KEY_LEN]);
        let mut c = SyncClient::new(5, Some(key.clone()), SyncParams::default());
        let mut buf = [0u8; MAX_TS_LEN];
        let n = c.poll_transmit(1_000, &mut buf).unwrap();
        assert_eq!(n, MAX_TS_LEN, "sealed");
        assert!(packet::is_authentic(&key, &buf[..n]));
        assert_eq!(c.poll_transmit(1_001, &mut buf), None, "not due yet");
        let (resp, m, t4) = answer(&buf[..n], Some(&key), 0, 100_000, 100_000);
        let (plain, pm, _) = answer(&buf[..n], None, 0, 100_000, 100_000);
        assert_eq!(
            c.handle_response(t4, &plain[..pm]),
            ResponseOutcome::Unauthentic
        );
        let mut other = resp;
        other[8..12].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(c.handle_response(t4, &other[..m]), ResponseOutcome::NotOurs);
        assert_eq!(
            c.handle_response(t4, &buf[..n]),
            ResponseOutcome::Invalid(None),
            "its own request"
        );
        assert!(matches!(
            c.handle_response(t4, &resp[..5]),
            ResponseOutcome::Invalid(Some(TsError::Truncated { len: 5 }))
        ));
        assert!(matches!(
            c.handle_response(t4, &resp[..m]),
            ResponseOutcome::Taken {
                restarted: false,
                ..
            }
        ));
        assert_eq!(
            c.handle_response(t4, &resp[..m]),
            ResponseOutcome::Unmatched,
            "a response counts once"
        );
        // Times that cannot be.
        let n = c
            .poll_transmit(c.poll_timeout().unwrap(), &mut buf)
            .unwrap();
        let (resp, m, t4) = answer(&buf[..n], Some(&key), 0, 100_000, 100_000);
        let t1 = u64::from_be_bytes(buf[12..20].try_into().unwrap());
        assert_eq!(
            c.handle_response(t1 - 1, &resp[..m]),
            ResponseOutcome::BadTimes
        );
        assert_eq!(
            c.handle_response(t4, &resp[..m]),
            ResponseOutcome::Unmatched
        );
        let n = c
            .poll_transmit(c.poll_timeout().unwrap(), &mut buf)
            .unwrap();
        let (resp, m, t4) = answer(&buf[..n], Some(&key), 0, 300_000_000, 0);
        assert_eq!(c.handle_response(t4, &resp[..m]), ResponseOutcome::TooSlow);
        let k = c.counters();
        assert_eq!(
            (k.requests, k.responses, k.refused, k.unauthentic),
            (3, 1, 8, 1)
        );
    }

    #[test]
    fn requests_carry_the_report() {
        let mut c = SyncClient::new(5, None, SyncParams::default());
        c.set_report(Some(-12), true);
        let mut buf = [0u8; MAX_TS_LEN];
        let n = c.poll_transmit(0, &mut buf).unwrap();
        let Ok(TimePacket::Request(q)) = TimePacket::parse(&buf[..n]) else {
            panic!("a request");
        };
        assert_eq!((q.receiver_id, q.seq, q.t1), (5, 0, 0));
        assert_eq!(
            q.report,
            Report {
                presentation_error_us: Some(-12),
                model_error_ns: u32::MAX,
                flags: packet::REPORT_PLAYING
            }
        );
    }
}
