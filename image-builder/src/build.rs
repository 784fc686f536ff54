//! `labimg build HOST`: a bootable Raspberry Pi SD image assembled in one
//! file without root, loop devices or mounts, then its .bmap, .sha256 and
//! manifest; with `--compress zstd` the image as HOST.img.zst instead. See
//! docs/labimg.md for the layout and what is reproducible.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::ids;
use crate::layout::{Placement, SdLayout, FIRMWARE_PARTITION_TYPE, ROOT_PARTITION_TYPE, SECTOR};
use lab_facts::Host;
use lab_keys::secrets;
use lab_keys::{HostKey, HOST_KEY_PATH};
use serde::Serialize;

use crate::bmap;
use crate::compress;
use crate::ext4::{self, Inject};
use crate::fat::{self, FatFile};
use crate::firmware::{self, Manifest as FirmwareManifest};
use crate::rootfs::{self, RootTree};
use lab_cli::files::{ensure_dir, Pending};
use lab_cli::interrupt;
use lab_cli::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("host `{host}` has no `board` in its facts: `labimg build` makes Raspberry Pi SD images (boards: rpi3, rpi4, rpi5)")]
    NotAnSdHost { host: String },
    #[error(
        "board {board} boots through a bootloader file on the firmware partition (U-Boot): pass --bootloader FILE \
         (for example nixpkgs' ubootRaspberryPi4_64bit/u-boot.bin); with --system or no --rootfs labimg builds it from the flake"
    )]
    BootloaderRequired { board: String },
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{source}\nWhere the flake cannot be built (no Nix or no nixpkgs), pass --rootfs DIR with a prepared root tree")]
    Nix { source: lab_cli::ToolError },
    #[error("staging the system's closure failed: {source}")]
    Stage { source: lab_cli::ToolError },
    #[error("--staging {how}: {why}")]
    StagingRefused { how: &'static str, why: String },
    #[error(
        "not enough free space in {dir}: the image needs about {need_mib} MiB, {free_mib} MiB are free. \
         Free some space or pass --out on another disk"
    )]
    DiskFull { dir: PathBuf, need_mib: u64, free_mib: u64 },
    #[error("writing {what} failed: {source}")]
    Write { what: &'static str, source: io::Error },
    #[error(transparent)]
    Layout(#[from] crate::layout::Error),
    #[error(transparent)]
    Key(#[from] lab_keys::Error),
    #[error(transparent)]
    Secrets(#[from] lab_keys::secrets::Error),
    #[error(transparent)]
    Firmware(#[from] firmware::Error),
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
    #[error(transparent)]
    Ext4(#[from] ext4::Error),
    #[error(transparent)]
    Fat(#[from] fat::Error),
    #[error(transparent)]
    Output(#[from] lab_cli::files::Error),
    #[error("{0}: nothing was left behind; run the same command again to start over")]
    Interrupted(#[from] interrupt::Interrupted),
    #[error("{source}; nothing was left behind")]
    Compress { source: compress::Error },
    #[error(
        "the new image is in place, but {path} (another build's image, which its new block map and \
         checksum do not describe) could not be removed: {source}. Remove it by hand"
    )]
    Stale { path: PathBuf, source: io::Error },
}

impl From<compress::Error> for Error {
    fn from(e: compress::Error) -> Error {
        match e {
            compress::Error::Interrupted(i) => Error::Interrupted(i),
            source => Error::Compress { source },
        }
    }
}

impl lab_cli::Classify for Error {
    fn class(&self) -> lab_cli::Class {
        match self {
            Error::Interrupted(_) => lab_cli::Class::Interrupted,
            Error::Nix { source } | Error::Stage { source } => source.class(),
            _ => lab_cli::Class::Failure,
        }
    }
}

/// Where the root filesystem's content comes from.
#[derive(Debug, Clone)]
pub enum RootInput {
    /// A prepared tree: a directory or a tar archive (for example a stand-in).
    Tree(PathBuf),
    /// A NixOS system closure already in the Nix store.
    System(PathBuf),
    /// Build the host's system from the flake in the lab root.
    Flake,
}

pub struct BuildOptions {
    pub lab_root: PathBuf,
    pub host: Host,
    pub root: RootInput,
    pub host_key: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub firmware_dir: Option<PathBuf>,
    pub bootloader: Option<PathBuf>,
    pub epoch: u64,
    /// Write HOST.img.zst instead of HOST.img.
    pub compress: Option<Compression>,
    /// How a system's closure reaches mkfs.ext4.
    pub staging: Staging,
    pub progress: Progress,
}

/// How `--system` or the flake's closure is laid out for mkfs.ext4 -d,
/// cheapest first (decision 0005). `Auto` takes the first that works here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Staging {
    #[default]
    Auto,
    /// Each store path bind-mounted into a skeleton, for mkfs alone (its
    /// own mount namespace; a user namespace where not root).
    Mounts,
    /// Hard links to the store's files (the output on the store's
    /// filesystem, files this user may link).
    Links,
    /// A copy of the closure (`cp -a --reflink=auto`), as NixOS's recipe.
    Copy,
}

/// How the image is compressed: zstd (the only format `labimg flash`
/// streams), at a level in [`compress::LEVELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub level: i32,
}

/// Everything that went into the image: written next to it as
/// `HOST.manifest.json`. Public key material only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub labimg: &'static str,
    pub host: String,
    pub board: String,
    pub source_date_epoch: u64,
    pub image: ImageInfo,
    pub partitions: Vec<PartitionInfo>,
    pub firmware: Vec<FileInfo>,
    pub bootloader: FileInfo,
    pub config_txt: FileInfo,
    pub root: RootInfo,
    pub host_key: Option<KeyInfo>,
}

/// The image as written to the card: `file` names it uncompressed (what
/// the block map and `sha256` describe) even when only its compressed form
/// is written, then described by `compressed`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub mapped_bytes: u64,
    pub disk_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed: Option<CompressedInfo>,
}

/// The compressed image: a single zstd frame declaring the image's size,
/// with zstd's checksum. Its bytes are reproducible for the same image,
/// level and zstd library version (not for another version of the library).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressedInfo {
    pub file: String,
    pub format: &'static str,
    pub level: i32,
    pub zstd_version: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub number: u8,
    pub r#type: String,
    pub bootable: bool,
    pub start: u64,
    pub size: u64,
    pub filesystem: &'static str,
    pub label: String,
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootInfo {
    pub source: String,
    pub kind: &'static str,
    pub stats: rootfs::TreeStats,
    pub inodes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub path: &'static str,
    pub public_key: String,
    pub fingerprint: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSummary {
    pub manifest: ImageManifest,
    pub outputs: Outputs,
    pub seconds: f64,
    /// Each phase that ran, in order, with its wall time (`prepare`: the
    /// inputs read and checked before anything is written, a system's
    /// closure queried and sized; `stage`: that closure laid out for mkfs).
    pub phases: Vec<PhaseTime>,
    /// How a `--system` closure was staged: "mounts" (store paths mounted
    /// for mkfs alone), "links" (hard links to the store's files) or "copy";
    /// absent for a root tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staging: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

/// The files a build wrote. With `--compress`, `image` is the .zst, while
/// `bmap` and `sha256` describe the uncompressed image (HOST.img.bmap and
/// HOST.img.sha256, the names bmaptool and `labimg flash` look for beside
/// HOST.img.zst, and what `sha256sum -c` checks after `zstd -d`), and
/// `compressedSha256` is the .zst's own checksum file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    pub image: PathBuf,
    pub bmap: PathBuf,
    pub sha256: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_sha256: Option<PathBuf>,
    pub manifest: PathBuf,
    /// The other form of the host's image (HOST.img beside a new
    /// HOST.img.zst, or the reverse) when it was not the same image: the
    /// block map and checksum beside it were just replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<PathBuf>,
}

/// What `labimg build --dry-run` prints: the build, without writing it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildPlan {
    pub host: String,
    pub board: String,
    pub image: PathBuf,
    pub placement: Placement,
    pub root: RootInfo,
    pub firmware: Vec<FileInfo>,
    pub bootloader: FileInfo,
    pub host_key: Option<KeyInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressPlan>,
    pub dry_run: bool,
}

/// How a dry run's image would be compressed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressPlan {
    pub format: &'static str,
    pub level: i32,
    pub workers: u32,
}

/// The parts of a build after its inputs are checked, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Layout,
    Fat,
    Root,
    Key,
    Normalize,
    Digest,
    Compress,
    Commit,
}

