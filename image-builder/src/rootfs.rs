//! The root tree that becomes the ext4 root filesystem: a directory used in
//! place, or a tar archive unpacked into a private scratch directory.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::Serialize;

use lab_cli::interrupt;

pub const BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("root tree {path} does not exist; pass --rootfs DIR (a directory or a .tar)")]
    Missing { path: PathBuf },
    #[error("cannot read {path} in the root tree: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot unpack {path}: {source}; is it a plain (uncompressed) tar archive?")]
    Unpack { path: PathBuf, source: io::Error },
    #[error("{0} while reading the root tree: nothing was written")]
    Interrupted(#[from] interrupt::Interrupted),
}

/// What the tree holds, counted the way ext4 will store it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub other: u64,
    /// Sum of regular file sizes (hard links counted once).
    pub bytes: u64,
    /// 4 KiB blocks for file data, directories and long symlinks.
    pub blocks: u64,
}

impl TreeStats {
    pub fn inodes(&self) -> u64 {
        self.files + self.directories + self.symlinks + self.other
    }
}

pub struct RootTree {
    /// The directory mkfs.ext4 reads.
    pub dir: PathBuf,
    /// What the user named (directory or archive).
    pub source: PathBuf,
    pub stats: TreeStats,
    /// How a staged system's closure got into `dir`: "links" (hard links to
    /// the store's files, no copy) or "copy".
    pub staging: Option<&'static str>,
    _unpacked: Option<Scratch>,
}

impl RootTree {
    /// Opens `path`; a tar archive is unpacked under `scratch` (removed when
    /// the tree is dropped).
    pub fn open(path: &Path, scratch: &Path) -> Result<RootTree, Error> {
        let meta = fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::Missing { path: path.to_path_buf() },
            _ => Error::Read { path: path.to_path_buf(), source },
        })?;
        let (dir, unpacked) = if meta.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let tmp = scratch_dir(scratch, "rootfs")
                .map_err(|source| Error::Unpack { path: path.to_path_buf(), source })?;
            unpack_tar(path, tmp.path())?;
            (tmp.path().to_path_buf(), Some(tmp))
        };
        let stats = scan(&dir)?;
        Ok(RootTree { dir, source: path.to_path_buf(), stats, staging: None, _unpacked: unpacked })
    }

    /// A tree assembled in `dir` by the caller (a staged NixOS system).
    pub fn staged(
        dir: Scratch,
        source: PathBuf,
        stats: TreeStats,
        staging: &'static str,
    ) -> RootTree {
        RootTree {
            dir: dir.path().to_path_buf(),
            source,
            stats,
            staging: Some(staging),
            _unpacked: Some(dir),
        }
    }

    pub fn contains(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.dir.join(rel)).is_ok()
    }
}

/// A scratch directory `.labimg-KIND.PID.XXXXXX` (a tar unpacked, a closure
/// staged), removed when dropped, and locked (flock) while it lives: a later
/// run removes what a killed one left (SIGKILL, a power cut: gigabytes of
/// unpacked files, or a hundred thousand links) without waiting for it, and
/// leaves alone one that a running labimg holds, in whatever pid namespace
/// or on whatever host (the PID in the name is for people).
pub struct Scratch {
    // Field order: the directory goes before its lock is let go.
    dir: tempfile::TempDir,
    _lock: Flock<fs::File>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The directory `path` (not a symlink) locked without waiting, or None if
/// someone holds it.
fn lock_dir(path: &Path) -> io::Result<Option<Flock<fs::File>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits() | OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Removes the scratch directories under `scratch` that this user owns and
/// nobody holds: what killed builds left. Another user's are never touched.
/// A build calls it on its --out before it stages or unpacks; a dry run
/// does not (it writes nothing).
pub fn sweep_scratch(scratch: &Path) {
    let me = nix::unistd::geteuid().as_raw();
    for entry in fs::read_dir(scratch).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let kinds = [".labimg-system.", ".labimg-rootfs."];
        if !name.to_str().is_some_and(|n| kinds.iter().any(|k| n.starts_with(k))) {
            continue;
        }
        // One changed in the last minute may be a starting build's, made
        // and not yet locked.
        let settled = |m: &fs::Metadata| {
            m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() >= 60)
        };
        let path = entry.path();
        let ours =
            fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me && settled(&m));
        let Ok(Some(_held)) = lock_dir(&path).map(|l| l.filter(|_| ours)) else {
            continue; // another user's, in use, just made, or gone meanwhile
        };
        // Not fatal: at worst the space stays taken, as before.
        let removed = writable_dirs(&path).and_then(|_| fs::remove_dir_all(&path));
        lab_cli::output::say(&match removed {
            Ok(()) => format!("labimg: removed {}, left by a labimg that stopped", path.display()),
            Err(e) => format!(
                "labimg: cannot remove {}, left by a labimg that stopped: {e}",
                path.display()
            ),
        });
    }
}

/// A new scratch directory of `kind` under `scratch`, locked while it lives.
pub fn scratch_dir(scratch: &Path, kind: &str) -> io::Result<Scratch> {
    let prefix = format!(".labimg-{kind}.{}.", std::process::id());
    let dir = tempfile::Builder::new().prefix(&prefix).tempdir_in(scratch)?;
    let lock = lock_dir(dir.path())?
        .ok_or_else(|| io::Error::other("a new scratch directory is already locked"))?;
    Ok(Scratch { dir, _lock: lock })
}

