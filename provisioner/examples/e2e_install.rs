//! `scripts/e2e-install HOST [--spec FILE]`: the end-to-end install of the
//! vm_install test, outside the test suite. Boots the STAND-IN x86_64
//! installer (keyed by labimg for a throwaway admin) in QEMU with one blank
//! disk per disk of the spec, makes a THROWAWAY lab whose HOST has the spec
//! and a fresh lab-held key (the repository's real keys are never read),
//! builds the stand-in system for it, and runs `labprov install HOST --yes
//! --json` against the VM: disk, keys, `nix copy` + stand-in nixos-install,
//! a real reboot from the VM's disk, verify by the recorded key. Prints
//! each phase's time and `verified` at the end; exits with labprov's status.
//!
//!   cargo run -p provisioner --example e2e_install -- HOST [--spec FILE] [--disk-gib N]
//!
//! FILE is a disko spec (.nix, or .json: raw or disko's devices JSON); its
//! root must be a partition (the stand-in system's init mounts no LUKS,
//! LVM or md root; the disk tests cover those).

#[path = "../tests/keys_support/mod.rs"]
mod keys_support;
#[path = "../tests/vm_install_support/mod.rs"]
mod vm_install_support;
#[path = "../tests/vm_support/mod.rs"]
mod vm_support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vm_install_support::{spec_facts, InstallLab};
use vm_support::{boot_installer, repo, text};

const USAGE: &str = "usage: scripts/e2e-install HOST [--spec FILE] [--disk-gib N]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("e2e-install: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let (mut host, mut spec, mut gib) = (None, None, 4u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--spec" => spec = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--disk-gib" => {
                gib = args.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0).ok_or(USAGE)?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            _ if a.starts_with('-') || host.is_some() => return Err(USAGE.into()),
            _ => host = Some(a),
        }
    }
    let host = host.ok_or(USAGE)?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("`{host}` is not a host name"));
    }
    let spec = spec.unwrap_or_else(|| repo().join("hosts").join(&host).join("disko.nix"));
    if !spec.is_file() {
        return Err(format!(
            "{} does not exist; give a disko spec with --spec FILE",
            spec.display()
        ));
    }
    let spec = std::fs::canonicalize(&spec).map_err(|e| e.to_string())?;
    // Checked before anything boots: the spec parses and its root is one the
    // stand-in system can mount.
    let (disks, root) = spec_facts(&spec)?;
    println!("spec {}: disks {}, root {root}", spec.display(), disks.join(" "));

    let t = "e2e-install";
    if !keys_support::require(t, &["nix", "nix-build", "nix-store", "sops", "age-keygen"]) {
        return Err("a tool the install needs is missing (above)".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut installer = boot_installer(t, tmp.path(), disks.len(), gib << 30)
        .ok_or("the installer VM cannot run here (above)")?;
    installer.install_labprov();
    let booted = started.elapsed();
    println!("installer booted and given labprov: {:.1} s", booted.as_secs_f64());
    let lab = InstallLab::new(&installer, &host, &spec)?;

    installer.vm.forget_serial();
    let out = lab.run(&installer, &["--yes", "--json"], Duration::from_secs(3600));
    if !out.status.success() {
        eprintln!("{}\nserial log:\n{}", text(&out), installer.vm.serial_tail(60));
        return Ok(ExitCode::from(out.status.code().unwrap_or(1).clamp(1, 255) as u8));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("labprov --json: {e}"))?;
    println!("{:<10} {:>9}", "phase", "seconds");
    for p in report["phases"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:>9.1}",
            p["phase"].as_str().unwrap_or("?"),
            p["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    println!("{:<10} {:>9.1}", "total", report["seconds"].as_f64().unwrap_or(0.0));
    println!(
        "verified: {host} rebooted from its own disk and answered with its recorded key {}",
        lab.recorded
    );
    Ok(ExitCode::SUCCESS)
}
