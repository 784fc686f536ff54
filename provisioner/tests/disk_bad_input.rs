//! Whole-command tests of `labprov disk apply` on bad input: each is a clear
//! error that names the spec path (or the flag) and what to do, a non-zero
//! exit, and not one byte written to any image. None needs root.

mod common;

use std::path::{Path, PathBuf};

use common::labprov;

/// A 64 MiB sparse image with a marker at both ends (where a table would
/// go), so any write shows up as changed bytes.
fn image(dir: &Path, name: &str) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create image");
    f.set_len(64 << 20).expect("size image");
    let marker = vec![0xA5u8; 64 << 10];
    f.write_all(&marker).expect("marker");
    f.seek(SeekFrom::End(-(64 << 10))).expect("seek");
    f.write_all(&marker).expect("marker");
    path
}

fn spec(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("spec.json");
    std::fs::write(&path, text).expect("write spec");
    path
}

/// Runs `labprov disk ARGS` and checks: failure, every `needles` in stderr,
/// no panic, and every image byte-identical afterwards.
fn refused(args: &[&str], images: &[&Path], needles: &[&str]) -> String {
    let before: Vec<Vec<u8>> =
        images.iter().map(|p| std::fs::read(p).expect("read image")).collect();
    let (ok, out, err) = labprov(args);
    assert!(!ok, "labprov {args:?} succeeded:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "labprov panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr of labprov {args:?} lacks `{n}`:\n{err}");
    }
    for (p, b) in images.iter().zip(before) {
        assert!(
            std::fs::read(p).expect("read image") == b,
            "{} changed although labprov refused:\n{err}",
            p.display()
        );
    }
    err
}

fn one_disk(partitions: &str) -> String {
    format!(
        r#"{{"disk": {{"main": {{"type": "disk", "device": "/dev/vda", "content": {{"type": "gpt", "partitions": {partitions}}}}}}}}}"#
    )
}

const TWO_DISKS: &str = r#"{"disk": {
  "main": {"type": "disk", "device": "/dev/vda", "content": {"type": "gpt", "partitions": {"root": {"size": "32M"}}}},
  "second": {"type": "disk", "device": "/dev/vdb", "content": {"type": "gpt", "partitions": {"data": {"size": "SIZE"}}}}}}"#;

fn apply_args<'a>(spec: &'a str, disks: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["disk", "apply", "--spec", spec];
    for d in disks {
        a.push("--disk");
        a.push(d);
    }
    a.extend_from_slice(extra);
    a
}

#[test]
fn unknown_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s =
        spec(dir.path(), &one_disk(r#"{"root": {"size": "100%", "content": {"type": "ext5fs"}}}"#));
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &[
            "disko.devices.disk.main.content.partitions.root.content.type",
            "unknown content type `ext5fs`",
            "filesystem",
        ],
    );
}

#[test]
fn two_partitions_of_100_percent() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(dir.path(), &one_disk(r#"{"a": {"size": "100%"}, "b": {"size": "100%"}}"#));
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["disko.devices.disk.main.content.partitions", "(a, b)", "100%", "fixed size"],
    );
    // plan refuses it too, before any disk is named.
    let (ok, _, err) = labprov(&["disk", "plan", "--spec", s.to_str().unwrap()]);
    assert!(!ok && err.contains("100%"), "{err}");
}

#[test]
fn sizes_that_do_not_fit_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(
        dir.path(),
        &one_disk(r#"{"a": {"size": "40M"}, "b": {"size": "40M"}, "c": {"size": "100%"}}"#),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &[
            "disko.devices.disk.main.content.partitions.b",
            "does not fit",
            "67108864 bytes",
            "nothing was written",
        ],
    );
    // A single partition larger than the disk.
    let s = spec(dir.path(), &one_disk(r#"{"big": {"size": "1G"}}"#));
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["partitions.big", "does not fit"],
    );
}

#[test]
fn second_disk_does_not_fit_and_the_first_is_not_written_either() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img");
    let b = image(dir.path(), "b.img");
    let s = spec(dir.path(), &TWO_DISKS.replace("SIZE", "100M"));
    let disks = [format!("main={}", a.display()), format!("second={}", b.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&a, &b],
        &["disko.devices.disk.second.content.partitions.data", "does not fit"],
    );
}

#[test]
fn msdos_with_a_fifth_primary_partition() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let parts: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"start": "{}MiB", "end": "{}MiB"}}"#, 1 + i * 4, 5 + i * 4))
        .collect();
    let s = spec(
        dir.path(),
        &format!(
            r#"{{"disk": {{"main": {{"type": "disk", "device": "/dev/vda", "content": {{"type": "table", "format": "msdos", "partitions": [{}]}}}}}}}}"#,
            parts.join(",")
        ),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["partitions.[4]", "4 primary partitions", "gpt"],
    );
}

#[test]
fn a_disk_left_out_of_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img");
    let s = spec(dir.path(), &TWO_DISKS.replace("SIZE", "16M"));
    let disks = [format!("main={}", a.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&a],
        &["spec disk `second` has no --disk mapping", "/dev/vdb", "--disk second="],
    );
}

