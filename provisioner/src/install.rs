//! `labprov install HOST --address ADDR`: a machine booted from the lab's
//! installer ISO (installers/iso.nix: SSH with the admins' keys, labprov on
//! its PATH) becomes HOST.
//!
//! 1. pin: the installer's ed25519 key (random for every boot of the ISO) is
//!    only a candidate until the operator confirms its fingerprint
//!    (`--fingerprint`, or typing `yes`); every later connection trusts
//!    exactly that key. Host key checking is never turned off.
//! 2. disk: the host's disko spec, normalised here, goes over that connection
//!    to the installer's own `labprov disk apply` (the plan is shown and
//!    confirmed first, unless `--yes`).
//! 3. keys: the host's lab-held key, decrypted here in memory, is streamed
//!    into `ROOT/etc/ssh` (0600, a temporary name, then a rename); it never
//!    touches a disk on this machine.
//! 4. install: the system closure (`--system`, else `nix build` of the
//!    flake's toplevel) is copied into `ROOT/nix/store` with `nix copy` over
//!    the pinned connection, then `nixos-install --system` runs there.
//! 5. reboot: the disks are unmounted and the machine reboots.
//! 6. verify: until `--wait` runs out, the host must answer at the address
//!    with its own recorded key; nothing else is accepted.
//!
//! `--phases` runs a subset (a re-run after a failure resumes where it
//! stopped: apply keeps what it finds, the key and the closure are copied
//! again). `--dry-run` pins, shows the plan the installer computes for its
//! disks, and changes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_model::facts::HostClass;
use lab_model::keys::{PublicHostKey, HOST_KEY_PATH};
use lab_model::secrets::{ops, AdminIdentity, LabKeys};
use lab_model::Lab;
use serde::Serialize;

use crate::disk::{self, SpecSource};
use crate::enrol::{self, Candidate};
use crate::ssh::{quote, Pinned, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Enrol(#[from] enrol::Error),
    #[error(transparent)]
    Secrets(#[from] lab_model::secrets::Error),
    #[error(transparent)]
    Facts(#[from] lab_model::facts::Error),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("{host} is a {class} host; `labprov install` installs NixOS hosts (for a Mac: darwin-rebuild, see docs/onboarding.md)")]
    NotNixos { host: String, class: String },
    #[error("unknown phase `{0}`; phases are disk, keys, install, reboot, verify (comma separated)")]
    BadPhase(String),
    #[error("the installer's key was not confirmed; nothing was changed on {address}")]
    NotConfirmed { address: String },
    #[error("no terminal to confirm on: pass --fingerprint SHA256:... for the installer's key and --yes for the disks")]
    NoTerminal,
    #[error(
        "{address} has no `labprov`: boot the lab's installer ISO (`nix build .#nixosConfigurations.installer-ARCH.config.system.build.isoImage`), \
         which carries it"
    )]
    NoRemoteLabprov { address: String },
    #[error("{step} on {address} failed ({status}):\n{stderr}\nFix the cause and run the same command again: each phase can be re-run (`--phases`)")]
    Remote { step: String, address: String, status: String, stderr: String },
    #[error("`{cmd}` failed ({status}):\n{stderr}")]
    Local { cmd: String, status: String, stderr: String },
    #[error("`{tool}` is not installed here; {hint}")]
    ToolMissing { tool: String, hint: String },
    #[error("{path} is not a store path of a NixOS system (no {path}/nixos-version or it does not exist)")]
    NotASystem { path: PathBuf },
    #[error(
        "{host} did not answer at {address} with its recorded key within {seconds} s; the last attempt said:\n{last}\n\
         Look at the machine's console; when it is up, check again with `labprov install {host} --address {address} --phases verify`"
    )]
    NotVerified { host: String, address: String, seconds: u64, last: String },
    #[error("the key recorded for {host} cannot be read: {reason}")]
    BadRecordedKey { host: String, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parts of an install, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Disk,
    Keys,
    Install,
    Reboot,
    Verify,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Disk, Phase::Keys, Phase::Install, Phase::Reboot, Phase::Verify];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Disk => "disk",
            Phase::Keys => "keys",
            Phase::Install => "install",
            Phase::Reboot => "reboot",
            Phase::Verify => "verify",
        }
    }

    /// `disk,keys` -> the phases, in install order whatever the order given.
    pub fn parse_list(text: &str) -> Result<Vec<Phase>> {
        let mut out = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let p = Phase::ALL.into_iter().find(|p| p.name() == word).ok_or_else(|| Error::BadPhase(word.to_string()))?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(Error::BadPhase(text.to_string()));
        }
        out.sort();
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub host: String,
    /// The installer (and, after the reboot, the host) on SSH. Always root:
    /// the installer lets root in with the admins' keys.
    pub target: Target,
    /// The installer's key as its console shows it (`SHA256:...`).
    pub fingerprint: Option<String>,
    /// `NAME=PATH` mappings for the spec's disks on the target.
    pub disks: Vec<String>,
    /// Where the target's filesystems are mounted.
    pub root: String,
    /// A built system (`/nix/store/...-nixos-system-...`); else `nix build`.
    pub system: Option<PathBuf>,
    pub phases: Vec<Phase>,
    /// Passed to `disk apply`: erase disks holding something else.
    pub wipe: bool,
    /// Do not ask before writing the disks.
    pub yes: bool,
    pub dry_run: bool,
    /// How long to wait for the host after the reboot.
    pub wait: Duration,
}

