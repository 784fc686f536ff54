//! Benchmark: `labimg flash` (verify included) against `bmaptool copy` (no
//! read-back), `dd bs=4M conv=fsync` followed by `cmp`, and the floor: each
//! mapped range of the bmap written with O_DIRECT and read back with
//! O_DIRECT (`dd`, nothing compared), on the same image and the same kind of
//! target. Prints times and ratios; asserts nothing about time.
//!
//!   cargo build --release -p image-builder
//!   cargo run --release -p image-builder --example bench_flash -- [IMAGE_MIB] [RUNS]
//!
//! The image (IMAGE_MIB, default 2048) is sparse with about a quarter of it
//! mapped, in 64 scattered extents of pseudo-random data; its block map is
//! made by `bmaptool create` and used by both labimg and bmaptool. Targets
//! are loop devices over fresh files when running as root (block devices,
//! O_EXCL, flushes), else plain files. Page caches are dropped before each
//! run where the kernel allows it, so every tool starts cold.

mod common;

use common::repo;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn make_image(path: &Path, mib: u64) {
    if path.exists() {
        return;
    }
    let f = fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
    let extents = 64u64;
    let extent = (mib << 20) / 4 / extents;
    let stride = (mib << 20) / extents;
    let mut x: u64 = 0x5eed;
    let mut buf = vec![0u8; extent as usize];
    for i in 0..extents {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        // Extents at varying places inside their stride.
        let at = i * stride + (i * 7919 % 16) * (stride / 32);
        f.write_all_at(&buf, at).unwrap();
    }
    f.sync_all().unwrap();
}

fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// A fresh target of `size` bytes: a loop device over a new file (root), or
/// the file itself. Returns (path to write, cleanup command).
fn target(dir: &Path, name: &str, size: u64, use_loop: bool) -> (PathBuf, Option<String>) {
    let file = dir.join(name);
    let _ = fs::remove_file(&file);
    fs::File::create(&file).unwrap().set_len(size).unwrap();
    if use_loop {
        let dev = sh(&format!("losetup -f --show {}", file.display()));
        (PathBuf::from(&dev), Some(format!("losetup -d {dev}")))
    } else {
        (file, None)
    }
}

fn timed(cmd: &str) -> f64 {
    let t = Instant::now();
    sh(cmd);
    t.elapsed().as_secs_f64()
}

/// The floor as a shell script: every mapped range of `bmap` (4 KiB
/// blocks) copied from `image` to `target` with O_DIRECT, then every range
/// read back from `target` with O_DIRECT into /dev/null.
fn floor_script(bmap: &Path, image: &Path, target: &Path) -> String {
    let xml = fs::read_to_string(bmap).unwrap();
    let mut ranges = Vec::new();
    for part in xml.split("<Range").skip(1) {
        let body = part.split('>').nth(1).unwrap_or("").split('<').next().unwrap_or("").trim();
        let (first, last) = body.split_once('-').unwrap_or((body, body));
        let (first, last): (u64, u64) =
            (first.trim().parse().unwrap(), last.trim().parse().unwrap());
        ranges.push((first * 4096, (last - first + 1) * 4096));
    }
    let (i, t) = (image.display(), target.display());
    let mut script = String::from("set -e\n");
    for (at, len) in &ranges {
        script.push_str(&format!(
            "dd if={i} of={t} bs=4M iflag=skip_bytes,count_bytes oflag=direct,seek_bytes conv=notrunc skip={at} seek={at} count={len} status=none\n"
        ));
    }
    for (at, len) in &ranges {
        script.push_str(&format!(
            "dd if={t} of=/dev/null bs=4M iflag=direct,skip_bytes,count_bytes skip={at} count={len} status=none\n"
        ));
    }
    script
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = repo().join("target/bench");
    fs::create_dir_all(&dir).unwrap();
    let image = dir.join(format!("flash-{mib}.img"));
    let bmap = dir.join(format!("flash-{mib}.img.bmap"));
    make_image(&image, mib);
    if !bmap.exists() {
        sh(&format!("bmaptool create -o {} {}", bmap.display(), image.display()));
    }
    let labimg = repo().join("target/release/labimg");
    assert!(labimg.is_file(), "build it first: cargo build --release -p image-builder");
    let use_loop = nix::unistd::geteuid().is_root()
        && Command::new("losetup").arg("-f").output().is_ok_and(|o| o.status.success());
    let mapped =
        sh(&format!("grep -o '<MappedBlocksCount> [0-9]*' {} | grep -o '[0-9]*$'", bmap.display()));
    println!(
        "image {}: {mib} MiB, {} MiB mapped (bmaptool create); targets: {}; caches dropped: {}",
        image.display(),
        (mapped.parse::<u64>().unwrap_or(0) * 4096) >> 20,
        if use_loop { "loop devices over fresh files" } else { "fresh files" },
        drop_caches()
    );
    let size = mib << 20;
    let (mut ours, mut bmaptool, mut dd, mut floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let (t, cleanup) = target(&dir, "target-labimg", size, use_loop);
        drop_caches();
        let a = timed(&format!(
            "{} flash --yes --bmap {} {} {}",
            labimg.display(),
            bmap.display(),
            image.display(),
            t.display()
        ));
        cleanup.map(|c| sh(&c));
        let (t, cleanup) = target(&dir, "target-bmaptool", size, use_loop);
        drop_caches();
        let b = timed(&format!(
            "bmaptool -q copy --bmap {} {} {}",
            bmap.display(),
            image.display(),
            t.display()
        ));
        cleanup.map(|c| sh(&c));
        let (t, cleanup) = target(&dir, "target-dd", size, use_loop);
        drop_caches();
        let c = timed(&format!(
            "dd if={} of={} bs=4M conv=fsync status=none && {} && cmp {} {}",
            image.display(),
            t.display(),
            if use_loop { format!("blockdev --flushbufs {}", t.display()) } else { "true".into() },
            image.display(),
            t.display()
        ));
        cleanup.map(|c| sh(&c));
        let (t, cleanup) = target(&dir, "target-floor", size, use_loop);
        drop_caches();
        let d = timed(&floor_script(&bmap, &image, &t));
        cleanup.map(|c| sh(&c));
        println!("run {run}: labimg flash+verify {a:.2} s | bmaptool copy {b:.2} s | dd+cmp {c:.2} s | floor {d:.2} s | vs bmaptool {:.2}x, vs dd+cmp {:.2}x, vs floor {:.2}x", a / b, a / c, a / d);
        floor.push(d);
        ours.push(a);
        bmaptool.push(b);
        dd.push(c);
    }
    let (a, b, c, d) = (median(ours), median(bmaptool), median(dd), median(floor));
    println!(
        "median of {runs}: labimg {a:.2} s, bmaptool {b:.2} s, dd+cmp {c:.2} s; labimg takes {:.2}x bmaptool's time and {:.2}x dd+cmp's ({:.1}x faster)",
        a / b,
        a / c,
        c / a
    );
    println!(
        "median of {runs}: labimg {a:.2} s / floor (O_DIRECT write + read-back of the mapped ranges) {d:.2} s = {:.2}x",
        a / d
    );
    for f in ["target-labimg", "target-bmaptool", "target-dd", "target-floor"] {
        let _ = fs::remove_file(dir.join(f));
    }
}
