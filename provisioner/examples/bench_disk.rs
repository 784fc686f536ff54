//! Benchmark: `labprov disk apply` against the same layout made the way
//! disko makes it, on the same kind of target, in one run; prints the
//! median times and the ratio (never asserts on wall time).
//!
//!   cargo run --release -p provisioner --example bench_disk -- [--runs N] [FIXTURE...]
//!
//! The disko way, per fixture of ../shared/fixtures/disko:
//! - partition: the fixture's `*.partition-commands.txt` (disko's own
//!   sgdisk/parted calls, recorded from its create script), run as they
//!   are with the disk path swapped for the target, after the `blkid` probe
//!   disko's script makes on the disk;
//! - full (as root with loop devices): the image attached as a loop device,
//!   the partition commands on it, then for every filesystem disko's
//!   `blkid` probe and the `mkfs.*`/`mkswap` call the spec asks for,
//!   btrfs subvolumes through a temporary mount, and the mounts of disko's
//!   mount script under a scratch root.
//!
//! labprov does the same through `provisioner::disk::apply` on the image
//! file (it attaches the loop device itself). Every run starts from a fresh
//! sparse 4 GiB image, like the fixtures. Where the kernel has no vfat the
//! ESPs are ext4 in both ways (said in the output).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab_disko::plan::{self, Step, TablePlan};
use lab_disko::Devices;
use provisioner::disk::{self, ApplyOptions};

const IMAGE_BYTES: u64 = 4 << 30;
const DEFAULT_CASES: [&str; 6] = [
    "simple-efi",
    "gpt-bios-compat",
    "xfs-with-quota",
    "swap",
    "stand-alone-msdos",
    "legacy-table",
];

