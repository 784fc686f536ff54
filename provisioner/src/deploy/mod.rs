//! `labprov deploy`, `labprov status` and `labprov rollback`: the lab's
//! hosts brought to a new generation safely (docs/decisions/0007).
//!
//! A deploy builds every selected host first (one `nix build` per host, all
//! in parallel, on Nix's remote builders where configured; nothing is
//! activated when one fails), copies each closure with `nix copy` over the pinned SSH
//! connection, shows the closure diff and the units the switch would restart,
//! asks once, and then takes the hosts ONE AT A TIME in the registry's order:
//! arm the host's self-rollback timer, activate without moving the boot
//! default, run the host's health checks from the service registry, and only
//! then make the generation the boot default. A failed activation or check
//! puts the host back on the generation it ran before and stops the deploy
//! (unless `--keep-going`): the remaining hosts keep what they run.

pub mod health;
pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_cli::exit::{Class, Classify};
use lab_facts::{HostClass, Lab};
use lab_keys::PublicHostKey;
use serde::Serialize;

use crate::ssh::{Pinned, Target};
pub(crate) use health::nix_path;
use health::{Entry, Outcome};
use remote::{Probe, Remote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Facts(#[from] lab_facts::Error),
    #[error("name hosts to deploy, or pass --all")]
    NoHosts,
    #[error("no host can be deployed: every one was skipped (the reasons are above)")]
    AllSkipped,
    #[error("--confirm-timeout ({confirm} s) must be longer than --check-timeout ({check} s): the checks run after the activation, before the confirm")]
    Timeouts { confirm: u64, check: u64 },
    #[error("{host} cannot be deployed: {why}")]
    NotDeployable { host: String, why: String },
    #[error("--system {host}=...: {host} is not among the hosts to deploy")]
    StraySystem { host: String },
    #[error("--system {host}={path}: not a system in this machine's Nix store; build it first or drop --system to build the flake's")]
    NoSystem { host: String, path: String },
    #[error("the service registry's health checks: {0}")]
    Registry(String),
    #[error("building failed; nothing was copied or activated anywhere:\n{0}")]
    Build(String),
    #[error("{host}: {why}; nothing was activated anywhere")]
    Unreachable { host: String, why: String },
    /// The host answers but must not be deployed now.
    #[error("{host}: {why}; nothing was activated anywhere")]
    NotReady { host: String, why: String },
    #[error("{host}: the rollback failed: {why}; the host may be between generations: `labprov status {host}`, or pick a generation in its boot menu")]
    Rollback { host: String, why: String },
    #[error("copying to {host} failed; nothing was activated anywhere:\n{why}")]
    Copy { host: String, why: String },
    #[error(transparent)]
    Declined(#[from] lab_cli::prompt::Declined),
    #[error("{}", rolled_back(&.0.hosts))]
    RolledBack(Report),
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
    #[error("reading a host key: {0}")]
    Key(String),
}

fn rolled_back(hosts: &[HostReport]) -> String {
    let mut text = String::new();
    for h in hosts
        .iter()
        .filter(|h| h.result == HostResult::RolledBack || h.result == HostResult::Failed)
    {
        text.push_str(&format!("{}: {}\n", h.host, h.message));
        for c in h.failed_checks.iter() {
            text.push_str(&format!("  failed: {}: {}\n", c.check, c.detail));
        }
    }
    let stopped: Vec<&str> = hosts
        .iter()
        .filter(|h| h.result == HostResult::NotStarted)
        .map(|h| h.host.as_str())
        .collect();
    if !stopped.is_empty() {
        text.push_str(&format!(
            "not started: {} (they run what they ran; fix the cause and deploy again, or pass --keep-going)\n",
            stopped.join(", ")
        ));
    }
    text.trim_end().to_string()
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::NoHosts
            | Error::StraySystem { .. }
            | Error::NoSystem { .. }
            | Error::Timeouts { .. } => Class::Usage,
            Error::Facts(lab_facts::Error::UnknownHost { .. }) => Class::Usage,
            Error::Declined(e) => e.class(),
            Error::Tool(e) => e.class(),
            _ => Class::Failure,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach the hosts, shared by deploy, status and rollback.
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub port: u16,
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub hosts: Vec<String>,
    pub all: bool,
    /// Built toplevels to deploy instead of building the flake's.
    pub systems: BTreeMap<String, PathBuf>,
    pub access: Access,
    /// The host goes back by itself unless confirmed within this.
    pub confirm_timeout: Duration,
    /// How long the health checks may take to pass after activation.
    pub check_timeout: Duration,
    pub yes: bool,
    pub dry_run: bool,
    pub keep_going: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostResult {
    /// Activated, checked, made the boot default.
    Deployed,
    /// Already running the generation and it is the boot default.
    UpToDate,
    /// Activated and put back: a check or the activation failed.
    RolledBack,
    /// Could not be put back for sure (see the message).
    Failed,
    /// Not reached: an earlier host was rolled back.
    NotStarted,
    /// A dry run: what would be deployed.
    Planned,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub result: HostResult,
    pub previous: Option<String>,
    pub new: String,
    /// `nix store diff-closures` of the running and the new generation.
    pub diff: Option<String>,
    /// What the switch says it would restart (`dry-activate`).
    pub restarts: Option<String>,
    pub failed_checks: Vec<Outcome>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub hosts: Vec<HostReport>,
    /// Hosts `--all` left out, and why.
    pub skipped: Vec<Skipped>,
}

/// A host `--all` (or `status`) leaves out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub host: String,
    pub why: String,
}

/// A host as the deploy sees it.
struct Host {
    name: String,
    class: HostClass,
    remote: Remote,
    address: Option<String>,
    checks: Vec<Entry>,
}

/// The hosts to deploy in the fleet's order, and those `--all` left out.
fn select(
    lab: &Lab,
    names: &[String],
    all: bool,
    access: &Access,
) -> Result<(Vec<Host>, Vec<Skipped>)> {
    let facts = lab.facts()?;
    let checks = health::load(&lab.root).map_err(Error::Registry)?;
    let mut skipped = Vec::new();
    let wanted: Vec<String> = if all {
        facts.hosts.keys().cloned().collect()
    } else if names.is_empty() {
        return Err(Error::NoHosts);
    } else {
        let mut seen = std::collections::BTreeSet::new();
        names.iter().filter(|n| seen.insert(n.as_str())).cloned().collect()
    };
    let mut hosts = Vec::new();
    for name in wanted {
        let h = facts.host(&name)?;
        let why = match (&h.address, &h.ssh_host_key, h.class) {
            // The Mac the deploy runs on: no SSH, sudo here.
            (None, _, HostClass::Darwin) if cfg!(target_os = "macos") => None,
            (None, _, HostClass::Darwin) => {
                Some("a Mac without an address is deployed from itself (run labprov there)".to_string())
            }
            (None, _, _) => Some("it has no address in its facts.nix".to_string()),
            (Some(_), None, _) => Some(format!(
                "it has no recorded SSH host key (hosts/{name}/ssh_host_ed25519_key.pub): `labprov enrol {name}` or `labprov keys new {name}`"
            )),
            _ => None,
        };
        if let Some(why) = why {
            if all {
                skipped.push(Skipped { host: name, why });
                continue;
            }
            return Err(Error::NotDeployable { host: name, why });
        }
        let remote = match (&h.address, &h.ssh_host_key) {
            (Some(address), Some(key)) => {
                let key =
                    PublicHostKey::parse(key).map_err(|e| Error::Key(format!("{name}: {e}")))?;
                let target = Target {
                    address: address.clone(),
                    port: access.port,
                    user: access.user.clone(),
                    identity: access.identity.clone(),
                };
                Remote::Ssh(
                    Pinned::new(&target, &format!("labprov-host-{name}"), &key)
                        .map_err(|e| Error::Key(e.to_string()))?,
                )
            }
            _ => Remote::Local,
        };
        hosts.push(Host {
            checks: checks.get(&name).cloned().unwrap_or_default(),
            name,
            class: h.class,
            remote,
            address: h.address.clone(),
        });
    }
    hosts.sort_by_key(fleet_order);
    Ok((hosts, skipped))
}

/// The fleet's order: hosts with fewer of the registry's services first, so
/// a bad change shows on the smallest host before it reaches the one the
/// lab depends on most; ties by name. Hosts are only ever activated one at
/// a time, so two hosts' services (the two resolvers) never restart together.
fn fleet_order(h: &Host) -> (usize, String) {
    (h.checks.len(), h.name.clone())
}

/// The flake attribute of a host's system.
fn attribute(name: &str, class: HostClass) -> String {
    match class {
        HostClass::Nixos => format!("nixosConfigurations.{name}.config.system.build.toplevel"),
        HostClass::Darwin => format!("darwinConfigurations.{name}.system"),
    }
}

/// Builds every host that has no `--system`, all at once: one `nix build`
/// per host, run in parallel (Nix shares the work they have in common and
/// uses its remote builders). Each host has its own build because
/// `nix build --json` lists results sorted by store path, not in the order
/// asked. Every failure is reported, and then nothing goes on.
fn build(
    lab: &Lab,
    hosts: &[Host],
    given: &BTreeMap<String, PathBuf>,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let to_build: Vec<&Host> = hosts.iter().filter(|h| !given.contains_key(&h.name)).collect();
    if !to_build.is_empty() {
        let names: Vec<&str> = to_build.iter().map(|h| h.name.as_str()).collect();
        say(&format!("deploy: building {} (in parallel)", names.join(", ")));
    }
    let results: Vec<(String, std::result::Result<PathBuf, String>)> =
        std::thread::scope(|scope| {
            let jobs: Vec<_> = to_build
                .iter()
                .map(|h| {
                    let installable =
                        format!("{}#{}", lab.root.display(), attribute(&h.name, h.class));
                    (h.name.clone(), scope.spawn(move || build_one(&installable)))
                })
                .collect();
            jobs.into_iter()
                .map(|(name, job)| {
                    (name, job.join().unwrap_or_else(|_| Err("the build thread panicked".into())))
                })
                .collect()
        });
    let mut built = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok(path) => {
                built.insert(name, path);
            }
            Err(why) => failures.push(format!("{name}:\n{why}")),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Build(failures.join("\n")));
    }
    Ok(hosts
        .iter()
        .map(|h| {
            given
                .get(&h.name)
                .or_else(|| built.get(&h.name))
                .cloned()
                .expect("every host is built or given")
        })
        .collect())
}

