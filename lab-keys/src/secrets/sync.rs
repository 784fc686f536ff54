//! `secrets sync`: regenerate `.sops.yaml` and bring every secrets file to its
//! recipients with real `sops updatekeys`.
//!
//! All or nothing: every file is copied into a staging directory inside the
//! lab (same file system), sops works on the copies against the new config,
//! and only when every file succeeded are the changed copies renamed over the
//! originals. A failure before that point changes nothing; a crash during the
//! renames leaves each file whole, old or new, and re-running finishes.
//!
//! `updatekeys` keeps a file's data key. Where a recipient was removed (a
//! rotated or removed host, a removed admin's age or OpenPGP key) the data key
//! is replaced too (`sops rotate`), or a removed key holding an old copy of the
//! file could still read new values.
//!
//! sops decrypts with the admin's age identity (an admin's or the recovery
//! key); OpenPGP keys are only encrypted to, through a throwaway keyring
//! ([`super::pgp::Keyring`]) that also keeps sops away from the operator's
//! own gpg-agent.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::fsutil;
use super::pgp::Keyring;
use super::sopsconfig::{expected_recipients, render, rules, secrets_files};
use super::{AdminIdentity, Error, LabKeys, Result, SOPS_CONFIG};

pub struct SyncOptions<'a> {
    pub identity: &'a AdminIdentity,
    /// Work on the staged copies and report, but replace nothing.
    pub dry_run: bool,
    /// The sops program (default `sops` on PATH).
    pub sops: OsString,
}

impl<'a> SyncOptions<'a> {
    pub fn new(identity: &'a AdminIdentity) -> Self {
        SyncOptions { identity, dry_run: false, sops: "sops".into() }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub config: PathBuf,
    pub config_changed: bool,
    pub dry_run: bool,
    pub files: Vec<FileSync>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSync {
    /// Relative to the lab root.
    pub path: PathBuf,
    pub changed: bool,
    /// A recipient was removed, so the data key was replaced as well.
    pub data_key_rotated: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub recipients: Vec<String>,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        self.config_changed || self.files.iter().any(|f| f.changed)
    }
}

pub fn sync(root: &Path, keys: &LabKeys, opts: &SyncOptions) -> Result<SyncReport> {
    // Everything that can be refused is refused before any file is touched.
    let config_text = render(&rules(keys)?);
    let files = secrets_files(root)?;
    let mut expected = Vec::new();
    for rel in &files {
        expected.push(expected_recipients(keys, rel)?);
    }
    let config_path = root.join(SOPS_CONFIG);
    let old_config = fsutil::read_optional(&config_path)?;
    let config_changed = old_config.as_deref() != Some(config_text.as_bytes());
    let mut originals = Vec::new();
    for rel in &files {
        let original = root.join(rel);
        originals.push(std::fs::read(&original).map_err(Error::io(&original))?);
    }
    check_identity_reads(opts.identity, &files, &originals)?;
    let keyring = Keyring::with_admin_keys(root, keys)?;

    // sops works on copies (0700, removed however sync ends). A real sync
    // stages inside the lab, so the results are renamed into place on the
    // same filesystem; a dry run stages outside it and writes nothing there.
    let mut builder = tempfile::Builder::new();
    builder.prefix(".labprov-sync-");
    let stage = if opts.dry_run { builder.tempdir() } else { builder.tempdir_in(root) };
    let temp = std::env::temp_dir();
    let stage = stage.map_err(Error::io(if opts.dry_run { &temp } else { root }))?;
    fsutil::atomic_write(&stage.path().join(SOPS_CONFIG), config_text.as_bytes(), 0o644)?;

    let mut report = Vec::new();
    for ((rel, want), before) in files.iter().zip(&expected).zip(originals) {
        let original = root.join(rel);
        let staged = stage.path().join(rel);
        std::fs::create_dir_all(staged.parent().expect("a file has a parent"))
            .map_err(Error::io(&staged))?;
        std::fs::copy(&original, &staged).map_err(Error::io(&staged))?;
        run_sops(opts, &keyring, stage.path(), rel, &["updatekeys", "-y"])?;
        let mut after = std::fs::read(&staged).map_err(Error::io(&staged))?;
        let (old_r, new_r) = (recipients_in(&before), recipients_in(&after));
        let removed: Vec<String> = old_r.difference(&new_r).cloned().collect();
        let added: Vec<String> = new_r.difference(&old_r).cloned().collect();
        let data_key_rotated = !removed.is_empty();
        if data_key_rotated {
            run_sops(opts, &keyring, stage.path(), rel, &["rotate", "-i"])?;
            after = std::fs::read(&staged).map_err(Error::io(&staged))?;
        }
        // Belt and braces: sops must have written exactly the rule's recipients.
        let got: BTreeSet<String> = recipients_in(&after);
        let want_set: BTreeSet<String> = want.iter().cloned().collect();
        if got != want_set {
            return Err(Error::Sops {
                file: rel.display().to_string(),
                stderr: format!(
                    "after updatekeys the file is encrypted to {got:?}, expected {want_set:?}"
                ),
            });
        }
        let label = |r: &String| {
            format!("{r} ({})", keys.label(r).unwrap_or_else(|| "no longer in the facts".into()))
        };
        report.push(FileSync {
            path: rel.clone(),
            changed: after != before,
            data_key_rotated,
            added: added.iter().map(label).collect(),
            removed: removed.iter().map(label).collect(),
            recipients: want.iter().map(label).collect(),
        });
    }

    if !opts.dry_run {
        for f in report.iter().filter(|f| f.changed) {
            let original = root.join(&f.path);
            let staged = stage.path().join(&f.path);
            if let Ok(meta) = std::fs::metadata(&original) {
                std::fs::set_permissions(&staged, meta.permissions())
                    .map_err(Error::io(&staged))?;
            }
            fsutil::replace(&staged, &original)?;
        }
        if config_changed {
            fsutil::replace(&stage.path().join(SOPS_CONFIG), &config_path)?;
        }
    }
    Ok(SyncReport { config: config_path, config_changed, dry_run: opts.dry_run, files: report })
}

/// Refuses, before sops runs, an identity that cannot decrypt a file: sops
/// would only say "Failed to get the data key" (exit 128) for whichever file
/// came first. A file is for us when it lists one of the identity's age
/// recipients; files with no age recipient (OpenPGP only) and identities
/// whose recipients cannot be computed (plugins) are left to sops.
pub fn check_identity_reads(
    identity: &AdminIdentity,
    files: &[PathBuf],
    contents: &[Vec<u8>],
) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let ours = identity.recipients()?;
    if ours.is_empty() {
        return Ok(());
    }
    for (rel, bytes) in files.iter().zip(contents) {
        let theirs: Vec<String> =
            recipients_in(bytes).into_iter().filter(|r| r.starts_with("age1")).collect();
        if !theirs.is_empty() && !theirs.iter().any(|r| ours.contains(r)) {
            return Err(Error::NotForUs {
                path: rel.clone(),
                identity: identity.describe(),
                recipients: ours.join(", "),
            });
        }
    }
    Ok(())
}

