//! Benchmark: keying an installer ISO with `labimg build installer-x86_64`
//! against the usual way (unpack the ISO with xorriso, add the lab/ files,
//! repack with `xorriso -as mkisofs` and the same boot options), and against
//! the floor: copying the base ISO's bytes once, which both ways must at
//! least do (each writes a new ISO of the base's size). Same base, one run
//! each, times and ratios printed. Not a test: nothing here asserts on time.
//!
//!   cargo build --release -p image-builder
//!   cargo run --release -p image-builder --example bench_installer -- [SIZE_MIB] [RUNS]
//!
//! Needs xorriso, mkfs.vfat, mtools and ssh-keygen (as the installer tests
//! do). The base ISO (SIZE_MIB, default 1024: a NixOS-like layout with one
//! large store image, a kernel, an initrd and a few hundred small files, all
//! deterministic pseudo-random content, plus a FAT El Torito EFI image as an
//! appended partition, as image-builder/tests/installer.rs makes its small
//! ones) is generated once under target/bench/installer-SIZE_MIB. Every
//! timed step ends with `sync`, so each side pays for getting its bytes to
//! the disk (labimg syncs its ISO itself; the other two would not).

mod common;

use common::{repo, Rng};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const EPOCH: &str = "1700000000";
const VOLUME_ID: &str = "NIXOS_BENCH";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_random(path: &Path, bytes: u64, rng: &mut Rng) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// The base ISO's boot options, for the base itself and for the usual way's
/// repack: the FAT EFI image as appended partition 2 (type 0xef) and the
/// El Torito EFI entry pointing at it.
fn boot_args(efi: &Path) -> Vec<String> {
    [
        "-append_partition",
        "2",
        "0xef",
        efi.to_str().unwrap(),
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
    ]
    .map(String::from)
    .to_vec()
}

fn mkisofs(out: &Path, tree: &Path, efi: &Path) -> Command {
    let mut cmd = Command::new("xorriso");
    cmd.args(["-no_rc", "-as", "mkisofs", "-o"]).arg(out);
    cmd.args(["-R", "-J", "-V", VOLUME_ID]).args(boot_args(efi)).arg(tree);
    cmd.env("SOURCE_DATE_EPOCH", "1600000000");
    cmd
}

/// The base ISO and its EFI image, made once.
fn make_base(dir: &Path, size_mib: u64) -> (PathBuf, PathBuf) {
    let (iso, efi) = (dir.join("base.iso"), dir.join("efi.img"));
    if dir.join(".complete").exists() {
        return (iso, efi);
    }
    let _ = fs::remove_dir_all(dir);
    let tree = dir.join("tree");
    let mut rng = Rng(0x1ab_150);
    let mib = 1u64 << 20;
    write_random(&tree.join("boot/bzImage"), 12 * mib, &mut rng);
    write_random(&tree.join("boot/initrd"), 24 * mib, &mut rng);
    fs::create_dir_all(tree.join("EFI/boot")).unwrap();
    fs::write(tree.join("EFI/nixos-installer-image"), b"").unwrap();
    let mut small = 0;
    for i in 0..400u64 {
        let len = 4096 + rng.next() % (12 * 1024);
        write_random(&tree.join(format!("EFI/boot/grub-theme/d{}/f{i}", i / 50)), len, &mut rng);
        small += len;
    }
    let store = (size_mib * mib).saturating_sub(36 * mib + small + 2 * mib);
    write_random(&tree.join("nix-store.squashfs"), store, &mut rng);
    run(Command::new("mkfs.vfat").arg("-C").arg(&efi).arg("2880"));
    run(Command::new("mmd").arg("-i").arg(&efi).args(["::/EFI", "::/EFI/boot"]));
    let grub = dir.join("BOOTX64.EFI");
    write_random(&grub, 1_000_000, &mut rng);
    run(Command::new("mcopy").arg("-i").arg(&efi).arg(&grub).arg("::/EFI/boot/BOOTX64.EFI"));
    run(&mut mkisofs(&iso, &tree, &efi));
    fs::remove_dir_all(&tree).unwrap();
    fs::write(dir.join(".complete"), "").unwrap();
    (iso, efi)
}

