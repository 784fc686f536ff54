//! `labprov keys new|show|derive|rotate`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use lab_keys::secrets::{ops, AdminIdentity, KeyInfo, LabKeys, SyncOptions};

use lab_cli::args::JsonArg;

/// Host keys: new, show, derive (ssh-to-age), rotate.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    New(HostArgs),
    Show(ShowArgs),
    Derive(DeriveArgs),
    Rotate(RotateArgs),
}

/// Make a host's ed25519 key: private half age-encrypted to the admins under secrets/, public half and age recipient beside the host.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  labprov keys new nixpi")]
pub struct HostArgs {
    /// The host (as named in hosts/).
    host: String,
    #[command(flatten)]
    json: JsonArg,
}

/// Show a host's public key, fingerprint and age recipient.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  labprov keys show nixpi\n  labprov keys show nixpi --json")]
pub struct ShowArgs {
    /// The host (as named in hosts/).
    host: String,
    #[command(flatten)]
    json: JsonArg,
}

/// Any ed25519 key to age: a public key gives the recipient, a private key the identity (like ssh-to-age).
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519 > ~/.config/sops/age/keys.txt"
)]
pub struct DeriveArgs {
    /// The key file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    ssh_key: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// Replace a host's key, re-encrypt every secrets file; the old key can decrypt nothing.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov keys rotate nixpi\n  labprov keys rotate nixpi --dry-run     # what would change; writes nothing\n\
                        Deploy the new key to the host right after (labprov install / a new image)."
)]
pub struct RotateArgs {
    /// The host (as named in hosts/).
    host: String,
    /// Show what would change; write nothing and keep the old key.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

impl KeysCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            KeysCommand::New(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let keys = LabKeys::load(&lab)?;
                // Only needed to resume an interrupted run.
                let identity = AdminIdentity::from_env().ok();
                let made = ops::new_key(&lab.root, &keys, &a.host, identity.as_ref())?;
                lab_cli::output::report(json, &made, |made| {
                    let mut s = String::new();
                    if !made.created {
                        s.push_str(&format!(
                            "{} already has this key (nothing changed):\n",
                            a.host
                        ));
                    }
                    s.push_str(&render_info(&made.key));
                    if made.created {
                        s.push_str(
                            "next: `labprov secrets sync` so the host can read its secrets\n",
                        );
                    }
                    s
                })
            }
            KeysCommand::Show(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let info = ops::show(&lab.root, &LabKeys::load(&lab)?, &a.host)?;
                lab_cli::output::report(json, &info, render_info)
            }
            KeysCommand::Derive(a) => {
                let json = a.json.init();
                let d = provisioner::keys::derive(&a.ssh_key)?;
                lab_cli::output::report(json, &d, |d| match &d.age_identity {
                    Some(id) => format!("# recipient: {}\n{id}\n", d.age_recipient),
                    None => format!("{}\n", d.age_recipient),
                })
            }
            KeysCommand::Rotate(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let identity = AdminIdentity::from_env()?;
                let mut opts = SyncOptions::new(&identity);
                opts.dry_run = a.dry_run;
                let r = ops::rotate(&lab, &a.host, &opts)?;
                lab_cli::output::report(json, &r, |r| {
                    let mut s = format!(
                        "{}: {} -> {}{}\n",
                        a.host,
                        r.old.fingerprint,
                        r.new.fingerprint,
                        if a.dry_run { " (dry run: nothing written, old key kept)" } else { "" }
                    );
                    s.push_str(&crate::secrets::render_report(&r.sync));
                    if !a.dry_run {
                        s.push_str(&format!(
                            "deploy the new key to {} now: until then it cannot read its secrets\n",
                            a.host
                        ));
                    }
                    s
                })
            }
        }
    }
}

pub fn render_info(info: &KeyInfo) -> String {
    let stored = match &info.encrypted_key {
        Some(p) => format!("{} (age-encrypted to the admins)", p.display()),
        None => "none in the lab (the key lives only on the host)".to_string(),
    };
    format!(
        "host:          {}\npublic key:    {}\nfingerprint:   {}\nage recipient: {}\nprivate key:   {}\n",
        info.host, info.public_key, info.fingerprint, info.age_recipient, stored
    )
}
