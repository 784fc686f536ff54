//! The root tree that becomes the ext4 root filesystem: a directory used in
//! place, or a tar archive unpacked into a private scratch directory.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::mount::MsFlags;
use nix::sys::time::TimeSpec;
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
    /// How a staged system's closure got into `dir`: "mounts" (store paths
    /// mounted for mkfs alone), "links" (hard links to the store's files)
    /// or "copy".
    pub staging: Option<&'static str>,
    /// For "mounts": what mkfs.ext4 must be run with to see the closure.
    pub mounts: Option<Arc<Mounts>>,
    /// How long the staging took.
    pub stage_seconds: Option<f64>,
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
        Ok(RootTree {
            dir,
            source: path.to_path_buf(),
            stats,
            staging: None,
            mounts: None,
            stage_seconds: None,
            _unpacked: unpacked,
        })
    }

    /// A tree assembled at `tree` in `scratch` by the caller (a staged NixOS
    /// system; `staging` None for a dry run's, which is only sized).
    #[allow(clippy::too_many_arguments)]
    pub fn staged(
        scratch: Scratch,
        tree: PathBuf,
        source: PathBuf,
        stats: TreeStats,
        staging: Option<&'static str>,
        stage_seconds: f64,
        mounts: Option<Arc<Mounts>>,
    ) -> RootTree {
        RootTree {
            dir: tree,
            source,
            stats,
            staging,
            mounts,
            stage_seconds: Some(stage_seconds),
            _unpacked: Some(scratch),
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
        let removed = remove_tree(&path);
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

impl Drop for Scratch {
    /// A staged closure keeps the store's read-only directory modes, which
    /// would stop its removal (as a user other than root): made writable
    /// first, then the directory goes, unless something is mounted in it.
    fn drop(&mut self) {
        if let Err(e) = unmounted(self.path()) {
            self.dir.disable_cleanup(true);
            lab_cli::output::say(&format!("labimg: left {} in place: {e}", self.path().display()));
            return;
        }
        let _ = writable_dirs(self.path());
    }
}

/// Removes a scratch tree that may hold links to the store's files, never
/// through a mount: were a store path mounted in it, removing the tree
/// would empty the store path.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    unmounted(dir)?;
    writable_dirs(dir)?;
    fs::remove_dir_all(dir)
}

/// Ok if nothing is mounted at or below `dir` in this mount namespace.
fn unmounted(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStringExt;
    let dir = fs::canonicalize(dir)?;
    // Bytes, not text: a mount point anywhere may have any name.
    let table = fs::read("/proc/self/mountinfo")?;
    // Field 5 is the mount point, with space, tab, newline and backslash
    // written as octal escapes.
    let unescape = |field: &[u8]| {
        let (mut out, mut rest) = (Vec::new(), field);
        while let Some((&b, tail)) = rest.split_first() {
            let octal = tail.get(..3).and_then(|d| std::str::from_utf8(d).ok());
            match (b, octal.and_then(|d| u8::from_str_radix(d, 8).ok())) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    rest = &tail[3..];
                }
                _ => {
                    out.push(b);
                    rest = tail;
                }
            }
        }
        PathBuf::from(std::ffi::OsString::from_vec(out))
    };
    match table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4).map(unescape))
        .find(|point| point.starts_with(&dir))
    {
        None => Ok(()),
        // Parents are listed before what is mounted on them.
        Some(point) => Err(io::Error::other(format!(
            "{} is mounted in it; unmount it (umount -R {}), then remove the directory",
            point.display(),
            point.display()
        ))),
    }
}

/// A system's closure as one program run through [`Mounts::around`] sees it
/// at `STORE` (the staging tree's `nix/store`): a tmpfs of its own there,
/// each store path's place made in it, and the store path bind-mounted onto
/// that place. The program gets a mount namespace of its own (and, for a
/// user other than root, a user namespace that maps just that user), so
/// nothing is mounted or made on disk for anyone else, nothing outlives the
/// program, and nothing needs cleaning up after a crash (decision 0005).
/// One `mount` per store path replaces a link per file.
pub struct Mounts {
    store: CString,
    places: Vec<Place>,
    /// A user other than root: uid_map and gid_map lines mapping the user
    /// to itself. Another owner's files (root's in a multi-user store) are
    /// then seen as the overflow ids (the image makes every owner root's).
    user_maps: Option<(CString, CString)>,
}

