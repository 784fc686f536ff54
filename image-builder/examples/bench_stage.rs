//! Benchmark: staging a closure-shaped system for `labimg build --system`.
//! Puts PATHS store paths (default 3000, about TOTAL_MB MiB in all, default
//! 1200: small files in nested directories, some larger ones) into the
//! local Nix store once (`nix-store --add`), with a NixOS-shaped stand-in
//! toplevel (tests/standin) that references them all, then builds the nixpi
//! image from it with labimg, staging the closure by mounts and by hard
//! links, and times the old way's staging on the same filesystem: `cp -a
//! --reflink=auto` of the closure (what labimg did first, and what NixOS's
//! recipe does). Prints each build's stage phase and its share, and the
//! disk the copy took. Asserts nothing about time.
//!
//!   cargo build --release -p image-builder
//!   cargo run --release -p image-builder --example bench_stage -- [PATHS] [TOTAL_MB] [RUNS]
//!
//! Needs Nix (nix-store, nix-build) and the stand-in and firmware
//! (scripts/setup). The store paths stay in the store for the next run.

mod common;

use common::{repo, Rng};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The generated packages, added to the store; returns their store paths.
fn add_paths(dir: &Path, count: usize, total_mb: u64) -> Vec<String> {
    let list = dir.join("store-paths");
    if let Ok(text) = fs::read_to_string(&list) {
        let paths: Vec<String> = text.lines().map(str::to_string).collect();
        if paths.len() == count && paths.iter().all(|p| Path::new(p).exists()) {
            return paths;
        }
    }
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&src);
    let mut rng = Rng(0xc105_u64 << 20 | count as u64);
    let per_path = (total_mb << 20) / count as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut names = Vec::new();
    for i in 0..count {
        let pkg = src.join(format!("pkg{i:05}"));
        // Most paths: a few dozen small files in lib/ and share/; one in
        // eight also a larger file (libraries, locales, firmware blobs).
        let mut left = per_path;
        let mut n = 0;
        while left > 0 {
            let sub = pkg.join(if n % 3 == 0 { "lib" } else { "share/doc" });
            fs::create_dir_all(&sub).unwrap();
            let len = if i % 8 == 0 && n == 0 {
                (per_path * 4).min(buf.len() as u64)
            } else {
                512 + rng.next() % (24 * 1024)
            }
            .min(left.max(1)) as usize;
            rng.fill(&mut buf[..len]);
            fs::write(sub.join(format!("f{n}")), &buf[..len]).unwrap();
            left = left.saturating_sub(len as u64);
            n += 1;
        }
        names.push(pkg);
    }
    let mut paths = Vec::new();
    for chunk in names.chunks(500) {
        let out = sh(Command::new("nix-store").arg("--add").args(chunk));
        paths.extend(out.lines().map(str::to_string));
    }
    fs::remove_dir_all(&src).unwrap();
    fs::write(&list, paths.join("\n")).unwrap();
    paths
}

/// The stand-in toplevel with every added path in its closure (the paths
/// go through environment variables of at most 500 names each: one
/// argument may not exceed 128 KiB).
fn toplevel(dir: &Path, paths: &[String]) -> String {
    let chunks: Vec<String> = paths
        .chunks(500)
        .enumerate()
        .map(|(i, c)| {
            let list: Vec<String> =
                c.iter().map(|p| format!("(builtins.storePath \"{p}\")")).collect();
            format!("  p{i} = toString [ {} ];\n", list.join(" "))
        })
        .collect();
    let vars: Vec<String> = (0..chunks.len()).map(|i| format!("$p{i}")).collect();
    let expr = format!(
        r#"let
  base = import {repo}/tests/standin/nixos-system.nix {{ host = "nixpi"; }};
in
derivation {{
  name = "nixos-system-nixpi-closure";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" ''
    mkdir -p $out
    for f in init nixos-version kernel initrd dtbs kernel-params; do cp -P ${{base}}/$f $out/; done
    for p in {vars}; do echo $p; done > $out/closure-paths
  '' ];
{chunks}}}
"#,
        repo = repo().display(),
        vars = vars.join(" "),
        chunks = chunks.concat()
    );
    let file = dir.join("closure.nix");
    fs::write(&file, expr).unwrap();
    sh(Command::new("nix-build").arg(&file).arg("--no-out-link"))
}

