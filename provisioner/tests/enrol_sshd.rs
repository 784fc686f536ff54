//! Enrolment end to end against a real OpenSSH server on loopback whose host
//! key is made by the first-boot script of hosts/_modules/nixos/enrolment.nix
//! (run as written, with `ssh-to-age` played by tests/keys/ssh_to_age.py).

mod keys_support;
mod sshd_support;

use provisioner::{enrol, keys};

use std::path::{Path, PathBuf};
use std::process::Command;

use keys_support::{python_helper, repo, require, run_ok, TestLab};
use lab_keys::secrets::ops;
use lab_keys::PublicHostKey;
use sshd_support::{start_sshd, whoami, write_exec};

/// The `script` of the enrolment module with its Nix interpolations filled in.
fn first_boot_script(host_key: &Path, hostname: &str, report_dir: &Path) -> String {
    let module =
        std::fs::read_to_string(repo().join("hosts/_modules/nixos/enrolment.nix")).unwrap();
    let start =
        module.find("script = ''").expect("enrolment.nix has a script") + "script = ''".len();
    let end = module[start..].rfind("'';").expect("the script ends with '';") + start;
    let script = module[start..end]
        .replace("'' + lib.optionalString (cfg.reportDirectory != null) ''", "")
        .replace("${hostKey}", &host_key.display().to_string())
        .replace("${config.networking.hostName}", hostname)
        .replace("${cfg.reportDirectory}", &report_dir.display().to_string());
    assert!(!script.contains("${"), "an interpolation this test does not know:\n{script}");
    script
}

/// Runs the first-boot logic: makes the key and writes enrolment.txt.
fn first_boot(dir: &Path, hostname: &str) -> (PathBuf, PathBuf) {
    let etc = dir.join("etc/ssh");
    let firmware = dir.join("firmware");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&firmware).unwrap();
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    // pkgs.ssh-to-age and util-linux's mountpoint, as the unit's path has them.
    write_exec(
        &stubs.join("ssh-to-age"),
        &format!("#!/bin/sh\nexec python3 {} \"$@\"\n", python_helper().display()),
    );
    write_exec(&stubs.join("mountpoint"), "#!/bin/sh\nexit 0\n");
    let key = etc.join("ssh_host_ed25519_key");
    let script = dir.join("first-boot.sh");
    std::fs::write(&script, first_boot_script(&key, hostname, &firmware)).unwrap();
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap_or_default());
    let console = run_ok(Command::new("bash").arg("-e").arg(&script).env("PATH", path));
    assert!(console.contains("fingerprint: 256 SHA256:"), "{console}");
    (key, firmware.join("enrolment.txt"))
}

