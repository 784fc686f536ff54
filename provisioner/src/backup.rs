//! `labprov backup run|restore-test|status HOST`: a host's backups by hand.
//!
//! The host carries `lab-backup` (hosts/_modules/nixos/services/backup.nix,
//! rendered by lib/services/backup.nix): it starts the very units the timers
//! start, with their environment and secrets, and prints that run's journal.
//! labprov checks the request against the registry first (the host keeps
//! state, the repositories exist), then runs it over the deploy's pinned SSH.

use serde::Deserialize;

use crate::deploy::{self, Access};
use lab_cli::exit::{Class, Classify};
use lab_facts::Lab;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    RestoreTest,
    Status,
}

impl Action {
    /// `lab-backup`'s word for it.
    pub fn word(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::RestoreTest => "restore-test",
            Action::Status => "status",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{host} backs up nothing: none of its services in hosts/services.nix has a `backup` entry"
    )]
    NothingToBackUp { host: String },
    #[error("{host} has no backup repository `{name}` (its repositories: {known})")]
    UnknownRepository { host: String, name: String, known: String },
    #[error("the service registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Deploy(#[from] deploy::Error),
    #[error("{host} cannot be reached: {why}")]
    Unreachable { host: String, why: String },
    #[error("{host}: `lab-backup {action}` failed (its output is above)")]
    Failed { host: String, action: &'static str },
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::NothingToBackUp { .. } | Error::UnknownRepository { .. } => Class::Usage,
            Error::Deploy(e) => e.class(),
            _ => Class::Failure,
        }
    }
}

#[derive(Deserialize)]
struct Plan {
    repositories: Vec<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    name: String,
}

/// The host's repositories, from the registry (`null` when it keeps no state).
fn repositories(lab: &Lab, host: &str) -> Result<Vec<String>, Error> {
    let services = lab.root.join("lib/services");
    let expr = format!(
        "(import {} {{ }}).forHost {}",
        deploy::nix_path(&services),
        serde_json::to_string(host).expect("a string serializes")
    );
    let json = lab_facts::eval_expr_json(&format!("({expr}).backup"), &services)
        .map_err(|e| Error::Registry(e.to_string()))?;
    let plan: Option<Plan> = serde_json::from_slice(&json)
        .map_err(|e| Error::Registry(format!("the backup plan has an unexpected shape: {e}")))?;
    match plan {
        Some(p) => Ok(p.repositories.into_iter().map(|r| r.name).collect()),
        None => Err(Error::NothingToBackUp { host: host.to_string() }),
    }
}

/// The command the host runs: `lab-backup ACTION [REPOSITORY...]`, each
/// repository checked against the registry's.
pub fn command_line(
    host: &str,
    action: Action,
    wanted: &[String],
    known: &[String],
) -> Result<String, Error> {
    let mut line = format!("lab-backup {}", action.word());
    for name in wanted {
        if !known.contains(name) {
            return Err(Error::UnknownRepository {
                host: host.to_string(),
                name: name.clone(),
                known: known.join(", "),
            });
        }
        // Registry names are lower-case letters, digits and `-`.
        line.push(' ');
        line.push_str(name);
    }
    Ok(line)
}

/// Runs `lab-backup` on the host, its output streamed; fails when it does.
pub fn run(
    lab: &Lab,
    host: &str,
    action: Action,
    wanted: &[String],
    access: &Access,
) -> Result<(), Error> {
    lab.facts().map_err(deploy::Error::from)?.host(host).map_err(deploy::Error::from)?;
    let line = command_line(host, action, wanted, &repositories(lab, host)?)?;
    let remote = deploy::remote_for(lab, host, access).map_err(|e| match e {
        deploy::Error::NotDeployable { host, why } => Error::Unreachable { host, why },
        other => Error::Deploy(other),
    })?;
    let unreachable =
        |e: lab_cli::ToolError| Error::Unreachable { host: host.to_string(), why: e.to_string() };
    let out = if action == Action::Status {
        let out = remote.stream(&line, host).map_err(unreachable)?;
        print!("{}", out.text());
        out
    } else {
        // A backup or a restore test takes minutes: its report is shown as
        // it comes (on stderr, where streamed steps go).
        remote.stream(&format!("{line} 1>&2"), host).map_err(unreachable)?
    };
    if out.success() {
        Ok(())
    } else {
        Err(Error::Failed { host: host.to_string(), action: action.word() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_only_known_repositories() {
        let known = vec!["local".to_string(), "remote".to_string()];
        assert_eq!(
            command_line("luna", Action::RestoreTest, &[], &known).unwrap(),
            "lab-backup restore-test"
        );
        assert_eq!(
            command_line("luna", Action::Run, &["remote".into()], &known).unwrap(),
            "lab-backup run remote"
        );
        let err = command_line("luna", Action::Status, &["offsite".into()], &known)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "luna has no backup repository `offsite` (its repositories: local, remote)"
        );
    }
}
