//! The admin's age identity: which one labprov uses, loaded only when a
//! command must decrypt, and handed to sops the same way.
//!
//! sops 3.11 itself loads the UNION of every source it knows (SOPS_AGE_KEY,
//! SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD, the default keys.txt, `~/.ssh/id_*`).
//! labprov picks ONE, in a fixed order, so that its own checks (is this file
//! for us?) and its messages name the identity that does the work.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use zeroize::Zeroizing;

use super::{Error, Result};

#[derive(Clone)]
pub enum AdminIdentity {
    /// An age identity file (`age-keygen` output; `#` comments allowed).
    File(PathBuf),
    /// The identity text itself, from `SOPS_AGE_KEY`.
    Inline(Zeroizing<String>),
    /// A command that prints the identity, from `SOPS_AGE_KEY_CMD` (a
    /// password manager, a hardware token's agent).
    Command(IdentityCommand),
}

/// `SOPS_AGE_KEY_CMD`: split shell-style and run without a shell, as sops
/// 3.11 does; run at most once per labprov process, its output kept only in
/// zeroizing memory.
#[derive(Clone)]
pub struct IdentityCommand {
    /// The variable's text, handed to sops children unchanged.
    pub line: String,
    pub argv: Vec<String>,
    output: Arc<OnceLock<Zeroizing<String>>>,
}

impl IdentityCommand {
    pub fn parse(line: &str) -> Result<IdentityCommand> {
        let argv =
            shlex::split(line).filter(|a| !a.is_empty()).ok_or_else(|| Error::IdentityCommand {
                command: line.to_string(),
                reason: "it is not a command line (unbalanced quotes, or empty)".into(),
            })?;
        Ok(IdentityCommand { line: line.to_string(), argv, output: Arc::default() })
    }

    /// The command's stdout. Its stderr and stdin stay the terminal's, so a
    /// password prompt works and its messages are seen, never captured into
    /// an error (they might echo the secret).
    fn text(&self) -> Result<Zeroizing<String>> {
        if let Some(text) = self.output.get() {
            return Ok(text.clone());
        }
        let failed = |reason: String| Error::IdentityCommand { command: self.line.clone(), reason };
        // Not lab_cli::Cmd: its captured stdout is a plain Vec and its stdin
        // is closed, and this output is a secret that may need a prompt.
        let child = std::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run `{}`: {e}", self.argv[0])))?;
        let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            return Err(failed(format!(
                "it ended with {}",
                lab_cli::tool::describe_status(out.status)
            )));
        }
        let text = Zeroizing::new(
            std::str::from_utf8(&stdout)
                .map_err(|_| failed("its output is not text".into()))?
                .to_string(),
        );
        if text.trim().is_empty() {
            return Err(failed("it printed nothing; it must print an age identity".into()));
        }
        let _ = self.output.set(text.clone());
        Ok(text)
    }
}

