# shellcheck shell=sh
# Shared by the labimg STAND-IN inits (installer-init.sh, the installer's
# /init; system-init.sh, the /init of the stand-in system nixos-install puts
# on a target): make.sh puts this file in both initramfs images as
# /lib/standin-lib.sh and each init sources it. PID 1 code: no `set -e`,
# every step checks its own result and calls `fail`, which the init defines
# (it prints one "<who>: FAIL <reason>" line and stops there).

# The kernel's filesystems, every busybox applet, the modules make.sh
# listed in /etc/standin-modules (modprobe --show-depends order).
standin_basics() {
    /bin/busybox --install -s
    mkdir -p /proc /sys /dev /run /tmp /var/log /var/run
    mount -t proc proc /proc || fail "cannot mount /proc"
    mount -t sysfs sysfs /sys || fail "cannot mount /sys"
    mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
    # What systemd makes on a real system (labprov reads `--spec /dev/stdin`).
    ln -sfn /proc/self/fd /dev/fd
    ln -sfn /proc/self/fd/0 /dev/stdin
    ln -sfn /proc/self/fd/1 /dev/stdout
    ln -sfn /proc/self/fd/2 /dev/stderr
    mkdir -p /dev/pts
    mount -t devpts -o gid=5,mode=620 devpts /dev/pts || fail "cannot mount devpts"
    mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount /run"

    kver=$(uname -r)
    echo "$STANDIN: kernel $kver, loading modules"
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
    echo "$STANDIN: loaded $loaded modules${failed:+, failed:$failed}"
}

# Every ethernet interface up with busybox udhcpc (QEMU user networking
# gives 10.0.2.15).
standin_network() {
    ifconfig lo 127.0.0.1 up
    nics=""
    for n in /sys/class/net/*; do
        n=${n##*/}
        [ "$n" != lo ] || continue
        [ -e "/sys/class/net/$n/device" ] || continue
        nics="$nics $n"
        ifconfig "$n" up
        if udhcpc -i "$n" -n -q -t 10 -T 2 -s /etc/udhcpc.sh >/tmp/udhcpc.log 2>&1; then
            echo "$STANDIN: $n: $(ifconfig "$n" | grep -o 'inet addr:[0-9.]*')"
        else
            echo "$STANDIN: $n: no DHCP lease"
            cat /tmp/udhcpc.log
        fi
    done
    [ -n "$nics" ] || echo "$STANDIN: no network interface"
}

# put_file SRC DEST MODE: a root-owned copy (busybox here has no install).
put_file() {
    rm -f "$2" && (umask 077 && cp "$1" "$2") && chown 0:0 "$2" && chmod "$3" "$2"
}

# standin_sshd HOST_KEY AUTHORIZED_KEYS: the OpenSSH host key (installed as
# /etc/ssh/ssh_host_ed25519_key, 0600 root, and converted for dropbear) and
# root's authorized_keys (0600 root), then dropbear on port 22 with password
# logins disabled (-s -g: public keys only) and only that host key (-r).
# Sets `fpr` to the key's fingerprint once port 22 listens.
standin_sshd() {
    mkdir -p /etc/ssh /etc/dropbear
    chmod 0755 /etc/ssh /etc/dropbear
    if [ "$1" != /etc/ssh/ssh_host_ed25519_key ]; then
        put_file "$1" /etc/ssh/ssh_host_ed25519_key 0600 || fail "cannot install the host key"
        if [ -f "$1.pub" ]; then
            put_file "$1.pub" /etc/ssh/ssh_host_ed25519_key.pub 0644
        fi
    fi
    mkdir -p /root/.ssh
    chown 0:0 /root /root/.ssh
    chmod 0700 /root /root/.ssh
    put_file "$2" /root/.ssh/authorized_keys 0600 || fail "cannot install authorized_keys"
    rm -f /etc/dropbear/dropbear_ed25519_host_key
    dropbearconvert openssh dropbear /etc/ssh/ssh_host_ed25519_key /etc/dropbear/dropbear_ed25519_host_key \
        >/tmp/convert.log 2>&1 || { cat /tmp/convert.log; fail "dropbearconvert could not read $1"; }
    chmod 0600 /etc/dropbear/dropbear_ed25519_host_key
    # shellcheck disable=SC2034 # read by the init that sourced this
    fpr=$(dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key 2>/dev/null | sed -n 's/^Fingerprint: //p')

    # -F foreground (we background it), -E log to stderr: /run/dropbear.log,
    # not the console, where a test's many logins would bury what booted.
    dropbear -F -E -s -g -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid \
        </dev/null >/run/dropbear.log 2>&1 &
    i=0
    while [ "$i" -lt 100 ]; do
        netstat -ltn 2>/dev/null | grep -q ':22 ' && break
        usleep 100000
        i=$((i + 1))
    done
    netstat -ltn 2>/dev/null | grep -q ':22 ' || fail "dropbear is not listening on port 22"
}
