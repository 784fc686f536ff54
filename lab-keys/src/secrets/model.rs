//! What the secrets tooling needs from the host facts: the admins' age
//! recipients, each host's public key (from the tool-written `.pub` file the
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
    hosts: BTreeMap<String, RawHost>,
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
        Ok(LabKeys { admins, hosts })
    }

    pub fn host(&self, name: &str) -> Result<&HostKeys> {
        self.hosts.get(name).ok_or_else(|| {
            Error::Facts(lab_facts::Error::UnknownHost {
                name: name.to_string(),
                known: self.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        })
    }

    /// The admins' recipients, or a clear error when there are none.
    pub fn admin_recipients(&self) -> Result<Vec<String>> {
        if self.admins.is_empty() {
            return Err(Error::NoAdminRecipients);
        }
        let mut out: Vec<String> = Vec::new();
        for (_, r) in &self.admins {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    /// Who a recipient is, for reports: `admin ry`, `host nixpi`.
    pub fn label(&self, recipient: &str) -> Option<String> {
        if let Some((name, _)) = self.admins.iter().find(|(_, r)| r == recipient) {
            return Some(format!("admin {name}"));
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
    }
}
