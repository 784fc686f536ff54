//! `labimg flash`, `verify` and `devices` end to end, on regular files and on
//! loop devices: written targets match the image, corruption is caught and
//! named, every refusal comes before a single byte is written, and block
//! maps travel both ways between labimg and bmaptool.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const MIB: u64 = 1 << 20;

/// A 64 MiB sparse test image: an MBR-ish first block, scattered data, and
/// an unaligned tail, so ranges, holes and the last partial block all occur.
fn test_image(dir: &Path) -> PathBuf {
    let img = dir.join("test.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(64 * MIB + 1536).unwrap();
    let mut x: u32 = 12345;
    let mut data = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    };
    for (at, len) in [
        (0, 4096),
        (MIB, 3 * MIB as usize),
        (20 * MIB + 8192, 12288),
        (40 * MIB, 5 * MIB as usize),
        (64 * MIB, 1536),
    ] {
        f.write_all_at(&data(len), at).unwrap();
    }
    img
}

fn digest(path: &Path, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    fs::File::open(path).unwrap().read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn flash(args: &[&str], img: &Path, target: &Path) -> std::process::Output {
    let mut c = labimg();
    c.arg("flash").arg(img).arg(target).args(args).stdin(Stdio::null());
    run(&mut c)
}

struct Loop(String);

impl Loop {
    /// A loop device over `file` (partition scanning on), or None with a SKIP.
    fn attach(file: &Path, test: &str) -> Option<Loop> {
        if !nix::unistd::geteuid().is_root() {
            skip(test, "loop devices need root");
            return None;
        }
        match Command::new("losetup").args(["-f", "--show", "-P"]).arg(file).output() {
            Ok(o) if o.status.success() => {
                Some(Loop(String::from_utf8_lossy(&o.stdout).trim().to_string()))
            }
            Ok(o) => {
                skip(
                    test,
                    &format!("no loop device: {}", String::from_utf8_lossy(&o.stderr).trim()),
                );
                None
            }
            Err(e) => {
                skip(test, &format!("losetup is not installed: {e}"));
                None
            }
        }
    }
    fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn a_regular_file_target_matches_with_and_without_a_block_map() {
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let len = fs::metadata(&img).unwrap().len();
    // Without a block map: the image's holes say what to write.
    let out = tmp.path().join("a.raw");
    let res = flash(&["--yes", "--json"], &img, &out);
    assert!(res.status.success(), "{}", stderr(&res));
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(report["verify"], "ok");
    assert_eq!(report["mappedFrom"], "holes of the image file");
    assert!(report["bytesSkipped"].as_u64().unwrap() > 50 * MIB, "{report}");
    assert!(digest(&out, len) == digest(&img, len));
    // --no-bmap takes the same path; verify re-reads it separately.
    let out2 = tmp.path().join("b.raw");
    ok(labimg().args(["flash", "--yes"]).arg(&img).arg(&out2).arg("--no-bmap"));
    ok(labimg().args(["verify"]).arg(&img).arg(&out2));
    assert!(digest(&out2, len) == digest(&img, len));
}

#[test]
fn a_zstd_image_streams_through() {
    let t = "a_zstd_image_streams_through";
    if !have("zstd") {
        return skip(t, "zstd is not installed (apt-get install zstd)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let len = fs::metadata(&img).unwrap().len();
    ok(Command::new("zstd")
        .args(["-q", "-3"])
        .arg(&img)
        .arg("-o")
        .arg(tmp.path().join("test.img.zst")));
    let zst = tmp.path().join("test.img.zst");
    // Without a map: every block; with bmaptool's map beside it: mapped ranges only.
    let out = tmp.path().join("z1.raw");
    ok(labimg().args(["flash", "--yes"]).arg(&zst).arg(&out));
    assert!(digest(&out, len) == digest(&img, len));
    if have("bmaptool") {
        ok(Command::new("bmaptool")
            .args(["create", "-o"])
            .arg(tmp.path().join("test.img.bmap"))
            .arg(&img));
        let out = tmp.path().join("z2.raw");
        let res = ok(labimg().args(["flash", "--yes", "--json"]).arg(&zst).arg(&out));
        let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
        assert_eq!(report["mappedFrom"], "block map");
        assert!(digest(&out, len) == digest(&img, len));
        ok(labimg().arg("verify").arg(&zst).arg(&out));
    }
}

#[test]
fn bmaps_travel_both_ways_with_bmaptool() {
    let t = "bmaps_travel_both_ways_with_bmaptool";
    if !have("bmaptool") {
        return skip(t, "bmaptool is not installed (apt-get install bmap-tools)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let len = fs::metadata(&img).unwrap().len();
    // Theirs into ours.
    let theirs = tmp.path().join("theirs.bmap");
    ok(Command::new("bmaptool").args(["create", "-o"]).arg(&theirs).arg(&img));
    let out = tmp.path().join("ours.raw");
    let res =
        ok(labimg().args(["flash", "--yes", "--json", "--bmap"]).arg(&theirs).arg(&img).arg(&out));
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(report["mappedFrom"], "block map");
    assert!(digest(&out, len) == digest(&img, len));
    // Ours into theirs: a built image's .bmap is checked in tests/build.rs;
    // here a bmap labimg derives for a plain image file.
    let (bmap, _) = image_builder::bmap::digest(
        &fs::File::open(&img).unwrap(),
        len,
        lab_cli::progress::Progress::hidden(),
    )
    .unwrap();
    let ours = tmp.path().join("ours.bmap");
    fs::write(&ours, bmap.to_xml()).unwrap();
    let copy = tmp.path().join("theirs.raw");
    ok(Command::new("bmaptool").args(["copy", "--bmap"]).arg(&ours).arg(&img).arg(&copy));
    assert!(digest(&copy, len) == digest(&img, len));
    // A damaged map is refused before anything is written.
    let text = fs::read_to_string(&theirs).unwrap().replacen("<Range", "<Range x=\"1\"", 1);
    fs::write(&theirs, text).unwrap();
    let out = tmp.path().join("never.raw");
    let res = run(labimg().args(["flash", "--yes", "--bmap"]).arg(&theirs).arg(&img).arg(&out));
    assert!(!res.status.success() && stderr(&res).contains("damaged"), "{}", stderr(&res));
    assert!(!out.exists());
}

#[test]
fn a_loop_device_target_matches_and_corruption_is_named() {
    let t = "a_loop_device_target_matches_and_corruption_is_named";
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let len = fs::metadata(&img).unwrap().len();
    let backing = tmp.path().join("disk.raw");
    fs::File::create(&backing).unwrap().set_len(80 * MIB).unwrap();
    let Some(dev) = Loop::attach(&backing, t) else {
        return;
    };
    let res = flash(&["--yes", "--json"], &img, dev.path());
    assert!(res.status.success(), "{}", stderr(&res));
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(report["target"]["kind"], "loop device");
    assert_eq!(report["verify"], "ok");
    assert!(digest(dev.path(), len) == digest(&img, len));
    // Corrupt one byte on the device, past its caches, then verify.
    let f = fs::OpenOptions::new().write(true).open(dev.path()).unwrap();
    let at = 40 * MIB + 12345;
    let mut b = [0u8; 1];
    fs::File::open(&img).unwrap().read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let res = run(labimg().arg("verify").arg(&img).arg(dev.path()));
    assert_eq!(res.status.code(), Some(3), "{}", stderr(&res));
    let err = stderr(&res);
    assert!(
        err.contains("differs from the image") && err.contains(&format!("bytes {}", 40 * MIB)),
        "{err}"
    );
    // Writing it again repairs it.
    ok(labimg().args(["flash", "--yes"]).arg(&img).arg(dev.path()).stdin(Stdio::null()));
    assert!(digest(dev.path(), len) == digest(&img, len));
}

/// A target that must be refused: its bytes are the same afterwards.
fn refused(args: &[&str], img: &Path, target: &Path, expect: &str) {
    let before = fs::read(target).ok();
    let res = flash(args, img, target);
    assert!(!res.status.success(), "not refused: {}", target.display());
    let err = stderr(&res);
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(fs::read(target).ok() == before, "{} changed although refused", target.display());
}

#[test]
fn refusals_come_before_a_single_byte_is_written() {
    let t = "refusals_come_before_a_single_byte_is_written";
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());

    // No confirmation: no terminal and no --yes.
    let file = tmp.path().join("target.raw");
    fs::write(&file, vec![0xa5u8; MIB as usize]).unwrap();
    refused(&[], &img, &file, "pass --yes");

    // Too small (a loop device over 16 MiB).
    let small = tmp.path().join("small.raw");
    fs::write(&small, vec![0x5au8; 16 * MIB as usize]).unwrap();
    let Some(small_dev) = Loop::attach(&small, t) else {
        return;
    };
    refused(&["--yes"], &img, small_dev.path(), "the image needs");

    // Mounted: a loop device with a filesystem on it, mounted.
    let mounted = tmp.path().join("mounted.raw");
    fs::File::create(&mounted).unwrap().set_len(96 * MIB).unwrap();
    let Some(dev) = Loop::attach(&mounted, t) else {
        return;
    };
    ok(Command::new("mkfs.ext4").arg("-q").arg(dev.path()));
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Read-only, so the mount itself writes nothing we could mistake for ours.
    let before = fs::read(&mounted).unwrap();
    ok(Command::new("mount").args(["-o", "ro"]).arg(dev.path()).arg(&mnt));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(mnt.clone());
    let res = flash(&["--yes"], &img, dev.path());
    assert!(!res.status.success() && stderr(&res).contains("it is mounted"), "{}", stderr(&res));
    drop(guard);
    assert!(fs::read(&mounted).unwrap() == before, "a mounted device was written to");

    // The disk holding the running system, even with every override.
    let root = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| {
            l.split(" - ").nth(1).and_then(|r| r.split_whitespace().nth(1)).map(str::to_string)
        })
        .filter(|s| s.starts_with("/dev/"));
    match root {
        Some(root) => {
            // Resolve a partition to its disk: refusing the partition is the
            // other message; the system check is on the whole disk.
            let res = flash(&["--yes", "--allow-fixed"], &img, Path::new(&root));
            assert!(!res.status.success());
            let err = stderr(&res);
            assert!(err.contains("running system") || err.contains("flash the whole disk"), "{err}");
        }
        None => skip(t, "the root filesystem is not on a /dev block device here; system-disk refusal not exercised"),
    }

    // A fixed (non-removable) disk without --allow-fixed.
    let fixed = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            !n.starts_with("loop")
                && fs::read_to_string(format!("/sys/block/{n}/removable"))
                    .is_ok_and(|r| r.trim() == "0")
                && fs::read_to_string(format!("/sys/block/{n}/size")).is_ok_and(|s| s.trim() == "0")
        });
    match fixed {
        // An empty fixed disk (zram0 here): refused as fixed first, then as too small.
        Some(name) => {
            let dev = PathBuf::from(format!("/dev/{name}"));
            refused(&["--yes"], &img, &dev, "--allow-fixed");
            refused(&["--yes", "--allow-fixed"], &img, &dev, "the image needs");
        }
        None => skip(t, "no empty non-removable block device to show the --allow-fixed refusal on"),
    }
}

#[test]
fn dry_run_checks_everything_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let target = tmp.path().join("t.raw");
    let res = ok(labimg().args(["flash", "--dry-run", "--json"]).arg(&img).arg(&target));
    let plan: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(plan["dryRun"], true);
    assert!(!target.exists());
    let res = run(labimg().args(["flash", "--dry-run"]).arg(&img).arg("/dev/nonexistent-disk"));
    assert!(!res.status.success() && stderr(&res).contains("labimg devices"), "{}", stderr(&res));
}

#[test]
fn ctrl_c_says_the_target_is_incomplete_and_a_rerun_repairs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("big.img");
    fs::write(&img, vec![0x3cu8; 600 * MIB as usize]).unwrap();
    let target = tmp.path().join("t.raw");
    let child = labimg()
        .args(["flash", "--yes", "--no-bmap"])
        .arg(&img)
        .arg(&target)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let res = child.wait_with_output().unwrap();
    assert_eq!(res.status.code(), Some(130), "{}", stderr(&res));
    assert!(stderr(&res).contains("is incomplete"), "{}", stderr(&res));
    ok(labimg().args(["flash", "--yes", "--no-bmap"]).arg(&img).arg(&target));
    ok(labimg().arg("verify").arg(&img).arg(&target));
}

