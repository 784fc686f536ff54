//! `labimg build --system` stages the closure without copying it: each
//! store path bind-mounted into a skeleton for mkfs alone (a mount
//! namespace of its own; a user namespace for a user other than root), else
//! hard links to the store's own files (the output on the store's
//! filesystem), else a copy. Every way must give the same image byte for
//! byte, whoever builds it; the store's own hard links must stay one inode
//! in the image, and the store's files must be as they were.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A NixOS-shaped stand-in toplevel (tests/standin) whose closure also
/// holds a store path with two names for one file, as `nix-store
/// --optimise` (auto-optimise-store) leaves the store, a store path that is
/// a single file and one that is a symlink (a real closure has hundreds of
/// the first kind; neither can be mounted as a directory).
fn linked_toplevel(dir: &Path) -> Result<(String, String), String> {
    let expr = dir.join("linked.nix");
    fs::write(
        &expr,
        format!(
            r#"let
  mk = import {repo}/tests/standin/mk.nix;
  base = import {repo}/tests/standin/nixos-system.nix {{ host = "nixpi"; }};
  linked = mk "hardlinked-standin" "mkdir -p $out/a $out/b; echo same > $out/a/file; ln $out/a/file $out/b/file";
  single = mk "single-file-standin" "echo single > $out";
  symlink = mk "symlink-standin" "ln -s ${{linked}}/a/file $out";
in
mk "nixos-system-nixpi-linked" ''
  mkdir -p $out
  for f in init nixos-version kernel initrd dtbs kernel-params; do cp -P ${{base}}/$f $out/; done
  ln -s ${{linked}} $out/linked
  ln -s ${{single}} $out/single
  ln -s ${{symlink}} $out/symlink
''
"#,
            repo = repo().display()
        ),
    )
    .unwrap();
    let built = Command::new("nix-build").arg(&expr).arg("--no-out-link").output().unwrap();
    if !built.status.success() {
        return Err(String::from_utf8_lossy(&built.stderr).trim().to_string());
    }
    let toplevel = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let linked = fs::read_link(Path::new(&toplevel).join("linked")).unwrap();
    Ok((toplevel, linked.display().to_string()))
}

fn build_cmd(toplevel: &str, standin: &Path, fw: &Path, out: &Path, how: &str) -> Command {
    let mut cmd = labimg();
    cmd.args(["build", "nixpi", "--json", "--system", toplevel, "--staging", how, "--bootloader"])
        .arg(standin.join("u-boot/rpi_4/u-boot.bin"))
        .arg("--firmware-dir")
        .arg(fw)
        .arg("--out")
        .arg(out);
    cmd
}

fn build(toplevel: &str, standin: &Path, fw: &Path, out: &Path, how: &str) -> serde_json::Value {
    let done = ok(&mut build_cmd(toplevel, standin, fw, out, how));
    serde_json::from_slice(&done.stdout).unwrap()
}

/// Whether this machine lets root make a mount namespace (not in every
/// container), as `--staging auto` will find out.
fn mount_namespaces() -> bool {
    Command::new("unshare").args(["--mount", "true"]).status().is_ok_and(|s| s.success())
}

/// The stand-in toplevel with its hard-linked store path, or why not.
fn prepared(t: &str, tmp: &Path) -> Option<(PathBuf, PathBuf, String, String)> {
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return None;
    };
    if !have("nix-build") {
        skip(t, "nix-build is not installed (apt-get install nix-bin)");
        return None;
    }
    let (toplevel, linked) = linked_toplevel(tmp).unwrap_or_else(|e| panic!("{e}"));
    Some((standin, fw, toplevel, linked))
}

fn image(out: &Path) -> Vec<u8> {
    fs::read(out.join("nixpi.img")).unwrap()
}

