//! Talking to a deployed host: over SSH trusting only its recorded key, or,
//! for the Mac the deploy runs on (a darwin host without an address), on
//! this machine through sudo. The host agent (agent.sh) does the host's
//! side; see its header for the order of a deploy.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use lab_cli::tool::{Cmd, Output, ToolError};

use crate::ssh::{quote, Pinned};

/// The agent, sent to the host with every call.
const AGENT: &str = include_str!("agent.sh");

/// How long one check through `ssh -W` may take, connection included.
const FORWARD_BOUND: Duration = Duration::from_secs(10);

/// Where a deploy keeps its copy of the agent on the host (the rollback
/// timer runs it; /run is gone at reboot, as is the timer).
const AGENT_DIR: &str = "/run/labprov";

pub enum Remote {
    Ssh(Pinned),
    /// This machine, as root through sudo when not root already.
    Local,
}

/// What a host says about itself (`agent.sh probe`).
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub kind: String,
    /// The running generation (`/run/current-system`).
    pub current: Option<String>,
    /// The boot default (`/nix/var/nix/profiles/system`) and its link name.
    pub profile: Option<String>,
    pub generation: Option<u64>,
    /// The flake commit the running generation was built from.
    pub revision: Option<String>,
    pub last_deploy: BTreeMap<String, String>,
    /// Earlier deploys still waiting for their confirmation (their timer
    /// will put the host back).
    pub pending: Vec<String>,
    /// The profile generation below the boot default, and its path: where a
    /// rollback goes.
    pub previous: Option<(u64, String)>,
}

impl Remote {
    fn command(&self, remote: &str) -> Cmd {
        match self {
            Remote::Ssh(p) => p.command(remote),
            Remote::Local if nix::unistd::geteuid().is_root() => {
                Cmd::new("sh").args(["-c", remote])
            }
            Remote::Local => Cmd::new("sudo").args(["sh", "-c", remote]),
        }
    }

    /// A read-only agent action, the agent on stdin.
    pub fn ask(&self, action: &str, args: &[&str]) -> Result<Output, ToolError> {
        let line = agent_line("sh -s --", action, args);
        self.command(&line).stdin(AGENT.as_bytes()).probe()
    }

    /// An action of deploy `id`, run from the agent's copy on the host,
    /// written (atomically) with each call: the rollback timer runs that
    /// file. Its stderr streams under `label`.
    pub fn act(
        &self,
        id: &str,
        action: &str,
        args: &[&str],
        label: &str,
    ) -> Result<Output, ToolError> {
        let file = format!("{AGENT_DIR}/agent-{id}.sh");
        let run = agent_line(&format!("exec sh {file}"), action, args);
        let cmd = self
            .command(&format!(
                "umask 077 && mkdir -p {AGENT_DIR} && cat > {file}.tmp && mv {file}.tmp {file} && {run}"
            ))
            .stdin(AGENT.as_bytes());
        // A failing action is an answer (a switch's exit 4), not an error.
        cmd.label(label).stream_probe()
    }

