//! `labprov enrol HOST --address ADDR`: a host that made its own key at first
//! boot (hosts/_modules/nixos/enrolment.nix) is pinned, recorded and synced.
//!
//! 1. `ssh-keyscan` offers a candidate ed25519 key; it is only a candidate.
//! 2. The operator confirms its fingerprint: `--fingerprint` (from the
//!    console), `--report` (the enrolment.txt the host wrote to its firmware
//!    partition) or typing `yes` at a prompt. Anything else is refused.
//! 3. ssh logs in with host key checking on, against a temporary known_hosts
//!    holding exactly the confirmed key, and reads the host's key file: the
//!    host proves it holds the key, and that sops-nix's key is the one sshd
//!    serves.
//! 4. The public key and its age recipient are recorded beside the host's
//!    facts and `secrets sync` runs; if the sync fails the record is undone.

use std::path::{Path, PathBuf};

use lab_facts::Lab;
use lab_keys::secrets::{ops, sync, AdminIdentity, LabKeys, LabLock, SyncOptions, SyncReport};
use lab_keys::PublicHostKey;
use serde::Serialize;

use crate::ssh::{quote, Pinned, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Secrets(#[from] lab_keys::secrets::Error),
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
    #[error(
        "{failure}; putting {host}'s key files back failed too: {restore}. Check hosts/{host}/ \
         (git diff) before anything else"
    )]
    Restore { host: String, failure: Box<Error>, restore: Box<lab_keys::secrets::Error> },
    #[error("{address} port {port} offered no ed25519 host key ({detail}); is the host up with sshd running?")]
    NoKey { address: String, port: u16, detail: String },
    #[error(
        "{address} offered several different ed25519 keys; refusing to guess which is the host's"
    )]
    SeveralKeys { address: String },
    #[error(
        "REFUSED: {address} presents {got}, but the expected fingerprint is {expected}. Do not enrol: \
         check the address and the fingerprint on the host's console (something may be \
         intercepting the connection)"
    )]
    FingerprintMismatch { address: String, expected: String, got: String },
    #[error("`{given}` is not a fingerprint; expected SHA256:... as `ssh-keygen -l` prints it")]
    BadFingerprint { given: String },
    #[error("{path}: {reason}")]
    Report { path: PathBuf, reason: String },
    #[error("the report {path} is for host `{found}`, not `{host}`")]
    ReportHost { path: PathBuf, found: String, host: String },
    #[error("the report's age recipient {reported} is not the one derived from the key ({derived}); refusing")]
    ReportAge { reported: String, derived: String },
    #[error("the fingerprint was not confirmed; nothing recorded")]
    NotConfirmed,
    #[error(
        "no terminal to confirm the fingerprint: pass --fingerprint SHA256:... (shown on the host's \
         console) or --report enrolment.txt (from its firmware partition)"
    )]
    NoTerminal,
    #[error("pinned ssh to {user}@{address} failed (host key checking on, only the confirmed key trusted):\n{stderr}")]
    Ssh { user: String, address: String, stderr: String },
    #[error("{address}:{path} holds {found}, not the key sshd presented ({expected}); refusing")]
    RemoteKeyMismatch { address: String, path: String, found: String, expected: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl lab_cli::Classify for Error {
    fn class(&self) -> lab_cli::Class {
        use lab_cli::Class;
        match self {
            Error::FingerprintMismatch { .. } | Error::NotConfirmed | Error::NoTerminal => {
                Class::Refused
            }
            Error::RemoteKeyMismatch { .. }
            | Error::ReportAge { .. }
            | Error::ReportHost { .. } => Class::Mismatch,
            Error::BadFingerprint { .. } => Class::Usage,
            _ => Class::Failure,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnrolOptions {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `ssh -i` for the login (else ssh's defaults and agent).
    pub ssh_identity: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub report: Option<PathBuf>,
    /// The public key file read on the host (sops-nix's key).
    pub remote_key: String,
    /// Replace a different key already recorded for the host.
    pub replace: bool,
    /// Verify and show, record nothing.
    pub dry_run: bool,
}

impl EnrolOptions {
    pub fn new(host: &str, address: &str) -> EnrolOptions {
        EnrolOptions {
            host: host.to_string(),
            address: address.to_string(),
            port: 22,
            user: "root".into(),
            ssh_identity: None,
            fingerprint: None,
            report: None,
            remote_key: format!("{}.pub", lab_keys::HOST_KEY_PATH),
            replace: false,
            dry_run: false,
        }
    }
}

/// What the operator is asked to confirm.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub host: String,
    pub address: String,
    pub public_key: String,
    pub fingerprint: String,
    pub age_recipient: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolled {
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `None` for a dry run.
    pub recorded: Option<ops::Recorded>,
    pub sync: Option<SyncReport>,
}

/// The first-boot report (enrolment.txt): `host:`, `fingerprint:` (the
/// `ssh-keygen -l` line), `age:`, `public key:`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub host: Option<String>,
    pub fingerprint: Option<String>,
    pub age: Option<String>,
    pub public_key: Option<String>,
}

pub fn parse_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Report { path: path.into(), reason: e.to_string() })?;
    let mut r = Report::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "host" => r.host = Some(v),
            "fingerprint" => {
                r.fingerprint =
                    v.split_whitespace().find(|t| t.starts_with("SHA256:")).map(str::to_string)
            }
            "age" => r.age = Some(v),
            "public key" => r.public_key = Some(v),
            _ => {}
        }
    }
    if r.fingerprint.is_none() {
        return Err(Error::Report {
            path: path.into(),
            reason: "no `fingerprint: ... SHA256:...` line; is this the host's enrolment.txt?"
                .into(),
        });
    }
    Ok(r)
}

