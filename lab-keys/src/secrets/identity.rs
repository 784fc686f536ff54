//! The admin's age identity: where sops looks for it, loaded only when a
//! command must decrypt, and handed to sops the same way.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Error, Result};

#[derive(Clone)]
pub enum AdminIdentity {
    /// An age identity file (`age-keygen` output; `#` comments allowed).
    File(PathBuf),
    /// The identity text itself, from `SOPS_AGE_KEY`.
    Inline(Zeroizing<String>),
}

impl std::fmt::Debug for AdminIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AdminIdentity {
    /// The identity sops would use: `SOPS_AGE_KEY_FILE`, then `SOPS_AGE_KEY`,
    /// then `$XDG_CONFIG_HOME/sops/age/keys.txt` (default `~/.config`; on
    /// macOS without XDG_CONFIG_HOME, `~/Library/Application Support`).
    pub fn from_env() -> Result<AdminIdentity> {
        Self::from_vars(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// [`Self::from_env`] over any variable source, so tests need not touch
    /// the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<AdminIdentity> {
        if let Some(path) = var("SOPS_AGE_KEY_FILE") {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(Error::NoAdminIdentity {
                    tried: format!(
                        "SOPS_AGE_KEY_FILE is set to {}, which does not exist",
                        path.display()
                    ),
                });
            }
            return Ok(AdminIdentity::File(path));
        }
        if let Some(text) = var("SOPS_AGE_KEY") {
            return Ok(AdminIdentity::Inline(Zeroizing::new(text)));
        }
        let mut tried = vec!["SOPS_AGE_KEY_FILE and SOPS_AGE_KEY are unset".to_string()];
        let config_dir = match (var("XDG_CONFIG_HOME"), var("HOME")) {
            (Some(xdg), _) => Some(PathBuf::from(xdg)),
            (None, Some(home)) if cfg!(target_os = "macos") => {
                Some(Path::new(&home).join("Library/Application Support"))
            }
            (None, Some(home)) => Some(Path::new(&home).join(".config")),
            (None, None) => None,
        };
        if let Some(dir) = config_dir {
            let path = dir.join("sops/age/keys.txt");
            if path.is_file() {
                return Ok(AdminIdentity::File(path));
            }
            tried.push(format!("{} does not exist", path.display()));
        }
        Err(Error::NoAdminIdentity { tried: tried.join("; ") })
    }

    pub fn describe(&self) -> String {
        match self {
            AdminIdentity::File(p) => p.display().to_string(),
            AdminIdentity::Inline(_) => "SOPS_AGE_KEY".to_string(),
        }
    }

    /// The identities for the age crate.
    pub fn load(&self) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
        let text = match self {
            AdminIdentity::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::BadAdminIdentity {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?)
            }
            AdminIdentity::Inline(text) => text.clone(),
        };
        let bad = |reason: String| Error::BadAdminIdentity { path: self.describe(), reason };
        let file =
            age::IdentityFile::from_buffer(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let ids = file.into_identities().map_err(|e| bad(e.to_string()))?;
        if ids.is_empty() {
            return Err(bad("it holds no age identity".into()));
        }
        Ok(ids)
    }

    /// Makes a sops child process use exactly this identity.
    pub fn apply_to(&self, cmd: lab_cli::Cmd) -> lab_cli::Cmd {
        let cmd = cmd.env_remove("SOPS_AGE_KEY_CMD");
        match self {
            AdminIdentity::File(path) => {
                cmd.env_remove("SOPS_AGE_KEY").env("SOPS_AGE_KEY_FILE", path)
            }
            AdminIdentity::Inline(text) => {
                cmd.env_remove("SOPS_AGE_KEY_FILE").env("SOPS_AGE_KEY", text.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_identity_names_what_was_tried() {
        let err =
            AdminIdentity::from_vars(|n| (n == "HOME").then(|| "/nonexistent-home".to_string()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("/nonexistent-home"), "{err}");
        assert!(err.contains("SOPS_AGE_KEY_FILE"), "{err}");
    }

    #[test]
    fn key_file_variable_that_points_nowhere_is_an_error() {
        let err = AdminIdentity::from_vars(|n| {
            (n == "SOPS_AGE_KEY_FILE").then(|| "/nope/keys.txt".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nope/keys.txt"), "{err}");
    }
}
