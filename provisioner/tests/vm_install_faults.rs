//! `labprov install` interrupted on a real machine, then run again, ending
//! as an uninterrupted install: the installer VM (tests/vm_support) with two
//! blank disks. On vdb, rydev is installed without interruption (disk, keys
//! and install, under /mnt-ref): the reference. On vda, three runs of the
//! whole install are each interrupted:
//!   1. `labprov install` itself killed with SIGKILL while the installer
//!      formats the root (the disk phase);
//!   2. its SSH connection dropped in the middle of the key step: labprov
//!      reaches the installer through a TCP relay here, which holds the key
//!      step's second connection (the private key is in place, its public
//!      half not yet) and then closes both ends, as a link that dies does;
//!   3. the same relay dropping the connection in the middle of `nix copy`
//!      (1 MiB into the closure).
//!
//! Then a re-run of disk, keys and install completes, and vda equals the
//! reference: the same partition table and filesystems (sfdisk, blkid), the
//! same files below the root (type, mode, size, link target; the host key,
//! the loader entry and the kernel and initrd byte for byte; the same store
//! paths). Last, `--phases reboot,verify` resumes: the VM boots from vda and answers
//! with rydev's recorded key.

mod keys_support;
mod vm_install_support;
mod vm_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_install_support::{InstallLab, Running};
use vm_support::{boot_installer, repo, text, Installer, RUNNING};

