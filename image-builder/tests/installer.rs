//! `labimg build installer-ARCH` end to end, on tiny base ISOs each test
//! makes itself with xorriso (a file tree, an El Torito EFI image made with
//! mkfs.vfat/mtools as an appended partition, an MBR or GPT hybrid table),
//! read back with xorriso, sfdisk and ssh-keygen.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const TOOLS: [&str; 6] = ["xorriso", "mkfs.vfat", "mcopy", "sfdisk", "ssh-keygen", "diff"];
const EPOCH: &str = "1700000000";

#[derive(Clone, Copy, PartialEq)]
enum Table {
    Mbr,
    Gpt,
}

/// A small installer-shaped ISO: /boot with a kernel and an initrd, NixOS's
/// marker file, and a FAT EFI image as El Torito entry and appended
/// partition 2 (as NixOS lays out its EFI system partition). `blob_mib`
/// adds a file of that size (for a build slow enough to interrupt).
fn make_base(dir: &Path, table: Table, boot: bool, blob_mib: usize) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("EFI/boot")).unwrap();
    fs::write(tree.join("boot/bzImage"), b"stand-in kernel\n").unwrap();
    let initrd: Vec<u8> =
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    fs::write(tree.join("boot/initrd"), initrd).unwrap();
    fs::write(tree.join("EFI/nixos-installer-image"), b"").unwrap();
    // NixOS has the loader on the ISO filesystem too, not only in efi.img.
    fs::write(tree.join("EFI/boot/BOOTX64.EFI"), b"stand-in GRUB\n").unwrap();
    if blob_mib > 0 {
        let blob: Vec<u8> = (0..blob_mib << 20).map(|i| (i % 251) as u8).collect();
        fs::write(tree.join("blob"), blob).unwrap();
    }
    let efi = dir.join("efi.img");
    tool_output(Command::new("mkfs.vfat").arg("-C").arg(&efi).arg("1440"));
    tool_output(Command::new("mmd").arg("-i").arg(&efi).args(["::/EFI", "::/EFI/boot"]));
    let grub = dir.join("BOOTX64.EFI");
    fs::write(&grub, b"stand-in GRUB\n").unwrap();
    tool_output(
        Command::new("mcopy").arg("-i").arg(&efi).arg(&grub).arg("::/EFI/boot/BOOTX64.EFI"),
    );
    let iso = dir.join("base.iso");
    let mut cmd = Command::new("xorriso");
    cmd.args(["-no_rc", "-as", "mkisofs", "-o"]).arg(&iso).args(["-R", "-J", "-V", "NIXOS_TEST"]);
    if boot {
        cmd.args(["-append_partition", "2", "0xef"]).arg(&efi);
        if table == Table::Gpt {
            cmd.arg("-appended_part_as_gpt");
        }
        cmd.args(["-e", "--interval:appended_partition_2:all::", "-no-emul-boot"]);
    }
    cmd.arg(&tree).env("SOURCE_DATE_EPOCH", "1600000000");
    tool_output(&mut cmd);
    iso
}

/// A lab whose admins.nix has `keys` (public key lines).
fn lab_with_admins(dir: &Path, keys: &[String]) -> PathBuf {
    let list: String = keys.iter().map(|k| format!(" \"{k}\"")).collect();
    custom_lab(
        dir,
        &format!("{{ admins = {{ ry = {{ sshKeys = [{list} ]; }}; }}; hosts = {{ }}; }}"),
    )
}

fn admin_key(dir: &Path) -> String {
    let key = dir.join("admin");
    tool_output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ry@test", "-f"])
            .arg(&key),
    );
    fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string()
}

fn installer(lab: &Path, base: &Path, out: &Path) -> Command {
    let mut c = labimg();
    c.env("LAB_ROOT", lab).env("SOURCE_DATE_EPOCH", EPOCH);
    c.args(["build", "installer-x86_64", "--iso"]).arg(base).arg("--out").arg(out);
    c
}

