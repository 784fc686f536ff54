//! `labimg build` end to end: images are read back with the standard tools
//! (sfdisk, fsck.vfat, e2fsck, mtools, debugfs, bmaptool), built twice for
//! byte equality, and refused cleanly on bad input.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("nixpi.manifest.json")).unwrap()).unwrap()
}

#[test]
fn image_reads_back_with_the_standard_tools() {
    let t = "image_reads_back_with_the_standard_tools";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    for tool in ["sfdisk", "fsck.vfat", "e2fsck", "mcopy", "debugfs", "bmaptool", "ssh-keygen"] {
        if !have(tool) {
            return skip(t, &format!("{tool} is not installed"));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let out = tmp.path().join("out");
    ok(&mut build_cmd(&standin, &fw, Some(&key), &out));
    let img = out.join("nixpi.img");
    let m = manifest(&out);

    // Partition table: MBR, FAT at 8 MiB, ext4 after it to the end (bootable:
    // U-Boot looks for extlinux.conf there), 1 MiB aligned.
    let table: serde_json::Value =
        serde_json::from_str(&tool_output(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let t_ = &table["partitiontable"];
    assert_eq!(t_["label"], "dos");
    assert_eq!(t_["id"], m["image"]["diskId"]);
    let parts = t_["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0]["start"].as_u64(), parts[0]["size"].as_u64()), (Some(16384), Some(61440)));
    assert_eq!(parts[0]["type"], "b");
    assert!(parts[0].get("bootable").is_none());
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(parts[1]["bootable"], true);
    let (p2_start, p2_size) =
        (parts[1]["start"].as_u64().unwrap(), parts[1]["size"].as_u64().unwrap());
    assert_eq!(p2_start, 16384 + 61440);
    assert_eq!(p2_start % 2048, 0, "root partition is 1 MiB aligned");
    assert_eq!(
        (p2_start + p2_size) * 512,
        fs::metadata(&img).unwrap().len(),
        "root runs to the end"
    );

    // FAT: clean, labelled, every firmware file byte-equal to its source.
    let fat = tmp.path().join("fat.img");
    let bytes = fs::read(&img).unwrap();
    fs::write(&fat, &bytes[(8 * MIB) as usize..(38 * MIB) as usize]).unwrap();
    tool_output(Command::new("fsck.vfat").arg("-n").arg(&fat));
    let label = tool_output(Command::new("mlabel").args(["-s", "-i"]).arg(&fat).arg("::"));
    assert!(label.contains("FIRMWARE"), "{label}");
    let expected = [
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "bcm2711-rpi-cm4-io.dtb",
    ];
    for name in expected {
        let copied = tmp.path().join(format!("copied-{name}"));
        tool_output(
            Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(&fat)
                .arg(format!("::{name}"))
                .arg(&copied),
        );
        assert_eq!(fs::read(&copied).unwrap(), fs::read(fw.join(name)).unwrap(), "{name}");
    }
    let config = tool_output(Command::new("mtype").arg("-i").arg(&fat).arg("::config.txt"));
    assert!(
        config.contains("kernel=u-boot-rpi4.bin") && config.contains("arm_64bit=1"),
        "{config}"
    );
    let uboot = tmp.path().join("uboot");
    tool_output(
        Command::new("mcopy").arg("-n").arg("-i").arg(&fat).arg("::u-boot-rpi4.bin").arg(&uboot),
    );
    assert_eq!(
        fs::read(&uboot).unwrap(),
        fs::read(standin.join("u-boot/rpi_4/u-boot.bin")).unwrap()
    );
    let dir = tool_output(Command::new("mdir").args(["-b", "-i"]).arg(&fat).arg("::"));
    assert!(!dir.contains("bootcode.bin"), "Pi 3 files stay off a Pi 4 image: {dir}");

    // ext4: clean, labelled, key root-owned 0600, .pub beside it.
    let root = format!("{}?offset={}", img.display(), p2_start * 512);
    tool_output(Command::new("e2fsck").arg("-fn").arg(&root));
    let stat = tool_output(
        Command::new("debugfs").args(["-R", "stat /etc/ssh/ssh_host_ed25519_key"]).arg(&root),
    );
    assert!(stat.contains("Mode:  0600"), "{stat}");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    let public = tool_output(
        Command::new("debugfs").args(["-R", "cat /etc/ssh/ssh_host_ed25519_key.pub"]).arg(&root),
    );
    let expected_pub = fs::read_to_string(key.with_extension("pub")).unwrap();
    assert_eq!(public.split_whitespace().nth(1), expected_pub.split_whitespace().nth(1));
    let private = tool_output(
        Command::new("debugfs").args(["-R", "cat /etc/ssh/ssh_host_ed25519_key"]).arg(&root),
    );
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let dumpe2fs = tool_output(Command::new("dumpe2fs").arg("-h").arg(&root));
    assert!(dumpe2fs.contains("NIXOS_SD") && !dumpe2fs.contains("orphan_file"), "{dumpe2fs}");

    // The image holds a key: only its owner may read it. The manifest has
    // the public key and fingerprint, never the private key.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&img).unwrap().permissions().mode() & 0o777, 0o600);
    let fp = tool_output(Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")));
    assert_eq!(m["hostKey"]["fingerprint"].as_str(), fp.split_whitespace().nth(1));
    let manifest_text = fs::read_to_string(out.join("nixpi.manifest.json")).unwrap();
    assert!(!manifest_text.contains("PRIVATE KEY"));

    // The .sha256 is sha256sum's format and correct.
    tool_output(Command::new("sha256sum").arg("-c").arg("nixpi.img.sha256").current_dir(&out));

    // bmaptool copies the image with our .bmap (verifying every range's checksum).
    let copy = tmp.path().join("copy.img");
    fs::File::create(&copy).unwrap().set_len(fs::metadata(&img).unwrap().len()).unwrap();
    tool_output(
        Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(out.join("nixpi.img.bmap"))
            .arg(&img)
            .arg(&copy),
    );
    assert!(fs::read(&copy).unwrap() == bytes, "bmaptool's copy equals the image");

    // inspect reads it all back.
    let inspect: serde_json::Value =
        serde_json::from_slice(&ok(labimg().args(["inspect", "--json"]).arg(&img)).stdout).unwrap();
    assert_eq!(inspect["hostKey"]["mode"], "0600");
    assert_eq!(inspect["hostKey"]["uid"], 0);
    assert_eq!(inspect["hostKey"]["fingerprint"], m["hostKey"]["fingerprint"]);
    assert_eq!(inspect["partitions"][0]["label"], "FIRMWARE");
    assert_eq!(inspect["partitions"][1]["label"], "NIXOS_SD");
}

#[test]
fn same_inputs_give_a_byte_identical_image() {
    let t = "same_inputs_give_a_byte_identical_image";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    // The second build reads a copy of the tree: other inodes, other atimes
    // and ctimes, another path.
    let copy = tmp.path().join("rootfs-copy");
    tool_output(Command::new("cp").arg("-a").arg(standin.join("rootfs")).arg(&copy));
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    ok(build_cmd(&standin, &fw, Some(&key), &a).env("SOURCE_DATE_EPOCH", "1700000000"));
    ok(build_from(&copy, &standin, &fw, Some(&key), &b).env("SOURCE_DATE_EPOCH", "1700000000"));
    let (ia, ib) = (fs::read(a.join("nixpi.img")).unwrap(), fs::read(b.join("nixpi.img")).unwrap());
    assert!(ia == ib, "two builds from the same inputs differ");
    assert_eq!(
        fs::read(a.join("nixpi.img.bmap")).unwrap(),
        fs::read(b.join("nixpi.img.bmap")).unwrap()
    );
    // Another SOURCE_DATE_EPOCH is another input.
    ok(build_cmd(&standin, &fw, Some(&key), &c).env("SOURCE_DATE_EPOCH", "1700000001"));
    assert!(fs::read(c.join("nixpi.img")).unwrap() != ia);
}

#[test]
fn a_tar_root_tree_gives_the_same_filesystem_content() {
    let t = "a_tar_root_tree_gives_the_same_filesystem_content";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("root.tar");
    tool_output(
        Command::new("tar").arg("-C").arg(standin.join("rootfs")).arg("-cf").arg(&tar).arg("."),
    );
    let out = tmp.path().join("out");
    ok(&mut build_from(&tar, &standin, &fw, None, &out));
    let root = format!("{}?offset={}", out.join("nixpi.img").display(), 38 * MIB);
    tool_output(Command::new("e2fsck").arg("-fn").arg(&root));
    let ls = tool_output(Command::new("debugfs").args(["-R", "ls -l /sbin"]).arg(&root));
    assert!(ls.contains("init"), "{ls}");
    assert!(labimg_scratch_gone(&out));
    // No key given: the image is not secret and says the first boot makes one.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(out.join("nixpi.img")).unwrap().permissions().mode() & 0o777, 0o644);
    assert!(manifest(&out)["hostKey"].is_null());
}

fn labimg_scratch_gone(out: &Path) -> bool {
    listing(out) == ["nixpi.img", "nixpi.img.bmap", "nixpi.img.sha256", "nixpi.manifest.json"]
}

#[test]
fn a_non_root_builder_still_makes_root_owned_files() {
    let t = "a_non_root_builder_still_makes_root_owned_files";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() || !have("setpriv") {
        return skip(t, "needs root (to drop to the `nobody` user with setpriv)");
    }
    let tmp = tempfile::Builder::new().prefix("labimg-nonroot").tempdir_in("/tmp").unwrap();
    let work = tmp.path();
    tool_output(Command::new("cp").arg("-a").arg(standin.join("rootfs")).arg(work.join("rootfs")));
    inputs_for_another_user(work, &standin, &fw);
    let key = test_key(work);
    tool_output(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(work));
    fs::set_permissions(work, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key_arg = key.to_string_lossy().into_owned();
    let out = labimg_as_nobody(
        work,
        &[
            "build",
            "nixpi",
            "--rootfs",
            "rootfs",
            "--bootloader",
            "u-boot.bin",
            "--firmware-dir",
            "fw",
            "--out",
            "out",
            "--host-key",
            &key_arg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let root = format!("{}?offset={}", work.join("out/nixpi.img").display(), 38 * MIB);
    tool_output(Command::new("e2fsck").arg("-fn").arg(&root));
    // The tree's files belong to `nobody` on disk; in the image, to root.
    let ls = tool_output(Command::new("debugfs").args(["-R", "ls -l /bin"]).arg(&root));
    let nobody = tool_output(Command::new("id").args(["-u", "nobody"])).trim().to_string();
    for line in ls.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[3], cols[4]), ("0", "0"), "not root-owned (nobody is {nobody}): {line}");
    }
    let stat = tool_output(
        Command::new("debugfs").args(["-R", "stat /etc/ssh/ssh_host_ed25519_key"]).arg(&root),
    );
    assert!(stat.contains("User:     0   Group:     0") && stat.contains("Mode:  0600"), "{stat}");
}

#[test]
fn tampered_firmware_is_refused_and_nothing_is_written() {
    let t = "tampered_firmware_is_refused_and_nothing_is_written";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("fw");
    fs::create_dir(&bad).unwrap();
    for e in fs::read_dir(&fw).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let mut start4 = fs::read(bad.join("start4.elf")).unwrap();
    start4[1000] ^= 0xff;
    fs::write(bad.join("start4.elf"), start4).unwrap();
    let out = tmp.path().join("out");
    let res = run(&mut build_cmd(&standin, &bad, None, &out));
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("refusing firmware file") && err.contains("start4.elf"), "{err}");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));
    // `firmware verify` says the same without building.
    let v =
        run(labimg().args(["firmware", "verify", "--board", "rpi4", "--firmware-dir"]).arg(&bad));
    assert!(!v.status.success() && stderr(&v).contains("start4.elf"));
    ok(labimg().args(["firmware", "verify", "--board", "rpi4", "--firmware-dir"]).arg(&fw));
}

fn facts_with(host_extra: &str) -> String {
    format!(
        r#"{{ hosts = {{ pi = {{ name = "pi"; system = "aarch64-linux"; class = "nixos"; sshHostKey = null; {host_extra} }}; }}; }}"#
    )
}

/// Runs a build that must fail; returns stderr after checking nothing was left.
fn refused(
    lab: Option<&Path>,
    host: &str,
    rootfs: &Path,
    fw: &Path,
    uboot: &Path,
    out: &Path,
) -> String {
    let mut cmd = labimg();
    if let Some(lab) = lab {
        cmd.env("LAB_ROOT", lab);
    }
    cmd.args(["build", host, "--rootfs"]).arg(rootfs).arg("--bootloader").arg(uboot);
    cmd.arg("--firmware-dir").arg(fw).arg("--out").arg(out);
    let res = run(&mut cmd);
    assert!(!res.status.success(), "expected a refusal: {cmd:?}");
    let left: Vec<String> = listing(out).into_iter().filter(|n| n != "keep").collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", out.display());
    let err = stderr(&res);
    assert!(err.starts_with("labimg: error:"), "{err}");
    err
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let t = "bad_input_is_a_clear_error_and_leaves_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = standin.join("rootfs");
    let uboot = standin.join("u-boot/rpi_4/u-boot.bin");
    let out = tmp.path().join("out");

    let err = refused(None, "nosuchhost", &rootfs, &fw, &uboot, &out);
    assert!(err.contains("no host named `nosuchhost`") && err.contains("nixpi"), "{err}");

    let err = refused(None, "rymac", &rootfs, &fw, &uboot, &out);
    assert!(err.contains("has no `board`"), "{err}");

    let lab = custom_lab(&tmp.path().join("a"), &facts_with(r#"board = "rpi9";"#));
    let err = refused(Some(&lab), "pi", &rootfs, &fw, &uboot, &out);
    assert!(err.contains("unknown board `rpi9`") && err.contains("rpi4"), "{err}");

    // A tree larger than a fixed-size image.
    let big = tmp.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("blob"), vec![7u8; 80 * MIB as usize]).unwrap();
    let lab =
        custom_lab(&tmp.path().join("b"), &facts_with(r#"board = "rpi4"; image.sizeMiB = 100;"#));
    let err = refused(Some(&lab), "pi", &big, &fw, &uboot, &out);
    assert!(err.contains("raise image.sizeMiB"), "{err}");

    let err = refused(None, "nixpi", &tmp.path().join("no-such-tree"), &fw, &uboot, &out);
    assert!(err.contains("no-such-tree") && err.contains("does not exist"), "{err}");

    let err = refused(None, "nixpi", &rootfs, &tmp.path().join("no-such-fw"), &uboot, &out);
    assert!(err.contains("firmware directory") && err.contains("no-such-fw"), "{err}");

    let err = refused(None, "nixpi", &rootfs, &fw, &tmp.path().join("no-uboot"), &out);
    assert!(err.contains("bootloader") && err.contains("no-uboot"), "{err}");

    // Malformed facts: nix's own message, with the file named.
    let lab = custom_lab(&tmp.path().join("c"), "{ hosts = ");
    let err = refused(Some(&lab), "pi", &rootfs, &fw, &uboot, &out);
    assert!(err.contains("nix eval") && err.contains("facts.nix"), "{err}");

    // A key that is not a key.
    let notkey = tmp.path().join("notkey");
    fs::write(&notkey, "hello").unwrap();
    let res = run(build_cmd(&standin, &fw, Some(&notkey), &out).arg("--json"));
    assert!(
        !res.status.success() && stderr(&res).contains("not an OpenSSH private key"),
        "{}",
        stderr(&res)
    );
    assert!(listing(&out).is_empty());
}

#[test]
fn unreadable_firmware_dir_is_refused() {
    let t = "unreadable_firmware_dir_is_refused";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() || !have("setpriv") {
        return skip(t, "needs root (root reads any directory; the test drops to `nobody`)");
    }
    let tmp = tempfile::Builder::new().prefix("labimg-unreadable").tempdir_in("/tmp").unwrap();
    let work = tmp.path();
    fs::set_permissions(work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let locked = work.join("fw");
    tool_output(Command::new("cp").arg("-a").arg(&fw).arg(&locked));
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    tool_output(
        Command::new("cp")
            .arg("-r")
            .arg(repo().join("hosts"))
            .arg(repo().join("firmware"))
            .arg(work),
    );
    let rootfs = standin.join("rootfs").to_string_lossy().into_owned();
    let uboot = standin.join("u-boot/rpi_4/u-boot.bin").to_string_lossy().into_owned();
    let res = labimg_as_nobody(
        work,
        &[
            "build",
            "nixpi",
            "--rootfs",
            &rootfs,
            "--bootloader",
            &uboot,
            "--firmware-dir",
            "fw",
            "--out",
            "out",
        ],
    );
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("firmware directory") && err.contains("not readable"), "{err}");
    assert!(listing(&work.join("out")).is_empty());
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    let t = "a_full_disk_is_a_clear_error_and_leaves_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&small).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        return skip(t, "cannot mount a small tmpfs (needs root)");
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let res = run(&mut build_cmd(&standin, &fw, None, &small));
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("free") || err.contains("full") || err.contains("space"), "{err}");
    assert!(listing(&small).is_empty(), "left behind: {:?}", listing(&small));
}

#[test]
fn the_image_boots_and_the_first_boot_finds_the_key() {
    let t = "the_image_boots_and_the_first_boot_finds_the_key";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !have("qemu-system-aarch64") {
        return skip(t, "qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let out = tmp.path().join("out");
    ok(&mut build_cmd(&standin, &fw, Some(&key), &out));
    let img = out.join("nixpi.img");
    let before = fs::read(&img).unwrap();
    for machine in ["raspi3b", "virt"] {
        let log = tmp.path().join(format!("{machine}.log"));
        let res = Command::new("bash")
            .arg(repo().join("tests/standin/boot.sh"))
            .arg(&img)
            .arg(&standin)
            .arg(machine)
            .env("BOOT_LOG", &log)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{machine}: {stdout}{}\n{}",
            stderr(&res),
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(stdout.contains("LABIMG-FIRSTBOOT-OK"), "{stdout}");
        let expected_root =
            if machine == "virt" { "root=/dev/vda2" } else { "root=/dev/mmcblk0p2" };
        assert!(stdout.contains(expected_root) && stdout.contains("key=0:0:600"), "{stdout}");
    }
    assert!(fs::read(&img).unwrap() == before, "booting does not change the image");
}

#[test]
fn ctrl_c_stops_the_build_and_leaves_nothing() {
    let t = "ctrl_c_stops_the_build_and_leaves_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Enough data that mkfs.ext4 is still busy when the signal arrives.
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..8 {
        fs::write(tree.join(format!("blob{i}")), vec![0x55u8 + i as u8; 50 * MIB as usize])
            .unwrap();
    }
    let out = tmp.path().join("out");
    let child = build_from(&tree, &standin, &fw, None, &out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let res = child.wait_with_output().unwrap();
    assert!(!res.status.success(), "the build finished before the signal; make the tree larger");
    let err = stderr(&res);
    assert!(err.contains("interrupted") && err.contains("run the same command again"), "{err}");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));
}

#[test]
fn a_nix_store_system_becomes_the_root_with_its_registration_and_extlinux() {
    let t = "a_nix_store_system_becomes_the_root_with_its_registration_and_extlinux";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !have("nix-build") {
        return skip(t, "nix-build is not installed (apt-get install nix-bin)");
    }
    let tmp = tempfile::tempdir().unwrap();
    // The stand-in toplevel (tests/standin/nixos-system.nix), built by the real Nix here.
    let built = Command::new("nix-build")
        .arg(repo().join("tests/standin/nixos-system.nix"))
        .args(["--argstr", "host", "nixpi", "--no-out-link"])
        .output()
        .unwrap();
    if !built.status.success() {
        return skip(
            t,
            &format!(
                "nix-build cannot build here: {}",
                String::from_utf8_lossy(&built.stderr).trim()
            ),
        );
    }
    let toplevel = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let closure = tool_output(Command::new("nix-store").args(["-qR", &toplevel]));
    let out = tmp.path().join("out");
    let mut cmd = labimg();
    cmd.args(["build", "nixpi", "--system", &toplevel, "--bootloader"])
        .arg(standin.join("u-boot/rpi_4/u-boot.bin"))
        .arg("--firmware-dir")
        .arg(&fw)
        .arg("--out")
        .arg(&out);
    ok(&mut cmd);
    let root = format!("{}?offset={}", out.join("nixpi.img").display(), 38 * MIB);
    tool_output(Command::new("e2fsck").arg("-fn").arg(&root));
    let store = tool_output(Command::new("debugfs").args(["-R", "ls /nix/store"]).arg(&root));
    for path in closure.lines() {
        let name = path.trim_start_matches("/nix/store/");
        assert!(store.contains(name), "{name} missing from the image's store: {store}");
    }
    let registration =
        tool_output(Command::new("debugfs").args(["-R", "cat /nix-path-registration"]).arg(&root));
    let dumped = tool_output(Command::new("nix-store").arg("--dump-db").args(closure.lines()));
    assert_eq!(
        registration.trim(),
        dumped.trim(),
        "nix-path-registration is what nix-store --load-db reads"
    );
    let conf = tool_output(
        Command::new("debugfs").args(["-R", "cat /boot/extlinux/extlinux.conf"]).arg(&root),
    );
    assert!(
        conf.contains(&format!("APPEND init={toplevel}/init console=ttyS0 loglevel=4")),
        "{conf}"
    );
    assert!(
        conf.contains("-linux-standin/Image")
            && conf.contains("-initrd-standin/initrd")
            && conf.contains("FDTDIR"),
        "{conf}"
    );
    let kernel = tool_output(
        Command::new("debugfs")
            .args([
                "-R",
                &format!(
                    "cat {}",
                    conf.lines()
                        .find(|l| l.trim().starts_with("LINUX"))
                        .unwrap()
                        .trim()
                        .trim_start_matches("LINUX ")
                        .trim()
                ),
            ])
            .arg(&root),
    );
    assert_eq!(kernel.trim(), "kernel", "the LINUX path resolves inside the image");
    assert_eq!(manifest(&out)["root"]["kind"], "nixos-system");
    assert_eq!(
        listing(&out),
        ["nixpi.img", "nixpi.img.bmap", "nixpi.img.sha256", "nixpi.manifest.json"],
        "the staging copy is gone"
    );
}

#[test]
fn a_lab_held_host_key_is_decrypted_in_memory_and_injected() {
    let t = "a_lab_held_host_key_is_decrypted_in_memory_and_injected";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !have("age") || !have("age-keygen") {
        return skip(t, "the age CLI is not installed (apt-get install age)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let lab = custom_lab(tmp.path(), &facts_with(r#"board = "rpi4";"#));
    // A throwaway admin identity and host key, stored the way `labprov keys new` stores them.
    let admin = tmp.path().join("admin.txt");
    tool_output(Command::new("age-keygen").arg("-o").arg(&admin));
    let recipient =
        tool_output(Command::new("age-keygen").arg("-y").arg(&admin)).trim().to_string();
    let key = test_key(tmp.path());
    fs::create_dir_all(lab.join("secrets/host-keys")).unwrap();
    fs::create_dir_all(lab.join("hosts/pi")).unwrap();
    tool_output(
        Command::new("age")
            .args(["-a", "-r", &recipient, "-o"])
            .arg(lab.join("secrets/host-keys/pi.age"))
            .arg(&key),
    );
    fs::copy(key.with_extension("pub"), lab.join("hosts/pi/ssh_host_ed25519_key.pub")).unwrap();

    let out = tmp.path().join("out");
    let build = |identity: &Path| {
        let mut c = labimg();
        c.env("LAB_ROOT", &lab).env("SOPS_AGE_KEY_FILE", identity).env_remove("SOPS_AGE_KEY");
        c.args(["build", "pi", "--rootfs"]).arg(standin.join("rootfs"));
        c.arg("--bootloader").arg(standin.join("u-boot/rpi_4/u-boot.bin"));
        c.arg("--firmware-dir").arg(&fw).arg("--out").arg(&out);
        run(&mut c)
    };
    // Another identity cannot decrypt it: a clear error, nothing written.
    let stranger = tmp.path().join("stranger.txt");
    tool_output(Command::new("age-keygen").arg("-o").arg(&stranger));
    // A dry run decrypts nothing: with the stranger's identity it still
    // plans, naming the key by its recorded public half.
    let mut dry = labimg();
    dry.env("LAB_ROOT", &lab).env("SOPS_AGE_KEY_FILE", &stranger).env_remove("SOPS_AGE_KEY");
    dry.args(["build", "pi", "--dry-run", "--json", "--rootfs"]).arg(standin.join("rootfs"));
    dry.arg("--bootloader").arg(standin.join("u-boot/rpi_4/u-boot.bin"));
    dry.arg("--firmware-dir").arg(&fw).arg("--out").arg(&out);
    let res = run(&mut dry);
    assert!(res.status.success(), "{}", stderr(&res));
    let plan: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let recorded =
        tool_output(Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")));
    assert_eq!(plan["hostKey"]["fingerprint"].as_str(), recorded.split_whitespace().nth(1));
    assert!(!out.exists(), "a dry run created the output directory");
    let res = build(&stranger);
    assert!(!res.status.success(), "a stranger's identity decrypted the host key");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));

    let res = build(&admin);
    assert!(res.status.success(), "{}", stderr(&res));
    let root = format!("{}?offset={}", out.join("pi.img").display(), 38 * MIB);
    let public = tool_output(
        Command::new("debugfs").args(["-R", "cat /etc/ssh/ssh_host_ed25519_key.pub"]).arg(&root),
    );
    let expected = fs::read_to_string(key.with_extension("pub")).unwrap();
    assert_eq!(public.split_whitespace().nth(1), expected.split_whitespace().nth(1));
    let stat = tool_output(
        Command::new("debugfs").args(["-R", "stat /etc/ssh/ssh_host_ed25519_key"]).arg(&root),
    );
    assert!(stat.contains("Mode:  0600") && stat.contains("User:     0   Group:     0"), "{stat}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(out.join("pi.img")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn dry_run_checks_every_input_and_writes_no_image() {
    let t = "dry_run_checks_every_input_and_writes_no_image";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let out = tmp.path().join("out");
    let res = ok(build_cmd(&standin, &fw, Some(&key), &out).args(["--dry-run", "--json"]));
    let plan: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["placement"]["firmwareStart"], 8 * MIB);
    assert!(plan["hostKey"]["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    assert!(listing(&out).is_empty(), "a dry run wrote {:?}", listing(&out));
    assert!(!out.exists(), "a dry run created the output directory");
    // The same refusals as a real build.
    let mut bad = build_cmd(&standin, &tmp.path().join("no-fw"), None, &out);
    let res = run(bad.arg("--dry-run"));
    assert!(!res.status.success() && stderr(&res).contains("no-fw"), "{}", stderr(&res));
}

#[test]
fn a_build_removes_the_scratch_a_killed_build_left_and_a_dry_run_does_not() {
    let t = "a_build_removes_the_scratch_a_killed_build_left_and_a_dry_run_does_not";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // An archive unpacked by a build that was then killed: nobody holds it,
    // and it has not changed for two minutes.
    let left = out.join(".labimg-rootfs.4242.Xy12Ab");
    fs::create_dir_all(left.join("etc")).unwrap();
    fs::write(left.join("etc/hostname"), b"pi\n").unwrap();
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    fs::File::open(&left)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(two_minutes_ago))
        .unwrap();
    ok(build_cmd(&standin, &fw, None, &out).arg("--dry-run"));
    assert!(left.exists(), "a dry run removed {}", left.display());
    let res = ok(&mut build_cmd(&standin, &fw, None, &out));
    assert!(!left.exists(), "{:?}", listing(&out));
    let err = stderr(&res);
    assert!(err.contains("removed") && err.contains(".labimg-rootfs.4242.Xy12Ab"), "{err}");
    assert!(listing(&out).iter().all(|n| !n.starts_with(".labimg-")), "{:?}", listing(&out));
}

/// A scratch tree with something mounted in it (a store path, were a
/// staging's mounts ever to leak) is never removed: removing it would
/// empty what is mounted there. Run in a mount namespace of the test's own.
#[test]
fn a_scratch_tree_with_a_mount_in_it_is_left_and_what_is_mounted_is_untouched() {
    let t = "a_scratch_tree_with_a_mount_in_it_is_left_and_what_is_mounted_is_untouched";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if Command::new("unshare").args(["--mount", "true"]).status().map_or(true, |s| !s.success()) {
        return skip(t, "this system does not let root make a mount namespace (unshare --mount)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let left = out.join(".labimg-system.4242.Xy12Ab");
    let place = left.join("nix/store/abc-pkg");
    fs::create_dir_all(&place).unwrap();
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(pkg.join("file"), b"keep\n").unwrap();
    // Read-only, as the store's: the removal would make it writable first.
    fs::set_permissions(&pkg, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    fs::File::open(&left)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(two_minutes_ago))
        .unwrap();
    let build = build_cmd(&standin, &fw, None, &out);
    let script = "mount --bind \"$1\" \"$2\" && shift 2 && \"$@\"";
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
        .map(std::ffi::OsString::from)
        .into_iter()
        .chain([pkg.clone().into_os_string(), place.clone().into_os_string()])
        .collect::<Vec<_>>();
    let res = ok(&mut wrapped(&wrapper, &build));
    let err = stderr(&res);
    assert!(
        err.contains(".labimg-system.4242.Xy12Ab")
            && err.contains("abc-pkg is mounted in it; unmount it"),
        "{err}"
    );
    assert!(left.join("nix/store/abc-pkg").is_dir(), "{:?}", listing(&out));
    assert_eq!(fs::read(pkg.join("file")).unwrap(), b"keep\n");
    let mode = fs::metadata(&pkg).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o555);
}
