//! `labprov disk apply`: what disko's create script does. Every refusal (a
//! missing tool, a size that does not fit, a disk holding something else, a
//! mounted disk) comes first; then tables, filesystems where `blkid` finds
//! none, btrfs subvolumes, and mounts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab_cli::{Cmd, ToolError};
use lab_disko::plan::{self as dplan, Resolved, Step, TablePlan};
use lab_disko::Devices;

use super::devices::{attached_loops, block_device_for, notify_kernel, partition_device};
use super::mount::mount_steps;
use super::stacked::{self, LuksKeys};
use super::table::{self, Existing};
use super::target::{check_mapping, geometry, target_of};
use super::{Action, ApplyOptions, DiskError};

/// The programs apply runs for `steps`: each step's mkfs, and what every
/// run uses. Checked up front so a missing one stops apply before it writes.
fn tools_needed(steps: &[Step]) -> Vec<String> {
    let mut tools: Vec<String> = Vec::new();
    let mut add = |t: String| {
        if !tools.contains(&t) {
            tools.push(t);
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
    stacked::tools(steps, &mut add);
    for t in ["blkid", "losetup", "mount", "findmnt", "lsblk"] {
        add(t.into());
    }
    tools
}

/// Whether `tool` is an executable file on PATH (or a path to one).
pub(super) fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if tool.contains('/') {
        return exec(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| exec(&d.join(tool))))
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
fn prepare_tables(
    devices: &Devices,
    opts: &ApplyOptions,
    steps: &[Step],
) -> Result<Vec<TableWork>, DiskError> {
    let mut work = Vec::new();
    for step in steps {
        let Step::Partition { disk, table, .. } = step else {
            continue;
        };
        if let TablePlan::Gpt { partitions, hybrid, .. } = table {
            // Refused, not left out: `disk::table` writes the GPT and its
            // protective MBR itself, and a hybrid MBR would need `sgdisk -h`'s
            // exact entries (EE placement, CHS, types) plus disko's `sfdisk
            // --label-nested dos --part-type/--activate`, while no disko
            // fixture pins a hybrid MBR's output to check them against (the
            // `hybrid` fixture is a BIOS+EFI layout without `hybrid`).
            if let Some(p) = hybrid.first().and_then(|n| partitions.iter().find(|p| p.number == *n))
            {
                return Err(DiskError::Unsupported {
                    kind: "hybrid MBR (`hybrid`)".into(),
                    spec_path: format!("{}.hybrid", p.spec_path),
                });
            }
        }
        let target = target_of(devices, opts, disk)?;
        let (sector_size, total) = geometry(&target)?;
        let existing = table::read_existing(&target, sector_size)?;
        let wants_gpt = matches!(table, TablePlan::Gpt { .. })
            || matches!(table, TablePlan::Parted { format, .. } if format == "gpt");
        let kept = match (&existing, table) {
            (Existing::Gpt(slots), TablePlan::Gpt { .. }) if !opts.wipe => {
                slots.iter().map(|(s, _, _)| *s).collect()
            }
            _ => Vec::new(),
        };
        let resolved = dplan::resolve_table(table, sector_size, total, &kept).map_err(|e| {
            let at = e
                .partition()
                .and_then(|n| table.spec_path_of(n))
                .map(str::to_string)
                .unwrap_or_else(|| format!("disko.devices.disk.{disk}.content"));
            DiskError::Geometry {
                disk: disk.clone(),
                path: target.clone(),
                spec_path: at,
                message: e.to_string(),
                bytes: total * sector_size,
            }
        })?;
        // A GPT name holds 36 UTF-16 units; the table keeps what fits.
        let up_to_date = match &existing {
            Existing::Gpt(slots) if wants_gpt => resolved.iter().all(|r| {
                slots.iter().any(|(s, name, _)| {
                    s.number == r.number
                        && s.first == r.first
                        && s.last == r.last
                        && name == &table::truncate_utf16(&r.name, 36)
                })
            }),
            Existing::Msdos(slots) if !wants_gpt => resolved.iter().all(|r| {
                slots.iter().any(|s| s.number == r.number && s.first == r.first && s.last == r.last)
            }),
            _ => false,
        };
        let write = if up_to_date {
            None
        } else {
            match (&existing, opts.wipe) {
                (Existing::Blank, _) | (_, true) => {}
                (Existing::Gpt(_), false) if wants_gpt => {}
                (other, false) => {
                    return Err(DiskError::NeedsWipe {
                        path: target.clone(),
                        found: describe_existing(other),
                    })
                }
            }
            refuse_mounted(&target)?;
            Some(opts.wipe)
        };
        work.push(TableWork {
            disk: disk.clone(),
            target,
            sector_size,
            resolved,
            wants_gpt,
            write,
        });
    }
    Ok(work)
}

/// Runs the plan: tables first, then (unless `only_partition`) filesystems
/// where none is found, btrfs subvolumes, then mounts in plan order
/// (parents first). Re-running on a prepared disk changes nothing.
/// Everything that can be refused is refused before the first write.
pub fn apply(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    apply_with_keys(devices, opts, &LuksKeys::default())
}

/// [`apply`] with LUKS keys from files (`--luks-key-file`); a LUKS volume
/// without one whose spec asks for a passphrase is asked for it on the
/// terminal, before anything is written.
pub fn apply_with_keys(
    devices: &Devices,
    opts: &ApplyOptions,
    luks_keys: &LuksKeys,
) -> Result<Vec<Action>, DiskError> {
    super::require_linux("labprov disk apply")?;
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    stacked::check_key_names(&steps, luks_keys)?;
    if !opts.only_partition {
        if let Some(Step::Unsupported { kind, spec_path, .. }) =
            steps.iter().find(|s| matches!(s, Step::Unsupported { .. }))
        {
            return Err(DiskError::Unsupported {
                kind: kind.clone(),
                spec_path: spec_path.clone(),
            });
        }
        if let Some(program) = tools_needed(&steps).into_iter().find(|t| !on_path(t)) {
            let package = stacked::package_of(&program);
            return Err(ToolError::Missing { program, package }.into());
        }
    }
    let work = prepare_tables(devices, opts, &steps)?;
    if !opts.only_partition {
        stacked::check_names_are_ours(&steps, &super::target::targets(devices, opts)?)?;
    }
    // Every key now, before the first write: a missing terminal, key file
    // or passphrase stops here with nothing written.
    let keys = if opts.only_partition {
        BTreeMap::new()
    } else {
        stacked::gather_keys(&steps, luks_keys, true)?
    };
    let mut actions = Vec::new();
    let mut loops: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    // Spec partition device path -> the node that really holds it.
    let mut nodes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for w in work {
        let TableWork { disk, target, sector_size, resolved, wants_gpt, write } = w;
        match write {
            None => actions.push(Action {
                what: format!("partition {disk}"),
                done: false,
                detail: format!("{} already has the table", target.display()),
            }),
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
    let node =
        |spec_dev: &str| nodes.get(spec_dev).cloned().unwrap_or_else(|| PathBuf::from(spec_dev));
    for step in &steps {
        match step {
            Step::Format { device, format, extra_args } => {
                let dev = node(device);
                if has_signature(&dev)? {
                    actions.push(Action {
                        what: format!("format {device}"),
                        done: false,
                        detail: format!("{} already holds a filesystem", dev.display()),
                    });
                    continue;
                }
                let tool = format!("mkfs.{format}");
                let mut args: Vec<String> = extra_args.clone();
                args.push(dev.display().to_string());
                Cmd::new(&tool)
                    .args(&args)
                    .label(format!("formatting {} as {format}", dev.display()))
                    .stream()?;
                actions.push(Action {
                    what: format!("format {device}"),
                    done: true,
                    detail: format!("{tool} {}", args.join(" ")),
                });
            }
            Step::Mkswap { device, extra_args } => {
                let dev = node(device);
                if has_signature(&dev)? {
                    actions.push(Action {
                        what: format!("mkswap {device}"),
                        done: false,
                        detail: format!("{} already holds a signature", dev.display()),
                    });
                    continue;
                }
                Cmd::new("mkswap").args(extra_args).arg(&dev).run()?;
                actions.push(Action {
                    what: format!("mkswap {device}"),
                    done: true,
                    detail: String::new(),
                });
            }
            Step::Btrfs { device, extra_args, subvolumes } => {
                let dev = node(device);
                if !has_signature(&dev)? {
                    Cmd::new("mkfs.btrfs")
                        .arg(&dev)
                        .args(extra_args.iter().flat_map(|a| a.split_whitespace()))
                        .label(format!("formatting {} as btrfs", dev.display()))
                        .stream()?;
                    actions.push(Action {
                        what: format!("format {device}"),
                        done: true,
                        detail: "mkfs.btrfs".into(),
                    });
                }
                if !subvolumes.is_empty() {
                    create_subvolumes(&dev, subvolumes, &mut actions)?;
                }
            }
            Step::Luks(l) => stacked::create_luks(l, &node, &keys, &mut actions)?,
            Step::LvmPv(p) => stacked::create_pv(p, &node, &mut actions)?,
            Step::LvmVg(v) => stacked::create_vg(v, &node, &mut actions)?,
            Step::Lv(l) => stacked::create_lv(l, &mut actions)?,
            Step::Mdadm(m) => stacked::create_mdadm(m, &node, &mut actions)?,
            Step::Unsupported { kind, spec_path, .. } => {
                return Err(DiskError::Unsupported {
                    kind: kind.clone(),
                    spec_path: spec_path.clone(),
                })
            }
            Step::Partition { .. } | Step::Mount { .. } => {}
        }
    }
    actions.extend(mount_steps(&steps, &opts.root, &node)?);
    Ok(actions)
}

/// What a disk holds, for the refusal to write over it without `--wipe`.
fn describe_existing(e: &Existing) -> String {
    match e {
        Existing::Blank => "nothing".into(),
        Existing::Gpt(s) => format!("a GPT with {} partitions", s.len()),
        Existing::Msdos(s) => format!("an msdos table with {} partitions", s.len()),
        Existing::Other(t) => format!("a `{t}` signature"),
    }
}

/// Whether `blkid` finds a signature (a filesystem, swap...) on `dev`:
/// disko formats only where it finds nothing.
fn has_signature(dev: &Path) -> Result<bool, DiskError> {
    // blkid exits non-zero when it finds nothing; its output is the answer.
    let out = Cmd::new("blkid").args(["-p", "-o", "export"]).arg(dev).probe()?;
    Ok(out.text().lines().any(|l| l.starts_with("TYPE=")))
}

/// Refuses to write a table to `target` while it, one of its partitions or
/// anything stacked on them is mounted or held open by another program.
fn refuse_mounted(target: &Path) -> Result<(), DiskError> {
    let meta = std::fs::metadata(target)
        .map_err(|source| DiskError::Io { path: target.to_path_buf(), source })?;
    // An image file may be attached whole and, where the kernel shows no
    // partitions, once per partition at an offset: check every one.
    let devs = if meta.is_file() { attached_loops(target)? } else { vec![target.to_path_buf()] };
    for dev in devs {
        // The same check labimg flash makes: the device, its partitions and
        // anything stacked on them (device mapper, md), mounts and swap.
        let mounts = lab_blockdev::mounts_of(&dev).map_err(|e| DiskError::Io {
            path: dev.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if !mounts.is_empty() {
            return Err(DiskError::Mounted { path: target.to_path_buf(), at: mounts.join(", ") });
        }
        // The kernel's word as well: some mounts (btrfs) show an anonymous
        // device number in mountinfo, but a mounted filesystem, or any
        // mounted partition of a disk, makes an exclusive open fail.
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) =
            std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_EXCL).open(&dev)
        {
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                let at = format!(
                    "{} is in use: mounted, or held by another program (`lsblk {}` shows what)",
                    dev.display(),
                    dev.display()
                );
                return Err(DiskError::Mounted { path: target.to_path_buf(), at });
            }
        }
    }
    Ok(())
}

/// Creates the btrfs subvolumes of `dev` that do not exist yet, with the
/// filesystem mounted on a private temporary directory meanwhile.
fn create_subvolumes(
    dev: &Path,
    subvolumes: &[String],
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    // Kept, not removed on drop: TempDir removes recursively, and if the
    // unmount below fails the new filesystem is still mounted there.
    let tmp = tempfile::Builder::new()
        .prefix("labprov-btrfs-")
        .tempdir()
        .map_err(|source| DiskError::Io { path: std::env::temp_dir(), source })?
        .keep();
    if let Err(e) = Cmd::new("mount").args(["-t", "btrfs"]).arg(dev).arg(&tmp).run() {
        let _ = std::fs::remove_dir(&tmp);
        return Err(e.into());
    }
    let result = (|| {
        for s in subvolumes {
            let p = tmp.join(s.trim_start_matches('/'));
            if p.exists() {
                actions.push(Action {
                    what: format!("subvolume {s}"),
                    done: false,
                    detail: "exists".into(),
                });
                continue;
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| DiskError::Io { path: parent.to_path_buf(), source })?;
            }
            Cmd::new("btrfs").args(["subvolume", "create"]).arg(&p).run()?;
            actions.push(Action {
                what: format!("subvolume {s}"),
                done: true,
                detail: String::new(),
            });
        }
        Ok(())
    })();
    let _ = Cmd::new("umount").arg(&tmp).run();
    // Fails, leaving the directory, while something is still mounted there.
    let _ = std::fs::remove_dir(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let err: DiskError =
            Cmd::new("mkfs.ext4").env("PATH", "/nonexistent").run().unwrap_err().into();
        assert_eq!(err.to_string(), "`mkfs.ext4` is not installed: install e2fsprogs");
        let tools = tools_needed(&[
            Step::Format { device: "/dev/vda1".into(), format: "vfat".into(), extra_args: vec![] },
            Step::Format { device: "/dev/vda2".into(), format: "vfat".into(), extra_args: vec![] },
        ]);
        assert_eq!(tools.iter().filter(|t| *t == "mkfs.vfat").count(), 1, "{tools:?}");
    }
}
