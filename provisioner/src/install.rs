//! `labprov install HOST --address ADDR`: a machine booted from the lab's
//! installer ISO (installers/iso.nix: SSH with the admins' keys, labprov on
//! its PATH) becomes HOST.
//!
//! 1. pin: the installer's ed25519 key (random for every boot of the ISO) is
//!    only a candidate until the operator confirms its fingerprint
//!    (`--fingerprint`, or typing `yes`); every later connection trusts
//!    exactly that key. Host key checking is never turned off.
//! 2. disk: the host's disko spec, normalised here, goes over that connection
//!    to the installer's own `labprov disk apply`; its plan, with the model,
//!    size and serial of every disk it will write, is shown and confirmed
//!    first (the host name typed, or `--yes`).
//! 3. keys: the root is (re)mounted from the spec, then the host's lab-held
//!    key, decrypted here in memory, is streamed into `ROOT/etc/ssh` (0600, a
//!    temporary name, then a rename); it never touches a disk on this machine.
//! 4. install: the system closure (`--system`, else `nix build` of the
//!    flake's toplevel) is copied into `ROOT/nix/store` with `nix copy` over
//!    the pinned connection, then `nixos-install --system` runs there.
//! 5. reboot: the disks are unmounted and the machine reboots.
//! 6. verify: until `--wait` runs out, the host must answer at the address
//!    with its own recorded key; nothing else is accepted.
//!
//! `--phases` runs a subset (a re-run after a failure resumes where it
//! stopped: apply keeps what it finds, the key and the closure are copied
//! again, after the root is mounted from the spec). `--dry-run` pins, shows
//! the installer's plan and the disks it would write, decrypts nothing and
//! changes nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_facts::HostClass;
use lab_facts::Lab;
use lab_keys::secrets::{ops, AdminIdentity, LabKeys};
use lab_keys::{PublicHostKey, HOST_KEY_PATH};
use serde::Serialize;

use crate::disk::{self, SpecSource};
use crate::enrol;
use crate::ssh::{quote, Pinned, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Enrol(#[from] enrol::Error),
    #[error(transparent)]
    Secrets(#[from] lab_keys::secrets::Error),
    #[error(transparent)]
    Facts(#[from] lab_facts::Error),
    #[error(transparent)]
    // Boxed: the disk errors are large and every install result carries this.
    Disk(Box<disk::DiskError>),
    #[error("{host} is a {class} host; `labprov install` installs NixOS hosts (for a Mac: darwin-rebuild, see docs/onboarding.md)")]
    NotNixos { host: String, class: String },
    #[error(
        "unknown phase `{0}`; phases are disk, keys, install, reboot, verify (comma separated)"
    )]
    BadPhase(String),
    #[error("not confirmed; nothing was changed on {address}")]
    NotConfirmed { address: String },
    #[error(
        "REFUSED: {address} presents {got}, but the installer's console shows {expected}. Do not install: \
         check the address and the fingerprint (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the installer)"
    )]
    InstallerMismatch { address: String, expected: String, got: String },
    #[error(
        "REFUSED: {address} presents {got}, but {manifest} records the installer key {expected}. \
         Do not install: boot the ISO that manifest belongs to (labimg build wrote them together), \
         or check the address"
    )]
    NotTheManifestInstaller { address: String, manifest: PathBuf, expected: String, got: String },
    #[error("cannot read the installer manifest {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("--root {root}: {why}")]
    BadRoot { root: String, why: &'static str },
    #[error("--address `{0}` is not a host name or address")]
    BadAddress(String),
    #[error("{host} has no lab-held key to install: run `labprov keys new {host}` and `labprov secrets sync` first")]
    NoLabKey { host: String },
    #[error("cannot pin SSH for `nix copy`: {0}")]
    SshOpts(String),
    #[error("no terminal to confirm on: pass --fingerprint SHA256:... for the installer's key and --yes for the disks")]
    NoTerminal,
    #[error(
        "{address} has no `labprov`: boot the lab's installer ISO (`nix build .#nixosConfigurations.installer-ARCH.config.system.build.isoImage`), \
         which carries it"
    )]
    NoRemoteLabprov { address: String },
    #[error("{step} on {address} failed ({status}):\n{stderr}\nFix the cause and run the same command again: each phase can be re-run (`--phases`)")]
    Remote { step: String, address: String, status: String, stderr: String },
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
    #[error("{path} is not a NixOS system (it has neither nixos-version nor init); pass the toplevel, `result` of `nix build .#nixosConfigurations.HOST.config.system.build.toplevel`")]
    NotASystem { path: PathBuf },
    #[error(
        "{host} did not answer at {address} with its recorded key within {seconds} s; the last attempt said:\n{last}\n\
         Look at the machine's console. If the installer came up again, remove the installer medium (or fix the boot order) and \
         reboot; when the host is up, check again with `labprov install {host} --address {address} --phases verify`"
    )]
    NotVerified { host: String, address: String, seconds: u64, last: String },
    #[error("the key recorded for {host} cannot be read: {reason}")]
    BadRecordedKey { host: String, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} between phases; run the same command again with --phases from the one that was next (each phase can be re-run)")]
    Interrupted(#[from] lab_cli::interrupt::Interrupted),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<disk::DiskError> for Error {
    fn from(e: disk::DiskError) -> Error {
        Error::Disk(Box::new(e))
    }
}

