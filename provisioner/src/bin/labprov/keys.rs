//! `labprov keys new|show|derive|rotate|recovery`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lab_keys::secrets::{ops, recovery, AdminIdentity, KeyInfo, LabKeys, SyncOptions};
use lab_keys::Zeroizing;

use lab_cli::args::JsonArg;

/// Host keys: new, show, derive (ssh-to-age), rotate; the lab's recovery key.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    New(HostArgs),
    Show(ShowArgs),
    Derive(DeriveArgs),
    Rotate(RotateArgs),
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
    after_help = "Examples:\n  labprov keys recovery check            # paste or type the AGE-SECRET-KEY-1... line, then Ctrl-D\n  labprov keys recovery check --identity /media/usb/recovery.txt"
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
                  labprov keys rotate --all               # after an admin key was lost or removed\n\
                        Deploy the new key to the host right after (labprov install / a new image)."
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

impl KeysCommand {
    pub fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            KeysCommand::New(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
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
                                "deploy the new keys now ({}): until then those hosts cannot read their secrets\n",
                                names.join(", ")
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
                            "deploy the new key to {host} now: until then it cannot read its secrets\n",
                        ));
                    }
                    s
                })
            }
            KeysCommand::Recovery(c) => c.run(lab),
        }
    }
}

impl RecoveryCommand {
    fn run(self, lab: Option<&Path>) -> Result<()> {
        match self {
            RecoveryCommand::New(a) => {
                let json = a.json.init();
                let lab = lab_facts::Lab::find(lab)?;
                let made = recovery::new_recovery(&lab.root, a.replace)?;
                if json {
                    // The one place the secret is shown, as asked for.
                    return lab_cli::output::json(&serde_json::json!({
                        "identity": made.identity.as_str(),
                        "recipient": made.recipient,
                        "file": made.file,
                        "replaced": made.replaced,
                    }));
                }
                let qr = recovery::qr(&made.identity, a.light_background);
                let text = Zeroizing::new(format!(
                    "The lab's recovery key. It is shown only now and stored nowhere:\n\
                     write it down or print it, and keep it offline, away from the lab.\n\n\
                     # public key: {recipient}\n{identity}\n\n{qr}\n\n\
                     Written: {file} (the public recipient only){replaced}.\n\
                     Next:\n  \
                     1. Check your copy: `labprov keys recovery check` (type or paste the line, then Ctrl-D).\n  \
                     2. `labprov secrets sync`: every secrets file gains the recovery key.\n  \
                     3. `labprov keys rotate --all`: every lab-held host key is encrypted to it too\n     \
                        (new host keys: deploy them right after).\n  \
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
                lab_cli::output::stdout(text.as_bytes())
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