impl Drop for RootTree {
    /// A staged closure keeps the store's read-only directory modes, which
    /// would stop its removal (as a user other than root): made writable
    /// first, then the temporary directory goes.
    fn drop(&mut self) {
        if self._unpacked.is_some() {
            let _ = writable_dirs(&self.dir);
        }
    }
}

/// Makes every directory under `dir` writable for its owner, so that a
/// staged tree with the store's read-only modes can be removed. Only
/// directories: they are the staging's own, while a file may be a hard link
/// to the store's, whose mode must not change.
pub fn writable_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.permissions().mode() | 0o700))?;
        for entry in fs::read_dir(dir)? {
            writable_dirs(&entry?.path())?;
        }
    }
    Ok(())
}

fn unpack_tar(path: &Path, into: &Path) -> Result<(), Error> {
    let err = |source| Error::Unpack { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(err)?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_unpack_xattrs(true);
    archive.unpack(into).map_err(err)
}

/// Walks the tree once; also proves every entry is readable before anything
/// is written.
pub fn scan(root: &Path) -> Result<TreeStats, Error> {
    let mut stats = TreeStats::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    stats.directories += 1;
    stats.blocks += 1;
    while let Some(dir) = stack.pop() {
        interrupt::check()?;
        let read = |source| Error::Read { path: dir.clone(), source };
        let mut entries = 0u64;
        for entry in fs::read_dir(&dir).map_err(read)? {
            let entry = entry.map_err(read)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)
                .map_err(|source| Error::Read { path: path.clone(), source })?;
            entries += 1;
            let ft = meta.file_type();
            if ft.is_dir() {
                stats.directories += 1;
                stats.blocks += 1;
                stack.push(path);
            } else if ft.is_file() {
                if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                // Unreadable files would fail mkfs half-way; fail here instead.
                fs::File::open(&path)
                    .map_err(|source| Error::Read { path: path.clone(), source })?;
                stats.files += 1;
                stats.bytes += meta.len();
                stats.blocks += meta.len().div_ceil(BLOCK);
            } else if ft.is_symlink() {
                stats.symlinks += 1;
                // Targets of 60 bytes and more need a data block.
                if meta.len() >= 60 {
                    stats.blocks += 1;
                }
            } else {
                stats.other += 1;
            }
        }
        // A directory block holds about 100 typical entries.
        stats.blocks += entries / 100;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_scratch_dirs_nobody_holds_and_leaves_the_others() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().unwrap();
        let at = |name: &str| scratch.path().join(name);
        // Left by a killed build: unlocked, the store's read-only modes inside.
        let stale = at(".labimg-system.4242.aB3xYz");
        fs::create_dir_all(stale.join("nix/store/x")).unwrap();
        fs::write(stale.join("nix/store/x/file"), b"linked").unwrap();
        fs::set_permissions(stale.join("nix/store/x"), fs::Permissions::from_mode(0o555)).unwrap();
        // Another kind's, left too; a running build's (its lock held), a
        // symlink to a directory elsewhere and, where this user can make
        // one, another user's: those stay.
        let running = at(".labimg-system.1.running");
        let other_kind = at(".labimg-rootfs.4242.stale");
        let elsewhere = tempfile::tempdir().unwrap();
        let link = at(".labimg-system.4242.link");
        for d in [&running, &other_kind] {
            fs::create_dir(d).unwrap();
        }
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        let _held = lock_dir(&running).unwrap().unwrap();
        let theirs = at(".labimg-system.4242.theirs");
        fs::create_dir(&theirs).unwrap();
        // Only root can give a directory away (and nobody is then another).
        let chowned = nix::unistd::geteuid().is_root()
            && nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).is_ok();
        // All of them from two minutes ago, but one just made and unlocked
        // (a build between making its directory and locking it).
        let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        for d in [&stale, &running, &other_kind, &theirs] {
            let times = fs::FileTimes::new().set_modified(two_minutes_ago);
            fs::File::open(d).unwrap().set_times(times).unwrap();
        }
        let fresh = at(".labimg-system.4242.fresh");
        fs::create_dir(&fresh).unwrap();

        let made = scratch_dir(scratch.path(), "system").unwrap();
        assert!(stale.exists(), "making one removes nothing");
        sweep_scratch(scratch.path());
        assert!(!stale.exists() && !other_kind.exists());
        for d in
            [&running, &fresh, &link, &elsewhere.path().to_path_buf(), &made.path().to_path_buf()]
        {
            assert!(fs::symlink_metadata(d).is_ok(), "{}", d.display());
        }
        assert_eq!(theirs.exists(), chowned, "another user's is left alone");
        let name = made.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with(&format!(".labimg-system.{}.", std::process::id())), "{name}");
        assert!(lock_dir(made.path()).unwrap().is_none(), "the new one is held while it lives");
        let path = made.path().to_path_buf();
        drop(made);
        assert!(!path.exists());
    }

    #[test]
    fn counts_files_links_and_blocks() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/a"), vec![1u8; 5000]).unwrap();
        fs::hard_link(t.path().join("d/a"), t.path().join("b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("d/l")).unwrap();
        let s = scan(t.path()).unwrap();
        assert_eq!((s.files, s.directories, s.symlinks), (1, 2, 1));
        assert_eq!(s.bytes, 5000);
        assert_eq!(s.blocks, 2 + 2);
    }

    #[test]
    fn missing_tree_is_named() {
        let err =
            RootTree::open(Path::new("/nonexistent/rootfs"), Path::new("/tmp")).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/rootfs"));
    }
}
