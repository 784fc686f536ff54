//! labprov: takes a bare machine's disks to the point where the flake takes
//! over. This file only parses the command line; `provisioner::disk` works.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use provisioner::disk::{self, ApplyOptions, SpecSource};

#[derive(Parser)]
#[command(name = "labprov", version, about = "Provision lab machines: disks from disko specs, installs over SSH, host keys, secrets, enrolment")]
struct Cli {
    /// The lab repository (default: the nearest parent holding hosts/facts.nix, or $LAB_ROOT).
    #[arg(long, global = true, env = "LAB_ROOT")]
    lab: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Partition, format and mount disks from a disko spec, exactly as disko would.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Host keys: new, show, derive (ssh-to-age), rotate.
    #[command(subcommand)]
    Keys(provisioner::cli_keys::KeysCmd),
    /// Regenerate .sops.yaml from the facts and re-encrypt every secrets file.
    #[command(subcommand)]
    Secrets(provisioner::cli_keys::SecretsCmd),
    /// Pin and record a host that made its own key at first boot, then sync.
    Enrol(provisioner::cli_keys::EnrolArgs),
    /// Install a NixOS host on a machine running the lab's installer, over pinned SSH.
    Install(provisioner::cli_install::InstallArgs),
    /// Print shell completions.
    #[command(after_help = "Example:\n  labprov completions bash > /etc/bash_completion.d/labprov")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum DiskCommand {
    /// Print the ordered plan for a host's or a file's disko spec; touches nothing.
    #[command(after_help = "Examples:\n  labprov disk plan rydev\n  labprov disk plan --spec disko.json --json")]
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Mount root.
        #[arg(long, default_value = "/mnt")]
        root: PathBuf,
    },
    /// Print the spec with every default filled in, as disko's devices JSON.
    #[command(after_help = "Example:\n  labprov disk normalize --spec disko.nix.json")]
    Normalize {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Partition, format (where nothing is found) and mount under the root.
    #[command(
        after_help = "Examples:\n  labprov disk apply rydev --disk main=/dev/vda\n  labprov disk apply --spec disko.json --disk main=disk.img --only partition --yes"
    )]
    Apply {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Stop after a stage: `partition` writes only the tables.
        #[arg(long, value_parser = ["partition"])]
        only: Option<String>,
        /// Erase disks that hold something else than the spec's table.
        #[arg(long)]
        wipe: bool,
        /// Show the plan and stop.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long)]
        yes: bool,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mount a prepared disk set under the root (idempotent).
    #[command(after_help = "Example:\n  labprov disk mount rydev --disk main=/dev/vda")]
    Mount {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
    /// Unmount what the spec mounts under the root, and detach image loop devices (idempotent).
    #[command(after_help = "Example:\n  labprov disk unmount rydev --disk main=disk.img")]
    Unmount {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct SpecArgs {
    /// Host whose hosts/<host>/disko.nix to use.
    #[arg(conflicts_with = "spec", required_unless_present = "spec")]
    host: Option<String>,
    /// A disko spec as JSON (raw, or disko's evaluated devices JSON).
    #[arg(long)]
    spec: Option<PathBuf>,
}

#[derive(Args)]
struct TargetArgs {
    /// Map a spec disk to a device or image file: NAME=PATH (repeatable).
    #[arg(long = "disk", value_name = "NAME=PATH")]
    disks: Vec<String>,
    /// Mount root.
    #[arg(long, default_value = "/mnt")]
    root: PathBuf,
}

fn source(cli_lab: Option<&PathBuf>, spec: &SpecArgs) -> Result<SpecSource> {
    if let Some(path) = &spec.spec {
        return Ok(SpecSource::File(path.clone()));
    }
    let host = spec.host.clone().context("name a host or pass --spec FILE")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let lab = lab_model::Lab::locate(cli_lab.map(PathBuf::as_path), &cwd)?;
    Ok(SpecSource::Host { lab, host })
}

fn options(t: &TargetArgs) -> Result<ApplyOptions> {
    let mut opts = ApplyOptions { root: t.root.clone(), ..Default::default() };
    for m in &t.disks {
        let Some((name, path)) = m.split_once('=') else {
            bail!("--disk {m}: expected NAME=PATH, e.g. --disk main=/dev/vda");
        };
        opts.disks.insert(name.to_string(), PathBuf::from(path));
    }
    Ok(opts)
}

fn print_actions(actions: &[disk::Action], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(actions)?);
    } else {
        for a in actions {
            println!("{} {}{}", if a.done { "done" } else { "kept" }, a.what, if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) });
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cmd = match cli.command {
        Command::Disk(cmd) => cmd,
        Command::Keys(c) => return provisioner::cli_keys::run_keys(cli.lab.as_deref(), c),
        Command::Secrets(c) => return provisioner::cli_keys::run_secrets(cli.lab.as_deref(), c),
        Command::Enrol(a) => return provisioner::cli_keys::run_enrol(cli.lab.as_deref(), a),
        Command::Install(a) => return provisioner::cli_install::run_install(cli.lab.as_deref(), a),
        Command::Completions { shell } => {
            // Generated whole, then written: a closed pipe (`| head`) is not an
            // error, a full disk under `> file` is.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "labprov", &mut script);
            let mut out = std::io::stdout().lock();
            match std::io::Write::write_all(&mut out, &script).and_then(|()| std::io::Write::flush(&mut out)) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("write the completions"),
                _ => {}
            }
            return Ok(());
        }
    };
    match cmd {
        DiskCommand::Plan { spec, json, root } => {
            let (normalized, devices) = disk::load(&source(cli.lab.as_ref(), &spec)?)?;
            let steps = lab_model::disko::plan::plan(&devices)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                for l in disk::describe_plan(&steps, &root) {
                    println!("{l}");
                }
                for h in lab_model::disko::hooks_set(&normalized) {
                    println!("NOT SUPPORTED YET: hook at {h} (apply refuses the spec)");
                }
            }
        }
        DiskCommand::Normalize { spec } => {
            let (normalized, _) = disk::load(&source(cli.lab.as_ref(), &spec)?)?;
            println!("{}", serde_json::to_string_pretty(&normalized)?);
        }
        DiskCommand::Apply { spec, target, only, wipe, dry_run, yes, json } => {
            let (normalized, devices) = disk::load(&source(cli.lab.as_ref(), &spec)?)?;
            disk::check_hooks(&normalized)?;
            let mut opts = options(&target)?;
            opts.only_partition = only.is_some();
            opts.wipe = wipe;
            disk::check_mapping(&devices, &opts)?;
            let steps = lab_model::disko::plan::plan(&devices)?;
            let mut lines = disk::describe_plan(&steps, &opts.root);
            lines.extend(disk::describe_targets(&devices, &opts));
            if dry_run {
                for l in &lines {
                    println!("{l}");
                }
                return Ok(());
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("refusing to write disks without confirmation: no terminal to ask on; pass --yes (after checking `labprov disk plan`)");
                }
                for l in &lines {
                    eprintln!("{l}");
                }
                eprint!("Write these disks{}? Type yes: ", if wipe { " (WIPING them)" } else { "" });
                std::io::stderr().flush().ok();
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    bail!("not confirmed; nothing written");
                }
            }
            let actions = disk::apply(&devices, &opts)?;
            print_actions(&actions, json)?;
        }
        DiskCommand::Mount { spec, target, json } => {
            let (_, devices) = disk::load(&source(cli.lab.as_ref(), &spec)?)?;
            let actions = disk::mount(&devices, &options(&target)?)?;
            print_actions(&actions, json)?;
        }
        DiskCommand::Unmount { spec, target, json } => {
            let (_, devices) = disk::load(&source(cli.lab.as_ref(), &spec)?)?;
            let actions = disk::unmount(&devices, &options(&target)?)?;
            print_actions(&actions, json)?;
        }
    }
    Ok(())
}