/// Everything the phases share: the inputs, gathered and checked by
/// [`prepare`] before anything is written (all a dry run looks at), then
/// the image under its temporary name and what the phases made of it.
struct Ctx<'a> {
    opts: &'a BuildOptions,
    board: String,
    layout: SdLayout,
    firmware: Vec<firmware::Verified>,
    key: Option<HostKey>,
    /// In a dry run, the lab-held key as recorded (public half): the plan
    /// names it without decrypting the private half.
    recorded_key: Option<KeyInfo>,
    tree: RootTree,
    bootloader: Vec<u8>,
    bootloader_name: String,
    config_txt: String,
    sizing: ext4::Sizing,
    place: Placement,
    /// The image being written; removed when the build stops before
    /// [`commit_phase`] renames it into place.
    image: Option<Pending>,
    /// The block map and the image's sha256, once the image is complete.
    digest: Option<(bmap::Bmap, String)>,
    /// With `--compress`: the .zst being written, then what it came to.
    compressed: Option<(Pending, compress::Compressed)>,
    /// What the build reports once its outputs are in place.
    done: Option<(ImageManifest, Outputs)>,
}

/// The phases in build order, each small; Ctrl-C is checked between them.
type PhaseFn = fn(&mut Ctx) -> Result<(), Error>;

const PHASES: [(Phase, PhaseFn); 8] = [
    (Phase::Layout, layout_phase),
    (Phase::Fat, fat_phase),
    (Phase::Root, root_phase),
    (Phase::Key, key_phase),
    (Phase::Normalize, normalize_phase),
    (Phase::Digest, digest_phase),
    (Phase::Compress, compress_phase),
    (Phase::Commit, commit_phase),
];

