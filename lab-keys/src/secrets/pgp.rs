//! Admins' OpenPGP keys as sops recipients.
//!
//! sops 3.11 encrypts a data key to an OpenPGP recipient by running
//! `gpg --encrypt -r FINGERPRINT`, so the public key must be in the keyring
//! of the sops process. Each admin's public key is committed as
//! `hosts/admins/<FINGERPRINT>.asc`; every sync imports them into a
//! throwaway GnuPG home ([`Keyring`]) and runs sops with `GNUPGHOME` set to
//! it, so the operator's own keyring is neither needed nor touched, and sops
//! never asks the operator's gpg-agent for a passphrase.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Error, LabKeys, Result, PGP_KEYS_DIR};

/// `0123 4567 ...` or lower case to the 40 upper-case hex digits sops
/// writes; `None` for anything that is not a v4 fingerprint.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (clean.len() == 40 && clean.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| clean.to_ascii_uppercase())
}

/// Where an admin's public key is committed.
pub fn public_key_path(root: &Path, fingerprint: &str) -> PathBuf {
    root.join(PGP_KEYS_DIR).join(format!("{fingerprint}.asc"))
}

/// A GnuPG home of our own under /tmp (0700, a short path: gpg-agent's
/// socket path must stay under ~107 bytes). Dropping it stops the
/// gpg-agent gpg may have started there, then removes it.
pub struct Keyring {
    dir: tempfile::TempDir,
}

impl Keyring {
    /// An empty keyring: sops may still try `gpg -d` on a file that lists an
    /// OpenPGP key, and must not reach the operator's own agent for it.
    pub fn empty() -> Result<Keyring> {
        let tmp = Path::new("/tmp");
        let dir = tempfile::Builder::new()
            .prefix("labprov-gpg-")
            .tempdir_in(tmp)
            .map_err(Error::io(tmp))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(dir.path()))?;
        Ok(Keyring { dir })
    }

    /// Every OpenPGP key `keys` lists, imported from its `.asc` after
    /// checking the file holds exactly that key. Nothing in the lab is
    /// written; an error leaves nothing behind.
    pub fn with_admin_keys(root: &Path, keys: &LabKeys) -> Result<Keyring> {
        let ring = Keyring::empty()?;
        for (admin, fingerprint) in &keys.pgp {
            let path = public_key_path(root, fingerprint);
            if !path.is_file() {
                return Err(Error::PgpKeyMissing {
                    admin: admin.clone(),
                    fingerprint: fingerprint.clone(),
                    path: path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                });
            }
            let listed = ring
                .gpg()
                .args(["--with-colons", "--import-options", "show-only", "--import"])
                .arg(&path)
                .run()
                .map_err(|e| gpg_error(e, &path))?;
            let found = primary_fingerprints(&listed.text());
            if found != [fingerprint.clone()] {
                return Err(Error::PgpKeyMismatch {
                    path,
                    fingerprint: fingerprint.clone(),
                    found: if found.is_empty() { "none".into() } else { found.join(", ") },
                });
            }
            ring.gpg().arg("--import").arg(&path).run().map_err(|e| gpg_error(e, &path))?;
        }
        Ok(ring)
    }

    /// The `GNUPGHOME` for sops.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn gpg(&self) -> lab_cli::Cmd {
        lab_cli::Cmd::new("gpg").env("GNUPGHOME", self.path()).args(["--batch", "--no-tty"])
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        // Best effort: without gpgconf no agent was started by us either.
        let _ = lab_cli::Cmd::new("gpgconf")
            .env("GNUPGHOME", self.path())
            .args(["--kill", "gpg-agent"])
            .probe();
    }
}

fn gpg_error(e: lab_cli::ToolError, path: &Path) -> Error {
    match e {
        lab_cli::ToolError::Missing { .. } => Error::GpgMissing,
        lab_cli::ToolError::Failed { stderr, .. } => {
            Error::Gpg { what: path.display().to_string(), stderr }
        }
        other => Error::Gpg { what: path.display().to_string(), stderr: other.to_string() },
    }
}

/// The primary keys' fingerprints in `gpg --with-colons` output (the `fpr`
/// record right after each `pub` record; subkeys follow `sub`).
fn primary_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_pub = false;
    for line in colons.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first().copied() {
            Some("pub") => after_pub = true,
            Some("fpr") if after_pub => {
                if let Some(fp) = fields.get(9).and_then(|f| normalize_fingerprint(f)) {
                    out.push(fp);
                }
                after_pub = false;
            }
            Some("sub" | "uid" | "sec" | "ssb") => after_pub = false,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize_and_parse() {
        assert_eq!(
            normalize_fingerprint("0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567").as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF01234567")
        );
        assert_eq!(normalize_fingerprint("89ABCDEF01234567"), None);
        assert_eq!(normalize_fingerprint("G123456789ABCDEF0123456789ABCDEF01234567"), None);
        let colons = "pub:-:255:22:AAAA:1:::-:::scESC::::::23::0:\n\
                      fpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\n\
                      uid:-::::1::X::Test <t@lab>::::::::::0:\n\
                      sub:-:255:18:BBBB:1::::::e::::::23:\n\
                      fpr:::::::::FFFF456789ABCDEF0123456789ABCDEF01234567:\n";
        assert_eq!(primary_fingerprints(colons), vec!["0123456789ABCDEF0123456789ABCDEF01234567"]);
    }
}
