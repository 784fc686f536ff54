//! SSH with host key checking always on. A session trusts exactly one
//! confirmed (or recorded) ed25519 key: a private temporary known_hosts under
//! a fixed alias holds it and nothing else, and ssh may not add to it. Used
//! by enrolment (the host's own key) and by install (the installer's key,
//! then the installed host's recorded key).

use lab_cli::tool::{Cmd, Output, ToolError};
use std::path::PathBuf;

use lab_keys::PublicHostKey;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `ssh -i` for the login (else ssh's defaults and agent).
    pub identity: Option<PathBuf>,
}

/// ssh to `target` trusting exactly `key`.
pub struct Pinned {
    target: Target,
    alias: String,
    known_hosts: PathBuf,
    /// Seconds for the TCP connect and the server's greeting.
    connect_timeout: u32,
    _dir: tempfile::TempDir,
}

impl Pinned {
    pub fn new(target: &Target, alias: &str, key: &PublicHostKey) -> std::io::Result<Pinned> {
        // Private (0700) and removed on drop, with the pinned key in it.
        let dir = tempfile::Builder::new().prefix("labprov-ssh-").tempdir()?;
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{alias} {}\n", key.openssh()))?;
        Ok(Pinned {
            target: target.clone(),
            alias: alias.to_string(),
            known_hosts,
            connect_timeout: 10,
            _dir: dir,
        })
    }

    /// A shorter wait per connection, for polling a host that is booting:
    /// each attempt gives up sooner and the next one starts.
    pub fn polling(mut self, connect_timeout: u32) -> Pinned {
        self.connect_timeout = connect_timeout;
        self
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
            // Nothing from the user's ssh_config may trust another key or
            // reuse a connection that was never checked against this one.
            "KnownHostsCommand=none".into(),
            "VerifyHostKeyDNS=no".into(),
            "CheckHostIP=no".into(),
            "ControlMaster=no".into(),
            "ControlPath=none".into(),
            "BatchMode=yes".into(),
            format!("ConnectTimeout={}", self.connect_timeout),
            "ServerAliveInterval=15".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        o.extend(["-p".into(), self.target.port.to_string()]);
        if let Some(id) = &self.target.identity {
            o.extend([
                "-i".into(),
                id.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        o
    }

    /// `ssh ... user@address -- remote`, where `remote` is one shell command
    /// line for the remote shell (quote its words with [`quote`]).
    pub fn command(&self, remote: &str) -> Cmd {
        Cmd::new("ssh")
            .args(self.options())
            .arg("-l")
            .arg(&self.target.user)
            .arg(&self.target.address)
            .arg("--")
            .arg(remote)
    }

    /// Runs one remote command line, with `stdin` fed to it; its exit status
    /// is the caller's to judge (ssh's own failures exit 255).
    pub fn run(&self, remote: &str, stdin: Option<&[u8]>) -> Result<Output, ToolError> {
        self.with_stdin(remote, stdin).probe()
    }

    /// Like [`Pinned::run`] for long remote steps: their stderr is shown as
    /// it comes (progress), its tail kept; a failure is an error.
    pub fn stream(
        &self,
        remote: &str,
        stdin: Option<&[u8]>,
        label: &str,
    ) -> Result<Output, ToolError> {
        self.with_stdin(remote, stdin).label(label).stream()
    }

    fn with_stdin(&self, remote: &str, stdin: Option<&[u8]>) -> Cmd {
        let cmd = self.command(remote);
        match stdin {
            Some(data) => cmd.stdin(data),
            None => cmd,
        }
    }

    /// The options as one string, for `NIX_SSHOPTS`. Nix splits it on
    /// whitespace, so an option holding any (a TMPDIR or `--ssh-identity`
    /// path with a space) would fall apart and the pinning with it: refused.
    pub fn nix_sshopts(&self) -> Result<String, String> {
        let options = self.options();
        match options.iter().find(|o| o.chars().any(char::is_whitespace)) {
            Some(bad) => Err(format!("`{bad}` holds whitespace, which NIX_SSHOPTS cannot carry; use a TMPDIR and an --ssh-identity path without spaces")),
            None => Ok(options.join(" ")),
        }
    }

    /// `user@address` for store URIs.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.target.user, self.target.address)
    }
}

/// One word for a POSIX shell, quoted when it needs to be.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(identity: Option<&str>) -> Pinned {
        let key = lab_keys::HostKey::generate("t").public();
        let target = Target {
            address: "192.0.2.1".into(),
            port: 2222,
            user: "root".into(),
            identity: identity.map(PathBuf::from),
        };
        Pinned::new(&target, "labprov-test", &key).unwrap()
    }

    #[test]
    fn options_pin_one_key_and_shut_out_the_users_config() {
        let p = pinned(None);
        let o = p.options().join(" ");
        for want in [
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "HostKeyAlias=labprov-test",
            "KnownHostsCommand=none",
            "VerifyHostKeyDNS=no",
            "ControlMaster=no",
            "ControlPath=none",
            "UpdateHostKeys=no",
            "-p 2222",
        ] {
            assert!(o.contains(want), "{want} missing from {o}");
        }
        let known = std::fs::read_to_string(&p.known_hosts).unwrap();
        assert_eq!(known.lines().count(), 1);
        assert!(known.starts_with("labprov-test ssh-ed25519 "), "{known}");
    }

    #[test]
    fn ssh_keeps_the_pin_against_a_hostile_user_config() {
        let p = pinned(None);
        let cfg = p._dir.path().join("config");
        std::fs::write(
            &cfg,
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  KnownHostsCommand /bin/echo\n  \
             VerifyHostKeyDNS yes\n  ControlMaster auto\n  ControlPath /tmp/labprov-test-%C\n  CheckHostIP yes\n",
        )
        .unwrap();
        let out = match std::process::Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&cfg)
            .args(p.options())
            .arg("host")
            .output()
        {
            Ok(o) if o.status.success() => o,
            // The client is what the enrolment and install tests need anyway;
            // without it (or too old for these options) they fail loudly.
            other => {
                lab_testkit::skip(
                    "ssh_keeps_the_pin_against_a_hostile_user_config",
                    &format!("ssh -G unavailable here: {other:?}"),
                );
                return;
            }
        };
        let g = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let known = format!("userknownhostsfile {}", p.known_hosts.display()).to_lowercase();
        for want in
            ["stricthostkeychecking true", "controlmaster false", "verifyhostkeydns false", &known]
        {
            assert!(g.lines().any(|l| l == want), "`{want}` not in ssh -G output:\n{g}");
        }
        // `none` unsets these: ssh -G then prints no line for them at all.
        for unset in ["controlpath ", "knownhostscommand "] {
            assert!(!g.lines().any(|l| l.starts_with(unset)), "`{unset}` still set:\n{g}");
        }
    }

    #[test]
    fn nix_sshopts_refuse_whitespace_instead_of_losing_the_pin() {
        assert!(pinned(None).nix_sshopts().unwrap().contains("StrictHostKeyChecking=yes"));
        let err = pinned(Some("/home/me/my keys/id")).nix_sshopts().unwrap_err();
        assert!(err.contains("whitespace") && err.contains("my keys"), "{err}");
    }

    #[test]
    fn quoting_keeps_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("/mnt/etc/ssh"), "/mnt/etc/ssh");
        assert_eq!(quote("main=/dev/vda"), "main=/dev/vda");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
        // What the remote shell makes of it is the original word.
        for w in ["x y", "it's", "$(reboot)", "a\nb", "`x`", "\\"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(w)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), w);
        }
    }
}
