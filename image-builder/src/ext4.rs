//! The ext4 root filesystem: made by `mkfs.ext4 -d` straight into the root
//! partition's byte range of the image (no separate filesystem image, no copy),
//! then given the host key with `debugfs`, then normalised in place so that
//! the result does not depend on who built it or when.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::rootfs::{RootTree, TreeStats, BLOCK};

const INODE_SIZE: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
    #[error(
        "the root tree does not fit in the {size_mib} MiB root filesystem: mkfs.ext4 ran out of space. \
         Raise image.sizeMiB in the host facts (or drop it to size the image to its content)"
    )]
    NoSpace { size_mib: u64 },
    #[error("the disk holding the output is full; free space there or pass --out on another disk:\n{stderr}")]
    DiskFull { stderr: String },
    #[error("mkfs.ext4 failed:\n{stderr}")]
    Mkfs { stderr: String },
    #[error("debugfs could not place {what}:\n{stderr}")]
    Inject { what: String, stderr: String },
    #[error("cannot hold {what} in memory for injection: {source}")]
    Memfd { what: String, source: nix::Error },
    #[error("reading or patching the ext4 filesystem failed: {0}")]
    Io(#[from] io::Error),
    #[error(
        "mounting the system's closure for mkfs.ext4 failed ({cause}; for example a store path \
         that is no longer there): run the build again, or try --staging links or --staging copy"
    )]
    MountSetup { cause: String },
    #[error("unexpected ext4 layout: {0} (this is a labimg bug; please report it with your e2fsprogs version)")]
    Layout(String),
}

/// How large the filesystem must be for a tree, before headroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub need_bytes: u64,
    pub inodes: u64,
}

/// Estimates what `mkfs.ext4 -d` needs for `stats`, with `extra_inodes` for
/// files injected afterwards and room for `headroom` bytes of later growth.
pub fn estimate(stats: &TreeStats, extra_inodes: u64, headroom: u64) -> Sizing {
    // Reserved inodes, lost+found, injected files, and a quarter more for
    // what the first boot creates; plus one inode per 16 KiB of headroom
    // (mke2fs's default ratio).
    let used = stats.inodes() + 16 + extra_inodes;
    let inodes = (used + used / 4 + headroom / 16384).max(2048).next_multiple_of(8);
    let data = stats.blocks * BLOCK;
    let tables = inodes * INODE_SIZE;
    // Journal (mke2fs picks 16-64 MiB at these sizes), bitmaps, group
    // descriptors, reserved GDT blocks: 64 MiB and 2 % covers them.
    let overhead = 64 * (1 << 20) + (data + tables) / 50;
    Sizing { need_bytes: data + tables + overhead, inodes }
}

pub struct Mkfs<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub tree: &'a RootTree,
    pub label: &'a str,
    pub uuid: &'a str,
    pub hash_seed: &'a str,
    pub inodes: u64,
    pub epoch: u64,
}

impl Mkfs<'_> {
    pub fn run(&self) -> Result<(), Error> {
        let blocks = self.size / BLOCK;
        let mkfs = lab_cli::Cmd::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-I", "256", "-L", self.label, "-U", self.uuid])
            .args(["-N", &self.inodes.to_string()])
            // orphan_file (e2fsprogs 1.47) is refused by the U-Boot that reads
            // extlinux.conf from this filesystem; metadata_csum_seed likewise.
            // metadata_csum is what lets normalize() verify every inode it
            // touches, so it is asked for explicitly, not left to mke2fs.conf.
            .args(["-O", "metadata_csum,^orphan_file,^metadata_csum_seed"])
            .arg("-E")
            .arg(format!("root_owner=0:0,hash_seed={},offset={}", self.hash_seed, self.offset))
            .arg("-d")
            .arg(&self.tree.dir)
            .arg(self.image)
            .arg(blocks.to_string())
            .env("E2FSPROGS_FAKE_TIME", self.epoch.to_string())
            .env("MKE2FS_SYNC", "0")
            .label(format!("writing the root filesystem ({} MiB)", self.size >> 20));
        let result = match &self.tree.mounts {
            Some(mounts) => mounts.around(mkfs),
            None => mkfs,
        }
        .stream();
        let mounted = self.tree.mounts.is_some();
        let stderr = match result {
            Ok(_) => return Ok(()),
            Err(lab_cli::ToolError::Failed { stderr, .. }) => stderr.trim().to_string(),
            // With mounts, a failure before mkfs starts is the mounts'
            // (mkfs.ext4 itself was found when they were tried).
            Err(lab_cli::ToolError::Spawn { source, .. }) if mounted => {
                return Err(Error::MountSetup { cause: source.to_string() })
            }
            Err(lab_cli::ToolError::Missing { .. }) if mounted => {
                let cause = io::Error::from(io::ErrorKind::NotFound).to_string();
                return Err(Error::MountSetup { cause });
            }
            Err(other) => return Err(other.into()),
        };
        if stderr.contains("No space left on device") {
            return Err(Error::DiskFull { stderr });
        }
        if stderr.contains("Could not allocate block")
            || stderr.contains("Could not allocate inode")
        {
            return Err(Error::NoSpace { size_mib: self.size >> 20 });
        }
        Err(Error::Mkfs { stderr })
    }
}