    pub fn probe(&self) -> Result<Probe, String> {
        let out = self.ask("probe", &[]).map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(unreachable(&out));
        }
        Ok(parse_probe(&out.text()))
    }

    /// A shell command on the host, its output streamed under `label`; a
    /// failing command is an answer, not an error.
    pub fn stream(&self, remote: &str, label: &str) -> Result<Output, ToolError> {
        self.command(remote).label(label).stream_probe()
    }

    /// SSH answers with the recorded key and runs a command.
    pub fn reachable(&self) -> Result<(), String> {
        match self {
            Remote::Local => Ok(()),
            Remote::Ssh(p) => match p.run("true", None) {
                Ok(o) if o.success() => Ok(()),
                Ok(o) => Err(unreachable(&o)),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// `systemctl is-active` of each unit, in the order given.
    pub fn unit_states(&self, units: &[&str]) -> Result<Vec<(String, String)>, String> {
        let out = self.ask("units", units).map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(unreachable(&out));
        }
        let text = out.text();
        let states: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        Ok(units
            .iter()
            .map(|u| (u.to_string(), states.get(u).unwrap_or(&"unknown").to_string()))
            .collect())
    }

    /// Talks to HOST:PORT as the host sees it: through `ssh -W` (TCP
    /// forwarding over the pinned connection), or directly when local.
    pub fn forward<T>(
        &self,
        host: &str,
        port: u16,
        talk: impl FnOnce(&mut dyn ReadWrite) -> Result<T, String>,
    ) -> Result<T, String> {
        match self {
            Remote::Local => talk(&mut super::health::connect(host, port)?),
            Remote::Ssh(p) => {
                let mut child = Cmd::new("ssh")
                    .args(p.options())
                    .arg("-W")
                    .arg(format!("{host}:{port}"))
                    .arg(p.destination())
                    .spawn_piped()
                    .map_err(|e| e.to_string())?;
                let mut pipe = SshPipe {
                    input: child.stdin.take().expect("piped"),
                    output: child.stdout.take().expect("piped"),
                };
                // A check that hangs must not hang the deploy: past the
                // bound the forward is ended, which ends the read with an
                // error. The watchdog only ever signals the child while it
                // is ours (not yet waited for).
                let (done, finished) = std::sync::mpsc::channel::<()>();
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let watchdog = std::thread::spawn(move || {
                    if finished.recv_timeout(FORWARD_BOUND) == Err(RecvTimeoutError::Timeout) {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    }
                });
                let result = talk(&mut pipe);
                drop(pipe);
                let _ = done.send(());
                let _ = watchdog.join();
                let _ = child.kill();
                let out = child.wait_with_output();
                result.map_err(|e| {
                    let why = out
                        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_default();
                    if why.is_empty() {
                        e
                    } else {
                        format!("{e} ({why})")
                    }
                })
            }
        }
    }

    /// The pinned SSH connection (for nix copy), or None when local.
    pub fn pinned(&self) -> Option<&Pinned> {
        match self {
            Remote::Ssh(p) => Some(p),
            Remote::Local => None,
        }
    }
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

struct SshPipe {
    input: std::process::ChildStdin,
    output: std::process::ChildStdout,
}

impl Read for SshPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.output.read(buf)
    }
}

impl Write for SshPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.input.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.input.flush()
    }
}

fn agent_line(run: &str, action: &str, args: &[&str]) -> String {
    let mut line = format!("{run} {}", quote(action));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line
}

/// ssh's own failure (exit 255) or the agent's, in one line.
fn unreachable(out: &Output) -> String {
    let err = out.stderr.trim();
    if err.is_empty() {
        format!("the host agent failed ({})", lab_cli::tool::describe_status(out.status))
    } else {
        err.lines().last().unwrap_or(err).to_string()
    }
}

fn parse_probe(text: &str) -> Probe {
    let mut p = Probe::default();
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "kind" => p.kind = value.to_string(),
            "current" => p.current = some(value),
            "profile" => p.profile = some(value),
            "profile_link" => {
                p.generation = Path::new(value)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("system-"))
                    .and_then(|n| n.strip_suffix("-link"))
                    .and_then(|n| n.parse().ok())
            }
            "revision" => p.revision = some(value),
            "pending" => p.pending.push(value.to_string()),
            "previous" => {
                p.previous = value
                    .split_once(' ')
                    .and_then(|(n, path)| Some((n.parse().ok()?, path.to_string())))
            }
            k if k.starts_with("last_") => {
                p.last_deploy.insert(k["last_".len()..].to_string(), value.to_string());
            }
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_read_from_key_value_lines() {
        let p = parse_probe(
            "kind=nixos\ncurrent=/nix/store/a-sys\nprofile=/nix/store/a-sys\nprofile_link=system-42-link\n\
             revision=\npending=17-3\nprevious=41 /nix/store/z-sys\nlast_time=1700000000\nlast_result=confirmed\nnoise\n",
        );
        assert_eq!(p.kind, "nixos");
        assert_eq!(p.current.as_deref(), Some("/nix/store/a-sys"));
        assert_eq!(p.generation, Some(42));
        assert_eq!(p.revision, None);
        assert_eq!(p.pending, ["17-3"]);
        assert_eq!(p.previous, Some((41, "/nix/store/z-sys".to_string())));
        assert_eq!(p.last_deploy.get("result").map(String::as_str), Some("confirmed"));
    }

    #[test]
    fn agent_lines_quote_every_word() {
        assert_eq!(
            agent_line("sh -s --", "restore", &["1-2", "/nix/store/x", "check `bind` failed"]),
            "sh -s -- restore 1-2 /nix/store/x 'check `bind` failed'"
        );
    }

    #[test]
    fn the_agent_is_valid_posix_shell() {
        let out = std::process::Command::new("sh").args(["-n", "-c", AGENT]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
