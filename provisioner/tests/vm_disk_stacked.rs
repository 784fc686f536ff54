//! LUKS, LVM and mdadm applied by `labprov disk` on a real kernel: the
//! installer VM (tests/vm_support) runs this build's labprov on three blank
//! virtio disks with specs shaped like disko's `luks-lvm` and
//! `luks-on-mdadm` examples (an LVM volume group on LUKS; a RAID1 with vfat
//! on it and a RAID1 with LUKS and ext4 on it, each over two disks). The
//! kernel's view afterwards (`cryptsetup status`, `lvs`, `mdadm --detail`,
//! the mounts) must be the spec's; a file written survives unmount, a
//! re-apply and mount; a wrong key opens nothing and mounts nothing; the
//! same names applied to another disk while they are open are refused
//! before anything is written.

mod vm_support;

use vm_support::{boot_installer, Installer};

/// disko's example/luks-lvm.nix, as data, on /dev/vda: an ESP and a LUKS
/// partition holding the PV of VG `pool`, whose LVs are `home` (64 MiB) and
/// `root` (the rest).
const LUKS_LVM: &str = r#"{"disk": {"main": {"type": "disk", "device": "/dev/vda", "content": {"type": "gpt", "partitions": {
  "ESP": {"size": "64M", "type": "EF00", "content": {"type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"]}},
  "luks": {"size": "100%", "content": {"type": "luks", "name": "crypted", "settings": {"allowDiscards": true},
    "content": {"type": "lvm_pv", "vg": "pool"}}}}}}},
 "lvm_vg": {"pool": {"type": "lvm_vg", "lvs": {
  "root": {"size": "100%FREE", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/", "mountOptions": ["defaults"]}},
  "home": {"size": "64M", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/home"}}}}}}"#;

/// disko's example/luks-on-mdadm.nix, as data, on /dev/vdb and /dev/vdc:
/// array `boot` (RAID1, metadata 1.0, vfat) and array `raid1` (RAID1, LUKS
/// `cryptraid`, ext4).
fn luks_on_mdadm() -> String {
    let disk = |name: &str, dev: &str| {
        format!(
            r#""{name}": {{"type": "disk", "device": "{dev}", "content": {{"type": "gpt", "partitions": {{
  "boot": {{"size": "1M", "type": "EF02"}},
  "ESP": {{"size": "64M", "type": "EF00", "content": {{"type": "mdraid", "name": "boot"}}}},
  "mdadm": {{"size": "100%", "content": {{"type": "mdraid", "name": "raid1"}}}}}}}}}}"#
        )
    };
    format!(
        r#"{{"disk": {{{}, {}}}, "mdadm": {{
  "boot": {{"type": "mdadm", "level": 1, "metadata": "1.0", "content": {{"type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"]}}}},
  "raid1": {{"type": "mdadm", "level": 1, "content": {{"type": "luks", "name": "cryptraid", "settings": {{}},
    "content": {{"type": "filesystem", "format": "ext4", "mountpoint": "/"}}}}}}}}}}"#,
        disk("a", "/dev/vdb"),
        disk("b", "/dev/vdc")
    )
}

/// The mountpoint of each mounted device under `root`, from /proc/mounts,
/// as (device, mountpoint) with the device resolved (`readlink -f`).
fn mounts_under(installer: &Installer, root: &str) -> Vec<(String, String)> {
    let out = installer.must(&format!(
        "grep ' {root}' /proc/mounts | while read -r dev mnt rest; do echo \"$(readlink -f \"$dev\") $mnt\"; done"
    ));
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(d, m)| (d.to_string(), m.to_string()))
        .collect();
    v.sort();
    v
}

fn resolved(installer: &Installer, path: &str) -> String {
    installer.must(&format!("readlink -f {path}")).trim().to_string()
}

