//! What a rig run needs before it starts: the tools installed, the netaudio binary, the ALSA
//! config, and the directory for logs and counters.

use super::proc;
use super::{ASOUNDRC, RigArgs, TOOLS};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The rig's tools must be installed: one line naming what is missing otherwise.
pub(super) fn check_tools() -> Result<(), String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|t| proc::which(t).is_none())
        .map(|t| t.to_string())
        .collect();
    if !jack_plugin_installed() {
        missing.push("the ALSA jack plugin (libasound2-plugins)".into());
    }
    if !Path::new("/usr/share/alsa/alsa.conf").exists() {
        missing.push("/usr/share/alsa/alsa.conf".into());
    }
    if missing.is_empty() && !setpriv_pdeathsig() {
        missing.push("setpriv with --pdeathsig (util-linux 2.33 or later)".into());
    }
    if missing.is_empty() && !openbsd_netcat() {
        missing.push("OpenBSD netcat (nc is another netcat)".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the rig is not installed: missing {}; run ci/rig-setup",
            missing.join(", ")
        ))
    }
}

fn jack_plugin_installed() -> bool {
    const SO: &str = "alsa-lib/libasound_module_pcm_jack.so";
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/lib64")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    dirs.iter().any(|d| d.join(SO).exists())
}

/// Every child starts through `setpriv --pdeathsig` ([`proc::RigEnv::command`]).
fn setpriv_pdeathsig() -> bool {
    let mut cmd = std::process::Command::new(proc::LAUNCHER);
    cmd.arg("--help").stdin(Stdio::null());
    cmd.output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--pdeathsig"))
}

/// The baseline's flags (`-q 0`, `-l -p`) are those of netcat-openbsd.
fn openbsd_netcat() -> bool {
    let mut cmd = std::process::Command::new("nc");
    cmd.arg("-h").stdin(Stdio::null());
    let Ok(out) = cmd.output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.contains("OpenBSD")
}

pub(super) fn find_netaudio(args: &RigArgs) -> Result<PathBuf, String> {
    let path = match &args.netaudio {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find hil-tests' own path: {e}"))?
            .with_file_name("netaudio"),
    };
    if proc::is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "no netaudio binary at {}: build it (cargo build --release -p netaudio), pass \
             --netaudio PATH, or measure the old pipeline alone with --baseline seed --baseline-only",
            path.display()
        ))
    }
}

/// The repo's asoundrc if it is where hil-tests was built from, else the built-in copy.
pub(super) fn alsa_config_path(dir: &Path) -> Result<String, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("rig/asoundrc");
    let path = if repo.is_file() {
        repo
    } else {
        let p = dir.join("asoundrc");
        std::fs::write(&p, ASOUNDRC).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        p
    };
    Ok(format!("/usr/share/alsa/alsa.conf:{}", path.display()))
}

/// Where logs and counters go: `--keep-logs DIR`, or a temporary directory removed at the end.
pub(super) struct RunDir {
    pub(super) path: PathBuf,
    remove: bool,
}

impl RunDir {
    pub(super) fn new(keep: Option<&Path>) -> Result<RunDir, String> {
        let (path, remove) = match keep {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("hil-rig-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(RunDir { path, remove })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
