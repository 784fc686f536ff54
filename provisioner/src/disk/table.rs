//! Writing partition tables in-process: GPT with the `gpt` crate, MBR with
//! `mbrman`, at the sectors `lab_disko::plan::resolve_table` chose.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::partition_types::{OperatingSystem, Type};
use lab_cli::Cmd;
use lab_disko::plan::Resolved;
use lab_disko::sgdisk::Slot;

use super::DiskError;

/// What is on a disk now, as far as the table goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Nothing blkid would recognise in the first and last MiB.
    Blank,
    /// A GPT whose used slots are listed.
    Gpt(Vec<(Slot, String, String)>),
    /// An MBR (msdos) table with these slots.
    Msdos(Vec<Slot>),
    /// Something else (a filesystem, RAID or LUKS signature on the whole disk).
    Other(String),
}

fn lb(sector_size: u64) -> LogicalBlockSize {
    if sector_size == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    }
}

/// Reads what table (if any) `path` holds.
pub fn read_existing(path: &Path, sector_size: u64) -> Result<Existing, DiskError> {
    let io = |source| DiskError::Io { path: path.to_path_buf(), source };
    if let Ok(disk) =
        gpt::GptConfig::new().writable(false).logical_block_size(lb(sector_size)).open(path)
    {
        let slots = disk
            .partitions()
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| {
                (
                    Slot { number: *n, first: p.first_lba, last: p.last_lba },
                    p.name.clone(),
                    p.part_guid.to_string(),
                )
            })
            .collect();
        return Ok(Existing::Gpt(slots));
    }
    let mut f = File::open(path).map_err(io)?;
    let mut first = vec![0u8; 512];
    f.read_exact(&mut first).map_err(io)?;
    if first[510] == 0x55 && first[511] == 0xAA {
        if let Ok(mbr) = mbrman::MBR::read_from(&mut f, sector_size as u32) {
            let slots = mbr
                .iter()
                .filter(|(_, p)| p.is_used())
                .map(|(i, p)| Slot {
                    number: i as u32,
                    first: p.starting_lba as u64,
                    last: p.starting_lba as u64 + p.sectors as u64 - 1,
                })
                .collect();
            return Ok(Existing::Msdos(slots));
        }
    }
    // Anything else blkid can name (a filesystem on the bare disk, LUKS...).
    // blkid exits non-zero when it finds nothing; a blkid that cannot run
    // finds nothing either.
    match Cmd::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(path).probe() {
        Ok(o) if o.success() && !o.stdout.is_empty() => {
            Ok(Existing::Other(o.text().trim().to_string()))
        }
        _ => Ok(Existing::Blank),
    }
}

/// Writes a GPT holding `parts`. With `keep_existing` (no `--wipe`), what
/// a GPT already on the disk holds stays as sgdisk would leave it: the disk
/// GUID, the partition GUIDs of slots the spec does not pin, and every
/// partition the spec does not mention.
pub fn write_gpt(
    path: &Path,
    sector_size: u64,
    parts: &[Resolved],
    keep_existing: bool,
) -> Result<(), DiskError> {
    let gpt_err =
        |e: gpt::GptError| DiskError::Table { path: path.to_path_buf(), message: e.to_string() };
    let io = |source| DiskError::Io { path: path.to_path_buf(), source };
    let (disk_guid, mut map) = match gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb(sector_size))
        .open(path)
    {
        Ok(old) if keep_existing => {
            let used = old
                .partitions()
                .iter()
                .filter(|(_, p)| p.is_used())
                .map(|(n, p)| (*n, p.clone()))
                .collect::<BTreeMap<u32, gpt::partition::Partition>>();
            (Some(*old.guid()), used)
        }
        _ => (None, BTreeMap::new()),
    };
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let total_bytes = device_bytes(&file, path)?;
    // Protective MBR first: sgdisk --clear writes one covering the disk.
    let total_sectors = total_bytes / sector_size;
    let mut file = file;
    let pmbr = gpt::mbr::ProtectiveMBR::with_lb_size(
        u32::try_from(total_sectors - 1).unwrap_or(0xFFFF_FFFF),
    );
    pmbr.overwrite_lba0(&mut file)
        .map_err(|e| DiskError::Table { path: path.to_path_buf(), message: e.to_string() })?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb(sector_size))
        .change_partition_count(true)
        .create_from_device(file, disk_guid)
        .map_err(gpt_err)?;
    for p in parts {
        let guid = match (&p.uuid, map.get(&p.number)) {
            (Some(u), _) => parse_uuid(u, path)?,
            (None, Some(old)) => old.part_guid,
            (None, None) => uuid::Uuid::new_v4(),
        };
        let type_guid = parse_uuid(&p.type_id, path)?;
        map.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: Type { guid: type_guid, os: OperatingSystem::None },
                part_guid: guid,
                first_lba: p.first,
                last_lba: p.last,
                flags: p.attributes,
                name: truncate_utf16(&p.name, 36),
            },
        );
    }
    disk.update_partitions(map).map_err(gpt_err)?;
    let mut file = disk.write().map_err(gpt_err)?;
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Writes an MBR (msdos) table with `parts`, like `parted mklabel msdos`.
pub fn write_msdos(path: &Path, sector_size: u64, parts: &[Resolved]) -> Result<(), DiskError> {
    let io = |source| DiskError::Io { path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let primaries: Vec<lab_blockdev::mbr::Primary> = parts
        .iter()
        .map(|p| lab_blockdev::mbr::Primary {
            number: p.number,
            first_lba: p.first,
            sectors: p.last - p.first + 1,
            type_byte: u8::from_str_radix(&p.type_id, 16).unwrap_or(0x83),
            bootable: p.bootable,
        })
        .collect();
    lab_blockdev::mbr::write(&mut file, sector_size, rand_u32(), &primaries)
        .map_err(|e| DiskError::Table { path: path.to_path_buf(), message: e.to_string() })?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Erases table signatures at both ends (what `sgdisk --zap-all` clears).
pub fn zap(path: &Path, sector_size: u64) -> Result<(), DiskError> {
    let io = |source| DiskError::Io { path: path.to_path_buf(), source };
    let mut f = OpenOptions::new().write(true).read(true).open(path).map_err(io)?;
    let total = device_bytes(&f, path)?;
    let span = (34 * sector_size).min(total);
    let zeros = vec![0u8; span as usize];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&zeros).map_err(io)?;
    f.seek(SeekFrom::Start(total - span)).map_err(io)?;
    f.write_all(&zeros).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// Size of a regular file or a block device.
pub fn device_bytes(f: &File, path: &Path) -> Result<u64, DiskError> {
    let meta = f.metadata().map_err(|source| DiskError::Io { path: path.to_path_buf(), source })?;
    if meta.is_file() {
        Ok(meta.len())
    } else {
        lab_blockdev::size(f).map_err(|source| DiskError::Io { path: path.to_path_buf(), source })
    }
}

fn parse_uuid(s: &str, path: &Path) -> Result<uuid::Uuid, DiskError> {
    uuid::Uuid::parse_str(s).map_err(|e| DiskError::Table {
        path: path.to_path_buf(),
        message: format!("`{s}` is not a GUID: {e}"),
    })
}

/// `s` cut to at most `max` UTF-16 units (a GPT name holds 36).
pub(super) fn truncate_utf16(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut units = 0;
    for c in s.chars() {
        units += c.len_utf16();
        if units > max {
            break;
        }
        out.push(c);
    }
    out
}

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