struct Place {
    path: CString,
    kind: PlaceKind,
}

enum PlaceKind {
    /// A store path that is a directory or file: mounted onto an empty one,
    /// then made read-only with `remount`, its mount's own flags kept.
    Mounted { source: CString, dir: bool, remount: MsFlags },
    /// A store path that is a symlink (it cannot be mounted): made again,
    /// with the store's times, as a link or a copy keeps them.
    Symlink { target: CString, atime: TimeSpec, mtime: TimeSpec },
}

impl Mounts {
    /// The store `paths` at `store`, an empty directory of the staging tree.
    pub fn new(store: &Path, paths: &[&str]) -> Result<Mounts, Error> {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &OsStr| {
            CString::new(p.as_bytes()).map_err(|e| Error::Read {
                path: Path::new(p).to_path_buf(),
                source: io::Error::other(e),
            })
        };
        let mut places = Vec::with_capacity(paths.len());
        for path in paths {
            interrupt::check()?;
            let source = Path::new(path);
            let Some(name) = source.file_name() else { continue };
            let read = |source_err| Error::Read { path: source.to_path_buf(), source: source_err };
            let meta = fs::symlink_metadata(source).map_err(read)?;
            let kind = if meta.is_symlink() {
                PlaceKind::Symlink {
                    target: c(fs::read_link(source).map_err(read)?.as_os_str())?,
                    atime: TimeSpec::new(meta.atime(), meta.atime_nsec()),
                    mtime: TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
                }
            } else {
                PlaceKind::Mounted {
                    source: c(source.as_os_str())?,
                    dir: meta.is_dir(),
                    remount: read_only_remount(source).map_err(read)?,
                }
            };
            places.push(Place { path: c(store.join(name).as_os_str())?, kind });
        }
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        let user_maps = (!uid.is_root()).then(|| {
            let line = |id: u32| CString::new(format!("{id} {id} 1")).expect("digits only");
            (line(uid.as_raw()), line(gid.as_raw()))
        });
        Ok(Mounts { store: c(store.as_os_str())?, places, user_maps })
    }

    /// `cmd` run with the closure in place, in its own namespaces.
    pub fn around(self: &Arc<Self>, cmd: lab_cli::Cmd) -> lab_cli::Cmd {
        let mounts = Arc::clone(self);
        // SAFETY: `enter` makes system calls on strings and times prepared
        // before the fork; it allocates nothing and takes no lock.
        unsafe { cmd.pre_exec(move || mounts.enter()) }
    }

    /// Whether this kernel, sandbox or container lets this user do it: the
    /// whole setup, around a program that does nothing (`mkfs.ext4 -V`,
    /// which the build runs next). Its time is what the setup costs.
    pub fn work(self: &Arc<Self>) -> Result<(), lab_cli::ToolError> {
        self.around(lab_cli::Cmd::new("mkfs.ext4").arg("-V")).run().map(drop)
    }

    /// In the child, between fork and exec.
    fn enter(&self) -> io::Result<()> {
        use nix::fcntl::{open, AT_FDCWD};
        use nix::mount::mount;
        use nix::sched::{unshare, CloneFlags};
        use nix::sys::stat::{mkdirat, utimensat, Mode, UtimensatFlags};
        let none: Option<&CStr> = None;
        let write = |path: &CStr, text: &CStr| -> io::Result<()> {
            let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
            nix::unistd::write(&fd, text.to_bytes())?;
            Ok(())
        };
        match &self.user_maps {
            None => unshare(CloneFlags::CLONE_NEWNS)?,
            Some((uid_map, gid_map)) => {
                unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)?;
                write(c"/proc/self/uid_map", uid_map)?;
                // gid_map may be written by an unprivileged user only once
                // setgroups(2) is denied.
                write(c"/proc/self/setgroups", c"deny")?;
                write(c"/proc/self/gid_map", gid_map)?;
            }
        }
        // Where / is shared (systemd's default), mounts below it would
        // propagate back to the host's namespace: not with private.
        mount(none, c"/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
        // The places are made in memory: thousands of entries written to
        // the disk's journal cost more than the mounts (0.1-1.2 s here).
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some(c"tmpfs"), self.store.as_c_str(), Some(c"tmpfs"), flags, Some(c"mode=755"))?;
        for place in &self.places {
            let path = place.path.as_c_str();
            match &place.kind {
                PlaceKind::Mounted { source, dir, remount } => {
                    if *dir {
                        mkdirat(AT_FDCWD, path, Mode::from_bits_truncate(0o755))?;
                    } else {
                        let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
                        drop(open(path, flags, Mode::from_bits_truncate(0o644))?);
                    }
                    mount(Some(source.as_c_str()), path, none, MsFlags::MS_BIND, none)?;
                    // mkfs only reads: the store stays read-only for it too.
                    mount(none, path, none, *remount, none)?;
                }
                PlaceKind::Symlink { target, atime, mtime } => {
                    nix::unistd::symlinkat(target.as_c_str(), AT_FDCWD, path)?;
                    utimensat(AT_FDCWD, path, atime, mtime, UtimensatFlags::NoFollowSymlink)?;
                }
            }
        }
        Ok(())
    }
}

