//! `labprov`: takes a bare machine to the point where the flake takes over.
//! This file only composes the commands; each command group owns its
//! arguments and its run (beside it), and the work is in the `provisioner`
//! library and the shared lab crates.

mod backup;
mod deploy;
mod disk;
mod enrol;
mod install;
mod keys;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use lab_cli::exit::link;

#[derive(Parser)]
#[command(
    name = "labprov",
    version,
    about = "Provision lab machines: disks from disko specs, installs over SSH, host keys, secrets, enrolment"
)]
#[command(
    after_help = "Exit codes: 0 done, 1 failed, 2 usage, 3 verification mismatch (a host answered with another key), \
                        4 refused by a safety check or not confirmed, 130 interrupted."
)]
pub struct Cli {
    /// The lab repository (default: the nearest parent holding hosts/facts.nix, or $LAB_ROOT).
    #[arg(long, global = true, env = "LAB_ROOT", value_name = "DIR")]
    lab: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    Enrol(enrol::EnrolArgs),
    Install(install::InstallArgs),
    /// Deploy hosts: build, copy, activate, check from the service registry, roll back by itself
    Deploy(deploy::DeployArgs),
    /// Each host's running generation, commit, health checks and last deploy
    Status(deploy::StatusArgs),
    /// Put a host back on its previous generation
    Rollback(deploy::RollbackArgs),
    /// A host's backups by hand: run one now, restore-test, status
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Print shell completions
    #[command(
        after_help = "Example:\n  labprov completions bash > /etc/bash_completion.d/labprov"
    )]
    Completions(lab_cli::args::ShellArg),
}

fn main() -> ExitCode {
    let links = [
        link::<provisioner::disk::DiskError>,
        link::<provisioner::install::Error>,
        link::<provisioner::enrol::Error>,
        link::<provisioner::deploy::Error>,
        link::<provisioner::backup::Error>,
        link::<provisioner::keypush::Error>,
    ];
    lab_cli::exit::main("labprov", &links, || {
        let cli = Cli::parse();
        let lab = cli.lab.as_deref();
        match cli.command {
            Command::Disk(c) => c.run(lab),
            Command::Keys(c) => c.run(lab),
            Command::Secrets(c) => c.run(lab),
            Command::Enrol(a) => a.run(lab),
            Command::Install(a) => a.run(lab),
            Command::Deploy(a) => a.run(lab),
            Command::Status(a) => a.run(lab),
            Command::Rollback(a) => a.run(lab),
            Command::Backup(c) => c.run(lab),
            Command::Completions(a) => a.run(Cli::command()),
        }
    })
}

/// `NAME=PATH` for `--disk`.
pub fn disk_mapping(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, e.g. --disk main=/dev/vda, not `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    // Moved from tests/enrol_sshd.rs when the CLI types moved into the binary.
    #[test]
    fn cli_types_parse_the_documented_commands() {
        for line in [
            "t keys new nixpi",
            "t keys show nixpi --json",
            "t keys derive --ssh-key /tmp/id.pub",
            "t keys rotate nixpi --dry-run",
            "t secrets sync",
            "t enrol nixpi --address 192.168.1.40",
            "t enrol nixpi --address 192.168.1.40 --fingerprint SHA256:x --port 2222",
            "t install rydev --address 10.0.0.23 --phases verify,disk --disk main=/dev/vda",
            "t disk apply --spec s.json --disk main=disk.img --only partition --yes",
            "t deploy luna nixpi --yes --confirm-timeout 30",
            "t deploy --all --dry-run --json",
            "t deploy luna --system luna=/nix/store/x-sys --ssh-identity /tmp/id",
            "t status --json",
            "t status luna",
            "t rollback luna --yes",
            "t rollback luna --dry-run --json",
        ] {
            Cli::try_parse_from(line.split(' ')).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert!(Cli::try_parse_from("t enrol nixpi".split(' ')).is_err(), "--address is required");
        for bad in [
            "t install rydev --address a --phases disk,kexec",
            "t disk apply rydev --disk main",
            "t disk apply rydev --only format",
            "t deploy luna --all",
            "t deploy luna --system luna",
            "t rollback",
        ] {
            assert!(Cli::try_parse_from(bad.split(' ')).is_err(), "{bad} must be a usage error");
        }
    }

    #[test]
    fn every_argument_has_a_help_line() {
        let undocumented =
            lab_testkit::undocumented(&<super::Cli as clap::CommandFactory>::command());
        assert!(undocumented.is_empty(), "arguments without a help line: {undocumented:?}");
    }
}
