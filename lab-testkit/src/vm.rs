//! A QEMU virtual machine for tests that need a kernel of their own (device
//! mapper, md, a reboot): x86_64, q35, OVMF (UEFI), TCG (KVM does not work
//! for Linux guests on the CI machines), user networking with the guest's
//! port 22 forwarded to a loopback port, the serial console captured to a
//! log, and a monitor socket for hard resets and power-off.
//!
//! Boot order: the disks first (each `bootindex` in order), then the CD, so
//! a blank disk falls through to the installer ISO and a disk that was
//! installed boots by itself, as on a real machine: a guest reboot or a
//! [`Vm::hard_reset`] resets the machine and the firmware chooses again. The
//! UEFI variable store is a per-VM copy kept for the VM's life, across resets
//! and restarts.
//!
//! Every wait is bounded; a failed wait returns the serial log's tail in its
//! error, so a test that fails says what the guest printed.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// OVMF as Debian's `ovmf` package installs it (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// True when QEMU for x86_64 and OVMF are installed; otherwise
/// [`crate::skip`]s naming what is missing and returns false.
pub fn require_vm(test: &str) -> bool {
    if !crate::require_tools(test, &["qemu-system-x86_64"]) {
        return false;
    }
    for file in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(file).is_file() {
            return !crate::skip(test, &format!("{file} is missing (package ovmf)"));
        }
    }
    true
}

/// The stand-in base installer ISO for `arch` that scripts/setup made
/// (tests/standin-iso/make.sh into target/standin-iso, or
/// $LABIMG_STANDIN_ISO), or None after a [`crate::skip`] saying so.
pub fn standin_iso(test: &str, arch: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LABIMG_STANDIN_ISO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/standin-iso"));
    let iso = dir.join(format!("installer-{arch}.standin.iso"));
    if iso.is_file() {
        return Some(iso);
    }
    crate::skip(
        test,
        &format!("{} is missing: run scripts/setup (tests/standin-iso/make.sh)", iso.display()),
    );
    None
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Names the VM's files in `dir`: NAME.serial.log, NAME.monitor,
    /// NAME.vars.fd.
    pub name: String,
    pub dir: PathBuf,
    /// The installer ISO, attached as a CD after the disks in boot order.
    pub iso: Option<PathBuf>,
    /// Raw disk images (sparse files), attached as virtio disks
    /// (/dev/vda, /dev/vdb, ... in the guest).
    pub disks: Vec<PathBuf>,
    pub memory_mib: u32,
}

impl VmOptions {
    pub fn new(name: &str, dir: &Path) -> VmOptions {
        VmOptions {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            iso: None,
            disks: Vec::new(),
            memory_mib: 1024,
        }
    }
}

/// A running VM; killed when dropped.
pub struct Vm {
    opts: VmOptions,
    child: Option<Child>,
    /// Where [`Vm::wait_for_serial`] starts looking in the serial log.
    serial_from: usize,
    /// The loopback port forwarded to the guest's port 22.
    pub ssh_port: u16,
}

/// A blank sparse disk image of `bytes`.
pub fn blank_disk(path: &Path, bytes: u64) -> io::Result<()> {
    let f = fs::File::create(path)?;
    f.set_len(bytes)
}

/// A loopback port nobody listens on (bound, then released for QEMU or a
/// test's sshd: the one place the tests pick ports).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("a bound socket has an address").port()
}

impl Vm {
    /// Starts QEMU (it keeps running in the background).
    pub fn start(opts: VmOptions) -> io::Result<Vm> {
        fs::create_dir_all(&opts.dir)?;
        let vars = opts.dir.join(format!("{}.vars.fd", opts.name));
        if !vars.exists() {
            fs::copy(OVMF_VARS, &vars)?;
        }
        let mut vm = Vm { opts, child: None, serial_from: 0, ssh_port: free_port() };
        vm.launch()?;
        Ok(vm)
    }