/// Waits (bounded) until `done` holds while the run goes on.
fn wait_until(what: &str, limit: Duration, run: &mut Running, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "no {what} within {}s", limit.as_secs());
        if let Some(out) = run.wait(Duration::ZERO) {
            panic!("labprov ended ({}) before {what}:\n{}", out.status, text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP relay between labprov and the VM's forwarded SSH port: a link that
/// can stop carrying bytes (`hold`) and die (`cut`: both ends of every
/// connection closed, so labprov's ssh and the installer's sshd each see
/// the connection drop).
struct Relay {
    port: u16,
    state: Arc<RelayState>,
}

type HoldWhen = Box<dyn FnMut() -> Option<u64> + Send>;

#[derive(Default)]
struct RelayState {
    held: AtomicBool,
    /// Asked at each new connection: Some(n) holds the link once that
    /// connection has carried n bytes towards the installer.
    hold_when: Mutex<Option<HoldWhen>>,
    open: Mutex<Vec<TcpStream>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                let hold_after = st.hold_when.lock().unwrap().as_mut().and_then(|when| when());
                {
                    let mut open = st.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (from, to, hold_after) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), hold_after),
                    (server, client, None),
                ] {
                    let st = st.clone();
                    std::thread::spawn(move || pump(from, to, hold_after, &st));
                }
            }
        });
        Relay { port, state }
    }

    /// From the first new connection for which `when` says Some(n), once
    /// that connection has carried n bytes, the link carries nothing more.
    fn hold_when(&self, when: impl FnMut() -> Option<u64> + Send + 'static) {
        *self.state.hold_when.lock().unwrap() = Some(Box::new(when));
    }

    fn held(&self) -> bool {
        self.state.held.load(Ordering::SeqCst)
    }

    /// The link dies: every open connection closed at both ends. Later
    /// connections are carried again.
    fn cut(&self) {
        *self.state.hold_when.lock().unwrap() = None;
        let open: Vec<TcpStream> = self.state.open.lock().unwrap().drain(..).collect();
        for s in &open {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.state.held.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, hold_after: Option<u64>, state: &RelayState) {
    let mut buf = [0u8; 16384];
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carried += n as u64;
        if hold_after.is_some_and(|h| carried >= h) {
            state.held.store(true, Ordering::SeqCst);
        }
        while state.held.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Ends an interrupted run: it must fail (not complete unnoticed); returns
/// what it said.
fn must_fail(mut run: Running, fault: &str, installer: &Installer) -> String {
    let Some(out) = run.wait(Duration::from_secs(120)) else {
        let out = run.finish();
        panic!(
            "labprov kept running after {fault}:\n{}\n{}",
            text(&out),
            installer.vm.serial_tail(40)
        );
    };
    let said = text(&out);
    assert!(!out.status.success(), "labprov succeeded despite {fault}:\n{said}");
    eprintln!("after {fault}: {}; it said:\n{said}", out.status);
    said
}

/// Waits until no labprov, mkfs or nix-store of an interrupted run is left
/// on the installer: a user re-runs after the failure.
fn settle(installer: &Installer) {
    installer.must(&format!(
        "{RUNNING}i=0; while running labprov || running 'mkfs*' || running nix-store; do \
         [ $i -lt 600 ] || exit 9; usleep 100000; i=$((i+1)); done"
    ));
}

/// The files below `root` as the uninterrupted and the resumed install must
/// both leave them: each path's type, mode and (for files) size or (for
/// links) target, the store's top-level names, and checksums of the host
/// key, the profile link and the boot loader's files. Nix's database and
/// the store paths' insides are left out (their names are compared; the
/// database records the same paths, its pages need not be equal); a link
/// to the root as mounted reads ROOT.
fn tree(installer: &Installer, root: &str) -> Vec<String> {
    let listing = installer.must(&format!(
        "cd {root} && find . -path ./nix/store/\\* -prune -o -path ./nix/var/nix/db/\\* -prune \
         -o -path ./lost+found -prune -o -print | sort | while read -r f; do \
           if [ -L \"$f\" ]; then echo \"link $f -> $(readlink \"$f\")\"; \
           elif [ -d \"$f\" ]; then echo \"dir $(stat -c %a \"$f\") $f\"; \
           else echo \"file $(stat -c '%a %s' \"$f\") $f\"; fi; done; \
         ls nix/store | sort; \
         sha256sum etc/ssh/ssh_host_ed25519_key etc/ssh/ssh_host_ed25519_key.pub \
           boot/loader/loader.conf boot/loader/entries/* boot/EFI/nixos/*"
    ));
    // Nix links its gcroots to the store's root as mounted (/mnt-ref, /mnt).
    listing.lines().map(|l| l.replace(&format!("-> {root}/"), "-> ROOT/")).collect()
}

#[test]
fn an_install_killed_or_cut_off_midway_completes_on_rerun_as_if_uninterrupted() {
    let t = "an_install_killed_or_cut_off_midway_completes_on_rerun_as_if_uninterrupted";
    if !keys_support::require(t, &["nix", "nix-build", "nix-store", "sops", "age-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut installer) = boot_installer(t, tmp.path(), 2, 4 << 30) else { return };
    installer.install_labprov();
    let mut rydev = InstallLab::new(&installer, "rydev", &repo().join("hosts/rydev/disko.nix"))
        .unwrap_or_else(|e| panic!("{e}"));
    let long = Duration::from_secs(600);
    let ok = |out: &std::process::Output, what: &str, installer: &Installer| {
        assert!(
            out.status.success(),
            "{what}:\n{}\nserial log:\n{}",
            text(out),
            installer.vm.serial_tail(40)
        );
    };

    // The reference: vdb, uninterrupted, under /mnt-ref.
    rydev.disks = vec!["main=/dev/vdb".into()];
    let out = rydev.run(
        &installer,
        &["--root", "/mnt-ref", "--phases", "disk,keys,install", "--yes"],
        long,
    );
    ok(&out, "the uninterrupted install on vdb", &installer);
    let reference = (installer.layout("vdb", "/mnt-ref"), tree(&installer, "/mnt-ref"));
    assert_eq!(reference.0.len(), 2, "{reference:?}");
    assert!(
        reference
            .1
            .iter()
            .any(|l| l.starts_with("file 600 ") && l.ends_with("ssh_host_ed25519_key")),
        "{:?}",
        reference.1
    );
    rydev.disks = vec!["main=/dev/vda".into()];

    // 1. labprov install killed with SIGKILL while the installer's mkfs
    //    formats vda's root.
    let mut run = rydev.start(&installer, &["--yes"]);
    let watch = installer
        .ssh(&format!(
            "{RUNNING}i=0; while ! running mkfs.ext4; do usleep 10000; i=$((i+1)); [ $i -lt 6000 ] || exit 9; done"
        ))
        .output()
        .unwrap();
    assert!(watch.status.success(), "mkfs.ext4 never ran on the installer: {}", text(&watch));
    run.child.kill().unwrap();
    must_fail(run, "SIGKILL during the disk phase", &installer);
    settle(&installer);

    // 2. The connection dropped in the middle of the key step: the relay
    //    holds the key step's second connection (its first put the private
    //    key), then dies.
    let relay = Relay::start(installer.vm.ssh_port);
    rydev.via = Some(relay.port);
    let mut run = rydev.start(&installer, &["--yes"]);
    let progress = run.stderr.clone();
    let mut since_keys = 0;
    relay.hold_when(move || {
        if String::from_utf8_lossy(&progress.lock().unwrap()).contains("keys: place") {
            since_keys += 1;
        }
        (since_keys == 2).then_some(0)
    });
    wait_until("the relay holding the key step", long, &mut run, || relay.held());
    std::thread::sleep(Duration::from_secs(2));
    relay.cut();
    let said = must_fail(run, "the connection dropped during the key step", &installer);
    assert!(said.contains("host key on"), "the failure should name the key step: {said}");
    let keys = installer.must("ls -l /mnt/etc/ssh/");
    eprintln!("the target's /etc/ssh after the drop:\n{keys}");
    assert!(keys.contains("ssh_host_ed25519_key\n"), "the private key was put first: {keys}");
    assert!(!keys.contains(".pub\n"), "the public half landed despite the hold: {keys}");
    settle(&installer);

    // 3. The connection dropped in the middle of `nix copy`: the relay
    //    holds once the copy's connection has carried 1 MiB of the closure
    //    (the stand-in kernel alone is several), then dies.
    let mut run = rydev.start(&installer, &["--yes"]);
    let progress = run.stderr.clone();
    let mut armed = true;
    relay.hold_when(move || {
        let copying = String::from_utf8_lossy(&progress.lock().unwrap()).contains("install: copy ");
        (copying && std::mem::take(&mut armed)).then_some(1 << 20)
    });
    wait_until("the relay holding nix copy", long, &mut run, || relay.held());
    std::thread::sleep(Duration::from_secs(1));
    let landed = installer.must("ls /mnt/nix/store 2>/dev/null | wc -l");
    relay.cut();
    let said = must_fail(run, "the connection dropped during nix copy", &installer);
    eprintln!("store paths on the target when the link died: {}", landed.trim());
    assert!(said.contains("nix copy on "), "the failure should name the copy: {said}");
    assert!(said.contains("can be re-run"), "the failure should say how to resume: {said}");
    settle(&installer);

    // The re-run completes, and vda is what the uninterrupted install made.
    let out = rydev.run(&installer, &["--phases", "disk,keys,install", "--yes", "--json"], long);
    ok(&out, "the re-run of disk, keys and install", &installer);
    eprintln!("the re-run: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(installer.layout("vda", "/mnt"), reference.0, "the partition table and filesystems");
    assert_eq!(tree(&installer, "/mnt"), reference.1, "the files below the root");

    // Resume: reboot from vda (the reference disk wiped first, so that the
    // firmware cannot boot it instead) and verify by rydev's key.
    installer.must("umount /mnt-ref/boot /mnt-ref && wipefs -a /dev/vdb2 /dev/vdb1 /dev/vdb");
    installer.vm.forget_serial();
    let out = rydev.run(&installer, &["--phases", "reboot,verify", "--yes"], long);
    ok(&out, "reboot and verify after the resumed install", &installer);
    installer
        .vm
        .wait_for_serial("standin-system: sshd up", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("verify passed but the stand-in system never came up: {e}"));
    assert!(installer.vm.serial().contains(&rydev.recorded), "the console lacks the key");
}