fn boot_entries(iso: &Path) -> Vec<String> {
    let report = tool_output(
        Command::new("xorriso")
            .args(["-no_rc", "-indev"])
            .arg(iso)
            .args(["-report_el_torito", "plain"]),
    );
    report
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            w.pop(); // the block address moves when files are added
            w.join(" ")
        })
        .collect()
}

fn extract(iso: &Path, from: &str, to: &Path) {
    tool_output(
        Command::new("xorriso")
            .args(["-no_rc", "-osirrox", "on", "-indev"])
            .arg(iso)
            .arg("-extract")
            .arg(from)
            .arg(to),
    );
}

/// sfdisk's reading of the hybrid table; it must not complain (a GPT whose
/// backup is not at the end of the file, a size mismatch).
fn table(iso: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk").arg("--json").arg(iso).output().unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "sfdisk on {iso:?}: {complaints}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("installer-x86_64.manifest.json")).unwrap()).unwrap()
}

/// The bytes of a partition (start and size in 512-byte sectors).
fn partition_bytes(iso: &Path, part: &serde_json::Value) -> Vec<u8> {
    let data = fs::read(iso).unwrap();
    let start = part["start"].as_u64().unwrap() as usize * 512;
    let size = part["size"].as_u64().unwrap() as usize * 512;
    data[start..start + size].to_vec()
}