fn build_one(installable: &str) -> std::result::Result<PathBuf, String> {
    let out = lab_cli::Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--no-link",
            "--json",
        ])
        .arg(installable)
        .run()
        .map_err(|e| match e {
            lab_cli::ToolError::Failed { stderr, .. } => stderr.trim().to_string(),
            other => other.to_string(),
        })?;
    #[derive(serde::Deserialize)]
    struct Built {
        outputs: BTreeMap<String, PathBuf>,
    }
    let results: Vec<Built> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("nix build printed no JSON I can read: {e}"))?;
    match results.as_slice() {
        [one] => one
            .outputs
            .get("out")
            .cloned()
            .ok_or_else(|| "the build has no `out` output".to_string()),
        _ => Err(format!("nix build gave {} results for one installable", results.len())),
    }
}

/// Whether a store path is in this machine's store.
fn local(path: Option<&str>) -> bool {
    path.is_some_and(|p| Path::new(p).exists())
}

/// `nix store diff-closures` here, when the running generation is in this
/// machine's store (it is when this machine built the last deploy);
/// otherwise the host diffs once the new closure is there.
fn diff(previous: Option<&str>, new: &Path) -> Option<String> {
    let previous = previous?;
    if !local(Some(previous)) {
        return Some(format!(
            "(the running {previous} is not in this machine's store: the host shows the diff after the copy)"
        ));
    }
    let out = lab_cli::Cmd::new("nix")
        .args(["--extra-experimental-features", "nix-command", "store", "diff-closures", previous])
        .arg(new)
        .probe()
        .ok()?;
    Some(closure_diff_text(&out.text()))
}

