//! `labimg build --compress zstd`: the .zst is the uncompressed build's image
//! (read back by the real `zstd -d`, `labimg flash` and bmaptool), the block
//! map and checksums beside it describe that image, it is byte-reproducible
//! whatever the number of cores, and dry runs, bad levels and Ctrl-C leave
//! nothing.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

const EPOCH: &str = "1700000000";

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    tool_output(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_string()
}

/// What a compressed build leaves, and nothing else (no temporary files, no
/// uncompressed image).
const COMPRESSED_OUTPUTS: [&str; 5] = [
    "nixpi.img.bmap",
    "nixpi.img.sha256",
    "nixpi.img.zst",
    "nixpi.img.zst.sha256",
    "nixpi.manifest.json",
];

#[test]
fn the_zst_decompresses_and_flashes_to_the_uncompressed_build() {
    let t = "the_zst_decompresses_and_flashes_to_the_uncompressed_build";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !lab_testkit::require_tools(t, &["zstd", "sha256sum", "ssh-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let (plain, packed) = (tmp.path().join("plain"), tmp.path().join("packed"));
    ok(build_cmd(&standin, &fw, Some(&key), &plain).env("SOURCE_DATE_EPOCH", EPOCH));
    let res = ok(build_cmd(&standin, &fw, Some(&key), &packed)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--compress", "zstd", "--json"]));
    assert_eq!(listing(&packed), COMPRESSED_OUTPUTS);
    let image = fs::read(plain.join("nixpi.img")).unwrap();
    let zst = packed.join("nixpi.img.zst");

    // The summary says the output is compressed, and both sizes.
    let summary = json(&res);
    assert_eq!(summary["outputs"]["image"], zst.to_str().unwrap());
    let info = &summary["manifest"]["image"];
    assert_eq!(info["file"], "nixpi.img");
    assert_eq!(info["size"], image.len() as u64);
    let c = &info["compressed"];
    assert_eq!((c["file"].as_str(), c["format"].as_str()), (Some("nixpi.img.zst"), Some("zstd")));
    assert_eq!(c["level"], image_builder::compress::DEFAULT_LEVEL);
    assert_eq!(c["size"], fs::metadata(&zst).unwrap().len());
    assert_eq!(c["sha256"].as_str().unwrap(), sha256(&zst));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(packed.join("nixpi.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest, summary["manifest"]);

    // It holds the private key, as the image does: only its owner reads it.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&zst).unwrap().permissions().mode() & 0o777, 0o600);

    // The real zstd gives back the uncompressed build's image, byte for byte,
    // and the checksum files are sha256sum's and right.
    let decompressed = tmp.path().join("nixpi.img");
    tool_output(Command::new("zstd").args(["-d", "-q"]).arg(&zst).arg("-o").arg(&decompressed));
    assert!(fs::read(&decompressed).unwrap() == image, "zstd -d differs from the plain build");
    tool_output(
        Command::new("sha256sum").arg("-c").arg("nixpi.img.zst.sha256").current_dir(&packed),
    );
    fs::copy(packed.join("nixpi.img.sha256"), tmp.path().join("nixpi.img.sha256")).unwrap();
    tool_output(
        Command::new("sha256sum").arg("-c").arg("nixpi.img.sha256").current_dir(tmp.path()),
    );
    // The block map and checksum are the uncompressed build's own.
    for f in ["nixpi.img.bmap", "nixpi.img.sha256"] {
        assert_eq!(fs::read(plain.join(f)).unwrap(), fs::read(packed.join(f)).unwrap(), "{f}");
    }

    // labimg flash streams it to a file with the block map found beside it,
    // reads back and verifies; the file is then the image.
    let target = tmp.path().join("card.raw");
    let res = ok(labimg().args(["flash", "--yes", "--json"]).arg(&zst).arg(&target));
    let report = json(&res);
    assert_eq!(report["verify"], "ok");
    assert_eq!(report["mappedFrom"], "block map");
    assert_eq!(report["imageSize"], image.len() as u64);
    let written = fs::read(&target).unwrap();
    assert!(written[..image.len()] == image[..], "the flashed file differs from the image");
    // And `labimg verify` re-checks the card against the .zst.
    ok(labimg().args(["verify"]).arg(&zst).arg(&target));
}

#[test]
fn bmaptool_copies_the_zst_with_the_block_map_beside_it() {
    let t = "bmaptool_copies_the_zst_with_the_block_map_beside_it";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !lab_testkit::require_tools(t, &["bmaptool"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (plain, packed) = (tmp.path().join("plain"), tmp.path().join("packed"));
    ok(&mut build_cmd(&standin, &fw, None, &plain));
    ok(build_cmd(&standin, &fw, None, &packed).args(["--compress", "zstd"]));
    let image = fs::read(plain.join("nixpi.img")).unwrap();
    let zst = packed.join("nixpi.img.zst");
    // bmaptool (3.6 here) reads zstd itself: with the map named, and with
    // the map it finds beside the .zst (X.img.zst.bmap, then X.img.bmap).
    let named = tmp.path().join("named.raw");
    tool_output(
        Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(packed.join("nixpi.img.bmap"))
            .arg(&zst)
            .arg(&named),
    );
    assert!(fs::read(&named).unwrap() == image, "bmaptool's copy differs from the image");
    let found = tmp.path().join("found.raw");
    let out = Command::new("bmaptool").arg("copy").arg(&zst).arg(&found).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("nixpi.img.bmap"), "bmaptool did not use the block map: {err}");
    assert!(fs::read(&found).unwrap() == image);
}

#[test]
fn compressed_builds_are_byte_identical_whatever_the_cores() {
    let t = "compressed_builds_are_byte_identical_whatever_the_cores";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !lab_testkit::require_tools(t, &["taskset"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let copy = tmp.path().join("rootfs-copy");
    tool_output(Command::new("cp").arg("-a").arg(standin.join("rootfs")).arg(&copy));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(build_cmd(&standin, &fw, Some(&key), &a)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--compress", "zstd"]));
    // The second reads a copy of the tree on one CPU (one zstd worker where
    // the first had every core).
    let mut one_cpu = Command::new("taskset");
    let second = build_from(&copy, &standin, &fw, Some(&key), &b);
    one_cpu
        .args(["-c", "0"])
        .arg(second.get_program())
        .args(second.get_args())
        .envs(second.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--compress", "zstd"]);
    ok(&mut one_cpu);
    // The manifest names the tree's path, which differs; everything else
    // is the same.
    for f in COMPRESSED_OUTPUTS.iter().filter(|f| !f.ends_with(".json")) {
        assert!(fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    // Another level is another .zst of the same image.
    let c = tmp.path().join("c");
    ok(build_cmd(&standin, &fw, Some(&key), &c).env("SOURCE_DATE_EPOCH", EPOCH).args([
        "--compress",
        "zstd",
        "--compress-level",
        "1",
    ]));
    assert_eq!(
        fs::read(a.join("nixpi.img.sha256")).unwrap(),
        fs::read(c.join("nixpi.img.sha256")).unwrap()
    );
    assert!(
        fs::read(a.join("nixpi.img.zst")).unwrap() != fs::read(c.join("nixpi.img.zst")).unwrap()
    );
}

#[test]
fn a_compressed_dry_run_says_so_and_writes_nothing() {
    let t = "a_compressed_dry_run_says_so_and_writes_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let res = ok(build_cmd(&standin, &fw, None, &out).args([
        "--compress",
        "zstd",
        "--compress-level",
        "19",
        "--dry-run",
        "--json",
    ]));
    let plan = json(&res);
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["image"], out.join("nixpi.img.zst").to_str().unwrap());
    assert_eq!(
        (plan["compress"]["format"].as_str(), plan["compress"]["level"].as_i64()),
        (Some("zstd"), Some(19))
    );
    assert!(plan["compress"]["workers"].as_u64().unwrap() >= 1);
    assert!(!out.exists(), "a dry run created the output directory");
    // The text plan names the compression too.
    let res = ok(build_cmd(&standin, &fw, None, &out).args(["--compress", "zstd", "--dry-run"]));
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(
        text.contains("nixpi.img.zst") && text.contains("compressed with zstd level"),
        "{text}"
    );
    assert!(!out.exists());
}

#[test]
fn a_bad_level_is_a_usage_error_and_writes_nothing() {
    let t = "a_bad_level_is_a_usage_error_and_writes_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cases: [&[&str]; 6] = [
        &["--compress", "zstd", "--compress-level", "0"],
        &["--compress", "zstd", "--compress-level", "23"],
        &["--compress", "zstd", "--compress-level", "fast"],
        &["--compress", "gzip"],
        // A level alone would be silently ignored: it needs --compress zstd.
        &["--compress-level", "5"],
        &["--compress", "none", "--compress-level", "5"],
    ];
    for args in cases {
        let res = run(build_cmd(&standin, &fw, None, &out).args(args));
        let err = stderr(&res);
        assert_eq!(res.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--compress"), "{args:?}: the message names the option: {err}");
        assert!(!out.exists(), "{args:?} wrote {:?}", listing(&out));
    }
    let res = run(build_cmd(&standin, &fw, None, &out).args([
        "--compress-level",
        "23",
        "--compress",
        "zstd",
    ]));
    assert!(stderr(&res).contains("1..=22"), "the message gives the range: {}", stderr(&res));
}

#[test]
fn ctrl_c_while_compressing_leaves_nothing() {
    let t = "ctrl_c_while_compressing_leaves_nothing";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Data zstd cannot shrink, at its slowest level: compressing it takes
    // seconds, the rest of the build a fraction of one.
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let mut x: u64 = 0x5eed;
    let mut blob = vec![0u8; 48 << 20];
    for chunk in blob.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs::write(tree.join("blob"), &blob).unwrap();
    let out = tmp.path().join("out");
    let mut child = build_from(&tree, &standin, &fw, None, &out)
        .args(["--compress", "zstd", "--compress-level", "19"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The compress phase has begun once its .zst exists under a temporary name.
    let started = std::time::Instant::now();
    while !listing(&out).iter().any(|n| n.starts_with(".nixpi.img.zst.")) {
        assert!(child.try_wait().unwrap().is_none(), "the build ended before it compressed");
        assert!(started.elapsed().as_secs() < 120, "no compression began: {:?}", listing(&out));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let res = child.wait_with_output().unwrap();
    let err = stderr(&res);
    assert_eq!(res.status.code(), Some(130), "the build was not interrupted: {err}");
    assert!(err.contains("interrupted") && err.contains("run the same command again"), "{err}");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));
}

#[test]
fn the_other_form_of_the_image_stays_only_while_it_is_the_same_image() {
    let t = "the_other_form_of_the_image_stays_only_while_it_is_the_same_image";
    let (Some(standin), Some(fw)) = (standin(t), firmware(t)) else {
        return;
    };
    if !lab_testkit::require_tools(t, &["ssh-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = test_key(tmp.path());
    let out = tmp.path().join("out");
    let build = |key: &Path, extra: &[&str]| {
        ok(build_cmd(&standin, &fw, Some(key), &out).env("SOURCE_DATE_EPOCH", EPOCH).args(extra))
    };
    // Plain, then compressed from the same inputs: the same image, so the
    // plain one is kept beside the .zst (both match the map and checksum).
    build(&key, &[]);
    let res = build(&key, &["--compress", "zstd", "--json"]);
    assert!(out.join("nixpi.img").is_file(), "{:?}", listing(&out));
    assert!(out.join("nixpi.img.zst").is_file());
    let removed = &json(&res)["outputs"]["removed"];
    assert!(removed.as_array().is_none_or(|a| a.is_empty()), "{removed}");
    // Plain with another key: another image, so the .zst (and its
    // checksum), which the new map no longer describes, go, and are named.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let other_key = test_key(&other);
    let res = build(&other_key, &["--json"]);
    assert!(!out.join("nixpi.img.zst").exists() && !out.join("nixpi.img.zst.sha256").exists());
    let removed = json(&res)["outputs"]["removed"].to_string();
    assert!(removed.contains("nixpi.img.zst"), "{removed}");
    // Compressed with the first key again: the plain image is now another
    // one, so it goes.
    build(&key, &["--compress", "zstd"]);
    assert_eq!(listing(&out), COMPRESSED_OUTPUTS);
}
