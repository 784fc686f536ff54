//! Golden test: `labprov disk apply --only partition` on sparse 4 GiB image
//! files writes the partition tables disko's own commands wrote, as
//! `sfdisk --json` reads them (GUIDs and disk ids are random, so ignored).

mod common;

use std::process::Command;

use serde_json::{json, Value};

/// The fields that must match: everything but random ids and node names.
fn comparable(sfdisk: &Value) -> Value {
    let t = &sfdisk["partitiontable"];
    let parts: Vec<Value> = t["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            // sfdisk lists entries in slot order, so the order pins the numbers.
            json!({
                "start": p["start"], "size": p["size"], "type": p["type"],
                "name": p["name"], "attrs": p["attrs"], "bootable": p["bootable"],
            })
        })
        .collect();
    json!({
        "label": t["label"], "unit": t["unit"], "firstlba": t["firstlba"], "lastlba": t["lastlba"],
        "sectorsize": t["sectorsize"], "partitions": parts,
    })
}

#[test]
fn partition_tables_match_disko_for_every_fixture() {
    if !common::have_tool("sfdisk") {
        common::skip(
            "partition_tables_match_disko_for_every_fixture",
            "sfdisk is not installed (apt-get install fdisk)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut compared = 0;
    for name in common::fixture_names() {
        let normalized = common::read_json(&format!("{name}.normalized.json"));
        let disks = normalized["disk"].as_object().cloned().unwrap_or_default();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labprov"));
        cmd.args(["disk", "apply", "--only", "partition", "--yes", "--spec"])
            .arg(common::fixtures_dir().join(format!("{name}.input.json")));
        let mut images = Vec::new();
        for (key, d) in &disks {
            let disk_name = d["name"].as_str().unwrap_or(key);
            let img = dir.path().join(format!("{name}.{disk_name}.img"));
            let f = std::fs::File::create(&img).expect("create image");
            f.set_len(4 << 30).expect("sparse 4 GiB");
            cmd.arg("--disk").arg(format!("{key}={}", img.display()));
            images.push((disk_name.to_string(), img));
        }
        let out = cmd.output().expect("run labprov");
        if !out.status.success() {
            failures
                .push(format!("{name}: labprov failed: {}", String::from_utf8_lossy(&out.stderr)));
            continue;
        }
        for (disk_name, img) in images {
            let want_path = common::fixtures_dir().join(format!("{name}.{disk_name}.sfdisk.json"));
            if !want_path.exists() {
                continue;
            }
            let want = comparable(&common::read_json(&format!("{name}.{disk_name}.sfdisk.json")));
            let got = comparable(&common::sfdisk_json(&img));
            compared += 1;
            if want != got {
                failures.push(format!("{name}.{disk_name}:\n want {want}\n got  {got}"));
            }
            let _ = std::fs::remove_file(&img);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 20, "only {compared} tables compared");
}