fn main() {
    let mut runs = 5usize;
    let mut cases: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "-h" | "--help" => {
                println!(
                    "usage: bench_disk [--runs N] [FIXTURE...]   (default fixtures: {})",
                    DEFAULT_CASES.join(" ")
                );
                return;
            }
            other => cases.push(other.to_string()),
        }
    }
    if cases.is_empty() {
        cases = DEFAULT_CASES.iter().map(|s| s.to_string()).collect();
    }
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/disko");
    assert!(
        fixtures.is_dir(),
        "fixtures missing: {} (copy shared/ next to the repository)",
        fixtures.display()
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let kernel_vfat =
        std::fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("vfat");
    let full = match loop_reason() {
        None => true,
        Some(r) => {
            println!("NOTE: full apply not measured: {r}; partition tables only");
            false
        }
    };
    if full && !kernel_vfat {
        println!("NOTE: the kernel has no vfat: ESPs are ext4 in both ways for the full runs");
    }
    println!("median of {runs} runs, fresh sparse 4 GiB image each; ratio = disko way / labprov (above 1: labprov is faster)");
    println!(
        "{:<20} {:<9} {:>12} {:>12} {:>7}",
        "fixture", "phase", "disko way", "labprov", "ratio"
    );
    let mut totals = BTreeMap::<&str, (Duration, Duration)>::new();
    for name in &cases {
        let raw: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(format!("{name}.input.json")))
                .expect("read input"),
        )
        .expect("input json");
        let mut normalized = lab_disko::normalize(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let commands =
            std::fs::read_to_string(fixtures.join(format!("{name}.partition-commands.txt")))
                .expect("read partition commands");
        let commands: Vec<Vec<String>> =
            commands.lines().filter(|l| !l.trim().is_empty()).map(shell_words).collect();
        let devices: Devices = serde_json::from_value(normalized.clone()).expect("model");
        assert_eq!(devices.disk.len(), 1, "{name}: the benchmark takes one-disk fixtures");
        let (disk_name, spec_disk) =
            devices.disk.iter().next().map(|(k, d)| (k.clone(), d.clone())).unwrap();

        // Partition tables only, on image files (no root needed).
        let img = scratch.path().join(format!("{name}.img"));
        let mut ref_times = Vec::new();
        let mut our_times = Vec::new();
        for _ in 0..runs {
            fresh(&img);
            let t = Instant::now();
            probe(&img);
            run_all(&commands, &spec_disk.device, &img);
            ref_times.push(t.elapsed());
            fresh(&img);
            let opts = ApplyOptions {
                disks: [(disk_name.clone(), img.clone())].into(),
                only_partition: true,
                wipe: false,
                root: scratch.path().join("unused"),
            };
            let t = Instant::now();
            disk::apply(&devices, &opts).unwrap_or_else(|e| panic!("{name}: labprov: {e}"));
            our_times.push(t.elapsed());
        }
        report(name, "partition", &ref_times, &our_times, &mut totals);

        if !full {
            continue;
        }
        if !kernel_vfat {
            let text = normalized
                .to_string()
                .replace("\"format\":\"vfat\"", "\"format\":\"ext4\"")
                .replace("\"umask=0077\"", "\"defaults\"");
            normalized = serde_json::from_str(&text).unwrap();
        }
        let text = normalized.to_string();
        if text.contains("quota\"") && !xfs_quota_mounts(scratch.path()) {
            println!("NOTE: {name}: this kernel mounts no XFS with quota: the quota mount options are dropped in both ways");
            let text = [
                "\"pquota\"",
                "\"uquota\"",
                "\"gquota\"",
                "\"prjquota\"",
                "\"usrquota\"",
                "\"grpquota\"",
            ]
            .iter()
            .fold(text, |t, q| t.replace(q, "\"defaults\""));
            normalized = serde_json::from_str(&text).unwrap();
        }
        let devices: Devices = serde_json::from_value(normalized).expect("model");
        let steps = plan::plan(&devices).expect("plan");
        if let Some(Step::Unsupported { kind, spec_path, .. }) =
            steps.iter().find(|s| matches!(s, Step::Unsupported { .. }))
        {
            println!(
                "{name:<20} full      skipped: {kind} at {spec_path} is not supported by labprov"
            );
            continue;
        }
        // need_dm_md: the disko way below runs only tables, mkfs and mounts.
        if steps.iter().any(|s| {
            matches!(
                s,
                Step::Luks(_) | Step::LvmPv(_) | Step::LvmVg(_) | Step::Lv(_) | Step::Mdadm(_)
            )
        }) {
            println!("{name:<20} full      skipped: LUKS, LVM or mdadm (needs device-mapper/md)");
            continue;
        }
        let root = scratch.path().join(format!("{name}-mnt"));
        let mut ref_times = Vec::new();
        let mut our_times = Vec::new();
        for _ in 0..runs {
            fresh(&img);
            let t = Instant::now();
            let attached = disko_way(&img, &commands, &spec_disk.device, &steps, &root);
            ref_times.push(t.elapsed());
            undo(&root, &steps, &img, &attached);

            fresh(&img);
            let opts = ApplyOptions {
                disks: [(disk_name.clone(), img.clone())].into(),
                only_partition: false,
                wipe: false,
                root: root.clone(),
            };
            let t = Instant::now();
            disk::apply(&devices, &opts).unwrap_or_else(|e| panic!("{name}: labprov: {e}"));
            our_times.push(t.elapsed());
            disk::unmount(&devices, &opts)
                .unwrap_or_else(|e| panic!("{name}: labprov unmount: {e}"));
        }
        report(name, "full", &ref_times, &our_times, &mut totals);
    }
    for (phase, (r, o)) in totals {
        println!(
            "{:<20} {:<9} {:>10.1}ms {:>10.1}ms {:>6.2}x",
            "all (sum of medians)",
            phase,
            ms(r),
            ms(o),
            r.as_secs_f64() / o.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn report(
    name: &str,
    phase: &'static str,
    r: &[Duration],
    o: &[Duration],
    totals: &mut BTreeMap<&'static str, (Duration, Duration)>,
) {
    let (r, o) = (median(r), median(o));
    println!(
        "{name:<20} {phase:<9} {:>10.1}ms {:>10.1}ms {:>6.2}x",
        ms(r),
        ms(o),
        r.as_secs_f64() / o.as_secs_f64()
    );
    let e = totals.entry(phase).or_default();
    e.0 += r;
    e.1 += o;
}

/// Whether the kernel mounts an XFS with project quota (some build it without).
fn xfs_quota_mounts(scratch: &Path) -> bool {
    let img = scratch.join("xfs-quota-probe.img");
    let mnt = scratch.join("xfs-quota-probe");
    fresh(&img);
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mkfs.xfs").arg("-q").arg(&img).status().is_ok_and(|s| s.success())
        && Command::new("mount")
            .arg("-o")
            .arg("loop,pquota")
            .arg(&img)
            .arg(&mnt)
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        let _ = Command::new("umount").arg("-d").arg(&mnt).status();
    }
    while let Ok(Some(l)) = disk::attached_loop(&img) {
        let _ = Command::new("losetup").arg("-d").arg(&l).status();
    }
    let _ = std::fs::remove_file(&img);
    ok
}

fn loop_reason() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return Some("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices".into());
    }
    None
}

fn fresh(img: &Path) {
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img).expect("create image").set_len(IMAGE_BYTES).expect("size image");
}

