//! `labprov backup` through the real binary against this repository's lab:
//! what it refuses before any connection (a host that keeps no state, a
//! repository the host does not have, a host without a recorded key) and the
//! exit code of each. The host side (`lab-backup` and the scripts it runs) is
//! proven with real restic in tests/backup/run.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn labprov(args: &[&str]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    Command::new(env!("CARGO_BIN_EXE_labprov"))
        .arg("--lab")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run labprov")
}

fn refused(args: &[&str], code: i32, message: &str) {
    let out = labprov(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(message), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn requests_the_registry_cannot_serve_are_refused_before_connecting() {
    if !lab_testkit::require_tools("backup_cli", &["nix"]) {
        return;
    }
    refused(
        &["backup", "restore-test", "nixpi"],
        2,
        "nixpi backs up nothing: none of its services in hosts/services.nix has a `backup` entry",
    );
    refused(
        &["backup", "run", "luna", "offsite"],
        2,
        "luna has no backup repository `offsite` (its repositories: local, remote)",
    );
    refused(&["backup", "status", "moon"], 2, "no host named `moon`");
    // The repository lab has no host keys recorded: nothing to pin SSH to.
    refused(
        &["backup", "status", "luna"],
        1,
        "luna cannot be reached: it has no recorded SSH host key",
    );
}