fn closure_diff_text(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        "(no package changes)".into()
    } else {
        text.to_string()
    }
}

/// `nix copy` over the pinned connection; substitutes on the host first.
fn copy(remote: &Remote, new: &Path) -> std::result::Result<(), String> {
    let Some(pinned) = remote.pinned() else { return Ok(()) };
    let sshopts = pinned.nix_sshopts()?;
    lab_cli::Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--substitute-on-destination",
            "--to",
            &format!("ssh://{}?compress=true", pinned.destination()),
        ])
        .arg(new)
        .env("NIX_SSHOPTS", sshopts)
        .label(format!("copying {}", new.display()))
        .stream()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A deploy's id: unit names and files on the host carry it.
fn deploy_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}-{}", std::process::id())
}

pub fn deploy(
    lab: &Lab,
    opts: &DeployOptions,
    confirm: &mut dyn FnMut(&Report) -> Result<()>,
    say: &mut dyn FnMut(&str),
) -> Result<Report> {
    let (hosts, mut skipped) = select(lab, &opts.hosts, opts.all, &opts.access)?;
    for s in &skipped {
        say(&format!("deploy: skipping {}: {}", s.host, s.why));
    }
    if let Some(stray) = opts.systems.keys().find(|n| !hosts.iter().any(|h| &&h.name == n)) {
        return Err(Error::StraySystem { host: stray.clone() });
    }
    // A store path, resolved (`./result` is a link to one): what the host
    // is compared with and copies is the path itself.
    let mut systems = BTreeMap::new();
    for (host, path) in &opts.systems {
        let resolved =
            path.canonicalize().ok().filter(|p| p.starts_with("/nix/store/") && p.is_dir());
        let Some(resolved) = resolved else {
            return Err(Error::NoSystem { host: host.clone(), path: path.display().to_string() });
        };
        systems.insert(host.clone(), resolved);
    }
    if opts.confirm_timeout <= opts.check_timeout {
        return Err(Error::Timeouts {
            confirm: opts.confirm_timeout.as_secs(),
            check: opts.check_timeout.as_secs(),
        });
    }

    // What runs now, from every host before anything changes anywhere (and
    // before the long build). `--all` leaves out a host that does not
    // answer (a machine that is off); a host named must answer.
    let mut probes = Vec::new();
    let mut answering = Vec::new();
    for h in hosts {
        let p = match h.remote.probe() {
            Ok(p) => p,
            Err(why) if opts.all => {
                say(&format!("deploy: skipping {}: it does not answer: {why}", h.name));
                skipped.push(Skipped {
                    host: h.name.clone(),
                    why: format!("it does not answer: {why}"),
                });
                continue;
            }
            Err(why) => {
                return Err(Error::Unreachable {
                    host: h.name.clone(),
                    why: format!("cannot ask it what it runs: {why}"),
                })
            }
        };
        if h.class == HostClass::Nixos && p.kind != "nixos" {
            return Err(Error::NotReady {
                host: h.name.clone(),
                why: format!("it does not look like NixOS (the agent says `{}`)", p.kind),
            });
        }
        if let Some(id) = p.pending.first() {
            return Err(Error::NotReady {
                host: h.name.clone(),
                why: format!(
                    "an earlier deploy ({id}) was never confirmed and its timer will put the host back; \
                     deploy again once it has (`labprov status {}` shows it)",
                    h.name
                ),
            });
        }
        probes.push(p);
        answering.push(h);
    }
    let hosts = answering;
    if hosts.is_empty() {
        return Err(if skipped.is_empty() { Error::NoHosts } else { Error::AllSkipped });
    }
    let news = build(lab, &hosts, &systems, say)?;
    let mut reports: Vec<HostReport> = hosts
        .iter()
        .zip(&news)
        .zip(&probes)
        .map(|((h, new), p)| HostReport {
            host: h.name.clone(),
            result: HostResult::Planned,
            previous: p.current.clone(),
            new: new.display().to_string(),
            diff: diff(p.current.as_deref(), new),
            restarts: None,
            failed_checks: vec![],
            message: String::new(),
        })
        .collect();
    if !opts.dry_run {
        // Copies write only to the hosts' stores, activate nothing, and let
        // the switch say what it would restart before the question.
        for (i, h) in hosts.iter().enumerate() {
            let (new, r) = (&news[i], &mut reports[i]);
            if up_to_date(&probes[i], new) {
                continue;
            }
            copy(&h.remote, new).map_err(|why| Error::Copy { host: h.name.clone(), why })?;
            let new = new.display().to_string();
            // Rooted on the host until it reboots: a collection while the
            // question waits must not take it.
            let kept = h.remote.ask("keep", &[&new]).map_err(|e| e.to_string()).and_then(|o| {
                if o.success() {
                    Ok(())
                } else {
                    Err(last_line(&o.stderr))
                }
            });
            kept.map_err(|why| Error::Copy {
                host: h.name.clone(),
                why: format!("rooting {new}: {why}"),
            })?;
            // Both closures are on the host now: diff there when this
            // machine lacks the running one.
            if let (Some(previous), false) =
                (probes[i].current.as_deref(), local(probes[i].current.as_deref()))
            {
                if let Ok(out) = h.remote.ask("diff", &[previous, &new]) {
                    r.diff = Some(closure_diff_text(&out.text()));
                }
            }
            if let Ok(out) = h.remote.ask("dry-activate", &[&new]) {
                let text = format!("{}{}", out.text(), out.stderr);
                r.restarts = Some(text.trim().to_string());
            }
        }
    }
    let plan = Report { dry_run: opts.dry_run, hosts: reports.clone(), skipped: skipped.clone() };
    if opts.dry_run {
        return Ok(plan);
    }
    confirm(&plan)?;

    let mut stop = false;
    for (i, h) in hosts.iter().enumerate() {
        let r = &mut reports[i];
        if stop {
            r.result = HostResult::NotStarted;
            r.message = "not started: an earlier host was rolled back".into();
            continue;
        }
        let new = &news[i];
        if up_to_date(&probes[i], new) {
            r.result = HostResult::UpToDate;
            r.message = "already runs this generation as its boot default".into();
            say(&format!("{}: up to date", h.name));
            continue;
        }
        deploy_one(h, &probes[i], new, opts, r, say);
        // A host that could not be put back for sure stops the deploy even
        // with --keep-going: its services may be down, and the next host's
        // could be the others.
        if r.result == HostResult::Failed
            || (r.result == HostResult::RolledBack && !opts.keep_going)
        {
            stop = true;
        }
    }
    let report = Report { dry_run: false, hosts: reports, skipped };
    if report.hosts.iter().any(|r| matches!(r.result, HostResult::RolledBack | HostResult::Failed))
    {
        return Err(Error::RolledBack(report));
    }
    Ok(report)
}

