#!/usr/bin/env bash
# boot.sh ISO MODE PORT LOG
#
# Boots an installer ISO (the labimg STAND-IN base ISO or one labimg keyed)
# with TCG and returns once the stand-in's init reports on the serial
# console, LEAVING QEMU RUNNING so the caller can talk to sshd. BOOT_ARCH
# picks the machine: x86_64 (the default: qemu-system-x86_64, q35, 1 GiB) or
# aarch64 (qemu-system-aarch64, virt, cortex-a72, 1 GiB, UEFI only: QEMU_EFI.fd
# of qemu-efi-aarch64, which is AAVMF).
#   MODE     uefi-cd    OVMF (OVMF_CODE_4M.fd + a copy of OVMF_VARS_4M.fd), ISO as -cdrom
#                       (aarch64: as a virtio-scsi CD)
#            uefi-disk  OVMF, ISO as a virtio disk (snapshot=on: the file is never written)
#            bios-cd    SeaBIOS, ISO as -cdrom (x86_64 only)
#            bios-disk  SeaBIOS, ISO as a virtio disk (snapshot=on; x86_64 only)
#            (disk modes: BOOT_DISK_BUS=usb attaches it as a USB stick on
#            qemu-xhci instead of virtio)
#   PORT     host port: user networking with hostfwd tcp:127.0.0.1:PORT-:22
#   LOG      the serial console (and QEMU's own messages) go here
# Writes QEMU's pid to LOG.pid: THE CALLER MUST KILL IT (kill "$(cat LOG.pid)")
# when it has finished, on success and on its own failures. QEMU's stdin,
# stdout and stderr are /dev/null and LOG, so a caller that captures
# boot.sh's output is not held open by QEMU.
# Exit status:
#   0   "installer: sshd up" (prints that line) or "installer: no lab keys on
#       this ISO" (prints it) appeared in LOG; QEMU is running
#   1   "installer: FAIL ...", QEMU exited, or no verdict within
#       ${BOOT_TIMEOUT:-300} seconds: prints the last 60 lines of LOG, kills
#       QEMU (LOG.pid is removed)
#   2   bad usage
#   77  SKIP: the QEMU or the UEFI firmware it needs is not installed
set -euo pipefail

usage() { echo "usage: [BOOT_ARCH=x86_64|aarch64] $0 ISO uefi-cd|uefi-disk|bios-cd|bios-disk PORT LOG (aarch64: uefi only)" >&2; exit 2; }
[[ $# -eq 4 ]] || usage
iso=$1
mode=$2
port=$3
log=$4
timeout=${BOOT_TIMEOUT:-300}
arch=${BOOT_ARCH:-x86_64}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
AAVMF=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd

case $arch/$mode in
    x86_64/uefi-cd | x86_64/uefi-disk | x86_64/bios-cd | x86_64/bios-disk) ;;
    aarch64/uefi-cd | aarch64/uefi-disk) ;;
    *) usage ;;
esac
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "boot.sh: bad PORT $port" >&2
    exit 2
fi
[[ $timeout =~ ^[0-9]+$ ]] || { echo "boot.sh: BOOT_TIMEOUT must be whole seconds" >&2; exit 2; }
[[ -f $iso ]] || { echo "boot.sh: no ISO $iso" >&2; exit 2; }
qemu=qemu-system-$arch
if ! command -v "$qemu" >/dev/null; then
    echo "SKIP: $qemu not installed (package qemu-system-x86 / qemu-system-arm)"
    exit 77
fi
if [[ $arch == x86_64 && $mode == uefi-* ]] && [[ ! -f $OVMF_CODE || ! -f $OVMF_VARS ]]; then
    echo "SKIP: $OVMF_CODE / $OVMF_VARS missing (package ovmf)"
    exit 77
fi
if [[ $arch == aarch64 && ! -f $AAVMF ]]; then
    echo "SKIP: $AAVMF missing (package qemu-efi-aarch64)"
    exit 77
fi

tmp=$(mktemp -d)
qpid=""
keep_qemu=false
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if ! $keep_qemu && [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        rm -f "$log.pid"
    fi
    # QEMU keeps its OVMF_VARS copy open; the name can go.
    rm -rf "$tmp"
}
trap cleanup EXIT

args=(-accel tcg -m 1G -display none -monitor none -serial stdio -no-reboot
    -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$port-:22")
case $arch/$mode in
    x86_64/uefi-*)
        cp "$OVMF_VARS" "$tmp/OVMF_VARS_4M.fd"
        args+=(-M q35
            -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$tmp/OVMF_VARS_4M.fd")
        ;;
    x86_64/*) args+=(-M q35) ;;
    aarch64/*) args+=(-M virt -cpu cortex-a72 -bios "$AAVMF") ;;
esac
case $arch/$mode in
    x86_64/*-cd) args+=(-drive "file=$iso,media=cdrom,readonly=on,format=raw") ;;
    aarch64/*-cd) args+=(-device "virtio-scsi-pci,id=scsi"
        -drive "if=none,id=cd,file=$iso,media=cdrom,readonly=on,format=raw"
        -device "scsi-cd,bus=scsi.0,drive=cd") ;;
    *-disk)
        case ${BOOT_DISK_BUS:-virtio} in
            virtio) args+=(-drive "file=$iso,if=virtio,format=raw,snapshot=on") ;;
            usb) args+=(-device "qemu-xhci,id=xhci"
                -drive "if=none,id=stick,file=$iso,format=raw,snapshot=on"
                -device "usb-storage,bus=xhci.0,drive=stick,removable=on") ;;
            *) echo "boot.sh: BOOT_DISK_BUS must be virtio or usb" >&2; exit 2 ;;
        esac
        ;;
esac

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
start=$(now_ms)
: >"$log"
rm -f "$log.pid"
"$qemu" "${args[@]}" </dev/null >"$log" 2>&1 &
qpid=$!
echo "$qpid" >"$log.pid"

verdict() {
    tr -d '\r' <"$log" | grep -a -o -E 'installer: (sshd up|no lab keys on this ISO|FAIL).*' | tail -n 1 || true
}
v=""
while kill -0 "$qpid" 2>/dev/null; do
    v=$(verdict)
    [[ -z $v ]] || break
    (($(now_ms) - start < timeout * 1000)) || break
    sleep 0.5
done
ms=$(($(now_ms) - start))
elapsed=$((ms / 1000)).$(((ms % 1000) / 100))
v=$(verdict)
case $v in
    "installer: sshd up"* | "installer: no lab keys on this ISO"*)
        if kill -0 "$qpid" 2>/dev/null; then
            keep_qemu=true
            echo "$v"
            echo "boot.sh: $mode: reached the verdict in ${elapsed}s; QEMU pid $qpid in $log.pid, sshd on 127.0.0.1:$port" >&2
            exit 0
        fi
        echo "boot.sh: $mode: QEMU exited after the verdict (${elapsed}s)" >&2
        ;;
    "installer: FAIL"*) echo "boot.sh: $mode: $v (after ${elapsed}s)" >&2 ;;
    *)
        if kill -0 "$qpid" 2>/dev/null; then
            echo "boot.sh: $mode: no verdict within ${timeout}s (timeout)" >&2
        else
            echo "boot.sh: $mode: QEMU exited without a verdict after ${elapsed}s" >&2
        fi
        ;;
esac
echo "boot.sh: last 60 lines of $log:" >&2
tail -n 60 "$log" | tr -d '\r' >&2
exit 1