impl Ctx<'_> {
    /// A host without a key gets none injected: the first boot makes one.
    /// Only `--compress` compresses.
    fn runs(&self, phase: Phase) -> bool {
        match phase {
            Phase::Key => self.key.is_some(),
            Phase::Compress => self.opts.compress.is_some(),
            _ => true,
        }
    }

    fn name(&self) -> &str {
        &self.opts.host.name
    }

    fn image_file(&self) -> String {
        format!("{}.img", self.name())
    }

    fn image_path(&self) -> PathBuf {
        self.opts.out_dir.join(self.image_file())
    }

    /// HOST.img.zst: the same name plus zstd's extension, as bmaptool and
    /// `labimg flash` expect when they look for HOST.img.bmap beside it.
    fn compressed_file(&self) -> String {
        format!("{}.zst", self.image_file())
    }

    /// The file the build leaves for the card: HOST.img, or HOST.img.zst.
    fn output_path(&self) -> PathBuf {
        match self.opts.compress {
            Some(_) => self.opts.out_dir.join(self.compressed_file()),
            None => self.image_path(),
        }
    }

    /// The image's mode: it holds a private key when one is injected.
    fn image_mode(&self) -> u32 {
        if self.key.is_some() {
            0o600
        } else {
            0o644
        }
    }

    fn pending(&self) -> &Pending {
        self.image.as_ref().expect("the image is created before it is written")
    }

    // The ids are derived from the host name: the same host gets the same
    // image. Each is named once here, for the phase that writes it and for
    // the manifest.
    fn disk_id(&self) -> u32 {
        ids::id32(self.name(), "mbr-disk-id")
    }

    fn volume_id(&self) -> u32 {
        ids::id32(self.name(), "firmware-volume-id")
    }

    fn root_uuid(&self) -> String {
        ids::uuid_string(&ids::uuid(self.name(), "root-fs-uuid"))
    }

    fn root_info(&self) -> RootInfo {
        root_info(self.opts, &self.tree, &self.sizing)
    }

    fn firmware_infos(&self) -> Vec<FileInfo> {
        self.firmware.iter().map(firmware_info).collect()
    }

    fn bootloader_info(&self) -> FileInfo {
        file_info(&self.bootloader_name, &self.bootloader)
    }

    fn key_info(&self) -> Option<KeyInfo> {
        self.key.as_ref().map(key_info).or_else(|| self.recorded_key.clone())
    }

    /// The dry run's answer: what the checks found, nothing written.
    fn plan(&self) -> BuildPlan {
        BuildPlan {
            host: self.name().to_string(),
            board: self.board.clone(),
            image: self.output_path(),
            placement: self.place,
            root: self.root_info(),
            firmware: self.firmware_infos(),
            bootloader: self.bootloader_info(),
            host_key: self.key_info(),
            compress: self.opts.compress.map(|c| CompressPlan {
                format: "zstd",
                level: c.level,
                workers: compress::workers(),
            }),
            dry_run: true,
        }
    }

    fn manifest(
        &self,
        bmap: &bmap::Bmap,
        sha256: &str,
        compressed: Option<CompressedInfo>,
    ) -> ImageManifest {
        let (place, layout, volume_id) = (&self.place, &self.layout, self.volume_id());
        ImageManifest {
            labimg: env!("CARGO_PKG_VERSION"),
            host: self.name().to_string(),
            board: self.board.clone(),
            source_date_epoch: self.opts.epoch,
            image: ImageInfo {
                file: self.image_file(),
                size: place.total,
                sha256: sha256.to_string(),
                mapped_bytes: bmap.mapped_blocks() * bmap.block_size,
                disk_id: format!("0x{:08x}", self.disk_id()),
                compressed,
            },
            partitions: vec![
                PartitionInfo {
                    number: 1,
                    r#type: format!("0x{FIRMWARE_PARTITION_TYPE:02x}"),
                    bootable: false,
                    start: place.firmware_start,
                    size: place.firmware_size,
                    filesystem: "vfat",
                    label: layout.firmware_label.clone(),
                    id: format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff),
                },
                PartitionInfo {
                    number: 2,
                    r#type: format!("0x{ROOT_PARTITION_TYPE:02x}"),
                    bootable: true,
                    start: place.root_start,
                    size: place.root_size,
                    filesystem: "ext4",
                    label: layout.root_label.clone(),
                    id: self.root_uuid(),
                },
            ],
            firmware: self.firmware_infos(),
            bootloader: self.bootloader_info(),
            config_txt: file_info("config.txt", self.config_txt.as_bytes()),
            root: self.root_info(),
            host_key: self.key_info(),
        }
    }
}

/// Every input gathered and everything that can be refused checked, before
/// the first byte is written: a dry run stops here.
/// `dry_run`: decide and check only what a plan shows, writing nothing of
/// the build's own (no output directory, no decrypted key). Sizing a
/// `--system` or flake closure still stages it in a temporary directory
/// (removed after); that copy goes when staging does (issue 16).
fn prepare(opts: &BuildOptions, dry_run: bool) -> Result<Ctx<'_>, Error> {
    let host = &opts.host;
    let board = host.board.clone().ok_or_else(|| Error::NotAnSdHost { host: host.name.clone() })?;
    let layout = SdLayout::from_facts(host.image.as_ref())?;

    let manifest = FirmwareManifest::load(&opts.lab_root.join(firmware::MANIFEST))?;
    let fw_dir = opts.firmware_dir.clone().unwrap_or_else(firmware::default_cache);
    let firmware = firmware::load_verified(&manifest, &board, &fw_dir)?;
    let template_path = opts.lab_root.join(firmware::CONFIG_TEMPLATE);
    let template = fs::read_to_string(&template_path).map_err(|source| Error::Read {
        what: "config.txt template",
        path: template_path.clone(),
        source,
    })?;
    let lab_held = secrets::encrypted_key_path(&opts.lab_root, &host.name).is_file();
    let (key, recorded_key) = match &opts.host_key {
        Some(path) => (Some(HostKey::load(path)?), None),
        // A dry run names the lab-held key by its recorded public half and
        // decrypts nothing.
        None if lab_held && dry_run => (None, Some(recorded_key(&opts.lab_root, &host.name)?)),
        // The lab holds the host's key (`labprov keys new`): decrypted in
        // memory with the admin's age identity, checked against the facts.
        None if lab_held => (
            Some(secrets::injection_material_with(
                &opts.lab_root,
                &host.name,
                &secrets::AdminIdentity::from_env()?,
            )?),
            None,
        ),
        // Neither: the first boot makes one and `labprov enrol` records it.
        None => (None, None),
    };

    if !dry_run {
        ensure_dir(&opts.out_dir)?;
    }
    let (tree, bootloader_path) = root_tree(opts, &board, dry_run)?;
    let bootloader_path =
        bootloader_path.ok_or_else(|| Error::BootloaderRequired { board: board.clone() })?;
    let bootloader = fs::read(&bootloader_path).map_err(|source| Error::Read {
        what: "bootloader",
        path: bootloader_path.clone(),
        source,
    })?;
    let bootloader_name = format!("u-boot-{board}.bin");
    let config_txt = firmware::render_config(&template, &bootloader_name);

    let injected_inodes = if key.is_some() || recorded_key.is_some() { 4 } else { 0 };
    let sizing = ext4::estimate(&tree.stats, injected_inodes, layout.root_headroom);
    let place = layout.place(sizing.need_bytes)?;
    // The image is sparse: what lands on disk is about the content, not the
    // partition sizes.
    let firmware_bytes: u64 = firmware.iter().map(|f| f.content.len() as u64).sum();
    let data = tree.stats.blocks * rootfs::BLOCK + firmware_bytes + bootloader.len() as u64;
    // The .zst is written while the image is still there: at worst (data
    // that does not compress) it takes as much again.
    let need = if opts.compress.is_some() { 2 * data } else { data };
    check_free_space(&opts.out_dir, need)?;
    Ok(Ctx {
        opts,
        board,
        layout,
        firmware,
        key,
        recorded_key,
        tree,
        bootloader,
        bootloader_name,
        config_txt,
        sizing,
        place,
        image: None,
        digest: None,
        compressed: None,
        done: None,
    })
}

