//! Benchmark: `labprov install rydev` against the same install done the
//! usual way by a plain script, on the same installer VM (the stand-in
//! x86_64 installer under QEMU/TCG, one 4 GiB disk), in one run; prints each
//! way's phase times and the ratio (never asserts on wall time).
//!
//!   cargo run -p provisioner --example bench_install -- [--runs N]
//!
//! The plain script (what one types without labprov): ssh with the
//! installer's pinned key, `sfdisk` of rydev's layout (ESP 512 MiB + root;
//! the installer has util-linux's sfdisk, not sgdisk), `mkfs.vfat`,
//! `mkfs.ext4`, mounts; the host key streamed with `ssh cat` (the stand-in's
//! dropbear has no scp server; the key is a file on this machine, which
//! labprov never writes); `nix copy --substitute-on-destination` (as
//! nixos-anywhere copies by default) of the same stand-in system and the
//! stand-in nixos-install; unmount and reboot; ssh polled once a second
//! until the host answers with its key. labprov does the same and also
//! shows and checks the plan, decrypts the key in memory, and keeps each
//! phase re-runnable. Between runs the VM is powered off, its disk replaced
//! by a blank one and the installer booted again (not timed).

#[path = "../tests/keys_support/mod.rs"]
mod keys_support;
#[path = "../tests/vm_install_support/mod.rs"]
mod vm_install_support;
#[path = "../tests/vm_support/mod.rs"]
mod vm_support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use vm_install_support::InstallLab;
use vm_support::{boot_installer, repo, text, Installer};

const PLAIN: &str = r#"
set -euo pipefail
t=$(date +%s.%N)
lap() { now=$(date +%s.%N); awk -v a="$t" -v b="$now" -v p="$1" 'BEGIN { printf "%s %.2f\n", p, b - a }'; t=$now; }
opts="-F /dev/null -p $PORT -i $ADMIN -o UserKnownHostsFile=$KNOWN -o StrictHostKeyChecking=yes -o BatchMode=yes"
on() { ssh $opts root@127.0.0.1 "$@"; }
on 'printf "label: gpt\nsize=512MiB, type=U, name=disk-main-ESP\ntype=L, name=disk-main-root\n" | sfdisk -q --wipe always /dev/vda
    mkfs.vfat -F 32 /dev/vda1 > /dev/null && mkfs.ext4 -F -q /dev/vda2
    mkdir -p /mnt && mount /dev/vda2 /mnt && mkdir -p /mnt/boot && mount -o umask=0077 /dev/vda1 /mnt/boot'
lap disk
on 'umask 077 && mkdir -p /mnt/etc/ssh && cat > /mnt/etc/ssh/ssh_host_ed25519_key' < "$HOSTKEY"
on 'cat > /mnt/etc/ssh/ssh_host_ed25519_key.pub' < "$HOSTKEY.pub"
lap keys
NIX_SSHOPTS="$opts" nix --extra-experimental-features nix-command copy --substitute-on-destination \
  --to "ssh://root@127.0.0.1?remote-store=local%3Froot%3D%2Fmnt&compress=true" "$SYSTEM"
on "mkdir -p /mnt/tmp && chmod 1777 /mnt/tmp && nixos-install --root /mnt --no-root-passwd --no-channel-copy --system $SYSTEM" > /dev/null
lap install
on 'umount /mnt/boot /mnt && nohup sh -c "sleep 3 && systemctl reboot" > /dev/null 2>&1 &'
lap reboot
until ssh -F /dev/null -p "$PORT" -i "$ADMIN" -o UserKnownHostsFile="$HOSTKNOWN" \
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5 root@127.0.0.1 true 2> /dev/null; do
  sleep 1
done
lap verify
"#;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut runs = 1;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|n| n.parse::<usize>().ok())) {
            ("--runs", Some(n)) if n > 0 => runs = n,
            _ => {
                eprintln!("usage: bench_install [--runs N]");
                return ExitCode::from(2);
            }
        }
    }
    let t = "bench_install";
    if !keys_support::require(t, &["nix", "nix-build", "nix-store", "sops", "age-keygen", "awk"]) {
        return ExitCode::from(1);
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut installer) = boot_installer(t, tmp.path(), 1, 4 << 30) else {
        eprintln!("bench_install: the installer VM cannot run here (above)");
        return ExitCode::from(1);
    };
    installer.install_labprov();
    let rydev = InstallLab::new(&installer, "rydev", &repo().join("hosts/rydev/disko.nix"))
        .unwrap_or_else(|e| panic!("{e}"));

    // The plain script's key files: the throwaway lab's key, decrypted.
    let key = lab_keys::secrets::ops::injection_material_with(
        rydev.lab.root(),
        "rydev",
        &rydev.lab.identity(),
    )
    .unwrap();
    let hostkey = tmp.path().join("rydev_host_key");
    write_private(&hostkey, key.private_openssh().as_bytes());
    std::fs::write(hostkey.with_extension("pub"), format!("{}\n", key.public_openssh())).unwrap();
    let hostknown = tmp.path().join("known_rydev");
    std::fs::write(&hostknown, installer.vm.known_hosts_line(&rydev.public_key)).unwrap();

    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for run in 0..runs {
        if run > 0 {
            fresh_installer(&mut installer);
        }
        let started = Instant::now();
        let out = rydev.run(&installer, &["--yes", "--json"], Duration::from_secs(1800));
        let wall = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "labprov install: {}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let phases: Vec<String> = report["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!("{} {:.2}", p["phase"].as_str().unwrap(), p["seconds"].as_f64().unwrap())
            })
            .collect();
        println!("labprov install  {wall:7.2} s   {}", phases.join("  "));
        ours.push(wall);

        fresh_installer(&mut installer);
        let started = Instant::now();
        let out = Command::new("bash")
            .args(["-c", PLAIN])
            .env("PORT", installer.vm.ssh_port.to_string())
            .env("ADMIN", &installer.admin_key)
            .env("KNOWN", &installer.known_hosts)
            .env("HOSTKEY", &hostkey)
            .env("HOSTKNOWN", &hostknown)
            .env("SYSTEM", &rydev.system)
            .output()
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "the plain script: {}\n{}",
            text(&out),
            installer.vm.serial_tail(40)
        );
        let laps = String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>().join("  ");
        println!("plain script     {wall:7.2} s   {laps}");
        plain.push(wall);
    }
    let (a, b) = (median(&mut ours), median(&mut plain));
    println!(
        "median of {runs}: labprov install {a:.2} s, plain script {b:.2} s, ratio {:.2}x",
        a / b
    );
    ExitCode::SUCCESS
}

/// Powers the VM off, replaces its disk by a blank one and boots the
/// installer again, with labprov on it (the installer lives in RAM).
fn fresh_installer(installer: &mut Installer) {
    installer.vm.power_off().unwrap();
    lab_testkit::vm::blank_disk(&installer.dir.join("disk0.raw"), 4 << 30).unwrap();
    installer.vm.restart().unwrap();
    installer
        .vm
        .wait_for_serial("installer: sshd up", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("the installer did not come back: {e}"));
    installer.vm.wait_for_ssh(Duration::from_secs(30)).unwrap();
    installer.install_labprov();
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
