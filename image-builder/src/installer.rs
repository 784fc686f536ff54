//! `labimg build installer-ARCH`: the lab's installer ISO, keyed after its
//! Nix build. A fresh ed25519 host key and the admins' SSH public keys go
//! into the finished base ISO as files under `/lab/`, with xorriso replaying
//! the base's boot records (El Torito entries, MBR/GPT hybrid tables,
//! appended partitions) unchanged: nothing is rebuilt and no key ever enters
//! the Nix store. See docs/decisions/0002-installer-keying.md.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use lab_cli::files::{ensure_dir, Pending};
use lab_cli::interrupt;
use lab_cli::progress::Progress;
use lab_facts::Admin;
use lab_keys::HostKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Names `labimg build` hands to this module rather than to SD images.
pub const NAME_PREFIX: &str = "installer-";
/// The architectures the flake has installer systems for.
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];
/// The directory on the ISO filesystem that holds the keys.
pub const PAYLOAD_DIR: &str = "/lab";
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
pub const HOST_KEY_PUB_FILE: &str = "ssh_host_ed25519_key.pub";
pub const AUTHORIZED_KEYS_FILE: &str = "authorized_keys";
/// Where the admins' keys come from, relative to the lab root.
pub const ADMINS_FILE: &str = "hosts/admins.nix";

