//! The kernel's block devices for what a spec names: a loop device for an
//! image file (attached once, detached by `unmount`), the node of each
//! partition (made where no udev runs, or a loop device at the partition's
//! offset where the kernel shows none), and telling the kernel about a new
//! table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use lab_cli::Cmd;

use super::table::{self, Existing};
use super::DiskError;

/// Has the kernel re-read `target`'s partition table after a write, when it
/// is a block device, and waits for udev to make the nodes.
pub(super) fn notify_kernel(target: &Path) {
    let Ok(f) = File::open(target) else { return };
    let is_block = f.metadata().map(|m| !m.is_file()).unwrap_or(false);
    if is_block {
        // EBUSY/EINVAL (no partition scanning) are not fatal: the table is
        // written; the kernel picks it up on the next attach or boot.
        let _ = lab_blockdev::reread_partitions(&f);
        let _ = Cmd::new("udevadm").args(["settle", "--timeout", "120"]).probe();
    }
}

/// The block device for a target: itself, or a loop device with partition
/// scanning for an image file (attached once, reused on later runs).
pub(super) fn block_device_for(
    target: &Path,
    loops: &mut BTreeMap<PathBuf, PathBuf>,
) -> Result<PathBuf, DiskError> {
    let meta = std::fs::metadata(target)
        .map_err(|source| DiskError::Io { path: target.to_path_buf(), source })?;
    if !meta.is_file() {
        return Ok(target.to_path_buf());
    }
    if let Some(l) = loops.get(target) {
        return Ok(l.clone());
    }
    let dev = match attached_loop(target)? {
        Some(d) => {
            // Best effort: the image may have been resized since.
            let _ = Cmd::new("losetup").arg("-c").arg(&d).probe();
            d
        }
        None => PathBuf::from(
            Cmd::new("losetup").args(["-f", "--show", "-P"]).arg(target).run()?.text().trim(),
        ),
    };
    // Ask for the table explicitly: the scan `losetup -P` triggers does not
    // always show partitions in sysfs (seen in containers), BLKRRPART does.
    if let Ok(f) = File::open(&dev) {
        let _ = lab_blockdev::reread_partitions(&f);
    }
    let _ = Cmd::new("udevadm").args(["settle", "--timeout", "30"]).probe();
    loops.insert(target.to_path_buf(), dev.clone());
    Ok(dev)
}

/// The first loop device `losetup -j` lists for an image file, if any:
/// the one to reuse rather than attach the image again.
pub fn attached_loop(image: &Path) -> Result<Option<PathBuf>, DiskError> {
    Ok(attached_loops(image)?.into_iter().next())
}