/// The lab-held key as the facts record it (hosts/HOST/ssh_host_ed25519_key.pub).
fn recorded_key(lab_root: &Path, host: &str) -> Result<KeyInfo, Error> {
    let path = secrets::public_key_path(lab_root, host);
    let line = fs::read_to_string(&path).map_err(|source| Error::Read {
        what: "the recorded public key",
        path: path.clone(),
        source,
    })?;
    let key = lab_keys::PublicHostKey::parse(line.trim()).map_err(|e| Error::Read {
        what: "the recorded public key",
        path,
        source: io::Error::other(e.to_string()),
    })?;
    Ok(KeyInfo { path: HOST_KEY_PATH, public_key: key.openssh(), fingerprint: key.fingerprint() })
}

fn key_info(key: &HostKey) -> KeyInfo {
    KeyInfo {
        path: HOST_KEY_PATH,
        public_key: key.public_openssh(),
        fingerprint: key.fingerprint(),
    }
}

fn file_info(name: &str, content: &[u8]) -> FileInfo {
    FileInfo {
        name: name.to_string(),
        size: content.len() as u64,
        sha256: firmware::sha256_hex(content),
    }
}

/// A verified firmware file already carries its checksum: no second hash.
fn firmware_info(f: &firmware::Verified) -> FileInfo {
    FileInfo { name: f.name.clone(), size: f.content.len() as u64, sha256: f.sha256.clone() }
}

fn root_info(opts: &BuildOptions, tree: &RootTree, sizing: &ext4::Sizing) -> RootInfo {
    RootInfo {
        source: tree.source.display().to_string(),
        kind: match opts.root {
            RootInput::Tree(_) if tree.source.is_dir() => "directory",
            RootInput::Tree(_) => "tar",
            _ => "nixos-system",
        },
        stats: tree.stats,
        inodes: sizing.inodes,
    }
}

/// Every check and every input of a build, nothing written: the build's own
/// [`prepare`], stopped before the first phase that writes.
pub fn plan(opts: &BuildOptions) -> Result<BuildPlan, Error> {
    Ok(prepare(opts, true)?.plan())
}

/// The whole build: [`prepare`], then each phase in order. Ctrl-C between
/// phases stops it; whatever was written goes with the context.
pub fn build(opts: &BuildOptions) -> Result<BuildSummary, Error> {
    let started = Instant::now();
    let mut phases = Vec::new();
    let mut ctx = prepare(opts, false)?;
    let stage = ctx.tree.stage_seconds;
    let prepare = started.elapsed().as_secs_f64() - stage.unwrap_or(0.0);
    phases.push(PhaseTime { phase: "prepare".into(), seconds: prepare });
    if let Some(seconds) = stage {
        phases.push(PhaseTime { phase: "stage".into(), seconds });
    }
    for (phase, run) in PHASES {
        if ctx.runs(phase) {
            interrupt::check()?;
            let at = Instant::now();
            run(&mut ctx)?;
            let name = format!("{phase:?}").to_lowercase();
            phases.push(PhaseTime { phase: name, seconds: at.elapsed().as_secs_f64() });
        }
    }
    let (manifest, outputs) = ctx.done.take().expect("the commit phase is the last");
    let seconds = started.elapsed().as_secs_f64();
    Ok(BuildSummary { manifest, outputs, seconds, phases, staging: ctx.tree.staging })
}

/// The image file under a temporary name, at its full (sparse) size, with
/// the partition table. It holds a private key when a key is injected, so
/// it is never readable by others, from creation on.
fn layout_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let pending = Pending::create(&ctx.image_path(), ctx.image_mode())?;
    let image = pending.file.as_file();
    image.set_len(ctx.place.total).map_err(|source| Error::Write { what: "the image", source })?;
    write_mbr(image, &ctx.place, ctx.disk_id())
        .map_err(|source| Error::Write { what: "the partition table", source })?;
    ctx.image = Some(pending);
    Ok(())
}

