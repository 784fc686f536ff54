#!/bin/sh
# /init of the labimg STAND-IN base installer ISO (x86_64 and aarch64),
# standing in for the NixOS installer's stage 1 + sshd; make.sh copies this
# file into /boot/initrd. Runs under busybox sh as PID 1.
#
#  0. links every busybox applet (busybox --install -s),
#  1. mounts proc/sys/dev/devpts, insmods the modules in /etc/standin-modules
#     (cdrom: sr_mod isofs; disks: virtio_blk virtio_scsi usb-storage, ahci
#     on x86_64; NICs: virtio_net, e1000 e1000e on x86_64; in modprobe
#     --show-depends order),
#  2. finds the ISO filesystem (any block device whose iso9660 filesystem has
#     /EFI/nixos-installer-image and /boot/initrd; waits up to 60 s) and
#     mounts it read-only at /iso, as the NixOS live system does,
#  3. brings up every ethernet interface with busybox udhcpc (QEMU user
#     networking gives 10.0.2.15),
#  4. if /iso/lab/ssh_host_ed25519_key exists (labimg adds lab/ after the
#     build): installs it (0600, root) as /etc/ssh/ssh_host_ed25519_key,
#     converts it for dropbear (dropbearconvert openssh dropbear), installs
#     /iso/lab/authorized_keys as /root/.ssh/authorized_keys (0600, root) and
#     starts dropbear on port 22 with password logins disabled (-s -g: public
#     keys only), then prints "installer: sshd up ...".
#     Without /iso/lab/ it prints "installer: no lab keys on this ISO" and
#     starts no sshd.
# Failures print one "installer: FAIL <reason>" line. Then it execs busybox
# init (an inittab with no entries: it only reaps orphans).
#
# Deliberately no `set -e`: this is PID 1; every step checks its own result.
set -u
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
STANDIN=standin-installer
# shellcheck source=tests/standin-iso/standin-lib.sh
. /lib/standin-lib.sh

ISOWAIT=60

say() { echo "installer: $*"; }
fail() {
    say "FAIL $*"
    echo "standin-installer: /proc/partitions:"
    cat /proc/partitions 2>/dev/null
    sync
    exec init
}

standin_basics
mkdir -p /iso

# --- the ISO filesystem -------------------------------------------------------
# Whole devices first (a CD, or the hybrid image as a whole disk), then
# partitions (partition 1 of the hybrid table also starts at the ISO).
find_iso() {
    for dev in /dev/sr[0-9]* /dev/vd[a-z] /dev/sd[a-z] /dev/vd[a-z][0-9]* /dev/sd[a-z][0-9]*; do
        [ -b "$dev" ] || continue
        if mount -t iso9660 -o ro "$dev" /iso 2>/dev/null; then
            if [ -f /iso/EFI/nixos-installer-image ] && [ -f /iso/boot/initrd ]; then
                isodev=$dev
                return 0
            fi
            umount /iso
        fi
    done
    return 1
}
isodev=""
i=0
while [ "$i" -lt $((ISOWAIT * 2)) ]; do
    find_iso && break
    usleep 500000
    i=$((i + 1))
done
[ -n "$isodev" ] || fail "no iso9660 filesystem with /EFI/nixos-installer-image within ${ISOWAIT}s${failed:+ (modules failed:$failed)}"
echo "standin-installer: ISO $isodev mounted read-only at /iso after ~$((i / 2))s"

# --- network ----------------------------------------------------------------------
standin_network

# --- keys and sshd ------------------------------------------------------------------
lab=/iso/lab
if [ ! -e "$lab/ssh_host_ed25519_key" ]; then
    say "no lab keys on this ISO"
    exec init
fi
[ -f "$lab/authorized_keys" ] || fail "$lab has a host key but no authorized_keys"

standin_sshd "$lab/ssh_host_ed25519_key" "$lab/authorized_keys"
say "sshd up (dropbear, port 22, public keys only, host key ${fpr:-?})"
exec init
