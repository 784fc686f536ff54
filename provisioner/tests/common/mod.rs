//! Shared helpers of the provisioner's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The golden disko fixtures: `../shared/fixtures/disko` next to the repo
/// (CI copies shared/ beside the clone). Missing fixtures fail loudly.
pub fn fixtures_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("../shared/fixtures/disko");
    assert!(
        dir.is_dir(),
        "golden fixtures missing: {} does not exist; copy shared/ next to the repository (CI does)",
        dir.display()
    );
    dir
}

/// Every fixture example name (`<name>.input.json`), sorted.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name().to_str().and_then(|n| n.strip_suffix(".input.json")).map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no *.input.json in {}", fixtures_dir().display());
    names
}

pub fn read_json(name: &str) -> serde_json::Value {
    let path = fixtures_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Root and a working `losetup`: what the loop-device tests need.
pub fn loop_devices_available() -> Result<(), String> {
    if !nix_is_root() {
        return Err("not running as root".into());
    }
    let ok = std::process::Command::new("losetup")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err("losetup is not installed".into());
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control does not exist (no loop devices in this environment)".into());
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

// Not every test binary that includes this module uses both.
#[allow(unused_imports)]
pub use lab_testkit::{have_tool, skip};

/// Runs labprov with `args`, without a terminal on stdin and without
/// backtraces in its error output. Returns (success, stdout, stderr).
pub fn labprov(args: &[&str]) -> (bool, String, String) {
    labprov_with(args, &[])
}

/// [`labprov`] with these environment variables set too.
pub fn labprov_with(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_labprov"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run labprov");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `sfdisk --json IMG`: the partition table as util-linux reads it.
pub fn sfdisk_json(img: &std::path::Path) -> serde_json::Value {
    let out =
        std::process::Command::new("sfdisk").arg("--json").arg(img).output().expect("run sfdisk");
    assert!(
        out.status.success(),
        "sfdisk --json {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sfdisk json")
}
