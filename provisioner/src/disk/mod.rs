//! `labprov disk`: partition, format and mount from a disko spec, the way
//! disko's create and mount scripts do, without disko or Nix on the target.

pub mod table;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lab_model::disko::plan::{self as dplan, Resolved, Step, TablePlan};
use lab_model::disko::{self, Devices, SpecError};

use table::Existing;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Facts(#[from] lab_model::facts::Error),
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
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("`{tool}` is not installed; install it (Debian: apt-get install {package})")]
    MissingTool { tool: String, package: String },
    #[error("{spec_path}: `{kind}` is planned but labprov cannot create it yet; use disko for this host or drop it from the spec")]
    Unsupported { kind: String, spec_path: String },
}

/// Where the spec comes from.
#[derive(Debug, Clone)]
pub enum SpecSource {
    /// `hosts/<host>/disko.nix` of the lab, evaluated with `nix eval`.
    Host { lab: lab_model::Lab, host: String },
    /// A JSON file: a raw spec or disko's devices JSON (both normalise).
    File(PathBuf),
}

/// Loads the raw spec as JSON.
pub fn load_raw(source: &SpecSource) -> Result<serde_json::Value, DiskError> {
    match source {
        SpecSource::Host { lab, host } => {
            let path = lab.root.join("hosts").join(host).join("disko.nix");
            if !path.is_file() {
                return Err(DiskError::NoHostSpec { host: host.clone(), path });
            }
            let json = lab_model::facts::eval_json(&path).map_err(|e| match e {
                lab_model::facts::Error::NixEval { path, stderr } => DiskError::NixEval { path, stderr },
                other => DiskError::Facts(other),
            })?;
            serde_json::from_slice(&json).map_err(|e| SpecError::Json(e.to_string()).into())
        }
        SpecSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| DiskError::SpecFile { path: path.clone(), error })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| SpecError::Json(format!("{}: {e}", path.display())))?;
            // Accept `{ disko.devices = ...; }` wrappers too.
            Ok(v.get("disko").and_then(|d| d.get("devices")).cloned().unwrap_or(v))
        }
    }
}

/// Refuses a spec whose hooks are set: labprov does not run disko's hook
/// scripts, and leaving them out silently would make a different machine.
pub fn check_hooks(normalized: &serde_json::Value) -> Result<(), DiskError> {
    match disko::hooks_set(normalized).into_iter().next() {
        Some(spec_path) => Err(DiskError::Unsupported { kind: "a hook (shell code disko runs around its steps)".into(), spec_path }),
        None => Ok(()),
    }
}