#[test]
fn keyed_iso_keeps_the_base_and_carries_the_manifests_key() {
    let t = "keyed_iso_keeps_the_base_and_carries_the_manifests_key";
    if !lab_testkit::require_tools(t, &TOOLS) {
        return;
    }
    for table_kind in [Table::Mbr, Table::Gpt] {
        let tmp = tempfile::tempdir().unwrap();
        let base = make_base(tmp.path(), table_kind, true, 0);
        let admin = admin_key(tmp.path());
        let lab = lab_with_admins(tmp.path(), std::slice::from_ref(&admin));
        let key = test_key(tmp.path());
        let out = tmp.path().join("out");
        let runtime = tmp.path().join("runtime");
        fs::create_dir(&runtime).unwrap();
        ok(installer(&lab, &base, &out)
            .arg("--host-key")
            .arg(&key)
            .env("XDG_RUNTIME_DIR", &runtime));
        assert!(listing(&runtime).is_empty(), "staged keys left behind: {:?}", listing(&runtime));
        let iso = out.join("installer-x86_64.iso");
        assert_eq!(
            listing(&out),
            [
                "installer-x86_64.iso",
                "installer-x86_64.iso.sha256",
                "installer-x86_64.manifest.json"
            ]
        );
        assert_eq!(fs::metadata(&iso).unwrap().permissions().mode() & 0o777, 0o600);
        let m = manifest(&out);

        // The same El Torito entries as the base, as the manifest records them.
        let entries = boot_entries(&base);
        assert_eq!(entries.len(), 1);
        assert_eq!(boot_entries(&iso), entries);
        assert_eq!(m["base"]["bootEntries"], serde_json::json!(entries));

        // The key files on the ISO are the manifest's.
        let got = tmp.path().join("got");
        fs::create_dir(&got).unwrap();
        for f in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "authorized_keys"] {
            extract(&iso, &format!("/lab/{f}"), &got.join(f));
        }
        let fp = tool_output(
            Command::new("ssh-keygen").arg("-lf").arg(got.join("ssh_host_ed25519_key.pub")),
        );
        let fingerprint = m["hostKey"]["fingerprint"].as_str().unwrap();
        assert!(fp.contains(fingerprint), "{fp} vs {fingerprint}");
        assert_eq!(m["payload"][0]["fingerprint"], fingerprint);
        assert!(m["payload"][0].get("sha256").is_none(), "no hash of the private key");
        let derived = tool_output(
            Command::new("ssh-keygen").arg("-yf").arg(got.join("ssh_host_ed25519_key")),
        );
        let given = fs::read_to_string(key.with_extension("pub")).unwrap();
        assert_eq!(derived.split_whitespace().nth(1), given.split_whitespace().nth(1));
        assert_eq!(fs::read_to_string(got.join("authorized_keys")).unwrap(), format!("{admin}\n"));
        assert_eq!(m["adminKeys"][0]["publicKey"], admin.as_str());
        let listing_lab = tool_output(
            Command::new("xorriso")
                .args(["-no_rc", "-indev"])
                .arg(&iso)
                .args(["-lsl", "/lab", "--"]),
        );
        assert!(
            listing_lab.lines().any(|l| l.starts_with("-rw-------    1 0        0")
                && l.ends_with("'ssh_host_ed25519_key'")),
            "{listing_lab}"
        );
        assert!(
            listing_lab
                .lines()
                .any(|l| l.starts_with("-rw-r--r--    1 0        0")
                    && l.ends_with("'authorized_keys'")),
            "{listing_lab}"
        );

        // Every base file byte-identical (the catalog is rewritten by design).
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        extract(&base, "/", &a);
        extract(&iso, "/", &b);
        fs::remove_dir_all(b.join("lab")).unwrap();
        tool_output(Command::new("diff").args(["-r", "--exclude=boot.catalog"]).arg(&a).arg(&b));

        // The same hybrid table: kind, partitions, types; the appended EFI
        // partition byte-identical.
        let (tb, tk) = (table(&base), table(&iso));
        let (pb, pk) = (&tb["partitiontable"], &tk["partitiontable"]);
        assert_eq!(pb["label"], pk["label"]);
        assert_eq!(pb["label"], if table_kind == Table::Gpt { "gpt" } else { "dos" });
        let (parts_b, parts_k) =
            (pb["partitions"].as_array().unwrap(), pk["partitions"].as_array().unwrap());
        assert_eq!(parts_b.len(), parts_k.len(), "{tb}\n{tk}");
        for (x, y) in parts_b.iter().zip(parts_k) {
            assert_eq!((&x["type"], &x["name"]), (&y["type"], &y["name"]));
        }
        let efi = |parts: &[serde_json::Value]| {
            parts
                .iter()
                .find(|p| p["type"] == "ef" || p["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
                .cloned()
                .expect("an EFI partition")
        };
        let (eb, ek) = (efi(parts_b), efi(parts_k));
        assert_eq!(eb["size"], ek["size"]);
        assert!(partition_bytes(&base, &eb) == partition_bytes(&iso, &ek), "EFI partition changed");

        // Checksum file and manifest agree with the ISO.
        let sum = tool_output(Command::new("sha256sum").arg(&iso));
        let sha = sum.split_whitespace().next().unwrap();
        assert_eq!(m["iso"]["sha256"], sha);
        assert_eq!(
            fs::read_to_string(out.join("installer-x86_64.iso.sha256")).unwrap(),
            format!("{sha}  installer-x86_64.iso\n")
        );
        let base_sum = tool_output(Command::new("sha256sum").arg(&base));
        assert_eq!(m["base"]["sha256"], base_sum.split_whitespace().next().unwrap());
        assert_eq!(
            (m["host"].as_str(), m["arch"].as_str()),
            (Some("installer-x86_64"), Some("x86_64"))
        );
        assert_eq!(m["sourceDateEpoch"], 1_700_000_000u64);
    }
}

#[test]
fn same_key_and_epoch_give_a_byte_identical_iso_and_fresh_keys_differ() {
    let t = "same_key_and_epoch_give_a_byte_identical_iso_and_fresh_keys_differ";
    if !lab_testkit::require_tools(t, &TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = make_base(tmp.path(), Table::Mbr, true, 0);
    let lab = lab_with_admins(tmp.path(), &[admin_key(tmp.path())]);
    let key = test_key(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(installer(&lab, &base, &one).arg("--host-key").arg(&key));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(installer(&lab, &base, &two).arg("--host-key").arg(&key));
    let iso = "installer-x86_64.iso";
    assert!(
        fs::read(one.join(iso)).unwrap() == fs::read(two.join(iso)).unwrap(),
        "not reproducible"
    );
    assert_eq!(
        fs::read(one.join("installer-x86_64.manifest.json")).unwrap(),
        fs::read(two.join("installer-x86_64.manifest.json")).unwrap()
    );

    // Without --host-key each build makes its own key; --json reports it.
    let (three, four) = (tmp.path().join("three"), tmp.path().join("four"));
    let res = ok(installer(&lab, &base, &three).arg("--json"));
    let summary: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(summary["manifest"], manifest(&three));
    assert_eq!(summary["outputs"]["iso"], three.join(iso).to_str().unwrap());
    ok(&mut installer(&lab, &base, &four));
    assert_ne!(
        manifest(&three)["hostKey"]["fingerprint"],
        manifest(&four)["hostKey"]["fingerprint"]
    );
}

/// Runs an installer build that must fail; checks nothing was left in `out`
/// and returns stderr.
fn refused(cmd: &mut Command, out: &Path) -> String {
    let res = run(cmd);
    assert!(!res.status.success(), "expected a refusal: {cmd:?}");
    assert_eq!(res.status.code(), Some(1), "{}", stderr(&res));
    assert!(listing(out).is_empty(), "left behind in {}: {:?}", out.display(), listing(out));
    let err = stderr(&res);
    assert!(err.starts_with("labimg: error:"), "{err}");
    err
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let t = "bad_input_is_a_clear_error_and_leaves_nothing";
    if !lab_testkit::require_tools(t, &TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_with_admins(tmp.path(), &[admin_key(tmp.path())]);
    let out = tmp.path().join("out");

    let err = refused(&mut installer(&lab, &tmp.path().join("missing.iso"), &out), &out);
    assert!(err.contains("cannot read the base ISO") && err.contains("missing.iso"), "{err}");

    let not_iso = tmp.path().join("not.iso");
    fs::write(&not_iso, vec![0x5au8; 200_000]).unwrap();
    let err = refused(&mut installer(&lab, &not_iso, &out), &out);
    assert!(err.contains("not an ISO 9660 image"), "{err}");

    let plain_dir = tmp.path().join("plain");
    fs::create_dir(&plain_dir).unwrap();
    let plain = make_base(&plain_dir, Table::Mbr, false, 0);
    let err = refused(&mut installer(&lab, &plain, &out), &out);
    assert!(err.contains("not an installer: no boot records"), "{err}");

    // An x86_64 installer keyed as installer-aarch64: its only loader is
    // BOOTX64.EFI.
    let x86_dir = tmp.path().join("x86");
    fs::create_dir(&x86_dir).unwrap();
    let x86 = make_base(&x86_dir, Table::Mbr, true, 0);
    let mut as_aarch64 = labimg();
    as_aarch64.env("LAB_ROOT", &lab).args(["build", "installer-aarch64", "--iso"]).arg(&x86);
    let err = refused(as_aarch64.arg("--out").arg(&out), &out);
    assert!(
        err.contains("does not boot aarch64")
            && err.contains("bootaa64.efi")
            && err.contains("BOOTX64.EFI"),
        "{err}"
    );

    let good_dir = tmp.path().join("good");
    fs::create_dir(&good_dir).unwrap();
    let good = make_base(&good_dir, Table::Mbr, true, 0);
    // Cut into the appended EFI partition, into the volume, into a GPT's backup.
    let gpt_dir = tmp.path().join("gpt");
    fs::create_dir(&gpt_dir).unwrap();
    let gpt = make_base(&gpt_dir, Table::Gpt, true, 0);
    let efi_end = table(&good)["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()) * 512)
        .max()
        .unwrap();
    let gpt_len = fs::metadata(&gpt).unwrap().len();
    for (source, keep) in [(&good, efi_end - 4096), (&good, 600_000), (&gpt, gpt_len - 512)] {
        let good = source;
        let cut = tmp.path().join("cut.iso");
        let mut bytes = fs::read(good).unwrap();
        bytes.truncate(keep as usize);
        fs::write(&cut, bytes).unwrap();
        let err = refused(&mut installer(&lab, &cut, &out), &out);
        assert!(err.contains("is truncated") && err.contains("cut.iso"), "{err}");
    }

    // A lab whose admins.nix has no keys: nobody could log in.
    let empty = lab_with_admins(&tmp.path().join("empty"), &[]);
    let err = refused(&mut installer(&empty, &good, &out), &out);
    assert!(err.contains("no admin SSH keys") && err.contains("hosts/admins.nix"), "{err}");
    let bad = lab_with_admins(&tmp.path().join("bad"), &["ssh-ed25519 not-base64".into()]);
    let err = refused(&mut installer(&bad, &good, &out), &out);
    assert!(err.contains("not an OpenSSH public key") && err.contains("`ry`"), "{err}");

    let err = refused(installer(&lab, &good, &out).args(["--rootfs", "/"]), &out);
    assert!(err.contains("--rootfs is for SD images"), "{err}");
    let err = refused(
        labimg().args(["build", "installer-riscv64", "--iso"]).arg(&good).env("LAB_ROOT", &lab),
        &out,
    );
    assert!(err.contains("installer-x86_64 and installer-aarch64"), "{err}");

    // Without --iso, Nix builds the base (its output streams first); where
    // it cannot (no flake in this lab), the error says to pass --iso.
    let res =
        run(labimg().env("LAB_ROOT", &lab).args(["build", "installer-aarch64", "--out"]).arg(&out));
    let err = stderr(&res);
    assert_eq!(res.status.code(), Some(1), "{err}");
    let last = err.lines().find(|l| l.starts_with("labimg: error:")).unwrap_or_default();
    assert!(last.contains("cannot build the base installer ISO with Nix"), "{err}");
    assert!(err.contains("pass --iso BASE.iso"), "{err}");
    assert!(listing(&out).is_empty());

    // A dry run checks all of it, prints the plan and writes nothing.
    let res = ok(installer(&lab, &good, &out).args(["--dry-run", "--json"]));
    let plan: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["base"]["bootEntries"].as_array().unwrap().len(), 1);
    assert!(plan["hostKey"].is_null());
    assert!(!out.exists(), "a dry run creates nothing");
    let err = refused(installer(&lab, &plain, &out).arg("--dry-run"), &out);
    assert!(err.contains("no boot records"), "{err}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    let t = "a_full_disk_is_a_clear_error_and_leaves_nothing";
    if !lab_testkit::require_tools(t, &TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = make_base(tmp.path(), Table::Mbr, true, 0);
    let lab = lab_with_admins(tmp.path(), &[admin_key(tmp.path())]);
    let small = tmp.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&small).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        lab_testkit::skip(t, "cannot mount a small tmpfs as the full output disk (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let err = refused(&mut installer(&lab, &base, &small), &small);
    assert!(err.contains("not enough free space") && err.contains("--out"), "{err}");
}

#[test]
fn ctrl_c_while_xorriso_runs_exits_130_and_leaves_nothing() {
    let t = "ctrl_c_while_xorriso_runs_exits_130_and_leaves_nothing";
    if !lab_testkit::require_tools(t, &TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = make_base(tmp.path(), Table::Mbr, true, 400);
    let lab = lab_with_admins(tmp.path(), &[admin_key(tmp.path())]);
    let out = tmp.path().join("out");
    let runtime = tmp.path().join("runtime");
    fs::create_dir(&runtime).unwrap();
    // Its own process group, as a shell gives a job: Ctrl-C reaches labimg
    // and xorriso alike.
    let child = installer(&lab, &base, &out)
        .env("XDG_RUNTIME_DIR", &runtime)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // The ISO's temporary file appears right before xorriso starts.
    let started = std::time::Instant::now();
    while listing(&out).is_empty() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let res = child.wait_with_output().unwrap();
    let err = stderr(&res);
    assert_eq!(res.status.code(), Some(130), "the build was not interrupted: {err}");
    assert!(err.contains("interrupted") && err.contains("run the same command again"), "{err}");
    assert!(err.contains("xorriso"), "the signal did not arrive while xorriso ran: {err}");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));
    assert!(listing(&runtime).is_empty(), "staged keys left behind: {:?}", listing(&runtime));
}
