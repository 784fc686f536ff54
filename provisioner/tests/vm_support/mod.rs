//! The installer VM for the provisioner's tests: the STAND-IN x86_64
//! installer ISO (tests/standin-iso, made by scripts/setup: a Debian kernel,
//! busybox, dropbear and the install tools of install-tools.txt in NixOS's
//! ISO layout) keyed by labimg for a throwaway admin, booted under QEMU by
//! lab_testkit::vm with blank disks, reached over SSH with only the
//! manifest's host key trusted, and given this build's labprov.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lab_testkit::vm::{self, Vm, VmOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The labimg binary of this workspace build (cargo puts it beside the
/// test binaries' deps/ directory), or None after a skip.
fn labimg(test: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("labimg");
    if bin.is_file() {
        return Some(bin);
    }
    lab_testkit::skip(
        test,
        &format!(
            "{} is missing: build the workspace (cargo build -p image-builder, or cargo nextest run --workspace)",
            bin.display()
        ),
    );
    None
}

/// This build's labprov: cargo's path in a test, else (an example: scripts/
/// e2e-install) the binary beside the examples/ directory.
pub fn labprov_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_labprov") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("labprov")))
            .unwrap_or_else(|| PathBuf::from("labprov")),
    }
}

/// A running installer VM with what a test needs to talk to it.
pub struct Installer {
    pub vm: Vm,
    pub dir: PathBuf,
    /// The throwaway admin's private key (the only key the installer lets in).
    pub admin_key: PathBuf,
    /// Trusts exactly the installer's host key from labimg's manifest.
    pub known_hosts: PathBuf,
    /// labimg's manifest of the keyed ISO.
    pub manifest: PathBuf,
    pub manifest_json: serde_json::Value,
}

