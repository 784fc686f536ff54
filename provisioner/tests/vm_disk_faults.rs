//! `labprov disk apply` interrupted on a real machine, then run again: the
//! installer VM (tests/vm_support) applies rydev's spec to four blank disks:
//! one without interruption, one whose labprov is killed with SIGKILL as the
//! ESP's mkfs starts, one whose SSH connection is cut as the root's mkfs
//! starts, and one whose machine is hard-reset (no sync, no unmount) as the
//! root's mkfs starts. Each re-run completes, and each disk ends as the
//! uninterrupted one: the same partition table (sfdisk, UUIDs aside), the
//! same filesystems, mounted where the spec says. What each re-run found to
//! do is printed, not asserted (it depends on timing): in the runs here each
//! re-run formatted the interrupted filesystem again.

mod vm_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use vm_support::{boot_installer, repo, spec_json, Installer, RUNNING};

fn apply_cmd(disk: &str) -> String {
    format!("labprov disk apply --spec /tmp/rydev.json --disk main=/dev/{disk} --root /mnt-{disk} --yes")
}

/// Starts apply on `disk` on the installer and returns once `program` (a
/// mkfs) runs, leaving it running; prints `marker` on the console (for the
/// host to see) and to the session at that moment. Apply's own output goes
/// to `output`: a file, or the SSH session itself (`-`), as when `labprov
/// install` streams it.
fn apply_until(program: &str, disk: &str, marker: &str, output: &str) -> String {
    let redirect = if output == "-" { String::new() } else { format!(" > {output} 2>&1") };
    format!(
        "{RUNNING}{}{redirect} & pid=$!; \
         i=0; while ! running {program}; do usleep 10000; i=$((i+1)); [ $i -lt 3000 ] || exit 9; done; \
         echo {marker} > /dev/console; echo {marker}; ",
        apply_cmd(disk)
    )
}

/// Waits (up to a minute) until no labprov or mkfs of the interrupted run
/// is left: a user re-runs after the failure, not during it.
fn settle(installer: &Installer) {
    installer.must(&format!(
        "{RUNNING}i=0; while running labprov || running 'mkfs*'; do \
         [ $i -lt 600 ] || exit 9; usleep 100000; i=$((i+1)); done"
    ));
}

fn upload(installer: &Installer) {
    installer.install_labprov();
    installer.put("/tmp/rydev.json", &spec_json(&repo().join("hosts/rydev/disko.nix")), false);
}

#[test]
fn an_apply_killed_cut_off_or_reset_midway_completes_on_rerun_as_if_uninterrupted() {
    let t = "an_apply_killed_cut_off_or_reset_midway_completes_on_rerun_as_if_uninterrupted";
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut installer) = boot_installer(t, tmp.path(), 4, 1 << 30) else { return };
    upload(&installer);

    // The reference: vda, uninterrupted.
    installer.must(&apply_cmd("vda"));
    let reference = installer.layout("vda", "/mnt-vda");
    assert_eq!(reference.len(), 2, "{reference:?}");
    assert!(reference[0].contains("fs=vfat at=/boot"), "{reference:?}");
    assert!(reference[1].contains("fs=ext4 at=/"), "{reference:?}");

    // vdb: labprov killed (SIGKILL) as the ESP's mkfs starts.
    installer.must(&format!(
        "{} kill -9 $pid; wait $pid; true",
        apply_until("mkfs.vfat", "vdb", "FAULT-KILL", "/tmp/apply-vdb.log")
    ));
    settle(&installer);
    let rerun = installer.must(&format!("{} --json", apply_cmd("vdb")));
    eprintln!("re-run on vdb: {rerun}");
    assert_eq!(installer.layout("vdb", "/mnt-vdb"), reference, "after SIGKILL and a re-run");

    // vdc: the SSH connection cut as the root's mkfs starts: the local ssh
    // killed while apply writes its progress into the session, as when
    // `labprov install` streams it; the server closes the session's pipes.
    let mut cut = installer
        .ssh(&format!("{} wait $pid", apply_until("mkfs.ext4", "vdc", "FAULT-CUT", "-")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cut.stdout.take().unwrap()).lines();
    let seen = lines.any(|l| l.map(|l| l.contains("FAULT-CUT")).unwrap_or(false));
    cut.kill().unwrap();
    let _ = cut.wait();
    assert!(seen, "mke2fs never ran on vdc:\n{}", installer.vm.serial_tail(30));
    settle(&installer);
    let rerun = installer.must(&format!("{} --json", apply_cmd("vdc")));
    eprintln!("re-run on vdc: {rerun}");
    assert_eq!(
        installer.layout("vdc", "/mnt-vdc"),
        reference,
        "after a cut connection and a re-run"
    );

    // vdd: the machine reset (no sync, no unmount) as the root's mkfs
    // starts; it boots the installer again (no disk has a loader).
    installer.vm.forget_serial();
    let mut start = installer
        .ssh(&format!(
            "{} wait $pid",
            apply_until("mkfs.ext4", "vdd", "FAULT-RESET", "/tmp/apply-vdd.log")
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    installer
        .vm
        .wait_for_serial("FAULT-RESET", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("mke2fs never ran on vdd: {e}"));
    installer.vm.hard_reset().unwrap();
    let _ = start.kill();
    let _ = start.wait();
    installer.vm.forget_serial();
    installer
        .vm
        .wait_for_serial("installer: sshd up", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("after the reset: {e}"));
    upload(&installer);
    let rerun = installer.must(&format!("{} --json", apply_cmd("vdd")));
    eprintln!("re-run on vdd: {rerun}");
    // The reference again after the reset: its mounts are gone too.
    installer.must(&apply_cmd("vda"));
    assert_eq!(installer.layout("vda", "/mnt-vda"), reference, "the reference after the reset");
    assert_eq!(installer.layout("vdd", "/mnt-vdd"), reference, "after a reset and a re-run");
    let fsck =
        installer.must("umount /mnt-vdd/boot /mnt-vdd && e2fsck -fn /dev/vdd2 2>&1; echo rc=$?");
    assert!(fsck.trim_end().ends_with("rc=0"), "the re-run left a damaged ext4:\n{fsck}");
}
