//! Reading a key file for `labprov keys derive` (like ssh-to-age). Host keys
//! themselves and the secrets they open are in `lab_keys`.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use lab_keys::Zeroizing;
use lab_keys::{age as ssh_age, HostKey, PublicHostKey};
use serde::Serialize;

/// What `keys derive` found: a public key gives a recipient; a private key
/// gives the identity as well.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Derived {
    pub kind: &'static str,
    pub fingerprint: String,
    pub age_recipient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_identity: Option<String>,
}

/// `keys derive --ssh-key PATH` (`-` reads stdin), like ssh-to-age: an ed25519
/// public key line or an unencrypted OpenSSH private key.
pub fn derive(path: &Path) -> Result<Derived> {
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).context("read the key from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("read {}", path.display()))?;
    }
    if text.contains(concat!("BEGIN OPENSSH ", "PRIVATE KEY")) {
        let key = HostKey::from_openssh(&text, path)?;
        return Ok(Derived {
            kind: "private",
            fingerprint: key.fingerprint(),
            age_recipient: key.age_recipient(),
            age_identity: Some(key.age_identity().to_string()),
        });
    }
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        bail!(
            "{} is empty; expected an ed25519 public key line or an OpenSSH private key",
            path.display()
        );
    };
    let key = PublicHostKey::parse(line).with_context(|| format!("{}", path.display()))?;
    ssh_age::recipient_from_openssh_line(line)?;
    Ok(Derived {
        kind: "public",
        fingerprint: key.fingerprint(),
        age_recipient: key.age_recipient(),
        age_identity: None,
    })
}