impl std::fmt::Debug for AdminIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AdminIdentity {
    /// The identity labprov uses: `SOPS_AGE_KEY_FILE`, then `SOPS_AGE_KEY`,
    /// then `SOPS_AGE_KEY_CMD`, then `$XDG_CONFIG_HOME/sops/age/keys.txt`
    /// (default `~/.config`; on macOS without XDG_CONFIG_HOME,
    /// `~/Library/Application Support`).
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
        if let Some(line) = var("SOPS_AGE_KEY_CMD") {
            return Ok(AdminIdentity::Command(IdentityCommand::parse(&line)?));
        }
        let mut tried =
            vec!["SOPS_AGE_KEY_FILE, SOPS_AGE_KEY and SOPS_AGE_KEY_CMD are unset".to_string()];
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
            AdminIdentity::Command(c) => format!("SOPS_AGE_KEY_CMD (`{}`)", c.line),
        }
    }

    /// The identity file's text (secret).
    fn text(&self) -> Result<Zeroizing<String>> {
        match self {
            AdminIdentity::File(path) => {
                Ok(Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::BadAdminIdentity {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?))
            }
            AdminIdentity::Inline(text) => Ok(text.clone()),
            AdminIdentity::Command(c) => c.text(),
        }
    }

    /// The identities for the age crate.
    pub fn load(&self) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
        let text = self.text()?;
        let bad = |reason: String| Error::BadAdminIdentity { path: self.describe(), reason };
        let file =
            age::IdentityFile::from_buffer(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let ids = file.into_identities().map_err(|e| bad(e.to_string()))?;
        if ids.is_empty() {
            return Err(bad("it holds no age identity".into()));
        }
        Ok(ids)
    }

    /// The age recipients (`age1...`) of the X25519 identities this holds,
    /// what `age-keygen -y` prints. Plugin identities have no recipient we
    /// can compute and are left out.
    pub fn recipients(&self) -> Result<Vec<String>> {
        let text = self.text()?;
        Ok(x25519_recipients(&text))
    }

    /// Makes a sops child process use this identity (and no other labprov
    /// source: sops still adds its default file and `~/.ssh/id_*`, see
    /// docs/keys.md).
    pub fn apply_to(&self, cmd: lab_cli::Cmd) -> lab_cli::Cmd {
        match self {
            AdminIdentity::File(path) => cmd
                .env_remove("SOPS_AGE_KEY")
                .env_remove("SOPS_AGE_KEY_CMD")
                .env("SOPS_AGE_KEY_FILE", path),
            AdminIdentity::Inline(text) => cmd
                .env_remove("SOPS_AGE_KEY_FILE")
                .env_remove("SOPS_AGE_KEY_CMD")
                .env("SOPS_AGE_KEY", text.as_str()),
            // sops runs the command itself (once per sops process): the
            // secret never sits in a child's environment.
            AdminIdentity::Command(c) => cmd
                .env_remove("SOPS_AGE_KEY_FILE")
                .env_remove("SOPS_AGE_KEY")
                .env("SOPS_AGE_KEY_CMD", &c.line),
        }
    }
}

/// The recipients of every `AGE-SECRET-KEY-1...` line of an identity file.
pub fn x25519_recipients(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if !line.starts_with("AGE-SECRET-KEY-1") {
            continue;
        }
        if let Ok(id) = age::x25519::Identity::from_str(line) {
            let r = id.to_public().to_string();
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
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

    #[test]
    fn order_is_file_inline_command_default() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("k.txt");
        std::fs::write(&file, "x").unwrap();
        let all = |n: &str| match n {
            "SOPS_AGE_KEY_FILE" => Some(file.display().to_string()),
            "SOPS_AGE_KEY" => Some("AGE-SECRET-KEY-1X".to_string()),
            "SOPS_AGE_KEY_CMD" => Some("cat 'a b'".to_string()),
            "HOME" => Some("/nonexistent".to_string()),
            _ => None,
        };
        assert!(matches!(AdminIdentity::from_vars(all).unwrap(), AdminIdentity::File(_)));
        let no_file = |n: &str| (n != "SOPS_AGE_KEY_FILE").then(|| all(n)).flatten();
        assert!(matches!(AdminIdentity::from_vars(no_file).unwrap(), AdminIdentity::Inline(_)));
        let cmd_only = |n: &str| (n == "SOPS_AGE_KEY_CMD").then(|| all(n)).flatten();
        match AdminIdentity::from_vars(cmd_only).unwrap() {
            AdminIdentity::Command(c) => assert_eq!(c.argv, vec!["cat", "a b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_command_runs_once_and_its_failures_name_it() {
        let id = age::x25519::Identity::generate();
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("key.txt");
        let count = tmp.path().join("count");
        use age::secrecy::ExposeSecret;
        std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let line = format!("sh -c 'echo x >> {}; cat {}'", count.display(), key.display());
        let cmd = AdminIdentity::Command(IdentityCommand::parse(&line).unwrap());
        assert_eq!(cmd.recipients().unwrap(), vec![id.to_public().to_string()]);
        assert_eq!(cmd.load().unwrap().len(), 1);
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n", "ran more than once");

        let failing = AdminIdentity::Command(IdentityCommand::parse("false --flag").unwrap());
        let err = failing.load().err().unwrap().to_string();
        assert!(err.contains("`false --flag`") && err.contains("exit code 1"), "{err}");
        let empty = AdminIdentity::Command(IdentityCommand::parse("true").unwrap());
        let err = empty.load().err().unwrap().to_string();
        assert!(err.contains("`true`") && err.contains("printed nothing"), "{err}");
        let missing =
            AdminIdentity::Command(IdentityCommand::parse("/nonexistent/pass show age").unwrap());
        let err = missing.load().err().unwrap().to_string();
        assert!(err.contains("/nonexistent/pass show age"), "{err}");
        assert!(IdentityCommand::parse("cat 'unclosed").is_err());
    }
}
