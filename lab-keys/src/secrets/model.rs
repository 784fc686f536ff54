//! What the secrets tooling needs from the host facts: the admins' age
//! recipients and OpenPGP fingerprints, the recovery key's recipient, each
//! host's public key (from the tool-written `.pub` file the
//! facts pick up) and which shared secrets each host uses.
//!
//! The host's age recipient is derived from its public key here rather than
//! read back from `age.pub`: the key is the one fact, the recipient a function
//! of it (`age.pub` exists for the flake and for people).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{check_name, Error, Result};
use crate::PublicHostKey;
use lab_facts::{Admin, Lab};

#[derive(Debug, Clone)]
pub struct LabKeys {
    /// `(admin name, age recipient)`, in facts order.
    pub admins: Vec<(String, String)>,
    /// `(admin name, fingerprint)`: 40 upper-case hex digits.
    pub pgp: Vec<(String, String)>,
    /// The offline recovery key's age recipient (`hosts/recovery-age.pub`).
    pub recovery: Option<String>,
    pub hosts: BTreeMap<String, HostKeys>,
}

#[derive(Debug, Clone, Default)]
pub struct HostKeys {
    pub key: Option<PublicHostKey>,
    /// Names of `secrets/shared/<name>.sops.yaml` files this host reads.
    pub shared_secrets: Vec<String>,
}

impl HostKeys {
    pub fn recipient(&self) -> Option<String> {
        self.key.as_ref().map(PublicHostKey::age_recipient)
    }
}

