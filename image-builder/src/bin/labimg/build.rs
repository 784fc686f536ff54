//! `labimg build HOST` (SD images) and `labimg build installer-ARCH`
//! (installer ISOs keyed after their Nix build).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use image_builder::build::{
    self, BuildOptions, BuildPlan, BuildSummary, Compression, RootInput, Staging,
};
use image_builder::compress;
use image_builder::installer::{
    self, BaseInput, InstallerOptions, InstallerPlan, InstallerSummary,
};
use lab_cli::output;
use lab_cli::progress::Progress;

use lab_cli::args::JsonArg;

/// Default for SOURCE_DATE_EPOCH: 1980-01-01, the earliest time FAT can hold,
/// so both filesystems carry the same timestamp.
const DEFAULT_EPOCH: u64 = 315_532_800;

/// Build a host's bootable SD image (OUT/HOST.img, .bmap, .sha256, manifest) or a keyed installer ISO
#[derive(Args)]
#[command(after_help = "Examples:
  labimg build nixpi                                   # system from the flake (needs Nix and nixpkgs)
  labimg build nixpi --rootfs ./standin --bootloader u-boot.bin --host-key ./key
  labimg build nixpi --system /nix/store/...-nixos-system-nixpi --json
  SOURCE_DATE_EPOCH=1700000000 labimg build nixpi --rootfs root.tar --out /tmp/img
  labimg build nixpi --rootfs ./standin --bootloader u-boot.bin --dry-run   # checks and layout only
  labimg build nixpi --compress zstd                   # OUT/nixpi.img.zst, for distribution
  labimg build nixpi --system /nix/store/...-nixos-system-nixpi --staging copy   # where namespaces are not allowed

  labimg build installer-x86_64 --iso nixos-installer.iso   # key a base installer ISO
  labimg build installer-aarch64 --iso base.iso --host-key ./key --out /tmp/iso --dry-run --json

An installer build writes OUT/installer-ARCH.iso (0600: it holds the installer's private host key),
.iso.sha256 and installer-ARCH.manifest.json. The ISO gets /lab/ssh_host_ed25519_key (fresh per build
unless --host-key), its .pub and /lab/authorized_keys (the admins' keys from hosts/admins.nix); the
base ISO's files and boot records are kept as they are (xorriso replays them).

With --compress zstd an SD build writes OUT/HOST.img.zst (one zstd frame, compressed on every core)
in place of HOST.img, with HOST.img.bmap and HOST.img.sha256 describing the uncompressed image (what
`labimg flash HOST.img.zst DEVICE` and bmaptool use) and HOST.img.zst.sha256.

A system's closure (--system, or the flake's) is not copied: mkfs.ext4 alone sees each store path
mounted into the staging tree, in a mount namespace of its own (a user namespace where not root);
where that is not allowed, hard links to the store's files, then a copy (--staging; same image).

The output is byte-identical for the same inputs and SOURCE_DATE_EPOCH (default 1980-01-01); a .zst
also for the same level and zstd library version (in the manifest), whatever the number of cores.")]
pub struct BuildArgs {
    /// Host name from hosts/facts.nix (must have a `board`), or installer-x86_64 / installer-aarch64.
    host: String,
    /// Installer builds: the base installer ISO to key (default: `nix build` of the flake's
    /// nixosConfigurations.installer-ARCH isoImage).
    #[arg(long, value_name = "BASE.iso")]
    iso: Option<PathBuf>,
    /// A prepared root tree (directory or plain .tar) instead of the NixOS system.
    #[arg(long, conflicts_with = "system", value_name = "PATH")]
    rootfs: Option<PathBuf>,
    /// A NixOS system already in the Nix store (the host's toplevel).
    #[arg(long, value_name = "STORE_PATH")]
    system: Option<PathBuf>,
    /// The host's SSH ed25519 private key, placed at /etc/ssh/ssh_host_ed25519_key (0600, root).
    /// Default: the lab-held key (decrypted in memory with the admin identity), if the host has one.
    /// Installers: the key placed at /lab/ssh_host_ed25519_key (default: a fresh one per build).
    #[arg(long, value_name = "PATH")]
    host_key: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "out", value_name = "DIR")]
    out: PathBuf,
    /// Firmware files (flat, as on the partition) instead of the fetch cache; works offline.
    #[arg(long, value_name = "DIR")]
    firmware_dir: Option<PathBuf>,
    /// The file config.txt boots (U-Boot); built from the flake when not given with --system.
    #[arg(long, value_name = "PATH")]
    bootloader: Option<PathBuf>,
    /// Write the SD image compressed, as OUT/HOST.img.zst (zstd on every core), not HOST.img.
    #[arg(long, value_enum, default_value_t = CompressArg::None, value_name = "FORMAT")]
    compress: CompressArg,
    /// zstd level for --compress zstd, 1 (fastest) to 22 (smallest); 9 when not given.
    #[arg(long, requires = "compress", value_name = "N", value_parser = level_parser())]
    compress_level: Option<i32>,
    /// How the system's closure reaches mkfs.ext4 (--system or the flake): auto takes the first
    /// of mounts, links, copy that works here.
    #[arg(long, value_enum, default_value_t = StagingArg::Auto, value_name = "HOW", conflicts_with = "rootfs")]
    staging: StagingArg,
    /// Check every input and print the layout; no image is written.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// A level outside zstd's range is a usage error that names the range.
