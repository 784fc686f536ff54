//! `labprov install` end to end on a virtual machine: the installer VM
//! (tests/vm_support: the stand-in x86_64 installer keyed by labimg, QEMU
//! q35 + OVMF under TCG, one blank virtio disk) is pinned from labimg's
//! manifest (no prompt, no fingerprint given, no host key ever accepted
//! unseen), rydev's disko spec is applied by the installer's labprov, rydev's
//! lab-held key is placed, the STAND-IN system (tests/standin-iso/
//! standin-system.nix, built by the real Nix here) is copied with the real
//! `nix copy` into the target's store and installed by the stand-in
//! nixos-install (systemd-boot on the ESP), the VM reboots from its own disk
//! (OVMF -> systemd-boot -> the stand-in system's kernel and initramfs,
//! which mounts the root and serves the disk's host key), and the verify
//! phase passes only because the rebooted machine answers with rydev's
//! recorded key. Then the key on the disk is replaced and, after another
//! reboot, verify must refuse the machine.

mod keys_support;
mod vm_install_support;
mod vm_support;

use std::time::Duration;

use vm_install_support::InstallLab;
use vm_support::{boot_installer, repo, text};

#[test]
fn install_rydev_onto_the_vm_reboots_from_its_disk_and_verifies_by_its_key() {
    let t = "install_rydev_onto_the_vm_reboots_from_its_disk_and_verifies_by_its_key";
    if !keys_support::require(t, &["nix", "nix-build", "nix-store", "sops", "age-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut installer) = boot_installer(t, tmp.path(), 1, 4 << 30) else { return };
    installer.install_labprov();

    // The lab: rydev with the repository's disk spec and a lab-held key; the
    // stand-in system with the admin's key for root.
    let rydev = InstallLab::new(&installer, "rydev", &repo().join("hosts/rydev/disko.nix"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rydev.disks, ["main=/dev/vda"]);
    let recorded = rydev.recorded.clone();

    installer.vm.forget_serial();
    let out = rydev.run(&installer, &["--yes", "--json"], Duration::from_secs(900));
    assert!(
        out.status.success(),
        "labprov install failed:\n{}\nserial log:\n{}",
        text(&out),
        installer.vm.serial_tail(80)
    );
    // It really rebooted into the installed system, from the disk.
    installer
        .vm
        .wait_for_serial("standin-system: sshd up", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("verify passed but the stand-in system never came up: {e}"));
    assert!(installer.vm.serial().contains(&recorded), "the console lacks {recorded}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json: {e}: {}", text(&out)));
    let steps = report["steps"].as_array().expect("the report's steps");
    for phase in ["disk", "keys", "install", "reboot", "verify"] {
        assert!(
            steps.iter().any(|s| s["phase"] == phase && s["done"] == true),
            "no {phase} step was done: {report}"
        );
    }
    // Each phase timed, in install order (printed for docs/benchmarks.md).
    let phases: Vec<(&str, f64)> = report["phases"]
        .as_array()
        .expect("the report's phase times")
        .iter()
        .map(|p| (p["phase"].as_str().unwrap(), p["seconds"].as_f64().unwrap()))
        .collect();
    eprintln!("phase times: {phases:?}, total {}", report["seconds"]);
    let names: Vec<&str> = phases.iter().map(|p| p.0).collect();
    assert_eq!(names, ["prepare", "pin", "disk", "keys", "install", "reboot", "verify"]);
    assert!(phases.iter().all(|p| p.1 > 0.0), "{phases:?}");
    let sum: f64 = phases.iter().map(|p| p.1).sum();
    assert!(sum <= report["seconds"].as_f64().unwrap(), "{report}");

    // Another key on the same disk: verify refuses the machine.
    let known = tmp.path().join("known_rydev");
    std::fs::write(&known, installer.vm.known_hosts_line(&rydev.public_key)).unwrap();
    let on_target = |cmd: &str| -> std::process::Output {
        installer.vm.ssh(&installer.admin_key, &known).arg(cmd).output().unwrap()
    };
    let swap = on_target(
        "set -e; rm -f /sysroot/etc/ssh/ssh_host_ed25519_key*; \
         dropbearkey -t ed25519 -f /tmp/other > /dev/null; \
         dropbearconvert dropbear openssh /tmp/other /sysroot/etc/ssh/ssh_host_ed25519_key; \
         sync; nohup sh -c 'sleep 1; reboot -f' > /dev/null 2>&1 &",
    );
    assert!(swap.status.success(), "replacing the disk's key: {}", text(&swap));
    installer.vm.forget_serial();
    installer
        .vm
        .wait_for_serial("standin-system: sshd up", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("after the key swap: {e}"));
    let out = rydev.run(
        &installer,
        &["--phases", "verify", "--wait", "20", "--yes"],
        Duration::from_secs(120),
    );
    let said = text(&out);
    // 3: a verification found a difference (the key), not a timeout (1).
    assert_eq!(out.status.code(), Some(3), "verify and another key on the disk: {said}");
    assert!(said.contains("Host key verification failed"), "{said}");
    assert!(said.contains(&recorded), "the refusal should name the expected key: {said}");
}