#[test]
fn no_mapping_and_the_spec_device_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        &one_disk(r#"{"root": {"size": "100%"}}"#)
            .replace("/dev/vda", "/dev/labprov-test-no-such-disk"),
    );
    refused(
        &["disk", "apply", "--spec", s.to_str().unwrap(), "--only", "partition", "--yes"],
        &[],
        &["spec disk `main`", "/dev/labprov-test-no-such-disk", "--disk main="],
    );
}

#[test]
fn a_mapping_to_an_image_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &one_disk(r#"{"root": {"size": "100%"}}"#));
    let missing = dir.path().join("missing.img");
    let disks = [format!("main={}", missing.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[],
        &["does not exist", "truncate -s"],
    );
    assert!(!missing.exists(), "labprov created {}", missing.display());
}

#[test]
fn a_mapping_for_a_disk_the_spec_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(dir.path(), &one_disk(r#"{"root": {"size": "100%"}}"#));
    let disks = [format!("main={}", img.display()), format!("mian={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["no disk named `mian`", "main"],
    );
    let disks = [img.display().to_string()];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["NAME=PATH"],
    );
}

#[test]
fn malformed_json() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(dir.path(), r#"{"disk": {"main": "#);
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["not valid JSON", "spec.json", "line 1"],
    );
    // Valid JSON of the wrong shape names where.
    let s = spec(
        dir.path(),
        r#"{"disk": {"main": {"type": "disk", "device": "/dev/vda", "content": {"type": "gpt", "partitions": []}}}}"#,
    );
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["disko.devices.disk.main.content.partitions", "attribute set"],
    );
    let s = spec(
        dir.path(),
        r#"{"disk": {"main": {"type": "disk", "device": "/dev/vda", "contnet": {}}}}"#,
    );
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["disko.devices.disk.main.contnet", "does not exist"],
    );
}

#[test]
fn a_spec_path_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let missing = dir.path().join("nope.json");
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(missing.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["spec file", "nope.json", "No such file", "nix eval --json"],
    );
}

#[test]
fn unsupported_content_is_refused_before_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(
        dir.path(),
        &one_disk(
            // LUKS is supported now (tests/disk_dm_md_stubbed.rs); a btrfs
            // swap file is still planned but not created.
            r#"{"root": {"size": "100%", "content": {"type": "btrfs", "swap": {"swapfile": {"size": "16M"}}}}}"#,
        ),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--yes"]),
        &[&img],
        &[
            "disko.devices.disk.main.content.partitions.root.content.swap",
            "btrfs swap file",
            "cannot create it yet",
        ],
    );
}

#[test]
fn a_missing_mkfs_tool_is_refused_before_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(
        dir.path(),
        &one_disk(
            r#"{"root": {"size": "100%", "content": {"type": "filesystem", "format": "labprovnosuchfs", "mountpoint": "/"}}}"#,
        ),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--yes"]),
        &[&img],
        &["mkfs.labprovnosuchfs", "not installed"],
    );
}

#[test]
fn without_yes_and_without_a_terminal_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(dir.path(), &one_disk(r#"{"root": {"size": "100%"}}"#));
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition"]),
        &[&img],
        &["--yes"],
    );
}

#[test]
fn a_second_disk_holding_a_filesystem_stops_the_first_from_being_written() {
    if !common::have_tool("mkfs.ext4") {
        common::skip(
            "a_second_disk_holding_a_filesystem_stops_the_first_from_being_written",
            "mkfs.ext4 is not installed (apt-get install e2fsprogs)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img");
    let b = dir.path().join("b.img");
    std::fs::File::create(&b).unwrap().set_len(64 << 20).unwrap();
    let st = std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&b).status().unwrap();
    assert!(st.success());
    let s = spec(dir.path(), &TWO_DISKS.replace("SIZE", "16M"));
    let disks = [format!("main={}", a.display()), format!("second={}", b.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&a, &b],
        &["ext4", "--wipe"],
    );
}

#[test]
fn a_hybrid_mbr_is_refused_not_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(
        dir.path(),
        &one_disk(
            r#"{"ESP": {"size": "16M", "type": "EF00", "hybrid": {"mbrPartitionType": "0x0c"}}, "root": {"size": "100%"}}"#,
        ),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["disko.devices.disk.main.content.partitions.ESP.hybrid", "hybrid MBR"],
    );
}

#[test]
fn a_hook_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img");
    let s = spec(
        dir.path(),
        &one_disk(
            r#"{"root": {"size": "100%", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/", "postCreateHook": "touch /tmp/x"}}}"#,
        ),
    );
    let disks = [format!("main={}", img.display())];
    refused(
        &apply_args(s.to_str().unwrap(), &disks, &["--only", "partition", "--yes"]),
        &[&img],
        &["disko.devices.disk.main.content.partitions.root.content.postCreateHook", "hook"],
    );
    let (ok, out, _) = labprov(&["disk", "plan", "--spec", s.to_str().unwrap()]);
    assert!(ok && out.contains("NOT SUPPORTED YET: hook at disko.devices.disk.main.content.partitions.root.content.postCreateHook"), "{out}");
}