impl lab_cli::Classify for Error {
    fn class(&self) -> lab_cli::Class {
        use lab_cli::Class;
        match self {
            Error::Enrol(e) => e.class(),
            Error::Disk(e) => e.class(),
            Error::Interrupted(_) => Class::Interrupted,
            Error::Tool(e) => e.class(),
            Error::InstallerMismatch { .. }
            | Error::NotTheManifestInstaller { .. }
            | Error::NotConfirmed { .. }
            | Error::NoTerminal => Class::Refused,
            // Another key answered: a mismatch. Nothing answering is a failure.
            Error::NotVerified { last, .. }
                if last.contains("Host key verification failed")
                    || last.contains("REMOTE HOST IDENTIFICATION") =>
            {
                Class::Mismatch
            }
            Error::BadPhase(_) | Error::BadRoot { .. } | Error::BadAddress(_) => Class::Usage,
            _ => Class::Failure,
        }
    }
}

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
    pub const ALL: [Phase; 5] =
        [Phase::Disk, Phase::Keys, Phase::Install, Phase::Reboot, Phase::Verify];

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
            let p = Phase::ALL
                .into_iter()
                .find(|p| p.name() == word)
                .ok_or_else(|| Error::BadPhase(word.to_string()))?;
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
    /// The installer's key from the manifest `labimg build installer-ARCH`
    /// wrote beside the ISO: trusted with no question.
    pub manifest: Option<InstallerManifest>,
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
    /// What the remote shell and the store URI are given must be plain:
    /// an absolute root other than `/` (it would be the installer's own),
    /// an address that ssh cannot take for an option.
    pub fn validate(&self) -> Result<()> {
        let root = self.root.as_str();
        let why = if !root.starts_with('/') {
            Some("must be an absolute path")
        } else if root.trim_end_matches('/').is_empty() {
            Some("must not be `/`: that is the installer's own root")
        } else if !root.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)) {
            Some("may hold only letters, digits and `/._-`")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::BadRoot { root: self.root.clone(), why });
        }
        let a = &self.target.address;
        if a.is_empty()
            || a.starts_with('-')
            || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:_[]%".contains(&b))
        {
            return Err(Error::BadAddress(a.clone()));
        }
        Ok(())
    }

    fn runs(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }
}

/// The installer's key as `labimg build installer-ARCH` recorded it in
/// `installer-ARCH.manifest.json` (its `hostKey.publicKey`).
#[derive(Debug, Clone)]
pub struct InstallerManifest {
    pub path: PathBuf,
    pub key: PublicHostKey,
}

