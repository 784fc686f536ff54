//! The `labprov install` command line: arguments, questions on the terminal,
//! and the report. The work is in [`crate::install`].

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lab_model::secrets::AdminIdentity;

use crate::install::{self, Confirm, InstallOptions, Installer, Phase};
use crate::ssh::Target;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov install rydev --address 10.0.0.23                 # asks to confirm the installer's key and the disk plan\n  \
    labprov install luna --address 10.0.0.2 --fingerprint SHA256:... --yes\n  \
    labprov install rydev --address 10.0.0.23 --dry-run      # pin, show the plan the installer computes, change nothing\n  \
    labprov install rydev --address 10.0.0.23 --phases install,reboot,verify   # resume after fixing a failure\n\n\
The target runs the lab's installer ISO (installers/iso.nix): SSH for the admins' keys, labprov on its PATH.\n\
The host needs a lab-held key first: `labprov keys new HOST` and `labprov secrets sync`.")]
pub struct InstallArgs {
    /// The host (as named in hosts/); its disko.nix and key are used.
    pub host: String,
    /// Where the installer answers SSH (and the host, after the reboot).
    #[arg(long)]
    pub address: String,
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// SSH private key for the root login (default: ssh's own).
    #[arg(long, value_name = "PATH")]
    pub ssh_identity: Option<PathBuf>,
    /// The installer's host key fingerprint, from its console (SHA256:...).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Map a spec disk to a device on the target: NAME=PATH (repeatable).
    #[arg(long = "disk", value_name = "NAME=PATH")]
    pub disks: Vec<String>,
    /// Where the target's filesystems are mounted.
    #[arg(long, default_value = "/mnt")]
    pub root: String,
    /// A built system closure instead of building the flake's toplevel.
    #[arg(long, value_name = "STORE_PATH")]
    pub system: Option<PathBuf>,
    /// Which phases to run, comma separated: disk,keys,install,reboot,verify.
    #[arg(long, default_value = "disk,keys,install,reboot,verify")]
    pub phases: String,
    /// Erase disks that hold something else than the spec's table.
    #[arg(long)]
    pub wipe: bool,
    /// Do not ask before writing the disks (the installer's key still needs --fingerprint).
    #[arg(long)]
    pub yes: bool,
    /// Pin the installer and show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the host to answer after the reboot.
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

/// Questions on the terminal; none without one.
struct Terminal;

impl Terminal {
    fn ask(prompt: &str) -> install::Result<String> {
        if !std::io::stdin().is_terminal() {
            return Err(install::Error::NoTerminal);
        }
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

impl Confirm for Terminal {
    fn installer_key(&mut self, i: &Installer) -> install::Result<bool> {
        let answer = Terminal::ask(&format!(
            "The installer at {} presents\n  fingerprint: {}\nCompare with its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`). Type `yes` if they match: ",
            i.address, i.fingerprint
        ))?;
        Ok(answer == "yes")
    }

    fn disks(&mut self, host: &str, plan: &str) -> install::Result<bool> {
        eprintln!("{plan}");
        let answer = Terminal::ask(&format!("This ERASES what the plan above replaces. Type the host name `{host}` to go on: "))?;
        Ok(answer == host)
    }
}

pub fn run_install(lab: Option<&Path>, args: InstallArgs) -> Result<()> {
    let lab = crate::keys::locate(lab)?;
    let phases = Phase::parse_list(&args.phases)?;
    let opts = InstallOptions {
        host: args.host.clone(),
        target: Target { address: args.address.clone(), port: args.port, user: "root".into(), identity: args.ssh_identity },
        fingerprint: args.fingerprint,
        disks: args.disks,
        root: args.root,
        system: args.system,
        phases,
        wipe: args.wipe,
        yes: args.yes,
        dry_run: args.dry_run,
        wait: Duration::from_secs(args.wait),
    };
    // Only the keys phase decrypts, and not in a dry run; nothing else needs
    // the admin key.
    let identity = if opts.phases.contains(&Phase::Keys) && !opts.dry_run { Some(AdminIdentity::from_env()?) } else { None };
    let json = args.json;
    let mut say = |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    };
    let report =
        install::install(&lab, &opts, identity.as_ref(), &mut Terminal, &mut say).with_context(|| format!("install {} at {}", args.host, args.address))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.dry_run {
        for s in &report.steps {
            println!("{}: {}", s.phase.name(), s.what);
        }
        println!("dry run: nothing was changed");
    } else if opts.phases.contains(&Phase::Verify) {
        println!("{} is installed at {} and answers with its own key {}", report.host, report.address, report.host_fingerprint);
    } else {
        let ran: Vec<&str> = opts.phases.iter().map(|p| p.name()).collect();
        println!("{}: {} done; after the reboot check it with `--phases verify`", report.host, ran.join(", "));
    }
    Ok(())
}
