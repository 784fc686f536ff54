//! Shared helpers of the keys, secrets and enrolment tests: a throwaway lab
//! with its own facts and admins, tool checks that skip (or fail under
//! LAB_REQUIRE_ALL=1), and real sops/age/gpg/python runs with an isolated
//! HOME, XDG_CONFIG_HOME and GNUPGHOME (sops 3.11 loads every identity it
//! finds there, so "this identity only" needs all three).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab_keys::secrets::AdminIdentity;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `Err(reason)` when a tool is missing; the caller skips or panics.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    for t in tools {
        let ok = match *t {
            "pynacl" => python_has("nacl"),
            "pyrage" => python_has("pyrage"),
            _ => Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false),
        };
        if !ok {
            missing.push(*t);
        }
    }
    if missing.is_empty() {
        return true;
    }
    !lab_testkit::skip(test, &format!("missing {}", missing.join(", ")))
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    out
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway lab: `hosts/facts.nix` like the repository's (tool-written
/// `.pub` files picked up), hosts with their own `facts.nix`, and admins.
pub struct TestLab {
    pub dir: tempfile::TempDir,
    /// An empty HOME for child processes, so no real key is ever used.
    pub home: PathBuf,
    pub admin_key: PathBuf,
    pub admin_recipient: String,
}

impl TestLab {
    /// `hosts`: `(name, shared secrets)`.
    pub fn new(hosts: &[(&str, &[&str])]) -> TestLab {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let home = root.join(".home");
        std::fs::create_dir_all(&home).unwrap();
        let admin_key = home.join("admin.txt");
        run_ok(Command::new("age-keygen").arg("-o").arg(&admin_key));
        let admin_recipient =
            run_ok(Command::new("age-keygen").arg("-y").arg(&admin_key)).trim().to_string();
        std::fs::create_dir_all(root.join("hosts")).unwrap();
        // The repository's own facts.nix (and the lab-wide facts it reads):
        // the tests exercise the real one.
        for f in ["facts.nix", "lab.nix"] {
            std::fs::copy(repo().join("hosts").join(f), root.join("hosts").join(f)).unwrap();
        }
        let lab = TestLab { dir, home, admin_key, admin_recipient };
        lab.set_admins(&[&lab.admin_recipient.clone()]);
        for (name, shared) in hosts {
            lab.add_host(name, shared);
        }
        lab
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn lab(&self) -> lab_facts::Lab {
        lab_facts::Lab::locate(Some(self.root()), self.root()).unwrap()
    }

    pub fn keys(&self) -> lab_keys::secrets::LabKeys {
        lab_keys::secrets::LabKeys::load(&self.lab()).unwrap()
    }

    pub fn identity(&self) -> AdminIdentity {
        AdminIdentity::File(self.admin_key.clone())
    }

    pub fn set_admins(&self, recipients: &[&str]) {
        self.set_admins_with(&[("ry", recipients, &[])]);
    }

    /// `(name, age recipients, OpenPGP fingerprints)` per admin.
    pub fn set_admins_with(&self, admins: &[(&str, &[&str], &[&str])]) {
        let quoted =
            |l: &[&str]| l.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(" ");
        let mut text = String::from("{\n");
        for (name, age, pgp) in admins {
            text.push_str(&format!(
                "  {name} = {{ description = \"{name}\"; sshKeys = [ ]; ageRecipients = [ {} ]; \
                 pgpFingerprints = [ {} ]; }};\n",
                quoted(age),
                quoted(pgp)
            ));
        }
        text.push_str("}\n");
        std::fs::write(self.root().join("hosts/admins.nix"), text).unwrap();
    }

    /// A new age identity file under HOME and its recipient.
    pub fn age_key(&self, name: &str) -> (PathBuf, String) {
        let path = self.home.join(format!("{name}.txt"));
        run_ok(Command::new("age-keygen").arg("-o").arg(&path));
        let recipient = run_ok(Command::new("age-keygen").arg("-y").arg(&path)).trim().to_string();
        (path, recipient)
    }

    /// Records `recipient` as the lab's recovery key (what `keys recovery new` writes).
    pub fn set_recovery(&self, recipient: &str) {
        std::fs::write(self.root().join("hosts/recovery-age.pub"), format!("{recipient}\n"))
            .unwrap();
    }

    /// A GnuPG home of its own under HOME (0700), for one test key.
    pub fn gnupg_home(&self, name: &str) -> PathBuf {
        let dir = self.home.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// A real OpenPGP key without passphrase in its own GnuPG home, its
    /// public key exported to `hosts/admins/<FP>.asc`. Returns the home and
    /// the fingerprint.
    pub fn gpg_key(&self, name: &str) -> (PathBuf, String) {
        let gnupg = self.gnupg_home(name);
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.env("GNUPGHOME", &gnupg).env("HOME", &self.home).args(["--batch"]).args(args);
            c
        };
        let uid = format!("{name} <{name}@lab>");
        run_ok(&mut gpg(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-generate-key",
            &uid,
            "default",
            "default",
            "never",
        ]));
        let listing = run_ok(&mut gpg(&["--with-colons", "--list-keys", &uid]));
        let fp = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("gpg lists the new key's fingerprint")
            .to_string();
        let armored = run_ok(&mut gpg(&["--armor", "--export", &fp]));
        std::fs::create_dir_all(self.root().join("hosts/admins")).unwrap();
        std::fs::write(self.root().join(format!("hosts/admins/{fp}.asc")), armored).unwrap();
        (gnupg, fp)
    }