/// A file placed into the filesystem after mkfs, root-owned.
pub struct Inject<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    pub mode: u32,
}

/// Writes `files` into the filesystem at `offset` of `image` with debugfs.
/// The content travels through an anonymous in-memory file (memfd), so a
/// private key is never written to any file but the image itself.
pub fn inject(
    image: &Path,
    offset: u64,
    tree: &RootTree,
    files: &[Inject],
    epoch: u64,
) -> Result<(), Error> {
    use nix::sys::memfd::{memfd_create, MFdFlags};

    let mut script = String::new();
    let mut made = std::collections::BTreeSet::new();
    let mut memfds = Vec::new();
    for f in files {
        // Parent directories the tree lacks (a NixOS root has no /etc yet).
        let mut parent = PathBuf::from("/");
        for comp in Path::new(f.path).parent().into_iter().flat_map(|p| p.components().skip(1)) {
            parent.push(comp);
            let rel = parent.strip_prefix("/").unwrap_or(&parent).to_string_lossy().into_owned();
            if !tree.contains(&rel) && made.insert(rel.clone()) {
                script.push_str(&format!(
                    "mkdir /{rel}\nsif /{rel} mode 040755\nsif /{rel} uid 0\nsif /{rel} gid 0\n"
                ));
            }
        }
        let rel = f.path.trim_start_matches('/');
        if tree.contains(rel) {
            script.push_str(&format!("rm /{rel}\n"));
        }
        // Not close-on-exec: debugfs inherits it and reads /proc/self/fd/N.
        let fd = memfd_create(c"labimg-inject", MFdFlags::empty())
            .map_err(|source| Error::Memfd { what: f.path.to_string(), source })?;
        let mut mem = File::from(fd);
        mem.write_all(f.content)?;
        script.push_str(&format!(
            "write /proc/self/fd/{fd} /{rel}\nsif /{rel} mode 0{mode:o}\nsif /{rel} uid 0\nsif /{rel} gid 0\n",
            fd = mem.as_raw_fd(),
            mode = 0o100000 | f.mode
        ));
        memfds.push(mem);
    }
    // The memfds are inherited (not close-on-exec); the script goes on stdin.
    let output = lab_cli::Cmd::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(format!("{}?offset={offset}", image.display()))
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .stdin(script.as_bytes())
        .probe()?;
    drop(memfds);
    // debugfs exits 0 even when a command fails; its errors go to stderr
    // after the version banner.
    let stderr = &output.stderr;
    let problems: Vec<&str> =
        stderr.lines().filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()).collect();
    if !output.success() || !problems.is_empty() {
        let what = files.iter().map(|f| f.path).collect::<Vec<_>>().join(", ");
        return Err(Error::Inject { what, stderr: problems.join("\n") });
    }
    Ok(())
}

/// What [`normalize`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    pub inodes: u64,
    pub owners_mapped: u64,
}

/// Whose files become root's in the image (mkfs.ext4 -d copies owners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// A prepared tree: the building user's (uid, gid) become root's, so a
    /// non-root builder's files do not end up owned by some random uid on
    /// the target; other owners are kept.
    BuilderToRoot(u32, u32),
    /// A NixOS system: everything is root's, as the store is on NixOS
    /// (NixOS's recipe gets the same with fakeroot), whoever built the
    /// image and however the closure was staged (a user namespace shows
    /// root's files as the overflow ids; a setgid --out gives the staging's
    /// own directories its group).
    AllRoot,
}

