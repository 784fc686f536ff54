//! The keys and secrets commands through the real `labprov` binary, with
//! real sops and age: what an operator types, end to end.

mod keys_support;

use std::process::Command;

use keys_support::{require, run, run_ok, TestLab};

fn labprov(lab: &TestLab, identity: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labprov"));
    c.env("LAB_ROOT", lab.root())
        .env("HOME", &lab.home)
        .env("XDG_CONFIG_HOME", &lab.home)
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", identity);
    c
}

#[test]
fn new_show_sync_rotate_through_the_binary() {
    let t = "new_show_sync_rotate_through_the_binary";
    if !require(t, &["sops", "age", "age-keygen", "ssh-keygen", "python3", "pynacl", "nix"]) {
        return;
    }
    let lab = TestLab::new(&[("nixpi", &[]), ("luna", &[])]);
    let admin = lab.admin_key.clone();
    run_ok(labprov(&lab, &admin).args(["keys", "new", "nixpi"]));
    run_ok(labprov(&lab, &admin).args(["keys", "new", "luna"]));
    // The private key is stored only encrypted, and only its owner can read the file.
    let enc = lab.root().join("secrets/host-keys/nixpi.age");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&enc).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&enc).unwrap().contains("OPENSSH"), "stored in clear");

    let show: serde_json::Value = serde_json::from_str(&run_ok(
        labprov(&lab, &admin).args(["keys", "show", "nixpi", "--json"]),
    ))
    .unwrap();
    let pub_file = lab.root().join("hosts/nixpi/ssh_host_ed25519_key.pub");
    let fp = run_ok(Command::new("ssh-keygen").arg("-lf").arg(&pub_file));
    assert_eq!(show["fingerprint"].as_str(), fp.split_whitespace().nth(1));
    // The same JSON field style as labimg's (camelCase) across the toolkit.
    let pub_line = std::fs::read_to_string(&pub_file).unwrap();
    assert_eq!(show["publicKey"].as_str().map(str::trim), Some(pub_line.trim()), "{show}");
    let age_pub = std::fs::read_to_string(lab.root().join("hosts/nixpi/age.pub")).unwrap();
    assert_eq!(show["ageRecipient"].as_str(), Some(age_pub.trim()), "{show}");
    let derived =
        run_ok(labprov(&lab, &admin).args(["keys", "derive", "--ssh-key"]).arg(&pub_file));
    let recorded = std::fs::read_to_string(lab.root().join("hosts/nixpi/age.pub")).unwrap();
    assert!(derived.contains(recorded.trim()), "{derived} vs {recorded}");

    lab.write_secret("hosts/nixpi/secrets.sops.yaml", "wifi: pi-secret\n");
    lab.write_secret("hosts/luna/secrets.sops.yaml", "dns: luna-secret\n");
    run_ok(labprov(&lab, &admin).args(["secrets", "sync"]));
    let sops_yaml = std::fs::read_to_string(lab.root().join(".sops.yaml")).unwrap();
    assert!(sops_yaml.starts_with("# GENERATED"), "{sops_yaml}");
    let pi = lab.host_identity("nixpi", "first");
    assert!(lab.decrypts(&pi, "hosts/nixpi/secrets.sops.yaml", "pi-secret"));
    assert!(
        !lab.decrypts(&pi, "hosts/luna/secrets.sops.yaml", "luna-secret"),
        "nixpi reads luna's secrets"
    );

    // Idempotent: a second sync changes no byte.
    let before = lab.snapshot();
    run_ok(labprov(&lab, &admin).args(["secrets", "sync"]));
    assert!(lab.snapshot() == before, "a second sync changed files");

    // Without the admin identity nothing can be re-encrypted: refused, nothing changed.
    let stranger = lab.home.join("stranger.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&stranger));
    let res = run(labprov(&lab, &stranger).args(["keys", "rotate", "nixpi"]));
    assert!(!res.status.success());
    assert!(lab.snapshot() == before, "a refused rotate changed files");

    // Rotation: the old key reads nothing, the new one reads its file.
    run_ok(labprov(&lab, &admin).args(["keys", "rotate", "nixpi"]));
    assert!(
        !lab.decrypts(&pi, "hosts/nixpi/secrets.sops.yaml", "pi-secret"),
        "the old key still decrypts"
    );
    let pi2 = lab.host_identity("nixpi", "second");
    assert!(lab.decrypts(&pi2, "hosts/nixpi/secrets.sops.yaml", "pi-secret"));
}

