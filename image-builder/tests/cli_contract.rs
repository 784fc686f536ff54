//! The exit-code contract and the one-line error, through the real binary:
//! usage 2, failure 1, mismatch 3, refused 4 (interrupted 130 is in
//! tests/flash.rs and tests/build.rs).

use std::fs;
use std::process::{Command, Output, Stdio};

fn labimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labimg"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run labimg")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn each_class_of_failure_has_its_exit_code_and_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("a.img");
    fs::write(&img, vec![0x11u8; 1 << 20]).unwrap();

    // Usage: clap's own code.
    let out = labimg(&["flash"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Failure: one line, the tool's name first, no anyhow chain.
    let out = labimg(&["inspect", tmp.path().join("missing.img").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("labimg: error: ")
            && err.contains("missing.img")
            && !err.contains("Caused by"),
        "{err}"
    );

    // Refused: no terminal to confirm on and no --yes; nothing written.
    let target = tmp.path().join("target.raw");
    fs::write(&target, vec![0x22u8; 2 << 20]).unwrap();
    let out = labimg(&["flash", "--no-bmap", img.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert!(fs::read(&target).unwrap().iter().all(|&b| b == 0x22), "a refused flash wrote");

    // Mismatch: the device differs from the image.
    let out = labimg(&["verify", img.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}