/// `SHA256:` and 43 base64 characters, as `ssh-keygen -l` prints it.
pub fn check_fingerprint(fp: &str) -> Result<String> {
    let fp = fp.trim();
    let ok = fp.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43 && b.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    });
    if ok {
        Ok(fp.to_string())
    } else {
        Err(Error::BadFingerprint { given: fp.to_string() })
    }
}

/// The ed25519 key `ssh-keyscan` sees at the address: a candidate only.
pub fn keyscan(address: &str, port: u16) -> Result<PublicHostKey> {
    // Its exit status says nothing useful (1 when one of several types is
    // missing); what it printed decides.
    let out = lab_cli::Cmd::new("ssh-keyscan")
        .args(["-T", "10", "-t", "ed25519", "-p", &port.to_string(), address])
        .probe()?;
    let mut keys: Vec<PublicHostKey> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let rest: Vec<&str> = line.split_whitespace().skip(1).collect();
        if let Ok(k) = PublicHostKey::parse(&rest.join(" ")) {
            if !keys.iter().any(|x| x.same_key(&k)) {
                keys.push(k);
            }
        }
    }
    match keys.len() {
        0 => Err(Error::NoKey {
            address: address.into(),
            port,
            detail: Some(
                out.stderr.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("; "),
            )
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| "nothing answered".into()),
        }),
        1 => Ok(keys.remove(0)),
        _ => Err(Error::SeveralKeys { address: address.into() }),
    }
}

