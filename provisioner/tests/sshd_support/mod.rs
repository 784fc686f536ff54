//! A real OpenSSH server on loopback for the enrolment and install tests.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::keys_support::run_ok;

pub fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub struct Sshd(pub Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// sshd on 127.0.0.1 with `host_key`, admitting `client_pub` for the current
/// user; `extra` is appended to its configuration.
pub fn start_sshd(
    dir: &Path,
    host_key: &Path,
    client_pub: &Path,
    extra: &str,
) -> Result<(Sshd, u16), String> {
    let sshd = sshd_binary().ok_or("no sshd binary")?;
    // Debian's sshd insists on its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = lab_testkit::vm::free_port();
    let config = dir.join(format!("sshd_config-{port}"));
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\n{extra}",
            host_key.display(),
            dir.join(format!("sshd-{port}.pid")).display(),
            client_pub.display()
        ),
    )
    .unwrap();
    let child = Command::new(&sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start sshd: {e}"))?;
    let mut server = Sshd(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((server, port));
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            server.0.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return Err(format!("sshd exited ({status}): {err}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("sshd did not listen within 10 s".into())
}

pub fn whoami() -> String {
    run_ok(Command::new("id").arg("-un")).trim().to_string()
}