#[test]
fn a_closure_staged_by_mounts_links_or_copy_builds_one_image_and_keeps_hard_links() {
    let t = "a_closure_staged_by_mounts_links_or_copy_builds_one_image_and_keeps_hard_links";
    let tmp = tempfile::tempdir().unwrap();
    let Some((standin, fw, toplevel, linked)) = prepared(t, tmp.path()) else {
        return;
    };
    if !mount_namespaces() {
        return skip(t, "this system does not let root make a mount namespace (unshare --mount)");
    }
    let store_file = Path::new(&linked).join("a/file");
    let before = fs::metadata(&store_file).unwrap();
    // Two names here; more where the store is optimised (auto-optimise-store).
    assert!(before.nlink() >= 2, "the stand-in store path holds one file under two names");
    // Links need the output on the store's filesystem, and this user's
    // right to link the store's files; the other two ways do not.
    let probe = tmp.path().join("probe");
    let mut ways = vec![("auto", "mounts"), ("copy", "copy")];
    match fs::hard_link(&store_file, &probe) {
        Ok(()) => {
            fs::remove_file(&probe).unwrap();
            ways.push(("links", "links"));
        }
        Err(e) => {
            skip(t, &format!("no hard links to the store from {} ({e})", tmp.path().display()))
        }
    }

    let mut outs = Vec::new();
    for (how, staged) in ways {
        let out = tmp.path().join(format!("out-{how}"));
        let report = build(&toplevel, &standin, &fw, &out, how);
        assert_eq!(report["staging"], staged, "--staging {how}: {report}");
        assert_eq!(
            listing(&out),
            ["nixpi.img", "nixpi.img.bmap", "nixpi.img.sha256", "nixpi.manifest.json"],
            "--staging {how}: the staging is gone"
        );
        outs.push(out);
    }
    for out in &outs[1..] {
        assert!(image(&outs[0]) == image(out), "{} differs from the mounts' image", out.display());
        assert_eq!(
            fs::read(outs[0].join("nixpi.img.sha256")).unwrap(),
            fs::read(out.join("nixpi.img.sha256")).unwrap()
        );
    }
    // Where / is shared (systemd's default; not in this test's namespace),
    // the mounts must not reach the namespace labimg runs in: a build in a
    // namespace whose / is shared, then that namespace's mounts.
    let build = build_cmd(&toplevel, &standin, &fw, &tmp.path().join("out-shared"), "auto");
    let report = tmp.path().join("report.json");
    let script = "r=$1; shift; \"$@\" > \"$r\" && cat /proc/self/mountinfo";
    let shared = ["unshare", "--mount", "--propagation", "shared", "sh", "-c", script, "sh"];
    let mut shared: Vec<&std::ffi::OsStr> = shared.iter().map(|s| s.as_ref()).collect();
    shared.push(report.as_os_str());
    let mounts = tool_output(&mut wrapped(&shared, &build));
    assert!(mounts.contains(" / / ") && !mounts.contains(".labimg-system."), "{mounts}");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["staging"], "mounts", "{report}");

    // The single-file and the symlink store paths, as in the store.
    let single = fs::read_link(Path::new(&toplevel).join("single")).unwrap();
    let symlink = fs::read_link(Path::new(&toplevel).join("symlink")).unwrap();
    let in_image = |p: &Path, cmd: &str| {
        let root = format!("{}?offset={}", outs[0].join("nixpi.img").display(), 38 << 20);
        let cmd = format!("{cmd} {}", p.display());
        tool_output(Command::new("debugfs").args(["-R", &cmd]).arg(&root))
    };
    assert_eq!(in_image(&single, "cat"), "single\n");
    let stat = in_image(&symlink, "stat");
    let target = fs::read_link(&symlink).unwrap();
    let size = format!("Size: {}\n", target.as_os_str().len());
    assert!(stat.contains("Type: symlink") && stat.contains(&size), "{size}: {stat}");
    // The store's time (1 s after the epoch), as a link or copy keeps it.
    assert!(stat.contains("mtime: 0x00000001"), "{stat}");

    // In the image: both names one inode with two links, as in the store.
    let root = format!("{}?offset={}", outs[0].join("nixpi.img").display(), 38 << 20);
    tool_output(Command::new("e2fsck").arg("-fn").arg(&root));
    let name = linked.trim_start_matches("/nix/store/");
    let stat = |p: &str| {
        tool_output(
            Command::new("debugfs").args(["-R", &format!("stat /nix/store/{name}/{p}")]).arg(&root),
        )
    };
    let inode = |s: &str| {
        s.split_whitespace().skip_while(|w| *w != "Inode:").nth(1).unwrap_or("").to_string()
    };
    let (a, b) = (stat("a/file"), stat("b/file"));
    assert!(!inode(&a).is_empty() && inode(&a) == inode(&b), "not one inode:\n{a}\n{b}");
    assert!(a.contains("Links: 2"), "{a}");
    assert!(a.contains("User:     0   Group:     0"), "{a}");

    // The store's file is untouched: same inode, mode, time and content.
    // (Not its link count: the other tests of this file, running at the
    // same time, stage the same store path by links; this test's own links
    // are gone with its staging trees, checked above.)
    let after = fs::metadata(&store_file).unwrap();
    assert_eq!(
        (after.ino(), after.mode(), after.mtime()),
        (before.ino(), before.mode(), before.mtime())
    );
    assert_eq!(fs::read(&store_file).unwrap(), b"same\n");
}

