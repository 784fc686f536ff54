//! What the install tests (vm_install, vm_install_faults) and
//! scripts/e2e-install (examples/e2e_install.rs) share: a THROWAWAY lab
//! whose host has the given disko spec and a fresh lab-held key (never the
//! repository's real keys), the STAND-IN system built for that host
//! (tests/standin-iso/standin-system.nix), and `labprov install` run against
//! the installer VM of vm_support, bounded in time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::keys_support::{run_ok, TestLab};
use crate::vm_support::{labprov_bin, repo, spec_json, text, Installer};

/// A host ready to be installed onto the installer VM.
pub struct InstallLab {
    pub lab: TestLab,
    pub host: String,
    /// The lab-held key's fingerprint and public key, as recorded.
    pub recorded: String,
    pub public_key: String,
    /// The stand-in system's store path.
    pub system: String,
    /// `--disk NAME=/dev/vdX` for each disk of the spec, in name order.
    pub disks: Vec<String>,
    /// A port on this machine to reach the installer's SSH through (a
    /// relay) instead of the VM's forwarded port.
    pub via: Option<u16>,
}

impl InstallLab {
    /// `host` with `spec` (a disko .nix file, or JSON) as its
    /// hosts/HOST/disko.nix, a lab-held key made by `labprov keys new`, and
    /// the stand-in system that boots the spec's root with the installer's
    /// admin key for root.
    pub fn new(installer: &Installer, host: &str, spec: &Path) -> Result<InstallLab, String> {
        let lab = TestLab::new(&[(host, &[])]);
        let disko = lab.root().join("hosts").join(host).join("disko.nix");
        if spec.extension().is_some_and(|e| e == "json") {
            std::fs::copy(spec, disko.with_file_name("disko.json")).map_err(|e| e.to_string())?;
            std::fs::write(&disko, "builtins.fromJSON (builtins.readFile ./disko.json)\n")
                .map_err(|e| e.to_string())?;
        } else {
            std::fs::copy(spec, &disko).map_err(|e| format!("{}: {e}", spec.display()))?;
        }
        let (disks, root) = spec_facts(&disko)?;

        let mut keys_new = Command::new(labprov_bin());
        keys_new
            .args(["keys", "new", host])
            .env("LAB_ROOT", lab.root())
            .env("HOME", &lab.home)
            .env("SOPS_AGE_KEY_FILE", &lab.admin_key);
        run_ok(&mut keys_new);
        let shown = lab_keys::secrets::ops::show(lab.root(), &lab.keys(), host)
            .map_err(|e| e.to_string())?;

        let kit = std::env::var_os("LABIMG_STANDIN_ISO")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/standin-iso"))
            .join("standin-system-x86_64");
        let admin_pub = std::fs::read_to_string(installer.admin_key.with_extension("pub"))
            .map_err(|e| e.to_string())?;
        let built = Command::new("nix-build")
            .arg(repo().join("tests/standin-iso/standin-system.nix"))
            .arg("--arg")
            .arg("kernel")
            .arg(kit.join("bzImage"))
            .arg("--arg")
            .arg("initrd")
            .arg(kit.join("initrd"))
            .args(["--argstr", "root", &root])
            .args(["--argstr", "authorizedKeys", admin_pub.trim()])
            .args(["--argstr", "host", host, "--no-out-link"])
            .output()
            .map_err(|e| format!("nix-build: {e}"))?;
        if !built.status.success() {
            return Err(format!("nix-build standin-system.nix: {}", text(&built)));
        }
        let system = String::from_utf8_lossy(&built.stdout).trim().to_string();
        Ok(InstallLab {
            lab,
            host: host.to_string(),
            recorded: shown.fingerprint,
            public_key: shown.public_key,
            system,
            disks,
            via: None,
        })
    }