/// ISO 9660: the primary volume descriptor sits at sector 16 of 2048 bytes.
const PVD_OFFSET: u64 = 16 * 2048;
/// xorriso writes a little more than the base (padding, the new files, the
/// session's first 64 KiB): what the free-space check adds to the base size.
const GROWTH: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown installer `{name}`: the flake has installer-x86_64 and installer-aarch64 \
         (nixosConfigurations.installer-ARCH)"
    )]
    UnknownInstaller { name: String },
    #[error(
        "no admin SSH keys in {path}: the installer would let nobody in. Add your public key to \
         an admin's `sshKeys` (`cat ~/.ssh/id_ed25519.pub`) and build again"
    )]
    NoAdminKeys { path: PathBuf },
    #[error(
        "admin `{admin}` in {path} has an SSH key that is not an OpenSSH public key line: `{line}`"
    )]
    BadAdminKey { admin: String, path: PathBuf, line: String },
    #[error(
        "cannot build the base installer ISO with Nix ({source}); pass --iso BASE.iso with an ISO \
         built elsewhere (`nix build .#nixosConfigurations.{name}.config.system.build.isoImage`)"
    )]
    Nix { name: String, source: lab_cli::ToolError },
    #[error("the Nix build of {name} gave {path}, which holds no iso/*.iso; pass --iso BASE.iso")]
    NoIsoInBuild { name: String, path: PathBuf },
    #[error("cannot read the base ISO {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not an ISO 9660 image (no CD001 volume descriptor at sector 16); pass the \
         installer ISO Nix built (result/iso/*.iso)"
    )]
    NotIso { path: PathBuf },
    #[error(
        "{path} is truncated: {what} ends at byte {need}, the file has {have}; copy or build \
         the base ISO again"
    )]
    Truncated { path: PathBuf, what: String, need: u64, have: u64 },
    #[error(
        "{path} is not an installer: no boot records (xorriso finds no El Torito boot catalog); \
         pass the installer ISO Nix built"
    )]
    NoBootRecords { path: PathBuf },
    #[error(
        "{path} does not boot {arch}: it has no EFI loader {loader} (its EFI loaders: {found}); \
         pass the installer-{arch} ISO, not another architecture's"
    )]
    WrongArch { path: PathBuf, arch: &'static str, loader: &'static str, found: String },
    #[error("xorriso could not read the base ISO {path}: {source}")]
    Inspect { path: PathBuf, source: lab_cli::ToolError },
    #[error("keying the ISO with xorriso failed: {source}")]
    Xorriso { source: lab_cli::ToolError },
    #[error(
        "the keyed ISO's boot entries differ from the base's (base: {base:?}, keyed: {keyed:?}); \
         this xorriso cannot replay them, nothing was written"
    )]
    BootChanged { base: Vec<String>, keyed: Vec<String> },
    #[error(
        "not enough free space in {dir}: the installer ISO needs about {need_mib} MiB, {free_mib} \
         MiB are free. Free some space or pass --out on another disk"
    )]
    DiskFull { dir: PathBuf, need_mib: u64, free_mib: u64 },
    #[error("the output disk under {dir} is full (xorriso: {detail}); free some space or pass --out on another disk")]
    DiskFullWhileWriting { dir: PathBuf, detail: String },
    #[error("cannot stage the installer keys in a private temporary directory: {source}")]
    Stage { source: io::Error },
    #[error("writing {what} failed: {source}")]
    Write { what: &'static str, source: io::Error },
    #[error(transparent)]
    Key(#[from] lab_keys::Error),
    #[error(transparent)]
    Output(#[from] lab_cli::files::Error),
    #[error("{0}: nothing was left behind; run the same command again to start over")]
    Interrupted(#[from] interrupt::Interrupted),
}

impl lab_cli::Classify for Error {
    fn class(&self) -> lab_cli::Class {
        match self {
            Error::Interrupted(_) => lab_cli::Class::Interrupted,
            Error::Nix { source, .. }
            | Error::Inspect { source, .. }
            | Error::Xorriso { source } => source.class(),
            _ => lab_cli::Class::Failure,
        }
    }
}

/// Whether `labimg build NAME` means an installer ISO.
pub fn is_installer(name: &str) -> bool {
    name.starts_with(NAME_PREFIX)
}

/// The architecture in `installer-ARCH`, if the flake has that installer.
pub fn arch_of(name: &str) -> Result<&'static str, Error> {
    let arch = name.strip_prefix(NAME_PREFIX).unwrap_or_default();
    ARCHES
        .into_iter()
        .find(|a| *a == arch)
        .ok_or_else(|| Error::UnknownInstaller { name: name.to_string() })
}

/// Where the base ISO comes from.
#[derive(Debug, Clone)]
pub enum BaseInput {
    /// An ISO already built (by Nix elsewhere, or a stand-in).
    Iso(PathBuf),
    /// `nix build` of the flake's `installer-ARCH` isoImage.
    Flake,
}

pub struct InstallerOptions {
    pub lab_root: PathBuf,
    /// `installer-x86_64` or `installer-aarch64`.
    pub name: String,
    pub base: BaseInput,
    /// The admins from the lab's facts (hosts/admins.nix).
    pub admins: std::collections::BTreeMap<String, Admin>,
    /// A fixed host key (reproducible builds, tests); default a fresh one.
    pub host_key: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub epoch: u64,
    pub progress: Progress,
}

/// Everything that went into the ISO: `installer-ARCH.manifest.json`.
/// Public material only; the private key appears as its fingerprint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallerManifest {
    pub labimg: &'static str,
    pub host: String,
    pub arch: String,
    pub source_date_epoch: u64,
    pub iso: IsoInfo,
    pub base: BaseInfo,
    pub payload: Vec<PayloadFile>,
    pub host_key: HostKeyInfo,
    pub admin_keys: Vec<AdminKeyInfo>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IsoInfo {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseInfo {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub volume_id: String,
    /// El Torito entries as `xorriso -report_el_torito plain` lists them
    /// (number, platform, bootable, emulation, load segment, header,
    /// load size), without the block address, which moves when files are
    /// added. The keyed ISO has exactly these.
    pub boot_entries: Vec<String>,
}

/// A file under /lab on the ISO. Public files carry their sha256; the
/// private key only its fingerprint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadFile {
    pub path: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostKeyInfo {
    pub path: String,
    pub public_key: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminKeyInfo {
    pub admin: String,
    pub public_key: String,
    pub fingerprint: String,
}

#[derive(Debug, Serialize)]
pub struct Outputs {
    pub iso: PathBuf,
    pub sha256: PathBuf,
    pub manifest: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallerSummary {
    pub manifest: InstallerManifest,
    pub outputs: Outputs,
    pub seconds: f64,
}

/// What `--dry-run` prints: every check done, nothing written.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallerPlan {
    pub host: String,
    pub arch: String,
    pub iso: PathBuf,
    pub base: BaseInfo,
    pub payload: Vec<String>,
    /// The given key's; `None` when each build makes a fresh one.
    pub host_key: Option<HostKeyInfo>,
    pub admin_keys: Vec<AdminKeyInfo>,
    pub source_date_epoch: u64,
    pub dry_run: bool,
}

/// The phases after the checks, in order; Ctrl-C is checked between them.
type PhaseFn = fn(&mut Ctx) -> Result<(), Error>;

const PHASES: [PhaseFn; 5] = [key_phase, stage_phase, xorriso_phase, digest_phase, commit_phase];

/// What the phases share: the checked inputs (all a dry run looks at), then
/// the key, its staging directory, the ISO under its temporary name and
/// what the phases made of it.
struct Ctx<'a> {
    opts: &'a InstallerOptions,
    arch: &'static str,
    base: BaseInfo,
    admin_keys: Vec<AdminKeyInfo>,
    /// Given with --host-key; otherwise made by [`key_phase`].
    key: Option<HostKey>,
    /// The key files for xorriso to read; removed when the context goes.
    stage: Option<tempfile::TempDir>,
    /// The keyed ISO; removed unless [`commit_phase`] renames it.
    iso: Option<Pending>,
    sha256: Option<String>,
    done: Option<(InstallerManifest, Outputs)>,
}

impl Ctx<'_> {
    fn name(&self) -> &str {
        &self.opts.name
    }

    fn iso_file(&self) -> String {
        format!("{}.iso", self.name())
    }

    fn iso_path(&self) -> PathBuf {
        self.opts.out_dir.join(self.iso_file())
    }

    fn key(&self) -> &HostKey {
        self.key.as_ref().expect("the key phase runs first")
    }

    fn authorized_keys(&self) -> String {
        self.admin_keys.iter().map(|k| format!("{}\n", k.public_key)).collect()
    }

    fn public_key_file(&self) -> String {
        format!("{}\n", self.key().public_openssh())
    }

    fn plan(&self) -> InstallerPlan {
        InstallerPlan {
            host: self.name().to_string(),
            arch: self.arch.to_string(),
            iso: self.iso_path(),
            base: self.base.clone(),
            payload: payload_paths(),
            host_key: self.key.as_ref().map(host_key_info),
            admin_keys: self.admin_keys.clone(),
            source_date_epoch: self.opts.epoch,
            dry_run: true,
        }
    }

    fn manifest(&self, size: u64, sha256: &str) -> InstallerManifest {
        let key = self.key();
        let public = self.public_key_file();
        let authorized = self.authorized_keys();
        let public_file = |name: &str, content: &str| PayloadFile {
            path: format!("{PAYLOAD_DIR}/{name}"),
            mode: "0644".into(),
            size: Some(content.len() as u64),
            sha256: Some(hex::encode(Sha256::digest(content.as_bytes()))),
            fingerprint: None,
        };
        InstallerManifest {
            labimg: env!("CARGO_PKG_VERSION"),
            host: self.name().to_string(),
            arch: self.arch.to_string(),
            source_date_epoch: self.opts.epoch,
            iso: IsoInfo { file: self.iso_file(), size, sha256: sha256.to_string() },
            base: self.base.clone(),
            payload: vec![
                PayloadFile {
                    path: format!("{PAYLOAD_DIR}/{HOST_KEY_FILE}"),
                    mode: "0600".into(),
                    size: None,
                    sha256: None,
                    fingerprint: Some(key.fingerprint()),
                },
                public_file(HOST_KEY_PUB_FILE, &public),
                public_file(AUTHORIZED_KEYS_FILE, &authorized),
            ],
            host_key: host_key_info(key),
            admin_keys: self.admin_keys.clone(),
        }
    }
}

fn payload_paths() -> Vec<String> {
    [HOST_KEY_FILE, HOST_KEY_PUB_FILE, AUTHORIZED_KEYS_FILE]
        .map(|f| format!("{PAYLOAD_DIR}/{f}"))
        .to_vec()
}

fn host_key_info(key: &HostKey) -> HostKeyInfo {
    HostKeyInfo {
        path: format!("{PAYLOAD_DIR}/{HOST_KEY_FILE}"),
        public_key: key.public_openssh(),
        fingerprint: key.fingerprint(),
    }
}

/// Every check before the first byte is written; a dry run stops here.
fn prepare(opts: &InstallerOptions) -> Result<Ctx<'_>, Error> {
    let arch = arch_of(&opts.name)?;
    let admin_keys = admin_keys(&opts.lab_root, &opts.admins)?;
    let key = opts.host_key.as_deref().map(HostKey::load).transpose()?;
    let base_path = match &opts.base {
        BaseInput::Iso(path) => path.clone(),
        BaseInput::Flake => nix_build_base(&opts.lab_root, &opts.name)?,
    };
    let base = check_base(&base_path, arch, opts.progress)?;
    Ok(Ctx { opts, arch, base, admin_keys, key, stage: None, iso: None, sha256: None, done: None })
}

/// The admins' SSH keys in the facts' order, each checked to be a key.
fn admin_keys(
    lab_root: &Path,
    admins: &std::collections::BTreeMap<String, Admin>,
) -> Result<Vec<AdminKeyInfo>, Error> {
    let path = lab_root.join(ADMINS_FILE);
    let mut keys = Vec::new();
    for (name, admin) in admins {
        for line in admin.ssh_keys.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
            let fingerprint =
                lab_keys::public_fingerprint(line).ok_or_else(|| Error::BadAdminKey {
                    admin: name.clone(),
                    path: path.clone(),
                    line: line.chars().take(40).collect(),
                })?;
            keys.push(AdminKeyInfo {
                admin: name.clone(),
                public_key: line.to_string(),
                fingerprint,
            });
        }
    }
    if keys.is_empty() {
        return Err(Error::NoAdminKeys { path });
    }
    Ok(keys)
}

/// `nix build` of the flake's installer ISO (minutes: streamed), then the
/// one .iso under its `iso/`.
fn nix_build_base(lab: &Path, name: &str) -> Result<PathBuf, Error> {
    let attr = format!("{}#nixosConfigurations.{name}.config.system.build.isoImage", lab.display());
    let out = lab_cli::Cmd::new("nix")
        .args(["build", "--no-link", "--print-out-paths", &attr])
        .label(format!("building {name}'s base ISO"))
        .stream()
        .map_err(|source| Error::Nix { name: name.to_string(), source })?;
    let out = PathBuf::from(out.text().trim());
    let iso = fs::read_dir(out.join("iso"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "iso"));
    iso.ok_or(Error::NoIsoInBuild { name: name.to_string(), path: out })
}

/// The base is a whole ISO 9660 image with El Torito boot records for
/// `arch`: the volume descriptor, the sizes its volume and its partition
/// table claim, then xorriso's own reading of the boot catalog and of the
/// EFI loaders.
fn check_base(path: &Path, arch: &'static str, progress: Progress) -> Result<BaseInfo, Error> {
    let read_err = |source| Error::Read { path: path.to_path_buf(), source };
    // The manifest names the base by its full path (a Nix store path when
    // Nix built it).
    let path = &fs::canonicalize(path).map_err(read_err)?;
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(Error::NotIso { path: path.to_path_buf() });
    }
    let mut head = vec![0u8; (PVD_OFFSET + 2048) as usize];
    let got = read_up_to(&mut file, &mut head).map_err(read_err)?;
    let pvd = &head[PVD_OFFSET as usize..];
    if got < head.len() || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Err(Error::NotIso { path: path.to_path_buf() });
    }
    let volume_blocks = u64::from(u32::from_le_bytes(pvd[80..84].try_into().expect("4 bytes")));
    let block = u64::from(u16::from_le_bytes(pvd[128..130].try_into().expect("2 bytes")));
    let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
    let truncated = |what: String, need: u64| Error::Truncated {
        path: path.to_path_buf(),
        what,
        need,
        have: size,
    };
    if volume_blocks * block > size {
        return Err(truncated("the ISO 9660 volume".into(), volume_blocks * block));
    }
    // A hybrid image's MBR may describe partitions appended after the
    // volume (NixOS's EFI system partition): they must be whole too. The
    // GPT-protective entry can claim more than the image and is skipped.
    if head[510..512] == [0x55, 0xaa] {
        for (i, entry) in head[446..510].chunks(16).enumerate() {
            let kind = entry[4];
            let start = u64::from(u32::from_le_bytes(entry[8..12].try_into().expect("4")));
            let sectors = u64::from(u32::from_le_bytes(entry[12..16].try_into().expect("4")));
            let end = (start + sectors) * 512;
            if kind != 0 && kind != 0xee && sectors != 0 && end > size {
                return Err(truncated(format!("MBR partition {}", i + 1), end));
            }
        }
    }
    // A GPT keeps its backup header in the image's last sector.
    if &head[512..520] == b"EFI PART" {
        let backup = u64::from_le_bytes(head[512 + 32..512 + 40].try_into().expect("8 bytes"));
        // Saturating: the field comes from the file, which may be crafted.
        let need = backup.saturating_add(1).saturating_mul(512);
        if need > size {
            return Err(truncated("the GPT backup header".into(), need));
        }
    }
    let boot_entries = boot_entries(path)?;
    if boot_entries.is_empty() {
        return Err(Error::NoBootRecords { path: path.to_path_buf() });
    }
    // NixOS's ISO carries its EFI loaders on the ISO filesystem too
    // (/EFI/BOOT, beside boot/efi.img). Refused only when there are loaders
    // and none is this architecture's: an ISO with none there may still
    // have one inside its El Torito image.
    let loaders = efi_loaders(path)?;
    let loader = efi_loader_name(arch);
    if !loaders.is_empty() && !loaders.iter().any(|l| l.eq_ignore_ascii_case(loader)) {
        let found = loaders.join(", ");
        return Err(Error::WrongArch { path: path.to_path_buf(), arch, loader, found });
    }
    let sha256 = sha256_file(path, progress).map_err(read_err)?;
    Ok(BaseInfo { path: path.to_path_buf(), size, sha256, volume_id, boot_entries })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The El Torito entries of an ISO as xorriso reports them, each without
/// its block address (see [`BaseInfo::boot_entries`]).
pub fn boot_entries(iso: &Path) -> Result<Vec<String>, Error> {
    let out = lab_cli::Cmd::new("xorriso")
        .args(["-no_rc", "-abort_on", "FAILURE", "-indev"])
        .arg(iso)
        .args(["-report_el_torito", "plain"])
        .run()
        .map_err(|source| Error::Inspect { path: iso.to_path_buf(), source })?;
    Ok(parse_boot_entries(&out.text()))
}

/// The removable-media EFI loader UEFI firmware starts on `arch` (NixOS's
/// ISO has it as EFI/BOOT/BOOTX64.EFI or BOOTAA64.EFI).
fn efi_loader_name(arch: &str) -> &'static str {
    match arch {
        "aarch64" => "bootaa64.efi",
        _ => "bootx64.efi",
    }
}

/// The file names of every `*.efi` on the ISO filesystem.
fn efi_loaders(iso: &Path) -> Result<Vec<String>, Error> {
    let out = lab_cli::Cmd::new("xorriso")
        .args(["-no_rc", "-abort_on", "FAILURE", "-indev"])
        .arg(iso)
        .args(["-find", "/", "-type", "f", "-name", "*.[eE][fF][iI]"])
        .run()
        .map_err(|source| Error::Inspect { path: iso.to_path_buf(), source })?;
    Ok(parse_found_names(&out.text()))
}

/// `xorriso -find` prints each path quoted, one per line; the names.
fn parse_found_names(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| l.trim().strip_prefix('\'')?.strip_suffix('\''))
        .filter_map(|p| p.rsplit('/').next())
        .map(str::to_string)
        .collect()
}

fn parse_boot_entries(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .map(|rest| {
            let mut words: Vec<&str> = rest.split_whitespace().collect();
            words.pop();
            words.join(" ")
        })
        .collect()
}

/// The sha256 of a file, read in large blocks.
fn sha256_file(path: &Path, progress: Progress) -> io::Result<String> {
    let mut file = File::open(path)?;
    let bar = progress.bytes("sha256", file.metadata()?.len());
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => {
                hash.update(&buf[..n]);
                bar.inc(n as u64);
            }
        }
    }
    bar.finish_and_clear();
    Ok(hex::encode(hash.finalize()))
}

/// Every check and input of a build, nothing written.
pub fn plan(opts: &InstallerOptions) -> Result<InstallerPlan, Error> {
    let ctx = prepare(opts)?;
    check_free_space(&existing_ancestor(&opts.out_dir), ctx.base.size + GROWTH)?;
    Ok(ctx.plan())
}

/// The whole build: the checks, then each phase; Ctrl-C between phases (and
/// inside xorriso) stops it, and whatever was written goes with the context.
pub fn build(opts: &InstallerOptions) -> Result<InstallerSummary, Error> {
    let started = Instant::now();
    let mut ctx = prepare(opts)?;
    ensure_dir(&opts.out_dir)?;
    check_free_space(&opts.out_dir, ctx.base.size + GROWTH)?;
    for run in PHASES {
        interrupt::check()?;
        run(&mut ctx)?;
    }
    let (manifest, outputs) = ctx.done.take().expect("the commit phase is the last");
    Ok(InstallerSummary { manifest, outputs, seconds: started.elapsed().as_secs_f64() })
}

/// A fresh ed25519 key per build, unless one was given.
fn key_phase(ctx: &mut Ctx) -> Result<(), Error> {
    if ctx.key.is_none() {
        ctx.key = Some(HostKey::generate(&format!("root@{}", ctx.name())));
    }
    Ok(())
}

/// The payload in a private directory (0700, files 0600) for xorriso to
/// read: xorriso adds files only from paths (it refuses /proc/self/fd links
/// to memory files). In memory where the system offers it (the user's
/// runtime directory, else /dev/shm), so the private key reaches no disk but
/// the ISO; removed as soon as xorriso is done and however the build ends
/// (see docs/decisions/0002-installer-keying.md).
fn stage_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let writable =
        |d: &Path| d.is_dir() && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok();
    let parent = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/dev/shm")])
        .find(|d| d.is_absolute() && writable(d))
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(".labimg-installer-keys.")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
        .map_err(|source| Error::Stage { source })?;
    let private = ctx.key().private_openssh();
    let public = ctx.public_key_file();
    let authorized = ctx.authorized_keys();
    let files: [(&str, &[u8]); 3] = [
        (HOST_KEY_FILE, private.as_bytes()),
        (HOST_KEY_PUB_FILE, public.as_bytes()),
        (AUTHORIZED_KEYS_FILE, authorized.as_bytes()),
    ];
    for (name, content) in files {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join(name))
            .map_err(|source| Error::Stage { source })?;
        f.write_all(content).map_err(|source| Error::Stage { source })?;
    }
    ctx.stage = Some(dir);
    Ok(())
}

/// xorriso copies the base into the new ISO with its boot records replayed
/// and adds /lab. Fixed times (SOURCE_DATE_EPOCH for the volume dates, the
/// volume UUID, the GPT disk GUID and the new files; the base's files keep
/// their own), no startup files, root-owned payload with fixed modes: the
/// same inputs give the same bytes. The ISO file is created 0600 first and
/// xorriso writes into it, so the key is never readable by others.
fn xorriso_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let pending = Pending::create(&ctx.iso_path(), 0o600)?;
    let stage = ctx.stage.as_ref().expect("the stage phase runs first").path();
    let epoch = ctx.opts.epoch;
    let d = crate::fat::fat_datetime(epoch);
    // YYYYMMDDhhmmsscc, what GRUB's `search --fs-uuid` sees (FAT's clock is
    // the same one the SD images use: 1980 at the earliest).
    let uuid = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        d.date.year, d.date.month, d.date.day, d.time.hour, d.time.min, d.time.sec
    );
    let at = format!("={epoch}");
    let lab = PAYLOAD_DIR;
    let file = |n: &str| format!("{lab}/{n}");
    let cmd = lab_cli::Cmd::new("xorriso")
        .args(["-no_rc", "-abort_on", "FAILURE", "-indev"])
        .arg(&ctx.base.path)
        .arg("-outdev")
        .arg(pending.path())
        // As `xorriso -as mkisofs` (how NixOS makes the base) writes: no
        // 64 KiB multi-session TOC before the volume, the 300 KiB padding
        // inside it, so a GPT's backup header stays at the end of the file.
        .args(["-compliance", "no_emul_toc", "-padding", "included"])
        .args(["-boot_image", "any", "replay"])
        .args(["-volume_date", "uuid", &uuid])
        .args(["-volume_date", "all_file_dates", "set_to_mtime"])
        .args(["-iso_nowtime", &at])
        .args(["-boot_image", "any", "gpt_disk_guid=volume_date_uuid"])
        .arg("-map")
        .arg(stage)
        .arg(lab)
        .args(["-chown_r", "0", lab, "--", "-chgrp_r", "0", lab, "--"])
        .args(["-chmod", "0755", lab, "--", "-chmod", "0600", &file(HOST_KEY_FILE), "--"])
        .args(["-chmod", "0644", &file(HOST_KEY_PUB_FILE), &file(AUTHORIZED_KEYS_FILE), "--"])
        .args(["-alter_date_r", "b", &at, lab, "--"])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .label(format!("keying {}", ctx.iso_file()))
        .progress(ctx.opts.progress);
    ctx.iso = Some(pending);
    cmd.stream().map_err(|source| disk_full_or(&ctx.opts.out_dir, source))?;
    // The keys are in the ISO: the staged copies go at once.
    ctx.stage.take();
    let keyed = boot_entries(ctx.iso.as_ref().expect("created above").path())?;
    if keyed != ctx.base.boot_entries {
        return Err(Error::BootChanged { base: ctx.base.boot_entries.clone(), keyed });
    }
    Ok(())
}

fn disk_full_or(dir: &Path, source: lab_cli::ToolError) -> Error {
    match source.stderr().and_then(|s| s.lines().find(|l| l.contains("No space left"))) {
        Some(line) => {
            Error::DiskFullWhileWriting { dir: dir.to_path_buf(), detail: line.trim().to_string() }
        }
        None => Error::Xorriso { source },
    }
}

/// The finished ISO read once for its sha256.
fn digest_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let iso = ctx.iso.as_ref().expect("xorriso wrote the ISO");
    iso.file.as_file().sync_data().map_err(|source| Error::Write { what: "the ISO", source })?;
    let sha = sha256_file(iso.path(), ctx.opts.progress)
        .map_err(|source| Error::Write { what: "the ISO's checksum", source })?;
    ctx.sha256 = Some(sha);
    Ok(())
}

/// The checksum and manifest under temporary names, then everything renamed
/// into place, the ISO last: a finished ISO always has both beside it.
fn commit_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let sha256 = ctx.sha256.take().expect("the ISO is digested before it is committed");
    let size = ctx
        .iso
        .as_ref()
        .expect("xorriso wrote the ISO")
        .file
        .as_file()
        .metadata()
        .map_err(|source| Error::Write { what: "the ISO", source })?
        .len();
    let manifest = ctx.manifest(size, &sha256);
    let iso_file = ctx.iso_file();
    let out_dir = &ctx.opts.out_dir;
    let outputs = Outputs {
        iso: ctx.iso_path(),
        sha256: out_dir.join(format!("{iso_file}.sha256")),
        manifest: out_dir.join(format!("{}.manifest.json", ctx.name())),
    };
    let manifest_json =
        serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n";
    let small =
        [(&outputs.sha256, format!("{sha256}  {iso_file}\n")), (&outputs.manifest, manifest_json)];
    let mut done = Vec::new();
    for (path, text) in small {
        let mut p = Pending::create(path, 0o644)?;
        p.file
            .write_all(text.as_bytes())
            .map_err(|source| Error::Write { what: "an output file", source })?;
        done.push(p);
    }
    interrupt::check()?;
    for p in done {
        p.commit()?;
    }
    ctx.iso.take().expect("xorriso wrote the ISO").commit()?;
    ctx.done = Some((manifest, outputs));
    Ok(())
}

/// The output directory, or for a dry run the nearest directory above it
/// that exists (a dry run creates nothing).
fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| !d.as_os_str().is_empty() && d.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn check_free_space(dir: &Path, need: u64) -> Result<(), Error> {
    if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
        let free = st.blocks_available() * st.fragment_size();
        if free < need {
            return Err(Error::DiskFull {
                dir: dir.to_path_buf(),
                need_mib: need.div_ceil(1 << 20),
                free_mib: free >> 20,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_names_map_to_the_flakes_arches() {
        assert_eq!(arch_of("installer-x86_64").unwrap(), "x86_64");
        assert_eq!(arch_of("installer-aarch64").unwrap(), "aarch64");
        let err = arch_of("installer-riscv64").unwrap_err().to_string();
        assert!(err.contains("installer-x86_64 and installer-aarch64"), "{err}");
        assert!(is_installer("installer-x") && !is_installer("nixpi"));
    }

    #[test]
    fn boot_entries_drop_the_block_address() {
        let report = "El Torito catalog  : 34  1\n\
            El Torito images   :   N  Pltf  B   Emul  Ld_seg  Hdpt  Ldsiz         LBA\n\
            El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4          40\n\
            El Torito boot img :   2  UEFI  y   none  0x0000  0x00   2880         834\n\
            El Torito img blks :   1  720\n";
        assert_eq!(
            parse_boot_entries(report),
            vec!["1 BIOS y none 0x0000 0x00 4", "2 UEFI y none 0x0000 0x00 2880"]
        );
        assert!(parse_boot_entries("Boot record  : (none)\n").is_empty());
    }

    #[test]
    fn found_names_are_the_last_component_of_each_quoted_path() {
        let report = "'/EFI/BOOT/BOOTAA64.EFI'\n'/EFI/boot/grub x.efi'\nxorriso : NOTE : done\n";
        assert_eq!(parse_found_names(report), vec!["BOOTAA64.EFI", "grub x.efi"]);
        assert_eq!(efi_loader_name("aarch64"), "bootaa64.efi");
        assert_eq!(efi_loader_name("x86_64"), "bootx64.efi");
    }
}
