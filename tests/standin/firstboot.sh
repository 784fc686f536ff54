#!/bin/sh
# /sbin/init of the labimg boot-test STAND-IN root tree (stand-in for a NixOS
# system; make.sh installs this file as rootfs/sbin/init). Runs under
# busybox sh as PID 1 after the stand-in initramfs switch_roots to the
# image's ext4 partition.
#
# The FIRST-BOOT CHECK. It prints on the console:
#   (a) the device / is mounted from and its type (/dev/mmcblk0p2 or
#       /dev/vda2, ext4),
#   (b) /etc/ssh/ssh_host_ed25519_key: present, non-empty, uid 0, gid 0,
#       mode 600,
#   (c) /etc/ssh/ssh_host_ed25519_key.pub: present, starts "ssh-ed25519 ",
#   (d) partition 1 of the same disk mounts read-only as vfat and holds
#       config.txt,
# then exactly one final line, either
#   LABIMG-FIRSTBOOT-OK root=<dev> key=<uid>:<gid>:<mode>
#   LABIMG-FIRSTBOOT-FAIL <what failed>
# and syncs and powers off. boot.sh looks for that line.
#
# Deliberately no `set -e`: this is PID 1; every step checks its result.
set -u
PATH=/bin:/sbin
export PATH

KEY=/etc/ssh/ssh_host_ed25519_key
PUB=$KEY.pub
fails=""
nfail() { fails="${fails:+$fails; }$*"; echo "standin-firstboot: FAIL: $*"; }
ok() { echo "standin-firstboot: ok: $*"; }

mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mounted /run || { mkdir -p /run 2>/dev/null; mount -t tmpfs -o mode=0755 tmpfs /run; }
# Keep asynchronous kernel messages from splitting our lines.
dmesg -n 3 2>/dev/null

echo "standin-firstboot: labimg first-boot check (stand-in for NixOS), kernel $(uname -r)"

# (a) root device and type: the last mount entry for /
rootdev=""
rootfstype=""
rootopts=""
while read -r dev mnt fstype opts _; do
    if [ "$mnt" = / ] && [ "$dev" != rootfs ]; then
        rootdev=$dev
        rootfstype=$fstype
        rootopts=$opts
    fi
done </proc/mounts
echo "standin-firstboot: / is $rootdev type $rootfstype ($rootopts)"
case $rootdev in
    /dev/mmcblk0p2 | /dev/vda2) ok "root device $rootdev" ;;
    *) nfail "root device is '$rootdev', not /dev/mmcblk0p2 or /dev/vda2" ;;
esac
if [ "$rootfstype" = ext4 ]; then
    ok "root fs type ext4"
else
    nfail "root fs type is '$rootfstype', not ext4"
fi

# (b) host private key
keyinfo="none"
if [ -f "$KEY" ]; then
    read -r kuid kgid kmode <<STAT
$(stat -c '%u %g %a' "$KEY")
STAT
    keyinfo="$kuid:$kgid:$kmode"
    echo "standin-firstboot: $KEY uid:gid:mode = $keyinfo, $(stat -c %s "$KEY") bytes"
    [ "$kuid" = 0 ] || nfail "$KEY uid is $kuid, not 0"
    [ "$kgid" = 0 ] || nfail "$KEY gid is $kgid, not 0"
    [ "$kmode" = 600 ] || nfail "$KEY mode is $kmode, not 600"
    [ -s "$KEY" ] || nfail "$KEY is empty"
    [ "$keyinfo" = 0:0:600 ] && [ -s "$KEY" ] && ok "$KEY"
else
    nfail "$KEY missing"
fi

# (c) host public key
if [ -f "$PUB" ]; then
    pub=$(head -n 1 "$PUB")
    echo "standin-firstboot: $PUB: $pub"
    case $pub in
        "ssh-ed25519 "*) ok "$PUB starts with ssh-ed25519" ;;
        *) nfail "$PUB does not start with 'ssh-ed25519 '" ;;
    esac
else
    nfail "$PUB missing"
fi

# (d) firmware partition: partition 1 of the root disk
case $rootdev in
    *[0-9]p2) fwdev=${rootdev%p2}p1 ;;
    *2) fwdev=${rootdev%2}1 ;;
    *) fwdev="" ;;
esac
if [ -z "$fwdev" ]; then
    nfail "cannot derive the firmware partition from root '$rootdev'"
elif [ ! -b "$fwdev" ]; then
    nfail "firmware partition $fwdev is not a block device"
else
    mkdir -p /run/firmware
    if mount -t vfat -o ro "$fwdev" /run/firmware; then
        fwopts=$(grep "^$fwdev /run/firmware " /proc/mounts | cut -d' ' -f4)
        echo "standin-firstboot: $fwdev mounted vfat ($fwopts): $(cd /run/firmware && echo *)"
        case ,$fwopts, in
            *,ro,*) ok "$fwdev mounted read-only" ;;
            *) nfail "$fwdev did not mount read-only ($fwopts)" ;;
        esac
        if [ -f /run/firmware/config.txt ]; then
            ok "$fwdev has config.txt ($(stat -c %s /run/firmware/config.txt) bytes)"
        else
            nfail "$fwdev has no config.txt"
        fi
        umount /run/firmware || nfail "cannot unmount $fwdev"
    else
        nfail "$fwdev does not mount read-only as vfat"
    fi
fi

if [ -n "$fails" ]; then
    echo "standin-firstboot: last kernel messages:"
    dmesg 2>/dev/null | tail -n 15
    echo "LABIMG-FIRSTBOOT-FAIL $fails"
else
    echo "LABIMG-FIRSTBOOT-OK root=$rootdev key=$keyinfo"
fi
sync
poweroff -f
while :; do sleep 60; done
