//! Shared set-up for labimg's whole-command tests: the repository's lab, the
//! stand-in root tree and firmware prepared by .ci/run, throwaway keys.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a standard tool that must succeed; its stdout.
pub fn tool_output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Says why a test cannot run here; the caller then returns (the one skip
/// gate of the workspace: `lab_testkit::skip`).
pub fn skip(test: &str, why: &str) {
    lab_testkit::skip(test, why);
}

fn prepared(var: &str, default: &str, what: &str, test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| repo().join(default));
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(
            test,
            &format!(
                "{what} not prepared at {} (set {var}, or run .ci/run which prepares it)",
                dir.display()
            ),
        );
        None
    }
}

/// The stand-in kit from tests/standin/make.sh: rootfs/, vmlinuz, initrd, u-boot.
pub fn standin(test: &str) -> Option<PathBuf> {
    prepared("LABIMG_STANDIN", "target/standin", "the stand-in root tree", test)
}

/// Firmware files from tests/firmware/prepare.sh.
pub fn firmware(test: &str) -> Option<PathBuf> {
    prepared("LABIMG_FIRMWARE", "target/firmware", "the pinned firmware files", test)
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A throwaway ed25519 key made for this test run only.
pub fn test_key(dir: &Path) -> PathBuf {
    let key = dir.join("ssh_host_ed25519_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "labimg-test", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    key
}

pub fn labimg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labimg"));
    c.env("LAB_ROOT", repo()).env_remove("SOURCE_DATE_EPOCH");
    c
}

/// `cmd` run through `wrapper` (a namespace or privilege tool with its
/// arguments, which then runs the program), with `cmd`'s environment.
pub fn wrapped<S: AsRef<std::ffi::OsStr>>(wrapper: &[S], cmd: &Command) -> Command {
    let mut out = Command::new(&wrapper[0]);
    out.args(&wrapper[1..]).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => out.env(key, v),
            None => out.env_remove(key),
        };
    }
    out
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{:?} failed:\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `labimg build nixpi` from the stand-in into `out`.
pub fn build_cmd(standin: &Path, firmware: &Path, key: Option<&Path>, out: &Path) -> Command {
    build_from(&standin.join("rootfs"), standin, firmware, key, out)
}

/// `labimg build nixpi` from another root tree (directory or tar).
pub fn build_from(
    rootfs: &Path,
    standin: &Path,
    firmware: &Path,
    key: Option<&Path>,
    out: &Path,
) -> Command {
    let mut c = labimg();
    c.args(["build", "nixpi", "--rootfs"])
        .arg(rootfs)
        .arg("--bootloader")
        .arg(standin.join("u-boot/rpi_4/u-boot.bin"))
        .arg("--firmware-dir")
        .arg(firmware)
        .arg("--out")
        .arg(out);
    if let Some(k) = key {
        c.arg("--host-key").arg(k);
    }
    c
}

/// The names in a directory, sorted (for "nothing left behind" checks).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs labimg as `nobody` in `work` (which nobody can read), with the lab
/// copied there; returns its output.
pub fn labimg_as_nobody(work: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_labimg"))
        .args(["--lab", "."])
        .args(args)
        .current_dir(work)
        .env("HOME", work)
        .env_remove("LAB_ROOT")
        .output()
        .expect("setpriv runs")
}

/// What a build as another user needs, copied into `work` (which that user
/// will own): the firmware files as `fw`, U-Boot as `u-boot.bin`, and the
/// lab (`hosts`, `firmware`) for `--lab .`.
pub fn inputs_for_another_user(work: &Path, standin: &Path, fw: &Path) {
    tool_output(Command::new("cp").arg("-a").arg(fw).arg(work.join("fw")));
    fs::copy(standin.join("u-boot/rpi_4/u-boot.bin"), work.join("u-boot.bin")).unwrap();
    tool_output(
        Command::new("cp")
            .arg("-r")
            .arg(repo().join("hosts"))
            .arg(repo().join("firmware"))
            .arg(work),
    );
}

/// A lab of its own: the repository's firmware pins and the given facts.
pub fn custom_lab(dir: &Path, facts_nix: &str) -> PathBuf {
    let lab = dir.join("lab");
    fs::create_dir_all(lab.join("hosts")).unwrap();
    fs::create_dir_all(lab.join("firmware")).unwrap();
    fs::write(lab.join("hosts/facts.nix"), facts_nix).unwrap();
    for f in ["manifest.toml", "config.txt"] {
        fs::copy(repo().join("firmware").join(f), lab.join("firmware").join(f)).unwrap();
    }
    lab
}