/// The firmware partition, written in-process: the pinned firmware files,
/// config.txt and the bootloader it boots.
fn fat_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let step = ctx.opts.progress.step("firmware", "FAT firmware partition");
    let mut fat_files: Vec<FatFile> =
        ctx.firmware.iter().map(|f| FatFile { name: &f.name, content: &f.content }).collect();
    fat_files.push(FatFile { name: "config.txt", content: ctx.config_txt.as_bytes() });
    fat_files.push(FatFile { name: &ctx.bootloader_name, content: &ctx.bootloader });
    let place = &ctx.place;
    let image = ctx.pending().file.as_file();
    fat::write_partition(
        image,
        place.firmware_start,
        place.firmware_size,
        &ctx.layout.firmware_label,
        ctx.volume_id(),
        ctx.opts.epoch,
        &mut fat_files,
    )?;
    step.finish_and_clear();
    Ok(())
}

/// The root filesystem: `mkfs.ext4 -d` from the tree straight into the
/// partition's byte range, with the host's ids and the epoch's times.
fn root_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let step = ctx.opts.progress.step("root", "mkfs.ext4 -d (root filesystem)");
    let hash_seed = ids::uuid_string(&ids::uuid(ctx.name(), "root-fs-hash-seed"));
    ext4::Mkfs {
        image: ctx.pending().path(),
        offset: ctx.place.root_start,
        size: ctx.place.root_size,
        tree: &ctx.tree,
        label: &ctx.layout.root_label,
        uuid: &ctx.root_uuid(),
        hash_seed: &hash_seed,
        inodes: ctx.sizing.inodes,
        epoch: ctx.opts.epoch,
    }
    .run()?;
    step.finish_and_clear();
    Ok(())
}

/// The host key at its place in /etc/ssh (0600) with its .pub, through
/// debugfs from memory: the first activation decrypts secrets with it.
fn key_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let key = ctx.key.as_ref().expect("runs only with a key");
    let step = ctx.opts.progress.step("key", "host key");
    let private = key.private_openssh();
    let public = format!("{}\n", key.public_openssh());
    let pub_path = format!("{HOST_KEY_PATH}.pub");
    ext4::inject(
        ctx.pending().path(),
        ctx.place.root_start,
        &ctx.tree,
        &[
            Inject { path: HOST_KEY_PATH, content: private.as_bytes(), mode: 0o600 },
            Inject { path: &pub_path, content: public.as_bytes(), mode: 0o644 },
        ],
        ctx.opts.epoch,
    )?;
    step.finish_and_clear();
    Ok(())
}

/// The root filesystem made independent of who built it and when (the
/// builder's files root's, times the epoch), then the image synced. An
/// image that is only compressed is not synced: it is removed when the .zst
/// (synced when committed) is done, and its dirty pages go with it unwritten.
fn normalize_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let image = ctx.pending().file.as_file();
    let owners = match ctx.opts.root {
        RootInput::System(_) | RootInput::Flake => ext4::Owners::AllRoot,
        RootInput::Tree(_) => ext4::Owners::BuilderToRoot(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
    };
    ext4::normalize(image, ctx.place.root_start, ctx.opts.epoch, owners)?;
    if ctx.opts.compress.is_some() {
        return Ok(());
    }
    image.sync_data().map_err(|source| Error::Write { what: "the image", source })
}

/// One read of the finished image: the block map (a sha256 per mapped
/// range, what `labimg flash` writes and verifies) and the whole sha256.
fn digest_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let image = ctx.pending().file.as_file();
    let digest = bmap::digest(image, ctx.place.total, ctx.opts.progress)
        .map_err(|source| Error::Write { what: "the block map", source })?;
    ctx.digest = Some(digest);
    Ok(())
}

/// The finished image as HOST.img.zst under a temporary name, streamed
/// from the image on every core. It is created with the image's mode: it
/// holds the same key. The uncompressed image goes when the build ends.
fn compress_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let level = ctx.opts.compress.expect("runs only with --compress").level;
    let (map, _) = ctx.digest.as_ref().expect("the image is digested before it is compressed");
    let data: Vec<(u64, u64)> = map.ranges.iter().map(|r| map.span(r)).collect();
    let pending = Pending::create(&ctx.output_path(), ctx.image_mode())?;
    let compressed = compress::zstd_image(
        ctx.pending().file.as_file(),
        ctx.place.total,
        &data,
        level,
        compress::workers(),
        pending.file.as_file(),
        ctx.opts.progress,
    )?;
    ctx.compressed = Some((pending, compressed));
    Ok(())
}