/// Makes every in-use inode independent of the build: access, change and
/// creation times become `epoch`, modification times are clamped to it (as
/// `SOURCE_DATE_EPOCH` asks), and owners become root as `owners` says. Inode checksums are
/// recomputed; each stored checksum is verified first, so a layout this code
/// does not understand stops the build instead of corrupting the image.
pub fn normalize(
    image: &File,
    offset: u64,
    epoch: u64,
    owners: Owners,
) -> Result<Normalized, Error> {
    let sb = Superblock::read(image, offset)?;
    let mut out = Normalized::default();
    // Times from 2038 on need ext4's extra epoch bits; nobody builds images
    // dated that far, so refuse rather than half-support them.
    let epoch32 = i32::try_from(epoch).map(|e| e as u32).map_err(|_| {
        Error::Layout(format!(
            "SOURCE_DATE_EPOCH {epoch} is after 2038-01-19, which labimg does not support"
        ))
    })?;
    let isz = sb.inode_size as usize;
    for group in 0..sb.groups {
        let desc = sb.group_desc(image, offset, group)?;
        if desc.flags & BG_INODE_UNINIT != 0 {
            continue;
        }
        let used = sb.inodes_per_group.checked_sub(desc.itable_unused).ok_or_else(|| {
            Error::Layout(format!("group {group} claims more unused inodes than it has"))
        })?;
        if used == 0 {
            continue;
        }
        let table_off = offset + desc.inode_table * sb.block_size;
        let mut table = vec![0u8; used as usize * isz];
        image.read_exact_at(&mut table, table_off)?;
        let mut dirty = false;
        for (i, raw) in table.chunks_exact_mut(isz).enumerate() {
            let ino = group * sb.inodes_per_group + i as u32 + 1;
            if le16(raw, 0x00) == 0 && le16(raw, 0x1a) == 0 {
                continue; // never used
            }
            if sb.metadata_csum && inode_csum(&sb, ino, raw) != stored_csum(&sb, raw) {
                return Err(Error::Layout(format!(
                    "inode {ino} checksum does not verify before patching"
                )));
            }
            let (uid, gid) = (owner(raw, 0x02, 0x78), owner(raw, 0x18, 0x7a));
            let (to_root_uid, to_root_gid) = match owners {
                Owners::BuilderToRoot(u, g) => (uid == u, gid == g),
                Owners::AllRoot => (true, true),
            };
            if uid != 0 && to_root_uid {
                set_owner(raw, 0x02, 0x78, 0);
                out.owners_mapped += 1;
            }
            if gid != 0 && to_root_gid {
                set_owner(raw, 0x18, 0x7a, 0);
            }
            put32(raw, 0x08, epoch32); // atime
            put32(raw, 0x0c, epoch32); // ctime
            if le32(raw, 0x10) > epoch32 {
                put32(raw, 0x10, epoch32); // mtime, clamped
            }
            let extra = if isz > 128 { le16(raw, 0x80) as usize } else { 0 };
            // Nanoseconds and epoch bits of ctime/mtime/atime, then crtime.
            for (field, end) in [(0x84, 0x88), (0x88, 0x8c), (0x8c, 0x90), (0x94, 0x98)] {
                if 128 + extra >= end {
                    put32(raw, field, 0);
                }
            }
            if 128 + extra >= 0x94 {
                put32(raw, 0x90, epoch32); // crtime
            }
            if sb.metadata_csum {
                let c = inode_csum(&sb, ino, raw);
                put16(raw, 0x7c, c as u16);
                if has_csum_hi(&sb, raw) {
                    put16(raw, 0x82, (c >> 16) as u16);
                }
            }
            out.inodes += 1;
            dirty = true;
        }
        if dirty {
            image.write_all_at(&table, table_off)?;
        }
    }
    Ok(out)
}

const BG_INODE_UNINIT: u16 = 0x1;

struct Superblock {
    block_size: u64,
    inodes_per_group: u32,
    groups: u32,
    inode_size: u16,
    desc_size: u64,
    first_data_block: u64,
    metadata_csum: bool,
    csum_seed: u32,
}

struct GroupDesc {
    inode_table: u64,
    flags: u16,
    itable_unused: u32,
}

