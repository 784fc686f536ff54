//! `labimg firmware fetch|verify`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use image_builder::firmware;
use lab_cli::progress::Progress;

use lab_cli::args::JsonArg;

/// Raspberry Pi firmware: download and verify the pinned files
#[derive(Subcommand)]
pub enum FirmwareCommand {
    Fetch(FetchArgs),
    Verify(VerifyArgs),
}

/// Download the pinned firmware into the cache, verifying every sha256
#[derive(Args)]
#[command(after_help = "Examples:
  labimg firmware fetch                      # every board
  labimg firmware fetch --board rpi4
  labimg firmware fetch --mirror http://debian-mirror.lan --cache ./fw")]
pub struct FetchArgs {
    /// Only the files these boards need (default: all boards).
    #[arg(long = "board", value_name = "BOARD", value_parser = firmware::BOARDS)]
    boards: Vec<String>,
    /// Cache directory (default: $XDG_CACHE_HOME/labimg/firmware).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// A Debian mirror's root, replacing the scheme and host of every download URL
    /// (`http://deb.debian.org`, not `http://deb.debian.org/debian`: the path is kept).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

/// Check a firmware directory (or the cache) against the pins, without building
#[derive(Args)]
#[command(after_help = "Example:\n  labimg firmware verify --board rpi4 --firmware-dir ./fw")]
pub struct VerifyArgs {
    /// The board whose files to check.
    #[arg(long, value_parser = firmware::BOARDS)]
    board: String,
    /// The directory to check (default: the fetch cache).
    #[arg(long, value_name = "DIR")]
    firmware_dir: Option<PathBuf>,
}

impl FirmwareCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let lab = lab_facts::Lab::find(lab)?;
        let manifest = firmware::Manifest::load(&lab.root.join(firmware::MANIFEST))?;
        match self {
            FirmwareCommand::Fetch(a) => {
                let json = a.json.init();
                let boards = if a.boards.is_empty() {
                    firmware::BOARDS.iter().map(|b| b.to_string()).collect()
                } else {
                    a.boards
                };
                let cache = a.cache.unwrap_or_else(firmware::default_cache);
                let report = firmware::fetch(
                    &manifest,
                    &boards,
                    &cache,
                    a.mirror.as_deref(),
                    Progress::default(),
                )?;
                lab_cli::output::report(json, &report, |r| {
                    format!(
                        "firmware cache {}: {} fetched, {} already there ({} MiB downloaded); every file matches its pin\n",
                        r.cache.display(),
                        r.fetched.len(),
                        r.already_cached.len(),
                        r.downloaded_bytes >> 20
                    )
                })
            }
            FirmwareCommand::Verify(a) => {
                let dir = a.firmware_dir.unwrap_or_else(firmware::default_cache);
                let files = firmware::load_verified(&manifest, &a.board, &dir)?;
                println!(
                    "{}: all {} files for {} match their pins",
                    dir.display(),
                    files.len(),
                    a.board
                );
                Ok(())
            }
        }
    }
}