/// The block map, checksums and manifest written under temporary names,
/// then everything renamed into place, the image (or the .zst) last: a
/// finished image always has its matching block map and checksum beside it.
fn commit_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let (bmap, sha256) = ctx.digest.take().expect("the image is digested before it is committed");
    let compressed = ctx.compressed.take();
    let level = ctx.opts.compress.map(|c| c.level);
    let compressed_info = compressed.as_ref().zip(level).map(|((_, c), level)| CompressedInfo {
        file: ctx.compressed_file(),
        format: "zstd",
        level,
        zstd_version: compress::library_version(),
        size: c.size,
        sha256: c.sha256.clone(),
    });
    let manifest = ctx.manifest(&bmap, &sha256, compressed_info.clone());
    let image_file = ctx.image_file();
    let out_dir = &ctx.opts.out_dir;
    let mut outputs = Outputs {
        image: ctx.output_path(),
        bmap: out_dir.join(format!("{image_file}.bmap")),
        sha256: out_dir.join(format!("{image_file}.sha256")),
        compressed_sha256: compressed_info
            .as_ref()
            .map(|c| out_dir.join(format!("{}.sha256", c.file))),
        manifest: out_dir.join(format!("{}.manifest.json", ctx.name())),
        removed: Vec::new(),
    };
    let sha256_text = format!("{sha256}  {image_file}\n");
    // Whether the image the previous build left here is this one: then its
    // other form (HOST.img beside a new .zst, or the reverse) still matches
    // the block map and checksum about to replace the old ones.
    let same_image = fs::read_to_string(&outputs.sha256).is_ok_and(|old| old == sha256_text);
    let manifest_json =
        serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n";
    let mut small = vec![
        (outputs.bmap.clone(), bmap.to_xml()),
        (outputs.sha256.clone(), sha256_text),
        (outputs.manifest.clone(), manifest_json),
    ];
    if let (Some(path), Some(c)) = (&outputs.compressed_sha256, &compressed_info) {
        small.push((path.clone(), format!("{}  {}\n", c.sha256, c.file)));
    }
    let mut done = Vec::new();
    for (path, text) in small {
        let mut p = Pending::create(&path, 0o644)?;
        p.file
            .write_all(text.as_bytes())
            .map_err(|source| Error::Write { what: "an output file", source })?;
        done.push(p);
    }
    for p in done {
        p.commit()?;
    }
    let image = ctx.image.take().expect("the image is created before it is committed");
    let other_form = match compressed {
        Some((zst, _)) => {
            zst.commit()?;
            // Dropped, the uncompressed image under its temporary name goes.
            drop(image);
            vec![ctx.image_path()]
        }
        None => {
            image.commit()?;
            let zst = out_dir.join(ctx.compressed_file());
            vec![zst.clone(), out_dir.join(format!("{}.sha256", ctx.compressed_file()))]
        }
    };
    if !same_image {
        for path in other_form.into_iter().filter(|p| p.is_file()) {
            fs::remove_file(&path).map_err(|source| Error::Stale { path: path.clone(), source })?;
            outputs.removed.push(path);
        }
    }
    ctx.done = Some((manifest, outputs));
    Ok(())
}

/// The SD layout's table: the FAT firmware partition, then the root, which
/// carries the bootable flag. U-Boot's distro boot scans only flagged
/// partitions for /boot/extlinux/extlinux.conf, which is on the root (the
/// Pi's GPU firmware ignores the flag and reads the first FAT partition);
/// with the FAT flagged, U-Boot stopped at its prompt under QEMU raspi3b
/// (tests/uboot_boot.rs).
fn write_mbr(image: &File, place: &Placement, disk_id: u32) -> io::Result<()> {
    use lab_blockdev::mbr::{self, Primary};
    let primary = |number, start: u64, size: u64, type_byte, bootable| Primary {
        number,
        first_lba: start / SECTOR,
        sectors: size / SECTOR,
        type_byte,
        bootable,
    };
    let parts = [
        primary(1, place.firmware_start, place.firmware_size, FIRMWARE_PARTITION_TYPE, false),
        primary(2, place.root_start, place.root_size, ROOT_PARTITION_TYPE, true),
    ];
    let mut f = image;
    mbr::write(&mut f, SECTOR, disk_id, &parts).map_err(|e| match e {
        mbr::MbrError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })
}

fn check_free_space(dir: &Path, need: u64) -> Result<(), Error> {
    // The nearest directory that exists: a dry run does not create --out.
    let existing = dir.ancestors().find(|d| d.is_dir()).unwrap_or(Path::new("."));
    if let Ok(st) = nix::sys::statvfs::statvfs(existing) {
        let free = st.blocks_available() * st.fragment_size();
        if free < need {
            return Err(Error::DiskFull {
                dir: dir.to_path_buf(),
                need_mib: need >> 20,
                free_mib: free >> 20,
            });
        }
    }
    Ok(())
}

/// The root tree and, where the system provides one, the bootloader file.
fn root_tree(
    opts: &BuildOptions,
    board: &str,
    dry_run: bool,
) -> Result<(RootTree, Option<PathBuf>), Error> {
    // A dry run unpacks or stages in the system's temporary directory (gone
    // with the tree), never in --out, which it does not create.
    let scratch = if dry_run { std::env::temp_dir() } else { opts.out_dir.clone() };
    if !dry_run {
        rootfs::sweep_scratch(&scratch);
    }
    match &opts.root {
        RootInput::Tree(path) => Ok((RootTree::open(path, &scratch)?, opts.bootloader.clone())),
        RootInput::System(toplevel) => {
            let tree = nixos::stage(toplevel, &scratch, opts.staging, dry_run)?;
            let boot = match &opts.bootloader {
                Some(b) => Some(b.clone()),
                None => nixos::uboot(&opts.lab_root, &opts.host.name, board)?,
            };
            Ok((tree, boot))
        }
        RootInput::Flake => {
            let toplevel = nixos::build_toplevel(&opts.lab_root, &opts.host.name)?;
            let tree = nixos::stage(&toplevel, &scratch, opts.staging, dry_run)?;
            let boot = match &opts.bootloader {
                Some(b) => Some(b.clone()),
                None => nixos::uboot(&opts.lab_root, &opts.host.name, board)?,
            };
            Ok((tree, boot))
        }
    }
}

/// The NixOS path: a system closure from the Nix store laid out as a root
/// tree, as NixOS's sd-image module does (closure under /nix/store, the
/// store registration for the first boot, an extlinux.conf for U-Boot).
mod nixos {
    use super::*;

