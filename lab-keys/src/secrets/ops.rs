//! The key commands as library calls: new, show, rotate (one host or every
//! lab-held one, recording the key the host still runs for `keys push`),
//! recording an enrolled host's key, and the injection material the image
//! builder and the installer place at `/etc/ssh/ssh_host_ed25519_key`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::store::{decrypt_host_key, encrypt_host_key};
use super::sync::{sync, SyncOptions, SyncReport};
use super::{
    age_recipient_path, encrypted_key_path, fsutil, previous_key_path, public_key_path,
    AdminIdentity, Error, LabKeys, Result,
};
use crate::{HostKey, PublicHostKey};
use lab_facts::Lab;

/// What `keys show` prints: public material only.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub host: String,
    pub public_key: String,
    pub fingerprint: String,
    pub age_recipient: String,
    /// The encrypted private key, when the lab holds one (not for enrolled hosts).
    pub encrypted_key: Option<PathBuf>,
}

impl KeyInfo {
    fn of(root: &Path, host: &str, key: &PublicHostKey) -> KeyInfo {
        let enc = encrypted_key_path(root, host);
        KeyInfo {
            host: host.to_string(),
            public_key: key.openssh(),
            fingerprint: key.fingerprint(),
            age_recipient: key.age_recipient(),
            encrypted_key: enc.is_file().then_some(enc),
        }
    }
}

/// `keys show HOST`.
pub fn show(root: &Path, keys: &LabKeys, host: &str) -> Result<KeyInfo> {
    let h = keys.host(host)?;
    let key = h.key.as_ref().ok_or_else(|| Error::HostWithoutKey {
        host: host.to_string(),
        file: format!("hosts/{host}/{}", super::PUBLIC_KEY_FILE),
    })?;
    Ok(KeyInfo::of(root, host, key))
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    pub key: KeyInfo,
    /// False when the host already had this key (re-run after success).
    pub created: bool,
}

/// `keys new HOST`: a fresh key, its private half encrypted to the admins and
/// the recovery key (0600, atomic), then the public files the facts read. Re-running after a
/// crash between the two writes finishes the job (needs the admin identity).
pub fn new_key(
    root: &Path,
    keys: &LabKeys,
    host: &str,
    identity: Option<&AdminIdentity>,
) -> Result<NewKey> {
    let h = keys.host(host)?;
    let admins = keys.admin_recipients()?;
    let enc_path = encrypted_key_path(root, host);
    match (&h.key, enc_path.is_file()) {
        (Some(key), true) => {
            return Ok(NewKey { key: KeyInfo::of(root, host, key), created: false })
        }
        (Some(key), false) => {
            return Err(Error::AlreadyHasKey {
                host: host.to_string(),
                fingerprint: key.fingerprint(),
            });
        }
        (None, true) => {
            // Resume: the private key was stored, the public files were not.
            let identity = identity.ok_or_else(|| Error::NoAdminIdentity {
                tried: format!("{} exists without its public key; decrypting it to finish needs the admin identity", enc_path.display()),
            })?;
            let bytes = std::fs::read(&enc_path).map_err(Error::io(&enc_path))?;
            let key = decrypt_host_key(&bytes, identity, &enc_path, host)?;
            write_public(root, host, &key.public())?;
            return Ok(NewKey { key: KeyInfo::of(root, host, &key.public()), created: true });
        }
        (None, false) => {}
    }
    let key = HostKey::generate(&format!("root@{host}"));
    fsutil::atomic_write(&enc_path, &encrypt_host_key(&key, &admins)?, 0o600)?;
    write_public(root, host, &key.public())?;
    Ok(NewKey { key: KeyInfo::of(root, host, &key.public()), created: true })
}

fn write_public(root: &Path, host: &str, key: &PublicHostKey) -> Result<()> {
    fsutil::atomic_write(
        &public_key_path(root, host),
        format!("{}\n", key.openssh()).as_bytes(),
        0o644,
    )?;
    fsutil::atomic_write(
        &age_recipient_path(root, host),
        format!("{}\n", key.age_recipient()).as_bytes(),
        0o644,
    )
}