fn apply_mount_reapply_and_keys(
    installer: &Installer,
    name: &str,
    spec: &str,
    disks: &str,
    luks: &str,
    expect: &[(&str, &str)],
) {
    let spec_path = format!("/tmp/{name}.json");
    installer.put(&spec_path, spec.as_bytes(), false);
    installer.put("/tmp/right.key", b"correct horse battery staple", false);
    installer.put("/tmp/wrong.key", b"not the passphrase", false);
    let root = format!("/mnt-{name}");
    let args = format!("--spec {spec_path} {disks} --root {root}");
    let key = |file: &str| format!("--luks-key-file {luks}=/tmp/{file}.key");

    installer.must(&format!("labprov disk apply {args} {} --yes", key("right")));
    let status = installer.must(&format!("cryptsetup status {luks}"));
    assert!(status.contains("is active") && status.contains("LUKS2"), "{status}");
    let want: Vec<(String, String)> = {
        let mut w: Vec<(String, String)> = expect
            .iter()
            .map(|(dev, mnt)| (resolved(installer, dev), format!("{root}{mnt}")))
            .map(|(d, m)| (d, m.trim_end_matches('/').to_string()))
            .collect();
        w.sort();
        w
    };
    assert_eq!(mounts_under(installer, &root), want, "{name}: mounts differ from the spec");

    // A file written survives unmount (which closes and stops everything),
    // a re-apply and mount.
    installer.must(&format!("echo kept > {root}/marker && sync"));
    installer.must(&format!("labprov disk unmount {args}"));
    assert!(mounts_under(installer, &root).is_empty(), "{name}: still mounted");
    let closed = installer.ssh(&format!("cryptsetup status {luks}")).output().unwrap();
    assert!(!closed.status.success(), "{name}: {luks} still open after unmount");
    installer.must(&format!("labprov disk apply {args} {} --yes", key("right")));
    assert_eq!(installer.must(&format!("cat {root}/marker")).trim(), "kept", "{name}");
    installer.must(&format!("labprov disk unmount {args}"));

    // A wrong key: a clear error, nothing opened or mounted.
    let wrong =
        installer.ssh(&format!("labprov disk mount {args} {}", key("wrong"))).output().unwrap();
    let said = vm_support::text(&wrong);
    assert!(!wrong.status.success(), "{name}: a wrong key mounted: {said}");
    assert!(
        said.contains("a wrong passphrase or key file") && said.contains(luks),
        "{name}: {said}"
    );
    assert!(mounts_under(installer, &root).is_empty(), "{name}: mounted with a wrong key");
    let closed = installer.ssh(&format!("cryptsetup status {luks}")).output().unwrap();
    assert!(!closed.status.success(), "{name}: opened with a wrong key");

    installer.must(&format!("labprov disk mount {args} {}", key("right")));
    assert_eq!(installer.must(&format!("cat {root}/marker")).trim(), "kept", "{name}");
}

#[test]
fn luks_lvm_and_luks_on_mdadm_applied_inside_the_installer_vm_match_their_specs() {
    let t = "luks_lvm_and_luks_on_mdadm_applied_inside_the_installer_vm_match_their_specs";
    let tmp = tempfile::tempdir().unwrap();
    let Some(installer) = boot_installer(t, tmp.path(), 3, 1 << 30) else { return };
    installer.install_labprov();

    apply_mount_reapply_and_keys(
        &installer,
        "luks-lvm",
        LUKS_LVM,
        "--disk main=/dev/vda",
        "crypted",
        &[("/dev/vda1", "/boot"), ("/dev/pool/root", "/"), ("/dev/pool/home", "/home")],
    );
    let lvs = installer.must("lvs --noheadings --units m -o lv_name,vg_name,lv_size pool");
    let names: Vec<&str> = lvs.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["home", "root"], "{lvs}");
    assert!(lvs.contains("64.00m"), "{lvs}");
    let pv = installer.must("pvs --noheadings -o pv_name,vg_name");
    assert!(pv.contains("/dev/mapper/crypted") && pv.contains("pool"), "{pv}");

    // The same names on another disk: `crypted` is open on /dev/vda2, so
    // labprov refuses (4) before writing anything to /dev/vdb, where disko
    // would take the open volume for the spec's.
    let other = installer
        .ssh(
            "labprov disk apply --spec /tmp/luks-lvm.json --disk main=/dev/vdb --root /mnt-other \
             --luks-key-file crypted=/tmp/right.key --yes",
        )
        .output()
        .unwrap();
    let said = vm_support::text(&other);
    assert_eq!(other.status.code(), Some(4), "another disk with the same names: {said}");
    assert!(
        said.contains("LUKS volume `crypted` already exists") && said.contains("/dev/vda2"),
        "{said}"
    );
    let blank = installer.ssh("blkid -p /dev/vdb").output().unwrap();
    assert!(!blank.status.success(), "/dev/vdb was written: {}", vm_support::text(&blank));

    apply_mount_reapply_and_keys(
        &installer,
        "luks-on-mdadm",
        &luks_on_mdadm(),
        "--disk a=/dev/vdb --disk b=/dev/vdc",
        "cryptraid",
        &[("/dev/md/boot", "/boot"), ("/dev/mapper/cryptraid", "/")],
    );
    for (array, metadata) in [("boot", "1.0"), ("raid1", "1.2")] {
        let detail = installer.must(&format!("mdadm --detail /dev/md/{array}"));
        assert!(detail.contains("Raid Level : raid1"), "{detail}");
        assert!(detail.contains("Raid Devices : 2"), "{detail}");
        assert!(detail.contains(&format!("Version : {metadata}")), "{detail}");
        let members: Vec<&str> = detail.lines().filter(|l| l.contains("/dev/vd")).collect();
        assert_eq!(members.len(), 2, "{detail}");
    }
}