fn level_parser() -> clap::builder::RangedI64ValueParser<i32> {
    let (low, high) = (*compress::LEVELS.start(), *compress::LEVELS.end());
    clap::value_parser!(i32).range(i64::from(low)..=i64::from(high))
}

/// `--compress`: zstd is what `labimg flash` streams and bmaptool reads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressArg {
    /// HOST.img, sparse (the default).
    None,
    /// HOST.img.zst.
    Zstd,
}

/// `--staging`: see decision 0005.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StagingArg {
    /// mounts, else links, else copy.
    Auto,
    /// Store paths bind-mounted for mkfs alone (a mount namespace; a user namespace where not root).
    Mounts,
    /// Hard links to the store's files (--out on the store's filesystem).
    Links,
    /// A copy of the closure, as NixOS's recipe makes (disk and time).
    Copy,
}

impl BuildArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        if installer::is_installer(&self.host) {
            return self.run_installer(lab);
        }
        if self.iso.is_some() {
            anyhow::bail!(
                "--iso is for installer builds (labimg build installer-x86_64|installer-aarch64), not for `{}`",
                self.host
            );
        }
        if self.compress == CompressArg::None && self.compress_level.is_some() {
            // `requires` is met by an explicit `--compress none`; a level
            // that would be ignored is a usage error all the same.
            use clap::CommandFactory;
            crate::Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--compress-level applies to --compress zstd, not --compress none",
                )
                .exit();
        }
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let host = lab.facts()?.host(&self.host)?.clone();
        let root = match (self.rootfs, self.system) {
            (Some(r), _) => RootInput::Tree(r),
            (None, Some(s)) => RootInput::System(s),
            (None, None) => RootInput::Flake,
        };
        let opts = BuildOptions {
            lab_root: lab.root.clone(),
            host,
            root,
            host_key: self.host_key,
            out_dir: self.out,
            firmware_dir: self.firmware_dir,
            bootloader: self.bootloader,
            epoch: epoch()?,
            compress: match self.compress {
                CompressArg::None => None,
                CompressArg::Zstd => Some(Compression {
                    level: self.compress_level.unwrap_or(compress::DEFAULT_LEVEL),
                }),
            },
            staging: match self.staging {
                StagingArg::Auto => Staging::Auto,
                StagingArg::Mounts => Staging::Mounts,
                StagingArg::Links => Staging::Links,
                StagingArg::Copy => Staging::Copy,
            },
            progress: Progress::default(),
        };
        if self.dry_run {
            return output::report(json, &build::plan(&opts)?, render_plan);
        }
        output::report(json, &build::build(&opts)?, render_summary)
    }
}

impl BuildArgs {
    /// `labimg build installer-ARCH`: the base ISO keyed with a fresh host
    /// key and the admins' keys from the facts.
    fn run_installer(self, lab: Option<&Path>) -> Result<()> {
        let sd_only = [
            ("--rootfs", self.rootfs.is_some()),
            ("--system", self.system.is_some()),
            ("--firmware-dir", self.firmware_dir.is_some()),
            ("--bootloader", self.bootloader.is_some()),
            ("--compress", self.compress != CompressArg::None),
            ("--staging", self.staging != StagingArg::Auto),
        ];
        if let Some((flag, _)) = sd_only.iter().find(|(_, given)| *given) {
            anyhow::bail!(
                "{flag} is for SD images; an installer build takes --iso BASE.iso (see labimg build --help)"
            );
        }
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let facts = lab.facts()?;
        let opts = InstallerOptions {
            lab_root: lab.root.clone(),
            name: self.host,
            base: self.iso.map_or(BaseInput::Flake, BaseInput::Iso),
            admins: facts.admins,
            host_key: self.host_key,
            out_dir: self.out,
            epoch: epoch()?,
            progress: Progress::default(),
        };
        if self.dry_run {
            return output::report(json, &installer::plan(&opts)?, render_installer_plan);
        }
        output::report(json, &installer::build(&opts)?, render_installer_summary)
    }
}

