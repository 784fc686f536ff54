//! The keys that survive: the offline recovery key, OpenPGP admins, an
//! identity from a command, and the lost-laptop procedure, with real sops
//! 3.11, age and GnuPG. Each decryption check gives sops exactly one key
//! (scratch HOME, XDG_CONFIG_HOME and GNUPGHOME), because sops loads every
//! identity it can find.

mod keys_support;

use std::path::Path;
use std::process::Command;

use keys_support::{require, run, run_ok, TestLab};
use lab_keys::secrets::{self, ops};

const TOOLS: &[&str] = &["nix", "sops", "age", "age-keygen", "gpg", "gpgconf", "ssh-keygen"];

/// The labprov binary with no identity of the caller's: every test says
/// which one it uses.
fn labprov(lab: &TestLab) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labprov"));
    c.env("LAB_ROOT", lab.root())
        .env("HOME", &lab.home)
        .env("XDG_CONFIG_HOME", &lab.home)
        .env("GNUPGHOME", lab.gnupg_home("none"))
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY_CMD")
        .env_remove("SOPS_AGE_SSH_PRIVATE_KEY_FILE");
    c
}

fn labprov_as(lab: &TestLab, identity: &Path) -> Command {
    let mut c = labprov(lab);
    c.env("SOPS_AGE_KEY_FILE", identity);
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `labprov keys recovery new --json` through the binary; the test (not
/// the tool) keeps the secret in a file, as an operator would on paper.
fn make_recovery(lab: &TestLab) -> (std::path::PathBuf, String) {
    let out = run_ok(labprov(lab).args(["keys", "recovery", "new", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let identity = v["identity"].as_str().unwrap().to_string();
    let recipient = v["recipient"].as_str().unwrap().to_string();
    assert!(identity.starts_with("AGE-SECRET-KEY-1"), "{v}");
    let recorded = std::fs::read_to_string(lab.root().join("hosts/recovery-age.pub")).unwrap();
    assert_eq!(recorded.trim(), recipient);
    assert!(!lab.snapshot().iter().any(|(_, b)| String::from_utf8_lossy(b).contains(&identity)));
    let path = lab.home.join("recovery.txt");
    std::fs::write(&path, format!("{identity}\n")).unwrap();
    (path, recipient)
}

const FILES: [(&str, &str); 4] = [
    ("hosts/alpha/secrets.sops.yaml", "A1"),
    ("hosts/beta/secrets.sops.yaml", "B1"),
    ("secrets/shared/wifi.sops.yaml", "W1"),
    ("secrets/admin-only.sops.yaml", "R1"),
];

fn write_secrets(lab: &TestLab) {
    lab.write_secret(FILES[0].0, "alpha_pw: A1\n");
    lab.write_secret(FILES[1].0, "beta_pw: B1\n");
    lab.write_secret(FILES[2].0, "wifi_psk: W1\n");
    lab.write_secret(FILES[3].0, "root_pw: R1\n");
}

/// The secrets files `identity` decrypts with real sops.
fn readable<'a>(lab: &TestLab, identity: &Path) -> Vec<&'a str> {
    FILES.iter().filter(|(f, m)| lab.decrypts(identity, f, m)).map(|(f, _)| *f).collect()
}

/// The host keys `identity` decrypts with the age CLI.
fn host_keys_readable(lab: &TestLab, identity: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for host in ["alpha", "beta"] {
        let enc = secrets::encrypted_key_path(lab.root(), host);
        if run(Command::new("age").arg("-d").arg("-i").arg(identity).arg(&enc)).status.success() {
            out.push(host.to_string());
        }
    }
    out
}

/// The host key `identity` decrypts is the one hosts/<host>/ssh_host_ed25519_key.pub records
/// (ssh-keygen computes the public half, independently of our code).
fn host_key_matches_record(lab: &TestLab, identity: &Path, host: &str) {
    let enc = secrets::encrypted_key_path(lab.root(), host);
    let out = run(Command::new("age").arg("-d").arg("-i").arg(identity).arg(&enc));
    assert!(out.status.success(), "{host}: {}", stderr(&out));
    let key = lab.home.join(format!("{host}-check.key"));
    std::fs::write(&key, &out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let derived = run_ok(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key));
    std::fs::remove_file(&key).unwrap();
    let recorded =
        std::fs::read_to_string(lab.root().join(format!("hosts/{host}/ssh_host_ed25519_key.pub")))
            .unwrap();
    let material = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(material(&derived), material(&recorded), "{host}");
}

#[test]
fn each_admin_level_key_decrypts_alone_and_a_removed_admin_reads_nothing() {
    let t = "each_admin_level_key_decrypts_alone_and_a_removed_admin_reads_nothing";
    if !require(t, TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &["wifi"]), ("beta", &[])]);
    let admin = lab.admin_key.clone();
    let (recovery, recovery_r) = make_recovery(&lab);
    let (gnupg, fp) = lab.gpg_key("pgpadmin");
    let admin_r = lab.admin_recipient.clone();
    lab.set_admins_with(&[("ry", &[&admin_r], &[]), ("pg", &[], &[&fp])]);
    ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    ops::new_key(lab.root(), &lab.keys(), "beta", None).unwrap();
    write_secrets(&lab);
    let out = run_ok(labprov_as(&lab, &admin).args(["secrets", "sync"]));
    assert!(out.contains("(recovery)") && out.contains("admin pg (OpenPGP)"), "{out}");

    // One key group per rule: an age list and a pgp list, no shamir.
    let config = std::fs::read_to_string(lab.root().join(".sops.yaml")).unwrap();
    assert!(config.contains(&format!("- {recovery_r} # recovery")), "{config}");
    assert!(config.contains(&format!("- {fp} # admin pg (OpenPGP)")), "{config}");
    assert!(!config.contains("key_groups") && !config.contains("shamir"), "{config}");
    let all: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();

    // Each admin-level key alone decrypts every file; the recovery key also every host key.
    assert_eq!(readable(&lab, &admin), all);
    assert_eq!(readable(&lab, &recovery), all);
    let pgp_reads: Vec<&str> =
        FILES.iter().filter(|(f, m)| lab.pgp_decrypts(&gnupg, f, m)).map(|(f, _)| *f).collect();
    assert_eq!(pgp_reads, all, "the OpenPGP key alone");
    assert_eq!(host_keys_readable(&lab, &recovery), ["alpha", "beta"]);
    host_key_matches_record(&lab, &recovery, "alpha");

    // Idempotent with OpenPGP recipients too.
    let before = lab.snapshot();
    run_ok(labprov_as(&lab, &recovery).args(["secrets", "sync"]));
    assert!(lab.snapshot() == before, "a second sync changed files");

    // The age admin leaves; the recovery key re-keys everything.
    lab.set_admins_with(&[("pg", &[], &[&fp])]);
    let out = run_ok(labprov_as(&lab, &recovery).args(["keys", "rotate", "--all", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(2), "{v}");
    let files = v["sync"]["files"].as_array().unwrap();
    assert!(files.iter().all(|f| f["dataKeyRotated"] == true), "{v}");
    assert!(
        files.iter().all(|f| f["removed"].to_string().contains(&admin_r)),
        "every file lost the admin: {v}"
    );
    assert_eq!(readable(&lab, &admin), Vec::<&str>::new(), "the removed admin still reads");
    assert_eq!(host_keys_readable(&lab, &admin), Vec::<String>::new());
    assert_eq!(readable(&lab, &recovery), all);
    assert_eq!(host_keys_readable(&lab, &recovery), ["alpha", "beta"]);
    let pgp_reads: Vec<&str> =
        FILES.iter().filter(|(f, m)| lab.pgp_decrypts(&gnupg, f, m)).map(|(f, _)| *f).collect();
    assert_eq!(pgp_reads, all);

    // Removing the OpenPGP admin (and adding an age one) rotates the data keys too.
    let (new_admin, new_r) = lab.age_key("new-admin");
    lab.set_admins(&[&new_r]);
    let out = run_ok(labprov_as(&lab, &recovery).args(["secrets", "sync", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let files = v["files"].as_array().unwrap();
    assert!(
        files.iter().all(|f| f["dataKeyRotated"] == true && f["removed"].to_string().contains(&fp)),
        "{v}"
    );
    assert!(FILES.iter().all(|(f, m)| !lab.pgp_decrypts(&gnupg, f, m)));
    assert_eq!(readable(&lab, &new_admin), all);
}

#[test]
fn lost_laptop_recovered_with_the_recovery_key_alone() {
    let t = "lost_laptop_recovered_with_the_recovery_key_alone";
    if !require(t, TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &["wifi"]), ("beta", &[])]);
    let a_key = lab.admin_key.clone();
    let (recovery, _) = make_recovery(&lab);
    run_ok(labprov_as(&lab, &a_key).args(["keys", "new", "alpha"]));
    run_ok(labprov_as(&lab, &a_key).args(["keys", "new", "beta"]));
    write_secrets(&lab);
    run_ok(labprov_as(&lab, &a_key).args(["secrets", "sync"]));
    let old_fps: Vec<String> = ["alpha", "beta"]
        .iter()
        .map(|h| ops::show(lab.root(), &lab.keys(), h).unwrap().fingerprint)
        .collect();

    // The laptop is gone: its key survives only in the thief's hands.
    let thief = lab.home.join("thief.txt");
    std::fs::copy(&a_key, &thief).unwrap();
    std::fs::remove_file(&a_key).unwrap();

    // With only the recovery key: A out, B in, every host key new, every file re-keyed.
    let (b_key, b_r) = lab.age_key("admin-b");
    lab.set_admins(&[&b_r]);
    let out = run_ok(labprov_as(&lab, &recovery).args(["keys", "rotate", "--all"]));
    assert!(out.contains("alpha:") && out.contains("beta:") && out.contains("deploy"), "{out}");
    let out = run_ok(labprov_as(&lab, &recovery).args(["secrets", "sync"]));
    assert!(out.contains("up to date"), "{out}");

    let all: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
    assert_eq!(readable(&lab, &b_key), all);
    assert_eq!(host_keys_readable(&lab, &b_key), ["alpha", "beta"]);
    for (host, old) in ["alpha", "beta"].iter().zip(&old_fps) {
        host_key_matches_record(&lab, &b_key, host);
        assert_ne!(&ops::show(lab.root(), &lab.keys(), host).unwrap().fingerprint, old);
    }
    assert_eq!(readable(&lab, &thief), Vec::<&str>::new(), "the lost key still reads secrets");
    assert_eq!(host_keys_readable(&lab, &thief), Vec::<String>::new());
    // B can carry on alone: a sync with B's key works.
    run_ok(labprov_as(&lab, &b_key).args(["secrets", "sync"]));
}

#[test]
fn wrong_keys_and_missing_pgp_keys_are_refused_and_change_nothing() {
    let t = "wrong_keys_and_missing_pgp_keys_are_refused_and_change_nothing";
    if !require(t, TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &["wifi"]), ("beta", &[])]);
    let admin = lab.admin_key.clone();
    // A recovery key whose secret cannot be shown is not recorded.
    let out = run(labprov(&lab)
        .args(["keys", "recovery", "new"])
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was not recorded"), "{}", stderr(&out));
    assert!(!lab.root().join("hosts/recovery-age.pub").exists());
    let (recovery, _) = make_recovery(&lab);
    ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    ops::new_key(lab.root(), &lab.keys(), "beta", None).unwrap();
    write_secrets(&lab);
    run_ok(labprov_as(&lab, &admin).args(["secrets", "sync"]));

    // A wrong recovery key: `check` says so and fails; a right one passes.
    let (stranger, stranger_r) = lab.age_key("stranger");
    let out = run(labprov(&lab).args(["keys", "recovery", "check", "--identity"]).arg(&stranger));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("this is not the lab's recovery key") && err.contains(&stranger_r),
        "{err}"
    );
    let out =
        run_ok(labprov(&lab).args(["keys", "recovery", "check", "--identity"]).arg(&recovery));
    assert!(out.contains("this is the lab's recovery key"), "{out}");

    // A pending change (a second admin), then a sync with a wrong identity:
    // refused before sops runs, naming the file and the identity's recipient.
    let (_, second_r) = lab.age_key("second");
    let admin_r = lab.admin_recipient.clone();
    lab.set_admins(&[&admin_r, &second_r]);
    let before = lab.snapshot();
    let out = run(labprov_as(&lab, &stranger).args(["secrets", "sync"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("none of the admin identities")
            && err.contains(&stranger_r)
            && err.contains("hosts/alpha/secrets.sops.yaml")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(lab.snapshot() == before, "a refused sync changed files");
    let out = run(labprov_as(&lab, &stranger).args(["keys", "rotate", "--all"]));
    assert!(!out.status.success() && stderr(&out).contains(&stranger_r), "{}", stderr(&out));
    assert!(lab.snapshot() == before, "a refused rotate changed files");

    // An OpenPGP fingerprint without its .asc.
    let missing = "0123456789ABCDEF0123456789ABCDEF01234567";
    lab.set_admins_with(&[("ry", &[&admin_r], &[]), ("pg", &[], &[missing])]);
    let before = lab.snapshot();
    let out = run(labprov_as(&lab, &admin).args(["secrets", "sync"]));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("hosts/admins/{missing}.asc is missing"))
            && err.contains("gpg --armor --export")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert!(lab.snapshot() == before, "a refused sync changed files");

    // An .asc that holds another key than its name says.
    let (_, real_fp) = lab.gpg_key("other");
    std::fs::rename(
        lab.root().join(format!("hosts/admins/{real_fp}.asc")),
        lab.root().join(format!("hosts/admins/{missing}.asc")),
    )
    .unwrap();
    let before = lab.snapshot();
    let out = run(labprov_as(&lab, &admin).args(["secrets", "sync"]));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&real_fp) && err.contains(&format!("not {missing}")), "{err}");
    assert!(lab.snapshot() == before, "a refused sync changed files");
    lab.set_admins(&[&admin_r, &second_r]);
    std::fs::remove_dir_all(lab.root().join("hosts/admins")).unwrap();

    // SOPS_AGE_KEY_CMD that fails: named, not its output; nothing changed.
    let before = lab.snapshot();
    // The secret comes from a file, so it appears nowhere in the command.
    let secret = lab.home.join("cmd-secret");
    std::fs::write(&secret, "AGE-SECRET-KEY-1LEAKEDMARKER\n").unwrap();
    let cmd = format!("sh -c 'cat {}; exit 3'", secret.display());
    let out = run(labprov(&lab).env("SOPS_AGE_KEY_CMD", &cmd).args(["secrets", "sync"]));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("SOPS_AGE_KEY_CMD `{cmd}`")) && err.contains("exit code 3"),
        "{err}"
    );
    let said = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!said.contains("LEAKEDMARKER"), "the command's output was shown: {said}");
    assert!(lab.snapshot() == before, "a failed identity command changed files");
}

#[test]
fn an_identity_from_sops_age_key_cmd_syncs() {
    let t = "an_identity_from_sops_age_key_cmd_syncs";
    if !require(t, TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &[])]);
    ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    lab.write_secret("hosts/alpha/secrets.sops.yaml", "alpha_pw: A1\n");
    let (second, second_r) = lab.age_key("second");
    let admin_r = lab.admin_recipient.clone();
    lab.set_admins(&[&admin_r, &second_r]);
    // No other identity: no SOPS_AGE_KEY(_FILE), an empty HOME.
    let cmd = format!("cat {}", lab.admin_key.display());
    let out = run_ok(labprov(&lab).env("SOPS_AGE_KEY_CMD", &cmd).args(["secrets", "sync"]));
    assert!(out.contains("re-encrypted"), "{out}");
    assert!(lab.decrypts(&second, "hosts/alpha/secrets.sops.yaml", "A1"));
    // The same identity decrypts a host key for injection.
    let identity = lab_keys::secrets::AdminIdentity::Command(
        lab_keys::secrets::IdentityCommand::parse(&cmd).unwrap(),
    );
    assert!(secrets::injection_material_with(lab.root(), "alpha", &identity).is_ok());
}

#[test]
fn new_subcommands_have_help_with_examples() {
    for args in [
        &["keys", "recovery", "new", "--help"][..],
        &["keys", "recovery", "check", "--help"],
        &["keys", "rotate", "--help"],
    ] {
        let out = run_ok(Command::new(env!("CARGO_BIN_EXE_labprov")).args(args));
        assert!(out.contains("Example") && out.contains("labprov keys"), "{args:?}:\n{out}");
    }
    // HOST or --all, not both, not neither: usage errors (exit 2).
    for args in [&["keys", "rotate"][..], &["keys", "rotate", "nixpi", "--all"]] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_labprov")).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
