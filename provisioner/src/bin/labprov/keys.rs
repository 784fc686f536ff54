//! `labprov keys new|show|derive|rotate|push|recovery`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lab_keys::secrets::{ops, recovery, AdminIdentity, KeyInfo, LabKeys, LabLock, SyncOptions};
use lab_keys::Zeroizing;

use lab_cli::args::JsonArg;
use lab_cli::prompt::Confirm;
use provisioner::deploy::Access;
use provisioner::keypush;

/// Host keys: new, show, derive (ssh-to-age), rotate, push; the lab's recovery key.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    New(HostArgs),
    Show(ShowArgs),
    Derive(DeriveArgs),
    Rotate(RotateArgs),
    Push(PushArgs),
    #[command(subcommand)]
    Recovery(RecoveryCommand),
}

/// The lab's offline recovery key: with it alone every secret and every lab-held host key can be recovered.
#[derive(Subcommand, Debug)]
pub enum RecoveryCommand {
    New(RecoveryNewArgs),
    Check(RecoveryCheckArgs),
}

/// Make the recovery key: print the secret once (text and QR code), write only its recipient to hosts/recovery-age.pub.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  labprov keys recovery new\n\
                  Then: write the secret down or print it and keep it offline, check the copy with\n\
                  `labprov keys recovery check`, run `labprov secrets sync` and `labprov keys rotate --all`.")]