impl InstallerManifest {
    pub fn load(path: &Path) -> Result<InstallerManifest> {
        let bad = |reason: String| Error::BadManifest { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let line = json["hostKey"]["publicKey"].as_str().ok_or_else(|| {
            bad("it has no hostKey.publicKey (is it labimg's installer manifest?)".into())
        })?;
        let key = PublicHostKey::parse(line).map_err(|e| bad(e.to_string()))?;
        Ok(InstallerManifest { path: path.to_path_buf(), key })
    }

    /// The manifest `labimg build installer-ARCH` leaves in the lab's
    /// `out/` for a host of `system` (`x86_64-linux` -> installer-x86_64).
    pub fn beside(lab_root: &Path, system: &str) -> Option<PathBuf> {
        let arch = system.split('-').next()?;
        let path = lab_root.join("out").join(format!("installer-{arch}.manifest.json"));
        path.is_file().then_some(path)
    }
}

/// One thing done (or, in a dry run, that would be done).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub phase: Phase,
    pub what: String,
    pub done: bool,
    /// Wall time the step took (0 for what a dry run would do).
    pub seconds: f64,
}

/// Wall time of one phase that ran.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTime {
    pub phase: &'static str,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub host: String,
    pub address: String,
    /// The installer's key as confirmed; `None` when only `verify` ran.
    pub installer: Option<Installer>,
    pub host_fingerprint: String,
    pub system: Option<PathBuf>,
    pub dry_run: bool,
    pub steps: Vec<Step>,
    /// Each phase that ran, in install order, with its wall time, after
    /// `prepare` (the local checks, the key decrypted, the system built)
    /// and `pin` (the installer's key checked and pinned).
    pub phases: Vec<PhaseTime>,
    /// The whole command.
    pub seconds: f64,
}

/// The installer's key, as offered and then confirmed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installer {
    pub address: String,
    pub fingerprint: String,
    pub public_key: String,
}

/// What the caller is asked: the installer's key (when no `--fingerprint`),
/// and the disk plan (unless `--yes`).
pub trait Confirm {
    fn installer_key(&mut self, installer: &Installer) -> Result<bool>;
    fn disks(&mut self, host: &str, plan: &str) -> Result<bool>;
}

/// Everything the phases share: what was checked and loaded before the
/// installer is touched, the pinned connection, and the steps so far.
struct Ctx<'a> {
    opts: &'a InstallOptions,
    host_key: PublicHostKey,
    /// The normalised disko spec, when a phase runs on the installer.
    spec: Option<Vec<u8>>,
    /// The lab-held key, decrypted in memory (not in a dry run).
    private: Option<lab_keys::HostKey>,
    /// The system to install (`None` in a dry run that would build it).
    system: Option<PathBuf>,
    installer: Option<Installer>,
    pinned: Option<Pinned>,
    /// Whether the target's root is known to be mounted from the spec.
    mounted: bool,
    steps: Vec<Step>,
    say: &'a mut dyn FnMut(&str),
}

/// The phases in install order. Each is small and does its work through
/// [`Ctx::change`], the one place a dry run is decided.
type PhaseFn = fn(&mut Ctx, &mut dyn Confirm) -> Result<()>;

const PHASES: [(Phase, PhaseFn); 5] = [
    (Phase::Disk, disk_phase),
    (Phase::Keys, keys_phase),
    (Phase::Install, install_phase),
    (Phase::Reboot, reboot_phase),
    (Phase::Verify, verify_phase),
];

