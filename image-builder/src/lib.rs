//! labimg's library: SD images (layout, FAT, ext4, bmap), installer ISOs, firmware, flashing
//! and verifying. The `labimg` binary only parses its command line.

pub use lab_bmap as bmap;
pub mod build;
pub mod compress;
pub mod ext4;
pub mod fat;
pub mod firmware;
pub mod flash;
pub mod ids;
pub mod inspect;
pub mod installer;
pub mod layout;
pub mod rootfs;
