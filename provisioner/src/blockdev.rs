//! The block-device ioctls labprov needs, each wrapped once. Everything else
//! in the crate is safe code.

use std::fs::File;
use std::os::fd::AsRawFd;

mod ioctls {
    // BLKRRPART = _IO(0x12, 95): ask the kernel to re-read the partition table.
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes.
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    // BLKSSZGET = _IO(0x12, 104): logical sector size (an int written through the pointer).
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc_int);
    #[allow(non_camel_case_types)]
    pub type libc_int = i32;
}

/// Tells the kernel the partition table of `dev` changed.
pub fn reread_partitions(dev: &File) -> nix::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
    unsafe { ioctls::blkrrpart(dev.as_raw_fd()) }.map(|_| ())
}

/// Size in bytes of a block device.
pub fn size_bytes(dev: &File) -> nix::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer we own.
    unsafe { ioctls::blkgetsize64(dev.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Logical sector size of a block device.
pub fn sector_size(dev: &File) -> nix::Result<u64> {
    let mut size: ioctls::libc_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer we own.
    unsafe { ioctls::blksszget(dev.as_raw_fd(), &mut size) }?;
    Ok(size.max(512) as u64)
}
