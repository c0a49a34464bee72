//! `netaudio devices`: the sound cards, by names that do not move between boots, with what
//! each device accepts and the exact line to paste into the configuration. Replaces
//! `arecord -l` and guessing `hw:2,0`.

use alsa::pcm::{Format, HwParams, PCM};
use alsa::{Direction, card};
use std::fmt::Write as _;

/// Rates worth asking about.
const RATES: [u32; 8] = [
    22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000,
];

/// One PCM device of a card, in one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct PcmDevice {
    /// `hw:CARD=<id>,DEV=<n>`.
    pub name: String,
    /// Capture (true) or playback.
    pub capture: bool,
    /// Rates it accepts (of the usual ones).
    pub rates: Vec<u32>,
    /// Our formats it accepts.
    pub formats: Vec<&'static str>,
    /// Channel range.
    pub channels: (u32, u32),
    /// Why it could not be asked (busy, ...).
    pub error: Option<String>,
}

/// One sound card.
#[derive(Clone, Debug, PartialEq)]
pub struct CardInfo {
    /// Index (moves between boots; for information only).
    pub index: i32,
    /// Stable id (`CODEC`).
    pub id: String,
    /// Long name.
    pub name: String,
    /// USB vendor:product, for USB cards.
    pub usb_id: Option<String>,
    /// Its PCM devices.
    pub pcms: Vec<PcmDevice>,
}

fn probe(name: &str, dir: Direction) -> PcmDevice {
    let mut d = PcmDevice {
        name: name.to_string(),
        capture: dir == Direction::Capture,
        rates: Vec::new(),
        formats: Vec::new(),
        channels: (0, 0),
        error: None,
    };
    let pcm = match PCM::new(name, dir, true) {
        Ok(p) => p,
        Err(e) => {
            d.error = Some(match e.errno() {
                libc::EBUSY => "busy (another program has it open; stop it to probe)".into(),
                n => crate::pcm::errno_text(n),
            });
            return d;
        }
    };
    if let Ok(hw) = HwParams::any(&pcm) {
        d.rates = RATES
            .iter()
            .copied()
            .filter(|r| hw.test_rate(*r).is_ok())
            .collect();
        for (f, n) in [
            (Format::S16LE, "S16_LE"),
            (Format::S243LE, "S24_3LE"),
            (Format::S32LE, "S32_LE"),
        ] {
            if hw.test_format(f).is_ok() {
                d.formats.push(n);
            }
        }
        d.channels = (
            hw.get_channels_min().unwrap_or(0),
            hw.get_channels_max().unwrap_or(0),
        );
    }
    d
}

/// Every card with its PCM devices.
pub fn list() -> Vec<CardInfo> {
    let mut cards = Vec::new();
    for c in card::Iter::new().flatten() {
        let index = c.get_index();
        let Ok(ctl) = alsa::Ctl::new(&format!("hw:{index}"), false) else {
            continue;
        };
        let Ok(info) = ctl.card_info() else { continue };
        let id = info.get_id().unwrap_or("?").to_string();
        let name = info.get_longname().unwrap_or("").to_string();
        let usb_id = std::fs::read_to_string(format!("/proc/asound/card{index}/usbid"))
            .ok()
            .map(|s| s.trim().to_string());
        let mut pcms = Vec::new();
        for dev in alsa::ctl::DeviceIter::new(&ctl) {
            let pcm_name = format!("hw:CARD={id},DEV={dev}");
            for dir in [Direction::Capture, Direction::Playback] {
                let p = probe(&pcm_name, dir);
                // A device that does not exist in a direction fails with ENOENT: leave it out.
                if p.error.as_deref() != Some(&crate::pcm::errno_text(libc::ENOENT)) {
                    pcms.push(p);
                }
            }
        }
        cards.push(CardInfo {
            index,
            id,
            name,
            usb_id,
            pcms,
        });
    }
    cards
}

/// The report for people.
pub fn report(cards: &[CardInfo]) -> String {
    let mut s = String::new();
    if cards.is_empty() {
        s.push_str(
            "No sound cards found. Plug in the USB audio interface (then check `dmesg | tail` \
             and that snd_usb_audio is loaded: `lsmod | grep snd`). Without a card, netaudio \
             runs on virtual devices: device = \"virtual\".\n",
        );
        s.push_str(OUTPUTS);
        return s;
    }
    for c in cards {
        let _ = writeln!(
            s,
            "card {} \"{}\": {}{}",
            c.index,
            c.id,
            c.name,
            c.usb_id
                .as_ref()
                .map(|u| format!(" [USB {u}]"))
                .unwrap_or_default()
        );
        for p in &c.pcms {
            let dir = if p.capture { "capture " } else { "playback" };
            match &p.error {
                Some(e) => {
                    let _ = writeln!(s, "  {dir} {}: {e}", p.name);
                }
                None => {
                    let rates: Vec<String> = p.rates.iter().map(|r| r.to_string()).collect();
                    let _ = writeln!(
                        s,
                        "  {dir} {}: rates {}; formats {}; channels {}-{}",
                        p.name,
                        rates.join(", "),
                        p.formats.join(", "),
                        p.channels.0,
                        p.channels.1
                    );
                    let _ = writeln!(
                        s,
                        "    paste into {}: device = \"{}\"",
                        if p.capture {
                            "sender.toml [audio]"
                        } else {
                            "receiver.toml [audio]"
                        },
                        p.name
                    );
                }
            }
        }
    }
    s.push_str(
        "Names like hw:CARD=CODEC,DEV=0 stay the same across boots; the card number does not.\n",
    );
    s.push_str(OUTPUTS);
    s
}

/// The receiver's outputs that are not sound cards, for the report.
const OUTPUTS: &str = "The receiver also writes to outputs that are not sound cards: \
     device = \"snapcast:tcp://HOST:4953\" (a snapserver TCP source in mode=server; \
     ?control=PORT when its JSON-RPC port is not 1705), \"pipe:/tmp/snapfifo\" (a FIFO) or \
     \"stdout\".\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cards_says_so_with_a_hint() {
        let r = report(&[]);
        assert!(r.contains("No sound cards found") && r.contains("virtual"));
        assert!(r.contains("snapcast:tcp://") && r.contains("pipe:") && r.contains("stdout"));
    }

    #[test]
    fn a_card_gets_the_line_to_paste() {
        let c = CardInfo {
            index: 2,
            id: "CODEC".into(),
            name: "Burr-Brown from TI USB Audio CODEC".into(),
            usb_id: Some("08bb:2902".into()),
            pcms: vec![probe_fixture()],
        };
        let r = report(&[c]);
        assert!(r.contains("card 2 \"CODEC\""), "{r}");
        assert!(r.contains("[USB 08bb:2902]"), "{r}");
        assert!(r.contains("device = \"hw:CARD=CODEC,DEV=0\""), "{r}");
    }

    fn probe_fixture() -> PcmDevice {
        PcmDevice {
            name: "hw:CARD=CODEC,DEV=0".into(),
            capture: true,
            rates: vec![44_100, 48_000],
            formats: vec!["S16_LE"],
            channels: (2, 2),
            error: None,
        }
    }

    #[test]
    fn listing_this_machine_does_not_fail() {
        // This machine may have no card at all; the listing must still work.
        let cards = list();
        let r = report(&cards);
        assert!(!r.is_empty());
    }
}
