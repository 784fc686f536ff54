//! The plans of disko's own LUKS, LVM and mdadm examples against the
//! commands disko's create script runs for them, in its order.
//!
//! The specs are disko's `example/*.nix` at the pinned revision (v1.13.0,
//! de5708739256238fb912c62f03988815db89ec9a) as JSON: the golden fixtures'
//! `*.input.json` where there is one (`../shared/fixtures/disko`), and
//! `tests/examples/*.json` made with `nix eval --json --file EXAMPLE.nix
//! disko.devices` for the others. The expected lines are disko's commands
//! with the shell's expansion done by hand from `lib/types/*.nix` for a
//! blank disk (every "does it exist" check false); `--key-file -` stands
//! for disko's `--key-file <(echo -n "$password")`.

use lab_disko::plan::{plan, Step};
use lab_disko::Devices;

fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/disko")
        .join(format!("{name}.input.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; copy shared/ next to the repository (CI does)", path.display())
    });
    serde_json::from_str(&text).expect("fixture JSON")
}

fn example(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("example JSON")
}

/// disko's create script for a blank disk set, one line per command, as the
/// plan says it; tables and mounts reduced to one line each.
fn create_script(raw: &serde_json::Value) -> Vec<String> {
    let devices = Devices::from_raw(raw).expect("normalise");
    let mut out = Vec::new();
    for step in plan(&devices).expect("plan") {
        match step {
            Step::Partition { disk, .. } => out.push(format!("partition {disk}")),
            Step::Format { device, format, extra_args } => {
                let mut l = vec![format!("mkfs.{format}")];
                l.extend(extra_args);
                l.push(device);
                out.push(l.join(" "));
            }
            Step::Mkswap { device, .. } => out.push(format!("mkswap {device}")),
            Step::Btrfs { device, .. } => out.push(format!("mkfs.btrfs {device}")),
            Step::Luks(l) => out.extend(l.create_commands().iter().map(|c| c.join(" "))),
            Step::LvmPv(p) => out.push(p.create.join(" ")),
            Step::LvmVg(v) => {
                out.extend(v.kernel_modules.iter().map(|m| format!("modprobe {m}")));
                out.push(v.create.join(" "));
            }
            Step::Lv(l) => out.push(l.create.join(" ")),
            Step::Mdadm(m) => out.push(m.create.join(" ")),
            Step::Unsupported { kind, spec_path, .. } => {
                out.push(format!("UNSUPPORTED {spec_path}: {kind}"))
            }
            Step::Mount { mountpoint, device, .. } => {
                out.push(format!("mount {device} {mountpoint}"))
            }
        }
    }
    out
}

fn assert_script(got: Vec<String>, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "\n got: {got:#?}\nwant: {want:#?}");
}

#[test]
fn luks_lvm() {
    assert_script(
        create_script(&fixture("luks-lvm")),
        &[
            "partition main",
            "mkfs.vfat /dev/disk/by-partlabel/disk-main-ESP",
            // luks.nix:162 with settings.keyFile (luks.nix:12-13, 28-32)
            "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-luks --key-file /tmp/secret.key",
            // luks.nix:33-42, 166
            "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file /tmp/secret.key --persistent",
            // luks.nix:170
            "cryptsetup luksAddKey /dev/disk/by-partlabel/disk-main-luks /tmp/additionalSecret.key --key-file /tmp/secret.key",
            // lvm_pv.nix:42-45
            "pvcreate /dev/mapper/crypted",
            // lvm_vg.nix:117-122
            "modprobe dm-snapshot",
            "vgcreate pool /dev/mapper/crypted",
            // lvm_vg.nix:114, 123-142: priority 1000 by name, then 100% (1251)
            "lvcreate --yes -L 10M -n home pool",
            "lvcreate --yes -L 10M -n raw pool",
            "lvcreate --yes -l 100%FREE -n root pool",
            "mkfs.ext4 /dev/pool/home",
            "mkfs.ext4 /dev/pool/root",
            "mount /dev/pool/root /",
            "mount /dev/disk/by-partlabel/disk-main-ESP /boot",
            "mount /dev/pool/home /home",
        ],
    );
}

#[test]
fn lvm_sizes_sort() {
    assert_script(
        create_script(&fixture("lvm-sizes-sort")),
        &[
            "partition one",
            "mkfs.vfat /dev/disk/by-partlabel/disk-one-boot",
            "pvcreate /dev/disk/by-partlabel/disk-one-primary",
            "modprobe dm-snapshot",
            "vgcreate pool /dev/disk/by-partlabel/disk-one-primary",
            "lvcreate --yes -L 1M -n aaa pool",
            "lvcreate --yes -L 100M -n root pool",
            "lvcreate --yes -L 1M -n zzz pool",
            // "100%FREE" has "100%" in it (priority 1251) and a `%` (-l),
            // but does not end in `%` (no FREE added).
            "lvcreate --yes -l 100%FREE -n home pool",
            "mkfs.ext4 /dev/pool/root",
            "mkfs.ext4 /dev/pool/home",
            "mount /dev/pool/root /",
            "mount /dev/disk/by-partlabel/disk-one-boot /boot",
            "mount /dev/pool/home /home",
        ],
    );
}

