//! `labprov disk`: partition, format and mount from a disko spec, the way
//! disko's create and mount scripts do, without disko or Nix on the target.
//!
//! This module only gathers: the error, the options and the report line
//! every part shares. Reading the spec is in [`spec`], the `--disk`
//! mapping and the disks it names in [`target`], partition tables in
//! [`table`], the kernel's nodes for disks, image files and partitions in
//! [`devices`], the create steps in [`apply`], LUKS, LVM and mdadm (and
//! their keys) in [`stacked`], mounting in [`mount`], and what `labprov
//! disk plan` prints in [`describe`].

mod apply;
mod describe;
mod devices;
mod mount;
mod spec;
mod stacked;
pub mod table;
mod target;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use lab_disko::SpecError;

pub use apply::{apply, apply_with_keys};
pub use describe::{describe_plan, resolve_for_size};
pub use devices::{attached_loop, attached_loops, partition_device, partition_node};
pub use mount::{mount, mount_with_keys, unmount};
pub use spec::{check_hooks, load, load_raw, SpecSource};
pub use stacked::LuksKeys;
pub use target::{check_mapping, describe_targets, geometry};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what} needs Linux (its block devices, loop devices and mounts); run labprov disk on the machine whose disks it writes, e.g. the installer")]
    NeedsLinux { what: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Facts(#[from] lab_facts::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("`nix eval` failed on {path}:\n{stderr}")]
    NixEval { path: PathBuf, stderr: String },
    #[error("host `{host}` has no disk spec: {path} does not exist; write one (see docs/disko.md) or pass --spec FILE")]
    NoHostSpec { host: String, path: PathBuf },
    #[error("spec disk `{disk}` has no --disk mapping and {why}; pass --disk {disk}=/dev/XXX (or an image file)")]
    MissingMapping { disk: String, why: String },
    #[error("--disk {disk}={}: {} {why}", path.display(), path.display())]
    BadTarget { disk: String, path: PathBuf, why: String },
    #[error("spec file {}: {error}; pass the path of a disko devices JSON file (`nix eval --json --file disko.nix > disko.json`) or a host name", path.display())]
    SpecFile { path: PathBuf, error: io::Error },
    #[error("--disk {disk}=...: the spec has no disk named `{disk}`; its disks are: {known}")]
    UnknownMapping { disk: String, known: String },
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
    #[error("{spec_path} on disk `{disk}` ({}, {bytes} bytes): {message}; nothing was written", path.display())]
    Geometry { disk: String, path: PathBuf, spec_path: String, message: String, bytes: u64 },
    #[error("{path} already holds {found}; labprov only adds what is missing. Pass --wipe to erase it (all data on it is lost)")]
    NeedsWipe { path: PathBuf, found: String },
    #[error("{path} (or one of its partitions) is mounted at {at}; unmount it first (`labprov disk unmount`) or pick another device")]
    Mounted { path: PathBuf, at: String },
    /// A program that is missing, or that failed (with its stderr).
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
    #[error(
        "`losetup -d (loop devices of {})` failed (still attached after 5 s): something still holds it open; the kernel detaches it when that closes (see `losetup -l`, `fuser -v`)",
        image.display()
    )]
    StillAttached { image: PathBuf },
    #[error("{spec_path}: `{kind}` is planned but labprov cannot create it yet; use disko for this host or drop it from the spec")]
    Unsupported { kind: String, spec_path: String },
    #[error("{spec_path}: LUKS volume `{name}` ({device}) needs a passphrase and there is no terminal to ask on; pass --luks-key-file {name}=FILE (a file holding the passphrase; trailing newlines are dropped, as disko reads a passwordFile). Nothing was written")]
    NoPassphrase { name: String, device: String, spec_path: String },
    #[error("LUKS volume `{name}`: key file {}: {why}; put the file there or pass --luks-key-file {name}=PATH. Nothing was written", path.display())]
    LuksKeyFile { name: String, path: PathBuf, why: String },
    #[error("--luks-key-file {name}=...: the spec has no LUKS volume named `{name}`; its LUKS volumes are: {known}")]
    UnknownLuksKey { name: String, known: String },
    #[error("the key given for LUKS volume `{name}` does not open {device} (cryptsetup: no key slot matches): a wrong passphrase or key file; check it and re-run. {written}")]
    WrongLuksKey { name: String, device: String, written: String },
    #[error("{} already holds `{found}`, not {wanted}; labprov does not write over it. If its data is not needed, erase it (`wipefs -a {}`) and re-run", device.display(), device.display())]
    Foreign { device: PathBuf, found: String, wanted: String },
    #[error(
        "{kind} `{name}` already exists on this machine, on {holder}, which is not on the disks \
         given: labprov opens, mounts and closes only the spec's own. Give its disks with --disk, \
         or rename it in the spec"
    )]
    NameTaken { kind: &'static str, name: String, holder: PathBuf },
}

/// A refusal made before writing gets the refused exit code; a tool's
/// error keeps its own class (an interrupted mkfs is an interruption).
impl lab_cli::Classify for DiskError {
    fn class(&self) -> lab_cli::Class {
        match self {
            DiskError::Tool(e) => e.class(),
            DiskError::NeedsWipe { .. }
            | DiskError::Mounted { .. }
            | DiskError::Unsupported { .. }
            | DiskError::NoPassphrase { .. }
            | DiskError::LuksKeyFile { .. }
            | DiskError::UnknownLuksKey { .. }
            | DiskError::Foreign { .. }
            | DiskError::NameTaken { .. }
            | DiskError::NeedsLinux { .. } => lab_cli::Class::Refused,
            _ => lab_cli::Class::Failure,
        }
    }
}

/// What to do and how far to go.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Spec disk name -> device or image file; unmapped disks use the spec's `device`.
    pub disks: BTreeMap<String, PathBuf>,
    /// Only write partition tables (no mkfs, no mount).
    pub only_partition: bool,
    /// Erase a disk that holds something else than the spec's table.
    pub wipe: bool,
    /// Mount root (disko's `/mnt`).
    pub root: PathBuf,
}

/// One line of the report of an apply, mount or unmount.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub what: String,
    pub done: bool,
    pub detail: String,
}

/// Writing and mounting disks is Linux's (the admin's Mac runs keys and
/// secrets, and plans): refused up front elsewhere, before anything is read.
pub(crate) fn require_linux(what: &str) -> Result<(), DiskError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(DiskError::NeedsLinux { what: what.to_string() })
    }
}