#[test]
fn devices_lists_disks_as_json() {
    let res = ok(labimg().args(["devices", "--all", "--json"]));
    let disks: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let disks = disks.as_array().unwrap();
    // The disk holding / is listed and marked as the system's.
    if let Some(root) =
        disks.iter().find(|d| d["mounts"].as_array().unwrap().iter().any(|m| m == "/"))
    {
        assert_eq!(root["system"], true);
    }
    let plain = ok(labimg().arg("devices"));
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("mounted: /\n"));
}

#[test]
fn a_multi_frame_zstd_image_is_never_written_short() {
    let t = "a_multi_frame_zstd_image_is_never_written_short";
    if !have("zstd") {
        return skip(t, "zstd is not installed (apt-get install zstd)");
    }
    let tmp = tempfile::tempdir().unwrap();
    // Two frames, as pzstd or `cat a.zst b.zst` make: the first declares 1 MiB.
    fs::write(tmp.path().join("a"), vec![1u8; MIB as usize]).unwrap();
    fs::write(tmp.path().join("b"), vec![2u8; 2 * MIB as usize]).unwrap();
    for n in ["a", "b"] {
        ok(Command::new("zstd").args(["-q", "-f"]).arg(tmp.path().join(n)));
    }
    let mut both = fs::read(tmp.path().join("a.zst")).unwrap();
    both.extend(fs::read(tmp.path().join("b.zst")).unwrap());
    let zst = tmp.path().join("ab.img.zst");
    fs::write(&zst, both).unwrap();
    let res = flash(&["--yes"], &zst, &tmp.path().join("out.raw"));
    assert!(!res.status.success(), "a truncated write was reported as success");
    assert!(stderr(&res).contains("multi-frame"), "{}", stderr(&res));
}

