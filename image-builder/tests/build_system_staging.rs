//! `labimg build --system` stages the closure without copying it: hard links
//! to the store's own files where the kernel allows them (the output on the
//! store's filesystem), a copy otherwise (here: --out on /dev/shm, another
//! filesystem). Both ways must give the same image byte for byte, the
//! store's own hard links must stay one inode in the image, and the store's
//! files must be as they were (a link shares their inode).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// A NixOS-shaped stand-in toplevel (tests/standin) whose closure also
/// holds a store path with two names for one file, as `nix-store
/// --optimise` (auto-optimise-store) leaves the store.
fn linked_toplevel(dir: &Path) -> Result<(String, String), String> {
    let expr = dir.join("linked.nix");
    fs::write(
        &expr,
        format!(
            r#"let
  mk = import {repo}/tests/standin/mk.nix;
  base = import {repo}/tests/standin/nixos-system.nix {{ host = "nixpi"; }};
  linked = mk "hardlinked-standin" "mkdir -p $out/a $out/b; echo same > $out/a/file; ln $out/a/file $out/b/file";
in
mk "nixos-system-nixpi-linked" ''
  mkdir -p $out
  for f in init nixos-version kernel initrd dtbs kernel-params; do cp -P ${{base}}/$f $out/; done
  ln -s ${{linked}} $out/linked
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

fn build(toplevel: &str, standin: &Path, fw: &Path, out: &Path) -> serde_json::Value {
    let mut cmd = labimg();
    cmd.args(["build", "nixpi", "--json", "--system", toplevel, "--bootloader"])
        .arg(standin.join("u-boot/rpi_4/u-boot.bin"))
        .arg("--firmware-dir")
        .arg(fw)
        .arg("--out")
        .arg(out);
    let done = ok(&mut cmd);
    serde_json::from_slice(&done.stdout).unwrap()
}

#[test]
fn a_closure_staged_by_links_builds_the_image_a_copy_builds_and_keeps_hard_links() {
    let t = "a_closure_staged_by_links_builds_the_image_a_copy_builds_and_keeps_hard_links";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !have("nix-build") {
        return skip(t, "nix-build is not installed (apt-get install nix-bin)");
    }
    let store_dev = fs::metadata("/nix/store").unwrap().dev();
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || fs::metadata(shm).unwrap().dev() == store_dev {
        return skip(t, "no /dev/shm on another filesystem than /nix/store to force the copy");
    }
    let tmp = tempfile::tempdir().unwrap();
    if fs::metadata(tmp.path()).unwrap().dev() != store_dev {
        return skip(t, "the temporary directory is not on /nix/store's filesystem (no links)");
    }
    let (toplevel, linked) = linked_toplevel(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    let store_file = Path::new(&linked).join("a/file");
    let before = fs::metadata(&store_file).unwrap();
    // Two names here; more where the store is optimised (auto-optimise-store).
    assert!(before.nlink() >= 2, "the stand-in store path holds one file under two names");
    let probe = tmp.path().join("probe");
    if let Err(e) = fs::hard_link(&store_file, &probe) {
        return skip(
            t,
            &format!("this user may not hard-link the store's files ({e}): labimg copies"),
        );
    }
    fs::remove_file(&probe).unwrap();

    let by_links = tmp.path().join("out");
    let report = build(&toplevel, &standin, &fw, &by_links);
    assert_eq!(report["staging"], "links", "{report}");
    let shm_out = tempfile::tempdir_in(shm).unwrap();
    let by_copy = shm_out.path().join("out");
    let report = build(&toplevel, &standin, &fw, &by_copy);
    assert_eq!(report["staging"], "copy", "{report}");

    let image = |out: &Path| fs::read(out.join("nixpi.img")).unwrap();
    assert!(image(&by_links) == image(&by_copy), "the two stagings gave different images");
    assert_eq!(
        fs::read(by_links.join("nixpi.img.sha256")).unwrap(),
        fs::read(by_copy.join("nixpi.img.sha256")).unwrap()
    );
    for out in [&by_links, &by_copy] {
        assert_eq!(
            listing(out),
            ["nixpi.img", "nixpi.img.bmap", "nixpi.img.sha256", "nixpi.manifest.json"],
            "the staging is gone"
        );
    }

    // In the image: both names one inode with two links, as in the store.
    let root = format!("{}?offset={}", by_links.join("nixpi.img").display(), 38 << 20);
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

    // The store's file is untouched: same inode, links, mode and time.
    let after = fs::metadata(&store_file).unwrap();
    assert_eq!(
        (after.ino(), after.nlink(), after.mode(), after.mtime()),
        (before.ino(), before.nlink(), before.mode(), before.mtime())
    );
}