fn render_installer_plan(plan: &InstallerPlan) -> String {
    let key = plan
        .host_key
        .as_ref()
        .map(|k| k.fingerprint.clone())
        .unwrap_or_else(|| "a fresh ed25519 key (made at build time)".into());
    format!(
        "would build {} ({}) from {} ({} MiB, volume {}, boot entries: {}): adding {}; host key {}; \
         {} admin key(s)\n",
        plan.iso.display(),
        plan.arch,
        plan.base.path.display(),
        plan.base.size >> 20,
        plan.base.volume_id,
        plan.base.boot_entries.join("; "),
        plan.payload.join(", "),
        key,
        plan.admin_keys.len()
    )
}

fn render_installer_summary(s: &InstallerSummary) -> String {
    use std::fmt::Write;
    let m = &s.manifest;
    let mut t = String::new();
    let _ = writeln!(t, "built {} ({}) in {:.1} s", s.outputs.iso.display(), m.arch, s.seconds);
    let _ = writeln!(t, "  base      {} ({})", m.base.path.display(), m.base.sha256);
    for e in &m.base.boot_entries {
        let _ = writeln!(t, "  boot      {e}");
    }
    let _ = writeln!(t, "  host key  {} at {}", m.host_key.fingerprint, m.host_key.path);
    for k in &m.admin_keys {
        let _ = writeln!(t, "  admin     {} {}", k.admin, k.fingerprint);
    }
    let _ = writeln!(t, "  sha256    {}", m.iso.sha256);
    for p in [&s.outputs.sha256, &s.outputs.manifest] {
        let _ = writeln!(t, "  wrote     {}", p.display());
    }
    t
}

fn epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH must be seconds since 1970 as an integer, not `{v}`")
        }),
        _ => Ok(DEFAULT_EPOCH),
    }
}

fn render_plan(plan: &BuildPlan) -> String {
    let p = &plan.placement;
    format!(
        "would build {} for {} ({}): {} MiB; FAT {} MiB at {} MiB, root {} MiB at {} MiB \
         ({} files, {} MiB from {}); {} firmware files, bootloader {}; host key {}{}\n",
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
        plan.host_key
            .as_ref()
            .map(|k| k.fingerprint.as_str())
            .unwrap_or("none (made at first boot)"),
        plan.compress
            .as_ref()
            .map(|c| format!(
                "; then compressed with {} level {} on {} threads \
                 (the uncompressed image is not kept)",
                c.format, c.level, c.workers
            ))
            .unwrap_or_default()
    )
}

fn render_summary(s: &BuildSummary) -> String {
    use std::fmt::Write;
    let m = &s.manifest;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "built {} for {} ({}) in {:.1} s",
        s.outputs.image.display(),
        m.host,
        m.board,
        s.seconds
    );
    let _ = writeln!(
        t,
        "  size      {} MiB, {} MiB of it data",
        m.image.size >> 20,
        m.image.mapped_bytes >> 20
    );
    for p in &m.partitions {
        let _ = writeln!(
            t,
            "  part {}    {} {} {} MiB at {} MiB ({})",
            p.number,
            p.filesystem,
            p.label,
            p.size >> 20,
            p.start >> 20,
            p.id
        );
    }
    let _ = writeln!(
        t,
        "  root      {} ({} files, {} MiB)",
        m.root.source,
        m.root.stats.files,
        m.root.stats.bytes >> 20
    );
    match &m.host_key {
        Some(k) => {
            let _ = writeln!(t, "  host key  {} at {}", k.fingerprint, k.path);
        }
        None => {
            let _ = writeln!(
                t,
                "  host key  none: the first boot generates one (enrol it with `labprov enrol`)"
            );
        }
    }
    let _ = writeln!(t, "  sha256    {}", m.image.sha256);
    if let Some(c) = &m.image.compressed {
        let _ = writeln!(
            t,
            "  {}      {} level {}: {:.1} MiB ({:.1}% of the image), sha256 {}",
            c.format,
            c.file,
            c.level,
            c.size as f64 / 1048576.0,
            100.0 * c.size as f64 / m.image.size as f64,
            c.sha256
        );
    }
    let written =
        [Some(&s.outputs.bmap), Some(&s.outputs.sha256), s.outputs.compressed_sha256.as_ref()];
    for p in written.into_iter().flatten().chain([&s.outputs.manifest]) {
        let _ = writeln!(t, "  wrote     {}", p.display());
    }
    for p in &s.outputs.removed {
        let _ = writeln!(t, "  removed   {} (from an earlier build of another image)", p.display());
    }
    t
}
