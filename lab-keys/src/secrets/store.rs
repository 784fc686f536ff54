//! Host private keys at rest: age-encrypted (ASCII armour) with the `age`
//! crate to the admin-level recipients (every admin's age recipient and the
//! recovery key's); decrypted only into zeroizing memory.

use std::io::{Read, Write};
use std::path::Path;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use super::{AdminIdentity, Error, Result};
use crate::HostKey;

/// The host key's OpenSSH private text, encrypted to every recipient.
pub fn encrypt_host_key(key: &HostKey, recipients: &[String]) -> Result<Vec<u8>> {
    let parsed = recipients
        .iter()
        .map(|r| crate::age::parse_recipient(r).map_err(|e| Error::Encrypt(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Encrypt(e.to_string()))?;
    let io = |e: std::io::Error| Error::Encrypt(e.to_string());
    let armored = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor).map_err(io)?;
    let mut writer = encryptor.wrap_output(armored).map_err(io)?;
    writer.write_all(key.private_openssh().as_bytes()).map_err(io)?;
    writer.finish().and_then(|armored| armored.finish()).map_err(io)
}

/// Decrypts an encrypted host key read from `path` (named in errors only).
pub fn decrypt_host_key(
    bytes: &[u8],
    identity: &AdminIdentity,
    path: &Path,
    host: &str,
) -> Result<HostKey> {
    let identities = identity.load()?;
    let corrupt = |reason: String| Error::CorruptKey {
        path: path.to_path_buf(),
        host: host.to_string(),
        reason,
    };
    let decryptor =
        age::Decryptor::new(ArmoredReader::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::NotForUs {
                path: path.to_path_buf(),
                identity: identity.describe(),
                recipients: identity.recipients().unwrap_or_default().join(", "),
            },
            other => corrupt(other.to_string()),
        })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plain).map_err(|e| corrupt(e.to_string()))?;
    let text = std::str::from_utf8(&plain)
        .map_err(|_| corrupt("the plaintext is not an OpenSSH key".into()))?;
    HostKey::from_openssh(text, path).map_err(|e| corrupt(e.to_string()))
}