fn up_to_date(p: &Probe, new: &Path) -> bool {
    let new = new.display().to_string();
    p.current.as_deref() == Some(new.as_str()) && p.profile.as_deref() == Some(new.as_str())
}

/// One host: arm, activate, check, then confirm or restore.
fn deploy_one(
    h: &Host,
    probe: &Probe,
    new: &Path,
    opts: &DeployOptions,
    r: &mut HostReport,
    say: &mut dyn FnMut(&str),
) {
    let id = deploy_id();
    let new_s = new.display().to_string();
    let Some(old) = probe.current.clone() else {
        r.result = HostResult::Failed;
        r.message = "it reports no running generation (/run/current-system); deploy it with `labprov install` first".into();
        return;
    };
    let seconds = opts.confirm_timeout.as_secs().max(1).to_string();
    say(&format!("{}: arming the self-rollback ({seconds} s), then activating {new_s}", h.name));
    match h.remote.act(&id, "arm", &[&id, &old, &seconds], &format!("{}: arming", h.name)) {
        Ok(o) if o.success() => {}
        Ok(o) => {
            r.result = HostResult::Failed;
            r.message = format!(
                "could not arm the self-rollback, so nothing was activated: {}",
                last_line(&o.stderr)
            );
            return;
        }
        Err(e) => {
            r.result = HostResult::Failed;
            r.message = format!("could not arm the self-rollback, so nothing was activated: {e}");
            return;
        }
    }
    let activated = h.remote.act(
        &id,
        "activate",
        &[&id, &new_s, &seconds],
        &format!("{}: switch-to-configuration test", h.name),
    );
    let activation_failure: Option<String> = match &activated {
        Ok(o) if o.success() => None,
        Ok(o) => Some(match o.status.code() {
            Some(4) => {
                "the activation failed: a unit failed to start (switch-to-configuration exit 4)"
                    .to_string()
            }
            Some(100) => "the new generation needs a reboot to take effect (switch-to-configuration exit 100: the init \
                 interface changed), so it was not activated; make it the boot default on the host and reboot"
                .to_string(),
            Some(255) => {
                format!("the connection was lost during activation: {}", last_line(&o.stderr))
            }
            _ => format!(
                "the activation failed ({}): {}",
                lab_cli::tool::describe_status(o.status),
                last_line(&o.stderr)
            ),
        }),
        Err(e) => Some(format!("the activation could not run: {e}")),
    };
    let failed: Vec<Outcome> = if activation_failure.is_none() {
        say(&format!("{}: activated; checking", h.name));
        health::run(&h.remote, &h.checks, opts.check_timeout)
            .into_iter()
            .filter(|o| !o.ok)
            .collect()
    } else {
        vec![]
    };
    let mut failure = activation_failure.clone();
    if failure.is_none() && failed.is_empty() {
        let confirmed = h.remote.act(
            &id,
            "confirm",
            &[&id, &new_s],
            &format!("{}: making it the boot default", h.name),
        );
        match confirmed {
            Ok(o) if o.success() => {
                r.result = HostResult::Deployed;
                r.message = "activated, checked, made the boot default".into();
                say(&format!("{}: deployed", h.name));
                return;
            }
            // The host's timer was faster (the checks took longer than
            // --confirm-timeout): it already runs the old generation.
            Ok(o) if o.stderr.contains("already went back by itself") => {
                r.result = HostResult::RolledBack;
                r.message = format!("{}; raise --confirm-timeout", last_line(&o.stderr));
                return;
            }
            Ok(o) => {
                // A confirm that finished on the host with its answer lost
                // is no failure: the restore, under the deploy's lock, says so.
                failure =
                    Some(format!("making it the boot default failed: {}", last_line(&o.stderr)))
            }
            Err(e) => {
                r.result = HostResult::Failed;
                r.message = format!(
                    "the checks passed but confirming failed ({e}); unless it was confirmed, the host goes back to {old} by itself within {} s of the start",
                    opts.confirm_timeout.as_secs()
                );
                return;
            }
        }
    }
    let reason = failure.unwrap_or_else(|| {
        failed.iter().map(|f| format!("{} ({})", f.check, f.detail)).collect::<Vec<_>>().join("; ")
    });
    say(&format!("{}: {reason}; going back to {old}", h.name));
    r.failed_checks = failed;
    // systemd expands `$` in a unit's arguments: the reason is only text.
    let reason_arg = reason.replace('$', "");
    let restored = h.remote.act(
        &id,
        "restore",
        &[&id, &old, &reason_arg],
        &format!("{}: back to the previous generation", h.name),
    );
    let retry = opts.confirm_timeout.as_secs();
    match restored {
        Ok(o) if o.success() => {
            let said = o.text();
            let value =
                |key: &str| said.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
            let status = value("status=").unwrap_or_default();
            if value("restored=").is_some_and(|v| v.starts_with("none")) {
                r.result = HostResult::Deployed;
                r.message = "the confirm had finished on the host after all: it runs the generation as its boot default"
                    .into();
            } else if status == "0" || status == "4" {
                r.result = HostResult::RolledBack;
                r.message = if r.failed_checks.is_empty() {
                    format!("rolled back to {old}: {reason}")
                } else {
                    format!("rolled back to {old}: a health check failed")
                };
                if status == "4" {
                    r.message.push_str(" (a unit of the old generation failed too: look at the host's failed units)");
                }
            } else {
                r.result = HostResult::Failed;
                r.message = format!(
                    "{reason}; going back to {old} failed (its switch-to-configuration exited {status}): the host's \
                     timer tries again within {retry} s of the start; then `labprov status {}`",
                    h.name
                );
            }
        }
        other => {
            let why = match other {
                Ok(o) => last_line(&o.stderr),
                Err(e) => e.to_string(),
            };
            r.result = HostResult::Failed;
            r.message = format!(
                "{reason}; asking the host to go back failed ({why}): unless it was confirmed, its timer puts {old} \
                 back within {retry} s of the start; then `labprov status {}`",
                h.name
            );
        }
    }
}

