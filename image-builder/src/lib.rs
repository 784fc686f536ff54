//! labimg's library: everything the `labimg` binary does, so that the binary
//! only parses its command line.

pub mod bmap;
pub mod build;
pub mod ext4;
pub mod fat;
pub mod firmware;
pub mod flash;
pub mod inspect;
pub mod interrupt;
pub mod output;
pub mod progress;
pub mod rootfs;