/// A user other than root (uid 12345, not `nobody`: the kernel's overflow
/// uid, under which root's store files appear in a user namespace, must be
/// told apart from the builder) gets the mounts in a user namespace of its
/// own, and the image root gets. Its store is mounted `ro,nosuid,nodev`, as
/// NixOS mounts /nix/store: flags that a user namespace locks.
#[test]
fn a_user_other_than_root_stages_by_mounts_and_builds_roots_image() {
    let t = "a_user_other_than_root_stages_by_mounts_and_builds_roots_image";
    let tmp = tempfile::Builder::new().prefix("labimg-staging").tempdir_in("/tmp").unwrap();
    let Some((standin, fw, toplevel, _)) = prepared(t, tmp.path()) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() || !have("setpriv") {
        return skip(t, "needs root (to become another user with setpriv)");
    }
    let user = ["--reuid=12345", "--regid=12345", "--clear-groups"];
    let userns = Command::new("setpriv")
        .args(user)
        .args(["unshare", "--user", "--map-current-user", "--mount", "true"])
        .status();
    if !userns.is_ok_and(|s| s.success()) {
        return skip(t, "this system does not let a user make a user namespace");
    }
    // A user other than root reaches the store through its daemon, as on
    // a multi-user install (here: one of this test's own, on its own socket).
    let socket = tmp.path().join("daemon-socket");
    let Some(_daemon) = NixDaemon::start(&socket) else {
        return skip(t, "nix-daemon is not installed or did not start (apt-get install nix-bin)");
    };
    let by_root = tmp.path().join("out-root");
    let report = build(&toplevel, &standin, &fw, &by_root, "auto");
    assert_eq!(report["staging"], "mounts", "{report}");

    fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    inputs_for_another_user(&work, &standin, &fw);
    tool_output(Command::new("chown").args(["-R", "12345:12345"]).arg(&work));
    let store_as_on_nixos = "mount --bind /nix/store /nix/store \
        && mount -o remount,bind,ro,nosuid,nodev /nix/store && exec \"$@\"";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", store_as_on_nixos, "sh"])
        .arg("setpriv")
        .args(user)
        .arg(env!("CARGO_BIN_EXE_labimg"))
        .args(["--lab", ".", "build", "nixpi", "--json", "--system", &toplevel])
        .args(["--bootloader", "u-boot.bin", "--firmware-dir", "fw", "--out", "out"])
        .current_dir(&work)
        .env("HOME", &work)
        .env("NIX_REMOTE", "daemon")
        .env("NIX_DAEMON_SOCKET_PATH", &socket)
        .env_remove("LAB_ROOT")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["staging"], "mounts", "{report}");
    assert!(image(&by_root) == image(&work.join("out")), "uid 12345's image differs from root's");
}

/// `nix-daemon` on a socket of its own, stopped when dropped.
struct NixDaemon(std::process::Child);

impl NixDaemon {
    fn start(socket: &Path) -> Option<NixDaemon> {
        let child = Command::new("nix-daemon")
            .env("NIX_DAEMON_SOCKET_PATH", socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let daemon = NixDaemon(child);
        for _ in 0..100 {
            if socket.exists() {
                return Some(daemon);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for NixDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_refused_staging_says_what_to_try_and_leaves_nothing() {
    let t = "a_refused_staging_says_what_to_try_and_leaves_nothing";
    let tmp = tempfile::tempdir().unwrap();
    let Some((standin, fw, toplevel, _)) = prepared(t, tmp.path()) else {
        return;
    };
    let shm = Path::new("/dev/shm");
    let store_dev = fs::metadata("/nix/store").unwrap().dev();
    if !shm.is_dir() || fs::metadata(shm).unwrap().dev() == store_dev {
        return skip(t, "no /dev/shm on another filesystem than /nix/store to refuse the links");
    }
    let shm_out = tempfile::tempdir_in(shm).unwrap();
    let out = shm_out.path().join("out");
    let failed = run(&mut build_cmd(&toplevel, &standin, &fw, &out, "links"));
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let err = stderr(&failed);
    assert!(
        err.contains("--staging links: the kernel refused a hard link to the store")
            && err.contains("try --staging copy"),
        "{err}"
    );
    assert_eq!(listing(&out), Vec::<String>::new(), "nothing left in --out");

    // A dry run links nothing, so it does not refuse what the build would.
    let dry = shm_out.path().join("dry");
    ok(build_cmd(&toplevel, &standin, &fw, &dry, "links").arg("--dry-run"));
    assert!(!dry.exists(), "a dry run created {}", dry.display());

    // Without CAP_SYS_ADMIN (a container that withholds it) root may not
    // make a mount namespace: --staging mounts says so and what to try
    // instead, and auto goes on with the next way.
    if nix::unistd::geteuid().is_root() && have("setpriv") {
        let no_admin = |how: &str, out: &Path| {
            let build = build_cmd(&toplevel, &standin, &fw, out, how);
            wrapped(&["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"], &build)
        };
        let out = tmp.path().join("out-no-admin");
        let refused = run(&mut no_admin("mounts", &out));
        let err = stderr(&refused);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--staging mounts: mounting the closure for mkfs.ext4 failed (")
                && err.contains("Operation not permitted")
                && err.contains("try --staging links or --staging copy"),
            "{err}"
        );
        assert_eq!(listing(&out), Vec::<String>::new(), "nothing left in --out");
        let done = ok(&mut no_admin("auto", &out));
        let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
        assert!(report["staging"] == "links" || report["staging"] == "copy", "{report}");
    } else {
        skip(t, "needs root and setpriv (to withhold CAP_SYS_ADMIN from labimg)");
    }

    // --staging is for a system's closure, not a prepared tree.
    let mut cmd = labimg();
    cmd.args(["build", "nixpi", "--staging", "copy", "--rootfs"]).arg(standin.join("rootfs"));
    let usage = run(&mut cmd);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(stderr(&usage).contains("cannot be used with"), "{}", stderr(&usage));
}
