//! `labimg build HOST`: a bootable Raspberry Pi SD image assembled in one
//! file without root, loop devices or mounts, then its .bmap, .sha256 and
//! manifest. See docs/labimg.md for the layout and what is reproducible.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ids;
use crate::layout::{Placement, SdLayout, FIRMWARE_PARTITION_TYPE, ROOT_PARTITION_TYPE, SECTOR};
use lab_facts::Host;
use lab_keys::secrets;
use lab_keys::{HostKey, HOST_KEY_PATH};
use serde::Serialize;

use crate::bmap;
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
    pub progress: Progress,
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub mapped_bytes: u64,
    pub disk_id: String,
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

#[derive(Debug, Serialize)]
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
}

#[derive(Debug, Serialize)]
pub struct Outputs {
    pub image: PathBuf,
    pub bmap: PathBuf,
    pub sha256: PathBuf,
    pub manifest: PathBuf,
}

/// Everything a build needs, gathered and checked before anything is written.
struct Prepared {
    board: String,
    layout: SdLayout,
    firmware: Vec<firmware::Verified>,
    key: Option<HostKey>,
    tree: RootTree,
    bootloader: Vec<u8>,
    bootloader_name: String,
    config_txt: String,
    sizing: ext4::Sizing,
    place: Placement,
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
    pub dry_run: bool,
}

fn prepare(opts: &BuildOptions) -> Result<Prepared, Error> {
    let host = &opts.host;
    let board = host.board.clone().ok_or_else(|| Error::NotAnSdHost { host: host.name.clone() })?;
    let layout = SdLayout::from_facts(host.image.as_ref())?;

    // Everything that can be refused is checked before the first byte is written.
    let manifest = FirmwareManifest::load(&opts.lab_root.join(firmware::MANIFEST))?;
    let fw_dir = opts.firmware_dir.clone().unwrap_or_else(firmware::default_cache);
    let firmware = firmware::load_verified(&manifest, &board, &fw_dir)?;
    let template_path = opts.lab_root.join(firmware::CONFIG_TEMPLATE);
    let template = fs::read_to_string(&template_path).map_err(|source| Error::Read { what: "config.txt template", path: template_path.clone(), source })?;
    let key = match &opts.host_key {
        Some(path) => Some(HostKey::load(path)?),
        // The lab holds the host's key (`labprov keys new`): decrypted in
        // memory with the admin's age identity, checked against the facts.
        None if secrets::encrypted_key_path(&opts.lab_root, &host.name).is_file() => {
            Some(secrets::injection_material_with(&opts.lab_root, &host.name, &secrets::AdminIdentity::from_env()?)?)
        }
        // Neither: the first boot makes one and `labprov enrol` records it.
        None => None,
    };

    ensure_dir(&opts.out_dir)?;
    let (tree, bootloader_path) = root_tree(opts, &board)?;
    let bootloader_path = bootloader_path.ok_or_else(|| Error::BootloaderRequired { board: board.clone() })?;
    let bootloader = fs::read(&bootloader_path).map_err(|source| Error::Read { what: "bootloader", path: bootloader_path.clone(), source })?;
    let bootloader_name = format!("u-boot-{board}.bin");
    let config_txt = firmware::render_config(&template, &bootloader_name);

    let injected_inodes = if key.is_some() { 4 } else { 0 };
    let sizing = ext4::estimate(&tree.stats, injected_inodes, layout.root_headroom);
    let place = layout.place(sizing.need_bytes)?;
    // The image is sparse: what lands on disk is about the content, not the
    // partition sizes.
    let firmware_bytes: u64 = firmware.iter().map(|f| f.content.len() as u64).sum();
    check_free_space(&opts.out_dir, tree.stats.blocks * rootfs::BLOCK + firmware_bytes + bootloader.len() as u64)?;
    Ok(Prepared { board, layout, firmware, key, tree, bootloader, bootloader_name, config_txt, sizing, place })
}