fn run_sops(
    opts: &SyncOptions,
    keyring: &Keyring,
    stage: &Path,
    rel: &Path,
    args: &[&str],
) -> Result<()> {
    let cmd = lab_cli::Cmd::new(&opts.sops)
        .env("GNUPGHOME", keyring.path())
        .arg("--disable-version-check")
        .arg("--config")
        .arg(stage.join(SOPS_CONFIG))
        .args(args)
        .arg(stage.join(rel))
        .current_dir(stage);
    opts.identity.apply_to(cmd).run().map_err(|e| match e {
        lab_cli::ToolError::Missing { .. } => Error::SopsMissing,
        lab_cli::ToolError::Failed { stderr, .. } => {
            Error::Sops { file: rel.display().to_string(), stderr }
        }
        other => Error::Io {
            path: PathBuf::from(&opts.sops),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    Ok(())
}

/// The recipients in a sops file's metadata: age recipients (YAML
/// `- recipient: age1...`, JSON `"recipient": "age1..."`) and OpenPGP
/// fingerprints, upper-cased (YAML `fp: 0123...`, JSON `"fp": "0123..."`).
pub fn recipients_in(bytes: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let key = line.trim_start().trim_start_matches("- ").trim_start_matches('"');
        if line.contains("recipient") {
            if let Some(start) = line.find("age1") {
                let r: String =
                    line[start..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                out.insert(r);
            }
        } else if let Some(rest) = key
            .strip_prefix("fp")
            .and_then(|r| r.trim_start_matches('"').trim_start().strip_prefix(':'))
        {
            let value = rest.trim().trim_matches(|c| matches!(c, '"' | '\'' | ','));
            if let Some(fp) = super::pgp::normalize_fingerprint(value) {
                out.insert(fp);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_in_reads_age_and_pgp_in_yaml_and_json() {
        let fp = "0123456789ABCDEF0123456789ABCDEF01234567";
        let r = "age1mp0q0mpzkzkcs9fhct6y6e3drg2re7psc4av5sc9mpw84y8kkchq6r9kjp";
        let yaml = format!(
            "a: ENC[x]\nsops:\n    age:\n        - recipient: {r}\n          enc: |\n                         -----BEGIN AGE ENCRYPTED FILE-----\n    pgp:\n        - created_at: \"2025\"\n                       enc: |-\n            -----BEGIN PGP MESSAGE-----\n          fp: {}\n",
            fp.to_lowercase()
        );
        let want: BTreeSet<String> = [r.to_string(), fp.to_string()].into();
        assert_eq!(recipients_in(yaml.as_bytes()), want);
        let json = format!(
            "{{\"sops\": {{\"age\": [{{\"recipient\": \"{r}\", \"enc\": \"x\"}}],\n\
             \"pgp\": [{{\n\"created_at\": \"2025\",\n\"enc\": \"y\",\n\"fp\": \"{fp}\"\n}}]}}}}"
        );
        assert_eq!(recipients_in(json.as_bytes()), want);
    }
}
