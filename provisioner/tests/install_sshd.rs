//! `labprov install` end to end against a real OpenSSH server on loopback
//! standing in for the installer ISO: this machine plays the installer (root
//! over SSH, `labprov` on the session's PATH), a sparse image file on a loop
//! device plays its disk, and tests/standin/nixos-system.nix, built by the
//! real Nix here, plays the NixOS toplevel. `nix copy` is real; only
//! `nixos-install` is a stand-in script (it needs a NixOS closure), named so
//! in its output. The reboot phase is never run: it would reboot this machine.
//! After the install, a second sshd serves the key the install placed in the
//! target root, and `--phases verify` must accept it and nothing else.

mod common;
mod keys_support;
mod sshd_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keys_support::{require, run_ok, TestLab};
use sshd_support::{start_sshd, write_exec};

/// The test lab's disk spec for the host (pure data, like hosts/*/disko.nix):
/// GPT, a boot and a root partition.
/// ext4 for both, since this kernel may lack vfat (the real hosts' ESPs are
/// vfat; their specs are exercised by host_specs.rs).
const DISKO: &str = r#"{
  disk.main = {
    type = "disk";
    device = "/dev/vda";
    content = {
      type = "gpt";
      partitions = {
        boot = { size = "64M"; type = "8300"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/boot"; }; };
        root = { size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; }; };
      };
    };
  };
}
"#;

/// `nixos-install` stand-in: takes only the options the real one knows (the
/// real one refuses unknown ones too), records them, checks the closure is in
/// the target's store and says what it did.
const NIXOS_INSTALL: &str = r#"#!/bin/sh
set -eu
root=/mnt system=
echo "$*" > "${0%/*}/nixos-install.args"
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift ;;
    --system) system=$2; shift ;;
    --no-root-passwd|--no-channel-copy) ;;
    *) echo "nixos-install (stand-in): unknown option $1" >&2; exit 1 ;;
  esac
  shift
done
test -e "$root$system/init" || { echo "nixos-install (stand-in): $system is not in $root/nix/store" >&2; exit 1; }
mkdir -p "$root/nix/var/nix/profiles"
ln -sfn "$system" "$root/nix/var/nix/profiles/system"
echo "nixos-install (stand-in): installed $system into $root"
"#;

fn labprov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labprov"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fingerprint(pub_key: &Path) -> String {
    run_ok(Command::new("ssh-keygen").arg("-lf").arg(pub_key))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Every byte of the image is still zero (a sparse file nobody wrote to).
fn untouched(img: &Path) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(img).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    // The table and the first filesystem's superblock are in the first MiBs.
    for _ in 0..80 {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return true;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
    }
    true
}

