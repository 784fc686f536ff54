//! The SD image layout NixOS's sd-image module uses: an MBR, a gap, a FAT
//! firmware partition (bootable) and an ext4 root to the end of the image.

use lab_facts::ImageFacts;

pub const MIB: u64 = 1 << 20;
pub const SECTOR: u64 = 512;

/// MBR partition types: W95 FAT32 (LBA) and Linux, as NixOS writes them.
pub const FIRMWARE_PARTITION_TYPE: u8 = 0x0b;
pub const ROOT_PARTITION_TYPE: u8 = 0x83;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image.firmwareLabel `{0}` must be 1 to 11 characters of A-Z, 0-9, _ or - (a FAT volume label)")]
    FirmwareLabel(String),
    #[error("image.rootLabel `{0}` must be 1 to 16 characters of letters, digits, _ or - (an ext4 label)")]
    RootLabel(String),
    #[error("image.gapMiB must be at least 1 (the MBR and alignment live there)")]
    Gap,
    #[error("image.firmwareSizeMiB must be between 16 and 2048, not {0}")]
    FirmwareSize(u64),
    #[error(
        "the root tree needs about {need_mib} MiB but image.sizeMiB = {size_mib} leaves {room_mib} MiB \
         for it; raise image.sizeMiB (or remove it to size the image to its content)"
    )]
    TooSmall { need_mib: u64, size_mib: u64, room_mib: u64 },
}

/// The layout a host's facts ask for, with NixOS's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdLayout {
    pub gap: u64,
    pub firmware_size: u64,
    pub firmware_label: String,
    pub root_label: String,
    pub root_headroom: u64,
    pub fixed_size: Option<u64>,
}

/// Where each partition sits, in bytes from the start of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub firmware_start: u64,
    pub firmware_size: u64,
    pub root_start: u64,
    pub root_size: u64,
    pub total: u64,
}

impl SdLayout {
    pub fn from_facts(facts: Option<&ImageFacts>) -> Result<SdLayout, Error> {
        let d = ImageFacts::default();
        let f = facts.unwrap_or(&d);
        let layout = SdLayout {
            gap: f.gap_mib.unwrap_or(8) * MIB,
            firmware_size: f.firmware_size_mib.unwrap_or(30) * MIB,
            firmware_label: f.firmware_label.clone().unwrap_or_else(|| "FIRMWARE".into()),
            root_label: f.root_label.clone().unwrap_or_else(|| "NIXOS_SD".into()),
            root_headroom: f.root_headroom_mib.unwrap_or(256) * MIB,
            fixed_size: f.size_mib.map(|m| m * MIB),
        };
        layout.validate()?;
        Ok(layout)
    }

    fn validate(&self) -> Result<(), Error> {
        let fat_ok = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if self.firmware_label.is_empty()
            || self.firmware_label.len() > 11
            || !self.firmware_label.chars().all(fat_ok)
        {
            return Err(Error::FirmwareLabel(self.firmware_label.clone()));
        }
        let ext_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.root_label.is_empty()
            || self.root_label.len() > 16
            || !self.root_label.chars().all(ext_ok)
        {
            return Err(Error::RootLabel(self.root_label.clone()));
        }
        if self.gap < MIB {
            return Err(Error::Gap);
        }
        if !(16 * MIB..=2048 * MIB).contains(&self.firmware_size) {
            return Err(Error::FirmwareSize(self.firmware_size / MIB));
        }
        Ok(())
    }

    /// Places the partitions for a root filesystem that needs `root_need`
    /// bytes (content plus filesystem overhead, before headroom).
    pub fn place(&self, root_need: u64) -> Result<Placement, Error> {
        let root_start = self.gap + self.firmware_size;
        let root_size = match self.fixed_size {
            Some(total) => {
                let room = total.saturating_sub(root_start);
                if root_need > room {
                    return Err(Error::TooSmall {
                        need_mib: root_need.div_ceil(MIB),
                        size_mib: total / MIB,
                        room_mib: room / MIB,
                    });
                }
                room / MIB * MIB
            }
            None => (root_need + self.root_headroom).div_ceil(MIB) * MIB,
        };
        Ok(Placement {
            firmware_start: self.gap,
            firmware_size: self.firmware_size,
            root_start,
            root_size,
            total: root_start + root_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nixos_defaults() {
        let l = SdLayout::from_facts(None).unwrap();
        let p = l.place(100 * MIB).unwrap();
        assert_eq!(
            (p.firmware_start, p.firmware_size, p.root_start),
            (8 * MIB, 30 * MIB, 38 * MIB)
        );
        assert_eq!(p.root_size, 356 * MIB);
        assert_eq!(p.total % MIB, 0);
    }

    #[test]
    fn fixed_size_too_small_is_refused() {
        let f = ImageFacts { size_mib: Some(64), ..Default::default() };
        let err = SdLayout::from_facts(Some(&f)).unwrap().place(100 * MIB).unwrap_err();
        assert!(err.to_string().contains("raise image.sizeMiB"), "{err}");
    }

    #[test]
    fn bad_labels_are_refused() {
        let f = ImageFacts { firmware_label: Some("firmware".into()), ..Default::default() };
        assert!(SdLayout::from_facts(Some(&f)).is_err());
        let f =
            ImageFacts { root_label: Some("a-very-long-root-label".into()), ..Default::default() };
        assert!(SdLayout::from_facts(Some(&f)).is_err());
    }
}
