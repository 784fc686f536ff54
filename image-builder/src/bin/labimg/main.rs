//! `labimg`: builds, inspects and flashes the lab's SD images. This file
//! only composes the commands; each command owns its arguments and its run
//! (beside it), and the work is in the `image_builder` library.

mod build;
mod devices;
mod firmware;
mod flash;
mod inspect;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use lab_cli::exit::link;

#[derive(Parser)]
#[command(
    name = "labimg",
    version,
    about = "Build, inspect and flash the lab's SD images and installer ISOs"
)]
#[command(
    after_help = "Exit codes: 0 done, 1 failed, 2 usage, 3 verification mismatch, 4 refused by a safety check \
                        or not confirmed, 130 interrupted."
)]
pub struct Cli {
    /// The lab repository (default: the nearest parent of the current directory with hosts/facts.nix).
    #[arg(long, global = true, env = "LAB_ROOT", value_name = "DIR")]
    lab: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Build(build::BuildArgs),
    Inspect(inspect::InspectArgs),
    #[command(subcommand)]
    Firmware(firmware::FirmwareCommand),
    Devices(devices::DevicesArgs),
    Flash(flash::FlashArgs),
    Verify(flash::VerifyArgs),
    /// Print shell completions
    #[command(after_help = "Example:\n  labimg completions bash > /etc/bash_completion.d/labimg")]
    Completions(lab_cli::args::ShellArg),
}

fn main() -> ExitCode {
    let links = [
        link::<image_builder::flash::Error>,
        link::<image_builder::build::Error>,
        link::<image_builder::installer::Error>,
    ];
    lab_cli::exit::main("labimg", &links, || {
        let cli = Cli::parse();
        let lab = cli.lab.as_deref();
        match cli.command {
            Command::Build(a) => a.run(lab),
            Command::Inspect(a) => a.run(),
            Command::Firmware(c) => c.run(lab),
            Command::Devices(a) => a.run(),
            Command::Flash(a) => a.run(),
            Command::Verify(a) => a.run(),
            Command::Completions(a) => a.run(Cli::command()),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_argument_has_a_help_line() {
        let undocumented =
            lab_testkit::undocumented(&<super::Cli as clap::CommandFactory>::command());
        assert!(undocumented.is_empty(), "arguments without a help line: {undocumented:?}");
    }
}
