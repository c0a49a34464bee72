//! The pre-shared key file (`[network] key_file`, `--key-file`).
//!
//! Format: 64 hex characters (32 bytes), optionally followed by a newline; nothing else.
//! Make one with `netaudio keygen > /etc/netaudio/key` (or
//! `head -c32 /dev/urandom | xxd -p -c64 > /etc/netaudio/key`), then
//! `chmod 600 /etc/netaudio/key` and `chown netaudio: /etc/netaudio/key` under systemd, and copy
//! the same file to the other machine. A file that its group or others may read is refused:
//! the key is the only thing that keeps other hosts on the LAN from playing into the receiver.

use engine::auth::{KEY_LEN, Key};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Reads and checks a key file: private to its owner, 64 hex characters.
pub fn load(path: &Path) -> Result<Key, String> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read key file {p}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "key file {p} is readable by others (mode {mode:03o}): run `chmod 600 {p}`"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {p}: {e}"))?;
    Key::from_hex(&text).map_err(|e| format!("key file {p}: {e}"))
}

/// A new random key from the kernel's generator.
pub fn generate() -> Result<Key, String> {
    let mut b = [0u8; KEY_LEN];
    // SAFETY: getrandom writes at most KEY_LEN bytes into a live buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), KEY_LEN, 0) };
    if n != KEY_LEN as isize {
        return Err(format!(
            "cannot get random bytes for a key: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Key::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("netaudio-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_private_key_file_loads_and_others_are_refused_with_the_fix() {
        let k = generate().unwrap();
        let good = write("good", &(k.to_hex() + "\n"), 0o600);
        assert_eq!(load(&good).unwrap(), k);
        let open = write("open", &k.to_hex(), 0o644);
        let e = load(&open).unwrap_err();
        assert!(
            e.contains(&open.display().to_string()) && e.contains("chmod 600"),
            "{e}"
        );
        let short = write("short", "abcd", 0o600);
        let e = load(&short).unwrap_err();
        assert!(e.contains("64 hex") && e.contains("netaudio keygen"), "{e}");
        let e = load(Path::new("/nonexistent/key")).unwrap_err();
        assert!(e.contains("/nonexistent/key"), "{e}");
        assert_ne!(generate().unwrap(), k);
    }
}