pub struct RecoveryNewArgs {
    /// Replace the lab's existing recovery key (the old one stops working after the next sync and rotate).
    #[arg(long)]
    replace: bool,
    /// Draw the QR code for a terminal with a light background (dark modules as blocks).
    #[arg(long)]
    light_background: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// Check that a recovery key (typed from paper, or a file) is the lab's: its recipient must be hosts/recovery-age.pub's.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov keys recovery check            # paste or type the AGE-SECRET-KEY-1... line, then Ctrl-D\n  labprov keys recovery check --identity /run/user/1000/recovery.txt   # typed onto a tmpfs"
)]
pub struct RecoveryCheckArgs {
    /// The recovery identity file (`-` for stdin, the default).
    #[arg(long, value_name = "FILE", default_value = "-")]
    identity: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// Make a host's ed25519 key: private half age-encrypted to the admins under secrets/, public half and age recipient beside the host.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  labprov keys new nixpi")]
pub struct HostArgs {
    /// The host (as named in hosts/).
    host: String,
    #[command(flatten)]
    json: JsonArg,
}

/// Show a host's public key, fingerprint and age recipient.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  labprov keys show nixpi\n  labprov keys show nixpi --json")]
pub struct ShowArgs {
    /// The host (as named in hosts/).
    host: String,
    #[command(flatten)]
    json: JsonArg,
}

/// Any ed25519 key to age: a public key gives the recipient, a private key the identity (like ssh-to-age).
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub\n  labprov keys derive --ssh-key ~/.ssh/id_ed25519 > ~/.config/sops/age/keys.txt"
)]
pub struct DeriveArgs {
    /// The key file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    ssh_key: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// Replace a host's key (or every lab-held one), re-encrypt every secrets file; the old key can decrypt nothing.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  labprov keys rotate nixpi\n  labprov keys rotate nixpi --dry-run     # what would change; writes nothing\n  \
                  labprov keys rotate --all               # after an admin key was lost or removed\n\n\
                  Then put the new key on the running host and deploy (its secrets are encrypted to the new key):\n  \
                  labprov keys push nixpi && labprov deploy nixpi\n\
                  The key the host still runs is kept in hosts/HOST/ssh_host_ed25519_key.pub.previous until the push."
)]
pub struct RotateArgs {
    /// The host (as named in hosts/).
    #[arg(required_unless_present = "all")]
    host: Option<String>,
    /// Every host whose private key the lab holds, then one sync (all or nothing).
    #[arg(long, conflicts_with = "host")]
    all: bool,
    /// Show what would change; write nothing and keep the old key.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// Put a rotated key on the running host (pinned SSH), so it presents the key the lab records; then deploy.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    labprov keys push nixpi                 # after `labprov keys rotate nixpi`\n  \
    labprov keys push --all --yes           # every host with a rotated key not on it yet\n  \
    labprov keys push nixpi --dry-run       # which key the host runs and what would be done\n\n\
Each host is reached pinned to its new key (already there: only the lab's record of the old key\n\
is removed), else pinned to the key it ran before the rotation\n\
(hosts/HOST/ssh_host_ed25519_key.pub.previous). The private key goes over that connection on\n\
stdin, replaces /etc/ssh/ssh_host_ed25519_key (the old pair kept aside), sshd is reloaded if\n\
sshd.service is active, and a new connection pinned to the new key must succeed; otherwise the\n\
old pair is put back. Needs the admin age identity (SOPS_AGE_KEY_FILE, ...) to decrypt the key.\n\
Then deploy the host: its secrets are encrypted to the new key.")]
pub struct PushArgs {
    /// The hosts (as named in hosts/).
    #[arg(required_unless_present = "all")]
    hosts: Vec<String>,
    /// Every host whose rotated key has not been pushed yet (with a .previous record).
    #[arg(long, conflicts_with = "hosts")]
    all: bool,
    /// Connect (pinned) and show which key each host runs and what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask before replacing the hosts' keys.
    #[arg(long)]
    yes: bool,
    /// SSH private key for the root login (default: ssh's own and the agent).
    #[arg(long, value_name = "PATH")]
    ssh_identity: Option<PathBuf>,
    /// The SSH port of every host.
    #[arg(long, default_value_t = 22)]
    port: u16,
    #[command(flatten)]
    json: JsonArg,
}

/// `keys push --json`.
#[derive(serde::Serialize)]
struct PushReport<'a> {
    dry_run: bool,
    hosts: &'a [keypush::HostPush],
}

/// The lab's lock for a command that changes its keys or secrets (none for
/// a dry run, which writes nothing); taken before the files are read.
pub fn lab_lock(lab: &lab_facts::Lab, dry_run: bool, what: &str) -> Result<Option<LabLock>> {
    Ok(if dry_run { None } else { Some(LabLock::take(&lab.root, what)?) })
}

impl PushArgs {
    fn run(self, lab: Option<&Path>) -> Result<()> {
        let json = self.json.init();
        let lab = lab_facts::Lab::find(lab)?;
        let _lock = lab_lock(&lab, self.dry_run, "keys push")?;
        let opts = keypush::PushOptions {
            hosts: self.hosts,
            all: self.all,
            access: Access { user: "root".into(), port: self.port, identity: self.ssh_identity },
        };
        let plan = keypush::plan(&lab, &opts, &AdminIdentity::from_env)?;
        let hosts = if self.dry_run {
            plan.hosts.clone()
        } else {
            let pushes = plan.pushes();
            if !pushes.is_empty() {
                let mut context = String::from("New host keys for running hosts:\n");
                for h in &pushes {
                    context.push_str(&format!(
                        "  {} ({}): {} -> {}\n",
                        h.host, h.address, h.runs, h.key
                    ));
                }
                for h in plan.skipped() {
                    context.push_str(&format!("  left out: {}\n", h.message));
                }
                let names: Vec<&str> = pushes.iter().map(|h| h.host.as_str()).collect();
                Confirm {
                    context: &context,
                    action: &format!("push the new keys to {}", names.join(", ")),
                    word: "yes",
                    without_terminal: "pass --yes",
                }
                .ask(self.yes)?;
            }
            keypush::apply(&lab, plan, &mut |line| lab_cli::output::say(line))?
        };
        let report = PushReport { dry_run: self.dry_run, hosts: &hosts };
        lab_cli::output::report(json, &report, |r| render_push(r.hosts, r.dry_run, self.all))?;
        let skipped: Vec<&str> = hosts
            .iter()
            .filter(|h| h.outcome == keypush::Outcome::Skipped)
            .map(|h| h.host.as_str())
            .collect();
        if !skipped.is_empty() {
            anyhow::bail!(
                "not pushed: {} (why is above; nothing changed for them): once they answer, \
                 `labprov keys push {}`",
                skipped.join(", "),
                skipped.join(" ")
            );
        }
        Ok(())
    }
}

fn render_push(hosts: &[keypush::HostPush], dry_run: bool, all: bool) -> String {
    use keypush::{Action, Outcome};
    let mut s = String::new();
    if hosts.is_empty() && all {
        s.push_str("no host has a rotated key waiting to be pushed (no hosts/*/ssh_host_ed25519_key.pub.previous)\n");
    }
    for h in hosts {
        let line = match (dry_run, h.action, h.outcome) {
            (true, Action::Push, _) => format!(
                "{}: runs the previous key {}; would put the new key {} in {} (dry run: nothing changed)",
                h.host,
                h.runs,
                h.key,
                keypush::HOST_KEY
            ),
            (true, Action::ForgetPrevious, _) => format!(
                "{}: already runs its new key {}; would remove the lab's record of the previous one (dry run: nothing changed)",
                h.host, h.key
            ),
            (_, Action::Skip, _) => format!("left out: {}", h.message),
            (_, Action::UpToDate, _) | (_, _, Outcome::UpToDate) => {
                format!("{} already runs its recorded key ({})", h.host, h.key)
            }
            _ => h.message.clone(),
        };
        s.push_str(&line);
        s.push('\n');
    }
    let changed: Vec<&str> = hosts
        .iter()
        .filter(|h| matches!(h.outcome, Outcome::Pushed | Outcome::Recorded))
        .map(|h| h.host.as_str())
        .collect();
    for host in &changed {
        s.push_str(&format!(
            "deploy {host} now (labprov deploy {host}): its secrets are encrypted to the new key; \
             until the new generation is active a reboot would not decrypt them\n"
        ));
    }
    s
}

impl KeysCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            KeysCommand::New(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let _lock = lab_lock(&lab, false, &format!("keys new {}", a.host))?;
                let keys = LabKeys::load(&lab)?;
                // Only needed to resume an interrupted run.
                let identity = AdminIdentity::from_env().ok();
                let made = ops::new_key(&lab.root, &keys, &a.host, identity.as_ref())?;
                lab_cli::output::report(json, &made, |made| {
                    let mut s = String::new();
                    if !made.created {
                        s.push_str(&format!(
                            "{} already has this key (nothing changed):\n",
                            a.host
                        ));
                    }
                    s.push_str(&render_info(&made.key));
                    if made.created {
                        s.push_str(
                            "next: `labprov secrets sync` so the host can read its secrets\n",
                        );
                    }
                    s
                })
            }
            KeysCommand::Show(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let info = ops::show(&lab.root, &LabKeys::load(&lab)?, &a.host)?;
                lab_cli::output::report(json, &info, render_info)
            }
            KeysCommand::Derive(a) => {
                let json = a.json.init();
                let d = provisioner::keys::derive(&a.ssh_key)?;
                lab_cli::output::report(json, &d, |d| match &d.age_identity {
                    Some(id) => format!("# recipient: {}\n{id}\n", d.age_recipient),
                    None => format!("{}\n", d.age_recipient),
                })
            }
            KeysCommand::Rotate(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let _lock = lab_lock(&lab, a.dry_run, "keys rotate")?;
                let identity = AdminIdentity::from_env()?;
                let mut opts = SyncOptions::new(&identity);
                opts.dry_run = a.dry_run;
                let dry = if a.dry_run { " (dry run: nothing written, old key kept)" } else { "" };
                let Some(host) = a.host.filter(|_| !a.all) else {
                    let r = ops::rotate_all(&lab, &opts)?;
                    return lab_cli::output::report(json, &r, |r| {
                        let mut s = String::new();
                        for h in &r.hosts {
                            s.push_str(&format!(
                                "{}: {} -> {}{dry}\n",
                                h.new.host, h.old.fingerprint, h.new.fingerprint
                            ));
                        }
                        if r.hosts.is_empty() {
                            s.push_str("no host key is held by the lab (enrolled hosts keep theirs); only the secrets were synced\n");
                        }
                        s.push_str(&crate::secrets::render_report(&r.sync));
                        if !a.dry_run && !r.hosts.is_empty() {
                            let names: Vec<&str> =
                                r.hosts.iter().map(|h| h.new.host.as_str()).collect();
                            s.push_str(&format!(
                                "put the new keys on the hosts and deploy them now (`labprov keys push --all`, \
                                 then `labprov deploy {}`): until then those hosts cannot read their secrets\n",
                                names.join(" ")
                            ));
                        }
                        s
                    });
                };
                let r = ops::rotate(&lab, &host, &opts)?;
                lab_cli::output::report(json, &r, |r| {
                    let mut s =
                        format!("{host}: {} -> {}{dry}\n", r.old.fingerprint, r.new.fingerprint);
                    s.push_str(&crate::secrets::render_report(&r.sync));
                    if !a.dry_run {
                        s.push_str(&format!(
                            "put the new key on {host} and deploy it now (`labprov keys push {host}`, then \
                             `labprov deploy {host}`): until then it cannot read its secrets\n",
                        ));
                    }
                    s
                })
            }
            KeysCommand::Push(a) => a.run(lab),
            KeysCommand::Recovery(c) => c.run(lab),
        }
    }
}

