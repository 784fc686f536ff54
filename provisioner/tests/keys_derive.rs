//! ssh-to-age derivation against an independent implementation: keys made by
//! ssh-keygen and by the ssh-key crate, derived by lab-keys and by
//! tests/keys/ssh_to_age.py (libsodium + reference bech32), read by pyrage and
//! by the age CLI, which decrypts with the derived identity what was encrypted
//! to the derived recipient.

mod keys_support;

use std::path::Path;
use std::process::Command;

use keys_support::{python_helper, require, run_ok};
use lab_keys::{age as ssh_age, HostKey, PublicHostKey};

fn derive_with_lab_model(private: &Path, public: &Path) -> (String, String) {
    let key = HostKey::load(private).unwrap();
    let line = std::fs::read_to_string(public).unwrap();
    let recipient = ssh_age::recipient_from_openssh_line(&line).unwrap();
    assert_eq!(recipient, PublicHostKey::parse(&line).unwrap().age_recipient());
    assert_eq!(recipient, key.age_recipient());
    (recipient, key.age_identity().to_string())
}

#[test]
fn derivation_agrees_with_libsodium_pyrage_and_age_for_many_keys() {
    if !require(
        "derivation_agrees_with_libsodium_pyrage_and_age_for_many_keys",
        &["python3", "pynacl", "pyrage", "ssh-keygen", "age", "age-keygen"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut batch = Vec::new();
    for i in 0..300 {
        let private = dir.path().join(format!("k{i}"));
        let public = dir.path().join(format!("k{i}.pub"));
        if i % 2 == 0 {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("k{i}"), "-f"])
                    .arg(&private),
            );
        } else {
            let key = HostKey::generate(&format!("k{i}"));
            std::fs::write(&private, key.private_openssh().as_bytes()).unwrap();
            std::fs::write(&public, key.public_openssh() + "\n").unwrap();
        }
        let (recipient, identity) = derive_with_lab_model(&private, &public);
        batch.push(serde_json::json!({
            "private": private, "public": public, "recipient": recipient, "identity": identity,
        }));
    }
    let batch_path = dir.path().join("batch.json");
    std::fs::write(&batch_path, serde_json::to_vec(&batch).unwrap()).unwrap();
    let out = run_ok(Command::new("python3").arg(python_helper()).arg("check").arg(&batch_path));
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["checked"], 300);
    assert_eq!(result["bad"], serde_json::json!([]), "{out}");

    // The age CLI (Go) on a sample: the identity file it reads gives the same
    // recipient, and it decrypts what it encrypted to the derived recipient.
    for item in batch.iter().step_by(15) {
        let id_file = dir.path().join("id.txt");
        std::fs::write(&id_file, format!("{}\n", item["identity"].as_str().unwrap())).unwrap();
        let shown = run_ok(Command::new("age-keygen").arg("-y").arg(&id_file));
        assert_eq!(shown.trim(), item["recipient"].as_str().unwrap());
        let plain = dir.path().join("plain");
        std::fs::write(&plain, format!("secret for {}", item["public"])).unwrap();
        let enc = dir.path().join("plain.age");
        run_ok(
            Command::new("age")
                .args(["-r", item["recipient"].as_str().unwrap(), "-o"])
                .arg(&enc)
                .arg(&plain),
        );
        let dec = run_ok(Command::new("age").arg("-d").arg("-i").arg(&id_file).arg(&enc));
        assert_eq!(dec.as_bytes(), std::fs::read(&plain).unwrap());
    }
}

#[test]
fn non_ed25519_and_encrypted_keys_are_refused_clearly() {
    if !require("non_ed25519_and_encrypted_keys_are_refused_clearly", &["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rsa = dir.path().join("rsa");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f"])
            .arg(&rsa),
    );
    let line = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let err = ssh_age::recipient_from_openssh_line(&line).unwrap_err().to_string();
    assert!(err.contains("not an ed25519 key"), "{err}");
    let err = HostKey::load(&rsa).err().unwrap().to_string();
    assert!(err.contains("ed25519"), "{err}");
    let locked = dir.path().join("locked");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
            .arg(&locked),
    );
    let err = HostKey::load(&locked).err().unwrap().to_string();
    assert!(err.contains("passphrase"), "{err}");
}