/// The per-host key files (the private key, the public files the facts read,
/// and the key the host still runs) as they were, to put back if a later
/// step fails.
pub struct KeyFilesBackup {
    files: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
}

impl KeyFilesBackup {
    pub fn take(root: &Path, host: &str) -> Result<KeyFilesBackup> {
        let mut files = Vec::new();
        for (path, mode) in [
            (encrypted_key_path(root, host), 0o600),
            (public_key_path(root, host), 0o644),
            (age_recipient_path(root, host), 0o644),
            // Last: restore() puts it back only once the others are.
            (previous_key_path(root, host), 0o644),
        ] {
            let bytes = fsutil::read_optional(&path)?;
            files.push((path, bytes, mode));
        }
        Ok(KeyFilesBackup { files })
    }

    /// Puts every file back, going on past one that fails (each put back
    /// is one less to fix by hand); the first failure is returned. The
    /// record of the key the host still runs goes last, and only when the
    /// others are back: while the new key is still in the facts, it is what
    /// says which key reaches the host.
    pub fn restore(&self) -> Result<()> {
        let mut first = None;
        for (i, (path, bytes, mode)) in self.files.iter().enumerate() {
            if i == self.files.len() - 1 && first.is_some() {
                break;
            }
            let put = match bytes {
                Some(b) => fsutil::atomic_write(path, b, *mode),
                None => fsutil::remove_if_exists(path),
            };
            first = first.or(put.err());
        }
        first.map_or(Ok(()), Err)
    }
}

/// Puts each host's files back after a failed rotation, every host even
/// when one fails; `failure` (why the rotation stopped) comes back, with
/// the hosts whose files could not be put back when there are any.
fn restore_all(backups: &[(&str, KeyFilesBackup)], failure: Error) -> Error {
    let mut failed = Vec::new();
    let mut first = None;
    for (host, backup) in backups {
        if let Err(e) = backup.restore() {
            failed.push(host.to_string());
            first = first.or(Some(e));
        }
    }
    match first {
        None => failure,
        Some(restore) => Error::RotateAndRestore {
            hosts: failed.join(", "),
            failure: Box::new(failure),
            restore: Box::new(restore),
        },
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    pub old: KeyInfo,
    pub new: KeyInfo,
    /// The key the host still runs (see [`HostRotation::running`]).
    pub running: Running,
    pub sync: SyncReport,
}

/// One host of a [`RotatedAll`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRotation {
    pub old: KeyInfo,
    pub new: KeyInfo,
    /// The key the running host still presents, recorded for `keys push`.
    pub running: Running,
}

/// The key a rotated host still runs, as `hosts/<host>/ssh_host_ed25519_key.pub.previous`
/// records it until `labprov keys push HOST` puts the new key on the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Running {
    pub fingerprint: String,
    pub file: PathBuf,
    /// An earlier rotation was never pushed: the host still runs that
    /// older key, and the file keeps it.
    pub kept_earlier: bool,
}

/// The key the running host still has after a rotation that was not pushed
/// yet (`hosts/<host>/ssh_host_ed25519_key.pub.previous`), if any.
pub fn previous_key(root: &Path, host: &str) -> Result<Option<PublicHostKey>> {
    super::check_name("host", host)?;
    let path = previous_key_path(root, host);
    let Some(bytes) = fsutil::read_optional(&path)? else { return Ok(None) };
    let key = PublicHostKey::parse(String::from_utf8_lossy(&bytes).trim()).map_err(|source| {
        Error::BadPreviousKey { path: path.clone(), host: host.to_string(), source }
    })?;
    Ok(Some(key))
}

/// Forgets the previous key: the host runs the recorded one now.
pub fn forget_previous_key(root: &Path, host: &str) -> Result<()> {
    super::check_name("host", host)?;
    fsutil::remove_if_exists(&previous_key_path(root, host))
}

/// What [`record_previous`] does: keep an older record, or record `old`.
fn running_after_rotation(root: &Path, host: &str, old: &KeyInfo) -> Result<Running> {
    let file = previous_key_path(root, host);
    Ok(match previous_key(root, host)? {
        Some(earlier) => Running { fingerprint: earlier.fingerprint(), file, kept_earlier: true },
        None => Running { fingerprint: old.fingerprint.clone(), file, kept_earlier: false },
    })
}

