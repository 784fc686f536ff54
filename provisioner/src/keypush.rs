//! `labprov keys push`: puts a rotated host key on the running host.
//!
//! `keys rotate` writes the new key into the lab and records the key the
//! host still runs (`hosts/<host>/ssh_host_ed25519_key.pub.previous`). Until
//! the host has the new key, every pinned connection (deploy, status) fails
//! and the new generation's secrets, encrypted to the new key, could not be
//! read there. A push connects pinned to the new key first (a re-run after a
//! crash finds the job done), else pinned to the previous one; over that one
//! connection a small root script receives the private key on stdin (never
//! in argv, never in a local file), swaps the pair in
//! `/etc/ssh` (the old pair kept aside), makes sshd present it, and then
//! waits. Only when a fresh connection pinned to the new key succeeds is the
//! swap kept; otherwise, or when the connection drops, the script puts the
//! old pair back: the host always presents a key the lab knows.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use lab_cli::exit::{Class, Classify};
use lab_facts::Lab;
use lab_keys::secrets::{ops, AdminIdentity};
use lab_keys::{HostKey, PublicHostKey, Zeroizing};
use serde::Serialize;

use crate::deploy::Access;
use crate::ssh::{quote, Pinned, Target};

/// Where NixOS (and OpenSSH's defaults) keep the ed25519 host key.
pub const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
/// NixOS's unit for sshd (`services.openssh`).
pub const SSHD_UNIT: &str = "sshd.service";
/// How long the new key may take to answer after the swap (sshd's reload
/// closes and reopens its listener).
const VERIFY_FOR: Duration = Duration::from_secs(15);
/// Ends the private key on the script's stdin (never a line of a key).
const END_OF_KEY: &str = "labprov-end-of-key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Facts(#[from] lab_facts::Error),
    #[error(transparent)]
    Keys(#[from] lab_keys::secrets::Error),
    #[error("{host}: an earlier push is still waiting for its answer there (or was cut off less than a minute ago) and may put the previous key back; run the same command again in a minute")]
    PushPending { host: String },
    #[error("name hosts to push keys to, or pass --all")]
    NoHosts,
    #[error("{host} has no address in its facts.nix (hosts/{host}/facts.nix): add `address = \"...\";` so labprov can reach it; nothing was changed")]
    NoAddress { host: String },
    #[error("{host} has no recorded key (hosts/{host}/ssh_host_ed25519_key.pub): `labprov keys new {host}` or `labprov enrol {host}`; nothing was changed")]
    NoRecordedKey { host: String },
    #[error("{host}: its recorded key is unusable: {why}")]
    BadKey { host: String, why: String },
    #[error("{} ({}) cannot be reached pinned to its new key ({new}) nor to the key it ran before the rotation ({previous}): it {}; nothing was changed. {}", .at.host, .at.address, .at.why, hint(&.at.why, &.at.host))]
    NeitherKey { at: Box<Unreached>, new: String, previous: String },
    #[error("{} ({}) cannot be reached pinned to its recorded key ({fingerprint}): it {}; no rotation awaits a push (no hosts/{}/ssh_host_ed25519_key.pub.previous) and nothing was changed. {}", .at.host, .at.address, .at.why, .at.host, hint(&.at.why, &.at.host))]
    NotRecorded { at: Box<Unreached>, fingerprint: String },
    #[error("{host}: cannot start ssh: {source}")]
    Ssh { host: String, source: std::io::Error },
    #[error("{host}: putting the new key in place failed ({why}); the host keeps its previous key ({previous}) and nothing was changed in the lab")]
    Swap { host: String, previous: String, why: String },
    #[error("{host}: with the new key in place, a connection pinned to it failed ({why}); the previous key ({previous}) was put back and the lab still records the push as pending: find why sshd does not present {key}, then run `labprov keys push {host}` again")]
    NewKeyRefused { host: String, key: String, previous: String, why: String },
    #[error("{host}: {why}; the host may present {new} or {previous}: try `labprov keys push {host} --dry-run`, else on its console as root: `mv {key}.labprov-old {key}; mv {key}.labprov-old.pub {key}.pub; systemctl restart sshd`", key = HOST_KEY)]
    Restore { host: String, new: String, previous: String, why: String },
    #[error(transparent)]
    Tool(#[from] lab_cli::ToolError),
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::NoHosts => Class::Usage,
            Error::Facts(lab_facts::Error::UnknownHost { .. }) => Class::Usage,
            // A host answered, but with a key the lab does not know.
            Error::NeitherKey { at, .. } | Error::NotRecorded { at, .. } if at.why == OTHER_KEY => {
                Class::Mismatch
            }
            Error::Tool(e) => e.class(),
            _ => Class::Failure,
        }
    }
}