fn last_line(text: &str) -> String {
    text.trim().lines().last().unwrap_or("(nothing said)").to_string()
}

/// `labprov status`: one host's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub host: String,
    pub address: Option<String>,
    pub reachable: bool,
    pub error: Option<String>,
    pub current: Option<String>,
    /// The boot default's generation number (`system-N-link`).
    pub generation: Option<u64>,
    /// The running generation is the boot default.
    pub is_boot_default: Option<bool>,
    /// The boot default (the system profile's generation), and its number.
    pub boot_default: Option<String>,
    pub revision: Option<String>,
    pub main_revision: Option<String>,
    pub matches_main: Option<bool>,
    pub checks: Vec<Outcome>,
    pub healthy: Option<bool>,
    /// The host's record of the last deploy: time (Unix seconds), result,
    /// generation, revision, reason.
    pub last_deploy: BTreeMap<String, String>,
    /// Deploys whose timer will still put the host back (never confirmed).
    pub pending: Vec<String>,
}

/// The commit `main` names in the lab's repository, if it is one.
fn main_revision(lab: &Lab) -> Option<String> {
    let out = lab_cli::Cmd::new("git")
        .arg("-C")
        .arg(&lab.root)
        .args(["rev-parse", "--verify", "--quiet", "refs/heads/main"])
        .probe()
        .ok()?;
    out.success().then(|| out.text().trim().to_string())
}