/// Keys the stand-in for a throwaway admin, boots it with `disks` blank
/// virtio disks of `disk_bytes` each (the guest's /dev/vda, /dev/vdb, ...)
/// and waits for its sshd. None when something the VM needs is missing (a
/// skip was printed; under LAB_REQUIRE_ALL=1 that fails the test).
pub fn boot_installer(test: &str, dir: &Path, disks: usize, disk_bytes: u64) -> Option<Installer> {
    if !vm::require_vm(test)
        || !lab_testkit::require_tools(test, &["xorriso", "ssh", "ssh-keygen", "objcopy"])
    {
        return None;
    }
    let base = vm::standin_iso(test, "x86_64")?;
    let labimg = labimg(test)?;

    let admin_key = dir.join("admin");
    let keygen = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vm-test-admin", "-f"])
        .arg(&admin_key));
    assert!(keygen.status.success(), "{}", text(&keygen));
    let admin_pub = fs::read_to_string(admin_key.with_extension("pub")).unwrap();
    let lab = dir.join("lab");
    fs::create_dir_all(lab.join("hosts")).unwrap();
    fs::write(
        lab.join("hosts/facts.nix"),
        format!(
            "{{ admins = {{ vmtest = {{ sshKeys = [ \"{}\" ]; }}; }}; hosts = {{ }}; }}",
            admin_pub.trim()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let keyed = run(Command::new(&labimg)
        .arg("--lab")
        .arg(&lab)
        .args(["build", "installer-x86_64", "--json", "--iso"])
        .arg(&base)
        .arg("--out")
        .arg(&out));
    assert!(keyed.status.success(), "labimg build installer-x86_64: {}", text(&keyed));
    let manifest = out.join("installer-x86_64.manifest.json");
    let manifest_json: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();

    let mut opts = VmOptions::new("installer", dir);
    opts.iso = Some(out.join("installer-x86_64.iso"));
    for i in 0..disks {
        let disk = dir.join(format!("disk{i}.raw"));
        vm::blank_disk(&disk, disk_bytes).unwrap();
        opts.disks.push(disk);
    }
    let mut vm = Vm::start(opts).unwrap();
    vm.wait_for_serial("installer: sshd up", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("the installer VM did not reach sshd: {e}"));
    vm.wait_for_ssh(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let known_hosts = dir.join("known_hosts");
    let public_key = manifest_json["hostKey"]["publicKey"].as_str().unwrap();
    fs::write(&known_hosts, vm.known_hosts_line(public_key)).unwrap();
    Some(Installer { vm, dir: dir.to_path_buf(), admin_key, known_hosts, manifest, manifest_json })
}

impl Installer {
    /// `ssh root@installer COMMAND` (a shell command line).
    pub fn ssh(&self, command: &str) -> Command {
        let mut c = self.vm.ssh(&self.admin_key, &self.known_hosts);
        c.arg(command);
        c
    }

    /// Runs `command` on the installer; panics with its output and the
    /// serial log's tail when it fails.
    pub fn must(&self, command: &str) -> String {
        let out = run(&mut self.ssh(command));
        assert!(
            out.status.success(),
            "on the installer: {command}\n{}\nserial log:\n{}",
            text(&out),
            self.vm.serial_tail(30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `bytes` to `path` on the installer (mode 0755 when `exec`).
    pub fn put(&self, path: &str, bytes: &[u8], exec: bool) {
        let mode = if exec { "755" } else { "600" };
        let mut child = self
            .ssh(&format!("cat > {path}.part && chmod {mode} {path}.part && mv {path}.part {path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "upload {path}: {}", text(&out));
    }

    /// /dev/DISK as the kernel and the standard tools see it (no udev
    /// here, so lsblk knows no labels; sfdisk and blkid read the disk):
    /// sfdisk's partition table, then each partition's filesystem type
    /// (`blkid -p`, empty for none) and mountpoint (`-` when not mounted).
    pub fn disk_view(&self, disk: &str) -> (serde_json::Value, Vec<(String, String)>) {
        let table: serde_json::Value =
            serde_json::from_str(&self.must(&format!("sfdisk --json /dev/{disk}"))).unwrap();
        let mounts = self.must("cat /proc/mounts");
        let mut fs = Vec::new();
        for part in table["partitiontable"]["partitions"].as_array().expect("partitions") {
            let node = part["node"].as_str().unwrap();
            let kind = self.must(&format!("blkid -p -o value -s TYPE {node} || true"));
            let mountpoint = mounts
                .lines()
                .find(|l| l.split_whitespace().next() == Some(node))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("-")
                .to_string();
            fs.push((kind.trim().to_string(), mountpoint));
        }
        (table, fs)
    }

    /// What must be equal between an interrupted-then-rerun disk and an
    /// uninterrupted one: each partition's name, type, start and size (GPT,
    /// UUIDs aside), and its filesystem type and mountpoint below `root`.
    pub fn layout(&self, disk: &str, root: &str) -> Vec<String> {
        let (table, fs) = self.disk_view(disk);
        assert_eq!(table["partitiontable"]["label"], "gpt", "{table}");
        let parts = table["partitiontable"]["partitions"].as_array().unwrap();
        parts
            .iter()
            .zip(fs)
            .map(|(p, (kind, mountpoint))| {
                let at = match mountpoint.strip_prefix(root) {
                    Some("") => "/".to_string(),
                    Some(rest) => rest.to_string(),
                    None => mountpoint,
                };
                format!(
                    "{} {} start={} size={} fs={kind} at={at}",
                    p["name"], p["type"], p["start"], p["size"]
                )
            })
            .collect()
    }

    /// This build's labprov on the installer as /usr/local/bin/labprov
    /// (debug info stripped: the transfer runs over emulated networking).
    /// A NixOS installer has it from the flake's package instead.
    pub fn install_labprov(&self) {
        let stripped = self.dir.join("labprov");
        let strip =
            run(Command::new("objcopy").arg("--strip-debug").arg(labprov_bin()).arg(&stripped));
        assert!(strip.status.success(), "objcopy: {}", text(&strip));
        self.must("mkdir -p /usr/local/bin");
        self.put("/usr/local/bin/labprov", &fs::read(&stripped).unwrap(), true);
    }
}

/// Defines the shell function `running PATTERN` for a command on the
/// installer: whether a process whose name (/proc/PID/comm) matches the
/// shell pattern runs (the stand-in's busybox has no pgrep).
pub const RUNNING: &str =
    "running() { for c in /proc/[0-9]*/comm; do read -r n < \"$c\" 2> /dev/null || continue; \
     case \"$n\" in $1) return 0 ;; esac; done; return 1; }; ";

/// A disko spec file evaluated to JSON with plain Nix (pure data).
pub fn spec_json(spec: &Path) -> Vec<u8> {
    let out = run(Command::new("nix").args(["eval", "--json", "--file"]).arg(spec));
    assert!(out.status.success(), "nix eval {}: {}", spec.display(), text(&out));
    out.stdout
}
