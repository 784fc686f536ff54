//! `labimg`: builds Raspberry Pi SD images for the lab's hosts. This file
//! only parses the command line; the work happens in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use image_builder::build::{self, BuildOptions, RootInput};
use image_builder::progress::Progress;
use image_builder::{firmware, flash, inspect, interrupt};
use lab_model::blockdev;
use lab_model::Lab;

/// Default for SOURCE_DATE_EPOCH: 1980-01-01, the earliest time FAT can hold,
/// so both filesystems carry the same timestamp.
const DEFAULT_EPOCH: u64 = 315_532_800;

#[derive(Parser)]
#[command(name = "labimg", version, about = "Build, inspect and flash the lab's SD images")]
struct Cli {
    /// The lab repository (default: the nearest parent of the current directory with hosts/facts.nix).
    #[arg(long, global = true, env = "LAB_ROOT")]
    lab: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a host's bootable SD image: OUT/HOST.img with .bmap, .sha256 and a manifest
    #[command(after_help = "Examples:
  labimg build nixpi                                   # system from the flake (needs Nix and nixpkgs)
  labimg build nixpi --rootfs ./standin --bootloader u-boot.bin --host-key ./key
  labimg build nixpi --system /nix/store/...-nixos-system-nixpi --json
  SOURCE_DATE_EPOCH=1700000000 labimg build nixpi --rootfs root.tar --out /tmp/img
  labimg build nixpi --rootfs ./standin --bootloader u-boot.bin --dry-run   # checks and layout only

The image is byte-identical for the same inputs and SOURCE_DATE_EPOCH (default 1980-01-01).")]
    Build {
        /// Host name from hosts/facts.nix (must have a `board`).
        host: String,
        /// A prepared root tree (directory or plain .tar) instead of the NixOS system.
        #[arg(long, conflicts_with = "system")]
        rootfs: Option<PathBuf>,
        /// A NixOS system already in the Nix store (the host's toplevel).
        #[arg(long)]
        system: Option<PathBuf>,
        /// The host's SSH ed25519 private key, placed at /etc/ssh/ssh_host_ed25519_key (0600, root).
        #[arg(long)]
        host_key: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Firmware files (flat, as on the partition) instead of the fetch cache; works offline.
        #[arg(long)]
        firmware_dir: Option<PathBuf>,
        /// The file config.txt boots (U-Boot); built from the flake when not given with --system.
        #[arg(long)]
        bootloader: Option<PathBuf>,
        /// Check every input and print the layout; no image is written.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's partitions, filesystems, firmware files and host key fingerprint
    #[command(after_help = "Examples:\n  labimg inspect out/nixpi.img\n  labimg inspect out/nixpi.img --json | jq .hostKey")]
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Raspberry Pi firmware: download and verify the pinned files
    #[command(subcommand)]
    Firmware(FirmwareCmd),
    /// List disks a card or stick could be: path, model, size, serial, mounts
    #[command(after_help = "Examples:\n  labimg devices\n  labimg devices --all --json")]
    Devices {
        /// Also fixed disks (internal drives, NVMe) and loop devices.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write an image to a card or stick: mapped blocks only, read back and verified
    #[command(after_help = "Examples:
  labimg flash out/nixpi.img /dev/sdb            # shows the device, asks you to type its name
  labimg flash nixpi.img.zst /dev/sdb --yes      # compressed images stream through
  labimg flash out/nixpi.img /dev/sdb --dry-run  # every check, nothing written
  labimg flash out/nixpi.img vm-disk.raw         # regular files and loop devices work too

Refuses devices that are mounted, hold the running system, are too small, or
are not removable (unless --allow-fixed). Exit code 3: verification failed.")]
    Flash {
        image: PathBuf,
        device: PathBuf,
        /// Do not ask for the device name (scripts).
        #[arg(long)]
        yes: bool,
        /// Allow a non-removable disk (an internal drive, NVMe, a SATA SSD in a USB case that reports fixed).
        #[arg(long)]
        allow_fixed: bool,
        /// Skip reading the written ranges back (not recommended).
        #[arg(long)]
        no_verify: bool,
        /// The block map to use (default: IMAGE.bmap beside the image).
        #[arg(long, conflicts_with = "no_bmap")]
        bmap: Option<PathBuf>,
        /// Ignore any block map; write the image's data blocks (or every block).
        #[arg(long)]
        no_bmap: bool,
        /// Run every check and print the plan, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check a written device (or file) against an image, range by range
    #[command(
        after_help = "Examples:\n  labimg verify out/nixpi.img /dev/sdb\n  labimg verify nixpi.img.zst /dev/sdb --bmap nixpi.img.bmap\n\nExit code 3: the device differs from the image."
    )]
    Verify {
        image: PathBuf,
        device: PathBuf,
        #[arg(long)]
        bmap: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions
    #[command(after_help = "Example:\n  labimg completions bash > /etc/bash_completion.d/labimg")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum FirmwareCmd {
    /// Download the pinned firmware into the cache, verifying every sha256
    #[command(after_help = "Examples:
  labimg firmware fetch                      # every board
  labimg firmware fetch --board rpi4
  labimg firmware fetch --mirror http://debian-mirror.lan --cache ./fw")]
    Fetch {
        /// Only the files these boards need (default: all boards).
        #[arg(long = "board")]
        boards: Vec<String>,
        /// Cache directory (default: $XDG_CACHE_HOME/labimg/firmware).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Replace the scheme and host of every download URL (a Debian mirror).
        #[arg(long)]
        mirror: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a firmware directory (or the cache) against the pins, without building
    Verify {
        #[arg(long)]
        board: String,
        #[arg(long)]
        firmware_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    interrupt::install();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("labimg: error: {err:#}");
            let code = err.downcast_ref::<flash::Error>().map(flash::Error::exit_code).unwrap_or(1);
            ExitCode::from(code)
        }
    }
}

/// Asks the operator to type the device's name; never guesses without a terminal.
fn confirm_on_terminal(target: &flash::Target) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    eprintln!("About to overwrite {}", target.describe());
    if !std::io::stdin().is_terminal() {
        eprintln!("No terminal to confirm on: pass --yes to write without asking.");
        return false;
    }
    eprint!("Type `{}` to write to it: ", target.confirm_name());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    answer.trim() == target.confirm_name()
}

fn lab(cli_lab: &Option<PathBuf>) -> Result<Lab> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(Lab::locate(cli_lab.as_deref(), &cwd)?)
}