impl InstallOptions {
    pub fn new(host: &str, address: &str) -> InstallOptions {
        InstallOptions {
            host: host.to_string(),
            target: Target { address: address.to_string(), port: 22, user: "root".into(), identity: None },
            fingerprint: None,
            disks: Vec::new(),
            root: "/mnt".into(),
            system: None,
            phases: Phase::ALL.to_vec(),
            wipe: false,
            yes: false,
            dry_run: false,
            wait: Duration::from_secs(300),
        }
    }

    fn runs(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }

    fn needs_installer(&self) -> bool {
        self.phases.iter().any(|p| *p != Phase::Verify)
    }
}

/// One thing done (or, in a dry run, that would be done).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub phase: Phase,
    pub what: String,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub host: String,
    pub address: String,
    /// The installer's key as confirmed; `None` when only `verify` ran.
    pub installer: Option<Candidate>,
    pub host_fingerprint: String,
    pub system: Option<PathBuf>,
    pub dry_run: bool,
    pub steps: Vec<Step>,
}

/// What the caller is asked: the installer's key (when no `--fingerprint`),
/// and the disk plan (unless `--yes`).
pub trait Confirm {
    fn installer_key(&mut self, candidate: &Candidate) -> Result<bool>;
    fn disks(&mut self, host: &str, plan: &str) -> Result<bool>;
}

/// The steps so far; `say` hears each as it starts.
struct Steps<'a> {
    list: Vec<Step>,
    say: &'a mut dyn FnMut(&str),
}

impl Steps<'_> {
    fn begin(&mut self, phase: Phase, what: String) {
        (self.say)(&format!("{}: {what}", phase.name()));
        self.list.push(Step { phase, what, done: false });
    }

    /// The last step is done; `detail` (a remote tool's own report) is kept.
    fn done(&mut self, detail: &str) {
        if let Some(s) = self.list.last_mut() {
            s.done = true;
            if !detail.is_empty() {
                s.what = format!("{}\n{detail}", s.what);
            }
        }
    }
}