fn key_info(key: &HostKey) -> KeyInfo {
    KeyInfo { path: HOST_KEY_PATH, public_key: key.public_openssh(), fingerprint: key.fingerprint() }
}

fn file_info(name: &str, content: &[u8]) -> FileInfo {
    FileInfo { name: name.to_string(), size: content.len() as u64, sha256: firmware::sha256_hex(content) }
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

/// Every check and every input of a build, nothing written.
pub fn plan(opts: &BuildOptions) -> Result<BuildPlan, Error> {
    let p = prepare(opts)?;
    Ok(BuildPlan {
        host: opts.host.name.clone(),
        board: p.board.clone(),
        image: opts.out_dir.join(format!("{}.img", opts.host.name)),
        placement: p.place,
        root: root_info(opts, &p.tree, &p.sizing),
        firmware: p.firmware.iter().map(firmware_info).collect(),
        bootloader: file_info(&p.bootloader_name, &p.bootloader),
        host_key: p.key.as_ref().map(key_info),
        dry_run: true,
    })
}

pub fn build(opts: &BuildOptions) -> Result<BuildSummary, Error> {
    let started = Instant::now();
    let host = &opts.host;
    let Prepared { board, layout, firmware, key, tree, bootloader, bootloader_name, config_txt, sizing, place } = prepare(opts)?;
    interrupt::check()?;

    // The image holds a private key: never readable by others, from creation on.
    let name = &host.name;
    let image_path = opts.out_dir.join(format!("{name}.img"));
    let pending = Pending::create(&image_path, if key.is_some() { 0o600 } else { 0o644 })?;
    let image = pending.file.as_file();
    image.set_len(place.total).map_err(|source| Error::Write { what: "the image", source })?;

    let disk_id = ids::id32(name, "mbr-disk-id");
    write_mbr(image, &place, disk_id).map_err(|source| Error::Write { what: "the partition table", source })?;

    let step = opts.progress.step("firmware", "FAT firmware partition");
    let volume_id = ids::id32(name, "firmware-volume-id");
    let mut fat_files: Vec<FatFile> = firmware.iter().map(|f| FatFile { name: &f.name, content: &f.content }).collect();
    fat_files.push(FatFile { name: "config.txt", content: config_txt.as_bytes() });
    fat_files.push(FatFile { name: &bootloader_name, content: &bootloader });
    fat::write_partition(image, place.firmware_start, place.firmware_size, &layout.firmware_label, volume_id, opts.epoch, &mut fat_files)?;
    step.finish_and_clear();
    interrupt::check()?;

    let step = opts.progress.step("root", "mkfs.ext4 -d (root filesystem)");
    let root_uuid = ids::uuid_string(&ids::uuid(name, "root-fs-uuid"));
    let hash_seed = ids::uuid_string(&ids::uuid(name, "root-fs-hash-seed"));
    ext4::Mkfs {
        image: pending.path(),
        offset: place.root_start,
        size: place.root_size,
        tree: &tree,
        label: &layout.root_label,
        uuid: &root_uuid,
        hash_seed: &hash_seed,
        inodes: sizing.inodes,
        epoch: opts.epoch,
    }
    .run()?;
    step.finish_and_clear();
    interrupt::check()?;

    let key_info = match &key {
        Some(key) => {
            let step = opts.progress.step("key", "host key");
            let private = key.private_openssh();
            let public = format!("{}\n", key.public_openssh());
            let pub_path = format!("{HOST_KEY_PATH}.pub");
            ext4::inject(
                pending.path(),
                place.root_start,
                &tree,
                &[
                    Inject { path: HOST_KEY_PATH, content: private.as_bytes(), mode: 0o600 },
                    Inject { path: &pub_path, content: public.as_bytes(), mode: 0o644 },
                ],
                opts.epoch,
            )?;
            step.finish_and_clear();
            Some(key_info(key))
        }
        None => None,
    };
    let builder = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    ext4::normalize(image, place.root_start, opts.epoch, builder)?;
    image.sync_data().map_err(|source| Error::Write { what: "the image", source })?;
    interrupt::check()?;

    let (bmap, sha256) = bmap::digest(image, place.total, opts.progress).map_err(|source| Error::Write { what: "the block map", source })?;
    let image_file = format!("{name}.img");
    let manifest = ImageManifest {
        labimg: env!("CARGO_PKG_VERSION"),
        host: name.clone(),
        board: board.clone(),
        source_date_epoch: opts.epoch,
        image: ImageInfo {
            file: image_file.clone(),
            size: place.total,
            sha256: sha256.clone(),
            mapped_bytes: bmap.mapped_blocks() * bmap.block_size,
            disk_id: format!("0x{disk_id:08x}"),
        },
        partitions: vec![
            PartitionInfo {
                number: 1,
                r#type: format!("0x{FIRMWARE_PARTITION_TYPE:02x}"),
                bootable: true,
                start: place.firmware_start,
                size: place.firmware_size,
                filesystem: "vfat",
                label: layout.firmware_label.clone(),
                id: format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff),
            },
            PartitionInfo {
                number: 2,
                r#type: format!("0x{ROOT_PARTITION_TYPE:02x}"),
                bootable: false,
                start: place.root_start,
                size: place.root_size,
                filesystem: "ext4",
                label: layout.root_label.clone(),
                id: root_uuid,
            },
        ],
        firmware: firmware.iter().map(firmware_info).collect(),
        bootloader: file_info(&bootloader_name, &bootloader),
        config_txt: file_info("config.txt", config_txt.as_bytes()),
        root: root_info(opts, &tree, &sizing),
        host_key: key_info,
    };

    let outputs = Outputs {
        image: image_path.clone(),
        bmap: opts.out_dir.join(format!("{image_file}.bmap")),
        sha256: opts.out_dir.join(format!("{image_file}.sha256")),
        manifest: opts.out_dir.join(format!("{name}.manifest.json")),
    };
    let manifest_json = serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n";
    let small = [(&outputs.bmap, bmap.to_xml()), (&outputs.sha256, format!("{sha256}  {image_file}\n")), (&outputs.manifest, manifest_json)];
    let mut done = Vec::new();
    for (path, text) in small {
        let mut p = Pending::create(path, 0o644)?;
        p.file.write_all(text.as_bytes()).map_err(|source| Error::Write { what: "an output file", source })?;
        done.push(p);
    }
    // The small files first, the image last: a finished image always has
    // its matching block map and checksum beside it.
    for p in done {
        p.commit()?;
    }
    pending.commit()?;
    Ok(BuildSummary { manifest, outputs, seconds: started.elapsed().as_secs_f64() })
}

