//! The disks a run writes: the `--disk` mapping checked against the spec,
//! each spec disk's target path, its geometry, and how it is shown to the
//! operator before confirming.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use lab_disko::Devices;

use super::{table, ApplyOptions, DiskError};

/// Checks the mapping before anything is read or written: every mapped
/// name is a spec disk; when any disk is mapped, all are (a disk left out
/// would silently fall back to its spec device, a real disk of this
/// machine); and every target exists as an image file or a block device.
pub fn check_mapping(devices: &Devices, opts: &ApplyOptions) -> Result<(), DiskError> {
    for name in opts.disks.keys() {
        if !devices.disk.contains_key(name) {
            return Err(DiskError::UnknownMapping {
                disk: name.clone(),
                known: devices.disk.keys().cloned().collect::<Vec<_>>().join(", "),
            });
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

/// The path spec disk `disk` is written to: its `--disk` mapping, or the
/// spec's own `device`.
/// Every spec disk's target (mapped with --disk, else its spec device).
pub(super) fn targets(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<PathBuf>, DiskError> {
    devices.disk.keys().map(|d| target_of(devices, opts, d)).collect()
}

pub(super) fn target_of(
    devices: &Devices,
    opts: &ApplyOptions,
    disk: &str,
) -> Result<PathBuf, DiskError> {
    match opts.disks.get(disk) {
        Some(p) => Ok(p.clone()),
        None => devices.disk.get(disk).map(|d| PathBuf::from(&d.device)).ok_or_else(|| {
            DiskError::MissingMapping {
                disk: disk.to_string(),
                why: "the spec has no such disk".into(),
            }
        }),
    }
}

/// Sector size and sector count of a device or image file (an image file
/// has 512-byte sectors).
pub fn geometry(path: &Path) -> Result<(u64, u64), DiskError> {
    let f =
        File::open(path).map_err(|source| DiskError::Io { path: path.to_path_buf(), source })?;
    let bytes = table::device_bytes(&f, path)?;
    let meta = f.metadata().map_err(|source| DiskError::Io { path: path.to_path_buf(), source })?;
    let ss = if meta.is_file() { 512 } else { lab_blockdev::sector_size(&f).unwrap_or(512) };
    Ok((ss, bytes / ss))
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
                Ok(_) => match lab_blockdev::describe(&path) {
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
