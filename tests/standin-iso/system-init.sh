#!/bin/sh
# /init of the labimg STAND-IN system (not NixOS): the system closure the
# installer VM tests copy to a target holds the stand-in installer's kernel
# and an initramfs with this init (make.sh makes both; tests/standin-iso/
# standin-system.nix turns them into a NixOS-shaped toplevel). The stand-in
# nixos-install puts them on the target's ESP behind systemd-boot, with
# `init=SYSTEM/init root=DEVICE` on the kernel command line. Runs under
# busybox sh as PID 1:
#
#  1. the basics of standin-lib.sh (filesystems, modules),
#  2. waits (60 s) for the root= device (/dev/disk/by-partlabel/NAME or
#     /dev/disk/by-label/NAME, found with blkid: there is no udev) and
#     mounts it read-write at /sysroot,
#  3. brings up the network,
#  4. starts sshd with the host key ON THE DISK
#     (/sysroot/etc/ssh/ssh_host_ed25519_key: what `labprov install` placed)
#     and the system's authorized_keys (SYSTEM/authorized_keys in the
#     closure, as NixOS's users.users.root.openssh.authorizedKeys), then
#     prints "standin-system: sshd up ...".
# It stays in the initramfs (no switch_root): what the tests check is the
# boot chain, the disk's layout and key, not a userland.
# Failures print one "standin-system: FAIL <reason>" line.
set -u
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
STANDIN=standin-system
# shellcheck source=tests/standin-iso/standin-lib.sh
. /lib/standin-lib.sh

fail() {
    echo "standin-system: FAIL $*"
    cat /proc/partitions 2>/dev/null
    sync
    exec init
}

standin_basics
root="" system=""
read -r cmdline </proc/cmdline
for arg in $cmdline; do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        init=*) system=${arg#init=}; system=${system%/init} ;;
    esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
[ -n "$system" ] || fail "no init= on the kernel command line"
case "$root" in
    /dev/disk/by-partlabel/*) probe="PARTLABEL=${root#/dev/disk/by-partlabel/}" ;;
    /dev/disk/by-label/*) probe="LABEL=${root#/dev/disk/by-label/}" ;;
    *) probe="" ;;
esac
dev=""
i=0
while [ "$i" -lt 120 ]; do
    if [ -n "$probe" ]; then
        dev=$(blkid -t "$probe" -o device 2>/dev/null | head -n 1)
    elif [ -b "$root" ]; then
        dev=$root
    fi
    [ -z "$dev" ] || break
    usleep 500000
    i=$((i + 1))
done
[ -n "$dev" ] || fail "root device $root not found within 60s"
mkdir -p /sysroot
mount -o rw "$dev" /sysroot || fail "cannot mount $dev ($root) on /sysroot"
echo "standin-system: root $root ($dev) mounted at /sysroot, system $system"
[ -e "/sysroot$system/init" ] || fail "the system $system is not in the target's store"
[ -f /sysroot/etc/ssh/ssh_host_ed25519_key ] || fail "no /etc/ssh/ssh_host_ed25519_key on the target's root"
[ -f "/sysroot$system/authorized_keys" ] || fail "the system has no authorized_keys"

standin_network
standin_sshd /sysroot/etc/ssh/ssh_host_ed25519_key "/sysroot$system/authorized_keys"
echo "standin-system: sshd up (dropbear, port 22, public keys only, host key ${fpr:-?})"
exec init
