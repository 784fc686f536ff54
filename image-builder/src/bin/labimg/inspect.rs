//! `labimg inspect IMAGE`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use image_builder::inspect;

use lab_cli::args::JsonArg;

/// Show an image's partitions, filesystems, firmware files and host key fingerprint
#[derive(Args)]
#[command(
    after_help = "Examples:\n  labimg inspect out/nixpi.img\n  labimg inspect out/nixpi.img --json | jq .hostKey"
)]
pub struct InspectArgs {
    /// The image file (as `labimg build` wrote it).
    image: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

impl InspectArgs {
    pub fn run(self) -> Result<()> {
        let json = self.json.init();
        lab_cli::output::report(json, &inspect::inspect(&self.image)?, |r| r.to_text())
    }
}
