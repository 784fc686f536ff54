#!/usr/bin/env bash
# boot.sh IMAGE STANDIN_DIR [raspi3b|virt]
#
# Boots a labimg SD image under QEMU (TCG) with the STAND-IN kit that make.sh
# built in STANDIN_DIR (a Debian arm64 kernel + busybox initramfs standing in
# for the NixOS system that cannot be built here) and waits for the stand-in
# root's first-boot check (firstboot.sh) to report.
#   raspi3b (default): -M raspi3b, the image as the SD card, root=/dev/mmcblk0p2
#   virt:              -M virt -cpu cortex-a53 -smp 2, virtio disk, root=/dev/vda2
# IMAGE is never modified: QEMU gets a sparse temporary copy, padded to a
# power-of-two size (the raspi SD model requires it).
# Writes the whole console log to ${BOOT_LOG:-IMAGE.boot.log}, prints the
# LABIMG-FIRSTBOOT line, and exits 0 only on LABIMG-FIRSTBOOT-OK; 1 on
# LABIMG-FIRSTBOOT-FAIL, STANDIN-INITRD-FAIL or timeout (${BOOT_TIMEOUT:-120}
# seconds), printing the last 30 log lines; 77 (SKIP) without
# qemu-system-aarch64; 2 on bad usage.
# Extra kernel arguments can be given in BOOT_APPEND.
set -euo pipefail

usage() { echo "usage: $0 IMAGE STANDIN_DIR [raspi3b|virt]" >&2; exit 2; }
[[ $# -eq 2 || $# -eq 3 ]] || usage
image=$1
kit=$2
machine=${3:-raspi3b}
timeout=${BOOT_TIMEOUT:-120}
log=${BOOT_LOG:-$image.boot.log}

if ! command -v qemu-system-aarch64 >/dev/null; then
    echo "SKIP: qemu-system-aarch64 not installed"
    exit 77
fi
[[ $machine == raspi3b || $machine == virt ]] || usage
[[ $timeout =~ ^[0-9]+$ ]] || { echo "boot.sh: BOOT_TIMEOUT must be whole seconds" >&2; exit 2; }
[[ -f $image ]] || { echo "boot.sh: no image $image" >&2; exit 2; }
for f in vmlinuz initrd.gz dtbs/bcm2837-rpi-3-b.dtb; do
    [[ -f $kit/$f ]] || { echo "boot.sh: $kit/$f missing: run make.sh first" >&2; exit 2; }
done

tmp=$(mktemp -d)
qpid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Sparse copy, padded up to a power of two.
disk=$tmp/disk.img
cp --sparse=always "$image" "$disk"
size=$(stat -c %s "$disk")
pow=1
while ((pow < size)); do
    pow=$((pow * 2))
done
((pow == size)) || truncate -s "$pow" "$disk"

case $machine in
    raspi3b)
        qemu_args=(
            -M raspi3b -accel "tcg,thread=single" -m 1G
            -dtb "$kit/dtbs/bcm2837-rpi-3-b.dtb"
            -drive "file=$disk,if=sd,format=raw"
        )
        append="console=ttyAMA0 root=/dev/mmcblk0p2 rootwait panic=-1"
        ;;
    virt)
        qemu_args=(
            -M virt -cpu cortex-a53 -smp 2 -m 1G -accel tcg
            -drive "file=$disk,if=virtio,format=raw"
            -nic none
        )
        append="console=ttyAMA0 root=/dev/vda2 rootwait panic=-1"
        ;;
    *) usage ;;
esac
[[ -z ${BOOT_APPEND:-} ]] || append+=" $BOOT_APPEND"

# milliseconds since the epoch
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
start=$(now_ms)
: >"$log"
qemu-system-aarch64 "${qemu_args[@]}" \
    -kernel "$kit/vmlinuz" -initrd "$kit/initrd.gz" -append "$append" \
    -nographic -no-reboot </dev/null >"$log" 2>&1 &
qpid=$!

# final_line: the last first-boot or initrd verdict in the log, if any
final_line() {
    tr -d '\r' <"$log" | grep -a -o -E '(LABIMG-FIRSTBOOT-(OK|FAIL)|STANDIN-INITRD-FAIL).*' | tail -n 1 || true
}

verdict=""
seen_at=""
while kill -0 "$qpid" 2>/dev/null; do
    if [[ -z $verdict ]]; then
        verdict=$(final_line)
        [[ -z $verdict ]] || seen_at=$(now_ms)
    fi
    # After the verdict, poweroff should end QEMU; give it 15 s.
    if [[ -n $verdict ]] && (($(now_ms) - seen_at > 15000)); then
        echo "boot.sh: warning: QEMU did not exit after poweroff; killing it" >&2
        break
    fi
    if (($(now_ms) - start >= timeout * 1000)); then
        break
    fi
    sleep 0.5
done
killed=false
if kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    killed=true
fi
qstatus=0
wait "$qpid" 2>/dev/null || qstatus=$?
qpid=""
ms=$(($(now_ms) - start))
elapsed=$((ms / 1000)).$(((ms % 1000) / 100))
verdict=$(final_line)

if [[ $verdict == LABIMG-FIRSTBOOT-OK* ]]; then
    echo "$verdict"
    echo "boot.sh: $machine: first-boot check passed in ${elapsed}s (log: $log)" >&2
    exit 0
fi
if [[ -n $verdict ]]; then
    echo "$verdict"
    echo "boot.sh: $machine: first-boot check failed after ${elapsed}s (log: $log)" >&2
elif $killed; then
    echo "LABIMG-FIRSTBOOT-FAIL no verdict from the guest within ${timeout}s (timeout)"
    echo "boot.sh: $machine: timeout after ${elapsed}s (log: $log)" >&2
else
    echo "LABIMG-FIRSTBOOT-FAIL QEMU exited (status $qstatus) after ${elapsed}s without a verdict"
    echo "boot.sh: $machine: QEMU exited with status $qstatus (log: $log)" >&2
fi
echo "boot.sh: last 30 lines of the console log:" >&2
tail -n 30 "$log" | tr -d '\r' >&2
exit 1
