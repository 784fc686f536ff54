//! `labprov enrol HOST`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use lab_cli::prompt::Confirm;
use lab_keys::secrets::AdminIdentity;
use provisioner::enrol::{self, Candidate, EnrolOptions};

use lab_cli::args::JsonArg;

/// Pin and record a host that made its own key at first boot, then sync.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov enrol nixpi --address 192.168.1.40\n  labprov enrol nixpi --address 192.168.1.40 --fingerprint SHA256:...\n  labprov enrol nixpi --address 192.168.1.40 --report /media/FIRMWARE/enrolment.txt"
)]
pub struct EnrolArgs {
    /// The host (as named in hosts/).
    host: String,
    /// Where the host answers SSH.
    #[arg(long)]
    address: String,
    /// The SSH port.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// Login user for the pinned check.
    #[arg(long, default_value = "root")]
    user: String,
    /// SSH private key for the login (default: ssh's own).
    #[arg(long, value_name = "PATH")]
    ssh_identity: Option<PathBuf>,
    /// The fingerprint shown on the host's console (SHA256:...).
    #[arg(long)]
    fingerprint: Option<String>,
    /// enrolment.txt from the host's firmware partition.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// The host key file read on the host.
    #[arg(long, hide = true, default_value = "/etc/ssh/ssh_host_ed25519_key.pub")]
    remote_key: String,
    /// Replace a different key already recorded for the host.
    #[arg(long)]
    replace: bool,
    /// Verify and show; record nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// The operator compares the fingerprint with the host's console.
fn confirm(c: &Candidate) -> enrol::Result<bool> {
    let context = format!(
        "{} at {} presents\n  fingerprint:   {}\n  age recipient: {}\nCompare with the host's console (or enrolment.txt).",
        c.host, c.address, c.fingerprint, c.age_recipient
    );
    let action = format!("trust this key for {}", c.host);
    let question = Confirm {
        context: &context,
        action: &action,
        word: "yes",
        without_terminal: "pass --fingerprint SHA256:...",
    };
    match question.ask(false) {
        Ok(()) => Ok(true),
        Err(lab_cli::prompt::Declined::NotConfirmed { .. }) => Ok(false),
        Err(lab_cli::prompt::Declined::NoTerminal { .. }) => Err(enrol::Error::NoTerminal),
        Err(lab_cli::prompt::Declined::Io(e)) => Err(enrol::Error::Io(e)),
    }
}

impl EnrolArgs {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let identity = AdminIdentity::from_env()?;
        let opts = EnrolOptions {
            host: self.host.clone(),
            address: self.address.clone(),
            port: self.port,
            user: self.user,
            ssh_identity: self.ssh_identity,
            fingerprint: self.fingerprint,
            report: self.report,
            remote_key: self.remote_key,
            replace: self.replace,
            dry_run: self.dry_run,
        };
        let done = enrol::enrol(&lab, &opts, &identity, &mut confirm)
            .with_context(|| format!("enrol {} at {}", self.host, self.address))?;
        lab_cli::output::report(json, &done, |done| {
            let mut s = format!(
                "{}: {} ({})\n",
                done.candidate.host, done.candidate.fingerprint, done.candidate.age_recipient
            );
            match &done.recorded {
                None => s.push_str("dry run: verified over pinned SSH; nothing recorded\n"),
                Some(r) => s.push_str(&format!(
                    "key {}\n",
                    serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                )),
            }
            if let Some(report) = &done.sync {
                s.push_str(&crate::secrets::render_report(report));
            }
            s
        })
    }
}
