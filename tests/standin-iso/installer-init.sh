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
/bin/busybox --install -s

ISOWAIT=60

say() { echo "installer: $*"; }
fail() {
    say "FAIL $*"
    echo "standin-installer: /proc/partitions:"
    cat /proc/partitions 2>/dev/null
    sync
    exec init
}

mkdir -p /proc /sys /dev /iso /run /tmp /var/log /var/run
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=620 devpts /dev/pts || fail "cannot mount devpts"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount /run"

kver=$(uname -r)
echo "standin-installer: kernel $kver, loading modules"
loaded=0
failed=""
while read -r mod; do
    [ -n "$mod" ] || continue
    if insmod "/lib/modules/$kver/$mod" 2>/tmp/insmod.err; then
        loaded=$((loaded + 1))
    elif ! grep -q 'File exists' /tmp/insmod.err; then
        failed="$failed ${mod##*/}"
        cat /tmp/insmod.err
    fi
done </etc/standin-modules
rm -f /tmp/insmod.err
echo "standin-installer: loaded $loaded modules${failed:+, failed:$failed}"

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
ifconfig lo 127.0.0.1 up
nics=""
for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" != lo ] || continue
    [ -e "/sys/class/net/$n/device" ] || continue
    nics="$nics $n"
    ifconfig "$n" up
    if udhcpc -i "$n" -n -q -t 10 -T 2 -s /etc/udhcpc.sh >/tmp/udhcpc.log 2>&1; then
        echo "standin-installer: $n: $(ifconfig "$n" | grep -o 'inet addr:[0-9.]*')"
    else
        echo "standin-installer: $n: no DHCP lease"
        cat /tmp/udhcpc.log
    fi
done
[ -n "$nics" ] || echo "standin-installer: no network interface"

# --- keys and sshd ------------------------------------------------------------------
lab=/iso/lab
if [ ! -e "$lab/ssh_host_ed25519_key" ]; then
    say "no lab keys on this ISO"
    exec init
fi
[ -f "$lab/authorized_keys" ] || fail "$lab has a host key but no authorized_keys"

mkdir -p /etc/ssh /etc/dropbear
chmod 0755 /etc/ssh /etc/dropbear
# put_file SRC DEST MODE: a root-owned copy (busybox here has no install)
put_file() {
    rm -f "$2" && (umask 077 && cp "$1" "$2") && chown 0:0 "$2" && chmod "$3" "$2"
}
put_file "$lab/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key 0600 \
    || fail "cannot install the host key"
if [ -f "$lab/ssh_host_ed25519_key.pub" ]; then
    put_file "$lab/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub 0644
fi
mkdir -p /root/.ssh
chown 0:0 /root /root/.ssh
chmod 0700 /root /root/.ssh
put_file "$lab/authorized_keys" /root/.ssh/authorized_keys 0600 \
    || fail "cannot install authorized_keys"
rm -f /etc/dropbear/dropbear_ed25519_host_key
dropbearconvert openssh dropbear /etc/ssh/ssh_host_ed25519_key /etc/dropbear/dropbear_ed25519_host_key \
    >/tmp/convert.log 2>&1 || { cat /tmp/convert.log; fail "dropbearconvert could not read $lab/ssh_host_ed25519_key"; }
chmod 0600 /etc/dropbear/dropbear_ed25519_host_key
fpr=$(dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key 2>/dev/null | sed -n 's/^Fingerprint: //p')

# -F foreground (we background it), -E log to stderr (the console),
# -s no password logins, -g no password logins for root, -r the only host key.
dropbear -F -E -s -g -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid \
    </dev/null >/dev/console 2>&1 &
i=0
while [ "$i" -lt 100 ]; do
    netstat -ltn 2>/dev/null | grep -q ':22 ' && break
    usleep 100000
    i=$((i + 1))
done
netstat -ltn 2>/dev/null | grep -q ':22 ' || fail "dropbear is not listening on port 22"
say "sshd up (dropbear, port 22, public keys only, host key ${fpr:-?})"
exec init