/// Records the key the host runs before its new key is written: the old
/// key, unless an earlier rotation that was never pushed recorded an older
/// one (the host still runs that).
fn record_previous(root: &Path, host: &str, old: &KeyInfo) -> Result<Running> {
    let running = running_after_rotation(root, host, old)?;
    if !running.kept_earlier {
        fsutil::atomic_write(&running.file, format!("{}\n", old.public_key).as_bytes(), 0o644)?;
    }
    Ok(running)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotatedAll {
    pub hosts: Vec<HostRotation>,
    pub sync: SyncReport,
}

/// `keys rotate HOST`: a new key replaces the old one, then every secrets file
/// is re-encrypted (the old recipient removed, the data key replaced). If the
/// sync fails, the old key files are put back and no secrets file changed.
pub fn rotate(lab: &Lab, host: &str, opts: &SyncOptions) -> Result<Rotated> {
    let mut all = rotate_hosts(lab, &[host.to_string()], opts)?;
    let h = all.hosts.pop().expect("one host was rotated");
    Ok(Rotated { old: h.old, new: h.new, running: h.running, sync: all.sync })
}

/// The hosts whose private key the lab holds (`secrets/host-keys/<host>.age`);
/// an enrolled host's key lives only on the host.
pub fn lab_held_hosts(root: &Path, keys: &LabKeys) -> Vec<String> {
    keys.hosts
        .iter()
        .filter(|(name, h)| h.key.is_some() && encrypted_key_path(root, name).is_file())
        .map(|(name, _)| name.clone())
        .collect()
}

/// `keys rotate --all`: every lab-held host key replaced and encrypted to
/// the current admin-level recipients, then one sync. The lost-laptop
/// procedure: a lost admin identity could decrypt every old host key (git
/// keeps them), so re-encrypting alone would not do. All or nothing: if the
/// sync fails, every host's old key files are put back.
pub fn rotate_all(lab: &Lab, opts: &SyncOptions) -> Result<RotatedAll> {
    let keys = LabKeys::load(lab)?;
    rotate_hosts(lab, &lab_held_hosts(&lab.root, &keys), opts)
}

fn rotate_hosts(lab: &Lab, hosts: &[String], opts: &SyncOptions) -> Result<RotatedAll> {
    let keys = LabKeys::load(lab)?;
    let admins = keys.admin_recipients()?;
    let mut plan = Vec::new();
    for host in hosts {
        let old = show(&lab.root, &keys, host)?;
        plan.push((host.as_str(), old, HostKey::generate(&format!("root@{host}"))));
    }
    if opts.dry_run {
        // Nothing is written, not even for a moment: the new keys exist only
        // in memory and the sync runs on copies outside the lab.
        let mut planned = keys.clone();
        let mut out = Vec::new();
        for (host, old, key) in plan {
            planned.hosts.entry(host.to_string()).or_default().key = Some(key.public());
            let mut new = KeyInfo::of(&lab.root, host, &key.public());
            new.encrypted_key = Some(encrypted_key_path(&lab.root, host));
            let running = running_after_rotation(&lab.root, host, &old)?;
            out.push(HostRotation { old, new, running });
        }
        let report = sync(&lab.root, &planned, opts)?;
        return Ok(RotatedAll { hosts: out, sync: report });
    }
    let backups = hosts
        .iter()
        .map(|h| Ok((h.as_str(), KeyFilesBackup::take(&lab.root, h)?)))
        .collect::<Result<Vec<_>>>()?;
    let result = (|| {
        let mut running = Vec::new();
        for (host, old, key) in &plan {
            // First, so a crash after it leaves the lab saying which key the
            // host still runs.
            running.push(record_previous(&lab.root, host, old)?);
            fsutil::atomic_write(
                &encrypted_key_path(&lab.root, host),
                &encrypt_host_key(key, &admins)?,
                0o600,
            )?;
            write_public(&lab.root, host, &key.public())?;
        }
        let keys = LabKeys::load(lab)?;
        let mut out = Vec::new();
        for ((host, old, key), running) in plan.iter().zip(running) {
            let new = show(&lab.root, &keys, host)?;
            if new.fingerprint != key.fingerprint() {
                // The facts did not pick up the file we wrote: facts.nix must read
                // hosts/<host>/ssh_host_ed25519_key.pub.
                return Err(Error::HostWithoutKey {
                    host: host.to_string(),
                    file: public_key_path(&lab.root, host).display().to_string(),
                });
            }
            out.push(HostRotation { old: old.clone(), new, running });
        }
        let report = sync(&lab.root, &keys, opts)?;
        Ok(RotatedAll { hosts: out, sync: report })
    })();
    result.map_err(|failure| restore_all(&backups, failure))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recorded {
    /// The facts already held this key.
    Unchanged,
    /// The host had no key.
    Recorded,
    /// A different key was replaced (`replace` was given).
    Replaced,
}

/// Records a host's public key (enrolment: the host made its own key, so the
/// lab stores no private half; a stale encrypted one is removed).
pub fn record_public_key(
    root: &Path,
    keys: &LabKeys,
    host: &str,
    key: &PublicHostKey,
    replace: bool,
) -> Result<Recorded> {
    let h = keys.host(host)?;
    let outcome = match &h.key {
        Some(old) if old.same_key(key) => Recorded::Unchanged,
        Some(old) if !replace => {
            return Err(Error::AlreadyHasKey {
                host: host.to_string(),
                fingerprint: old.fingerprint(),
            });
        }
        Some(_) => Recorded::Replaced,
        None => Recorded::Recorded,
    };
    if outcome != Recorded::Unchanged {
        write_public(root, host, key)?;
        fsutil::remove_if_exists(&encrypted_key_path(root, host))?;
    } else if !age_recipient_path(root, host).is_file() {
        write_public(root, host, key)?;
    }
    Ok(outcome)
}

/// The host's private key for injection, decrypted with the admin identity
/// (`SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, `SOPS_AGE_KEY_CMD`,
/// `~/.config/sops/age/keys.txt`, the first that is set).
pub fn injection_material(lab: &Lab, host: &str) -> Result<HostKey> {
    injection_material_with(&lab.root, host, &AdminIdentity::from_env()?)
}

/// [`injection_material`] with an explicit identity. The decrypted key must be
/// the one the facts record, so an image never carries a key sops-nix's
/// recipients do not match.
pub fn injection_material_with(
    root: &Path,
    host: &str,
    identity: &AdminIdentity,
) -> Result<HostKey> {
    super::check_name("host", host)?;
    let enc_path = encrypted_key_path(root, host);
    let pub_path = public_key_path(root, host);
    let recorded = fsutil::read_optional(&pub_path)?;
    let Some(bytes) = fsutil::read_optional(&enc_path)? else {
        let hint = if recorded.is_some() {
            format!(
                ": the host was enrolled and its key lives only on the host. \
                 Boot it without injection, or make a lab-held key with `labprov keys rotate {host}`"
            )
        } else {
            format!(": run `labprov keys new {host}` first")
        };
        return Err(Error::NoPrivateKey { host: host.to_string(), path: enc_path, hint });
    };
    let key = decrypt_host_key(&bytes, identity, &enc_path, host)?;
    if let Some(line) = recorded {
        let line = String::from_utf8_lossy(&line);
        let public = PublicHostKey::parse(&line)
            .map_err(|source| Error::HostKeyFact { host: host.to_string(), source })?;
        if !public.same_key(&key.public()) {
            return Err(Error::KeyMismatch {
                path: enc_path,
                public: pub_path,
                host: host.to_string(),
                found: key.fingerprint(),
                recorded: public.fingerprint(),
            });
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(root: &Path, host: &str) -> (KeyInfo, PublicHostKey) {
        let key = HostKey::generate(&format!("root@{host}")).public();
        (KeyInfo::of(root, host, &key), key)
    }

    #[test]
    fn a_rotation_records_the_running_key_and_keeps_an_unpushed_older_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert!(previous_key(root, "pi").unwrap().is_none());
        let (first, first_key) = info(root, "pi");
        let running = record_previous(root, "pi", &first).unwrap();
        assert!(!running.kept_earlier);
        assert_eq!(running.fingerprint, first.fingerprint);
        let path = previous_key_path(root, "pi");
        assert_eq!(running.file, path);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert!(previous_key(root, "pi").unwrap().unwrap().same_key(&first_key));
        // Rotated again before a push: the host still runs the first key.
        let (second, _) = info(root, "pi");
        let running = record_previous(root, "pi", &second).unwrap();
        assert!(running.kept_earlier);
        assert_eq!(running.fingerprint, first.fingerprint);
        assert!(previous_key(root, "pi").unwrap().unwrap().same_key(&first_key));
        forget_previous_key(root, "pi").unwrap();
        forget_previous_key(root, "pi").unwrap();
        assert!(previous_key(root, "pi").unwrap().is_none());
    }

    #[test]
    fn the_backup_puts_the_previous_key_record_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (old, _) = info(root, "pi");
        // No record before: restoring removes the one a failed rotate wrote.
        let backup = KeyFilesBackup::take(root, "pi").unwrap();
        record_previous(root, "pi", &old).unwrap();
        backup.restore().unwrap();
        assert!(!previous_key_path(root, "pi").exists());
        // An older record before: restoring puts those bytes back.
        fsutil::atomic_write(&previous_key_path(root, "pi"), b"older\n", 0o644).unwrap();
        let backup = KeyFilesBackup::take(root, "pi").unwrap();
        fsutil::atomic_write(&previous_key_path(root, "pi"), b"other\n", 0o644).unwrap();
        backup.restore().unwrap();
        assert_eq!(std::fs::read(previous_key_path(root, "pi")).unwrap(), b"older\n");
    }

    #[test]
    fn a_failed_restore_of_one_host_still_puts_the_others_back_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for host in ["a", "b"] {
            fsutil::atomic_write(&public_key_path(root, host), b"old\n", 0o644).unwrap();
        }
        let backups = ["a", "b"]
            .map(|h| (h, KeyFilesBackup::take(root, h).unwrap()))
            .into_iter()
            .collect::<Vec<_>>();
        for host in ["a", "b"] {
            fsutil::atomic_write(&public_key_path(root, host), b"new\n", 0o644).unwrap();
            record_previous(root, host, &info(root, host).0).unwrap();
        }
        // a's public key file cannot be replaced: a directory with an entry
        // is in its place (a rename onto it fails, also for root).
        let blocked = public_key_path(root, "a");
        std::fs::remove_file(&blocked).unwrap();
        std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
        let err = restore_all(&backups, Error::Encrypt("the rotation's failure".into()));
        let text = err.to_string();
        assert!(matches!(err, Error::RotateAndRestore { ref hosts, .. } if hosts == "a"), "{text}");
        assert!(text.starts_with("age encryption failed: the rotation's failure"), "{text}");
        assert!(text.contains("failed too for a (any other host's were put back)"), "{text}");
        // b is back; a's record of the key it runs stays, its public key
        // file not being back (the facts still name the new key).
        assert_eq!(std::fs::read(public_key_path(root, "b")).unwrap(), b"old\n");
        assert!(!previous_key_path(root, "b").exists());
        assert!(previous_key_path(root, "a").exists());
        // Nothing to put back wrong: the rotation's own failure, as it was.
        let backups = vec![("b", KeyFilesBackup::take(root, "b").unwrap())];
        let err = restore_all(&backups, Error::Encrypt("x".into()));
        assert!(matches!(err, Error::Encrypt(_)), "{err}");
    }

    #[test]
    fn a_damaged_record_is_named_with_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fsutil::atomic_write(&previous_key_path(root, "pi"), b"not a key\n", 0o644).unwrap();
        let err = previous_key(root, "pi").unwrap_err().to_string();
        assert!(err.contains("ssh_host_ed25519_key.pub.previous"), "{err}");
        assert!(err.contains("restore it from git"), "{err}");
        let (old, _) = info(root, "pi");
        assert!(record_previous(root, "pi", &old).is_err(), "a damaged record is overwritten");
        assert!(previous_key(root, "../x").is_err());
    }
}