impl Superblock {
    fn read(image: &File, offset: u64) -> Result<Superblock, Error> {
        let mut s = [0u8; 1024];
        image.read_exact_at(&mut s, offset + 1024)?;
        if le16(&s, 0x38) != 0xef53 {
            return Err(Error::Layout("no ext4 superblock after mkfs".into()));
        }
        let block_size = 1024u64 << le32(&s, 0x18);
        let blocks = le32(&s, 0x04) as u64
            | if le32(&s, 0x60) & 0x80 != 0 { (le32(&s, 0x150) as u64) << 32 } else { 0 };
        let blocks_per_group = le32(&s, 0x20) as u64;
        let first_data_block = le32(&s, 0x14) as u64;
        let incompat = le32(&s, 0x60);
        let ro_compat = le32(&s, 0x64);
        // Layouts this patcher does not walk: refuse instead of guessing.
        if incompat & 0x10 != 0 {
            return Err(Error::Layout("meta_bg group descriptors".into()));
        }
        if ro_compat & 0x400 == 0 {
            return Err(Error::Layout(
                "no metadata_csum, so inodes cannot be verified before patching".into(),
            ));
        }
        let desc_size = if incompat & 0x80 != 0 { le16(&s, 0xfe) as u64 } else { 32 };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&s[0x68..0x78]);
        let csum_seed =
            if incompat & 0x2000 != 0 { le32(&s, 0x270) } else { crc32c_raw(!0, &uuid) };
        Ok(Superblock {
            block_size,
            inodes_per_group: le32(&s, 0x28),
            groups: (blocks - first_data_block).div_ceil(blocks_per_group) as u32,
            inode_size: le16(&s, 0x58),
            desc_size,
            first_data_block,
            metadata_csum: ro_compat & 0x400 != 0,
            csum_seed,
        })
    }

    fn group_desc(&self, image: &File, offset: u64, group: u32) -> Result<GroupDesc, Error> {
        let mut d = vec![0u8; self.desc_size as usize];
        let at =
            offset + (self.first_data_block + 1) * self.block_size + group as u64 * self.desc_size;
        image.read_exact_at(&mut d, at)?;
        let wide = self.desc_size >= 64;
        let inode_table =
            le32(&d, 0x08) as u64 | if wide { (le32(&d, 0x28) as u64) << 32 } else { 0 };
        let itable_unused =
            le16(&d, 0x1c) as u32 | if wide { (le16(&d, 0x32) as u32) << 16 } else { 0 };
        Ok(GroupDesc { inode_table, flags: le16(&d, 0x12), itable_unused })
    }
}

/// CRC32C without the customary pre- and post-inversion, as ext4 chains it.
fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

fn has_csum_hi(sb: &Superblock, raw: &[u8]) -> bool {
    sb.inode_size > 128 && le16(raw, 0x80) >= 4
}

fn stored_csum(sb: &Superblock, raw: &[u8]) -> u32 {
    let lo = le16(raw, 0x7c) as u32;
    if has_csum_hi(sb, raw) {
        lo | (le16(raw, 0x82) as u32) << 16
    } else {
        lo
    }
}

fn inode_csum(sb: &Superblock, ino: u32, raw: &[u8]) -> u32 {
    let mut copy = raw.to_vec();
    put16(&mut copy, 0x7c, 0);
    let hi = has_csum_hi(sb, raw);
    if hi {
        put16(&mut copy, 0x82, 0);
    }
    let crc = crc32c_raw(sb.csum_seed, &ino.to_le_bytes());
    let crc = crc32c_raw(crc, &raw[0x64..0x68]); // i_generation
    let crc = crc32c_raw(crc, &copy);
    if hi {
        crc
    } else {
        crc & 0xffff
    }
}

fn owner(raw: &[u8], lo: usize, hi: usize) -> u32 {
    le16(raw, lo) as u32 | (le16(raw, hi) as u32) << 16
}

fn set_owner(raw: &mut [u8], lo: usize, hi: usize, id: u32) {
    put16(raw, lo, id as u16);
    put16(raw, hi, (id >> 16) as u16);
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_raw_matches_the_kernel_convention() {
        // crc32c("123456789") = 0xe3069283 with the usual inversions.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn estimate_grows_with_content() {
        let small = TreeStats { files: 10, directories: 2, blocks: 100, ..Default::default() };
        let big =
            TreeStats { files: 10_000, directories: 200, blocks: 100_000, ..Default::default() };
        let (a, b) = (estimate(&small, 2, 0), estimate(&big, 2, 0));
        assert!(b.need_bytes > a.need_bytes + 100_000 * BLOCK);
        assert!(b.inodes > 10_200);
    }
}
