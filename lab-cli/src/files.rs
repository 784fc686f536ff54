//! Files that appear only when complete: written under a temporary name in
//! the destination's directory (with their final mode from creation on, so a
//! secret is never readable by others, not even half-written), synced, and
//! renamed into place. A failed or interrupted run leaves the old file or
//! none, never a half-written one that looks finished.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create output directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot create a temporary file in {dir}: {source}")]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot move the finished {path} into place: {source}")]
    Persist { path: PathBuf, source: io::Error },
}

/// A file being written; dropped without [`Pending::commit`] it disappears.
pub struct Pending {
    pub file: NamedTempFile,
    pub dest: PathBuf,
}

impl Pending {
    /// `mode` applies from creation on: an image holding a private key is
    /// never readable by others, not even while it is being written.
    pub fn create(dest: &Path, mode: u32) -> Result<Pending, Error> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(|source| Error::Create { dir: dir.to_path_buf(), source })?;
        // The umask may have narrowed the mode; public files must stay readable.
        file.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(|source| Error::Create { dir: dir.to_path_buf(), source })?;
        Ok(Pending { file, dest: dest.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn commit(self) -> Result<PathBuf, Error> {
        let dest = self.dest.clone();
        self.file
            .as_file()
            .sync_all()
            .map_err(|source| Error::Persist { path: dest.clone(), source })?;
        self.file
            .persist(&dest)
            .map_err(|e| Error::Persist { path: dest.clone(), source: e.error })?;
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Persist { path: dest.clone(), source })?;
        Ok(dest)
    }
}

/// `bytes` to `dest` with `mode`, atomically (creating the directory).
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    let mut pending = Pending::create(dest, mode)?;
    std::io::Write::write_all(&mut pending.file, bytes)
        .map_err(|source| Error::Persist { path: dest.to_path_buf(), source })?;
    pending.commit().map(|_| ())
}

pub fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Dir { path: dir.to_path_buf(), source })
}