/// Blocks allocated under `dir` (what a staging costs on disk).
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            // A hard link's blocks belong to the store's file.
            if m.nlink() == 1 || m.is_dir() {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let total_mb: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1200);
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let bench = repo().join(format!("target/bench/closure-{count}-{total_mb}"));
    fs::create_dir_all(&bench).unwrap();
    let labimg = repo().join("target/release/labimg");
    assert!(labimg.is_file(), "build it first: cargo build --release -p image-builder");
    let (standin, fw) = (repo().join("target/standin"), repo().join("target/firmware"));
    assert!(standin.is_dir() && fw.is_dir(), "run scripts/setup first (stand-in and firmware)");
    let started = Instant::now();
    let paths = add_paths(&bench, count, total_mb);
    let top = toplevel(&bench, &paths);
    let closure = sh(Command::new("nix-store").args(["-qR", &top]));
    let closure: Vec<&str> = closure.lines().collect();
    let size = sh(Command::new("du").args(["-sc", "--apparent-size", "-B1M"]).args(&closure));
    println!(
        "closure of {top}: {} store paths, {} MiB (prepared in {:.1} s)",
        closure.len(),
        size.lines().last().unwrap_or("?").split_whitespace().next().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for run in 1..=runs {
        // Each way of staging labimg has, then the old way's alone.
        let mut row = Vec::new();
        let mut root_bytes = 0;
        for how in ["mounts", "links"] {
            let out: PathBuf = bench.join("out");
            let _ = fs::remove_dir_all(&out);
            Command::new("sync").status().unwrap();
            let t = Instant::now();
            let report = sh(Command::new(&labimg)
                .env("LAB_ROOT", repo())
                .args(["build", "nixpi", "--json", "--system", &top, "--staging", how])
                .arg("--bootloader")
                .arg(standin.join("u-boot/rpi_4/u-boot.bin"))
                .arg("--firmware-dir")
                .arg(&fw)
                .arg("--out")
                .arg(&out));
            // The wall time includes removing the staging tree afterwards.
            let wall = t.elapsed().as_secs_f64();
            let report: serde_json::Value = serde_json::from_str(&report).unwrap();
            assert_eq!(report["staging"], how, "{report}");
            root_bytes = report["manifest"]["partitions"][1]["size"].as_u64().unwrap();
            let phase = |name: &str| {
                report["phases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["phase"] == name)
                    .and_then(|p| p["seconds"].as_f64())
                    .unwrap_or(0.0)
            };
            let (stage, prepare) = (phase("stage"), phase("prepare"));
            println!(
                "run {run}: build --staging {how} {wall:.2} s: stage {stage:.2} s = {:.1} % of it; \
                 prepare (closure queried and sized) {prepare:.2} s; root (mkfs) {:.2} s",
                100.0 * stage / wall,
                phase("root")
            );
            row.push((wall, stage));
        }

        // The old way's staging, on the same filesystem.
        let copy = bench.join("copy");
        let _ = fs::remove_dir_all(&copy);
        fs::create_dir_all(copy.join("nix/store")).unwrap();
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        sh(Command::new("cp")
            .args(["-a", "--reflink=auto", "-t"])
            .arg(copy.join("nix/store"))
            .args(&closure));
        let copied = t.elapsed().as_secs_f64();
        let copy_disk = allocated(&copy);
        // The floor: mkfs.ext4 -d of the copied tree into a preallocated
        // file the size of labimg's root partition, nothing else.
        let floor_img = bench.join("floor.img");
        let _ = fs::remove_file(&floor_img);
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        sh(Command::new("fallocate").args(["-l", &root_bytes.to_string()]).arg(&floor_img));
        sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&copy).arg(&floor_img));
        let floor = t.elapsed().as_secs_f64();
        fs::remove_file(&floor_img).unwrap();
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&copy).status();
        fs::remove_dir_all(&copy).unwrap();
        println!(
            "run {run}: cp -a staging alone {copied:.2} s, {} MiB on disk | floor (mkfs.ext4 -d of \
             the copy) {floor:.2} s: mounts build {:.2}x",
            copy_disk >> 20,
            row[0].0 / floor
        );
        rows.push((row[0], row[1], copied, floor));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for (how, pick) in [("mounts", 0), ("links", 1)] {
        let at = |r: &((f64, f64), (f64, f64), f64, f64)| if pick == 0 { r.0 } else { r.1 };
        let wall = med(rows.iter().map(|r| at(r).0).collect());
        let stage = med(rows.iter().map(|r| at(r).1).collect());
        println!(
            "median of {runs}, --staging {how}: build {wall:.2} s, stage {stage:.2} s = {:.1} % of the build",
            100.0 * stage / wall
        );
    }
    let copied = med(rows.iter().map(|r| r.2).collect());
    let floor = med(rows.iter().map(|r| r.3).collect());
    let wall = med(rows.iter().map(|r| r.0 .0).collect());
    println!(
        "median of {runs}: the copy staging alone {copied:.2} s ({:.0} % of the mounts build); \
         floor {floor:.2} s, mounts build {:.2}x it",
        100.0 * copied / wall,
        wall / floor
    );
}