/// Shows the recovery secret: any failure to write all of it (a closed
/// pipe too) is an error, and then nothing is recorded.
fn show_secret(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).context(
        "the recovery key could not be shown in full (stdout), so it was not recorded; \
         run the command again where its output reaches you",
    )
}

impl RecoveryCommand {
    fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            RecoveryCommand::New(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let _lock = lab_lock(&lab, false, "keys recovery new")?;
                let made = recovery::new_recovery(&lab.root, a.replace)?;
                if json {
                    // The one place the secret is shown, as asked for.
                    let text = Zeroizing::new(
                        serde_json::to_string_pretty(&serde_json::json!({
                            "identity": made.identity.as_str(),
                            "recipient": made.recipient,
                            "file": made.file,
                            "replaced": made.replaced,
                        }))? + "\n",
                    );
                    show_secret(text.as_bytes())?;
                    recovery::record(&made)?;
                    return Ok(());
                }
                let qr = recovery::qr(&made.identity, a.light_background);
                let text = Zeroizing::new(format!(
                    "The lab's recovery key. It is shown only now and stored nowhere:\n\
                     write it down or print it, and keep it offline, away from the lab.\n\n\
                     # public key: {recipient}\n{identity}\n\n{qr}\n\n\
                     {file} records the public recipient only{replaced}.\n\
                     Next:\n  \
                     1. Check your copy: `labprov keys recovery check` (type or paste the line, then Ctrl-D).\n  \
                     2. `labprov secrets sync`: every secrets file gains the recovery key.\n  \
                     3. `labprov keys rotate --all`: every lab-held host key is encrypted to it too\n     \
                        (new host keys: `labprov keys push --all`, then `labprov deploy --all`).\n  \
                     4. Commit hosts/recovery-age.pub, .sops.yaml and the re-encrypted files.\n",
                    recipient = made.recipient,
                    identity = made.identity.as_str(),
                    qr = qr.as_str(),
                    file = made.file.display(),
                    replaced = if made.replaced {
                        "; the old recovery key still opens the files until steps 2 and 3 ran"
                    } else {
                        ""
                    },
                ));
                show_secret(text.as_bytes())?;
                recovery::record(&made)?;
                Ok(())
            }
            RecoveryCommand::Check(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let mut text = Zeroizing::new(String::new());
                let what = if a.identity == Path::new("-") {
                    use std::io::IsTerminal;
                    if std::io::stdin().is_terminal() {
                        lab_cli::output::say(
                            "type or paste the recovery key (AGE-SECRET-KEY-1...), then Ctrl-D:",
                        );
                    }
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("read the recovery key from stdin")?;
                    "stdin".to_string()
                } else {
                    std::fs::File::open(&a.identity)
                        .and_then(|mut f| f.read_to_string(&mut text))
                        .with_context(|| format!("read {}", a.identity.display()))?;
                    a.identity.display().to_string()
                };
                let recipient = recovery::check(&lab.root, &text, &what)?;
                lab_cli::output::report(
                    json,
                    &serde_json::json!({"recipient": recipient, "matches": true}),
                    |_| format!("this is the lab's recovery key ({recipient})\n"),
                )
            }
        }
    }
}

