//! End to end with real sops and age: keys new, secrets sync, rotation, host
//! removal, and the bad inputs that must change nothing.
//!
//! Host identities are derived independently (tests/keys/ssh_to_age.py) from
//! the private key the lab would inject, the way sops-nix derives them on the
//! host from /etc/ssh/ssh_host_ed25519_key.

mod keys_support;

use keys_support::{data_key, require, TestLab};
use lab_keys::secrets::{self, ops, sync, AdminIdentity, SyncOptions};

const TOOLS: &[&str] = &["nix", "sops", "age", "age-keygen", "python3", "pynacl"];

fn sync_lab(lab: &TestLab) -> Result<secrets::SyncReport, secrets::Error> {
    let identity = lab.identity();
    sync(lab.root(), &lab.keys(), &SyncOptions::new(&identity))
}

#[test]
fn hosts_decrypt_exactly_their_files_rotation_and_removal_revoke() {
    if !require("hosts_decrypt_exactly_their_files_rotation_and_removal_revoke", TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &["wifi"]), ("beta", &[])]);
    let keys = lab.keys();
    let a = ops::new_key(lab.root(), &keys, "alpha", None).unwrap();
    let b = ops::new_key(lab.root(), &keys, "beta", None).unwrap();
    assert!(a.created && b.created);

    // At rest: 0600, age-armoured, no private key in clear; public files written.
    let enc = secrets::encrypted_key_path(lab.root(), "alpha");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&enc).unwrap().permissions().mode() & 0o777, 0o600);
    let enc_text = std::fs::read_to_string(&enc).unwrap();
    assert!(enc_text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!enc_text.contains("OPENSSH"));
    // The admin decrypts it with the age CLI, independently of our code.
    let out = keys_support::run_ok(
        std::process::Command::new("age").arg("-d").arg("-i").arg(&lab.admin_key).arg(&enc),
    );
    assert!(out.contains(&concat!("BEGIN OPENSSH ", "PRIVATE KEY").to_string()));
    let show = ops::show(lab.root(), &lab.keys(), "alpha").unwrap();
    assert_eq!(show.fingerprint, a.key.fingerprint);
    assert_eq!(
        std::fs::read_to_string(lab.root().join("hosts/alpha/age.pub")).unwrap().trim(),
        show.age_recipient
    );
    // keys new again is a no-op that reports the same key.
    let again = ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    assert!(!again.created && again.key.fingerprint == a.key.fingerprint);

    lab.write_secret("hosts/alpha/secrets.sops.yaml", "alpha_pw: A1\n");
    lab.write_secret("hosts/beta/secrets.sops.yaml", "beta_pw: B1\n");
    lab.write_secret("secrets/shared/wifi.sops.yaml", "wifi_psk: W1\n");
    lab.write_secret("secrets/admin-only.sops.yaml", "root_pw: R1\n");

    let report = sync_lab(&lab).unwrap();
    assert!(report.config_changed);
    assert_eq!(report.files.len(), 4);
    assert!(report
        .files
        .iter()
        .filter(|f| f.path.starts_with("hosts") || f.path.starts_with("secrets/shared"))
        .all(|f| f.changed));
    let config = std::fs::read_to_string(lab.root().join(".sops.yaml")).unwrap();
    assert!(config.starts_with("# GENERATED"), "{config}");

    let alpha = lab.host_identity("alpha", "v1");
    let beta = lab.host_identity("beta", "v1");
    let files = [
        ("hosts/alpha/secrets.sops.yaml", "A1"),
        ("hosts/beta/secrets.sops.yaml", "B1"),
        ("secrets/shared/wifi.sops.yaml", "W1"),
        ("secrets/admin-only.sops.yaml", "R1"),
    ];
    let can = |id: &std::path::Path| -> Vec<&str> {
        files.iter().filter(|(f, m)| lab.decrypts(id, f, m)).map(|(f, _)| *f).collect()
    };
    assert_eq!(can(&alpha), vec!["hosts/alpha/secrets.sops.yaml", "secrets/shared/wifi.sops.yaml"]);
    assert_eq!(can(&beta), vec!["hosts/beta/secrets.sops.yaml"]);
    assert_eq!(can(&lab.admin_key).len(), 4);

    // Idempotent: nothing changes, byte for byte.
    let before = lab.snapshot();
    let report = sync_lab(&lab).unwrap();
    assert!(!report.changed(), "{report:?}");
    assert_eq!(lab.snapshot(), before);

    // Rotation: the old key decrypts nothing, the new one its files; the data
    // key of every file the old key could read is new.
    let admin_r = lab.admin_recipient.clone();
    let old_dk = data_key(&lab, "secrets/shared/wifi.sops.yaml", &admin_r, &lab.admin_key);
    let beta_dk = data_key(&lab, "hosts/beta/secrets.sops.yaml", &admin_r, &lab.admin_key);
    let identity = lab.identity();
    let rotated = ops::rotate(&lab.lab(), "alpha", &SyncOptions::new(&identity)).unwrap();
    assert_ne!(rotated.old.fingerprint, rotated.new.fingerprint);
    assert!(rotated.sync.files.iter().any(|f| f.data_key_rotated));
    assert_eq!(can(&alpha), Vec::<&str>::new(), "the old alpha key still decrypts");
    let alpha2 = lab.host_identity("alpha", "v2");
    assert_eq!(
        can(&alpha2),
        vec!["hosts/alpha/secrets.sops.yaml", "secrets/shared/wifi.sops.yaml"]
    );
    assert_ne!(data_key(&lab, "secrets/shared/wifi.sops.yaml", &admin_r, &lab.admin_key), old_dk);
    assert_eq!(
        data_key(&lab, "hosts/beta/secrets.sops.yaml", &admin_r, &lab.admin_key),
        beta_dk,
        "beta's file was not touched"
    );

    // Removing a host from the facts removes its access, and so does dropping
    // a shared secret from a host's facts.
    std::fs::remove_file(lab.root().join("hosts/beta/facts.nix")).unwrap();
    lab.add_host("alpha", &[]);
    let report = sync_lab(&lab).unwrap();
    // beta's own file loses beta, the wifi secret loses alpha; both get new data keys.
    let lost: Vec<_> = report
        .files
        .iter()
        .filter(|f| !f.removed.is_empty())
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(lost, vec!["hosts/beta/secrets.sops.yaml", "secrets/shared/wifi.sops.yaml"]);
    assert!(report.files.iter().filter(|f| !f.removed.is_empty()).all(|f| f.data_key_rotated));
    assert_eq!(can(&beta), Vec::<&str>::new());
    assert_eq!(can(&alpha2), vec!["hosts/alpha/secrets.sops.yaml"]);
    assert_eq!(can(&lab.admin_key).len(), 4);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !require("bad_input_is_refused_and_changes_nothing", TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &["wifi"]), ("gamma", &[])]);
    ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    lab.write_secret("hosts/alpha/secrets.sops.yaml", "alpha_pw: A1\n");
    lab.write_secret("secrets/shared/wifi.sops.yaml", "wifi_psk: W1\n");
    sync_lab(&lab).unwrap();

    // A host with no key.
    let err = ops::show(lab.root(), &lab.keys(), "gamma").unwrap_err().to_string();
    assert!(
        err.contains("host `gamma` has no key") && err.contains("labprov keys new gamma"),
        "{err}"
    );
    let err = secrets::injection_material_with(lab.root(), "gamma", &lab.identity())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("labprov keys new gamma"), "{err}");
    lab.write_secret("hosts/gamma/secrets.sops.yaml", "gamma_pw: G1\n");
    let before = lab.snapshot();
    let err = sync_lab(&lab).unwrap_err().to_string();
    assert!(
        err.contains("host `gamma` has no key") && err.contains("hosts/gamma/secrets.sops.yaml"),
        "{err}"
    );
    assert_eq!(lab.snapshot(), before);
    std::fs::remove_file(lab.root().join("hosts/gamma/secrets.sops.yaml")).unwrap();

    // Missing and wrong admin identities.
    let err = AdminIdentity::from_vars(|n| {
        (n == "HOME").then(|| lab.home.join("nothing").display().to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no admin age identity") && err.contains("SOPS_AGE_KEY_FILE"), "{err}");
    let stranger = lab.home.join("stranger.txt");
    keys_support::run_ok(std::process::Command::new("age-keygen").arg("-o").arg(&stranger));
    let err = secrets::injection_material_with(
        lab.root(),
        "alpha",
        &AdminIdentity::File(stranger.clone()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("none of the admin identities") && err.contains("stranger.txt"), "{err}");

    // A corrupt encrypted key: clear error naming the file and the way out.
    let enc = secrets::encrypted_key_path(lab.root(), "alpha");
    let good = std::fs::read(&enc).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] = if bad[mid] == b'A' { b'B' } else { b'A' };
    std::fs::write(&enc, &bad).unwrap();
    let err = secrets::injection_material_with(lab.root(), "alpha", &lab.identity())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("corrupt") && err.contains("alpha.age") && err.contains("keys rotate alpha"),
        "{err}"
    );
    std::fs::write(&enc, b"not age at all\n").unwrap();
    let err = secrets::injection_material_with(lab.root(), "alpha", &lab.identity())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corrupt"), "{err}");
    std::fs::write(&enc, &good).unwrap();
    assert!(secrets::injection_material_with(lab.root(), "alpha", &lab.identity()).is_ok());

    // A secrets file sops cannot parse, sorted after files sops already
    // re-encrypted in staging: the sync fails and every file is as it was,
    // even though the recipients did change (a new admin).
    let second_admin = lab.home.join("admin2.txt");
    keys_support::run_ok(std::process::Command::new("age-keygen").arg("-o").arg(&second_admin));
    let second =
        keys_support::run_ok(std::process::Command::new("age-keygen").arg("-y").arg(&second_admin))
            .trim()
            .to_string();
    lab.set_admins(&[&lab.admin_recipient.clone(), &second]);
    std::fs::write(lab.root().join("secrets/zz-broken.sops.yaml"), "key: [unclosed\n").unwrap();
    let before = lab.snapshot();
    let err = sync_lab(&lab).unwrap_err().to_string();
    assert!(
        err.contains("sops failed on secrets/zz-broken.sops.yaml")
            && err.contains("no secrets file was changed"),
        "{err}"
    );
    assert_eq!(lab.snapshot(), before, "a failed sync changed files");
    assert!(!lab.snapshot().iter().any(|(p, _)| p.to_string_lossy().contains(".labprov-sync")));
    assert!(!lab.decrypts(&second_admin, "hosts/alpha/secrets.sops.yaml", "A1"));
    // Fixed, the same sync goes through and the new admin can read everything.
    std::fs::remove_file(lab.root().join("secrets/zz-broken.sops.yaml")).unwrap();
    sync_lab(&lab).unwrap();
    assert!(lab.decrypts(&second_admin, "hosts/alpha/secrets.sops.yaml", "A1"));
    assert!(lab.decrypts(&second_admin, "secrets/shared/wifi.sops.yaml", "W1"));

    // No admin recipients at all.
    lab.set_admins(&[]);
    let err = ops::new_key(lab.root(), &lab.keys(), "gamma", None).unwrap_err().to_string();
    assert!(err.contains("no admin age recipients"), "{err}");
    assert!(!secrets::encrypted_key_path(lab.root(), "gamma").exists());
}

#[test]
fn rotate_rolls_back_when_the_sync_fails() {
    if !require("rotate_rolls_back_when_the_sync_fails", TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &[])]);
    ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    lab.write_secret("hosts/alpha/secrets.sops.yaml", "alpha_pw: A1\n");
    sync_lab(&lab).unwrap();
    let old_identity = lab.host_identity("alpha", "v1");
    std::fs::write(lab.root().join("secrets/broken.sops.yaml"), "{ not yaml\n").unwrap();
    let before = lab.snapshot();
    let identity = lab.identity();
    let err =
        ops::rotate(&lab.lab(), "alpha", &SyncOptions::new(&identity)).unwrap_err().to_string();
    assert!(err.contains("secrets/broken.sops.yaml"), "{err}");
    assert_eq!(lab.snapshot(), before, "a failed rotate left changes");
    assert!(lab.decrypts(&old_identity, "hosts/alpha/secrets.sops.yaml", "A1"));
}

