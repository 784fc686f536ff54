//! Re-running `labprov disk apply --only partition` on a disk that already
//! holds a GPT only adds what is missing, as disko's sgdisk calls do: the
//! disk GUID, the existing partitions' GUIDs and partitions the spec does
//! not mention all stay. No root needed.

mod common;

use std::path::Path;
use std::process::Command;

use common::labprov;
use serde_json::Value;

fn sfdisk(img: &Path) -> Value {
    let out = Command::new("sfdisk").arg("--json").arg(img).output().expect("run sfdisk");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("sfdisk json")
}

fn spec(parts: &str) -> String {
    format!(
        r#"{{"disk": {{"main": {{"type": "disk", "device": "/dev/vda", "content": {{"type": "gpt", "partitions": {parts}}}}}}}}}"#
    )
}

#[test]
fn rerun_adds_only_what_is_missing_and_keeps_guids() {
    if !common::have_tool("sfdisk") {
        common::skip(
            "rerun_adds_only_what_is_missing_and_keeps_guids",
            "sfdisk is not installed (apt-get install fdisk)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
    let disk = format!("main={}", img.display());
    let apply = |parts: &str| {
        let s = dir.path().join("spec.json");
        std::fs::write(&s, spec(parts)).unwrap();
        let (ok, out, err) = labprov(&[
            "disk",
            "apply",
            "--spec",
            s.to_str().unwrap(),
            "--disk",
            &disk,
            "--only",
            "partition",
            "--yes",
        ]);
        assert!(ok, "{out}{err}");
        out
    };
    let out = apply(r#"{"a": {"size": "32M"}}"#);
    assert!(out.contains("done partition main"), "{out}");
    let first = sfdisk(&img);
    let out = apply(r#"{"a": {"size": "32M"}, "b": {"size": "32M"}}"#);
    assert!(out.contains("done partition main"), "{out}");
    let second = sfdisk(&img);
    let (t1, t2) = (&first["partitiontable"], &second["partitiontable"]);
    assert_eq!(t1["id"], t2["id"], "the disk GUID changed");
    let (p1, p2) = (t1["partitions"].as_array().unwrap(), t2["partitions"].as_array().unwrap());
    assert_eq!(p2.len(), 2, "{second}");
    assert_eq!(p1[0], p2[0], "partition a changed when b was added");
    assert_eq!(p2[1]["name"], "disk-main-b");
    // The first spec again: a is there, nothing is written, b stays.
    let out = apply(r#"{"a": {"size": "32M"}}"#);
    assert!(out.contains("kept partition main"), "{out}");
    assert_eq!(sfdisk(&img), second, "re-applying a smaller spec changed the table");
}