    fn launch(&mut self) -> io::Result<()> {
        let o = &self.opts;
        let log = self.serial_log();
        let monitor = self.monitor_path();
        let _ = fs::remove_file(&monitor);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "q35", "-accel", "tcg", "-m", &o.memory_mib.to_string()])
            .args(["-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .arg("-nic")
            .arg(format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{}-:22", self.ssh_port))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                o.dir.join(format!("{}.vars.fd", o.name)).display()
            ));
        let mut index = 1;
        for (i, disk) in o.disks.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!("if=none,id=disk{i},format=raw,file={}", disk.display()))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{i},bootindex={index}"));
            index += 1;
        }
        if let Some(iso) = &o.iso {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    iso.display()
                ))
                .arg("-device")
                .arg(format!("ide-cd,drive=cd,bootindex={index}"));
        }
        let stderr = fs::File::create(o.dir.join(format!("{}.qemu.log", o.name)))?;
        fs::write(&log, b"")?;
        self.serial_from = 0;
        self.child =
            Some(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().map_err(
                |e| io::Error::new(e.kind(), format!("cannot start qemu-system-x86_64: {e}")),
            )?);
        Ok(())
    }

    pub fn serial_log(&self) -> PathBuf {
        self.opts.dir.join(format!("{}.serial.log", self.opts.name))
    }

    fn monitor_path(&self) -> PathBuf {
        self.opts.dir.join(format!("{}.monitor", self.opts.name))
    }

    /// Everything the guest printed on its serial console so far (and
    /// QEMU's own messages, appended).
    pub fn serial(&self) -> String {
        let mut text = String::from_utf8_lossy(&fs::read(self.serial_log()).unwrap_or_default())
            .replace('\r', "");
        let qemu = fs::read_to_string(self.opts.dir.join(format!("{}.qemu.log", self.opts.name)))
            .unwrap_or_default();
        if !qemu.trim().is_empty() {
            text.push_str("\n[qemu] ");
            text.push_str(&qemu);
        }
        text
    }

    /// The last `lines` lines of [`Vm::serial`], for error messages.
    pub fn serial_tail(&self, lines: usize) -> String {
        let text = self.serial();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// From now on [`Vm::wait_for_serial`] looks only at what the guest
    /// prints after this call (for example the boot after a reset).
    pub fn forget_serial(&mut self) {
        self.serial_from = fs::metadata(self.serial_log()).map(|m| m.len() as usize).unwrap_or(0);
    }

    /// Waits until the serial console shows `needle` (after the last
    /// [`Vm::forget_serial`]), QEMU exits, or `timeout` passes; an error
    /// carries the serial log's tail.
    pub fn wait_for_serial(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let log = fs::read(self.serial_log()).unwrap_or_default();
            let fresh = log.get(self.serial_from..).unwrap_or_default();
            if String::from_utf8_lossy(fresh).contains(needle) {
                return Ok(());
            }
            if !self.running() {
                return Err(format!(
                    "QEMU exited before the console showed `{needle}`; serial log:\n{}",
                    self.serial_tail(60)
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the console did not show `{needle}` within {}s; serial log:\n{}",
                    timeout.as_secs(),
                    self.serial_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until something on the forwarded port speaks SSH (its banner).
    pub fn wait_for_ssh(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.ssh_port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 4];
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return Ok(());
                }
            }
            if !self.running() {
                return Err(format!(
                    "QEMU exited before sshd answered; serial log:\n{}",
                    self.serial_tail(60)
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "no sshd on 127.0.0.1:{} within {}s; serial log:\n{}",
                    self.ssh_port,
                    timeout.as_secs(),
                    self.serial_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits (bounded) for QEMU to exit, as it does when the guest powers
    /// off.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        while self.running() {
            if start.elapsed() > timeout {
                return Err(format!(
                    "QEMU still runs {}s later; serial log:\n{}",
                    timeout.as_secs(),
                    self.serial_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// A command on QEMU's human monitor; returns what it answered.
    pub fn monitor(&self, command: &str) -> io::Result<String> {
        let stream = UnixStream::connect(self.monitor_path())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        read_to_prompt(&mut reader)?;
        (&stream).write_all(format!("{command}\n").as_bytes())?;
        if command == "quit" {
            // QEMU closes the socket instead of prompting again.
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            return Ok(rest);
        }
        read_to_prompt(&mut reader)
    }

    /// Presses the reset button: no shutdown, no sync, as a power cut and
    /// power-on would (the disks keep what reached them); the firmware then
    /// boots by the boot order again.
    pub fn hard_reset(&self) -> io::Result<()> {
        self.monitor("system_reset").map(|_| ())
    }

    /// Ends QEMU at once (a pulled plug), then waits for it.
    pub fn power_off(&mut self) -> Result<(), String> {
        if self.running() {
            let _ = self.monitor("quit");
        }
        self.wait_for_exit(Duration::from_secs(30))
    }

    /// Starts QEMU again after it exited (a power-off), with the same disks,
    /// ISO and UEFI variables, and a fresh serial log.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.running() {
            return Err(io::Error::other("the VM is still running"));
        }
        self.launch()
    }

    /// `ssh root@127.0.0.1 -p PORT` with `key`, trusting only the host keys
    /// in `known_hosts` (never anything else), in batch mode; the caller
    /// adds the remote command.
    pub fn ssh(&self, key: &Path, known_hosts: &Path) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-p", &self.ssh_port.to_string()])
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "LogLevel=ERROR", "root@127.0.0.1"])
            .stdin(Stdio::null());
        c
    }

    /// A known_hosts line for this VM's forwarded port and `public_key`
    /// (`ssh-ed25519 AAAA...`).
    pub fn known_hosts_line(&self, public_key: &str) -> String {
        let key: Vec<&str> = public_key.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}\n", self.ssh_port, key.join(" "))
    }
}

fn read_to_prompt(reader: &mut impl BufRead) -> io::Result<String> {
    let mut said = Vec::new();
    let mut byte = [0u8; 1];
    while !said.ends_with(b"(qemu) ") {
        if reader.read(&mut byte)? == 0 {
            break;
        }
        said.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&said).into_owned())
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
