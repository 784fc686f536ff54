//! LUKS, LVM and mdadm through `labprov disk` with stub tools: a stand-in
//! for the proof inside a VM (issue 12), which needs a kernel with
//! device-mapper and md. This machine's kernel has neither, so here
//! `cryptsetup`, the LVM tools, `mdadm`, `modprobe`, `mkfs.*`, `mount`,
//! `umount`, `findmnt` and `blkid` are scripts first on PATH that log their
//! argv (and whether stdin carried anything, never what) and keep just
//! enough state to answer labprov's checks (is it LUKS, is it open, does
//! the VG exist; blkid answers for what the stubs "formatted" and asks the
//! real blkid otherwise). The partition tables are real: written to image
//! files attached as loop devices.
//!
//! What is checked: the order and arguments of every command against the
//! lines disko's create, mount and unmount scripts run for the same spec;
//! a re-apply runs no creating command; a wrong passphrase and a missing
//! terminal are refused with nothing written; `--dry-run --json` shows the
//! commands and no key. What only the VM can prove (real LUKS headers, a
//! running array, LVs with data surviving a re-apply) is listed in
//! docs/disko.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = r#"#!/bin/bash
# Logs argv (and whether stdin had bytes) to $STUB_LOG; state in $STUB_STATE.
name=$(basename "$0")
S="$STUB_STATE"
# stdin is kept in the state directory (a test passphrase), never logged.
cat > "$S/.stdin"
stdin=no; [ -s "$S/.stdin" ] && stdin=yes
echo "$name $* stdin=$stdin" >> "$STUB_LOG"
k() { echo "$1" | tr '/' '_'; }
last="${!#}"
case "$name" in
  cryptsetup)
    case "$1" in
      isLuks) [ -e "$S/luks$(k "$2")" ]; exit ;;
      -q) touch "$S/luks$(k "$3")"; echo crypto_LUKS > "$S/sig$(k "$3")"
          [ "$stdin" = yes ] && cp "$S/.stdin" "$S/pass$(k "$3")"; exit 0 ;;
      # status names the device under the mapping, as cryptsetup does.
      status) [ -e "$S/open_$2" ] || exit 4; echo "  device:  $(cat "$S/open_$2")"; exit 0 ;;
      close) rm -f "$S/open_$2"; exit 0 ;;
      luksAddKey) touch "$S/addkey$(k "$2")$(k "$3")"; exit 0 ;;
      open)
        if [ "$2" = --test-passphrase ]; then
          [ -e "$S/addkey$(k "$3")$(k "$5")" ]; exit
        fi
        # A passphrase on stdin must be the one it was formatted with,
        # byte for byte; cryptsetup says 2 for "no key available".
        if [ "$stdin" = yes ] && ! cmp -s "$S/.stdin" "$S/pass$(k "$2")"; then
          echo "No key available with this passphrase." >&2; exit 2
        fi
        echo "$2" > "$S/open_$3"; exit 0 ;;
    esac ;;
  pvcreate) echo LVM2_member > "$S/sig$(k "$1")" ;;
  vgdisplay) [ -e "$S/vg_$1" ]; exit ;;
  # No PVs listed: the PVs here sit on stub mappings the kernel does not
  # have, so labprov's check that a VG lies on the given disks is left to
  # the VM test (vm_disk_stacked).
  pvs) exit 0 ;;
  vgcreate) touch "$S/vg_$1" ;;
  lvdisplay) [ -e "$S/lv_$(k "$1")" ]; exit ;;
  lvcreate)
    lv=""; prev=""; for a in "$@"; do [ "$prev" = -n ] && lv="$a"; prev="$a"; done
    touch "$S/lv_${last}_$lv" ;;
  mdadm)
    case "$1" in
      --detail) [ -e "$S/md$(k "$2")" ]; exit ;;
      --create|--assemble) touch "$S/md$(k "$2")"
        shift 2; for a in "$@"; do case "$a" in /dev/*) echo linux_raid_member > "$S/sig$(k "$a")";; esac; done ;;
      --stop) rm -f "$S/md$(k "$2")" ;;
    esac ;;
  mkfs.*) echo "${name#mkfs.}" > "$S/sig$(k "$last")" ;;
  mount) touch "$S/mnt$(k "$4")" ;;
  umount) rm -f "$S/mnt$(k "$1")" ;;
  findmnt) [ -e "$S/mnt$(k "$last")" ] && { echo "$last"; exit 0; }; exit 1 ;;
  blkid)
    f="$S/sig$(k "$last")"
    if [ -e "$f" ]; then
      case " $* " in *" export "*) echo "TYPE=$(cat "$f")";; *) cat "$f";; esac
      exit 0
    fi
    PATH="$REAL_PATH" exec blkid "$@" ;;
esac
exit 0
"#;

const STUBS: &[&str] = &[
    "cryptsetup",
    "pvcreate",
    "vgdisplay",
    "pvs",
    "vgcreate",
    "vgchange",
    "lvdisplay",
    "lvcreate",
    "modprobe",
    "mdadm",
    "mkfs.ext4",
    "mkfs.vfat",
    "mount",
    "umount",
    "findmnt",
    "blkid",
];

/// Commands that change something (the rest are labprov's checks).
const WRITERS: &[&str] = &[
    "cryptsetup -q",
    "cryptsetup open /",
    "cryptsetup luksAddKey",
    "cryptsetup close",
    "pvcreate",
    "vgcreate",
    "vgchange",
    "lvcreate",
    "modprobe",
    "mdadm --create",
    "mdadm --assemble",
    "mdadm --stop",
    "mkfs.",
    "mount",
    "umount",
];

struct Stubbed {
    dir: tempfile::TempDir,
    path: String,
}

impl Stubbed {
    fn new() -> Stubbed {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let stub = bin.join("stub");
        std::fs::write(&stub, STUB).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        for s in STUBS {
            std::os::unix::fs::symlink(&stub, bin.join(s)).unwrap();
        }
        let real = std::env::var("PATH").unwrap_or_default();
        Stubbed { path: format!("{}:{real}", bin.display()), dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn labprov(&self, args: &[&str]) -> (bool, String, String) {
        common::labprov_with(
            args,
            &[
                ("PATH", self.path.clone()),
                ("REAL_PATH", std::env::var("PATH").unwrap_or_default()),
                ("STUB_LOG", self.log().display().to_string()),
                ("STUB_STATE", self.dir.path().join("state").display().to_string()),
            ],
        )
    }

    /// The changing commands logged since the last call, with loop
    /// partition nodes written back as the spec's device paths.
    fn take_writers(&self, names: &[(String, String)]) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        std::fs::write(self.log(), "").unwrap();
        text.lines()
            .filter(|l| WRITERS.iter().any(|w| l.starts_with(w)))
            .map(|l| {
                let mut l = l.to_string();
                for (node, spec) in names {
                    l = l.replace(&format!("{node} "), &format!("{spec} "));
                }
                l
            })
            .collect()
    }
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(256 << 20).unwrap();
    p
}

fn loop_of(img: &Path) -> String {
    let out = Command::new("losetup").arg("-j").arg(img).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split(':').next().unwrap_or_default().to_string()
}

fn assert_lines(got: Vec<String>, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "\n got: {got:#?}\nwant: {want:#?}");
}

/// disko's example/luks-lvm.nix with a passphrase instead of its key file
/// (askPassword; the key comes from --luks-key-file) and the additional
/// key file in the test's directory.
fn luks_lvm_spec(dir: &Path) -> PathBuf {
    let extra = dir.join("additional.key");
    std::fs::write(&extra, b"second key").unwrap();
    let spec = format!(
        r#"{{"disk": {{"main": {{"type": "disk", "device": "/dev/vdb", "content": {{"type": "gpt", "partitions": {{
  "ESP": {{"size": "64M", "type": "EF00", "content": {{"type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"]}}}},
  "luks": {{"size": "100%", "content": {{"type": "luks", "name": "crypted", "settings": {{"allowDiscards": true}},
    "additionalKeyFiles": ["{}"], "content": {{"type": "lvm_pv", "vg": "pool"}}}}}}}}}}}}}},
 "lvm_vg": {{"pool": {{"type": "lvm_vg", "lvs": {{
  "root": {{"size": "100%", "content": {{"type": "filesystem", "format": "ext4", "mountpoint": "/", "mountOptions": ["defaults"]}}}},
  "home": {{"size": "10M", "content": {{"type": "filesystem", "format": "ext4", "mountpoint": "/home"}}}},
  "raw": {{"size": "10M"}}}}}}}}}}"#,
        extra.display()
    );
    let p = dir.join("luks-lvm.json");
    std::fs::write(&p, spec).unwrap();
    p
}

fn root_and_loops(test: &str) -> bool {
    match common::loop_devices_available() {
        Ok(()) => true,
        Err(reason) => {
            common::skip(test, &reason);
            false
        }
    }
}

#[test]
fn dry_run_json_shows_disko_commands_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = luks_lvm_spec(dir.path());
    let img = image(dir.path(), "main.img");
    let key = dir.path().join("pass");
    std::fs::write(&key, b"correct horse\n").unwrap();
    let stub = Stubbed::new();
    let (ok, out, err) = stub.labprov(&[
        "disk",
        "apply",
        "--spec",
        spec.to_str().unwrap(),
        "--disk",
        &format!("main={}", img.display()),
        "--luks-key-file",
        &format!("crypted={}", key.display()),
        "--dry-run",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(!out.contains("correct horse") && !err.contains("correct horse"));
    let plan: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let steps = plan["steps"].as_array().unwrap();
    let luks = steps.iter().find(|s| s["step"] == "luks").expect("a luks step");
    let words = |v: &serde_json::Value| {
        v.as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        words(&luks["format"]),
        "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-luks --key-file -"
    );
    assert_eq!(
        words(&luks["open"]),
        "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file -"
    );
    assert_eq!(luks["key"]["kind"], "ask");
    let vg = steps.iter().find(|s| s["step"] == "lvm_vg").unwrap();
    assert_eq!(words(&vg["create"]), "vgcreate pool /dev/mapper/crypted");
    let lvs: Vec<String> =
        steps.iter().filter(|s| s["step"] == "lv").map(|s| words(&s["create"])).collect();
    assert_eq!(
        lvs,
        [
            "lvcreate --yes -L 10M -n home pool",
            "lvcreate --yes -L 10M -n raw pool",
            "lvcreate --yes -l 100%FREE -n root pool"
        ]
    );
    // A dry run runs nothing: not even a check.
    assert_eq!(std::fs::read_to_string(stub.log()).unwrap_or_default(), "");
    assert!(std::fs::read(&img).unwrap().iter().all(|b| *b == 0), "the image was written");
}

#[test]
fn no_terminal_and_no_key_file_is_refused_before_anything_is_written() {
    if !root_and_loops("no_terminal_and_no_key_file_is_refused_before_anything_is_written") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = luks_lvm_spec(dir.path());
    let img = image(dir.path(), "main.img");
    let stub = Stubbed::new();
    let disk = format!("main={}", img.display());
    let (ok, _, err) = stub.labprov(&[
        "disk",
        "apply",
        "--spec",
        spec.to_str().unwrap(),
        "--disk",
        &disk,
        "--yes",
    ]);
    assert!(!ok);
    assert!(err.contains("needs a passphrase and there is no terminal"), "{err}");
    assert!(err.contains("--luks-key-file crypted=FILE") && err.contains("Nothing was written"));
    assert!(std::fs::read(&img).unwrap().iter().all(|b| *b == 0), "the image was written");
    assert!(stub.take_writers(&[]).is_empty());
}

#[test]
fn a_passphrase_typed_on_a_terminal_reaches_cryptsetup_byte_for_byte_and_echo_is_restored() {
    let t =
        "a_passphrase_typed_on_a_terminal_reaches_cryptsetup_byte_for_byte_and_echo_is_restored";
    if !root_and_loops(t) || !lab_testkit::require_tools(t, &["script", "stty"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = luks_lvm_spec(dir.path());
    let img = image(dir.path(), "main.img");
    let stub = Stubbed::new();
    // util-linux `script` gives labprov a pseudo-terminal fed from this
    // pipe: a mismatch first (asked again), then the same passphrase
    // twice; afterwards the terminal's settings must have echo back on.
    let command = format!(
        "{} disk apply --spec {} --disk main={} --root {} --yes; stty -a",
        env!("CARGO_BIN_EXE_labprov"),
        spec.display(),
        img.display(),
        dir.path().join("mnt").display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("PATH", &stub.path)
        .env("REAL_PATH", std::env::var("PATH").unwrap_or_default())
        .env("STUB_LOG", stub.log())
        .env("STUB_STATE", stub.dir.path().join("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let input = child.stdin.as_mut().unwrap();
        for line in ["first try", "does not match", "correct horse", "correct horse"] {
            std::thread::sleep(std::time::Duration::from_millis(700));
            input.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("Passphrases did not match"), "{said}");
    assert!(!said.contains("correct horse"), "the passphrase was echoed: {said}");
    // stty -a lists `echo` (on) or `-echo` (off).
    assert!(said.split_whitespace().any(|w| w == "echo"), "echo is off afterwards: {said}");
    let node = format!("{}p2", loop_of(&img));
    let key = std::fs::read(
        stub.dir.path().join("state").join(format!("pass{}", node.replace('/', "_"))),
    )
    .unwrap_or_else(|e| panic!("no LUKS format with a passphrase ({e}): {said}"));
    assert_eq!(key, b"correct horse", "the key cryptsetup got is not what was typed");
    let log = std::fs::read_to_string(stub.log()).unwrap_or_default();
    assert!(!log.contains("correct horse"), "the passphrase is in a command line: {log}");
    let _ = stub.labprov(&[
        "disk",
        "unmount",
        "--spec",
        spec.to_str().unwrap(),
        "--disk",
        &format!("main={}", img.display()),
        "--root",
        dir.path().join("mnt").to_str().unwrap(),
    ]);
}

#[test]
fn luks_lvm_apply_reapply_mount_unmount_run_disko_commands() {
    if !root_and_loops("luks_lvm_apply_reapply_mount_unmount_run_disko_commands") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = luks_lvm_spec(dir.path());
    let extra = dir.path().join("additional.key").display().to_string();
    let img = image(dir.path(), "main.img");
    let key = dir.path().join("pass");
    std::fs::write(&key, b"correct horse\n").unwrap();
    let root = dir.path().join("mnt");
    let stub = Stubbed::new();
    let spec_s = spec.display().to_string();
    let disk = format!("main={}", img.display());
    let keyarg = format!("crypted={}", key.display());
    let root_s = root.display().to_string();
    let run = |cmd: &str, with_key: bool| {
        let mut a = vec!["disk", cmd, "--spec", &spec_s, "--disk", &disk, "--root", &root_s];
        if with_key {
            a.extend(["--luks-key-file", &keyarg]);
        }
        if cmd == "apply" {
            a.push("--yes");
        }
        let (ok, out, err) = stub.labprov(&a);
        assert!(ok, "labprov disk {cmd}:\n{out}\n{err}");
        assert!(!out.contains("correct horse") && !err.contains("correct horse"));
        out
    };
    run("apply", true);
    let l = loop_of(&img);
    let names = [
        (format!("{l}p1"), "/dev/disk/by-partlabel/disk-main-ESP".to_string()),
        (format!("{l}p2"), "/dev/disk/by-partlabel/disk-main-luks".to_string()),
    ];
    let r = |s: &str| s.replace("ROOT", &root_s).replace("EXTRA", &extra);
    // disko's create then mount script for this spec, as lab-disko's
    // stacked_examples test derives them from lib/types/*.nix.
    assert_lines(
        stub.take_writers(&names),
        &[
            "mkfs.vfat /dev/disk/by-partlabel/disk-main-ESP stdin=no",
            "cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-luks --key-file - stdin=yes",
            "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file - --persistent stdin=yes",
            &r("cryptsetup luksAddKey /dev/disk/by-partlabel/disk-main-luks EXTRA --key-file - stdin=yes"),
            "pvcreate /dev/mapper/crypted stdin=no",
            "modprobe dm-snapshot stdin=no",
            "vgcreate pool /dev/mapper/crypted stdin=no",
            "lvcreate --yes -L 10M -n home pool stdin=no",
            "lvcreate --yes -L 10M -n raw pool stdin=no",
            "lvcreate --yes -l 100%FREE -n root pool stdin=no",
            "mkfs.ext4 /dev/pool/home stdin=no",
            "mkfs.ext4 /dev/pool/root stdin=no",
            &r("mount -t ext4 /dev/pool/root ROOT -o defaults -o X-mount.mkdir stdin=no"),
            &r("mount -t vfat /dev/disk/by-partlabel/disk-main-ESP ROOT/boot -o umask=0077 -o X-mount.mkdir stdin=no"),
            &r("mount -t ext4 /dev/pool/home ROOT/home -o defaults -o X-mount.mkdir stdin=no"),
        ],
    );
    // Re-apply: everything is there; only the VG is activated again.
    run("apply", true);
    assert_lines(
        stub.take_writers(&names),
        &["modprobe dm-snapshot stdin=no", "vgchange -a y pool stdin=no"],
    );
    run("unmount", false);
    assert_lines(
        stub.take_writers(&names),
        &[
            &r("umount ROOT/home stdin=no"),
            &r("umount ROOT/boot stdin=no"),
            &r("umount ROOT stdin=no"),
            "vgchange -a n pool stdin=no",
            "cryptsetup close crypted stdin=no",
        ],
    );
    // The passphrase was set without the key file's newline (as disko's
    // passwordFile); the same passphrase with another newline still opens
    // it, a wrong one is named as such and nothing is mounted.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, b"Correct horse\n").unwrap();
    let wrong_arg = format!("crypted={}", wrong.display());
    let (ok, _, err) = stub.labprov(&[
        "disk",
        "mount",
        "--spec",
        &spec_s,
        "--disk",
        &disk,
        "--root",
        &root_s,
        "--luks-key-file",
        &wrong_arg,
    ]);
    assert!(!ok && err.contains("does not open") && err.contains("nothing was written"), "{err}");
    assert!(!err.contains("Correct horse"));
    assert!(stub.take_writers(&names).iter().all(|l| !l.starts_with("mount")));
    std::fs::write(&key, b"correct horse\n\n").unwrap();
    // Mounting needs the key again; without one and without a terminal it
    // is refused before anything is opened.
    let (ok, _, err) = stub.labprov(&["disk", "mount", "--spec", &spec_s, "--disk", &disk]);
    assert!(!ok && err.contains("no terminal"), "{err}");
    stub.take_writers(&names);
    run("mount", true);
    assert_lines(
        stub.take_writers(&names),
        &[
            "cryptsetup open /dev/disk/by-partlabel/disk-main-luks crypted --allow-discards --key-file - stdin=yes",
            "vgchange -a y pool stdin=no",
            &r("mount -t ext4 /dev/pool/root ROOT -o defaults -o X-mount.mkdir stdin=no"),
            &r("mount -t vfat /dev/disk/by-partlabel/disk-main-ESP ROOT/boot -o umask=0077 -o X-mount.mkdir stdin=no"),
            &r("mount -t ext4 /dev/pool/home ROOT/home -o defaults -o X-mount.mkdir stdin=no"),
        ],
    );
    run("unmount", false);
    assert!(loop_of(&img).is_empty(), "the image is still attached");
}

#[test]
fn luks_on_mdadm_creates_the_arrays_after_their_members() {
    if !root_and_loops("luks_on_mdadm_creates_the_arrays_after_their_members") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // disko's example/luks-on-mdadm.nix, its key file in the test directory.
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, b"key file bytes").unwrap();
    let disk = |n: &str| {
        format!(
            r#""{n}": {{"type": "disk", "device": "/dev/sd{n}", "content": {{"type": "gpt", "partitions": {{
  "boot": {{"size": "1M", "type": "EF02"}},
  "ESP": {{"size": "64M", "type": "EF00", "content": {{"type": "mdraid", "name": "boot"}}}},
  "mdadm": {{"size": "100%", "content": {{"type": "mdraid", "name": "raid1"}}}}}}}}}}"#
        )
    };
    let spec = format!(
        r#"{{"disk": {{{}, {}}}, "mdadm": {{
  "boot": {{"type": "mdadm", "level": 1, "metadata": "1.0", "content": {{"type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"]}}}},
  "raid1": {{"type": "mdadm", "level": 1, "content": {{"type": "luks", "name": "crypted", "settings": {{"keyFile": "{}"}},
    "content": {{"type": "filesystem", "format": "ext4", "mountpoint": "/"}}}}}}}}}}"#,
        disk("a"),
        disk("b"),
        secret.display()
    );
    let spec_p = dir.path().join("spec.json");
    std::fs::write(&spec_p, spec).unwrap();
    let (a, b) = (image(dir.path(), "a.img"), image(dir.path(), "b.img"));
    let root = dir.path().join("mnt");
    let stub = Stubbed::new();
    let args = |cmd: &'static str| -> Vec<String> {
        let mut v: Vec<String> = ["disk", cmd, "--spec"].iter().map(|s| s.to_string()).collect();
        v.push(spec_p.display().to_string());
        v.extend(["--disk".into(), format!("a={}", a.display())]);
        v.extend(["--disk".into(), format!("b={}", b.display())]);
        v.extend(["--root".into(), root.display().to_string()]);
        if cmd == "apply" {
            v.push("--yes".into());
        }
        v
    };
    let run = |cmd: &'static str| {
        let a = args(cmd);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (ok, out, err) = stub.labprov(&a);
        assert!(ok, "labprov disk {cmd}:\n{out}\n{err}");
    };
    run("apply");
    let (la, lb) = (loop_of(&a), loop_of(&b));
    let names = [
        (format!("{la}p2"), "/dev/disk/by-partlabel/disk-a-ESP".to_string()),
        (format!("{la}p3"), "/dev/disk/by-partlabel/disk-a-mdadm".to_string()),
        (format!("{lb}p2"), "/dev/disk/by-partlabel/disk-b-ESP".to_string()),
        (format!("{lb}p3"), "/dev/disk/by-partlabel/disk-b-mdadm".to_string()),
    ];
    let k = secret.display().to_string();
    let root_s = root.display().to_string();
    let r = |s: &str| s.replace("KEY", &k).replace("ROOT", &root_s);
    assert_lines(
        stub.take_writers(&names),
        &[
            "mdadm --create /dev/md/boot --level=1 --raid-devices=2 --metadata=1.0 --force --homehost=any /dev/disk/by-partlabel/disk-a-ESP /dev/disk/by-partlabel/disk-b-ESP stdin=yes",
            "mkfs.vfat /dev/md/boot stdin=no",
            "mdadm --create /dev/md/raid1 --level=1 --raid-devices=2 --metadata=default --force --homehost=any /dev/disk/by-partlabel/disk-a-mdadm /dev/disk/by-partlabel/disk-b-mdadm stdin=yes",
            &r("cryptsetup -q luksFormat /dev/md/raid1 --key-file KEY stdin=no"),
            &r("cryptsetup open /dev/md/raid1 crypted --key-file KEY --persistent stdin=no"),
            "mkfs.ext4 /dev/mapper/crypted stdin=no",
            &r("mount -t ext4 /dev/mapper/crypted ROOT -o defaults -o X-mount.mkdir stdin=no"),
            &r("mount -t vfat /dev/md/boot ROOT/boot -o umask=0077 -o X-mount.mkdir stdin=no"),
        ],
    );
    run("apply");
    assert_lines(stub.take_writers(&names), &[]);
    run("unmount");
    assert_lines(
        stub.take_writers(&names),
        &[
            &r("umount ROOT/boot stdin=no"),
            &r("umount ROOT stdin=no"),
            "cryptsetup close crypted stdin=no",
            "mdadm --stop /dev/md/raid1 stdin=no",
            "mdadm --stop /dev/md/boot stdin=no",
        ],
    );
    run("mount");
    assert_lines(
        stub.take_writers(&names),
        &[
            "mdadm --assemble /dev/md/boot /dev/disk/by-partlabel/disk-a-ESP /dev/disk/by-partlabel/disk-b-ESP stdin=no",
            "mdadm --assemble /dev/md/raid1 /dev/disk/by-partlabel/disk-a-mdadm /dev/disk/by-partlabel/disk-b-mdadm stdin=no",
            &r("cryptsetup open /dev/md/raid1 crypted --key-file KEY stdin=no"),
            &r("mount -t ext4 /dev/mapper/crypted ROOT -o defaults -o X-mount.mkdir stdin=no"),
            &r("mount -t vfat /dev/md/boot ROOT/boot -o umask=0077 -o X-mount.mkdir stdin=no"),
        ],
    );
    run("unmount");
}