/// How to reach one host, as a deploy would (pinned SSH, or this Mac).
pub fn remote_for(lab: &Lab, name: &str, access: &Access) -> Result<Remote> {
    let (mut hosts, _) = select(lab, &[name.to_string()], false, access)?;
    Ok(hosts.remove(0).remote)
}

pub fn status(lab: &Lab, names: &[String], access: &Access) -> Result<Vec<Status>> {
    let all = names.is_empty();
    let (hosts, skipped) = select(lab, names, all, access)?;
    let main = main_revision(lab);
    let mut out = Vec::new();
    for h in &hosts {
        let mut s = Status {
            host: h.name.clone(),
            address: h.address.clone(),
            main_revision: main.clone(),
            ..Status::default()
        };
        match h.remote.probe() {
            Err(e) => s.error = Some(e),
            Ok(p) => {
                s.reachable = true;
                s.is_boot_default = Some(p.current.is_some() && p.current == p.profile);
                s.boot_default = p.profile.clone();
                s.current = p.current;
                s.generation = p.generation;
                s.matches_main = match (&p.revision, &main) {
                    (Some(r), Some(m)) => Some(r == m),
                    _ => None,
                };
                s.revision = p.revision;
                s.last_deploy = p.last_deploy;
                s.pending = p.pending;
                s.checks = health::run_once(&h.remote, &h.checks);
                s.healthy = Some(s.checks.iter().all(|c| c.ok));
            }
        }
        out.push(s);
    }
    for skip in skipped {
        out.push(Status {
            host: skip.host,
            error: Some(format!("not checked: {}", skip.why)),
            main_revision: main.clone(),
            ..Status::default()
        });
    }
    Ok(out)
}