#[derive(Deserialize)]
struct RawFacts {
    #[serde(default)]
    admins: BTreeMap<String, Admin>,
    #[serde(default)]
    recovery: Option<RawRecovery>,
    hosts: BTreeMap<String, RawHost>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecovery {
    #[serde(default)]
    age_recipient: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHost {
    #[serde(default)]
    ssh_host_key: Option<String>,
    #[serde(default)]
    shared_secrets: Vec<String>,
}

impl LabKeys {
    /// Evaluates the lab's facts (the same `nix eval` as [`Lab::facts`]).
    pub fn load(lab: &Lab) -> Result<LabKeys> {
        let json = lab.facts_json()?;
        Self::from_json(&json).map_err(|e| match e {
            Error::Facts(lab_facts::Error::Shape { source, .. }) => {
                Error::Facts(lab_facts::Error::Shape { path: lab.facts_path(), source })
            }
            other => other,
        })
    }

    pub fn from_json(json: &[u8]) -> Result<LabKeys> {
        let raw: RawFacts = serde_json::from_slice(json).map_err(|source| {
            lab_facts::Error::Shape { path: lab_facts::FACTS_FILE.into(), source }
        })?;
        let mut admins = Vec::new();
        for (name, admin) in &raw.admins {
            for r in &admin.age_recipients {
                crate::age::parse_recipient(r)
                    .map_err(|source| Error::AdminRecipient { admin: name.clone(), source })?;
                admins.push((name.clone(), r.trim().to_string()));
            }
        }
        let mut pgp = Vec::new();
        for (name, admin) in &raw.admins {
            for fp in &admin.pgp_fingerprints {
                let clean = super::pgp::normalize_fingerprint(fp).ok_or_else(|| {
                    Error::PgpFingerprint { admin: name.clone(), fingerprint: fp.clone() }
                })?;
                if !pgp.iter().any(|(_, f)| f == &clean) {
                    pgp.push((name.clone(), clean));
                }
            }
        }
        let recovery = match raw
            .recovery
            .and_then(|r| r.age_recipient)
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
        {
            Some(r) => {
                crate::age::parse_recipient(&r).map_err(|e| Error::BadRecoveryFile {
                    path: super::RECOVERY_FILE.into(),
                    reason: e.to_string(),
                })?;
                Some(r)
            }
            None => None,
        };
        let mut hosts = BTreeMap::new();
        for (name, h) in raw.hosts {
            check_name("host", &name)?;
            for s in &h.shared_secrets {
                check_name("shared secret", s)?;
            }
            let key = match h.ssh_host_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
                Some(line) => Some(
                    PublicHostKey::parse(line)
                        .map_err(|source| Error::HostKeyFact { host: name.clone(), source })?,
                ),
                None => None,
            };
            hosts.insert(name, HostKeys { key, shared_secrets: h.shared_secrets });
        }
        Ok(LabKeys { admins, pgp, recovery, hosts })
    }

    pub fn host(&self, name: &str) -> Result<&HostKeys> {
        self.hosts.get(name).ok_or_else(|| {
            Error::Facts(lab_facts::Error::UnknownHost {
                name: name.to_string(),
                known: self.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        })
    }

    /// The admin-level age recipients: every admin's, then the recovery
    /// key's. Every secrets file and every host key is encrypted to them.
    /// A clear error when no admin has any key (age or OpenPGP), or when
    /// nothing is left to encrypt host keys to.
    pub fn admin_recipients(&self) -> Result<Vec<String>> {
        if self.admins.is_empty() && self.pgp.is_empty() {
            return Err(Error::NoAdminRecipients);
        }
        let mut out: Vec<String> = Vec::new();
        for r in self.admins.iter().map(|(_, r)| r).chain(&self.recovery) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        if out.is_empty() {
            return Err(Error::NoAgeRecipients);
        }
        Ok(out)
    }

    /// The admins' OpenPGP fingerprints (every secrets file, not host keys).
    pub fn pgp_fingerprints(&self) -> Vec<String> {
        self.pgp.iter().map(|(_, f)| f.clone()).collect()
    }

    /// Who a recipient is, for reports: `admin ry`, `recovery`, `admin ry
    /// (OpenPGP)`, `host nixpi`.
    pub fn label(&self, recipient: &str) -> Option<String> {
        if let Some((name, _)) = self.admins.iter().find(|(_, r)| r == recipient) {
            return Some(format!("admin {name}"));
        }
        if self.recovery.as_deref() == Some(recipient) {
            return Some("recovery".into());
        }
        if let Some((name, _)) = self.pgp.iter().find(|(_, f)| f.eq_ignore_ascii_case(recipient)) {
            return Some(format!("admin {name} (OpenPGP)"));
        }
        self.hosts
            .iter()
            .find(|(_, h)| h.recipient().as_deref() == Some(recipient))
            .map(|(n, _)| format!("host {n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_shared_secrets_and_refuses_bad_recipients() {
        let key = crate::HostKey::generate("root@a");
        let json = serde_json::json!({
            "admins": {"ry": {"ageRecipients": [key.age_recipient()]}},
            "hosts": {
                "a": {"name": "a", "sshHostKey": key.public_openssh(), "sharedSecrets": ["wifi"]},
                "b": {"name": "b", "sshHostKey": null}
            }
        });
        let keys = LabKeys::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(keys.host("a").unwrap().recipient(), Some(key.age_recipient()));
        assert_eq!(keys.host("a").unwrap().shared_secrets, vec!["wifi"]);
        assert!(keys.host("b").unwrap().key.is_none());
        assert!(keys.host("c").unwrap_err().to_string().contains("a, b"));

        let bad =
            serde_json::json!({"admins": {"ry": {"ageRecipients": ["age1nope"]}}, "hosts": {}});
        let err = LabKeys::from_json(bad.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("admin `ry`") && err.contains("age1nope"), "{err}");

        let bad = serde_json::json!({"admins": {"ry": {"pgpFingerprints": ["ABCD"]}}, "hosts": {}});
        let err = LabKeys::from_json(bad.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("admin `ry`") && err.contains("`ABCD`"), "{err}");
        let bad = serde_json::json!({"recovery": {"ageRecipient": "age1x"}, "hosts": {}});
        let err = LabKeys::from_json(bad.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("hosts/recovery-age.pub"), "{err}");
    }

    #[test]
    fn recovery_and_pgp_are_admin_level() {
        let (admin, recovery) = (crate::HostKey::generate("a"), crate::HostKey::generate("r"));
        let fp = "0123 4567 89AB CDEF 0123  4567 89ab cdef 0123 4567";
        let json = serde_json::json!({
            "admins": {"ry": {"ageRecipients": [admin.age_recipient()], "pgpFingerprints": [fp]}},
            "recovery": {"ageRecipient": recovery.age_recipient()},
            "hosts": {}
        });
        let keys = LabKeys::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(
            keys.admin_recipients().unwrap(),
            vec![admin.age_recipient(), recovery.age_recipient()]
        );
        assert_eq!(keys.pgp_fingerprints(), vec!["0123456789ABCDEF0123456789ABCDEF01234567"]);
        assert_eq!(keys.label(&recovery.age_recipient()).as_deref(), Some("recovery"));
        assert_eq!(
            keys.label("0123456789abcdef0123456789abcdef01234567").as_deref(),
            Some("admin ry (OpenPGP)")
        );
        // OpenPGP only, no recovery: nothing to encrypt host keys to.
        let json = serde_json::json!({"admins": {"ry": {"pgpFingerprints": [fp]}}, "hosts": {}});
        let keys = LabKeys::from_json(json.to_string().as_bytes()).unwrap();
        let err = keys.admin_recipients().unwrap_err().to_string();
        assert!(err.contains("labprov keys recovery new"), "{err}");
        // The recovery key alone is no admin.
        let json = serde_json::json!({
            "recovery": {"ageRecipient": recovery.age_recipient()}, "hosts": {}
        });
        let keys = LabKeys::from_json(json.to_string().as_bytes()).unwrap();
        assert!(matches!(keys.admin_recipients(), Err(Error::NoAdminRecipients)));
    }
}
