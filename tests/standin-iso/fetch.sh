#!/usr/bin/env bash
# fetch.sh CACHE_DIR [ARCH]
#
# Part of the labimg STAND-IN base installer ISO (ARCH x86_64, the default,
# or aarch64): a Debian kernel + busybox + dropbear initramfs in NixOS's ISO
# boot layout, standing in for the NixOS installer ISO that cannot be built
# on these machines. This script downloads, idempotently, the Debian 12
# packages of ARCH (Debian's amd64 or arm64) the stand-in ISO is made from
# into CACHE_DIR (one per ARCH):
#   - the kernel package that `linux-image-amd64` / `linux-image-arm64`
#     depends on (e.g. linux-image-6.1.0-56-amd64), resolved with apt-cache,
#   - busybox-static, dropbear-bin and the libraries dropbear links against
#     (libc6 libcrypt1 libtomcrypt1 libtommath1 zlib1g libgmp10),
#   - the boot loaders: grub-efi-amd64-bin / grub-efi-arm64-bin (GRUB EFI
#     modules); x86_64 also isolinux (isolinux.bin, isohdpfx.bin) and
#     syslinux-common (ldlinux.c32) for BIOS,
#   - x86_64 only: the packages in install-tools.txt and iso-tools.txt (what
#     labprov install needs on the target: util-linux, mkfs tools,
#     cryptsetup, lvm2, mdadm, Nix, libraries) and systemd-boot-efi.
# Packages already in CACHE_DIR (same name and version) are not fetched
# again; a run with nothing to do prints nothing. It also writes
# CACHE_DIR/debs.txt ("PACKAGE FILE" lines) for make.sh.
# Needs: apt (apt-get, apt-cache), dpkg. Runs `apt-get update` (as root) when
# apt cannot resolve the packages.
set -euo pipefail

usage() { echo "usage: $0 CACHE_DIR [x86_64|aarch64]" >&2; exit 2; }
[[ $# -eq 1 || $# -eq 2 ]] || usage
cache=$1
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

die() { echo "fetch.sh: $*" >&2; exit 1; }

PKGS=(busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 zlib1g libgmp10)
case ${2:-x86_64} in
    x86_64)
        deb_arch=amd64
        PKGS+=(grub-efi-amd64-bin isolinux syslinux-common)
        # what labprov needs on the target (install-tools.txt)
        # systemd-boot for the stand-in nixos-install
        PKGS+=(systemd-boot-efi)
        mapfile -t -O "${#PKGS[@]}" PKGS < <(awk '!/^#/ && NF {print $1}' \
            "$(dirname "${BASH_SOURCE[0]}")/install-tools.txt" "$(dirname "${BASH_SOURCE[0]}")/iso-tools.txt" | sort -u)
        ;;
    aarch64) deb_arch=arm64; PKGS+=(grub-efi-arm64-bin) ;;
    *) usage ;;
esac
# One entry per package (the lists overlap): debs.txt has one line each.
mapfile -t PKGS < <(printf '%s\n' "${PKGS[@]}" | awk '!seen[$0]++')

# Sets kpkg (the real kernel package behind the metapackage) and version[].
declare -A version=() arch=()
kpkg=""
resolve() {
    kpkg=$(apt-cache depends "linux-image-$deb_arch:$deb_arch" 2>/dev/null \
        | awk -v a="$deb_arch" '$1 == "Depends:" && $2 ~ ("^linux-image-[0-9].*-" a "(:" a ")?$") {sub(":" a "$", "", $2); print $2; exit}')
    [[ -n $kpkg ]] || return 1
    version=()
    local pkg ver a p
    while read -r pkg ver a; do
        version[$pkg]=$ver
        arch[$pkg]=$a
    done < <(apt-cache show --no-all-versions "$kpkg:$deb_arch" "${PKGS[@]/%/:$deb_arch}" 2>/dev/null \
        | awk '/^Package:/ {p = $2} /^Version:/ {v = $2} /^Architecture:/ {a = $2} /^$/ && p {print p, v, a; p = ""} END {if (p) print p, v, a}')
    for p in "$kpkg" "${PKGS[@]}"; do
        [[ -n ${version[$p]:-} ]] || return 1
    done
}
if ! resolve; then
    [[ $(id -u) -eq 0 ]] || die "apt-cache cannot resolve the $deb_arch packages; run apt-get update as root"
    if [[ $deb_arch != "$(dpkg --print-architecture)" ]] && ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
        echo "fetch.sh: adding $deb_arch as a foreign dpkg architecture (packages are only downloaded, never installed)" >&2
        dpkg --add-architecture "$deb_arch"
    fi
    echo "fetch.sh: apt lists lack the $deb_arch packages; running apt-get update" >&2
    apt-get update -qq
    resolve || die "apt-cache cannot resolve linux-image-$deb_arch and: ${PKGS[*]}"
fi

# The directory apt-get download writes to must be writable by _apt when we
# are root, or apt warns about unsandboxed downloads.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$tmp"
fi

manifest=""
for pkg in "$kpkg" "${PKGS[@]}"; do
    ver=${version[$pkg]}
    role=$pkg
    [[ $pkg != "$kpkg" ]] || role=kernel
    # apt-get download encodes the epoch colon as %3a; isolinux and
    # syslinux-common are Architecture: all
    file="${pkg}_${ver//:/%3a}_${arch[$pkg]}.deb"
    if [[ ! -s $cache/$file ]]; then
        echo "fetch.sh: downloading $pkg:$deb_arch $ver" >&2
        (cd "$tmp" && apt-get download -qq "$pkg:$deb_arch=$ver")
        [[ -s $tmp/$file ]] || die "apt-get download did not produce $file"
        dpkg-deb --info "$tmp/$file" >/dev/null || die "$file is not a valid .deb"
        mv "$tmp/$file" "$cache/$file"
    fi
    manifest+="$role $file"$'\n'
done

# Rewrite the manifest only when it changes.
if [[ ! -f $cache/debs.txt ]] || [[ $(cat "$cache/debs.txt") != "${manifest%$'\n'}" ]]; then
    printf '%s' "$manifest" >"$cache/debs.txt.tmp"
    mv "$cache/debs.txt.tmp" "$cache/debs.txt"
fi