/// The whole install, in phase order.
pub fn install(lab: &Lab, opts: &InstallOptions, identity: Option<&AdminIdentity>, confirm: &mut dyn Confirm, say: &mut dyn FnMut(&str)) -> Result<Report> {
    // Everything that can be checked here is, before the installer is touched.
    let host = lab.facts()?.host(&opts.host)?.clone();
    if host.class != HostClass::Nixos {
        return Err(Error::NotNixos { host: opts.host.clone(), class: format!("{:?}", host.class).to_lowercase() });
    }
    let keys = LabKeys::load(lab)?;
    let recorded = ops::show(&lab.root, &keys, &opts.host)?;
    let host_key = PublicHostKey::parse(&recorded.public_key).map_err(|e| Error::BadRecordedKey { host: opts.host.clone(), reason: e.to_string() })?;
    let spec = if opts.runs(Phase::Disk) || opts.runs(Phase::Reboot) {
        let (normalized, devices) = disk::load(&SpecSource::Host { lab: lab.clone(), host: opts.host.clone() })?;
        disk::check_hooks(&normalized)?;
        lab_model::disko::plan::plan(&devices).map_err(disk::DiskError::from)?;
        Some(serde_json::to_vec(&normalized).map_err(|e| std::io::Error::other(e.to_string()))?)
    } else {
        None
    };
    let private = match (opts.runs(Phase::Keys), identity) {
        (true, Some(id)) => Some(ops::injection_material_with(&lab.root, &opts.host, id)?),
        (true, None) => Some(ops::injection_material(lab, &opts.host)?),
        (false, _) => None,
    };
    let system = if opts.runs(Phase::Install) { Some(system_closure(lab, opts, say)?) } else { None };

    let mut steps = Steps { list: Vec::new(), say };
    let mut installer_key = None;
    if opts.needs_installer() {
        let candidate_key = enrol::keyscan(&opts.target.address, opts.target.port)?;
        let candidate = Candidate {
            host: format!("the installer for {}", opts.host),
            address: opts.target.address.clone(),
            public_key: candidate_key.openssh(),
            fingerprint: candidate_key.fingerprint(),
            age_recipient: candidate_key.age_recipient(),
        };
        match &opts.fingerprint {
            Some(fp) => {
                let fp = enrol::check_fingerprint(fp)?;
                if fp != candidate.fingerprint {
                    let got = candidate.fingerprint.clone();
                    return Err(enrol::Error::FingerprintMismatch { address: opts.target.address.clone(), expected: fp, got }.into());
                }
            }
            None => {
                if !confirm.installer_key(&candidate)? {
                    return Err(Error::NotConfirmed { address: opts.target.address.clone() });
                }
            }
        }
        let installer = Pinned::new(&opts.target, &format!("labprov-installer-{}", opts.host), &candidate_key)?;
        installer_key = Some(candidate);
        let remote = Remote { pinned: &installer, address: &opts.target.address };
        let root = quote(&opts.root);
        let maps: String = opts.disks.iter().map(|d| format!(" --disk {}", quote(d))).collect();

        if spec.is_some() {
            remote.run("find labprov", "command -v labprov", None).map_err(|_| Error::NoRemoteLabprov { address: opts.target.address.clone() })?;
        }
        if opts.runs(Phase::Disk) {
            let spec = spec.as_deref().expect("loaded for the disk phase");
            let wipe = if opts.wipe { " --wipe" } else { "" };
            let apply = format!("labprov disk apply --spec /dev/stdin --root {root}{maps}{wipe}");
            let plan = remote.run("disk plan", &format!("{apply} --dry-run"), Some(spec))?;
            if opts.dry_run {
                steps.begin(Phase::Disk, format!("would apply on {}:\n{}", opts.target.address, plan.trim_end()));
            } else {
                if !opts.yes && !confirm.disks(&opts.host, &plan)? {
                    return Err(Error::NotConfirmed { address: opts.target.address.clone() });
                }
                steps.begin(Phase::Disk, format!("labprov disk apply on {} (root {})", opts.target.address, opts.root));
                let out = remote.run("disk apply", &format!("{apply} --yes"), Some(spec))?;
                steps.done(out.trim_end());
            }
        }
        if let Some(key) = &private {
            let dir = format!("{}/etc/ssh", opts.root.trim_end_matches('/'));
            let name = Path::new(HOST_KEY_PATH).file_name().and_then(|n| n.to_str()).unwrap_or("ssh_host_ed25519_key");
            let file = format!("{dir}/{name}");
            if opts.dry_run {
                steps.begin(Phase::Keys, format!("would place {}'s key ({}) at {file} (0600)", opts.host, key.fingerprint()));
            } else {
                steps.begin(Phase::Keys, format!("{file} ({}), 0600", key.fingerprint()));
                // The directories with the usual modes (the new system's /etc
                // must stay readable), then umask 077 before any key byte
                // lands: not even the temporary file is readable by others.
                let put = |target: &str, mode: &str, data: &[u8]| {
                    let tmp = quote(&format!("{target}.labprov-tmp"));
                    let (d, t) = (quote(&dir), quote(target));
                    remote.run(
                        "host key",
                        &format!("umask 022 && mkdir -p {d} && umask 077 && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {t}"),
                        Some(data),
                    )
                };
                put(&file, "600", key.private_openssh().as_bytes())?;
                put(&format!("{file}.pub"), "644", format!("{}\n", key.public_openssh()).as_bytes())?;
                steps.done("");
            }
        }
        if let Some(system) = &system {
            if opts.dry_run {
                steps.begin(Phase::Install, format!("would copy {} into {}/nix/store and run nixos-install", system.display(), opts.root));
            } else {
                steps.begin(Phase::Install, format!("nix copy {} to {}", system.display(), opts.target.address));
                nix_copy(&installer, &opts.root, system)?;
                steps.done("");
                steps.begin(Phase::Install, format!("nixos-install --root {} --system {}", opts.root, system.display()));
                let sys = quote(&system.display().to_string());
                remote.run(
                    "nixos-install",
                    &format!(
                        "mkdir -p {root}/tmp && chmod 1777 {root}/tmp && PATH=\"$PATH:/run/current-system/sw/bin\" \
                         nixos-install --root {root} --no-root-passwd --no-channel-copy --system {sys}"
                    ),
                    None,
                )?;
                steps.done("");
            }
        }
        if opts.runs(Phase::Reboot) {
            let spec = spec.as_deref().expect("loaded for the reboot phase");
            if opts.dry_run {
                steps.begin(Phase::Reboot, format!("would unmount {} and reboot {}", opts.root, opts.target.address));
            } else {
                steps.begin(Phase::Reboot, format!("unmount {} and reboot", opts.root));
                let out = remote.run("unmount", &format!("labprov disk unmount --spec /dev/stdin --root {root}{maps}"), Some(spec))?;
                // Detached, so this connection closes cleanly before the machine goes.
                remote.run("reboot", "nohup sh -c 'sleep 3 && systemctl reboot' >/dev/null 2>&1 &", None)?;
                steps.done(out.trim_end());
            }
        }
    }

    if opts.runs(Phase::Verify) {
        if opts.dry_run {
            steps.begin(Phase::Verify, format!("would wait for {} at {} to answer with {}", opts.host, opts.target.address, host_key.fingerprint()));
        } else {
            steps.begin(Phase::Verify, format!("{} at {} answers with {}", opts.host, opts.target.address, host_key.fingerprint()));
            verify(opts, &host_key)?;
            steps.done("");
        }
    }
    Ok(Report {
        host: opts.host.clone(),
        address: opts.target.address.clone(),
        installer: installer_key,
        host_fingerprint: host_key.fingerprint(),
        system,
        dry_run: opts.dry_run,
        steps: steps.list,
    })
}