impl Ctx<'_> {
    /// One change to the target: in a dry run it is described ("would ..."),
    /// otherwise announced, done, and its tool's report kept.
    fn change(
        &mut self,
        phase: Phase,
        what: String,
        act: impl FnOnce(&mut Self) -> Result<String>,
    ) -> Result<()> {
        if self.opts.dry_run {
            self.note(phase, format!("would {what}"), false);
            return Ok(());
        }
        (self.say)(&format!("{}: {what}", phase.name()));
        self.steps.push(Step { phase, what: what.clone(), done: false, seconds: 0.0 });
        let started = Instant::now();
        let detail = act(self)?;
        if let Some(s) = self.steps.last_mut() {
            s.done = true;
            s.seconds = started.elapsed().as_secs_f64();
            if !detail.trim().is_empty() {
                s.what = format!("{what}\n{}", detail.trim_end());
            }
        }
        Ok(())
    }

    fn note(&mut self, phase: Phase, what: String, done: bool) {
        (self.say)(&format!("{}: {what}", phase.name()));
        self.steps.push(Step { phase, what, done, seconds: 0.0 });
    }

    fn remote(&self) -> Remote<'_> {
        Remote {
            pinned: self.pinned.as_ref().expect("the installer is pinned before its phases run"),
            address: &self.opts.target.address,
        }
    }

    fn spec(&self) -> &[u8] {
        self.spec.as_deref().unwrap_or_default()
    }

    /// `--root R --disk N=P ...` for the installer's labprov.
    fn disk_args(&self) -> String {
        let maps: String =
            self.opts.disks.iter().map(|d| format!(" --disk {}", quote(d))).collect();
        format!("--spec /dev/stdin --root {}{maps}", quote(&self.opts.root))
    }

    /// Resuming without the disk phase: the key and the system must land on
    /// the target's disks, not in the installer's memory. Idempotent.
    fn ensure_mounted(&mut self, phase: Phase) -> Result<()> {
        if self.mounted {
            return Ok(());
        }
        let what = format!(
            "mount the target's root on {} (labprov disk mount, root {})",
            self.opts.target.address, self.opts.root
        );
        self.change(phase, what, |ctx| {
            ctx.remote().run(
                "disk mount",
                &format!("labprov disk mount {}", ctx.disk_args()),
                Some(ctx.spec()),
            )
        })?;
        self.mounted = true;
        Ok(())
    }
}

/// The whole install: local checks, then the installer pinned, then the
/// chosen phases in order.
pub fn install(
    lab: &Lab,
    opts: &InstallOptions,
    identity: Option<&AdminIdentity>,
    confirm: &mut dyn Confirm,
    say: &mut dyn FnMut(&str),
) -> Result<Report> {
    let started = Instant::now();
    let mut times = Vec::new();
    let mut timed = |phase: &'static str, since: Instant| {
        times.push(PhaseTime { phase, seconds: since.elapsed().as_secs_f64() });
    };
    let mut ctx = prepare(lab, opts, identity, say)?;
    timed("prepare", started);
    if ctx.spec.is_some() {
        let at = Instant::now();
        pin_installer(&mut ctx, confirm)?;
        timed("pin", at);
    }
    for (phase, run) in PHASES {
        if opts.runs(phase) {
            lab_cli::interrupt::check()?;
            let at = Instant::now();
            run(&mut ctx, confirm)?;
            if !opts.dry_run {
                (ctx.say)(&format!(
                    "{}: done in {:.1} s",
                    phase.name(),
                    at.elapsed().as_secs_f64()
                ));
            }
            timed(phase.name(), at);
        }
    }
    Ok(Report {
        host: opts.host.clone(),
        address: opts.target.address.clone(),
        installer: ctx.installer,
        host_fingerprint: ctx.host_key.fingerprint(),
        system: ctx.system,
        dry_run: opts.dry_run,
        steps: ctx.steps,
        phases: times,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Everything that can be checked here is, before the installer is touched.
fn prepare<'a>(
    lab: &'a Lab,
    opts: &'a InstallOptions,
    identity: Option<&AdminIdentity>,
    say: &'a mut dyn FnMut(&str),
) -> Result<Ctx<'a>> {
    opts.validate()?;
    let host = lab.facts()?.host(&opts.host)?.clone();
    if host.class != HostClass::Nixos {
        return Err(Error::NotNixos {
            host: opts.host.clone(),
            class: format!("{:?}", host.class).to_lowercase(),
        });
    }
    let keys = LabKeys::load(lab)?;
    let recorded = ops::show(&lab.root, &keys, &opts.host)?;
    let host_key = PublicHostKey::parse(&recorded.public_key)
        .map_err(|e| Error::BadRecordedKey { host: opts.host.clone(), reason: e.to_string() })?;
    let on_installer = [Phase::Disk, Phase::Keys, Phase::Install, Phase::Reboot];
    let spec = if on_installer.iter().any(|p| opts.runs(*p)) {
        let (normalized, devices) =
            disk::load(&SpecSource::Host { lab: lab.clone(), host: opts.host.clone() })?;
        disk::check_hooks(&normalized)?;
        lab_disko::plan::plan(&devices).map_err(disk::DiskError::from)?;
        Some(serde_json::to_vec(&normalized).map_err(|e| std::io::Error::other(e.to_string()))?)
    } else {
        None
    };
    // A dry run decrypts nothing: it only checks the key is there to decrypt.
    let private = match (opts.runs(Phase::Keys), opts.dry_run, identity) {
        (false, _, _) => None,
        (true, true, _) => {
            if !lab_keys::secrets::encrypted_key_path(&lab.root, &opts.host).is_file() {
                return Err(Error::NoLabKey { host: opts.host.clone() });
            }
            None
        }
        (true, false, Some(id)) => Some(ops::injection_material_with(&lab.root, &opts.host, id)?),
        (true, false, None) => Some(ops::injection_material(lab, &opts.host)?),
    };
    let system = if opts.runs(Phase::Install) { system_closure(lab, opts, say)? } else { None };
    Ok(Ctx {
        opts,
        host_key,
        spec,
        private,
        system,
        installer: None,
        pinned: None,
        mounted: false,
        steps: Vec::new(),
        say,
    })
}

