//! `labprov secrets sync`.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use lab_keys::secrets::{sync, AdminIdentity, LabKeys, SyncOptions, SyncReport};

use lab_cli::args::JsonArg;

/// Regenerate .sops.yaml from the facts and re-encrypt every secrets file.
#[derive(Subcommand)]
pub enum SecretsCommand {
    Sync(SyncArgs),
}

/// Regenerate .sops.yaml from the host facts and re-encrypt every secrets file to its recipients (sops updatekeys).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  labprov secrets sync\n  labprov secrets sync --dry-run --json\n  \
                  SOPS_AGE_KEY_FILE=/run/user/1000/recovery.txt labprov secrets sync   # the recovery key, typed onto a tmpfs\n\
                  Decrypts with an age identity (an admin's or the recovery key): SOPS_AGE_KEY_FILE, SOPS_AGE_KEY,\n\
                  SOPS_AGE_KEY_CMD or ~/.config/sops/age/keys.txt, the first set. OpenPGP admins are encrypted to\n\
                  from hosts/admins/<FINGERPRINT>.asc (needs gpg)."
)]
pub struct SyncArgs {
    /// Run sops on copies and report; replace nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

impl SecretsCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let SecretsCommand::Sync(a) = self;
        let json = a.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let _lock = crate::keys::lab_lock(&lab, a.dry_run, "secrets sync")?;
        let identity = AdminIdentity::from_env()?;
        let mut opts = SyncOptions::new(&identity);
        opts.dry_run = a.dry_run;
        let report = sync(&lab.root, &LabKeys::load(&lab)?, &opts)?;
        lab_cli::output::report(json, &report, render_report)
    }
}

/// What a sync did, one line per file and recipient change.
pub fn render_report(report: &SyncReport) -> String {
    let mut s = String::new();
    let verb = if report.dry_run { " (dry run: not written)" } else { "" };
    if report.config_changed {
        s.push_str(&format!("{}: regenerated{verb}\n", report.config.display()));
    } else {
        s.push_str(&format!("{}: unchanged\n", report.config.display()));
    }
    for f in &report.files {
        if !f.changed {
            s.push_str(&format!("{}: up to date\n", f.path.display()));
            continue;
        }
        s.push_str(&format!(
            "{}: re-encrypted{}{verb}\n",
            f.path.display(),
            if f.data_key_rotated { " with a new data key" } else { "" }
        ));
        for r in &f.added {
            s.push_str(&format!("  + {r}\n"));
        }
        for r in &f.removed {
            s.push_str(&format!("  - {r}\n"));
        }
    }
    if report.files.is_empty() {
        s.push_str("no secrets files yet (hosts/<host>/secrets.sops.yaml, secrets/shared/<name>.sops.yaml)\n");
    }
    s
}