/// Normalised devices JSON and the typed model.
pub fn load(source: &SpecSource) -> Result<(serde_json::Value, Devices), DiskError> {
    let raw = load_raw(source)?;
    let normalized = disko::normalize(&raw)?;
    let devices: Devices = serde_json::from_value(normalized.clone()).map_err(|e| SpecError::invalid("disko.devices", e.to_string()))?;
    Ok((normalized, devices))
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

/// Checks the mapping before anything is read or written: every mapped
/// name is a spec disk; when any disk is mapped, all are (a disk left out
/// would silently fall back to its spec device, a real disk of this
/// machine); and every target exists as an image file or a block device.
pub fn check_mapping(devices: &Devices, opts: &ApplyOptions) -> Result<(), DiskError> {
    for name in opts.disks.keys() {
        if !devices.disk.contains_key(name) {
            return Err(DiskError::UnknownMapping { disk: name.clone(), known: devices.disk.keys().cloned().collect::<Vec<_>>().join(", ") });
        }
    }
    for (name, disk) in &devices.disk {
        match opts.disks.get(name) {
            Some(path) => match std::fs::metadata(path) {
                Ok(m) if m.is_file() || m.file_type().is_block_device() => {}
                Ok(_) => {
                    return Err(DiskError::BadTarget { disk: name.clone(), path: path.clone(), why: "is neither an image file nor a block device".into() })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(DiskError::BadTarget {
                        disk: name.clone(),
                        path: path.clone(),
                        why: format!(
                            "does not exist; create the image first (`truncate -s {} {}`) or name an existing block device",
                            disk.image_size,
                            path.display()
                        ),
                    })
                }
                Err(source) => return Err(DiskError::Io { path: path.clone(), source }),
            },
            None if !opts.disks.is_empty() => {
                return Err(DiskError::MissingMapping {
                    disk: name.clone(),
                    why: format!("other disks are mapped with --disk, so its spec device {} is not used", disk.device),
                })
            }
            None => {
                let ok = std::fs::metadata(&disk.device).map(|m| m.file_type().is_block_device()).unwrap_or(false);
                if !ok {
                    return Err(DiskError::MissingMapping {
                        disk: name.clone(),
                        why: format!("its spec device {} is not a block device on this machine", disk.device),
                    });
                }
            }
        }
    }
    Ok(())
}

fn target_of(devices: &Devices, opts: &ApplyOptions, disk: &str) -> Result<PathBuf, DiskError> {
    match opts.disks.get(disk) {
        Some(p) => Ok(p.clone()),
        None => devices
            .disk
            .get(disk)
            .map(|d| PathBuf::from(&d.device))
            .ok_or_else(|| DiskError::MissingMapping { disk: disk.to_string(), why: "the spec has no such disk".into() }),
    }
}

/// The tool that creates each step's content, with its Debian package.
fn tools_needed(steps: &[Step]) -> Vec<(String, &'static str)> {
    let mut tools: Vec<(String, &'static str)> = Vec::new();
    let mut add = |t: String| {
        if !tools.iter().any(|(x, _)| x == &t) {
            let pkg = package_of(&t);
            tools.push((t, pkg));
        }
    };
    for s in steps {
        match s {
            Step::Format { format, .. } => add(format!("mkfs.{format}")),
            Step::Mkswap { .. } => add("mkswap".into()),
            Step::Btrfs { subvolumes, .. } => {
                add("mkfs.btrfs".into());
                if !subvolumes.is_empty() {
                    add("btrfs".into());
                }
            }
            _ => {}
        }
    }
    for t in ["blkid", "losetup", "mount", "findmnt", "lsblk"] {
        add(t.into());
    }
    tools
}

/// Whether `tool` is an executable file on PATH (or a path to one).
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if tool.contains('/') {
        return exec(Path::new(tool));
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| exec(&d.join(tool))))
}

/// What apply will do to one disk's table, decided before any write.
struct TableWork {
    disk: String,
    target: PathBuf,
    sector_size: u64,
    resolved: Vec<Resolved>,
    wants_gpt: bool,
    /// None: the table is already there; Some(zap first).
    write: Option<bool>,
}

/// Reads every disk and decides what to write, so that every refusal (a
/// size that does not fit, a disk holding something else, a mounted disk)
/// comes before the first byte is written to any disk.
fn prepare_tables(devices: &Devices, opts: &ApplyOptions, steps: &[Step]) -> Result<Vec<TableWork>, DiskError> {
    let mut work = Vec::new();
    for step in steps {
        let Step::Partition { disk, table, .. } = step else { continue };
        if let TablePlan::Gpt { partitions, hybrid, .. } = table {
            // TODO: disko's `sgdisk -h` hybrid MBR is not written yet (no
            // fixture pins its output); refuse rather than leave it out.
            if let Some(p) = hybrid.first().and_then(|n| partitions.iter().find(|p| p.number == *n)) {
                return Err(DiskError::Unsupported { kind: "hybrid MBR (`hybrid`)".into(), spec_path: format!("{}.hybrid", p.spec_path) });
            }
        }
        let target = target_of(devices, opts, disk)?;
        let (sector_size, total) = geometry(&target)?;
        let existing = table::read_existing(&target, sector_size)?;
        let wants_gpt = matches!(table, TablePlan::Gpt { .. }) || matches!(table, TablePlan::Parted { format, .. } if format == "gpt");
        let kept = match (&existing, table) {
            (Existing::Gpt(slots), TablePlan::Gpt { .. }) if !opts.wipe => slots.iter().map(|(s, _, _)| *s).collect(),
            _ => Vec::new(),
        };
        let resolved = dplan::resolve_table(table, sector_size, total, &kept).map_err(|e| {
            let at = e.partition().and_then(|n| table.spec_path_of(n)).map(str::to_string).unwrap_or_else(|| format!("disko.devices.disk.{disk}.content"));
            DiskError::Geometry { disk: disk.clone(), path: target.clone(), spec_path: at, message: e.to_string(), bytes: total * sector_size }
        })?;
        let up_to_date = match &existing {
            Existing::Gpt(slots) if wants_gpt => resolved
                .iter()
                .all(|r| slots.iter().any(|(s, name, _)| s.number == r.number && s.first == r.first && s.last == r.last && name == &truncate36(&r.name))),
            Existing::Msdos(slots) if !wants_gpt => {
                resolved.iter().all(|r| slots.iter().any(|s| s.number == r.number && s.first == r.first && s.last == r.last))
            }
            _ => false,
        };
        let write = if up_to_date {
            None
        } else {
            match (&existing, opts.wipe) {
                (Existing::Blank, _) | (_, true) => {}
                (Existing::Gpt(_), false) if wants_gpt => {}
                (other, false) => return Err(DiskError::NeedsWipe { path: target.clone(), found: describe(other) }),
            }
            refuse_mounted(&target)?;
            Some(opts.wipe)
        };
        work.push(TableWork { disk: disk.clone(), target, sector_size, resolved, wants_gpt, write });
    }
    Ok(work)
}

