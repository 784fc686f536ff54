//! Atomic file replacement: a reader sees the old file or the new one, never
//! a half-written one, and a secret is never readable by others, not even
//! while it is being written.

use std::fs::{self, File};
use std::path::Path;

use super::{Error, Result};

/// Writes `bytes` to `path` atomically with `mode` from the start (the one
/// atomic writer of both tools, `lab_cli::files`).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    lab_cli::files::write_atomic(path, bytes, mode).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Renames `from` over `to` (same file system) and syncs the directory.
pub fn replace(from: &Path, to: &Path) -> Result<()> {
    File::open(from).and_then(|f| f.sync_all()).map_err(Error::io(from))?;
    fs::rename(from, to).map_err(Error::io(to))?;
    sync_dir(to.parent().unwrap_or(Path::new("."))).map_err(Error::io(to))
}

/// Removes a file if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e }),
    }
}

/// The file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e }),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_with_mode_and_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("sub/secret");
        atomic_write(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        atomic_write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        atomic_write(&dir.join("pub"), b"p", 0o644).unwrap();
        assert_eq!(fs::metadata(dir.join("pub")).unwrap().permissions().mode() & 0o777, 0o644);
        let leftovers: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
