//! Block devices as the kernel describes them, for both tools: sizes and
//! partition changes through ioctls, identity and relationships (partitions,
//! holders, removability) from sysfs, and what is mounted or swapped on them.
//! The ioctls are the only unsafe code in the workspace, each wrapped once.

pub mod mbr;

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

mod ioctl {
    //! Each block-device ioctl wrapped once (linux/fs.h, linux/blkpg.h).
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc_int);
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    nix::ioctl_none!(blkflsbuf, 0x12, 97);
    nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
    #[allow(non_camel_case_types)]
    pub type libc_int = i32;

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

    // linux/loop.h
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);

    /// `struct loop_info64`
    #[repr(C)]
    pub struct LoopInfo64 {
        pub lo_device: u64,
        pub lo_inode: u64,
        pub lo_rdevice: u64,
        pub lo_offset: u64,
        pub lo_sizelimit: u64,
        pub lo_number: u32,
        pub lo_encrypt_type: u32,
        pub lo_encrypt_key_size: u32,
        pub lo_flags: u32,
        pub lo_file_name: [u8; 64],
        pub lo_crypt_name: [u8; 64],
        pub lo_encrypt_key: [u8; 32],
        pub lo_init: [u64; 2],
    }

    pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
}

/// Size in bytes of the open block device.
pub fn size(file: &fs::File) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, a live local.
    unsafe { ioctl::blkgetsize64(file.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
    Ok(v)
}

/// Logical sector size of the open block device (at least 512).
pub fn sector_size(file: &fs::File) -> io::Result<u64> {
    let mut v: ioctl::libc_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, a live local.
    unsafe { ioctl::blksszget(file.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
    Ok((v as u64).max(512))
}

/// Drops the kernel's buffer cache for the device (after fsync), so what is
/// read next comes from the medium.
pub fn flush_buffers(file: &fs::File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { ioctl::blkflsbuf(file.as_raw_fd()) }.map(drop).map_err(io::Error::from)
}

/// Asks the kernel to re-read the partition table. Devices without
/// partition support (EINVAL) are not an error.
pub fn reread_partitions(file: &fs::File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    match unsafe { ioctl::blkrrpart(file.as_raw_fd()) } {
        Ok(_) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Tells the kernel about one partition of the device (what `partx -a`
/// does). Where a re-read of the whole table shows no partitions (loop
/// devices in some containers), adding them one by one still works.
pub fn add_partition(
    file: &fs::File,
    number: u32,
    start_bytes: u64,
    length_bytes: u64,
) -> io::Result<()> {
    let mut part = ioctl::BlkpgPartition {
        start: start_bytes as i64,
        length: length_bytes as i64,
        pno: number as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = ioctl::BlkpgIoctlArg {
        op: ioctl::BLKPG_ADD_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<ioctl::BlkpgPartition>() as i32,
        data: &mut part,
    };
    // SAFETY: BLKPG reads the argument struct and the partition struct it
    // points to; both live on this stack frame for the whole call.
    unsafe { ioctl::blkpg(file.as_raw_fd(), &arg) }.map(drop).map_err(io::Error::from)
}

/// What an open loop device is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStatus {
    /// The backing file's `st_dev` and `st_ino`.
    pub backing: (u64, u64),
    pub offset: u64,
    /// Marked to detach at its last close (by `losetup -d` while it was
    /// open, or by `mount -o loop`).
    pub detaching: bool,
}

/// The loop device's binding; ENXIO when it is bound to nothing.
pub fn loop_status(file: &fs::File) -> io::Result<LoopStatus> {
    // SAFETY: all-zero is a valid loop_info64 (integers and byte arrays).
    let mut info: ioctl::LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 fills the struct through the pointer, a live local.
    unsafe { ioctl::loop_get_status64(file.as_raw_fd(), &mut info) }.map_err(io::Error::from)?;
    Ok(LoopStatus {
        backing: (info.lo_device, info.lo_inode),
        offset: info.lo_offset,
        detaching: info.lo_flags & ioctl::LO_FLAGS_AUTOCLEAR != 0,
    })
}

/// Detaches the loop device (`losetup -d`) through the open `file`: the
/// number cannot be handed to another image between checking what it is
/// bound to and detaching it. The kernel finishes at the last close.
pub fn loop_detach(file: &fs::File) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { ioctl::loop_clr_fd(file.as_raw_fd()) }.map(drop).map_err(io::Error::from)
}

/// A whole disk as sysfs describes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub removable: bool,
    pub loop_backing: Option<PathBuf>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: Option<String>,
    /// Mount points (and "[swap]") of the disk, its partitions and anything
    /// stacked on them (device mapper, md).
    pub mounts: Vec<String>,
    /// The device holds /, /boot or swap of the running system.
    pub system: bool,
    /// `major:minor`, as sysfs has it.
    pub dev: String,
    /// The kernel's sequence number for the medium (Linux 5.15+): it changes
    /// when a card is swapped in the same reader, where the device number,
    /// model and serial (the reader's) stay the same.
    pub diskseq: Option<u64>,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn dev_numbers(sys: &Path) -> Vec<String> {
    // The device itself, its partitions, and what holds any of them.
    let mut out = Vec::new();
    let mut stack = vec![sys.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Some(dev) = read_trim(&dir.join("dev")) {
            if out.contains(&dev) {
                continue;
            }
            out.push(dev);
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().join("partition").is_file() {
                    stack.push(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(dir.join("holders")) {
            for e in rd.flatten() {
                if let Ok(p) = fs::canonicalize(e.path()) {
                    stack.push(p);
                }
            }
        }
    }
    out
}

/// Mounts by device number ("MAJ:MIN" -> mount points), plus swap.
fn mounts() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 4 {
                out.push((f[2].to_string(), f[4].replace("\\040", " ")));
            }
        }
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            if let Some(name) = line.split_whitespace().next() {
                if let Ok(m) = fs::metadata(name) {
                    if m.file_type().is_block_device() {
                        out.push((dev_string(m.rdev()), "[swap]".into()));
                    }
                }
            }
        }
    }
    out
}

/// A device number as sysfs writes it, `major:minor` (Linux's encoding).
#[cfg(target_os = "linux")]
fn dev_string(rdev: u64) -> String {
    format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// Elsewhere there is no sysfs to compare with: the raw number, which names
/// no sysfs entry, so every lookup says the device is unknown.
#[cfg(not(target_os = "linux"))]
fn dev_string(rdev: u64) -> String {
    rdev.to_string()
}

const SYSTEM_MOUNTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/boot/firmware", "/nix"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is a partition of {disk}; flash the whole disk ({disk})")]
    Partition { path: PathBuf, disk: String },
    #[error("cannot read {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
}

/// The sysfs directory of the block device node at `path`.
fn sysfs_dir(path: &Path) -> Result<PathBuf, Error> {
    let meta =
        fs::metadata(path).map_err(|source| Error::Stat { path: path.to_path_buf(), source })?;
    let num = dev_string(meta.rdev());
    fs::canonicalize(format!("/sys/dev/block/{num}")).map_err(|source| Error::Stat {
        path: PathBuf::from(format!("/sys/dev/block/{num}")),
        source,
    })
}

/// Mount points (and "[swap]") of the block device at `path` (a disk or a
/// partition), its partitions, and anything stacked on them.
pub fn mounts_of(path: &Path) -> Result<Vec<String>, Error> {
    let numbers = dev_numbers(&sysfs_dir(path)?);
    Ok(mounts().into_iter().filter(|(d, _)| numbers.contains(d)).map(|(_, m)| m).collect())
}

/// Describes the whole disk at `path` (a block device node).
pub fn describe(path: &Path) -> Result<Disk, Error> {
    let sys = sysfs_dir(path)?;
    if sys.join("partition").is_file() {
        let disk = sys
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| format!("/dev/{}", n.to_string_lossy()))
            .unwrap_or_default();
        return Err(Error::Partition { path: path.to_path_buf(), disk });
    }
    Ok(disk_from_sys(&sys, path.to_path_buf(), &mounts()))
}

fn disk_from_sys(sys: &Path, path: PathBuf, mounts: &[(String, String)]) -> Disk {
    let name = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let numbers = dev_numbers(sys);
    let mine: Vec<String> =
        mounts.iter().filter(|(d, _)| numbers.contains(d)).map(|(_, m)| m.clone()).collect();
    let system = mine.iter().any(|m| SYSTEM_MOUNTS.contains(&m.as_str()) || m == "[swap]");
    let udev = read_trim(&PathBuf::from(format!(
        "/run/udev/data/b{}",
        read_trim(&sys.join("dev")).unwrap_or_default()
    )));
    let udev_prop = |key: &str| {
        udev.as_deref().and_then(|u| {
            u.lines().find_map(|l| l.strip_prefix(&format!("E:{key}=")).map(str::to_string))
        })
    };
    Disk {
        path,
        size: read_trim(&sys.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512,
        removable: read_trim(&sys.join("removable")).as_deref() == Some("1"),
        loop_backing: read_trim(&sys.join("loop/backing_file")).map(PathBuf::from),
        model: read_trim(&sys.join("device/model")).or_else(|| udev_prop("ID_MODEL")),
        serial: read_trim(&sys.join("device/serial")).or_else(|| udev_prop("ID_SERIAL_SHORT")),
        transport: udev_prop("ID_BUS"),
        mounts: mine,
        system,
        name,
        dev: read_trim(&sys.join("dev")).unwrap_or_default(),
        diskseq: read_trim(&sys.join("diskseq")).and_then(|s| s.parse().ok()),
    }
}

/// Every whole disk the kernel knows, removable ones first.
pub fn list() -> Vec<Disk> {
    let mounts = mounts();
    let mut disks: Vec<Disk> = fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let sys = fs::canonicalize(e.path()).ok()?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let d = disk_from_sys(&sys, PathBuf::from(format!("/dev/{name}")), &mounts);
                    // Unused loop devices and empty slots are not disks.
                    (d.size > 0).then_some(d)
                })
                .collect()
        })
        .unwrap_or_default();
    disks.sort_by(|a, b| b.removable.cmp(&a.removable).then(a.name.cmp(&b.name)));
    disks
}
