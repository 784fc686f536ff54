//! SSH with host key checking always on. A session trusts exactly one
//! confirmed (or recorded) ed25519 key: a private temporary known_hosts under
//! a fixed alias holds it and nothing else, and ssh may not add to it. Used
//! by enrolment (the host's own key) and by install (the installer's key,
//! then the installed host's recorded key).

use std::path::{Path, PathBuf};
use std::process::Command;

use lab_model::keys::PublicHostKey;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `ssh -i` for the login (else ssh's defaults and agent).
    pub identity: Option<PathBuf>,
}

/// A private temporary directory (0700), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(purpose: &str) -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("labprov-{purpose}-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// ssh to `target` trusting exactly `key`.
pub struct Pinned {
    target: Target,
    alias: String,
    known_hosts: PathBuf,
    _dir: TempDir,
}

impl Pinned {
    pub fn new(target: &Target, alias: &str, key: &PublicHostKey) -> std::io::Result<Pinned> {
        let dir = TempDir::new("ssh")?;
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{alias} {}\n", key.openssh()))?;
        Ok(Pinned { target: target.clone(), alias: alias.to_string(), known_hosts, _dir: dir })
    }

    /// The options every connection uses, as separate arguments.
    pub fn options(&self) -> Vec<String> {
        let mut o: Vec<String> = [
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            format!("HostKeyAlias={}", self.alias),
            "HostKeyAlgorithms=ssh-ed25519".into(),
            "UpdateHostKeys=no".into(),
            "BatchMode=yes".into(),
            "ConnectTimeout=10".into(),
            "ServerAliveInterval=15".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        o.extend(["-p".into(), self.target.port.to_string()]);
        if let Some(id) = &self.target.identity {
            o.extend(["-i".into(), id.display().to_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        o
    }

    /// `ssh ... user@address -- remote`, where `remote` is one shell command
    /// line for the remote shell (quote its words with [`quote`]).
    pub fn command(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.options()).arg("-l").arg(&self.target.user).arg(&self.target.address).arg("--").arg(remote);
        cmd
    }

    /// The options as one string, for `NIX_SSHOPTS` (nix splits it on
    /// spaces, so the paths in it must not hold any: the temporary
    /// directory's name has none unless TMPDIR does).
    pub fn nix_sshopts(&self) -> String {
        self.options().join(" ")
    }

    /// `user@address` for store URIs.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.target.user, self.target.address)
    }
}

/// One word for a POSIX shell, quoted when it needs to be.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_keeps_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("/mnt/etc/ssh"), "/mnt/etc/ssh");
        assert_eq!(quote("main=/dev/vda"), "main=/dev/vda");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
        // What the remote shell makes of it is the original word.
        for w in ["x y", "it's", "$(reboot)", "a\nb", "`x`", "\\"] {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(w))).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), w);
        }
    }
}