/// The installer's key is a candidate until `--fingerprint` or the operator
/// confirms it; every later connection trusts exactly that key.
fn pin_installer(ctx: &mut Ctx, confirm: &mut dyn Confirm) -> Result<()> {
    let opts = ctx.opts;
    let offered = enrol::keyscan(&opts.target.address, opts.target.port)?;
    let found = Installer {
        address: opts.target.address.clone(),
        fingerprint: offered.fingerprint(),
        public_key: offered.openssh(),
    };
    match (&opts.manifest, &opts.fingerprint) {
        // The key labimg put on the ISO: exactly that one, no question.
        (Some(manifest), _) => {
            if !manifest.key.same_key(&offered) {
                return Err(Error::NotTheManifestInstaller {
                    address: found.address,
                    manifest: manifest.path.clone(),
                    expected: manifest.key.fingerprint(),
                    got: found.fingerprint,
                });
            }
        }
        (None, Some(fp)) => {
            let expected = enrol::check_fingerprint(fp)?;
            if expected != found.fingerprint {
                return Err(Error::InstallerMismatch {
                    address: found.address,
                    expected,
                    got: found.fingerprint,
                });
            }
        }
        (None, None) => {
            if !confirm.installer_key(&found)? {
                return Err(Error::NotConfirmed { address: found.address });
            }
        }
    }
    ctx.installer = Some(found);
    ctx.pinned =
        Some(Pinned::new(&opts.target, &format!("labprov-installer-{}", opts.host), &offered)?);
    ctx.remote().require_labprov()
}

/// The installer's own labprov applies the spec; its plan (every disk it
/// writes, with model, size and serial) is shown and confirmed first.
fn disk_phase(ctx: &mut Ctx, confirm: &mut dyn Confirm) -> Result<()> {
    let wipe = if ctx.opts.wipe { " --wipe" } else { "" };
    let apply = format!("labprov disk apply {}{wipe}", ctx.disk_args());
    let plan = ctx.remote().run("disk plan", &format!("{apply} --dry-run"), Some(ctx.spec()))?;
    if !ctx.opts.dry_run && !ctx.opts.yes && !confirm.disks(&ctx.opts.host, &plan)? {
        return Err(Error::NotConfirmed { address: ctx.opts.target.address.clone() });
    }
    let what = format!(
        "apply the disk spec on {} (root {}):\n{}",
        ctx.opts.target.address,
        ctx.opts.root,
        plan.trim_end()
    );
    ctx.change(Phase::Disk, what, |ctx| {
        ctx.remote().stream("disk apply", &format!("{apply} --yes"), Some(ctx.spec()))
    })?;
    ctx.mounted = !ctx.opts.dry_run;
    Ok(())
}

