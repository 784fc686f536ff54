//! What `labprov disk plan` shows: the plan as lines, and a disk's table
//! resolved for a size given on the command line.

use std::path::{Path, PathBuf};

use lab_disko::plan::{self as dplan, Resolved, Step, TablePlan};
use lab_disko::stacked::KeySource;

use super::mount::join_root;
use super::DiskError;

/// The plan as human-readable lines, one per step: each table with its
/// partitions, each filesystem, and each mount as the `mount` command
/// under `root`.
pub fn describe_plan(steps: &[Step], root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for s in steps {
        match s {
            Step::Partition { disk, device, table } => match table {
                TablePlan::Gpt { partitions, .. } => {
                    lines.push(format!(
                        "disk {disk} ({device}): gpt, create only missing partitions"
                    ));
                    for p in partitions {
                        let warn = if p.type_known {
                            ""
                        } else {
                            "  (unknown code: sgdisk writes Linux filesystem)"
                        };
                        lines.push(format!(
                            "  {}: {} start={} end={} type={}{warn}",
                            p.number, p.label, p.start, p.end, p.type_code
                        ));
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
            Step::Format { device, format, extra_args } => lines.push(format!(
                "format {device} as {format} {} (if blkid finds nothing)",
                extra_args.join(" ")
            )),
            Step::Mkswap { device, .. } => {
                lines.push(format!("mkswap {device} (if blkid finds nothing)"))
            }
            Step::Btrfs { device, subvolumes, .. } => {
                lines.push(format!("btrfs on {device}, subvolumes: {}", subvolumes.join(", ")))
            }
            Step::Luks(l) => {
                lines.push(format!(
                    "luks {} on {} (key: {}), unless it is LUKS: {}",
                    l.name,
                    l.device,
                    key_words(&l.key),
                    l.format.join(" ")
                ));
                lines.push(format!("  open unless open: {}", l.open_persistent().join(" ")));
                for f in &l.additional_key_files {
                    lines.push(format!("  add key unless it opens: {}", l.add_key(f).join(" ")));
                }
            }
            Step::LvmPv(p) => lines.push(format!(
                "{} (if blkid finds nothing), for vg {}",
                p.create.join(" "),
                p.vg
            )),
            Step::LvmVg(v) => lines.push(format!(
                "modprobe {}; {} (unless vgdisplay {} finds it)",
                v.kernel_modules.join(" "),
                v.create.join(" "),
                v.name
            )),
            Step::Lv(l) => lines.push(format!(
                "{} (unless lvdisplay {}/{} finds it)",
                l.create.join(" "),
                l.vg,
                l.name
            )),
            Step::Mdadm(m) => lines.push(format!(
                "echo y | {} (unless the array runs or its members assemble)",
                m.create.join(" ")
            )),
            Step::Unsupported { kind, spec_path, .. } => {
                lines.push(format!("NOT SUPPORTED YET: {kind} at {spec_path}"))
            }
            Step::Mount { device, mountpoint, fs_type, options } => lines.push(format!(
                "mount -t {fs_type} {device} {} -o {}",
                join_root(root, mountpoint).display(),
                options.join(",")
            )),
        }
    }
    lines
}

/// Where a LUKS key comes from, for the plan (never the key itself).
fn key_words(k: &KeySource) -> String {
    match k {
        KeySource::KeyFile { path } => format!("key file {path}"),
        KeySource::Ask => "passphrase asked on the terminal, or --luks-key-file".into(),
        KeySource::PasswordFile { path } => format!("passphrase from {path}, on stdin"),
    }
}

/// The resolved table of one disk of `bytes` bytes with 512-byte sectors
/// (for `plan --size`).
pub fn resolve_for_size(table: &TablePlan, bytes: u64) -> Result<Vec<Resolved>, DiskError> {
    dplan::resolve_table(table, 512, bytes / 512, &[]).map_err(|e| {
        let at = e
            .partition()
            .and_then(|n| table.spec_path_of(n))
            .unwrap_or("disko.devices.disk")
            .to_string();
        DiskError::Geometry {
            disk: String::new(),
            path: PathBuf::new(),
            spec_path: at,
            message: e.to_string(),
            bytes,
        }
    })
}
