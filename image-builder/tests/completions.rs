//! `labimg completions SHELL`: a script bash accepts, naming every command,
//! and no panic when the reader goes away early (`| head`).

use std::process::{Command, Stdio};

#[test]
fn completions_parse_name_every_command_and_survive_a_closed_pipe() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_labimg")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8(out.stdout).unwrap();
    for cmd in ["build", "inspect", "firmware", "devices", "flash", "verify", "completions"] {
        assert!(script.contains(cmd), "{cmd} missing");
    }
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash checks the script");
    std::io::Write::write_all(bash.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let checked = bash.wait_with_output().unwrap();
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));

    let mut child = Command::new(env!("CARGO_BIN_EXE_labimg"))
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
        let out = Command::new(env!("CARGO_BIN_EXE_labimg"))
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
