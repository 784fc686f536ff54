//! The command line of `labprov keys`, `labprov secrets` and `labprov enrol`:
//! clap types main.rs embeds, and one `run_*` function per command group.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lab_model::secrets::{ops, sync, AdminIdentity, LabKeys, SyncOptions};

use crate::enrol::{self, Candidate, EnrolOptions};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Make a host's ed25519 key: private half age-encrypted to the admins under secrets/, public half and age recipient beside the host.
    #[command(after_help = "Example:\n  labprov keys new nixpi")]
    New {
        host: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a host's public key, fingerprint and age recipient.
    #[command(after_help = "Examples:\n  labprov keys show nixpi\n  labprov keys show nixpi --json")]
    Show {
        host: String,
        #[arg(long)]
        json: bool,
    },
    /// Any ed25519 key to age: a public key gives the recipient, a private key the identity (like ssh-to-age).
    #[command(
        after_help = "Examples:\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519 > ~/.config/sops/age/keys.txt"
    )]
    Derive {
        /// The key file (`-` for stdin).
        #[arg(long, value_name = "PATH")]
        ssh_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Replace a host's key, re-encrypt every secrets file; the old key can decrypt nothing.
    #[command(after_help = "Example:\n  labprov keys rotate nixpi\nDeploy the new key to the host right after (labprov install / a new image).")]
    Rotate {
        host: String,
        /// Show what would change; keep the old key.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Regenerate .sops.yaml from the host facts and re-encrypt every secrets file to its recipients (sops updatekeys).
    #[command(after_help = "Examples:\n  labprov secrets sync\n  labprov secrets sync --dry-run --json")]
    Sync {
        /// Run sops on copies and report; replace nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov enrol nixpi --address 192.168.1.40\n  labprov enrol nixpi --address 192.168.1.40 --fingerprint SHA256:...\n  labprov enrol nixpi --address 192.168.1.40 --report /media/FIRMWARE/enrolment.txt"
)]
pub struct EnrolArgs {
    /// The host (as named in hosts/).
    pub host: String,
    /// Where the host answers SSH.
    #[arg(long)]
    pub address: String,
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Login user for the pinned check.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// SSH private key for the login (default: ssh's own).
    #[arg(long, value_name = "PATH")]
    pub ssh_identity: Option<PathBuf>,
    /// The fingerprint shown on the host's console (SHA256:...).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// enrolment.txt from the host's firmware partition.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// The host key file read on the host.
    #[arg(long, hide = true, default_value = "/etc/ssh/ssh_host_ed25519_key.pub")]
    pub remote_key: String,
    /// Replace a different key already recorded for the host.
    #[arg(long)]
    pub replace: bool,
    /// Verify and show; record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn run_keys(lab: Option<&Path>, cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::New { host, json } => {
            let lab = crate::keys::locate(lab)?;
            let keys = LabKeys::load(&lab)?;
            // Only needed to resume an interrupted run.
            let identity = AdminIdentity::from_env().ok();
            let made = ops::new_key(&lab.root, &keys, &host, identity.as_ref())?;
            if json {
                return print_json(&made);
            }
            if !made.created {
                println!("{host} already has this key (nothing changed):");
            }
            print!("{}", crate::keys::render_info(&made.key));
            if made.created {
                println!("next: `labprov secrets sync` so the host can read its secrets");
            }
        }
        KeysCmd::Show { host, json } => {
            let lab = crate::keys::locate(lab)?;
            let info = ops::show(&lab.root, &LabKeys::load(&lab)?, &host)?;
            if json {
                return print_json(&info);
            }
            print!("{}", crate::keys::render_info(&info));
        }
        KeysCmd::Derive { ssh_key, json } => {
            let d = crate::keys::derive(&ssh_key)?;
            if json {
                return print_json(&d);
            }
            match &d.age_identity {
                Some(id) => println!("# recipient: {}\n{id}", d.age_recipient),
                None => println!("{}", d.age_recipient),
            }
        }
        KeysCmd::Rotate { host, dry_run, json } => {
            let lab = crate::keys::locate(lab)?;
            let identity = AdminIdentity::from_env()?;
            let mut opts = SyncOptions::new(&identity);
            opts.dry_run = dry_run;
            let r = ops::rotate(&lab, &host, &opts)?;
            if json {
                return print_json(&r);
            }
            println!("{host}: {} -> {}{}", r.old.fingerprint, r.new.fingerprint, if dry_run { " (dry run: old key kept)" } else { "" });
            print!("{}", crate::secrets::render_report(&r.sync));
            if !dry_run {
                println!("deploy the new key to {host} now: until then it cannot read its secrets");
            }
        }
    }
    Ok(())
}

pub fn run_secrets(lab: Option<&Path>, cmd: SecretsCmd) -> Result<()> {
    match cmd {
        SecretsCmd::Sync { dry_run, json } => {
            let lab = crate::keys::locate(lab)?;
            let identity = AdminIdentity::from_env()?;
            let mut opts = SyncOptions::new(&identity);
            opts.dry_run = dry_run;
            let report = sync(&lab.root, &LabKeys::load(&lab)?, &opts)?;
            if json {
                return print_json(&report);
            }
            print!("{}", crate::secrets::render_report(&report));
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses without one.
fn confirm_on_terminal(c: &Candidate) -> enrol::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(enrol::Error::NoTerminal);
    }
    eprint!(
        "{} at {} presents\n  fingerprint:   {}\n  age recipient: {}\nCompare with the host's console (or enrolment.txt). Type `yes` if they match: ",
        c.host, c.address, c.fingerprint, c.age_recipient
    );
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

pub fn run_enrol(lab: Option<&Path>, args: EnrolArgs) -> Result<()> {
    let lab = crate::keys::locate(lab)?;
    let identity = AdminIdentity::from_env()?;
    let opts = EnrolOptions {
        host: args.host.clone(),
        address: args.address.clone(),
        port: args.port,
        user: args.user,
        ssh_identity: args.ssh_identity,
        fingerprint: args.fingerprint,
        report: args.report,
        remote_key: args.remote_key,
        replace: args.replace,
        dry_run: args.dry_run,
    };
    let done = enrol::enrol(&lab, &opts, &identity, &mut confirm_on_terminal).with_context(|| format!("enrol {} at {}", args.host, args.address))?;
    if args.json {
        return print_json(&done);
    }
    println!("{}: {} ({})", done.candidate.host, done.candidate.fingerprint, done.candidate.age_recipient);
    match done.recorded {
        None => println!("dry run: verified over pinned SSH; nothing recorded"),
        Some(r) => println!("key {}", serde_json::to_value(r)?.as_str().unwrap_or_default()),
    }
    if let Some(report) = &done.sync {
        print!("{}", crate::secrets::render_report(report));
    }
    Ok(())
}
