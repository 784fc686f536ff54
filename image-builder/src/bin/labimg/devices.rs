//! `labimg devices`.

use anyhow::Result;
use clap::Args;
use lab_blockdev::Disk;

use lab_cli::args::JsonArg;

/// List disks a card or stick could be: path, model, size, serial, mounts
#[derive(Args)]
#[command(after_help = "Examples:\n  labimg devices\n  labimg devices --all --json")]
pub struct DevicesArgs {
    /// Also fixed disks (internal drives, NVMe) and loop devices.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    json: JsonArg,
}

impl DevicesArgs {
    pub fn run(self) -> Result<()> {
        let json = self.json.init();
        let all = self.all;
        let disks: Vec<Disk> = lab_blockdev::list()
            .into_iter()
            .filter(|d| all || (d.removable && !d.system))
            .collect();
        lab_cli::output::report(json, &disks, |disks| {
            if disks.is_empty() {
                return format!(
                    "no removable disks found{}\n",
                    if all { "" } else { " (--all lists fixed disks too)" }
                );
            }
            disks
                .iter()
                .map(|d| {
                    format!(
                        "{:<14} {:>8.1} GB  {:<24} serial {:<16} {}{}\n",
                        d.path.display(),
                        d.size as f64 / 1e9,
                        d.model.as_deref().unwrap_or("-"),
                        d.serial.as_deref().unwrap_or("-"),
                        if d.removable { "removable" } else { "fixed" },
                        if d.mounts.is_empty() {
                            String::new()
                        } else {
                            format!(", mounted: {}", d.mounts.join(" "))
                        }
                    )
                })
                .collect()
        })
    }
}