/// Every loop device backed by an image file: the whole-disk one and any
/// per-partition ones at an offset.
pub fn attached_loops(image: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let out = Cmd::new("losetup").env("LC_ALL", "C").arg("-j").arg(image).run()?;
    Ok(out
        .text()
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Detaches `dev` if, once open, it is still bound to `image`: holding it
/// open keeps its number from going to another image meanwhile. Refuses a
/// device something outside the spec still has mounted. Returns false when
/// there was nothing to do: bound elsewhere by now, or already detaching
/// (the kernel finishes a detach at the last close, so a device another
/// program had open stays listed for a while).
pub(super) fn detach_loop(dev: &Path, image: &Path) -> Result<bool, DiskError> {
    let io_err = |source| DiskError::Io { path: dev.to_path_buf(), source };
    let backing = std::fs::metadata(image)
        .map_err(|source| DiskError::Io { path: image.to_path_buf(), source })?;
    let f = match File::open(dev) {
        Ok(f) => f,
        // Gone between the listing and now.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENXIO) | Some(nix::libc::ENOENT)) => {
            return Ok(false)
        }
        Err(e) => return Err(io_err(e)),
    };
    let status = match lab_blockdev::loop_status(&f) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    if status.backing != (backing.dev(), backing.ino()) || status.detaching {
        return Ok(false);
    }
    let mounts =
        lab_blockdev::mounts_of(dev).map_err(|e| io_err(io::Error::other(e.to_string())))?;
    if !mounts.is_empty() {
        return Err(DiskError::Mounted { path: dev.to_path_buf(), at: mounts.join(", ") });
    }
    match lab_blockdev::loop_detach(&f) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// The kernel's node for partition `n` of `dev` (`sda1`, `nvme0n1p1`, `loop0p1`).
pub fn partition_node(dev: &Path, n: u32) -> PathBuf {
    let s = dev.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// The node holding partition `n` of `target` (attached as `dev`). Where
/// the kernel shows no partitions of a loop device (some containers), the
/// partition gets its own loop device at its offset, like `losetup -o`.
pub fn partition_device(
    target: &Path,
    dev: &Path,
    n: u32,
    sector_size: u64,
) -> Result<PathBuf, DiskError> {
    let node = partition_node(dev, n);
    if sysfs_has(&node) && ensure_node(&node).is_ok() {
        return Ok(node);
    }
    let slots = match table::read_existing(target, sector_size)? {
        Existing::Gpt(s) => s.into_iter().map(|(s, _, _)| s).collect(),
        Existing::Msdos(s) => s,
        _ => Vec::new(),
    };
    let slot = slots.into_iter().find(|s| s.number == n).ok_or_else(|| DiskError::Table {
        path: target.to_path_buf(),
        message: format!("partition {n} is not in the table"),
    })?;
    let offset = slot.first * sector_size;
    let size = (slot.last - slot.first + 1) * sector_size;
    // The kernel did not pick the partition up from the table: add it.
    if let Ok(f) = File::open(dev) {
        let _ = lab_blockdev::add_partition(&f, n, offset, size);
    }
    match ensure_node(&node) {
        Ok(()) => return Ok(node),
        Err(e) if dev == target => return Err(e),
        Err(_) => {}
    }
    // An answer either way: no line means no loop device at this offset yet.
    let out =
        Cmd::new("losetup").arg("-j").arg(target).args(["-o", &offset.to_string()]).probe()?;
    if let Some(existing) = out.text().lines().next().and_then(|l| l.split(':').next()) {
        return Ok(PathBuf::from(existing));
    }
    let out = Cmd::new("losetup")
        .args(["-f", "--show", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()])
        .arg(target)
        .run()?;
    Ok(PathBuf::from(out.text().trim()))
}

/// Whether the kernel shows `node`'s partition in sysfs right now.
fn sysfs_has(node: &Path) -> bool {
    node.file_name().is_some_and(|n| Path::new("/sys/class/block").join(n).join("dev").exists())
}

/// Makes sure the partition's device node exists. Where no udev runs
/// (containers, some rescue systems) the kernel knows the partition (sysfs)
/// but nobody creates `/dev/...`: do what udev would, from sysfs's `dev`.
fn ensure_node(node: &Path) -> Result<(), DiskError> {
    let Some(name) = node.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let sys = PathBuf::from("/sys/class/block").join(name).join("dev");
    // The kernel may still be adding the partition after BLKRRPART.
    for _ in 0..25 {
        if sys.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    // The kernel's word, not the node's existence, says the partition is
    // there: a node left behind by an earlier attachment (devtmpfs in a
    // container keeps them) may name no device, or another one.
    let text = std::fs::read_to_string(&sys)
        .map_err(|source| DiskError::Io { path: sys.clone(), source })?;
    let bad = || DiskError::Table {
        path: sys.clone(),
        message: format!("unexpected content `{}`", text.trim()),
    };
    let (major, minor) = text.trim().split_once(':').ok_or_else(bad)?;
    let (major, minor): (u64, u64) = match (major.parse(), minor.parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(bad()),
    };
    make_block_node(node, major, minor)
}

/// A block device node for `major:minor` at `node`, replacing one that
/// names another device. Device numbers are Linux's encoding.
#[cfg(target_os = "linux")]
fn make_block_node(node: &Path, major: u64, minor: u64) -> Result<(), DiskError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::FileTypeExt;
    let want = makedev(major, minor);
    match std::fs::metadata(node) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == want => return Ok(()),
        Ok(_) => std::fs::remove_file(node)
            .map_err(|source| DiskError::Io { path: node.to_path_buf(), source })?,
        Err(_) => {}
    }
    mknod(node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), want)
        .map_err(|e| DiskError::Io { path: node.to_path_buf(), source: e.into() })
}

#[cfg(not(target_os = "linux"))]
fn make_block_node(_: &Path, _: u64, _: u64) -> Result<(), DiskError> {
    Err(DiskError::NeedsLinux { what: "creating a partition's device node".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_nodes_follow_the_kernels_naming() {
        assert_eq!(partition_node(Path::new("/dev/sda"), 1), PathBuf::from("/dev/sda1"));
        assert_eq!(partition_node(Path::new("/dev/nvme0n1"), 2), PathBuf::from("/dev/nvme0n1p2"));
        assert_eq!(partition_node(Path::new("/dev/loop7"), 3), PathBuf::from("/dev/loop7p3"));
    }
}
