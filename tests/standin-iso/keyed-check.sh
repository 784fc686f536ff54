#!/usr/bin/env bash
# keyed-check.sh BASE_ISO PORT [MODE...]
#
# The by-hand proof of the labimg STAND-IN installer ISO, as a script: makes
# throwaway keys in a temporary directory (an installer host key, an admin key
# and a stranger's key), adds them to a copy of BASE_ISO as lab/ with
#   xorriso -indev BASE_ISO -outdev keyed.iso -boot_image any replay -map LABDIR /lab
# and for each MODE (default: uefi-cd uefi-disk bios-cd bios-disk) boots it
# with boot.sh and checks over 127.0.0.1:PORT:
#   - ssh-keyscan -t ed25519 returns exactly the host key put on the ISO,
#   - ssh -i admin root@ true works with StrictHostKeyChecking=yes against
#     a known_hosts holding only that key,
#   - a password login (BatchMode, password only) is refused,
#   - the stranger's key is refused.
# Prints one "keyed-check: MODE: ok (boot Ns)" or "keyed-check: MODE: FAIL ..."
# line per mode; exits 0 only when every mode passes. Kills every QEMU it
# starts. Stand-in only: labimg itself does the keying in its tests.
set -euo pipefail

usage() { echo "usage: $0 BASE_ISO PORT [uefi-cd|uefi-disk|bios-cd|bios-disk ...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
base=$1
port=$2
shift 2
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(uefi-cd uefi-disk bios-cd bios-disk)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -f $base ]] || { echo "keyed-check: no ISO $base" >&2; exit 2; }

tmp=$(mktemp -d)
log=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $log && -f $log.pid ]]; then
        kill "$(cat "$log.pid")" 2>/dev/null || true
        rm -f "$log.pid"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/lab" "$tmp/keys"
ssh-keygen -q -t ed25519 -N '' -C standin-installer-host -f "$tmp/lab/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C admin -f "$tmp/keys/admin"
ssh-keygen -q -t ed25519 -N '' -C stranger -f "$tmp/keys/stranger"
cp "$tmp/keys/admin.pub" "$tmp/lab/authorized_keys"
xorriso -indev "$base" -outdev "$tmp/keyed.iso" -boot_image any replay -map "$tmp/lab" /lab \
    >"$tmp/xorriso.log" 2>&1 || { cat "$tmp/xorriso.log" >&2; exit 1; }
hostkey=$(cut -d' ' -f1,2 "$tmp/lab/ssh_host_ed25519_key.pub")
printf '[127.0.0.1]:%s %s\n' "$port" "$hostkey" >"$tmp/known_hosts"
ssh_opts=(-p "$port" -o UserKnownHostsFile="$tmp/known_hosts" -o GlobalKnownHostsFile=/dev/null
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20 -o IdentitiesOnly=yes
    -o IdentityAgent=none -F /dev/null)

status=0
for mode in "${modes[@]}"; do
    log=$tmp/$mode.log
    t0=${EPOCHREALTIME/./}
    if ! bash "$here/boot.sh" "$tmp/keyed.iso" "$mode" "$port" "$log" >"$tmp/boot.out" 2>&1; then
        echo "keyed-check: $mode: FAIL boot"
        cat "$tmp/boot.out"
        status=1
        log=""
        continue
    fi
    t1=${EPOCHREALTIME/./}
    boot_s=$(((t1 - t0) / 100000))
    why=""
    scanned=$(ssh-keyscan -T 20 -p "$port" -t ed25519 127.0.0.1 2>/dev/null | cut -d' ' -f2,3)
    [[ $scanned == "$hostkey" ]] || why+=" keyscan(got '${scanned:-nothing}')"
    ssh "${ssh_opts[@]}" -i "$tmp/keys/admin" root@127.0.0.1 true </dev/null 2>"$tmp/ssh.err" \
        || why+=" admin-login($(tr '\n' ' ' <"$tmp/ssh.err"))"
    if ssh "${ssh_opts[@]}" -o PreferredAuthentications=password -o PubkeyAuthentication=no \
        root@127.0.0.1 true </dev/null 2>"$tmp/pw.err"; then
        why+=" password-login-accepted"
    fi
    if ssh "${ssh_opts[@]}" -i "$tmp/keys/stranger" root@127.0.0.1 true </dev/null 2>"$tmp/stranger.err"; then
        why+=" stranger-key-accepted"
    fi
    kill "$(cat "$log.pid")" 2>/dev/null || true
    rm -f "$log.pid"
    log=""
    if [[ -z $why ]]; then
        echo "keyed-check: $mode: ok (boot to sshd $((boot_s / 10)).$((boot_s % 10))s; keyscan = lab key, admin key in, password refused: $(grep -o 'Permission denied.*' "$tmp/pw.err" | head -n 1))"
    else
        echo "keyed-check: $mode: FAIL$why"
        status=1
    fi
done
exit "$status"