    /// sops with no age identity at all, only the OpenPGP keyring `gnupg`.
    pub fn sops_pgp_only(&self, gnupg: &Path) -> Command {
        let mut c = Command::new("sops");
        c.arg("--disable-version-check")
            .current_dir(self.root())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.home)
            .env("GNUPGHOME", gnupg)
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_CMD")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_SSH_PRIVATE_KEY_FILE");
        c
    }

    /// Whether the OpenPGP key in `gnupg` alone decrypts `rel` (holding `marker`).
    pub fn pgp_decrypts(&self, gnupg: &Path, rel: &str, marker: &str) -> bool {
        let out = run(self.sops_pgp_only(gnupg).arg("decrypt").arg(self.root().join(rel)));
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains(marker), "{rel}: other content");
        }
        out.status.success()
    }

    pub fn add_host(&self, name: &str, shared: &[&str]) {
        let dir = self.root().join("hosts").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let shared: Vec<String> = shared.iter().map(|s| format!("\"{s}\"")).collect();
        std::fs::write(
            dir.join("facts.nix"),
            format!(
                "{{ system = \"aarch64-linux\"; class = \"nixos\"; sharedSecrets = [ {} ]; }}\n",
                shared.join(" ")
            ),
        )
        .unwrap();
    }

    /// Writes `plain` YAML to `rel` and encrypts it in place to the admin only.
    pub fn write_secret(&self, rel: &str, plain: &str) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, plain).unwrap();
        run_ok(
            self.sops(&self.admin_key)
                .args(["encrypt", "-i", "--age", &self.admin_recipient])
                .arg(&path),
        );
    }

    /// sops with exactly one identity file and an empty HOME.
    pub fn sops(&self, identity: &Path) -> Command {
        let mut c = Command::new("sops");
        c.arg("--disable-version-check")
            .current_dir(self.root())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.home)
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_CMD")
            .env_remove("SOPS_AGE_SSH_PRIVATE_KEY_FILE")
            .env("GNUPGHOME", self.gnupg_home("none"))
            .env("SOPS_AGE_KEY_FILE", identity);
        c
    }

    /// Whether `identity` decrypts `rel` with real sops (and it holds `marker`).
    pub fn decrypts(&self, identity: &Path, rel: &str, marker: &str) -> bool {
        let out = run(self.sops(identity).arg("decrypt").arg(self.root().join(rel)));
        if out.status.success() {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(marker),
                "{rel} decrypted to something else"
            );
        }
        out.status.success()
    }

    /// The host's age identity file, derived INDEPENDENTLY (Python, libsodium)
    /// from the private key the lab injects.
    pub fn host_identity(&self, host: &str, label: &str) -> PathBuf {
        let key = lab_keys::secrets::injection_material_with(self.root(), host, &self.identity())
            .unwrap();
        let key_path = self.home.join(format!("{host}-{label}.key"));
        std::fs::write(&key_path, key.private_openssh().as_bytes()).unwrap();
        let identity = run_ok(
            Command::new("python3")
                .arg(python_helper())
                .args(["-private-key", "-i"])
                .arg(&key_path),
        );
        let id_path = self.home.join(format!("{host}-{label}.age"));
        std::fs::write(&id_path, identity).unwrap();
        id_path
    }

    /// Every file under the lab (except HOME) with its bytes.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                // The test's home, and the lock file (ignored by git: it
                // names the last labprov that held it, nothing else).
                if p.file_name().unwrap() == ".home"
                    || p.file_name().unwrap() == lab_keys::secrets::lock::LOCK_FILE
                {
                    continue;
                }
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push((
                        p.strip_prefix(root).unwrap().to_path_buf(),
                        std::fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }
}

impl Drop for TestLab {
    /// gpg starts a gpg-agent per GnuPG home; stop the ones this lab's homes
    /// started (they are this test's own processes).
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.home) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("gnupg-") {
                let _ = Command::new("gpgconf")
                    .env("GNUPGHOME", e.path())
                    .args(["--kill", "gpg-agent"])
                    .output();
            }
        }
    }
}

pub fn python_helper() -> PathBuf {
    repo().join("tests/keys/ssh_to_age.py")
}

/// The sops data key of a file, decrypted from its age stanza with the age
/// CLI: shows whether `sops rotate` replaced it.
pub fn data_key(lab: &TestLab, rel: &str, recipient: &str, identity: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(lab.root().join(rel)).unwrap();
    let at = text.find(&format!("recipient: {recipient}")).expect("the recipient is in the file");
    let start = text[at..].find("-----BEGIN AGE ENCRYPTED FILE-----").unwrap() + at;
    let end = text[start..].find("-----END AGE ENCRYPTED FILE-----").unwrap() + start;
    let block: String = text[start..end + "-----END AGE ENCRYPTED FILE-----".len()]
        .lines()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n");
    let armored = lab.home.join("stanza.age");
    std::fs::write(&armored, block + "\n").unwrap();
    let out = run(Command::new("age").arg("-d").arg("-i").arg(identity).arg(&armored));
    assert!(
        out.status.success(),
        "age -d of the data key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
