//! `labprov disk plan|normalize|apply|mount|unmount`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lab_cli::output;
use lab_cli::prompt::Confirm;
use provisioner::disk::{self, Action, ApplyOptions, SpecSource};

use lab_cli::args::JsonArg;

/// Partition, format and mount disks from a disko spec, exactly as disko would.
#[derive(Subcommand)]
pub enum DiskCommand {
    Plan(PlanArgs),
    Normalize(NormalizeArgs),
    Apply(ApplyArgs),
    #[command(about = "Mount a prepared disk set under the root (idempotent).")]
    #[command(
        after_help = "Examples:\n  labprov disk mount rydev --disk main=/dev/vda\n  labprov disk mount --spec luks.json --disk main=/dev/vda --luks-key-file crypted=/root/pass"
    )]
    Mount(DiskSetArgs),
    #[command(
        about = "Unmount what the spec mounts under the root, and detach image loop devices (idempotent)."
    )]
    #[command(after_help = "Example:\n  labprov disk unmount rydev --disk main=disk.img")]
    Unmount(DiskSetArgs),
}

/// Which disko spec: a host's hosts/<host>/disko.nix, or a JSON file.
#[derive(Args)]
struct SpecArgs {
    /// Host whose hosts/<host>/disko.nix to use.
    #[arg(conflicts_with = "spec", required_unless_present = "spec")]
    host: Option<String>,
    /// A disko spec as JSON (raw, or disko's evaluated devices JSON).
    #[arg(long, value_name = "PATH")]
    spec: Option<PathBuf>,
}

/// Where the spec's disks are and where they are mounted.
#[derive(Args)]
struct TargetArgs {
    /// Map a spec disk to a device or image file: NAME=PATH (repeatable).
    #[arg(long = "disk", value_name = "NAME=PATH", value_parser = crate::disk_mapping)]
    disks: Vec<(String, PathBuf)>,
    /// Mount root.
    #[arg(long, default_value = "/mnt", value_name = "DIR")]
    root: PathBuf,
}

/// Where LUKS keys come from when not from the terminal.
#[derive(Args)]
struct LuksKeyArgs {
    /// Key for the LUKS volume named NAME (its `name` in the spec), read
    /// from FILE instead of asking: a key file where the spec names one
    /// (`settings.keyFile`), else the passphrase (trailing newlines dropped).
    /// Never put a passphrase itself on the command line (repeatable).
    #[arg(long = "luks-key-file", value_name = "NAME=FILE", value_parser = crate::disk_mapping)]
    files: Vec<(String, PathBuf)>,
}

impl LuksKeyArgs {
    fn keys(&self) -> disk::LuksKeys {
        disk::LuksKeys { files: self.files.iter().cloned().collect() }
    }
}

/// Print the ordered plan for a host's or a file's disko spec; touches nothing.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  labprov disk plan rydev\n  labprov disk plan --spec disko.json --json"
)]
pub struct PlanArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Mount root.
    #[arg(long, default_value = "/mnt", value_name = "DIR")]
    root: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// Print the spec with every default filled in, as disko's devices JSON.
#[derive(Args)]
#[command(after_help = "Example:\n  labprov disk normalize --spec disko.nix.json")]
pub struct NormalizeArgs {
    #[command(flatten)]
    spec: SpecArgs,
}

/// Partition, format (where nothing is found) and mount under the root.
#[derive(Args)]
#[command(after_help = "Examples:
  labprov disk apply rydev --disk main=/dev/vda               # shows the plan and the disks, asks for the host name
  labprov disk apply --spec disko.json --disk main=disk.img --only partition --yes
  labprov disk apply rydev --disk main=/dev/vda --dry-run --json
  labprov disk apply --spec luks.json --disk main=/dev/vda --luks-key-file crypted=/root/pass

Re-running after a failure or Ctrl-C resumes: what is already there is kept.")]
pub struct ApplyArgs {
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
    /// Show the plan and the disks it would write; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    luks: LuksKeyArgs,
    #[command(flatten)]
    json: JsonArg,
}

/// A spec and where its disks are: what mount and unmount take.
#[derive(Args)]
pub struct DiskSetArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    luks: LuksKeyArgs,
    #[command(flatten)]
    json: JsonArg,
}

