//! The keyed installer boots and answers with exactly its manifest's key:
//! `labimg build installer-ARCH` keys the STAND-IN base installer ISO
//! (tests/standin-iso: a Debian kernel, busybox and dropbear in NixOS's ISO
//! layout, made by scripts/setup), then QEMU (TCG) boots it: x86_64 via UEFI
//! (OVMF) and via BIOS (SeaBIOS), each once as a CD and once as a virtio
//! disk, and via UEFI as a USB stick; aarch64 via UEFI (AAVMF) as a virtio
//! disk, a USB stick and a CD. Each USB stick is what `labimg flash` wrote
//! onto a loop device. In each, ssh-keyscan returns exactly the
//! manifest's fingerprint, the admin's key logs in with the host key pinned,
//! and a password login and an unknown key are refused. The serial log is
//! printed when a boot fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{custom_lab, labimg, repo};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
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

/// `labimg flash ISO /dev/loopN` onto a 128 MiB blank stick (a loop device
/// over a sparse file, detached afterwards): the file QEMU then boots as a
/// USB stick. None (skipped) without root or a loop device.
fn flash_to_stick(t: &str, iso: &Path, dir: &Path) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        lab_testkit::skip(t, "flashing the ISO onto a loop device needs root");
        return None;
    }
    let stick = dir.join("stick.raw");
    let _ = fs::remove_file(&stick);
    fs::File::create(&stick).unwrap().set_len(128 << 20).unwrap();
    let attached = run(Command::new("losetup").args(["-f", "--show"]).arg(&stick));
    if !attached.status.success() {
        lab_testkit::skip(t, &format!("no loop device: {}", text(&attached)));
        return None;
    }
    let dev = String::from_utf8_lossy(&attached.stdout).trim().to_string();
    let flashed = run(labimg().args(["flash", "--yes", "--json"]).arg(iso).arg(&dev));
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(flashed.status.success(), "labimg flash {} {dev}: {}", iso.display(), text(&flashed));
    let report: serde_json::Value = serde_json::from_slice(&flashed.stdout).unwrap();
    assert_eq!(report["verify"], "ok", "{report}");
    assert_eq!(report["target"]["kind"], "loop device", "{report}");
    Some(stick)
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
fn the_keyed_x86_64_installer_boots_uefi_and_bios_as_cd_disk_and_usb_and_answers_with_its_key() {
    keyed_installer_boots(
        "the_keyed_x86_64_installer_boots_uefi_and_bios_as_cd_disk_and_usb_and_answers_with_its_key",
        "x86_64",
        &["/usr/share/OVMF/OVMF_CODE_4M.fd (package ovmf)", "/usr/share/OVMF/OVMF_VARS_4M.fd (package ovmf)"],
        &[
            ("uefi-cd", "virtio"),
            ("uefi-disk", "virtio"),
            ("bios-cd", "virtio"),
            ("bios-disk", "virtio"),
            // Last: writing the stick needs root, and without it the
            // boots after it would be skipped too.
            ("uefi-disk", "usb"),
        ],
    );
}

#[test]
fn the_keyed_aarch64_installer_boots_uefi_as_disk_usb_and_cd_and_answers_with_its_key() {
    keyed_installer_boots(
        "the_keyed_aarch64_installer_boots_uefi_as_disk_usb_and_cd_and_answers_with_its_key",
        "aarch64",
        &["/usr/share/qemu-efi-aarch64/QEMU_EFI.fd (package qemu-efi-aarch64)"],
        &[("uefi-disk", "virtio"), ("uefi-cd", "virtio"), ("uefi-disk", "usb")],
    );
}

/// Keys the `arch` stand-in and boots it once per (tests/standin-iso/boot.sh
/// MODE, BOOT_DISK_BUS); `firmware` lists the files QEMU needs, each with
/// the package that has it.
fn keyed_installer_boots(t: &str, arch: &str, firmware: &[&str], boots: &[(&str, &str)]) {
    let qemu = format!("qemu-system-{arch}");
    let tools = ["xorriso", &qemu, "ssh", "ssh-keygen", "ssh-keyscan"];
    if !lab_testkit::require_tools(t, &tools) {
        return;
    }
    for needed in firmware {
        let file = needed.split_whitespace().next().unwrap_or_default();
        if !Path::new(file).is_file() {
            lab_testkit::skip(t, &format!("{needed} is missing"));
            return;
        }
    }
    let Some(base) = lab_testkit::vm::standin_iso(t, arch) else { return };
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
    let name = format!("installer-{arch}");
    let built = run(labimg()
        .arg("--lab")
        .arg(&lab)
        .args(["build", &name, "--json", "--iso"])
        .arg(&base)
        .arg("--out")
        .arg(&out_dir));
    assert!(built.status.success(), "{}", text(&built));
    let summary: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let fingerprint = summary["manifest"]["hostKey"]["fingerprint"].as_str().unwrap().to_string();
    let public_key = summary["manifest"]["hostKey"]["publicKey"].as_str().unwrap().to_string();
    let iso = out_dir.join(format!("{name}.iso"));
    assert!(iso.is_file(), "{}", text(&built));

    let boot_sh = repo().join("tests/standin-iso/boot.sh");
    for &(boot_mode, bus) in boots {
        let mode = format!("{arch} {boot_mode} ({bus})");
        // The USB stick is what `labimg flash` wrote to a device, not the
        // ISO file itself.
        let medium = if bus == "usb" {
            let Some(stick) = flash_to_stick(t, &iso, tmp.path()) else { return };
            stick
        } else {
            iso.clone()
        };
        let port = lab_testkit::vm::free_port();
        let log = tmp.path().join(format!("{boot_mode}-{bus}.log"));
        let vm = Vm { pid_file: PathBuf::from(format!("{}.pid", log.display())) };
        let booted = run(Command::new("bash")
            .arg(&boot_sh)
            .arg(&medium)
            .arg(boot_mode)
            .arg(port.to_string())
            .arg(&log)
            .env("BOOT_ARCH", arch)
            .env("BOOT_DISK_BUS", bus)
            .env("BOOT_TIMEOUT", "240"));
        assert!(
            booted.status.success() && text(&booted).contains("installer: sshd up"),
            "{mode}: the installer did not reach sshd:\n{}",
            text(&booted)
        );
        let serial = || fs::read_to_string(&log).unwrap_or_default();
        // It booted from the medium under test: the init names the device
        // it found the ISO filesystem on (sr: CD, vd: virtio, sd: USB).
        let device = match (boot_mode.ends_with("-cd"), bus) {
            (true, _) => "/dev/sr",
            (false, "usb") => "/dev/sd",
            (false, _) => "/dev/vd",
        };
        assert!(
            serial().contains(&format!("ISO {device}")),
            "{mode}: the ISO was not found on {device}*:\n{}",
            serial()
        );

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
        let known_hosts = tmp.path().join(format!("{boot_mode}-{bus}.known_hosts"));
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