#[test]
fn install_over_pinned_ssh_partitions_injects_copies_and_verifies() {
    let name = "install_over_pinned_ssh_partitions_injects_copies_and_verifies";
    let tools = [
        "nix",
        "nix-build",
        "nix-store",
        "sops",
        "age-keygen",
        "ssh",
        "ssh-keygen",
        "ssh-keyscan",
        "losetup",
        "mkfs.ext4",
        "findmnt",
    ];
    if !require(name, &tools) {
        return;
    }
    if let Err(reason) = common::loop_devices_available() {
        common::skip(
            name,
            &format!("{reason} (the installer's disk is a loop device, its login root)"),
        );
        return;
    }
    let lab = TestLab::new(&[("rydev", &[])]);
    std::fs::write(lab.root().join("hosts/rydev/disko.nix"), DISKO).unwrap();
    let env = |c: &mut Command| {
        c.env("LAB_ROOT", lab.root())
            .env("HOME", &lab.home)
            .env("SOPS_AGE_KEY_FILE", &lab.admin_key)
            .env_remove("SOPS_AGE_KEY");
    };
    let mut keys_new = labprov();
    env(&mut keys_new);
    run_ok(keys_new.args(["keys", "new", "rydev"]));
    let recorded_fp =
        lab_keys::secrets::ops::show(lab.root(), &lab.keys(), "rydev").unwrap().fingerprint;

    // The system closure, built by the real Nix here.
    let work = lab.home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let standin = keys_support::repo().join("tests/standin/nixos-system.nix");
    let built = Command::new("nix-build")
        .arg(standin)
        .args(["--argstr", "host", "rydev", "--no-out-link"])
        .output()
        .unwrap();
    assert!(built.status.success(), "nix-build: {}", stderr(&built));
    let system = String::from_utf8_lossy(&built.stdout).trim().to_string();

    // The installer: sshd with its own random key; the session's PATH has
    // labprov (this build) and the nixos-install stand-in first.
    let installer = lab.home.join("installer");
    let bin = installer.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_exec(&bin.join("nixos-install"), NIXOS_INSTALL);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_labprov"), bin.join("labprov")).unwrap();
    let installer_key = installer.join("ssh_host_ed25519_key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&installer_key),
    );
    let client = lab.home.join("client");
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&client));
    let session_path =
        format!("SetEnv PATH={}:{}\n", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (_installer_sshd, port) =
        start_sshd(&installer, &installer_key, &client.with_extension("pub"), &session_path)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    let installer_fp = fingerprint(&installer_key.with_extension("pub"));

    // Its disk (a name that needs quoting on the remote shell), and the root
    // the install mounts it on (roots must be plain: validated).
    let img = work.join("the installer's disk.img");
    std::fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
    let root = lab.home.join("target");
    let install = |extra: &[&str]| -> Output {
        let mut c = labprov();
        env(&mut c);
        c.args(["install", "rydev", "--address", "127.0.0.1", "--port", &port.to_string()])
            .arg("--ssh-identity")
            .arg(&client)
            .arg("--disk")
            .arg(format!("main={}", img.display()))
            .arg("--root")
            .arg(&root)
            .args(["--system", &system])
            .args(extra)
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    struct Unmount(Vec<String>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_labprov")).args(&self.0).output();
        }
    }
    let _cleanup = Unmount(vec![
        "--lab".into(),
        lab.root().display().to_string(),
        "disk".into(),
        "unmount".into(),
        "rydev".into(),
        "--disk".into(),
        format!("main={}", img.display()),
        "--root".into(),
        root.display().to_string(),
    ]);

    // A wrong fingerprint for the installer: refused, the disk untouched.
    let other = lab_keys::HostKey::generate("other").fingerprint();
    let out = install(&["--fingerprint", &other, "--yes", "--phases", "disk,keys,install"]);
    assert!(
        !out.status.success()
            && stderr(&out).contains("REFUSED")
            && stderr(&out).contains(&installer_fp),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(4), "a refused fingerprint exits 4 (refused)");
    assert!(untouched(&img), "a refused install wrote to the disk");
    // No fingerprint and no terminal: nothing to confirm on, nothing written.
    let out = install(&["--yes", "--phases", "disk,keys,install"]);
    assert!(!out.status.success() && stderr(&out).contains("--fingerprint"), "{}", stderr(&out));
    assert!(untouched(&img));
    // No --yes and no terminal: the disk plan cannot be confirmed.
    let out = install(&["--fingerprint", &installer_fp, "--phases", "disk"]);
    assert!(!out.status.success() && stderr(&out).contains("no terminal"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4), "an unconfirmed disk plan exits 4 (refused)");
    assert!(untouched(&img));

    // A dry run pins, shows the plan the installer computed, changes nothing.
    let out = install(&[
        "--fingerprint",
        &installer_fp,
        "--dry-run",
        "--phases",
        "disk,keys,install,reboot,verify",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("would apply")
            && text.contains("gpt")
            && text.contains("would place")
            && text.contains("nothing was changed"),
        "{text}"
    );
    // The disk it would write is named with what it is, before any question.
    assert!(
        text.contains(&format!(
            "WRITES disk main: {} (image file, 1073741824 bytes)",
            img.display()
        )),
        "{text}"
    );
    assert!(untouched(&img) && !root.exists(), "a dry run changed something");

    // The installer labimg keyed: its manifest's key is trusted with no
    // question and no --fingerprint, given or found in the lab's out/ for the
    // host's architecture (rydev: aarch64); another key is refused (4).
    let manifest = |key_line: &str| {
        serde_json::json!({ "host": "installer-aarch64", "hostKey": { "publicKey": key_line } })
            .to_string()
    };
    let installer_pub = std::fs::read_to_string(installer_key.with_extension("pub")).unwrap();
    let given = work.join("installer-x86_64.manifest.json");
    std::fs::write(&given, manifest(installer_pub.trim())).unwrap();
    let dry = ["--dry-run", "--phases", "disk,keys"];
    let out = install(&[&["--installer-manifest", given.to_str().unwrap()][..], &dry].concat());
    assert!(out.status.success(), "manifest given: {}", stderr(&out));
    std::fs::create_dir_all(lab.root().join("out")).unwrap();
    let found = lab.root().join("out/installer-aarch64.manifest.json");
    std::fs::write(&found, manifest(installer_pub.trim())).unwrap();
    let out = install(&dry);
    assert!(out.status.success(), "manifest found in out/: {}", stderr(&out));
    assert!(stderr(&out).contains(found.to_str().unwrap()), "{}", stderr(&out));
    let other = lab_keys::HostKey::generate("other").public_openssh();
    std::fs::write(&found, manifest(&other)).unwrap();
    let out = install(&dry);
    assert_eq!(
        out.status.code(),
        Some(4),
        "another installer than the manifest's: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("REFUSED") && stderr(&out).contains(&installer_fp),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&found).unwrap();
    assert!(untouched(&img) && !root.exists(), "a manifest dry run changed something");

    // Ctrl-C in the middle of an install: it stops between steps (130) and
    // says how to resume; the install below then runs over what it left and
    // must end exactly as an uninterrupted one (every assertion after it).
    let mut c = labprov();
    env(&mut c);
    c.args([
        "install",
        "rydev",
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--ssh-identity",
    ])
    .arg(&client)
    .arg("--disk")
    .arg(format!("main={}", img.display()))
    .arg("--root")
    .arg(&root)
    .args([
        "--system",
        &system,
        "--fingerprint",
        &installer_fp,
        "--yes",
        "--phases",
        "disk,keys,install",
    ]);
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!("the interrupted install said:\n{}", stderr(&out));
    assert_eq!(out.status.code(), Some(130), "not interrupted:\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted")
            && stderr(&out).lines().last().is_some_and(|l| l.starts_with("labprov: error:")),
        "{}",
        stderr(&out)
    );

    // The install: disk, keys, the closure, nixos-install.
    let out = install(&[
        "--fingerprint",
        &installer_fp,
        "--yes",
        "--json",
        "--phases",
        "disk,keys,install",
    ]);
    assert!(out.status.success(), "install failed:\n{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["installer"]["fingerprint"], installer_fp.as_str());
    assert_eq!(report["hostFingerprint"], recorded_fp.as_str());
    let phases: Vec<&str> =
        report["steps"].as_array().unwrap().iter().map(|s| s["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["disk", "keys", "install", "install"], "{report}");
    assert!(report["steps"].as_array().unwrap().iter().all(|s| s["done"] == true), "{report}");
    // Mounted as the spec says.
    for (mp, fs) in [("/", "ext4"), ("/boot", "ext4")] {
        let o = Command::new("findmnt")
            .args(["-rno", "FSTYPE", "--mountpoint"])
            .arg(root.join(mp.trim_start_matches('/')))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), fs, "{mp}");
    }
    // The key: the lab-held one, root-owned, 0600; the public half 0644.
    use std::os::unix::fs::MetadataExt;
    let placed = root.join("etc/ssh/ssh_host_ed25519_key");
    let meta = std::fs::metadata(&placed).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o600, 0, 0));
    assert_eq!(std::fs::metadata(placed.with_extension("pub")).unwrap().mode() & 0o777, 0o644);
    for dir in ["etc", "etc/ssh"] {
        assert_eq!(
            std::fs::metadata(root.join(dir)).unwrap().mode() & 0o777,
            0o755,
            "{dir} must stay readable"
        );
    }
    assert_eq!(fingerprint(&placed.with_extension("pub")), recorded_fp);
    let derived = run_ok(Command::new("ssh-keygen").arg("-yf").arg(&placed));
    assert_eq!(
        fingerprint_of_line(&derived, &work),
        recorded_fp,
        "the private key placed is not the recorded one"
    );
    assert!(!std::fs::read_dir(root.join("etc/ssh")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("labprov-tmp")));
    // The closure is in the target's store, registered there, and installed.
    let target_store = format!("local?root={}", root.display());
    let valid = run_ok(Command::new("nix-store").args([
        "--store",
        &target_store,
        "--check-validity",
        "--print-invalid",
        &system,
    ]));
    assert!(valid.trim().is_empty(), "{system} is not valid in the target store");
    assert_eq!(
        std::fs::read_link(root.join("nix/var/nix/profiles/system")).unwrap(),
        PathBuf::from(&system)
    );
    let args = std::fs::read_to_string(bin.join("nixos-install.args")).unwrap();
    assert_eq!(
        args.trim(),
        format!("--root {} --no-root-passwd --no-channel-copy --system {system}", root.display())
    );

    // A re-run of the same phases is harmless: the disk is kept as it is.
    std::fs::write(root.join("kept"), "from the first run").unwrap();
    let out = install(&["--fingerprint", &installer_fp, "--yes", "--phases", "disk,keys,install"]);
    assert!(out.status.success(), "re-run failed:\n{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(root.join("kept")).unwrap(),
        "from the first run",
        "the re-run reformatted the disk"
    );

    // Resuming after the installer lost its mounts (a reboot of the ISO):
    // keys and install mount the root from the spec first, so nothing lands
    // in the installer's own memory.
    let mut unmount = labprov();
    env(&mut unmount);
    run_ok(
        unmount
            .args(["disk", "unmount", "rydev", "--disk"])
            .arg(format!("main={}", img.display()))
            .arg("--root")
            .arg(&root),
    );
    std::fs::remove_dir_all(&root).unwrap();
    let out = install(&["--fingerprint", &installer_fp, "--phases", "keys,install"]);
    assert!(out.status.success(), "resume failed:\n{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(root.join("kept")).unwrap(),
        "from the first run",
        "resumed onto something else than the disk"
    );
    assert!(root.join("etc/ssh/ssh_host_ed25519_key").is_file());

    // After the "reboot": the host answers with the key the install placed.
    let host = lab.home.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let (host_sshd, host_port) = start_sshd(&host, &placed, &client.with_extension("pub"), "")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let verify = |port: u16| -> Output {
        let mut c = labprov();
        env(&mut c);
        c.args([
            "install",
            "rydev",
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--phases",
            "verify",
            "--wait",
            "3",
        ])
        .arg("--ssh-identity")
        .arg(&client)
        .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    let out = verify(host_port);
    assert!(out.status.success(), "verify failed:\n{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&recorded_fp));
    drop(host_sshd);
    // The installer's key is not the host's: verify refuses it.
    let out = verify(port);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("did not answer") && err.contains("--phases verify"),
        "{err}"
    );
    assert!(
        err.contains("Host key verification failed") || err.contains("REMOTE HOST IDENTIFICATION"),
        "refused for another reason: {err}"
    );
    assert_eq!(out.status.code(), Some(3), "another key than the recorded one exits 3 (mismatch)");

    // Ctrl-C while verify waits for a host that does not answer: it stops at
    // once (130), not when --wait runs out.
    let mut c = labprov();
    env(&mut c);
    c.args(["install", "rydev", "--address", "127.0.0.1", "--port", "9", "--phases", "verify"])
        .args(["--wait", "120", "--ssh-identity"])
        .arg(&client);
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let asked = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(30),
        "verify kept waiting after Ctrl-C"
    );
}

/// The fingerprint of a public key line.
fn fingerprint_of_line(line: &str, scratch: &Path) -> String {
    let f = scratch.join("derived.pub");
    std::fs::write(&f, line).unwrap();
    fingerprint(&f)
}
