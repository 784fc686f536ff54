//! Whole-command tests of `labprov disk` on loop devices, like disko's own:
//! format, mount twice, unmount twice, write a file, re-apply, the file
//! survives; blkid/findmnt show types, labels and options as specified.
//! They skip (with a SKIP line naming the test) without root or loop devices,
//! and fail instead under `LAB_REQUIRE_ALL=1`.

mod common;

use std::path::Path;
use std::process::Command;

use common::labprov;

fn skip_reason() -> Option<String> {
    if let Err(e) = common::loop_devices_available() {
        return Some(e);
    }
    for t in ["mkfs.ext4", "mkfs.vfat", "mkfs.btrfs", "mkswap", "blkid", "findmnt"] {
        if !common::have_tool(t) {
            return Some(format!("{t} is not installed"));
        }
    }
    None
}

const SPEC: &str = r#"{
  "disk": { "main": { "type": "disk", "device": "/dev/vda", "content": { "type": "gpt", "partitions": {
    "ESP": { "size": "64M", "type": "EF00", "content": { "type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"] } },
    "swap": { "size": "16M", "content": { "type": "swap" } },
    "root": { "size": "100%", "content": { "type": "btrfs", "extraArgs": ["-f"], "subvolumes": {
      "/root": { "mountpoint": "/", "mountOptions": ["compress=zstd", "noatime"] },
      "/home": { "mountpoint": "/home" } } } } } } } },
  "nodev": { "/tmp": { "fsType": "tmpfs", "mountOptions": ["size=16M"] } }
}"#;

