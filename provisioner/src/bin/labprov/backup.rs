//! `labprov backup run|restore-test|status HOST [REPOSITORY...]`.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use provisioner::backup::{self, Action};

use crate::deploy::AccessArgs;

/// A host's backups by hand: back up now, restore-test, or show their state.
#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    Run(BackupArgs),
    RestoreTest(BackupArgs),
    Status(BackupArgs),
}

/// Run the host's backup, restore test or status (`lab-backup` on the host, over pinned SSH).
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov backup restore-test luna    # each repository: latest snapshot into scratch, checked\n  \
    labprov backup run luna local       # back up to the local repository now\n  \
    labprov backup status luna          # last good backup and restore test per repository\n\n\
The host runs the units its timers start (restic-backups-REPOSITORY, lab-restore-test-REPOSITORY),\n\
with their secrets, and prints that run's journal. Exit 1 when a backup or a restore test failed.\n\
docs/operations.md, \"Backups\", says what each line means and how to restore.")]
pub struct BackupArgs {
    /// The host (as named in hosts/).
    host: String,
    /// Its repositories to use (default: all of them, as hosts/<host>/facts.nix names them).
    repositories: Vec<String>,
    #[command(flatten)]
    access: AccessArgs,
}

impl BackupCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let (action, a) = match self {
            BackupCommand::Run(a) => (Action::Run, a),
            BackupCommand::RestoreTest(a) => (Action::RestoreTest, a),
            BackupCommand::Status(a) => (Action::Status, a),
        };
        let lab = lab_facts::Lab::find(lab)?;
        backup::run(&lab, &a.host, action, &a.repositories, &a.access.access())?;
        Ok(())
    }
}
