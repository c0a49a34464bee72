//! Packet authentication with a pre-shared key.
//!
//! With a key, every packet carries a 16-byte extension and a 16-byte tag:
//!
//! ```text
//!  header (32) | extension: session (u64 BE) | sent_at (u64 BE) | payload | tag (16)
//! ```
//!
//! * The tag is keyed BLAKE3 over everything before it (header, extension, payload), truncated
//!   to [`TAG_LEN`] bytes. It is compared in constant time.
//! * `session` is the sender's wall-clock time (`CLOCK_REALTIME`, ns since the Unix epoch) when
//!   its stream started: a later start has a larger session, so a receiver never goes back
//!   to a stream older than the one it plays, whatever the stream id says.
//! * `sent_at` is the sender's wall-clock time when it made the packet. A receiver takes up a
//!   *new* stream only when its packets are fresh against its own clock (within
//!   [`DEFAULT_MAX_SKEW_NS`]), so a recording replayed later cannot start playing. This needs
//!   both machines' clocks roughly synchronised (NTP, e.g. systemd-timesyncd); packets of the
//!   stream being played are checked against a sequence-number window instead
//!   ([`ReplayWindow`]), so clock steps during a stream do no harm.
//!
//! Realtime contract: nothing here allocates (the hasher lives on the stack), blocks or makes a
//! syscall; [`Key::from_hex`] and [`Key::to_hex`] are for start-up only.

use core::fmt;
use subtle::ConstantTimeEq;

/// Bytes of the tag a packet carries.
pub const TAG_LEN: usize = 16;
/// Bytes of the authentication extension (session, sent_at).
pub const EXT_LEN: usize = 16;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// How far a new stream's packets may be from the receiver's wall clock, ns (10 s).
pub const DEFAULT_MAX_SKEW_NS: u64 = 10_000_000_000;
/// Sequence numbers behind the newest one that are still accepted (once each).
pub const REPLAY_WINDOW: u32 = 64;

/// A pre-shared key: 32 bytes, written as 64 hex characters.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

/// Keys compare in constant time too: a comparison that exits early tells how much matched.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.write_str("Key(..)")
    }
}

/// Why a text is not a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not 64 hex characters (length given, without surrounding white space).
    BadLength(usize),
    /// A character that is not a hex digit, at this position.
    NotHex(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength(n) => write!(
                f,
                "a key is 64 hex characters, this one has {n}; make one with `netaudio keygen`"
            ),
            Self::NotHex(i) => write!(
                f,
                "character {} of the key is not a hex digit; make one with `netaudio keygen`",
                i + 1
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl Key {
    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Parses 64 hex characters (either case), ignoring white space around them.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let t = text.trim().as_bytes();
        if t.len() != 2 * KEY_LEN {
            return Err(KeyError::BadLength(t.len()));
        }
        let digit = |i: usize| -> Result<u8, KeyError> {
            match t[i] {
                c @ b'0'..=b'9' => Ok(c - b'0'),
                c @ b'a'..=b'f' => Ok(c - b'a' + 10),
                c @ b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(KeyError::NotHex(i)),
            }
        };
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = digit(2 * i)? << 4 | digit(2 * i + 1)?;
        }
        Ok(Key(k))
    }

    /// The key as 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The tag of a packet whose tagged bytes are `parts`, in order.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(p);
        }
        let mut tag = [0u8; TAG_LEN];
        h.finalize_xof().fill(&mut tag);
        tag
    }

    /// Whether `tag` is the tag of `authenticated`, compared in constant time.
    pub fn verify(&self, authenticated: &[u8], tag: &[u8]) -> bool {
        let want = self.tag(&[authenticated]);
        // `subtle` compares without an early exit (a slice of another length is unequal at
        // once: the length is no secret); it is no_std and allocation-free, as the receiver's
        // realtime thread needs.
        bool::from(want[..].ct_eq(tag))
    }
}

/// The authentication extension of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthExt {
    /// Wall-clock time the sender's stream started, ns since the Unix epoch.
    pub session: u64,
    /// Wall-clock time the packet was made, ns since the Unix epoch.
    pub sent_at: u64,
}

impl AuthExt {
    /// The extension as bytes.
    pub fn to_bytes(&self) -> [u8; EXT_LEN] {
        let mut b = [0u8; EXT_LEN];
        b[..8].copy_from_slice(&self.session.to_be_bytes());
        b[8..].copy_from_slice(&self.sent_at.to_be_bytes());
        b
    }

    /// Reads an extension; `None` unless `ext` is exactly [`EXT_LEN`] bytes.
    pub fn parse(ext: &[u8]) -> Option<AuthExt> {
        let b: &[u8; EXT_LEN] = ext.try_into().ok()?;
        let mut s = [0u8; 8];
        let mut t = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        t.copy_from_slice(&b[8..]);
        Some(AuthExt {
            session: u64::from_be_bytes(s),
            sent_at: u64::from_be_bytes(t),
        })
    }
}

