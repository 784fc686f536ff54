//! The generated `.sops.yaml`: one creation rule per host secrets file and per
//! shared secret, then a catch-all for the admins. sops uses the first rule
//! whose `path_regex` matches the file's path relative to this file.
//!
//! Each rule is ONE key group: a flat `age:` list plus a `pgp:` list, never
//! `key_groups` and never `shamir_threshold`. With one group sops wraps the
//! whole data key for every key in it, so any single recipient decrypts
//! alone (the admin, the recovery key, an OpenPGP admin, the host); several
//! groups would need one key from EACH (sops `UpdateMasterKeysWithKeyServices`).

use std::path::{Path, PathBuf};

use super::{Error, LabKeys, Result, HOST_SECRETS_FILE, SHARED_DIR};

/// One creation rule: which files, encrypted to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path_regex: String,
    /// `(label, age recipient)`: admins first, the recovery key, then hosts.
    pub recipients: Vec<(String, String)>,
    /// `(label, OpenPGP fingerprint)`: the admins' OpenPGP keys.
    pub pgp: Vec<(String, String)>,
    /// What the rule is for, as a comment in the file.
    pub about: String,
}

/// Secrets file extensions sops-managed files carry here.
const SOPS_SUFFIXES: [&str; 3] = [".sops.yaml", ".sops.yml", ".sops.json"];

/// The rules for the lab, in sops' match order.
pub fn rules(keys: &LabKeys) -> Result<Vec<Rule>> {
    let admins = keys.admin_recipients()?;
    let admin_entries: Vec<(String, String)> = admins
        .iter()
        .map(|r| (keys.label(r).unwrap_or_else(|| "admin".into()), r.clone()))
        .collect();
    let pgp: Vec<(String, String)> = keys
        .pgp_fingerprints()
        .into_iter()
        .map(|f| (keys.label(&f).unwrap_or_else(|| "admin (OpenPGP)".into()), f))
        .collect();
    let mut rules = Vec::new();
    for (name, host) in &keys.hosts {
        // A host without a key gets no rule: its file (if any) is refused in
        // `expected_recipients`, so it is never encrypted to the admins only
        // by accident and then unreadable on first boot.
        if let Some(r) = host.recipient() {
            let mut recipients = admin_entries.clone();
            recipients.push((format!("host {name}"), r));
            rules.push(Rule {
                path_regex: format!(
                    "^hosts/{}/{}$",
                    regex_escape(name),
                    regex_escape(HOST_SECRETS_FILE)
                ),
                recipients,
                pgp: pgp.clone(),
                about: format!("host {name}: its own secrets"),
            });
        }
    }
    for (secret, users) in shared_users(keys) {
        let mut recipients = admin_entries.clone();
        for user in &users {
            if let Some(r) = keys.hosts[user].recipient() {
                recipients.push((format!("host {user}"), r));
            }
        }
        rules.push(Rule {
            path_regex: format!(
                "^{}/{}\\.sops\\.(yaml|yml|json)$",
                regex_escape(SHARED_DIR),
                regex_escape(&secret)
            ),
            recipients,
            pgp: pgp.clone(),
            about: format!("shared secret {secret}: used by {}", users.join(", ")),
        });
    }
    rules.push(Rule {
        path_regex: "\\.sops\\.(yaml|yml|json)$".into(),
        recipients: admin_entries,
        pgp,
        about: "everything else: admins only".into(),
    });
    Ok(rules)
}

/// `shared secret name -> hosts that use it`, sorted.
fn shared_users(keys: &LabKeys) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut users: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, host) in &keys.hosts {
        for s in &host.shared_secrets {
            users.entry(s.clone()).or_default().push(name.clone());
        }
    }
    users
}