/// Runs the plan: tables first, then (unless `only_partition`) filesystems
/// where none is found, then mounts in mountpoint order. Re-running on a
/// prepared disk changes nothing. Everything that can be refused is refused
/// before the first write.
pub fn apply(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    if !opts.only_partition {
        if let Some(Step::Unsupported { kind, spec_path, .. }) = steps.iter().find(|s| matches!(s, Step::Unsupported { .. })) {
            return Err(DiskError::Unsupported { kind: kind.clone(), spec_path: spec_path.clone() });
        }
        if let Some((tool, package)) = tools_needed(&steps).into_iter().find(|(t, _)| !on_path(t)) {
            return Err(DiskError::MissingTool { tool, package: package.to_string() });
        }
    }
    let work = prepare_tables(devices, opts, &steps)?;
    let mut actions = Vec::new();
    let mut loops: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    // Spec partition device path -> the node that really holds it.
    let mut nodes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for w in work {
        let TableWork { disk, target, sector_size, resolved, wants_gpt, write } = w;
        match write {
            None => actions.push(Action { what: format!("partition {disk}"), done: false, detail: format!("{} already has the table", target.display()) }),
            Some(zap) => {
                if zap {
                    table::zap(&target, sector_size)?;
                }
                if wants_gpt {
                    table::write_gpt(&target, sector_size, &resolved, !zap)?;
                } else {
                    table::write_msdos(&target, sector_size, &resolved)?;
                }
                notify_kernel(&target);
                actions.push(Action {
                    what: format!("partition {disk}"),
                    done: true,
                    detail: format!("wrote {} partitions to {}", resolved.len(), target.display()),
                });
            }
        }
        if !opts.only_partition {
            let dev = block_device_for(&target, &mut loops)?;
            for r in &resolved {
                let node = partition_device(&target, &dev, r.number, sector_size)?;
                nodes.insert(r.device.clone(), node);
            }
        }
    }
    if opts.only_partition {
        return Ok(actions);
    }
    let node = |spec_dev: &str| nodes.get(spec_dev).cloned().unwrap_or_else(|| PathBuf::from(spec_dev));
    for step in &steps {
        match step {
            Step::Format { device, format, extra_args } => {
                let dev = node(device);
                if has_signature(&dev)? {
                    actions.push(Action { what: format!("format {device}"), done: false, detail: format!("{} already holds a filesystem", dev.display()) });
                    continue;
                }
                let tool = format!("mkfs.{format}");
                let mut args: Vec<String> = extra_args.clone();
                args.push(dev.display().to_string());
                run(&tool, &args)?;
                actions.push(Action { what: format!("format {device}"), done: true, detail: format!("{tool} {}", args.join(" ")) });
            }
            Step::Mkswap { device, extra_args } => {
                let dev = node(device);
                if has_signature(&dev)? {
                    actions.push(Action { what: format!("mkswap {device}"), done: false, detail: format!("{} already holds a signature", dev.display()) });
                    continue;
                }
                let mut args = extra_args.clone();
                args.push(dev.display().to_string());
                run("mkswap", &args)?;
                actions.push(Action { what: format!("mkswap {device}"), done: true, detail: String::new() });
            }
            Step::Btrfs { device, extra_args, subvolumes } => {
                let dev = node(device);
                if !has_signature(&dev)? {
                    let mut args = vec![dev.display().to_string()];
                    args.extend(extra_args.iter().flat_map(|a| a.split_whitespace().map(str::to_string)));
                    run("mkfs.btrfs", &args)?;
                    actions.push(Action { what: format!("format {device}"), done: true, detail: "mkfs.btrfs".into() });
                }
                if !subvolumes.is_empty() {
                    create_subvolumes(&dev, subvolumes, &mut actions)?;
                }
            }
            Step::Unsupported { kind, spec_path, .. } => return Err(DiskError::Unsupported { kind: kind.clone(), spec_path: spec_path.clone() }),
            Step::Partition { .. } | Step::Mount { .. } => {}
        }
    }
    actions.extend(mount_steps(&steps, &opts.root, &node)?);
    Ok(actions)
}