    /// `labprov install HOST` against the installer, pinned from labimg's
    /// manifest, then `extra`.
    pub fn args(&self, installer: &Installer, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "install".into(),
            self.host.clone(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.via.unwrap_or(installer.vm.ssh_port).to_string(),
            "--ssh-identity".into(),
            installer.admin_key.display().to_string(),
            "--installer-manifest".into(),
            installer.manifest.display().to_string(),
            "--system".into(),
            self.system.clone(),
        ];
        for d in &self.disks {
            v.push("--disk".into());
            v.push(d.clone());
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// `labprov install ... extra` started with the lab's environment (the
    /// throwaway admin key, an empty HOME), its output read as it comes.
    pub fn start(&self, installer: &Installer, extra: &[&str]) -> Running {
        let mut child = Command::new(labprov_bin())
            .args(self.args(installer, extra))
            .env("LAB_ROOT", self.lab.root())
            .env("HOME", &self.lab.home)
            .env("SOPS_AGE_KEY_FILE", &self.lab.admin_key)
            .env_remove("SOPS_AGE_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", labprov_bin().display()));
        // Read while it runs: a full pipe would stall a long install.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = Some(drain(&mut child, stderr.clone()));
        Running { child, out, stderr }
    }

    /// `labprov install ... extra` to its end, killed (and the caller failed
    /// with the VM's serial log) if it runs longer than `limit`.
    pub fn run(&self, installer: &Installer, extra: &[&str], limit: Duration) -> Output {
        let mut running = self.start(installer, extra);
        match running.wait(limit) {
            Some(out) => out,
            None => {
                let out = running.finish();
                panic!(
                    "labprov {} ran over {}s:\n{}\nserial log:\n{}",
                    extra.join(" "),
                    limit.as_secs(),
                    text(&out),
                    installer.vm.serial_tail(60)
                );
            }
        }
    }
}

/// A `labprov install` run in progress.
pub struct Running {
    pub child: Child,
    /// Taken once, when the output is collected.
    out: Option<Drained>,
    /// What it has written to stderr so far (its progress lines).
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    /// Its output once it ends within `limit`; None (still running) else.
    pub fn wait(&mut self, limit: Duration) -> Option<Output> {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = self.child.wait().unwrap();
        Some(self.collect(status))
    }

    /// Kills it (SIGKILL) and returns what it wrote.
    pub fn finish(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        self.collect(status)
    }

    /// Its output after it ended. Processes it started (ssh) may hold its
    /// pipes a while after a SIGKILL: waited for up to a minute.
    fn collect(&mut self, status: std::process::ExitStatus) -> Output {
        let mut stdout = Vec::new();
        if let Some((out, err)) = self.out.take() {
            let started = Instant::now();
            while !(out.is_finished() && err.is_finished())
                && started.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if out.is_finished() {
                stdout = out.join().unwrap();
            }
        }
        let stderr = self.stderr.lock().unwrap().clone();
        Output { status, stdout, stderr }
    }
}

impl Drop for Running {
    /// A test that panics mid-run leaves no labprov behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The threads reading stdout (to its end) and stderr.
type Drained = (std::thread::JoinHandle<Vec<u8>>, std::thread::JoinHandle<()>);

/// Reads the child's stdout to its end on a thread, and its stderr into
/// `stderr` as it comes.
fn drain(child: &mut Child, stderr: Arc<Mutex<Vec<u8>>>) -> Drained {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let err = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut err, &mut buf) {
            stderr.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    (out, err)
}

/// A disko spec's disks, mapped in name order to the VM's /dev/vda,
/// /dev/vdb, ... (`NAME=/dev/vdX`), and the device of its root filesystem.
pub fn spec_facts(spec: &Path) -> Result<(Vec<String>, String), String> {
    let raw = if spec.extension().is_some_and(|e| e == "json") {
        std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?
    } else {
        String::from_utf8_lossy(&spec_json(spec)).into_owned()
    };
    let normalized = lab_disko::normalize_str(&raw).map_err(|e| e.to_string())?;
    let root = root_device(&normalized)?;
    let names: Vec<String> =
        normalized["disk"].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    if names.is_empty() || names.len() > 8 {
        return Err(format!("the spec has {} disks; the VM takes 1 to 8", names.len()));
    }
    let disks = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name}=/dev/vd{}", (b'a' + i as u8) as char))
        .collect();
    Ok((disks, root))
}

/// The device the spec mounts at `/`, as NixOS's fileSystems."/" names it
/// (disko's `device`). The stand-in system's init mounts a by-partlabel or
/// by-label name; a LUKS, LVM or md root is refused.
pub fn root_device(normalized: &serde_json::Value) -> Result<String, String> {
    fn find(v: &serde_json::Value) -> Option<&serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("type").and_then(|t| t.as_str()) == Some("filesystem")
                    && m.get("mountpoint").and_then(|t| t.as_str()) == Some("/")
                {
                    return Some(v);
                }
                m.values().find_map(find)
            }
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    let fs = find(normalized).ok_or("the spec mounts no filesystem at /")?;
    let device = fs["device"].as_str().ok_or("the root filesystem has no device")?;
    if !device.starts_with("/dev/disk/by-partlabel/") && !device.starts_with("/dev/disk/by-label/")
    {
        return Err(format!(
            "the spec's root is {device}; the stand-in system's init mounts only a partition \
             named by its label (no LUKS, LVM or md root)"
        ));
    }
    Ok(device.to_string())
}