/// The lab-held key streamed from memory into ROOT/etc/ssh: 0600 under
/// umask 077, through a temporary name and a rename.
fn keys_phase(ctx: &mut Ctx, _: &mut dyn Confirm) -> Result<()> {
    ctx.ensure_mounted(Phase::Keys)?;
    let key_dir = format!("{}/etc/ssh", ctx.opts.root.trim_end_matches('/'));
    let key_file = format!(
        "{key_dir}/{}",
        Path::new(HOST_KEY_PATH)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("ssh_host_ed25519_key")
    );
    let what = format!(
        "place {}'s key ({}) at {key_file} (0600)",
        ctx.opts.host,
        ctx.host_key.fingerprint()
    );
    ctx.change(Phase::Keys, what, |ctx| {
        let key =
            ctx.private.as_ref().ok_or_else(|| Error::NoLabKey { host: ctx.opts.host.clone() })?;
        let put = |target: &str, mode: &str, data: &[u8]| {
            ctx.remote().run("host key", &put_file(&key_dir, target, mode, data.len()), Some(data))
        };
        put(&key_file, "600", key.private_openssh().as_bytes())?;
        put(&format!("{key_file}.pub"), "644", format!("{}\n", key.public_openssh()).as_bytes())?;
        Ok(String::new())
    })
}

/// The shell command that puts stdin (`len` bytes) at `target` in `dir`
/// with `mode`. The directories get the usual modes (the new system's /etc
/// must stay readable), then umask 077 before any key byte lands: not even
/// the temporary file is readable by others, and one left by an earlier run
/// (even a symlink) is removed, not written through. Only a complete copy is
/// renamed into place: when the connection drops mid-transfer, `cat` sees an
/// early end of input and succeeds, and a cut key must not become the
/// host's key (nor stay behind under its temporary name).
fn put_file(dir: &str, target: &str, mode: &str, len: usize) -> String {
    let (d, t, tmp) = (quote(dir), quote(target), quote(&format!("{target}.labprov-tmp")));
    format!(
        "umask 022 && mkdir -p {d} && umask 077 && rm -f {tmp} && cat > {tmp} && \
         {{ size=$(wc -c < {tmp}) && [ $size -eq {len} ] || {{ rm -f {tmp}; false; }}; }} && \
         chmod {mode} {tmp} && mv -f {tmp} {t}"
    )
}

/// The closure into ROOT/nix/store over the pinned connection, then
/// `nixos-install --system` on the installer.
fn install_phase(ctx: &mut Ctx, _: &mut dyn Confirm) -> Result<()> {
    ctx.ensure_mounted(Phase::Install)?;
    let shown = match &ctx.system {
        Some(s) => s.display().to_string(),
        None => format!("the flake's {} toplevel (built first)", ctx.opts.host),
    };
    let root = ctx.opts.root.clone();
    ctx.change(
        Phase::Install,
        format!("copy {shown} into {root}/nix/store on {}", ctx.opts.target.address),
        |ctx| {
            let system = ctx
                .system
                .as_deref()
                .ok_or_else(|| Error::NotASystem { path: PathBuf::from(&shown) })?;
            nix_copy(
                ctx.pinned.as_ref().expect("pinned"),
                &ctx.opts.target.address,
                &ctx.opts.root,
                system,
            )?;
            Ok(String::new())
        },
    )?;
    ctx.change(Phase::Install, format!("nixos-install --root {root} --system {shown}"), |ctx| {
        let system = ctx.system.as_ref().map(|s| quote(&s.display().to_string())).unwrap_or_default();
        let root = quote(&ctx.opts.root);
        ctx.remote().stream(
            "nixos-install",
            &format!("mkdir -p {root}/tmp && chmod 1777 {root}/tmp && nixos-install --root {root} --no-root-passwd --no-channel-copy --system {system}"),
            None,
        )
    })
}

/// Unmount the target's disks and reboot the installer into the new system.
fn reboot_phase(ctx: &mut Ctx, _: &mut dyn Confirm) -> Result<()> {
    let what = format!("unmount {} and reboot {}", ctx.opts.root, ctx.opts.target.address);
    ctx.change(Phase::Reboot, what, |ctx| {
        let out = ctx.remote().run(
            "unmount",
            &format!("labprov disk unmount {}", ctx.disk_args()),
            Some(ctx.spec()),
        )?;
        // Detached, so this connection closes cleanly before the machine goes.
        ctx.remote().run(
            "reboot",
            "nohup sh -c 'sleep 3 && systemctl reboot' >/dev/null 2>&1 &",
            None,
        )?;
        Ok(out)
    })?;
    ctx.mounted = false;
    Ok(())
}

