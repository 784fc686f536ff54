//! Test support shared by the tools' tests; a dev-dependency only.

pub mod vm;

/// Says why a test cannot run here (`SKIP: <test>: <reason>`) and returns
/// true; the caller then returns. Under `LAB_REQUIRE_ALL=1` (what CI sets,
/// having installed everything) the missing prerequisite fails the test
/// instead: CI never skips silently.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var("LAB_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason} (LAB_REQUIRE_ALL=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIP: {test}: {reason}");
    true
}

/// Whether `name` is on the PATH.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// True when every tool is on the PATH; otherwise [`skip`]s naming the
/// missing ones and returns false.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    missing.is_empty() || !skip(test, &format!("missing {}", missing.join(", ")))
}

/// Every argument of the command tree without a help line, as
/// `labimg flash --json`. Positional arguments count too; clap's own
/// `--help`/`--version` are documented by clap.
pub fn undocumented(root: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    walk(root, root.get_name(), &mut missing);
    missing
}

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    if cmd.get_about().is_none() && cmd.get_long_about().is_none() && !cmd.is_hide_set() {
        missing.push(format!("{path} (the command itself)"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name =
                arg.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| id.to_uppercase());
            missing.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
}

/// What both tools promise of `TOOL completions SHELL`: a bash script
/// `bash -n` accepts naming every command, a zsh script for the tool, no
/// panic when the reader goes away early (`| head`), and an error (not a
/// cut-off script and success) on a full disk (`> /dev/full`).
pub fn check_completions(binary: &str, commands: &[&str]) {
    use std::process::{Command, Stdio};
    let run = |shell: &str| {
        let out = Command::new(binary).args(["completions", shell]).output().expect("run the tool");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("a script is text")
    };
    let script = run("bash");
    for cmd in commands {
        assert!(script.contains(cmd), "{cmd} missing from the bash completions");
    }
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash checks the script");
    std::io::Write::write_all(bash.stdin.as_mut().expect("piped"), script.as_bytes())
        .expect("bash reads the script");
    let checked = bash.wait_with_output().expect("bash ends");
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    let name = std::path::Path::new(binary).file_name().map(|n| n.to_string_lossy().into_owned());
    assert!(run("zsh").starts_with(&format!("#compdef {}", name.unwrap_or_default())));

    let mut child = Command::new(binary)
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the tool");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("the tool ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = Command::new(binary)
        .args(["completions", "bash"])
        .stdout(full)
        .output()
        .expect("run the tool");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("No space left"), "{stderr}");
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    #[test]
    fn an_argument_without_help_is_named() {
        let cmd = Command::new("t").about("a tool").subcommand(
            Command::new("go")
                .about("go somewhere")
                .arg(Arg::new("json").long("json"))
                .arg(Arg::new("to").help("where to")),
        );
        assert_eq!(super::undocumented(&cmd), vec!["t go --json".to_string()]);
    }
}
