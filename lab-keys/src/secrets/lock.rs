//! One labprov at a time changes the lab's keys and secrets: a rotation, a
//! push, a sync, a recovery key or an enrolment each reads the files, works
//! for seconds or minutes (sops, SSH), and writes them back; two at once
//! could each write what the other did not see (a push forgetting the key a
//! rotation just recorded, a sync dropping a recipient a rotation added).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::{Error, Result};

/// The lock file in the lab root (ignored by git); its text names the
/// holder, for the message the next one gets.
pub const LOCK_FILE: &str = ".labprov.lock";

/// Held while alive; let go when dropped or when the process ends, however
/// it ends (an advisory `flock`: nothing to clean up after a crash).
#[derive(Debug)]
pub struct LabLock {
    _file: File,
}

impl LabLock {
    /// Takes the lab's lock for `what` (the command, as the user typed it),
    /// or says who holds it. Never waits: the other command may wait for a
    /// prompt, and the user should know.
    pub fn take(root: &Path, what: &str) -> Result<LabLock> {
        let path = root.join(LOCK_FILE);
        let io = |source| Error::Io { path: path.clone(), source };
        let open = |write| {
            OpenOptions::new().read(true).write(write).create(write).truncate(false).open(&path)
        };
        // Another admin's (or root's) lock file may not be writable here:
        // a lock needs only reading, and then the holder goes unnamed.
        let (mut file, named) = match open(true) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                (open(false).map_err(io)?, false)
            }
            other => (other.map_err(io)?, true),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "holder unknown".to_string(),
                    h => h.to_string(),
                };
                return Err(Error::LabBusy { holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if named {
            file.set_len(0).and_then(|_| file.rewind()).map_err(io)?;
            writeln!(file, "pid {}: labprov {what}", std::process::id()).map_err(io)?;
        }
        Ok(LabLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name_until_it_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let first = LabLock::take(tmp.path(), "keys rotate --all").unwrap();
        let err = LabLock::take(tmp.path(), "secrets sync").unwrap_err().to_string();
        let me = format!("pid {}: labprov keys rotate --all", std::process::id());
        assert!(err.contains(&me), "{err}");
        assert!(err.contains("wait for it to finish"), "{err}");
        drop(first);
        let second = LabLock::take(tmp.path(), "secrets sync").unwrap();
        let text = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("pid {}: labprov secrets sync\n", std::process::id()));
        drop(second);
    }
}
