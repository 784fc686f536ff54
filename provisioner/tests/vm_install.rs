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
mod vm_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keys_support::{run_ok, TestLab};
use vm_support::{boot_installer, repo, text};

/// `labprov install` with the lab's environment, bounded: killed (and the
/// test failed with the VM's serial log) if it runs longer than `limit`.
fn labprov_bounded(
    lab: &TestLab,
    args: &[String],
    limit: Duration,
    vm: &lab_testkit::vm::Vm,
) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labprov"))
        .args(args)
        .env("LAB_ROOT", lab.root())
        .env("HOME", &lab.home)
        .env("SOPS_AGE_KEY_FILE", &lab.admin_key)
        .env_remove("SOPS_AGE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "labprov {} ran over {}s:\n{}\nserial log:\n{}",
                args.join(" "),
                limit.as_secs(),
                text(&out),
                vm.serial_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn install_rydev_onto_the_vm_reboots_from_its_disk_and_verifies_by_its_key() {
    let t = "install_rydev_onto_the_vm_reboots_from_its_disk_and_verifies_by_its_key";
    if !keys_support::require(t, &["nix", "nix-build", "nix-store", "sops", "age-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut installer) = boot_installer(t, tmp.path(), 1, 4 << 30) else { return };
    installer.install_labprov();

    // The lab: rydev with the repository's disk spec and a lab-held key.
    let lab = TestLab::new(&[("rydev", &[])]);
    std::fs::copy(repo().join("hosts/rydev/disko.nix"), lab.root().join("hosts/rydev/disko.nix"))
        .unwrap();
    let mut keys_new = Command::new(env!("CARGO_BIN_EXE_labprov"));
    keys_new
        .args(["keys", "new", "rydev"])
        .env("LAB_ROOT", lab.root())
        .env("HOME", &lab.home)
        .env("SOPS_AGE_KEY_FILE", &lab.admin_key);
    run_ok(&mut keys_new);
    let recorded =
        lab_keys::secrets::ops::show(lab.root(), &lab.keys(), "rydev").unwrap().fingerprint;

    // The stand-in system, with the admin's key for root.
    let kit = std::env::var_os("LABIMG_STANDIN_ISO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/standin-iso"))
        .join("standin-system-x86_64");
    let admin_pub = std::fs::read_to_string(installer.admin_key.with_extension("pub")).unwrap();
    let built = Command::new("nix-build")
        .arg(repo().join("tests/standin-iso/standin-system.nix"))
        .arg("--arg")
        .arg("kernel")
        .arg(kit.join("bzImage"))
        .arg("--arg")
        .arg("initrd")
        .arg(kit.join("initrd"))
        .args(["--argstr", "root", "/dev/disk/by-partlabel/disk-main-root"])
        .args(["--argstr", "authorizedKeys", admin_pub.trim()])
        .args(["--argstr", "host", "rydev", "--no-out-link"])
        .output()
        .unwrap();
    assert!(built.status.success(), "nix-build standin-system.nix: {}", text(&built));
    let system = String::from_utf8_lossy(&built.stdout).trim().to_string();

    let (port, admin_key, manifest) = (
        installer.vm.ssh_port.to_string(),
        installer.admin_key.display().to_string(),
        installer.manifest.display().to_string(),
    );
    let install = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "install".into(),
            "rydev".into(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.clone(),
            "--ssh-identity".into(),
            admin_key.clone(),
            "--installer-manifest".into(),
            manifest.clone(),
            "--disk".into(),
            "main=/dev/vda".into(),
            "--system".into(),
            system.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    installer.vm.forget_serial();
    let out = labprov_bounded(
        &lab,
        &install(&["--yes", "--json"]),
        Duration::from_secs(900),
        &installer.vm,
    );
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

    // Another key on the same disk: verify refuses the machine.
    let known = tmp.path().join("known_rydev");
    let rydev_pub =
        lab_keys::secrets::ops::show(lab.root(), &lab.keys(), "rydev").unwrap().public_key;
    std::fs::write(&known, installer.vm.known_hosts_line(&rydev_pub)).unwrap();
    let on_target = |cmd: &str| -> Output {
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
    let out = labprov_bounded(
        &lab,
        &install(&["--phases", "verify", "--wait", "20", "--yes"]),
        Duration::from_secs(120),
        &installer.vm,
    );
    let said = text(&out);
    // 3: a verification found a difference (the key), not a timeout (1).
    assert_eq!(out.status.code(), Some(3), "verify and another key on the disk: {said}");
    assert!(said.contains("Host key verification failed"), "{said}");
    assert!(said.contains(&recorded), "the refusal should name the expected key: {said}");
}