/// What `labprov rollback` does, or did: from the boot default to the
/// generation below it.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub host: String,
    pub dry_run: bool,
    pub from: Option<String>,
    pub from_generation: Option<u64>,
    pub to: String,
    pub to_generation: u64,
    /// The checks after the rollback (none in a dry run).
    pub checks: Vec<Outcome>,
}

/// `labprov rollback HOST`: the boot default one generation back, activated
/// (`nix-env --rollback` and `switch`; darwin-rebuild --rollback on a Mac),
/// then the host's checks. `confirm` sees the plan first; a dry run stops
/// there.
pub fn rollback(
    lab: &Lab,
    host: &str,
    access: &Access,
    within: Duration,
    dry_run: bool,
    confirm: &mut dyn FnMut(&RollbackReport) -> Result<()>,
) -> Result<RollbackReport> {
    let (hosts, _) = select(lab, &[host.to_string()], false, access)?;
    let h = &hosts[0];
    let p = h.remote.probe().map_err(|why| Error::Unreachable { host: host.into(), why })?;
    if let Some(id) = p.pending.first() {
        return Err(Error::NotReady {
            host: host.into(),
            why: format!("deploy {id} is not confirmed yet and its timer will put the host back; wait for it"),
        });
    }
    let Some((to_generation, to)) = p.previous.clone() else {
        return Err(Error::NotReady {
            host: host.into(),
            why: "its system profile has no generation before the boot default to go back to"
                .into(),
        });
    };
    let mut report = RollbackReport {
        host: host.into(),
        dry_run,
        from: p.profile.clone(),
        from_generation: p.generation,
        to,
        to_generation,
        checks: vec![],
    };
    if dry_run {
        return Ok(report);
    }
    confirm(&report)?;
    let id = deploy_id();
    let out = h.remote.act(&id, "previous", &[&id], &format!("{host}: back one generation"));
    match out {
        Ok(o) if o.success() => {}
        Ok(o) => return Err(Error::Rollback { host: host.into(), why: last_line(&o.stderr) }),
        Err(e) => return Err(Error::Rollback { host: host.into(), why: e.to_string() }),
    }
    report.checks = health::run(&h.remote, &h.checks, within);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, services: usize) -> Host {
        let entry = |i: usize| Entry {
            service: format!("s{i}"),
            unit: format!("s{i}.service"),
            from: None,
            dns: None,
            http: None,
        };
        Host {
            name: name.into(),
            class: HostClass::Nixos,
            remote: Remote::Local,
            address: None,
            checks: (0..services).map(entry).collect(),
        }
    }

    #[test]
    fn the_fleet_goes_smallest_first_then_by_name() {
        let mut hosts =
            [host("luna", 13), host("rydev", 0), host("nixpi", 1), host("bootstrap", 0)];
        hosts.sort_by_key(fleet_order);
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["bootstrap", "rydev", "nixpi", "luna"]);
    }

    #[test]
    fn flake_attributes_per_class() {
        assert_eq!(
            attribute("luna", HostClass::Nixos),
            "nixosConfigurations.luna.config.system.build.toplevel"
        );
        assert_eq!(attribute("rymac", HostClass::Darwin), "darwinConfigurations.rymac.system");
    }

    #[test]
    fn a_rolled_back_deploy_names_each_failed_check_and_the_hosts_left_alone() {
        let report = |host: &str, result, checks: Vec<Outcome>| HostReport {
            host: host.into(),
            result,
            previous: Some("/nix/store/a".into()),
            new: "/nix/store/b".into(),
            diff: None,
            restarts: None,
            failed_checks: checks,
            message: match result {
                HostResult::RolledBack => {
                    "rolled back to /nix/store/a: a health check failed".into()
                }
                _ => String::new(),
            },
        };
        let text = rolled_back(&[
            report("nixpi", HostResult::Deployed, vec![]),
            report(
                "luna",
                HostResult::RolledBack,
                vec![Outcome {
                    check: "bind: dns luna.lab @192.168.1.10:5300".into(),
                    ok: false,
                    detail: "NXDOMAIN".into(),
                }],
            ),
            report("rydev", HostResult::NotStarted, vec![]),
        ]);
        assert_eq!(
            text,
            "luna: rolled back to /nix/store/a: a health check failed\n  \
             failed: bind: dns luna.lab @192.168.1.10:5300: NXDOMAIN\n\
             not started: rydev (they run what they ran; fix the cause and deploy again, or pass --keep-going)"
        );
    }

    #[test]
    fn up_to_date_needs_both_the_running_system_and_the_boot_default() {
        let probe = |current: &str, profile: &str| Probe {
            current: Some(current.into()),
            profile: Some(profile.into()),
            ..Probe::default()
        };
        let new = Path::new("/nix/store/b");
        assert!(up_to_date(&probe("/nix/store/b", "/nix/store/b"), new));
        // Activated by hand (`test`) but never made the boot default.
        assert!(!up_to_date(&probe("/nix/store/b", "/nix/store/a"), new));
        assert!(!up_to_date(&probe("/nix/store/a", "/nix/store/b"), new));
    }
}
