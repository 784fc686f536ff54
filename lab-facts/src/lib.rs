//! Host facts: read from `hosts/facts.nix` with `nix eval --json`, the same
//! pure data the flake imports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the facts file lives, relative to the lab root.
pub const FACTS_FILE: &str = "hosts/facts.nix";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no lab found: neither {start} nor any parent holds {FACTS_FILE}; \
         run inside the lab repository or pass --lab DIR (or set LAB_ROOT)"
    )]
    NoLab { start: PathBuf },
    #[error("{path} does not hold {FACTS_FILE}; pass the lab repository's root with --lab")]
    NotALab { path: PathBuf },
    #[error("cannot read the current directory to find the lab from: {0}; pass --lab DIR")]
    NoCwd(std::io::Error),
    #[error("labimg and labprov read the host facts with `nix eval`: {0}")]
    NixMissing(lab_cli::ToolError),
    #[error("could not run `nix eval` on {path}: {source}")]
    NixSpawn { path: PathBuf, source: lab_cli::ToolError },
    #[error("`nix eval` failed on {path}:\n{stderr}")]
    NixEval { path: PathBuf, stderr: String },
    #[error("the host facts in {path} do not have the expected shape: {source}")]
    Shape { path: PathBuf, source: serde_json::Error },
    #[error("no host named `{name}` in {FACTS_FILE}; known hosts: {known}")]
    UnknownHost { name: String, known: String },
}

/// The lab repository: the directory that holds `hosts/facts.nix`.
#[derive(Debug, Clone)]
pub struct Lab {
    pub root: PathBuf,
}

impl Lab {
    /// An explicit root (from `--lab` or `LAB_ROOT`), or the nearest ancestor
    /// of `start` that holds the facts file.
    pub fn locate(explicit: Option<&Path>, start: &Path) -> Result<Lab, Error> {
        if let Some(root) = explicit {
            if root.join(FACTS_FILE).is_file() {
                return Ok(Lab { root: root.to_path_buf() });
            }
            return Err(Error::NotALab { path: root.to_path_buf() });
        }
        start
            .ancestors()
            .find(|dir| dir.join(FACTS_FILE).is_file())
            .map(|dir| Lab { root: dir.to_path_buf() })
            .ok_or_else(|| Error::NoLab { start: start.to_path_buf() })
    }

    /// The one way both tools find the lab: `--lab`/`LAB_ROOT` when given,
    /// else the nearest ancestor of the current directory with the facts.
    pub fn find(explicit: Option<&Path>) -> Result<Lab, Error> {
        let cwd = std::env::current_dir().map_err(Error::NoCwd)?;
        Lab::locate(explicit, &cwd)
    }

    pub fn facts_path(&self) -> PathBuf {
        self.root.join(FACTS_FILE)
    }

    /// Evaluates the facts with plain `nix eval`: no nixpkgs, no network.
    pub fn facts(&self) -> Result<Facts, Error> {
        let path = self.facts_path();
        let json = eval_json(&path)?;
        Facts::from_json(&json).map_err(|source| Error::Shape { path, source })
    }

    /// The facts as raw JSON, for readers of fields this model leaves out.
    pub fn facts_json(&self) -> Result<Vec<u8>, Error> {
        eval_json(&self.facts_path())
    }
}

/// Evaluates a pure-data Nix file (host facts, a disk spec) to JSON with
/// plain `nix eval`. Pure data needs no store (`dummy://`): that keeps it
/// fast, offline, and working for users who cannot write the Nix store.
pub fn eval_json(path: &Path) -> Result<Vec<u8>, Error> {
    eval(path, &[std::ffi::OsStr::new("--file"), path.as_os_str()])
}

/// Evaluates a Nix expression over the lab's pure data (for example
/// `(import LAB/lib/services { }).hosts`) to JSON, the same way as
/// [`eval_json`]; `origin` names it in errors.
pub fn eval_expr_json(expr: &str, origin: &Path) -> Result<Vec<u8>, Error> {
    eval(origin, &[std::ffi::OsStr::new("--impure"), "--expr".as_ref(), expr.as_ref()])
}

