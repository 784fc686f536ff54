//! SSH host keys (OpenSSH ed25519): loading a private key for injection and
//! describing it by its public half only.

use std::io::Read;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use zeroize::Zeroizing;

/// Where a NixOS host, and sops-nix by default, expects its host key.
pub const HOST_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read host key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an OpenSSH private key ({source}); expected the output of `ssh-keygen -t ed25519`")]
    Parse { path: PathBuf, source: ssh_key::Error },
    #[error("{path} is a {algorithm} key; host keys must be ed25519 (sops-nix derives the host's age key from it)")]
    NotEd25519 { path: PathBuf, algorithm: String },
    #[error("{path} is passphrase-protected; a host key must be unencrypted to boot unattended")]
    Encrypted { path: PathBuf },
}

/// An ed25519 host key held in memory; the private half is zeroized on drop.
pub struct HostKey {
    key: PrivateKey,
}

impl HostKey {
    pub fn load(path: &Path) -> Result<HostKey, Error> {
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        Self::from_openssh(&text, path)
    }

    pub fn from_openssh(text: &str, origin: &Path) -> Result<HostKey, Error> {
        let key = PrivateKey::from_openssh(text)
            .map_err(|source| Error::Parse { path: origin.to_path_buf(), source })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(Error::NotEd25519 { path: origin.to_path_buf(), algorithm: key.algorithm().to_string() });
        }
        if key.is_encrypted() {
            return Err(Error::Encrypted { path: origin.to_path_buf() });
        }
        Ok(HostKey { key })
    }

    /// The private key in OpenSSH format, for writing into a new system only.
    pub fn private_openssh(&self) -> Zeroizing<String> {
        // Encoding an unencrypted ed25519 key in memory cannot fail.
        self.key.to_openssh(LineEnding::LF).expect("encode an unencrypted ed25519 key")
    }

    /// `ssh-ed25519 AAAA... comment`, as in the `.pub` file.
    pub fn public_openssh(&self) -> String {
        self.key.public_key().to_openssh().expect("encode an ed25519 public key")
    }

    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }
}

/// The fingerprint of a public key line, `SHA256:...`.
pub fn public_fingerprint(line: &str) -> Option<String> {
    ssh_key::PublicKey::from_openssh(line.trim()).ok().map(|k| k.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway key made in memory for each test run.
    fn test_key_openssh() -> Zeroizing<String> {
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        key.to_openssh(LineEnding::LF).unwrap()
    }

    #[test]
    fn loads_and_describes_a_key() {
        let key = HostKey::from_openssh(&test_key_openssh(), Path::new("test")).unwrap();
        assert!(key.public_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert_eq!(public_fingerprint(&key.public_openssh()), Some(key.fingerprint()));
        assert!(key.private_openssh().contains("BEGIN OPENSSH PRIVATE KEY"));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = HostKey::from_openssh("not a key", Path::new("k")).err().unwrap().to_string();
        assert!(err.contains("not an OpenSSH private key"), "{err}");
    }
}
