#!/bin/sh
# /init of the labimg boot-test STAND-IN initramfs (stand-in for a NixOS
# stage 1; make.sh copies this file into initrd.gz). Runs under busybox sh.
#
# Mounts proc/sys/dev, insmods the modules listed in /etc/standin-modules (in
# the order make.sh computed with modprobe --show-depends), waits up to 30 s
# for the root= device from the kernel command line, mounts it ext4
# read-write on /newroot and switch_roots to its /sbin/init.
# On any failure it prints one "STANDIN-INITRD-FAIL <reason>" line and powers
# off (bcm2835_wdt must be loaded for poweroff to end QEMU on raspi3b).
#
# Deliberately no `set -e`: this is PID 1, and a silent exit is a kernel
# panic without a reason. Every step checks its own result.
set -u
PATH=/bin:/sbin
export PATH

ROOTWAIT=30

fail() {
    echo "STANDIN-INITRD-FAIL $*"
    echo "standin-initrd: /proc/partitions:"
    cat /proc/partitions 2>/dev/null
    sync
    poweroff -f
    # poweroff -f should not return; if it does, let the harness time out.
    while :; do sleep 60; done
}

mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"

echo "standin-initrd: kernel $(uname -r), loading modules"
kver=$(uname -r)
loaded=0
failed=""
while read -r mod; do
    [ -n "$mod" ] || continue
    if insmod "/lib/modules/$kver/$mod" 2>/tmp-insmod.err; then
        loaded=$((loaded + 1))
    else
        # A module the kernel already has is fine; anything else is noted.
        if ! grep -q 'File exists' /tmp-insmod.err; then
            failed="$failed ${mod##*/}"
            cat /tmp-insmod.err
        fi
    fi
done </etc/standin-modules
rm -f /tmp-insmod.err
echo "standin-initrd: loaded $loaded modules${failed:+, failed:$failed}"

root=""
read -r cmdline </proc/cmdline
for arg in $cmdline; do
    case $arg in
        root=*) root=${arg#root=} ;;
    esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

echo "standin-initrd: waiting up to ${ROOTWAIT}s for root=$root"
dev=""
i=0
while [ "$i" -lt $((ROOTWAIT * 10)) ]; do
    case $root in
        LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) || dev="" ;;
        *) dev=$root ;;
    esac
    if [ -n "$dev" ] && [ -b "$dev" ]; then
        break
    fi
    dev=""
    usleep 100000
    i=$((i + 1))
done
[ -n "$dev" ] || fail "root device $root did not appear within ${ROOTWAIT}s${failed:+ (modules failed:$failed)}"
echo "standin-initrd: root device $dev appeared after ~$((i / 10)).$((i % 10))s"

mount -t ext4 -o rw "$dev" /newroot || fail "cannot mount $dev as ext4 read-write"
[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "$dev has no executable /sbin/init"

for fs in dev proc sys; do
    if [ -d "/newroot/$fs" ]; then
        mount --move "/$fs" "/newroot/$fs" || fail "cannot move /$fs into the new root"
    else
        umount "/$fs" 2>/dev/null
    fi
done

echo "standin-initrd: switch_root to $dev /sbin/init"
# shellcheck disable=SC2093 # exec replaces PID 1; the fail below runs only if it cannot
exec switch_root /newroot /sbin/init
fail "switch_root failed"
