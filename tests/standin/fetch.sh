#!/usr/bin/env bash
# fetch.sh CACHE_DIR
#
# Part of the labimg boot-test STAND-IN: a Debian arm64 kernel + busybox
# system that stands in for a NixOS system (whose closure cannot be built on
# these machines). This script downloads, idempotently, the Debian arm64
# packages the stand-in kit is made from into CACHE_DIR:
#   - the kernel package that `linux-image-arm64:arm64` depends on
#     (e.g. linux-image-6.1.0-56-arm64), resolved with apt-cache,
#   - busybox-static:arm64,
#   - u-boot-rpi:arm64.
# Packages already in CACHE_DIR (same name and version) are not fetched
# again; a run with nothing to do prints nothing. It also writes
# CACHE_DIR/debs.txt ("ROLE FILE" lines) for make.sh.
# Needs: apt (apt-get, apt-cache), dpkg. Adds the arm64 foreign architecture
# and runs `apt-get update` when arm64 is missing (needs root then).
set -euo pipefail

usage() { echo "usage: $0 CACHE_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
cache=$1
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

die() { echo "fetch.sh: $*" >&2; exit 1; }

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [[ $(id -u) -eq 0 ]] || die "arm64 is not a dpkg foreign architecture; run as root or: dpkg --add-architecture arm64 && apt-get update"
    echo "fetch.sh: adding arm64 architecture and running apt-get update" >&2
    dpkg --add-architecture arm64
    apt-get update -qq
fi

# Sets kpkg (the real kernel package behind the metapackage) and version[]
# (candidate versions). Two apt-cache calls: each costs ~1-2 s here.
declare -A version=()
kpkg=""
resolve() {
    kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-arm64(:arm64)?$/ {sub(/:arm64$/, "", $2); print $2; exit}')
    [[ -n $kpkg ]] || return 1
    version=()
    local pkg ver
    while read -r pkg ver; do
        version[$pkg]=$ver
    done < <(apt-cache show --no-all-versions "$kpkg:arm64" busybox-static:arm64 u-boot-rpi:arm64 2>/dev/null \
        | awk '/^Package:/ {p = $2} /^Version:/ {print p, $2}')
    [[ -n ${version[$kpkg]:-} && -n ${version[busybox-static]:-} && -n ${version[u-boot-rpi]:-} ]]
}
if ! resolve; then
    [[ $(id -u) -eq 0 ]] || die "apt-cache cannot resolve the arm64 packages; run apt-get update as root"
    echo "fetch.sh: apt lists lack the arm64 packages; running apt-get update" >&2
    apt-get update -qq
    resolve || die "apt-cache cannot resolve linux-image-arm64:arm64, busybox-static:arm64, u-boot-rpi:arm64"
fi

# The directory apt-get download writes to must be writable by _apt when we
# are root, or apt warns about unsandboxed downloads.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$tmp"
fi

manifest=""
for spec in "kernel $kpkg" "busybox busybox-static" "uboot u-boot-rpi"; do
    role=${spec%% *}
    pkg=${spec#* }
    ver=${version[$pkg]}
    # apt-get download encodes the epoch colon as %3a
    file="${pkg}_${ver//:/%3a}_arm64.deb"
    if [[ ! -s $cache/$file ]]; then
        echo "fetch.sh: downloading $pkg:arm64 $ver" >&2
        (cd "$tmp" && apt-get download -qq "$pkg:arm64=$ver")
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