pub fn render_info(info: &KeyInfo) -> String {
    let stored = match &info.encrypted_key {
        Some(p) => format!("{} (age-encrypted to the admins)", p.display()),
        None => "none in the lab (the key lives only on the host)".to_string(),
    };
    format!(
        "host:          {}\npublic key:    {}\nfingerprint:   {}\nage recipient: {}\nprivate key:   {}\n",
        info.host, info.public_key, info.fingerprint, info.age_recipient, stored
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::KeysCommand;

    #[derive(Parser)]
    struct Keys {
        #[command(subcommand)]
        command: KeysCommand,
    }

    #[test]
    fn push_takes_hosts_or_all() {
        for line in [
            "t push nixpi",
            "t push nixpi luna --yes --ssh-identity /tmp/id --port 2222",
            "t push --all --dry-run --json",
        ] {
            Keys::try_parse_from(line.split(' ')).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        for bad in ["t push", "t push nixpi --all", "t push --all --port x"] {
            assert!(Keys::try_parse_from(bad.split(' ')).is_err(), "{bad} must be a usage error");
        }
    }

    #[test]
    fn the_push_report_says_what_to_do_next() {
        use provisioner::keypush::{Action, HostPush, Outcome};
        let host = |action, outcome| HostPush {
            host: "nixpi".into(),
            address: "192.0.2.4".into(),
            action,
            outcome,
            runs: "SHA256:old".into(),
            key: "SHA256:new".into(),
            previous: Some("SHA256:old".into()),
            sshd: None,
            message: "nixpi runs its new key SHA256:new (sshd reloaded)".into(),
        };
        let done = super::render_push(&[host(Action::Push, Outcome::Pushed)], false, false);
        assert!(done.starts_with("nixpi runs its new key SHA256:new"), "{done}");
        assert!(done.contains("deploy nixpi now (labprov deploy nixpi)"), "{done}");
        let dry = super::render_push(&[host(Action::Push, Outcome::Planned)], true, false);
        assert!(
            dry.contains("would put the new key SHA256:new") && !dry.contains("deploy"),
            "{dry}"
        );
        let same = super::render_push(&[host(Action::UpToDate, Outcome::UpToDate)], false, false);
        assert_eq!(same, "nixpi already runs its recorded key (SHA256:new)\n");
        assert!(super::render_push(&[], false, true).starts_with("no host has a rotated key"));
    }
}
