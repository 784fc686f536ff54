//! Benchmark: `labimg build` against the shell recipe NixOS's sd-image and
//! make-ext4-fs use, building the same SD image from the same root tree,
//! and against the floor: `mkfs.ext4 -d` of the same tree into a
//! preallocated file the size of labimg's root partition (the least work
//! that writes the root once). Prints wall time and peak disk use of each,
//! and the ratios. Not a test: nothing here asserts on time.
//!
//!   cargo build --release -p image-builder
//!   cargo run --release -p image-builder --example bench_build -- [TREE_MB] [RUNS]
//!
//! Needs the prepared stand-in and firmware (scripts/setup), and `faketime`
//! and `fakeroot` for the NixOS recipe (Debian packages of those names).
//! The root tree (TREE_MB, default 600: about 40 % in small files of
//! 1-16 KiB, the rest in six large ones, deterministic pseudo-random content)
//! is generated once under target/bench/tree-TREE_MB.

mod common;

use common::{repo, Rng};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// NixOS's recipe, step for step: make-ext4-fs.nix (size estimate, faketime
/// fakeroot mkfs.ext4 -d, fsck, resize2fs -M, +16 MiB) then sd-image.nix
/// (truncate, sfdisk, dd the root in, mkfs.vfat --invariant, mmd/mcopy,
/// fsck.vfat, dd the FAT in). Staging the closure with `cp -a` and the zstd
/// compression are left out, which favours the recipe.
const FLOOR: &str = r#"
set -euo pipefail
tree=$1 work=$2 bytes=$3
fallocate -l "$bytes" "$work/floor.img"
mkfs.ext4 -q -F -d "$tree" "$work/floor.img"
"#;

const NIXOS_RECIPE: &str = r#"
set -euo pipefail
tree=$1 work=$2 fw=$3 uboot=$4
cd "$work"
img=root-fs.img
numInodes=$(find "$tree" | wc -l)
numDataBlocks=$(du -s -c -B 4096 --apparent-size "$tree" | tail -1 | awk '{ print int($1 * 1.20) }')
bytes=$((2 * 4096 * numInodes + 4096 * numDataBlocks))
mebibyte=$((1024 * 1024))
if (( bytes % mebibyte )); then bytes=$(( (bytes / mebibyte + 1) * mebibyte )); fi
truncate -s $bytes $img
faketime -f "1970-01-01 00:00:01" fakeroot mkfs.ext4 -q -L NIXOS_SD -U 44444444-4444-4444-8888-888888888888 -d "$tree" $img
export EXT2FS_NO_MTAB_OK=yes
fsck.ext4 -n -f $img > /dev/null
resize2fs -M $img 2> /dev/null
new_size=$(dumpe2fs -h $img 2> /dev/null | awk -F: '/Block count/{count=$2} /Block size/{size=$2} END{print (count*size+16*1048576)/size}')
resize2fs $img "$new_size" 2> /dev/null

out=sd.img
gap=8
rootSizeBlocks=$(du -B 512 --apparent-size $img | awk '{ print $1 }')
firmwareSizeBlocks=$((30 * 1024 * 1024 / 512))
imageSize=$((rootSizeBlocks * 512 + firmwareSizeBlocks * 512 + gap * 1024 * 1024))
truncate -s $imageSize $out
printf 'label: dos\nlabel-id: 0x2178694e\n\nstart=%sM, size=%s, type=b, bootable\nstart=%sM, type=83\n' \
  "$gap" "$firmwareSizeBlocks" "$((gap + 30))" | sfdisk --quiet --no-reread --no-tell-kernel $out
eval "$(partx $out -o START,SECTORS --nr 2 --pairs)"
dd conv=notrunc if=$img of=$out seek="$START" count="$SECTORS" status=none
eval "$(partx $out -o START,SECTORS --nr 1 --pairs)"
truncate -s $((SECTORS * 512)) firmware_part.img
mkfs.vfat --invariant -i 0x2178694e -n FIRMWARE firmware_part.img > /dev/null
mkdir firmware
cp "$fw"/start4.elf "$fw"/fixup4.dat "$fw"/bcm2711-rpi-4-b.dtb "$fw"/bcm2711-rpi-400.dtb "$fw"/bcm2711-rpi-cm4-io.dtb firmware/
cp "$uboot" firmware/u-boot-rpi4.bin
printf 'arm_64bit=1\nenable_uart=1\n[pi4]\nkernel=u-boot-rpi4.bin\n' > firmware/config.txt
find firmware -exec touch --date=2000-01-01 {} +
cd firmware
for f in $(find . -type f | sort); do mcopy -pm -i ../firmware_part.img "$f" "::/$f"; done
cd ..
fsck.vfat -n firmware_part.img > /dev/null
dd conv=notrunc if=firmware_part.img of=$out seek="$START" count="$SECTORS" status=none
"#;

