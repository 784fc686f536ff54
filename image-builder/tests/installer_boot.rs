//! The keyed installer boots and answers with exactly its manifest's key:
//! `labimg build installer-x86_64` keys the STAND-IN base installer ISO
//! (tests/standin-iso: a Debian kernel, busybox and dropbear in NixOS's ISO
//! layout, made by scripts/setup), then QEMU (TCG) boots it via UEFI (OVMF)
//! and via BIOS (SeaBIOS), each once as a CD and once as a disk. In each,
//! ssh-keyscan returns exactly the manifest's fingerprint, the admin's key
//! logs in with the host key pinned, and a password login and an unknown
//! key are refused. The serial log is printed when a boot fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{custom_lab, labimg, repo};

/// The stand-in base ISO scripts/setup made (or $LABIMG_STANDIN_ISO/...).
fn standin_iso(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LABIMG_STANDIN_ISO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/standin-iso"));
    let iso = dir.join("installer-x86_64.standin.iso");
    if iso.is_file() {
        return Some(iso);
    }
    lab_testkit::skip(
        test,
        &format!("{} is missing: run scripts/setup (tests/standin-iso/make.sh)", iso.display()),
    );
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A free loopback port (bound, then released for QEMU's forward).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// QEMU started by boot.sh, killed however the test ends.
struct Vm {
    pid_file: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn ssh(port: u16, known_hosts: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-p", &port.to_string(), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlgorithms=ssh-ed25519"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-F", "/dev/null"])
        .args(extra)
        .args(["root@127.0.0.1", "true"]);
    c
}

#[test]
fn the_keyed_installer_boots_uefi_and_bios_as_cd_and_disk_and_answers_with_its_key() {
    let t = "the_keyed_installer_boots_uefi_and_bios_as_cd_and_disk_and_answers_with_its_key";
    let tools = ["xorriso", "qemu-system-x86_64", "ssh", "ssh-keygen", "ssh-keyscan"];
    if !lab_testkit::require_tools(t, &tools) {
        return;
    }
    for firmware in ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"] {
        if !Path::new(firmware).is_file() {
            lab_testkit::skip(t, &format!("{firmware} is missing (package ovmf)"));
            return;
        }
    }
    let Some(base) = standin_iso(t) else { return };
    let tmp = tempfile::tempdir().unwrap();

    // The admin (a throwaway key) and a stranger.
    let keygen = |name: &str| {
        let key = tmp.path().join(name);
        let out = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key));
        assert!(out.status.success(), "{}", text(&out));
        key
    };
    let admin = keygen("admin");
    let stranger = keygen("stranger");
    let admin_pub = fs::read_to_string(admin.with_extension("pub")).unwrap();
    let lab = custom_lab(
        tmp.path(),
        &format!(
            "{{ admins = {{ ry = {{ sshKeys = [ \"{}\" ]; }}; }}; hosts = {{ }}; }}",
            admin_pub.trim()
        ),
    );

    let out_dir = tmp.path().join("out");
    let built = run(labimg()
        .arg("--lab")
        .arg(&lab)
        .args(["build", "installer-x86_64", "--json", "--iso"])
        .arg(&base)
        .arg("--out")
        .arg(&out_dir));
    assert!(built.status.success(), "{}", text(&built));
    let summary: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let fingerprint = summary["manifest"]["hostKey"]["fingerprint"].as_str().unwrap().to_string();
    let public_key = summary["manifest"]["hostKey"]["publicKey"].as_str().unwrap().to_string();
    let iso = out_dir.join("installer-x86_64.iso");
    assert!(iso.is_file(), "{}", text(&built));

    let boot_sh = repo().join("tests/standin-iso/boot.sh");
    for mode in ["uefi-cd", "uefi-disk", "bios-cd", "bios-disk"] {
        let port = free_port();
        let log = tmp.path().join(format!("{mode}.log"));
        let vm = Vm { pid_file: PathBuf::from(format!("{}.pid", log.display())) };
        let booted = run(Command::new("bash")
            .arg(&boot_sh)
            .arg(&iso)
            .arg(mode)
            .arg(port.to_string())
            .arg(&log)
            .env("BOOT_TIMEOUT", "240"));
        assert!(
            booted.status.success() && text(&booted).contains("installer: sshd up"),
            "{mode}: the installer did not reach sshd:\n{}",
            text(&booted)
        );
        let serial = || fs::read_to_string(&log).unwrap_or_default();

        // Exactly the manifest's key, and it is on the console too.
        let scan = run(Command::new("ssh-keyscan").args([
            "-T",
            "20",
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ]));
        let offered: Vec<&str> = std::str::from_utf8(&scan.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(offered.len(), 1, "{mode}: {}\n{}", text(&scan), serial());
        let key_line = offered[0].split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        assert_eq!(
            key_line.split_whitespace().take(2).collect::<Vec<_>>(),
            public_key.split_whitespace().take(2).collect::<Vec<_>>(),
            "{mode}: the installer offers another key than the manifest's"
        );
        assert!(serial().contains(&fingerprint), "{mode}: console lacks {fingerprint}");

        // The admin's key logs in with only the manifest's key trusted.
        let known_hosts = tmp.path().join(format!("{mode}.known_hosts"));
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {public_key}\n")).unwrap();
        let login = run(&mut ssh(
            port,
            &known_hosts,
            &["-i", admin.to_str().unwrap(), "-o", "IdentitiesOnly=yes"],
        ));
        assert!(
            login.status.success(),
            "{mode}: the admin cannot log in: {}\n{}",
            text(&login),
            serial()
        );
        // A stranger's key and a password are refused.
        let refused = run(&mut ssh(
            port,
            &known_hosts,
            &["-i", stranger.to_str().unwrap(), "-o", "IdentitiesOnly=yes"],
        ));
        assert!(
            !refused.status.success() && text(&refused).contains("Permission denied"),
            "{mode}: {}",
            text(&refused)
        );
        // The server offers no password method at all (not only: the
        // batch-mode client could not type one).
        let password = run(&mut ssh(
            port,
            &known_hosts,
            &[
                "-v",
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
            ],
        ));
        let said = text(&password);
        let methods: Vec<&str> =
            said.lines().filter(|l| l.contains("Authentications that can continue:")).collect();
        assert!(!password.status.success() && !methods.is_empty(), "{mode}: {said}");
        assert!(
            methods.iter().all(|l| !l.contains("password") && !l.contains("keyboard-interactive")),
            "{mode}: the installer offers passwords: {methods:?}"
        );
        drop(vm);
    }
}