#[test]
fn lvm_thin() {
    assert_script(
        create_script(&example("lvm-thin")),
        &[
            "partition main",
            "mkfs.vfat /dev/disk/by-partlabel/disk-main-ESP",
            "pvcreate /dev/disk/by-partlabel/disk-main-primary",
            "modprobe dm-snapshot",
            "modprobe dm-thin-pool",
            "vgcreate mainpool /dev/disk/by-partlabel/disk-main-primary",
            // thin-pool first (priority 501), then the rest by name.
            "lvcreate --yes -L 100M -n thinpool --type=thin-pool mainpool",
            "lvcreate --yes -V 10M -n home --thinpool=thinpool mainpool",
            "lvcreate --yes -L 10M -n raw mainpool",
            "lvcreate --yes -V 10M -n root --thinpool=thinpool mainpool",
            "mkfs.ext4 /dev/mainpool/home",
            "mkfs.ext4 /dev/mainpool/root",
            "mount /dev/mainpool/root /",
            "mount /dev/disk/by-partlabel/disk-main-ESP /boot",
            "mount /dev/mainpool/home /home",
        ],
    );
}

#[test]
fn lvm_raid_with_an_mdadm_boot() {
    assert_script(
        create_script(&example("lvm-raid")),
        &[
            "partition one",
            "pvcreate /dev/disk/by-partlabel/disk-one-primary",
            "partition two",
            "pvcreate /dev/disk/by-partlabel/disk-two-primary",
            // lvm_vg comes before mdadm in disko's device list; neither
            // depends on the other (lib/default.nix:349-358, 369-380).
            "modprobe dm-snapshot",
            "modprobe dm-raid0",
            "modprobe dm-mirror",
            "vgcreate pool /dev/disk/by-partlabel/disk-one-primary /dev/disk/by-partlabel/disk-two-primary",
            "lvcreate --yes -L 10M -n home --type=raid0 pool",
            "lvcreate --yes -L 100M -n root --type=mirror pool",
            "mkfs.ext4 /dev/pool/home",
            "mkfs.ext4 /dev/pool/root",
            // mdadm.nix:66-73
            "mdadm --create /dev/md/boot --level=1 --raid-devices=2 --metadata=1.0 --force --homehost=any /dev/disk/by-partlabel/disk-one-boot /dev/disk/by-partlabel/disk-two-boot",
            "mkfs.vfat /dev/md/boot",
            "mount /dev/pool/root /",
            "mount /dev/md/boot /boot",
            "mount /dev/pool/home /home",
        ],
    );
}

#[test]
fn luks_on_mdadm() {
    assert_script(
        create_script(&fixture("luks-on-mdadm")),
        &[
            "partition a",
            "partition b",
            "mdadm --create /dev/md/boot --level=1 --raid-devices=2 --metadata=1.0 --force --homehost=any /dev/disk/by-partlabel/disk-a-ESP /dev/disk/by-partlabel/disk-b-ESP",
            "mkfs.vfat /dev/md/boot",
            "mdadm --create /dev/md/raid1 --level=1 --raid-devices=2 --metadata=default --force --homehost=any /dev/disk/by-partlabel/disk-a-mdadm /dev/disk/by-partlabel/disk-b-mdadm",
            "cryptsetup -q luksFormat /dev/md/raid1 --key-file /tmp/secret.key",
            "cryptsetup open /dev/md/raid1 crypted --key-file /tmp/secret.key --persistent",
            "mkfs.ext4 /dev/mapper/crypted",
            "mount /dev/mapper/crypted /",
            "mount /dev/md/boot /boot",
        ],
    );
}

#[test]
fn luks_interactive_login_reads_the_password_file_on_stdin() {
    assert_script(
        create_script(&fixture("luks-interactive-login")),
        &[
            "partition main",
            "mkfs.vfat /dev/disk/by-partlabel/disk-main-ESP",
            // luks.nix:16-20: passwordFile through a process substitution.
            "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-luks --key-file -",
            "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file - --persistent",
            "mkfs.ext4 /dev/mapper/crypted",
            "mount /dev/mapper/crypted /",
            "mount /dev/disk/by-partlabel/disk-main-ESP /boot",
        ],
    );
}

#[test]
fn mdadm_extra_args_and_a_table_inside_the_array() {
    let script = create_script(&example("mdadm-raid5-args"));
    assert_eq!(
        script[..3],
        [
            "partition disk1",
            "partition disk2",
            "mdadm --create /dev/md/raid5 --level=5 --raid-devices=2 --metadata=default --force --homehost=any --assume-clean /dev/disk/by-partlabel/disk-disk1-mdadm /dev/disk/by-partlabel/disk-disk2-mdadm",
        ]
    );
    assert!(script[3].starts_with("UNSUPPORTED disko.devices.mdadm.raid5.content: a partition table inside an mdadm array"), "{script:#?}");
    for name in ["mdadm", "mdadm-raid0"] {
        let script = create_script(&fixture(name));
        assert!(script.iter().any(|l| l.starts_with("mdadm --create")), "{script:#?}");
        assert!(script.iter().any(|l| l.starts_with("UNSUPPORTED")), "{script:#?}");
    }
}

