//! `labprov completions SHELL`: scripts the shells accept, naming every
//! command, and no panic when the reader goes away early.

use std::process::{Command, Stdio};

fn completions(shell: &str) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_labprov")).args(["completions", shell]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completions_parse_and_name_every_command() {
    let script = completions("bash");
    for cmd in ["disk", "keys", "secrets", "enrol", "install", "completions"] {
        assert!(script.contains(cmd), "{cmd} missing");
    }
    let check = Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let Ok(mut bash) = check else {
        panic!("bash is needed to check the completion script");
    };
    std::io::Write::write_all(bash.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = bash.wait_with_output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
    assert!(completions("zsh").starts_with("#compdef labprov"));
}

#[test]
fn a_closed_pipe_is_not_a_crash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labprov"))
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A full disk is an error, not a cut-off script and success.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = Command::new(env!("CARGO_BIN_EXE_labprov"))
            .args(["completions", "bash"])
            .stdout(full)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No space left"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