fn make_tree(dir: &Path, total_mb: u64) {
    if dir.join(".complete").exists() {
        return;
    }
    let _ = fs::remove_dir_all(dir);
    let mut rng = Rng(0x1ab_1a6e);
    let small_budget = total_mb * 1024 * 1024 * 2 / 5;
    let (mut written, mut i) = (0u64, 0u64);
    let mut buf = vec![0u8; 16 * 1024];
    while written < small_budget {
        let sub = dir.join(format!("usr/share/pkg{:03}/d{:02}", i / 400, (i / 40) % 10));
        fs::create_dir_all(&sub).unwrap();
        let len = 1024 + (rng.next() % (15 * 1024)) as usize;
        rng.fill(&mut buf[..len]);
        fs::write(sub.join(format!("f{i}")), &buf[..len]).unwrap();
        written += len as u64;
        i += 1;
    }
    let large_each = (total_mb * 1024 * 1024 - written) / 6;
    let mut big = vec![0u8; 1 << 20];
    fs::create_dir_all(dir.join("opt/large")).unwrap();
    for n in 0..6 {
        let mut f = fs::File::create(dir.join(format!("opt/large/blob{n}"))).unwrap();
        for _ in 0..large_each >> 20 {
            rng.fill(&mut big);
            std::io::Write::write_all(&mut f, &big).unwrap();
        }
    }
    fs::write(dir.join(".complete"), "").unwrap();
    eprintln!("generated {i} small files and 6 large ones in {}", dir.display());
}

/// Allocated bytes under `dir`: what the run occupies on disk right now.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Runs `cmd` with `work` as its scratch and output directory; returns the
/// wall time and the peak of `allocated(work)`, sampled every 20 ms.
fn measure(mut cmd: Command, work: &Path) -> (f64, u64) {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).unwrap();
    Command::new("sync").status().unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, work) = (peak.clone(), stop.clone(), work.to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(allocated(&work), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(allocated(work), Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, peak.load(Ordering::Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tree_mb: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(600);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let repo = repo();
    let bench = repo.join("target/bench");
    let tree = bench.join(format!("tree-{tree_mb}"));
    let (standin, fw) = (repo.join("target/standin"), repo.join("target/firmware"));
    assert!(standin.is_dir() && fw.is_dir(), "run scripts/setup first (stand-in and firmware)");
    let labimg = repo.join("target/release/labimg");
    assert!(labimg.is_file(), "build it first: cargo build --release -p image-builder");
    make_tree(&tree, tree_mb);
    let uboot = standin.join("u-boot/rpi_4/u-boot.bin");
    let count = |args: &str| {
        let out = Command::new("sh").arg("-c").arg(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("?").to_string()
    };
    println!(
        "root tree {}: {} MiB apparent size, {} files",
        tree.display(),
        count(&format!("du -s --apparent-size -B1M {}", tree.display())),
        count(&format!("find {} -type f | wc -l", tree.display()))
    );
    let mut rows = Vec::new();
    for run in 1..=runs {
        let work = bench.join("work-labimg");
        let mut cmd = Command::new(&labimg);
        cmd.env("LAB_ROOT", &repo)
            .args(["build", "nixpi", "--rootfs"])
            .arg(&tree)
            .arg("--bootloader")
            .arg(&uboot)
            .arg("--firmware-dir")
            .arg(&fw)
            .arg("--out")
            .arg(&work);
        let ours = measure(cmd, &work);
        let root_bytes = root_partition_bytes(&work.join("nixpi.img"));
        let work = bench.join("work-floor");
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(FLOOR).arg("floor").arg(&tree).arg(&work).arg(root_bytes.to_string());
        let floor = measure(cmd, &work);
        let work = bench.join("work-nixos");
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(NIXOS_RECIPE).arg("recipe").arg(&tree).arg(&work).arg(&fw).arg(&uboot);
        let theirs = measure(cmd, &work);
        println!(
            "run {run}: labimg {:.2} s, peak {} MiB | NixOS recipe {:.2} s, peak {} MiB | time {:.2}x, disk {:.2}x | floor {:.2} s: {:.2}x",
            ours.0,
            ours.1 >> 20,
            theirs.0,
            theirs.1 >> 20,
            ours.0 / theirs.0,
            ours.1 as f64 / theirs.1 as f64,
            floor.0,
            ours.0 / floor.0
        );
        rows.push((ours, theirs, floor));
    }
    let t_floor = median(rows.iter().map(|r| r.2 .0).collect());
    let t_ours = median(rows.iter().map(|r| r.0 .0).collect());
    let t_theirs = median(rows.iter().map(|r| r.1 .0).collect());
    let d_ours = median(rows.iter().map(|r| r.0 .1 as f64).collect());
    let d_theirs = median(rows.iter().map(|r| r.1 .1 as f64).collect());
    println!(
        "median of {runs}: labimg {t_ours:.2} s / NixOS recipe {t_theirs:.2} s = {:.2}x time; \
         peak disk {:.0} MiB / {:.0} MiB = {:.2}x",
        t_ours / t_theirs,
        d_ours / 1048576.0,
        d_theirs / 1048576.0,
        d_ours / d_theirs
    );
    println!(
        "median of {runs}: labimg {t_ours:.2} s / floor (mkfs.ext4 -d alone) {t_floor:.2} s = {:.2}x",
        t_ours / t_floor
    );
}

/// The size of partition 2 (the root) of an image, from `sfdisk --json`.
fn root_partition_bytes(image: &Path) -> u64 {
    let out = Command::new("sfdisk").arg("--json").arg(image).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = table["partitiontable"]["partitions"][1]["size"].as_u64();
    size.expect("the image's root partition") * 512
}