fn findmnt(target: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-rno", "FSTYPE,OPTIONS", "--mountpoint"])
        .arg(target)
        .output()
        .expect("findmnt");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn apply_mount_unmount_reapply_keeps_data() {
    if let Some(reason) = skip_reason() {
        common::skip("apply_mount_unmount_reapply_keeps_data", &reason);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.json");
    // Some kernels (this CI's) cannot mount vfat: the ESP is then ext4, and
    // the test says so.
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let esp = if fs.contains("vfat") {
        "vfat"
    } else {
        eprintln!("NOTE: apply_mount_unmount_reapply_keeps_data: the kernel has no vfat; the ESP is ext4 here");
        "ext4"
    };
    std::fs::write(
        &spec,
        SPEC.replace("\"format\": \"vfat\"", &format!("\"format\": \"{esp}\"")).replace(
            "[\"umask=0077\"]",
            if esp == "vfat" { "[\"umask=0077\"]" } else { "[\"noatime\"]" },
        ),
    )
    .unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(512 << 20).unwrap();
    let root = dir.path().join("mnt");
    let spec_s = spec.display().to_string();
    let disk = format!("main={}", img.display());
    let root_s = root.display().to_string();
    let base = ["--spec", spec_s.as_str(), "--disk", disk.as_str(), "--root", root_s.as_str()];
    let run = |cmd: &str, extra: &[&str]| {
        let mut a = vec!["disk", cmd];
        a.extend_from_slice(&base);
        a.extend_from_slice(extra);
        let (ok, out, err) = labprov(&a);
        if !ok {
            let mut u = vec!["disk", "unmount"];
            u.extend_from_slice(&base);
            let _ = labprov(&u);
            panic!("labprov disk {cmd} failed:\n{out}\n{err}");
        }
        out
    };
    let cleanup = || {
        let mut a = vec!["disk", "unmount"];
        a.extend_from_slice(&base);
        let _ = labprov(&a);
    };

    let out = run("apply", &["--yes"]);
    assert!(out.contains("done mount /home"), "{out}");
    let check = || -> Result<(), String> {
        let root_mnt = findmnt(&root);
        if !root_mnt.starts_with("btrfs ")
            || !root_mnt.contains("subvol=/root")
            || !root_mnt.contains("compress=zstd")
            || !root_mnt.contains("noatime")
        {
            return Err(format!("/ is mounted as `{root_mnt}`"));
        }
        let boot = findmnt(&root.join("boot"));
        let boot_ok = if esp == "vfat" {
            boot.starts_with("vfat ") && boot.contains("fmask=0077")
        } else {
            boot.starts_with("ext4 ") && boot.contains("noatime")
        };
        if !boot_ok {
            return Err(format!("/boot is mounted as `{boot}`"));
        }
        let tmp = findmnt(&root.join("tmp"));
        if !tmp.starts_with("tmpfs ") {
            return Err(format!("/tmp is mounted as `{tmp}`"));
        }
        Ok(())
    };
    if let Err(e) = check() {
        cleanup();
        panic!("{e}");
    }
    // The partitions carry disko's labels and the filesystems the spec asks
    // for (read from the image, so it works without partition nodes).
    let table: serde_json::Value = serde_json::from_slice(
        &Command::new("sfdisk").arg("--json").arg(&img).output().unwrap().stdout,
    )
    .unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().cloned().unwrap_or_default();
    let blkid = |i: usize| {
        let offset = parts[i]["start"].as_u64().unwrap_or(0) * 512;
        let out = Command::new("blkid")
            .args(["-p", "-O", &offset.to_string(), "-o", "value", "-s", "TYPE"])
            .arg(&img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let names: Vec<String> =
        parts.iter().map(|p| p["name"].as_str().unwrap_or_default().to_string()).collect();
    let got = (names, blkid(0), blkid(1), blkid(2));
    let want = (
        vec![
            "disk-main-ESP".to_string(),
            "disk-main-swap".to_string(),
            "disk-main-root".to_string(),
        ],
        esp.to_string(),
        "swap".to_string(),
        "btrfs".to_string(),
    );
    if got != want {
        cleanup();
        panic!("image shows {got:?}, want {want:?}");
    }
    // mount twice is a no-op
    let out = run("mount", &[]);
    assert!(!out.contains("done"), "second mount did something: {out}");
    // A new table is refused while btrfs is mounted from the disk. mountinfo
    // names btrfs by an anonymous device number, so only the kernel's
    // exclusive-open check can see it: leave nothing else mounted.
    for sub in ["tmp", "boot"] {
        assert!(Command::new("umount").arg(root.join(sub)).status().unwrap().success());
    }
    let before = std::fs::read(&img).map(|b| b[..1 << 20].to_vec()).unwrap();
    // Another partition name: the table must be rewritten (disko keeps
    // existing partitions' ranges, not their names).
    let renamed = dir.path().join("renamed.json");
    std::fs::write(
        &renamed,
        std::fs::read_to_string(&spec).unwrap().replace("\"ESP\":", "\"EFI\":"),
    )
    .unwrap();
    let (ok, out, err) = labprov(&[
        "disk",
        "apply",
        "--spec",
        renamed.to_str().unwrap(),
        "--disk",
        &disk,
        "--root",
        &root_s,
        "--only",
        "partition",
        "--yes",
    ]);
    let after = std::fs::read(&img).map(|b| b[..1 << 20].to_vec()).unwrap();
    if ok || !err.contains("in use") || before != after {
        cleanup();
        panic!("a new table was not refused on a disk with btrfs mounted (ok={ok}, table changed={}):\n{out}{err}", before != after);
    }
    let out = run("mount", &[]);
    assert!(out.contains("done mount /boot"), "{out}");
    std::fs::write(root.join("home/keep.txt"), "survives").unwrap();
    run("unmount", &[]);
    let out = run("unmount", &[]);
    assert!(!out.contains("done unmount"), "second unmount did something: {out}");
    // re-apply: nothing formatted, the file is still there
    let out = run("apply", &["--yes"]);
    assert!(
        !out.contains("done format") && !out.contains("done partition"),
        "re-apply changed the disk: {out}"
    );
    let kept = std::fs::read_to_string(root.join("home/keep.txt"));
    cleanup();
    assert_eq!(kept.ok().as_deref(), Some("survives"));
}

#[test]
fn refuses_a_disk_holding_something_else_without_wipe() {
    if let Some(reason) = skip_reason() {
        common::skip("refuses_a_disk_holding_something_else_without_wipe", &reason);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(128 << 20).unwrap();
    assert!(Command::new("mkfs.ext4").arg("-q").arg(&img).status().unwrap().success());
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, SPEC).unwrap();
    let disk = format!("main={}", img.display());
    let (ok, _, err) = labprov(&[
        "disk",
        "apply",
        "--spec",
        spec.to_str().unwrap(),
        "--disk",
        &disk,
        "--only",
        "partition",
        "--yes",
    ]);
    assert!(!ok && err.contains("--wipe") && err.contains("ext4"), "{err}");
}