fn truncate36(s: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        n += c.len_utf16();
        if n > 36 {
            break;
        }
        out.push(c);
    }
    out
}

fn describe(e: &Existing) -> String {
    match e {
        Existing::Blank => "nothing".into(),
        Existing::Gpt(s) => format!("a GPT with {} partitions", s.len()),
        Existing::Msdos(s) => format!("an msdos table with {} partitions", s.len()),
        Existing::Other(t) => format!("a `{t}` signature"),
    }
}

/// Sector size and sector count of a device or image file.
pub fn geometry(path: &Path) -> Result<(u64, u64), DiskError> {
    let f = File::open(path).map_err(|source| DiskError::Io { path: path.to_path_buf(), source })?;
    let bytes = table::device_bytes(&f, path)?;
    let meta = f.metadata().map_err(|source| DiskError::Io { path: path.to_path_buf(), source })?;
    let ss = if meta.is_file() { 512 } else { lab_model::blockdev::sector_size(&f).unwrap_or(512) };
    Ok((ss, bytes / ss))
}

fn notify_kernel(target: &Path) {
    let Ok(f) = File::open(target) else { return };
    let is_block = f.metadata().map(|m| !m.is_file()).unwrap_or(false);
    if is_block {
        // EBUSY/EINVAL (no partition scanning) are not fatal: the table is
        // written; the kernel picks it up on the next attach or boot.
        let _ = lab_model::blockdev::reread_partitions(&f);
        let _ = Command::new("udevadm").args(["settle", "--timeout", "120"]).status();
    }
}

/// The block device for a target: itself, or a loop device with partition
/// scanning for an image file (attached once, reused on later runs).
fn block_device_for(target: &Path, loops: &mut BTreeMap<PathBuf, PathBuf>) -> Result<PathBuf, DiskError> {
    let meta = std::fs::metadata(target).map_err(|source| DiskError::Io { path: target.to_path_buf(), source })?;
    if !meta.is_file() {
        return Ok(target.to_path_buf());
    }
    if let Some(l) = loops.get(target) {
        return Ok(l.clone());
    }
    let dev = match attached_loop(target)? {
        Some(d) => {
            let _ = Command::new("losetup").args(["-c"]).arg(&d).status();
            d
        }
        None => PathBuf::from(run("losetup", &["-f".into(), "--show".into(), "-P".into(), target.display().to_string()])?.trim()),
    };
    // Ask for the table explicitly: the scan `losetup -P` triggers does not
    // always show partitions in sysfs (seen in containers), BLKRRPART does.
    if let Ok(f) = File::open(&dev) {
        let _ = lab_model::blockdev::reread_partitions(&f);
    }
    let _ = Command::new("udevadm").args(["settle", "--timeout", "30"]).status();
    loops.insert(target.to_path_buf(), dev.clone());
    Ok(dev)
}

/// The loop device an image file is attached to, if any.
pub fn attached_loop(image: &Path) -> Result<Option<PathBuf>, DiskError> {
    Ok(attached_loops(image)?.into_iter().next())
}