fn epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH must be seconds since 1970 as an integer, not `{v}`")),
        _ => Ok(DEFAULT_EPOCH),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build { host, rootfs, system, host_key, out, firmware_dir, bootloader, dry_run, json } => {
            let lab = lab(&cli.lab)?;
            let facts = lab.facts()?;
            let host = facts.host(&host)?.clone();
            let root = match (rootfs, system) {
                (Some(r), _) => RootInput::Tree(r),
                (None, Some(s)) => RootInput::System(s),
                (None, None) => RootInput::Flake,
            };
            let opts = BuildOptions {
                lab_root: lab.root.clone(),
                host,
                root,
                host_key,
                out_dir: out,
                firmware_dir,
                bootloader,
                epoch: epoch()?,
                progress: Progress::new(json),
            };
            if dry_run {
                let plan = build::plan(&opts)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    let p = &plan.placement;
                    println!(
                        "would build {} for {} ({}): {} MiB; FAT {} MiB at {} MiB, root {} MiB at {} MiB \
                         ({} files, {} MiB from {}); {} firmware files, bootloader {}; host key {}",
                        plan.image.display(),
                        plan.host,
                        plan.board,
                        p.total >> 20,
                        p.firmware_size >> 20,
                        p.firmware_start >> 20,
                        p.root_size >> 20,
                        p.root_start >> 20,
                        plan.root.stats.files,
                        plan.root.stats.bytes >> 20,
                        plan.root.source,
                        plan.firmware.len(),
                        plan.bootloader.name,
                        plan.host_key.as_ref().map(|k| k.fingerprint.as_str()).unwrap_or("none (made at first boot)")
                    );
                }
                return Ok(());
            }
            let summary = build::build(&opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary);
            }
            Ok(())
        }
        Cmd::Inspect { image, json } => {
            let report = inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Cmd::Firmware(FirmwareCmd::Fetch { boards, cache, mirror, json }) => {
            let lab = lab(&cli.lab)?;
            let manifest = firmware::Manifest::load(&lab.root.join(firmware::MANIFEST))?;
            let boards = if boards.is_empty() { firmware::BOARDS.iter().map(|b| b.to_string()).collect() } else { boards };
            let cache = cache.unwrap_or_else(firmware::default_cache);
            let report = firmware::fetch(&manifest, &boards, &cache, mirror.as_deref(), Progress::new(json))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "firmware cache {}: {} fetched, {} already there ({} MiB downloaded); every file matches its pin",
                    report.cache.display(),
                    report.fetched.len(),
                    report.already_cached.len(),
                    report.downloaded_bytes >> 20
                );
            }
            Ok(())
        }
        Cmd::Firmware(FirmwareCmd::Verify { board, firmware_dir }) => {
            let lab = lab(&cli.lab)?;
            let manifest = firmware::Manifest::load(&lab.root.join(firmware::MANIFEST))?;
            let dir = firmware_dir.unwrap_or_else(firmware::default_cache);
            let files = firmware::load_verified(&manifest, &board, &dir)?;
            println!("{}: all {} files for {board} match their pins", dir.display(), files.len());
            Ok(())
        }
        Cmd::Devices { all, json } => {
            let disks: Vec<_> = blockdev::list().into_iter().filter(|d| all || (d.removable && !d.system)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&disks)?);
            } else if disks.is_empty() {
                println!("no removable disks found{}", if all { "" } else { " (--all lists fixed disks too)" });
            } else {
                for d in &disks {
                    println!(
                        "{:<14} {:>8.1} GB  {:<24} serial {:<16} {}{}",
                        d.path.display(),
                        d.size as f64 / 1e9,
                        d.model.as_deref().unwrap_or("-"),
                        d.serial.as_deref().unwrap_or("-"),
                        if d.removable { "removable" } else { "fixed" },
                        if d.mounts.is_empty() { String::new() } else { format!(", mounted: {}", d.mounts.join(" ")) }
                    );
                }
            }
            Ok(())
        }
        Cmd::Flash { image, device, yes, allow_fixed, no_verify, bmap, no_bmap, dry_run, json } => {
            let mut img = flash::Image::open(&image, bmap.as_deref(), no_bmap)?;
            if dry_run {
                let target = flash::preflight(&device, img.size, allow_fixed)?;
                let plan = serde_json::json!({
                    "image": img.path, "imageSize": img.size, "mappedBytes": img.mapped_bytes(),
                    "ranges": img.ranges.len(), "mappedFrom": img.how, "bmap": img.bmap_path,
                    "target": target, "verify": !no_verify, "dryRun": true,
                });
                if json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    println!(
                        "would write {} MiB of {} ({} MiB image, {} ranges from the {}) to {}, then {}",
                        img.mapped_bytes() >> 20,
                        img.path.display(),
                        img.size >> 20,
                        img.ranges.len(),
                        img.how,
                        target.describe(),
                        if no_verify { "not verify" } else { "read back and verify every range" }
                    );
                }
                return Ok(());
            }
            let confirm = |t: &flash::Target| yes || confirm_on_terminal(t);
            let opts = flash::FlashOptions { verify: !no_verify, allow_fixed, progress: Progress::new(json), confirm: &confirm };
            let report = flash::flash(&mut img, &device, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "wrote {} MiB of {} to {} in {:.1} s ({} MiB skipped, mapped from the {}); verify: {}{}",
                    report.bytes_written >> 20,
                    report.image.display(),
                    report.target.path.display(),
                    report.write_seconds,
                    report.bytes_skipped >> 20,
                    report.mapped_from,
                    report.verify,
                    if report.verify == "ok" { format!(" in {:.1} s", report.verify_seconds) } else { String::new() }
                );
            }
            Ok(())
        }
        Cmd::Verify { image, device, bmap, json } => {
            let mut img = flash::Image::open(&image, bmap.as_deref(), false)?;
            let report = flash::verify(&mut img, &device, Progress::new(json))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} matches {}: {} ranges, {} MiB checked in {:.1} s",
                    device.display(),
                    image.display(),
                    report.ranges,
                    img.mapped_bytes() >> 20,
                    report.verify_seconds
                );
            }
            Ok(())
        }
        Cmd::Completions { shell } => {
            // Generated whole, then written: a closed pipe (`| head`) is not an
            // error, a full disk under `> file` is.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "labimg", &mut script);
            let mut out = std::io::stdout().lock();
            match std::io::Write::write_all(&mut out, &script).and_then(|()| std::io::Write::flush(&mut out)) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("write the completions"),
                _ => {}
            }
            Ok(())
        }
    }
}

fn print_summary(s: &build::BuildSummary) {
    let m = &s.manifest;
    println!("built {} for {} ({}) in {:.1} s", s.outputs.image.display(), m.host, m.board, s.seconds);
    println!("  size      {} MiB, {} MiB of it data", m.image.size >> 20, m.image.mapped_bytes >> 20);
    for p in &m.partitions {
        println!("  part {}    {} {} {} MiB at {} MiB ({})", p.number, p.filesystem, p.label, p.size >> 20, p.start >> 20, p.id);
    }
    println!("  root      {} ({} files, {} MiB)", m.root.source, m.root.stats.files, m.root.stats.bytes >> 20);
    match &m.host_key {
        Some(k) => println!("  host key  {} at {}", k.fingerprint, k.path),
        None => println!("  host key  none: the first boot generates one (enrol it with `labprov enrol`)"),
    }
    println!("  sha256    {}", m.image.sha256);
    for p in [&s.outputs.bmap, &s.outputs.sha256, &s.outputs.manifest] {
        println!("  wrote     {}", p.display());
    }
}
