//! Partition names of disko's legacy `table` type (format gpt): labprov
//! writes the GPT name disko v1.13.0 gets from the real parted, which is
//! the spec's name hex-escaped by disko (`hexEscapeUdevSymlink`) and kept
//! literally, backslashes included; a name disko cannot evaluate is refused
//! before anything is written. No root needed.

mod common;

use std::path::Path;
use std::process::Command;

use common::labprov;
use serde_json::{json, Value};

/// Each spec name, the argument disko's table.nix hands to
/// `parted mkpart` for it (worked out by hand from disko's rule: keep
/// `[0-9A-Za-z#+-.:=@_/]`, write anything else as `\x` and its uppercase
/// hex code), and the start and end.
const PARTS: &[(&str, &str, &str, &str)] = &[
    ("name with spaces", r"name\x20with\x20spaces", "1M", "10M"),
    ("it's", r"it\x27s", "10M", "20M"),
    (r"a\b", r"a\x5Cb", "20M", "30M"),
    ("x,y", "x,y", "30M", "40M"),
    (r#"say "hi" 100%"#, r"say\x20\x22hi\x22\x20100\x25", "40M", "50M"),
    // Longer than a GPT name once escaped: both sides cut it at 36.
    (
        "a long name with many spaces in it",
        r"a\x20long\x20name\x20with\x20many\x20spaces\x20in\x20it",
        "50M",
        "60M",
    ),
];

fn image(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).expect("create image").set_len(64 << 20).expect("size image");
    path
}

fn legacy_spec(dir: &Path, partitions: Value) -> std::path::PathBuf {
    let spec = json!({"disk": {"main": {"type": "disk", "device": "/dev/vda",
        "content": {"type": "table", "format": "gpt", "partitions": partitions}}}});
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).expect("write spec");
    path
}

fn apply_partition(spec: &Path, img: &Path) -> (bool, String, String) {
    labprov(&[
        "disk",
        "apply",
        "--spec",
        spec.to_str().unwrap(),
        "--disk",
        &format!("main={}", img.display()),
        "--only",
        "partition",
        "--yes",
    ])
}

fn parted(img: &Path, args: &[&str]) {
    let out = Command::new("parted")
        .arg("-s")
        .arg(img)
        .arg("--")
        .args(args)
        .output()
        .expect("run parted");
    assert!(
        out.status.success(),
        "parted -s {} -- {args:?}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The partitions as `sfdisk --json` lists them, without the random GUIDs
/// and the node names.
fn partitions(img: &Path) -> Vec<Value> {
    let v = common::sfdisk_json(img);
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt", "{v}");
    t["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| json!({"start": p["start"], "size": p["size"], "type": p["type"], "name": p["name"], "attrs": p["attrs"]}))
        .collect()
}

#[test]
fn legacy_gpt_names_match_disko_on_the_real_parted() {
    if !lab_testkit::require_tools(
        "legacy_gpt_names_match_disko_on_the_real_parted",
        &["parted", "sfdisk"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = legacy_spec(
        dir.path(),
        PARTS
            .iter()
            .map(|(name, _, start, end)| json!({"name": name, "start": start, "end": end}))
            .collect(),
    );
    let ours = image(dir.path(), "labprov.img");
    let (ok, out, err) = apply_partition(&spec, &ours);
    assert!(ok, "labprov disk apply failed:\n{out}{err}");

    // disko's create script for this table, command by command (table.nix;
    // no fs-type, so that word is empty and the shell drops it).
    let twin = image(dir.path(), "disko.img");
    parted(&twin, &["mklabel", "gpt"]);
    for (_, escaped, start, end) in PARTS {
        parted(&twin, &["mkpart", escaped, start, end]);
    }

    let (got, want) = (partitions(&ours), partitions(&twin));
    assert_eq!(got.len(), PARTS.len(), "{got:#?}");
    assert_eq!(got, want, "labprov's table (left) differs from disko's parted commands' (right)");
    // parted keeps the escape literally: the backslash is on disk.
    assert_eq!(got[0]["name"], r"name\x20with\x20spaces");
    assert_eq!(got[5]["name"], r"a\x20long\x20name\x20with\x20many\x2");
}

#[test]
fn names_disko_cannot_evaluate_are_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bad) in ["tab\there", "line\nbreak", "caf\u{e9}"].iter().enumerate() {
        let spec = legacy_spec(
            dir.path(),
            json!([{"name": "ok", "start": "1M", "end": "10M"}, {"name": bad, "start": "10M", "end": "20M"}]),
        );
        let img = image(dir.path(), &format!("refused{i}.img"));
        let (ok, out, err) = apply_partition(&spec, &img);
        assert!(!ok, "{bad:?} was applied:\n{out}{err}");
        assert!(!err.contains("panicked"), "{err}");
        for needle in
            ["disko.devices.disk.main.content.partitions.[1].name", "printable ASCII", "disko"]
        {
            assert!(err.contains(needle), "stderr for {bad:?} lacks `{needle}`:\n{err}");
        }
        let bytes = std::fs::read(&img).expect("read image");
        assert!(bytes.iter().all(|&b| b == 0), "{bad:?}: the image was written although refused");
        let (ok, _, err) = labprov(&["disk", "plan", "--spec", spec.to_str().unwrap()]);
        assert!(!ok && err.contains("partitions.[1].name"), "plan of {bad:?}: {err}");
    }
}
