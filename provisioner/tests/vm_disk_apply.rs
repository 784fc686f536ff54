//! `labprov disk apply` on a machine with a kernel of its own: the installer
//! VM (tests/vm_support: the stand-in x86_64 installer keyed by labimg,
//! QEMU q35 + OVMF under TCG) runs this build's labprov on a blank virtio
//! disk with rydev's disko spec, as `labprov install` runs it there. The
//! kernel's own view afterwards (lsblk, blkid, the mounts) must be the
//! spec's; a file written survives unmount and a re-apply, which changes
//! nothing.

mod vm_support;

use std::time::Duration;

use serde_json::Value;
use vm_support::{boot_installer, repo, spec_json};

#[test]
fn rydevs_spec_applied_inside_the_installer_vm_matches_and_a_reapply_keeps_the_data() {
    let t = "rydevs_spec_applied_inside_the_installer_vm_matches_and_a_reapply_keeps_the_data";
    let tmp = tempfile::tempdir().unwrap();
    let Some(installer) = boot_installer(t, tmp.path(), 1, 4 << 30) else { return };
    installer.install_labprov();
    installer.put("/tmp/rydev.json", &spec_json(&repo().join("hosts/rydev/disko.nix")), false);

    let apply = "labprov disk apply --spec /tmp/rydev.json --disk main=/dev/vda --yes --json";
    let first: Value = serde_json::from_str(&installer.must(apply)).unwrap();
    assert!(!first.as_array().map(Vec::is_empty).unwrap_or(true), "{first}");

    // The kernel's view: GPT with rydev's two partitions, their filesystems,
    // mounted under /mnt as the spec says.
    let (table, fs) = installer.disk_view("vda");
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt", "{table}");
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["name"], "disk-main-ESP", "{table}");
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "{table}");
    assert_eq!(parts[0]["size"].as_u64().unwrap() * 512, 512 << 20, "{table}");
    assert_eq!(parts[1]["name"], "disk-main-root", "{table}");
    assert_eq!(
        fs,
        vec![("vfat".to_string(), "/mnt/boot".to_string()), ("ext4".into(), "/mnt".into())],
        "{table}"
    );
    let options = installer.must("grep ' /mnt/boot ' /proc/mounts");
    assert!(options.contains("umask=0077") || options.contains("fmask=0077"), "{options}");

    // Data survives unmount and a re-apply, which finds everything there.
    installer.must("echo kept > /mnt/marker && sync");
    installer.must("labprov disk unmount --spec /tmp/rydev.json --disk main=/dev/vda");
    assert!(!installer.must("cat /proc/mounts").contains(" /mnt "), "still mounted");
    let again: Value = serde_json::from_str(&installer.must(apply)).unwrap();
    assert_eq!(installer.must("cat /mnt/marker").trim(), "kept");
    assert_eq!(installer.disk_view("vda"), (table, fs), "a re-apply changed the disk:\n{again}");

    // A hard reset (no unmount, no sync) and the disk is still the spec's:
    // the installer boots from the ISO again (the disk has no loader), and
    // `labprov disk mount` finds everything.
    let mut installer = installer;
    installer.vm.forget_serial();
    installer.vm.hard_reset().unwrap();
    installer
        .vm
        .wait_for_serial("installer: sshd up", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("after the reset: {e}"));
    installer.install_labprov();
    installer.put("/tmp/rydev.json", &spec_json(&repo().join("hosts/rydev/disko.nix")), false);
    installer.must("labprov disk mount --spec /tmp/rydev.json --disk main=/dev/vda");
    assert_eq!(installer.must("cat /mnt/marker").trim(), "kept");
}