/// Every loop device backed by an image file: the whole-disk one and any
/// per-partition ones at an offset.
pub fn attached_loops(image: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let out = Command::new("losetup").env("LC_ALL", "C").arg("-j").arg(image).output().map_err(|e| tool_error("losetup", "util-linux", e))?;
    if !out.status.success() {
        return Err(DiskError::Command {
            cmd: format!("losetup -j {}", image.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter_map(|l| l.split(':').next()).filter(|d| !d.is_empty()).map(PathBuf::from).collect())
}

/// Detaches `dev` if, once open, it is still bound to `image`: holding it
/// open keeps its number from going to another image meanwhile. Refuses a
/// device something outside the spec still has mounted. Returns false when
/// there was nothing to do: bound elsewhere by now, or already detaching
/// (the kernel finishes a detach at the last close, so a device another
/// program had open stays listed for a while).
fn detach_loop(dev: &Path, image: &Path) -> Result<bool, DiskError> {
    let io_err = |source| DiskError::Io { path: dev.to_path_buf(), source };
    let backing = std::fs::metadata(image).map_err(|source| DiskError::Io { path: image.to_path_buf(), source })?;
    let f = match File::open(dev) {
        Ok(f) => f,
        // Gone between the listing and now.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENXIO) | Some(nix::libc::ENOENT)) => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    let status = match lab_model::blockdev::loop_status(&f) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    if status.backing != (backing.dev(), backing.ino()) || status.detaching {
        return Ok(false);
    }
    let mounts = lab_model::blockdev::mounts_of(dev).map_err(|e| io_err(io::Error::other(e.to_string())))?;
    if !mounts.is_empty() {
        return Err(DiskError::Mounted { path: dev.to_path_buf(), at: mounts.join(", ") });
    }
    match lab_model::blockdev::loop_detach(&f) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// The kernel's node for partition `n` of `dev` (`sda1`, `nvme0n1p1`, `loop0p1`).
pub fn partition_node(dev: &Path, n: u32) -> PathBuf {
    let s = dev.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// The node holding partition `n` of `target` (attached as `dev`). Where
/// the kernel shows no partitions of a loop device (some containers), the
/// partition gets its own loop device at its offset, like `losetup -o`.
pub fn partition_device(target: &Path, dev: &Path, n: u32, sector_size: u64) -> Result<PathBuf, DiskError> {
    let node = partition_node(dev, n);
    if sysfs_has(&node) && ensure_node(&node).is_ok() {
        return Ok(node);
    }
    let slots = match table::read_existing(target, sector_size)? {
        Existing::Gpt(s) => s.into_iter().map(|(s, _, _)| s).collect(),
        Existing::Msdos(s) => s,
        _ => Vec::new(),
    };
    let slot = slots
        .into_iter()
        .find(|s| s.number == n)
        .ok_or_else(|| DiskError::Table { path: target.to_path_buf(), message: format!("partition {n} is not in the table") })?;
    let offset = slot.first * sector_size;
    let size = (slot.last - slot.first + 1) * sector_size;
    // The kernel did not pick the partition up from the table: add it.
    if let Ok(f) = File::open(dev) {
        let _ = lab_model::blockdev::add_partition(&f, n, offset, size);
    }
    match ensure_node(&node) {
        Ok(()) => return Ok(node),
        Err(e) if dev == target => return Err(e),
        Err(_) => {}
    }
    let out =
        Command::new("losetup").args(["-j"]).arg(target).args(["-o", &offset.to_string()]).output().map_err(|e| tool_error("losetup", "util-linux", e))?;
    if let Some(existing) = String::from_utf8_lossy(&out.stdout).lines().next().and_then(|l| l.split(':').next()) {
        return Ok(PathBuf::from(existing));
    }
    let dev = run(
        "losetup",
        &["-f".into(), "--show".into(), "--offset".into(), offset.to_string(), "--sizelimit".into(), size.to_string(), target.display().to_string()],
    )?;
    Ok(PathBuf::from(dev.trim()))
}

/// Makes sure the partition's device node exists. Where no udev runs
/// (containers, some rescue systems) the kernel knows the partition (sysfs)
/// but nobody creates `/dev/...`: do what udev would, from sysfs's `dev`.
/// Whether the kernel shows `node`'s partition in sysfs right now.
fn sysfs_has(node: &Path) -> bool {
    node.file_name().is_some_and(|n| Path::new("/sys/class/block").join(n).join("dev").exists())
}

fn ensure_node(node: &Path) -> Result<(), DiskError> {
    let Some(name) = node.file_name().and_then(|n| n.to_str()) else { return Ok(()) };
    let sys = PathBuf::from("/sys/class/block").join(name).join("dev");
    // The kernel may still be adding the partition after BLKRRPART.
    for _ in 0..25 {
        if sys.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    // The kernel's word, not the node's existence, says the partition is
    // there: a node left behind by an earlier attachment (devtmpfs in a
    // container keeps them) may name no device, or another one.
    let text = std::fs::read_to_string(&sys).map_err(|source| DiskError::Io { path: sys.clone(), source })?;
    let bad = || DiskError::Table { path: sys.clone(), message: format!("unexpected content `{}`", text.trim()) };
    let (major, minor) = text.trim().split_once(':').ok_or_else(bad)?;
    let (major, minor): (u64, u64) = match (major.parse(), minor.parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(bad()),
    };
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let want = makedev(major, minor);
    match std::fs::metadata(node) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == want => return Ok(()),
        Ok(_) => std::fs::remove_file(node).map_err(|source| DiskError::Io { path: node.to_path_buf(), source })?,
        Err(_) => {}
    }
    mknod(node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), want).map_err(|e| DiskError::Io { path: node.to_path_buf(), source: e.into() })
}

/// disko formats only where `blkid` finds nothing.
fn has_signature(dev: &Path) -> Result<bool, DiskError> {
    let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(dev).output().map_err(|e| tool_error("blkid", "util-linux", e))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("TYPE=")))
}

fn refuse_mounted(target: &Path) -> Result<(), DiskError> {
    let meta = std::fs::metadata(target).map_err(|source| DiskError::Io { path: target.to_path_buf(), source })?;
    // An image file may be attached whole and, where the kernel shows no
    // partitions, once per partition at an offset: check every one.
    let devs = if meta.is_file() { attached_loops(target)? } else { vec![target.to_path_buf()] };
    for dev in devs {
        // The same check labimg flash makes: the device, its partitions and
        // anything stacked on them (device mapper, md), mounts and swap.
        let mounts = lab_model::blockdev::mounts_of(&dev).map_err(|e| DiskError::Io { path: dev.clone(), source: std::io::Error::other(e.to_string()) })?;
        if !mounts.is_empty() {
            return Err(DiskError::Mounted { path: target.to_path_buf(), at: mounts.join(", ") });
        }
        // The kernel's word as well: some mounts (btrfs) show an anonymous
        // device number in mountinfo, but a mounted filesystem, or any
        // mounted partition of a disk, makes an exclusive open fail.
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_EXCL).open(&dev) {
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                let at = format!("{} is in use: mounted, or held by another program (`lsblk {}` shows what)", dev.display(), dev.display());
                return Err(DiskError::Mounted { path: target.to_path_buf(), at });
            }
        }
    }
    Ok(())
}

