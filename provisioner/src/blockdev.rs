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
    // BLKPG = _IO(0x12, 105), with a struct blkpg_ioctl_arg (linux/blkpg.h).
    nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

    /// `struct blkpg_ioctl_arg`
    #[repr(C)]
    pub struct BlkpgIoctlArg {
        pub op: i32,
        pub flags: i32,
        pub datalen: i32,
        pub data: *mut BlkpgPartition,
    }

    /// `struct blkpg_partition`
    #[repr(C)]
    pub struct BlkpgPartition {
        pub start: i64,
        pub length: i64,
        pub pno: i32,
        pub devname: [u8; 64],
        pub volname: [u8; 64],
    }

    pub const BLKPG_ADD_PARTITION: i32 = 1;
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

/// Tells the kernel about one partition of `dev` (what `partx -a` does).
/// Where a re-read of the whole table shows no partitions (loop devices in
/// some containers), adding them one by one still works.
pub fn add_partition(dev: &File, number: u32, start_bytes: u64, length_bytes: u64) -> nix::Result<()> {
    let mut part = ioctls::BlkpgPartition {
        start: start_bytes as i64,
        length: length_bytes as i64,
        pno: number as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = ioctls::BlkpgIoctlArg {
        op: ioctls::BLKPG_ADD_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<ioctls::BlkpgPartition>() as i32,
        data: &mut part,
    };
    // SAFETY: BLKPG reads the argument struct and the partition struct it
    // points to; both live on this stack frame for the whole call.
    unsafe { ioctls::blkpg(dev.as_raw_fd(), &arg) }.map(|_| ())
}