/// The host must answer with its own recorded key, nothing else.
fn verify_phase(ctx: &mut Ctx, _: &mut dyn Confirm) -> Result<()> {
    let what = format!(
        "wait for {} at {} to answer with {}",
        ctx.opts.host,
        ctx.opts.target.address,
        ctx.host_key.fingerprint()
    );
    ctx.change(Phase::Verify, what, |ctx| {
        verify(ctx.opts, &ctx.host_key)?;
        Ok(String::new())
    })
}

/// Commands on the pinned installer.
struct Remote<'a> {
    pinned: &'a Pinned,
    address: &'a str,
}

impl Remote<'_> {
    fn run(&self, step: &str, command: &str, stdin: Option<&[u8]>) -> Result<String> {
        let out = self.pinned.run(command, stdin)?;
        if !out.success() {
            return Err(self.failed(
                step,
                &lab_cli::tool::describe_status(out.status),
                &out.stderr,
            ));
        }
        Ok(out.text())
    }

    /// A long remote step (disk apply, nixos-install): its output streams.
    fn stream(&self, step: &str, command: &str, stdin: Option<&[u8]>) -> Result<String> {
        match self.pinned.stream(command, stdin, &format!("{step} on {}", self.address)) {
            Ok(out) => Ok(out.text()),
            Err(lab_cli::ToolError::Failed { status, stderr, .. }) => {
                Err(self.failed(step, &status, &stderr))
            }
            Err(other) => Err(other.into()),
        }
    }

    fn failed(&self, step: &str, status: &str, stderr: &str) -> Error {
        Error::Remote {
            step: step.to_string(),
            address: self.address.to_string(),
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        }
    }

    /// The installer's own labprov does the disk work. Only "not found" from
    /// the shell means it is missing; ssh's own failures (255) say theirs.
    fn require_labprov(&self) -> Result<()> {
        let out = self.pinned.run("command -v labprov", None)?;
        match out.status.code() {
            Some(0) => Ok(()),
            Some(1) | Some(127) => {
                Err(Error::NoRemoteLabprov { address: self.address.to_string() })
            }
            _ => {
                Err(self.failed("login", &lab_cli::tool::describe_status(out.status), &out.stderr))
            }
        }
    }
}

/// `--system`, checked, or the flake's toplevel for the host, built here
/// (`None` in a dry run: nothing is built).
fn system_closure(
    lab: &Lab,
    opts: &InstallOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Option<PathBuf>> {
    if let Some(path) = &opts.system {
        if !path.join("nixos-version").is_file() && !path.join("init").exists() {
            return Err(Error::NotASystem { path: path.clone() });
        }
        return Ok(Some(path.clone()));
    }
    if opts.dry_run {
        return Ok(None);
    }
    let attr = format!(
        "{}#nixosConfigurations.{}.config.system.build.toplevel",
        lab.root.display(),
        opts.host
    );
    say(&format!("install: nix build {attr}"));
    let out = lab_cli::Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--no-link",
            "--print-out-paths",
        ])
        .arg(&attr)
        .label(format!("building {}'s system", opts.host))
        .stream()?;
    let path = out.text().lines().last().unwrap_or_default().trim().to_string();
    Ok(Some(PathBuf::from(path)))
}

/// `nix copy` of the closure into ROOT's store over the pinned connection.
/// The root was validated to plain characters, so one level of encoding
/// inside the store URI is enough.
fn nix_copy(pinned: &Pinned, address: &str, root: &str, system: &Path) -> Result<()> {
    let sshopts = pinned.nix_sshopts().map_err(Error::SshOpts)?;
    let store = format!(
        "ssh://{}?remote-store=local%3Froot%3D{}&compress=true",
        pinned.destination(),
        root.replace('/', "%2F")
    );
    lab_cli::Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--substitute-on-destination",
            "--to",
            &store,
        ])
        .arg(system)
        .env("NIX_SSHOPTS", sshopts)
        .label(format!("copying {} to the target", system.display()))
        .stream()
        .map_err(|e| match e {
            // Like a failed step on the installer: the cause, then how to resume.
            lab_cli::ToolError::Failed { status, stderr, .. } => Error::Remote {
                step: "nix copy".into(),
                address: address.to_string(),
                status,
                stderr: stderr.trim().to_string(),
            },
            other => other.into(),
        })?;
    Ok(())
}

