//! ssh-to-age: the age X25519 recipient and identity of an ed25519 SSH key,
//! byte for byte what `ssh-to-age` (and so sops-nix on a host) derives.
//!
//! Public: the ed25519 point converted to its Montgomery u-coordinate, bech32
//! with HRP `age`. Private: the first 32 bytes of SHA-512(seed), bech32 with
//! HRP `age-secret-key-`, upper-cased. Like ssh-to-age we do not clamp the
//! scalar in the encoding (X25519 clamps on use), so our identity strings are
//! identical to ssh-to-age's, while libsodium's `sk_to_curve25519` returns the
//! clamped form of the same scalar.

use std::str::FromStr;

use bech32::{Bech32, Hrp};
use curve25519_dalek::edwards::CompressedEdwardsY;
use sha2::{Digest, Sha512};
use ssh_key::{PrivateKey, PublicKey};
use zeroize::{Zeroize, Zeroizing};

const RECIPIENT_HRP: &str = "age";
const IDENTITY_HRP: &str = "age-secret-key-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not an ed25519 key; only ed25519 SSH keys convert to age keys (ssh-to-age has the same limit)")]
    NotEd25519(String),
    #[error("the ed25519 public key is not a valid curve point, so it has no age recipient")]
    InvalidPoint,
    #[error("not an OpenSSH public key line (`ssh-ed25519 AAAA... comment`): {0}")]
    PublicLine(ssh_key::Error),
    #[error("`{0}` is not an age X25519 recipient (age1...): {1}")]
    Recipient(String, String),
    #[error("not an age identity (expected the upper-cased bech32 line age-keygen writes)")]
    Identity,
    #[error("internal: the derived age identity does not match the derived recipient; please report this")]
    SelfCheck,
}

/// The age recipient (`age1...`) of an ed25519 public key.
pub fn recipient_from_public(key: &PublicKey) -> Result<String, Error> {
    let ed =
        key.key_data().ed25519().ok_or_else(|| Error::NotEd25519(key.algorithm().to_string()))?;
    let point = CompressedEdwardsY(ed.0).decompress().ok_or(Error::InvalidPoint)?;
    let u = point.to_montgomery().to_bytes();
    Ok(bech32::encode::<Bech32>(Hrp::parse_unchecked(RECIPIENT_HRP), &u)
        .expect("32 bytes fit a bech32 string"))
}

/// The age recipient of a `ssh-ed25519 AAAA... comment` line.
pub fn recipient_from_openssh_line(line: &str) -> Result<String, Error> {
    let key = PublicKey::from_openssh(line.trim()).map_err(Error::PublicLine)?;
    recipient_from_public(&key)
}

/// The age identity (HRP `age-secret-key-`, upper-cased) of an ed25519 private key, in a
/// zeroizing buffer. Checked against the public half before it is returned.
pub fn identity_from_private(key: &PrivateKey) -> Result<Zeroizing<String>, Error> {
    let pair =
        key.key_data().ed25519().ok_or_else(|| Error::NotEd25519(key.algorithm().to_string()))?;
    let mut seed = Zeroizing::new(pair.private.to_bytes());
    let mut digest = Sha512::digest(seed.as_slice());
    seed.zeroize();
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&digest[..32]);
    digest.as_mut_slice().zeroize();
    let lower = Zeroizing::new(
        bech32::encode::<Bech32>(Hrp::parse_unchecked(IDENTITY_HRP), scalar.as_slice())
            .expect("32 bytes fit a bech32 string"),
    );
    let identity = Zeroizing::new(lower.to_uppercase());
    // FACTS self-check: X25519(clamped scalar, 9) must be the converted public key.
    let recipient = recipient_from_public(key.public_key())?;
    if parse_identity(&identity)?.to_public().to_string() != recipient {
        return Err(Error::SelfCheck);
    }
    Ok(identity)
}

/// An age identity string (the upper-cased `age-secret-key-` bech32) as an age identity.
pub fn parse_identity(text: &str) -> Result<age::x25519::Identity, Error> {
    // The age crate's error message would not leak the key, but keep ours
    // generic anyway: this string is a secret.
    age::x25519::Identity::from_str(text.trim()).map_err(|_| Error::Identity)
}

/// An `age1...` string as an age X25519 recipient.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, Error> {
    age::x25519::Recipient::from_str(text.trim())
        .map_err(|e| Error::Recipient(text.trim().to_string(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::Algorithm;

    #[test]
    fn identity_and_recipient_agree_for_random_keys() {
        for _ in 0..64 {
            let key =
                PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
            let recipient = recipient_from_public(key.public_key()).unwrap();
            let identity = identity_from_private(&key).unwrap();
            assert!(recipient.starts_with("age1") && recipient.len() == 62, "{recipient}");
            assert!(
                identity.starts_with(&format!("{}1", IDENTITY_HRP.to_uppercase()))
                    && identity.len() == 74
            );
            assert_eq!(parse_identity(&identity).unwrap().to_public().to_string(), recipient);
            assert_eq!(parse_recipient(&recipient).unwrap().to_string(), recipient);
        }
    }

    /// A fixed vector from the RFC 8032 test key 1 (public only, no secret):
    /// the Montgomery form computed by libsodium's crypto_sign_ed25519_pk_to_curve25519.
    #[test]
    fn known_public_vector() {
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea";
        let r = recipient_from_openssh_line(line).unwrap();
        // Cross-checked with PyNaCl when this test was written.
        assert_eq!(r, KNOWN_RECIPIENT);
    }
    const KNOWN_RECIPIENT: &str = "age1mp0q0mpzkzkcs9fhct6y6e3drg2re7psc4av5sc9mpw84y8kkchq6r9kjp";

    #[test]
    fn rsa_is_refused() {
        let err =
            recipient_from_openssh_line("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 x").unwrap_err();
        assert!(matches!(err, Error::PublicLine(_) | Error::NotEd25519(_)), "{err}");
    }
}