/// Logs in trusting exactly `key` and returns the host's key file: the host
/// proves it holds the key, and that sops-nix's key is the one sshd serves.
pub fn pinned_read_key(opts: &EnrolOptions, key: &PublicHostKey) -> Result<PublicHostKey> {
    let target = Target {
        address: opts.address.clone(),
        port: opts.port,
        user: opts.user.clone(),
        identity: opts.ssh_identity.clone(),
    };
    let pinned = Pinned::new(&target, &format!("labprov-enrol-{}", opts.host), key)?;
    let out = pinned.run(&format!("cat {}", quote(&opts.remote_key)), None)?;
    if !out.success() {
        return Err(Error::Ssh {
            user: opts.user.clone(),
            address: opts.address.clone(),
            stderr: out.stderr.trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let found = PublicHostKey::parse(text.trim()).map_err(|e| Error::RemoteKeyMismatch {
        address: opts.address.clone(),
        path: opts.remote_key.clone(),
        found: e.to_string(),
        expected: key.fingerprint(),
    })?;
    if !found.same_key(key) {
        return Err(Error::RemoteKeyMismatch {
            address: opts.address.clone(),
            path: opts.remote_key.clone(),
            found: found.fingerprint(),
            expected: key.fingerprint(),
        });
    }
    Ok(found)
}

/// The whole enrolment. `confirm` is asked only when neither `--fingerprint`
/// nor `--report` gives the expected fingerprint.
pub fn enrol(
    lab: &Lab,
    opts: &EnrolOptions,
    identity: &AdminIdentity,
    confirm: &mut dyn FnMut(&Candidate) -> Result<bool>,
) -> Result<Enrolled> {
    let keys = LabKeys::load(lab)?;
    keys.host(&opts.host)?;
    keys.admin_recipients()?;

    let report = opts.report.as_deref().map(parse_report).transpose()?;
    if let (Some(r), Some(path)) = (&report, &opts.report) {
        if let Some(found) = r.host.as_ref().filter(|h| **h != opts.host) {
            return Err(Error::ReportHost {
                path: path.clone(),
                found: found.clone(),
                host: opts.host.clone(),
            });
        }
    }
    let mut expected: Vec<String> = Vec::new();
    if let Some(fp) = &opts.fingerprint {
        expected.push(check_fingerprint(fp)?);
    }
    if let Some(fp) = report.as_ref().and_then(|r| r.fingerprint.clone()) {
        expected.push(check_fingerprint(&fp)?);
    }

    let key = keyscan(&opts.address, opts.port)?;
    let candidate = Candidate {
        host: opts.host.clone(),
        address: opts.address.clone(),
        public_key: key.openssh(),
        fingerprint: key.fingerprint(),
        age_recipient: key.age_recipient(),
    };
    for fp in &expected {
        if *fp != candidate.fingerprint {
            return Err(Error::FingerprintMismatch {
                address: opts.address.clone(),
                expected: fp.clone(),
                got: candidate.fingerprint.clone(),
            });
        }
    }
    if let Some(age) = report.as_ref().and_then(|r| r.age.clone()) {
        if age != candidate.age_recipient {
            return Err(Error::ReportAge {
                reported: age,
                derived: candidate.age_recipient.clone(),
            });
        }
    }
    if expected.is_empty() && !confirm(&candidate)? {
        return Err(Error::NotConfirmed);
    }
    pinned_read_key(opts, &key)?;
    if opts.dry_run {
        return Ok(Enrolled { candidate, recorded: None, sync: None });
    }

    // From here the lab's files change: one labprov at a time, and the
    // keys read again under the lock (another may have changed them).
    let _lock = LabLock::take(&lab.root, &format!("enrol {}", opts.host))?;
    let keys = LabKeys::load(lab)?;
    let backup = ops::KeyFilesBackup::take(&lab.root, &opts.host)?;
    let result = (|| -> Result<Enrolled> {
        let recorded = ops::record_public_key(&lab.root, &keys, &opts.host, &key, opts.replace)?;
        let keys = LabKeys::load(lab)?;
        let report = sync(&lab.root, &keys, &SyncOptions::new(identity))?;
        Ok(Enrolled { candidate: candidate.clone(), recorded: Some(recorded), sync: Some(report) })
    })();
    // Both said when the files cannot be put back: the first is why.
    result.map_err(|failure| match backup.restore() {
        Ok(()) => failure,
        Err(restore) => Error::Restore {
            host: opts.host.clone(),
            failure: Box::new(failure),
            restore: Box::new(restore),
        },
    })
}