fn write_mbr(image: &File, place: &Placement, disk_id: u32) -> io::Result<()> {
    let mut f = image;
    let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR as u32, disk_id.to_le_bytes()).map_err(|e| io::Error::other(e.to_string()))?;
    let entry = |start: u64, size: u64, sys: u8, boot: bool| mbrman::MBRPartitionEntry {
        boot: if boot { mbrman::BOOT_ACTIVE } else { mbrman::BOOT_INACTIVE },
        first_chs: mbrman::CHS::empty(),
        sys,
        last_chs: mbrman::CHS::empty(),
        starting_lba: (start / SECTOR) as u32,
        sectors: (size / SECTOR) as u32,
    };
    mbr[1] = entry(place.firmware_start, place.firmware_size, FIRMWARE_PARTITION_TYPE, true);
    mbr[2] = entry(place.root_start, place.root_size, ROOT_PARTITION_TYPE, false);
    mbr.write_into(&mut f).map_err(|e| io::Error::other(e.to_string()))
}

fn check_free_space(dir: &Path, need: u64) -> Result<(), Error> {
    if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
        let free = st.blocks_available() * st.fragment_size();
        if free < need {
            return Err(Error::DiskFull { dir: dir.to_path_buf(), need_mib: need >> 20, free_mib: free >> 20 });
        }
    }
    Ok(())
}

