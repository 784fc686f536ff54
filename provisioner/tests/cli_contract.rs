//! The exit-code contract, the one-line error, `--json` on a dry run and
//! Ctrl-C during `disk apply`, through the real binary. Mismatch (3) and the
//! refusals of install (4) are asserted in tests/install_sshd.rs, against a
//! real sshd.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn labprov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labprov"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run labprov")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A blank sparse 256 MiB disk image.
fn blank_disk(path: &Path) {
    fs::File::create(path).unwrap().set_len(256 << 20).unwrap();
}

/// `labprov disk apply` of [`spec`] onto a new blank disk image in `dir`.
fn apply_on_blank_disk(dir: &Path, extra: &[&str]) -> (std::path::PathBuf, Output) {
    let img = dir.join("disk.img");
    blank_disk(&img);
    let spec = spec(dir);
    let mapping = format!("main={}", img.display());
    let mut args = vec!["disk", "apply", "--spec", spec.to_str().unwrap(), "--disk", &mapping];
    args.extend_from_slice(extra);
    let out = labprov(&args);
    (img, out)
}

/// A one-disk GPT spec (an ext4 /boot and an ext4 root: this machine's
/// kernel mounts no vfat) as disko's devices JSON.
fn spec(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("spec.json");
    fs::write(
        &path,
        r#"{"disk":{"main":{"type":"disk","device":"/dev/vdb","content":{"type":"gpt","partitions":{
            "boot":{"size":"64M","content":{"type":"filesystem","format":"ext4","mountpoint":"/boot"}},
            "root":{"size":"100%","content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}"#,
    )
    .unwrap();
    path
}

#[test]
fn each_class_of_failure_has_its_exit_code_and_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    // Usage: a required flag missing, a bad --disk mapping, an unknown phase.
    for args in [
        &["install", "rydev"][..],
        &["disk", "apply", "--spec", "s.json", "--disk", "main"],
        &["install", "x", "--address", "a", "--phases", "kexec"],
    ] {
        let out = labprov(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // Failure: one line on stderr, no `Caused by:` list.
    let out =
        labprov(&["keys", "derive", "--ssh-key", tmp.path().join("none.pub").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("labprov: error: ")
            && err.contains("none.pub")
            && !err.contains("Caused by"),
        "{err}"
    );

    // Refused: no terminal to confirm the disk write on, and no --yes.
    let (img, out) =
        apply_on_blank_disk(tmp.path(), &["--root", tmp.path().join("mnt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--yes") && stderr(&out).lines().count() == 1,
        "{}",
        stderr(&out)
    );
    assert!(fs::read(&img).unwrap().iter().all(|&b| b == 0), "a refused apply wrote");
}

#[test]
fn apply_dry_run_json_is_json_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, out) = apply_on_blank_disk(tmp.path(), &["--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(plan["dryRun"], serde_json::Value::Bool(true), "{plan}");
    assert!(plan["steps"].as_array().is_some_and(|s| !s.is_empty()), "{plan}");
    assert!(
        plan["targets"][0].as_str().is_some_and(|t| t.contains(img.to_str().unwrap())),
        "{plan}"
    );
    assert!(fs::read(&img).unwrap().iter().all(|&b| b == 0), "a dry run wrote");
}

/// The partition table's shape: each partition's start, size, type and name.
fn layout(img: &Path) -> String {
    let table = Command::new("sfdisk").arg("--json").arg(img).output().unwrap();
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let mut v: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    // Only the layout: the table's own ids are random per first write.
    v["partitiontable"]["device"] = serde_json::Value::Null;
    let parts = v["partitiontable"]["partitions"].as_array().cloned().unwrap_or_default();
    let shape: Vec<String> = parts
        .iter()
        .map(|p| format!("{} {} {} {}", p["start"], p["size"], p["type"], p["name"]))
        .collect();
    shape.join("\n")
}

#[test]
fn ctrl_c_during_disk_apply_leaves_a_state_a_rerun_completes() {
    let t = "ctrl_c_during_disk_apply_leaves_a_state_a_rerun_completes";
    if let Err(why) = common::loop_devices_available() {
        lab_testkit::skip(t, &why);
        return;
    }
    if !lab_testkit::require_tools(t, &["sfdisk", "mkfs.ext4", "blkid"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let root = tmp.path().join("mnt");
    let run = |img: &Path, interrupt_after: Option<std::time::Duration>| -> Output {
        let mapping = format!("main={}", img.display());
        let mut c = Command::new(env!("CARGO_BIN_EXE_labprov"));
        c.args(["disk", "apply", "--yes", "--spec"])
            .arg(&spec)
            .args(["--disk", &mapping, "--root"])
            .arg(&root);
        let child =
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if let Some(after) = interrupt_after {
            std::thread::sleep(after);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        child.wait_with_output().unwrap()
    };
    let unmount = |img: &Path| {
        let mapping = format!("main={}", img.display());
        let out = labprov(&[
            "disk",
            "unmount",
            "--spec",
            spec.to_str().unwrap(),
            "--disk",
            &mapping,
            "--root",
            root.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "unmount: {}", stderr(&out));
    };

    // The reference: one uninterrupted apply.
    let reference = tmp.path().join("reference.img");
    blank_disk(&reference);
    let out = run(&reference, None);
    assert!(out.status.success(), "{}", stderr(&out));
    unmount(&reference);

    // Interrupted at several points (before, during and after the writes),
    // each then re-run: the same layout, and both filesystems check clean.
    let mut interrupted = 0;
    for ms in [5u64, 60, 250] {
        let img = tmp.path().join(format!("interrupted-{ms}.img"));
        blank_disk(&img);
        let first = run(&img, Some(std::time::Duration::from_millis(ms)));
        if !first.status.success() {
            interrupted += 1;
            assert_eq!(
                first.status.code(),
                Some(130),
                "interrupted at {ms} ms: {}",
                stderr(&first)
            );
            assert!(stderr(&first).contains("interrupted"), "{}", stderr(&first));
        }
        eprintln!("interrupt at {ms} ms: {:?}", first.status.code());
        let again = run(&img, None);
        assert!(again.status.success(), "re-run after an interrupt at {ms} ms: {}", stderr(&again));
        assert!(root.join("boot").is_dir(), "the re-run did not mount /boot");
        unmount(&img);
        assert_eq!(layout(&img), layout(&reference), "interrupted at {ms} ms");
    }
    assert!(interrupted > 0, "no run was interrupted: the test proved nothing");
}
