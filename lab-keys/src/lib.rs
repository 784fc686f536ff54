//! SSH host keys (OpenSSH ed25519): loading a private key for injection and
//! describing it by its public half only.

pub mod age;
pub mod secrets;

use std::io::Read;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
pub use zeroize::Zeroizing;

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
            return Err(Error::NotEd25519 {
                path: origin.to_path_buf(),
                algorithm: key.algorithm().to_string(),
            });
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

    /// A fresh ed25519 host key from the OS random source.
    pub fn generate(comment: &str) -> HostKey {
        let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .expect("ed25519 key generation from the OS random source");
        key.set_comment(comment);
        HostKey { key }
    }

    /// The age recipient sops-nix on the host derives from this key.
    pub fn age_recipient(&self) -> String {
        crate::age::recipient_from_public(self.key.public_key())
            .expect("a generated or loaded ed25519 key is a valid point")
    }

    /// The age identity sops-nix on the host derives from this key (secret).
    pub fn age_identity(&self) -> Zeroizing<String> {
        crate::age::identity_from_private(&self.key)
            .expect("a generated or loaded ed25519 key derives an identity")
    }

    pub fn public(&self) -> PublicHostKey {
        PublicHostKey { key: self.key.public_key().clone() }
    }
}

/// The public half of a host key, as recorded in the host facts.
#[derive(Debug, Clone)]
pub struct PublicHostKey {
    key: ssh_key::PublicKey,
}

impl PublicHostKey {
    /// Parses one `ssh-ed25519 AAAA... comment` line; only ed25519.
    pub fn parse(line: &str) -> Result<PublicHostKey, PublicKeyError> {
        let key = ssh_key::PublicKey::from_openssh(line.trim())
            .map_err(|e| PublicKeyError::Parse { line: abbreviate(line), reason: e.to_string() })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(PublicKeyError::NotEd25519 { algorithm: key.algorithm().to_string() });
        }
        Ok(PublicHostKey { key })
    }

    /// `ssh-ed25519 AAAA... comment`.
    pub fn openssh(&self) -> String {
        self.key.to_openssh().expect("encode an ed25519 public key")
    }

    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    pub fn age_recipient(&self) -> String {
        crate::age::recipient_from_public(&self.key).expect("a parsed ed25519 key is a valid point")
    }

    /// Same key material, whatever the comments say.
    pub fn same_key(&self, other: &PublicHostKey) -> bool {
        self.key.key_data() == other.key.key_data()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    #[error("not an OpenSSH public key line `{line}`: {reason}")]
    Parse { line: String, reason: String },
    #[error("a {algorithm} key; host keys must be ed25519 (sops-nix derives the host's age key from it)")]
    NotEd25519 { algorithm: String },
}

fn abbreviate(line: &str) -> String {
    let line = line.trim();
    if line.chars().count() > 40 {
        format!("{}…", line.chars().take(40).collect::<String>())
    } else {
        line.to_string()
    }
}

/// The fingerprint of a public key line, `SHA256:...`.
pub fn public_fingerprint(line: &str) -> Option<String> {
    ssh_key::PublicKey::from_openssh(line.trim())
        .ok()
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
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
        assert!(key.private_openssh().contains(concat!("BEGIN OPENSSH ", "PRIVATE KEY")));
    }

    #[test]
    fn generated_keys_round_trip_and_derive() {
        let key = HostKey::generate("root@test");
        let again = HostKey::from_openssh(&key.private_openssh(), Path::new("mem")).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        let public = PublicHostKey::parse(&key.public_openssh()).unwrap();
        assert!(public.same_key(&again.public()));
        assert_eq!(public.age_recipient(), key.age_recipient());
        assert_eq!(
            crate::age::parse_identity(&key.age_identity()).unwrap().to_public().to_string(),
            key.age_recipient()
        );
        assert!(key.public_openssh().ends_with(" root@test"));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = HostKey::from_openssh("not a key", Path::new("k")).err().unwrap().to_string();
        assert!(err.contains("not an OpenSSH private key"), "{err}");
    }
}