/// The lab tree read-only for the guard's lifetime (a read-only bind mount
/// of itself: even root cannot write there), unmounted however the test ends.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(dir: &std::path::Path) -> Result<ReadOnly, String> {
        let bind = run(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        if !bind.status.success() {
            return Err(format!("mount --bind failed: {}", String::from_utf8_lossy(&bind.stderr)));
        }
        let guard = ReadOnly(dir.to_path_buf());
        let ro = run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(dir));
        if !ro.status.success() {
            return Err(format!(
                "remount read-only failed: {}",
                String::from_utf8_lossy(&ro.stderr)
            ));
        }
        Ok(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn rotate_dry_run_writes_nothing_even_on_a_read_only_lab() {
    let t = "rotate_dry_run_writes_nothing_even_on_a_read_only_lab";
    if !require(
        t,
        &["sops", "age", "age-keygen", "ssh-keygen", "python3", "pynacl", "nix", "mount"],
    ) {
        return;
    }
    let lab = TestLab::new(&[("nixpi", &[])]);
    let admin = lab.admin_key.clone();
    run_ok(labprov(&lab, &admin).args(["keys", "new", "nixpi"]));
    lab.write_secret("hosts/nixpi/secrets.sops.yaml", "wifi: pi-secret\n");
    run_ok(labprov(&lab, &admin).args(["secrets", "sync"]));
    let old_fp = run_ok(labprov(&lab, &admin).args(["keys", "show", "nixpi", "--json"]));
    let before = lab.snapshot();

    let guard = match ReadOnly::mount(lab.root()) {
        Ok(g) => g,
        Err(why) => {
            lab_testkit::skip(t, &why);
            return;
        }
    };
    // The mount really refuses writes, so a dry run that wrote would fail.
    assert!(
        std::fs::write(lab.root().join("probe"), b"x").is_err(),
        "the read-only mount accepts writes"
    );
    let out =
        run_ok(labprov(&lab, &admin).args(["keys", "rotate", "nixpi", "--dry-run", "--json"]));
    drop(guard);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["sync"]["dryRun"], serde_json::Value::Bool(true), "{report}");
    assert_ne!(report["old"]["fingerprint"], report["new"]["fingerprint"], "{report}");
    let secrets_file = report["sync"]["files"][0].clone();
    assert_eq!(
        secrets_file["changed"],
        serde_json::Value::Bool(true),
        "the dry run must show the re-encryption: {report}"
    );
    assert!(lab.snapshot() == before, "a dry run changed the lab");
    assert_eq!(run_ok(labprov(&lab, &admin).args(["keys", "show", "nixpi", "--json"])), old_fp);
}

/// One labprov at a time changes the lab's keys and secrets: while another
/// holds the lab's lock, a rotation and a sync are refused before they read
/// anything, name the holder and change nothing; a dry run still runs; once
/// the lock is let go the same command goes through.
#[test]
fn a_second_labprov_changing_the_lab_is_refused_while_the_first_holds_it() {
    let t = "a_second_labprov_changing_the_lab_is_refused_while_the_first_holds_it";
    if !require(t, &["sops", "age", "age-keygen", "ssh-keygen", "python3", "pynacl", "nix"]) {
        return;
    }
    let lab = TestLab::new(&[("nixpi", &[])]);
    let admin = lab.admin_key.clone();
    run_ok(labprov(&lab, &admin).args(["keys", "new", "nixpi"]));
    lab.write_secret("hosts/nixpi/secrets.sops.yaml", "wifi: pi-secret\n");
    run_ok(labprov(&lab, &admin).args(["secrets", "sync"]));
    let snapshot = || {
        ["hosts/nixpi/ssh_host_ed25519_key.pub", "secrets/host-keys/nixpi.age", ".sops.yaml"]
            .map(|f| std::fs::read(lab.root().join(f)).unwrap())
    };
    let before = snapshot();
    // Held here, as another labprov (another process's flock) would hold it.
    let held = lab_keys::secrets::LabLock::take(lab.root(), "keys push nixpi").unwrap();
    for args in [&["keys", "rotate", "nixpi"][..], &["secrets", "sync"], &["keys", "new", "luna"]] {
        let out = run(labprov(&lab, &admin).args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let holder = format!("pid {}: labprov keys push nixpi", std::process::id());
        assert!(
            err.contains("another labprov is changing the lab's keys or secrets")
                && err.contains(&holder),
            "{args:?}: {err}"
        );
    }
    assert!(snapshot() == before, "a refused command changed the lab");
    run_ok(labprov(&lab, &admin).args(["keys", "rotate", "nixpi", "--dry-run"]));
    drop(held);
    run_ok(labprov(&lab, &admin).args(["keys", "rotate", "nixpi"]));
    assert!(snapshot()[0] != before[0], "the rotation went through once the lock was let go");
}