/// The root tree and, where the system provides one, the bootloader file.
fn root_tree(opts: &BuildOptions, board: &str) -> Result<(RootTree, Option<PathBuf>), Error> {
    match &opts.root {
        RootInput::Tree(path) => Ok((RootTree::open(path, &opts.out_dir)?, opts.bootloader.clone())),
        RootInput::System(toplevel) => {
            let tree = nixos::stage(toplevel, &opts.out_dir)?;
            let boot = match &opts.bootloader {
                Some(b) => Some(b.clone()),
                None => nixos::uboot(&opts.lab_root, &opts.host.name, board)?,
            };
            Ok((tree, boot))
        }
        RootInput::Flake => {
            let toplevel = nixos::build_toplevel(&opts.lab_root, &opts.host.name)?;
            let tree = nixos::stage(&toplevel, &opts.out_dir)?;
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
        let attr = format!("{}#nixosConfigurations.{host}.config.system.build.toplevel", lab.display());
        let label = format!("building {host}'s system");
        Ok(PathBuf::from(nix(&["nix", "build", "--no-link", "--print-out-paths", &attr], Some(&label))?))
    }

    /// U-Boot for the board from the host's own nixpkgs.
    pub fn uboot(lab: &Path, host: &str, board: &str) -> Result<Option<PathBuf>, Error> {
        let pkg = match board {
            "rpi3" => "ubootRaspberryPi3_64bit",
            "rpi4" => "ubootRaspberryPi4_64bit",
            _ => return Ok(None),
        };
        let attr = format!("{}#nixosConfigurations.{host}.pkgs.{pkg}", lab.display());
        let out = nix(&["nix", "build", "--no-link", "--print-out-paths", &attr], Some("building U-Boot"))?;
        Ok(Some(PathBuf::from(out).join("u-boot.bin")))
    }

    pub fn stage(toplevel: &Path, scratch: &Path) -> Result<RootTree, Error> {
        let top = toplevel.display().to_string();
        let closure = nix(&["nix-store", "--query", "--requisites", &top], None)?;
        let paths: Vec<&str> = closure.lines().collect();
        let mut dump = vec!["nix-store", "--dump-db"];
        dump.extend(&paths);
        let registration = nix(&dump, None)?;

        let dir =
            tempfile::Builder::new().prefix(".labimg-system.").tempdir_in(scratch).map_err(|source| Error::Write { what: "the staging directory", source })?;
        let store = dir.path().join("nix/store");
        fs::create_dir_all(&store).map_err(|source| Error::Write { what: "the staging directory", source })?;
        lab_cli::Cmd::new("cp")
            .args(["-a", "--reflink=auto", "-t"])
            .arg(&store)
            .args(&paths)
            .label(format!("copying {} store paths", paths.len()))
            .stream()
            .map_err(|source| Error::Stage { source })?;
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().expect("has a parent"))
                .and_then(|_| fs::write(&p, text))
                .map_err(|source| Error::Write { what: "the staging directory", source })
        };
        write("nix-path-registration", &(registration + "\n"))?;
        write("boot/extlinux/extlinux.conf", &extlinux_conf(toplevel)?)?;
        let stats = rootfs::scan(dir.path())?;
        Ok(RootTree::staged(dir, toplevel.to_path_buf(), stats))
    }

    /// What NixOS's generic-extlinux-compatible builder writes, pointing at
    /// the store paths on the same filesystem (U-Boot reads them in place).
    fn extlinux_conf(toplevel: &Path) -> Result<String, Error> {
        let read_link =
            |name: &str| fs::canonicalize(toplevel.join(name)).map_err(|source| Error::Read { what: "the system's", path: toplevel.join(name), source });
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
