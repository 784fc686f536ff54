//! `labprov install HOST`: arguments, questions on the terminal, and the
//! report. The work is in `provisioner::install`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lab_keys::secrets::AdminIdentity;

use lab_cli::prompt::{Confirm, Declined};
use provisioner::install::{self, InstallOptions, Installer, Phase};
use provisioner::ssh::Target;

use lab_cli::args::JsonArg;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov install rydev --address 10.0.0.23                 # asks to confirm the installer's key and the disk plan\n  \
    labprov install luna --address 10.0.0.2 --fingerprint SHA256:... --yes\n  \
    labprov install luna --address 10.0.0.2 --installer-manifest out/installer-x86_64.manifest.json\n  \
    labprov install rydev --address 10.0.0.23 --dry-run      # pin, show the plan the installer computes, change nothing\n  \
    labprov install rydev --address 10.0.0.23 --phases install,reboot,verify   # resume after fixing a failure\n\n\
The target runs the lab's installer ISO (installers/iso.nix): SSH for the admins' keys, labprov on its PATH.\n\
Its key is trusted with no question when it is the one `labimg build installer-ARCH` recorded:\n\
--installer-manifest, or the lab's out/installer-ARCH.manifest.json for the host's architecture.\n\
The host needs a lab-held key first: `labprov keys new HOST` and `labprov secrets sync`.")]
pub struct InstallArgs {
    /// The host (as named in hosts/); its disko.nix and key are used.
    pub host: String,
    /// Where the installer answers SSH (and the host, after the reboot).
    #[arg(long)]
    pub address: String,
    /// The SSH port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// SSH private key for the root login (default: ssh's own).
    #[arg(long, value_name = "PATH")]
    pub ssh_identity: Option<PathBuf>,
    /// The installer's host key fingerprint, from its console (SHA256:...).
    #[arg(long, conflicts_with = "installer_manifest")]
    pub fingerprint: Option<String>,
    /// The manifest `labimg build installer-ARCH` wrote beside the ISO: its key is trusted
    /// without a question (default: the lab's out/installer-ARCH.manifest.json, if there).
    #[arg(long, value_name = "PATH")]
    pub installer_manifest: Option<PathBuf>,
    /// Map a spec disk to a device on the target: NAME=PATH (repeatable).
    #[arg(long = "disk", value_name = "NAME=PATH", value_parser = crate::disk_mapping)]
    pub disks: Vec<(String, PathBuf)>,
    /// Where the target's filesystems are mounted.
    #[arg(long, default_value = "/mnt")]
    pub root: String,
    /// A built system closure instead of building the flake's toplevel.
    #[arg(long, value_name = "STORE_PATH")]
    pub system: Option<PathBuf>,
    /// Which phases to run, comma separated, in install order whatever the order given.
    #[arg(long, value_delimiter = ',', default_value = "disk,keys,install,reboot,verify", value_parser = parse_phase)]
    pub phases: Vec<Phase>,
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
    #[command(flatten)]
    pub json: JsonArg,
}

fn parse_phase(word: &str) -> Result<Phase, String> {
    Phase::ALL.into_iter().find(|p| p.name() == word.trim()).ok_or_else(|| {
        format!("unknown phase `{word}`; phases are {}", Phase::ALL.map(Phase::name).join(", "))
    })
}

/// Questions on the terminal, through the one prompt; none without one.
struct Terminal;

/// Yes or no from the prompt; only a missing terminal or a failed read is an error.
fn answer(question: Confirm) -> Result<bool, Declined> {
    match question.ask(false) {
        Ok(()) => Ok(true),
        Err(Declined::NotConfirmed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn declined(e: Declined) -> install::Error {
    match e {
        Declined::Io(e) => install::Error::Io(e),
        _ => install::Error::NoTerminal,
    }
}

impl install::Confirm for Terminal {
    fn installer_key(&mut self, i: &Installer) -> install::Result<bool> {
        let context = format!(
            "The installer at {} presents\n  fingerprint: {}\nCompare with its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`).",
            i.address, i.fingerprint
        );
        answer(Confirm {
            context: &context,
            action: "trust the installer's key",
            word: "yes",
            without_terminal: "pass --fingerprint SHA256:...",
        })
        .map_err(declined)
    }

    fn disks(&mut self, host: &str, plan: &str) -> install::Result<bool> {
        let context = format!("{}\nThis ERASES what the plan above replaces.", plan.trim_end());
        answer(Confirm {
            context: &context,
            action: &format!("install {host} on these disks"),
            word: host,
            without_terminal: "pass --yes",
        })
        .map_err(declined)
    }
}

impl InstallArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        run_install(lab, self)
    }
}

fn run_install(lab: Option<&Path>, args: InstallArgs) -> Result<()> {
    let json = args.json.init();
    let lab = lab_facts::Lab::find(lab)?;
    let mut phases = args.phases.clone();
    phases.sort();
    phases.dedup();
    // The installer's key from labimg's manifest: given, or the one the lab's
    // out/ holds for this host's architecture (unless --fingerprint names
    // the key some other way).
    let manifest_path = match (&args.installer_manifest, &args.fingerprint) {
        (Some(path), _) => Some(path.clone()),
        (None, None) => {
            let system = lab.facts()?.host(&args.host)?.system.clone();
            install::InstallerManifest::beside(&lab.root, &system)
        }
        (None, Some(_)) => None,
    };
    let manifest = manifest_path.as_deref().map(install::InstallerManifest::load).transpose()?;
    if let Some(m) = &manifest {
        lab_cli::output::say(&format!(
            "install: the installer must present {} ({})",
            m.key.fingerprint(),
            m.path.display()
        ));
    }
    let opts = InstallOptions {
        host: args.host.clone(),
        target: Target {
            address: args.address.clone(),
            port: args.port,
            user: "root".into(),
            identity: args.ssh_identity,
        },
        fingerprint: args.fingerprint,
        manifest,
        disks: args.disks.iter().map(|(n, p)| format!("{n}={}", p.display())).collect(),
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
    let identity = if opts.phases.contains(&Phase::Keys) && !opts.dry_run {
        Some(AdminIdentity::from_env()?)
    } else {
        None
    };
    let mut say = lab_cli::output::say;
    let report = install::install(&lab, &opts, identity.as_ref(), &mut Terminal, &mut say)
        .with_context(|| format!("install {} at {}", args.host, args.address))?;
    if json {
        lab_cli::output::json(&report)?;
    } else if report.dry_run {
        for s in &report.steps {
            println!("{}: {}", s.phase.name(), s.what);
        }
        println!("dry run: nothing was changed");
    } else if opts.phases.contains(&Phase::Verify) {
        println!(
            "{} is installed at {} and answers with its own key {}",
            report.host, report.address, report.host_fingerprint
        );
    } else {
        let ran: Vec<&str> = opts.phases.iter().map(|p| p.name()).collect();
        println!(
            "{}: {} done; after the reboot check it with `--phases verify`",
            report.host,
            ran.join(", ")
        );
    }
    Ok(())
}
