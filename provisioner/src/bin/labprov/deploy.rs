//! `labprov deploy`, `labprov status` and `labprov rollback`: arguments, the
//! one question, and the reports. The work is in `provisioner::deploy`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use lab_cli::args::JsonArg;
use lab_cli::prompt::Confirm;
use provisioner::deploy::{self, Access, DeployOptions, HostReport, Report, Status};

#[derive(Args, Debug)]
pub struct AccessArgs {
    /// SSH private key for the root login (default: ssh's own and the agent).
    #[arg(long, value_name = "PATH", global = true)]
    pub ssh_identity: Option<PathBuf>,
    /// The SSH port of every host.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
}

impl AccessArgs {
    pub fn access(&self) -> Access {
        Access { user: "root".into(), port: self.port, identity: self.ssh_identity.clone() }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov deploy luna                     # build, show the diff and the restarts, ask, deploy\n  \
    labprov deploy --all --yes              # every host, one at a time, fewest services first\n  \
    labprov deploy nixpi --dry-run          # build and show the closure diff; change nothing\n  \
    labprov deploy luna --system luna=/nix/store/...-nixos-system-luna   # a closure built elsewhere\n\n\
Each host: the closure is copied, a timer on the host is armed that goes back to the running\n\
generation unless the deploy is confirmed within --confirm-timeout, the new generation is\n\
activated without becoming the boot default (switch-to-configuration test), the host's checks\n\
from the service registry run (SSH with the recorded key, every unit active, DNS and HTTP\n\
answers), and only then it becomes the boot default. A failed activation or check puts the host\n\
back at once and stops the deploy; the remaining hosts are not touched (--keep-going goes on).\n\
Exit codes: 0 deployed or up to date, 1 a host was rolled back or a build failed, 4 the question\n\
was declined (or no terminal and no --yes). --json's `result` per host: deployed, up-to-date,\n\
rolled-back, failed, not-started, planned.")]
pub struct DeployArgs {
    /// The hosts to deploy (as named in hosts/).
    pub hosts: Vec<String>,
    /// Every host with an address and a recorded key (the others are listed as skipped).
    #[arg(long, conflicts_with = "hosts")]
    pub all: bool,
    /// A built system for a host instead of building the flake's: HOST=STORE_PATH (repeatable).
    #[arg(long = "system", value_name = "HOST=PATH", value_parser = system_mapping)]
    pub systems: Vec<(String, PathBuf)>,
    /// Seconds after which a host goes back by itself unless the deploy confirmed it.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub confirm_timeout: u64,
    /// Seconds the health checks may take to pass after an activation.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub check_timeout: u64,
    /// Go on with the next hosts after one was rolled back.
    #[arg(long)]
    pub keep_going: bool,
    /// Do not ask before activating.
    #[arg(long)]
    pub yes: bool,
    /// Build and show the closure diffs; copy and activate nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

/// `HOST=PATH` for `--system`.
fn system_mapping(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((host, path)) if !host.is_empty() && !path.is_empty() => {
            Ok((host.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!(
            "expected HOST=PATH, e.g. --system luna=/nix/store/...-nixos-system-luna, not `{text}`"
        )),
    }
}

impl DeployArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let opts = DeployOptions {
            hosts: self.hosts,
            all: self.all,
            systems: self.systems.into_iter().collect::<BTreeMap<_, _>>(),
            access: self.access.access(),
            confirm_timeout: Duration::from_secs(self.confirm_timeout),
            check_timeout: Duration::from_secs(self.check_timeout),
            yes: self.yes,
            dry_run: self.dry_run,
            keep_going: self.keep_going,
        };
        let yes = opts.yes;
        let mut confirm = |plan: &Report| -> deploy::Result<()> {
            let names: Vec<&str> = plan.hosts.iter().map(|h| h.host.as_str()).collect();
            let context = if json { String::new() } else { render_plan(plan) };
            Confirm {
                context: &context,
                action: &format!("deploy {}", names.join(", ")),
                word: "yes",
                without_terminal: "pass --yes",
            }
            .ask(yes)?;
            Ok(())
        };
        let mut say = lab_cli::output::say;
        match deploy::deploy(&lab, &opts, &mut confirm, &mut say) {
            Ok(report) => {
                lab_cli::output::report(json, &report, |r| {
                    if r.dry_run {
                        format!("{}dry run: nothing was copied or activated\n", render_plan(r))
                    } else {
                        summary(&r.hosts)
                    }
                })?;
                Ok(())
            }
            Err(deploy::Error::RolledBack(report)) => {
                lab_cli::output::report(json, &report, |r| summary(&r.hosts))?;
                Err(deploy::Error::RolledBack(report).into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn short(path: &str) -> &str {
    path.strip_prefix("/nix/store/").unwrap_or(path)
}

fn render_plan(plan: &Report) -> String {
    let mut text = String::from("Deploy plan (one host at a time, in this order):\n");
    for h in &plan.hosts {
        text.push_str(&format!(
            "  {}: {} -> {}\n",
            h.host,
            h.previous.as_deref().map(short).unwrap_or("(nothing running)"),
            short(&h.new)
        ));
        for (title, body) in [("closure diff", &h.diff), ("the switch would", &h.restarts)] {
            if let Some(body) = body.as_deref().filter(|b| !b.is_empty()) {
                text.push_str(&format!("    {title}:\n"));
                for line in body.lines() {
                    text.push_str(&format!("      {line}\n"));
                }
            }
        }
    }
    for s in &plan.skipped {
        text.push_str(&format!("  skipped {}: {}\n", s.host, s.why));
    }
    text
}

fn result_word(h: &HostReport) -> &'static str {
    match h.result {
        deploy::HostResult::Deployed => "deployed",
        deploy::HostResult::UpToDate => "up to date",
        deploy::HostResult::RolledBack => "ROLLED BACK",
        deploy::HostResult::Failed => "FAILED",
        deploy::HostResult::NotStarted => "not started",
        deploy::HostResult::Planned => "planned",
    }
}

fn summary(hosts: &[HostReport]) -> String {
    let width = hosts.iter().map(|h| h.host.len()).max().unwrap_or(4).max(4);
    let mut text = format!("{:width$}  {:11}  generation\n", "host", "result");
    for h in hosts {
        text.push_str(&format!("{:width$}  {:11}  {}\n", h.host, result_word(h), short(&h.new)));
        if !matches!(h.result, deploy::HostResult::Deployed | deploy::HostResult::UpToDate) {
            text.push_str(&format!("{:width$}  {}\n", "", h.message));
            for c in &h.failed_checks {
                text.push_str(&format!("{:width$}  failed check {}: {}\n", "", c.check, c.detail));
            }
        }
    }
    text
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov status                # every host with an address and a recorded key\n  \
    labprov status luna --json\n\n\
Per host: the running generation and whether it is the boot default, the flake commit it was\n\
built from (system.configurationRevision) and whether that is the lab's `main`, the health\n\
checks from the service registry, and the host's record of its last deploy. Read-only.")]
pub struct StatusArgs {
    /// The hosts to show (default: all).
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

impl StatusArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let statuses = deploy::status(&lab, &self.hosts, &self.access.access())?;
        lab_cli::output::report(json, &statuses, |s| render_status(s))?;
        Ok(())
    }
}

fn render_status(all: &[Status]) -> String {
    let mut text = String::new();
    for s in all {
        let Some(current) = &s.current else {
            let why = match (&s.error, s.reachable) {
                (Some(e), _) => e.clone(),
                (None, true) => "answers, but runs no generation (/run/current-system)".into(),
                (None, false) => "unreachable".into(),
            };
            text.push_str(&format!("{}: {why}\n", s.host));
            continue;
        };
        let boot = match (s.is_boot_default, s.generation, &s.boot_default) {
            (Some(true), Some(g), _) => format!("the boot default, generation {g}"),
            (Some(true), None, _) => "the boot default".to_string(),
            (_, g, Some(b)) => format!(
                "NOT the boot default, which is {}{}",
                short(b),
                g.map(|g| format!(" (generation {g})")).unwrap_or_default()
            ),
            _ => "no boot default".to_string(),
        };
        let commit = match (&s.revision, s.matches_main) {
            (Some(r), Some(true)) => format!("commit {} (main)", abbreviated(r)),
            (Some(r), _) => format!("commit {} (not main)", abbreviated(r)),
            (None, _) => "commit unknown".into(),
        };
        let failed: Vec<&deploy::health::Outcome> = s.checks.iter().filter(|c| !c.ok).collect();
        let health = if failed.is_empty() {
            format!("{} checks ok", s.checks.len())
        } else {
            format!("{} of {} checks FAILED", failed.len(), s.checks.len())
        };
        text.push_str(&format!(
            "{}: runs {} ({boot}), {commit}, {health}\n",
            s.host,
            short(current)
        ));
        for c in failed {
            text.push_str(&format!("  failed {}: {}\n", c.check, c.detail));
        }
        for id in &s.pending {
            text.push_str(&format!(
                "  deploy {id} was never confirmed: the host's timer puts the previous generation back\n"
            ));
        }
        if let (Some(time), Some(result)) = (s.last_deploy.get("time"), s.last_deploy.get("result"))
        {
            let when = time.parse::<u64>().map(ago).unwrap_or_else(|_| time.clone());
            let reason = s.last_deploy.get("reason").filter(|r| !r.is_empty());
            text.push_str(&format!(
                "  last deploy {when}: {result}{}\n",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
    }
    text
}

/// A commit's first 12 characters (a revision is the host's text).
fn abbreviated(revision: &str) -> String {
    revision.chars().take(12).collect()
}

/// "3 h ago" from Unix seconds.
fn ago(then: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(then);
    let s = now.saturating_sub(then);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov rollback luna --dry-run   # which generation it would go to\n  labprov rollback luna\n\n\
The host's boot default goes one generation back and is activated (switch-to-configuration\n\
switch; darwin-rebuild --rollback on a Mac); its checks from the service registry are then shown.\n\
A deploy that failed a check has already put its host back: this is for a change that passed\n\
the checks and turned out wrong later."
)]
pub struct RollbackArgs {
    /// The host to put back.
    pub host: String,
    /// Ask nothing.
    #[arg(long)]
    pub yes: bool,
    /// Show which generation it would go to; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

impl RollbackArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let yes = self.yes;
        let mut confirm = |plan: &deploy::RollbackReport| -> deploy::Result<()> {
            let context = if json { String::new() } else { rollback_plan(plan) };
            Confirm {
                context: &context,
                action: &format!("switch {} back to generation {}", plan.host, plan.to_generation),
                word: &plan.host,
                without_terminal: "pass --yes",
            }
            .ask(yes)?;
            Ok(())
        };
        let report = deploy::rollback(
            &lab,
            &self.host,
            &self.access.access(),
            Duration::from_secs(60),
            self.dry_run,
            &mut confirm,
        )?;
        lab_cli::output::report(json, &report, |r| {
            if r.dry_run {
                return format!("{}dry run: nothing was changed\n", rollback_plan(r));
            }
            let mut t =
                format!("{}: now runs {} (generation {})\n", r.host, short(&r.to), r.to_generation);
            for c in &r.checks {
                t.push_str(&format!(
                    "  {} {}: {}\n",
                    if c.ok { "ok  " } else { "FAIL" },
                    c.check,
                    c.detail
                ));
            }
            t
        })?;
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        if failed > 0 {
            anyhow::bail!(
                "{} runs its previous generation, but {failed} of its checks fail (listed above)",
                self.host
            );
        }
        Ok(())
    }
}

fn rollback_plan(r: &deploy::RollbackReport) -> String {
    let from = match (&r.from, r.from_generation) {
        (Some(path), Some(g)) => format!("generation {g} ({})", short(path)),
        (Some(path), None) => short(path).to_string(),
        _ => "(no boot default)".to_string(),
    };
    format!(
        "{}: the boot default goes from {from} to generation {} ({}), activated now\n",
        r.host,
        r.to_generation,
        short(&r.to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy::health::Outcome;
    use deploy::HostResult;

    fn status(current: &str, boot: &str, generation: u64) -> Status {
        Status {
            host: "luna".into(),
            address: Some("192.168.1.10".into()),
            reachable: true,
            error: None,
            current: Some(current.into()),
            generation: Some(generation),
            is_boot_default: Some(current == boot),
            boot_default: Some(boot.into()),
            revision: Some("0123456789abcdef".into()),
            main_revision: Some("0123456789abcdef".into()),
            matches_main: Some(true),
            checks: vec![
                Outcome { check: "ssh".into(), ok: true, detail: "answers".into() },
                Outcome { check: "unit bind.service".into(), ok: false, detail: "failed".into() },
            ],
            healthy: Some(false),
            last_deploy: BTreeMap::new(),
            pending: vec![],
        }
    }

    #[test]
    fn status_names_the_boot_default_failed_checks_and_pending_deploys() {
        let text = render_status(&[status("/nix/store/b-sys", "/nix/store/b-sys", 41)]);
        assert_eq!(
            text,
            "luna: runs b-sys (the boot default, generation 41), commit 0123456789ab (main), 1 of 2 checks FAILED\n  \
             failed unit bind.service: failed\n"
        );
        let mut unconfirmed = status("/nix/store/c-sys", "/nix/store/b-sys", 41);
        unconfirmed.pending = vec!["17-3".into()];
        let text = render_status(&[unconfirmed]);
        assert!(
            text.starts_with(
                "luna: runs c-sys (NOT the boot default, which is b-sys (generation 41))"
            ),
            "{text}"
        );
        assert!(text.contains("  deploy 17-3 was never confirmed"), "{text}");
        // A revision is the host's text: no byte slicing.
        let mut odd = status("/nix/store/b-sys", "/nix/store/b-sys", 1);
        odd.revision = Some("ééééééééééééé".into());
        assert!(render_status(&[odd]).contains("commit éééééééééééé ("));
    }

    #[test]
    fn the_summary_explains_every_host_that_was_not_deployed() {
        let host = |name: &str, result, message: &str| HostReport {
            host: name.into(),
            result,
            previous: None,
            new: format!("/nix/store/x-{name}"),
            diff: None,
            restarts: None,
            failed_checks: vec![],
            message: message.into(),
        };
        let text = summary(&[
            host("nixpi", HostResult::Deployed, "activated, checked, made the boot default"),
            host(
                "luna",
                HostResult::RolledBack,
                "rolled back to /nix/store/a: a health check failed",
            ),
        ]);
        assert_eq!(
            text,
            "host   result       generation\n\
             nixpi  deployed     x-nixpi\n\
             luna   ROLLED BACK  x-luna\n       rolled back to /nix/store/a: a health check failed\n"
        );
    }
}