#[test]
fn a_block_map_of_another_image_is_named_as_such_not_blamed_on_the_card() {
    let t = "a_block_map_of_another_image_is_named_as_such_not_blamed_on_the_card";
    if !have("bmaptool") {
        return skip(t, "bmaptool is not installed (apt-get install bmap-tools)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let other = tmp.path().join("other.img");
    let mut bytes = fs::read(&img).unwrap();
    bytes[(MIB + 100) as usize] ^= 0xff;
    fs::write(&other, bytes).unwrap();
    let map = tmp.path().join("test.img.bmap");
    ok(Command::new("bmaptool").args(["create", "-o"]).arg(&map).arg(&img));
    let res =
        flash(&["--yes", "--bmap", map.to_str().unwrap()], &other, &tmp.path().join("out.raw"));
    assert_eq!(res.status.code(), Some(1), "{}", stderr(&res));
    let err = stderr(&res);
    assert!(err.contains("does not belong to") && !err.contains("counterfeit"), "{err}");
}

#[test]
fn a_new_file_target_is_private_and_an_empty_image_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let out = tmp.path().join("vm-disk.raw");
    ok(labimg().args(["flash", "--yes"]).arg(&img).arg(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o077,
        0,
        "the copy may hold a host key"
    );
    let empty = tmp.path().join("empty.img");
    fs::write(&empty, b"").unwrap();
    let res = flash(&["--yes"], &empty, &tmp.path().join("e.raw"));
    assert!(!res.status.success() && stderr(&res).contains("empty"), "{}", stderr(&res));
}

#[test]
fn a_device_that_changes_while_the_operator_is_asked_gets_nothing() {
    let t = "a_device_that_changes_while_the_operator_is_asked_gets_nothing";
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let backing = tmp.path().join("disk.raw");
    fs::write(&backing, vec![0x3cu8; 80 * MIB as usize]).unwrap();
    let Some(dev) = Loop::attach(&backing, t) else {
        return;
    };
    let mut image = image_builder::flash::Image::open(&img, None, false).unwrap();
    // While the question is on screen the "card" becomes another one: here
    // the loop device grows, as a different card in the same reader would
    // show another size.
    let swap = |target: &image_builder::flash::Target| {
        assert_eq!(target.disk.as_ref().map(|d| d.size), Some(80 * MIB));
        fs::OpenOptions::new().write(true).open(&backing).unwrap().set_len(96 * MIB).unwrap();
        ok(Command::new("losetup").arg("-c").arg(dev.path()));
        Ok(())
    };
    let opts = image_builder::flash::FlashOptions {
        verify: true,
        allow_fixed: false,
        progress: lab_cli::progress::Progress::hidden(),
        confirm: &swap,
    };
    let err = match image_builder::flash::flash(&mut image, dev.path(), &opts) {
        Ok(_) => panic!("a device that changed after confirmation was written"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("changed while you were asked")
            && err.contains(&format!("{} bytes then", 80 * MIB)),
        "{err}"
    );
    let after = fs::read(&backing).unwrap();
    assert!(
        after[..80 * MIB as usize].iter().all(|&b| b == 0x3c),
        "bytes were written to the changed device"
    );
}

#[test]
fn a_file_target_swapped_for_a_link_while_asked_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let img = test_image(tmp.path());
    let target = tmp.path().join("vm-disk.raw");
    fs::write(&target, vec![0x11u8; MIB as usize]).unwrap();
    let other = tmp.path().join("precious.raw");
    fs::write(&other, vec![0x22u8; 80 * MIB as usize]).unwrap();
    let mut image = image_builder::flash::Image::open(&img, None, false).unwrap();
    // While the question is on screen, the file becomes a link elsewhere.
    let swap = |_: &image_builder::flash::Target| {
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&other, &target).unwrap();
        Ok(())
    };
    let opts = image_builder::flash::FlashOptions {
        verify: true,
        allow_fixed: false,
        progress: lab_cli::progress::Progress::hidden(),
        confirm: &swap,
    };
    let err = match image_builder::flash::flash(&mut image, &target, &opts) {
        Ok(_) => panic!("the image went through a link that appeared after the checks"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&target.display().to_string()), "{err}");
    assert!(fs::read(&other).unwrap().iter().all(|&b| b == 0x22), "the link's target was written");
}