impl SpecArgs {
    fn source(&self, lab: Option<&Path>) -> Result<SpecSource> {
        if let Some(path) = &self.spec {
            return Ok(SpecSource::File(path.clone()));
        }
        let host = self.host.clone().context("name a host or pass --spec FILE")?;
        Ok(SpecSource::Host { lab: lab_facts::Lab::find(lab)?, host })
    }

    /// What the operator types to confirm an apply: the host's name, or for
    /// a spec file the device(s) it writes.
    fn confirm_word(&self, opts: &ApplyOptions) -> String {
        match &self.host {
            Some(host) => host.clone(),
            None => {
                opts.disks.values().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
            }
        }
    }
}

impl TargetArgs {
    fn options(&self) -> ApplyOptions {
        ApplyOptions {
            root: self.root.clone(),
            disks: self.disks.iter().cloned().collect(),
            ..Default::default()
        }
    }
}

fn render_actions(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| {
            format!(
                "{} {}{}\n",
                if a.done { "done" } else { "kept" },
                a.what,
                if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) }
            )
        })
        .collect()
}

/// What `apply --dry-run --json` prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyPlan {
    dry_run: bool,
    steps: Vec<lab_disko::plan::Step>,
    targets: Vec<String>,
    wipe: bool,
    only_partition: bool,
}

impl DiskCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            DiskCommand::Plan(a) => {
                let json = a.json.init();
                let (normalized, devices) = disk::load(&a.spec.source(lab)?)?;
                let steps = lab_disko::plan::plan(&devices)?;
                output::report(json, &steps, |steps| {
                    let mut lines = disk::describe_plan(steps, &a.root);
                    lines.extend(lab_disko::hooks_set(&normalized).into_iter().map(|h| {
                        format!("NOT SUPPORTED YET: hook at {h} (apply refuses the spec)")
                    }));
                    lines.iter().map(|l| format!("{l}\n")).collect()
                })
            }
            DiskCommand::Normalize(a) => {
                let (normalized, _) = disk::load(&a.spec.source(lab)?)?;
                output::json(&normalized)
            }
            DiskCommand::Apply(a) => a.run(lab),
            DiskCommand::Mount(a) => {
                let json = a.json.init();
                let (_, devices) = disk::load(&a.spec.source(lab)?)?;
                let actions = disk::mount_with_keys(&devices, &a.target.options(), &a.luks.keys())?;
                output::report(json, &actions, |a| render_actions(a))
            }
            DiskCommand::Unmount(a) => {
                let json = a.json.init();
                let (_, devices) = disk::load(&a.spec.source(lab)?)?;
                output::report(json, &disk::unmount(&devices, &a.target.options())?, |a| {
                    render_actions(a)
                })
            }
        }
    }
}

impl ApplyArgs {
    fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let (normalized, devices) = disk::load(&self.spec.source(lab)?)?;
        disk::check_hooks(&normalized)?;
        let mut opts = self.target.options();
        opts.only_partition = self.only.is_some();
        opts.wipe = self.wipe;
        disk::check_mapping(&devices, &opts)?;
        let steps = lab_disko::plan::plan(&devices)?;
        let targets = disk::describe_targets(&devices, &opts);
        let mut lines = disk::describe_plan(&steps, &opts.root);
        lines.extend(targets.iter().cloned());
        if self.dry_run {
            let plan = ApplyPlan {
                dry_run: true,
                steps,
                targets,
                wipe: opts.wipe,
                only_partition: opts.only_partition,
            };
            return output::report(json, &plan, |_| {
                lines.iter().map(|l| format!("{l}\n")).collect()
            });
        }
        let word = self.spec.confirm_word(&opts);
        let action = format!("write these disks{}", if opts.wipe { " (WIPING them)" } else { "" });
        Confirm {
            context: &lines.join("\n"),
            action: &action,
            word: &word,
            without_terminal: "pass --yes (after checking `labprov disk apply --dry-run`)",
        }
        .ask(self.yes)?;
        let actions = disk::apply_with_keys(&devices, &opts, &self.luks.keys())?;
        output::report(json, &actions, |a| render_actions(a))
    }
}