    /// A Nix query or build; builds take minutes, so their output streams.
    fn nix(args: &[&str], label: Option<&str>) -> Result<String, Error> {
        let cmd = lab_cli::Cmd::new(args[0]).args(&args[1..]);
        let out = match label {
            Some(l) => cmd.label(l).stream(),
            None => cmd.run(),
        };
        out.map(|o| o.text().trim().to_string()).map_err(|source| Error::Nix { source })
    }

    pub fn build_toplevel(lab: &Path, host: &str) -> Result<PathBuf, Error> {
        let attr =
            format!("{}#nixosConfigurations.{host}.config.system.build.toplevel", lab.display());
        let label = format!("building {host}'s system");
        Ok(PathBuf::from(nix(
            &["nix", "build", "--no-link", "--print-out-paths", &attr],
            Some(&label),
        )?))
    }

    /// U-Boot for the board from the host's own nixpkgs.
    pub fn uboot(lab: &Path, host: &str, board: &str) -> Result<Option<PathBuf>, Error> {
        let pkg = match board {
            "rpi3" => "ubootRaspberryPi3_64bit",
            "rpi4" => "ubootRaspberryPi4_64bit",
            _ => return Ok(None),
        };
        let attr = format!("{}#nixosConfigurations.{host}.pkgs.{pkg}", lab.display());
        let out = nix(
            &["nix", "build", "--no-link", "--print-out-paths", &attr],
            Some("building U-Boot"),
        )?;
        Ok(Some(PathBuf::from(out).join("u-boot.bin")))
    }

    /// The closure of `toplevel` laid out for mkfs.ext4 in a scratch
    /// directory under `scratch`; a dry run only sizes it (nothing linked
    /// or copied) and finds out whether the mounts work here.
    pub fn stage(
        toplevel: &Path,
        scratch: &Path,
        how: Staging,
        dry_run: bool,
    ) -> Result<RootTree, Error> {
        let top = toplevel.display().to_string();
        let dir = rootfs::scratch_dir(scratch, "system")
            .map_err(|source| Error::Write { what: "the staging directory", source })?;
        // Kept from garbage collection while the build reads it (a flake's
        // toplevel has no root of its own, and the mounts pin nothing): an
        // indirect root in the scratch directory, gone with it. Not for a
        // dry run (it would realise the path; a killed one's root would
        // stay in $TMPDIR). Where it cannot be made (--out on a filesystem
        // without symlinks), the build goes on and says so. On any failure
        // below the directory goes too (Scratch's drop).
        if !dry_run {
            let gc_root = dir.path().join("gcroot").display().to_string();
            let add = ["nix-store", "--realise", "--add-root", &gc_root, "--indirect", &top];
            if let Err(e) = nix(&add, None) {
                lab_cli::output::say(&format!(
                    "labimg: the closure is not held by a GC root ({e}); a garbage collection \
                     during this build would break it"
                ));
            }
        }
        let closure = nix(&["nix-store", "--query", "--requisites", &top], None)?;
        let paths: Vec<&str> = closure.lines().collect();
        let mut dump = vec!["nix-store", "--dump-db"];
        dump.extend(&paths);
        let registration = nix(&dump, None)?;
        fill(dir, toplevel, &paths, registration, how, dry_run)
    }