impl Error {
    /// A host that cannot be pushed to now, which `--all` leaves out.
    fn host_unreachable(&self) -> bool {
        matches!(
            self,
            Error::NoAddress { .. }
                | Error::NoRecordedKey { .. }
                | Error::NeitherKey { .. }
                | Error::NotRecorded { .. }
                | Error::PushPending { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A host that did not answer a pinned connection, and why (words that
/// follow "it": "does not answer (...)", "answers with another key").
#[derive(Debug)]
pub struct Unreached {
    pub host: String,
    pub address: String,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub hosts: Vec<String>,
    /// Every host with a recorded previous key.
    pub all: bool,
    pub access: Access,
}

/// What a host needs, as the connections found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// It runs its recorded key and no rotation waits: nothing to do.
    UpToDate,
    /// It runs the new key already (an earlier push got that far): only the
    /// lab's record of the previous key is removed.
    ForgetPrevious,
    /// It runs the previous key: the new one is put on it.
    Push,
    /// With `--all`: it cannot be pushed to now (it does not answer, has no
    /// address...); the others go on, and the command fails at the end.
    Skip,
}

/// What happened to a host (or, planned, would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Planned,
    UpToDate,
    /// The new key is in place and answers; the record is removed.
    Pushed,
    /// The host had the new key already; the record is removed.
    Recorded,
    /// Left out (`--all`), nothing changed for it; `message` says why.
    Skipped,
}

/// One host of a push.
#[derive(Debug, Clone, Serialize)]
pub struct HostPush {
    pub host: String,
    pub address: String,
    pub action: Action,
    pub outcome: Outcome,
    /// The fingerprint the host presented when it was asked.
    pub runs: String,
    /// The key the lab records (the new one).
    pub key: String,
    /// The key recorded as the one the host ran before the rotation.
    pub previous: Option<String>,
    /// How sshd came to present the new key: `reloaded` (systemctl) or
    /// `per-connection` (sshd reads its host keys for each connection).
    pub sshd: Option<String>,
    pub message: String,
}

/// The hosts checked and what each needs; [`apply`] carries it out.
pub struct Plan {
    pub hosts: Vec<HostPush>,
    /// None for a skipped host.
    work: Vec<Option<Work>>,
}

impl Plan {
    /// The hosts that would get a new key (the question asks about these).
    pub fn pushes(&self) -> Vec<&HostPush> {
        self.hosts.iter().filter(|h| h.action == Action::Push).collect()
    }

    /// The hosts `--all` leaves out.
    pub fn skipped(&self) -> Vec<&HostPush> {
        self.hosts.iter().filter(|h| h.action == Action::Skip).collect()
    }
}

/// What a push needs that is not shown: the pinned connections and the key.
struct Work {
    to_new: Pinned,
    to_previous: Option<Pinned>,
    material: Option<HostKey>,
}

/// The hosts a push looks at: the named ones, or with `--all` those with a
/// recorded previous key (`have_previous`), in the facts' order.
pub fn select(
    names: &[String],
    all: bool,
    known: &[String],
    have_previous: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    if all {
        return Ok(known.iter().filter(|h| have_previous(h)).cloned().collect());
    }
    if names.is_empty() {
        return Err(Error::NoHosts);
    }
    let mut seen = std::collections::BTreeSet::new();
    Ok(names.iter().filter(|n| seen.insert(n.as_str())).cloned().collect())
}

/// The first phase: for each host, connect pinned to the key the lab
/// records, then to the previous one, and decrypt the new private key where
/// a push is needed (`identity` is asked for only then). Writes nothing,
/// here or on a host.
pub fn plan(
    lab: &Lab,
    opts: &PushOptions,
    identity: &dyn Fn() -> lab_keys::secrets::Result<AdminIdentity>,
) -> Result<Plan> {
    let facts = lab.facts()?;
    let known: Vec<String> = facts.hosts.keys().cloned().collect();
    let previous_of = |h: &str| lab_keys::secrets::previous_key_path(&lab.root, h).is_file();
    let names = select(&opts.hosts, opts.all, &known, &previous_of)?;
    let mut admin: Option<AdminIdentity> = None;
    let mut plan = Plan { hosts: Vec::new(), work: Vec::new() };
    for name in names {
        match plan_host(lab, opts, identity, &facts, &mut admin, name.clone()) {
            Ok((push, work)) => {
                plan.hosts.push(push);
                plan.work.push(Some(work));
            }
            // `--all` goes on past a host it cannot reach now, as deploy
            // --all does: that host keeps its record and a re-run finds it.
            Err(e) if opts.all && e.host_unreachable() => {
                let address = facts.host(&name)?.address.clone().unwrap_or_default();
                plan.hosts.push(HostPush {
                    host: name,
                    address,
                    action: Action::Skip,
                    outcome: Outcome::Skipped,
                    runs: String::new(),
                    key: String::new(),
                    previous: None,
                    sshd: None,
                    message: e.to_string(),
                });
                plan.work.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(plan)
}

/// One host's part of [`plan`].
fn plan_host(
    lab: &Lab,
    opts: &PushOptions,
    identity: &dyn Fn() -> lab_keys::secrets::Result<AdminIdentity>,
    facts: &lab_facts::Facts,
    admin: &mut Option<AdminIdentity>,
    name: String,
) -> Result<(HostPush, Work)> {
    {
        let h = facts.host(&name)?;
        let address = h.address.clone().ok_or_else(|| Error::NoAddress { host: name.clone() })?;
        let recorded =
            h.ssh_host_key.as_deref().ok_or_else(|| Error::NoRecordedKey { host: name.clone() })?;
        let recorded = PublicHostKey::parse(recorded)
            .map_err(|e| Error::BadKey { host: name.clone(), why: e.to_string() })?;
        let previous = ops::previous_key(&lab.root, &name)?;
        let target = Target {
            address: address.clone(),
            port: opts.access.port,
            user: opts.access.user.clone(),
            identity: opts.access.identity.clone(),
        };
        let alias = format!("labprov-host-{name}");
        let pin = |key: &PublicHostKey| {
            Pinned::new(&target, &alias, key)
                .map_err(|source| Error::Ssh { host: name.clone(), source })
        };
        let to_new = pin(&recorded)?;
        let mut push = HostPush {
            host: name.clone(),
            address: address.clone(),
            action: Action::UpToDate,
            outcome: Outcome::Planned,
            runs: recorded.fingerprint(),
            key: recorded.fingerprint(),
            previous: previous.as_ref().map(PublicHostKey::fingerprint),
            sshd: None,
            message: format!("{name} already runs its recorded key"),
        };
        let mut work = Work { to_new, to_previous: None, material: None };
        match (answers(&work.to_new)?, previous) {
            (Ok(()), None) => {}
            (Ok(()), Some(old)) => {
                // The old pair kept aside on the host means a push is still
                // waiting for its answer (at most a minute): it may yet put
                // the previous key back, so the lab must keep recording it.
                let pending = work
                    .to_new
                    .run(&format!("test -e {}", quote(&format!("{HOST_KEY}.labprov-old"))), None)
                    .map_err(|e| Error::Swap {
                        host: name.clone(),
                        previous: old.fingerprint(),
                        why: e.to_string(),
                    })?;
                if pending.success() {
                    return Err(Error::PushPending { host: name });
                }
                push.action = Action::ForgetPrevious;
                push.message = format!(
                    "{name} already runs its new key (an earlier push got that far): \
                     only the lab's record of the previous key is removed"
                );
            }
            (Err(why), None) => {
                return Err(Error::NotRecorded {
                    at: Box::new(Unreached { host: name, address, why }),
                    fingerprint: recorded.fingerprint(),
                });
            }
            (Err(_), Some(old)) => {
                let to_previous = pin(&old)?;
                if let Err(why) = answers(&to_previous)? {
                    return Err(Error::NeitherKey {
                        at: Box::new(Unreached { host: name, address, why }),
                        new: recorded.fingerprint(),
                        previous: old.fingerprint(),
                    });
                }
                if admin.is_none() {
                    *admin = Some(identity()?);
                }
                let identity = admin.as_ref().expect("set just above");
                // Checks that it is the key the facts record.
                work.material =
                    Some(lab_keys::secrets::injection_material_with(&lab.root, &name, identity)?);
                work.to_previous = Some(to_previous);
                push.action = Action::Push;
                push.runs = old.fingerprint();
                push.message = format!(
                    "{name} runs the previous key {}: the new key {} goes to {HOST_KEY}",
                    old.fingerprint(),
                    recorded.fingerprint()
                );
            }
        }
        Ok((push, work))
    }
}

/// Why a pinned connection failed when the host presents another key.
const OTHER_KEY: &str = "answers with another key";
/// Why, when the host is reached but does not let us in.
const REFUSED: &str = "refuses the login (Permission denied)";

/// Whether the host answers a pinned connection: Ok, or why not in words
/// that follow "it" ("does not answer (...)", [`OTHER_KEY`]).
fn answers(pinned: &Pinned) -> Result<Result<(), String>> {
    let out = pinned.run("true", None)?;
    if out.success() {
        return Ok(Ok(()));
    }
    Ok(Err(failure(&out.stderr)))
}

/// ssh's stderr in the words of the error messages.
pub fn failure(stderr: &str) -> String {
    let key_changed = ["Host key verification failed", "HOST IDENTIFICATION HAS CHANGED"]
        .iter()
        .any(|s| stderr.contains(s));
    if key_changed {
        return OTHER_KEY.to_string();
    }
    if stderr.contains("Permission denied") {
        return REFUSED.to_string();
    }
    let last = stderr.trim().lines().last().unwrap_or("").trim();
    if last.is_empty() {
        "does not answer".to_string()
    } else {
        format!("does not answer ({last})")
    }
}

fn hint(why: &str, host: &str) -> String {
    if why == REFUSED {
        format!(
            "This machine's SSH key is not one {host} lets in as root: log in from a machine whose key \
             is in hosts/admins.nix sshKeys (as deployed), or use --ssh-identity"
        )
    } else if why == OTHER_KEY {
        format!(
            "Check that the address is {host}'s, then compare the key on its console \
             (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)"
        )
    } else {
        format!("Bring {host} up (or fix its address in hosts/{host}/facts.nix) and run the same command again")
    }
}

/// The second phase: each host in turn; stops at the first failure (hosts
/// done before stay done, and a re-run finds them so).
pub fn apply(lab: &Lab, plan: Plan, say: &mut dyn FnMut(&str)) -> Result<Vec<HostPush>> {
    let mut done = Vec::new();
    for (mut push, work) in plan.hosts.into_iter().zip(plan.work) {
        let Some(work) = work else {
            done.push(push);
            continue;
        };
        match push.action {
            Action::Skip => {}
            Action::UpToDate => push.outcome = Outcome::UpToDate,
            Action::ForgetPrevious => {
                ops::forget_previous_key(&lab.root, &push.host)?;
                push.outcome = Outcome::Recorded;
            }
            Action::Push => {
                say(&format!("{}: putting the new key {} in place", push.host, push.key));
                let how = swap(&push, &work)?;
                ops::forget_previous_key(&lab.root, &push.host)?;
                push.outcome = Outcome::Pushed;
                push.message = format!(
                    "{} runs its new key {} (sshd {})",
                    push.host,
                    push.key,
                    how.describe()
                );
                push.sshd = Some(how.name().to_string());
            }
        }
        done.push(push);
    }
    Ok(done)
}

/// How sshd came to present the new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sshd {
    Reloaded,
    PerConnection,
}

impl Sshd {
    pub fn name(self) -> &'static str {
        match self {
            Sshd::Reloaded => "reloaded",
            Sshd::PerConnection => "per-connection",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Sshd::Reloaded => "reloaded",
            Sshd::PerConnection => "reads its host keys per connection",
        }
    }
}

/// The host's words on the script's stdout, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Swapped(Sshd),
    Kept,
    Restored,
    Other(String),
}

pub fn parse_said(line: &str) -> Said {
    match line.trim() {
        "swapped reloaded" => Said::Swapped(Sshd::Reloaded),
        "swapped per-connection" => Said::Swapped(Sshd::PerConnection),
        "kept" => Said::Kept,
        "restored" => Said::Restored,
        other => Said::Other(other.to_string()),
    }
}

/// The root script on the host: `sh -c SCRIPT labprov-key-push KEY UNIT`.
/// Its stdin: the private key, [`END_OF_KEY`], the public line, then (after
/// it said `swapped ...`) `keep` or anything else, which puts the old pair
/// back; so does the end of stdin (the deployer died or the connection
/// dropped). Every write is a file renamed into place.
pub fn script() -> String {
    format!(
        r#"set -u
trap '' PIPE
k=$1 unit=$2 new=$1.labprov-new old=$1.labprov-old
umask 077
say() {{ printf '%s\n' "$*"; }}
fail() {{ echo "labprov key push: $*" >&2; rm -f "$new" "$new.pub"; exit 1; }}
reload() {{
  if command -v systemctl > /dev/null 2>&1 && systemctl is-active --quiet "$unit"; then
    # NixOS' sshd.service has no ExecReload: a restart (KillMode=process
    # keeps every session, this one too) makes the listener load the key.
    systemctl reload-or-restart "$unit" >&2 || return 1
    how=reloaded
  else
    how=per-connection
  fi
}}
restore() {{
  if [ "$had" = 1 ]; then
    mv -f "$old" "$k" || return 1
    if [ -e "$old.pub" ]; then mv -f "$old.pub" "$k.pub" || return 1; fi
  else
    rm -f "$k" "$k.pub" || return 1
  fi
  reload
}}
rm -f "$new" "$new.pub" || fail "cannot remove an old $new"
: > "$new" || fail "cannot write $new"
line=
while IFS= read -r line; do
  [ "$line" = {END_OF_KEY} ] && break
  printf '%s\n' "$line" >> "$new" || fail "cannot write $new"
done
[ "$line" = {END_OF_KEY} ] || fail "the key did not arrive whole"
IFS= read -r pub || fail "the public key did not arrive"
(umask 022 && printf '%s\n' "$pub" > "$new.pub") || fail "cannot write $new.pub"
if command -v ssh-keygen > /dev/null 2>&1; then
  got=$(ssh-keygen -y -f "$new") || fail "ssh-keygen cannot read the new key"
  got=${{got#* }} want=${{pub#* }}
  [ "${{got%% *}}" = "${{want%% *}}" ] || fail "the new key does not match its public half"
fi
had=0
if [ -e "$k" ]; then
  had=1
  rm -f "$old" "$old.pub"
  cp -p "$k" "$old" || fail "cannot keep the old key as $old"
  if [ -e "$k.pub" ]; then cp -p "$k.pub" "$old.pub" || fail "cannot keep $k.pub"; fi
fi
sync
if ! mv -f "$new" "$k" || ! mv -f "$new.pub" "$k.pub"; then
  restore
  fail "cannot rename the new key into place"
fi
sync
if ! reload; then
  restore
  fail "systemctl reload-or-restart $unit failed"
fi
say "swapped $how"
decision=
# labprov answers within seconds; a connection that died without a word
# must not leave the host waiting (and then undoing a later push): a minute.
decision=$(timeout 60 head -n 1) || decision=
if [ "$decision" = keep ]; then
  rm -f "$old" "$old.pub"
  sync
  say kept
else
  restore || {{ echo "labprov key push: putting the old key back failed" >&2; exit 1; }}
  sync
  say restored
fi
"#
    )
}

/// What goes to the script's stdin before it swaps: the private key, the
/// end marker, the public line.
pub fn payload(key: &HostKey) -> Zeroizing<Vec<u8>> {
    let private = key.private_openssh();
    let mut bytes = Zeroizing::new(Vec::with_capacity(private.len() + 200));
    bytes.extend_from_slice(private.trim_end().as_bytes());
    bytes.extend_from_slice(format!("\n{END_OF_KEY}\n{}\n", key.public_openssh()).as_bytes());
    bytes
}

/// The swap over the connection pinned to the previous key; see the module
/// documentation.
fn swap(push: &HostPush, work: &Work) -> Result<Sshd> {
    let host = push.host.clone();
    let previous = push.runs.clone();
    let key = work.material.as_ref().expect("a push has its key");
    let first = work.to_previous.as_ref().expect("a push has its connection");
    let remote = format!("sh -c {} labprov-key-push {HOST_KEY} {SSHD_UNIT}", quote(&script()));
    let mut child = first.command(&remote).spawn_piped()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut next = move || lines.next().and_then(|l| l.ok()).map(|l| parse_said(&l));
    let finish = |mut child: std::process::Child, stderr: std::thread::JoinHandle<String>| {
        let _ = child.wait();
        let text = stderr.join().unwrap_or_default();
        let last = text.trim().lines().last().unwrap_or("").to_string();
        if last.is_empty() {
            "the connection ended".to_string()
        } else {
            last
        }
    };
    let sent = stdin.write_all(&payload(key)).and_then(|()| stdin.flush());
    let how = match (sent, next()) {
        (Ok(()), Some(Said::Swapped(how))) => how,
        _ => {
            drop(stdin);
            return Err(Error::Swap { host, previous, why: finish(child, stderr) });
        }
    };
    let verified = verify(&work.to_new);
    let decision: &[u8] = if verified.is_ok() {
        b"keep
"
    } else {
        b"restore
"
    };
    let _ = stdin.write_all(decision).and_then(|()| stdin.flush());
    drop(stdin);
    let answer = next();
    match (verified, answer) {
        (Ok(()), Some(Said::Kept)) => {
            let _ = finish(child, stderr);
            Ok(how)
        }
        (Ok(()), _) => {
            // The keep was not confirmed: whatever the host did, the key it
            // presents now decides.
            let why = finish(child, stderr);
            match answers(&work.to_new)? {
                Ok(()) => Ok(how),
                Err(_) => Err(Error::NewKeyRefused {
                    host,
                    key: push.key.clone(),
                    previous,
                    why: format!("the host did not keep the swap: {why}"),
                }),
            }
        }
        (Err(why), Some(Said::Restored)) => {
            let _ = finish(child, stderr);
            Err(Error::NewKeyRefused { host, key: push.key.clone(), previous, why })
        }
        (Err(why), _) => {
            let restore = finish(child, stderr);
            // The script restores on its own when its stdin ends; look.
            match verify(first) {
                Ok(()) => Err(Error::NewKeyRefused { host, key: push.key.clone(), previous, why }),
                Err(second) => Err(Error::Restore {
                    host,
                    new: push.key.clone(),
                    previous,
                    why: format!(
                        "a connection pinned to the new key failed ({why}), and putting the previous key \
                         back did not answer ({restore}; pinned to the previous key it {second})"
                    ),
                }),
            }
        }
    }
}

/// A connection pinned to `pinned`'s key, tried until [`VERIFY_FOR`] passed
/// (sshd's reload closes its listener for a moment).
fn verify(pinned: &Pinned) -> std::result::Result<(), String> {
    let start = Instant::now();
    loop {
        let why = match pinned.run("true", None) {
            Ok(out) if out.success() => return Ok(()),
            Ok(out) => failure(&out.stderr),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= VERIFY_FOR {
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    #[test]
    fn all_takes_the_hosts_with_a_record_and_names_are_taken_once() {
        let known: Vec<String> = ["luna", "nixpi", "rydev"].map(String::from).to_vec();
        let with = |h: &str| h != "luna";
        assert_eq!(select(&[], true, &known, &with).unwrap(), ["nixpi", "rydev"]);
        assert!(select(&[], true, &known, &|_| false).unwrap().is_empty());
        let named = ["nixpi".to_string(), "luna".into(), "nixpi".into()];
        assert_eq!(select(&named, false, &known, &with).unwrap(), ["nixpi", "luna"]);
        assert!(matches!(select(&[], false, &known, &with), Err(Error::NoHosts)));
    }

    #[test]
    fn ssh_failures_are_told_apart() {
        let changed = "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       Host key verification failed.\n";
        assert_eq!(failure(changed), OTHER_KEY);
        assert_eq!(
            failure("ssh: connect to host 192.0.2.1 port 22: Connection refused\n"),
            "does not answer (ssh: connect to host 192.0.2.1 port 22: Connection refused)"
        );
        assert_eq!(failure(""), "does not answer");
        let refused = failure("root@192.0.2.1: Permission denied (publickey).\n");
        assert_eq!(refused, REFUSED);
        assert!(hint(&refused, "pi").contains("sshKeys"));
        let err = Error::NeitherKey {
            at: Box::new(Unreached {
                host: "pi".into(),
                address: "192.0.2.1".into(),
                why: OTHER_KEY.into(),
            }),
            new: "SHA256:new".into(),
            previous: "SHA256:old".into(),
        };
        assert_eq!(err.class(), Class::Mismatch);
        let text = err.to_string();
        assert!(text.contains("SHA256:new") && text.contains("SHA256:old"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(text.contains("it answers with another key"), "{text}");
        assert!(text.contains("ssh-keygen -lf"), "{text}");
        let down = hint("does not answer", "pi");
        assert!(down.contains("hosts/pi/facts.nix"), "{down}");
    }

    #[test]
    fn the_hosts_words_are_parsed() {
        assert_eq!(parse_said("swapped reloaded\n"), Said::Swapped(Sshd::Reloaded));
        assert_eq!(parse_said("swapped per-connection"), Said::Swapped(Sshd::PerConnection));
        assert_eq!(parse_said("kept"), Said::Kept);
        assert_eq!(parse_said("restored"), Said::Restored);
        assert_eq!(parse_said("motd"), Said::Other("motd".into()));
    }

    #[test]
    fn the_key_goes_on_stdin_and_never_in_the_command_line() {
        let key = HostKey::generate("root@pi");
        let sent = String::from_utf8(payload(&key).to_vec()).unwrap();
        let private = key.private_openssh();
        assert!(sent.starts_with(private.trim_end()));
        assert!(sent.ends_with(&format!("\n{END_OF_KEY}\n{}\n", key.public_openssh())));
        assert!(!private.lines().any(|l| l == END_OF_KEY));
        let line = format!("sh -c {} labprov-key-push {HOST_KEY} {SSHD_UNIT}", quote(&script()));
        assert!(!line.contains("PRIVATE KEY"), "{line}");
    }

    /// The `sh` on PATH, for the stand-in's first line: Nix's build sandbox
    /// has /bin/sh, scripts/sandbox-check's stricter one only PATH.
    fn shell() -> String {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("sh")).find(|f| f.is_file()))
            .and_then(|f| f)
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "/bin/sh".into())
    }

    /// A host's /etc/ssh in a temp dir, and a systemctl stand-in that says
    /// the unit is active (or not) and logs reloads.
    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new(old: Option<&HostKey>, sshd_active: bool) -> Host {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            let ctl = bin.join("systemctl");
            std::fs::write(
                &ctl,
                format!(
                    "#!{}\ncase $1 in is-active) exit {};; reload-or-restart) echo \"$2\" >> {}/reloads;; esac\n",
                    shell(),
                    if sshd_active { 0 } else { 3 },
                    dir.path().display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
            if let Some(k) = old {
                let key = dir.path().join("ssh_host_ed25519_key");
                std::fs::write(&key, k.private_openssh().as_bytes()).unwrap();
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
                std::fs::write(key.with_extension("pub"), format!("{}\n", k.public_openssh()))
                    .unwrap();
            }
            Host { dir }
        }

        fn key(&self) -> std::path::PathBuf {
            self.dir.path().join("ssh_host_ed25519_key")
        }

        /// Runs the script with `stdin`; its stdout, and whether it succeeded.
        fn push(&self, stdin: &[u8]) -> (String, bool) {
            let path = format!(
                "{}:{}",
                self.dir.path().join("bin").display(),
                std::env::var("PATH").unwrap()
            );
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(script())
                .arg("labprov-key-push")
                .arg(self.key())
                .arg(SSHD_UNIT)
                .env("PATH", path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
        }

        fn public(&self) -> String {
            std::fs::read_to_string(self.key().with_extension("pub")).unwrap_or_default()
        }

        fn leftovers(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("labprov"))
                .collect();
            names.sort();
            names
        }

        fn reloads(&self) -> usize {
            std::fs::read_to_string(self.dir.path().join("reloads"))
                .map(|t| t.lines().filter(|l| *l == SSHD_UNIT).count())
                .unwrap_or(0)
        }
    }

    fn with(payload: &[u8], decision: &str) -> Vec<u8> {
        let mut v = payload.to_vec();
        v.extend_from_slice(decision.as_bytes());
        v
    }

    #[test]
    fn the_script_keeps_the_new_key_when_told_and_reloads_an_active_sshd() {
        let (old, new) = (HostKey::generate("old"), HostKey::generate("new"));
        let host = Host::new(Some(&old), true);
        let (said, ok) = host.push(&with(&payload(&new), "keep\n"));
        assert!(ok, "{said}");
        assert_eq!(said, "swapped reloaded\nkept\n");
        assert_eq!(host.public().trim(), new.public_openssh());
        let private = std::fs::read_to_string(host.key()).unwrap();
        assert_eq!(private.trim_end(), new.private_openssh().trim_end());
        let mode = std::fs::metadata(host.key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode =
            std::fs::metadata(host.key().with_extension("pub")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
        assert_eq!(host.reloads(), 1);
    }

    #[test]
    fn the_script_puts_the_old_pair_back_unless_told_to_keep() {
        let (old, new) = (HostKey::generate("old"), HostKey::generate("new"));
        // "restore", and the end of stdin (a dead deployer), alike.
        for decision in ["restore\n", ""] {
            let host = Host::new(Some(&old), false);
            let before = std::fs::read(host.key()).unwrap();
            let (said, ok) = host.push(&with(&payload(&new), decision));
            assert!(ok, "{said}");
            assert_eq!(said, "swapped per-connection\nrestored\n");
            assert_eq!(std::fs::read(host.key()).unwrap(), before);
            assert_eq!(host.public().trim(), old.public_openssh());
            assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
            assert_eq!(host.reloads(), 0, "sshd.service is not active");
        }
    }

    #[test]
    fn the_script_refuses_a_broken_or_mismatched_key_and_changes_nothing() {
        let (old, new) = (HostKey::generate("old"), HostKey::generate("new"));
        let other = HostKey::generate("other");
        let mismatched = format!(
            "{}\n{END_OF_KEY}\n{}\nkeep\n",
            new.private_openssh().trim_end(),
            other.public_openssh()
        );
        let cut = new.private_openssh()[..40].to_string();
        let mut cases = vec![cut];
        // The script compares the key with its public half through
        // ssh-keygen, which every NixOS host has (openssh).
        if lab_testkit::require_tools(
            "keypush: the script refuses a key that does not match its public half",
            &["ssh-keygen"],
        ) {
            cases.push(mismatched);
        }
        for stdin in cases {
            let host = Host::new(Some(&old), true);
            let before = std::fs::read(host.key()).unwrap();
            let (said, ok) = host.push(stdin.as_bytes());
            assert!(!ok, "{said}");
            assert!(said.is_empty(), "{said}");
            assert_eq!(std::fs::read(host.key()).unwrap(), before);
            assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
            assert_eq!(host.reloads(), 0);
        }
    }

    #[test]
    fn a_host_without_a_key_gets_one_and_a_restore_leaves_none() {
        let new = HostKey::generate("new");
        let host = Host::new(None, false);
        let (said, _) = host.push(&with(&payload(&new), "restore\n"));
        assert_eq!(said, "swapped per-connection\nrestored\n");
        assert!(!Path::new(&host.key()).exists());
        let (said, _) = host.push(&with(&payload(&new), "keep\n"));
        assert_eq!(said, "swapped per-connection\nkept\n");
        assert_eq!(host.public().trim(), new.public_openssh());
    }
}
