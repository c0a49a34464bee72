//! How `hil-tests pi` reaches a host: commands over ssh (or `sh` here, for local hosts),
//! daemons started in the background there, checked and stopped by pid.

use std::process::{Command, Stdio};

/// How to reach a host.
#[derive(Clone, Debug)]
pub struct Host {
    /// `user@host` (or anything for local).
    pub spec: String,
    /// The ssh command (None: run locally).
    pub ssh: Option<Vec<String>>,
}

impl Host {
    pub(super) fn command(&self, script: &str) -> Command {
        match &self.ssh {
            Some(ssh) => {
                let mut c = Command::new(&ssh[0]);
                c.args(&ssh[1..]).arg(&self.spec).arg(script);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
        }
    }

    /// Runs `script`, returns its stdout; errors name the host and show stderr.
    pub fn run(&self, script: &str) -> Result<String, String> {
        let out = self
            .command(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: cannot run {script:?}: {e}", self.spec))?;
        if !out.status.success() {
            return Err(format!(
                "{}: `{script}` failed ({}): {}",
                self.spec,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `script` in the background on the host; returns its pid there.
    pub fn start(&self, script: &str, log: &str) -> Result<u32, String> {
        let out = self.run(&format!(
            "nohup {script} > {log} 2>&1 < /dev/null & echo $!"
        ))?;
        out.trim()
            .parse()
            .map_err(|_| format!("{}: no pid from {script:?}: {out:?}", self.spec))
    }

    /// `Ok` while `pid` runs on the host; else an error naming `what` with the tail of `log`.
    pub fn check_running(&self, pid: u32, what: &str, log: &str) -> Result<(), String> {
        if self.run(&format!("kill -0 {pid}")).is_ok() {
            return Ok(());
        }
        let tail = self.run(&format!("tail -n 15 {log}")).unwrap_or_default();
        Err(format!(
            "{what} on {} exited at start; its log ({log}) ends:\n{tail}",
            self.spec
        ))
    }

    /// Sends SIGTERM to `pid` (background jobs of a non-interactive shell ignore SIGINT) and
    /// waits (at most 10 s) for it to leave.
    pub fn stop(&self, pid: u32) -> Result<(), String> {
        self.run(&format!(
            "kill -TERM {pid} 2>/dev/null; for i in $(seq 100); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL {pid}; exit 1"
        ))
        .map(|_| ())
        .map_err(|e| format!("{e} (it did not stop on SIGTERM within 10 s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_run_commands_and_report_failures() {
        let h = Host {
            spec: "local".into(),
            ssh: None,
        };
        assert_eq!(h.run("echo hi").unwrap(), "hi\n");
        let e = h.run("exit 3").unwrap_err();
        assert!(e.contains("exit 3"), "{e}");
        let pid = h.start("sleep 30", "/dev/null").unwrap();
        h.stop(pid).unwrap();
    }
}