/// Polls until the host answers with exactly its recorded key.
fn verify(opts: &InstallOptions, key: &PublicHostKey) -> Result<()> {
    // A booting host often takes the connection and says nothing until its
    // sshd runs: each attempt waits 5 s at most, and the next follows 1 s on.
    let pinned = Pinned::new(&opts.target, &format!("labprov-host-{}", opts.host), key)?.polling(5);
    let started = Instant::now();
    loop {
        let last = match pinned.run("true", None) {
            Ok(o) if o.success() => return Ok(()),
            Ok(o) => o.stderr.trim().to_string(),
            Err(
                e @ (lab_cli::ToolError::Missing { .. } | lab_cli::ToolError::Interrupted { .. }),
            ) => return Err(e.into()),
            Err(e) => e.to_string(),
        };
        // Ctrl-C while waiting stops the wait, not only the next attempt.
        lab_cli::interrupt::check()?;
        if started.elapsed() >= opts.wait {
            return Err(Error::NotVerified {
                host: opts.host.clone(),
                address: opts.target.address.clone(),
                seconds: opts.wait.as_secs(),
                last,
            });
        }
        std::thread::sleep(
            Duration::from_secs(1)
                .min(opts.wait.saturating_sub(started.elapsed()))
                .max(Duration::from_millis(100)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_addresses_are_plain_or_refused() {
        let opts = |root: &str, address: &str| InstallOptions {
            host: "rydev".into(),
            target: Target {
                address: address.into(),
                port: 22,
                user: "root".into(),
                identity: None,
            },
            fingerprint: None,
            manifest: None,
            disks: Vec::new(),
            root: root.into(),
            system: None,
            phases: Phase::ALL.to_vec(),
            wipe: false,
            yes: false,
            dry_run: false,
            wait: Duration::from_secs(1),
        };
        assert!(opts("/mnt", "10.0.0.23").validate().is_ok());
        assert!(opts("/mnt/target-1", "fe80::1%eth0").validate().is_ok());
        for root in ["mnt", "/", "//", "/mnt/a b", "/mnt&x", "/mnt?y", "/m%2F"] {
            assert!(
                matches!(opts(root, "10.0.0.23").validate(), Err(Error::BadRoot { .. })),
                "{root}"
            );
        }
        for address in ["", "-oProxyCommand=x", "a b", "host;reboot"] {
            assert!(
                matches!(opts("/mnt", address).validate(), Err(Error::BadAddress(_))),
                "{address}"
            );
        }
    }

    #[test]
    fn a_key_put_renames_only_a_complete_copy() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("etc/ssh");
        let target = ssh.join("key");
        let put = |sent: &[u8], len: usize| {
            let cmd = put_file(ssh.to_str().unwrap(), target.to_str().unwrap(), "600", len);
            let mut child = std::process::Command::new("sh")
                .args(["-c", &cmd])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), sent).unwrap();
            drop(child.stdin.take());
            child.wait().unwrap().success()
        };
        // The input ends early (a dropped connection): nothing in place,
        // nothing left under the temporary name.
        assert!(!put(b"bytes of a", 40));
        assert!(!target.exists());
        assert!(!ssh.join("key.labprov-tmp").exists());
        let whole = b"bytes of a key file, only their length matters\n";
        assert!(put(whole, whole.len()));
        assert_eq!(std::fs::read(&target).unwrap(), whole);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!ssh.join("key.labprov-tmp").exists());
        // A cut copy later leaves the complete key in place.
        assert!(!put(b"x", 40));
        assert_eq!(std::fs::read(&target).unwrap(), whole);
    }

    #[test]
    fn phases_parse_in_install_order_and_refuse_unknown_words() {
        assert_eq!(Phase::parse_list("verify,disk").unwrap(), vec![Phase::Disk, Phase::Verify]);
        assert_eq!(
            Phase::parse_list("keys, keys ,install").unwrap(),
            vec![Phase::Keys, Phase::Install]
        );
        assert!(matches!(Phase::parse_list("disk,kexec"), Err(Error::BadPhase(w)) if w == "kexec"));
        assert!(matches!(Phase::parse_list(" , "), Err(Error::BadPhase(_))));
    }
}
