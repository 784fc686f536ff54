//! `labimg flash IMAGE DEVICE` and `labimg verify IMAGE DEVICE`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use image_builder::flash::{self, Target};
use lab_cli::progress::Progress;
use lab_cli::prompt::{Confirm, Declined};

use lab_cli::args::JsonArg;

/// Write an image to a card or stick: mapped blocks only, read back and verified
#[derive(Args)]
#[command(after_help = "Examples:
  labimg flash out/nixpi.img /dev/sdb            # shows the device, asks you to type its name
  labimg flash nixpi.img.zst /dev/sdb --yes      # compressed images stream through
  labimg flash out/nixpi.img /dev/sdb --dry-run  # every check, nothing written
  labimg flash out/nixpi.img vm-disk.raw         # regular files and loop devices work too

Refuses devices that are mounted, hold the running system, are too small, or
are not removable (unless --allow-fixed): exit code 4. Exit code 3: verification failed.")]
pub struct FlashArgs {
    /// The image (.img, or .img.zst streamed through).
    image: PathBuf,
    /// The whole disk to write (/dev/sdX, /dev/mmcblkN), a loop device or a regular file.
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
    #[arg(long, conflicts_with = "no_bmap", value_name = "PATH")]
    bmap: Option<PathBuf>,
    /// Ignore any block map; write the image's data blocks (or every block).
    #[arg(long)]
    no_bmap: bool,
    /// Run every check and print the plan, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// Check a written device (or file) against an image, range by range
#[derive(Args)]
#[command(
    after_help = "Examples:\n  labimg verify out/nixpi.img /dev/sdb\n  labimg verify nixpi.img.zst /dev/sdb --bmap nixpi.img.bmap\n\nExit code 3: the device differs from the image."
)]
pub struct VerifyArgs {
    /// The image that was written.
    image: PathBuf,
    /// The device or file it was written to.
    device: PathBuf,
    /// The block map to use (default: IMAGE.bmap beside the image).
    #[arg(long, value_name = "PATH")]
    bmap: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

/// The operator types the device's name, as shown with its model and size.
fn confirm(target: &Target, yes: bool) -> Result<(), Declined> {
    let context = format!("About to overwrite {}", target.describe());
    let word = target.confirm_name();
    let action = format!("write to {}", target.path.display());
    Confirm {
        context: &context,
        action: &action,
        word: &word,
        without_terminal: "pass --yes to write without asking",
    }
    .ask(yes)
}

impl FlashArgs {
    pub fn run(self) -> Result<()> {
        let json = self.json.init();
        let mut img = flash::Image::open(&self.image, self.bmap.as_deref(), self.no_bmap)?;
        let yes = self.yes;
        let ask = |t: &Target| confirm(t, yes);
        let opts = flash::FlashOptions {
            verify: !self.no_verify,
            allow_fixed: self.allow_fixed,
            progress: Progress::default(),
            confirm: &ask,
        };
        if self.dry_run {
            let plan = flash::plan(&mut img, &self.device, &opts)?;
            let text = format!(
                "would write {} MiB of {} ({} MiB image, {} ranges from the {}) to {}, then {}\n",
                plan.mapped_bytes >> 20,
                plan.image.display(),
                plan.image_size >> 20,
                plan.ranges,
                plan.mapped_from,
                plan.target.describe(),
                if plan.verify { "read back and verify every range" } else { "not verify" }
            );
            // As a JSON value, keys sorted: the order the dry run has always printed.
            return lab_cli::output::report(json, &serde_json::to_value(&plan)?, |_| text);
        }
        let report = flash::flash(&mut img, &self.device, &opts)?;
        lab_cli::output::report(json, &report, |r| {
            format!(
                "wrote {} MiB of {} to {} in {:.1} s ({} MiB skipped, mapped from the {}); verify: {}{}\n",
                r.bytes_written >> 20,
                r.image.display(),
                r.target.path.display(),
                r.write_seconds,
                r.bytes_skipped >> 20,
                r.mapped_from,
                r.verify,
                if r.verify == "ok" { format!(" in {:.1} s", r.verify_seconds) } else { String::new() }
            )
        })
    }
}

impl VerifyArgs {
    pub fn run(self) -> Result<()> {
        let json = self.json.init();
        let mut img = flash::Image::open(&self.image, self.bmap.as_deref(), false)?;
        let report = flash::verify(&mut img, &self.device, Progress::default())?;
        let mapped = img.mapped_bytes();
        lab_cli::output::report(json, &report, |r| {
            format!(
                "{} matches {}: {} ranges, {} MiB checked in {:.1} s\n",
                self.device.display(),
                self.image.display(),
                r.ranges,
                mapped >> 20,
                r.verify_seconds
            )
        })
    }
}