fn sh(tool: &str, args: &[String]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// disko's `blkid` probe of a disk (its exit status decides whether
/// `sgdisk --clear` / `parted mklabel` runs).
fn probe(dev: &Path) -> bool {
    Command::new("blkid").arg(dev).output().map(|o| o.status.success()).unwrap_or(false)
}

/// disko's probe before mkfs: `blkid DEV -o export | grep -q '^TYPE='`.
fn has_fs(dev: &Path) -> bool {
    Command::new("blkid")
        .arg(dev)
        .args(["-o", "export"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("TYPE=")))
        .unwrap_or(false)
}

/// Runs the recorded commands with the spec's disk path swapped for `target`.
fn run_all(commands: &[Vec<String>], spec_device: &str, target: &Path) {
    for c in commands {
        let args: Vec<String> = c[1..]
            .iter()
            .map(|a| if a == spec_device { target.display().to_string() } else { a.clone() })
            .collect();
        sh(&c[0], &args);
    }
}

/// The whole layout the way disko's create and mount scripts make it.
/// Returns the loop devices it attached.
fn disko_way(
    img: &Path,
    commands: &[Vec<String>],
    spec_device: &str,
    steps: &[Step],
    root: &Path,
) -> Vec<PathBuf> {
    let dev = PathBuf::from(
        sh("losetup", &["-f".into(), "--show".into(), "-P".into(), img.display().to_string()])
            .trim(),
    );
    probe(&dev);
    run_all(commands, spec_device, &dev);
    // disko: partprobe, then udevadm trigger/settle, before using partitions.
    let _ = Command::new("partprobe").arg(&dev).status();
    let _ = Command::new("udevadm").args(["settle", "--timeout", "120"]).status();
    let mut nodes = BTreeMap::new();
    for s in steps {
        if let Step::Partition { table, .. } = s {
            let parts: Vec<(u32, String)> = match table {
                TablePlan::Gpt { partitions, .. } => {
                    partitions.iter().map(|p| (p.number, p.device.clone())).collect()
                }
                TablePlan::Parted { partitions, .. } => {
                    partitions.iter().map(|p| (p.index as u32, p.device.clone())).collect()
                }
            };
            for (n, spec_dev) in parts {
                nodes.insert(
                    spec_dev,
                    disk::partition_device(img, &dev, n, 512).expect("partition node"),
                );
            }
        }
    }
    let node = |d: &str| nodes.get(d).cloned().unwrap_or_else(|| PathBuf::from(d));
    for s in steps {
        match s {
            Step::Format { device, format, extra_args } => {
                let d = node(device);
                if !has_fs(&d) {
                    let mut a = extra_args.clone();
                    a.push(d.display().to_string());
                    sh(&format!("mkfs.{format}"), &a);
                }
            }
            Step::Mkswap { device, extra_args } => {
                let d = node(device);
                if !has_fs(&d) {
                    let mut a = extra_args.clone();
                    a.push(d.display().to_string());
                    sh("mkswap", &a);
                }
            }
            Step::Btrfs { device, extra_args, subvolumes } => {
                let d = node(device);
                if !has_fs(&d) {
                    let mut a = vec![d.display().to_string()];
                    a.extend(extra_args.iter().cloned());
                    sh("mkfs.btrfs", &a);
                }
                if !subvolumes.is_empty() {
                    let tmp = root.with_extension("btrfs-tmp");
                    std::fs::create_dir_all(&tmp).unwrap();
                    sh("mount", &[d.display().to_string(), tmp.display().to_string()]);
                    for sv in subvolumes {
                        let p = tmp.join(sv.trim_start_matches('/'));
                        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                        sh(
                            "btrfs",
                            &["subvolume".into(), "create".into(), p.display().to_string()],
                        );
                    }
                    sh("umount", &[tmp.display().to_string()]);
                }
            }
            Step::Mount { device, mountpoint, fs_type, options } => {
                let target = root.join(mountpoint.trim_start_matches('/'));
                sh(
                    "mount",
                    &[
                        "-t".into(),
                        fs_type.clone(),
                        node(device).display().to_string(),
                        target.display().to_string(),
                        "-o".into(),
                        options.join(","),
                        "-o".into(),
                        "X-mount.mkdir".into(),
                    ],
                );
            }
            // Specs with LUKS, LVM or mdadm are skipped above (need_dm_md).
            Step::Partition { .. }
            | Step::Unsupported { .. }
            | Step::Luks(_)
            | Step::LvmPv(_)
            | Step::LvmVg(_)
            | Step::Lv(_)
            | Step::Mdadm(_) => {}
        }
    }
    nodes.into_values().chain([dev]).collect()
}

fn undo(root: &Path, steps: &[Step], img: &Path, _attached: &[PathBuf]) {
    for s in steps.iter().rev() {
        if let Step::Mount { mountpoint, .. } = s {
            let _ =
                Command::new("umount").arg(root.join(mountpoint.trim_start_matches('/'))).status();
        }
    }
    while let Ok(Some(l)) = disk::attached_loop(img) {
        sh("losetup", &["-d".into(), l.display().to_string()]);
    }
}

/// Splits one line of `printf %q` output back into words.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '\'' => {
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    cur.push(n);
                }
                in_word = true;
            }
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}
