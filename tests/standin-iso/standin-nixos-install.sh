#!/bin/sh
# labimg STAND-IN nixos-install (not NixOS's; on the stand-in installer as
# /usr/sbin/nixos-install). Takes the options `labprov install` passes
# (--root R --system S --no-root-passwd --no-channel-copy; others are
# refused, as the real one refuses unknown ones) and lays out what NixOS's
# would on these hosts, for a system already in R's store (`nix copy`):
#   - R/nix/var/nix/profiles/system -> system-1-link -> S,
#   - systemd-boot on the ESP mounted at R/boot: EFI/systemd/systemd-bootx64.efi
#     and the removable-media path EFI/BOOT/BOOTX64.EFI (Debian's
#     systemd-boot-efi, from the ISO), loader/loader.conf, and
#     loader/entries/nixos-generation-1.conf with S's kernel and initrd
#     copied to EFI/nixos/ and `init=S/init` plus S/kernel-params.
set -eu
root=/mnt system=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$2; shift ;;
        --system) system=$2; shift ;;
        --no-root-passwd | --no-channel-copy) ;;
        *) echo "nixos-install (stand-in): unknown option $1" >&2; exit 1 ;;
    esac
    shift
done
die() { echo "nixos-install (stand-in): $*" >&2; exit 1; }
[ -n "$system" ] || die "--system is required (this stand-in builds nothing)"
[ -e "$root$system/init" ] || die "$system is not in $root/nix/store (copy it first)"
esp=$root/boot
grep -q " $esp " /proc/mounts || die "no ESP mounted at $esp"

profiles=$root/nix/var/nix/profiles
mkdir -p "$profiles"
ln -sfn "$system" "$profiles/system-1-link"
ln -sfn system-1-link "$profiles/system"

# A store path's file under R: links in the closure point into /nix/store.
in_root() {
    f=$root$1
    while [ -L "$f" ]; do
        t=$(readlink "$f")
        case "$t" in
            /*) f=$root$t ;;
            *) f=$(dirname "$f")/$t ;;
        esac
    done
    echo "$f"
}
name=$(basename "$system")
hash=${name%%-*}
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/EFI/nixos" "$esp/loader/entries"
cp /iso/standin/systemd-bootx64.efi "$esp/EFI/systemd/systemd-bootx64.efi"
cp /iso/standin/systemd-bootx64.efi "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$(in_root "$system/kernel")" "$esp/EFI/nixos/$hash-kernel.efi"
cp "$(in_root "$system/initrd")" "$esp/EFI/nixos/$hash-initrd.efi"
params=""
[ ! -e "$root$system/kernel-params" ] || params=$(cat "$(in_root "$system/kernel-params")")
printf 'timeout 0\ndefault nixos-generation-1.conf\nconsole-mode keep\n' >"$esp/loader/loader.conf"
cat >"$esp/loader/entries/nixos-generation-1.conf" <<ENTRY
title NixOS (labimg stand-in system)
version Generation 1 $(cat "$(in_root "$system/nixos-version")" 2>/dev/null || echo stand-in)
linux /EFI/nixos/$hash-kernel.efi
initrd /EFI/nixos/$hash-initrd.efi
options init=$system/init $params
ENTRY
sync
echo "nixos-install (stand-in): installed $system into $root; systemd-boot on $esp, entry nixos-generation-1"