/// Commands on the pinned installer.
struct Remote<'a> {
    pinned: &'a Pinned,
    address: &'a str,
}

impl Remote<'_> {
    fn run(&self, step: &str, command: &str, stdin: Option<&[u8]>) -> Result<String> {
        let mut cmd = self.pinned.command(command);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing { tool: "ssh".into(), hint: "install the OpenSSH client".into() },
            _ => Error::Io(e),
        })?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A remote command that fails early closes its end: its status
            // and stderr say why, not the broken pipe.
            let _ = pipe.write_all(data);
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(Error::Remote {
                step: step.to_string(),
                address: self.address.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `--system`, checked, or the flake's toplevel for the host, built here.
fn system_closure(lab: &Lab, opts: &InstallOptions, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if let Some(path) = &opts.system {
        if !path.join("nixos-version").is_file() && !path.join("init").exists() {
            return Err(Error::NotASystem { path: path.clone() });
        }
        return Ok(path.clone());
    }
    let attr = format!("{}#nixosConfigurations.{}.config.system.build.toplevel", lab.root.display(), opts.host);
    if opts.dry_run {
        say(&format!("install: would build {attr}"));
        return Ok(PathBuf::from(format!("<{attr}>")));
    }
    say(&format!("install: nix build {attr}"));
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--print-out-paths"])
        .arg(&attr)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing { tool: "nix".into(), hint: "install Nix, or pass --system with a built system".into() },
            _ => Error::Io(e),
        })?;
    if !out.status.success() {
        return Err(Error::Local { cmd: format!("nix build {attr}"), status: out.status.to_string(), stderr: "(its output is above)".into() });
    }
    let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
    Ok(PathBuf::from(path))
}

/// `nix copy` of the closure into ROOT's store over the pinned connection.
fn nix_copy(pinned: &Pinned, root: &str, system: &Path) -> Result<()> {
    let encoded_root: String =
        root.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    let store = format!("ssh://{}?remote-store=local%3Froot%3D{encoded_root}&compress=true", pinned.destination());
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy", "--substitute-on-destination", "--to", &store])
        .arg(system)
        .env("NIX_SSHOPTS", pinned.nix_sshopts())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing { tool: "nix".into(), hint: "install Nix to copy the system".into() },
            _ => Error::Io(e),
        })?;
    if !out.status.success() {
        return Err(Error::Local {
            cmd: format!("nix copy --to {store} {}", system.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Polls until the host answers with exactly its recorded key.
fn verify(opts: &InstallOptions, key: &PublicHostKey) -> Result<()> {
    let pinned = Pinned::new(&opts.target, &format!("labprov-host-{}", opts.host), key)?;
    let started = Instant::now();
    loop {
        let last = match pinned.command("true").stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ToolMissing { tool: "ssh".into(), hint: "install the OpenSSH client".into() });
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= opts.wait {
            return Err(Error::NotVerified { host: opts.host.clone(), address: opts.target.address.clone(), seconds: opts.wait.as_secs(), last });
        }
        std::thread::sleep(Duration::from_secs(2).min(opts.wait.saturating_sub(started.elapsed())).max(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_in_install_order_and_refuse_unknown_words() {
        assert_eq!(Phase::parse_list("verify,disk").unwrap(), vec![Phase::Disk, Phase::Verify]);
        assert_eq!(Phase::parse_list("keys, keys ,install").unwrap(), vec![Phase::Keys, Phase::Install]);
        assert!(matches!(Phase::parse_list("disk,kexec"), Err(Error::BadPhase(w)) if w == "kexec"));
        assert!(matches!(Phase::parse_list(" , "), Err(Error::BadPhase(_))));
    }
}