fn eval(origin: &Path, what: &[&std::ffi::OsStr]) -> Result<Vec<u8>, Error> {
    let out = lab_cli::Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "eval",
            "--store",
            "dummy://",
            "--json",
        ])
        .args(what)
        .run()
        .map_err(|e| match e {
            lab_cli::ToolError::Missing { .. } => Error::NixMissing(e),
            lab_cli::ToolError::Failed { stderr, .. } => {
                Error::NixEval { path: origin.to_path_buf(), stderr: stderr.trim().to_string() }
            }
            other => Error::NixSpawn { path: origin.to_path_buf(), source: other },
        })?;
    Ok(out.stdout)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    #[serde(default)]
    pub admins: BTreeMap<String, Admin>,
    pub hosts: BTreeMap<String, Host>,
}

impl Facts {
    pub fn from_json(json: &[u8]) -> Result<Facts, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn host(&self, name: &str) -> Result<&Host, Error> {
        self.hosts.get(name).ok_or_else(|| Error::UnknownHost {
            name: name.to_string(),
            known: self.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admin {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// OpenPGP fingerprints (40 hex digits); each public key is committed as
    /// `hosts/admins/<FINGERPRINT>.asc`.
    #[serde(default)]
    pub pgp_fingerprints: Vec<String>,
}

/// One machine. Fields the tools do not use (and the flake may add) are
/// ignored rather than refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub name: String,
    /// Nix system double, e.g. `aarch64-linux`.
    pub system: String,
    pub class: HostClass,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub address: Option<String>,
    /// Raspberry Pi board, for hosts born from an SD image.
    #[serde(default)]
    pub board: Option<String>,
    #[serde(default)]
    pub image: Option<ImageFacts>,
    /// `ssh-ed25519 AAAA...` once the host has a key.
    #[serde(default)]
    pub ssh_host_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostClass {
    Nixos,
    Darwin,
}

/// SD image layout overrides; every field has a default in [`crate::layout`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageFacts {
    #[serde(rename = "gapMiB")]
    pub gap_mib: Option<u64>,
    #[serde(rename = "firmwareSizeMiB")]
    pub firmware_size_mib: Option<u64>,
    pub firmware_label: Option<String>,
    pub root_label: Option<String>,
    #[serde(rename = "rootHeadroomMiB")]
    pub root_headroom_mib: Option<u64>,
    /// A fixed total image size (for example to fit a small card); by
    /// default the image is as large as its content needs.
    #[serde(rename = "sizeMiB")]
    pub size_mib: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "admins": {"ry": {"description": "Ry", "sshKeys": [], "ageRecipients": []}},
        "hosts": {
            "nixpi": {"name": "nixpi", "system": "aarch64-linux", "class": "nixos",
                      "board": "rpi4", "image": {"gapMiB": 8, "rootLabel": "NIXOS_SD"},
                      "sshHostKey": null, "flakeOnly": 1},
            "rymac": {"name": "rymac", "system": "aarch64-darwin", "class": "darwin"}
        }
    }"#;

    #[test]
    fn parses_facts_and_ignores_flake_only_fields() {
        let facts = Facts::from_json(SAMPLE.as_bytes()).unwrap();
        let pi = facts.host("nixpi").unwrap();
        assert_eq!(pi.board.as_deref(), Some("rpi4"));
        assert_eq!(pi.image.as_ref().unwrap().gap_mib, Some(8));
        assert_eq!(facts.host("rymac").unwrap().class, HostClass::Darwin);
    }

    #[test]
    fn unknown_host_lists_the_known_ones() {
        let facts = Facts::from_json(SAMPLE.as_bytes()).unwrap();
        let err = facts.host("nope").unwrap_err().to_string();
        assert!(err.contains("nixpi, rymac"), "{err}");
    }

    #[test]
    fn misspelt_image_field_is_refused() {
        let bad = SAMPLE.replace("gapMiB", "gapMB");
        let err = Facts::from_json(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("gapMB"), "{err}");
    }
}