/// A throwaway lab whose only admin has a throwaway key, and the three lab/
/// files for the usual way (the same kinds of files labimg writes).
fn make_lab(dir: &Path) -> (PathBuf, PathBuf) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let key = |name: &str| {
        let path = dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path));
        path
    };
    let admin = fs::read_to_string(key("admin").with_extension("pub")).unwrap();
    let lab = dir.join("lab");
    fs::create_dir_all(lab.join("hosts")).unwrap();
    fs::create_dir_all(lab.join("firmware")).unwrap();
    fs::write(
        lab.join("hosts/facts.nix"),
        format!(
            "{{ admins = {{ bench = {{ sshKeys = [ \"{}\" ]; }}; }}; hosts = {{ }}; }}",
            admin.trim()
        ),
    )
    .unwrap();
    for f in ["manifest.toml", "config.txt"] {
        fs::copy(repo().join("firmware").join(f), lab.join("firmware").join(f)).unwrap();
    }
    let files = dir.join("lab-files");
    fs::create_dir_all(&files).unwrap();
    let host = key("ssh_host_ed25519_key");
    fs::rename(&host, files.join("ssh_host_ed25519_key")).unwrap();
    fs::rename(host.with_extension("pub"), files.join("ssh_host_ed25519_key.pub")).unwrap();
    fs::write(files.join("authorized_keys"), admin).unwrap();
    fs::set_permissions(files.join("ssh_host_ed25519_key"), fs::Permissions::from_mode(0o600))
        .unwrap();
    (lab, files)
}

/// Wall time of `steps` in order, then `sync`, in a fresh `work`.
fn measure(work: &Path, steps: Vec<Command>) -> f64 {
    clear(work);
    fs::create_dir_all(work).unwrap();
    run(&mut Command::new("sync"));
    let start = Instant::now();
    for mut step in steps {
        run(&mut step);
    }
    run(&mut Command::new("sync"));
    let secs = start.elapsed().as_secs_f64();
    clear(work);
    secs
}

/// Removes `work`, read-only directories from an extraction included.
fn clear(work: &Path) {
    if work.exists() {
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(work).status();
        let _ = fs::remove_dir_all(work);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let repo = repo();
    let labimg = repo.join("target/release/labimg");
    assert!(labimg.is_file(), "build it first: cargo build --release -p image-builder");
    let bench = repo.join(format!("target/bench/installer-{size_mib}"));
    let (base, efi) = make_base(&bench, size_mib);
    let (lab, lab_files) = make_lab(&bench.join("keys"));
    let size = fs::metadata(&base).unwrap().len();
    println!(
        "base ISO {}: {} MiB, El Torito EFI image as appended partition 2",
        base.display(),
        size >> 20
    );

    let mut rows = Vec::new();
    for r in 1..=runs {
        let work = bench.join("work-labimg");
        let mut ours = Command::new(&labimg);
        ours.env("LAB_ROOT", &lab).env("SOURCE_DATE_EPOCH", EPOCH);
        ours.args(["build", "installer-x86_64", "--iso"]).arg(&base).arg("--out").arg(&work);
        let t_ours = measure(&work, vec![ours]);

        let work = bench.join("work-usual");
        let tree = work.join("tree");
        let mut extract = Command::new("xorriso");
        extract.args(["-no_rc", "-osirrox", "on", "-indev"]).arg(&base);
        extract.arg("-extract").arg("/").arg(&tree);
        let mut add = Command::new("cp");
        add.arg("-a").arg(&lab_files).arg(tree.join("lab"));
        // The extracted tree's directories keep the ISO's (read-only) modes.
        let mut writable = Command::new("chmod");
        writable.arg("u+w").arg(&tree);
        let repack = mkisofs(&work.join("keyed.iso"), &tree, &efi);
        let t_usual = measure(&work, vec![extract, writable, add, repack]);

        let work = bench.join("work-floor");
        let mut copy = Command::new("cp");
        copy.arg("--reflink=never").arg(&base).arg(work.join("copy.iso"));
        let t_floor = measure(&work, vec![copy]);

        println!(
            "run {r}: labimg {t_ours:.2} s | usual way (extract + add + repack) {t_usual:.2} s | \
             floor (cp of the base) {t_floor:.2} s | ours/usual {:.2}x | ours/floor {:.2}x | usual/floor {:.2}x",
            t_ours / t_usual,
            t_ours / t_floor,
            t_usual / t_floor
        );
        rows.push((t_ours, t_usual, t_floor));
    }
    let (o, u, f) = (
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect()),
        median(rows.iter().map(|r| r.2).collect()),
    );
    println!(
        "median of {runs}: labimg {o:.2} s / usual way {u:.2} s = {:.2}x; labimg / floor {f:.2} s = {:.2}x; \
         usual / floor = {:.2}x",
        o / u,
        o / f,
        u / f
    );
}