/// The recipients a secrets file (path relative to the lab root) must have
/// (age recipients and OpenPGP fingerprints), or why it cannot be synced.
/// Mirrors [`rules`], which sops applies.
pub fn expected_recipients(keys: &LabKeys, rel: &Path) -> Result<Vec<String>> {
    let mut out = keys.admin_recipients()?;
    out.extend(keys.pgp_fingerprints());
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let missing = |host: &str| Error::HostWithoutKey {
        host: host.to_string(),
        file: rel.display().to_string(),
    };
    match parts.as_slice() {
        ["hosts", host, file] if *file == HOST_SECRETS_FILE && keys.hosts.contains_key(*host) => {
            out.push(keys.hosts[*host].recipient().ok_or_else(|| missing(host))?);
        }
        ["secrets", "shared", file] => {
            let name = SOPS_SUFFIXES.iter().find_map(|s| file.strip_suffix(s)).unwrap_or(file);
            if let Some(users) = shared_users(keys).get(name) {
                for user in users {
                    out.push(keys.hosts[user].recipient().ok_or_else(|| missing(user))?);
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Every sops-managed file under `hosts/` and `secrets/`, relative to the
/// root, sorted. Hidden directories (and sync's staging area) are skipped.
pub fn secrets_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for top in ["hosts", "secrets"] {
        walk(root, Path::new(top), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Io { path: dir, source: e }),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(Error::io(&dir))?;
        if kind.is_dir() {
            walk(root, &rel.join(&name), out)?;
        } else if kind.is_file() && SOPS_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            out.push(rel.join(&name));
        }
    }
    Ok(())
}

/// The `.sops.yaml` text.
pub fn render(rules: &[Rule]) -> String {
    let mut s = String::from(
        "# GENERATED by `labprov secrets sync` from hosts/facts.nix and hosts/admins.nix.\n\
         # Do not edit: the next sync overwrites it. Admins' age recipients and\n\
         # OpenPGP fingerprints live in hosts/admins.nix, the recovery key's in\n\
         # hosts/recovery-age.pub, host keys come from `labprov keys new|rotate` and\n\
         # `labprov enrol`, and a host reads secrets/shared/<name>.sops.yaml when its\n\
         # facts list <name> in sharedSecrets.\n\
         creation_rules:\n",
    );
    for rule in rules {
        s.push_str(&format!("  # {}\n", rule.about));
        s.push_str(&format!("  - path_regex: '{}'\n", rule.path_regex.replace('\'', "''")));
        s.push_str("    age:\n");
        for (label, r) in &rule.recipients {
            s.push_str(&format!("      - {r} # {label}\n"));
        }
        if !rule.pgp.is_empty() {
            s.push_str("    pgp:\n");
            for (label, fp) in &rule.pgp {
                s.push_str(&format!("      - {fp} # {label}\n"));
            }
        }
    }
    s
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostKey;

    fn lab() -> (LabKeys, HostKey, HostKey) {
        let (admin, a) = (HostKey::generate("admin"), HostKey::generate("a"));
        let json = serde_json::json!({
            "admins": {"ry": {"ageRecipients": [admin.age_recipient()]}},
            "hosts": {
                "a": {"sshHostKey": a.public_openssh(), "sharedSecrets": ["wifi"]},
                "b": {"sshHostKey": null, "sharedSecrets": []}
            }
        });
        (LabKeys::from_json(json.to_string().as_bytes()).unwrap(), admin, a)
    }

    #[test]
    fn renders_rules_in_match_order() {
        let (keys, admin, a) = lab();
        let text = render(&rules(&keys).unwrap());
        assert!(text.starts_with("# GENERATED"));
        let host_rule = text.find("'^hosts/a/secrets\\.sops\\.yaml$'").unwrap();
        let shared = text.find("'^secrets/shared/wifi\\.sops\\.(yaml|yml|json)$'").unwrap();
        let catch_all = text.find("'\\.sops\\.(yaml|yml|json)$'").unwrap();
        assert!(host_rule < shared && shared < catch_all, "{text}");
        assert!(text.contains(&format!("- {} # host a", a.age_recipient())));
        assert_eq!(text.matches(&admin.age_recipient()).count(), 3);
        assert!(!text.contains("hosts/b/"), "a host without key has no rule:\n{text}");
    }

    #[test]
    fn one_key_group_per_rule_with_recovery_and_pgp() {
        let (admin, recovery, a) =
            (HostKey::generate("admin"), HostKey::generate("r"), HostKey::generate("a"));
        let fp = "0123456789ABCDEF0123456789ABCDEF01234567";
        let json = serde_json::json!({
            "admins": {
                "ry": {"ageRecipients": [admin.age_recipient()]},
                "pg": {"pgpFingerprints": [fp.to_lowercase()]}
            },
            "recovery": {"ageRecipient": recovery.age_recipient()},
            "hosts": {"a": {"sshHostKey": a.public_openssh(), "sharedSecrets": []}}
        });
        let keys = LabKeys::from_json(json.to_string().as_bytes()).unwrap();
        let text = render(&rules(&keys).unwrap());
        assert_eq!(text.matches(&format!("- {} # recovery", recovery.age_recipient())).count(), 2);
        assert_eq!(text.matches(&format!("- {fp} # admin pg (OpenPGP)")).count(), 2);
        assert_eq!(text.matches("    pgp:\n").count(), 2, "{text}");
        assert!(!text.contains("key_groups") && !text.contains("shamir"), "{text}");
        let r = expected_recipients(&keys, Path::new("hosts/a/secrets.sops.yaml")).unwrap();
        assert_eq!(
            r,
            vec![
                admin.age_recipient(),
                recovery.age_recipient(),
                fp.to_string(),
                a.age_recipient()
            ]
        );
    }

    #[test]
    fn expected_recipients_follow_the_rules() {
        let (keys, admin, a) = lab();
        let r = expected_recipients(&keys, Path::new("hosts/a/secrets.sops.yaml")).unwrap();
        assert_eq!(r, vec![admin.age_recipient(), a.age_recipient()]);
        let r = expected_recipients(&keys, Path::new("secrets/shared/wifi.sops.yaml")).unwrap();
        assert_eq!(r, vec![admin.age_recipient(), a.age_recipient()]);
        let r = expected_recipients(&keys, Path::new("secrets/other.sops.yaml")).unwrap();
        assert_eq!(r, vec![admin.age_recipient()]);
        let err = expected_recipients(&keys, Path::new("hosts/b/secrets.sops.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host `b` has no key") && err.contains("labprov keys new b"), "{err}");
    }
}
