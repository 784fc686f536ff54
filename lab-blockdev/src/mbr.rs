//! The one MBR (msdos) table writer of both tools: the SD image's table and
//! a disko `table` spec's both come through here.

use std::io::{Read, Seek, Write};

/// One primary partition, in sectors of the table's sector size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Primary {
    /// The slot, 1-4.
    pub number: u32,
    pub first_lba: u64,
    pub sectors: u64,
    /// The partition type byte (0x0b FAT32 CHS, 0x0c FAT32 LBA, 0x83 Linux, ...).
    pub type_byte: u8,
    pub bootable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    #[error("partition {0} is not a primary slot (1-4)")]
    NotPrimary(u32),
    #[error(
        "partition {0} starts past 2 TiB or is larger than 2 TiB: an MBR cannot hold it, use gpt"
    )]
    TooFar(u32),
    #[error("{0}")]
    Table(#[from] mbrman::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes a new MBR with `disk_id` and `parts` (other slots empty) to the
/// start of `disk`, then flushes it. CHS fields stay empty, as Linux and
/// the Raspberry Pi firmware read only the LBA fields.
pub fn write<D: Read + Write + Seek>(
    disk: &mut D,
    sector_size: u64,
    disk_id: u32,
    parts: &[Primary],
) -> Result<(), MbrError> {
    let mut mbr = mbrman::MBR::new_from(disk, sector_size as u32, disk_id.to_le_bytes())?;
    for p in parts {
        if !(1..=4).contains(&p.number) {
            return Err(MbrError::NotPrimary(p.number));
        }
        let (Ok(starting_lba), Ok(sectors)) =
            (u32::try_from(p.first_lba), u32::try_from(p.sectors))
        else {
            return Err(MbrError::TooFar(p.number));
        };
        mbr[p.number as usize] = mbrman::MBRPartitionEntry {
            boot: if p.bootable { mbrman::BOOT_ACTIVE } else { mbrman::BOOT_INACTIVE },
            first_chs: mbrman::CHS::empty(),
            sys: p.type_byte,
            last_chs: mbrman::CHS::empty(),
            starting_lba,
            sectors,
        };
    }
    mbr.write_into(disk)?;
    disk.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_sfdisk_reads_and_refuses_what_mbr_cannot_hold() {
        let mut disk = std::io::Cursor::new(vec![0u8; 64 << 20]);
        let parts = [
            Primary {
                number: 1,
                first_lba: 16384,
                sectors: 61440,
                type_byte: 0x0b,
                bootable: true,
            },
            Primary {
                number: 2,
                first_lba: 77824,
                sectors: 53248,
                type_byte: 0x83,
                bootable: false,
            },
        ];
        write(&mut disk, 512, 0x1234_5678, &parts).unwrap();
        let bytes = disk.get_ref();
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(&bytes[440..444], &0x1234_5678u32.to_le_bytes());
        // Entry 1 at 446: bootable, type 0x0b, LBA 16384, 61440 sectors.
        assert_eq!(bytes[446], 0x80);
        assert_eq!(bytes[446 + 4], 0x0b);
        assert_eq!(&bytes[446 + 8..446 + 12], &16384u32.to_le_bytes());
        assert_eq!(&bytes[446 + 12..446 + 16], &61440u32.to_le_bytes());
        assert_eq!(bytes[462], 0x00);
        assert_eq!(bytes[462 + 4], 0x83);
        let bad = Primary { number: 5, ..parts[0] };
        assert!(matches!(write(&mut disk, 512, 1, &[bad]), Err(MbrError::NotPrimary(5))));
        let far = Primary { first_lba: 1 << 32, ..parts[0] };
        assert!(matches!(write(&mut disk, 512, 1, &[far]), Err(MbrError::TooFar(1))));
    }
}