/// The flags that make a bind mount of `source` read-only: the remount must
/// repeat what its mount already has (nosuid, nodev, noexec, atime: NixOS
/// mounts the store `ro,nosuid,nodev`), because in a user namespace those
/// are locked and leaving one out counts as clearing it (EPERM); adding
/// nosuid and nodev is always allowed.
fn read_only_remount(source: &Path) -> io::Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let has = statvfs(source)?.flags();
    let mut flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    for (fs, ms) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if has.contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
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
    let mut walk = Walk::new(root);
    walk.drain()?;
    Ok(walk.stats)
}

/// [`scan`] of a tree as a program run through [`Mounts::around`] sees it:
/// `sources` (the store paths) are in its `nix/store`, empty here.
pub fn scan_mounted(root: &Path, sources: &[PathBuf]) -> Result<TreeStats, Error> {
    let mut walk = Walk::new(root);
    for source in sources {
        walk.entry(source)?;
    }
    walk.stats.blocks += sources.len() as u64 / 100;
    walk.drain()?;
    Ok(walk.stats)
}

/// Counts entries the way ext4 will store them; directories are queued.
struct Walk {
    stats: TreeStats,
    /// (device, inode) of files with more than one link, counted once.
    seen: HashSet<(u64, u64)>,
    queued: Vec<PathBuf>,
    /// Root reads every file: nothing to check.
    root_reads_all: bool,
}

impl Walk {
    fn new(root: &Path) -> Walk {
        let stats = TreeStats { directories: 1, blocks: 1, ..TreeStats::default() };
        let root_reads_all = nix::unistd::geteuid().is_root();
        Walk { stats, seen: HashSet::new(), queued: vec![root.to_path_buf()], root_reads_all }
    }

    fn drain(&mut self) -> Result<(), Error> {
        while let Some(dir) = self.queued.pop() {
            interrupt::check()?;
            let read = |source| Error::Read { path: dir.clone(), source };
            let mut entries = 0u64;
            for entry in fs::read_dir(&dir).map_err(read)? {
                self.entry(&entry.map_err(read)?.path())?;
                entries += 1;
            }
            // A directory block holds about 100 typical entries.
            self.stats.blocks += entries / 100;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path) -> Result<(), Error> {
        let failed = |source| Error::Read { path: path.to_path_buf(), source };
        let meta = fs::symlink_metadata(path).map_err(failed)?;
        let stats = &mut self.stats;
        let ft = meta.file_type();
        if ft.is_dir() {
            stats.directories += 1;
            stats.blocks += 1;
            self.queued.push(path.to_path_buf());
        } else if ft.is_file() {
            if meta.nlink() > 1 && !self.seen.insert((meta.dev(), meta.ino())) {
                return Ok(());
            }
            // Unreadable files would fail mkfs half-way; fail here instead
            // (one access check, not an open and a close: a closure has
            // tens of thousands of files; for root, none: 0.2 s of them).
            if !self.root_reads_all {
                use nix::unistd::{faccessat, AccessFlags};
                let at = nix::fcntl::AT_FDCWD;
                faccessat(at, path, AccessFlags::R_OK, nix::fcntl::AtFlags::AT_EACCESS)
                    .map_err(|e| failed(e.into()))?;
            }
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
        Ok(())
    }
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