    /// The staging tree in `dir`/tree: the closure (mounted, else linked,
    /// else copied, or as `how` says), the registration and extlinux.conf.
    fn fill(
        dir: rootfs::Scratch,
        toplevel: &Path,
        paths: &[&str],
        registration: String,
        how: Staging,
        dry_run: bool,
    ) -> Result<RootTree, Error> {
        let started = Instant::now();
        let write_err = |source| Error::Write { what: "the staging directory", source };
        let tree = dir.path().join("tree");
        let store = tree.join("nix/store");
        fs::create_dir_all(&store).map_err(write_err)?;
        // Whatever a refused way left is removed before the next one.
        let start_over = || {
            rootfs::remove_tree(&store).and_then(|_| fs::create_dir_all(&store)).map_err(write_err)
        };
        let mut mounted = None;
        if matches!(how, Staging::Auto | Staging::Mounts) {
            let mounts = Arc::new(rootfs::Mounts::new(&store, paths)?);
            match mounts.work() {
                Ok(()) => mounted = Some(mounts),
                Err(source @ lab_cli::ToolError::Interrupted { .. }) => {
                    return Err(Error::Stage { source })
                }
                // Not found: mkfs.ext4 itself (no way will do), or a path
                // of the mounts' (said below).
                Err(lab_cli::ToolError::Missing { .. })
                    if lab_cli::Cmd::new("mkfs.ext4").arg("-V").probe().is_err() =>
                {
                    return Err(Error::Stage {
                        source: lab_cli::ToolError::Missing {
                            program: "mkfs.ext4".into(),
                            package: lab_cli::tool::package_of("mkfs.ext4"),
                        },
                    });
                }
                Err(e) if how == Staging::Mounts => {
                    return Err(Error::StagingRefused {
                        how: "mounts",
                        why: format!(
                            "mounting the closure for mkfs.ext4 failed ({e}); where this system \
                             does not let this user make a mount namespace (a user namespace \
                             where not root), try --staging links or --staging copy"
                        ),
                    });
                }
                Err(e) => lab_cli::output::say(&format!(
                    "labimg: mounting the closure for mkfs.ext4 failed ({e}); staging it another way"
                )),
            }
        }
        let staging = if mounted.is_some() {
            Some("mounts")
        } else if dry_run {
            None // nothing linked or copied: sized from the store below
        } else if how != Staging::Copy && link_closure(paths, &store)? {
            Some("links")
        } else if how == Staging::Links {
            return Err(Error::StagingRefused {
                how: "links",
                why: "the kernel refused a hard link to the store (--out on another filesystem \
                      than /nix/store, another user's files under fs.protected_hardlinks, or a \
                      file with as many links as it can have); try --staging copy"
                    .into(),
            });
        } else {
            // Another filesystem, or store files this user may not link
            // (fs.protected_hardlinks): copy, as NixOS's recipe does.
            start_over()?;
            lab_cli::Cmd::new("cp")
                .args(["-a", "--reflink=auto", "-t"])
                .arg(&store)
                .args(paths)
                .label(format!("copying {} store paths", paths.len()))
                .stream()
                .map_err(|source| Error::Stage { source })?;
            Some("copy")
        };
        let seconds = started.elapsed().as_secs_f64();
        let write = |rel: &str, text: &str| {
            let p = tree.join(rel);
            fs::create_dir_all(p.parent().expect("has a parent"))
                .and_then(|_| fs::write(&p, text))
                .map_err(write_err)
        };
        write("nix-path-registration", &(registration + "\n"))?;
        write("boot/extlinux/extlinux.conf", &extlinux_conf(toplevel)?)?;
        // The staging's own entries get NixOS's modes, whatever this user's
        // umask (mkfs.ext4 -d records them; the mounts' tmpfs is 0755 too).
        let modes = [
            ("nix", 0o755),
            ("nix/store", 0o755),
            ("boot", 0o755),
            ("boot/extlinux", 0o755),
            ("nix-path-registration", 0o644),
            ("boot/extlinux/extlinux.conf", 0o644),
        ];
        for (rel, mode) in modes {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tree.join(rel), fs::Permissions::from_mode(mode))
                .map_err(write_err)?;
        }
        let stats = match staging {
            Some("mounts") | None => {
                // Sized from the store paths themselves, as mkfs will see them.
                let sources: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
                rootfs::scan_mounted(&tree, &sources)?
            }
            Some(_) => rootfs::scan(&tree)?,
        };
        Ok(RootTree::staged(dir, tree, toplevel.to_path_buf(), stats, staging, seconds, mounted))
    }

    /// The closure staged without copying a byte: each store path's tree
    /// rebuilt under `store` from hard links to the store's own files (and
    /// symlinks), its directories new with the store's modes. mkfs.ext4 -d
    /// reads the same files, names and modes as from a copy (`cp -a`, the
    /// old way, gives a byte-identical image), and the store's own hard
    /// links stay links: they are one inode here too. Fails where the
    /// kernel refuses a link (another filesystem, or files another user
    /// owns under fs.protected_hardlinks): Ok(false), and the caller copies.
    /// Any other error (Ctrl-C, a full disk) is one.
    fn link_closure(paths: &[&str], store: &Path) -> Result<bool, Error> {
        use nix::errno::Errno;
        fn link_tree(src: &Path, dst: &Path) -> io::Result<()> {
            let meta = fs::symlink_metadata(src)?;
            if !meta.is_dir() {
                return fs::hard_link(src, dst);
            }
            fs::create_dir(dst)?;
            for entry in fs::read_dir(src)? {
                let entry = entry?;
                link_tree(&entry.path(), &dst.join(entry.file_name()))?;
            }
            // The store's mode and times (mkfs.ext4 -d records both; cp -a
            // keeps them), once the entries are in: adding one would touch
            // the time again.
            fs::set_permissions(dst, meta.permissions())?;
            let times =
                fs::FileTimes::new().set_accessed(meta.accessed()?).set_modified(meta.modified()?);
            fs::File::open(dst)?.set_times(times)
        }
        for path in paths {
            interrupt::check()?;
            let src = Path::new(path);
            let Some(name) = src.file_name() else { continue };
            match link_tree(src, &store.join(name)) {
                Ok(()) => {}
                // EXDEV: another filesystem; EPERM: fs.protected_hardlinks;
                // EMLINK: a file that has as many links as it can.
                Err(e)
                    if [Errno::EXDEV, Errno::EPERM, Errno::EMLINK]
                        .into_iter()
                        .any(|n| e.raw_os_error() == Some(n as i32)) =>
                {
                    return Ok(false)
                }
                Err(source) => return Err(Error::Write { what: "the staging directory", source }),
            }
        }
        Ok(true)
    }

    /// What NixOS's generic-extlinux-compatible builder writes, pointing at
    /// the store paths on the same filesystem (U-Boot reads them in place).
    fn extlinux_conf(toplevel: &Path) -> Result<String, Error> {
        let read_link = |name: &str| {
            fs::canonicalize(toplevel.join(name)).map_err(|source| Error::Read {
                what: "the system's",
                path: toplevel.join(name),
                source,
            })
        };
        let kernel = read_link("kernel")?;
        let initrd = read_link("initrd")?;
        let dtbs = read_link("dtbs").ok();
        let params = fs::read_to_string(toplevel.join("kernel-params")).unwrap_or_default();
        let mut s = format!(
            "# Generated by labimg; nixos-rebuild replaces it on the first switch.\nDEFAULT nixos-default\nTIMEOUT 30\n\n\
             LABEL nixos-default\n  MENU LABEL NixOS - Default\n  LINUX {}\n  INITRD {}\n  APPEND init={}/init {}\n",
            kernel.display(),
            initrd.display(),
            toplevel.display(),
            params.trim()
        );
        if let Some(d) = dtbs {
            s.push_str(&format!("  FDTDIR {}\n", d.display()));
        }
        Ok(s)
    }
}