#[test]
fn dry_run_changes_nothing_keys_new_resumes_and_mismatched_keys_are_refused() {
    if !require("dry_run_changes_nothing_keys_new_resumes_and_mismatched_keys_are_refused", TOOLS) {
        return;
    }
    let lab = TestLab::new(&[("alpha", &[]), ("beta", &[])]);
    let first = ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap();
    ops::new_key(lab.root(), &lab.keys(), "beta", None).unwrap();
    lab.write_secret("hosts/alpha/secrets.sops.yaml", "alpha_pw: A1\n");

    let before = lab.snapshot();
    let identity = lab.identity();
    let mut opts = SyncOptions::new(&identity);
    opts.dry_run = true;
    let report = sync(lab.root(), &lab.keys(), &opts).unwrap();
    assert!(
        report.config_changed
            && report.files[0].changed
            && report.files[0].added.iter().any(|r| r.contains("host alpha"))
    );
    assert_eq!(lab.snapshot(), before, "a dry run changed files");

    // Interrupted after the encrypted key was stored: re-running finishes it.
    std::fs::remove_file(lab.root().join("hosts/alpha/ssh_host_ed25519_key.pub")).unwrap();
    std::fs::remove_file(lab.root().join("hosts/alpha/age.pub")).unwrap();
    let err = ops::new_key(lab.root(), &lab.keys(), "alpha", None).unwrap_err().to_string();
    assert!(err.contains("admin identity"), "{err}");
    let resumed = ops::new_key(lab.root(), &lab.keys(), "alpha", Some(&identity)).unwrap();
    assert_eq!(resumed.key.fingerprint, first.key.fingerprint);
    assert_eq!(
        ops::show(lab.root(), &lab.keys(), "alpha").unwrap().fingerprint,
        first.key.fingerprint
    );

    // An encrypted key that is not the recorded one is never injected.
    std::fs::copy(
        secrets::encrypted_key_path(lab.root(), "beta"),
        secrets::encrypted_key_path(lab.root(), "alpha"),
    )
    .unwrap();
    let err =
        secrets::injection_material_with(lab.root(), "alpha", &identity).err().unwrap().to_string();
    assert!(err.contains("not the recorded") && err.contains("ssh_host_ed25519_key.pub"), "{err}");
}