/// Which sequence numbers of one stream were already taken: the newest and a bitmap of the
/// [`REPLAY_WINDOW`] before it (as in IPsec). A sequence number seen before, or older than the
/// window, is a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: u32,
    /// Bit `i` set: `newest - i` was taken.
    seen: u64,
}

impl ReplayWindow {
    /// A window whose first packet is `seq`.
    pub fn starting_at(seq: u32) -> ReplayWindow {
        ReplayWindow {
            newest: seq,
            seen: 1,
        }
    }

    /// Takes `seq` if it is new and inside the window; `false` for a replay.
    pub fn take(&mut self, seq: u32) -> bool {
        let ahead = seq.wrapping_sub(self.newest);
        if ahead != 0 && ahead < u32::MAX / 2 {
            // Newer: slide the window.
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.newest = seq;
            return true;
        }
        let behind = self.newest.wrapping_sub(seq);
        if behind >= REPLAY_WINDOW {
            return false;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

/// Which 64-bit nonces (of the receiver's NACKs) a sender already took: the newest and a bitmap
/// of the [`REPLAY_WINDOW`] before it. The first nonce is taken whatever it is; after that a
/// nonce seen before, or older than the window, is a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonceWindow {
    newest: Option<u64>,
    /// Bit `i` set: `newest - i` was taken.
    seen: u64,
}

impl NonceWindow {
    /// Forgets every nonce (a new stream).
    pub fn reset(&mut self) {
        *self = NonceWindow::default();
    }

    /// Takes `nonce` if it is new and inside the window; `false` for a replay.
    pub fn take(&mut self, nonce: u64) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(nonce);
            self.seen = 1;
            return true;
        };
        if nonce > newest {
            let ahead = nonce - newest;
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.newest = Some(nonce);
            return true;
        }
        let behind = newest - nonce;
        if behind >= REPLAY_WINDOW as u64 {
            return false;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn keys_parse_from_hex_with_clear_errors() {
        let k = Key::from_hex(&format!("  {}\n", HEX.to_uppercase())).unwrap();
        assert_eq!(k.to_hex(), HEX);
        assert_eq!(format!("{k:?}"), "Key(..)");
        assert_eq!(Key::from_hex("abc"), Err(KeyError::BadLength(3)));
        let bad = format!("{}x", &HEX[..63]);
        assert_eq!(Key::from_hex(&bad), Err(KeyError::NotHex(63)));
        assert!(KeyError::NotHex(63).to_string().contains("character 64"));
    }

    #[test]
    fn tags_are_keyed_blake3_truncated() {
        let k = Key::from_hex(HEX).unwrap();
        let full = blake3::keyed_hash(&k.0, b"header+payload");
        assert_eq!(k.tag(&[b"header", b"+payload"]), full.as_bytes()[..TAG_LEN]);
        let tag = k.tag(&[b"header+payload"]);
        assert!(k.verify(b"header+payload", &tag));
        assert!(!k.verify(b"header+payloaD", &tag));
        assert!(!k.verify(b"header+payload", &tag[..15]));
        let other = Key::from_bytes([7; KEY_LEN]);
        assert!(!other.verify(b"header+payload", &tag));
    }

    #[test]
    fn extension_round_trips() {
        let e = AuthExt {
            session: 1,
            sent_at: u64::MAX,
        };
        assert_eq!(AuthExt::parse(&e.to_bytes()), Some(e));
        assert_eq!(AuthExt::parse(&[0; 15]), None);
    }

    #[test]
    fn the_window_takes_each_sequence_number_once() {
        let mut w = ReplayWindow::starting_at(u32::MAX - 2);
        assert!(!w.take(u32::MAX - 2), "the first one again");
        assert!(w.take(u32::MAX));
        assert!(w.take(1), "across the wrap");
        assert!(w.take(u32::MAX - 1), "late but inside the window");
        assert!(!w.take(u32::MAX - 1));
        assert!(w.take(0));
        assert!(w.take(100));
        assert!(!w.take(100 - REPLAY_WINDOW), "just outside the window");
        assert!(w.take(101 - REPLAY_WINDOW), "just inside");
        assert!(!w.take(1), "far behind");
        assert!(w.take(100 + 1000), "a jump ahead clears the window");
        assert!(!w.take(100));
    }

    #[test]
    fn the_nonce_window_takes_each_nonce_once() {
        let mut w = NonceWindow::default();
        assert!(w.take(1_000_000), "the first is taken whatever it is");
        assert!(!w.take(1_000_000));
        assert!(w.take(1_000_002));
        assert!(w.take(1_000_001), "late but inside the window");
        assert!(!w.take(1_000_001));
        assert!(!w.take(1_000_002 - REPLAY_WINDOW as u64), "just outside");
        assert!(w.take(1_000_003 - REPLAY_WINDOW as u64), "just inside");
        assert!(w.take(u64::MAX), "a jump ahead clears the window");
        assert!(!w.take(1_000_002) && !w.take(u64::MAX));
        w.reset();
        assert!(w.take(5), "a new stream starts afresh");
    }
}