fn create_subvolumes(dev: &Path, subvolumes: &[String], actions: &mut Vec<Action>) -> Result<(), DiskError> {
    let tmp = std::env::temp_dir().join(format!("labprov-btrfs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|source| DiskError::Io { path: tmp.clone(), source })?;
    run("mount", &["-t".into(), "btrfs".into(), dev.display().to_string(), tmp.display().to_string()])?;
    let result = (|| {
        for s in subvolumes {
            let p = tmp.join(s.trim_start_matches('/'));
            if p.exists() {
                actions.push(Action { what: format!("subvolume {s}"), done: false, detail: "exists".into() });
                continue;
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|source| DiskError::Io { path: parent.to_path_buf(), source })?;
            }
            run("btrfs", &["subvolume".into(), "create".into(), p.display().to_string()])?;
            actions.push(Action { what: format!("subvolume {s}"), done: true, detail: String::new() });
        }
        Ok(())
    })();
    let _ = run("umount", &[tmp.display().to_string()]);
    let _ = std::fs::remove_dir(&tmp);
    result
}

/// Mounts every `Mount` step under `root`, parents first; already mounted
/// ones are left alone.
fn mount_steps(steps: &[Step], root: &Path, node: &dyn Fn(&str) -> PathBuf) -> Result<Vec<Action>, DiskError> {
    let mut actions = Vec::new();
    for step in steps {
        if let Step::Mount { device, mountpoint, fs_type, options } = step {
            let target = join_root(root, mountpoint);
            if is_mountpoint(&target) {
                actions.push(Action { what: format!("mount {mountpoint}"), done: false, detail: format!("{} is already mounted", target.display()) });
                continue;
            }
            let dev = node(device);
            let args = vec![
                "-t".to_string(),
                fs_type.clone(),
                dev.display().to_string(),
                target.display().to_string(),
                "-o".into(),
                options.join(","),
                "-o".into(),
                "X-mount.mkdir".into(),
            ];
            run("mount", &args)?;
            actions.push(Action { what: format!("mount {mountpoint}"), done: true, detail: format!("{} on {}", dev.display(), target.display()) });
        }
    }
    Ok(actions)
}

fn join_root(root: &Path, mountpoint: &str) -> PathBuf {
    let rel = mountpoint.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn is_mountpoint(p: &Path) -> bool {
    Command::new("findmnt").args(["-rno", "TARGET", "--mountpoint"]).arg(p).output().map(|o| o.status.success() && !o.stdout.is_empty()).unwrap_or(false)
}

/// Mounts a prepared disk set (after `apply`, or on a rescue system).
pub fn mount(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    let mut loops = BTreeMap::new();
    let mut nodes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for step in &steps {
        if let Step::Partition { disk, table, .. } = step {
            let target = target_of(devices, opts, disk)?;
            let dev = block_device_for(&target, &mut loops)?;
            let parts: Vec<(u32, String)> = match table {
                TablePlan::Gpt { partitions, .. } => partitions.iter().map(|p| (p.number, p.device.clone())).collect(),
                TablePlan::Parted { partitions, .. } => partitions.iter().map(|p| (p.index as u32, p.device.clone())).collect(),
            };
            let (sector_size, _) = geometry(&target)?;
            for (n, spec_dev) in parts {
                let node = partition_device(&target, &dev, n, sector_size)?;
                nodes.insert(spec_dev, node);
            }
        }
    }
    let node = |spec_dev: &str| nodes.get(spec_dev).cloned().unwrap_or_else(|| PathBuf::from(spec_dev));
    mount_steps(&steps, &opts.root, &node)
}

/// Unmounts everything the spec mounts under `root`, children first, and
/// detaches the loop devices of mapped image files. Idempotent.
pub fn unmount(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    let mut actions = Vec::new();
    for step in steps.iter().rev() {
        if let Step::Mount { mountpoint, .. } = step {
            let target = join_root(&opts.root, mountpoint);
            if !is_mountpoint(&target) {
                actions.push(Action { what: format!("unmount {mountpoint}"), done: false, detail: "not mounted".into() });
                continue;
            }
            run("umount", &[target.display().to_string()])?;
            actions.push(Action { what: format!("unmount {mountpoint}"), done: true, detail: target.display().to_string() });
        }
    }
    for path in opts.disks.values() {
        if std::fs::metadata(path).map(|m| m.is_file()).unwrap_or(false) {
            for l in attached_loops(path)? {
                let done = detach_loop(&l, path)?;
                let detail = if done { path.display().to_string() } else { "already detached or detaching".into() };
                actions.push(Action { what: format!("detach {}", l.display()), done, detail });
            }
            // Wait out the kernel's teardown, so that a re-run right after
            // this one never picks up a device that is going away.
            let mut waited = 0;
            while !attached_loops(path)?.is_empty() {
                if waited == 100 {
                    return Err(DiskError::Command {
                        cmd: format!("losetup -d (loop devices of {})", path.display()),
                        status: "still attached after 5 s".into(),
                        stderr: "something still holds it open; the kernel detaches it when that closes (see `losetup -l`, `fuser -v`)".into(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                waited += 1;
            }
        }
    }
    Ok(actions)
}

fn tool_error(tool: &str, package: &str, e: io::Error) -> DiskError {
    if e.kind() == io::ErrorKind::NotFound {
        DiskError::MissingTool { tool: tool.into(), package: package.into() }
    } else {
        DiskError::Command { cmd: tool.into(), status: "did not start".into(), stderr: e.to_string() }
    }
}

fn package_of(tool: &str) -> &'static str {
    match tool {
        "mkfs.vfat" | "mkfs.fat" => "dosfstools",
        "mkfs.ext4" | "mkfs.ext3" | "mkfs.ext2" => "e2fsprogs",
        "mkfs.btrfs" | "btrfs" => "btrfs-progs",
        "mkfs.xfs" => "xfsprogs",
        _ => "util-linux",
    }
}

/// Runs a tool, returning stdout; a failure names the command and stderr.
pub fn run(tool: &str, args: &[String]) -> Result<String, DiskError> {
    let out = Command::new(tool).args(args).output().map_err(|e| tool_error(tool, package_of(tool), e))?;
    if !out.status.success() {
        return Err(DiskError::Command {
            cmd: format!("{tool} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// What each spec disk will be written to, as the operator must see it
/// before confirming: the path and, for a block device, its model, size and
/// serial; for an image file, its size.
pub fn describe_targets(devices: &Devices, opts: &ApplyOptions) -> Vec<String> {
    devices
        .disk
        .iter()
        .map(|(name, disk)| {
            let path = opts.disks.get(name).cloned().unwrap_or_else(|| PathBuf::from(&disk.device));
            let what = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => format!("image file, {} bytes", m.len()),
                Ok(_) => match lab_model::blockdev::describe(&path) {
                    Ok(d) => format!(
                        "{} {:.1} GB, serial {}",
                        d.model.as_deref().unwrap_or("unknown model"),
                        d.size as f64 / 1e9,
                        d.serial.as_deref().unwrap_or("unknown")
                    ),
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("not found: {e}"),
            };
            format!("WRITES disk {name}: {} ({what})", path.display())
        })
        .collect()
}

/// The plan as human-readable lines: the commands disko would run.
pub fn describe_plan(steps: &[Step], root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for s in steps {
        match s {
            Step::Partition { disk, device, table } => match table {
                TablePlan::Gpt { partitions, .. } => {
                    lines.push(format!("disk {disk} ({device}): gpt, create only missing partitions"));
                    for p in partitions {
                        let warn = if p.type_known { "" } else { "  (unknown code: sgdisk writes Linux filesystem)" };
                        lines.push(format!("  {}: {} start={} end={} type={}{warn}", p.number, p.label, p.start, p.end, p.type_code));
                    }
                }
                TablePlan::Parted { format, partitions } => {
                    lines.push(format!("disk {disk} ({device}): {format} table (parted)"));
                    for p in partitions {
                        lines.push(format!(
                            "  {}: {} {}..{} flags={:?} bootable={}",
                            p.index,
                            p.name.as_deref().unwrap_or(&p.part_type),
                            p.start,
                            p.end,
                            p.flags,
                            p.bootable
                        ));
                    }
                }
            },
            Step::Format { device, format, extra_args } => lines.push(format!("format {device} as {format} {} (if blkid finds nothing)", extra_args.join(" "))),
            Step::Mkswap { device, .. } => lines.push(format!("mkswap {device} (if blkid finds nothing)")),
            Step::Btrfs { device, subvolumes, .. } => lines.push(format!("btrfs on {device}, subvolumes: {}", subvolumes.join(", "))),
            Step::Unsupported { kind, spec_path, .. } => lines.push(format!("NOT SUPPORTED YET: {kind} at {spec_path}")),
            Step::Mount { device, mountpoint, fs_type, options } => {
                lines.push(format!("mount -t {fs_type} {device} {} -o {}", join_root(root, mountpoint).display(), options.join(",")))
            }
        }
    }
    lines
}

/// The resolved table of one disk of a given size (for `plan --size`).
pub fn resolve_for_size(table: &TablePlan, bytes: u64) -> Result<Vec<Resolved>, DiskError> {
    dplan::resolve_table(table, 512, bytes / 512, &[]).map_err(|e| {
        let at = e.partition().and_then(|n| table.spec_path_of(n)).unwrap_or("disko.devices.disk").to_string();
        DiskError::Geometry { disk: String::new(), path: PathBuf::new(), spec_path: at, message: e.to_string(), bytes }
    })
}