#[test]
fn enrolment_against_a_real_sshd() {
    let name = "enrolment_against_a_real_sshd";
    if !require(
        name,
        &[
            "nix",
            "sops",
            "age-keygen",
            "ssh",
            "ssh-keygen",
            "ssh-keyscan",
            "python3",
            "pynacl",
            "bash",
        ],
    ) {
        return;
    }
    let lab = TestLab::new(&[("nixpi", &[]), ("luna", &[])]);
    let machine = lab.home.join("machine");
    let (host_key, report) = first_boot(&machine, "nixpi");
    let client = lab.home.join("client");
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&client));
    let (_sshd, port) = match start_sshd(&machine, &host_key, &client.with_extension("pub"), "") {
        Ok(s) => s,
        Err(reason) => {
            lab_testkit::skip(name, &reason);
            return;
        }
    };
    // The host already has secrets, encrypted to the admin only so far.
    lab.write_secret("hosts/nixpi/secrets.sops.yaml", "pi_pw: P1\n");
    let real =
        PublicHostKey::parse(&std::fs::read_to_string(host_key.with_extension("pub")).unwrap())
            .unwrap();

    let mut opts = enrol::EnrolOptions::new("nixpi", "127.0.0.1");
    opts.port = port;
    opts.user = whoami();
    opts.ssh_identity = Some(client.clone());
    opts.remote_key = host_key.with_extension("pub").display().to_string();
    let identity = lab.identity();
    let never = &mut |_: &enrol::Candidate| -> enrol::Result<bool> {
        panic!("must not prompt when a fingerprint is given")
    };

    // A wrong fingerprint is refused and nothing is recorded.
    let before = lab.snapshot();
    let other = lab_keys::HostKey::generate("other");
    let mut wrong = opts.clone();
    wrong.fingerprint = Some(other.fingerprint());
    let err = enrol::enrol(&lab.lab(), &wrong, &identity, never).unwrap_err().to_string();
    assert!(
        err.contains("REFUSED")
            && err.contains(&other.fingerprint())
            && err.contains(&real.fingerprint()),
        "{err}"
    );
    assert_eq!(lab.snapshot(), before);
    // So is a fingerprint the operator declines at the prompt.
    let err = enrol::enrol(&lab.lab(), &opts, &identity, &mut |c: &enrol::Candidate| {
        assert_eq!(c.fingerprint, real.fingerprint());
        Ok(false)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("not confirmed"), "{err}");
    assert_eq!(lab.snapshot(), before);
    // A report from another host is refused.
    let foreign = lab.home.join("foreign.txt");
    std::fs::write(
        &foreign,
        std::fs::read_to_string(&report).unwrap().replace("host: nixpi", "host: luna"),
    )
    .unwrap();
    let mut bad = opts.clone();
    bad.report = Some(foreign);
    assert!(enrol::enrol(&lab.lab(), &bad, &identity, never)
        .unwrap_err()
        .to_string()
        .contains("not `nixpi`"));

    // SSH itself trusts only the pinned key: pinning another key fails.
    let err = enrol::pinned_read_key(&opts, &other.public()).unwrap_err().to_string();
    assert!(
        err.contains("pinned ssh") && err.to_lowercase().contains("host key verification failed"),
        "{err}"
    );

    // The right fingerprint, from the report on the firmware partition.
    let mut good = opts.clone();
    good.report = Some(report.clone());
    let done = enrol::enrol(&lab.lab(), &good, &identity, never).unwrap();
    assert_eq!(done.recorded, Some(ops::Recorded::Recorded));
    assert_eq!(done.candidate.fingerprint, real.fingerprint());
    let recorded =
        std::fs::read_to_string(lab.root().join("hosts/nixpi/ssh_host_ed25519_key.pub")).unwrap();
    assert!(PublicHostKey::parse(&recorded).unwrap().same_key(&real));
    let age_pub = std::fs::read_to_string(lab.root().join("hosts/nixpi/age.pub")).unwrap();
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains(&format!("age: {}", age_pub.trim())));
    assert!(!lab_keys::secrets::encrypted_key_path(lab.root(), "nixpi").exists());
    // Synced: the host, with the key it made itself, reads its secrets.
    let host_identity = lab.home.join("nixpi.age");
    let id = run_ok(
        Command::new("python3").arg(python_helper()).args(["-private-key", "-i"]).arg(&host_key),
    );
    std::fs::write(&host_identity, id).unwrap();
    assert!(lab.decrypts(&host_identity, "hosts/nixpi/secrets.sops.yaml", "P1"));
    assert_eq!(
        lab_keys::secrets::ops::show(lab.root(), &lab.keys(), "nixpi").unwrap().fingerprint,
        real.fingerprint()
    );

    // Re-running is a no-op; --fingerprint works as well as --report.
    let before = lab.snapshot();
    let mut again = opts.clone();
    again.fingerprint = Some(real.fingerprint());
    let done = enrol::enrol(&lab.lab(), &again, &identity, never).unwrap();
    assert_eq!(done.recorded, Some(ops::Recorded::Unchanged));
    assert_eq!(lab.snapshot(), before);

    // The lab-held key of another host is never overwritten by enrolment by accident.
    ops::new_key(lab.root(), &lab.keys(), "luna", None).unwrap();
    let mut luna = again.clone();
    luna.host = "luna".into();
    let err = enrol::enrol(&lab.lab(), &luna, &identity, never).unwrap_err().to_string();
    assert!(err.contains("already has a key") && err.contains("rotate"), "{err}");
}

#[test]
fn derive_command_reads_public_and_private_keys() {
    if !require(
        "derive_command_reads_public_and_private_keys",
        &["ssh-keygen", "python3", "pynacl"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    let public = keys::derive(&key.with_extension("pub")).unwrap();
    assert!(public.age_identity.is_none());
    let expected = run_ok(
        Command::new("python3").arg(python_helper()).arg("-i").arg(key.with_extension("pub")),
    );
    assert_eq!(public.age_recipient, expected.trim());
    let private = keys::derive(&key).unwrap();
    let expected_id =
        run_ok(Command::new("python3").arg(python_helper()).args(["-private-key", "-i"]).arg(&key));
    assert_eq!(private.age_identity.as_deref(), Some(expected_id.trim()));
    assert_eq!(private.age_recipient, public.age_recipient);
    std::fs::write(dir.path().join("empty"), "").unwrap();
    assert!(keys::derive(&dir.path().join("empty")).err().unwrap().to_string().contains("empty"));
}