#[test]
fn luks_btrfs_subvolumes_plans_luks_and_still_refuses_the_swap_file() {
    let script = create_script(&example("luks-btrfs-subvolumes"));
    assert_eq!(
        script[..5],
        [
            "partition main",
            "mkfs.vfat /dev/disk/by-partlabel/disk-main-ESP",
            "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-luks --key-file /tmp/secret.key",
            "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file /tmp/secret.key --persistent",
            "cryptsetup luksAddKey /dev/disk/by-partlabel/disk-main-luks /tmp/additionalSecret.key --key-file /tmp/secret.key",
        ]
    );
    assert!(script[5].starts_with("UNSUPPORTED"), "{script:#?}");
    assert_eq!(script[6], "mkfs.btrfs /dev/mapper/crypted");
}

#[test]
fn key_settings_and_extra_args_follow_disko() {
    let raw = serde_json::json!({"disk": {"main": {"device": "/dev/vda", "type": "disk", "content": {"type": "gpt", "partitions": {
        "crypt": {"size": "100%", "content": {"type": "luks", "name": "c",
            "extraFormatArgs": ["--type luks2", "--pbkdf=argon2id"],
            "extraOpenArgs": ["--timeout 10"],
            "settings": {"keyFile": "/k", "keyFileSize": 2048, "keyFileOffset": 1024, "bypassWorkqueues": true},
            "content": {"type": "swap"}}}}}}}});
    assert_script(
        create_script(&raw),
        &[
            "partition main",
            "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-crypt --type luks2 --pbkdf=argon2id --key-file /k --keyfile-size 2048 --keyfile-offset 1024",
            "cryptsetup open /dev/disk/by-partlabel/disk-main-crypt c --perf-no_read_workqueue --perf-no_write_workqueue --timeout 10 --key-file /k --keyfile-size 2048 --keyfile-offset 1024 --persistent",
            "mkswap /dev/mapper/c",
        ],
    );
}

#[test]
fn a_vg_on_an_array_comes_after_it() {
    // lvm_vg sorts before mdadm in disko's list; the dependency moves it.
    let raw = serde_json::json!({
        "disk": {
            "a": {"device": "/dev/vda", "type": "disk", "content": {"type": "gpt", "partitions": {"r": {"size": "100%", "content": {"type": "mdraid", "name": "md0"}}}}},
            "b": {"device": "/dev/vdb", "type": "disk", "content": {"type": "gpt", "partitions": {"r": {"size": "100%", "content": {"type": "mdraid", "name": "md0"}}}}}},
        "mdadm": {"md0": {"type": "mdadm", "level": 1, "content": {"type": "lvm_pv", "vg": "vg0"}}},
        "lvm_vg": {"vg0": {"type": "lvm_vg", "lvs": {"root": {"size": "50%VG", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/"}}, "half": {"size": "50%"}}}}
    });
    assert_script(
        create_script(&raw),
        &[
            "partition a",
            "partition b",
            "mdadm --create /dev/md/md0 --level=1 --raid-devices=2 --metadata=default --force --homehost=any /dev/disk/by-partlabel/disk-a-r /dev/disk/by-partlabel/disk-b-r",
            "pvcreate /dev/md/md0",
            "modprobe dm-snapshot",
            "vgcreate vg0 /dev/md/md0",
            "lvcreate --yes -l 50%FREE -n half vg0",
            "lvcreate --yes -l 50%VG -n root vg0",
            "mkfs.ext4 /dev/vg0/root",
            "mount /dev/vg0/root /",
        ],
    );
}

#[test]
fn a_vg_without_pvs_and_a_thinlv_without_a_pool_are_refused() {
    let raw = serde_json::json!({"lvm_vg": {"vg0": {"type": "lvm_vg", "lvs": {}}}});
    let err = plan(&Devices::from_raw(&raw).unwrap()).unwrap_err().to_string();
    assert!(err.contains("disko.devices.lvm_vg.vg0") && err.contains("lvm_pv"), "{err}");
    let raw = serde_json::json!({
        "disk": {"a": {"device": "/dev/vda", "type": "disk", "content": {"type": "gpt", "partitions": {"r": {"size": "100%", "content": {"type": "lvm_pv", "vg": "vg0"}}}}}},
        "lvm_vg": {"vg0": {"type": "lvm_vg", "lvs": {"t": {"size": "1G", "lvm_type": "thinlv"}}}}});
    let err = plan(&Devices::from_raw(&raw).unwrap()).unwrap_err().to_string();
    assert!(err.contains("disko.devices.lvm_vg.vg0.lvs.t.pool"), "{err}");
}
